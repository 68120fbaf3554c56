//! A token store that fails while a refresh needs it: the first read, the lease, the read under
//! the lease, the lease's release. (A save that fails after Withings rotated is in
//! `layer.rs`.) For every fault: a typed error, no token call without the lease, nothing
//! lost, and the next healthy attempt succeeds with one token call.
//!
//! The store is a real `SqliteStore` with failures injected in front of it, plus one real
//! failure: another connection holding SQLite's write lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::store_support::TempDir;
use tower::{Layer, ServiceExt};
use tower_withings::store::{LockAttempt, SqliteStore, StoreFuture, StoredToken, TokenStore};
use tower_withings::{Error, Token, WithingsAuth, clock::ManualClock, transport};
use withings_sim::Simulator;

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// Which calls fail: per operation, let `skip` calls through, then fail the next `fail`.
#[derive(Default)]
struct Plan(Mutex<HashMap<&'static str, (u32, u32)>>);

impl Plan {
    fn set(&self, operation: &'static str, skip: u32, fail: u32) {
        self.0.lock().unwrap().insert(operation, (skip, fail));
    }

    fn heal(&self) {
        self.0.lock().unwrap().clear();
    }

    /// `key` is the operation, or `reload` for the read under the lease (every second read:
    /// each refresh reads once before the lease and once under it).
    fn check(&self, key: &'static str, operation: &'static str) -> Result<(), Error> {
        let mut plan = self.0.lock().unwrap();
        match plan.get_mut(key) {
            Some((skip, _)) if *skip > 0 => *skip -= 1,
            Some((_, fail)) if *fail > 0 => {
                *fail -= 1;
                return Err(Error::store(
                    operation,
                    "connection refused (injected backend outage)",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A real store with failures injected in front of it.
type FaultyStore<S> = Hooked<S, Faults>;

struct Faults {
    plan: Arc<Plan>,
    loads: std::sync::atomic::AtomicU64,
}

impl StoreHooks for Faults {
    fn before<'a>(&'a self, call: Call<'a>) -> StoreFuture<'a, ()> {
        let (key, operation) = match call {
            Call::Load => {
                let n = self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (if n % 2 == 0 { "load" } else { "reload" }, "load")
            }
            Call::Save(_) => ("save", "save"),
            Call::Lock => ("lock", "lock"),
            Call::Unlock => ("unlock", "unlock"),
        };
        let checked = self.plan.check(key, operation);
        Box::pin(async move { checked })
    }
}

struct Setup {
    _dir: TempDir,
    path: std::path::PathBuf,
    sim: Simulator,
    clock: ManualClock,
    auth: WithingsAuth,
    plan: Arc<Plan>,
    old: Token,
}

/// A handle on a faulty SQLite store, the default user's grant imported. The lease lasts
/// 1.5 s (token timeout 500 ms).
async fn setup() -> Setup {
    let dir = TempDir::new("store-faults");
    let path = dir.file("tokens.sqlite3");
    let sim = simulator().await;
    let clock = ManualClock::new();
    let plan = Arc::new(Plan::default());
    let store: FaultyStore<_> = Hooked {
        inner: SqliteStore::open(&path).await.unwrap(),
        hooks: Faults {
            plan: plan.clone(),
            loads: Default::default(),
        },
    };
    let auth = auth_builder(&sim, &clock)
        .token_timeout(Duration::from_millis(500))
        .lease_poll(Duration::from_millis(20))
        .store(store)
        .build(transport::plain_http_client());
    let old = grant(&sim, &clock, USER);
    auth.import(old.clone()).await.unwrap();
    Setup {
        _dir: dir,
        path,
        sim,
        clock,
        auth,
        plan,
        old,
    }
}

/// Fires `n` concurrent requests for the default user; their errors (all must fail).
async fn all_fail(s: &Setup, n: usize) -> Vec<Error> {
    let service = s.auth.layer().layer(transport::plain_http_client());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = getmeas(&s.sim, USER);
        let service = service.clone();
        tasks.spawn(async move { service.oneshot(request).await });
    }
    tasks
        .join_all()
        .await
        .into_iter()
        .map(|outcome| auth_error(outcome.expect_err("the store is down: the request fails")))
        .collect()
}

fn assert_store_error(errors: &[Error], operation: &str, what: &str) {
    for error in errors {
        match error {
            Error::Store { operation: op, .. } if *op == operation => {
                assert!(error.is_transient(), "{what}: {error}");
            }
            other => panic!(
                "{what}: expected Error::Store {{ operation: {operation:?} }}, got {other:?}"
            ),
        }
    }
}

/// The record on disk, read by a separate store instance (another process's view).
async fn on_disk(path: &std::path::Path) -> StoredToken {
    SqliteStore::open(path)
        .await
        .unwrap()
        .load(USER)
        .await
        .unwrap()
        .expect("the record")
}

/// Whether another process could take the user's lease now (and gives it back if so).
async fn lease_is_free(path: &std::path::Path) -> bool {
    let other = SqliteStore::open(path).await.unwrap();
    match other.try_lock(USER, Duration::from_secs(5)).await.unwrap() {
        LockAttempt::Acquired(lease) => {
            other.unlock(USER, lease).await.unwrap();
            true
        }
        LockAttempt::Held => false,
    }
}

/// Nothing happened: no token call, the pair on disk untouched and still good at Withings,
/// no lease left behind.
async fn assert_nothing_happened(s: &Setup, what: &str) {
    let c = s.sim.counters();
    assert_eq!(c.refreshes, 0, "{what}: a token call was made: {c:?}");
    let stored = on_disk(&s.path).await;
    // (SQLite keeps times to the millisecond: compare the pair itself.)
    assert_eq!(
        stored.token.refresh_token, s.old.refresh_token,
        "{what}: pair changed"
    );
    assert_eq!(
        stored.token.access_token, s.old.access_token,
        "{what}: pair changed"
    );
    assert!(s.sim.is_refresh_token_valid(s.old.refresh_token.expose()));
    assert!(lease_is_free(&s.path).await, "{what}: a lease was left");
}

/// The store is healthy again: the next request refreshes once and succeeds, and the rotated
/// pair is on disk.
async fn assert_recovers(s: &Setup, what: &str) {
    let service = s.auth.layer().layer(transport::plain_http_client());
    expect_ok(&service, &s.sim, USER).await;
    let c = s.sim.counters();
    assert_eq!(c.refreshes, 1, "{what}: {c:?}");
    assert_eq!(c.successful_refreshes, 1, "{what}: {c:?}");
    let stored = on_disk(&s.path).await;
    assert_ne!(stored.token.refresh_token, s.old.refresh_token, "{what}");
    assert!(
        s.sim
            .is_refresh_token_valid(stored.token.refresh_token.expose()),
        "{what}: the saved pair is not accepted"
    );
    assert!(lease_is_free(&s.path).await, "{what}: a lease was left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_read_is_a_typed_error_and_nothing_is_refreshed() {
    // Every read fails (the backend is down for reads).
    reads_fail_then_recover(&["load", "reload"], "reads down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_under_the_lease_releases_it_and_calls_nobody() {
    // The first read works, the one under the lease fails.
    reads_fail_then_recover(&["reload"], "read under the lease").await;
}

/// On an expired token, with the reads `failing` always failing: every request is a load
/// error, nothing reaches Withings or changes; healed, the layer recovers.
async fn reads_fail_then_recover(failing: &[&'static str], what: &str) {
    let s = setup().await;
    s.clock.advance(EXPIRED);
    for read in failing {
        s.plan.set(read, 0, u32::MAX);
    }
    let errors = all_fail(&s, 20).await;
    assert_store_error(&errors, "load", what);
    assert_nothing_happened(&s, what).await;
    s.plan.heal();
    assert_recovers(&s, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_backend_that_is_down_never_lets_a_refresh_through() {
    let s = setup().await;
    let service = s.auth.layer().layer(transport::plain_http_client());
    s.plan.set("lock", 0, u32::MAX);
    // A token that is still good needs no lease: requests go on during the outage.
    for _ in 0..5 {
        expect_ok(&service, &s.sim, USER).await;
    }
    // Once it expires, every attempt fails with the lock error; none reaches Withings.
    s.clock.advance(EXPIRED);
    for round in 0..5 {
        let errors = all_fail(&s, 20).await;
        assert_store_error(&errors, "lock", &format!("round {round}"));
        assert_eq!(s.sim.counters().refreshes, 0, "round {round}");
    }
    let forced = s.auth.refresh(USER).await.unwrap_err();
    assert_store_error(&[forced], "lock", "forced refresh");
    assert!(s.auth.metrics().refreshes_failed >= 6);
    assert_eq!(
        s.auth.metrics().refreshes_started,
        0,
        "no unguarded refresh"
    );
    assert_nothing_happened(&s, "lock down").await;
    s.plan.heal();
    assert_recovers(&s, "lock down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_backend_down_inside_the_skew_window_keeps_the_still_valid_token() {
    let s = setup().await;
    let service = s.auth.layer().layer(transport::plain_http_client());
    s.plan.set("lock", 0, u32::MAX);
    // 2 h 57 min in: inside the 5 min skew, not expired. The proactive refresh fails on the
    // lease; the request still goes out with the token that is valid.
    s.clock.advance(Duration::from_secs(3 * 3600 - 180));
    expect_ok(&service, &s.sim, USER).await;
    assert_eq!(s.sim.counters().refreshes, 0);
    assert_eq!(s.auth.metrics().refreshes_started, 0);
    s.plan.heal();
    // Healthy again: the next refresh goes through (once).
    s.auth.refresh(USER).await.unwrap();
    expect_ok(&service, &s.sim, USER).await;
    assert_eq!(s.sim.counters().successful_refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_unlock_still_publishes_and_the_lease_lapses_for_others() {
    let s = setup().await;
    s.clock.advance(EXPIRED);
    s.plan.set("unlock", 0, 1);
    let service = s.auth.layer().layer(transport::plain_http_client());
    // The refresh succeeded and was saved: the failed release is only logged.
    expect_ok(&service, &s.sim, USER).await;
    assert_eq!(s.sim.counters().successful_refreshes, 1);
    let saved = on_disk(&s.path).await;
    assert_ne!(saved.token.refresh_token, s.old.refresh_token);

    // Another process that must refresh waits for the orphaned lease to lapse (1.5 s after it
    // was taken), then refreshes from the saved pair.
    let clock = ManualClock::new();
    let log = LeaseLog::new(|| 0);
    let other = auth_builder(&s.sim, &clock)
        .store(Hooked {
            inner: SqliteStore::open(&s.path).await.unwrap(),
            hooks: log.clone(),
        })
        .lease_poll(Duration::from_millis(20))
        .build(transport::plain_http_client());
    other.refresh(USER).await.unwrap();
    let attempts: Vec<bool> = log.attempts().iter().map(|a| a.0).collect();
    assert_eq!(
        attempts.first(),
        Some(&true),
        "the orphaned lease was found held: {attempts:?}"
    );
    assert_eq!(
        attempts.last(),
        Some(&false),
        "refreshed once it lapsed: {attempts:?}"
    );
    assert_eq!(s.sim.counters().successful_refreshes, 2);
    let service = other.layer().layer(transport::plain_http_client());
    expect_ok(&service, &s.sim, USER).await;
    assert!(lease_is_free(&s.path).await);
    let c = s.sim.counters();
    assert_eq!(c.served_601 + c.served_invalid_refresh, 0, "{c:?}");
}

/// A real SQLite failure: another process holds the database's write lock (a long write, a
/// stuck migration). Taking the lease needs a write, so it fails after the busy timeout with
/// a typed error and no token call; reads, and requests with a valid token, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_fails_the_lease_not_the_user() {
    let dir = TempDir::new("store-faults-busy");
    let path = dir.file("tokens.sqlite3");
    let sim = simulator().await;
    let clock = ManualClock::new();
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .await
        .unwrap();
    let auth = auth_builder(&sim, &clock)
        .store(store)
        .build(transport::plain_http_client());
    let old = grant(&sim, &clock, USER);
    auth.import(old.clone()).await.unwrap();
    let service = auth.layer().layer(transport::plain_http_client());

    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    expect_ok(&service, &sim, USER).await; // valid token: no store access at all
    clock.advance(EXPIRED);
    for _ in 0..3 {
        let error = auth_error(
            service
                .clone()
                .oneshot(getmeas(&sim, USER))
                .await
                .unwrap_err(),
        );
        assert!(
            matches!(
                error,
                Error::Store {
                    operation: "lock",
                    ..
                }
            ),
            "{error:?}"
        );
    }
    assert_eq!(
        sim.counters().refreshes,
        0,
        "no token call without the lease"
    );
    writer.execute_batch("ROLLBACK").unwrap();

    expect_ok(&service, &sim, USER).await;
    assert_eq!(sim.counters().successful_refreshes, 1);
    let stored = on_disk(&path).await;
    assert_ne!(stored.token.refresh_token, old.refresh_token);
    assert!(sim.is_refresh_token_valid(stored.token.refresh_token.expose()));
}
