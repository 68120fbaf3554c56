//! `auth.reqwest_middleware()` against the simulator: the layer's main guarantees, through a
//! reqwest-middleware chain over a real reqwest client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use ::reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use http::Extensions;
use tower_withings::store::TokenStore;
use tower_withings::{Error, UserId, layer::UnreplayedRefusal};
use withings_sim::{Fault, Simulator, Target};

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// What a middleware after ours saw of one request: what reqwest is asked to send. (No
/// `Debug`, and no assertion prints a bearer: a failing test shows no token.)
#[derive(Clone)]
struct Sent {
    url: String,
    bearer: Option<String>,
    body: Option<Vec<u8>>,
}

/// Records every request it passes on.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Sent>>>);

impl Recorder {
    fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> ::reqwest_middleware::Result<reqwest::Response> {
        self.0.lock().unwrap().push(Sent {
            url: request.url().to_string(),
            bearer: (request.headers().get(http::header::AUTHORIZATION))
                .map(|v| v.to_str().unwrap().to_owned()),
            body: request
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map(<[u8]>::to_vec),
        });
        next.run(request, extensions).await
    }
}

/// The rig, and a client for it: our middleware, then the recorder, over a plain reqwest
/// client.
async fn rig_and_client() -> (Rig, ClientWithMiddleware, Recorder) {
    let rig = rig().await;
    let recorder = Recorder::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(rig.auth.reqwest_middleware())
        .with(recorder.clone())
        .build();
    (rig, client, recorder)
}

/// `POST {api}/measure action=getmeas` for `user`.
fn getmeas(
    client: &ClientWithMiddleware,
    sim: &Simulator,
    user: UserId,
) -> ::reqwest_middleware::RequestBuilder {
    client
        .post(format!("{}/measure", sim.api_base()))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body("action=getmeas&meastype=1")
        .with_extension(user)
}

/// Sends `request`, which must fail: the crate's error it fails with.
async fn refused(request: ::reqwest_middleware::RequestBuilder) -> Error {
    auth_error(request.send().await.unwrap_err())
}

