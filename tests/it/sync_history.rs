//! The sync over a scripted Withings history the simulator cannot serve yet: 1,000 groups in
//! pages of 17 that are not in modification order, late uploads, edits and deletions. The
//! sink must end holding exactly Withings' data, every value exact.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::sync::{
    Backfill, Batch, ChangeKind, Record, Sink, SinkFuture, SyncConfig, SyncEngine, SyncStream,
};
use tower_withings::{Endpoints, Secret, Token, UserId, clock::Clock, clock::ManualClock};

const PAGE: usize = 17;
const DAY: i64 = 86_400;

#[derive(Debug, Clone)]
struct Group {
    date: i64,
    modified: i64,
    value: i64,
}

/// Withings' getmeas as the facts sheet describes it: `lastupdate` on `modified`, windows on
/// `date`, never both; pages of 17 in an order unrelated to `modified`; `more` an integer;
/// `offset` sent back verbatim.
#[derive(Default)]
struct Withings {
    groups: Mutex<BTreeMap<i64, Group>>,
    calls: AtomicUsize,
}

impl Withings {
    fn answer(&self, form: &HashMap<String, String>) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let num = |k: &str| form.get(k).and_then(|v| v.parse::<i64>().ok());
        let (since, start, end) = (num("lastupdate"), num("startdate"), num("enddate"));
        assert!(
            !(since.is_some() && start.is_some()),
            "lastupdate mixed with a window"
        );
        let groups = self.groups.lock().unwrap();
        let mut rows: Vec<(i64, &Group)> = groups
            .iter()
            .filter(|(_, g)| since.is_none_or(|s| g.modified >= s))
            .filter(|(_, g)| start.is_none_or(|s| g.date >= s) && end.is_none_or(|e| g.date <= e))
            .map(|(id, g)| (*id, g))
            .collect();
        rows.sort_by_key(|(id, _)| (id * 7_919) % 10_007);
        let offset = num("offset").map_or(0, |o| usize::try_from(o).unwrap());
        let page: Vec<String> = rows
            .iter()
            .skip(offset)
            .take(PAGE)
            .map(|(id, g)| {
                format!(
                    r#"{{"grpid":{id},"attrib":0,"date":{},"created":{},"modified":{},"category":1,"deviceid":null,"measures":[{{"value":{},"type":1,"unit":-3,"algo":0,"fm":3}}]}}"#,
                    g.date, g.modified, g.modified, g.value
                )
            })
            .collect();
        let more = offset + PAGE < rows.len();
        format!(
            r#"{{"status":0,"body":{{"updatetime":0,"timezone":"Europe\/Paris","measuregrps":[{}],"more":{},"offset":{}}}}}"#,
            page.join(","),
            u8::from(more),
            offset + PAGE
        )
    }

    fn expected(&self) -> BTreeMap<String, String> {
        self.groups
            .lock()
            .unwrap()
            .iter()
            .map(|(id, g)| (format!("{USER}/measures/{id}"), exact(g.value)))
            .collect()
    }
}

fn exact(milli: i64) -> String {
    rust_decimal::Decimal::new(milli, 3).normalize().to_string()
}

const USER: UserId = UserId(1);

