//! N concurrent requests (N = 1, 100, 1 000, 10 000) for one user whose token has just expired,
//! against an in-process token endpoint that answers after a fixed 20 ms. Reports the time until
//! all N have their answers, and checks the number of token-endpoint calls.
//!
//! Beside `WithingsAuthLayer` (`withings`):
//! * `serial`: a layer that takes an async mutex around the expiry check and the refresh for
//!   every request, so requests pass one at a time (one refresh, but serialised);
//! * `uncoordinated`: a layer in which every request that sees the token expired refreshes it;
//! * `withings_valid`: the same N requests through `WithingsAuthLayer` with a valid token (the
//!   reference for the goal: `withings` within 1.2 x (20 ms + `withings_valid`));
//! * `bare`: the same N requests straight to the no-op service (what spawning and joining
//!   N tasks costs on this machine).
//!
//! Token-endpoint call counts are printed and written to
//! `<criterion dir>/contention/calls.json` for `BENCHMARKS.md` and the plot.
//!
//! `cargo bench --bench contention -- --warm-up-time 1`

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_withings::store::MemoryStore;
use tower_withings::{Credentials, UserId, WithingsAuth, clock::ManualClock};

const USER: UserId = UserId(46_865_875);
const LATENCY: Duration = Duration::from_millis(20);
const NS: [usize; 4] = [1, 100, 1_000, 10_000];
const TTL: Duration = Duration::from_secs(10_800);

/// What the hand-written layers hold.
struct Held {
    header: HeaderValue,
    expires_at: SystemTime,
}

impl Held {
    fn expired() -> Self {
        Held {
            header: bearer(&hex_token('a', USER.0)),
            expires_at: SystemTime::now() - Duration::from_secs(1),
        }
    }

    fn usable(&self) -> Option<HeaderValue> {
        (SystemTime::now() < self.expires_at).then(|| self.header.clone())
    }

    async fn refreshed(endpoint: &FakeTokenEndpoint) -> Self {
        let json = endpoint.grant().await;
        Held {
            header: bearer(&access_token_of(&json)),
            expires_at: SystemTime::now() + TTL,
        }
    }
}

/// How a hand-written baseline layer keeps the token: it gives each request a usable header,
/// refreshing through `endpoint` when it finds the token expired.
trait Holder: Send + Sync + 'static {
    fn header(&self, endpoint: &FakeTokenEndpoint) -> impl Future<Output = HeaderValue> + Send;
}

/// Baseline (a): every request takes an async mutex; whoever finds the token expired refreshes
/// while holding it. One refresh, but every request passes through the lock one at a time.
impl Holder for tokio::sync::Mutex<Held> {
    async fn header(&self, endpoint: &FakeTokenEndpoint) -> HeaderValue {
        let mut held = self.lock().await;
        match held.usable() {
            Some(header) => header,
            None => {
                *held = Held::refreshed(endpoint).await;
                held.header.clone()
            }
        }
    }
}

/// Baseline (b): no coordination; every request that sees expiry refreshes.
impl Holder for RwLock<Held> {
    async fn header(&self, endpoint: &FakeTokenEndpoint) -> HeaderValue {
        let usable = self.read().expect("not poisoned").usable();
        match usable {
            Some(header) => header,
            None => {
                let fresh = Held::refreshed(endpoint).await;
                let header = fresh.header.clone();
                *self.write().expect("not poisoned") = fresh;
                header
            }
        }
    }
}

