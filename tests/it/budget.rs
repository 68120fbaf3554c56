//! The app's request budget against the simulator's app-wide limit, which answers 601 past
//! it like Withings and logs every arrival: whoever sends (one process and many users, OS
//! processes on one SQLite file, handles on PostgreSQL or Redis), no 601 is earned, every
//! request is answered or fails with `BudgetExhausted`, and no window holds more than N; and
//! across OS processes the oldest waiting request is served first.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_withings::budget::Lane;
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::{
    Error, UserId, WithingsAuth, budget::RateBudget, clock::ManualClock, transport,
};
use withings_sim::{AppRateLimit, Simulator};

use crate::common::{Rig, auth_builder, grant, json, rig_with, simulator};

/// The limit in the tests: 10 requests in any 2 s (Withings: 120 in 60 s).
const N: u32 = 10;
const WINDOW: Duration = Duration::from_secs(2);

fn app_limit() -> Option<AppRateLimit> {
    Some(AppRateLimit {
        limit: N,
        window: WINDOW,
    })
}

fn budget() -> RateBudget {
    RateBudget::new(N, WINDOW).deadline(Duration::from_secs(60))
}

/// What a batch of requests came to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcomes {
    ok: usize,
    exhausted: usize,
    rate_limited: usize,
}

/// Sends `per_user` data calls for each of `users` at once through a layer of `auth`, to the
/// API at `api`.
async fn send_all(auth: &WithingsAuth, api: &str, users: &[UserId], per_user: usize) -> Outcomes {
    let service = auth.layer().layer(transport::plain_http_client());
    let mut calls = tokio::task::JoinSet::new();
    for user in users {
        for _ in 0..per_user {
            let mut request = Request::post(format!("{api}/measure"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))
                .unwrap();
            request.extensions_mut().insert(*user);
            calls.spawn(service.clone().oneshot(request));
        }
    }
    let mut outcomes = Outcomes::default();
    while let Some(result) = calls.join_next().await {
        match result.expect("no panic") {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                match json(response).await["status"].as_i64() {
                    Some(0) => outcomes.ok += 1,
                    Some(601) => outcomes.rate_limited += 1,
                    other => panic!("unexpected body status {other:?}"),
                }
            }
            Err(error) => match error.downcast_ref::<Error>() {
                Some(Error::BudgetExhausted { .. }) => outcomes.exhausted += 1,
                _ => panic!("unexpected error: {error}"),
            },
        }
    }
    outcomes
}

/// A simulator with the app's limit (`N` in `WINDOW`), and a clock for the handles on it.
async fn limited_simulator() -> (Simulator, ManualClock) {
    let sim = simulator().await;
    sim.set_app_rate_limit(app_limit());
    (sim, ManualClock::new())
}

/// No 601 was earned and no window held more than `N` arrivals.
fn assert_within_the_limit(sim: &Simulator) {
    assert_eq!(sim.counters().served_601, 0);
    assert!(
        sim.busiest_window(WINDOW) <= N as usize,
        "{}",
        sim.busiest_window(WINDOW)
    );
}

