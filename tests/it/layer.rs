//! WithingsAuthLayer against the simulator: the eight invariants of the design, one test each
//! (or more).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_withings::store::TokenStore;
use tower_withings::{
    Error, UserId, WithingsAuthLayer, clock::ManualClock, layer::UnreplayedRefusal, transport,
};
use withings_sim::{Fault, SimConfig, Simulator, Target};

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// Fires `n` concurrent getmeas requests for `user` and returns their outcomes.
async fn fire(
    service: PlainService,
    sim: &Simulator,
    user: UserId,
    n: usize,
) -> Vec<Result<serde_json::Value, Error>> {
    concurrently(n, || {
        let (service, request) = (service.clone(), getmeas(sim, user));
        async move {
            let response = service.oneshot(request).await.map_err(auth_error)?;
            Ok(json(response).await)
        }
    })
    .await
}

/// Sends `request` through a clone of `service` (the service stays usable for the next one).
async fn send<S, B>(service: &S, request: Request<B>) -> Result<S::Response, S::Error>
where
    S: tower::Service<Request<B>> + Clone,
{
    service.clone().oneshot(request).await
}

/// Sends `request` through a clone of `service` and returns the `tower_withings::Error` it
/// fails with (panics if it succeeds).
async fn refusal<S, B>(service: &S, request: Request<B>) -> Error
where
    S: tower::Service<Request<B>, Error = tower_withings::BoxError> + Clone,
    S::Response: std::fmt::Debug,
{
    auth_error(send(service, request).await.unwrap_err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_an_expired_token_make_one_refresh() {
    let (rig, service) = served().await;
    rig.clock.advance(EXPIRED);
    let outcomes = fire(service, &rig.sim, USER, 1000).await;
    assert_all_ok_after_one_refresh(&rig, &outcomes);
    // The rotated pair is what the store holds now.
    let stored = rig.auth.store().load(USER).await.unwrap().unwrap();
    assert_ne!(stored.token.refresh_token, rig.token.refresh_token);
    assert!(
        rig.sim
            .is_refresh_token_valid(stored.token.refresh_token.expose())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_a_revoked_token_make_one_refresh() {
    let (rig, service) = served().await;
    rig.revoke_access_token();
    let outcomes = fire(service, &rig.sim, USER, 1000).await;
    for outcome in &outcomes {
        assert_eq!(outcome.as_ref().unwrap()["status"], 0, "{outcome:?}");
    }
    let counters = rig.sim.counters();
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    assert_eq!(counters.successful_refreshes, 1);
    let metrics = rig.auth.metrics();
    assert_eq!(metrics.refreshes_started, 1, "{metrics:?}");
    assert_eq!(
        metrics.replays, counters.served_401,
        "{metrics:?} {counters:?}"
    );
    assert!(metrics.replays >= 1);
}

#[tokio::test]
async fn a_refusal_of_an_older_generation_replays_without_refreshing() {
    let rig = rig().await;
    // The inner service holds the first request until the test says so, then answers 401.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel::<()>();
    let arrived_tx = Arc::new(Mutex::new(Some(arrived_tx)));
    let client = http();
    let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let release_rx = release_rx.clone();
        let arrived_tx = arrived_tx.clone();
        let client = client.clone();
        async move {
            let first = release_rx.lock().await.take();
            if let Some(release) = first {
                arrived_tx.lock().unwrap().take().unwrap().send(()).unwrap();
                release.await.unwrap();
                let refused = r#"{"status":401,"body":{},"error":"invalid_token"}"#;
                return Ok::<_, hyper_util::client::legacy::Error>(Response::new(Full::new(
                    Bytes::from_static(refused.as_bytes()),
                )));
            }
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Ok(Response::from_parts(parts, Full::new(body)))
        }
    });
    let service = rig.auth.layer().layer(inner);
    let first = tokio::spawn(service.clone().oneshot(getmeas(&rig.sim, USER)));
    arrived_rx.await.unwrap();
    // Meanwhile the token is refreshed (generation 2).
    rig.auth.refresh(USER).await.unwrap();
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
    release_tx.send(()).unwrap();
    let response = first.await.unwrap().unwrap();
    assert_eq!(json(response).await["status"], 0);
    let metrics = rig.auth.metrics();
    assert_eq!(
        metrics.refreshes_started, 1,
        "no second refresh: {metrics:?}"
    );
    assert_eq!(metrics.replays, 1, "{metrics:?}");
    assert_eq!(rig.sim.counters().refreshes, 1);
}

#[tokio::test]
async fn an_endpoint_that_always_refuses_gets_one_refresh_and_one_replay() {
    let rig = rig().await;
    let refused = r#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#;
    let (inner, calls) = counting_api(move |_| Response::new(Full::new(Bytes::from(refused))));
    let error = through_layer(&rig, inner).await.unwrap_err();
    assert!(matches!(
        auth_error(error),
        Error::AccessTokenInvalid { status: 401 }
    ));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one send, one replay"
    );
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
    assert_eq!(rig.sim.counters().refreshes, 1);
}

#[tokio::test]
async fn an_http_401_is_an_auth_failure_too() {
    let rig = rig().await;
    let (inner, calls) = counting_api(|n| {
        let mut response =
            Response::new(Full::new(Bytes::from_static(br#"{"status":0,"body":{}}"#)));
        if n == 0 {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        response
    });
    let response = through_layer(&rig, inner).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
}

#[tokio::test]
async fn other_statuses_pass_through_untouched() {
    let (rig, service) = served().await;
    for fault in [
        Fault::BodyStatus {
            status: 601,
            error: "Too many request".into(),
            wait_seconds: Some(3),
        },
        Fault::BodyStatus {
            status: 214,
            error: "Unauthorized".into(),
            wait_seconds: None,
        },
        Fault::BodyStatus {
            status: 2554,
            error: "Not implemented".into(),
            wait_seconds: None,
        },
        Fault::BodyStatus {
            status: 503,
            error: "Invalid Params".into(),
            wait_seconds: None,
        },
        Fault::HttpStatus(503),
        Fault::NonJson,
    ] {
        rig.sim.inject(Target::Data, fault.clone(), 1);
        let response = send(&service, getmeas(&rig.sim, USER)).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!bytes.is_empty(), "{fault:?}");
        if let Fault::BodyStatus { status: s, .. } = fault {
            assert_eq!(status, StatusCode::OK);
            assert!(
                bytes.starts_with(format!("{{\"status\":{s}").as_bytes()),
                "{fault:?}"
            );
        }
    }
    assert_no_refresh_no_replay(&rig);
}

/// In the default mode a body status is the caller's to read, in one line:
/// `tower_withings::parse_response(&bytes)` gives the same typed error `status_errors()` would.
#[tokio::test]
async fn by_default_a_body_status_is_read_with_parse_response() {
    let (rig, service) = served().await;
    rig.sim.inject(
        Target::Data,
        Fault::BodyStatus {
            status: 2554,
            error: "Not implemented".into(),
            wait_seconds: None,
        },
        1,
    );
    let response = send(&service, getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let error = tower_withings::parse_response(&bytes).unwrap_err();
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    let response = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = tower_withings::parse_response(&bytes).unwrap();
    assert!(body.get("measuregrps").is_some(), "{body}");
}

/// What a test expects of an error.
type Expected = fn(&Error) -> bool;

fn body_status(status: i64, error: &str, wait_seconds: Option<u64>) -> Fault {
    Fault::BodyStatus {
        status,
        error: error.into(),
        wait_seconds,
    }
}

/// `status_errors()`: a non-zero body status is an `Err` from the one status table (its
/// message read from the small error body); status 0, a body that is not Withings JSON and a
/// real HTTP status still come back `Ok`, untouched. Nothing is refreshed or replayed.
#[tokio::test]
async fn status_errors_turns_body_statuses_into_typed_errors() {
    let rig = rig().await;
    let service = rig.service_with(|layer| layer.status_errors());
    let cases: [(Fault, Expected); 6] = [
        (body_status(2554, "Not implemented", None), |e| {
            matches!(e, Error::NotImplemented)
        }),
        (
            body_status(601, "Too many request", Some(3)),
            |e| matches!(e, Error::RateLimited { wait: Some(w) } if *w == Duration::from_secs(3)),
        ),
        (body_status(214, "Unauthorized", None), |e| {
            matches!(e, Error::Unauthorized { status: 214 })
        }),
        // The message decides, so it is read from the body.
        (
            body_status(503, "User is temporarily deactivated", None),
            |e| matches!(e, Error::UserDeactivated),
        ),
        (
            body_status(503, "Invalid Params: meastype", None),
            |e| matches!(e, Error::InvalidParams { status: 503, message } if message.contains("meastype")),
        ),
        (
            body_status(9999, "mystery", None),
            |e| matches!(e, Error::UnknownStatus { status: 9999, message } if message == "mystery"),
        ),
    ];
    for (fault, expected) in cases {
        rig.sim.inject(Target::Data, fault.clone(), 1);
        let error = refusal(&service, getmeas(&rig.sim, USER)).await;
        assert!(expected(&error), "{fault:?}: {error:?}");
    }
    assert_eq!(
        rig.auth.metrics().rate_limited,
        1,
        "601 still paused the budget"
    );
    // Status 0: Ok, the body intact.
    let response = send(&service, getmeas(&rig.sim, USER)).await.unwrap();
    let body = json(response).await;
    assert_eq!(body["status"], 0);
    assert!(body["body"].get("measuregrps").is_some(), "{body}");
    // Not Withings JSON, and a real HTTP error: Ok, as they came.
    rig.sim.inject(Target::Data, Fault::NonJson, 1);
    let response = send(&service, getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.starts_with(b"<"), "{bytes:?}");
    rig.sim.inject(Target::Data, Fault::HttpStatus(503), 1);
    let response = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_no_refresh_no_replay(&rig);
}

/// `status_errors()` applies to the answer the caller gets, whichever path it took: after a
/// refresh (slow path), after a refusal and its replay, and to a compressed body.
#[tokio::test]
async fn status_errors_applies_after_a_refresh_a_replay_and_to_compressed_bodies() {
    let rig = rig().await;
    let service = rig.service_with(|layer| layer.status_errors());
    let not_implemented = || body_status(2554, "Not implemented", None);
    // Expired: refreshed first, then the answer is classified.
    rig.clock.advance(EXPIRED);
    rig.sim.inject(Target::Data, not_implemented(), 1);
    let error = refusal(&service, getmeas(&rig.sim, USER)).await;
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    assert_eq!(rig.sim.counters().refreshes, 1);
    // Refused, refreshed, replayed: the replay's answer is classified.
    rig.sim
        .inject(Target::Data, body_status(401, "invalid_token", None), 1);
    rig.sim.inject(Target::Data, not_implemented(), 1);
    let error = refusal(&service, getmeas(&rig.sim, USER)).await;
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    assert_eq!(rig.auth.metrics().replays, 1);
    assert_eq!(rig.sim.counters().refreshes, 2);
    // Compressed: classified from the status number (the message stays compressed).
    rig.sim.set_response_encoding(Some("gzip"));
    rig.sim.inject(Target::Data, not_implemented(), 1);
    let error = refusal(&service, getmeas(&rig.sim, USER)).await;
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    let response = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(rig.sim.counters().refreshes, 2);
}

/// With both opt-ins, a refusal that could not be replayed is given back as a response (the
/// opt-in that asks for it wins); it is not turned into a status error.
#[tokio::test]
async fn not_replayed_as_response_wins_over_status_errors() {
    let (rig, service) =
        refused_stream(|layer| layer.status_errors().not_replayed_as_response()).await;
    let response = service.oneshot(streaming_getmeas(&rig.sim)).await.unwrap();
    assert!(response.extensions().get::<UnreplayedRefusal>().is_some());
    assert_eq!(json(response).await["status"], 401);
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
}

/// A rig whose token has expired, whose store logs saves and whose HTTP client logs sends, in
/// one event log.
async fn expired_instrumented() -> (
    Rig,
    Arc<InstrumentedStore>,
    Arc<Mutex<Vec<Sent>>>,
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<tower_withings::layer::WithingsBody<hyper::body::Incoming>>,
        Error = tower_withings::BoxError,
        Future = impl Send,
    > + Clone,
) {
    let store = Arc::new(InstrumentedStore::default());
    let shared: Arc<dyn TokenStore> = store.clone();
    let rig = rig_with(|b| b.shared_store(shared)).await;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let client = recording_client(sent.clone(), store.events.clone());
    let service = rig.auth.layer().layer(client);
    rig.clock.advance(EXPIRED);
    (rig, store, sent, service)
}

#[tokio::test]
async fn the_new_pair_is_saved_before_it_is_sent() {
    let (rig, store, _sent, service) = expired_instrumented().await;
    let events = store.events.clone();
    store.set_save_delay_ms(200);
    let first = tokio::spawn(service.clone().oneshot(getmeas(&rig.sim, USER)));
    // Withings has answered; the save is under way. A request arriving now must wait for it.
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
    let second = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(json(second).await["status"], 0);
    assert_eq!(json(first.await.unwrap().unwrap()).await["status"], 0);
    let stored = store.load(USER).await.unwrap().unwrap();
    let new = stored.token.access_token.expose().to_owned();
    let saved = events.position(&format!("saved {new}")).expect("saved");
    let first_use = events.position(&format!("sent {new}")).expect("sent");
    assert!(saved < first_use, "{:?}", events.all());
}

#[tokio::test]
async fn a_failed_save_never_sends_the_new_token_and_keeps_it_for_the_retry() {
    let (rig, store, sent, service) = expired_instrumented().await;
    let events = store.events.clone();
    store.set_fail_saves(true);
    let error = send(&service, getmeas(&rig.sim, USER)).await.unwrap_err();
    assert!(matches!(
        auth_error(error),
        Error::Store {
            operation: "save",
            ..
        }
    ));
    assert!(
        sent.lock().unwrap().is_empty(),
        "nothing sent with an unsaved token"
    );
    // The old pair is still what the store has.
    let stored = store.load(USER).await.unwrap().unwrap();
    assert_eq!(stored.token.refresh_token, rig.token.refresh_token);
    assert_eq!(rig.sim.counters().successful_refreshes, 1);

    // The store recovers: the pair Withings already granted is saved, with no second refresh.
    store.set_fail_saves(false);
    expect_ok(&service, &rig.sim, USER).await;
    assert_eq!(rig.sim.counters().refreshes, 1, "no second token call");
    let stored = store.load(USER).await.unwrap().unwrap();
    assert_ne!(stored.token.refresh_token, rig.token.refresh_token);
    let new = stored.token.access_token.expose().to_owned();
    assert!(
        events.position(&format!("saved {new}")).unwrap()
            < events.position(&format!("sent {new}")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_refresh_does_not_abort_it() {
    let rig = rig().await;
    rig.sim.set_token_latency(Duration::from_millis(300));
    let service = rig.service();
    rig.clock.advance(EXPIRED);
    let caller = tokio::spawn(service.clone().oneshot(getmeas(&rig.sim, USER)));
    // Wait until the refresh reached Withings, then give up on the request.
    wait_until(|| async { rig.sim.counters().refreshes == 1 }).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // The refresh completes anyway: saved and published.
    let store = rig.auth.store().clone();
    let old = rig.token.refresh_token.clone();
    wait_until(|| {
        let store = store.clone();
        let old = old.clone();
        async move { store.load(USER).await.unwrap().unwrap().token.refresh_token != old }
    })
    .await;
    expect_ok(&service, &rig.sim, USER).await;
    assert_eq!(rig.sim.counters().refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_failures_leave_the_store_alone_and_back_off() {
    let faults = [
        Fault::HttpStatus(500),
        Fault::HttpStatus(502),
        Fault::Drop,
        Fault::BodyStatus {
            status: 522,
            error: "timeout".into(),
            wait_seconds: None,
        },
        Fault::BodyStatus {
            status: 601,
            error: "Too many request".into(),
            wait_seconds: Some(60),
        },
        Fault::BodyStatus {
            status: 601,
            error: "Too many request".into(),
            wait_seconds: None,
        },
        Fault::NonJson,
        Fault::Truncated,
        Fault::Delay(Duration::from_secs(3)),
    ];
    for fault in faults {
        let rig = rig_with(|b| {
            b.backoff(Duration::from_secs(3600), Duration::from_secs(3600))
                .token_timeout(Duration::from_millis(500))
        })
        .await;
        let service = rig.service();
        rig.sim.inject(Target::TokenEndpoint, fault.clone(), 1);
        rig.clock.advance(EXPIRED);
        let outcomes = fire(service.clone(), &rig.sim, USER, 20).await;
        let errors: Vec<String> = outcomes
            .into_iter()
            .map(|o| o.expect_err("every waiter fails").to_string())
            .collect();
        assert!(
            errors.iter().all(|e| *e == errors[0]),
            "{fault:?}: one shared error, got {errors:?}"
        );
        assert_eq!(rig.sim.counters().refreshes, 1, "{fault:?}");
        let stored = rig.auth.store().load(USER).await.unwrap().unwrap();
        assert_eq!(stored.token, rig.token, "{fault:?}: store untouched");
        // Within the backoff: fail fast, no new token call.
        let again = send(&service, getmeas(&rig.sim, USER)).await.unwrap_err();
        assert_eq!(auth_error(again).to_string(), errors[0], "{fault:?}");
        assert_eq!(
            rig.sim.counters().refreshes,
            1,
            "{fault:?}: backoff respected"
        );
    }
}

#[tokio::test]
async fn the_next_healthy_refresh_succeeds_after_a_failure() {
    let (rig, service) = served().await; // no backoff
    rig.sim
        .inject(Target::TokenEndpoint, Fault::HttpStatus(503), 1);
    rig.clock.advance(EXPIRED);
    assert!(send(&service, getmeas(&rig.sim, USER)).await.is_err());
    expect_ok(&service, &rig.sim, USER).await;
    assert_eq!(rig.sim.counters().successful_refreshes, 1);
    assert_eq!(rig.auth.metrics().refreshes_failed, 1);
}

#[tokio::test]
async fn a_dead_refresh_token_marks_the_user_and_fails_fast() {
    let (rig, service) = served().await;
    rig.sim.revoke_user(USER);
    let error = send(&service, getmeas(&rig.sim, USER)).await.unwrap_err();
    assert!(matches!(auth_error(error), Error::NeedsReauthorization(u) if u == USER));
    let stored = rig.auth.store().load(USER).await.unwrap().unwrap();
    assert!(stored.needs_reauthorization, "marked, not deleted");
    assert_eq!(stored.token.refresh_token, rig.token.refresh_token);
    let calls = rig.sim.counters().data_calls;
    let error = send(&service, getmeas(&rig.sim, USER)).await.unwrap_err();
    assert!(matches!(auth_error(error), Error::NeedsReauthorization(_)));
    assert_eq!(
        rig.sim.counters().data_calls,
        calls,
        "failed fast, nothing sent"
    );
    assert_eq!(rig.sim.counters().refreshes, 1);

    // A new authorization brings the user back.
    let fresh = grant(&rig.sim, &rig.clock, USER);
    rig.auth.import(fresh).await.unwrap();
    expect_ok(&service, &rig.sim, USER).await;
}

#[tokio::test]
async fn form_bodies_replay_byte_identically() {
    let rig = rig().await;
    let (service, sent) = recorded(&rig.auth);
    rig.revoke_access_token();
    let form = "action=getmeas&meastype=1&category=1&startdate=1700000000";
    let mut request = Request::post(format!("{}/measure", rig.sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_LENGTH, form.len())
        .body(Full::new(Bytes::from_static(form.as_bytes())))
        .unwrap();
    request.extensions_mut().insert(USER);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(json(response).await["status"], 0);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body, sent[1].body);
    assert_eq!(&sent[1].body[..], form.as_bytes());
    assert_eq!(
        sent[1].content_length.as_deref(),
        Some(form.len().to_string().as_str())
    );
    assert_ne!(sent[0].bearer, sent[1].bearer);
}

/// A client whose request body is a stream (a `BoxBody`, which cannot be sent twice): it reads
/// the body and sends it with the real client.
fn streaming_client() -> impl tower::Service<
    Request<StreamBody>,
    Response = Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future: Send,
> + Clone
+ Send
+ 'static {
    let client = http();
    tower::service_fn(move |request: Request<StreamBody>| {
        let client = client.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            client
                .request(Request::from_parts(parts, Full::new(body)))
                .await
        }
    })
}

type StreamBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// `POST {api}/measure action=getmeas` for the default user, with a streaming body.
fn streaming_getmeas(sim: &Simulator) -> Request<StreamBody> {
    let mut request = Request::post(format!("{}/measure", sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"action=getmeas")).boxed())
        .unwrap();
    request.extensions_mut().insert(USER);
    request
}

/// A rig whose access token is revoked, and `configure(rig.auth.layer())` around
/// `streaming_client()`: the next request is refused, and its streaming body cannot be replayed.
async fn refused_stream(
    configure: impl FnOnce(WithingsAuthLayer) -> WithingsAuthLayer,
) -> (
    Rig,
    impl tower::Service<
        Request<StreamBody>,
        Response = Response<tower_withings::layer::WithingsBody<hyper::body::Incoming>>,
        Error = tower_withings::BoxError,
        Future = impl Send,
    > + Clone,
) {
    let rig = rig().await;
    let service = configure(rig.auth.layer()).layer(streaming_client());
    rig.revoke_access_token();
    (rig, service)
}

/// A refused request whose body is a stream cannot be replayed: by default the caller gets a
/// typed error saying so (retrying helps), never an `Ok` carrying a 401 body, and the token is
/// refreshed, once, for the next request.
#[tokio::test]
async fn a_streaming_body_is_not_replayed_and_says_why() {
    let (rig, service) = refused_stream(|layer| layer).await;
    let error = refusal(&service, streaming_getmeas(&rig.sim)).await;
    assert!(
        matches!(error, Error::NotReplayed { status: 401 }),
        "{error:?}"
    );
    assert_eq!(error.kind(), tower_withings::ErrorKind::Transient);
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("send the request again"),
        "{error}"
    );
    assert_eq!(rig.sim.counters().data_calls, 1);
    assert_eq!(rig.auth.metrics().not_replayed, 1);
    assert_eq!(rig.auth.metrics().replays, 0);
    // Refreshed for the next request, in the background: sent again, it goes through.
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
    let response = service.oneshot(streaming_getmeas(&rig.sim)).await.unwrap();
    assert_eq!(json(response).await["status"], 0);
    assert_eq!(rig.sim.counters().refreshes, 1);
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
}

/// `not_replayed_as_response()`: the old behaviour, for callers who want the body: the refusal
/// comes back `Ok`, as Withings sent it and marked `UnreplayedRefusal`; one refresh all the same.
#[tokio::test]
async fn not_replayed_as_response_gives_the_refusal_back_marked() {
    let (rig, service) = refused_stream(|layer| layer.not_replayed_as_response()).await;
    let response = send(&service, streaming_getmeas(&rig.sim)).await.unwrap();
    assert_marked_not_replayed(&rig, response.extensions()).await;
    let status = json(response).await["status"].clone();
    assert_eq!(status, 401, "the original response, intact");
    let response = service.oneshot(streaming_getmeas(&rig.sim)).await.unwrap();
    assert_eq!(json(response).await["status"], 0);
    assert_eq!(rig.sim.counters().refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_gets_its_refusal_without_waiting_for_the_refresh() {
    let sim = simulator().await;
    let clock = ManualClock::new();
    // Token calls wait here until the test lets them through (and never time out meanwhile).
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let oauth_client = http();
    let token_endpoint = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let (gate, client) = (held.clone(), oauth_client.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            client.request(request).await
        }
    });
    let auth = auth_builder(&sim, &clock)
        .token_timeout(Duration::from_secs(600))
        .build(token_endpoint);
    let token = grant(&sim, &clock, USER);
    auth.import(token.clone()).await.unwrap();
    let service = auth.layer().layer(streaming_client());
    sim.revoke_access_token(token.access_token.expose());
    let request = streaming_getmeas(&sim);
    let caller = tokio::spawn(service.oneshot(request));
    // The refresh cannot finish before the gate opens: the caller must not wait for it.
    wait_until(|| async { caller.is_finished() }).await;
    let error = auth_error(caller.await.unwrap().unwrap_err());
    assert_eq!(sim.counters().successful_refreshes, 0, "still in flight");
    assert_eq!(auth.metrics().refreshes_failed, 0);
    assert!(
        matches!(error, Error::NotReplayed { status: 401 }),
        "{error:?}"
    );
    assert_eq!(auth.metrics().not_replayed, 1);
    // The refresh the caller did not wait for goes on and is saved.
    gate.add_permits(1);
    wait_until(|| async { sim.counters().successful_refreshes == 1 }).await;
    let store = auth.store().clone();
    let spent = token.refresh_token.clone();
    wait_until(|| {
        let (store, spent) = (store.clone(), spent.clone());
        async move { store.load(USER).await.unwrap().unwrap().token.refresh_token != spent }
    })
    .await;
    assert_eq!(auth.metrics().refreshes_started, 1);
}

/// A 50 MB body in 64 KiB chunks, counting how many chunks were read.
struct BigBody {
    remaining: usize,
    first: bool,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl http_body::Body for BigBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        this.read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let chunk = if std::mem::take(&mut this.first) {
            let mut head = br#"{"status":0,"body":{"blob":""#.to_vec();
            head.resize(64 * 1024, b'x');
            Bytes::from(head)
        } else {
            Bytes::from(vec![b'x'; 64 * 1024])
        };
        this.remaining -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn a_large_response_streams_through_after_one_chunk() {
    let rig = rig().await;
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = read.clone();
    let inner = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let read = counter.clone();
        async move {
            Ok::<_, std::convert::Infallible>(Response::new(BigBody {
                remaining: 800,
                first: true,
                read,
            }))
        }
    });
    let mut response = through_layer(&rig, inner).await.unwrap();
    assert_eq!(
        read.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the first chunk was held back"
    );
    let mut total = 0usize;
    let mut largest = 0usize;
    while let Some(frame) = response.body_mut().frame().await {
        let data = frame.unwrap().into_data().unwrap();
        total += data.len();
        largest = largest.max(data.len());
    }
    assert_eq!(total, 800 * 64 * 1024);
    assert_eq!(largest, 64 * 1024, "chunks pass one by one, never joined");
}

#[tokio::test]
async fn tokens_go_only_to_the_api_host() {
    let rig = rig().await;
    let (service, sent) = recorded(&rig.auth);
    let elsewhere = Simulator::start().await.unwrap(); // another host (other port)
    let urls = not_for_tokens(&rig.sim, &elsewhere);
    for (i, url) in urls.iter().enumerate() {
        let mut request = form_post(url, "action=getmeas");
        // A request naming a user to another host is refused unsent (see
        // `a_request_naming_a_user_to_another_host_is_an_error_not_a_401`): these name none.
        let elsewhere = i == 0 || i == 3;
        if !elsewhere {
            request.extensions_mut().insert(USER);
        }
        let _ = service.clone().oneshot(request).await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), urls.len());
    for s in &sent {
        assert_eq!(s.bearer, None, "bearer sent to {}", s.uri);
    }
    assert_eq!(rig.sim.counters().bearer_where_none_belongs, 0);
    assert_eq!(elsewhere.counters().data_calls, 1);
}

#[tokio::test]
async fn a_request_naming_a_user_to_another_host_is_an_error_not_a_401() {
    let rig = rig().await;
    let (service, sent) = recorded(&rig.auth);
    let api = rig.sim.api_base();
    let localhost = api.replace("127.0.0.1", "localhost");
    let mut request = form_post(&format!("{localhost}/measure"), "action=getmeas");
    request.extensions_mut().insert(USER);
    let error = service.clone().oneshot(request).await.unwrap_err();
    let error = auth_error(error);
    assert!(matches!(error, Error::NotApiHost { .. }), "{error}");
    assert_eq!(error.kind(), tower_withings::ErrorKind::Config);
    let message = error.to_string();
    assert!(
        message.contains(&localhost) && message.contains(&api),
        "{message}"
    );
    assert!(sent.lock().unwrap().is_empty(), "nothing sent");
    assert_eq!(rig.sim.counters().data_calls, 0);
}

#[tokio::test]
async fn a_404_from_a_wrong_path_is_endpoint_not_found() {
    let (rig, service) = served().await;
    for layer_mode in [false, true] {
        let url = format!("{}/v2/nothing", rig.sim.api_base());
        let mut request = form_post(&url, "action=getmeas");
        request.extensions_mut().insert(USER);
        let result = if layer_mode {
            let strict = rig.auth.layer().status_errors();
            strict
                .layer(transport::plain_http_client())
                .oneshot(request)
                .await
        } else {
            service.clone().oneshot(request).await
        };
        let error = auth_error(result.unwrap_err());
        assert!(matches!(error, Error::EndpointNotFound), "{error}");
        assert_eq!(error.kind(), tower_withings::ErrorKind::Usage);
        assert!(!error.is_transient());
    }
}

#[tokio::test]
async fn https_api_host_is_never_reached_over_plain_http() {
    // Real Withings endpoints: only https://wbsapi.withings.net gets a token.
    let clock = ManualClock::new();
    let sim = simulator().await;
    let auth = tower_withings::WithingsAuth::builder(tower_withings::Credentials::new(
        CLIENT_ID,
        CLIENT_SECRET,
    ))
    .clock(clock.clone())
    .build(transport::plain_http_client());
    auth.import(grant(&sim, &clock, USER)).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
        log.lock().unwrap().push((
            request.uri().to_string(),
            request.headers().contains_key(header::AUTHORIZATION),
        ));
        async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                br#"{"status":0,"body":{}}"#,
            ))))
        }
    });
    let service = auth.layer_for(USER).layer(inner);
    for url in [
        "http://wbsapi.withings.net/measure",
        "https://wbsapi.withings.com/measure",
        "https://wbsapi.withings.net:8443/measure",
        "https://wbsapi.withings.net/measure",
    ] {
        let request = Request::post(url).body(Full::new(Bytes::new())).unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let with_token: Vec<_> = seen
        .iter()
        .filter(|(_, auth)| *auth)
        .map(|(u, _)| u.as_str())
        .collect();
    assert_eq!(with_token, ["https://wbsapi.withings.net/measure"]);
}

