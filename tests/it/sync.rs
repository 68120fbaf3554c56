//! The sync engine against the simulator and real stores: notification to sink, the sweep
//! catching a dropped notification, zero calls after an unlink, crash re-delivery bounds,
//! two engines on one store, backfill checkpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_withings::budget::Lane;
use tower_withings::notify::Notification;
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::sync::{
    Accepted, Backfill, Batch, ChangeKind, Record, Sink, SinkFuture, Step, SyncConfig, SyncEngine,
    SyncEvent, SyncStream,
};
use tower_withings::{UserId, WithingsAuth, clock::ManualClock, transport};
use withings_sim::Simulator;

use crate::common::{auth_builder, authorized, eventually, grant, three_day_simulator};
use crate::sync_support::run_until;

const USER: UserId = UserId(31_337);

/// What the app's sink saw: every accepted change as (key, version, deleted), and any
/// version that went down for a key.
#[derive(Default)]
struct Recorder {
    accepted: Mutex<Vec<(String, i64, bool)>>,
    highest: Mutex<HashMap<String, (i64, bool)>>,
    violations: Mutex<Vec<String>>,
    values: Mutex<HashMap<String, String>>,
    batches: AtomicUsize,
    /// Refuse (or panic on) the batch with this index.
    fail_at: Option<usize>,
    panic: bool,
}

impl Recorder {
    fn failing_at(batch: usize, panic: bool) -> Recorder {
        Recorder {
            fail_at: Some(batch),
            panic,
            ..Recorder::default()
        }
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0.clone())
            .collect();
        keys.sort();
        keys
    }
}

impl Sink for Recorder {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            let n = self.batches.fetch_add(1, Ordering::SeqCst);
            if self.fail_at == Some(n) {
                if self.panic {
                    panic!("the sink crashed mid-batch");
                }
                return Err("the sink's database is down".into());
            }
            for c in &batch.changes {
                let key = c.key.to_string();
                let rank = c.rank();
                let mut highest = self.highest.lock().unwrap();
                if let Some(old) = highest.get(&key) {
                    if *old > rank {
                        self.violations
                            .lock()
                            .unwrap()
                            .push(format!("{key}: {old:?} then {rank:?}"));
                    }
                }
                highest.insert(key.clone(), rank);
                if let ChangeKind::Upsert(record) = &c.kind {
                    if let Record::Measures(g) = record.as_ref() {
                        let weight = g
                            .measures
                            .first()
                            .map(|m| m.value.to_string())
                            .unwrap_or_default();
                        self.values.lock().unwrap().insert(key.clone(), weight);
                    }
                }
                self.accepted.lock().unwrap().push((
                    key,
                    c.version,
                    matches!(c.kind, ChangeKind::Delete),
                ));
            }
            Ok(())
        })
    }
}

struct Setup {
    sim: Simulator,
    clock: ManualClock,
    auth: WithingsAuth,
    store: Arc<dyn TokenStore>,
}

impl Setup {
    /// A restarted process: the same simulator and clock, a new handle over `store`.
    fn restarted(self, store: Arc<dyn TokenStore>) -> Setup {
        let auth = auth_builder(&self.sim, &self.clock)
            .store(store.clone())
            .build(transport::plain_http_client());
        Setup {
            auth,
            store,
            ..self
        }
    }
}

/// A memory store's [`setup`], and an engine with `config` over it delivering to a recorder.
async fn in_memory(
    config: SyncConfig,
) -> (
    Setup,
    Arc<Recorder>,
    SyncEngine<impl tower_withings::transport::HttpClient + use<>>,
) {
    let s = setup(Arc::new(MemoryStore::new())).await;
    let sink = Arc::new(Recorder::default());
    let engine = engine(&s, sink.clone(), config);
    (s, sink, engine)
}

async fn setup(store: Arc<dyn TokenStore>) -> Setup {
    // The simulator's three groups, a day apart, that the tests count on.
    let sim = three_day_simulator().await;
    let clock = ManualClock::new();
    let auth = authorized(&sim, &clock, store.clone(), USER).await;
    Setup {
        sim,
        clock,
        auth,
        store,
    }
}

fn engine(
    s: &Setup,
    sink: Arc<dyn Sink>,
    config: SyncConfig,
) -> SyncEngine<impl tower_withings::transport::HttpClient + use<>> {
    crate::sync_support::engine(&s.auth, &s.sim, s.store.clone(), sink, config, &s.clock)
}

