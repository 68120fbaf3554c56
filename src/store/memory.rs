//! A store for one process: tokens live as long as the process does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

mod sync;

use super::{BudgetLedger, Lease, LocalLedger, LockAttempt, StoreFuture, StoredToken, TokenStore};
use crate::secret::Secret;
use crate::token::{Token, UserId};

/// Tokens in a map, for tests and single-process apps that re-authorize after a restart.
///
/// Its refresh leases live in the map too, so several [`crate::WithingsAuth`] handles sharing
/// one `MemoryStore` (through an `Arc`) still refresh each user once. Lease expiry uses the
/// monotonic clock. So does the app's request budget ([`crate::budget::RateBudget`]).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<UserId, StoredToken>>,
    leases: Mutex<HashMap<UserId, (String, Instant)>>,
    budget: LocalLedger,
    sync: sync::SyncMaps,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<UserId, StoredToken>) -> T) -> T {
        // A panic elsewhere cannot leave a record half-written (each write is one insert),
        // so a poisoned map is still consistent.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut records)
    }
}

impl TokenStore for MemoryStore {
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        let found = self.with(|r| r.get(&user).cloned());
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(&'a self, token: &'a Token, granted_at: SystemTime) -> StoreFuture<'a, ()> {
        self.with(|r| {
            r.insert(
                token.user_id,
                StoredToken {
                    token: token.clone(),
                    needs_reauthorization: false,
                    refreshed_at: granted_at,
                },
            )
        });
        Box::pin(async { Ok(()) })
    }

    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        granted_at: SystemTime,
    ) -> StoreFuture<'a, bool> {
        let saved = self.with(|r| match r.get_mut(&token.user_id) {
            Some(record) if record.token.refresh_token == *spent => {
                *record = StoredToken {
                    token: token.clone(),
                    needs_reauthorization: false,
                    refreshed_at: granted_at,
                };
                true
            }
            _ => false,
        });
        Box::pin(async move { Ok(saved) })
    }

    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()> {
        self.with(|r| {
            if let Some(record) = r.get_mut(&user)
                && record.token.refresh_token == *refused
            {
                record.needs_reauthorization = true;
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = match leases.get(&user) {
            Some((_, until)) if *until > now => LockAttempt::Held,
            _ => {
                let granted = Lease::new();
                let until = now
                    .checked_add(lease)
                    .unwrap_or(now + Duration::from_secs(86_400));
                leases.insert(user, (granted.owner.clone(), until));
                LockAttempt::Acquired(granted)
            }
        };
        Box::pin(async move { Ok(attempt) })
    }

    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases
            .get(&user)
            .is_some_and(|(owner, _)| *owner == lease.owner)
        {
            leases.remove(&user);
        }
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        let existed = self.with(|r| r.remove(&user).is_some());
        Box::pin(async move { Ok(existed) })
    }

    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        let mut all: Vec<StoredToken> = self.with(|r| r.values().cloned().collect());
        all.sort_by_key(|record| record.token.user_id);
        Box::pin(async move { Ok(all) })
    }

    fn budget(&self) -> Option<&dyn BudgetLedger> {
        Some(&self.budget)
    }

    fn sync_state(&self) -> Option<&dyn crate::sync::SyncState> {
        Some(self)
    }
}