#[tokio::test]
async fn no_user_is_a_typed_error_and_nothing_is_sent() {
    let rig = rig().await;
    let (service, sent) = recorded(&rig.auth);
    let mut request = getmeas(&rig.sim, USER);
    request.extensions_mut().remove::<UserId>();
    let error = service.oneshot(request).await.unwrap_err();
    assert!(matches!(auth_error(error), Error::NoUser));
    assert!(sent.lock().unwrap().is_empty());

    // A bound layer needs no extension; an unknown user is a typed error too.
    let bound = rig
        .auth
        .layer_for(USER)
        .layer(transport::plain_http_client());
    let mut request = getmeas(&rig.sim, USER);
    request.extensions_mut().remove::<UserId>();
    assert_eq!(
        json(bound.oneshot(request).await.unwrap()).await["status"],
        0
    );
    let service = rig.service();
    let error = service
        .oneshot(getmeas(&rig.sim, UserId(999)))
        .await
        .unwrap_err();
    assert!(matches!(auth_error(error), Error::UnknownUser(UserId(999))));
}

#[tokio::test]
async fn a_stale_access_token_parameter_never_overrides_the_header() {
    let rig = rig().await;
    let (service, sent) = recorded(&rig.auth);
    let mut request = Request::post(format!(
        "{}/measure?access_token=stale-token&action=getmeas",
        rig.sim.api_base()
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    request.extensions_mut().insert(USER);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(json(response).await["status"], 0);
    let sent = sent.lock().unwrap().clone();
    assert!(!sent[0].uri.contains("access_token"), "{}", sent[0].uri);
    assert!(sent[0].uri.contains("action=getmeas"));
    assert_eq!(rig.sim.counters().access_token_in_params, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_refresh_independently() {
    const USERS: u64 = 10_000;
    let (rig, service) = served().await;
    let mut originals = Vec::new();
    for id in 1..=USERS {
        let token = grant(&rig.sim, &rig.clock, UserId(id));
        originals.push(token.refresh_token.clone());
        rig.auth.import(token).await.unwrap();
    }
    rig.clock.advance(EXPIRED);
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 1..=USERS {
        let service = service.clone();
        let request = getmeas(&rig.sim, UserId(id));
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            json(service.oneshot(request).await.unwrap()).await["status"].clone()
        });
    }
    for status in tasks.join_all().await {
        assert_eq!(status, 0);
    }
    assert_eq!(rig.sim.counters().successful_refreshes, USERS);
    assert_eq!(rig.auth.metrics().refreshes_started, USERS);
    for (i, original) in originals.iter().enumerate() {
        let stored = rig
            .auth
            .store()
            .load(UserId(i as u64 + 1))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(&stored.token.refresh_token, original);
    }
}

#[tokio::test]
async fn works_inside_a_trace_and_timeout_stack_over_hyper() {
    let rig = rig().await;
    let client = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(rig.auth.layer())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(10),
        ))
        // tower-http's timeout answers with an empty body of the inner type: box it.
        .map_response(|r: Response<hyper::body::Incoming>| r.map(|b| b.boxed()))
        .service(transport::plain_http_client());
    rig.clock.advance(EXPIRED);
    expect_ok(&client, &rig.sim, USER).await;
    rig.sim.revoke_access_token(
        rig.auth
            .store()
            .load(USER)
            .await
            .unwrap()
            .unwrap()
            .token
            .access_token
            .expose(),
    );
    expect_ok(&client, &rig.sim, USER).await;
    let metrics = rig.auth.metrics();
    assert_eq!(
        (metrics.refreshes_started, metrics.replays),
        (2, 1),
        "two refreshes, one replay: {metrics:?}"
    );
}

