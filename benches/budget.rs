//! `budget`: how close the request budget runs to Withings' limit, and what a slot costs.
//!
//! 1. **Throughput against the limit.** The simulator answers 601 past `N` requests in any
//!    `WINDOW` (120 per minute at Withings; here `N` per 10 s so a run takes seconds); 1, 4 and
//!    16 senders send as fast as they can for `WINDOWS` windows, in one process (one handle,
//!    memory store) and across OS processes (up to 4, each its own handle on one SQLite file).
//!    Reported: requests per window as a share of `N` (from the simulator's own arrival log:
//!    the mean count in a window, over every window position within the run), and the 601s
//!    (must be zero). A slot counts for a hold (a fortieth of the window,
//!    at least 250 ms) before its window starts, so the ceiling is `W / (W + hold)`: 97.6 %.
//! 2. **What a slot costs.** Per backend, one reservation round trip to its ledger (µs), and
//!    per request through the layer to a no-op service with the budget on that store, minus
//!    the same with the budget off (µs; a steady sender takes slots in blocks, so this is well
//!    under one round trip). The in-process cost per request is in `hot_path`
//!    (`withings_budget` beside `withings`).
//!
//! `cargo bench --bench budget --all-features` (needs the PostgreSQL and Redis servers of this
//! machine kind). Results in `target/criterion/budget/`.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_withings::store::{BudgetLedger, MemoryStore, SlotAsk, TokenStore};
use tower_withings::{
    Credentials, Endpoints, Token, UserId, WithingsAuth, budget::RateBudget, store::SqliteStore,
    transport,
};
use withings_sim::{AppRateLimit, Simulator};

use common::{Noop, getmeas, token, write_result};

const N: u32 = 40;
const WINDOW: Duration = Duration::from_secs(10);
const WINDOWS: u32 = 4;
const CLIENT_ID: &str = "bench-budget-client";
const CLIENT_SECRET: &str = "bench-budget-secret";
const USERS: u64 = 8;

const ENV_CHILD: &str = "TOWER_WITHINGS_BENCH_BUDGET_CHILD";
const ENV_API: &str = "TOWER_WITHINGS_BENCH_BUDGET_API";
const ENV_SENDERS: &str = "TOWER_WITHINGS_BENCH_BUDGET_SENDERS";
const ENV_UNTIL_MS: &str = "TOWER_WITHINGS_BENCH_BUDGET_UNTIL_MS";

fn handle(api: &str, store: Arc<dyn TokenStore>, budget: RateBudget) -> WithingsAuth {
    WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(api, api).expect("loopback"))
        .shared_store(store)
        .rate_budget(budget)
        .build(transport::plain_http_client())
}

fn budget() -> RateBudget {
    RateBudget::new(N, WINDOW).deadline(WINDOW * 3)
}

/// `senders` tasks send data calls through one handle until `until` (unix ms); returns
/// (answered with status 0, budget exhausted, 601).
async fn send_until(auth: &WithingsAuth, api: &str, senders: usize, until: u64) -> [u64; 3] {
    let service = auth.layer().layer(transport::plain_http_client());
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..senders {
        let (service, api) = (service.clone(), api.to_owned());
        tasks.spawn(async move {
            let mut counts = [0u64; 3];
            let user = UserId(1 + sender as u64 % USERS);
            while unix_ms() < until {
                let mut request = Request::post(format!("{api}/measure"))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from_static(b"action=getmeas")))
                    .expect("request");
                request.extensions_mut().insert(user);
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let body = response.into_body().collect().await.expect("body");
                        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                        if text.starts_with("{\"status\":601") {
                            counts[2] += 1;
                        } else {
                            counts[0] += 1;
                        }
                    }
                    Err(_) => counts[1] += 1,
                }
            }
            counts
        });
    }
    let mut all = [0u64; 3];
    while let Some(counts) = tasks.join_next().await {
        for (total, n) in all.iter_mut().zip(counts.expect("a sender")) {
            *total += n;
        }
    }
    all
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// The child role: its own handle on the SQLite file, its senders, one line of counts.
fn child(path: String) {
    let api = std::env::var(ENV_API).expect("api");
    let senders: usize = std::env::var(ENV_SENDERS)
        .expect("senders")
        .parse()
        .expect("n");
    let until: u64 = std::env::var(ENV_UNTIL_MS)
        .expect("until")
        .parse()
        .expect("ms");
    common::runtime().block_on(async {
        let store = Arc::new(SqliteStore::open(&path).await.expect("store"));
        let auth = handle(&api, store, budget());
        let [ok, exhausted, limited] = send_until(&auth, &api, senders, until).await;
        println!("counts {ok} {exhausted} {limited}");
    });
}

