//! The command line end to end: scenario validation, `load`, `run`, the run
//! directory, `report`, interruption and exit codes.

use crate::common;

use std::{
    fs,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{DemoApp, Misbehave, bin, closed_port, code, misbehaving_server, rolltest};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary is JSON")
}

const GOOD: &str = r#"name = "t"
[target]
url = "http://127.0.0.1:9/"
[load]
rate = 10
duration = "1s"
"#;

/// Each bad input: (what to change in GOOD, expected line, key path, words in the message).
#[test]
fn bad_scenarios_exit_2_naming_file_line_and_key() {
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        ("rate = 10", "rate = 0", 5, "load.rate", "greater than 0"),
        ("rate = 10", "rate = -5", 5, "load.rate", "greater than 0"),
        (
            "rate = 10",
            "rate = \"fast\"",
            5,
            "load.rate",
            "requests per second",
        ),
        ("rate = 10", "rat = 10", 5, "load.rat", "unknown field"),
        (
            "duration = \"1s\"",
            "duration = \"5x\"",
            6,
            "load.duration",
            "invalid duration",
        ),
        (
            "duration = \"1s\"",
            "duration = \"0s\"",
            6,
            "load.duration",
            "greater than 0",
        ),
        (
            "duration = \"1s\"",
            "duration = 5",
            6,
            "load.duration",
            "duration string",
        ),
        (
            "url = \"http://127.0.0.1:9/\"",
            "url = \"https://x.test/\"",
            3,
            "target.url",
            "https",
        ),
        (
            "url = \"http://127.0.0.1:9/\"",
            "url = \"nope\"",
            3,
            "target.url",
            "URL",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\nmax_in_flight = 0",
            7,
            "load.max_in_flight",
            "nonzero",
        ),
        (
            "[load]",
            "[verdict]\nmax_failed_ratio = 2\n[load]",
            5,
            "verdict.max_failed_ratio",
            "between 0 and 1",
        ),
        (
            "[load]",
            "[verdict]\nmax_p99_ms = -1\n[load]",
            5,
            "verdict.max_p99_ms",
            "≥ 0",
        ),
        (
            "name = \"t\"",
            "name = \"t\"\n[clusterx]\nmode = 1",
            2,
            "clusterx",
            "unknown field",
        ),
        ("rate = 10", "rate = 10\nrate = 11", 6, "", "duplicate key"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (from, to, line, key, words)) in cases.iter().enumerate() {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "case {i} changed nothing");
        let path = dir.path().join(format!("case{i}.toml"));
        fs::write(&path, &text).unwrap();
        let out = rolltest(&[
            "run",
            path.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "case {i} ({to}): {err}");
        let name = format!("case{i}.toml");
        assert!(err.contains(&name), "case {i}: no file name in {err}");
        if *line > 0 {
            assert!(
                err.contains(&format!("{name}:{line}:")),
                "case {i}: no line {line} in {err}"
            );
        }
        if !key.is_empty() {
            assert!(
                err.contains(&format!(": {key}: ")),
                "case {i}: no key {key} in {err}"
            );
        }
        assert!(err.contains(words), "case {i}: no {words:?} in {err}");
    }
    // Missing [load] and missing url.
    for (text, words) in [
        (
            "name = \"t\"\n[target]\nurl = \"http://127.0.0.1:9/\"\n",
            "missing field `load`",
        ),
        (
            "name = \"t\"\n[load]\nrate = 1\nduration = \"1s\"\n",
            "target.url: is required",
        ),
    ] {
        let path = dir.path().join("missing.toml");
        fs::write(&path, text).unwrap();
        let out = rolltest(&["run", "--check", path.to_str().unwrap()]);
        assert_eq!(code(&out), 2);
        assert!(stderr(&out).contains(words), "{}", stderr(&out));
    }
}

