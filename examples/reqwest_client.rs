//! The same Withings OAuth for an app on reqwest: `auth.reqwest_middleware()` in a
//! reqwest-middleware chain.
//!
//! ```text
//! ClientWithMiddleware  →  WithingsMiddleware  →  reqwest::Client
//! ```
//!
//! The middleware adds the user's bearer token (the user comes from each request's
//! `.with_extension(UserId(…))`), refreshes it once per user when needed, reads Withings' body
//! `status` and replays a request Withings refused; what it fails with is
//! `reqwest_middleware::Error::Middleware` holding a `tower_withings::Error`.
//!
//! Runs against the bundled Withings simulator on loopback (no account, no network):
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower::BoxError;
use tower_withings::{
    Credentials, Error, Scope, UserId, WithingsAuth, oauth::Callback, parse_response, transport,
};
use withings_sim::Simulator;

const CLIENT_ID: &str = "example-app";
const CLIENT_SECRET: &str = "example-app-secret";
/// The callback URL registered for the app. Nothing listens there in this example: we only read
/// the redirect the simulator sends the browser to.
const REDIRECT_URI: &str = "https://app.example.com/withings/callback";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await
}

/// The whole story against the simulator. Fails if anything is not as expected.
pub async fn run() -> Result<(), BoxError> {
    let sim = Simulator::start_with_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]).await?;
    let api = sim.api_base();
    println!("simulated Withings at {api}");

    // `sim.endpoints()` lets tokens travel over plain http, to this machine only.
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(sim.endpoints())
        .build(transport::plain_http_client()); // the client for token calls

    // A user authorizes the app; the simulator approves at once.
    let request = auth.authorize(REDIRECT_URI, &[Scope::UserMetrics])?;
    let callback = Callback::parse(&sim.approve(request.url()).await?)?;
    let user = auth.exchange_code(&callback, &request).await?;
    println!("Withings user {user} authorized the app");

    // One client for the app: the middleware over a plain reqwest client.
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(auth.reqwest_middleware())
        .build();

    // 1. A call: the middleware attaches the user's token.
    let kg = latest_weight(&client, &api, user).await?;
    println!("getmeas: latest weight {kg} kg");

    // 2. Withings revokes the access token: the call is refused (HTTP 200, body status 401);
    //    the middleware refreshes the token and replays the call, inside the one `send`.
    let stored = auth.store().load(user).await?.ok_or("no stored token")?;
    sim.revoke_access_token(stored.token.access_token.expose());
    latest_weight(&client, &api, user).await?;
    let metrics = auth.metrics();
    if (metrics.refreshes_started, metrics.replays) != (1, 1) {
        return Err(format!("expected one refresh and one replay: {metrics:?}").into());
    }
    println!("getmeas after Withings revoked the token: ok (1 refresh, 1 replay)");

    // 3. A request for a user who never authorized: a typed error, nothing sent.
    let calls = sim.counters().data_calls;
    match latest_weight(&client, &api, UserId(1)).await {
        Err(error) => match error.downcast_ref::<Error>() {
            Some(Error::UnknownUser(UserId(1))) => println!("user 1: {error}"),
            _ => return Err(error),
        },
        Ok(_) => return Err("user 1 has no token, yet the call succeeded".into()),
    }
    if sim.counters().data_calls != calls {
        return Err("a call without a token reached Withings".into());
    }
    Ok(())
}

/// getmeas through the middleware: the latest weight, in kg. The crate's own failures come back
/// as themselves (`tower_withings::Error`), taken out of `reqwest_middleware::Error`.
async fn latest_weight(
    client: &ClientWithMiddleware,
    api: &str,
    user: UserId,
) -> Result<f64, BoxError> {
    let sent = client
        .post(format!("{api}/measure"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=getmeas&meastype=1")
        .with_extension(user) // whose token the middleware attaches
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(reqwest_middleware::Error::Middleware(error)) => {
            return Err(match error.downcast::<Error>() {
                Ok(error) => error.into(),
                Err(other) => other.into(),
            });
        }
        Err(error) => return Err(error.into()),
    };
    // The answer's `body`, or the typed error its `status` stands for.
    let body = parse_response(&response.bytes().await?)?;
    // Withings sends `value` and `unit` (a power of ten): 70875 and -3 mean 70.875 kg.
    let weight = &body["measuregrps"][0]["measures"][0];
    match (weight["value"].as_f64(), weight["unit"].as_i64()) {
        (Some(value), Some(unit)) => Ok(value / 10f64.powi(i32::try_from(-unit)?)),
        _ => Err(format!("unexpected measure: {weight}").into()),
    }
}