#[tokio::test]
async fn tokens_expiring_within_the_skew_are_refreshed_early() {
    let (rig, service) = served().await;
    // 3 h token, default skew 5 min + up to 60 s jitter: at 2 h 50 min it is still used as is.
    rig.clock.advance(Duration::from_secs(170 * 60));
    send(&service, getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(rig.sim.counters().refreshes, 0);
    // At 2 h 56 min it is inside the window: refreshed before it is sent.
    rig.clock.advance(Duration::from_secs(6 * 60));
    service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(rig.sim.counters().refreshes, 1);
    assert_eq!(rig.sim.counters().served_401, 0);
}

#[tokio::test]
async fn a_proactive_refresh_that_fails_keeps_using_a_token_still_valid() {
    let (rig, service) = served().await;
    rig.clock.advance(Duration::from_secs(176 * 60)); // inside the skew window, not expired
    rig.sim
        .inject(Target::TokenEndpoint, Fault::HttpStatus(500), 1);
    expect_ok(&service, &rig.sim, USER).await;
    assert_eq!(rig.auth.metrics().refreshes_failed, 1);
}

#[allow(dead_code)]
fn _sim_config_is_reachable() -> SimConfig {
    SimConfig::default()
}

#[tokio::test]
async fn a_601_on_refresh_adopts_the_pair_another_process_saved() {
    let sim = simulator().await;
    let clock = ManualClock::new();
    let store = Arc::new(tower_withings::store::MemoryStore::new());
    let old = grant(&sim, &clock, USER);
    store.put(&old, std::time::SystemTime::now()).await.unwrap();
    clock.advance(EXPIRED);
    let theirs = grant(&sim, &clock, USER);
    // The token endpoint as this process sees it: meanwhile another process spent the same
    // refresh token and saved its pair; Withings answers this one with 601.
    let (other_store, spent, their_pair) =
        (store.clone(), old.refresh_token.clone(), theirs.clone());
    let token_endpoint = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let (store, spent, pair) = (other_store.clone(), spent.clone(), their_pair.clone());
        async move {
            assert!(
                store
                    .compare_and_save(&spent, &pair, std::time::SystemTime::now())
                    .await
                    .unwrap()
            );
            let body = r#"{"status":601,"body":{"wait_seconds":10},"error":"Same arguments in less than 10 seconds"}"#;
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                body.as_bytes(),
            ))))
        }
    });
    let shared: Arc<dyn TokenStore> = store.clone();
    let auth = auth_builder(&sim, &clock)
        .shared_store(shared)
        .build(token_endpoint);
    let (service, sent) = recorded(&auth);
    expect_ok(&service, &sim, USER).await;
    assert_eq!(
        sent.lock().unwrap()[0].bearer.as_deref(),
        Some(theirs.access_token.expose())
    );
    assert_eq!(auth.metrics().refreshes_adopted, 1);
}
