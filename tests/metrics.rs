//! The `metrics` feature: what the layer records through the `metrics` facade.
//!
//! Its own test binary (not a module of the shared one): it installs a global recorder, which
//! a process can have only once and which would count every other test's requests too.
#![cfg(feature = "metrics")]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, ServiceExt};
use tower_withings::{
    Credentials, Secret, Token, UserId, WithingsAuth, clock::Clock, clock::ManualClock, transport,
};
use withings_sim::Simulator;

#[tokio::test]
async fn a_refused_token_is_counted_refreshed_and_replayed_without_user_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");

    let sim = Simulator::start().await.unwrap();
    sim.register_client("id", "secret", &["https://app.example.com/cb"]);
    let clock = ManualClock::new();
    let auth = WithingsAuth::builder(Credentials::new("id", "secret"))
        .endpoints(sim.endpoints())
        .clock(clock.clone())
        .build(transport::plain_http_client());
    let user = UserId(46_865_875);
    let grant = sim.issue_grant("id", user, "user.metrics");
    auth.import(Token {
        user_id: user,
        access_token: Secret::new(grant.access_token.clone()),
        refresh_token: Secret::new(grant.refresh_token),
        expires_at: clock.now() + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    })
    .await
    .unwrap();
    sim.revoke_access_token(&grant.access_token);

    let request = Request::post(format!("{}/measure", sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user)
        .body(Full::new(Bytes::from_static(b"action=getmeas")))
        .unwrap();
    let response = auth
        .layer()
        .layer(transport::plain_http_client())
        .oneshot(request)
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"status\":0"), "{body:?}");

    let mut counters = std::collections::HashMap::new();
    let mut histograms = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        for label in key.labels() {
            assert!(!label.value().contains(&user.to_string()), "{key:?}");
        }
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                counters.insert(name, n);
            }
            DebugValue::Histogram(samples) => {
                histograms.insert(name, samples.len());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(count("withings_requests_total{}"), 2, "{counters:?}");
    assert_eq!(count("withings_refusals_total{}"), 1, "{counters:?}");
    assert_eq!(count("withings_replays_total{}"), 1, "{counters:?}");
    assert_eq!(count("withings_token_calls_total{}"), 1, "{counters:?}");
    assert_eq!(
        count("withings_refreshes_total{reason=reactive,outcome=ok}"),
        1,
        "{counters:?}"
    );
    assert_eq!(
        histograms.get("withings_refresh_duration_seconds{outcome=ok}"),
        Some(&1),
        "{histograms:?}"
    );
    assert!(
        histograms
            .get("withings_store_duration_seconds{operation=save}")
            .is_some_and(|n| *n == 1),
        "{histograms:?}"
    );
}
