//! The warm-up before a cluster run's load: single requests until the
//! target answers.

use std::time::{Duration, Instant};

use rolltest_loadgen as loadgen;

use crate::{error::RunError, events::Events};

/// Requests in a row that must answer below 500 before the load starts.
const WARM_UP_IN_A_ROW: u32 = 3;

/// Sends single requests to the target, built as the load builds them
/// ([`loadgen::probe`]), until [`WARM_UP_IN_A_ROW`] in a row answer below
/// 500 (each within the load's own request timeout, the whole bounded by
/// `timeout`): proves the URL reaches the app before any request is counted.
pub(super) async fn warm_up(
    addr: std::net::SocketAddr,
    target: &rolltest_loadgen::Target,
    request_timeout: Duration,
    timeout: Duration,
    events: &Events,
) -> Result<(), RunError> {
    let started = Instant::now();
    let mut in_a_row = 0;
    let mut last = String::from("no answer yet");
    let mut reported = Instant::now();
    while in_a_row < WARM_UP_IN_A_ROW {
        if started.elapsed() > timeout {
            return Err(RunError::NotServing {
                url: target.url.to_string(),
                in_a_row: WARM_UP_IN_A_ROW,
                within: timeout,
                last,
            });
        }
        let status = match tokio::time::timeout(request_timeout, loadgen::probe(target, addr)).await
        {
            Ok(Ok(code)) => Some(code),
            Ok(Err(e)) => {
                last = e;
                None
            }
            Err(_) => {
                last = "timed out".into();
                None
            }
        };
        match status {
            Some(code) if code < 500 => in_a_row += 1,
            Some(code) => {
                last = format!("HTTP {code}");
                in_a_row = 0;
            }
            None => in_a_row = 0,
        }
        if in_a_row < WARM_UP_IN_A_ROW {
            if reported.elapsed() > Duration::from_secs(5) {
                events.note(format!(
                    "  waiting for the target {} to answer ({last})",
                    target.url
                ));
                reported = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(if status.is_some() {
                20
            } else {
                200
            }))
            .await;
        }
    }
    Ok(())
}
