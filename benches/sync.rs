//! `sync`: the sync's two latencies (issue 22), with percentiles computed here from every
//! sample (criterion reports means):
//!
//! 1. `answered`: a Withings notification POSTed over loopback to a `NotifyReceiver` built
//!    with `.intake(..)`, timed from the request to the end of the answer, so the durable
//!    inbox write is inside; per store (memory, SQLite, PostgreSQL, Redis). Goal: p99 ≤ 50 ms.
//! 2. `to_sink`: on the simulator under Withings' real limit (120 requests per 60 s, on the
//!    simulator and in the budget), 100 users backfilling a year keep every spare slot busy
//!    while one linked user weighs in: timed from the weighing reaching the simulator
//!    (`add_measure`) to the app's sink holding it, through the receiver, the inbox, the
//!    engine's notification lane and the budget. Goal: p95 ≤ 10 s. About 3 minutes: the first
//!    minute is the start-up burst (the backfill's 108 slots at once), left out; then the
//!    weighings go through the budget's headroom (see BENCHMARKS.md, section 8).
//!
//! `cargo bench --all-features --bench sync` (both), `-- answered` or `-- to_sink` (one). Needs
//! the PostgreSQL and Redis servers of this machine kind.

mod common;
#[path = "../tests/support/notify_server.rs"]
mod notify_server;
use notify_server::serve_receiver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::ServiceBuilder;
use tower_withings::notify::NotifyReceiver;
use tower_withings::store::{MemoryStore, TokenStore};
use tower_withings::sync::{
    Backfill, Batch, ChangeKind, Intake, Record, Sink, SinkFuture, SyncConfig, SyncEngine,
    SyncStream,
};
use tower_withings::{Credentials, UserId, WithingsAuth, transport};
use withings_sim::{AppRateLimit, HistoryConfig, SimConfig, Simulator};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Timed notifications per store (after [`WARM_UP`] untimed ones).
const ANSWERED: usize = 2_000;
const WARM_UP: usize = 200;
/// Weighings timed on their way to the sink.
const TO_SINK: usize = 40;
const BACKFILLERS: u64 = 100;

/// Whether the command line asks for `part` (no filter: every part).
fn wants(part: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str()))
}

/// The nearest-rank percentile `p` of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `n, p50, p95, p99, max` (ms) as a line and as JSON.
fn summary(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let (p50, p95, p99) = (
        percentile(&samples, 50.0),
        percentile(&samples, 95.0),
        percentile(&samples, 99.0),
    );
    let max = *samples.last().expect("samples");
    println!(
        "{name}: n = {}, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max)
    );
    format!(
        r#"{{"name":"{name}","n":{},"p50_ms":{:.3},"p95_ms":{:.3},"p99_ms":{:.3},"max_ms":{:.3}}}"#,
        samples.len(),
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max)
    )
}

/// A receiver writing to `intake`, served; its URL. The app's queue is drained.
async fn receiver(intake: Intake) -> String {
    let (receiver, mut queue) = NotifyReceiver::builder(NotifyReceiver::random_secret())
        .intake(intake)
        .build()
        .unwrap();
    tokio::spawn(async move { while queue.recv().await.is_some() {} });
    serve_receiver(receiver).await.1
}

/// POSTs notification `form` to `url`; its time to the end of the answer.
async fn notify(client: &Client, url: &str, form: String) -> Duration {
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let started = Instant::now();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "the receiver took it");
    took
}

/// Notification `i`: one of 1,000 users (so the inbox holds up to 1,000 entries and later
/// ones coalesce, as in steady state), each a distinct weighing (no retry dedupe).
fn form(i: usize) -> String {
    let (user, date) = (10_000 + i % 1_000, 1_700_000_000 + i);
    format!(
        "userid={user}&appli=1&startdate={date}&enddate={}",
        date + 1
    )
}

fn answered(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let run = std::process::id();
    let dir = std::env::temp_dir().join(format!("tower-withings-bench-sync-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tag = format!("bench_sync_{run}");
    let mut stores: Vec<(&str, Arc<dyn TokenStore>)> =
        vec![("memory", Arc::new(MemoryStore::new()))];
    stores.extend(runtime.block_on(common::durable_stores(&dir, &tag)));
    let client = transport::plain_http_client();
    let mut lines = Vec::new();
    let mut group = c.benchmark_group("sync/answered");
    for (name, store) in &stores {
        let url = runtime.block_on(receiver(Intake::new(store.clone()).unwrap()));
        let times = runtime.block_on(async {
            let mut times = Vec::with_capacity(ANSWERED);
            for i in 0..WARM_UP + ANSWERED {
                let took = notify(&client, &url, form(i)).await;
                if i >= WARM_UP {
                    times.push(took);
                }
            }
            times
        });
        lines.push(summary(&format!("answered/{name}"), times));
        let next = std::sync::atomic::AtomicUsize::new(WARM_UP + ANSWERED);
        group.bench_function(*name, |b| {
            b.to_async(runtime).iter(|| {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                notify(&client, &url, form(i))
            })
        });
    }
    group.finish();
    common::write_result("sync", "answered.json", &format!("[{}]", lines.join(",")));
    drop(stores);
    runtime.block_on(common::drop_durable(&tag));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The app's table, as far as this bench looks: when each weighing of `user` arrived.
struct Arrivals {
    user: UserId,
    seen: Mutex<HashMap<i64, Instant>>,
    arrived: tokio::sync::Notify,
}

impl Sink for Arrivals {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            if batch.user == self.user {
                let now = Instant::now();
                let mut seen = self.seen.lock().unwrap();
                for change in &batch.changes {
                    if let ChangeKind::Upsert(record) = &change.kind
                        && let Record::Measures(g) = record.as_ref()
                    {
                        for m in g.measures.iter().filter(|m| m.measure_type.code() == 1) {
                            seen.entry(m.value.value).or_insert(now);
                        }
                    }
                }
                self.arrived.notify_waiters();
            }
            Ok(())
        })
    }
}

