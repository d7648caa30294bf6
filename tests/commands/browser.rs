//! report.html and compare.html in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`) driven over chromedriver's
//! WebDriver HTTP API loads each page from disk and the test checks what a
//! reader sees: the verdict banner's text, every chart (svg, canvas) laid
//! out with a non-zero size, the swimlanes' hover titles, no console error
//! and no network request (the pages are self-contained).
//!
//! The pages come from the commands a user runs on the synthetic naive and
//! fixed run directories of `compare.rs`: `rolltest compare` compares them,
//! `rolltest report` rebuilds each one's report.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::compare::{fixed, naive};
use crate::common;

const INSTALL: &str = "the browser tests need headless Chromium and chromedriver \
     (Debian: apt-get install -y chromium chromium-driver)";

/// Finds a program on `PATH`.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// chromedriver in a process group of its own, with the Chromium it starts;
/// dropping it (also on a failed assertion) SIGKILLs the whole group.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self.try_call("DELETE", &format!("/session/{id}"), None);
        }
        // SAFETY: kill(2) on the group this test created (pgid = child pid).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// session with a fresh profile in `profile`.
    fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Driver {
        let mut child = Command::new(chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().expect("chromedriver stdout");
        // It says "… started successfully on port N." once listening; read
        // its output on a thread (draining it to the end so it never blocks
        // on a full pipe) and wait for the port at most 30 s.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for chunk in BufReader::new(stdout).split(b'.').map_while(Result::ok) {
                let chunk = String::from_utf8_lossy(&chunk).into_owned();
                if let Some(port) = chunk
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut driver = Driver {
            child,
            port: 0,
            session: None,
            rt,
        };
        driver.port = port.expect("chromedriver did not say its port within 30 s");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = driver.call("POST", "/session", Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"));
        driver.session = Some(id.to_string());
        driver
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// One WebDriver command: its `value`, or why not (never panics, so
    /// `Drop` can use it while a failed assertion unwinds). Answers within
    /// 60 s or fails.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let port = self.port;
        let body = body.map_or_else(String::new, |b| b.to_string());
        let (status, text) = self.rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect to chromedriver: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, format!("127.0.0.1:{port}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("request: {e}"))?;
            let response =
                tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
                    .await
                    .map_err(|_| "no answer within 60 s".to_string())?
                    .map_err(|e| format!("response: {e}"))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&bytes).into_owned()))
        })?;
        if !status.is_success() {
            return Err(format!("{status} {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok(v["value"].clone())
    }

    fn session(&self) -> &str {
        self.session.as_deref().expect("session")
    }

    /// Opens a file in the browser and returns what the page shows.
    fn open(&self, file: &Path) -> Page {
        let id = self.session().to_string();
        let url = format!("file://{}", file.display());
        self.call(
            "POST",
            &format!("/session/{id}/url"),
            Some(json!({"url": url})),
        );
        let seen = self.call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            Some(json!({"script": SEE, "args": []})),
        );
        let log = self.call(
            "POST",
            &format!("/session/{id}/se/log"),
            Some(json!({"type": "browser"})),
        );
        Page {
            file: file.display().to_string(),
            seen,
            log,
        }
    }
}

/// What the page shows, read in the browser after layout.
const SEE: &str = r#"
const text = (sel) => { const e = document.querySelector(sel); return e ? e.innerText : null; };
const charts = Array.from(document.querySelectorAll('svg, canvas')).map((e) => {
  const r = e.getBoundingClientRect();
  const fig = e.closest('figure');
  return {
    in_figure: fig !== null && e.closest('.legend') === null,
    class: e.getAttribute('class') || '',
    width: r.width,
    height: r.height,
    caption: fig && fig.querySelector('figcaption') ? fig.querySelector('figcaption').innerText : '',
  };
});
const laneTitles = Array.from(document.querySelectorAll('svg.lanes title')).map((t) => t.textContent);
return {
  title: document.title,
  banner: text('.banner .v'),
  headline: text('.banner .headline'),
  conclusion: text('.banner .concl'),
  charts: charts,
  lane_titles: laneTitles,
  resources: performance.getEntriesByType('resource').map((r) => r.name),
  scripts: document.scripts.length,
};
"#;

struct Page {
    file: String,
    seen: Value,
    log: Value,
}

