//! The protocol client against the simulator: every step of the web flow and every FAQ error.

use std::time::Duration;

use crate::common::*;
use tower_withings::{
    Credentials, Error, Scope, oauth::AuthorizeRequest, oauth::Callback, oauth::ClientAuth,
    oauth::OAuthClient, oauth::RedirectPolicy, transport,
};
use withings_sim::{DEFAULT_USER_ID, DEMO_USER_ID, Fault, Simulator, Target};

/// A simulator, the app's client (authenticating with its secret), and a login it started
/// (`user.metrics`), the user yet to approve it.
async fn login_started() -> (Simulator, OAuthClient, AuthorizeRequest) {
    let sim = simulator().await;
    let client = oauth(&sim, ClientAuth::Secret);
    let request = client
        .authorize(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    (sim, client, request)
}

/// A simulator, the app's client (authenticating as `auth` says) and the token of the
/// default user's login (`user.metrics`).
async fn logged_in(auth: ClientAuth) -> (Simulator, OAuthClient, tower_withings::Token) {
    let sim = simulator().await;
    let client = oauth(&sim, auth);
    let token = login(&client, &[Scope::UserMetrics]).await;
    (sim, client, token)
}

/// Withings exchanged one code and refreshed one pair.
fn assert_one_exchange_and_one_refresh(sim: &Simulator) {
    let counters = sim.counters();
    assert_eq!(counters.successful_code_exchanges, 1, "{counters:?}");
    assert_eq!(counters.successful_refreshes, 1, "{counters:?}");
}

#[tokio::test]
async fn the_four_steps_of_the_web_flow() {
    let sim = simulator().await;
    let client = oauth(&sim, ClientAuth::Secret);

    // 1. authorize2 with the documented parameters.
    let request = client
        .authorize(REDIRECT_URI, &[Scope::UserMetrics, Scope::UserActivity])
        .unwrap();
    let url = request.url();
    assert!(url.starts_with(&format!("{}/oauth2_user/authorize2?", sim.account_base())));
    for part in [
        "response_type=code",
        &format!("client_id={CLIENT_ID}"),
        "scope=user.metrics%2Cuser.activity",
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fwithings%2Fcallback",
        &format!("state={}", request.state()),
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    assert!(!url.contains("mode=demo"));
    assert!(!url.contains(CLIENT_SECRET));

    // 2. the user is redirected back with a code and our state.
    let callback = approve(&request).await;
    assert_eq!(callback.state(), request.state());

    // 3. the code buys a token pair.
    let before = std::time::SystemTime::now();
    let token = client.exchange_code(&callback, &request).await.unwrap();
    assert_eq!(token.user_id, DEFAULT_USER_ID);
    assert_eq!(token.scope, "user.metrics,user.activity");
    let lifetime = token.expires_at.duration_since(before).unwrap();
    assert!(lifetime > Duration::from_secs(10_790) && lifetime <= Duration::from_secs(10_801));
    // A `/measure` call with `token`'s access token; its JSON answer.
    let measure = async |form: &str, token: &tower_withings::Token| {
        data_call(&sim, "/measure", form, token.access_token.expose()).await
    };
    let body = measure("action=getmeas&meastype=1", &token).await;
    assert_eq!(body["status"], 0, "{body}");
    assert!(body["body"]["measuregrps"].is_array(), "{body}");

    // 4. the refresh token buys a new pair; the refresh token rotates.
    let renewed = client.refresh(&token.refresh_token).await.unwrap();
    assert_eq!(renewed.user_id, token.user_id);
    assert_ne!(renewed.access_token, token.access_token);
    assert_ne!(renewed.refresh_token, token.refresh_token);

    // The old refresh token dies at the first use of the new access token.
    let body = measure("action=getmeas", &renewed).await;
    assert_eq!(body["status"], 0, "{body}");
    sim.advance(Duration::from_secs(11));
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    assert!(matches!(err, Error::RefreshTokenInvalid), "{err:?}");

    assert_one_exchange_and_one_refresh(&sim);
    assert_eq!(sim.counters().bearer_where_none_belongs, 0);
}

#[tokio::test]
async fn each_scope_is_granted_as_asked() {
    let sim = simulator().await;
    let client = oauth(&sim, ClientAuth::Secret);
    for scope in Scope::ALL {
        let token = login(&client, &[scope]).await;
        assert_eq!(token.scope, scope.as_str());
    }
    let all = login(&client, &Scope::ALL).await;
    assert_eq!(
        all.scope,
        "user.info,user.metrics,user.activity,user.sleepevents"
    );
    assert!(matches!(
        client.authorize(REDIRECT_URI, &[]),
        Err(Error::NoScope)
    ));
}

#[tokio::test]
async fn a_scope_not_granted_is_unauthorized_not_an_auth_failure() {
    let (sim, _client, token) = logged_in(ClientAuth::Secret).await;
    let body = data_call(&sim, "/v2/sleep", "action=get", token.access_token.expose()).await;
    let err = tower_withings::parse_response(&bytes::Bytes::from(body.to_string())).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn demo_mode_logs_in_the_demo_user() {
    let sim = simulator().await;
    let client = oauth(&sim, ClientAuth::Secret);
    let request = client
        .authorize_demo(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    assert!(request.url().contains("mode=demo"));
    let callback = approve(&request).await;
    let token = client.exchange_code(&callback, &request).await.unwrap();
    assert_eq!(token.user_id, DEMO_USER_ID);
}

#[tokio::test]
async fn codes_expire_after_30_seconds() {
    let (sim, client, request) = login_started().await;
    let callback = approve(&request).await;
    sim.advance(Duration::from_secs(31));
    let err = client.exchange_code(&callback, &request).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCode), "{err:?}");
    assert!(err.to_string().contains("valid 30 s"), "{err}");
}

#[tokio::test]
async fn codes_are_single_use() {
    let (_sim, client, request) = login_started().await;
    let callback = approve(&request).await;
    client.exchange_code(&callback, &request).await.unwrap();
    let err = client.exchange_code(&callback, &request).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCode), "{err:?}");
}

