//! The rollout evidence of a `rolltest run`: what the report adds when a
//! timeline exists: the verdict's one-line explanation, the swimlanes, the
//! causes with their evidence and fixes, the measured endpoint propagation
//! and the manifests' static findings. Plain `rolltest load` runs have none
//! of it.

use std::collections::{BTreeMap, BTreeSet};

use rolltest_core::{
    model::{Cause, CauseGroup, ErrorKind, Finding, PodPropagation, Severity, Timeline},
    summary::{Aggregate, RunFacts, Summary, THROUGHPUT_BUCKET_US},
};

use crate::html::{
    Cell, Table, escape, fmt_num, fmt_pct, hex, note, num,
    palette::{cause_color, cause_label, cause_slot, chip, slot_cause},
    text,
};

use super::{
    failure::{FailurePoint, RetriedPoint},
    sections::duration_us,
    swimlanes::{self, COLUMNS, Phase, TickKind},
};

/// What a rollout run adds to the report. Times are µs on the run clock,
/// like every record and event.
#[derive(Debug, Clone, Copy)]
pub struct Rollout<'a> {
    /// Every lifecycle event observed.
    pub timeline: &'a Timeline,
    /// The correlator's cause groups, with evidence and fix text.
    pub causes: &'a [CauseGroup],
    /// Every failed request (any order).
    pub failures: &'a [FailurePoint],
    /// Every request the ingress retried (any order).
    pub retried: &'a [RetriedPoint],
    /// Measured deletion → slice → proxy per deleted pod.
    pub propagation: &'a [PodPropagation],
    /// Static findings of the scenario's manifests.
    pub findings: &'a [Finding],
    /// When the load started (the charts' x origin).
    pub load_started_us: u64,
    /// When the run ended.
    pub ended_us: u64,
}

/// Seconds from the load's start, two decimals.
fn at_s(us: u64, origin_us: u64) -> String {
    let d = i128::from(us) - i128::from(origin_us);
    format!("{:.2}", d as f64 / 1e6)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Per cause: failures and the pods involved.
fn shares(r: &Rollout) -> Vec<(Option<Cause>, u64, BTreeSet<String>)> {
    let mut by: BTreeMap<usize, (u64, BTreeSet<String>)> = BTreeMap::new();
    if r.failures.is_empty() {
        for g in r.causes {
            let e = by.entry(cause_slot(Some(g.cause))).or_default();
            e.0 += g.count;
            e.1.extend(g.pod.clone());
        }
    } else {
        for f in r.failures {
            let e = by.entry(cause_slot(f.cause)).or_default();
            e.0 += 1;
            e.1.extend(f.pod.clone());
        }
    }
    let mut out: Vec<_> = by
        .into_iter()
        .map(|(slot, (n, pods))| (slot_cause(slot), n, pods))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(cause_slot(a.0).cmp(&cause_slot(b.0))));
    out
}

/// The verdict in one line, naming the dominant causes:
/// "FAIL: 214 failed requests, 80% endpoint_lag on 3 pods, 20% killed_in_flight on 1 pod".
pub fn headline(summary: &Summary, r: &Rollout) -> String {
    let v = summary.verdict.as_str().to_uppercase();
    let failed = summary.requests.failed;
    if failed == 0 {
        return format!(
            "{v}: no failed requests out of {} sent",
            summary.requests.sent
        );
    }
    let word = if failed == 1 { "request" } else { "requests" };
    let shares = shares(r);
    let total: u64 = shares.iter().map(|s| s.1).sum();
    if total == 0 || shares.iter().all(|s| s.0.is_none()) {
        return format!("{v}: {failed} failed {word}, no cause attributed");
    }
    let mut parts: Vec<String> = shares
        .iter()
        .take(2)
        .map(|(cause, n, pods)| {
            let pct = (*n as f64 * 100.0 / total as f64).round();
            let on = if pods.is_empty() {
                "pods unknown".to_string()
            } else {
                format!("on {}", plural(pods.len(), "pod", "pods"))
            };
            format!("{pct:.0}% {} {on}", cause_label(*cause))
        })
        .collect();
    if shares.len() > 2 {
        let n = shares.len() - 2;
        parts.push(format!(
            "{n} more {}",
            if n == 1 { "cause" } else { "causes" }
        ));
    }
    format!("{v}: {failed} failed {word}, {}", parts.join(", "))
}

