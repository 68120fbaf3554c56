//! [`SyncState`]: what the sync keeps, in the same store as the tokens.
//!
//! Per (user, stream): the cursor (raised by compare-and-set, never lowered), a lease with a
//! fencing token, the backfill's progress and the last sweep; per record: the highest version
//! delivered (so versions only go up on the way to the sink, also across processes, and a
//! crash re-delivers only what the sink had not accepted); the notification inbox; the users
//! whose sync is stopped.

use std::time::Duration;

use super::stream::SyncStream;
use crate::store::StoreFuture;
use crate::token::UserId;

/// A held (user, stream) lease. Only its holder commits; every acquisition raises `fence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLease {
    /// Whose.
    pub user: UserId,
    /// Which stream.
    pub stream: SyncStream,
    /// A random value naming the holder.
    pub owner: String,
    /// The fencing token: higher than every earlier holder's of this (user, stream).
    pub fence: u64,
}

impl SyncLease {
    /// A random owner name.
    pub fn new_owner() -> String {
        crate::store::Lease::new().owner
    }
}

/// How far the backfill of one (user, stream) went: records dated before `next_end` and at or
/// after `horizon` remain. Done when `next_end <= horizon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillProgress {
    /// The end (exclusive, Unix s) of the next chunk to read.
    pub next_end: i64,
    /// Where the backfill stops (Unix s).
    pub horizon: i64,
}

impl BackfillProgress {
    /// Nothing left.
    pub fn done(&self) -> bool {
        self.next_end <= self.horizon
    }
}

/// What is stored for one (user, stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The cursor (Unix s): the newest `modified` accepted for `lastupdate` streams, the
    /// newest record time accepted for window streams. `None` before the first read.
    pub cursor: Option<i64>,
    /// The backfill, once started.
    pub backfill: Option<BackfillProgress>,
    /// When (Unix s, by the engine's clock) the last sweep of this stream finished: for
    /// scheduling only, never a cursor.
    pub swept_at: Option<i64>,
    /// The fence of the latest lease taken.
    pub fence: u64,
}

impl StreamState {
    /// A state as a durable store keeps it: the backfill as its two columns (`None` unless
    /// both are set) and the fence as a signed integer (a negative one, which no store writes,
    /// reads as 0).
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
    pub(crate) fn stored(
        cursor: Option<i64>,
        (next_end, horizon): (Option<i64>, Option<i64>),
        swept_at: Option<i64>,
        fence: i64,
    ) -> StreamState {
        StreamState {
            cursor,
            backfill: next_end
                .zip(horizon)
                .map(|(next_end, horizon)| BackfillProgress { next_end, horizon }),
            swept_at,
            fence: u64::try_from(fence).unwrap_or(0),
        }
    }
}

/// The highest version delivered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    /// The record's identity within its stream.
    pub id: String,
    /// Its version.
    pub version: i64,
    /// Delivered as a delete.
    pub deleted: bool,
    /// The record's own time (Unix s), where the reconcile pass looks for it.
    pub at: Option<i64>,
}

impl VersionEntry {
    /// `(version, deleted)`: the order in which changes of one record may follow each other.
    pub fn rank(&self) -> (i64, bool) {
        (self.version, self.deleted)
    }
}

/// One atomic, fenced write: everything the sink just accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commit<'a> {
    /// Raise the cursor to this (a lower value leaves it).
    pub cursor: Option<i64>,
    /// Set the backfill's progress.
    pub backfill: Option<BackfillProgress>,
    /// Record a finished sweep.
    pub swept_at: Option<i64>,
    /// Versions delivered (each kept only if it ranks above the stored one).
    pub versions: &'a [VersionEntry],
}

/// A pending notification: bursts for one (user, stream) coalesce into one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Whose.
    pub user: UserId,
    /// What to fetch.
    pub stream: SyncStream,
    /// Raised by every notification coalesced into the entry: an ack with an older `seq`
    /// leaves it (a notification arrived while it was processed).
    pub seq: u64,
    /// How many notifications it holds.
    pub count: u64,
    /// When the first one arrived (Unix ms, the receiver's clock), for ordering and lag.
    pub first_ms: i64,
}

impl InboxEntry {
    /// An entry as a durable store keeps it: `seq` and `count` as signed integers (a negative
    /// one, which no store writes, reads as 0).
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
    pub(crate) fn stored(
        user: UserId,
        stream: SyncStream,
        seq: i64,
        count: i64,
        first_ms: i64,
    ) -> InboxEntry {
        InboxEntry {
            user,
            stream,
            seq: u64::try_from(seq).unwrap_or(0),
            count: u64::try_from(count).unwrap_or(0),
            first_ms,
        }
    }

