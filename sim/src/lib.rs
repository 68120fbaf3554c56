//! A local Withings API simulator for tests, demos and benchmarks.
//!
//! [`Simulator`] runs a real HTTP/1.1 server on `127.0.0.1:<random port>` that behaves like the
//! Withings cloud as documented in the OAuth web flow guide, the OAuth FAQ and observed traffic,
//! unfriendly parts included:
//!
//! * errors are HTTP 200 with a JSON body `{"status":N,"body":{},"error":"…"}`;
//! * the token endpoint `/v2/oauth2` reads its parameters **only** from an
//!   `application/x-www-form-urlencoded` POST body;
//! * authorization codes live [`CODE_TTL`] (30 s) and are single use;
//! * every refresh rotates the refresh token; the old one survives until [`ROTATION_GRACE`]
//!   (8 h) after the rotation or the first successful use of the new access token;
//! * the same refresh token presented twice within [`SAME_ARGS_WINDOW`] (10 s) gets status 601;
//! * users can be revoked, deactivated ("User is temporarily deactivated") or deleted;
//! * faults (HTTP errors, dropped connections, non-JSON or truncated bodies, delays) can be
//!   injected per [`Target`].
//!
//! Endpoints (one server answers for both the API and the account host):
//!
//! | path | what |
//! |---|---|
//! | `GET /oauth2_user/authorize2` | validates and auto-approves, `302` to `redirect_uri?code=…&state=…` (`/oauth2_user/authorize` is a 404) |
//! | `GET /logout?r=…` | `302` to `r` if it is this server's `authorize2` URL |
//! | `GET /partner/disconnect_partner/<client_id>?selecteduser=<userid>` | the user unlinks the app |
//! | `POST /v2/oauth2` | `action=requesttoken`, `grant_type=authorization_code` or `refresh_token` |
//! | `POST /v2/signature` | `action=getnonce` |
//! | `/measure`, `/v2/measure`, `/v2/sleep`, `/v2/user`, `/v2/heart` | data, `Authorization: Bearer …` |
//! | `/notify` | `action=subscribe`, `get`, `list`, `update`, `revoke`, bearer required |
//!
//! Anything else is a real HTTP 404.
//!
//! Notifications work as Withings describes them: `subscribe` (and `update`) first sends a
//! `HEAD` to the callback URL and refuses with status 293 unless it answers 2xx within
//! [`SimConfig::notify_timeout`]; [`Simulator::add_measure`], [`Simulator::add_activity`] and
//! [`Simulator::send_notification`] POST the notification form to every matching subscription,
//! retried every [`SimConfig::notify_retry_interval`] until accepted, and a subscription whose
//! callback fails [`SimConfig::notify_max_failures`] times in a row is removed;
//! [`Simulator::unlink_user`] and [`Simulator::delete_user`] send `action=unlink` / `delete` to
//! the user's `appli=46` subscriptions. Callbacks are reached over plain http only (loopback
//! receivers); [`Simulator::notify_counters`] counts checks, deliveries and failures.
//!
//! The data endpoints answer from a seeded history per user ([`HistoryConfig`]): getmeas,
//! getactivity, getintradayactivity, getworkouts, sleep get and getsummary, heart list and get,
//! getdevice and getgoals, with the shapes and traps of real answers (rows out of date order,
//! late uploads, edits, unknown codes, segmental measures by `position`, opaque offsets, `more`
//! an integer on getmeas and a boolean on v2, an empty answer when `lastupdate` and a window
//! are mixed, 24 h caps on sleep get and intraday). [`Simulator::add_group`],
//! [`edit_group`](Simulator::edit_group) and [`delete_group`](Simulator::delete_group) change
//! it; [`Simulator::measure_groups`] and [`Simulator::rows`] show what it holds;
//! [`Simulator::calls`] counts calls per user and action.
//!
//! Data answers are compressed when the request's `Accept-Encoding` allows (`br`, `gzip` or
//! `deflate`, in that order of preference on equal `q`), as a web server in front of the API
//! would; [`Simulator::set_response_encoding`] forces a coding whatever the request says.
//!
//! The simulator keeps its own clock (`SystemTime::now()` plus an offset moved by
//! [`Simulator::advance`]), so tests never have to sleep through lifetimes.
//!
//! It is an independent implementation: it shares no code with the client side of
//! `tower-withings`, only its types in this API ([`UserId`], [`Endpoints`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tower_withings::UserId;
//! use withings_sim::Simulator;
//! let sim = Simulator::start().await?;
//! sim.register_client("my-app", "my-secret", &["https://app.example.com/callback"]);
//! let grant = sim.issue_grant("my-app", UserId(46865875), "user.info,user.metrics");
//! println!("API at {} with token {}", sim.api_base(), grant.access_token);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod data;
mod encoding;
mod history;
mod notify;
mod oauth;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tower_withings::{Endpoints, UserId};

