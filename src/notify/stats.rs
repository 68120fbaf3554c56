//! What a receiver has answered so far.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a receiver has answered so far (see [`NotifyReceiver::stats`](super::NotifyReceiver::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverStats {
    /// Notifications put in the queue (answered 200).
    pub delivered: u64,
    /// Repeats of a notification already delivered (answered 200, not queued again).
    pub duplicates: u64,
    /// Verification requests (`HEAD`, `GET`) answered 200.
    pub checks: u64,
    /// Answered 503 because the queue was full or closed (Withings retries).
    pub queue_full: u64,
    /// Answered 503 because the answer could not be made in time, or the store failed while
    /// marking a user who unlinked (Withings retries).
    pub unavailable: u64,
    /// Wrong or missing secret (answered 404).
    pub wrong_secret: u64,
    /// Source not in the allow-list (answered 403).
    pub forbidden_source: u64,
    /// Not a notification form (answered 400, 405 or 415).
    pub malformed: u64,
    /// Body over the size cap (answered 413).
    pub too_large: u64,
    /// Users marked as needing re-authorization after `action=unlink` or `delete`.
    pub users_marked: u64,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) delivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) checks: AtomicU64,
    pub(super) queue_full: AtomicU64,
    pub(super) unavailable: AtomicU64,
    pub(super) wrong_secret: AtomicU64,
    pub(super) forbidden_source: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) too_large: AtomicU64,
    pub(super) users_marked: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A copy of the counters.
    pub(super) fn snapshot(&self) -> ReceiverStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReceiverStats {
            delivered: read(&self.delivered),
            duplicates: read(&self.duplicates),
            checks: read(&self.checks),
            queue_full: read(&self.queue_full),
            unavailable: read(&self.unavailable),
            wrong_secret: read(&self.wrong_secret),
            forbidden_source: read(&self.forbidden_source),
            malformed: read(&self.malformed),
            too_large: read(&self.too_large),
            users_marked: read(&self.users_marked),
        }
    }
}
