//! The typed errors at the boundary of `crate::serve`.

use std::{io, net::SocketAddr};

/// Why the demo app could not start or keep running.
///
/// Signals, drains, crashes and timeouts are not errors: they end with an
/// exit code (see [`run`](super::run)). These are the cases where the app
/// cannot do its job at all.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address derived from the environment is not valid.
    #[error("bad listen address: {origin}={value:?}: {reason}")]
    BadListenAddr {
        /// The environment variable the value came from.
        origin: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The pod name cannot be sent as an HTTP header value.
    #[error("pod name {0:?} cannot be sent in the x-rolltest-pod header")]
    BadPodName(String),
    /// Binding the listening socket failed (address in use, not local, ...).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the listening socket's address")]
    LocalAddr(#[source] io::Error),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler")]
    Signal {
        /// The signal's name (SIGTERM, SIGINT).
        signal: &'static str,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

impl ServeError {
    /// True when the error comes from the user's input (flags or
    /// environment) rather than from the machine: exit code 2, not 3.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ServeError::BadListenAddr { .. } | ServeError::BadPodName(_)
        )
    }
}