fn measures_only() -> SyncConfig {
    SyncConfig::default().streams(&[SyncStream::Measures])
}

fn notification(form: String) -> Notification {
    Notification::from_form(form.as_bytes()).unwrap()
}

/// A SQLite file in a directory of its own (removed on drop), opened as often as wanted, as
/// restarted processes would.
struct SqliteFile(crate::store_support::TempDir);

impl SqliteFile {
    fn new(tag: &str) -> SqliteFile {
        SqliteFile(crate::store_support::TempDir::new(tag))
    }

    /// A new handle on the file.
    async fn open(&self) -> Arc<dyn TokenStore> {
        let path = self.0.file("sync.sqlite3");
        Arc::new(
            tower_withings::store::SqliteStore::open(path)
                .await
                .unwrap(),
        )
    }
}

#[tokio::test]
async fn a_notification_reaches_the_sink_and_moves_the_cursor() {
    let (s, sink, engine) = in_memory(measures_only()).await;
    assert!(engine.run_once().await.unwrap());
    let history = sink.keys();
    assert_eq!(
        history.len(),
        3,
        "the simulator's three groups: {history:?}"
    );

    let date = s.sim.add_measure(USER, 1, 72_500, -3);
    let intake = engine.intake();
    let queued = intake
        .accept(&notification(format!(
            "userid={USER}&appli=1&startdate={date}&enddate={}",
            date + 1
        )))
        .await
        .unwrap();
    assert_eq!(queued, Accepted::Queued(vec![SyncStream::Measures]));
    // A burst coalesces: the same notification again is one fetch.
    intake
        .accept(&notification(format!(
            "userid={USER}&appli=1&startdate={date}&enddate={}",
            date + 1
        )))
        .await
        .unwrap();
    s.sim.reset_counters();
    assert_eq!(
        engine.step().await.unwrap(),
        Step::Worked(Lane::Notification)
    );
    assert_eq!(s.sim.counters().data_calls, 1, "one fetch for the burst");
    let keys = sink.keys();
    assert_eq!(keys.len(), 4);
    let new = keys.iter().find(|k| !history.contains(k)).unwrap().clone();
    assert_eq!(
        sink.values.lock().unwrap()[&new],
        "72.5",
        "the value, exact"
    );
    let state = s.store.sync_state().unwrap();
    let cursor = state.load(USER, SyncStream::Measures).await.unwrap().cursor;
    assert_eq!(
        cursor,
        Some(i64::try_from(date).unwrap()),
        "the cursor is the modified Withings gave"
    );
    assert_eq!(state.inbox_depth().await.unwrap(), 0);
    assert!(sink.violations.lock().unwrap().is_empty());
    assert_eq!(engine.metrics().changes_delivered, 4);
}

#[tokio::test]
async fn a_dropped_notification_is_caught_by_the_sweep() {
    let (s, sink, engine) = in_memory(measures_only()).await;
    assert!(engine.run_once().await.unwrap());
    s.sim.add_measure(USER, 1, 80_100, -3); // its notification never arrives
    assert_eq!(engine.step().await.unwrap(), Step::Idle, "nothing due yet");
    assert_eq!(sink.keys().len(), 3);
    s.clock.advance(Duration::from_secs(24 * 3_600));
    assert_eq!(engine.step().await.unwrap(), Step::Worked(Lane::Sweep));
    assert_eq!(
        sink.keys().len(),
        4,
        "the sweep found the measure within 24 h"
    );
    assert!(sink.values.lock().unwrap().values().any(|v| v == "80.1"));
}

