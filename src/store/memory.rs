//! A store for one process: tokens live as long as the process does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod sync;

use super::backend::{Backend, HasLedger, Save};
use super::{BudgetLedger, Lease, LocalLedger, LockAttempt, StoredToken};
use crate::error::Error;
use crate::secret::Secret;
use crate::token::UserId;

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

impl Backend for MemoryStore {
    async fn read(&self, user: UserId) -> Result<Option<StoredToken>, Error> {
        Ok(self.with(|r| r.get(&user).cloned()))
    }

    async fn save(&self, save: Save<'_>) -> Result<bool, Error> {
        let user = save.token.user_id;
        Ok(self.with(|r| {
            let saved = match save.spent {
                None => true,
                Some(spent) => r
                    .get(&user)
                    .is_some_and(|stored| stored.token.refresh_token == *spent),
            };
            if saved {
                let record = StoredToken {
                    token: save.token.clone(),
                    needs_reauthorization: false,
                    refreshed_at: save.granted_at,
                };
                r.insert(user, record);
            }
            saved
        }))
    }

    async fn mark(&self, user: UserId, refused: &Secret) -> Result<(), Error> {
        self.with(|r| {
            if let Some(record) = r.get_mut(&user)
                && record.token.refresh_token == *refused
            {
                record.needs_reauthorization = true;
            }
        });
        Ok(())
    }

    async fn lock(&self, user: UserId, lease: Duration) -> Result<LockAttempt, Error> {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match leases.get(&user) {
            Some((_, until)) if *until > now => LockAttempt::Held,
            _ => {
                let granted = Lease::new();
                let until = now
                    .checked_add(lease)
                    .unwrap_or(now + Duration::from_secs(86_400));
                leases.insert(user, (granted.owner.clone(), until));
                LockAttempt::Acquired(granted)
            }
        })
    }

    async fn release(&self, user: UserId, lease: Lease) -> Result<(), Error> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases
            .get(&user)
            .is_some_and(|(owner, _)| *owner == lease.owner)
        {
            leases.remove(&user);
        }
        Ok(())
    }

    async fn remove(&self, user: UserId) -> Result<bool, Error> {
        Ok(self.with(|r| r.remove(&user).is_some()))
    }

    async fn records(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        let mut all: Vec<StoredToken> = self.with(|r| r.values().cloned().collect());
        all.sort_by_key(|record| record.token.user_id);
        Ok(all.into_iter().map(Ok).collect())
    }
}

impl HasLedger for MemoryStore {
    fn ledger(&self) -> &dyn BudgetLedger {
        &self.budget
    }
}