    /// An inbox row of the SQL stores, its columns in the order `user_id, stream, seq, count,
    /// first_ms` (0 to 4), read by `text` and `number` (a column index each), or `Ok(None)`
    /// (with a warning) for one this release cannot read: skipped, not an error.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_row<E>(
        text: impl FnOnce(usize) -> Result<String, E>,
        number: impl Fn(usize) -> Result<i64, E>,
    ) -> Result<Option<InboxEntry>, E> {
        let (user, stream) = (number(0)?, text(1)?);
        let (seq, count, first_ms) = (number(2)?, number(3)?, number(4)?);
        let (Ok(user), Ok(stream)) = (u64::try_from(user), stream.parse::<SyncStream>()) else {
            tracing::warn!("skipping an inbox row this release cannot read");
            return Ok(None);
        };
        let user = UserId(user);
        Ok(Some(InboxEntry::stored(user, stream, seq, count, first_ms)))
    }
}

/// The sync's durable state. Implemented by every store of this crate (reached through
/// [`TokenStore::sync_state`](crate::store::TokenStore::sync_state)), through one shared impl
/// listed below as `impl<S: SyncBackend> SyncState for S` (`SyncBackend` is private); checked
/// by `testkit::check_sync_state`.
pub trait SyncState: Send + Sync {
    /// Takes the (user, stream) lease for `ttl` unless another live holder has it; a lease
    /// whose holder stopped renewing is taken over once `ttl` has passed. Each taking raises
    /// the fence.
    fn lease(
        &self,
        user: UserId,
        stream: SyncStream,
        ttl: Duration,
    ) -> StoreFuture<'_, Option<SyncLease>>;

    /// Gives the lease back, if still held by it.
    fn release<'a>(&'a self, lease: &'a SyncLease) -> StoreFuture<'a, ()>;

    /// The stored state of (user, stream) (default when none).
    fn load(&self, user: UserId, stream: SyncStream) -> StoreFuture<'_, StreamState>;

    /// Applies `commit` and renews the lease for `ttl`, atomically, if `lease` is still the
    /// current holder; `Ok(false)`, changing nothing, when it is not. The cursor only rises;
    /// a version replaces the stored one only if it ranks higher.
    fn commit<'a>(
        &'a self,
        lease: &'a SyncLease,
        ttl: Duration,
        commit: Commit<'a>,
    ) -> StoreFuture<'a, bool>;

    /// The stored versions of these records, in order.
    fn versions<'a>(
        &'a self,
        user: UserId,
        stream: SyncStream,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<VersionEntry>>>;

    /// Records delivered and not deleted whose own time is in `from..=to` (the reconcile
    /// pass diffs a re-listed window against them).
    fn known(
        &self,
        user: UserId,
        stream: SyncStream,
        from: i64,
        to: i64,
    ) -> StoreFuture<'_, Vec<VersionEntry>>;

    /// Stores a notification for (user, stream) durably, coalescing with a pending one.
    /// `now_ms` is the receiver's clock.
    fn inbox_push(&self, user: UserId, stream: SyncStream, now_ms: i64) -> StoreFuture<'_, ()>;

    /// Up to `limit` pending entries, oldest first.
    fn inbox(&self, limit: usize) -> StoreFuture<'_, Vec<InboxEntry>>;

    /// Removes `entry` if no notification joined it since it was read (same `seq`).
    fn inbox_ack<'a>(&'a self, entry: &'a InboxEntry) -> StoreFuture<'a, bool>;

    /// How many entries are pending.
    fn inbox_depth(&self) -> StoreFuture<'_, u64>;

    /// Stops `user`'s sync (unlinked, deleted, refresh token refused): the engine makes no
    /// further call for them until [`resume`](Self::resume). Their pending inbox is dropped.
    fn stop<'a>(&'a self, user: UserId, reason: &'a str) -> StoreFuture<'a, ()>;

    /// Why `user`'s sync is stopped, if it is.
    fn stopped(&self, user: UserId) -> StoreFuture<'_, Option<String>>;

    /// Lets a stopped user sync again (after a new authorization). `Ok(true)` if stopped.
    fn resume(&self, user: UserId) -> StoreFuture<'_, bool>;

    /// Removes everything kept for `user`: cursors, leases, versions, inbox, stop mark.
    fn forget(&self, user: UserId) -> StoreFuture<'_, ()>;

    /// Every stream with stored state for `user`.
    fn streams(&self, user: UserId) -> StoreFuture<'_, Vec<(SyncStream, StreamState)>>;
}
