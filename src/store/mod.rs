//! Where token pairs live between refreshes, and how processes agree on who refreshes.
//!
//! A Withings refresh token is the user's consent: lose it and they must log in again. Every
//! store therefore offers a **compare-and-save** (a rotated pair replaces the stored one only if
//! the stored refresh token is still the one that was spent), and optionally a **lease** so that
//! only one process at a time refreshes a given user.
//!
//! The layer holds its store as `Arc<dyn TokenStore>`: the store is reached once per refresh,
//! never per request, so dynamic dispatch costs nothing that matters, and [`crate::WithingsAuth`]
//! stays one concrete type whatever the backend.
//!
//! # Which one
//!
//! | store | feature | for | cross-process refresh lock |
//! |---|---|---|---|
//! | `MemoryStore` | always | tests; one process that can re-authorize after a restart | in-process leases |
//! | `SqliteStore` | `sqlite` (default) | one machine, one or several processes; one file created 0600, WAL | lease row taken in `BEGIN IMMEDIATE` |
//! | `PostgresStore` | `postgres` | replicas sharing a database; table created if missing (`PostgresStore::schema_sql` for migrations) | lease row expiring on the server's clock |
//! | `RedisStore` | `redis` | replicas sharing a cache; keys `withings:token:<id>`, `withings:lock:<id>`, `withings:budget:<client id>` | `SET NX PX` with an owner, Lua compare-and-delete |
//!
//! Every store above also counts the app's request budget ([`crate::budget`]). Your own
//! backend: implement [`TokenStore`] and run `tower_withings::testkit::check_store` on it
//! (feature `testkit`; see `examples/custom_store.rs`).

mod backend;
mod future;
mod ledger;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
mod sync_backend;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};

use crate::error::Error;
use crate::secret::Secret;
use crate::token::{Token, UserId};
pub use future::StoreFuture;
pub(crate) use ledger::Window;
pub use ledger::{BudgetLedger, BudgetUsage, LocalLedger, SlotAsk, SlotGrant};

/// What a store keeps for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The current pair.
    pub token: Token,
    /// The refresh token was refused: only a new authorization helps. The record is kept.
    pub needs_reauthorization: bool,
    /// When this pair was granted (code exchange or refresh).
    pub refreshed_at: SystemTime,
}

/// How long a networked store ([`PostgresStore`], [`RedisStore`]) waits for its server; each
/// builder's `timeouts` says its defaults.
#[cfg(any(feature = "postgres", feature = "redis"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (for a pool, also waiting for a pooled one).
    pub connect: Duration,
    /// One operation's answer, once connected: past it the operation fails with
    /// [`Error::Store`].
    pub answer: Duration,
}

#[cfg(any(feature = "postgres", feature = "redis"))]
impl Timeouts {
    /// `connect` for opening a connection, `answer` for each answer.
    pub const fn new(connect: Duration, answer: Duration) -> Self {
        Timeouts { connect, answer }
    }
}

/// A held refresh lease; give it back to [`TokenStore::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// A random value naming the holder, so only the holder releases it.
    pub owner: String,
}

