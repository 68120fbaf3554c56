//! Shared test setup: a simulator with one registered app, and clients pointed at it.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_withings::{
    Credentials, Endpoints, Scope, Token, oauth::AuthorizeRequest, oauth::Callback,
    oauth::ClientAuth, oauth::OAuthClient, transport,
};
use withings_sim::Simulator;

#[path = "../support/app.rs"]
mod app;
pub use app::*;

/// A simulator whose users have three days of one weighing each, uploaded at once and never
/// edited: three groups a day apart, for the sync tests to count on. The test app is
/// registered.
pub async fn three_day_simulator() -> Simulator {
    let history = withings_sim::HistoryConfig {
        days: 3,
        groups_per_day: 1,
        late_uploads: false,
        ..withings_sim::HistoryConfig::default()
    };
    simulator_with(history).await
}

pub fn endpoints(sim: &Simulator) -> Endpoints {
    Endpoints::loopback(&sim.api_base(), &sim.account_base()).expect("loopback endpoints")
}

pub fn oauth(sim: &Simulator, auth: ClientAuth) -> OAuthClient {
    OAuthClient::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints(sim))
        .client_auth(auth)
        .timeout(Duration::from_secs(5))
        .build(transport::plain_http_client())
}

pub fn http() -> Client<HttpConnector, Full<Bytes>> {
    transport::plain_http_client()
}

/// GETs `url` like a browser would (without following redirects).
pub async fn browser_get(url: &str) -> (StatusCode, Option<String>, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client
        .request(Request::get(url).body(Empty::new()).unwrap())
        .await
        .expect("GET reaches the simulator");
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The user approves: the browser follows authorize2 and lands on the callback URL.
pub async fn approve(request: &AuthorizeRequest) -> Callback {
    let (status, location, body) = browser_get(request.url()).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "authorize2 answered {status}: {body}"
    );
    let location = location.expect("a Location header");
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    Callback::parse(&location).expect("a callback with code and state")
}

/// The whole web flow for the default simulator user.
pub async fn login(client: &OAuthClient, scopes: &[Scope]) -> Token {
    let request = client.authorize(REDIRECT_URI, scopes).unwrap();
    let callback = approve(&request).await;
    client.exchange_code(&callback, &request).await.unwrap()
}