/// The app's table: key → value, deletes remove; a version lower than the one held is
/// recorded as a violation.
#[derive(Default)]
struct Table {
    rows: Mutex<BTreeMap<String, (i64, String)>>,
    deletes: AtomicUsize,
    violations: Mutex<Vec<String>>,
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
                        let Record::Measures(g) = record.as_ref() else {
                            panic!("{record:?}")
                        };
                        rows.insert(key, (c.version, g.measures[0].value.to_string()));
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

fn now(clock: &ManualClock) -> i64 {
    clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn a_thousand_groups_with_late_uploads_edits_and_deletions_end_exact() {
    let clock = ManualClock::new();
    let t0 = now(&clock);
    let withings = Arc::new(Withings::default());
    {
        let mut groups = withings.groups.lock().unwrap();
        for i in 0..1_000i64 {
            let date = t0 - 80 * DAY + i * (80 * DAY / 1_000);
            // Uploads arrive up to 10 days late; a few weeks late for every 97th.
            let delay = if i % 97 == 0 {
                30 * DAY
            } else {
                (i * 37 % 240) * 3_600
            };
            let modified = (date + delay).min(t0 - 60);
            groups.insert(
                10_000 + i,
                Group {
                    date,
                    modified,
                    value: 56_300 + i,
                },
            );
        }
    }
    let service = {
        let withings = withings.clone();
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let withings = withings.clone();
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let form: HashMap<String, String> =
                    form_urlencoded::parse(&body).into_owned().collect();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                    withings.answer(&form),
                ))))
            }
        })
    };
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let token = Token {
        user_id: USER,
        access_token: Secret::new("a"),
        refresh_token: Secret::new("r"),
        expires_at: clock.now() + Duration::from_secs(3_600),
        scope: "user.metrics".into(),
    };
    store.put(&token, clock.now()).await.unwrap();
    let table = Arc::new(Table::default());
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .backfill(Backfill::Days(90))
        .reconcile(Some(Duration::from_secs(100 * 86_400)))
        .batch_size(64);
    let engine = SyncEngine::with_clock(
        service,
        &Endpoints::withings(),
        store.clone(),
        table.clone(),
        config,
        Arc::new(clock.clone()),
    )
    .unwrap();

    assert!(engine.run_once().await.unwrap());
    let got: BTreeMap<String, String> = table
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got.len(), 1_000);
    assert_eq!(got, withings.expected(), "every group, every value exact");
    let state = store.sync_state().unwrap();
    let newest = withings
        .groups
        .lock()
        .unwrap()
        .values()
        .map(|g| g.modified)
        .max();
    assert_eq!(
        state.load(USER, SyncStream::Measures).await.unwrap().cursor,
        newest,
        "the cursor is the newest modified, read whole"
    );

    // An hour later: 50 edits, 20 late uploads dated 40 days back, 30 deletions; no
    // notification arrives.
    clock.advance(Duration::from_secs(3_600));
    let t1 = now(&clock);
    {
        let mut groups = withings.groups.lock().unwrap();
        for i in 0..50 {
            let g = groups.get_mut(&(10_000 + i * 19)).unwrap();
            g.value += 1_000;
            g.modified = t1 - i;
        }
        for i in 0..20 {
            groups.insert(
                20_000 + i,
                Group {
                    date: t0 - 40 * DAY + i,
                    modified: t1 - 100,
                    value: 70_005 + i,
                },
            );
        }
        for i in 0..30 {
            groups.remove(&(10_001 + i * 31));
        }
    }
    clock.advance(Duration::from_secs(25 * 3_600));
    withings.calls.store(0, Ordering::SeqCst);
    // The sweep reads `lastupdate` from the cursor minus the 10-minute re-read.
    let reread = newest.unwrap() - 600;
    let since = withings
        .groups
        .lock()
        .unwrap()
        .values()
        .filter(|g| g.modified >= reread)
        .count();
    while engine.step().await.unwrap() != tower_withings::sync::Step::Idle {}
    let got: BTreeMap<String, String> = table
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        got,
        withings.expected(),
        "edits, late uploads and deletions all arrived"
    );
    assert_eq!(table.deletes.load(Ordering::SeqCst), 30);
    // One sweep: its lastupdate read, then the reconcile pass re-listing the 990 groups.
    let pages = withings.calls.load(Ordering::SeqCst);
    assert_eq!(
        pages,
        since.div_ceil(PAGE) + 990usize.div_ceil(PAGE),
        "pages read"
    );
}

fn scripted(withings: Arc<Withings>) -> impl tower_withings::transport::HttpClient {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let withings = withings.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                withings.answer(&form),
            ))))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_store_with_edits_never_deliver_a_lower_version() {
    let dir = crate::store_support::TempDir::new("sync-edits");
    let path = dir.file("sync.sqlite3");
    let a: Arc<dyn TokenStore> = Arc::new(
        tower_withings::store::SqliteStore::open(&path)
            .await
            .unwrap(),
    );
    let b: Arc<dyn TokenStore> = Arc::new(
        tower_withings::store::SqliteStore::open(&path)
            .await
            .unwrap(),
    );
    let clock = ManualClock::new();
    let t0 = now(&clock);
    let withings = Arc::new(Withings::default());
    {
        let mut groups = withings.groups.lock().unwrap();
        for i in 0..200i64 {
            let date = t0 - 20 * DAY + i * 3_600;
            groups.insert(
                i,
                Group {
                    date,
                    modified: (date + 600).min(t0 - 60),
                    value: 50_000 + i,
                },
            );
        }
    }
    let token = Token {
        user_id: USER,
        access_token: Secret::new("a"),
        refresh_token: Secret::new("r"),
        expires_at: clock.now() + Duration::from_secs(3_600),
        scope: "user.metrics".into(),
    };
    a.put(&token, clock.now()).await.unwrap();
    let table = Arc::new(Table::default());
    let config = SyncConfig::default()
        .streams(&[SyncStream::Measures])
        .batch_size(7);
    let engine = |store: &Arc<dyn TokenStore>| {
        SyncEngine::with_clock(
            scripted(withings.clone()),
            &Endpoints::withings(),
            store.clone(),
            table.clone(),
            config.clone(),
            Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let (one, two) = (engine(&a), engine(&b));
    let state = a.sync_state().unwrap();
    let mut last_cursor = None;
    for round in 0..10i64 {
        {
            let mut groups = withings.groups.lock().unwrap();
            for j in 0..20i64 {
                let g = groups.get_mut(&((round * 37 + j * 11) % 200)).unwrap();
                g.value += 1;
                g.modified = t0 + round * 100 + j;
            }
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
    let got: BTreeMap<String, String> = table
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        got,
        withings.expected(),
        "every edit arrived, every value exact"
    );
}