#[test]
fn missing_scenario_file_is_bad_input() {
    let out = rolltest(&["run", "/nonexistent/scenario.toml"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("/nonexistent/scenario.toml"));
}

#[test]
fn example_scenarios_validate() {
    let mut n = 0;
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = rolltest(&["run", "--check", path.to_str().unwrap()]);
            assert_eq!(code(&out), 0, "{}: {}", path.display(), stderr(&out));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example scenarios, found {n}");
}

/// `rolltest run`'s kubectl flags: an embedded scenario whose load goes to
/// the Service (no `[target] url`) cannot switch to a real cluster (exit 2,
/// naming what to add); `-n` keeps it embedded; a plain load scenario has no
/// cluster to point them at; the help says how a relative --kubeconfig reads.
#[test]
fn cluster_flags_on_run_are_checked_before_anything_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let naive = repo.join("scenarios/embedded/naive.toml");
    let naive = naive.to_str().unwrap();
    for flags in [
        vec!["--context", "kind-rolltest"],
        vec!["--kubeconfig", "/nonexistent/kubeconfig"],
    ] {
        for check in [true, false] {
            let mut args = vec!["run", naive];
            if check {
                args.push("--check");
            }
            args.extend(&flags);
            let out = rolltest(&args);
            let err = stderr(&out);
            assert_eq!(code(&out), 2, "{args:?}: {err}");
            assert!(
                err.contains(&format!("error: {}: runs the embedded scenario ", flags[0])),
                "{err}"
            );
            assert!(err.contains("its [target] has no url"), "{err}");
            assert!(
                err.contains("Add `url = \"http://HOST:PORT/\"` to [target]"),
                "{err}"
            );
        }
    }
    let out = rolltest(&["run", "--check", naive, "-n", "demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(text.contains("; embedded cluster (-n demo);"), "{text}");
    let out = rolltest(&["run", "--check", naive, "-n", "demo-"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    let quickstart = repo.join("scenarios/quickstart.toml");
    let out = rolltest(&["run", quickstart.to_str().unwrap(), "--context", "x"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("--context: ") && err.contains("has no [cluster]"),
        "{err}"
    );

    let out = rolltest(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for words in [
        "--kubeconfig <FILE>",
        "--context <NAME>",
        "-n, --namespace <NAMESPACE>",
        "relative to the current directory",
    ] {
        assert!(help.contains(words), "{words:?} not in\n{help}");
    }
}

/// `cluster up --pod-start` takes what `[cluster.embedded] pod_start` takes
/// and refuses a reversed range before starting anything (exit 2).
#[test]
fn cluster_up_pod_start_is_checked_like_the_scenario_key() {
    let out = rolltest(&["cluster", "up", "--pod-start", "900ms..500ms"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("--pod-start") && err.contains("MIN is greater than MAX"),
        "{err}"
    );
    let out = rolltest(&["cluster", "up", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--pod-start <POD_START>"), "{help}");
}

#[test]
fn bad_load_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (vec!["--rate", "0", "--duration", "1s"], "--rate"),
        (vec!["--rate", "10", "--duration", "soon"], "--duration"),
        (
            vec!["--rate", "10", "--duration", "1s", "--timeout", "0s"],
            "--timeout",
        ),
        (
            vec!["--rate", "10", "--duration", "1s", "-H", "novalue"],
            "--header",
        ),
        (
            vec!["--rate", "10", "--duration", "1s", "--max-in-flight", "0"],
            "--max-in-flight",
        ),
    ] {
        let mut all = vec!["load", "http://127.0.0.1:9/"];
        all.extend(args);
        let out = rolltest(&all);
        assert_eq!(code(&out), 2, "{all:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{all:?}: {}", stderr(&out));
    }
    let out = rolltest(&[
        "load",
        "ftp://127.0.0.1/",
        "--rate",
        "1",
        "--duration",
        "1s",
    ]);
    assert_eq!(code(&out), 2);
}

#[test]
fn load_writes_a_complete_run_directory_and_passes() {
    let app = DemoApp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = rolltest(&[
        "load",
        &app.url(),
        "--rate",
        "200",
        "--duration",
        "1s",
        "--out",
        out_dir.to_str().unwrap(),
        "--max-p99-ms",
        "500",
    ]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    for f in [
        "records.csv",
        "summary.json",
        "report.html",
        "scenario.toml",
        "timeline.json",
        "run.json",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // A plain load's timeline has the rollout runs' shape, with no events
    // (so `compare` and `report` read both kinds alike).
    let timeline: rolltest_core::model::Timeline =
        serde_json::from_str(&fs::read_to_string(out_dir.join("timeline.json")).expect("timeline"))
            .expect("timeline.json is a Timeline");
    assert!(timeline.events.is_empty());
    let s = summary(&out_dir);
    assert_eq!(s["verdict"], "pass");
    assert_eq!(s["requests"]["scheduled"], 200);
    assert_eq!(s["requests"]["ok"], 200);
    assert_eq!(s["requests"]["dropped"], 0);
    assert_eq!(s["pods"]["demo-1"]["ok"], 200);
    assert!(s["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    for key in ["p50", "p99", "max"] {
        assert!(
            s["schedule_lag_ms"][key].is_number(),
            "schedule_lag_ms.{key}"
        );
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(s["latency_ms"][key].is_number(), "latency_ms.{key}");
    }
    assert!(
        s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "max_p99_ms" && c["pass"] == true)
    );
    let records = fs::read_to_string(out_dir.join("records.csv")).unwrap();
    assert_eq!(records.lines().count(), 201);
    assert!(records.lines().nth(1).unwrap().contains(",demo-1,"));
    // The scenario written for flags is itself a valid scenario.
    let check = rolltest(&[
        "run",
        "--check",
        out_dir.join("scenario.toml").to_str().unwrap(),
    ]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
}

#[test]
fn failures_fail_the_verdict_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", closed_port());
    let out = rolltest(&[
        "load",
        &url,
        "--rate",
        "50",
        "--duration",
        "500ms",
        "-q",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let s = summary(dir.path());
    assert_eq!(s["verdict"], "fail");
    assert_eq!(s["errors_by_kind"]["connect_refused"], 25);
    assert_eq!(s["requests"]["failed"], 25);
    // The limit can allow them.
    let out = rolltest(&[
        "load",
        &url,
        "--rate",
        "50",
        "--duration",
        "500ms",
        "-q",
        "--max-failed",
        "25",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_generator_that_drops_requests_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", misbehaving_server(Misbehave::Stall));
    let out = rolltest(&[
        "load",
        &url,
        "--rate",
        "100",
        "--duration",
        "500ms",
        "--timeout",
        "300ms",
        "--max-in-flight",
        "5",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let s = summary(dir.path());
    assert_eq!(s["verdict"], "inconclusive");
    assert!(s["requests"]["dropped"].as_u64().unwrap() > 0);
    assert!(
        s["inconclusive_reasons"][0]
            .as_str()
            .unwrap()
            .contains("dropped")
    );
}

#[test]
fn run_scenario_file_copies_it_and_report_rebuilds_the_same_summary() {
    let app = DemoApp::start(&["--work", "1ms..5ms"]);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    let text = format!(
        "# a comment that must survive\nname = \"from file\"\n[target]\nurl = \"{}\"\n[load]\nrate = 100\nduration = \"1s\"\n[verdict]\nmax_p99_ms = 1000\n",
        app.url()
    );
    fs::write(&scenario, &text).unwrap();
    let out_dir = dir.path().join("run");
    let out = rolltest(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS"));
    assert_eq!(
        fs::read_to_string(out_dir.join("scenario.toml")).unwrap(),
        text
    );
    assert_eq!(summary(&out_dir)["scenario"], "from file");

    let before = fs::read(out_dir.join("summary.json")).unwrap();
    let report_before = fs::read(out_dir.join("report.html")).unwrap();
    fs::remove_file(out_dir.join("summary.json")).unwrap();
    fs::remove_file(out_dir.join("report.html")).unwrap();
    let out = rolltest(&["report", out_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fs::read(out_dir.join("summary.json")).unwrap(),
        before,
        "summary.json differs after report"
    );
    assert_eq!(
        fs::read(out_dir.join("report.html")).unwrap(),
        report_before,
        "report.html differs after report"
    );
}

#[test]
fn report_on_something_else_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = rolltest(&["report", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("records.csv"));
}

#[test]
fn ctrl_c_stops_the_run_writes_everything_and_exits_4() {
    let app = DemoApp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let child = Command::new(bin())
        .args([
            "load",
            &app.url(),
            "--rate",
            "100",
            "--duration",
            "60s",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until 50 records are on disk (a header and 50 rows), then
    // interrupt.
    let started = Instant::now();
    while fs::read_to_string(out_dir.join("records.csv")).map_or(0, |t| t.lines().count()) < 51 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no records appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let s = summary(&out_dir);
    assert_eq!(s["verdict"], "inconclusive");
    assert_eq!(s["interrupted"], true);
    let scheduled = s["requests"]["scheduled"].as_u64().unwrap();
    assert!((50..6000).contains(&scheduled), "scheduled {scheduled}");
    let records = fs::read_to_string(out_dir.join("records.csv")).unwrap();
    assert_eq!(
        records.lines().count() as u64,
        scheduled + 1,
        "one row per scheduled request"
    );
    assert_eq!(
        s["requests"]["ok"].as_u64().unwrap(),
        scheduled,
        "in-flight requests finished"
    );
    assert!(out_dir.join("report.html").is_file());
}

#[test]
fn load_sends_the_method_headers_and_body_it_is_given() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // Head, then the 5-byte body.
            while !String::from_utf8_lossy(&buf).contains("hello") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/submit?x=1");
    let out = rolltest(&[
        "load",
        &url,
        "--rate",
        "1",
        "--duration",
        "500ms",
        "-X",
        "post",
        "-H",
        "x-scenario: demo",
        "--body",
        "hello",
        "--no-keepalive",
        "-q",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let request = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the server saw a request");
    let lower = request.to_ascii_lowercase();
    assert!(
        request.starts_with("POST /submit?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(lower.contains("x-scenario: demo\r\n"), "{request}");
    assert!(lower.contains(&format!("host: {addr}\r\n")), "{request}");
    assert!(lower.contains("connection: close\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nhello"), "{request}");
}

/// Runs `rolltest ARGS` on a pseudo-terminal (util-linux `script`) and returns what it drew.
fn on_a_terminal(args: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", &format!("{} {args}", bin()), "/dev/null"])
        .output()
        .expect("`script` (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_shows_on_a_terminal_unless_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", closed_port());
    let args = format!(
        "load {url} --rate 20 --duration 1s --out {}",
        dir.path().display()
    );
    let drawn = on_a_terminal(&args);
    assert!(
        drawn.contains("req/s") && drawn.contains("failed"),
        "no progress bar:\n{drawn}"
    );
    assert!(drawn.contains("FAIL"), "the summary still prints:\n{drawn}");
    let quiet = on_a_terminal(&format!("{args} --quiet"));
    assert!(
        !quiet.contains("in flight"),
        "progress despite --quiet:\n{quiet}"
    );
    assert!(quiet.contains("FAIL"));
    // Not a terminal: no bar either.
    let out = rolltest(&[
        "load",
        &url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!stderr(&out).contains("in flight"));
}