impl Page {
    fn str(&self, key: &str) -> &str {
        self.seen[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {key} on the page: {}", self.file, self.seen))
    }

    /// The charts in figures (not their legends' glyphs); asserts every svg/canvas on the page (legend
    /// glyphs too) was laid out with a non-zero size.
    fn figures(&self) -> Vec<&Value> {
        let charts = self.seen["charts"].as_array().expect("charts");
        for c in charts {
            let (w, h) = (c["width"].as_f64(), c["height"].as_f64());
            assert!(
                w.is_some_and(|w| w > 0.0) && h.is_some_and(|h| h > 0.0),
                "{}: a chart with no size: {c}",
                self.file
            );
        }
        charts.iter().filter(|c| c["in_figure"] == true).collect()
    }

    /// No console message at error level, no fetched resource, no script.
    fn assert_self_contained(&self) {
        let errors: Vec<&Value> = self
            .log
            .as_array()
            .expect("browser log")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect();
        assert!(
            errors.is_empty(),
            "{}: console errors: {errors:?}",
            self.file
        );
        assert_eq!(
            self.seen["resources"],
            json!([]),
            "{}: the page fetched something",
            self.file
        );
        assert_eq!(self.seen["scripts"], 0, "{}", self.file);
    }
}

#[test]
fn report_and_compare_pages_show_their_evidence_in_chromium() {
    let chromium = which("chromium").unwrap_or_else(|| panic!("chromium not found: {INSTALL}"));
    let chromedriver =
        which("chromedriver").unwrap_or_else(|| panic!("chromedriver not found: {INSTALL}"));
    let tmp = tempfile::tempdir().expect("tmp");
    let (before, after) = (naive(tmp.path()), fixed(tmp.path()));
    let cmp = tmp.path().join("cmp");
    let out = common::rolltest(&[
        "compare",
        before.to_str().expect("utf-8 path"),
        after.to_str().expect("utf-8 path"),
        "--out",
        cmp.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(common::code(&out), 0, "{}", common::text(&out));
    // A run directory keeps its scenario's text: `rolltest report` reads it.
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/embedded");
    for (dir, scenario, code) in [(&before, "naive.toml", 1), (&after, "fixed.toml", 0)] {
        std::fs::copy(scenarios.join(scenario), dir.join("scenario.toml")).expect("scenario");
        let out = common::rolltest(&["report", dir.to_str().expect("utf-8 path")]);
        assert_eq!(common::code(&out), code, "{}", common::text(&out));
    }

    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Driver::start(&chromium, &chromedriver, profile.path());

    // The failing run: banner, headline, the charts, the swimlanes.
    let page = driver.open(&before.join("report.html"));
    page.assert_self_contained();
    assert_eq!(page.str("banner"), "FAIL");
    assert_eq!(
        page.str("headline"),
        "FAIL: 13 failed requests, 77% endpoint_lag on 1 pod, 23% killed_in_flight on 1 pod"
    );
    let figures = page.figures();
    let classes: Vec<&str> = figures.iter().filter_map(|c| c["class"].as_str()).collect();
    assert!(classes.contains(&"lanes"), "no swimlanes: {classes:?}");
    // Swimlanes, throughput, latency over time, histogram at least.
    assert!(figures.len() >= 4, "{figures:?}");
    for f in &figures {
        // Drawn at the page's width, not collapsed.
        assert!(f["width"].as_f64().is_some_and(|w| w >= 500.0), "{f}");
    }
    let titles: Vec<&str> = page.seen["lane_titles"]
        .as_array()
        .expect("titles")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("10 failed requests on api-1, cause endpoint_lag, sent ")),
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.contains("api-old-1")),
        "the deleted pods' lanes have hover titles: {titles:?}"
    );

    // The passing run.
    let page = driver.open(&after.join("report.html"));
    page.assert_self_contained();
    assert_eq!(page.str("banner"), "PASS");
    assert!(page.figures().len() >= 4);

    // The comparison.
    let page = driver.open(&cmp.join("compare.html"));
    page.assert_self_contained();
    assert_eq!(
        page.str("conclusion"),
        "failed requests 13 → 0; endpoint_lag eliminated by preStop sleep 3 s; \
         killed_in_flight eliminated by terminationGracePeriodSeconds 12 and draining on SIGTERM; \
         verdict fail → pass"
    );
    let figures = page.figures();
    assert!(!figures.is_empty(), "compare.html draws failures over time");
    for f in &figures {
        assert!(f["width"].as_f64().is_some_and(|w| w >= 500.0), "{f}");
    }
}
