//! Crashes: a process refreshing in a loop is killed with SIGKILL at random moments, again and
//! again, on one SQLite file. After every kill, what a fresh process loads must still be a
//! grant Withings accepts. Zero lost grants.
//!
//! The simulator lives in the test process (it must outlive the children); each child is this
//! test binary re-run in the `crash-loop` role: it opens the SQLite file, builds a
//! `WithingsAuth` on it and loops `auth.refresh(user)` followed by one API call that uses the
//! new access token (the first use of a new access token kills the previous refresh token at
//! Withings, so a pair used before it was saved would show up here as a lost grant).
//!
//! `TOWER_WITHINGS_CRASH_KILLS` sets the number of kills (default 100).
//!
//! Its own binary: it re-runs itself as the child it SIGKILLs, and a kill must never take
//! other tests down with it.
#![cfg(feature = "sqlite")]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use support::child::{self, Child, random_below};
use support::common::{self, CLIENT_ID, CLIENT_SECRET, grant, simulator};
use support::store_support::TempDir;
use tower::{Layer, ServiceExt};
use tower_withings::store::{SqliteStore, TokenStore};
use tower_withings::{Credentials, Endpoints, UserId, WithingsAuth, clock::ManualClock, transport};

const CHILD: &str = "crash_child_entry";
const ENV_DB: &str = "TOWER_WITHINGS_CRASH_DB";
const ENV_USER: &str = "TOWER_WITHINGS_CRASH_USER";
const ENV_KILLS: &str = "TOWER_WITHINGS_CRASH_KILLS";

/// The child's token timeout; its refresh lease lasts three times this.
const CHILD_TOKEN_TIMEOUT: Duration = Duration::from_millis(200);