/// A hand-written layer over `inner`: each request waits for `held`'s header, then goes on.
fn baseline(
    held: impl Holder,
    endpoint: FakeTokenEndpoint,
    inner: Noop,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    let held = Arc::new(held);
    tower::service_fn(move |mut request: Request<Full<Bytes>>| {
        let (held, endpoint, inner) = (held.clone(), endpoint.clone(), inner.clone());
        async move {
            let header = held.header(&endpoint).await;
            request.headers_mut().insert(header::AUTHORIZATION, header);
            inner.oneshot(request).await.map_err(BoxError::from)
        }
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Withings,
    WithingsValid,
    Serial,
    Uncoordinated,
    Bare,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::Withings,
        Strategy::Serial,
        Strategy::Uncoordinated,
        Strategy::WithingsValid,
        Strategy::Bare,
    ];

    fn name(self) -> &'static str {
        match self {
            Strategy::Withings => "withings",
            Strategy::WithingsValid => "withings_valid",
            Strategy::Serial => "serial",
            Strategy::Uncoordinated => "uncoordinated",
            Strategy::Bare => "bare",
        }
    }

    /// One round: a fresh expired (or valid) token, then `n` requests timed until the last
    /// answer. Returns the time and the number of token-endpoint calls.
    async fn round(self, n: usize) -> (Duration, usize) {
        let endpoint = FakeTokenEndpoint::new(LATENCY, USER);
        let inner = Noop::empty();
        let start;
        match self {
            Strategy::Withings | Strategy::WithingsValid => {
                let clock = ManualClock::new();
                let auth = WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
                    .clock(clock.clone())
                    .store(MemoryStore::new())
                    .rate_budget(tower_withings::budget::RateBudget::unlimited())
                    .build(endpoint.client());
                let now = tower_withings::clock::Clock::now(&clock);
                auth.import(token(USER, now, TTL)).await.expect("import");
                if self == Strategy::Withings {
                    clock.advance(TTL + Duration::from_secs(1)); // just expired
                }
                let service = auth.layer().layer(inner);
                start = Instant::now();
                concurrently(&service, n, || getmeas(USER)).await;
            }
            Strategy::Serial => {
                let held = tokio::sync::Mutex::new(Held::expired());
                let service = baseline(held, endpoint.clone(), inner);
                start = Instant::now();
                concurrently(&service, n, || getmeas(USER)).await;
            }
            Strategy::Bare => {
                start = Instant::now();
                concurrently(&inner, n, || getmeas(USER)).await;
            }
            Strategy::Uncoordinated => {
                let held = RwLock::new(Held::expired());
                let service = baseline(held, endpoint.clone(), inner);
                start = Instant::now();
                concurrently(&service, n, || getmeas(USER)).await;
            }
        }
        (start.elapsed(), endpoint.calls())
    }
}

/// Token-endpoint calls seen per benchmark id: (fewest, most) over all rounds.
static CALLS: Mutex<BTreeMap<String, (usize, usize)>> = Mutex::new(BTreeMap::new());

fn record(id: &str, calls: usize) {
    let mut all = CALLS.lock().expect("not poisoned");
    let entry = all.entry(id.to_owned()).or_insert((calls, calls));
    entry.0 = entry.0.min(calls);
    entry.1 = entry.1.max(calls);
}

fn write_calls() {
    let all = CALLS.lock().expect("not poisoned");
    if all.is_empty() {
        return;
    }
    let mut json = String::from("{\n");
    for (i, (id, (min, max))) in all.iter().enumerate() {
        let comma = if i + 1 < all.len() { "," } else { "" };
        json.push_str(&format!(
            "  \"{id}\": {{\"min\": {min}, \"max\": {max}}}{comma}\n"
        ));
        println!("token-endpoint calls {id}: min {min}, max {max}");
    }
    json.push_str("}\n");
    let dir = criterion_dir().join("contention");
    std::fs::create_dir_all(&dir).expect("criterion dir");
    // Merge with an earlier run's counts (a filtered run only covers some ids).
    let path = dir.join("calls.json");
    let mut merged: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let fresh: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&json).expect("valid JSON");
    merged.extend(fresh);
    let text = serde_json::to_string_pretty(&merged).expect("JSON");
    std::fs::write(&path, text + "\n").expect("write calls.json");
}

fn contention(c: &mut Criterion) {
    let rt = common::runtime();
    let mut group = c.benchmark_group("contention");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(3));
    for strategy in Strategy::ALL {
        for n in NS {
            let id = format!("{}/{n}", strategy.name());
            group.bench_function(BenchmarkId::new(strategy.name(), n), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let id = id.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let (elapsed, calls) = strategy.round(n).await;
                            total += elapsed;
                            record(&id, calls);
                            match strategy {
                                Strategy::Withings | Strategy::Serial => {
                                    assert_eq!(calls, 1, "{id}: one refresh")
                                }
                                Strategy::WithingsValid | Strategy::Bare => {
                                    assert_eq!(calls, 0, "{id}")
                                }
                                Strategy::Uncoordinated => {}
                            }
                        }
                        total
                    }
                })
            });
        }
    }
    group.finish();
    write_calls();
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = contention
}
criterion_main!(benches);
