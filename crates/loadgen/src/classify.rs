//! Classifying a failed request from its real error source chain.
//!
//! The kinds are the contract's (`ErrorKind`). The rules, in order:
//! - an `io::Error` anywhere in the chain decides by its kind: refused →
//!   `connect_refused`; reset, aborted, broken pipe, unexpected EOF →
//!   `connection_reset`; timed out → `timeout`;
//! - hyper's own view: the peer closed the connection before the response was
//!   complete (`is_incomplete_message`), or closed it before the request could
//!   be written (`is_canceled`, `is_closed`) → `connection_reset` — during a
//!   rollout this is what a pod exiting under a request looks like when it
//!   sends FIN rather than RST;
//! - everything else (malformed responses, address errors) → `other`.

use std::{error::Error as StdError, io};

use rolltest_core::model::ErrorKind;

/// Where in the request the failure happened; refines the classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening the TCP connection.
    Connect,
    /// Writing the request or reading the response.
    Exchange,
}

/// The kind and a short detail for an error.
pub fn classify(stage: Stage, err: &(dyn StdError + 'static)) -> (ErrorKind, String) {
    let detail = describe(err);
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(kind) = io_kind(stage, io)
        {
            return (kind, detail);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return (ErrorKind::Timeout, detail);
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return (ErrorKind::ConnectionReset, detail);
            }
        }
        current = e.source();
    }
    (ErrorKind::Other, detail)
}

fn io_kind(stage: Stage, io: &io::Error) -> Option<ErrorKind> {
    use io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => Some(ErrorKind::ConnectRefused),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Some(ErrorKind::ConnectionReset)
        }
        K::TimedOut => Some(ErrorKind::Timeout),
        K::HostUnreachable | K::NetworkUnreachable => Some(ErrorKind::HostUnreachable),
        K::NotConnected if stage == Stage::Exchange => Some(ErrorKind::ConnectionReset),
        _ => None,
    }
}

/// The error and its sources joined, e.g. "connection error: Connection reset by peer (os error 104)".
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn io_kinds_found_through_the_chain() {
        let table = [
            (io::ErrorKind::ConnectionRefused, ErrorKind::ConnectRefused),
            (io::ErrorKind::ConnectionReset, ErrorKind::ConnectionReset),
            (io::ErrorKind::BrokenPipe, ErrorKind::ConnectionReset),
            (io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (io::ErrorKind::HostUnreachable, ErrorKind::HostUnreachable),
            (
                io::ErrorKind::NetworkUnreachable,
                ErrorKind::HostUnreachable,
            ),
            (io::ErrorKind::AddrNotAvailable, ErrorKind::Other),
        ];
        for (io_kind, expected) in table {
            let err = Wrapper(io::Error::new(io_kind, "x"));
            let (kind, detail) = classify(Stage::Exchange, &err);
            assert_eq!(kind, expected, "{io_kind:?}");
            assert!(detail.starts_with("request failed: x"), "{detail}");
        }
    }

    #[test]
    fn unreachable_errnos_are_host_unreachable() {
        // EHOSTUNREACH (113) and ENETUNREACH (101) on Linux, as a connect to
        // an address nobody answers any more fails once ARP gives up.
        for errno in [113, 101] {
            let err = io::Error::from_raw_os_error(errno);
            let (kind, detail) = classify(Stage::Connect, &err);
            assert_eq!(kind, ErrorKind::HostUnreachable, "errno {errno}: {detail}");
        }
    }
}
