//! What the sync tells the app: [`SyncEvent`]s on a broadcast channel and counters in
//! [`SyncMetrics`]; with feature `metrics`, the same counts through the `metrics` facade,
//! under the `withings_sync_*` names of the crate's one metrics table (`src/metrics.rs`):
//! requests per lane, changes accepted, sink failures, backfill chunks, inbox depth. No user
//! id is a label.

use std::sync::atomic::{AtomicU64, Ordering};

use super::stream::SyncStream;
use crate::budget::Lane;
use crate::token::UserId;

/// Something the sync did or decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The sink accepted a batch.
    Delivered {
        /// Whose.
        user: UserId,
        /// Which stream.
        stream: SyncStream,
        /// Which lane read it.
        lane: Lane,
        /// Upserts in it.
        upserts: usize,
        /// Deletes in it.
        deletes: usize,
    },
    /// A cursor moved (to a `modified` Withings gave, or a window stream's record time).
    CursorMoved {
        /// Whose.
        user: UserId,
        /// Which stream.
        stream: SyncStream,
        /// The new cursor (Unix s).
        cursor: i64,
    },
    /// A backfill chunk is done.
    BackfillProgress {
        /// Whose.
        user: UserId,
        /// Which stream.
        stream: SyncStream,
        /// Records dated from here (Unix s) on are backfilled.
        done_to: i64,
        /// Where the backfill ends (Unix s).
        horizon: i64,
    },
    /// A user's sync stopped: no further call is made for them.
    Stopped {
        /// Whose.
        user: UserId,
        /// Why (unlink, delete, refresh token refused …).
        reason: String,
    },
    /// A read or a delivery failed; the cursor stayed, the work is retried later.
    Failed {
        /// Whose.
        user: UserId,
        /// Which stream.
        stream: SyncStream,
        /// What went wrong (never a token).
        reason: String,
    },
    /// Rows Withings sent that did not decode; the cursor does not move past them.
    BadRows {
        /// Whose.
        user: UserId,
        /// Which stream.
        stream: SyncStream,
        /// How many.
        count: usize,
    },
}

/// Counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncMetrics {
    /// Changes the sink accepted.
    pub changes_delivered: u64,
    /// Requests sent per lane (notification, sweep, backfill): the pages fetched.
    pub requests: [u64; 3],
    /// Requests refused in-process because the user's sync had stopped.
    pub refused_for_stopped_users: u64,
    /// Batches the sink refused (or panicked on).
    pub sink_failures: u64,
    /// Backfill chunks done.
    pub backfill_chunks: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub changes_delivered: AtomicU64,
    pub sink_failures: AtomicU64,
    pub backfill_chunks: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter` and, with feature `metrics`, to the facade's `name`.
    pub(super) fn add(counter: &AtomicU64, n: u64, name: &'static str) {
        counter.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(name).increment(n);
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }
}

/// One request sent in `lane`, to the facade.
pub(crate) fn request_sent(lane: Lane) {
    #[cfg(feature = "metrics")]
    metrics::counter!("withings_sync_requests_total", "lane" => super::lane::label(lane))
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = lane;
}

/// The inbox depth, to the facade.
pub(crate) fn inbox_depth(depth: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("withings_sync_inbox_depth").set(depth as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = depth;
}
