//! Lifecycle log lines on stderr: `<RFC3339 millis> <pod> <message>`.
//!
//! Only lifecycle steps are logged, never individual requests: the app is the
//! target of load tests and its request path stays free of I/O.

use std::{fmt, io::Write, time::SystemTime};

/// Writes one timestamped line per lifecycle step to stderr.
#[derive(Debug, Clone)]
pub(crate) struct Logger {
    pod: String,
}

impl Logger {
    /// A logger that tags every line with `pod`.
    pub(crate) fn new(pod: &str) -> Self {
        Logger {
            pod: pod.to_owned(),
        }
    }

    /// Writes one line. The line is formatted first and written with a
    /// single call so concurrent lines never interleave; a failed write
    /// (stderr closed) is ignored because the app must keep serving.
    pub(crate) fn log(&self, message: fmt::Arguments<'_>) {
        let line = format!(
            "{} {} {}\n",
            humantime::format_rfc3339_millis(SystemTime::now()),
            self.pod,
            message
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
