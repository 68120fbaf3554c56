//! The one [`SyncState`] impl of this crate's stores, over what each runs itself
//! ([`SyncBackend`]: plain `async fn`s, a (user, stream) as one [`Key`]).

use std::future::Future;
use std::time::Duration;

use super::StoreFuture;
use crate::error::Error;
use crate::sync::{
    Commit, InboxEntry, StreamState, SyncLease, SyncState, SyncStream, VersionEntry,
};
use crate::token::UserId;

/// One (user, stream): what the sync keeps its cursor, lease and versions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) user: UserId,
    pub(crate) stream: SyncStream,
}

impl Key {
    /// The (user, stream) a lease holds.
    pub(crate) fn of_lease(lease: &SyncLease) -> Key {
        Key {
            user: lease.user,
            stream: lease.stream,
        }
    }
}

/// [`SyncState`], as each store writes it; the contract is the one documented there.
pub(crate) trait SyncBackend: Send + Sync {
    fn lease(
        &self,
        key: Key,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<SyncLease>, Error>> + Send;
    fn release(&self, lease: &SyncLease) -> impl Future<Output = Result<(), Error>> + Send;
    fn load(&self, key: Key) -> impl Future<Output = Result<StreamState, Error>> + Send;
    fn commit(
        &self,
        lease: &SyncLease,
        ttl: Duration,
        c: Commit<'_>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
    fn versions(
        &self,
        key: Key,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Option<VersionEntry>>, Error>> + Send;
    fn known(
        &self,
        key: Key,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<VersionEntry>, Error>> + Send;
    fn inbox_push(&self, key: Key, now_ms: i64) -> impl Future<Output = Result<(), Error>> + Send;
    fn inbox(&self, limit: usize) -> impl Future<Output = Result<Vec<InboxEntry>, Error>> + Send;
    fn inbox_ack(&self, entry: &InboxEntry) -> impl Future<Output = Result<bool, Error>> + Send;
    fn inbox_depth(&self) -> impl Future<Output = Result<u64, Error>> + Send;
    fn stop(&self, user: UserId, reason: &str) -> impl Future<Output = Result<(), Error>> + Send;
    fn stopped(&self, user: UserId) -> impl Future<Output = Result<Option<String>, Error>> + Send;
    fn resume(&self, user: UserId) -> impl Future<Output = Result<bool, Error>> + Send;
    fn forget(&self, user: UserId) -> impl Future<Output = Result<(), Error>> + Send;
    fn streams(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<(SyncStream, StreamState)>, Error>> + Send;
}

impl<S: SyncBackend> SyncState for S {
    fn lease(
        &self,
        user: UserId,
        stream: SyncStream,
        ttl: Duration,
    ) -> StoreFuture<'_, Option<SyncLease>> {
        Box::pin(SyncBackend::lease(self, Key { user, stream }, ttl))
    }

    fn release<'a>(&'a self, lease: &'a SyncLease) -> StoreFuture<'a, ()> {
        Box::pin(SyncBackend::release(self, lease))
    }

    fn load(&self, user: UserId, stream: SyncStream) -> StoreFuture<'_, StreamState> {
        Box::pin(SyncBackend::load(self, Key { user, stream }))
    }

    fn commit<'a>(
        &'a self,
        lease: &'a SyncLease,
        ttl: Duration,
        commit: Commit<'a>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(SyncBackend::commit(self, lease, ttl, commit))
    }

    fn versions<'a>(
        &'a self,
        user: UserId,
        stream: SyncStream,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<VersionEntry>>> {
        Box::pin(SyncBackend::versions(self, Key { user, stream }, ids))
    }

    fn known(
        &self,
        user: UserId,
        stream: SyncStream,
        from: i64,
        to: i64,
    ) -> StoreFuture<'_, Vec<VersionEntry>> {
        Box::pin(SyncBackend::known(self, Key { user, stream }, from, to))
    }

    fn inbox_push(&self, user: UserId, stream: SyncStream, now_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(SyncBackend::inbox_push(self, Key { user, stream }, now_ms))
    }

    fn inbox(&self, limit: usize) -> StoreFuture<'_, Vec<InboxEntry>> {
        Box::pin(SyncBackend::inbox(self, limit))
    }

    fn inbox_ack<'a>(&'a self, entry: &'a InboxEntry) -> StoreFuture<'a, bool> {
        Box::pin(SyncBackend::inbox_ack(self, entry))
    }

    fn inbox_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(SyncBackend::inbox_depth(self))
    }

    fn stop<'a>(&'a self, user: UserId, reason: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(SyncBackend::stop(self, user, reason))
    }

    fn stopped(&self, user: UserId) -> StoreFuture<'_, Option<String>> {
        Box::pin(SyncBackend::stopped(self, user))
    }

    fn resume(&self, user: UserId) -> StoreFuture<'_, bool> {
        Box::pin(SyncBackend::resume(self, user))
    }

    fn forget(&self, user: UserId) -> StoreFuture<'_, ()> {
        Box::pin(SyncBackend::forget(self, user))
    }

    fn streams(&self, user: UserId) -> StoreFuture<'_, Vec<(SyncStream, StreamState)>> {
        Box::pin(SyncBackend::streams(self, user))
    }
}
