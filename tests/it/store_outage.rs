//! A durable store going away under a running layer: its connections killed by the server, the
//! server unreachable for a while (also in the middle of a refresh), a server that stops
//! answering, a server killed and restarted. Each scenario is written once, generic over
//! [`Backend`], and instantiated per backend at the end of this file.
//!
//! The layer must recover by itself (no restart, no reconnect call), every failure must be a
//! typed error, no refresh may run without the lease, and no grant may be lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::{Layer, ServiceExt};
use tower_withings::store::TokenStore;
use tower_withings::{
    Error, Token, WithingsAuth, WithingsAuthService, clock::ManualClock, transport,
};
use withings_sim::Simulator;

use crate::backend::{Backend, for_backends};
use crate::common::*;

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// The layer over the plain HTTP client, as every scenario here builds it.
type Service = WithingsAuthService<Client<HttpConnector, Full<Bytes>>>;

/// One getmeas through the layer: the body status, or the crate's error.
async fn call(service: &Service, sim: &Simulator) -> Result<i64, Error> {
    match service.clone().oneshot(getmeas(sim, USER)).await {
        Ok(response) => Ok(json(response).await["status"].as_i64().unwrap()),
        Err(error) => Err(auth_error(error)),
    }
}

/// The request went through and Withings answered status 0.
#[track_caller]
fn assert_ok(outcome: Result<i64, Error>, what: impl std::fmt::Display) {
    match outcome {
        Ok(0) => {}
        other => panic!("{what}: expected status 0, got {other:?}"),
    }
}

/// A store failure, as the layer must report it.
fn assert_store_error(error: &Error, what: &str) {
    assert!(
        matches!(error, Error::Store { .. }) && error.is_transient(),
        "{what}: expected a transient Error::Store, got {error:?}"
    );
}

/// A failed save, as the refresh must report it.
fn assert_save_failed(outcome: Result<i64, Error>, what: &str) {
    let error = outcome.expect_err(what);
    assert!(
        matches!(
            error,
            Error::Store {
                operation: "save",
                ..
            }
        ),
        "{what}: {error:?}"
    );
}

