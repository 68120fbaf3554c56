//! Every weight of a user, all pages, one line each: `weight: <RFC 3339 date> <kg> kg`.
//!
//! A typed `getmeas` (`GetMeas`: weights only, real measures, the whole history) read through
//! `DataClient` over the app's own stack, so the token, refresh, replay and request budget of
//! `auth.layer()` apply to every page. The rows come as a stream, one page in memory at a time;
//! the values are exact (`56300 × 10^-3` prints `56.3`, never `56.300000000000004`).
//!
//! By default it runs against the Withings simulator (no account, no network), with a year
//! of history served in pages of 50:
//!
//! ```text
//! cargo run --example weight_history --features rustls
//! ```
//!
//! Against real Withings, the same `print_weights` runs over a `DataClient` built on
//! `Endpoints::withings()` and a handle whose store holds the user's tokens.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use jiff::Timestamp;
use tower::{BoxError, ServiceBuilder};
use tower_withings::data::{Category, DataClient, GetMeas, MeasureType};
use tower_withings::transport::{self, HttpClient};
use tower_withings::{Credentials, Endpoints, Secret, Token, UserId, WithingsAuth};
use withings_sim::{DEFAULT_USER_ID, HistoryConfig, Simulator};

const CLIENT_ID: &str = "example-app";
const CLIENT_SECRET: &str = "example-app-secret";

#[tokio::main]
async fn main() -> ExitCode {
    let sim = match simulator().await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("weight_history failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run(&sim, &mut std::io::stdout().lock()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weight_history failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A simulator with a year of history for every user, served in pages of 50.
pub async fn simulator() -> std::io::Result<Simulator> {
    let history = HistoryConfig {
        days: 365,
        page_size: 50,
        ..HistoryConfig::default()
    };
    Simulator::start_with(history.into()).await
}

/// Against `sim`: a handle holding the demo user's tokens, a `DataClient` over its layer, and
/// every weight printed to `out`. Returns how many.
pub async fn run(sim: &Simulator, out: &mut impl Write) -> Result<usize, BoxError> {
    // `Endpoints::loopback` lets tokens travel over plain http, to this machine only.
    let endpoints = Endpoints::loopback(&sim.api_base(), &sim.account_base())?;
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints.clone())
        .build(transport::https_client());
    // Tokens as a code exchange would have returned them.
    let user = DEFAULT_USER_ID;
    let grant = sim.issue_grant(CLIENT_ID, user, "user.metrics");
    auth.import(Token {
        user_id: user,
        access_token: Secret::new(grant.access_token),
        refresh_token: Secret::new(grant.refresh_token),
        expires_at: SystemTime::now() + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    })
    .await?;

    // The app's stack: the auth layer over an https client (which also speaks plain http).
    let stack = ServiceBuilder::new()
        .layer(auth.layer())
        .service(transport::https_client());
    let data = DataClient::new(stack, &endpoints);
    print_weights(&data, user, out).await
}

/// Every weight of `user`, one line each, as the pages come; how many were printed.
pub async fn print_weights<S: HttpClient>(
    data: &DataClient<S>,
    user: UserId,
    out: &mut impl Write,
) -> Result<usize, BoxError> {
    let query = GetMeas::since(Timestamp::UNIX_EPOCH)
        .types(&[MeasureType::Weight])
        .category(Category::Real);
    let mut groups = data.rows(user, query);
    let mut printed = 0;
    while let Some(group) = groups.next().await {
        let group = match group {
            Ok(group) => group,
            // One malformed row: say so and keep the rest of its page.
            Err(error) if error.is_row() => {
                eprintln!("skipped a row: {error}");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let (Some(date), Some(weight)) = (group.date, group.get(MeasureType::Weight)) else {
            continue;
        };
        writeln!(out, "weight: {date} {} kg", weight.value)?;
        printed += 1;
    }
    Ok(printed)
}
