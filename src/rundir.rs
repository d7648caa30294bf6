//! The run directory (its files are a contract; README.md lists them):
//! `records.csv` streamed
//! while the run goes, then `summary.json`, `report.html`, `scenario.toml`,
//! `timeline.json` and `run.json` (the run's facts, so that `rolltest report`
//! can rebuild everything from the directory alone).

use std::{
    fs,
    io::{self, BufWriter},
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
};

use rolltest_core::{
    model::{Cause, ErrorKind, Outcome, RequestRecord, format_failed_tries, parse_failed_tries},
    summary::{Aggregate, RunFacts, Summary},
};

/// Files of a run directory.
pub const RECORDS: &str = "records.csv";
/// The summary.
pub const SUMMARY: &str = "summary.json";
/// The report.
pub const REPORT: &str = "report.html";
/// The scenario as run.
pub const SCENARIO: &str = "scenario.toml";
/// Lifecycle events.
pub const TIMELINE: &str = "timeline.json";
/// Run facts.
pub const FACTS: &str = "run.json";

/// Header of `records.csv`. `failed_tries` (`pod:error;...`, the
/// ingress's tries before the last when it retried the request) came last;
/// a file without it (an earlier rolltest's) still reads.
pub const RECORD_COLUMNS: [&str; 12] = [
    "seq",
    "intended_us",
    "sent_us",
    "latency_us",
    "status",
    "outcome",
    "error_kind",
    "detail",
    "pod",
    "conn",
    "cause",
    "failed_tries",
];

/// Run directory errors. Writing ones are run errors (exit 3); reading ones
/// (`rolltest report` on a damaged or foreign directory) are bad input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file or the directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file's content is not what rolltest writes.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The writer thread failed.
    #[error("the record writer thread stopped unexpectedly")]
    WriterPanicked,
}