/// The x axis of the swimlanes: the throughput chart's (whole drawn buckets
/// or the asked duration, whichever is longer), else the run's span.
fn span_us(agg: &Aggregate, facts: &RunFacts, r: &Rollout) -> u64 {
    let drawn = agg.throughput.len() as u64 * THROUGHPUT_BUCKET_US;
    let span = drawn.max(duration_us(facts));
    if span > 0 {
        span
    } else {
        r.ended_us.saturating_sub(r.load_started_us).max(1_000_000)
    }
}

/// The swimlanes section.
pub fn lanes(agg: &Aggregate, facts: &RunFacts, r: &Rollout) -> String {
    let mut out = String::from("<h2>Pods over time</h2>\n");
    let s = swimlanes::build(
        r.timeline,
        r.failures,
        r.load_started_us,
        span_us(agg, facts, r),
    );
    if s.lanes.is_empty() {
        out.push_str(&note("the timeline names no pod"));
        return out;
    }
    out.push_str("<figure>\n<ul class=\"legend\">");
    for p in Phase::ALL {
        let (r, g, b) = p.color();
        out.push_str(&format!(
            "<li><span class=\"bar\" style=\"background:#{r:02x}{g:02x}{b:02x}\"></span>{}</li>",
            escape(p.label())
        ));
    }
    out.push_str("</ul>\n<ul class=\"legend\">");
    for t in TickKind::ALL {
        out.push_str(&format!(
            "<li><svg viewBox=\"0 -2 8 18\"><path d=\"M4 3v12\" stroke=\"#59636e\"/>{}</svg>{}</li>",
            t.glyph(4.0, 2.0),
            escape(t.label())
        ));
    }
    out.push_str(
        "<li><svg viewBox=\"0 0 8 16\"><path d=\"M4 0v16\" stroke=\"#37474f\" \
         stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/></svg>action (shaded while its API \
         calls ran)</li><li><svg class=\"wide\" viewBox=\"0 0 16 16\"><path d=\"M0 8H16\" \
         stroke=\"#6e7681\" stroke-dasharray=\"3 2\"/></svg>pod gone, endpoint still listed</li>\
         </ul>\n<ul class=\"legend\">",
    );
    let mut slots: BTreeSet<usize> = BTreeSet::new();
    for l in &s.lanes {
        for (slot, t) in l.totals.iter().enumerate() {
            if t.0 > 0 {
                slots.insert(slot);
            }
        }
    }
    for slot in &slots {
        let c = slot_cause(*slot);
        out.push_str(&format!(
            "<li><span class=\"bar\" style=\"background:{}\"></span>failed: {}</li>",
            hex(cause_color(c)),
            cause_label(c)
        ));
    }
    out.push_str("</ul>\n");
    out.push_str(&swimlanes::draw(&s));
    let max_col = s
        .lanes
        .iter()
        .flat_map(|l| l.columns.iter())
        .map(|c| c.iter().map(|n| u64::from(*n)).sum::<u64>())
        .max()
        .unwrap_or(0);
    let strip = if max_col > 0 {
        format!(
            " Under each bar, the failed requests sent to that pod, by send time in columns of \
             {} ms, coloured by cause; column height is the count (tallest: {max_col}).",
            fmt_num(s.span_us as f64 / 1000.0 / COLUMNS as f64)
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "<figcaption>One lane per pod, in order of creation: its phases from the pod, \
         EndpointSlice and kubelet events; ticks where the EndpointSlice and the proxy \
         stopped routing to it.{strip} Same x axis as the throughput chart below: seconds \
         since the load started. Hover for names and times.</figcaption>\n</figure>\n"
    ));
    out
}

