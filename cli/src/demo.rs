//! `withings demo`: the whole story on embedded defaults, no credentials and no network: a local
//! Withings simulator, the OAuth web flow, calls through `WithingsAuthLayer` with a SQLite store,
//! a forced expiry and a server-side revocation under concurrent load. Prints what happened and
//! fails if an invariant did not hold (one refresh per expiry, every call answered).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_withings::{
    Credentials, Endpoints, Scope, UserId, WithingsAuth, auth::MetricsSnapshot, budget::RateBudget,
    clock::ManualClock, oauth::Callback, transport,
};
use withings_sim::{SimConfig, Simulator};

use crate::Failure;

const CLIENT_ID: &str = "demo-app";
const CLIENT_SECRET: &str = "demo-app-secret";
const REDIRECT_URI: &str = "https://demo-app.example.com/withings/callback";
const CONCURRENT: usize = 200;

/// Runs the demo with `store` (default: a fresh SQLite file, removed afterwards).
pub async fn run(store: Option<&str>) -> Result<(), Failure> {
    let scratch = std::env::temp_dir().join(format!("tower-withings-demo-{}", std::process::id()));
    let spec = match store {
        Some(spec) => spec.to_owned(),
        None => {
            std::fs::create_dir_all(&scratch).map_err(|e| fail(format!("temp dir: {e}")))?;
            scratch.join("tokens.db").to_string_lossy().into_owned()
        }
    };
    let outcome = story(&spec).await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome.map_err(fail)
}

fn fail(message: String) -> Failure {
    Failure {
        code: 1,
        message: format!("demo failed: {message}"),
    }
}

async fn story(store_spec: &str) -> Result<(), String> {
    let sim = Simulator::start_with(SimConfig {
        token_latency: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]);
    println!(
        "simulator   Withings on {} (a local stand-in, no network)",
        sim.api_base()
    );

    let clock = ManualClock::new();
    let endpoints =
        Endpoints::loopback(&sim.api_base(), &sim.account_base()).map_err(|e| e.to_string())?;
    let store = crate::store::open(Some(store_spec))
        .await
        .map_err(|f| f.message)?;
    println!("store       {store_spec}");
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints)
        .clock(clock.clone())
        .shared_store(store)
        // The simulator sets no app-wide limit, and the story sends about 400 calls within a
        // second: under the default 120-per-minute budget steps 5 and 6 would wait out the
        // budget's 60 s deadline and fail. Real apps keep the default (`withings budget`).
        .rate_budget(RateBudget::unlimited())
        .build(transport::plain_http_client());

    // 1. Authorize: the URL the user's browser is sent to.
    let request = auth
        .oauth()
        .authorize_demo(REDIRECT_URI, &[Scope::UserMetrics, Scope::UserActivity])
        .map_err(|e| e.to_string())?;
    println!("step 1      authorize2 URL built (demo user, scopes user.metrics,user.activity)");

    // 2. The user approves; Withings redirects to our callback with a code and our state.
    let location = browser_follow(request.url()).await?;
    let callback = Callback::parse(&location).map_err(|e| e.to_string())?;
    println!("step 2      redirected back to {REDIRECT_URI} with a code and the same state");

    // 3. Exchange the code (valid 30 s) and store the pair.
    let user = auth
        .exchange_code(&callback, &request)
        .await
        .map_err(|e| e.to_string())?;
    let stored = auth.store().load(user).await.map_err(|e| e.to_string())?;
    let scope = stored.map(|s| s.token.scope).unwrap_or_default();
    println!("step 3      code exchanged: Withings user {user}, scope {scope}, token stored");

    // 4. Calls through the layer.
    let client = auth.layer().layer(transport::plain_http_client());
    let groups = getmeas(&client, &sim.api_base(), user).await?;
    println!("step 4      getmeas through the layer: {groups} measure groups");

    // 5. Three hours later every token has expired: many calls at once, one refresh.
    clock.advance(Duration::from_secs(3 * 3600));
    let (before, (counters, metrics)) = burst(&client, &sim, &auth, user).await?;
    let refreshes = counters.refreshes - before.0.refreshes;
    println!(
        "step 5      token expired, {CONCURRENT} concurrent calls: {CONCURRENT} answered, {refreshes} refresh, {} waited for it",
        metrics.waited - before.1.waited
    );
    expect(refreshes == 1, "exactly one refresh after expiry")?;

    // 6. Withings revokes the access token server-side: refused, one refresh, replayed.
    let current = auth.store().load(user).await.map_err(|e| e.to_string())?;
    let access = current.ok_or("token vanished")?.token.access_token;
    sim.revoke_access_token(access.expose());
    let (before, (counters, metrics)) = burst(&client, &sim, &auth, user).await?;
    let refreshes = counters.refreshes - before.0.refreshes;
    println!(
        "step 6      access token revoked by Withings, {CONCURRENT} calls: {} refused (status 401), {refreshes} refresh, {} replayed",
        counters.served_401 - before.0.served_401,
        metrics.replays - before.1.replays
    );
    expect(refreshes == 1, "exactly one refresh after revocation")?;

    let c = sim.counters();
    println!(
        "summary     data calls {}, token calls {} (1 code exchange, {} refreshes), 601s {}, dead-refresh errors {}, tokens sent where none belongs {}",
        c.data_calls,
        c.code_exchanges + c.refreshes,
        c.refreshes,
        c.served_601,
        c.served_invalid_refresh,
        c.bearer_where_none_belongs
    );
    expect(
        c.served_601 == 0 && c.served_invalid_refresh == 0,
        "no 601, no dead refresh token",
    )?;
    expect(
        c.bearer_where_none_belongs == 0,
        "no bearer token on OAuth endpoints",
    )?;
    Ok(())
}

type Layered = tower_withings::WithingsAuthService<
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
>;

/// One getmeas call through the layer; the number of measure groups Withings returned.
async fn getmeas(client: &Layered, api_base: &str, user: UserId) -> Result<usize, String> {
    let request = Request::post(format!("{api_base}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user)
        .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))
        .map_err(|e| e.to_string())?;
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let json: serde_json::Value =
        serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())?;
    if json["status"] != 0 {
        return Err(format!("Withings status {}", json["status"]));
    }
    Ok(json["body"]["measuregrps"].as_array().map_or(0, Vec::len))
}

/// The simulator's counters and the handle's metrics at one moment.
type Reading = (withings_sim::Counters, MetricsSnapshot);

/// `CONCURRENT` getmeas calls at once; fails if any call does. The readings before and after.
async fn burst(
    client: &Layered,
    sim: &Simulator,
    auth: &WithingsAuth,
    user: UserId,
) -> Result<(Reading, Reading), String> {
    let before = (sim.counters(), auth.metrics());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT {
        let client = client.clone();
        let api_base = sim.api_base();
        calls.spawn(async move { getmeas(&client, &api_base, user).await });
    }
    for outcome in calls.join_all().await {
        outcome?;
    }
    Ok((before, (sim.counters(), auth.metrics())))
}

/// What a browser does with authorize2 in the simulator: one GET, read the redirect.
async fn browser_follow(url: &str) -> Result<String, String> {
    let browser: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = browser.request(request).await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::FOUND {
        return Err(format!("authorize2 answered {}", response.status()));
    }
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "no redirect".to_owned())
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("invariant broken: {what}"))
    }
}
