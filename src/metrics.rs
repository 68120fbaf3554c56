//! Counters readable from a [`crate::WithingsAuth`] handle.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every layer built from one [`crate::WithingsAuth`].
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub refreshes_started: AtomicU64,
    pub refreshes_adopted: AtomicU64,
    pub refreshes_failed: AtomicU64,
    pub replays: AtomicU64,
    pub not_replayed: AtomicU64,
    pub waited: AtomicU64,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            refreshes_started: read(&self.refreshes_started),
            refreshes_adopted: read(&self.refreshes_adopted),
            refreshes_failed: read(&self.refreshes_failed),
            replays: read(&self.replays),
            not_replayed: read(&self.not_replayed),
            waited: read(&self.waited),
        }
    }
}

/// A reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Token-endpoint refreshes this process started.
    pub refreshes_started: u64,
    /// Times a token rotated elsewhere (another process) was adopted from the store instead.
    pub refreshes_adopted: u64,
    /// Refresh attempts that ended in an error.
    pub refreshes_failed: u64,
    /// Requests re-sent after an auth failure.
    pub replays: u64,
    /// Auth failures returned as they were because the request body could not be replayed.
    pub not_replayed: u64,
    /// Requests that waited for a refresh another request had started.
    pub waited: u64,
}
