//! Pod addresses, spawning with a cleared environment, exit codes and
//! signals, process groups.

use super::*;

#[test]
fn loopback_ips_are_bindable_and_unique() {
    let ips = IpAllocator::new();
    let a = ips.allocate().expect("first");
    let b = ips.allocate().expect("second");
    // A second allocator (another cluster in this process) never repeats them.
    let c = IpAllocator::new().allocate().expect("third");
    assert!(a.is_loopback() && b.is_loopback() && c.is_loopback());
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert_ne!(a.octets()[2..], [0, 0], "127.0.0.x is left to localhost");
    let listener = TcpListener::bind((a, 0)).expect("a pod address binds without setup");
    let addr = listener.local_addr().expect("addr");
    let _client = std::net::TcpStream::connect(addr).expect("connect");
}

#[tokio::test]
async fn env_is_cleared_and_logs_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let mut s = spec(dir.path(), "envpod", ip, "env", &[]);
    s.env = vec![("FOO".into(), "bar".into())];
    let pod = PodProcess::spawn(s.clone()).expect("spawn env");
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(&s.log_file).expect("log");
    let keys: BTreeSet<&str> = log.lines().filter_map(|l| l.split('=').next()).collect();
    let mut expected = BTreeSet::from(["FOO"]);
    for k in ["PATH", "HOME"] {
        if std::env::var_os(k).is_some() {
            expected.insert(k);
        }
    }
    assert_eq!(keys, expected, "{log}");
    assert!(log.contains("FOO=bar"));

    let mut s2 = spec(
        dir.path(),
        "envpod",
        ip,
        "sh",
        &["-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    s2.log_file = s.log_file.clone();
    let pod = PodProcess::spawn(s2).expect("spawn sh");
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    let log = std::fs::read_to_string(&s.log_file).expect("log");
    assert!(
        log.contains("FOO=bar") && log.contains("to-stdout") && log.contains("to-stderr"),
        "{log}"
    );
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let err = PodProcess::spawn(spec(dir.path(), "nope", ip, "/nonexistent/program", &[]))
        .expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/program"), "{err}");
}

#[tokio::test]
async fn signals_report_exit_codes_like_kube() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let pod = PodProcess::spawn(spec(dir.path(), "term", ip, "sleep", &["30"])).expect("spawn");
    assert_eq!(pod.pid(), pod.pgid());
    assert!(pod.signal(libc::SIGTERM).expect("signal"));
    let (a, b) = tokio::join!(pod.wait(), pod.wait());
    let exit = a.expect("wait");
    assert_eq!(exit, b.expect("second waiter"));
    assert_eq!((exit.code, exit.signal), (Some(143), Some(libc::SIGTERM)));
    assert!(
        !pod.signal(libc::SIGTERM).expect("after exit"),
        "no signal to a reaped pid"
    );

    let pod = PodProcess::spawn(spec(dir.path(), "kill", ip, "sleep", &["30"])).expect("spawn");
    assert!(pod.kill_group().expect("kill"));
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!((exit.code, exit.signal), (Some(137), Some(libc::SIGKILL)));
}

#[tokio::test]
async fn main_exit_kills_the_rest_of_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let s = spec(
        dir.path(),
        "bg",
        ip,
        "sh",
        &["-c", "sleep 30 & echo $!; sleep 0.2"],
    );
    let log = s.log_file.clone();
    let pod = PodProcess::spawn(s).expect("spawn");
    let pgid = pod.pgid();
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert!(exit.success());
    let bg: i32 = std::fs::read_to_string(&log)
        .expect("log")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        eventually(Duration::from_secs(2), || !alive(bg)),
        "background sleep {bg} survived"
    );
    assert!(group_members(pgid).is_empty());
}

#[tokio::test]
async fn dropping_a_pod_kills_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let pod = PodProcess::spawn(spec(
        dir.path(),
        "drop",
        ip,
        "sh",
        &["-c", "sleep 30 & sleep 30"],
    ))
    .expect("spawn");
    let pgid = pod.pgid();
    assert!(eventually(Duration::from_secs(2), || group_members(pgid)
        .len()
        == 3));
    assert!(ChildRegistry::global().live_groups().contains(&pgid));
    drop(pod);
    assert!(eventually(Duration::from_secs(2), || group_members(pgid).is_empty()));
    assert!(!ChildRegistry::global().live_groups().contains(&pgid));
}
