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
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Layer, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use tower_withings::store::MemoryStore;
use tower_withings::{Credentials, Endpoints, Token, UserId, WithingsAuth};

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
async fn round<S: SharedStack<B>, B: ReadBody + Send>(
    service: &S,
    uri: &Uri,
    batch: usize,
    expected: usize,
) {
    if batch == 1 {
        let len = finish(service.clone().oneshot(request(uri))).await;
        assert_eq!(len, expected);
        return;
    }
    for len in concurrently(service, batch, || request(uri)).await {
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
    A: SharedStack<BA>,
    BA: ReadBody + Send,
    W: SharedStack<BW>,
    BW: ReadBody + Send,
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
fn callgrind_loop<S: SharedStack<B>, B: ReadBody + Send>(
    rt: &tokio::runtime::Runtime,
    service: &S,
    uri: &Uri,
    n: usize,
    expected: usize,
) {
    rt.block_on(async {
        for _ in 0..n {
            round(service, uri, 1, expected).await;
        }
    });
}

/// The server answering 1 KiB of Withings JSON, and a layer over it with a valid token.
struct Setup {
    uri: Uri,
    /// The length of every answer's body.
    expected: usize,
    endpoint: FakeTokenEndpoint,
    auth: WithingsAuth,
    valid: Token,
}

impl Setup {
    fn new(rt: &tokio::runtime::Runtime) -> Setup {
        let body = withings_json_1k();
        let expected = body.len();
        let addr = rt.block_on(serve(body));
        let base = format!("http://{addr}");
        let endpoint = FakeTokenEndpoint::new(Duration::ZERO, USER);
        let auth = WithingsAuth::builder(Credentials::new("bench-client", "bench-secret"))
            .endpoints(Endpoints::loopback(&base, &base).expect("loopback endpoints"))
            .store(MemoryStore::new())
            .rate_budget(tower_withings::budget::RateBudget::unlimited())
            .build(endpoint.client());
        let valid = token(USER, SystemTime::now(), Duration::from_secs(10_800));
        rt.block_on(auth.import(valid.clone())).expect("import");
        Setup {
            uri: format!("{base}/measure").parse().expect("a URI"),
            expected,
            endpoint,
            auth,
            valid,
        }
    }

    /// The client with tower-http's `AddAuthorizationLayer` (the floor).
    fn add_authorization(&self) -> impl SharedStack<Incoming> {
        AddAuthorizationLayer::bearer(self.valid.access_token.expose())
            .as_sensitive(true)
            .layer(client())
    }

    /// The client with `WithingsAuthLayer`.
    fn withings(&self) -> tower_withings::WithingsAuthService<Client<HttpConnector, Full<Bytes>>> {
        self.auth.layer().layer(client())
    }

    /// 64 requests through `service` to warm it, then `n` (see `callgrind_loop`).
    fn callgrind<S: SharedStack<B>, B: ReadBody + Send>(
        &self,
        rt: &tokio::runtime::Runtime,
        service: S,
        n: usize,
    ) {
        callgrind_loop(rt, &service, &self.uri, 64, self.expected);
        callgrind_loop(rt, &service, &self.uri, n, self.expected);
    }
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
    let setup = Setup::new(&rt);
    match stack {
        "bare" => setup.callgrind(&rt, client(), n),
        "add_authorization" => setup.callgrind(&rt, setup.add_authorization(), n),
        "withings" => setup.callgrind(&rt, setup.withings(), n),
        other => panic!("unknown stack {other}"),
    }
    println!("CALLGRIND {stack} {n}");
    std::process::exit(0);
}

fn loopback(c: &mut Criterion) {
    if let Ok(wanted) = std::env::var("LOOPBACK_CALLGRIND") {
        callgrind_only(&wanted);
    }
    let rt = common::runtime();
    let setup = Setup::new(&rt);
    let (uri, expected) = (&setup.uri, setup.expected);
    let bare = client();
    let add_authorization = setup.add_authorization();
    let withings = setup.withings();

    let mut group = c.benchmark_group("loopback");
    group.measurement_time(Duration::from_secs(4));
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("bare", batch), |b| {
            b.to_async(&rt).iter(|| round(&bare, uri, batch, expected))
        });
        group.bench_function(BenchmarkId::new("add_authorization", batch), |b| {
            b.to_async(&rt)
                .iter(|| round(&add_authorization, uri, batch, expected))
        });
        group.bench_function(BenchmarkId::new("withings", batch), |b| {
            b.to_async(&rt)
                .iter(|| round(&withings, uri, batch, expected))
        });
    }
    group.finish();

    let mut rows = Vec::new();
    for batch in BATCHES {
        let ratios = rt.block_on(paired(&add_authorization, &withings, uri, batch, expected));
        rows.push(ratio_row(
            "loopback paired withings/add_authorization requests/s, batch",
            &batch.to_string(),
            &ratios,
        ));
    }
    write_paired("loopback", &rows, &setup.auth, &setup.endpoint);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = loopback
}
criterion_main!(benches);