use state::State;

/// The user `authorize2` approves as unless [`Simulator::set_approving_user`] says otherwise.
pub const DEFAULT_USER_ID: UserId = UserId(46_865_875);

/// The user `authorize2` approves as when called with `mode=demo`.
pub const DEMO_USER_ID: UserId = UserId(33_791_324);

/// How long an authorization code stays valid (Withings FAQ: 30 seconds).
pub const CODE_TTL: Duration = Duration::from_secs(30);

/// How long a nonce obtained from `getnonce` stays valid.
pub const NONCE_TTL: Duration = Duration::from_secs(30 * 60);

/// How far the `timestamp` sent to `getnonce` may be from the simulator clock.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(10 * 60);

/// Presenting the same refresh token again within this window gets status 601
/// "Same arguments in less than 10 seconds".
pub const SAME_ARGS_WINDOW: Duration = Duration::from_secs(10);

/// After a refresh, the previous refresh token stays valid at most this long
/// (or until the first successful use of the new access token).
pub const ROTATION_GRACE: Duration = Duration::from_secs(8 * 3600);

/// Lifetime of a refresh token (one year).
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The scopes `authorize2` accepts (as a comma-separated list).
pub const KNOWN_SCOPES: [&str; 4] = [
    "user.info",
    "user.metrics",
    "user.activity",
    "user.sleepevents",
];

/// Withings' per-app request limit, as [`SimConfig::app_rate_limit`] applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppRateLimit {
    /// Requests allowed in any window.
    pub limit: u32,
    /// The window (60 s at Withings; seconds in tests).
    pub window: Duration,
}

/// Tunable behaviour of a [`Simulator`]. Build it with struct update syntax:
///
/// ```
/// # use std::time::Duration;
/// # use withings_sim::SimConfig;
/// let config = SimConfig { access_token_ttl: Duration::from_secs(60), ..SimConfig::default() };
/// # assert_eq!(config.token_latency, Duration::ZERO);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Lifetime of newly issued access tokens; also their `expires_in`. Default 10 800 s (3 h).
    pub access_token_ttl: Duration,
    /// Delay added to every `/v2/oauth2` answer. The request is processed (codes consumed,
    /// tokens rotated) *before* the delay, like a slow network on the way back. Default 0.
    pub token_latency: Duration,
    /// The user `authorize2` approves as (without `mode=demo`). Default [`DEFAULT_USER_ID`].
    pub approving_user: UserId,
    /// If set, each client may make at most this many data calls per simulated minute; the
    /// excess gets status 601 "Too many request". Default `None` (no limit).
    pub data_rate_limit_per_minute: Option<u32>,
    /// If set, Withings' app-wide limit: at most `limit` requests to the API host (data,
    /// notify, token and signature calls, every user together) in any `window` of real time;
    /// the excess gets status 601 "Too many request" with `body.wait_seconds`. While set, the
    /// simulator logs every arrival ([`Simulator::busiest_window`]). Default `None`.
    pub app_rate_limit: Option<AppRateLimit>,
    /// How long a callback has to answer the subscribe-time `HEAD` check and each delivery
    /// (Withings: 2 s). Default 2 s.
    pub notify_timeout: Duration,
    /// How long after a failed delivery it is tried again (OPEN: Withings does not say).
    /// Default 60 s; tests use a few milliseconds.
    pub notify_retry_interval: Duration,
    /// After this many consecutive failed deliveries to a subscription, it is removed (OPEN:
    /// an older Withings page says 4, a newer one 10 attempts). Default 10.
    pub notify_max_failures: u32,
    /// Whether a 3xx answer to a delivery counts as success (OPEN: a newer Withings page says
    /// anything below 400 does; the documented rule is 2xx). Default `false`.
    pub notify_accept_below_400: bool,
    /// Each delivered notification is sent this many extra times, as Withings does when it
    /// missed an answer: the receiver must deliver it once. Default 0.
    pub notify_duplicates: u32,
    /// The data every user has (see [`HistoryConfig`]).
    pub history: HistoryConfig,
}

