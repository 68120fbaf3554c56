//! What a receiver has answered so far.

use std::sync::atomic::{AtomicU64, Ordering};

crate::metrics::counters! {
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
    live: pub(super) struct Stats;
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
