//! Withings notifications in an axum app: subscribe a user, receive what Withings POSTs, fetch
//! the new data through the layer.
//!
//! - the receiver ([`NotifyReceiver`]) is mounted at `/withings/notify/{secret}`: Withings'
//!   `HEAD` check is answered 200, a notification is queued and answered 200 at once (503 if
//!   the queue is full, so Withings retries), a wrong secret is a 404;
//! - the demo user is subscribed to weight notifications with `ensure_subscribed` (idempotent:
//!   run it at every start);
//! - for each notification the app prints a line and calls getmeas for the notified time range
//!   through the layer.
//!
//! `main` runs it against the bundled Withings simulator, where the demo user weighs in at
//! start and every 10 seconds:
//!
//! ```text
//! cargo run --example notifications --features rustls
//! # PORT=… picks another port than 3001; Ctrl-C stops
//! ```
//!
//! Standard output is exactly `callback: <the callback URL, secret included>` first, then one
//! `notification: user=<id> appli=<n> startdate=<unix> enddate=<unix>` line per notification
//! delivered; what the app does with them goes to standard error. `tests/examples.rs` runs the
//! same `run` and reads those lines.

use std::future::Future;
use std::time::{Duration, SystemTime};

use axum::Router;
use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full};
use tower::{BoxError, Layer, ServiceExt};
use tower_withings::notify::{Appli, Notification, NotifyClient, NotifyReceiver};
use tower_withings::{
    Credentials, Endpoints, Secret, Token, WithingsAuth, oauth::RedirectPolicy, transport,
};
use withings_sim::{DEMO_USER_ID, Simulator};

const CLIENT_ID: &str = "notifications-example";
const CLIENT_SECRET: &str = "notifications-example-secret";

/// How the app runs.
pub struct Options {
    /// The port of the receiver on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The simulated user weighs in at start and then this often (`None`: never; a test adds
    /// the data itself).
    pub weigh_every: Option<Duration>,
}

/// Where the app writes: `out` gets the contract lines (stdout in `main`), `log` the rest.
pub struct Output {
    /// `callback: …` and `notification: …` lines.
    pub out: Box<dyn Fn(&str) + Send + Sync>,
    /// Everything else.
    pub log: Box<dyn Fn(&str) + Send + Sync>,
}

/// The app on `sim` until `shutdown` completes.
pub async fn run(
    sim: &Simulator,
    options: Options,
    output: Output,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    // The app and its Withings (here the simulator, on loopback).
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[]);
    let endpoints = Endpoints::loopback(&sim.api_base(), &sim.account_base())?;
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints.clone())
        .build(transport::https_client());
    let user = DEMO_USER_ID;
    auth.import(demo_token(sim)).await?;

    // The receiver. A real app keeps its secret (it is part of every subscription's URL) and
    // serves it over https on a public host name.
    let (receiver, mut notifications) = NotifyReceiver::builder(NotifyReceiver::random_secret())
        .auth(&auth) // a user who unlinks is marked: the layer fails fast
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let base = format!("http://{}/withings/notify", listener.local_addr()?);
    let callback = receiver.callback_url(&base);
    (output.out)(&format!("callback: {}", callback.expose()));
    let app = Router::new().route_service("/withings/notify/{secret}", receiver);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .await
    });

    // Subscribe the user (what exists is left alone). Real Withings refuses http and IP
    // addresses as callback hosts, so the client does too unless told this is a simulator.
    let notify = NotifyClient::new(&auth, transport::https_client())
        .callback_policy(RedirectPolicy::AllowLoopback);
    let done = notify
        .ensure_subscribed(user, callback.expose(), &[Appli::Weight])
        .await?;
    (output.log)(&format!(
        "subscribed user {user} to weight notifications (new: {:?}, already there: {:?})",
        done.subscribed, done.already
    ));

    // Notifications as they come; the simulated user weighs in now and then.
    let api = auth.layer().layer(transport::https_client());
    let api_base = endpoints.api_base().to_owned();
    let mut weigh = options.weigh_every.map(|every| {
        tokio::time::interval_at(
            tokio::time::Instant::now(),
            every.max(Duration::from_millis(1)),
        )
    });
    let mut weighings = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tick(&mut weigh) => {
                weighings += 1;
                sim.add_measure(DEMO_USER_ID, 1, 72_000 + 150 * weighings, -3);
                (output.log)("the demo user stepped on the scale");
            }
            Some(n) = notifications.recv() => {
                (output.out)(&line(&n));
                match fetch(&api, &api_base, &n).await {
                    Ok(text) => (output.log)(&text),
                    Err(error) => (output.log)(&format!("fetch failed: {error}")),
                }
            }
        }
    }
    // Stop taking notifications (Withings is answered 503 and retries later), then handle
    // every one already acknowledged: none is lost.
    notifications.close();
    let _ = stop_server.send(());
    while let Some(n) = notifications.recv().await {
        (output.out)(&line(&n));
    }
    server.await??;
    Ok(())
}

/// The next tick of the weighing timer, or never.
async fn tick(timer: &mut Option<tokio::time::Interval>) -> Option<()> {
    match timer {
        Some(timer) => {
            timer.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

/// `notification: user=<id> appli=<n> startdate=<unix> enddate=<unix>`.
fn line(n: &Notification) -> String {
    let secs = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
    format!(
        "notification: user={} appli={} startdate={} enddate={}",
        n.user,
        n.appli.code(),
        secs(n.startdate),
        secs(n.enddate)
    )
}

/// getmeas for the notified range, through the layer (the user's token attached, refreshed
/// if needed): a line saying what came.
async fn fetch<S>(api: &S, api_base: &str, n: &Notification) -> Result<String, BoxError>
where
    S: tower::Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<tower_withings::layer::WithingsBody<hyper::body::Incoming>>,
            Error = BoxError,
        > + Clone,
{
    let (Some(start), Some(end)) = (n.startdate, n.enddate) else {
        return Ok(format!(
            "user {} event {:?}: nothing to fetch",
            n.user, n.action
        ));
    };
    let form = format!("action=getmeas&meastype=1&category=1&startdate={start}&enddate={end}");
    let request = http::Request::post(format!("{api_base}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(n.user) // whose token the layer attaches
        .body(Full::new(Bytes::from(form)))?;
    let response = api.clone().oneshot(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    let json = tower_withings::parse_response(&body)?;
    let groups = json["measuregrps"].as_array().ok_or("no measuregrps")?;
    let latest = groups
        .first()
        .and_then(|g| {
            let m = &g["measures"][0];
            Some(m["value"].as_f64()? * 10f64.powi(i32::try_from(m["unit"].as_i64()?).ok()?))
        })
        .map_or_else(|| "-".to_owned(), |kg| format!("{kg} kg"));
    Ok(format!(
        "fetched: {} new weighing(s) for user {}, latest {latest}",
        groups.len(),
        n.user
    ))
}

/// The demo user's tokens, as a code exchange would have returned them.
fn demo_token(sim: &Simulator) -> Token {
    let grant = sim.issue_grant(CLIENT_ID, DEMO_USER_ID, "user.metrics");
    Token {
        user_id: DEMO_USER_ID,
        access_token: Secret::new(grant.access_token),
        refresh_token: Secret::new(grant.refresh_token),
        expires_at: SystemTime::now() + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |p| p.parse())?;
    let sim = Simulator::start().await?;
    let output = Output {
        out: Box::new(|line| println!("{line}")),
        log: Box::new(|line| eprintln!("{line}")),
    };
    let options = Options {
        port,
        weigh_every: Some(Duration::from_secs(10)),
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(&sim, options, output, ctrl_c).await
}
