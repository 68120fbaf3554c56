//! Soak: sustained concurrent load through the layer for many users whose access tokens expire
//! every few seconds of real time. Bounded: `SOAK_SECONDS` (default 60) then it stops by itself.
//!
//! Asserts counts, never speed: every request succeeds or carries the fault the simulator was
//! told to serve; no token is used after it expired (no 401 served) and none is refreshed before
//! its refresh point (at most one refresh per user per refresh period); no 601 or dead refresh
//! token is ever served; resident memory at the end is close to the start.
//!
//! Its own binary: a minute of sustained load, kept apart so it neither shares the suite
//! binary's threads nor skews the other tests' timing.
#![cfg(feature = "sim")]

// Shared with `tests/it`; this binary uses only part of it.
#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tower::{Layer, ServiceExt};
use tower_withings::sim::{Fault, SimConfig, Simulator, Target};
use tower_withings::{Credentials, SystemClock, UserId, WithingsAuth, transport};

const USERS: u64 = 100;
const WORKERS: usize = 64;
const TTL: Duration = Duration::from_secs(8);
const SKEW: Duration = Duration::from_secs(4);

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_across_expiries_loses_nothing() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sim = Simulator::start_with(SimConfig {
        access_token_ttl: TTL,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]);
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints(&sim))
        .clock(SystemClock)
        .refresh_skew(SKEW)
        .refresh_jitter(Duration::ZERO)
        .backoff(Duration::ZERO, Duration::ZERO)
        .rate_budget(tower_withings::RateBudget::unlimited())
        .build(transport::plain_http_client());
    for id in 1..=USERS {
        let g = sim.issue_grant(CLIENT_ID, id, "user.metrics");
        auth.import(tower_withings::Token {
            user_id: UserId(id),
            access_token: g.access_token.into(),
            refresh_token: g.refresh_token.into(),
            expires_at: std::time::SystemTime::now() + Duration::from_secs(g.expires_in),
            scope: "user.metrics".into(),
        })
        .await
        .unwrap();
    }
    let service = auth.layer().layer(transport::plain_http_client());

    let ok = Arc::new(AtomicU64::new(0));
    let faulted = Arc::new(AtomicU64::new(0));
    let injected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let warm = started + Duration::from_secs(seconds.min(5));
    let mut rss_start = 0;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (service, ok, faulted) = (service.clone(), ok.clone(), faulted.clone());
        let api = sim.api_base();
        workers.spawn(async move {
            let mut n = worker as u64;
            while Instant::now() < deadline {
                n += WORKERS as u64;
                let user = UserId(n % USERS + 1);
                let mut request = getmeas_at(&api);
                request.extensions_mut().insert(user);
                let response = service
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| panic!("request failed: {e}"));
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    faulted.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let body = json(response).await;
                assert_eq!(body["status"], 0, "{body}");
                ok.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Now and then the data endpoint fails as a proxy would; those are the only failures allowed.
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if rss_start == 0 && Instant::now() > warm {
            rss_start = resident_bytes();
        }
        sim.inject(Target::Data, Fault::HttpStatus(503), 1);
        injected.fetch_add(1, Ordering::Relaxed);
    }
    workers.join_all().await;
    sim.clear_faults();
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end = resident_bytes();

    let c = sim.counters();
    let requests = ok.load(Ordering::Relaxed) + faulted.load(Ordering::Relaxed);
    println!(
        "soak: {requests} requests in {elapsed:.0} s ({:.0}/s), {} refreshes, rss {} -> {} KiB",
        requests as f64 / elapsed,
        c.refreshes,
        rss_start / 1024,
        rss_end / 1024
    );
    assert!(faulted.load(Ordering::Relaxed) <= injected.load(Ordering::Relaxed));
    assert_eq!(c.served_401, 0, "a token was used after it expired: {c:?}");
    assert_eq!(c.served_601, 0, "{c:?}");
    assert_eq!(c.served_invalid_refresh, 0, "{c:?}");
    assert_eq!(c.refreshes, c.successful_refreshes, "{c:?}");
    // Token calls match expiries: every user's token was replaced before it expired (no 401
    // above, every user refreshed), and never before its refresh point, so at most once per
    // (TTL - SKEW) of the client's clock, plus the first.
    let period = (TTL - SKEW).as_secs_f64();
    let at_most = USERS as f64 * (elapsed / period + 1.0);
    assert!(
        c.refreshes as f64 <= at_most,
        "{} refreshes, at most {at_most:.0}",
        c.refreshes
    );
    if elapsed > TTL.as_secs_f64() {
        assert!(
            c.refreshes >= USERS,
            "every user's token expired at least once: {c:?}"
        );
    }
    assert_eq!(auth.metrics().refreshes_started, c.refreshes);
    if rss_start > 0 {
        assert!(
            rss_end < rss_start + 64 * 1024 * 1024,
            "memory grew from {rss_start} to {rss_end}"
        );
    }
}

fn getmeas_at(api: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::post(format!("{api}/measure"))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"action=getmeas",
        )))
        .unwrap()
}
