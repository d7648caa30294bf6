//! The shared vocabulary: request records, the run clock, the lifecycle
//! timeline, the correlator's inputs and outputs and the manifests' static
//! findings. No IO here.

mod clock;
mod evidence;
mod lifecycle;
mod proxy;
mod record;
mod retry;

pub use clock::{RunClock, format_timestamp_compact};
pub use evidence::{
    Attribution, CauseGroup, ConnRecord, Finding, PodPropagation, ProxyFailure, ProxyOutcome,
    ProxyRecord, Severity,
};
pub use lifecycle::{EventSource, LifecycleEvent, LifecycleKind, Timeline};
pub use proxy::{ProxyKind, ProxyKindParseError, ProxyMode};
pub use record::{Cause, ErrorKind, Outcome, RequestRecord};
pub use retry::{FailedTry, TryError, format_failed_tries, parse_failed_tries};