/// POSTs a form to a data endpoint with a bearer token; returns the JSON body.
pub async fn data_call(
    sim: &Simulator,
    path: &str,
    form: &str,
    access_token: &str,
) -> serde_json::Value {
    let request = Request::post(format!("{}{path}", sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap();
    let response = http().request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

// ---- the layer ----

use std::sync::{Arc, Mutex};

use tower_withings::store::{
    Lease, LockAttempt, MemoryStore, StoreFuture, StoredToken, TokenStore,
};
use tower_withings::{
    Secret, UserId, WithingsAuth, WithingsAuthLayer, WithingsAuthService,
    auth::WithingsAuthBuilder, clock::ManualClock,
};
use withings_sim::DEFAULT_USER_ID;

/// A `WithingsAuth` builder pointed at the simulator, with a manual clock, no backoff and no
/// request budget (the simulator has no app limit unless a test sets one; `budget.rs` tests
/// the budget).
pub fn auth_builder(sim: &Simulator, clock: &ManualClock) -> WithingsAuthBuilder {
    WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .endpoints(endpoints(sim))
        .clock(clock.clone())
        .token_timeout(Duration::from_secs(5))
        .backoff(Duration::ZERO, Duration::ZERO)
}

/// A token the simulator issued for `user`, as the client would hold it at `clock`'s now.
pub fn grant(sim: &Simulator, clock: &ManualClock, user: UserId) -> Token {
    use tower_withings::clock::Clock;
    let g = sim.issue_grant(CLIENT_ID, user, "user.metrics,user.activity");
    Token {
        user_id: user,
        access_token: Secret::new(g.access_token),
        refresh_token: Secret::new(g.refresh_token),
        expires_at: clock.now() + Duration::from_secs(g.expires_in),
        scope: "user.metrics,user.activity".into(),
    }
}

/// A simulator, a handle with a memory store, and the default user's token imported.
pub struct Rig {
    pub sim: Simulator,
    pub clock: ManualClock,
    pub auth: WithingsAuth,
    pub token: Token,
}

/// The layer's service around the plain HTTP client.
pub type PlainService = WithingsAuthService<Client<HttpConnector, Full<Bytes>>>;

impl Rig {
    /// The rig's default layer around the plain HTTP client: what most tests send through.
    pub fn service(&self) -> PlainService {
        self.service_with(|layer| layer)
    }

    /// `configure(the rig's layer)` (say, with `status_errors()`) around the plain HTTP client.
    pub fn service_with(
        &self,
        configure: impl FnOnce(WithingsAuthLayer) -> WithingsAuthLayer,
    ) -> PlainService {
        tower::Layer::layer(
            &configure(self.auth.layer()),
            transport::plain_http_client(),
        )
    }

    /// Revokes the access token the rig was given, at the simulator: the next request with it
    /// is refused.
    pub fn revoke_access_token(&self) {
        self.sim
            .revoke_access_token(self.token.access_token.expose());
    }
}

pub async fn rig_with(configure: impl FnOnce(WithingsAuthBuilder) -> WithingsAuthBuilder) -> Rig {
    let sim = simulator().await;
    let clock = ManualClock::new();
    let auth = configure(auth_builder(&sim, &clock).store(MemoryStore::new()))
        .build(transport::plain_http_client());
    let token = grant(&sim, &clock, DEFAULT_USER_ID);
    auth.import(token.clone()).await.unwrap();
    Rig {
        sim,
        clock,
        auth,
        token,
    }
}

pub async fn rig() -> Rig {
    rig_with(|b| b).await
}

/// A default rig and its default service ([`Rig::service`]).
pub async fn served() -> (Rig, PlainService) {
    let rig = rig().await;
    let service = rig.service();
    (rig, service)
}

/// Whether `user`'s stored record is marked for re-authorization (it must be stored).
pub async fn needs_reauthorization(auth: &WithingsAuth, user: UserId) -> bool {
    let record = auth.store().load(user).await.unwrap();
    record.expect("a stored record").needs_reauthorization
}

/// [`rig`] with a 2 s backoff after a failed refresh.
pub async fn rig_2s() -> Rig {
    rig_with(|b| b.backoff(Duration::from_secs(2), Duration::from_secs(2))).await
}

pub const USER: UserId = DEFAULT_USER_ID;

/// `n` calls made by `call`, all at once, each on a task of its own; their outputs.
pub async fn concurrently<F>(n: usize, call: impl Fn() -> F) -> Vec<F::Output>
where
    F: std::future::Future<Output: Send + 'static> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn(call());
    }
    tasks.join_all().await
}

/// Requests sent together on an expired token all got status 0, through one refresh: no
/// 401 from Withings, no replay.
pub fn assert_all_ok_after_one_refresh(
    rig: &Rig,
    outcomes: &[Result<serde_json::Value, tower_withings::Error>],
) {
    for outcome in outcomes {
        assert_eq!(outcome.as_ref().unwrap()["status"], 0, "{outcome:?}");
    }
    let counters = rig.sim.counters();
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    assert_eq!(counters.successful_refreshes, 1);
    assert_eq!(counters.served_401, 0);
    let metrics = rig.auth.metrics();
    assert_eq!(metrics.refreshes_started, 1, "{metrics:?}");
    assert_eq!(metrics.replays, 0);
}

/// URLs no token may go to: the `elsewhere` simulator (another port), the simulator's
/// OAuth and signature endpoints, and its API under another host name (`localhost`). The
/// first and the last are other hosts.
pub fn not_for_tokens(sim: &Simulator, elsewhere: &Simulator) -> [String; 4] {
    let api = sim.api_base();
    [
        format!("{}/measure", elsewhere.api_base()),
        format!("{api}/v2/oauth2"),
        format!("{api}/v2/signature"),
        api.replace("127.0.0.1", "localhost") + "/measure",
    ]
}

/// A refusal handed back as Withings sent it, marked [`tower_withings::layer::UnreplayedRefusal`] because
/// its request's body was a stream, and counted so; the refresh it set off finishes in the
/// background.
pub async fn assert_marked_not_replayed(rig: &Rig, extensions: &http::Extensions) {
    let marker = extensions
        .get::<tower_withings::layer::UnreplayedRefusal>()
        .copied();
    assert!(
        marker.is_some_and(|m| m.reason.contains("stream")),
        "{marker:?}"
    );
    assert_eq!(rig.auth.metrics().not_replayed, 1);
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
}

/// The rig's handle neither refreshed nor replayed anything, and Withings saw no refresh.
pub fn assert_no_refresh_no_replay(rig: &Rig) {
    let metrics = rig.auth.metrics();
    assert_eq!(
        (metrics.refreshes_started, metrics.replays),
        (0, 0),
        "{metrics:?}"
    );
    assert_eq!(rig.sim.counters().refreshes, 0);
}

/// The rows `query` reads for [`USER`] (those it could not decode left out); the test fails
/// if the read does.
pub async fn rows<Q>(
    data: &tower_withings::data::DataClient<impl tower_withings::transport::HttpClient>,
    query: Q,
) -> Vec<Q::Row>
where
    Q: tower_withings::data::Query<Row: std::fmt::Debug>,
{
    data.collect(USER, query).await.unwrap().rows
}

/// The crate's error inside a layer's `BoxError`; fails the test if it is something else.
pub fn auth_error(error: tower_withings::BoxError) -> tower_withings::Error {
    *error
        .downcast::<tower_withings::Error>()
        .unwrap_or_else(|other| panic!("not a tower_withings::Error: {other}"))
}

/// `POST url` with `form` as its `application/x-www-form-urlencoded` body, naming no user.
pub fn form_post(url: &str, form: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(form.into()))
        .unwrap()
}

