//! Sync crashes: a process syncing one user is SIGKILLed at random moments, 20 times, on
//! SQLite and on PostgreSQL. Its sink appends every accepted change to a file (the app's
//! durable table). At the end the file holds every group the simulator has (nothing lost),
//! and the repeats are within the unaccepted batches: at most one batch per kill. And two
//! processes syncing the same user into one table while its groups are edited: per record,
//! the table never holds a lower version after a higher one.
//!
//! Its own binary: it re-runs itself as the child it kills.
#![cfg(feature = "sqlite")]

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::child::{self, Child, random_below};
use support::common::{self, CLIENT_ID, CLIENT_SECRET, grant};
use support::store_support::TempDir;
use tower::ServiceBuilder;
use tower_withings::store::{SqliteStore, TokenStore};
use tower_withings::sync::{Batch, Sink, SinkFuture, SyncConfig, SyncEngine, SyncStream};
use tower_withings::{Credentials, Endpoints, WithingsAuth, clock::ManualClock, transport};

const CHILD: &str = "sync_crash_child_entry";
const ENV_STORE: &str = "TOWER_WITHINGS_SYNC_CRASH_STORE";
const ENV_OUT: &str = "TOWER_WITHINGS_SYNC_CRASH_OUT";
const KILLS: usize = 20;
const BATCH: usize = 2;

/// The app's table: one line per accepted change, the batch written in one `write` and synced
/// before `Ok`.
struct FileSink(std::path::PathBuf);

impl Sink for FileSink {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut text = String::new();
            for c in &batch.changes {
                text.push_str(&format!("{} {}\n", c.key, c.version));
            }
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.0)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            // A wide window for a kill between "written" and "accepted".
            tokio::time::sleep(Duration::from_millis(15)).await;
            Ok(())
        })
    }
}

async fn open_store(spec: &str) -> Arc<dyn TokenStore> {
    match spec.split_once(':') {
        Some(("sqlite", path)) => Arc::new(SqliteStore::open(path).await.unwrap()),
        #[cfg(feature = "postgres")]
        Some(("postgres", table)) => Arc::new(
            tower_withings::store::PostgresStore::builder(&support::store_support::postgres_url())
                .table(table)
                .build()
                .await
                .unwrap(),
        ),
        _ => panic!("unknown store {spec}"),
    }
}