/// One cause's failures, summed up.
#[derive(Debug, Default)]
struct CauseRow {
    n: u64,
    first_us: u64,
    last_us: u64,
    pods: BTreeSet<String>,
    unknown_pod: bool,
    kinds: BTreeMap<ErrorKind, u64>,
}

impl CauseRow {
    fn add(&mut self, n: u64, first_us: u64, last_us: u64) {
        if self.n == 0 {
            (self.first_us, self.last_us) = (first_us, last_us);
        }
        self.n += n;
        self.first_us = self.first_us.min(first_us);
        self.last_us = self.last_us.max(last_us);
    }
}

/// Per cause slot: from every failure when given (exact), else from the
/// cause groups.
fn cause_rows(r: &Rollout) -> BTreeMap<usize, CauseRow> {
    let mut rows: BTreeMap<usize, CauseRow> = BTreeMap::new();
    if r.failures.is_empty() {
        for g in r.causes {
            let row = rows.entry(cause_slot(Some(g.cause))).or_default();
            row.add(g.count, g.first_us, g.last_us);
            match &g.pod {
                Some(p) => {
                    row.pods.insert(p.clone());
                }
                None => row.unknown_pod = true,
            }
            for (k, c) in &g.kinds {
                *row.kinds.entry(*k).or_default() += c;
            }
        }
    } else {
        for f in r.failures {
            let row = rows.entry(cause_slot(f.cause)).or_default();
            row.add(1, f.sent_us, f.sent_us);
            match &f.pod {
                Some(p) => {
                    if !row.pods.contains(p) {
                        row.pods.insert(p.clone());
                    }
                }
                None => row.unknown_pod = true,
            }
            *row.kinds.entry(f.kind).or_default() += 1;
        }
    }
    rows
}