/// `POST {api}/measure action=getmeas` for `user`.
pub fn getmeas(sim: &Simulator, user: UserId) -> Request<Full<Bytes>> {
    let url = format!("{}/measure", sim.api_base());
    let mut request = form_post(&url, &b"action=getmeas&meastype=1"[..]);
    request.extensions_mut().insert(user);
    request
}

/// The JSON of a response body.
pub async fn json<B>(response: http::Response<B>) -> serde_json::Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

/// An event log shared by instrumented stores and services, to assert ordering.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn position(&self, event: &str) -> Option<usize> {
        self.all().iter().position(|e| e == event)
    }
}

/// A store call as test hooks see it.
#[derive(Clone, Copy)]
pub enum Call<'a> {
    Load,
    /// `compare_and_save` of this pair.
    Save(&'a Token),
    Lock,
    Unlock,
}

/// What the inner store answered a [`Call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A load or an unlock went through.
    Done,
    /// `compare_and_save`: whether it saved.
    Saved(bool),
    /// `try_lock`: whether another holder had the lease.
    Lock { held: bool },
    /// The inner store failed.
    Failed,
}

/// What a test store does around each call of the real store it wraps: `before` runs first
/// (an error fails the call without reaching the store), `after` once the store answered (an
/// error replaces the answer). `put`, `mark_needs_reauthorization` and `list` pass on.
pub trait StoreHooks: Send + Sync + 'static {
    fn before<'a>(&'a self, _call: Call<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn after<'a>(&'a self, _call: Call<'a>, _answer: Answer) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    /// `false`: leases are the trait's in-process default, not the inner store's.
    fn inner_leases(&self) -> bool {
        true
    }
}

/// A real store with test hooks around it; derefs to the hooks (their state and controls).
#[derive(Default)]
pub struct Hooked<S, H> {
    pub inner: S,
    pub hooks: H,
}

impl<S, H> std::ops::Deref for Hooked<S, H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.hooks
    }
}

impl<S: TokenStore, H: StoreHooks> Hooked<S, H> {
    /// `before`, the inner call (made only then: some stores start work when called), `after`.
    fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        inner: impl FnOnce() -> StoreFuture<'a, T> + Send + 'a,
        answer: fn(&T) -> Answer,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            self.hooks.before(call).await?;
            let result = inner().await;
            let answered = result.as_ref().map_or(Answer::Failed, answer);
            self.hooks.after(call, answered).await?;
            result
        })
    }
}

