//! Per-request cost of `WithingsAuthLayer` with a valid token over a no-op inner service,
//! beside the bare service, tower-http's `AddAuthorizationLayer` (one header insert: the floor)
//! a straightforward `RwLock<Token>` layer, and `replay_floor`, the least any layer that can
//! replay must do (the header insert plus a boxed copy of the request). Two response shapes: an empty body, and a 1 KiB
//! Withings JSON body that the caller reads to the end.
//!
//! The machine these run on is shared, so after criterion's runs `withings` and
//! `add_authorization` are also timed interleaved, round by round; the median ratio is printed
//! and written to `<criterion dir>/hot_path/paired.json`. `benches/scripts/callgrind.sh hot_path`
//! counts instructions per request, which load does not move at all.
//!
//! `cargo bench --bench hot_path -- --warm-up-time 1`

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{Request, header};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::runtime::Runtime;
use tower::{BoxError, Layer, Service};
use tower_http::auth::AddAuthorizationLayer;
use tower_withings::store::MemoryStore;
use tower_withings::{Credentials, Token, UserId, WithingsAuth, budget::RateBudget};

const USER: UserId = UserId(46_865_875);

/// Baseline (c): the layer one writes first. A `RwLock<Token>`, read per request; the
/// header is formatted from the token each time. No refresh, no host check, no body check.
fn rwlock_auth<S>(token: Token, inner: S) -> LookupAuth<S, impl HeaderFor> {
    let token = Arc::new(RwLock::new(token));
    LookupAuth {
        header_for: move |_: &Request<Full<Bytes>>| {
            let token = token.read().expect("not poisoned");
            if token.expires_at <= SystemTime::now() {
                return Err("token expired");
            }
            Ok(bearer(token.access_token.expose()))
        },
        inner,
    }
}

/// The floor for "attach a bearer and be able to replay once": tower-http's header insert plus
/// what any replaying middleware must keep of each request (method, URI, version, headers,
/// extensions, a clone of the body), boxed so the future stays small, dropped with the
/// response. No host check, no user lookup, no expiry, no body status.
#[derive(Clone)]
struct ReplayFloor<S> {
    header: http::HeaderValue,
    inner: S,
}

type Kept<B> = Box<(
    http::Method,
    http::Uri,
    http::Version,
    http::HeaderMap,
    http::Extensions,
    B,
)>;

impl<S, B> Service<Request<B>> for ReplayFloor<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    B: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ReplayFloorFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let kept = Box::new((
            request.method().clone(),
            request.uri().clone(),
            request.version(),
            request.headers().clone(),
            request.extensions().clone(),
            request.body().clone(),
        ));
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, self.header.clone());
        ReplayFloorFuture {
            fut: self.inner.call(request),
            kept: Some(kept),
        }
    }
}

pin_project! {
    struct ReplayFloorFuture<F, B> {
        #[pin]
        fut: F,
        kept: Option<Kept<B>>,
    }
}

impl<F, T, E, B> Future for ReplayFloorFuture<F, B>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.fut.poll(cx));
        drop(this.kept.take());
        Poll::Ready(output.map_err(Into::into))
    }
}

fn bench_stack<S: Stack<B> + Clone, B: ReadBody>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    shape: &str,
    name: &str,
    mut service: S,
    expected_len: usize,
) {
    if std::env::var_os("HOT_PATH_CALLGRIND").is_some() {
        // Counting instructions: no criterion run (under valgrind it would be slow, and it
        // would overwrite criterion's saved timings with valgrind's).
        callgrind_only(rt, &format!("{shape}/{name}"), service, expected_len);
        return;
    }
    // The stack works and answers the whole body before it is timed.
    let len = rt.block_on(finish(call_now(&mut service, getmeas(USER))));
    assert_eq!(len, expected_len, "{name}");
    group.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            || getmeas(USER),
            |request| finish(call_now(&mut service, request)),
            BatchSize::NumIterations(256),
        )
    });
}

/// Sends `requests` through `service` one after the other. `benches/scripts/callgrind.sh hot_path`
/// counts the instructions executed inside this function (`--toggle-collect`), which on a
/// shared machine is a steadier measure than wall time.
#[inline(never)]
fn callgrind_loop<S: Stack<B>, B: ReadBody>(
    rt: &Runtime,
    service: &mut S,
    requests: Vec<Req>,
) -> usize {
    // Its own frame for callgrind to find; the loop is the benches' one.
    run_all(rt, service, requests)
}

