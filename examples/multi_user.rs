//! One layer serving many Withings users, selected per request.
//!
//! An app with many users keeps one `WithingsAuth` and one client. Each request names its user
//! with a `UserId` request extension; the layer attaches that user's token. Every user's token
//! is refreshed on its own: one user's refresh never holds up another user's calls, and there is
//! one refresh per user however many of their calls are in flight. `layer_for(user)` makes a
//! client bound to one user (a per-user background job, say).
//!
//! Runs against the bundled Withings simulator (no account, no network):
//!
//! ```text
//! cargo run --example multi_user --features rustls
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_withings::{
    Credentials, Endpoints, Error, Scope, UserId, WithingsAuth, oauth::Callback, parse_response,
    transport,
};
use withings_sim::Simulator;

const CLIENT_ID: &str = "example-app";
const CLIENT_SECRET: &str = "example-app-secret";
/// The callback URL registered for the app. Nothing listens there in this example: we only read
/// the redirect the simulator sends the browser to.
const REDIRECT_URI: &str = "https://app.example.com/withings/callback";
/// Three people who use the app (Withings user ids).
const PEOPLE: [UserId; 3] = [UserId(1001), UserId(1002), UserId(1003)];
/// Calls per person in each round.
const CALLS: usize = 10;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await
}

/// The whole story against the simulator. Fails if anything is not as expected.
pub async fn run() -> Result<(), BoxError> {
    let sim = Simulator::start_with_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]).await?;
    println!("simulated Withings at {}", sim.api_base());

    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(&sim.api_base(), &sim.account_base())?)
        .build(transport::https_client());

    // Each person authorizes the app once. A web app does this in its callback handler (see
    // web_login.rs); here the simulator approves as whoever we tell it to.
    let mut users = Vec::new();
    for person in PEOPLE {
        sim.set_approving_user(person);
        let request = auth.authorize(REDIRECT_URI, &[Scope::UserMetrics])?;
        let callback = Callback::parse(&sim.approve(request.url()).await?)?;
        users.push(auth.exchange_code(&callback, &request).await?);
    }
    let names: Vec<String> = users.iter().map(UserId::to_string).collect();
    println!("Withings users {} authorized the app", names.join(", "));

    // One client for everybody: the layer over hyper-util's client.
    let client = auth.layer().layer(transport::https_client());
    let api = sim.api_base();

    // Round 1: everyone's calls at once, interleaved; each gets its own user's data.
    let weights = round(&client, &api, &users).await?;
    for (user, kg) in &weights {
        println!("user {user}: {CALLS} calls, latest weight {kg} kg");
    }
    if weights.len() != users.len() {
        return Err(format!("expected one distinct weight per user: {weights:?}").into());
    }

    // Withings revokes the second user's access token. Round 2: their calls are refused, the layer
    // refreshes that one token once and replays them; nobody else's token is touched.
    let victim = users[1];
    let stored = auth.store().load(victim).await?.ok_or("no stored token")?;
    sim.revoke_access_token(stored.token.access_token.expose());
    round(&client, &api, &users).await?;
    let (metrics, counters) = (auth.metrics(), sim.counters());
    println!(
        "user {victim}'s token revoked: {} refresh, {} calls replayed, every call answered",
        counters.refreshes, metrics.replays
    );
    if metrics.refreshes_started != 1 || counters.refreshes != 1 {
        return Err(format!("expected one refresh: {metrics:?} {counters:?}").into());
    }

    // A client bound to one user: its requests need no extension.
    let third = users[2];
    let bound = auth.layer_for(third).layer(transport::https_client());
    let kg = latest_weight(bound, &api, None).await?;
    println!("client bound to user {third}: latest weight {kg} kg");
    if weights.get(&third) != Some(&kg) {
        return Err("the bound client got another user's data".into());
    }

    // A request naming nobody on a client bound to nobody is refused before anything is sent.
    match latest_weight(client, &api, None).await {
        Err(error) if matches!(error.downcast_ref(), Some(Error::NoUser)) => {
            println!("a request without a user: refused ({error})");
            Ok(())
        }
        other => Err(format!("expected Error::NoUser, got {other:?}").into()),
    }
}

/// `CALLS` concurrent getmeas calls per user through one `client`; each user's latest weight.
async fn round<S, B>(
    client: &S,
    api: &str,
    users: &[UserId],
) -> Result<BTreeMap<UserId, f64>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>,
    S: Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send,
{
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        for &user in users {
            let (client, api) = (client.clone(), api.to_owned());
            calls.spawn(async move { (user, latest_weight(client, &api, Some(user)).await) });
        }
    }
    let mut weights = BTreeMap::new();
    for (user, weight) in calls.join_all().await {
        let weight = weight?;
        if weights.insert(user, weight).is_some_and(|w| w != weight) {
            return Err(format!("user {user} got two different weights").into());
        }
    }
    Ok(weights)
}

/// `POST {api}/measure action=getmeas` for `user` (or the client's bound user): the latest
/// weight in kg.
async fn latest_weight<S, B>(client: S, api: &str, user: Option<UserId>) -> Result<f64, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>,
    B: Body<Data = Bytes, Error: Into<BoxError>>,
{
    let mut request = Request::post(format!("{api}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))?;
    if let Some(user) = user {
        request.extensions_mut().insert(user); // whose token the layer attaches
    }
    let response = client.oneshot(request).await?;
    let bytes = response.into_body().collect().await.map_err(Into::into)?;
    // The answer's `body`, or the typed error its `status` stands for.
    let body = parse_response(&bytes.to_bytes())?;
    // Withings sends `value` and `unit` (a power of ten): 70875 and -3 mean 70.875 kg.
    let weight = &body["measuregrps"][0]["measures"][0];
    match (weight["value"].as_f64(), weight["unit"].as_i64()) {
        (Some(value), Some(unit)) => Ok(value / 10f64.powi(i32::try_from(-unit)?)),
        _ => Err(format!("unexpected measure: {weight}").into()),
    }
}
