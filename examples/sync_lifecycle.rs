//! The sync's whole lifecycle, against the simulator, into a SQLite table of the app:
//!
//! 1. a user is linked through the OAuth web flow (authorize2, the simulator approves at once,
//!    the code on the callback is exchanged);
//! 2. they are subscribed to weight notifications at the app's receiver, which stores each
//!    notification in the sync's inbox before it answers (`intake`);
//! 3. `run_once` catches up: their history lands in the table;
//! 4. the user weighs in, edits a weighing and deletes another; Withings notifies; the next
//!    `run_once` fetches the notified changes, and its sweep's reconcile pass finds the
//!    deletion (Withings reports none by itself).
//!
//! ```text
//! cargo run --example sync_lifecycle
//! ```
//!
//! It prints each step, then the table. `tests/examples.rs` runs the same `run` and checks the
//! table against the simulator's data.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use tower::{BoxError, Layer};
use tower_withings::notify::{Appli, NotifyClient, NotifyReceiver};
use tower_withings::oauth::{Callback, RedirectPolicy};
use tower_withings::store::SqliteStore;
use tower_withings::sync::{
    Batch, ChangeKind, Record, Sink, SinkFuture, SyncConfig, SyncEngine, SyncStream,
};
use tower_withings::{Credentials, Scope, WithingsAuth, transport};
use withings_sim::{HistoryConfig, SimConfig, SimMeasure, Simulator};

const CLIENT_ID: &str = "sync-lifecycle-example";
const CLIENT_SECRET: &str = "sync-lifecycle-example-secret";
const REDIRECT_URI: &str = "https://app.example.com/withings/callback";

/// The app's table: one row per measure group, its weight as the exact decimal.
pub struct Table(Mutex<rusqlite::Connection>);

impl Table {
    fn open(path: &std::path::Path) -> rusqlite::Result<Table> {
        let db = rusqlite::Connection::open(path)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS weighings (
                 user INTEGER, grpid TEXT, version INTEGER, weight TEXT, deleted INTEGER,
                 PRIMARY KEY (user, grpid))",
        )?;
        Ok(Table(Mutex::new(db)))
    }

    /// Every row: (grpid, weight, deleted), by grpid.
    pub fn rows(&self) -> rusqlite::Result<Vec<(u64, Option<String>, bool)>> {
        let db = self.0.lock().unwrap();
        let mut query = db.prepare(
            "SELECT grpid, weight, deleted FROM weighings ORDER BY CAST(grpid AS INTEGER)",
        )?;
        let rows = query.query_map([], |r| {
            let grpid: String = r.get(0)?;
            Ok((grpid.parse().unwrap_or(0), r.get(1)?, r.get(2)?))
        })?;
        rows.collect()
    }
}