/// A client with `middleware` only.
fn client_with(middleware: impl ::reqwest_middleware::Middleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// The crate's error inside reqwest-middleware's.
fn auth_error(error: ::reqwest_middleware::Error) -> Error {
    match error {
        ::reqwest_middleware::Error::Middleware(error) => match error.downcast::<Error>() {
            Ok(error) => error,
            Err(other) => panic!("not a tower_withings::Error: {other}"),
        },
        other => panic!("not a middleware error: {other}"),
    }
}

async fn body_json(response: reqwest::Response) -> serde_json::Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

/// Fires `n` concurrent getmeas requests for `user`; their outcomes.
async fn fire(
    client: &ClientWithMiddleware,
    sim: &Simulator,
    user: UserId,
    n: usize,
) -> Vec<Result<serde_json::Value, Error>> {
    concurrently(n, || {
        let request = getmeas(client, sim, user);
        async move {
            let response = request.send().await.map_err(auth_error)?;
            Ok(body_json(response).await)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_an_expired_token_make_one_refresh() {
    let (rig, client, recorder) = rig_and_client().await;
    rig.clock.advance(EXPIRED);
    let outcomes = fire(&client, &rig.sim, USER, 1000).await;
    assert_all_ok_after_one_refresh(&rig, &outcomes);
    assert_eq!(rig.sim.counters().data_calls, 1000);
    // Every request went out with the new token, none with the old one.
    let stored = rig.auth.store().load(USER).await.unwrap().unwrap();
    assert_ne!(stored.token.access_token, rig.token.access_token);
    let bearer = format!("Bearer {}", stored.token.access_token.expose());
    let sent = recorder.sent();
    assert_eq!(sent.len(), 1000);
    assert!(
        sent.iter()
            .all(|s| s.bearer.as_deref() == Some(bearer.as_str())),
        "every request carries the refreshed token"
    );
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_and_the_request_replayed() {
    let (rig, client, recorder) = rig_and_client().await;
    rig.revoke_access_token();
    let response = getmeas(&client, &rig.sim, USER).send().await.unwrap();
    assert!(response.extensions().get::<UnreplayedRefusal>().is_none());
    assert_eq!(body_json(response).await["status"], 0);
    let counters = rig.sim.counters();
    assert_eq!(counters.served_401, 1, "{counters:?}");
    assert_eq!(counters.refreshes, 1);
    assert_eq!(counters.successful_refreshes, 1);
    assert_eq!(counters.data_calls, 2);
    let metrics = rig.auth.metrics();
    assert_eq!(metrics.refreshes_started, 1, "{metrics:?}");
    assert_eq!(metrics.replays, 1);
    // The replay is the request as first sent, with the new token.
    let sent = recorder.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].url, sent[1].url);
    assert_eq!(sent[0].body, sent[1].body);
    assert_eq!(
        sent[1].body.as_deref(),
        Some(&b"action=getmeas&meastype=1"[..])
    );
    let old = format!("Bearer {}", rig.token.access_token.expose());
    assert!(
        sent[0].bearer.as_deref() == Some(old.as_str()),
        "the first send carries the revoked token"
    );
    assert!(
        sent[1].bearer.as_ref().is_some_and(|b| *b != old),
        "the replay carries another one"
    );
}

#[tokio::test]
async fn an_http_401_is_an_auth_failure_too() {
    let (rig, client, _) = rig_and_client().await;
    rig.sim.inject(Target::Data, Fault::HttpStatus(401), 1);
    let response = getmeas(&client, &rig.sim, USER).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await["status"], 0);
    assert_eq!(rig.sim.counters().data_calls, 2);
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
}

#[tokio::test]
async fn an_endpoint_that_always_refuses_gets_one_refresh_and_one_replay() {
    let (rig, client, _) = rig_and_client().await;
    let invalid_token = Fault::BodyStatus {
        status: 401,
        error: "XRequestID: Not provided invalid_token: The access token provided is invalid"
            .into(),
        wait_seconds: None,
    };
    rig.sim.inject(Target::Data, invalid_token, 100);
    let error = refused(getmeas(&client, &rig.sim, USER)).await;
    assert!(
        matches!(error, Error::AccessTokenInvalid { status: 401 }),
        "a typed error"
    );
    let counters = rig.sim.counters();
    assert_eq!(counters.data_calls, 2, "one send, one replay: {counters:?}");
    assert_eq!(counters.refreshes, 1);
    assert_eq!(rig.auth.metrics().refreshes_started, 1);
    assert_eq!(rig.auth.metrics().replays, 1);
}

#[tokio::test]
async fn other_statuses_pass_through_with_their_bytes() {
    let (rig, client, _) = rig_and_client().await;
    for (status, error) in [
        (601, "Too many request"),
        (214, "Unauthorized"),
        (2554, "Not implemented"),
    ] {
        let fault = Fault::BodyStatus {
            status,
            error: error.into(),
            wait_seconds: None,
        };
        rig.sim.inject(Target::Data, fault, 1);
        let response = getmeas(&client, &rig.sim, USER).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.url().as_str().ends_with("/measure"),
            "{}",
            response.url()
        );
        let json = body_json(response).await;
        assert_eq!(json["status"], status);
        assert_eq!(json["error"], error);
    }
    rig.sim.inject(Target::Data, Fault::HttpStatus(503), 1);
    let response = getmeas(&client, &rig.sim, USER).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(!response.bytes().await.unwrap().is_empty());
    assert_eq!(rig.sim.counters().data_calls, 4);
    assert_no_refresh_no_replay(&rig);
}

#[tokio::test]
async fn tokens_go_only_to_the_api_host() {
    let (rig, client, recorder) = rig_and_client().await;
    let elsewhere = Simulator::start().await.unwrap(); // another host (other port)
    let urls = not_for_tokens(&rig.sim, &elsewhere);
    for (i, url) in urls.iter().enumerate() {
        let request = client.post(url.as_str()).body("action=getmeas");
        // A request naming a user to another host is refused unsent (see
        // `a_request_naming_a_user_to_another_host_is_an_error_not_a_401`): these name none.
        let elsewhere = i == 0 || i == 3;
        let request = if elsewhere {
            request
        } else {
            request.with_extension(USER)
        };
        let _ = request.send().await.unwrap();
    }
    // And one to the API, which does get it: the recorder sees bearer headers.
    getmeas(&client, &rig.sim, USER).send().await.unwrap();
    let sent = recorder.sent();
    assert_eq!(sent.len(), urls.len() + 1);
    for s in &sent[..urls.len()] {
        assert!(s.bearer.is_none(), "bearer sent to {}", s.url);
    }
    assert!(sent[urls.len()].bearer.is_some());
    assert_eq!(rig.sim.counters().bearer_where_none_belongs, 0);
    assert_eq!(elsewhere.counters().data_calls, 1);
}

/// A streaming body cannot be sent twice: by default its refusal is a typed error (as with the
/// layer) saying the request can be sent again, while the token is refreshed, once, for the
/// next request.
#[tokio::test]
async fn a_streaming_body_is_not_replayed_and_says_why() {
    let (rig, client, _) = rig_and_client().await;
    rig.revoke_access_token();
    let request = streaming_getmeas(&client, &rig.sim);
    assert!(
        request.try_clone().is_none(),
        "reqwest cannot clone it either"
    );
    let error = refused(request).await;
    assert!(
        matches!(error, Error::NotReplayed { status: 401 }),
        "{error:?}"
    );
    assert_eq!(error.kind(), tower_withings::ErrorKind::Transient);
    assert_eq!(rig.sim.counters().data_calls, 1);
    assert_eq!(rig.auth.metrics().not_replayed, 1);
    assert_eq!(rig.auth.metrics().replays, 0);
    // Refreshed for the next request, in the background.
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
    let response = streaming_getmeas(&client, &rig.sim).send().await.unwrap();
    assert_eq!(body_json(response).await["status"], 0);
    assert_eq!(rig.sim.counters().refreshes, 1);
}

/// `POST {api}/measure action=getmeas` for the default user, with a streaming body.
fn streaming_getmeas(
    client: &ClientWithMiddleware,
    sim: &Simulator,
) -> ::reqwest_middleware::RequestBuilder {
    let stream = http_body_util::Full::new(bytes::Bytes::from_static(b"action=getmeas"));
    client
        .post(format!("{}/measure", sim.api_base()))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(reqwest::Body::wrap(stream))
        .with_extension(USER)
}

/// `not_replayed_as_response()` on the middleware: the old behaviour, `Ok` with the Withings
/// body intact and a `UnreplayedRefusal` extension; one refresh all the same.
#[tokio::test]
async fn not_replayed_as_response_gives_the_refusal_back_marked() {
    let rig = rig().await;
    let client = client_with(rig.auth.reqwest_middleware().not_replayed_as_response());
    rig.revoke_access_token();
    let response = streaming_getmeas(&client, &rig.sim).send().await.unwrap();
    assert_marked_not_replayed(&rig, response.extensions()).await;
    let status = body_json(response).await["status"].clone();
    assert_eq!(status, 401, "the original response, intact");
    assert_eq!(rig.sim.counters().refreshes, 1);
}

/// `status_errors()` on the middleware: a non-zero body status is a typed error; status 0 and
/// a non-JSON body come back `Ok`, untouched.
#[tokio::test]
async fn status_errors_turns_body_statuses_into_typed_errors() {
    let rig = rig().await;
    let strict = client_with(rig.auth.reqwest_middleware().status_errors());
    let fault = |status: i64, error: &str| Fault::BodyStatus {
        status,
        error: error.into(),
        wait_seconds: None,
    };
    rig.sim
        .inject(Target::Data, fault(2554, "Not implemented"), 1);
    let error = refused(getmeas(&strict, &rig.sim, USER)).await;
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    rig.sim
        .inject(Target::Data, fault(601, "Too many request"), 1);
    let error = refused(getmeas(&strict, &rig.sim, USER)).await;
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    let response = getmeas(&strict, &rig.sim, USER).send().await.unwrap();
    let body = body_json(response).await;
    assert_eq!(body["status"], 0);
    assert!(body["body"].get("measuregrps").is_some(), "{body}");
    rig.sim.inject(Target::Data, Fault::NonJson, 1);
    let response = getmeas(&strict, &rig.sim, USER).send().await.unwrap();
    assert!(response.text().await.unwrap().starts_with('<'));
    // The default middleware leaves body statuses to the caller.
    let plain = client_with(rig.auth.reqwest_middleware());
    rig.sim
        .inject(Target::Data, fault(2554, "Not implemented"), 1);
    let response = getmeas(&plain, &rig.sim, USER).send().await.unwrap();
    let bytes = response.bytes().await.unwrap();
    let error = tower_withings::parse_response(&bytes).unwrap_err();
    assert!(matches!(error, Error::NotImplemented), "{error:?}");
    assert_eq!(rig.sim.counters().refreshes, 0);
}

#[tokio::test]
async fn no_user_is_a_typed_error_and_nothing_is_sent() {
    let (rig, client, recorder) = rig_and_client().await;
    let url = format!("{}/measure", rig.sim.api_base());
    let error = refused(client.post(url).body("action=getmeas")).await;
    assert!(matches!(error, Error::NoUser));
    assert!(recorder.sent().is_empty());
    assert_eq!(rig.sim.counters().data_calls, 0);
}

#[tokio::test]
async fn a_bound_middleware_needs_no_extension_and_an_extension_still_wins() {
    let rig = rig().await;
    let bound = client_with(rig.auth.reqwest_middleware_for(USER));
    let response = bound
        .post(format!("{}/measure", rig.sim.api_base()))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body("action=getmeas&meastype=1")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(response).await["status"], 0);
    // A user with no token named by the request: the request's extension is the one used.
    let error = refused(getmeas(&bound, &rig.sim, UserId(999))).await;
    assert!(matches!(error, Error::UnknownUser(UserId(999))));
    assert_eq!(rig.sim.counters().data_calls, 1);
}

#[tokio::test]
async fn a_request_naming_a_user_to_another_host_is_an_error_not_a_401() {
    let (rig, client, recorder) = rig_and_client().await;
    let api = rig.sim.api_base();
    let localhost = api.replace("127.0.0.1", "localhost");
    let request = client.post(format!("{localhost}/measure"));
    let error = refused(request.body("action=getmeas").with_extension(USER)).await;
    assert!(matches!(error, Error::NotApiHost { .. }), "{error}");
    assert!(error.to_string().contains(&localhost), "{error}");
    assert!(recorder.sent().is_empty(), "nothing sent");
    assert_eq!(rig.sim.counters().data_calls, 0);
}

#[tokio::test]
async fn a_404_from_a_wrong_path_is_endpoint_not_found() {
    let (rig, client, _) = rig_and_client().await;
    let request = client.post(format!("{}/v2/nothing", rig.sim.api_base()));
    let error = refused(request.body("action=getmeas").with_extension(USER)).await;
    assert!(matches!(error, Error::EndpointNotFound), "{error}");
    assert_eq!(error.kind(), tower_withings::ErrorKind::Usage);
}