/// The causes: a summary per cause, then each group's evidence and fix.
pub fn causes(summary: &Summary, r: &Rollout) -> String {
    let mut out = String::from("<h2>Why requests failed</h2>\n");
    let failed = summary.requests.failed.max(r.failures.len() as u64);
    if failed == 0 {
        out.push_str(&note("no failed requests"));
        return out;
    }
    let rows = cause_rows(r);
    if rows.keys().all(|slot| slot_cause(*slot).is_none()) {
        out.push_str(&note(&format!(
            "{failed} failed requests, but no cause was attributed to them: no lifecycle \
             event explains them."
        )));
        return out;
    }
    let mut t = Table::new(&[
        "cause",
        ">failed",
        ">share of failed",
        "sent between (s)",
        "pods",
        "by kind",
    ]);
    let mut counted = 0u64;
    for (slot, row) in &rows {
        counted += row.n;
        let mut pods: Vec<String> = row.pods.iter().take(4).cloned().collect();
        if row.pods.len() > 4 {
            pods.push(format!("and {} more", row.pods.len() - 4));
        }
        if row.unknown_pod {
            pods.push("unknown".into());
        }
        t.row(vec![
            Cell::Html(chip(slot_cause(*slot))),
            num(row.n.to_string()),
            num(fmt_pct(row.n, failed)),
            text(format!(
                "{} – {}",
                at_s(row.first_us, r.load_started_us),
                at_s(row.last_us, r.load_started_us)
            )),
            text(pods.join(", ")),
            text(
                row.kinds
                    .iter()
                    .map(|(k, c)| format!("{k} {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
    }
    out.push_str(&t.render("causes"));
    if counted < failed {
        out.push_str(&note(&format!(
            "{} failed requests are in no cause group.",
            failed - counted
        )));
    }
    if r.causes.is_empty() {
        out.push_str(&note(
            "the correlator recorded no evidence for these causes",
        ));
        return out;
    }
    let mut groups: Vec<&CauseGroup> = r.causes.iter().collect();
    groups.sort_by(|a, b| {
        cause_slot(Some(a.cause))
            .cmp(&cause_slot(Some(b.cause)))
            .then(b.count.cmp(&a.count))
            .then(a.pod.cmp(&b.pod))
    });
    // Evidence and fix per group.
    out.push_str("<h3>Evidence and fix</h3>\n");
    let mut t = Table::new(&[
        "cause",
        "pod",
        ">failed",
        "sent between (s)",
        "evidence",
        "fix",
    ]);
    for g in groups {
        t.row(vec![
            Cell::Html(chip(Some(g.cause))),
            text(g.pod.as_deref().unwrap_or("spread or unknown")),
            num(g.count.to_string()),
            text(format!(
                "{} – {}",
                at_s(g.first_us, r.load_started_us),
                at_s(g.last_us, r.load_started_us)
            )),
            text(&g.evidence),
            Cell::Html(format!("<strong>{}</strong>", escape(&g.fix))),
        ]);
    }
    out.push_str(&t.render("evidence"));
    out
}

/// Picks one statistic from sorted values.
type Pick = fn(&[f64]) -> Option<f64>;

fn stat(values: &[Option<f64>], pick: Pick) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    pick(&v)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1}"))
}

/// Endpoint propagation per deleted pod, with min / median / max.
pub fn propagation(r: &Rollout) -> String {
    let mut out = String::from("<h2>Endpoint propagation</h2>\n");
    if r.propagation.is_empty() {
        out.push_str(&note("no pod was deleted while the load ran"));
        return out;
    }
    let mut rows: Vec<&PodPropagation> = r.propagation.iter().collect();
    rows.sort_by(|a, b| a.deletion_us.cmp(&b.deletion_us).then(a.pod.cmp(&b.pod)));
    let mut t = Table::new(&[
        "pod",
        ">deleted at (s)",
        ">deletion → slice (ms)",
        ">slice → proxy (ms)",
        ">deletion → proxy (ms)",
    ]);
    let mut cols: [Vec<Option<f64>>; 3] = Default::default();
    for p in rows {
        let slice = p.to_slice_ms();
        let hop = match (p.slice_us, p.proxy_us) {
            (Some(s), Some(x)) => Some(x.saturating_sub(s) as f64 / 1e3),
            _ => None,
        };
        let total = p
            .proxy_us
            .map(|x| x.saturating_sub(p.deletion_us) as f64 / 1e3);
        cols[0].push(slice);
        cols[1].push(hop);
        cols[2].push(total);
        t.row(vec![
            text(&p.pod),
            num(at_s(p.deletion_us, r.load_started_us)),
            num(ms(slice)),
            num(ms(hop)),
            num(ms(total)),
        ]);
    }
    let stats: [(&str, Pick); 3] = [
        ("min", |v| v.first().copied()),
        ("median", rolltest_core::stats::median),
        ("max", |v| v.last().copied()),
    ];
    for (name, pick) in stats {
        t.row(vec![
            Cell::Html(format!("<strong>{name}</strong>")),
            num(""),
            num(ms(stat(&cols[0], pick))),
            num(ms(stat(&cols[1], pick))),
            num(ms(stat(&cols[2], pick))),
        ]);
    }
    out.push_str(&t.render("prop"));
    let note_text = if cols[2].iter().all(Option::is_none) {
        "The proxy's moment is measured in embedded mode only. A preStop sleep must outlast \
         deletion → slice plus every consumer's own lag (kube-proxy, ingress)."
    } else {
        "deletion → proxy is how long new requests kept reaching a terminating pod: a \
         preStop sleep longer than its max closes the endpoint_lag window."
    };
    out.push_str(&note(note_text));
    out
}

/// Most retried requests listed one by one.
const RETRIED_ROWS: usize = 40;

/// What the ingress's retries did (`summary.retries`): the counts, the
/// failed tries by error and the retried requests (failed ones first).
/// Empty when the proxy does not retry.
pub fn retries(summary: &Summary, r: &Rollout) -> String {
    let Some(stats) = &summary.retries else {
        return String::new();
    };
    let mut out = String::from("<h2>Ingress retries</h2>\n");
    out.push_str(&format!("<p>{}.</p>\n", escape(&stats.sentence())));
    if stats.retried == 0 {
        out.push_str(&note(
            "The ingress retries a request on the next upstream after an error or a timeout \
             before the response header (up to 3 tries); none was needed in this run.",
        ));
        return out;
    }
    let mut by_error = Table::new(&["failed try", ">tries"]);
    for (error, n) in &stats.failed_tries_by_error {
        by_error.row(vec![text(error), num(n.to_string())]);
    }
    out.push_str(&by_error.render("retry-errors"));
    let mut rows: Vec<&RetriedPoint> = r.retried.iter().collect();
    rows.sort_by_key(|p| (p.failed.is_none(), p.sent_us, p.seq));
    let mut t = Table::new(&["request", ">sent at (s)", "tries", "result"]);
    for p in rows.iter().take(RETRIED_ROWS) {
        let mut chain: Vec<String> = p
            .failed_tries
            .iter()
            .map(|t| format!("{}: {}", t.pod, t.error))
            .collect();
        chain.push(p.pod.clone().unwrap_or_else(|| "?".into()));
        let status = p.status.map(|s| format!(" ({s})")).unwrap_or_default();
        let result = match p.failed {
            None => format!("ok{status}"),
            Some(kind) => format!("failed: {kind}{status}"),
        };
        t.row(vec![
            num(p.seq.to_string()),
            num(at_s(p.sent_us, r.load_started_us)),
            text(chain.join(" → ")),
            text(result),
        ]);
    }
    out.push_str(&t.render("retried"));
    if rows.len() > RETRIED_ROWS {
        out.push_str(&note(&format!(
            "{} more retried requests in records.csv (column failed_tries).",
            rows.len() - RETRIED_ROWS
        )));
    }
    out.push_str(&note(
        "Each retried request went to another upstream after a try failed before its response \
         header (nginx's proxy_next_upstream error timeout). A retry hides the failure from the \
         client only while another pod can serve; the pods it hit were still in the ingress's \
         view, which a preStop sleep longer than the propagation prevents.",
    ));
    out
}

/// The manifests' static findings.
pub fn findings(r: &Rollout) -> String {
    let mut out = String::from("<h2>Static findings of the manifests</h2>\n");
    if r.findings.is_empty() {
        out.push_str(&note("no findings: the manifests pass every static check"));
        return out;
    }
    let mut fs: Vec<&Finding> = r.findings.iter().collect();
    fs.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.id.cmp(&b.id))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
    let count = |s: Severity| fs.iter().filter(|f| f.severity == s).count();
    out.push_str(&note(&format!(
        "{}: {} error, {} warning, {} info",
        plural(fs.len(), "finding", "findings"),
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    )));
    let mut t = Table::new(&["severity", "ID", "object", "field", "message", "fix"]);
    for f in fs {
        let (cls, name) = match f.severity {
            Severity::Error => ("sev-error", "error"),
            Severity::Warning => ("sev-warning", "warning"),
            Severity::Info => ("sev-info", "info"),
        };
        t.row(vec![
            Cell::Html(format!("<span class=\"{cls}\">{name}</span>")),
            text(&f.id),
            text(&f.object),
            Cell::Html(format!(
                "<code>{}</code><br><span class=\"where\">{}:{}</span>",
                escape(&f.path),
                escape(&f.file),
                f.line
            )),
            Cell::Html(format!(
                "{}<br><span class=\"why\">{}</span>",
                escape(&f.message),
                escape(&f.why)
            )),
            text(&f.fix),
        ]);
    }
    out.push_str(&t.render("findings"));
    out
}
