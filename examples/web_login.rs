//! A web app (axum) that logs its users in with Withings, the server-side web flow:
//!
//! - `GET /login` starts a browser session (a random cookie), keeps the `AuthorizeRequest` in
//!   it and redirects the browser to Withings' authorize2 page;
//! - `GET /callback` is where Withings sends the browser back with a code and a `state`. The
//!   state must be the one issued to *this* browser's session (that stops cross-site request
//!   forgery); then the code is exchanged and the session is logged in as that Withings user;
//! - `GET /me` calls getmeas for the session's user through the layer.
//!
//! `main` runs it against the bundled Withings simulator, which approves every login at once:
//!
//! ```text
//! cargo run --example web_login --features rustls
//! # then open http://127.0.0.1:3000/ in a browser (PORT=… picks another port)
//! ```
//!
//! `tests/examples.rs` drives the same router with an HTTP client that follows redirects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{BoxError, Layer, ServiceExt};
use tower_withings::{
    Credentials, Endpoints, Error, Scope, UserId, WithingsAuth, WithingsAuthService,
    oauth::AuthorizeRequest, oauth::Callback, oauth::RedirectPolicy, transport,
};
use withings_sim::Simulator;

const CLIENT_ID: &str = "web-login-example";
const CLIENT_SECRET: &str = "web-login-example-secret";

/// hyper-util's client with rustls, as `transport::https_client()` makes it.
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What the app shares between requests.
pub struct App {
    auth: WithingsAuth,
    /// The client for Withings API calls: the auth layer over hyper (one connection pool).
    api: WithingsAuthService<HttpsClient>,
    api_base: String,
    /// `…/callback`, exactly as registered with Withings.
    redirect_uri: String,
    /// Session id (the `sid` cookie) → session. A real app would use its session store (with
    /// expiry: abandoned logins pile up here).
    sessions: Mutex<HashMap<String, Session>>,
}

enum Session {
    /// Sent to Withings, not back yet: what `/callback` checks against.
    Pending(AuthorizeRequest),
    /// Logged in as this Withings user.
    User(UserId),
}

