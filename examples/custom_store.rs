//! A token store of your own, checked with the conformance kit.
//!
//! This one keeps the pair and its metadata in two maps, times as whole Unix seconds (the kit
//! accepts second precision), and leases in a third map with a monotonic deadline. Replace the
//! maps with your database; keep the rules the kit checks.
//!
//! Run: `cargo run --example custom_store --features testkit`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tower_withings::store::{Lease, LockAttempt, StoreFuture, StoredToken, TokenStore};
use tower_withings::testkit::{check_shared_stores, check_store};
use tower_withings::{Secret, Token, UserId};

#[derive(Default)]
struct Tables {
    /// user → (access token, refresh token)
    pairs: HashMap<u64, (String, String)>,
    /// user → metadata
    meta: HashMap<u64, Meta>,
    /// user → (lease owner, deadline)
    leases: HashMap<u64, (String, Instant)>,
}

struct Meta {
    expires_at_secs: u64,
    scope: String,
    needs_reauthorization: bool,
    refreshed_at_secs: u64,
}

/// The user-written store.
#[derive(Default)]
struct TwoMapStore {
    tables: Mutex<Tables>,
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TwoMapStore {
    fn with<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> T {
        f(&mut self.tables.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(tables: &mut Tables, token: &Token, granted_at: SystemTime) {
        let id = token.user_id.0;
        tables.pairs.insert(
            id,
            (
                token.access_token.expose().to_owned(),
                token.refresh_token.expose().to_owned(),
            ),
        );
        tables.meta.insert(
            id,
            Meta {
                expires_at_secs: secs(token.expires_at),
                scope: token.scope.clone(),
                needs_reauthorization: false,
                refreshed_at_secs: secs(granted_at),
            },
        );
    }

    fn read(tables: &Tables, id: u64) -> Option<StoredToken> {
        let (access, refresh) = tables.pairs.get(&id)?;
        let meta = tables.meta.get(&id)?;
        Some(StoredToken {
            token: Token {
                user_id: UserId(id),
                access_token: Secret::new(access.clone()),
                refresh_token: Secret::new(refresh.clone()),
                expires_at: UNIX_EPOCH + Duration::from_secs(meta.expires_at_secs),
                scope: meta.scope.clone(),
            },
            needs_reauthorization: meta.needs_reauthorization,
            refreshed_at: UNIX_EPOCH + Duration::from_secs(meta.refreshed_at_secs),
        })
    }

    fn refresh_token_is(tables: &Tables, id: u64, expected: &Secret) -> bool {
        tables
            .pairs
            .get(&id)
            .is_some_and(|(_, refresh)| expected.ct_eq(refresh))
    }
}

impl TokenStore for TwoMapStore {
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        let found = self.with(|t| Self::read(t, user.0));
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(&'a self, token: &'a Token, granted_at: SystemTime) -> StoreFuture<'a, ()> {
        self.with(|t| Self::write(t, token, granted_at));
        Box::pin(async { Ok(()) })
    }

    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        granted_at: SystemTime,
    ) -> StoreFuture<'a, bool> {
        // Check and write under one lock: that is what makes it a compare-and-save.
        let saved = self.with(|t| {
            let current = Self::refresh_token_is(t, token.user_id.0, spent);
            if current {
                Self::write(t, token, granted_at);
            }
            current
        });
        Box::pin(async move { Ok(saved) })
    }

    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()> {
        self.with(|t| {
            if Self::refresh_token_is(t, user.0, refused)
                && let Some(meta) = t.meta.get_mut(&user.0)
            {
                meta.needs_reauthorization = true;
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        let attempt = self.with(|t| {
            let now = Instant::now();
            match t.leases.get(&user.0) {
                Some((_, deadline)) if *deadline > now => LockAttempt::Held,
                _ => {
                    let granted = Lease::new();
                    t.leases
                        .insert(user.0, (granted.owner.clone(), now + lease));
                    LockAttempt::Acquired(granted)
                }
            }
        });
        Box::pin(async move { Ok(attempt) })
    }

    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        self.with(|t| {
            if t.leases
                .get(&user.0)
                .is_some_and(|(owner, _)| *owner == lease.owner)
            {
                t.leases.remove(&user.0);
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        let existed = self.with(|t| {
            t.meta.remove(&user.0);
            t.pairs.remove(&user.0).is_some()
        });
        Box::pin(async move { Ok(existed) })
    }

    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        let mut all: Vec<StoredToken> =
            self.with(|t| t.pairs.keys().filter_map(|id| Self::read(t, *id)).collect());
        all.sort_by_key(|r| r.token.user_id);
        Box::pin(async move { Ok(all) })
    }
}

#[tokio::main]
async fn main() {
    let store = Arc::new(TwoMapStore::default());
    check_store(&store).await;
    // Two handles on one backend (here: the same maps) must see each other's leases.
    check_shared_stores(&store, &Arc::clone(&store)).await;
    println!("TwoMapStore passes the tower-withings store conformance kit");
}
