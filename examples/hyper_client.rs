//! The layer in a typical client stack: tower-http tracing and timeouts over hyper-util's
//! client with rustls.
//!
//! ```text
//! TraceLayer  →  WithingsAuthLayer  →  TimeoutLayer  →  hyper-util client (https)
//! ```
//!
//! - `TraceLayer`, outermost, logs each call once, as the caller sees it.
//! - `WithingsAuthLayer` adds the user's bearer token, refreshes it when needed and replays a
//!   call Withings refused.
//! - `TimeoutLayer`, inside it, bounds each attempt: a replay gets a time budget of its own.
//!
//! By default it runs against the bundled Withings simulator (no account, no network):
//!
//! ```text
//! cargo run --example hyper_client --features rustls
//! ```
//!
//! Against real Withings, with your app's credentials and a callback URL registered for it (you
//! paste the URL Withings redirects your browser to):
//!
//! ```text
//! WITHINGS_CLIENT_ID=… WITHINGS_CLIENT_SECRET=… WITHINGS_REDIRECT_URI=https://your.app/callback \
//!     cargo run --example hyper_client --features rustls -- --real
//! ```
//!
//! `RUST_LOG` picks what is logged (default `tower_http=debug`).

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use tower_withings::{
    Credentials, Endpoints, Scope, UserId, WithingsAuth, oauth::Callback, transport,
};
use withings_sim::{Fault, Simulator, Target};

const CLIENT_ID: &str = "example-app";
const CLIENT_SECRET: &str = "example-app-secret";
/// The callback URL registered for the app. Nothing listens there in this example: we only read
/// the redirect the simulator sends the browser to.
const REDIRECT_URI: &str = "https://app.example.com/withings/callback";

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "tower_http=debug".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let outcome = if std::env::args().any(|arg| arg == "--real") {
        real().await
    } else {
        run().await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper_client failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The client stack. The same code serves the simulator and real Withings: the https client
/// also speaks plain http, which the simulator's loopback endpoints allow.
pub fn client(
    auth: &WithingsAuth,
    timeout: Duration,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl Body<Data = Bytes, Error: Into<BoxError>>>,
    Error = BoxError,
> + Clone {
    ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(auth.layer())
        // A slow attempt is answered `504 Gateway Timeout` (a response, not an error).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        // TimeoutLayer needs a response body with a `Default` (its empty 504 body): box hyper's.
        .map_response(|r: Response<Incoming>| r.map(|body| body.boxed()))
        .service(transport::https_client())
}

/// The whole story against the simulator. Fails if anything is not as expected.
pub async fn run() -> Result<(), BoxError> {
    // A local Withings that knows our app and its callback URL.
    let sim = Simulator::start_with_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]).await?;
    println!("simulated Withings at {}", sim.api_base());

    // `Endpoints::loopback` lets tokens travel over plain http, to this machine only.
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(&sim.api_base(), &sim.account_base())?)
        .build(transport::https_client()); // the client for token calls

    // A user authorizes the app; the simulator approves at once.
    let request = auth.authorize(REDIRECT_URI, &[Scope::UserMetrics])?;
    let callback = Callback::parse(&sim.approve(request.url()).await?)?;
    let user = auth.exchange_code(&callback, &request).await?;
    println!("Withings user {user} authorized the app");

    let timeout = Duration::from_secs(1);
    let client = client(&auth, timeout);

    // 1. A call through the stack.
    let (status, body) = getmeas(&client, &sim.api_base(), user).await?;
    let groups = measure_groups(status, &body)?;
    println!("getmeas: {groups} measure groups");

    // 2. Withings is slow once: the timeout answers 504 for that call, and the auth layer hands
    //    the 504 back untouched (it is not an authorization problem).
    sim.inject(Target::Data, Fault::Delay(timeout * 2), 1);
    let (status, _) = getmeas(&client, &sim.api_base(), user).await?;
    println!("getmeas while Withings is slow: HTTP {status}");
    if status != StatusCode::GATEWAY_TIMEOUT {
        return Err(format!("expected 504 from the timeout, got {status}").into());
    }

    // 3. The next call goes through again.
    let (status, body) = getmeas(&client, &sim.api_base(), user).await?;
    measure_groups(status, &body)?;
    println!("getmeas after the slow call: ok");

    // 4. Withings revokes the access token: the call is refused (HTTP 200, body status 401);
    //    the layer refreshes the token and replays the call, all inside the one traced call.
    let stored = auth.store().load(user).await?.ok_or("no stored token")?;
    sim.revoke_access_token(stored.token.access_token.expose());
    let (status, body) = getmeas(&client, &sim.api_base(), user).await?;
    measure_groups(status, &body)?;
    let metrics = auth.metrics();
    if (metrics.refreshes_started, metrics.replays) != (1, 1) {
        return Err(format!("expected one refresh and one replay: {metrics:?}").into());
    }
    println!("getmeas after Withings revoked the token: ok (1 refresh, 1 replay)");
    Ok(())
}

/// The same stack against real Withings (https, the public cloud).
async fn real() -> Result<(), BoxError> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| format!("set {name} (see the top of hyper_client.rs)"))
    };
    let credentials = Credentials::new(var("WITHINGS_CLIENT_ID")?, var("WITHINGS_CLIENT_SECRET")?);
    let redirect_uri = var("WITHINGS_REDIRECT_URI")?;
    // Default endpoints: https://wbsapi.withings.net and https://account.withings.com.
    let auth = WithingsAuth::builder(credentials).build(transport::https_client());

    let request = auth.authorize(&redirect_uri, &[Scope::UserMetrics])?;
    println!("Open this URL, approve, then paste the URL your browser lands on (within 30 s):");
    println!("{}", request.url());
    let mut landed = String::new();
    std::io::stdin().read_line(&mut landed)?;
    let user = auth
        .exchange_code(&Callback::parse(&landed)?, &request)
        .await?;

    let client = client(&auth, Duration::from_secs(10));
    let (status, body) = getmeas(&client, Endpoints::withings().api_base(), user).await?;
    let groups = measure_groups(status, &body)?;
    println!("Withings user {user}: {groups} measure groups");
    Ok(())
}

/// `POST {api}/measure action=getmeas` (weights) for `user` through `client`.
async fn getmeas<S, B>(client: &S, api: &str, user: UserId) -> Result<(StatusCode, Bytes), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError> + Clone,
    B: Body<Data = Bytes, Error: Into<BoxError>>,
{
    let request = Request::post(format!("{api}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user) // whose token the layer attaches
        .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))?;
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(Into::into)?;
    Ok((status, body.to_bytes()))
}

/// The number of measure groups in a successful getmeas answer.
fn measure_groups(status: StatusCode, body: &[u8]) -> Result<usize, BoxError> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| format!("HTTP {status}, not JSON: {}", String::from_utf8_lossy(body)))?;
    if status != StatusCode::OK || json["status"] != 0 {
        return Err(format!("HTTP {status}, Withings status {}", json["status"]).into());
    }
    Ok(json["body"]["measuregrps"].as_array().map_or(0, Vec::len))
}
