//! Shared by the benches: a no-op inner service, a fake token endpoint, tokens, requests,
//! and the criterion settings that keep runs short on a 2-core machine.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Ready, poll_fn, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri, header};
use http_body::Body;
use http_body_util::Full;
use tower::Service;
use tower_withings::{Secret, Token, UserId};

/// A multi-thread runtime with 2 workers, the machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Short runs: the machine has 2 cores shared with other builds.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

/// Where criterion writes its results (`estimates.json`), and where the benches put theirs.
pub fn criterion_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    std::path::PathBuf::from(target).join("criterion")
}

/// Writes `name` (JSON) under `<criterion dir>/<group>/`.
pub fn write_result(group: &str, name: &str, json: &str) {
    let dir = criterion_dir().join(group);
    std::fs::create_dir_all(&dir).expect("criterion dir");
    std::fs::write(dir.join(name), json).expect("write a result file");
}

pub const MEASURE_URL: &str = "https://wbsapi.withings.net/measure";
pub const FORM: &[u8] = b"action=getmeas&meastype=1";

/// `POST https://wbsapi.withings.net/measure` for `user` (as the README builds it).
pub fn getmeas(user: UserId) -> Request<Full<Bytes>> {
    let mut request = Request::post(Uri::from_static(MEASURE_URL))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(FORM)))
        .expect("a valid request");
    request.extensions_mut().insert(user);
    request
}

/// A Withings getmeas answer of about 1 KiB, `status` first as Withings sends it.
pub fn withings_json_1k() -> Bytes {
    let mut groups = Vec::new();
    let mut id = 7_000_000_000u64;
    let mut text = String::new();
    while text.len() < 1000 {
        groups.push(format!(
            r#"{{"grpid":{id},"attrib":0,"date":1700000000,"created":1700000001,"category":1,"deviceid":"8f2e","measures":[{{"value":72450,"type":1,"unit":-3,"algo":0,"fm":3}}]}}"#
        ));
        id += 1;
        text = format!(
            r#"{{"status":0,"body":{{"updatetime":1700000100,"timezone":"Europe/Paris","measuregrps":[{}],"more":0,"offset":0}}}}"#,
            groups.join(",")
        );
    }
    Bytes::from(text)
}

/// The inner service: answers every request at once with HTTP 200 and a fixed body.
#[derive(Clone)]
pub struct Noop {
    pub body: Bytes,
}

impl Noop {
    pub fn empty() -> Self {
        Noop { body: Bytes::new() }
    }

    pub fn json() -> Self {
        Noop {
            body: withings_json_1k(),
        }
    }
}

impl<B> Service<Request<B>> for Noop {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(request);
        ready(Ok(Response::new(Full::new(self.body.clone()))))
    }
}

/// Reads a body to its end, as a caller does; returns how many bytes it had.
pub async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut read = 0;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            read += data.len();
        }
    }
    read
}

/// A 40-hex-character token, like Withings'.
pub fn hex_token(prefix: char, n: u64) -> String {
    format!("{prefix}{n:039x}")
}

/// A pair for `user` expiring `ttl` after `now`.
pub fn token(user: UserId, now: SystemTime, ttl: Duration) -> Token {
    Token {
        user_id: user,
        access_token: Secret::new(hex_token('a', user.0)),
        refresh_token: Secret::new(hex_token('r', user.0)),
        expires_at: now + ttl,
        scope: "user.metrics".into(),
    }
}

/// The pair the simulator grants `user` of the app `client_id` (scope `user.metrics`), as a
/// code exchange would have returned it now.
pub fn granted(sim: &withings_sim::Simulator, client_id: &str, user: UserId) -> Token {
    let g = sim.issue_grant(client_id, user, "user.metrics");
    let mut t = token(user, SystemTime::now(), Duration::from_secs(g.expires_in));
    t.access_token = Secret::new(g.access_token);
    t.refresh_token = Secret::new(g.refresh_token);
    t
}

/// An in-process Withings token endpoint: waits `latency`, then grants a new pair for `user`,
/// counting its calls.
#[derive(Clone)]
pub struct FakeTokenEndpoint {
    pub latency: Duration,
    pub user: UserId,
    pub calls: Arc<AtomicUsize>,
}