impl App {
    /// The app for Withings at `endpoints`, with our callback URL (registered with Withings).
    pub fn new(auth: WithingsAuth, endpoints: &Endpoints, redirect_uri: String) -> Arc<App> {
        Arc::new(App {
            api: auth.layer().layer(transport::https_client()),
            auth,
            api_base: endpoints.api_base().to_owned(),
            redirect_uri,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The app for a simulator, listening at `base` (e.g. `http://127.0.0.1:3000`).
    pub fn on_simulator(sim: &Simulator, base: &str) -> Result<Arc<App>, BoxError> {
        // The simulator, like Withings, accepts only callback URLs registered for the app.
        let redirect_uri = format!("{base}/callback");
        sim.register_client(CLIENT_ID, CLIENT_SECRET, &[&redirect_uri]);
        // Loopback endpoints: tokens may travel over plain http, to this machine only.
        let endpoints = Endpoints::loopback(&sim.api_base(), &sim.account_base())?;
        let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .endpoints(endpoints.clone())
            // Our callback is http://127.0.0.1:PORT/callback. Real Withings refuses such callback
            // URLs (it wants https and a host name), so the client refuses them by default too;
            // we allow loopback callbacks because this app and its Withings are both local.
            .redirect_policy(RedirectPolicy::AllowLoopback)
            .build(transport::https_client());
        Ok(App::new(auth, &endpoints, redirect_uri))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/me", get(me))
        .with_state(app)
}

async fn home(State(app): State<Arc<App>>, headers: HeaderMap) -> Html<String> {
    Html(match logged_in(&app, &headers) {
        Some(user) => format!("Logged in as Withings user {user}: <a href=\"/me\">your weight</a>"),
        None => "<a href=\"/login\">Log in with Withings</a>".to_owned(),
    })
}

async fn login(State(app): State<Arc<App>>) -> Response {
    let request = match app.auth.authorize(&app.redirect_uri, &[Scope::UserMetrics]) {
        Ok(request) => request,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let url = request.url().to_owned();
    let sid = new_session(&app, Session::Pending(request));
    println!("/login     new session, browser sent to Withings' authorize2");
    (session_cookie(&sid), Redirect::to(&url)).into_response()
}

async fn callback(State(app): State<Arc<App>>, headers: HeaderMap, uri: Uri) -> Response {
    // This browser's pending login, taken out: a login is completed at most once.
    let removed = session_id(&headers).and_then(|sid| app.sessions().remove(&sid));
    let Some(Session::Pending(request)) = removed else {
        println!("/callback  refused: no login in progress in this browser");
        return refuse("no login in progress in this browser");
    };
    // `exchange_code` checks the state against the one this session was issued (in constant
    // time) before it spends the code; a user who declined arrives with `error=…` instead.
    let exchanged = match Callback::parse(uri.query().unwrap_or_default()) {
        Ok(callback) => app.auth.exchange_code(&callback, &request).await,
        Err(error) => Err(error),
    };
    match exchanged {
        Ok(user) => {
            // A fresh session id once logged in: the pre-login one is gone.
            let sid = new_session(&app, Session::User(user));
            println!("/callback  state matches, code exchanged: logged in as Withings user {user}");
            (session_cookie(&sid), Redirect::to("/me")).into_response()
        }
        Err(error) => {
            println!("/callback  refused: {error}");
            refuse(&error.to_string())
        }
    }
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(user) = logged_in(&app, &headers) else {
        return (StatusCode::UNAUTHORIZED, "not logged in: start at /login").into_response();
    };
    match latest_weight(&app, user).await {
        Ok((kg, count)) => {
            println!("/me        getmeas for Withings user {user} through the layer");
            format!("Withings user {user}: latest weight {kg} kg ({count} weighings)\n")
                .into_response()
        }
        // The user unlinked the app, or never finished logging in: only a new login helps.
        Err(error)
            if matches!(
                error.downcast_ref(),
                Some(Error::NeedsReauthorization(_) | Error::UnknownUser(_))
            ) =>
        {
            (
                StatusCode::UNAUTHORIZED,
                format!("{error}: log in again at /login"),
            )
                .into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// getmeas (weights) for `user` through the layer: the latest weight in kg, and how many.
async fn latest_weight(app: &App, user: UserId) -> Result<(f64, usize), BoxError> {
    let request = http::Request::post(format!("{}/measure", app.api_base))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user) // whose token the layer attaches
        .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))?;
    let response = app.api.clone().oneshot(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    if json["status"] != 0 {
        return Err(format!("Withings status {}", json["status"]).into());
    }
    let groups = json["body"]["measuregrps"]
        .as_array()
        .ok_or("no measuregrps")?;
    // Withings sends `value` and `unit` (a power of ten): 70875 and -3 mean 70.875 kg.
    let weight = &groups.first().ok_or("no weighing yet")?["measures"][0];
    match (weight["value"].as_f64(), weight["unit"].as_i64()) {
        (Some(value), Some(unit)) => Ok((value / 10f64.powi(i32::try_from(-unit)?), groups.len())),
        _ => Err(format!("unexpected measure: {weight}").into()),
    }
}

fn refuse(why: &str) -> Response {
    let message = format!("login failed: {why}. Start again at /login\n");
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// The Withings user the browser's session is logged in as.
fn logged_in(app: &App, headers: &HeaderMap) -> Option<UserId> {
    match app.sessions().get(&session_id(headers)?) {
        Some(Session::User(user)) => Some(*user),
        _ => None,
    }
}

/// Stores `session` under a new unguessable id (128 random bits).
fn new_session(app: &App, session: Session) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let sid: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    app.sessions().insert(sid.clone(), session);
    sid
}

/// `SameSite=Lax` still sends the cookie when Withings redirects the browser back (a top-level
/// GET navigation). Add `Secure` when the app is served over https.
fn session_cookie(sid: &str) -> [(header::HeaderName, String); 1] {
    let cookie = format!("sid={sid}; Path=/; HttpOnly; SameSite=Lax");
    [(header::SET_COOKIE, cookie)]
}

/// The `sid` cookie the browser sent, if any.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("sid=").map(str::to_owned))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let sim = Simulator::start().await?;
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = App::on_simulator(&sim, &base)?;
    println!("simulated Withings at {}", sim.api_base());
    println!("open {base}/ in a browser (Ctrl-C stops)");
    axum::serve(listener, router(app)).await?;
    Ok(())
}