/// The seeded history each user's data endpoints serve, drawn the first time the user's data
/// is needed, the same for the same seed, user and anchor.
///
/// Each day holds `groups_per_day` measure groups (the first a weighing, the others blood
/// pressure, segmental composition, manual entries, objectives, temperature or codes few
/// clients know), an activity row, a night (segments and a summary), a workout every third
/// day and an ECG every fifth. One group in ten is uploaded 3 to 40 days after its `date`; about
/// one in twelve is edited days after its upload.
///
/// ```
/// # use withings_sim::{HistoryConfig, SimConfig};
/// let config = SimConfig {
///     history: HistoryConfig { days: 100, groups_per_day: 10, page_size: 17, ..HistoryConfig::default() },
///     ..SimConfig::default()
/// };
/// # assert_eq!(config.history.seed, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Seeds every user's history (mixed with the user id). Default 1.
    pub seed: u64,
    /// Days of history, ending at the anchor. Default 7 (small: suites that start thousands
    /// of users stay fast; tests and `withings sim` that want more say so).
    pub days: u32,
    /// Measure groups per day. Default 2.
    pub groups_per_day: u32,
    /// Rows per page on the paged endpoints (getmeas, getactivity, getworkouts, sleep
    /// getsummary, heart list). Default 50.
    pub page_size: usize,
    /// When the history ends (Unix seconds); `None`: the simulator's now when the user's data
    /// is first needed. Default `None`.
    pub anchor: Option<u64>,
    /// Whether a call that mixes `lastupdate` with a window (`startdate`/`enddate`, or
    /// `startdateymd`/`enddateymd`) gets an empty answer, as Withings' documents warn ("DO NOT
    /// USE WITH") and a peer's users saw (vangorra/python_withings_api#68). `false`: both
    /// filters apply. Default `true`.
    pub mixed_selection_empty: bool,
    /// Whether measure groups reach the cloud late (one in ten 3 to 40 days after `date`, half
    /// the others up to 36 h after) and are edited days later. `false`: every group is uploaded
    /// within the hour and never edited, for tests that count on dates alone. Default `true`.
    pub late_uploads: bool,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            seed: 1,
            days: 7,
            groups_per_day: 2,
            page_size: 50,
            anchor: None,
            mixed_selection_empty: true,
            late_uploads: true,
        }
    }
}

/// One measure of a [`SimGroup`]: `value × 10^unit` in the type's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMeasure {
    /// The measure type (`type` on the wire): 1 weight, 173 segmental fat-free mass, …
    pub meastype: i64,
    /// The integer value.
    pub value: i64,
    /// The power of ten.
    pub unit: i64,
    /// The body part of a segmental measure (`position`), absent otherwise.
    pub position: Option<i64>,
}

impl SimMeasure {
    /// A measure without a position.
    pub fn new(meastype: i64, value: i64, unit: i64) -> SimMeasure {
        SimMeasure {
            meastype,
            value,
            unit,
            position: None,
        }
    }
}

/// A measure group as the simulator holds it (see [`Simulator::measure_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    /// The group id.
    pub grpid: u64,
    /// How it was attributed (0 device, 2 manual, 10, 17, 10 000: seen in the wild).
    pub attrib: i64,
    /// 1 real measure, 2 objective.
    pub category: i64,
    /// When it was measured (Unix seconds).
    pub date: u64,
    /// When it reached the cloud.
    pub created: u64,
    /// When it last changed.
    pub modified: u64,
    /// The device that took it (the library reads it as `MeasureGroup::source`).
    pub source: SimSource,
    /// Its measures, in the order they are sent.
    pub measures: Vec<SimMeasure>,
}

/// The device of a [`SimGroup`], as getmeas writes it flat beside the group's data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimSource {
    /// The device, `None` on manual entries.
    pub deviceid: Option<String>,
    /// The device's hash, `None` on manual entries.
    pub hash_deviceid: Option<String>,
    /// The device model's name.
    pub model: Option<String>,
    /// The device model's code.
    pub modelid: Option<i64>,
}

/// A kind of v2 rows, for [`Simulator::rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Series {
    /// getactivity `activities`.
    Activity,
    /// getworkouts `series`.
    Workouts,
    /// sleep get `series` (segments of the nights).
    SleepSegments,
    /// sleep getsummary `series`.
    SleepSummaries,
    /// heart list `series`.
    Ecgs,
    /// getdevice `devices`.
    Devices,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            access_token_ttl: Duration::from_secs(10_800),
            token_latency: Duration::ZERO,
            approving_user: DEFAULT_USER_ID,
            data_rate_limit_per_minute: None,
            app_rate_limit: None,
            notify_timeout: Duration::from_secs(2),
            notify_retry_interval: Duration::from_secs(60),
            notify_max_failures: 10,
            notify_accept_below_400: false,
            notify_duplicates: 0,
            history: HistoryConfig::default(),
        }
    }
}

/// The default configuration serving `history`:
/// `Simulator::start_with(HistoryConfig { days: 3, ..HistoryConfig::default() }.into())`.
impl From<HistoryConfig> for SimConfig {
    fn from(history: HistoryConfig) -> Self {
        SimConfig {
            history,
            ..SimConfig::default()
        }
    }
}

/// Tokens seeded with [`Simulator::issue_grant`], as a code exchange would have returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGrant {
    /// The access token (40 lowercase hex characters).
    pub access_token: String,
    /// The refresh token (40 lowercase hex characters).
    pub refresh_token: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
}