impl FakeTokenEndpoint {
    pub fn new(latency: Duration, user: UserId) -> Self {
        FakeTokenEndpoint {
            latency,
            user,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The JSON answer of one refresh (after the latency).
    pub async fn grant(&self) -> Bytes {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        tokio::time::sleep(self.latency).await;
        Bytes::from(format!(
            r#"{{"status":0,"body":{{"userid":"{}","access_token":"{}","refresh_token":"{}","expires_in":10800,"scope":"user.metrics"}}}}"#,
            self.user,
            hex_token('b', n),
            hex_token('s', n),
        ))
    }

    /// As the HTTP client given to `WithingsAuthBuilder::build`.
    pub fn client(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static {
        let endpoint = self.clone();
        tower::service_fn(move |_request: Request<Full<Bytes>>| {
            let endpoint = endpoint.clone();
            async move { Ok(Response::new(Full::new(endpoint.grant().await))) }
        })
    }
}

/// Parses the access token out of a token answer (what a hand-written layer would do).
pub fn access_token_of(json: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(json).expect("token JSON");
    value["body"]["access_token"]
        .as_str()
        .expect("an access_token")
        .to_owned()
}

/// `Bearer <token>`, marked sensitive, built the obvious way.
pub fn bearer(access_token: &str) -> http::HeaderValue {
    let mut value =
        http::HeaderValue::try_from(format!("Bearer {access_token}")).expect("header-safe token");
    value.set_sensitive(true);
    value
}

/// `poll_ready` then `call`, for services that are always ready (every stack over [`Noop`]).
/// The returned future owns everything, so a criterion routine can await it.
pub fn call_now<S, R>(service: &mut S, request: R) -> S::Future
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => service.call(request),
        _ => panic!("the service over Noop is always ready"),
    }
}

/// Awaits a response and reads its body to the end; returns the body's length.
pub async fn finish<F, B: ReadBody, E: Debug>(response: F) -> usize
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    drain(response.await.expect("a response").into_body()).await
}

/// A body the benches read to the end ([`drain`]).
pub trait ReadBody: Body<Data = Bytes, Error: Debug> + Unpin {}

impl<B> ReadBody for B where B: Body<Data = Bytes, Error: Debug> + Unpin {}

/// What the benches send.
pub type Req = Request<Full<Bytes>>;

/// A stack the benches time: getmeas requests in, answers with a [`ReadBody`] out.
pub trait Stack<B: ReadBody>: Service<Req, Response = Response<B>, Error: Debug> {}

impl<S, B: ReadBody> Stack<B> for S where S: Service<Req, Response = Response<B>, Error: Debug> {}

/// A [`Stack`] that requests go through from many tasks at once, each with a clone of it.
pub trait SharedStack<B: ReadBody + Send>:
    Stack<B> + Service<Req, Error: Send, Future: Send> + Clone + Send + 'static
{
}

impl<S, B: ReadBody + Send> SharedStack<B> for S where
    S: Stack<B> + Service<Req, Error: Send, Future: Send> + Clone + Send + 'static
{
}

/// Sends `n` requests made by `request` concurrently, each through its own clone of `service`,
/// and reads every answer to its end; returns the bodies' lengths.
pub async fn concurrently<S: SharedStack<B>, B: ReadBody + Send>(
    service: &S,
    n: usize,
    request: impl Fn() -> Request<Full<Bytes>>,
) -> Vec<usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let service = service.clone();
        let request = request();
        tasks.spawn(async move { finish(tower::ServiceExt::oneshot(service, request)).await });
    }
    tasks.join_all().await
}

/// Sends `requests` through `service` one after the other; returns the bytes read.
pub fn run_all<S: Stack<B>, B: ReadBody>(
    rt: &tokio::runtime::Runtime,
    service: &mut S,
    requests: Vec<Req>,
) -> usize {
    rt.block_on(async {
        let mut total = 0;
        for request in requests {
            total += finish(call_now(service, request)).await;
        }
        total
    })
}