/// Imports a token for each of `count` users into `auth`.
async fn users(
    auth: &WithingsAuth,
    sim: &Simulator,
    clock: &ManualClock,
    count: u64,
) -> Vec<UserId> {
    let mut users = Vec::new();
    for id in 0..count {
        let token = grant(sim, clock, UserId(7000 + id));
        users.push(token.user_id);
        auth.import(token).await.unwrap();
    }
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_many_users_never_earn_a_601() {
    let rig = rig_with(|b| b.rate_budget(budget())).await;
    rig.sim.set_app_rate_limit(app_limit());
    let users = users(&rig.auth, &rig.sim, &rig.clock, 6).await;
    let outcomes = send_all(&rig.auth, &rig.sim.api_base(), &users, 5).await;
    assert_eq!(
        outcomes,
        Outcomes {
            ok: 30,
            ..Outcomes::default()
        }
    );
    let c = rig.sim.counters();
    assert_eq!((c.served_601, c.data_calls), (0, 30));
    assert!(rig.sim.busiest_window(WINDOW) <= N as usize);
    let m = rig.auth.metrics();
    assert_eq!(m.budget_slots, 30);
    assert!(m.budget_waits >= 20, "{} waits", m.budget_waits);
}

#[tokio::test]
async fn a_request_without_a_slot_by_its_deadline_is_not_sent() {
    let budget = RateBudget::new(2, Duration::from_secs(60)).deadline(Duration::from_millis(200));
    let rig = rig_with(|b| b.rate_budget(budget)).await;
    let users = [crate::common::USER];
    let outcomes = send_all(&rig.auth, &rig.sim.api_base(), &users, 5).await;
    assert_eq!(
        outcomes,
        Outcomes {
            ok: 2,
            exhausted: 3,
            rate_limited: 0
        }
    );
    assert_eq!(rig.sim.counters().data_calls, 2);
    assert_eq!(rig.auth.metrics().budget_exhausted, 3);
    let usage = rig.auth.budget_usage().await.unwrap().expect("a budget");
    assert_eq!(usage.used, 2);
}

/// A rig with a generous budget whose app has had the two requests a minute it may send
/// (as if from another sender): Withings answers the next call 601.
async fn rig_at_the_app_limit() -> Rig {
    let generous = RateBudget::per_minute(1000).deadline(Duration::from_millis(300));
    let rig = rig_with(|b| b.rate_budget(generous)).await;
    rig.sim.set_app_rate_limit(Some(AppRateLimit {
        limit: 2,
        window: Duration::from_secs(60),
    }));
    let user = [crate::common::USER];
    assert_eq!(
        send_all(&rig.auth, &rig.sim.api_base(), &user, 2).await.ok,
        2
    );
    rig
}

/// The budget waits out the 601's `wait_seconds` (about 60 s): the next data call is not sent
/// (the simulator saw 3 arrivals in all).
async fn assert_paused_for_most_of_a_minute(rig: &Rig) {
    let user = [crate::common::USER];
    let next = send_all(&rig.auth, &rig.sim.api_base(), &user, 1).await;
    assert_eq!(next.exhausted, 1);
    assert_eq!(rig.sim.arrivals(), 3);
    let usage = rig.auth.budget_usage().await.unwrap().expect("a budget");
    let paused = usage.paused_for;
    assert!(
        paused.is_some_and(|p| p > Duration::from_secs(30)),
        "{usage:?}"
    );
}

#[tokio::test]
async fn a_601_on_a_data_call_stops_everyone_and_refreshes_nothing() {
    // Another sender (outside this budget) used the app's requests: Withings says 601.
    let rig = rig_at_the_app_limit().await;
    let user = [crate::common::USER];
    // The 601 comes back as Withings sent it, and is not taken for a token failure.
    let third = send_all(&rig.auth, &rig.sim.api_base(), &user, 1).await;
    assert_eq!(third.rate_limited, 1);
    assert_eq!(rig.sim.counters().refreshes, 0);
    assert_eq!(rig.auth.metrics().rate_limited, 1);
    // The budget now waits out `wait_seconds` (about 60 s): the next request is not sent.
    assert_paused_for_most_of_a_minute(&rig).await;
}

#[tokio::test]
async fn unlimited_sends_everything_at_once() {
    let rig = rig_with(|b| b.rate_budget(RateBudget::unlimited())).await;
    let outcomes = send_all(&rig.auth, &rig.sim.api_base(), &[crate::common::USER], 200).await;
    assert_eq!(outcomes.ok, 200);
    assert_eq!(rig.auth.metrics().budget_waits, 0);
    assert!(rig.auth.budget_usage().await.unwrap().is_none());
}

/// Several handles, each with its own instance of one shared store, send at once.
async fn handles_share_one_budget(stores: Vec<Arc<dyn TokenStore>>) {
    let (sim, clock) = limited_simulator().await;
    let auths: Vec<WithingsAuth> = stores
        .into_iter()
        .map(|store| {
            auth_builder(&sim, &clock)
                .shared_store(store)
                .rate_budget(budget())
                .build(transport::plain_http_client())
        })
        .collect();
    let users = users(&auths[0], &sim, &clock, 4).await;
    let api = sim.api_base();
    let mut all = Vec::new();
    let mut sends = tokio::task::JoinSet::new();
    for auth in &auths {
        let (auth, api, users) = (auth.clone(), api.clone(), users.clone());
        sends.spawn(async move { send_all(&auth, &api, &users, 2).await });
    }
    while let Some(outcomes) = sends.join_next().await {
        all.push(outcomes.expect("no panic"));
    }
    let ok: usize = all.iter().map(|o| o.ok).sum();
    assert!(
        all.iter().all(|o| o.rate_limited == 0 && o.exhausted == 0),
        "{all:?}"
    );
    assert_eq!(ok, 8 * auths.len());
    assert_within_the_limit(&sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_on_one_memory_store_share_its_budget() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    handles_share_one_budget(vec![store.clone(), store.clone(), store.clone(), store]).await;
}

/// Four handles, each with its own instance of one durable store (own connection, pool or
/// SQLite connection), share one budget.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn four_handles_share_one_budget<B: crate::backend::Backend>(backend: &B) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(backend.open().await);
    }
    handles_share_one_budget(stores).await;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
crate::backend::for_backends! {
    four_handles_share_one_budget: [sqlite, postgres, redis],
}

/// Sends `count` requests tagged `lane` at once through a layer of `auth` (with `user`), each
/// waiting at most the budget's deadline.
async fn send_in_lane(auth: &WithingsAuth, api: &str, lane: Lane, count: usize) -> Outcomes {
    let service = auth.layer().layer(transport::plain_http_client());
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (service, api) = (service.clone(), api.to_owned());
        sends.spawn(async move { tagged(service, &api, Some(lane)).await });
    }
    let mut outcomes = Outcomes::default();
    while let Some(sent) = sends.join_next().await {
        match sent.expect("no panic") {
            Ok(()) => outcomes.ok += 1,
            Err(error) => match error.downcast_ref::<Error>() {
                Some(Error::BudgetExhausted { .. }) => outcomes.exhausted += 1,
                _ => panic!("unexpected error: {error}"),
            },
        }
    }
    outcomes
}