const CLIENT_ID: &str = "bench-sync";
const CLIENT_SECRET: &str = "bench-sync-secret-0123";

fn to_sink(runtime: &tokio::runtime::Runtime) {
    runtime.block_on(async {
        let limit = AppRateLimit {
            limit: 120,
            window: Duration::from_secs(60),
        };
        let sim = Simulator::start_with(SimConfig {
            history: HistoryConfig {
                days: 365,
                groups_per_day: 1,
                ..HistoryConfig::default()
            },
            app_rate_limit: Some(limit),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        sim.register_client(CLIENT_ID, CLIENT_SECRET, &[]);
        let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
        // Withings' standard plan: 120 requests per minute, the budget's default.
        let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .endpoints(sim.endpoints())
            .store(store.clone())
            .build(transport::plain_http_client());
        let stack = ServiceBuilder::new()
            .layer(auth.layer())
            .map_response(|r: http::Response<hyper::body::Incoming>| r.map(|b| b.boxed()))
            .service(transport::plain_http_client());
        let user = UserId(77);
        let sink = Arc::new(Arrivals {
            user,
            seen: Mutex::default(),
            arrived: tokio::sync::Notify::new(),
        });
        let config = SyncConfig::default()
            .streams(&[SyncStream::Measures])
            .backfill(Backfill::Days(365));
        let engine = |sink: Arc<Arrivals>| {
            SyncEngine::new(
                stack.clone(),
                &sim.endpoints(),
                store.clone(),
                sink,
                config.clone(),
            )
            .unwrap()
        };
        // The weighing user is linked and caught up before the others arrive.
        auth.import(common::granted(&sim, CLIENT_ID, user)).await.unwrap();
        assert!(engine(sink.clone()).run_once().await.unwrap());
        for i in 0..BACKFILLERS {
            auth.import(common::granted(&sim, CLIENT_ID, UserId(1_000 + i))).await.unwrap();
        }
        let engine = engine(sink.clone());
        let url = receiver(engine.intake()).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn({
            let engine = engine.clone();
            async move {
                engine
                    .run(Duration::from_millis(50), async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        // The start-up burst: the window's 120 slots go at once, then none until it slides.
        tokio::time::sleep(limit.window + Duration::from_secs(5)).await;
        let client = transport::plain_http_client();
        let (calls_before, started) = (sim.counters().data_calls, Instant::now());
        let mut times = Vec::with_capacity(TO_SINK);
        for k in 0..TO_SINK {
            // Over a second apart: two weighings in one second would be one notification form,
            // which the receiver takes for Withings' retry of the first.
            tokio::time::sleep(Duration::from_millis(1_100 + 97 * (k as u64 % 7))).await;
            let value = 80_000 + i64::try_from(k).unwrap();
            let weighed = Instant::now();
            let date = sim.add_measure(user, 1, value, -3);
            let form = format!("userid={user}&appli=1&startdate={date}&enddate={}", date + 1);
            notify(&client, &url, form).await;
            let arrived = tokio::time::timeout(Duration::from_secs(120), async {
                loop {
                    let wait = sink.arrived.notified();
                    if let Some(at) = sink.seen.lock().unwrap().get(&value) {
                        return *at;
                    }
                    wait.await;
                }
            })
            .await
            .expect("the weighing reaches the sink within 2 minutes");
            let took = arrived - weighed;
            println!(
                "to_sink sample {k}: {:.2} s (data calls so far {})",
                took.as_secs_f64(),
                sim.counters().data_calls
            );
            times.push(took);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let calls = sim.counters().data_calls - calls_before;
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        let rate = calls as f64 / elapsed;
        let ceiling = f64::from(limit.limit) / limit.window.as_secs_f64();
        println!(
            "to_sink: budget used while measured: {calls} data calls in {elapsed:.0} s = {rate:.2}/s of {ceiling:.2}/s; 601s served: {}",
            sim.counters().served_601
        );
        let line = summary("to_sink", times);
        common::write_result(
            "sync",
            "to_sink.json",
            &format!(
                r#"{{"latency":{line},"data_calls_per_s":{rate:.3},"limit_per_s":{ceiling:.3},"served_601":{}}}"#,
                sim.counters().served_601
            ),
        );
    });
}

fn sync(c: &mut Criterion) {
    let runtime = common::runtime();
    if wants("answered") {
        answered(c, &runtime);
    }
    if wants("to_sink") {
        to_sink(&runtime);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = sync
}
criterion_main!(benches);