/// The child: sync until done, say DONE, keep going until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_crash_child_entry() {
    let Some(api) = child::api_for(CHILD) else {
        return;
    };
    let store = open_store(&std::env::var(ENV_STORE).unwrap()).await;
    let endpoints = Endpoints::loopback(&api, &api).unwrap();
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints.clone())
        .store(store.clone())
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build(transport::plain_http_client());
    let stack = ServiceBuilder::new()
        .layer(auth.layer())
        .map_response(|r: http::Response<hyper::body::Incoming>| r.map(|b| b.boxed()))
        .service(transport::plain_http_client());
    let sink = Arc::new(FileSink(std::env::var(ENV_OUT).unwrap().into()));
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .batch_size(BATCH)
        .lease_ttl(Duration::from_millis(300));
    let engine = SyncEngine::new(stack, &endpoints, store, sink, config).unwrap();
    println!("READY");
    loop {
        if engine.run_once().await.unwrap_or(false) {
            println!("DONE");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child syncing `store`'s user into the file `out`.
fn spawn(api: &str, store: &str, out: &std::path::Path) -> Child {
    Child::spawn(
        CHILD,
        api,
        &[(ENV_STORE, store.as_ref()), (ENV_OUT, out.as_ref())],
    )
}

async fn kill_at_random_moments(store_spec: &str, store: Arc<dyn TokenStore>, dir: &TempDir) {
    // The three groups the count below starts from.
    let sim = common::three_day_simulator().await;
    let user = common::USER;
    store
        .put(
            &grant(&sim, &ManualClock::new(), user),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    for i in 0..10 {
        sim.add_measure(user, 1, 70_000 + i, -3);
    }
    let out = dir.file("table.txt");
    for kill in 0..KILLS {
        // New data between crashes, so live reads have work each time.
        sim.add_measure(user, 1, 80_000 + kill as i64, -3);
        sim.add_measure(user, 6, 2_000 + kill as i64, -2);
        let child = spawn(&sim.api_base(), store_spec, &out);
        child.wait_for("READY", Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(random_below(250))).await;
        drop(child); // SIGKILL
    }
    let last = spawn(&sim.api_base(), store_spec, &out);
    last.wait_for("DONE", Duration::from_secs(60)).await;
    drop(last);

    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let key = line.split(' ').next().unwrap();
        *seen.entry(key).or_default() += 1;
    }
    let groups = 3 + 10 + 2 * KILLS;
    assert_eq!(
        seen.len(),
        groups,
        "every group reached the table: nothing lost"
    );
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        repeats <= KILLS * BATCH,
        "{repeats} repeats: more than one unaccepted batch per kill"
    );
    println!("{store_spec}: {KILLS} kills, {groups} groups, {repeats} repeats");
}

/// A temporary directory named after `tag`, and a SQLite store on a new file in it.
async fn sqlite_file(tag: &str) -> (TempDir, std::path::PathBuf, SqliteStore) {
    let dir = TempDir::new(tag);
    let db = dir.file("tokens.sqlite3");
    let store = SqliteStore::open(&db).await.unwrap();
    (dir, db, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_syncing_on_sqlite_loses_nothing() {
    if child::is_child() {
        return;
    }
    let (dir, db, store) = sqlite_file("sync-crash").await;
    let spec = format!("sqlite:{}", db.display());
    kill_at_random_moments(&spec, Arc::new(store), &dir).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_syncing_on_postgres_loses_nothing() {
    if child::is_child() {
        return;
    }
    use support::store_support::Fresh;
    let Some(store) = tower_withings::store::PostgresStore::fresh().await else {
        return;
    };
    let table = store.table().to_owned();
    let dir = TempDir::new("sync-crash-pg");
    kill_at_random_moments(&format!("postgres:{table}"), Arc::new(store.clone()), &dir).await;
    store.clean().await;
}

/// The versions the table file holds, per key, in the order they were appended.
fn versions_in(out: &std::path::Path) -> HashMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    for line in text.lines() {
        let (key, version) = line.split_once(' ').unwrap();
        versions
            .entry(key.to_owned())
            .or_default()
            .push(version.parse().unwrap());
    }
    versions
}

/// Two OS processes sync the same user on one SQLite file into one table (a file both append
/// to, each batch in one write) while the user's groups are edited, each edit a second after
/// the last: per record, the table never holds a lower version after a higher one, and it
/// ends with every group at the simulator's last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_store_never_deliver_a_lower_version() {
    if child::is_child() {
        return;
    }
    let (dir, db, store) = sqlite_file("sync-two").await;
    let sim = common::three_day_simulator().await;
    let user = common::USER;
    let token = grant(&sim, &ManualClock::new(), user);
    store
        .put(&token, std::time::SystemTime::now())
        .await
        .unwrap();
    let (out, spec) = (dir.file("table.txt"), format!("sqlite:{}", db.display()));
    let children = [0, 1].map(|_| spawn(&sim.api_base(), &spec, &out));
    for child in &children {
        child.wait_for("READY", Duration::from_secs(30)).await;
    }
    for round in 0..15 {
        sim.advance(Duration::from_secs(1));
        for group in sim.measure_groups(user) {
            let measure = withings_sim::SimMeasure {
                meastype: 1,
                value: 60_000 + round,
                unit: -3,
                position: None,
            };
            sim.edit_group(user, group.grpid, vec![measure]);
        }
        sim.add_measure(user, 1, 90_000 + round, -3);
        tokio::time::sleep(Duration::from_millis(50 + random_below(100))).await;
    }
    let last: HashMap<String, u64> = (sim.measure_groups(user).iter())
        .map(|g| (format!("{user}/measures/{}", g.grpid), g.modified))
        .collect();
    let caught_up = || {
        let versions = versions_in(&out);
        last.iter()
            .all(|(key, v)| versions.get(key).and_then(|seen| seen.last()) == Some(v))
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        while !caught_up() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the table catches up with the simulator");
    drop(children);
    let versions = versions_in(&out);
    assert_eq!(versions.len(), last.len(), "every group, no other");
    for (key, seen) in &versions {
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "{key}: versions {seen:?} went down"
        );
    }
    let delivered: usize = versions.values().map(Vec::len).sum();
    println!(
        "two processes: {} groups, {delivered} deliveries",
        last.len()
    );
}
