//! The shared vocabulary: request records and the run clock. No IO here.

mod clock;
mod record;

pub use clock::{RunClock, format_timestamp_compact};
pub use record::{Cause, ErrorKind, Outcome, RequestRecord};
