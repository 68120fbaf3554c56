//! Soak: sustained concurrent load through the layer for 1,000 users whose access tokens expire
//! every few seconds of real time. Bounded: `SOAK_SECONDS` then it stops by itself (default 60
//! in a release build, which `.ci/run` runs as `cargo test --release --all-features --test
//! soak`; 10 in the debug build of `cargo test`, whose rate says nothing).
//!
//! Asserts counts, never speed: every request succeeds or carries the fault the simulator was
//! told to serve; no token is used after it expired (no 401 served) and none is refreshed before
//! its refresh point (at most one refresh per user per refresh period); no 601 or dead refresh
//! token is ever served; resident memory at the end is close to the start.
//!
//! Its own binary: a minute of sustained load, kept apart so it neither shares the suite
//! binary's threads nor skews the other tests' timing.

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
use tower_withings::{Credentials, UserId, WithingsAuth, clock::SystemClock, transport};
use withings_sim::{Fault, SimConfig, Simulator, Target};

const USERS: u64 = 1_000;
const WORKERS: usize = 128;
/// Access tokens live 6 s and are refreshed at their half-life: every user's token comes due
/// every 3 s, about 330 token calls a second.
const TTL: Duration = Duration::from_secs(6);
const SKEW: Duration = Duration::from_secs(3);

/// This process' resident set (`VmRSS` in `/proc/self/status`), in bytes; 0 where unknown.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    kib.unwrap_or(0) * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_across_expiries_loses_nothing() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 10 } else { 60 });
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
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .build(transport::plain_http_client());
    for id in 1..=USERS {
        let g = sim.issue_grant(CLIENT_ID, UserId(id), "user.metrics");
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
    // Resident memory every 5 s after the warm-up, to tell growth from warming up.
    let mut rss_samples = Vec::new();
    let mut next_sample = warm;
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
        if Instant::now() > next_sample {
            rss_samples.push(resident_bytes() / 1024);
            next_sample += Duration::from_secs(5);
        }
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
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "soak ({profile}): {requests} requests in {elapsed:.1} s ({:.0}/s), {USERS} users, \
         {} token calls, {} injected 503s answered, rss {} -> {} KiB (every 5 s: {rss_samples:?})",
        requests as f64 / elapsed,
        c.refreshes,
        faulted.load(Ordering::Relaxed),
        rss_start / 1024,
        rss_end / 1024
    );
    assert!(faulted.load(Ordering::Relaxed) <= injected.load(Ordering::Relaxed));
    assert_eq!(c.served_401, 0, "a token was used after it expired: {c:?}");
    assert_eq!(c.served_601, 0, "{c:?}");
    assert_eq!(c.served_invalid_refresh, 0, "{c:?}");
    assert_eq!(c.refreshes, c.successful_refreshes, "{c:?}");
    // Token calls match expiries: every user's token was replaced before it expired (no 401
    // above, and each user is asked for several times a second, so at least once per TTL),
    // and never before its refresh point (at most once per TTL - SKEW, plus the first).
    let period = (TTL - SKEW).as_secs_f64();
    let at_most = USERS as f64 * (elapsed / period + 1.0);
    let at_least = USERS * (elapsed / TTL.as_secs_f64()).floor() as u64;
    assert!(
        c.refreshes as f64 <= at_most,
        "{} token calls, at most {at_most:.0} (refreshed before its time)",
        c.refreshes
    );
    assert!(
        c.refreshes >= at_least,
        "{} token calls, at least {at_least} (a token outlived its expiry)",
        c.refreshes
    );
    assert_eq!(auth.metrics().refreshes_started, c.refreshes);
    // Memory flat: what grows is the simulator's record of every token it issued (two map
    // entries per token call, kept as Withings keeps them; its maps double in steps). The
    // layer may add nothing per request: 8 MiB of slack plus 1 KiB per token call, where a
    // leak of 40 bytes a request would already go over.
    if rss_start > 0 {
        let allowed = rss_start + 8 * 1024 * 1024 + c.refreshes * 1024;
        assert!(
            rss_end <= allowed,
            "memory grew from {rss_start} to {rss_end} (allowed {allowed}): {rss_samples:?} KiB"
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