/// Which group of endpoints a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `POST /v2/oauth2` (code exchange and refresh).
    TokenEndpoint,
    /// `POST /v2/signature` (getnonce).
    Signature,
    /// The data endpoints: `/measure`, `/v2/measure`, `/v2/sleep`, `/v2/user`, `/v2/heart`,
    /// `/notify`.
    Data,
}

/// A failure served instead of the normal answer, see [`Simulator::inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A real HTTP error with this status code and a small HTML body (as a proxy would send).
    /// A code outside 100..=999 is served as 500.
    HttpStatus(u16),
    /// Close the connection without sending any response.
    Drop,
    /// HTTP 200 with `{"status":status,"body":{..},"error":error}`; `wait_seconds`, if any, is
    /// put in the body.
    BodyStatus {
        /// The body `status`.
        status: i64,
        /// The body `error` message.
        error: String,
        /// Optional `body.wait_seconds`.
        wait_seconds: Option<u64>,
    },
    /// HTTP 200 with an HTML page instead of JSON.
    NonJson,
    /// HTTP 200 with a JSON body cut in the middle (correct `Content-Length`).
    Truncated,
    /// Wait this long, then serve the request normally.
    Delay(Duration),
}

/// What the simulator has seen and served so far (a snapshot, see [`Simulator::counters`]).
///
/// Calls are counted when they arrive, before any injected [`Fault`] is applied, so a faulted
/// call still counts in `code_exchanges`, `refreshes`, `nonces` and `data_calls`. The `served_*`
/// counters only count answers the simulator produced itself, never injected faults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `/v2/oauth2` calls with `grant_type=authorization_code` in the body (successful or not).
    pub code_exchanges: u64,
    /// Successful code exchanges.
    pub successful_code_exchanges: u64,
    /// `/v2/oauth2` calls with `grant_type=refresh_token` in the body (successful or not).
    pub refreshes: u64,
    /// Successful refreshes (a new token pair was issued).
    pub successful_refreshes: u64,
    /// Calls to `/v2/signature` (getnonce), successful or not.
    pub nonces: u64,
    /// Calls to the data endpoints.
    pub data_calls: u64,
    /// Data calls answered with body status 401 (invalid access token).
    pub served_401: u64,
    /// Answers with body status 601 (same refresh within 10 s, or data rate limit).
    pub served_601: u64,
    /// Answers with 503 "Invalid Params: invalid refresh_token".
    pub served_invalid_refresh: u64,
    /// Requests to `/v2/oauth2` or `/v2/signature` that carried an `Authorization` header.
    pub bearer_where_none_belongs: u64,
    /// Data calls authenticated by an `access_token` query/body parameter instead of the
    /// `Authorization` header.
    pub access_token_in_params: u64,
}

/// What the simulator did with notifications so far (see [`Simulator::notify_counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyCounters {
    /// Subscriptions created (`action=subscribe` accepted for a new callback and appli).
    pub subscriptions_made: u64,
    /// `HEAD` checks of a callback URL (at subscribe and update).
    pub callback_checks: u64,
    /// Checks that failed (no 2xx in time): the subscription was refused.
    pub callback_check_failures: u64,
    /// Delivery attempts (first tries and retries, not the duplicates).
    pub delivery_attempts: u64,
    /// Attempts the callback accepted.
    pub deliveries: u64,
    /// Attempts that failed (error status, no answer in time, connection refused).
    pub delivery_failures: u64,
    /// Extra copies sent of delivered notifications ([`SimConfig::notify_duplicates`]).
    pub duplicates_sent: u64,
    /// Subscriptions removed after [`SimConfig::notify_max_failures`] consecutive failures.
    pub subscriptions_removed: u64,
}

/// A subscription as the simulator holds it (see [`Simulator::subscriptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimSubscription {
    /// The app that subscribed.
    pub client_id: String,
    /// The callback URL.
    pub callbackurl: String,
    /// The category.
    pub appli: i64,
    /// The comment sent with it.
    pub comment: Option<String>,
    /// Consecutive failed deliveries so far.
    pub failures: u32,
}

/// State shared between the [`Simulator`] handle and the server tasks.
pub(crate) struct Shared {
    state: Mutex<State>,
    addr: SocketAddr,
    /// Callback checks and deliveries go through this (plain http, no connection kept).
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    /// Where delivery tasks run.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Locks the state. A poisoned lock is recovered: the state stays usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated Withings server on `127.0.0.1:<random port>`.
///
/// The same server answers both the API host (`wbsapi.withings.net`) and the account host
/// (`account.withings.com`) paths. It shuts down when dropped (the accept loop and every open
/// connection are aborted).
pub struct Simulator {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// The user `authorize2` approves as when called with `mode=demo`.
    pub const DEMO_USER_ID: UserId = DEMO_USER_ID;

