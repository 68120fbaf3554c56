//! What the sync tests against the simulator share: the app's table as a sink, the
//! simulator's measure groups in the same shape, an engine over the real layer, and one
//! clock for the simulator and the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tower::ServiceBuilder;
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::sync::{Batch, ChangeKind, Record, Sink, SinkFuture, SyncConfig, SyncEngine};
use tower_withings::transport::{self, HttpClient};
use tower_withings::{UserId, WithingsAuth, clock::ManualClock};
use withings_sim::{HistoryConfig, SimGroup, Simulator};

use crate::common::{authorized, simulator_with};

/// One measure as integers: `(type, position, value, unit)`, so "exact" is equality.
pub type Measure = (i64, Option<i64>, i64, i64);

/// One row of the app's table: the version and, for measure groups, every measure.
pub type Row = (i64, Vec<Measure>);

/// The app's table: key → row; deletes remove; a version lower than the one held is a
/// violation.
#[derive(Default)]
pub struct Table {
    pub rows: Mutex<BTreeMap<String, Row>>,
    pub deletes: AtomicUsize,
    pub violations: Mutex<Vec<String>>,
}

impl Table {
    /// The rows whose key starts with `prefix` (`"{user}/"`, `"{user}/measures/"`).
    pub fn under(&self, prefix: &str) -> BTreeMap<String, Row> {
        let rows = self.rows.lock().unwrap();
        (rows.range(prefix.to_owned()..))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }
}

impl Sink for Table {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut rows = self.rows.lock().unwrap();
            for c in &batch.changes {
                let key = c.key.to_string();
                if let Some((old, _)) = rows.get(&key) {
                    if *old > c.version {
                        let seen = format!("{key}: version {old} then {}", c.version);
                        self.violations.lock().unwrap().push(seen);
                    }
                }
                match &c.kind {
                    ChangeKind::Upsert(record) => {
                        let measures = match record.as_ref() {
                            Record::Measures(g) => {
                                let mut m: Vec<Measure> = (g.measures.iter())
                                    .map(|m| {
                                        let (value, unit) = (m.value.value, m.value.unit);
                                        (m.measure_type.code(), m.position, value, unit.into())
                                    })
                                    .collect();
                                m.sort();
                                m
                            }
                            _ => Vec::new(),
                        };
                        rows.insert(key, (c.version, measures));
                    }
                    ChangeKind::Delete => {
                        self.deletes.fetch_add(1, Ordering::SeqCst);
                        rows.remove(&key);
                    }
                }
            }
            Ok(())
        })
    }
}

/// A simulator group as the table should hold it.
pub fn row(user: UserId, g: &SimGroup) -> (String, Row) {
    let mut measures: Vec<Measure> = (g.measures.iter())
        .map(|m| (m.meastype, m.position, m.value, m.unit))
        .collect();
    measures.sort();
    let version = i64::try_from(g.modified).unwrap();
    (format!("{user}/measures/{}", g.grpid), (version, measures))
}

/// Every measure group the simulator holds for `user`, keyed as the sink keys them.
pub fn expected(sim: &Simulator, user: UserId) -> BTreeMap<String, Row> {
    (sim.measure_groups(user).iter())
        .map(|g| row(user, g))
        .collect()
}

/// Time passes for Withings and for the app alike.
pub fn advance(sim: &Simulator, clock: &ManualClock, by: Duration) {
    sim.advance(by);
    clock.advance(by);
}

/// An engine over `auth.layer()` (token, refresh and budget apply) to the simulator.
pub fn engine(
    auth: &WithingsAuth,
    sim: &Simulator,
    store: Arc<dyn TokenStore>,
    sink: Arc<dyn Sink>,
    config: SyncConfig,
    clock: &ManualClock,
) -> SyncEngine<impl HttpClient + use<>> {
    let stack = ServiceBuilder::new()
        .layer(auth.layer())
        .map_response(|r: http::Response<hyper::body::Incoming>| r.map(|b| b.boxed()))
        .service(transport::plain_http_client());
    SyncEngine::with_clock(
        stack,
        &sim.endpoints(),
        store,
        sink,
        config,
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// One linked user over a simulator serving `history`: a memory store, a handle with the
/// user's token, the app's table.
pub struct Rig {
    pub sim: Simulator,
    pub clock: ManualClock,
    pub store: Arc<dyn TokenStore>,
    pub auth: WithingsAuth,
    pub table: Arc<Table>,
}

impl Rig {
    pub async fn new(history: HistoryConfig, user: UserId) -> Rig {
        let sim = simulator_with(history).await;
        let clock = ManualClock::new();
        let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
        let auth = authorized(&sim, &clock, store.clone(), user).await;
        Rig {
            sim,
            clock,
            store,
            auth,
            table: Arc::new(Table::default()),
        }
    }

    /// An engine over this rig's handle, store and table.
    pub fn engine(&self, config: SyncConfig) -> SyncEngine<impl HttpClient + use<>> {
        let (sink, store) = (self.table.clone(), self.store.clone());
        engine(&self.auth, &self.sim, store, sink, config, &self.clock)
    }
}

/// `engine.run` (idle 10 ms) on a task of its own, until the sender is used or dropped.
pub fn run_in_background<C: HttpClient>(
    engine: &SyncEngine<C>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tower_withings::Error>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = engine.clone();
    let running = tokio::spawn(async move {
        engine
            .run(Duration::from_millis(10), async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, running)
}

/// `engine.run` (idle 10 ms) until `done` holds (polled every 10 ms); panics with `what` if
/// it has not returned within `limit`.
pub async fn run_until<C: HttpClient>(
    engine: &SyncEngine<C>,
    limit: Duration,
    what: &str,
    done: impl Fn() -> bool + Send,
) {
    let shutdown = async move {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, engine.run(Duration::from_millis(10), shutdown))
        .await
        .expect(what)
        .unwrap();
}