#[tokio::test]
async fn after_an_unlink_the_simulator_sees_zero_calls_for_the_user() {
    let (s, _, engine) = in_memory(measures_only()).await;
    let mut events = engine.events();
    assert!(engine.run_once().await.unwrap());
    let intake = engine.intake();
    let unlink = notification(format!("userid={USER}&appli=46&action=unlink"));
    assert_eq!(intake.accept(&unlink).await.unwrap(), Accepted::Stopped);
    let date = s.sim.add_measure(USER, 1, 70_000, -3);
    let data = notification(format!(
        "userid={USER}&appli=1&startdate={date}&enddate={}",
        date + 1
    ));
    assert_eq!(intake.accept(&data).await.unwrap(), Accepted::Ignored);
    s.sim.reset_counters();
    s.clock.advance(Duration::from_secs(48 * 3_600));
    engine.run_once().await.unwrap();
    while engine.step().await.unwrap() != Step::Idle {}
    assert_eq!(
        s.sim.counters().data_calls,
        0,
        "zero calls after the unlink"
    );
    let mut stopped = false;
    while let Ok(e) = events.try_recv() {
        stopped |= matches!(e, SyncEvent::Stopped { user: USER, .. });
    }
    assert!(stopped, "the unlink is an event");
    // Forget removes the cursors and inbox; resume lets the user sync again.
    engine.forget(USER).await.unwrap();
    assert!(
        s.store
            .sync_state()
            .unwrap()
            .streams(USER)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_refused_refresh_token_stops_the_user() {
    let (s, _, engine) = in_memory(measures_only()).await;
    s.sim.revoke_user(USER);
    engine.run_once().await.unwrap();
    let state = s.store.sync_state().unwrap();
    assert!(
        state.stopped(USER).await.unwrap().is_some(),
        "the user's sync stopped"
    );
    s.sim.reset_counters();
    s.clock.advance(Duration::from_secs(48 * 3_600));
    engine.run_once().await.unwrap();
    assert_eq!(s.sim.counters().data_calls, 0);
    assert_eq!(s.sim.counters().refreshes, 0);
}

async fn crash_mid_batch(panic: bool) {
    let file = SqliteFile::new(if panic { "sync-panic" } else { "sync-crash" });
    let s = setup(file.open().await).await;
    for i in 0..6 {
        s.sim.add_measure(USER, 1, 70_000 + i, -3);
    }
    let config = measures_only().batch_size(2);
    let failing = Arc::new(Recorder::failing_at(2, panic));
    let first = engine(&s, failing.clone(), config.clone());
    assert!(!first.run_once().await.unwrap(), "the sink failed");
    let accepted = failing.keys();
    assert_eq!(
        accepted.len(),
        4,
        "two batches of two accepted before the failure"
    );
    assert_eq!(first.metrics().sink_failures, 1);
    drop(first);

    // A restarted process, over a fresh handle on the same file.
    let store2 = file.open().await;
    let healthy = Arc::new(Recorder::default());
    let s2 = s.restarted(store2);
    let second = engine(&s2, healthy.clone(), config);
    assert!(second.run_once().await.unwrap());
    let again = healthy.keys();
    assert!(
        again.iter().all(|k| !accepted.contains(k)),
        "nothing accepted is delivered again"
    );
    assert_eq!(
        accepted.len() + again.len(),
        9,
        "nothing lost: 3 + 6 groups"
    );
}

#[tokio::test]
async fn a_sink_failing_mid_batch_gets_only_the_unaccepted_batches_again() {
    crash_mid_batch(false).await;
}

#[tokio::test]
async fn a_sink_panicking_mid_batch_gets_only_the_unaccepted_batches_again() {
    crash_mid_batch(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_store_never_move_the_cursor_back_or_versions_down() {
    let file = SqliteFile::new("sync-two");
    let (a, b) = (file.open().await, file.open().await);
    let s = setup(a).await;
    let sink = Arc::new(Recorder::default());
    let one = engine(&s, sink.clone(), measures_only().batch_size(1));
    // The second engine: its own handle, store handle and stack, the same simulator.
    let auth2 = auth_builder(&s.sim, &s.clock)
        .store(b.clone())
        .build(transport::plain_http_client());
    let config = measures_only().batch_size(1);
    let two =
        crate::sync_support::engine(&auth2, &s.sim, b.clone(), sink.clone(), config, &s.clock);
    let state = s.store.sync_state().unwrap();
    let mut last = None;
    for i in 0..5 {
        let date = s.sim.add_measure(USER, 1, 60_000 + i, -3);
        let n = notification(format!(
            "userid={USER}&appli=1&startdate={date}&enddate={}",
            date + 1
        ));
        one.intake().accept(&n).await.unwrap();
        let (x, y) = tokio::join!(one.run_once(), two.run_once());
        x.unwrap();
        y.unwrap();
        let cursor = state.load(USER, SyncStream::Measures).await.unwrap().cursor;
        assert!(
            cursor >= last,
            "the cursor went back: {last:?} then {cursor:?}"
        );
        last = cursor;
    }
    assert!(one.run_once().await.unwrap());
    assert!(
        sink.violations.lock().unwrap().is_empty(),
        "{:?}",
        sink.violations.lock().unwrap()
    );
    let mut keys = sink.keys();
    let delivered = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), 8, "3 + 5 groups, all delivered");
    assert_eq!(
        delivered, 8,
        "each exactly once: the lease and the versions keep the engines apart"
    );
}

#[tokio::test]
async fn backfill_is_checkpointed_in_chunks_and_a_crash_redoes_at_most_one() {
    let file = SqliteFile::new("sync-backfill");
    let s = setup(file.open().await).await;
    let config = measures_only()
        .backfill(Backfill::Days(5))
        .chunk(Duration::from_secs(86_400));
    // Batch 0: the live read (today's group); batch 1: the first chunk's group; batch 2, the
    // second chunk's group, fails.
    let failing = Arc::new(Recorder::failing_at(2, false));
    let first = engine(&s, failing.clone(), config.clone());
    assert!(!first.run_once().await.unwrap());
    assert_eq!(
        first.metrics().backfill_chunks,
        1,
        "one chunk checkpointed before the failure"
    );
    // The stored backfill progress of the user's measures.
    let progress = async || {
        let state = s.store.sync_state().unwrap();
        let stored = state.load(USER, SyncStream::Measures).await.unwrap();
        stored.backfill.unwrap()
    };
    let first_progress = progress().await;
    assert_eq!(
        first_progress.horizon + 3 * 86_400,
        first_progress.next_end,
        "three chunks left"
    );

    let healthy = Arc::new(Recorder::default());
    let second = engine(&s, healthy.clone(), config);
    assert!(second.run_once().await.unwrap());
    assert_eq!(second.metrics().backfill_chunks, 3);
    assert_eq!(
        second.metrics().requests[2],
        3,
        "the failed chunk again, then the two left"
    );
    assert!(progress().await.done());
    let mut all = failing.keys();
    all.extend(healthy.keys());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3, "the three groups, none lost");
}

#[tokio::test]
async fn a_notification_answered_before_a_crash_is_still_processed() {
    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::Full;
    use tower::ServiceExt;
    use tower_withings::notify::NotifyReceiver;

    let file = SqliteFile::new("sync-inbox");
    let s = setup(file.open().await).await;
    let sink = Arc::new(Recorder::default());
    let before = engine(&s, sink.clone(), measures_only());
    assert!(before.run_once().await.unwrap());
    let (receiver, notifications) = NotifyReceiver::builder(NotifyReceiver::random_secret())
        .intake(before.intake())
        .queue(1)
        .build()
        .unwrap();
    let date = s.sim.add_measure(USER, 1, 91_250, -3);
    s.sim.reset_counters();
    let callback = receiver.callback_url("https://app.example.com/withings/notify");
    let path_only = callback
        .expose()
        .trim_start_matches("https://app.example.com")
        .to_owned();
    for _ in 0..3 {
        // A full queue is no reason to refuse: the inbox holds the notification.
        let post = Request::post(path_only.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "userid={USER}&appli=1&startdate={date}&enddate={}",
                date + 1
            ))))
            .unwrap();
        assert_eq!(
            receiver.clone().oneshot(post).await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(s.sim.counters().data_calls, 0, "the receiver called nobody");
    // The process dies: the receiver, its in-memory queue and the engine are gone.
    drop((receiver, notifications, before));

    let store2 = file.open().await;
    assert_eq!(
        store2.sync_state().unwrap().inbox_depth().await.unwrap(),
        1,
        "one coalesced entry"
    );
    let after = s.restarted(store2);
    let engine2 = engine(&after, sink.clone(), measures_only());
    assert_eq!(
        engine2.step().await.unwrap(),
        Step::Worked(Lane::Notification)
    );
    assert!(sink.values.lock().unwrap().values().any(|v| v == "91.25"));
    let status = engine2.status().await.unwrap();
    assert_eq!(status.inbox_depth, 0);
    let measures = &status.users[0].streams[0];
    assert_eq!(measures.stream, SyncStream::Measures);
    assert_eq!(measures.state.cursor, Some(i64::try_from(date).unwrap()));
}