/// `HOT_PATH_CALLGRIND=<shape>/<stack>/<n>`: run `n` requests through one stack in
/// `callgrind_loop`, then exit (no criterion).
fn callgrind_only<S: Stack<B>, B: ReadBody>(
    rt: &Runtime,
    name: &str,
    mut service: S,
    expected_len: usize,
) {
    let Ok(wanted) = std::env::var("HOT_PATH_CALLGRIND") else {
        return;
    };
    let Some((stack, n)) = wanted.rsplit_once('/') else {
        panic!("HOT_PATH_CALLGRIND=<shape>/<stack>/<n>");
    };
    if stack != name {
        return;
    }
    let n: usize = n.parse().expect("a request count");
    // Warm the stack (first-use allocations) outside the counted loop.
    let warm = (0..16).map(|_| getmeas(USER)).collect();
    callgrind_loop(rt, &mut service, warm);
    let requests = (0..n).map(|_| getmeas(USER)).collect();
    let total = callgrind_loop(rt, &mut service, requests);
    assert_eq!(total, n * expected_len, "{name}");
    println!("CALLGRIND {name} {n}");
    std::process::exit(0);
}

/// `b`'s time over `a`'s, the two timed interleaved round by round: the `ratio_row` for
/// `paired.json`.
fn paired_row<A: Stack<BA>, BA: ReadBody, W: Stack<BW>, BW: ReadBody>(
    rt: &Runtime,
    what: &str,
    shape: &str,
    mut a: A,
    mut b: W,
) -> String {
    let ratios = interleaved(rt, &mut a, &mut b, PAIRED_ROUNDS, |_| {
        (0..PAIRED_REQUESTS).map(|_| getmeas(USER)).collect()
    });
    ratio_row(what, shape, &ratios)
}

/// Rounds of the interleaved comparison, and requests per stack per round.
const PAIRED_ROUNDS: usize = 40;
const PAIRED_REQUESTS: usize = 4096;

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let valid = token(USER, SystemTime::now(), Duration::from_secs(10_800));
    let endpoint = FakeTokenEndpoint::new(Duration::ZERO, USER);
    // `withings`: the budget off, as the baselines have none. `withings_budget`: the
    // in-process budget on (a limit never reached), to price taking a slot per request.
    let handle = |budget: RateBudget| {
        let auth = WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
            .store(MemoryStore::new())
            .rate_budget(budget)
            .build(endpoint.client());
        rt.block_on(auth.import(valid.clone())).expect("import");
        auth
    };
    let auth = handle(RateBudget::unlimited());
    let budgeted = handle(RateBudget::new(u32::MAX / 2, Duration::from_secs(60)));
    let access = valid.access_token.expose().to_owned();
    let mut paired_rows = Vec::new();

    for (shape, inner) in [("empty", Noop::empty()), ("json_1k", Noop::json())] {
        let len = inner.body.len();
        let mut group = c.benchmark_group(format!("hot_path/{shape}"));
        bench_stack(&mut group, &rt, shape, "bare", inner.clone(), len);
        bench_stack(
            &mut group,
            &rt,
            shape,
            "add_authorization",
            AddAuthorizationLayer::bearer(&access)
                .as_sensitive(true)
                .layer(inner.clone()),
            len,
        );
        bench_stack(
            &mut group,
            &rt,
            shape,
            "rwlock_token",
            rwlock_auth(valid.clone(), inner.clone()),
            len,
        );
        bench_stack(
            &mut group,
            &rt,
            shape,
            "replay_floor",
            ReplayFloor {
                header: bearer(&access),
                inner: inner.clone(),
            },
            len,
        );
        bench_stack(
            &mut group,
            &rt,
            shape,
            "withings",
            auth.layer().layer(inner.clone()),
            len,
        );
        bench_stack(
            &mut group,
            &rt,
            shape,
            "withings_budget",
            budgeted.layer().layer(inner.clone()),
            len,
        );
        group.finish();

        paired_rows.push(paired_row(
            &rt,
            "hot_path withings_budget/withings time,",
            shape,
            auth.layer().layer(inner.clone()),
            budgeted.layer().layer(inner.clone()),
        ));
        let floor = AddAuthorizationLayer::bearer(&access)
            .as_sensitive(true)
            .layer(inner.clone());
        paired_rows.push(paired_row(
            &rt,
            "hot_path withings/add_authorization time,",
            shape,
            floor,
            auth.layer().layer(inner),
        ));
    }
    write_paired("hot_path", &paired_rows, &auth, &endpoint);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = hot_path
}
criterion_main!(benches);