fn grants(sim: &Simulator) -> Vec<Token> {
    (1..=USERS)
        .map(|id| common::granted(sim, CLIENT_ID, UserId(id)))
        .collect()
}

/// One throughput case; returns its JSON row.
fn throughput(rt: &tokio::runtime::Runtime, senders: usize, processes: usize) -> String {
    let sim = rt.block_on(Simulator::start()).expect("simulator");
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &["https://app.example.com/cb"]);
    sim.set_app_rate_limit(Some(AppRateLimit {
        limit: N,
        window: WINDOW,
    }));
    let api = sim.api_base();
    let until = unix_ms() + u64::from(WINDOWS) * WINDOW.as_millis() as u64;
    let counts = if processes == 0 {
        rt.block_on(async {
            let auth = handle(&api, Arc::new(MemoryStore::new()), budget());
            for t in grants(&sim) {
                auth.import(t).await.expect("import");
            }
            send_until(&auth, &api, senders, until).await
        })
    } else {
        let path = std::env::temp_dir().join(format!(
            "tower-withings-bench-budget-{}-{senders}.sqlite3",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        rt.block_on(async {
            let store = Arc::new(SqliteStore::open(&path).await.expect("store"));
            let auth = handle(&api, store, RateBudget::unlimited());
            for t in grants(&sim) {
                auth.import(t).await.expect("import");
            }
        });
        let children: Vec<_> = (0..processes)
            .map(|i| {
                let share = senders / processes + usize::from(i < senders % processes);
                Command::new(std::env::current_exe().expect("bench binary"))
                    .env(ENV_CHILD, &path)
                    .env(ENV_API, &api)
                    .env(ENV_SENDERS, share.to_string())
                    .env(ENV_UNTIL_MS, until.to_string())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("a child")
            })
            .collect();
        let mut all = [0u64; 3];
        for child in children {
            let out = child.wait_with_output().expect("child output");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text
                .lines()
                .find(|l| l.starts_with("counts "))
                .expect("counts");
            for (total, n) in all.iter_mut().zip(line.split_whitespace().skip(1)) {
                *total += n.parse::<u64>().expect("count");
            }
        }
        let _ = std::fs::remove_file(&path);
        all
    };
    let steady = sim.mean_window(WINDOW, WINDOW * WINDOWS);
    let share = steady / f64::from(N);
    let served_601 = sim.counters().served_601;
    let place = if processes == 0 {
        "in_process".to_owned()
    } else {
        format!("{processes}_processes_sqlite")
    };
    println!(
        "budget/throughput {place:>20} senders {senders:>2}: {steady:6.1} per window of N={N} ({:5.1} %), answered {}, exhausted {}, 601s {served_601}, busiest window {}",
        share * 100.0,
        counts[0],
        counts[1],
        sim.busiest_window(WINDOW)
    );
    format!(
        "  {{\"place\": \"{place}\", \"senders\": {senders}, \"per_window\": {steady:.2}, \"limit\": {N}, \"share\": {share:.4}, \"answered\": {}, \"exhausted\": {}, \"served_601\": {served_601}, \"busiest_window\": {}}}",
        counts[0],
        counts[1],
        sim.busiest_window(WINDOW)
    )
}

/// What a slot costs per backend: one reservation round trip, and per request through the
/// layer (budget on minus budget off).
fn slot_costs(rt: &tokio::runtime::Runtime) -> Vec<String> {
    let run = std::process::id();
    let dir = std::env::temp_dir().join(format!("tower-withings-bench-budget-{run}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let stores: Vec<(&str, Arc<dyn TokenStore>)> = rt.block_on(async {
        let mut stores: Vec<(&str, Arc<dyn TokenStore>)> =
            vec![("memory", Arc::new(MemoryStore::new()))];
        stores.extend(common::durable_stores(&dir, &format!("bench_budget_{run}")).await);
        stores
    });
    const RESERVES: u32 = 2_000;
    const REQUESTS: u32 = 20_000;
    let mut rows = Vec::new();
    for (name, store) in stores {
        let ledger: &dyn BudgetLedger = store.budget().expect("a ledger");
        let app = format!("bench-{run}-{name}");
        let ask = SlotAsk {
            app: &app,
            want: 1,
            limit: u32::MAX / 2,
            window: Duration::from_secs(60),
            hold: Duration::from_millis(250),
            holder: "bench",
            waiting: &[],
        };
        let started = Instant::now();
        rt.block_on(async {
            for _ in 0..RESERVES {
                ledger.reserve(&ask).await.expect("reserve");
            }
        });
        let reserve_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(RESERVES);
        let per_request = |budget: RateBudget| {
            let auth = WithingsAuth::builder(Credentials::new(
                format!("bench-{run}-{name}-{}", budget.limit().is_some()),
                CLIENT_SECRET,
            ))
            .shared_store(Arc::clone(&store))
            .rate_budget(budget)
            .build(transport::plain_http_client());
            rt.block_on(async {
                auth.import(token(
                    UserId(1),
                    SystemTime::now(),
                    Duration::from_secs(10_800),
                ))
                .await
                .expect("import");
                let service = auth.layer().layer(Noop::empty());
                let started = Instant::now();
                for _ in 0..REQUESTS {
                    let response = service
                        .clone()
                        .oneshot(getmeas(UserId(1)))
                        .await
                        .expect("answer");
                    drop(response);
                }
                started.elapsed().as_secs_f64() * 1e6 / f64::from(REQUESTS)
            })
        };
        let off = per_request(RateBudget::unlimited());
        let on = per_request(RateBudget::new(u32::MAX / 2, Duration::from_secs(60)));
        println!(
            "budget/slot_cost {name:>8}: reserve round trip {reserve_us:8.2} µs; per request through the layer {:7.3} µs (budget off {off:.3} µs, on {on:.3} µs)",
            on - off
        );
        rows.push(format!(
            "  {{\"backend\": \"{name}\", \"reserve_us\": {reserve_us:.3}, \"per_request_us\": {:.4}, \"off_us\": {off:.4}, \"on_us\": {on:.4}}}",
            on - off
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

fn main() {
    if let Ok(path) = std::env::var(ENV_CHILD) {
        return child(path);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick
    // check that the bench runs, not a measurement.
    if !std::env::args().any(|a| a == "--bench") {
        println!("budget: run with `cargo bench --bench budget` to measure");
        return;
    }
    let rt = common::runtime();
    let costs = slot_costs(&rt);
    write_result(
        "budget",
        "slot_cost.json",
        &format!("[\n{}\n]\n", costs.join(",\n")),
    );
    let mut rows = Vec::new();
    for senders in [1, 4, 16] {
        rows.push(throughput(&rt, senders, 0));
    }
    for senders in [1, 4, 16] {
        rows.push(throughput(&rt, senders, senders.min(4)));
    }
    write_result(
        "budget",
        "throughput.json",
        &format!("[\n{}\n]\n", rows.join(",\n")),
    );
}