impl<S: TokenStore, H: StoreHooks> TokenStore for Hooked<S, H> {
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        self.around(Call::Load, move || self.inner.load(user), |_| Answer::Done)
    }
    fn put<'a>(&'a self, token: &'a Token, at: std::time::SystemTime) -> StoreFuture<'a, ()> {
        self.inner.put(token, at)
    }
    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        at: std::time::SystemTime,
    ) -> StoreFuture<'a, bool> {
        let save = move || self.inner.compare_and_save(spent, token, at);
        self.around(Call::Save(token), save, |saved| Answer::Saved(*saved))
    }
    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()> {
        self.inner.mark_needs_reauthorization(user, refused)
    }
    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        if !self.hooks.inner_leases() {
            return Box::pin(async { Ok(LockAttempt::Acquired(Lease::new())) });
        }
        let held = |a: &LockAttempt| Answer::Lock {
            held: matches!(a, LockAttempt::Held),
        };
        self.around(Call::Lock, move || self.inner.try_lock(user, lease), held)
    }
    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        if !self.hooks.inner_leases() {
            return Box::pin(async { Ok(()) });
        }
        self.around(
            Call::Unlock,
            move || self.inner.unlock(user, lease),
            |_| Answer::Done,
        )
    }
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        self.inner.list()
    }
    fn budget(&self) -> Option<&dyn tower_withings::store::BudgetLedger> {
        self.inner.budget()
    }
}

/// A memory store that logs successful saves and can be told to fail them.
pub type InstrumentedStore = Hooked<MemoryStore, Instrumented>;

/// The hooks of [`InstrumentedStore`].
#[derive(Default)]
pub struct Instrumented {
    pub events: Events,
    pub fail_saves: std::sync::atomic::AtomicBool,
    /// Milliseconds each save takes (a slow disk), to widen the save-then-publish window.
    pub save_delay_ms: std::sync::atomic::AtomicU64,
}

impl Instrumented {
    /// From now on, every save fails (`true`) or goes through (`false`).
    pub fn set_fail_saves(&self, fail: bool) {
        self.fail_saves
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, every save takes `ms` milliseconds.
    pub fn set_save_delay_ms(&self, ms: u64) {
        self.save_delay_ms
            .store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StoreHooks for Instrumented {
    fn before<'a>(&'a self, call: Call<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Call::Save(_) = call {
                if self.fail_saves.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(tower_withings::Error::store("save", "disk full (injected)"));
                }
                let delay = self.save_delay_ms.load(std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Ok(())
        })
    }
    fn after<'a>(&'a self, call: Call<'a>, answer: Answer) -> StoreFuture<'a, ()> {
        if let (Call::Save(token), Answer::Saved(true)) = (call, answer) {
            self.events
                .push(format!("saved {}", token.access_token.expose()));
        }
        Box::pin(async { Ok(()) })
    }
    fn inner_leases(&self) -> bool {
        false // as the memory store before it had: the in-process default
    }
}

/// Hooks that log every lease attempt: whether another holder had it (`true`), and what
/// `probe` read at that moment (say, the simulator's token calls).
pub struct LeaseLog {
    probe: Box<dyn Fn() -> u64 + Send + Sync>,
    attempts: Mutex<Vec<(bool, u64)>>,
}

impl LeaseLog {
    pub fn new(probe: impl Fn() -> u64 + Send + Sync + 'static) -> Arc<LeaseLog> {
        Arc::new(LeaseLog {
            probe: Box::new(probe),
            attempts: Mutex::new(Vec::new()),
        })
    }

    pub fn attempts(&self) -> Vec<(bool, u64)> {
        self.attempts.lock().unwrap().clone()
    }
}

impl StoreHooks for Arc<LeaseLog> {
    fn after<'a>(&'a self, _call: Call<'a>, answer: Answer) -> StoreFuture<'a, ()> {
        if let Answer::Lock { held } = answer {
            self.attempts.lock().unwrap().push((held, (self.probe)()));
        }
        Box::pin(async { Ok(()) })
    }
}

/// What an instrumented inner service saw of one request.
#[derive(Debug, Clone)]
pub struct Sent {
    pub uri: String,
    pub bearer: Option<String>,
    pub content_length: Option<String>,
    pub body: Bytes,
}

type Req = Request<Full<Bytes>>;
type Resp = http::Response<hyper::body::Incoming>;
type HttpError = hyper_util::client::legacy::Error;

/// What the tests' wrappers of the real HTTP client are (a trait alias).
pub trait HttpClient:
    tower::Service<Req, Response = Resp, Error = HttpError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> HttpClient for T where
    T: tower::Service<Req, Response = Resp, Error = HttpError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The real HTTP client with `around` in front of it: `around` gets the client and each
/// request, and answers it (usually by sending it, before and after looking at something).
pub fn client_around<F, Fut>(around: F) -> impl HttpClient
where
    F: Fn(Client<HttpConnector, Full<Bytes>>, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, HttpError>> + Send + 'static,
{
    let client = http();
    tower::service_fn(move |request| around(client.clone(), request))
}

/// A stand-in's answer.
type FakeAnswer = http::Response<Full<Bytes>>;
type Infallible = std::convert::Infallible;

/// What the tests' stand-ins for the data API are (a trait alias).
pub trait FakeApi:
    tower::Service<Req, Response = FakeAnswer, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T> FakeApi for T where
    T: tower::Service<Req, Response = FakeAnswer, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// A stand-in for the data API that answers call `n` (from 0) with `answer(n)`; and how many
/// calls it had.
pub fn counting_api(
    answer: impl Fn(usize) -> http::Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) -> (impl FakeApi, Arc<std::sync::atomic::AtomicUsize>) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let service = tower::service_fn(move |_: Request<Full<Bytes>>| {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok(answer(n)))
    });
    (service, calls)
}

