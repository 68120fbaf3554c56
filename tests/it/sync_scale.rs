//! What the sync costs, counted by the simulator (issue 22's figures; counts, never times):
//! a linked user's day, one year of one user's history, and 1,000 users with a tenth of them
//! backfilling a year under the app-wide limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tower_withings::notify::Notification;
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::sync::{
    Backfill, BackfillProgress, Commit, Step, SyncConfig, SyncEngine, SyncEvent, SyncStream,
};
use tower_withings::transport::HttpClient;
use tower_withings::{UserId, budget::RateBudget, clock::Clock, clock::ManualClock, transport};
use withings_sim::{AppRateLimit, HistoryConfig, Series, Simulator};

use crate::common::{auth_builder, grant, simulator_with};
use crate::sync_support::{Rig, Row, Table, advance, engine, expected, row, run_until};

const USER: UserId = UserId(22_001);
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: u64 = 86_400;

fn notification(user: UserId, appli: i64, start: u64, end: u64) -> Notification {
    let form = format!("userid={user}&appli={appli}&startdate={start}&enddate={end}");
    Notification::from_form(form.as_bytes()).unwrap()
}

fn secs(clock: &ManualClock) -> i64 {
    let since = clock.now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// Steps until nothing is left to do now.
async fn settle<S: HttpClient>(engine: &SyncEngine<S>) {
    while engine.step().await.unwrap() != Step::Idle {}
}

/// The data calls the simulator served for `user`, per (path, action) of the four default
/// streams.
fn calls(sim: &Simulator, user: UserId) -> [u64; 4] {
    [
        sim.calls(user, "/measure", "getmeas"),
        sim.calls(user, "/v2/measure", "getactivity"),
        sim.calls(user, "/v2/measure", "getworkouts"),
        sim.calls(user, "/v2/sleep", "getsummary"),
    ]
}

/// Steady state, one user-day, the default streams (measures, activity, workouts, sleep
/// summaries) and Withings' 3 h access tokens: a night's sleep and a weighing at 07:00, the
/// watch's activity at 13:00 and at 19:00 (appli 16 is two streams: activity and workouts),
/// then midnight, a day after the catch-up's sweep. The simulator serves 1 + 1 + 2 + 2
/// notification fetches and no sweep read (each stream was read from its cursor within the
/// day, which is what the sweep would do): 6 data calls. On top of them, 3 refreshes: the
/// tokens are refreshed on use, and each of the three moments that send comes more than 3 h
/// after the last, so each finds its token expired. **9 requests** in all (goal ≤ 10).
/// A day later, with no notification, the sweep reads each stream once.
#[tokio::test]
async fn a_linked_users_day_is_ten_requests_refreshes_included() {
    let rig = Rig::new(HistoryConfig::default(), USER).await;
    let (sim, clock, table) = (&rig.sim, &rig.clock, &rig.table);
    let engine = rig.engine(SyncConfig::default());
    assert!(engine.run_once().await.unwrap(), "caught up");
    sim.reset_counters();

    let intake = engine.intake();
    let mut hour = 0;
    for (at, appli) in [(7, 44), (7, 1), (13, 16), (19, 16)] {
        advance(sim, clock, HOUR * (at - hour));
        hour = at;
        let now = u64::try_from(secs(clock)).unwrap();
        let (start, end) = match appli {
            1 => {
                let date = sim.add_measure(USER, 1, 71_450, -3);
                (date, date + 1)
            }
            16 => sim.add_activity(USER, 9_000),
            _ => (now - 9 * 3_600, now - 3_600),
        };
        intake
            .accept(&notification(USER, appli, start, end))
            .await
            .unwrap();
        settle(&engine).await;
    }
    let fetched = calls(sim, USER).iter().sum::<u64>();
    assert_eq!(fetched, 6, "one fetch per notified stream");
    advance(sim, clock, HOUR * (24 - hour));
    settle(&engine).await;

    let per_stream = calls(sim, USER);
    let data = per_stream.iter().sum::<u64>();
    assert_eq!(per_stream, [1, 2, 2, 1], "per stream: no sweep read");
    assert_eq!(
        data,
        sim.counters().data_calls,
        "every data call was this user's"
    );
    let refreshes = sim.counters().refreshes;
    assert_eq!(refreshes, 3, "one refresh per use 3 h apart");
    assert!(
        data + refreshes <= 10,
        "{data} data calls and {refreshes} refreshes in a user-day (goal ≤ 10 requests)"
    );
    // A quiet day: the sweep reads each stream once, a day after its last read.
    advance(sim, clock, HOUR * 24);
    settle(&engine).await;
    let swept = calls(sim, USER);
    let reads: Vec<u64> = swept.iter().zip(per_stream).map(|(a, b)| a - b).collect();
    assert_eq!(reads, [1, 1, 1, 1], "one sweep read per stream");
    let weighing = table.under(&format!("{USER}/measures/"));
    assert!(
        (weighing.values()).any(|(_, m)| m.contains(&(1, None, 71_450, -3))),
        "the weighing reached the sink, exact"
    );
}

/// One year of one user's history (two measure groups a day, an activity row and a night a
/// day, a workout every third day, pages of 50) in the fewest requests: each stream's rows in
/// ⌈rows / page⌉ pages, at most one more per stream (goal). It takes a backfill chunk as long
/// as the backfill (`chunk(365 days)`): the first read is then one `lastupdate` walk over the
/// whole year. With the default 30-day chunks each chunk is its own walk, so a year costs up
/// to one part-filled page per chunk more (13 per stream), the price of redoing at most 30
/// days after a crash.
#[tokio::test]
async fn a_year_of_history_takes_the_fewest_pages() {
    let history = HistoryConfig {
        days: 365,
        ..HistoryConfig::default()
    };
    let page = history.page_size;
    let rig = Rig::new(history, USER).await;
    let (sim, table) = (&rig.sim, &rig.table);
    let year = Duration::from_secs(365 * DAY);
    let config = SyncConfig::default()
        .backfill(Backfill::Days(365))
        .chunk(year);
    let engine = rig.engine(config);
    assert!(engine.run_once().await.unwrap());

    let rows = [
        sim.measure_groups(USER).len(),
        sim.rows(USER, Series::Activity).len(),
        sim.rows(USER, Series::Workouts).len(),
        sim.rows(USER, Series::SleepSummaries).len(),
    ];
    assert_eq!(rows[0], 730, "two groups a day for a year");
    let fewest = rows.map(|r| u64::try_from(r.div_ceil(page)).unwrap());
    let pages = calls(sim, USER);
    for (i, stream) in SyncStream::DEFAULT.iter().enumerate() {
        assert!(
            pages[i] >= fewest[i] && pages[i] <= fewest[i] + 1,
            "{stream}: {} pages for {} rows, the fewest is {}",
            pages[i],
            rows[i],
            fewest[i]
        );
        let prefix = format!("{USER}/{stream}/");
        assert_eq!(table.under(&prefix).len(), rows[i], "{stream}: every row");
    }
    assert_eq!(pages, fewest, "no page more than needed");
    eprintln!("a year, page {page}: rows {rows:?}, pages {pages:?}");
    assert_eq!(
        table.under(&format!("{USER}/measures/")),
        expected(sim, USER),
        "every group, every value exact"
    );
}

/// 1,000 users, of whom 100 are new and backfill a year of measures while the other 900 are
/// swept (their last read two days ago), all under the app-wide limit: the simulator answers
/// zero 601s, every request the engine asked for was sent and answered (none dropped: no
/// `BudgetExhausted`, no failed read), and every user's table holds exactly the simulator's
/// data (the whole year for the new users; for the others, everything modified since their
/// cursor, minus the 10-minute re-read).
///
/// **Scaled time.** Withings' limit is 120 requests per 60 s; the ≈ 2,300 requests here would
/// take about 20 minutes at that rate. The simulator's `app_rate_limit` and the budget
/// (`RateBudget::new`) are therefore both 120 requests per **1 s** window: the same limit
/// with the window 60 times shorter, the simulator and the budget scaled together, so the
/// budget's pacing (slots, hold, the dispatcher's queues) is exercised at the real count per
/// window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_a_tenth_backfilling_earn_no_601_and_end_exact() {
    const USERS: u64 = 1_000;
    const NEW: u64 = 100;
    let limit = AppRateLimit {
        limit: 120,
        window: Duration::from_secs(1),
    };
    let history = HistoryConfig {
        days: 365,
        groups_per_day: 1,
        ..HistoryConfig::default()
    };
    let sim = simulator_with(history).await;
    sim.set_app_rate_limit(Some(limit));
    let clock = ManualClock::new();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let budget = RateBudget::new(limit.limit, limit.window).deadline(Duration::from_secs(120));
    let auth = auth_builder(&sim, &clock)
        .rate_budget(budget)
        .store(store.clone())
        .build(transport::plain_http_client());
    let users: Vec<UserId> = (0..USERS).map(|i| UserId(500_000 + i)).collect();
    for user in &users {
        auth.import(grant(&sim, &clock, *user)).await.unwrap();
    }
    // The 900 steady users were read two days ago; their backfill is done.
    let state = store.sync_state().unwrap();
    let ttl = Duration::from_secs(30);
    let cursor = secs(&clock) - 2 * DAY as i64;
    let done = BackfillProgress {
        next_end: cursor,
        horizon: cursor,
    };
    for user in &users[NEW as usize..] {
        let lease = state
            .lease(*user, SyncStream::Measures, ttl)
            .await
            .unwrap()
            .unwrap();
        let commit = Commit {
            cursor: Some(cursor),
            backfill: Some(done),
            ..Commit::default()
        };
        assert!(state.commit(&lease, ttl, commit).await.unwrap());
        state.release(&lease).await.unwrap();
    }

    let table = Arc::new(Table::default());
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .backfill(Backfill::Days(365));
    let engine = engine(&auth, &sim, store.clone(), table.clone(), config, &clock);
    // Failed reads and undecodable rows, and events the watcher missed (it must see all).
    let (failed, missed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut events = engine.events();
    let watcher = tokio::spawn({
        let (failed, missed) = (failed.clone(), missed.clone());
        async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(SyncEvent::Failed { .. } | SyncEvent::BadRows { .. }) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        missed.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    // What each user's table must end holding (drawing the simulator's histories now): the
    // whole year for the new users; for the others what was modified since their cursor,
    // minus the 10-minute re-read.
    let reread = cursor - 600;
    let want: Vec<BTreeMap<String, Row>> = (users.iter().enumerate())
        .map(|(i, user)| {
            let groups = sim.measure_groups(*user);
            let new = (i as u64) < NEW;
            (groups.iter())
                .filter(|g| new || i64::try_from(g.modified).unwrap() >= reread)
                .map(|g| row(*user, g))
                .collect()
        })
        .collect();
    let total: usize = want.iter().map(BTreeMap::len).sum();
    // `SyncEngine::run` with its default four workers, until every row is in.
    let filled = {
        let table = table.clone();
        move || table.len() >= total
    };
    let within = "every row arrives within 5 minutes";
    run_until(&engine, Duration::from_secs(300), within, filled).await;
    settle(&engine).await;
    drop(engine);
    watcher.await.unwrap();

    let c = sim.counters();
    assert_eq!(c.served_601, 0, "no 601 earned");
    assert!(sim.busiest_window(limit.window) <= limit.limit as usize);
    assert_eq!(
        missed.load(Ordering::SeqCst),
        0,
        "the watcher saw every event"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no failed read");
    let m = auth.metrics();
    assert_eq!((m.budget_exhausted, m.rate_limited), (0, 0), "none dropped");
    for (i, user) in users.iter().enumerate() {
        if (i as u64) < NEW {
            assert_eq!(want[i].len(), 365, "a year of groups");
        }
        assert_eq!(
            table.under(&format!("{user}/measures/")),
            want[i],
            "{user}: exactly the simulator's data"
        );
    }
    assert_eq!(table.len(), total);
    assert!(table.violations.lock().unwrap().is_empty());
    // Every request the engine made reached the simulator, and no other did.
    let requests: u64 = auth.metrics().budget_slots;
    assert_eq!(
        c.data_calls, requests,
        "every slot taken was one call served"
    );
    eprintln!(
        "1,000 users, 100 backfilling a year: {} requests, {} rows, busiest window {}",
        c.data_calls,
        total,
        sim.busiest_window(limit.window)
    );
}