/// A backfill with more to send than the budget allows, in one handle, takes `limit -
/// headroom` slots of the window and no more; a notification's requests, in another handle on
/// the same store (another replica), then get the headroom at once. The window is long, so
/// nothing ages out during the test; the deadline is short, so what gets no slot fails.
async fn a_backfill_leaves_the_headroom_to_notifications(stores: [Arc<dyn TokenStore>; 2]) {
    let sim = simulator().await;
    sim.set_app_rate_limit(Some(AppRateLimit {
        limit: 10,
        window: Duration::from_secs(600),
    }));
    let clock = ManualClock::new();
    let budget = RateBudget::new(10, Duration::from_secs(600))
        .headroom(3)
        .deadline(Duration::from_secs(1));
    let [backfill, notification] = stores.map(|store| {
        auth_builder(&sim, &clock)
            .shared_store(store)
            .rate_budget(budget)
            .build(transport::plain_http_client())
    });
    backfill
        .import(grant(&sim, &clock, crate::common::USER))
        .await
        .unwrap();
    let api = sim.api_base();
    let backfilled = send_in_lane(&backfill, &api, Lane::Backfill, 20).await;
    assert_eq!(
        (backfilled.ok, backfilled.exhausted),
        (7, 13),
        "{backfilled:?}"
    );
    let notified = send_in_lane(&notification, &api, Lane::Notification, 3).await;
    assert_eq!((notified.ok, notified.exhausted), (3, 0), "{notified:?}");
    // The window is now full for everyone.
    let late = send_in_lane(&notification, &api, Lane::Interactive, 1).await;
    assert_eq!((late.ok, late.exhausted), (0, 1), "{late:?}");
    assert_eq!(sim.counters().served_601, 0);
    assert_eq!(sim.counters().data_calls, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_leaves_the_headroom_to_notifications_on_one_memory_store() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    a_backfill_leaves_the_headroom_to_notifications([store.clone(), store]).await;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn a_backfill_leaves_the_headroom<B: crate::backend::Backend>(backend: &B) {
    a_backfill_leaves_the_headroom_to_notifications([backend.open().await, backend.open().await])
        .await;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
crate::backend::for_backends! {
    a_backfill_leaves_the_headroom: [sqlite, postgres, redis],
}

// ---- four OS processes on one SQLite file ----

const ENV_CHILD: &str = "TOWER_WITHINGS_BUDGET_CHILD";
const ENV_API: &str = "TOWER_WITHINGS_BUDGET_API";
const ENV_USERS: &str = "TOWER_WITHINGS_BUDGET_USERS";

/// A limited simulator and a SQLite file (in a temporary directory) that handles of this
/// process and of the role processes it starts share.
#[cfg(feature = "sqlite")]
struct SharedFile {
    _dir: crate::store_support::TempDir,
    path: std::path::PathBuf,
    sim: Simulator,
    clock: ManualClock,
}

#[cfg(feature = "sqlite")]
impl SharedFile {
    /// A new file in a directory named after `tag`.
    async fn new(tag: &str) -> Self {
        let dir = crate::store_support::TempDir::new(tag);
        let path = dir.file("tokens.sqlite3");
        let (sim, clock) = limited_simulator().await;
        SharedFile {
            _dir: dir,
            path,
            sim,
            clock,
        }
    }

    /// A builder for a handle of this process on the file.
    async fn handle(&self) -> tower_withings::auth::WithingsAuthBuilder {
        let store = tower_withings::store::SqliteStore::open(&self.path)
            .await
            .unwrap();
        auth_builder(&self.sim, &self.clock).store(store)
    }

    /// This test binary again, in an OS process of its own, running only the test `role`,
    /// which acts when `env` names the file; sending for `users`, its stdout piped.
    fn role_process(&self, role: &str, env: &str, users: &[UserId]) -> Command {
        let ids: Vec<String> = users.iter().map(|u| u.0.to_string()).collect();
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([role, "--exact", "--nocapture", "--test-threads=1"])
            .env(env, &self.path)
            .env(ENV_API, self.sim.api_base())
            .env(ENV_USERS, ids.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }
}

/// In a role's process (`env` names the SQLite file): its own handle on the file, with the
/// budget, the simulator's API base and the users it sends for. `None` in any other run.
#[cfg(feature = "sqlite")]
async fn role(env: &str) -> Option<(WithingsAuth, String, Vec<UserId>)> {
    let path = std::env::var(env).ok()?;
    let api = std::env::var(ENV_API).expect("api");
    let users: Vec<UserId> = std::env::var(ENV_USERS)
        .expect("users")
        .split(',')
        .map(|id| UserId(id.parse().expect("user id")))
        .collect();
    let store = tower_withings::store::SqliteStore::open(&path)
        .await
        .expect("store");
    let credentials =
        tower_withings::Credentials::new(crate::common::CLIENT_ID, crate::common::CLIENT_SECRET);
    let auth = WithingsAuth::builder(credentials)
        .endpoints(tower_withings::Endpoints::loopback(&api, &api).expect("loopback"))
        .store(store)
        .rate_budget(budget())
        .build(transport::plain_http_client());
    Some((auth, api, users))
}

/// The child role: sends `2 × users` data calls through its own handle on the SQLite file,
/// then prints what they came to.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_budget_child() {
    let Some((auth, api, users)) = role(ENV_CHILD).await else {
        return;
    };
    let outcomes = send_all(&auth, &api, &users, 2).await;
    println!(
        "outcome ok={} exhausted={} rate_limited={}",
        outcomes.ok, outcomes.exhausted, outcomes.rate_limited
    );
}

/// Four OS processes, each its own handle on one SQLite file, send 2.4 × N requests in all.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_one_sqlite_file_share_one_budget() {
    let file = SharedFile::new("budget-sqlite").await;
    let parent = file.handle().await.build(transport::plain_http_client());
    let users = users(&parent, &file.sim, &file.clock, 3).await;
    let children: Vec<_> = (0..4)
        .map(|_| {
            file.role_process("budget::sqlite_budget_child", ENV_CHILD, &users)
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    let mut ok = 0;
    for child in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "a child failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("outcome ").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("no outcome line in {stdout}"));
        assert!(line.ends_with("exhausted=0 rate_limited=0"), "{line}");
        ok += line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ok="))
            .and_then(|n| n.parse::<usize>().ok())
            .expect("ok=");
    }
    assert_eq!(ok, 24);
    assert_within_the_limit(&file.sim);
}

// ---- a holder SIGKILLed mid-window ----

const ENV_HOLDER: &str = "TOWER_WITHINGS_BUDGET_HOLDER";

/// The holder role: sends more data calls than the budget allows, at once, through its own
/// handle on the SQLite file (so it holds every slot of the window and has waiters queued),
/// says so, and keeps sending until it is killed.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_budget_holder() {
    let Some((auth, api, users)) = role(ENV_HOLDER).await else {
        return;
    };
    let holding = {
        let (auth, api) = (auth.clone(), api.clone());
        tokio::spawn(async move { send_all(&auth, &api, &users, 3 * N as usize).await })
    };
    while auth.metrics().budget_slots < u64::from(N) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("holding");
    let _ = holding.await;
    std::future::pending::<()>().await;
}

/// A process holding every slot of the window, with requests queued, is SIGKILLed: the
/// others stay within the limit and are served once its entries age out.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_window_leaves_the_others_within_the_limit_and_unblocked() {
    use std::io::BufRead;
    let file = SharedFile::new("budget-holder").await;
    let other = file
        .handle()
        .await
        .rate_budget(budget())
        .build(transport::plain_http_client());
    let users = users(&other, &file.sim, &file.clock, 2).await;
    let mut holder = file
        .role_process("budget::sqlite_budget_holder", ENV_HOLDER, &users[..1])
        .spawn()
        .expect("spawn the holder");
    let stdout = holder.stdout.take().expect("its stdout");
    tokio::task::spawn_blocking(move || {
        let lines = std::io::BufReader::new(stdout).lines();
        for line in lines {
            if line.expect("a line").contains("holding") {
                return;
            }
        }
        panic!("the holder ended without holding");
    })
    .await
    .unwrap();
    // SIGKILL: no destructor, no release of anything it reserved.
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reaped");
    // The dead holder's reservations fill the window (some may never have been sent).
    let held = other.budget_usage().await.unwrap().expect("a budget").used;
    assert!(held >= N, "{held} slots held");
    let outcomes = send_all(&other, &file.sim.api_base(), &users, N as usize).await;
    assert_eq!(
        outcomes,
        Outcomes {
            ok: 2 * N as usize,
            ..Outcomes::default()
        }
    );
    assert_within_the_limit(&file.sim);
}

#[tokio::test]
async fn a_601_on_a_token_call_pauses_the_budget_like_a_data_call_s() {
    // Another sender (outside this budget) used the app's requests: Withings answers the
    // refresh's token call 601.
    let rig = rig_at_the_app_limit().await;
    assert!(rig.auth.refresh(crate::common::USER).await.is_err());
    assert_eq!(rig.sim.counters().served_601, 1);
    assert_eq!(rig.auth.metrics().rate_limited, 1);
    // The budget waits out `wait_seconds` (about 60 s): the next data call is not sent.
    assert_paused_for_most_of_a_minute(&rig).await;
}

/// Sends one request through `service` tagged with `lane` (none: the default lane).
async fn tagged<S>(service: S, api: &str, lane: Option<Lane>) -> Result<(), tower::BoxError>
where
    S: tower::Service<Request<Full<Bytes>>, Error = tower::BoxError>,
{
    let mut request = Request::post(format!("{api}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))
        .unwrap();
    request.extensions_mut().insert(crate::common::USER);
    if let Some(lane) = lane {
        request.extensions_mut().insert(lane);
    }
    service.oneshot(request).await.map(drop)
}

#[tokio::test]
async fn lanes_are_served_in_order_and_each_in_order_of_arrival() {
    // One slot per window: every request after the first waits for the next one.
    let budget = RateBudget::new(1, Duration::from_millis(400)).deadline(Duration::from_secs(60));
    let rig = rig_with(|b| b.rate_budget(budget)).await;
    let api = rig.sim.api_base();
    let service = rig.service();
    tagged(service.clone(), &api, None).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sends = tokio::task::JoinSet::new();
    let lanes = [
        ("backfill 1", Some(Lane::Backfill)),
        ("sweep", Some(Lane::Sweep)),
        ("backfill 2", Some(Lane::Backfill)),
        ("notification", Some(Lane::Notification)),
        ("untagged", None),
        ("interactive", Some(Lane::Interactive)),
    ];
    for (name, lane) in lanes {
        let (service, api, order) = (service.clone(), api.clone(), Arc::clone(&order));
        sends.spawn(async move {
            tagged(service, &api, lane).await.unwrap();
            order.lock().unwrap().push(name);
        });
        // Each waits before the next arrives.
        while rig.auth.metrics().budget_waits < sends.len() as u64 {
            tokio::task::yield_now().await;
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent.expect("no panic");
    }
    assert_eq!(
        *order.lock().unwrap(),
        [
            "untagged",
            "interactive",
            "notification",
            "sweep",
            "backfill 1",
            "backfill 2"
        ]
    );
    assert_eq!(rig.sim.counters().data_calls, 7);
}

#[tokio::test]
async fn without_budget_the_layer_counts_nothing_and_the_budget_layer_counts_below_it() {
    let budget = RateBudget::new(2, Duration::from_secs(60)).deadline(Duration::from_millis(200));
    let rig = rig_with(|b| b.rate_budget(budget)).await;
    let api = rig.sim.api_base();
    let bare = rig
        .auth
        .layer()
        .without_budget()
        .layer(transport::plain_http_client());
    for _ in 0..3 {
        tagged(bare.clone(), &api, None).await.unwrap();
    }
    assert_eq!(rig.auth.metrics().budget_slots, 0);
    // The app placed the budget itself: the same limit, every request counted.
    let placed = rig.auth.layer().without_budget().layer(
        rig.auth
            .budget_layer()
            .layer(transport::plain_http_client()),
    );
    let mut exhausted = 0;
    for _ in 0..3 {
        if let Err(error) = tagged(placed.clone(), &api, None).await {
            assert!(matches!(
                error.downcast_ref::<Error>(),
                Some(Error::BudgetExhausted { .. })
            ));
            exhausted += 1;
        }
    }
    assert_eq!((rig.auth.metrics().budget_slots, exhausted), (2, 1));
    assert_eq!(rig.sim.counters().data_calls, 5);
}

// ---- fairness across processes ----

const ENV_FAIR_API: &str = "TOWER_WITHINGS_FAIR_API";
const ENV_FAIR_INDEX: &str = "TOWER_WITHINGS_FAIR_INDEX";
const ENV_FAIR_GO: &str = "TOWER_WITHINGS_FAIR_GO";
/// Processes, senders in each, requests per sender.
const FAIR_PROCESSES: u64 = 4;
const FAIR_SENDERS: u64 = 4;
const FAIR_REQUESTS: u64 = 5;
/// One request of some sender every `FAIR_STEP`, the senders of every process in turn: 20 a
/// second against a budget of 5 a second.
const FAIR_STEP: Duration = Duration::from_millis(50);
/// How much later than a failed request another process' request must have been made for
/// its success before that failure to count as unfair: five steps, ten times the ledger's
/// tolerance, so that scheduling noise under load is not taken for unfairness.
const FAIR_SLACK: Duration = Duration::from_millis(250);

/// The budget of the fairness test: three windows of deadline, so that a request queued
/// behind the others is served if the ledger serves in order of arrival.
fn fair_budget() -> RateBudget {
    RateBudget::new(N, WINDOW).deadline(3 * WINDOW)
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros()
}

/// The `budget-fair` child role (`cross_process::child_role`): once the go file exists,
/// `FAIR_SENDERS` senders send `FAIR_REQUESTS` data calls each, one every
/// `FAIR_PROCESSES × FAIR_SENDERS` steps, interleaved with the other processes' senders;
/// each request prints when it was made and when it ended, on the machine's clock.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub async fn fair_sender(store: Arc<dyn TokenStore>) {
    let api = std::env::var(ENV_FAIR_API).expect("api");
    let index: u64 = std::env::var(ENV_FAIR_INDEX)
        .expect("index")
        .parse()
        .expect("a number");
    let go = std::env::var(ENV_FAIR_GO).expect("go file");
    let auth = WithingsAuth::builder(tower_withings::Credentials::new(
        crate::common::CLIENT_ID,
        crate::common::CLIENT_SECRET,
    ))
    .endpoints(tower_withings::Endpoints::loopback(&api, &api).expect("loopback"))
    .shared_store(store)
    .rate_budget(fair_budget())
    .build(transport::plain_http_client());
    let service = auth.layer().layer(transport::plain_http_client());
    println!("READY");
    while !std::path::Path::new(&go).exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let start = tokio::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for request in 0..FAIR_REQUESTS {
        for sender in 0..FAIR_SENDERS {
            let turn = (request * FAIR_SENDERS + sender) * FAIR_PROCESSES + index;
            tokio::time::sleep_until(start + FAIR_STEP * u32::try_from(turn).unwrap()).await;
            let (service, api) = (service.clone(), api.clone());
            requests.spawn(async move {
                let made = unix_micros();
                let outcome = match tagged(service, &api, None).await {
                    Ok(()) => "ok",
                    Err(error) => match error.downcast_ref::<Error>() {
                        Some(Error::BudgetExhausted { .. }) => "exhausted",
                        _ => panic!("unexpected error: {error}"),
                    },
                };
                format!("FAIR made={made} ended={} {outcome}", unix_micros())
            });
        }
    }
    while let Some(line) = requests.join_next().await {
        println!("{}", line.expect("no panic"));
    }
}

/// One request of the fairness test, as its process printed it.
#[derive(Debug)]
struct Made {
    process: usize,
    made: u128,
    ended: u128,
    ok: bool,
}

/// Four OS processes, four senders each, on one store, send four times what the budget
/// allows, their requests interleaved in time: no request fails with `BudgetExhausted`
/// while another process' request made after it (by more than `FAIR_SLACK`) is served.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
async fn processes_are_served_in_order_of_arrival<B: crate::backend::Backend>(backend: &B) {
    use crate::cross_process::ChildProcess;
    let (sim, clock) = limited_simulator().await;
    let parent = auth_builder(&sim, &clock)
        .shared_store(backend.open().await)
        .build(transport::plain_http_client());
    parent
        .import(grant(&sim, &clock, crate::common::USER))
        .await
        .unwrap();
    let dir = crate::store_support::TempDir::new("budget-fair");
    let go = dir.file("go");
    let children: Vec<ChildProcess> = (0..FAIR_PROCESSES)
        .map(|index| {
            ChildProcess::spawn(
                "budget-fair",
                backend,
                crate::common::USER.0,
                &[
                    (ENV_FAIR_API, sim.api_base()),
                    (ENV_FAIR_INDEX, index.to_string()),
                    (ENV_FAIR_GO, go.display().to_string()),
                ],
            )
        })
        .collect();
    for child in &children {
        child.line_starting("READY", Duration::from_secs(120)).await;
    }
    std::fs::write(&go, b"go").unwrap();
    let mut made = Vec::new();
    for (process, child) in children.into_iter().enumerate() {
        for line in child.success(Duration::from_secs(180)).await {
            let Some(at) = line.find("FAIR ") else {
                continue;
            };
            let words: Vec<&str> = line[at..].split_whitespace().collect();
            let number = |word: &str, key: &str| -> u128 {
                word.strip_prefix(key)
                    .expect(key)
                    .parse()
                    .expect("a number")
            };
            made.push(Made {
                process,
                made: number(words[1], "made="),
                ended: number(words[2], "ended="),
                ok: words[3] == "ok",
            });
        }
    }
    let total = (FAIR_PROCESSES * FAIR_SENDERS * FAIR_REQUESTS) as usize;
    assert_eq!(made.len(), total, "every request ended");
    let served = made.iter().filter(|r| r.ok).count();
    // More than the budget allows: some fail, some are served.
    assert!(0 < served && served < total, "{served} of {total} served");
    assert_within_the_limit(&sim);
    let slack = FAIR_SLACK.as_micros();
    let unfair: Vec<(&Made, &Made)> = made
        .iter()
        .filter(|failed| !failed.ok)
        .flat_map(|failed| {
            made.iter()
                .filter(move |later| {
                    later.ok
                        && later.process != failed.process
                        && later.made > failed.made + slack
                        && later.ended < failed.ended
                })
                .map(move |later| (failed, later))
        })
        .collect();
    let wronged = made
        .iter()
        .filter(|r| unfair.iter().any(|(failed, _)| std::ptr::eq(*failed, *r)))
        .count();
    assert!(
        unfair.is_empty(),
        "{wronged} requests failed while {} later ones of other processes were served \
         ({served} of {total} served), e.g. {:?}",
        unfair.len(),
        unfair.first()
    );
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
crate::backend::for_backends! {
    processes_are_served_in_order_of_arrival: [sqlite, postgres, redis],
}