#[tokio::test]
async fn every_stream_the_simulator_serves_reaches_the_sink() {
    let s = setup(Arc::new(MemoryStore::new())).await;
    let sink = Arc::new(Recorder::default());
    let mut streams = SyncStream::DEFAULT.to_vec();
    streams.push(SyncStream::Heart);
    let engine = engine(&s, sink.clone(), SyncConfig::default().streams(&streams));
    let mut events = engine.events();
    assert!(engine.run_once().await.unwrap());
    let keys = sink.keys();
    for stream in &streams {
        let prefix = format!("{USER}/{stream}/");
        assert!(
            keys.iter().any(|k| k.starts_with(&prefix)),
            "nothing for {stream}: {keys:?}"
        );
    }
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, SyncEvent::Failed { .. } | SyncEvent::BadRows { .. }),
            "{e:?}"
        );
    }
    // A second catch-up delivers nothing new: every version is already in the sink.
    let before = keys.len();
    assert!(engine.run_once().await.unwrap());
    assert_eq!(sink.keys().len(), before);
    let status = engine.status().await.unwrap();
    assert_eq!(status.users[0].streams.len(), streams.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_inbox_until_shutdown() {
    let (s, sink, engine) = in_memory(measures_only().workers(3)).await;
    assert!(engine.run_once().await.unwrap());
    let date = s.sim.add_measure(USER, 1, 65_400, -3);
    let n = notification(format!(
        "userid={USER}&appli=1&startdate={date}&enddate={}",
        date + 1
    ));
    engine.intake().accept(&n).await.unwrap();
    let watched = sink.clone();
    let delivered = move || watched.keys().len() >= 4;
    run_until(
        &engine,
        Duration::from_secs(20),
        "run returns at shutdown",
        delivered,
    )
    .await;
    assert!(sink.values.lock().unwrap().values().any(|v| v == "65.4"));
}

/// Every loop but one could be waiting for the budget on a backfill's behalf (the background
/// lanes' share of a long window is spent, and the backfill has a year to read): a
/// notification is still fetched, by the loop the engine keeps from background work, through
/// the budget's headroom. Before both fixes the notification waited for the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_fetched_while_backfills_wait_for_the_budget() {
    use crate::common::simulator_with;
    use crate::sync_support::{Table, engine, row, run_in_background};
    use tower_withings::budget::RateBudget;
    let history = withings_sim::HistoryConfig {
        days: 365,
        groups_per_day: 1,
        page_size: 10,
        ..withings_sim::HistoryConfig::default()
    };
    let sim = simulator_with(history).await;
    let clock = ManualClock::new();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    // 40 requests a long window: 30 for the background lanes, 10 of headroom; a request
    // waits for its slot as long as the test may take.
    let window = Duration::from_secs(3_600);
    let budget = RateBudget::new(40, window).headroom(10).deadline(window);
    let auth = auth_builder(&sim, &clock)
        .store(store.clone())
        .rate_budget(budget)
        .build(transport::plain_http_client());
    let notified = UserId(77);
    auth.import(grant(&sim, &clock, notified)).await.unwrap();
    let table = Arc::new(Table::default());
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .backfill(Backfill::Days(7))
        .workers(2);
    let engine = engine(&auth, &sim, store.clone(), table.clone(), config, &clock);
    assert!(
        engine.run_once().await.unwrap(),
        "the notified user caught up"
    );
    for id in 0..10 {
        auth.import(grant(&sim, &clock, UserId(1_000 + id)))
            .await
            .unwrap();
    }
    let engine = {
        let config = SyncConfig::default()
            .streams(&[SyncStream::Measures])
            .backfill(Backfill::Days(365))
            .workers(2);
        crate::sync_support::engine(&auth, &sim, store.clone(), table.clone(), config, &clock)
    };
    let (stop, running) = run_in_background(&engine);
    // The backfills spend the background share and wait for more.
    let waiting = "a backfill request waits for the budget";
    eventually(Duration::from_secs(60), waiting, || {
        auth.metrics().budget_waits > 0
    })
    .await;
    let date = sim.add_measure(notified, 1, 81_250, -3);
    let form = format!(
        "userid={notified}&appli=1&startdate={date}&enddate={}",
        date + 1
    );
    engine.intake().accept(&notification(form)).await.unwrap();
    let groups = sim.measure_groups(notified);
    let weighed = groups
        .iter()
        .find(|g| g.date == date)
        .expect("the new group");
    let (key, weighing) = row(notified, weighed);
    let reached = "the notified weighing reaches the table while the backfills wait";
    eventually(Duration::from_secs(60), reached, || {
        table.rows.lock().unwrap().get(&key) == Some(&weighing)
    })
    .await;
    assert!(
        table.len() < backfilled_in_full(&sim),
        "the backfills are still waiting: the notification did not wait for them"
    );
    assert_eq!(sim.counters().served_601, 0);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// How many rows the backfilled users' years come to.
fn backfilled_in_full(sim: &Simulator) -> usize {
    let users = (0..10).map(|id| crate::sync_support::expected(sim, UserId(1_000 + id)).len());
    users.sum()
}