impl Lease {
    /// A lease with a fresh random owner.
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Lease {
            owner: crate::oauth::signature::hex(&bytes),
        }
    }
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to [`TokenStore::try_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// This process may refresh the user; release the lease afterwards.
    Acquired(Lease),
    /// Another process is refreshing: wait, re-read the store and adopt its token.
    Held,
}

/// Durable home of token pairs. Implement it for your own backend and check it with the
/// conformance kit (feature `testkit`).
///
/// This crate's stores (`MemoryStore`, `SqliteStore`, `PostgresStore`, `RedisStore`) share one
/// implementation, listed below as `impl<S: Backend> TokenStore for S` (`Backend` is private:
/// what each of them runs itself).
///
/// Rules every implementation keeps:
/// - [`compare_and_save`](Self::compare_and_save) is atomic: two writers that spent the same
///   refresh token cannot both win.
/// - Nothing is deleted by this crate unless the app asks ([`delete`](Self::delete), through
///   [`WithingsAuth::forget`](crate::WithingsAuth::forget)): a dead refresh token is *marked*,
///   never removed.
/// - A failure is an `Err`, never a silent no-op; the caller then keeps the pair it had.
pub trait TokenStore: Send + Sync + 'static {
    /// The user's record, if any.
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>>;

    /// Stores a freshly authorized pair unconditionally (new consent replaces anything) and
    /// clears the re-authorization mark.
    fn put<'a>(&'a self, token: &'a Token, granted_at: SystemTime) -> StoreFuture<'a, ()>;

    /// Stores a rotated pair only if the stored refresh token is still `spent` (the one the
    /// refresh used). Returns `false`, changing nothing, when it is not.
    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        granted_at: SystemTime,
    ) -> StoreFuture<'a, bool>;

    /// Marks the user as needing re-authorization, if their stored refresh token is still
    /// `refused` (a newer consent is left alone). The record stays.
    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()>;

    /// Asks for the right to refresh `user` for at most `lease` (it lapses if the holder dies).
    ///
    /// The default grants it at once: right for stores that only one process uses, since the
    /// layer already runs one refresh per user in-process. Such a store is checked with
    /// `testkit::check_single_process_store`; `testkit::check_store` checks real leases.
    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        let _ = (user, lease);
        Box::pin(async { Ok(LockAttempt::Acquired(Lease::new())) })
    }

    /// Releases a lease taken with [`try_lock`](Self::try_lock), if still held by it.
    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        let _ = (user, lease);
        Box::pin(async { Ok(()) })
    }

    /// Deletes `user`'s record: the one delete this crate makes, only when asked
    /// ([`WithingsAuth::forget`](crate::WithingsAuth::forget)). `Ok(true)` if there was one.
    ///
    /// The default refuses with an error: a store that cannot delete cannot forget users.
    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        let _ = user;
        Box::pin(async {
            Err(Error::store(
                "delete",
                "this token store cannot delete records",
            ))
        })
    }

    /// Every readable record (for listings such as the CLI's `users`). A record that cannot be
    /// read is skipped with a warning naming the user, so one bad row does not hide the others.
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>>;

    /// Where the app's request budget is counted, so that every handle and process using this
    /// store shares one ([`crate::budget::RateBudget`]). The default `None` leaves each handle its own
    /// in-process count: right for a store only one handle uses.
    fn budget(&self) -> Option<&dyn BudgetLedger> {
        None
    }

    /// Where the sync ([`crate::sync`]) keeps its cursors, leases, versions and inbox, in the
    /// same store as the tokens. The default `None`: this store cannot hold a sync.
    fn sync_state(&self) -> Option<&dyn crate::sync::SyncState> {
        None
    }
}

/// Marks `user`'s stored record as needing re-authorization, whatever pair it holds now: the
/// mark is conditional on the refresh token, so a rotation between reading it and marking is
/// read again (a few times). `Ok(true)` if it was marked now, `Ok(false)` if there is no
/// record or it was marked already.
pub(crate) async fn mark_current(store: &dyn TokenStore, user: UserId) -> Result<bool, Error> {
    for _ in 0..4 {
        let Some(record) = store.load(user).await? else {
            return Ok(false);
        };
        if record.needs_reauthorization {
            return Ok(false);
        }
        store
            .mark_needs_reauthorization(user, &record.token.refresh_token)
            .await?;
        if store
            .load(user)
            .await?
            .is_none_or(|r| r.needs_reauthorization)
        {
            return Ok(true);
        }
    }
    Err(Error::store(
        "mark",
        format!("the pair of user {user} kept changing while it was being marked"),
    ))
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        (**self).load(user)
    }
    fn put<'a>(&'a self, token: &'a Token, granted_at: SystemTime) -> StoreFuture<'a, ()> {
        (**self).put(token, granted_at)
    }
    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        granted_at: SystemTime,
    ) -> StoreFuture<'a, bool> {
        (**self).compare_and_save(spent, token, granted_at)
    }
    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()> {
        (**self).mark_needs_reauthorization(user, refused)
    }
    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        (**self).try_lock(user, lease)
    }
    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        (**self).unlock(user, lease)
    }
    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        (**self).delete(user)
    }
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        (**self).list()
    }
    fn budget(&self) -> Option<&dyn BudgetLedger> {
        (**self).budget()
    }
    fn sync_state(&self) -> Option<&dyn crate::sync::SyncState> {
        (**self).sync_state()
    }
}