/// After a fault is over, the layer recovers by itself: requests 50 ms apart (the layer runs
/// here without backoff; this stands in for its default one) work by the third at the latest,
/// and each that does not is a typed store error: the failures that reveal a dead connection.
/// A PostgreSQL connection can take two: the query that receives the termination notice, and,
/// within a few milliseconds of it, one more on the same connection before the pool sees it
/// closed. Returns the failures.
async fn recovers(service: &Service, sim: &Simulator, what: &str) -> Vec<Error> {
    let mut failures = Vec::new();
    loop {
        match call(service, sim).await {
            Ok(status) => {
                assert_eq!(status, 0, "{what}");
                return failures;
            }
            Err(error) => {
                assert_store_error(&error, what);
                failures.push(error);
                assert!(failures.len() < 3, "{what}: not recovered: {failures:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The grant is alive: Withings accepts the stored refresh token. (`store` is the checker:
/// on a server that was restarted its first read can find its own connection dead; it
/// reconnects on the next.)
async fn assert_grant_alive(store: &dyn TokenStore, sim: &Simulator, what: &str) -> Token {
    let stored = match store.load(USER).await {
        Err(Error::Store { .. }) => store.load(USER).await,
        loaded => loaded,
    };
    let stored = stored.unwrap().expect("the record").token;
    assert!(
        sim.is_refresh_token_valid(stored.refresh_token.expose()),
        "{what}: the stored refresh token is not accepted (grant lost)"
    );
    stored
}

/// What each scenario starts from: a simulator, a handle on the backend's faulty store with
/// the default user's grant imported (keep it for the scenario's length), its clock and its
/// layer, and a checker store the faults never touch.
async fn setup<B: Backend>(
    backend: &B,
) -> (
    Simulator,
    WithingsAuth,
    ManualClock,
    Service,
    Arc<dyn TokenStore>,
) {
    let sim = simulator().await;
    let clock = ManualClock::new();
    let auth = auth_builder(&sim, &clock)
        .shared_store(backend.open_faulty().await)
        .lease_poll(Duration::from_millis(20))
        .build(transport::plain_http_client());
    auth.import(grant(&sim, &clock, USER)).await.unwrap();
    let service = auth.layer().layer(transport::plain_http_client());
    let check = backend.open().await;
    (sim, auth, clock, service, check)
}

/// Starts a request whose refresh is in flight at Withings (answer held 400 ms), and returns
/// once Withings has rotated the pair: the store is about to be asked to save it.
async fn refresh_in_flight(
    service: &Service,
    sim: &Simulator,
) -> tokio::task::JoinHandle<Result<i64, Error>> {
    sim.set_token_latency(Duration::from_millis(400));
    let rotated = sim.counters().successful_refreshes;
    let (service, request) = (service.clone(), getmeas(sim, USER));
    let task = tokio::spawn(async move {
        match service.oneshot(request).await {
            Ok(response) => Ok(json(response).await["status"].as_i64().unwrap()),
            Err(error) => Err(*error.downcast::<Error>().unwrap()),
        }
    });
    wait_until(|| async { sim.counters().successful_refreshes > rotated }).await;
    sim.set_token_latency(Duration::ZERO);
    task
}

/// The store's connections die between refreshes, five times, then during a refresh (after
/// Withings rotated, before the save), three times: the layer recovers by itself each time,
/// one token call per expiry, the stored grant always alive.
#[cfg(any(feature = "postgres", feature = "redis"))]
async fn connections_killed_again_and_again_the_layer_recovers_by_itself<B: Backend>(backend: &B) {
    let (sim, _auth, clock, service, check) = setup(backend).await;
    let mut failures = Vec::new();
    for round in 1..=5u64 {
        let killed = backend.kill_connections().await;
        assert!(killed >= 1, "round {round}: no connection to kill");
        clock.advance(EXPIRED);
        let what = format!("round {round}, {killed} connections killed");
        failures.push(recovers(&service, &sim, &what).await);
        let c = sim.counters();
        assert_eq!(c.successful_refreshes, round, "{what}: one rotation: {c:?}");
        assert_eq!(c.refreshes, round, "{what}: {c:?}");
        assert_grant_alive(&*check, &sim, &what).await;
    }
    for round in 6..=8u64 {
        let what = format!("round {round}, connections killed mid-refresh");
        clock.advance(EXPIRED);
        let task = refresh_in_flight(&service, &sim).await;
        backend.kill_connections().await;
        let mut failed = Vec::new();
        match task.await.unwrap() {
            Ok(status) => assert_eq!(status, 0, "{what}"),
            Err(error) => {
                assert_store_error(&error, &what);
                failed.push(error);
                // The pair Withings granted was kept: a retry saves it.
                failed.extend(recovers(&service, &sim, &what).await);
            }
        }
        failures.push(failed);
        let c = sim.counters();
        assert_eq!(c.refreshes, round, "{what}: no second token call: {c:?}");
        let stored = assert_grant_alive(&*check, &sim, &what).await;
        assert!(sim.is_access_token_valid(stored.access_token.expose()));
    }
    eprintln!("failed attempts per round: {failures:?}");
}

/// Which fault an outage scenario runs under.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// The server is gone ([`Backend::down`]).
    Down,
    /// The server stops answering ([`Backend::freeze`]).
    Frozen,
}

impl Outage {
    async fn begin(self, backend: &impl Backend) {
        match self {
            Outage::Down => backend.down().await,
            Outage::Frozen => backend.freeze().await,
        }
    }

    async fn end(self, backend: &impl Backend) {
        match self {
            Outage::Down => backend.up().await,
            Outage::Frozen => backend.thaw().await,
        }
    }
}

/// The outage begins between refreshes: a valid token needs no store; on an expired one two
/// concurrent requests get typed store errors and no token call is made. It ends: the layer
/// recovers by itself. It begins again while Withings rotates: the save fails, a request
/// meanwhile fails too, and once it ends the pair Withings granted is saved without a second
/// token call (for a frozen server, a held write delivered late is adopted). Each store call
/// must give up rather than hold the user's refresh (and every request waiting on it) for
/// as long as TCP keeps a connection. Returns the pair finally stored.
async fn outage_between_and_during_refreshes<B: Backend>(backend: &B, outage: Outage) -> Token {
    let (sim, _auth, clock, service, check) = setup(backend).await;
    // A bound on waiting, not a measurement: a hang fails the test instead of blocking it.
    let stuck = Duration::from_secs(20);
    let what = |moment: &str| format!("{outage:?}, {moment}");

    outage.begin(backend).await;
    assert_ok(call(&service, &sim).await, "a valid token needs no store");
    clock.advance(EXPIRED);
    let (a, b) = tokio::time::timeout(stuck, async {
        tokio::join!(call(&service, &sim), call(&service, &sim))
    })
    .await
    .expect("requests hang on a store that is out: the user is stuck");
    for outcome in [a, b] {
        let error = outcome.expect_err("the store is out");
        assert_store_error(&error, &what("between refreshes"));
    }
    assert_eq!(sim.counters().refreshes, 0, "no refresh without the store");
    outage.end(backend).await;
    let first = recovers(&service, &sim, &what("over")).await;
    assert_eq!(sim.counters().successful_refreshes, 1);
    assert_grant_alive(&*check, &sim, &what("over")).await;

    clock.advance(EXPIRED);
    let task = refresh_in_flight(&service, &sim).await;
    outage.begin(backend).await;
    let outcome = tokio::time::timeout(stuck, task)
        .await
        .expect("the refresh hangs on a save that gets no answer")
        .unwrap();
    assert_save_failed(outcome, &what("saving"));
    let still = tokio::time::timeout(stuck, call(&service, &sim)).await;
    assert_store_error(
        &still.expect("a hang").expect_err("still out"),
        &what("still out"),
    );
    outage.end(backend).await;
    let second = recovers(&service, &sim, &what("over after the save")).await;
    let c = sim.counters();
    assert_eq!(
        c.refreshes, 2,
        "the granted pair was kept, not re-requested: {c:?}"
    );
    assert_eq!(c.successful_refreshes, 2, "{c:?}");
    let stored = assert_grant_alive(&*check, &sim, &what("after the failed save")).await;
    assert!(sim.is_access_token_valid(stored.access_token.expose()));
    eprintln!("{outage:?}: first attempts after it: {first:?}, {second:?}");
    stored
}

/// A server that stops answering (connections stay open, nothing comes back: a network
/// partition, a hung host): typed errors, never a stuck user.
async fn a_store_that_stops_answering_is_a_typed_error_not_a_stuck_user<B: Backend>(backend: &B) {
    outage_between_and_during_refreshes(backend, Outage::Frozen).await;
}

/// A server unreachable for a while (connections refused), then back.
async fn unreachable_for_a_while_then_back_the_layer_recovers_by_itself<B: Backend>(backend: &B) {
    outage_between_and_during_refreshes(backend, Outage::Down).await;
}

/// The server is SIGKILLed between refreshes and while Withings rotates, and restarted each
/// time (the unreachable scenario on a private server); then the pair saved on the retry
/// survives one more SIGKILL: it was durable when the layer published it.
#[cfg(feature = "redis")]
async fn killed_and_restarted_mid_run_loses_nothing<B: Backend>(backend: &B) {
    let stored = outage_between_and_during_refreshes(backend, Outage::Down).await;
    backend.down().await;
    backend.up().await;
    let after = backend
        .open()
        .await
        .load(USER)
        .await
        .unwrap()
        .expect("the record");
    let after = after.token;
    assert_eq!(after, stored, "the saved pair survived a SIGKILL");
}

/// A backend terminated while the store waits inside one operation (held there by a lock
/// the admin connection takes): the error is typed and names the operation, Withings saw
/// only what it should, and the layer recovers by itself. PostgreSQL's own: its locks.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_killed_inside_each_store_operation() {
    use crate::backend::Postgres;
    let Some(mut db) = Postgres::fresh().await else {
        return;
    };
    let (sim, _auth, clock, service, check) = setup(&db).await;
    let t = db.table.clone();
    let cases = [
        (
            "load",
            format!("LOCK TABLE \"{t}\" IN ACCESS EXCLUSIVE MODE"),
        ),
        (
            "lock",
            format!("LOCK TABLE \"{t}_leases\" IN EXCLUSIVE MODE"),
        ),
        (
            "save",
            format!(
                "SELECT 1 FROM \"{t}\" WHERE user_id = {} FOR UPDATE",
                USER.0
            ),
        ),
    ];
    let mut rotations = 0;
    for (operation, blocker) in cases {
        clock.advance(EXPIRED);
        let before = check.load(USER).await.unwrap().unwrap().token;
        let application = db.application.clone();
        let tx = db.admin.transaction().await.unwrap();
        tx.batch_execute(&blocker).await.unwrap();
        let task = tokio::spawn(service.clone().oneshot(getmeas(&sim, USER)));
        // Everything before the operation went through; now it waits on the lock. Killed from
        // a connection of its own (the admin one is inside the blocking transaction).
        let killer = Postgres::admin().await.unwrap();
        let mut killed = 0;
        for _ in 0..500 {
            killed =
                Postgres::terminate(&killer, &application, "AND wait_event_type = 'Lock'").await;
            if killed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            killed > 0,
            "{operation}: the store never waited on the lock"
        );
        let error = *task
            .await
            .unwrap()
            .expect_err("the operation's connection was killed")
            .downcast::<Error>()
            .unwrap();
        tx.rollback().await.unwrap();
        match &error {
            Error::Store { operation: op, .. } => assert_eq!(*op, operation, "{error}"),
            other => panic!("{operation}: expected Error::Store, got {other:?}"),
        }
        assert!(error.is_transient());
        let stored = check.load(USER).await.unwrap().unwrap().token;
        assert_eq!(
            stored.refresh_token, before.refresh_token,
            "{operation}: untouched"
        );
        assert!(sim.is_refresh_token_valid(stored.refresh_token.expose()));
        if operation == "save" {
            rotations += 1; // Withings rotated; the new pair waits for the retried save
        }
        let c = sim.counters();
        assert_eq!(c.successful_refreshes, rotations, "{operation}: {c:?}");

        let failures = recovers(&service, &sim, operation).await;
        if operation != "save" {
            rotations += 1;
        }
        let c = sim.counters();
        assert_eq!(c.refreshes, rotations, "{operation}: one token call: {c:?}");
        assert_grant_alive(&*check, &sim, operation).await;
        eprintln!("{operation}: {error}; then {failures:?}");
    }
    db.cleanup().await;
}

for_backends! {
    connections_killed_again_and_again_the_layer_recovers_by_itself: [postgres, redis],
    a_store_that_stops_answering_is_a_typed_error_not_a_stuck_user: [sqlite, postgres, redis],
    unreachable_for_a_while_then_back_the_layer_recovers_by_itself: [sqlite, postgres, redis],
    killed_and_restarted_mid_run_loses_nothing: [redis_process],
}