impl RunDirError {
    /// Whether the error is about reading input (rather than writing output).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            RunDirError::Read { .. } | RunDirError::Malformed { .. }
        )
    }
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates (or reuses) the directory, removing the files of an earlier run in it.
    pub fn create(path: &Path) -> Result<Self, RunDirError> {
        fs::create_dir_all(path).map_err(|source| RunDirError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        for name in [RECORDS, SUMMARY, REPORT, SCENARIO, TIMELINE, FACTS] {
            let file = path.join(name);
            if file.exists() {
                fs::remove_file(&file)
                    .map_err(|source| RunDirError::Write { path: file, source })?;
            }
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing run directory for reading.
    pub fn open(path: &Path) -> Result<Self, RunDirError> {
        let records = path.join(RECORDS);
        if !records.is_file() {
            return Err(RunDirError::Read {
                path: records,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "not a run directory (no records.csv)",
                ),
            });
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a whole file.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<(), RunDirError> {
        let path = self.file(name);
        fs::write(&path, contents).map_err(|source| RunDirError::Write { path, source })
    }

    /// Reads a whole file as text.
    pub fn read(&self, name: &str) -> Result<String, RunDirError> {
        let path = self.file(name);
        fs::read_to_string(&path).map_err(|source| RunDirError::Read { path, source })
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), RunDirError> {
        self.write_json(SUMMARY, summary)
    }

    /// Writes `timeline.json` (`{"events": [...]}`; no events for a plain load).
    pub fn write_timeline(
        &self,
        timeline: &rolltest_core::model::Timeline,
    ) -> Result<(), RunDirError> {
        self.write_json(TIMELINE, timeline)
    }

    /// Writes `run.json`.
    pub fn write_facts(&self, facts: &RunFacts) -> Result<(), RunDirError> {
        self.write_json(FACTS, facts)
    }

    /// Reads `run.json`.
    pub fn read_facts(&self) -> Result<RunFacts, RunDirError> {
        let text = self.read(FACTS)?;
        serde_json::from_str(&text).map_err(|e| RunDirError::Malformed {
            path: self.file(FACTS),
            line: e.line() as u64,
            message: e.to_string(),
        })
    }

    fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), RunDirError> {
        let mut text = serde_json::to_string_pretty(value).map_err(|e| RunDirError::Write {
            path: self.file(name),
            source: io::Error::other(e),
        })?;
        text.push('\n');
        self.write(name, text)
    }

    /// Starts the writer thread: it appends every batch received on the
    /// returned channel to `records.csv` (flushed after each batch, so a crash
    /// loses nothing already finished) and hands it to `sink` (an
    /// [`Aggregate`] for a plain load; every record, in a `Vec`, for a rollout
    /// run that correlates them afterwards).
    pub fn start_writer<S: RecordSink>(&self, sink: S) -> Result<RecordWriter<S>, RunDirError> {
        let path = self.file(RECORDS);
        let out = CsvOut::create(&path)?;
        let (tx, rx) = mpsc::channel::<Vec<RequestRecord>>();
        let handle = thread::Builder::new()
            .name("rolltest-records".into())
            .spawn(move || write_records(out, rx, sink))
            .map_err(|source| RunDirError::Write { path, source })?;
        Ok(RecordWriter { tx, handle })
    }

    /// Replaces `records.csv` with `records` (after the correlator filled in
    /// pods and causes); written beside it, then renamed, so a failure leaves
    /// the old file whole.
    pub fn rewrite_records(&self, records: &[RequestRecord]) -> Result<(), RunDirError> {
        let path = self.file(RECORDS);
        let tmp = self.file(&format!("{RECORDS}.tmp"));
        let mut out = CsvOut::create(&tmp)?;
        out.write(records)?;
        out.flush()?;
        drop(out);
        fs::rename(&tmp, &path).map_err(|source| RunDirError::Write { path, source })
    }

    /// Reads every record of `records.csv`, in file order.
    pub fn read_records(&self, mut each: impl FnMut(RequestRecord)) -> Result<(), RunDirError> {
        let path = self.file(RECORDS);
        let mut reader = csv::Reader::from_path(&path).map_err(|e| csv_error(&path, e))?;
        let headers = reader.headers().map_err(|e| csv_error(&path, e))?.clone();
        let without_tries = &RECORD_COLUMNS[..RECORD_COLUMNS.len() - 1];
        if headers.iter().ne(RECORD_COLUMNS.iter().copied())
            && headers.iter().ne(without_tries.iter().copied())
        {
            return Err(RunDirError::Malformed {
                path,
                line: 1,
                message: format!("unexpected header; expected {}", RECORD_COLUMNS.join(",")),
            });
        }
        let mut row = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut row) {
                Ok(false) => break,
                Ok(true) => {
                    let line = row.position().map_or(0, |p| p.line());
                    let record = parse_row(&row).map_err(|message| RunDirError::Malformed {
                        path: path.clone(),
                        line,
                        message,
                    })?;
                    each(record);
                }
                Err(e) => return Err(csv_error(&path, e)),
            }
        }
        Ok(())
    }
}

fn csv_error(path: &Path, e: csv::Error) -> RunDirError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => RunDirError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => RunDirError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("{other:?}"),
        },
    }
}

/// What the writer thread hands each batch to, once it is on disk.
pub trait RecordSink: Send + 'static {
    /// Takes one batch.
    fn take(&mut self, batch: Vec<RequestRecord>);
}

impl RecordSink for Aggregate {
    fn take(&mut self, batch: Vec<RequestRecord>) {
        for r in &batch {
            self.add(r);
        }
    }
}

impl RecordSink for Vec<RequestRecord> {
    fn take(&mut self, batch: Vec<RequestRecord>) {
        self.extend(batch);
    }
}

/// The handle of the writer thread.
pub struct RecordWriter<S> {
    tx: mpsc::Sender<Vec<RequestRecord>>,
    handle: thread::JoinHandle<Result<S, RunDirError>>,
}

impl<S> RecordWriter<S> {
    /// A sender for batches of records.
    pub fn sender(&self) -> mpsc::Sender<Vec<RequestRecord>> {
        self.tx.clone()
    }

