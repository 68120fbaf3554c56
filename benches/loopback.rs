//! Requests per second through hyper-util's client plus `WithingsAuthLayer` against a local
//! hyper server (127.0.0.1) answering a 1 KiB Withings body, beside the same stack with
//! tower-http's `AddAuthorizationLayer` and the bare client. Each iteration sends a batch of
//! requests (1 at a time, or 32 concurrent) and reads every answer to the end.
//!
//! A shared 2-core machine drifts by more than the 3 % the goal allows, so after criterion's
//! runs the two stacks are also compared interleaved, round by round; the median ratio is
//! printed and written to `<criterion dir>/loopback/paired.json`.
//!
//! `cargo bench --bench loopback -- --warm-up-time 1`

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, Uri, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use tower_withings::store::MemoryStore;
use tower_withings::{Credentials, Endpoints, UserId, WithingsAuth};

const USER: UserId = UserId(46_865_875);
const BATCHES: [usize; 2] = [1, 32];

/// A hyper HTTP/1.1 server on 127.0.0.1 that answers every request with the same 1 KiB body.
async fn serve(body: Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header(header::CONTENT_TYPE, "application/json")
                                .body(Full::new(body))
                                .expect("a response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

fn request(uri: &Uri) -> Request<Full<Bytes>> {
    let mut request = Request::post(uri.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(FORM)))
        .expect("a valid request");
    request.extensions_mut().insert(USER);
    request
}

/// Sends `batch` requests concurrently and reads every answer to its end.
async fn round<S, B>(service: &S, uri: &Uri, batch: usize, expected: usize)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Debug,
{
    if batch == 1 {
        let len = finish(service.clone().oneshot(request(uri))).await;
        assert_eq!(len, expected);
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..batch {
        let service = service.clone();
        let request = request(uri);
        tasks.spawn(async move { finish(service.oneshot(request)).await });
    }
    for len in tasks.join_all().await {
        assert_eq!(len, expected);
    }
}

/// Rounds of the interleaved comparison, and requests per stack per round.
const PAIRED_ROUNDS: usize = 60;
const PAIRED_REQUESTS: usize = 256;

/// Throughput of `withings` over `add_authorization`, measured interleaved (A, B, B, A, ...)
/// so that the load of a shared machine hits both alike; one ratio per round.
async fn paired<A, W, BA, BW>(
    add_authorization: &A,
    withings: &W,
    uri: &Uri,
    batch: usize,
    expected: usize,
) -> Vec<f64>
where
    A: Service<Request<Full<Bytes>>, Response = Response<BA>> + Clone + Send + 'static,
    A::Future: Send,
    A::Error: std::fmt::Debug + Send,
    BA: Body<Data = Bytes> + Unpin + Send,
    BA::Error: std::fmt::Debug,
    W: Service<Request<Full<Bytes>>, Response = Response<BW>> + Clone + Send + 'static,
    W::Future: Send,
    W::Error: std::fmt::Debug + Send,
    BW: Body<Data = Bytes> + Unpin + Send,
    BW::Error: std::fmt::Debug,
{
    let rounds = PAIRED_REQUESTS / batch;
    let mut ratios = Vec::new();
    for i in 0..PAIRED_ROUNDS {
        let mut time_a = Duration::ZERO;
        let mut time_w = Duration::ZERO;
        for first_a in [i % 2 == 0, i % 2 != 0] {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                if first_a {
                    round(add_authorization, uri, batch, expected).await;
                } else {
                    round(withings, uri, batch, expected).await;
                }
            }
            if first_a {
                time_a += start.elapsed();
            } else {
                time_w += start.elapsed();
            }
        }
        // requests/s of withings over requests/s of add_authorization
        ratios.push(time_a.as_secs_f64() / time_w.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    ratios
}

/// Sends `n` requests one after the other; with a current-thread runtime the server, the
/// client's connection task and the layer all run inside this function, which
/// `benches/scripts/callgrind.sh loopback` counts instructions in (`--toggle-collect`).
#[inline(never)]
fn callgrind_loop<S, B>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    uri: &Uri,
    n: usize,
    expected: usize,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        for _ in 0..n {
            round(service, uri, 1, expected).await;
        }
    });
}

