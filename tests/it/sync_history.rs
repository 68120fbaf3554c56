//! The sync over the simulator's seeded history: 1,000 measure groups in pages of 17 that are
//! not in modification order (newest upload first), late uploads (one group in ten weeks
//! after its date), edits and deletions. The sink must end holding exactly the simulator's
//! data, every value exact.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tower_withings::store::{SqliteStore, TokenStore};
use tower_withings::sync::{Backfill, Step, SyncConfig, SyncStream};
use tower_withings::{UserId, clock::ManualClock, transport};
use withings_sim::{HistoryConfig, SimMeasure};

use crate::common::{auth_builder, authorized, simulator_with};
use crate::sync_support::{Rig, Table, advance, engine, expected};

const PAGE: usize = 17;
const DAY: u64 = 86_400;
const USER: UserId = UserId(22_003);

#[tokio::test]
async fn a_thousand_groups_with_late_uploads_edits_and_deletions_end_exact() {
    let history = HistoryConfig {
        days: 100,
        groups_per_day: 10,
        page_size: PAGE,
        late_uploads: true,
        ..HistoryConfig::default()
    };
    let rig = Rig::new(history, USER).await;
    let (sim, clock, store, table) = (&rig.sim, &rig.clock, &rig.store, &rig.table);
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .backfill(Backfill::Days(101))
        .reconcile(Some(Duration::from_secs(120 * DAY)))
        .batch_size(64);
    let engine = rig.engine(config);

    assert!(engine.run_once().await.unwrap());
    let groups = sim.measure_groups(USER);
    assert_eq!(groups.len(), 1_000);
    assert!(
        groups.iter().any(|g| g.created >= g.date + 3 * DAY),
        "some uploads are weeks late"
    );
    assert!(groups.iter().any(|g| g.modified > g.created), "some edits");
    let prefix = format!("{USER}/measures/");
    assert_eq!(
        table.under(&prefix),
        expected(sim, USER),
        "every group, every value exact"
    );
    let state = store.sync_state().unwrap();
    let newest = groups.iter().map(|g| g.modified).max().unwrap();
    assert_eq!(
        state.load(USER, SyncStream::Measures).await.unwrap().cursor,
        Some(i64::try_from(newest).unwrap()),
        "the cursor is the newest modified, read whole"
    );

    // An hour later: 50 edits, 20 late uploads dated 40 days back, 30 deletions; no
    // notification arrives.
    advance(sim, clock, Duration::from_secs(3_600));
    for g in groups.iter().step_by(19).take(50) {
        let mut measures = g.measures.clone();
        measures[0].value += 1_000;
        assert!(sim.edit_group(USER, g.grpid, measures));
    }
    let forty_days_ago = newest - 40 * DAY;
    for i in 0..20 {
        let weight = SimMeasure::new(1, 70_005 + i, -3);
        sim.add_group(USER, forty_days_ago + i as u64, 0, vec![weight]);
    }
    for g in groups.iter().skip(1).step_by(31).take(30) {
        assert!(sim.delete_group(USER, g.grpid));
    }
    advance(sim, clock, Duration::from_secs(25 * 3_600));
    sim.reset_counters();
    // The sweep reads `lastupdate` from the cursor minus the 10-minute re-read.
    let reread = newest - 600;
    let now = sim.measure_groups(USER);
    let since = now.iter().filter(|g| g.modified >= reread).count();
    assert!(since >= 69, "the edits and the uploads: {since}");
    assert_eq!(now.len(), 990);
    while engine.step().await.unwrap() != Step::Idle {}
    assert_eq!(
        table.under(&prefix),
        expected(sim, USER),
        "edits, late uploads and deletions all arrived"
    );
    assert_eq!(table.deletes.load(Ordering::SeqCst), 30);
    assert!(table.violations.lock().unwrap().is_empty());
    // One sweep: its lastupdate read, then the reconcile pass re-listing the 990 groups.
    let pages = sim.calls(USER, "/measure", "getmeas");
    let expected_pages = since.div_ceil(PAGE) + 990usize.div_ceil(PAGE);
    assert_eq!(pages, expected_pages as u64, "pages read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_store_with_edits_never_deliver_a_lower_version() {
    let dir = crate::store_support::TempDir::new("sync-edits");
    let path = dir.file("sync.sqlite3");
    let a: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let history = HistoryConfig {
        days: 20,
        groups_per_day: 10,
        page_size: PAGE,
        ..HistoryConfig::default()
    };
    let sim = simulator_with(history).await;
    let clock = ManualClock::new();
    let auth_a = authorized(&sim, &clock, a.clone(), USER).await;
    // The second process: its own handle and store handle on the same file.
    let auth_b = auth_builder(&sim, &clock)
        .store(b.clone())
        .build(transport::plain_http_client());
    let table = Arc::new(Table::default());
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .batch_size(7);
    let one = engine(
        &auth_a,
        &sim,
        a.clone(),
        table.clone(),
        config.clone(),
        &clock,
    );
    let two = engine(&auth_b, &sim, b, table.clone(), config, &clock);
    let state = a.sync_state().unwrap();
    let groups = sim.measure_groups(USER);
    assert_eq!(groups.len(), 200);
    let mut last_cursor = None;
    for round in 0..10usize {
        for j in 0..20usize {
            let g = &groups[(round * 37 + j * 11) % 200];
            let mut measures = sim
                .measure_groups(USER)
                .into_iter()
                .find(|x| x.grpid == g.grpid)
                .unwrap()
                .measures;
            measures[0].value += 1;
            assert!(sim.edit_group(USER, g.grpid, measures));
        }
        let (x, y) = tokio::join!(one.run_once(), two.run_once());
        x.unwrap();
        y.unwrap();
        let cursor = state.load(USER, SyncStream::Measures).await.unwrap().cursor;
        assert!(cursor >= last_cursor, "the cursor went back");
        last_cursor = cursor;
    }
    while !one.run_once().await.unwrap() {}
    assert!(
        table.violations.lock().unwrap().is_empty(),
        "{:?}",
        table.violations.lock().unwrap()
    );
    assert_eq!(
        table.under(&format!("{USER}/measures/")),
        expected(&sim, USER),
        "every edit arrived, every value exact"
    );
}