/// Wall time of `b` over `a`, interleaved round by round (a, b, b, a, ...) so that the load of
/// a shared machine hits both alike. `requests(for_b)` makes one round's requests for `a` or
/// `b` (not timed). Returns the per-round ratios, sorted.
pub fn interleaved<A, BA, W, BW>(
    rt: &tokio::runtime::Runtime,
    a: &mut A,
    b: &mut W,
    rounds: usize,
    mut requests: impl FnMut(bool) -> Vec<Request<Full<Bytes>>>,
) -> Vec<f64>
where
    A: Stack<BA>,
    BA: ReadBody,
    W: Stack<BW>,
    BW: ReadBody,
{
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (mut time_a, mut time_b) = (Duration::ZERO, Duration::ZERO);
        for a_first in [round % 2 == 0, round % 2 != 0] {
            let batch = requests(!a_first);
            let start = std::time::Instant::now();
            if a_first {
                run_all(rt, a, batch);
                time_a += start.elapsed();
            } else {
                run_all(rt, b, batch);
                time_b += start.elapsed();
            }
        }
        ratios.push(time_b.as_secs_f64() / time_a.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    ratios
}

/// `"name": {"median_ratio": .., "q1": .., "q3": .., "rounds": ..}` for sorted ratios, and
/// prints it.
pub fn ratio_row(what: &str, name: &str, sorted: &[f64]) -> String {
    let n = sorted.len();
    let (median, q1, q3) = (sorted[n / 2], sorted[n / 4], sorted[3 * n / 4]);
    println!(
        "{what} {name}: {median:.3} (median of {n} interleaved rounds, quartiles {q1:.3}..{q3:.3})"
    );
    format!(
        "  \"{name}\": {{\"median_ratio\": {median:.4}, \"q1\": {q1:.4}, \"q3\": {q3:.4}, \"rounds\": {n}}}"
    )
}

/// Writes the interleaved comparisons' rows (from [`ratio_row`]) to
/// `<criterion dir>/<group>/paired.json`, and checks that `auth`, whose token stayed valid
/// throughout, never refreshed it.
pub fn write_paired(
    group: &str,
    rows: &[String],
    auth: &tower_withings::WithingsAuth,
    endpoint: &FakeTokenEndpoint,
) {
    write_result(
        group,
        "paired.json",
        &format!("{{\n{}\n}}\n", rows.join(",\n")),
    );
    let metrics = auth.metrics();
    assert_eq!(
        metrics.refreshes_started, 0,
        "{group} never refreshes: {metrics:?}"
    );
    assert_eq!(endpoint.calls(), 0, "{group}");
}

pin_project_lite::pin_project! {
    /// The future of a hand-written token-injecting baseline: the inner call, or a refusal
    /// decided before calling (no token to send).
    #[project = TokenFutureProj]
    pub enum TokenFuture<F> {
        Call { #[pin] fut: F },
        Refused { why: &'static str },
    }
}

impl<F, T, E> std::future::Future for TokenFuture<F>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<tower::BoxError>,
{
    type Output = Result<T, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TokenFutureProj::Call { fut } => fut.poll(cx).map_err(Into::into),
            TokenFutureProj::Refused { why } => Poll::Ready(Err((*why).into())),
        }
    }
}

/// A hand-written token-injecting baseline: `header_for` looks up the `Authorization` value for
/// each request (a lock read and a format, as such layers do), or the reason it is refused unsent.
/// No refresh, no host check, no body check.
#[derive(Clone)]
pub struct LookupAuth<S, F> {
    pub header_for: F,
    pub inner: S,
}

/// What a [`LookupAuth`] looks the header up with.
pub trait HeaderFor:
    Fn(&Request<Full<Bytes>>) -> Result<http::HeaderValue, &'static str> + Clone
{
}

impl<F> HeaderFor for F where
    F: Fn(&Request<Full<Bytes>>) -> Result<http::HeaderValue, &'static str> + Clone
{
}

impl<S, F, B> Service<Request<B>> for LookupAuth<S, F>
where
    S: Service<Request<B>>,
    S::Error: Into<tower::BoxError>,
    F: Fn(&Request<B>) -> Result<http::HeaderValue, &'static str>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = TokenFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match (self.header_for)(&request) {
            Ok(value) => {
                request.headers_mut().insert(header::AUTHORIZATION, value);
                TokenFuture::Call {
                    fut: self.inner.call(request),
                }
            }
            Err(why) => TokenFuture::Refused { why },
        }
    }
}

/// The three durable stores on this machine kind's servers (`TOWER_WITHINGS_POSTGRES_URL`,
/// `TOWER_WITHINGS_REDIS_URL` to point elsewhere), each in a namespace of its own named by
/// `tag`: a SQLite file in `dir`, a PostgreSQL table, a Redis key prefix.
#[cfg(all(feature = "sqlite", feature = "postgres", feature = "redis"))]
#[allow(dead_code)] // only the benches of every durable store use it
pub async fn durable_stores(
    dir: &std::path::Path,
    tag: &str,
) -> Vec<(
    &'static str,
    std::sync::Arc<dyn tower_withings::store::TokenStore>,
)> {
    use std::sync::Arc;
    use tower_withings::{store::PostgresStore, store::RedisStore, store::SqliteStore};
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let postgres = var(
        "TOWER_WITHINGS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let redis = var("TOWER_WITHINGS_REDIS_URL", "redis://127.0.0.1:6379");
    let sqlite = SqliteStore::open(dir.join(format!("{tag}.db")));
    let postgres = PostgresStore::builder(&postgres)
        .table(format!("withings_{tag}"))
        .build();
    let redis = RedisStore::builder(&redis)
        .prefix(format!("withings-{tag}:"))
        .connect();
    vec![
        ("sqlite", Arc::new(sqlite.await.expect("SQLite"))),
        ("postgres", Arc::new(postgres.await.expect("PostgreSQL"))),
        ("redis", Arc::new(redis.await.expect("Redis"))),
    ]
}

/// Drops what [`durable_stores`] made under `tag` on the shared servers: the PostgreSQL tables
/// (tokens, leases, budget, pause, sync) and the Redis keys.
#[cfg(all(feature = "postgres", feature = "redis"))]
pub async fn drop_durable(tag: &str) {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let pg = var(
        "TOWER_WITHINGS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    if let Ok((client, connection)) = tokio_postgres::connect(&pg, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let t = format!("withings_{tag}");
        let tables = [
            "", "_leases", "_budget", "_pause", "_waits", "_sync_c", "_sync_v", "_sync_i",
            "_sync_x",
        ]
        .map(|suffix| format!("\"{t}{suffix}\""))
        .join(", ");
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS {tables}"))
            .await;
    }
    let redis_url = var("TOWER_WITHINGS_REDIS_URL", "redis://127.0.0.1:6379");
    if let Ok(client) = redis::Client::open(redis_url)
        && let Ok(mut connection) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("withings-{tag}:*"))
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut connection)
                .await;
        }
    }
}