#[tokio::test]
async fn a_forged_state_is_refused_before_anything_is_sent() {
    let (sim, client, request) = login_started().await;
    let genuine = approve(&request).await;
    let forged =
        Callback::parse(&format!("code={}&state=attacker", genuine.code().expose())).unwrap();
    let err = client.exchange_code(&forged, &request).await.unwrap_err();
    assert!(matches!(err, Error::StateMismatch), "{err:?}");
    // A callback from another login (replayed state) is refused too.
    let other = client
        .authorize(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    let err = client.exchange_code(&genuine, &other).await.unwrap_err();
    assert!(matches!(err, Error::StateMismatch), "{err:?}");
    assert_eq!(sim.counters().code_exchanges, 0);
}

#[tokio::test]
async fn params_outside_a_post_body_fail_as_the_faq_says() {
    let sim = simulator().await;
    // What a client that puts the parameters in the query string gets back.
    let url = format!(
        "{}/v2/oauth2?action=requesttoken&grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token=x",
        sim.api_base()
    );
    let (_, _, body) = browser_get(&url).await;
    let err = tower_withings::parse_response(&bytes::Bytes::from(body)).unwrap_err();
    match err {
        Error::InvalidParams { message, .. } => {
            assert!(message.contains("POST form body"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // This client always sends a POST form body, which the simulator reads exclusively.
    let client = oauth(&sim, ClientAuth::Secret);
    login(&client, &[Scope::UserMetrics]).await;
}

#[tokio::test]
async fn wrong_credentials_are_an_invalid_client() {
    let sim = simulator().await;
    sim.register_oauth1_client("oauth1-client", "oauth1-secret");
    let good = oauth(&sim, ClientAuth::Secret);
    let token = login(&good, &[Scope::UserMetrics]).await;

    for (id, secret) in [
        (CLIENT_ID, "wrong-secret"),
        ("unknown-client", CLIENT_SECRET),
        ("oauth1-client", "oauth1-secret"),
    ] {
        for mode in [ClientAuth::Secret, ClientAuth::Signed] {
            let client = OAuthClient::builder(Credentials::new(id, secret))
                .endpoints(endpoints(&sim))
                .client_auth(mode)
                .build(transport::plain_http_client());
            let err = client.refresh(&token.refresh_token).await.unwrap_err();
            assert!(
                matches!(err, Error::InvalidClient { .. }),
                "{id} {mode:?}: {err:?}"
            );
            assert!(err.to_string().contains("OAuth 2.0"), "{err}");
            assert!(!err.to_string().contains(secret));
        }
    }
}

#[tokio::test]
async fn redirect_uri_rules() {
    let sim = simulator().await;
    let client = oauth(&sim, ClientAuth::Secret);
    // Refused locally, before the user is sent anywhere.
    for uri in [
        "https://localhost/cb",
        "https://127.0.0.1/cb",
        "http://app.example.com/withings/callback",
        "https://app.example.com:8443/cb",
    ] {
        assert!(matches!(
            client.authorize(uri, &[Scope::UserMetrics]),
            Err(Error::RedirectUri { .. })
        ));
    }
    // Allowed explicitly for a local app.
    let local = OAuthClient::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints(&sim))
        .redirect_policy(RedirectPolicy::AllowLoopback)
        .build(transport::plain_http_client());
    assert!(
        local
            .authorize("http://127.0.0.1:8080/cb", &[Scope::UserMetrics])
            .is_ok()
    );

    // Not a registered callback URL: Withings' page says so.
    let request = client
        .authorize("https://other.example.com/cb", &[Scope::UserMetrics])
        .unwrap();
    let (status, _, body) = browser_get(request.url()).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST);
    assert!(
        body.contains("does not match the partner callback URL"),
        "{body}"
    );

    // A code exchanged with another redirect_uri than authorize2 got.
    let request = client
        .authorize(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    let callback = approve(&request).await;
    let altered = AuthorizeRequest::resume(
        request.state(),
        "https://app.example.com/withings/callback/",
    );
    let err = client.exchange_code(&callback, &altered).await.unwrap_err();
    assert!(matches!(err, Error::RedirectUriMismatch), "{err:?}");
}

#[tokio::test]
async fn authorize2_not_authorize() {
    let sim = simulator().await;
    let (status, _, _) = browser_get(&format!(
        "{}/oauth2_user/authorize?response_type=code&client_id={CLIENT_ID}",
        sim.account_base()
    ))
    .await;
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    let client = oauth(&sim, ClientAuth::Secret);
    let request = client
        .authorize(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    assert!(request.url().contains("/oauth2_user/authorize2?"));
}

#[tokio::test]
async fn forced_logout_goes_back_to_authorize2() {
    let (sim, client, request) = login_started().await;
    let logout = client.logout_url(&request);
    assert!(logout.starts_with(&format!("{}/logout?r=", sim.account_base())));
    let (status, location, _) = browser_get(&logout).await;
    assert_eq!(status, http::StatusCode::FOUND);
    assert_eq!(location.as_deref(), Some(request.url()));
}

#[tokio::test]
async fn a_user_who_unlinks_the_app_must_authorize_again() {
    let (_sim, client, token) = logged_in(ClientAuth::Secret).await;
    let url = client.disconnect_url(token.user_id);
    assert!(url.ends_with(&format!(
        "/partner/disconnect_partner/{CLIENT_ID}?selecteduser={DEFAULT_USER_ID}"
    )));
    let (status, _, _) = browser_get(&url).await;
    assert!(status.is_success());
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    assert!(matches!(err, Error::RefreshTokenInvalid), "{err:?}");
}

#[tokio::test]
async fn deactivated_then_deleted_user() {
    let (sim, client, token) = logged_in(ClientAuth::Secret).await;
    sim.deactivate_user(DEFAULT_USER_ID);
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    assert!(matches!(err, Error::UserDeactivated), "{err:?}");
    assert!(err.to_string().contains("retry once a day"), "{err}");
    let body = data_call(
        &sim,
        "/measure",
        "action=getmeas",
        token.access_token.expose(),
    )
    .await;
    let err = tower_withings::parse_response(&bytes::Bytes::from(body.to_string())).unwrap_err();
    assert!(matches!(err, Error::UserDeactivated), "{err:?}");

    sim.delete_user(DEFAULT_USER_ID);
    sim.advance(Duration::from_secs(11));
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    assert!(matches!(err, Error::RefreshTokenInvalid), "{err:?}");
}

#[tokio::test]
async fn signed_mode_never_sends_the_secret() {
    let (sim, client, token) = logged_in(ClientAuth::Signed).await;
    let renewed = client.refresh(&token.refresh_token).await.unwrap();
    assert_ne!(renewed.refresh_token, token.refresh_token);
    assert_eq!(sim.counters().nonces, 2);
    assert_one_exchange_and_one_refresh(&sim);
}

#[tokio::test]
async fn the_same_refresh_twice_within_10_seconds_is_rate_limited() {
    let (_sim, client, token) = logged_in(ClientAuth::Secret).await;
    client.refresh(&token.refresh_token).await.unwrap();
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    match err {
        Error::RateLimited { wait: Some(wait) } => assert!(wait <= Duration::from_secs(10)),
        other => panic!("{other:?}"),
    }
}

/// What the token endpoint answers reaches the caller as the status table says
/// (`tower_withings::__private::classify`, whose rows `src/status.rs` checks): one body of each
/// kind of row, with its message and wait carried through; and the failures that are not a
/// body status (HTTP, non-JSON, truncated, dropped) as their own errors. No secret in any.
#[tokio::test]
async fn token_endpoint_answers_are_classified_by_the_status_table() {
    use tower_withings::__private::classify;
    let (sim, client, token) = logged_in(ClientAuth::Secret).await;
    let rows: [(i64, &str, Option<u64>); 12] = [
        (
            401,
            "invalid_token: The access token provided is invalid",
            None,
        ),
        (100, "", None),
        (503, "Invalid Params: invalid refresh_token", None),
        (503, "Invalid Params: invalid code", None),
        (503, "invalid client id/secret", None),
        (293, "Invalid Params", None),
        (214, "", None),
        (2554, "Not implemented", None),
        (522, "timeout", None),
        (524, "bad state", None),
        (601, "Too many request", Some(7)),
        (9999, "unheard of", None),
    ];
    type Expect = fn(&Error) -> bool;
    let other: [(Fault, Expect); 4] = [
        (
            Fault::HttpStatus(502),
            |e| matches!(e, Error::Http { status } if status.as_u16() == 502),
        ),
        (Fault::NonJson, |e| {
            matches!(e, Error::MalformedResponse { .. })
        }),
        (Fault::Truncated, |e| {
            matches!(e, Error::MalformedResponse { .. })
        }),
        (Fault::Drop, |e| matches!(e, Error::Transport(_))),
    ];
    let expect_row = |(status, message, wait): (i64, &str, Option<u64>)| {
        let expected = classify(status, message, wait).expect("a failure row");
        let fault = Fault::BodyStatus {
            status,
            error: message.into(),
            wait_seconds: wait,
        };
        let matches: Box<dyn Fn(&Error) -> bool> =
            Box::new(move |e| format!("{e:?}") == format!("{expected:?}"));
        (fault, matches)
    };
    let cases = rows.into_iter().map(expect_row).chain(
        other
            .into_iter()
            .map(|(fault, f)| (fault, Box::new(f) as Box<dyn Fn(&Error) -> bool>)),
    );
    for (fault, expected) in cases {
        let label = format!("{fault:?}");
        sim.inject(Target::TokenEndpoint, fault, 1);
        let err = client.refresh(&token.refresh_token).await.unwrap_err();
        assert!(expected(&err), "{label} gave {err:?}");
        let message = err.to_string();
        assert!(!message.contains(token.refresh_token.expose()), "{label}");
        assert!(!message.contains(CLIENT_SECRET), "{label}");
    }
    // After all those faults the untouched refresh token still works.
    client.refresh(&token.refresh_token).await.unwrap();
}

#[tokio::test]
async fn a_slow_token_endpoint_times_out() {
    let sim = simulator().await;
    let client = OAuthClient::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints(&sim))
        .timeout(Duration::from_millis(200))
        .build(transport::plain_http_client());
    let token = login(&client, &[Scope::UserMetrics]).await;
    sim.inject(
        Target::TokenEndpoint,
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    let err = client.refresh(&token.refresh_token).await.unwrap_err();
    assert!(matches!(err, Error::TokenEndpointTimeout(_)), "{err:?}");
}

#[tokio::test]
async fn the_secret_and_tokens_stay_out_of_debug_output() {
    let (_sim, client, request) = login_started().await;
    let callback = approve(&request).await;
    let token = client.exchange_code(&callback, &request).await.unwrap();
    let shown = format!("{client:?} {request:?} {callback:?} {token:?}");
    for secret in [
        CLIENT_SECRET,
        token.access_token.expose(),
        token.refresh_token.expose(),
        request.state(),
        callback.code().expose(),
    ] {
        assert!(!shown.contains(secret), "leaked in {shown}");
    }
}