/// A getmeas for [`USER`] through the rig's layer over `inner`.
pub async fn through_layer<S, B>(
    rig: &Rig,
    inner: S,
) -> Result<http::Response<tower_withings::layer::WithingsBody<B>>, tower_withings::BoxError>
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<B>,
            Error: Into<tower_withings::BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: http_body::Body<Data = Bytes, Error: Send> + Unpin + Send + 'static,
{
    let service = tower::Layer::layer(&rig.auth.layer(), inner);
    tower::ServiceExt::oneshot(service, getmeas(&rig.sim, USER)).await
}

/// What a [`recording_client`] sent, request by request.
pub type SentLog = Arc<Mutex<Vec<Sent>>>;

/// `auth`'s layer over a [`recording_client`]: the service, and what it sends.
pub fn recorded(
    auth: &WithingsAuth,
) -> (
    tower_withings::WithingsAuthService<impl HttpClient>,
    SentLog,
) {
    let sent = SentLog::default();
    let client = recording_client(sent.clone(), Events::default());
    (tower::Layer::layer(&auth.layer(), client), sent)
}

/// The real HTTP client, recording every request it sends (and logging `sent <token>`).
pub fn recording_client(sent: Arc<Mutex<Vec<Sent>>>, events: Events) -> impl HttpClient {
    client_around(move |client, request: Req| {
        let (sent, events) = (sent.clone(), events.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let bearer = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().trim_start_matches("Bearer ").to_owned());
            if let Some(token) = &bearer {
                events.push(format!("sent {token}"));
            }
            sent.lock().unwrap().push(Sent {
                uri: parts.uri.to_string(),
                bearer,
                content_length: parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap().to_owned()),
                body: body.clone(),
            });
            client
                .request(Request::from_parts(parts, Full::new(body)))
                .await
        }
    })
}

/// Polls `done` every 10 ms until it holds; fails the test after 5 s. For waiting on a
/// background task, never for asserting how long something took.
pub async fn wait_until<F: std::future::Future<Output = bool>>(done: impl FnMut() -> F) {
    poll_until(Duration::from_secs(5), "condition not reached in 5 s", done).await;
}

/// Polls `done` every 10 ms until it holds; panics with `what` if it does not within `limit`.
pub async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    poll_until(limit, what, move || std::future::ready(done())).await;
}

/// The one poller behind [`wait_until`] and [`eventually`].
async fn poll_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    tokio::time::timeout(limit, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect(what);
}

/// A handle over `store`, with a token granted for `user` imported.
pub async fn authorized(
    sim: &Simulator,
    clock: &ManualClock,
    store: Arc<dyn TokenStore>,
    user: UserId,
) -> WithingsAuth {
    let auth = auth_builder(sim, clock)
        .store(store)
        .build(transport::plain_http_client());
    auth.import(grant(sim, clock, user)).await.unwrap();
    auth
}

/// Sends one getmeas for `user` through `service` and asserts Withings answered status 0.
pub async fn expect_ok<S, B>(service: &S, sim: &Simulator, user: UserId)
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    let response = service.clone().oneshot(getmeas(sim, user)).await.unwrap();
    assert_eq!(json(response).await["status"], 0);
}