impl Sink for Table {
    /// One transaction per batch: `Ok` once it is committed, so the cursor may move.
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut db = self.0.lock().unwrap();
            let tx = db.transaction()?;
            for change in &batch.changes {
                let weight = match &change.kind {
                    ChangeKind::Upsert(record) => match record.as_ref() {
                        Record::Measures(group) => (group.measures.iter())
                            .find(|m| m.measure_type.code() == 1)
                            .map(|m| m.value.to_string()),
                        _ => None,
                    },
                    ChangeKind::Delete => None,
                };
                let deleted = matches!(change.kind, ChangeKind::Delete);
                // Upsert by key: applying a batch twice is harmless.
                tx.execute(
                    "INSERT INTO weighings VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (user, grpid) DO UPDATE SET
                         version = ?3, weight = COALESCE(?4, weight), deleted = ?5",
                    rusqlite::params![
                        change.key.user.0,
                        change.key.id,
                        change.version,
                        weight,
                        deleted
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// The lifecycle on `sim`, with the app's files in `dir`: the lines it prints, and the table.
pub async fn run(
    sim: &Simulator,
    dir: &std::path::Path,
) -> Result<(Vec<String>, Arc<Table>), BoxError> {
    let mut out = Vec::new();
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]);
    // Tokens and sync state in one store; the app's data in its own table.
    let store = Arc::new(SqliteStore::open(dir.join("tokens.db")).await?);
    let table = Arc::new(Table::open(&dir.join("app.db"))?);
    let endpoints = sim.endpoints();
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints.clone())
        .store(store.clone())
        .build(transport::plain_http_client());

    // 1. Link: the browser goes to authorize2 and comes back to our callback with a code.
    let request = auth.authorize(REDIRECT_URI, &[Scope::UserMetrics])?;
    let browser: Client<_, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let approved = browser.get(request.url().parse()?).await?;
    let redirected = approved.headers()["location"].to_str()?;
    let user = auth
        .exchange_code(&Callback::parse(redirected)?, &request)
        .await?;
    out.push(format!("linked user {user}"));

    // The engine over the app's stack (the layer: tokens, refresh, request budget), with the
    // reconcile pass on: deletions are found by re-listing the last 30 days at each sweep.
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .reconcile(Some(Duration::from_secs(30 * 86_400)));
    let stack = auth.layer().layer(transport::plain_http_client());
    let engine = SyncEngine::new(stack, &endpoints, store, table.clone(), config)?;

    // 2. The receiver, inbox first, on loopback; the user subscribed to it.
    let (receiver, _queue) = NotifyReceiver::builder(NotifyReceiver::random_secret())
        .auth(&auth)
        .intake(engine.intake())
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback = receiver.callback_url(&format!("http://{}/n", listener.local_addr()?));
    let app = axum::Router::new().route_service("/n/{secret}", receiver);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    NotifyClient::new(&auth, transport::plain_http_client())
        .callback_policy(RedirectPolicy::AllowLoopback) // real Withings wants https
        .ensure_subscribed(user, callback.expose(), &[Appli::Weight])
        .await?;
    out.push("subscribed to weight notifications".to_owned());

    // 3. Catch up.
    engine.run_once().await?;
    out.push(format!("caught up: {} weighings", table.rows()?.len()));

    // 4. The user weighs in, edits their first weighing, deletes their second; each is
    //    notified to the receiver, which puts it in the inbox.
    let history = sim.measure_groups(user);
    let now = sim.now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    sim.add_group(user, now - 60, 0, vec![SimMeasure::new(1, 72_450, -3)]);
    sim.edit_group(user, history[0].grpid, vec![SimMeasure::new(1, 71_900, -3)]);
    sim.delete_group(user, history[1].grpid);
    for _ in 0..1000 {
        if sim.notify_counters().deliveries == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.push(format!(
        "Withings notified {} times",
        sim.notify_counters().deliveries
    ));
    // The inbox first (the new and the edited weighing), then the sweep and its reconcile.
    engine.run_once().await?;
    out.push("the table:".to_owned());
    for (grpid, weight, deleted) in table.rows()? {
        let weight = weight.unwrap_or_default();
        out.push(if deleted {
            format!("  {grpid} deleted")
        } else {
            format!("  {grpid} {weight} kg")
        });
    }
    server.abort();
    Ok((out, table))
}

/// A simulator whose user has three weighings, a day apart.
pub async fn simulator() -> std::io::Result<Simulator> {
    let history = HistoryConfig {
        days: 3,
        groups_per_day: 1,
        late_uploads: false,
        ..HistoryConfig::default()
    };
    Simulator::start_with(SimConfig {
        history,
        ..SimConfig::default()
    })
    .await
}

#[tokio::main]
async fn main() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("sync-lifecycle-{}", std::process::id()));
    let outcome = async {
        std::fs::create_dir_all(&dir)?;
        let sim = simulator().await?;
        run(&sim, &dir).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok((lines, _)) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sync_lifecycle failed: {error}");
            ExitCode::FAILURE
        }
    }
}