    /// Waits until every sender is gone and every record is on disk; returns the sink.
    pub fn finish(self) -> Result<S, RunDirError> {
        drop(self.tx);
        self.handle
            .join()
            .map_err(|_| RunDirError::WriterPanicked)?
    }
}

/// `records.csv` being written: the CSV writer, its path for errors, and
/// the reused row buffers.
struct CsvOut {
    out: csv::Writer<BufWriter<fs::File>>,
    path: PathBuf,
    row: RowBuf,
}

impl CsvOut {
    /// Creates the file and writes the header.
    fn create(path: &Path) -> Result<Self, RunDirError> {
        let file = fs::File::create(path).map_err(|source| RunDirError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = CsvOut {
            out: csv::Writer::from_writer(BufWriter::with_capacity(256 * 1024, file)),
            path: path.to_path_buf(),
            row: RowBuf::default(),
        };
        out.out
            .write_record(RECORD_COLUMNS)
            .map_err(|e| out.error(e))?;
        Ok(out)
    }

    fn error(&self, e: csv::Error) -> RunDirError {
        let source = match e.into_kind() {
            csv::ErrorKind::Io(source) => source,
            other => io::Error::other(format!("{other:?}")),
        };
        RunDirError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&mut self, records: &[RequestRecord]) -> Result<(), RunDirError> {
        for record in records {
            self.row.fill(record);
            if let Err(e) = self.out.write_record(self.row.iter()) {
                return Err(self.error(e));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RunDirError> {
        self.out.flush().map_err(|source| RunDirError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

fn write_records<S: RecordSink>(
    mut out: CsvOut,
    rx: mpsc::Receiver<Vec<RequestRecord>>,
    mut sink: S,
) -> Result<S, RunDirError> {
    rolltest_loadgen::os::set_thread_nice(10);
    while let Ok(batch) = rx.recv() {
        out.write(&batch)?;
        out.flush()?;
        sink.take(batch);
    }
    out.flush()?;
    Ok(sink)
}

/// Reused buffers for one CSV row (no allocation per record once warm).
#[derive(Default)]
struct RowBuf {
    cols: [String; 12],
}

impl RowBuf {
    fn fill(&mut self, r: &RequestRecord) {
        use std::fmt::Write as _;
        for c in &mut self.cols {
            c.clear();
        }
        let _ = write!(self.cols[0], "{}", r.seq);
        let _ = write!(self.cols[1], "{}", r.intended_us);
        if let Some(v) = r.sent_us {
            let _ = write!(self.cols[2], "{v}");
        }
        if let Some(v) = r.latency_us {
            let _ = write!(self.cols[3], "{v}");
        }
        if let Some(v) = r.status {
            let _ = write!(self.cols[4], "{v}");
        }
        self.cols[5].push_str(r.outcome.label());
        if let Some(k) = r.outcome.error_kind() {
            self.cols[6].push_str(k.as_str());
        }
        if let Some(d) = &r.detail {
            self.cols[7].push_str(d);
        }
        if let Some(p) = &r.pod {
            self.cols[8].push_str(p);
        }
        if let Some(c) = r.conn {
            let _ = write!(self.cols[9], "{c}");
        }
        if let Some(c) = r.cause {
            self.cols[10].push_str(c.as_str());
        }
        if r.retried() {
            self.cols[11].push_str(&format_failed_tries(&r.failed_tries));
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.cols.iter().map(String::as_str)
    }
}

fn parse_row(row: &csv::StringRecord) -> Result<RequestRecord, String> {
    let field = |i: usize| row.get(i).unwrap_or("");
    fn num<T: std::str::FromStr>(s: &str, name: &str) -> Result<Option<T>, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse()
                .map(Some)
                .map_err(|_| format!("{name}: {s:?} is not a number"))
        }
    }
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let outcome = match (field(5), field(6)) {
        ("ok", "") => Outcome::Ok,
        ("dropped", "") => Outcome::Dropped,
        ("failed", kind) => Outcome::Failed(
            ErrorKind::parse(kind).ok_or_else(|| format!("error_kind: unknown {kind:?}"))?,
        ),
        (o, k) => return Err(format!("outcome {o:?} with error_kind {k:?}")),
    };
    let cause = match field(10) {
        "" => None,
        c => Some(Cause::parse(c).ok_or_else(|| format!("cause: unknown {c:?}"))?),
    };
    Ok(RequestRecord {
        seq: num(field(0), "seq")?.ok_or("seq: missing")?,
        intended_us: num(field(1), "intended_us")?.ok_or("intended_us: missing")?,
        sent_us: num(field(2), "sent_us")?,
        latency_us: num(field(3), "latency_us")?,
        status: num(field(4), "status")?,
        outcome,
        detail: text(field(7)),
        pod: text(field(8)),
        conn: num(field(9), "conn")?,
        cause,
        failed_tries: parse_failed_tries(field(11)).map_err(|e| format!("failed_tries: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_csv() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let writer = run.start_writer(Aggregate::new(0, 1_000_000)).unwrap();
        use rolltest_core::model::{FailedTry, TryError};
        let records = vec![
            RequestRecord {
                seq: 0,
                intended_us: 0,
                sent_us: Some(12),
                latency_us: Some(900),
                status: Some(200),
                outcome: Outcome::Ok,
                detail: None,
                pod: Some("api-7c9-x".into()),
                conn: Some(3),
                cause: None,
                failed_tries: Vec::new(),
            },
            RequestRecord {
                seq: 1,
                intended_us: 5_000,
                sent_us: Some(5_010),
                latency_us: Some(2_000_000),
                status: None,
                outcome: Outcome::Failed(ErrorKind::Timeout),
                detail: Some("no response, \"quoted\", with commas".into()),
                pod: None,
                conn: Some(4),
                cause: Some(Cause::KilledInFlight),
                failed_tries: Vec::new(),
            },
            RequestRecord::dropped(2, 10_000),
            RequestRecord {
                seq: 3,
                intended_us: 15_000,
                sent_us: Some(15_002),
                latency_us: Some(3_000),
                status: Some(200),
                outcome: Outcome::Ok,
                detail: None,
                pod: Some("api-7c9-z".into()),
                conn: Some(4),
                cause: None,
                failed_tries: vec![
                    FailedTry {
                        pod: "api-7c9-x".into(),
                        error: TryError::ConnectRefused,
                    },
                    FailedTry {
                        pod: "api-7c9-y".into(),
                        error: TryError::Reset,
                    },
                ],
            },
        ];
        writer.sender().send(records.clone()).unwrap();
        let agg = writer.finish().unwrap();
        assert_eq!(agg.scheduled, 4);
        let text = fs::read_to_string(dir.path().join(RECORDS)).unwrap();
        assert!(
            text.contains(",api-7c9-x:connect_refused;api-7c9-y:reset\n"),
            "{text}"
        );
        let mut back = Vec::new();
        RunDir::open(dir.path())
            .unwrap()
            .read_records(|r| back.push(r))
            .unwrap();
        assert_eq!(back, records);
    }

    #[test]
    fn records_of_an_earlier_rolltest_without_failed_tries_still_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(RECORDS),
            format!(
                "{}\n0,0,1,2,200,ok,,,api-1,3,\n",
                RECORD_COLUMNS[..11].join(",")
            ),
        )
        .unwrap();
        let mut back = Vec::new();
        RunDir::open(dir.path())
            .unwrap()
            .read_records(|r| back.push(r))
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].pod.as_deref(), Some("api-1"));
        assert!(!back[0].retried());
    }

    #[test]
    fn malformed_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(RECORDS),
            format!(
                "{}\n0,0,1,2,200,ok,,,,,,\n1,x,1,2,200,ok,,,,,,\n",
                RECORD_COLUMNS.join(",")
            ),
        )
        .unwrap();
        let err = RunDir::open(dir.path())
            .unwrap()
            .read_records(|_| {})
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("records.csv:3"), "{text}");
        assert!(text.contains("intended_us"), "{text}");
    }
}
