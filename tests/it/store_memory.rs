//! The in-memory store passes the conformance kit.

use std::sync::Arc;

use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::testkit::{check_shared_stores, check_single_process_store, check_store};

#[tokio::test]
async fn memory_store_conforms() {
    check_store(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_shared_by_two_handles_conforms() {
    let store = Arc::new(MemoryStore::new());
    let other = Arc::clone(&store);
    check_shared_stores(&store, &other).await;
}

/// Stores that break a rule: the kit must catch each one.
mod broken {
    use std::time::{Duration, SystemTime};

    use tower_withings::store::{
        Lease, LockAttempt, MemoryStore, StoreFuture, StoredToken, TokenStore,
    };
    use tower_withings::{Secret, Token, UserId};

    /// Which rule to break.
    #[derive(Clone, Copy)]
    pub enum Flaw {
        /// Saves whatever the spent token.
        BlindCompareAndSave,
        /// Marks whatever the refused token.
        BlindMark,
        /// `put` keeps the re-authorization mark.
        StickyMark,
        /// Leases never lapse.
        EternalLeases,
    }

    pub struct Broken {
        pub inner: MemoryStore,
        pub flaw: Flaw,
    }

    /// MemoryStore's records with the trait's default lease, untouched.
    pub struct DefaultLease(pub MemoryStore);

    impl TokenStore for DefaultLease {
        fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
            self.0.load(user)
        }
        fn put<'a>(&'a self, token: &'a Token, at: SystemTime) -> StoreFuture<'a, ()> {
            self.0.put(token, at)
        }
        fn compare_and_save<'a>(
            &'a self,
            spent: &'a Secret,
            token: &'a Token,
            at: SystemTime,
        ) -> StoreFuture<'a, bool> {
            self.0.compare_and_save(spent, token, at)
        }
        fn mark_needs_reauthorization<'a>(
            &'a self,
            user: UserId,
            refused: &'a Secret,
        ) -> StoreFuture<'a, ()> {
            self.0.mark_needs_reauthorization(user, refused)
        }
        fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
            self.0.delete(user)
        }
        fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
            self.0.list()
        }
    }

    impl TokenStore for Broken {
        fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
            self.inner.load(user)
        }
        fn put<'a>(&'a self, token: &'a Token, at: SystemTime) -> StoreFuture<'a, ()> {
            Box::pin(async move {
                let marked = self
                    .inner
                    .load(token.user_id)
                    .await?
                    .is_some_and(|r| r.needs_reauthorization);
                self.inner.put(token, at).await?;
                if marked && matches!(self.flaw, Flaw::StickyMark) {
                    self.inner
                        .mark_needs_reauthorization(token.user_id, &token.refresh_token)
                        .await?;
                }
                Ok(())
            })
        }
        fn compare_and_save<'a>(
            &'a self,
            spent: &'a Secret,
            token: &'a Token,
            at: SystemTime,
        ) -> StoreFuture<'a, bool> {
            match self.flaw {
                Flaw::BlindCompareAndSave => Box::pin(async move {
                    match self.inner.load(token.user_id).await? {
                        Some(_) => self.inner.put(token, at).await.map(|()| true),
                        None => Ok(false),
                    }
                }),
                _ => self.inner.compare_and_save(spent, token, at),
            }
        }
        fn mark_needs_reauthorization<'a>(
            &'a self,
            user: UserId,
            refused: &'a Secret,
        ) -> StoreFuture<'a, ()> {
            match self.flaw {
                Flaw::BlindMark => Box::pin(async move {
                    if let Some(r) = self.inner.load(user).await? {
                        self.inner
                            .mark_needs_reauthorization(user, &r.token.refresh_token)
                            .await?;
                    }
                    Ok(())
                }),
                _ => self.inner.mark_needs_reauthorization(user, refused),
            }
        }
        fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
            match self.flaw {
                Flaw::EternalLeases => self.inner.try_lock(user, Duration::from_secs(3600)),
                _ => self.inner.try_lock(user, lease),
            }
        }
        fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
            self.inner.unlock(user, lease)
        }
        fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
            self.inner.delete(user)
        }
        fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
            self.inner.list()
        }
    }
}

#[tokio::test]
async fn the_kit_catches_broken_stores() {
    use broken::{Broken, Flaw};
    let cases = [
        (Flaw::BlindCompareAndSave, "compare_and_save succeeded"),
        (
            Flaw::BlindMark,
            "marked a record whose refresh token is not the refused one",
        ),
        (Flaw::StickyMark, "did not clear the re-authorization mark"),
        (Flaw::EternalLeases, "lapsed"),
    ];
    for (flaw, expected) in cases {
        let store = Broken {
            inner: MemoryStore::new(),
            flaw,
        };
        let message = kit_refusal(store).await;
        assert!(
            message.contains(expected),
            "expected a panic about {expected:?}, got {message:?}"
        );
    }
}

/// A store with the trait's own default lease (it overrides neither `try_lock` nor `unlock`)
/// is right for one process: the single-process kit passes it, and the full kit's refusal
/// says to use that one instead.
#[tokio::test]
async fn the_default_lease_is_for_one_process_and_the_kit_says_so() {
    let store = broken::DefaultLease(MemoryStore::new());
    check_single_process_store(&store).await;
    let message = kit_refusal(store).await;
    assert!(message.contains("Held"), "{message}");
    assert!(message.contains("check_single_process_store"), "{message}");
}

/// The message of the panic with which `check_store` refuses `store` (a test failure if it
/// passes it).
async fn kit_refusal(store: impl TokenStore) -> String {
    let outcome = tokio::spawn(async move { check_store(&store).await }).await;
    let panic = match outcome {
        Err(error) if error.is_panic() => error.into_panic(),
        Err(error) => panic!("{error}"),
        Ok(()) => panic!("the kit passed a store that breaks a rule"),
    };
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