/// A short fingerprint of a refresh token, so the child can say which pair it saved without
/// printing it.
fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The child role: refresh, use, repeat, until killed. Prints `SAVED <fingerprint>` after each
/// refresh (it is saved by then) and `READY` after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_entry() {
    let Some(api) = child::api_for(CHILD) else {
        return; // a normal test run: nothing to do
    };
    let user = UserId(std::env::var(ENV_USER).unwrap().parse().unwrap());
    let store = SqliteStore::open(std::env::var(ENV_DB).unwrap())
        .await
        .unwrap();
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(&api, &api).unwrap())
        .store(store)
        .token_timeout(CHILD_TOKEN_TIMEOUT)
        .lease_poll(Duration::from_millis(10))
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build(transport::plain_http_client());
    let service = auth.layer().layer(transport::plain_http_client());
    let started = Instant::now();
    let mut saved = 0u64;
    loop {
        match auth.refresh(user).await {
            Ok(()) => {
                saved += 1;
                let stored = auth.store().load(user).await.unwrap().unwrap();
                println!("SAVED {}", fingerprint(stored.token.refresh_token.expose()));
                if saved == 1 {
                    println!("READY {}", started.elapsed().as_millis());
                }
            }
            Err(error) => {
                println!("ERROR {error}");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let request = Request::post(format!("{api}/measure"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .extension(user)
            .body(Full::new(Bytes::from_static(b"action=getmeas")))
            .unwrap();
        match service.clone().oneshot(request).await {
            Ok(response) => {
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                println!("USED {}", json["status"]);
            }
            Err(error) => println!("ERROR {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_grant() {
    if child::is_child() {
        return;
    }
    let kills: usize = std::env::var(ENV_KILLS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let sim = simulator().await;
    // The answer comes back 15 ms after Withings rotated the pair: a wide window for a kill
    // between "Withings rotated" and "the new pair is saved".
    sim.set_token_latency(Duration::from_millis(15));
    let dir = TempDir::new("crash");
    let db = dir.file("tokens.sqlite3");
    let user = common::USER;
    let first = grant(&sim, &ManualClock::new(), user);
    SqliteStore::open(&db)
        .await
        .unwrap()
        .put(&first, std::time::SystemTime::now())
        .await
        .unwrap();

    let started = Instant::now();
    let mut lost = Vec::new();
    let (mut quiet, mut rotated_unsaved, mut saved_unreported) = (0, 0, 0);
    let (mut lease_waits, mut slowest_ready) = (0, 0);
    let mut reported_refreshes = 0u64;
    let mut performed = 0;
    for kill in 0..kills {
        let before = sim.counters().successful_refreshes;
        let child = Child::spawn(
            CHILD,
            &sim.api_base(),
            &[
                (ENV_DB, db.as_ref()),
                (ENV_USER, user.0.to_string().as_ref()),
            ],
        );
        // `READY <ms>`: the milliseconds the child took to its first refresh.
        let (ready, early) = child.wait_for("READY ", Duration::from_secs(30)).await;
        let ready_ms: u64 = ready[ready.find("READY ").unwrap() + 6..]
            .trim()
            .parse()
            .unwrap();
        slowest_ready = slowest_ready.max(ready_ms);
        if ready_ms >= 300 {
            lease_waits += 1; // it waited for the lease a killed child left behind
        }
        tokio::time::sleep(Duration::from_millis(random_below(150))).await;
        let lines: Vec<String> = early.into_iter().chain(child.kill()).collect();
        performed += 1;
        // Let the simulator finish a request the child sent just before it died.
        tokio::time::sleep(Duration::from_millis(25)).await;

        // What a fresh process finds.
        let stored = SqliteStore::open(&db)
            .await
            .unwrap()
            .load(user)
            .await
            .unwrap()
            .expect("the record survives");
        let refresh_ok = sim.is_refresh_token_valid(stored.token.refresh_token.expose());
        let access_ok = sim.is_access_token_valid(stored.token.access_token.expose());
        if !refresh_ok {
            lost.push((
                kill,
                access_ok,
                lines.iter().rev().take(5).cloned().collect::<Vec<_>>(),
            ));
            break; // the next child could only fail: report this one
        }

        let saved: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.find("SAVED ").map(|at| l[at + 6..].trim()))
            .collect();
        reported_refreshes += saved.len() as u64;
        let granted = sim.counters().successful_refreshes - before;
        let stored_print = fingerprint(stored.token.refresh_token.expose());
        if granted == saved.len() as u64 {
            quiet += 1; // killed outside a token call
        } else if saved.last() == Some(&stored_print.as_str()) {
            rotated_unsaved += 1; // Withings rotated, the save never committed
        } else {
            saved_unreported += 1; // saved, killed before it said so
        }

        // The child spent the stored refresh token within the last second: Withings would
        // answer the next child 601 "same arguments within 10 s". Time passes.
        sim.advance(Duration::from_secs(11));
    }
    let elapsed = started.elapsed();
    let counters = sim.counters();

    eprintln!(
        "crash test: {performed} SIGKILLs in {elapsed:?}; grants lost: {}; \
         Withings rotations: {}, reported saved: {reported_refreshes}; \
         kills outside a token call: {quiet}, between rotation and commit: {rotated_unsaved}, \
         after commit before report: {saved_unreported}; \
         children that waited for a dead child's lease: {lease_waits} (slowest start {slowest_ready} ms); \
         simulator: {counters:?}",
        lost.len(),
        counters.successful_refreshes,
    );
    assert!(
        lost.is_empty(),
        "grants lost after {} of {performed} kills: {lost:?}",
        lost.len()
    );
    // After the last crash: a fresh process refreshes and calls the API with what is stored.
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(&sim.api_base(), &sim.api_base()).unwrap())
        .store(SqliteStore::open(&db).await.unwrap())
        .lease_poll(Duration::from_millis(10))
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .build(transport::plain_http_client());
    auth.refresh(user).await.expect("a final refresh");
    let service = auth.layer().layer(transport::plain_http_client());
    common::expect_ok(&service, &sim, user).await;

    assert_eq!(counters.served_invalid_refresh, 0, "{counters:?}");
    assert!(
        rotated_unsaved > 0,
        "no kill landed between Withings' rotation and the save: the test did not test"
    );
}