/// `LOOPBACK_CALLGRIND=<stack>/<n>`: everything on one thread, `n` sequential requests
/// through one stack inside `callgrind_loop`, then exit (no criterion).
fn callgrind_only(wanted: &str) -> ! {
    let (stack, n) = wanted
        .rsplit_once('/')
        .expect("LOOPBACK_CALLGRIND=<stack>/<n>");
    let n: usize = n.parse().expect("a request count");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let body = withings_json_1k();
    let expected = body.len();
    let addr = rt.block_on(serve(body));
    let base = format!("http://{addr}");
    let uri: Uri = format!("{base}/measure").parse().expect("a URI");
    let endpoint = FakeTokenEndpoint::new(Duration::ZERO, USER);
    let auth = WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
        .endpoints(Endpoints::loopback(&base, &base).expect("loopback endpoints"))
        .store(MemoryStore::new())
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .build(endpoint.client());
    let valid = token(USER, SystemTime::now(), Duration::from_secs(10_800));
    rt.block_on(auth.import(valid.clone())).expect("import");
    match stack {
        "bare" => {
            let service = client();
            callgrind_loop(&rt, &service, &uri, 64, expected);
            callgrind_loop(&rt, &service, &uri, n, expected);
        }
        "add_authorization" => {
            let service = AddAuthorizationLayer::bearer(valid.access_token.expose())
                .as_sensitive(true)
                .layer(client());
            callgrind_loop(&rt, &service, &uri, 64, expected);
            callgrind_loop(&rt, &service, &uri, n, expected);
        }
        "withings" => {
            let service = auth.layer().layer(client());
            callgrind_loop(&rt, &service, &uri, 64, expected);
            callgrind_loop(&rt, &service, &uri, n, expected);
        }
        other => panic!("unknown stack {other}"),
    }
    println!("CALLGRIND {stack} {n}");
    std::process::exit(0);
}

fn loopback(c: &mut Criterion) {
    if let Ok(wanted) = std::env::var("LOOPBACK_CALLGRIND") {
        callgrind_only(&wanted);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let body = withings_json_1k();
    let expected = body.len();
    let addr = rt.block_on(serve(body));
    let base = format!("http://{addr}");
    let uri: Uri = format!("{base}/measure").parse().expect("a URI");

    let endpoint = FakeTokenEndpoint::new(Duration::ZERO, USER);
    let auth = WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
        .endpoints(Endpoints::loopback(&base, &base).expect("loopback endpoints"))
        .store(MemoryStore::new())
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .build(endpoint.client());
    let valid = token(USER, SystemTime::now(), Duration::from_secs(10_800));
    rt.block_on(auth.import(valid.clone())).expect("import");

    let bare = client();
    let add_authorization = AddAuthorizationLayer::bearer(valid.access_token.expose())
        .as_sensitive(true)
        .layer(client());
    let withings = auth.layer().layer(client());

    let mut group = c.benchmark_group("loopback");
    group.measurement_time(Duration::from_secs(4));
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("bare", batch), |b| {
            b.to_async(&rt).iter(|| round(&bare, &uri, batch, expected))
        });
        group.bench_function(BenchmarkId::new("add_authorization", batch), |b| {
            b.to_async(&rt)
                .iter(|| round(&add_authorization, &uri, batch, expected))
        });
        group.bench_function(BenchmarkId::new("withings", batch), |b| {
            b.to_async(&rt)
                .iter(|| round(&withings, &uri, batch, expected))
        });
    }
    group.finish();

    let mut rows = Vec::new();
    for batch in BATCHES {
        let ratios = rt.block_on(paired(&add_authorization, &withings, &uri, batch, expected));
        let median = ratios[ratios.len() / 2];
        let (low, high) = (ratios[ratios.len() / 4], ratios[3 * ratios.len() / 4]);
        println!(
            "loopback paired, batch {batch}: withings/add_authorization requests/s = {median:.3} \
             (median of {PAIRED_ROUNDS} interleaved rounds, quartiles {low:.3}..{high:.3})"
        );
        rows.push(format!(
            "  \"{batch}\": {{\"median_ratio\": {median:.4}, \"q1\": {low:.4}, \"q3\": {high:.4}, \"rounds\": {PAIRED_ROUNDS}}}"
        ));
    }
    write_result(
        "loopback",
        "paired.json",
        &format!("{{\n{}\n}}\n", rows.join(",\n")),
    );

    let metrics = auth.metrics();
    assert_eq!(metrics.refreshes_started, 0, "{metrics:?}");
    assert_eq!(endpoint.calls(), 0);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = loopback
}
criterion_main!(benches);
