//! The wall clock, in the units stored records use. The one place that reads `SystemTime`
//! (elapsed-time measures use `Instant` where they are taken); a clock before 1970 reads as 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch (blob records' creation and access times).
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch (tag records' check times, upload sessions' start).
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}