    /// Starts a simulator with [`SimConfig::default()`]. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// If the loopback listener cannot be created.
    pub async fn start() -> std::io::Result<Simulator> {
        Self::start_with(SimConfig::default()).await
    }

    /// Starts a simulator with the given configuration. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// If the loopback listener cannot be created.
    pub async fn start_with(config: SimConfig) -> std::io::Result<Simulator> {
        Self::start_on(0, config).await
    }

    /// [`start`](Self::start), with an OAuth 2.0 application already registered
    /// ([`register_client`](Self::register_client)): what a test or an example of one app
    /// begins with.
    ///
    /// # Errors
    ///
    /// If the loopback listener cannot be created.
    pub async fn start_with_client(
        client_id: &str,
        client_secret: &str,
        callback_urls: &[&str],
    ) -> std::io::Result<Simulator> {
        let sim = Self::start().await?;
        sim.register_client(client_id, client_secret, callback_urls);
        Ok(sim)
    }

    /// [`start_with`](Self::start_with) on a given port of 127.0.0.1 (`0`: any free one), for a
    /// simulator other programs are pointed at (`withings sim --port P`). A simulator started
    /// again on the port of one just dropped gets it (the socket reuses the address).
    ///
    /// # Errors
    ///
    /// If the loopback listener cannot be created (the port is taken, say).
    pub async fn start_on(port: u16, config: SimConfig) -> std::io::Result<Simulator> {
        let listener = server::bind(port)?;
        let addr = listener.local_addr()?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config)),
            addr,
            client,
            runtime: tokio::runtime::Handle::current(),
        });
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(Simulator { shared, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Base URL to use instead of `https://wbsapi.withings.net`, e.g. `http://127.0.0.1:41234`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Base URL to use instead of `https://account.withings.com` (the same server as
    /// [`api_base`](Self::api_base)).
    pub fn account_base(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// [`Endpoints`] pointing a [`WithingsAuth`](tower_withings::WithingsAuth) at this
    /// simulator (plain http, loopback only):
    /// `WithingsAuth::builder(credentials).endpoints(sim.endpoints())`. Requests must use
    /// [`api_base`](Self::api_base) as it is (`127.0.0.1`, not `localhost`): only that host
    /// gets a token.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::loopback(&self.api_base(), &self.account_base())
            .expect("the simulator's own base URLs are loopback http URLs")
    }

    /// Registers (or replaces) an OAuth 2.0 partner application with its callback URLs.
    /// `authorize2` accepts a `redirect_uri` only if it is exactly one of `callback_urls`.
    pub fn register_client(&self, client_id: &str, client_secret: &str, callback_urls: &[&str]) {
        self.shared.lock().register_client(
            client_id,
            client_secret,
            callback_urls.iter().map(|s| (*s).to_owned()).collect(),
            false,
        );
    }

    /// What the user's browser does at `authorize2` when they approve the app: one GET of
    /// `authorize_url` (from `WithingsAuth::authorize`), not following the redirect. Returns
    /// the callback URL it redirects to, with `code` and `state` (for `Callback::parse`); an
    /// error if it answers anything but a `302` with a `Location`.
    pub async fn approve(&self, authorize_url: &str) -> std::io::Result<String> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let request = http::Request::get(authorize_url)
            .body(http_body_util::Empty::new())
            .map_err(std::io::Error::other)?;
        let response = client
            .request(request)
            .await
            .map_err(std::io::Error::other)?;
        let location = response.headers().get(http::header::LOCATION);
        match (response.status(), location) {
            (http::StatusCode::FOUND, Some(location)) => location
                .to_str()
                .map(str::to_owned)
                .map_err(std::io::Error::other),
            (status, _) => Err(std::io::Error::other(format!(
                "authorize2 answered {status}"
            ))),
        }
    }

    /// Registers (or replaces) OAuth 1.0 credentials: the token endpoint answers
    /// 503 "client_id not authorized" for them (Withings FAQ).
    pub fn register_oauth1_client(&self, client_id: &str, client_secret: &str) {
        self.shared
            .lock()
            .register_client(client_id, client_secret, Vec::new(), true);
    }

    /// Sets the user `authorize2` approves as (without `mode=demo`).
    pub fn set_approving_user(&self, user: UserId) {
        self.shared.lock().config.approving_user = user;
    }

    /// Seeds a token pair directly, as if a code exchange had happened for `user` with
    /// `scope` (comma-separated). The client does not need to be registered, but refreshing
    /// requires it to be. Not counted in [`Counters`].
    pub fn issue_grant(&self, client_id: &str, user: UserId, scope: &str) -> SimGrant {
        self.shared
            .lock()
            .issue_pair(client_id, user.0, scope, None)
    }

    /// The simulator's clock: `SystemTime::now()` plus everything passed to
    /// [`advance`](Self::advance).
    pub fn now(&self) -> SystemTime {
        self.shared.lock().now()
    }

    /// Moves the simulator's clock forward.
    pub fn advance(&self, by: Duration) {
        let mut st = self.shared.lock();
        st.offset = st.offset.saturating_add(by);
    }

    /// Changes the delay added to `/v2/oauth2` answers.
    pub fn set_token_latency(&self, d: Duration) {
        self.shared.lock().config.token_latency = d;
    }

    /// Changes the lifetime of access tokens issued from now on.
    pub fn set_access_token_ttl(&self, d: Duration) {
        self.shared.lock().config.access_token_ttl = d;
    }

    /// Sets or removes the per-client data call limit (see
    /// [`SimConfig::data_rate_limit_per_minute`]).
    pub fn set_data_rate_limit(&self, per_minute: Option<u32>) {
        self.shared.lock().config.data_rate_limit_per_minute = per_minute;
    }

    /// Sets or removes the app-wide limit (see [`SimConfig::app_rate_limit`]).
    pub fn set_app_rate_limit(&self, limit: Option<AppRateLimit>) {
        self.shared.lock().config.app_rate_limit = limit;
    }

    /// The most requests that arrived within any `window` (sliding), from the log kept while
    /// an app rate limit is set: what the limit is checked against.
    pub fn busiest_window(&self, window: Duration) -> usize {
        let st = self.shared.lock();
        let arrivals = &st.arrivals;
        let mut busiest = 0;
        let mut start = 0;
        for (end, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[start]) >= window {
                start += 1;
            }
            busiest = busiest.max(end + 1 - start);
        }
        busiest
    }

    /// The mean number of arrivals in a `window`, over every window start (in steps of a
    /// hundredth of the window) from the first logged arrival to `over` later minus one window:
    /// the sustained rate a sender got, start-up burst and last partial window left out.
    pub fn mean_window(&self, window: Duration, over: Duration) -> f64 {
        let st = self.shared.lock();
        let Some(first) = st.arrivals.first().copied() else {
            return 0.0;
        };
        let step = (window / 100).max(Duration::from_micros(1));
        let (mut start, mut samples, mut total) = (Duration::ZERO, 0u64, 0u64);
        while start + window <= over {
            let (from, to) = (first + start, first + start + window);
            total += st
                .arrivals
                .iter()
                .filter(|t| **t >= from && **t < to)
                .count() as u64;
            samples += 1;
            start += step;
        }
        if samples == 0 {
            return 0.0;
        }
        total as f64 / samples as f64
    }

    /// How many requests arrived while the arrival log was kept.
    pub fn arrivals(&self) -> usize {
        self.shared.lock().arrivals.len()
    }

    /// Answers every data call with this `Content-Encoding` (`"gzip"`, `"x-gzip"`, `"deflate"`
    /// (a zlib stream) or `"br"`), whatever the request's `Accept-Encoding` says, like a server
    /// that compresses anyway. `None` goes back to negotiating from `Accept-Encoding`.
    ///
    /// # Panics
    ///
    /// If the simulator cannot produce that coding.
    pub fn set_response_encoding(&self, encoding: Option<&str>) {
        let coding = encoding.map(|name| {
            encoding::Coding::from_name(name)
                .unwrap_or_else(|| panic!("the simulator cannot encode {name:?}"))
        });
        self.shared.lock().response_encoding = coding;
    }

    /// Serves `fault` to the next `times` requests to `target`, then normal service resumes.
    /// Faults injected for the same target are served in the order they were injected.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        self.shared.lock().inject(target, fault, times);
    }

    /// Removes every pending injected fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// All the user's access and refresh tokens (every client) die and their subscriptions are
    /// removed, with no notification (a revocation on Withings' side;
    /// [`unlink_user`](Self::unlink_user) also notifies). New authorizations work again
    /// afterwards.
    pub fn revoke_user(&self, user: UserId) {
        self.shared.lock().revoke_user(user.0, None);
    }

    /// The user asked for account deletion: data calls and refreshes get
    /// 503 "User is temporarily deactivated" until [`reactivate_user`](Self::reactivate_user).
    pub fn deactivate_user(&self, user: UserId) {
        self.shared.lock().user_mut(user.0).deactivated = true;
    }

    /// The user changed their mind: undoes [`deactivate_user`](Self::deactivate_user).
    pub fn reactivate_user(&self, user: UserId) {
        self.shared.lock().user_mut(user.0).deactivated = false;
    }

    /// The account is gone for good: refreshes fail with "invalid refresh_token" and data calls
    /// with status 401, for every token of this user, present or future. The user's
    /// `appli=46` subscriptions are sent `action=delete`, then every subscription of theirs is
    /// removed.
    pub fn delete_user(&self, user: UserId) {
        let deliveries = {
            let mut st = self.shared.lock();
            st.user_mut(user.0).deleted = true;
            let deliveries = st.user_event(user.0, "delete", None);
            st.subscriptions.retain(|s| s.key.userid != user.0);
            deliveries
        };
        notify::spawn(&self.shared, deliveries);
    }

    /// The user unlinks the app(s) in their Withings account: their `appli=46` subscriptions
    /// are sent `action=unlink` (retried like any notification), then everything
    /// [`revoke_user`](Self::revoke_user) does happens: every token dies and every
    /// subscription of theirs is removed.
    pub fn unlink_user(&self, user: UserId) {
        let deliveries = {
            let mut st = self.shared.lock();
            let deliveries = st.user_event(user.0, "unlink", None);
            st.revoke_user(user.0, None);
            deliveries
        };
        notify::spawn(&self.shared, deliveries);
    }

    /// A new measure group for `user` (`meastype` as in getmeas: 1 weight in `value`·10^`unit`
    /// kg, 9/10/11 blood pressure and pulse, 12/71/73 temperature…), dated the simulator's now:
    /// getmeas returns it from now on, and every subscription of the user for its category
    /// (1, 4 for 9/10/11/54/91, 2 for 12/71/73, 58 for 119) is notified with `startdate` = its date and
    /// `enddate` = date + 1. Returns the date (Unix seconds).
    ///
    /// ```no_run
    /// # use tower_withings::UserId;
    /// # async fn demo(sim: withings_sim::Simulator) {
    /// let date = sim.add_measure(UserId(46865875), 1, 72_500, -3); // 72.5 kg
    /// # let _ = date; }
    /// ```
    pub fn add_measure(&self, user: UserId, meastype: i64, value: i64, unit: i64) -> u64 {
        let (date, deliveries) = self
            .shared
            .lock()
            .add_measure(user.0, meastype, value, unit);
        notify::spawn(&self.shared, deliveries);
        date
    }

    /// A measure group for `user` dated `date` (Unix seconds, in the past for a late upload),
    /// created and modified now: its id. Subscriptions for the appli of its first measure
    /// are notified (`startdate` = `date`, `enddate` = `date` + 1), as for
    /// [`add_measure`](Self::add_measure).
    pub fn add_group(
        &self,
        user: UserId,
        date: u64,
        attrib: i64,
        measures: Vec<SimMeasure>,
    ) -> u64 {
        let (grpid, deliveries) = self.shared.lock().add_group(user.0, date, attrib, measures);
        notify::spawn(&self.shared, deliveries);
        grpid
    }

    /// Replaces the measures of a group of `user`: its `modified` moves to now (at least one
    /// second on) and subscriptions are notified as for [`add_group`](Self::add_group). False
    /// if the user has no such group.
    pub fn edit_group(&self, user: UserId, grpid: u64, measures: Vec<SimMeasure>) -> bool {
        let deliveries = self.shared.lock().edit_group(user.0, grpid, measures);
        let found = deliveries.is_some();
        notify::spawn(&self.shared, deliveries.unwrap_or_default());
        found
    }

    /// Deletes a group of `user`: it is notified, then simply gone. A `lastupdate` read does
    /// not show the deletion; only a re-read of its window does. False if there was none.
    pub fn delete_group(&self, user: UserId, grpid: u64) -> bool {
        let deliveries = self.shared.lock().delete_group(user.0, grpid);
        let found = deliveries.is_some();
        notify::spawn(&self.shared, deliveries.unwrap_or_default());
        found
    }

    /// Every measure group `user` has now, by `grpid`: what a complete read must match.
    pub fn measure_groups(&self, user: UserId) -> Vec<SimGroup> {
        let mut groups = self.shared.lock().history(user.0).groups.clone();
        groups.sort_by_key(|g| g.grpid);
        groups
    }

    /// The rows of `series` `user` has now, as served (every field; oldest first).
    pub fn rows(&self, user: UserId, series: Series) -> Vec<serde_json::Value> {
        let mut st = self.shared.lock();
        let h = st.history(user.0).v2();
        match series {
            Series::Activity => h.activities.clone(),
            Series::Workouts => h.workouts.clone(),
            Series::SleepSegments => h.segments.clone(),
            Series::SleepSummaries => h.summaries.clone(),
            Series::Ecgs => h.ecgs.clone(),
            Series::Devices => h.devices.clone(),
        }
    }

    /// The goals of `user` as getgoals sends them (`None`: the user set none, sent as
    /// `goals: []`).
    pub fn goals(&self, user: UserId) -> Option<serde_json::Value> {
        self.shared.lock().history(user.0).goals.clone()
    }

    /// How many data calls `user`'s tokens made to `path` with `action` (`"/v2/sleep"`,
    /// `"get"`), counted once the token is accepted.
    pub fn calls(&self, user: UserId, path: &str, action: &str) -> u64 {
        let st = self.shared.lock();
        let key = (user.0, path.to_owned(), action.to_owned());
        st.action_calls.get(&key).copied().unwrap_or(0)
    }

    /// Today's activity for `user` (`steps`): getactivity returns it, and `appli=16`
    /// subscriptions are notified with today's range. Returns `(startdate, enddate)`.
    pub fn add_activity(&self, user: UserId, steps: u64) -> (u64, u64) {
        let (range, deliveries) = self.shared.lock().add_activity(user.0, steps);
        notify::spawn(&self.shared, deliveries);
        range
    }

    /// Sends a data notification for `appli` with this range to every subscription of
    /// `user` for it, without adding data (e.g. sleep, ECG).
    pub fn send_notification(&self, user: UserId, appli: i64, startdate: u64, enddate: u64) {
        let deliveries = self
            .shared
            .lock()
            .data_notifications(user.0, appli, startdate, enddate);
        notify::spawn(&self.shared, deliveries);
    }

    /// The subscriptions of `user`, every app's.
    pub fn subscriptions(&self, user: UserId) -> Vec<SimSubscription> {
        (self.shared.lock().subscriptions.iter())
            .filter(|s| s.key.userid == user.0)
            .map(|s| SimSubscription {
                client_id: s.key.client_id.clone(),
                callbackurl: s.key.callbackurl.clone(),
                appli: s.key.appli,
                comment: s.comment.clone(),
                failures: s.failures,
            })
            .collect()
    }

    /// Changes [`SimConfig::notify_retry_interval`].
    pub fn set_notify_retry_interval(&self, interval: Duration) {
        self.shared.lock().config.notify_retry_interval = interval;
    }

    /// Changes [`SimConfig::notify_max_failures`].
    pub fn set_notify_max_failures(&self, failures: u32) {
        self.shared.lock().config.notify_max_failures = failures;
    }

    /// Changes [`SimConfig::notify_duplicates`].
    pub fn set_notify_duplicates(&self, extra: u32) {
        self.shared.lock().config.notify_duplicates = extra;
    }

    /// A snapshot of the notification counters.
    pub fn notify_counters(&self) -> NotifyCounters {
        self.shared.lock().notify_counters
    }

    /// Kills one access token (server-side revocation); data calls with it get status 401.
    pub fn revoke_access_token(&self, token: &str) {
        if let Some(a) = self.shared.lock().access.get_mut(token) {
            a.revoked = true;
        }
    }

    /// Whether a data call with this access token would currently be accepted
    /// (ignoring scope and user deactivation).
    pub fn is_access_token_valid(&self, token: &str) -> bool {
        let st = self.shared.lock();
        st.access_token_usable(token)
    }

    /// Whether a refresh with this refresh token would currently be accepted by its own client
    /// (ignoring the 10 s same-arguments window and user deactivation).
    pub fn is_refresh_token_valid(&self, token: &str) -> bool {
        let st = self.shared.lock();
        st.refresh_token_usable(token)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }

    /// Resets every counter to zero (the notification and per-action counters too).
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.counters = Counters::default();
        st.notify_counters = NotifyCounters::default();
        st.action_calls.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_make_this_simulator_the_api_host() {
        let sim = Simulator::start().await.unwrap();
        let endpoints = sim.endpoints();
        let measure: http::Uri = format!("{}/measure", sim.api_base()).parse().unwrap();
        assert_eq!(endpoints.api_path(&measure), Some("/measure"));
        // The same port under another name is another host: no token goes there.
        let port = sim.addr().port();
        let elsewhere: http::Uri = format!("http://localhost:{port}/measure").parse().unwrap();
        assert_eq!(endpoints.api_path(&elsewhere), None);
    }

    #[tokio::test]
    async fn approve_gives_the_callback_url_and_refuses_an_unknown_app() {
        let sim = Simulator::start().await.unwrap();
        sim.register_client("app", "secret", &["https://app.example/cb"]);
        let authorize = |client_id: &str| {
            format!(
                "{}/oauth2_user/authorize2?response_type=code&client_id={client_id}\
                 &redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=user.metrics&state=s1",
                sim.account_base()
            )
        };
        let callback = sim.approve(&authorize("app")).await.unwrap();
        assert!(
            callback.starts_with("https://app.example/cb?code="),
            "{callback}"
        );
        assert!(callback.ends_with("&state=s1"), "{callback}");
        let refused = sim.approve(&authorize("stranger")).await.unwrap_err();
        assert!(refused.to_string().contains("400"), "{refused}");
    }
}

/// The README's example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
