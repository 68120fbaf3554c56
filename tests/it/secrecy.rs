//! No token or client secret in logs (any level), Debug output or error messages, through a
//! whole flow: login, calls, proactive and reactive refresh, failures, a dead refresh token.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_withings::store::TokenStore;
use tower_withings::{Scope, Secret, transport};
use withings_sim::{Fault, Target};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn nothing_secret_reaches_logs_debug_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let rig = rig().await;
    let mut secrets: Vec<Secret> = vec![
        Secret::new(CLIENT_SECRET),
        rig.token.access_token.clone(),
        rig.token.refresh_token.clone(),
    ];
    let mut shown = Vec::new();

    // The web flow through the handle.
    let request = rig
        .auth
        .authorize(REDIRECT_URI, &[Scope::UserMetrics])
        .unwrap();
    let callback = approve(&request).await;
    secrets.push(callback.code().clone());
    secrets.push(Secret::new(request.state()));
    let user = rig.auth.exchange_code(&callback, &request).await.unwrap();
    shown.push(format!("{:?} {:?} {:?}", rig.auth, request, callback));

    let client = ServiceBuilder::new()
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(tower_http::trace::DefaultMakeSpan::new().include_headers(true)),
        )
        .layer(rig.auth.layer())
        // Below the layer the bearer header is on the request: log headers there too.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(tower_http::trace::DefaultMakeSpan::new().include_headers(true)),
        )
        .service(transport::plain_http_client());
    let remember = |secrets: &mut Vec<Secret>, token: &tower_withings::Token| {
        secrets.push(token.access_token.clone());
        secrets.push(token.refresh_token.clone());
    };
    let stored = rig.auth.store().load(user).await.unwrap().unwrap();
    remember(&mut secrets, &stored.token);
    shown.push(format!("{stored:?}"));

    // Calls on a good token, after expiry (proactive), after revocation (reactive + replay).
    let response = client
        .clone()
        .oneshot(getmeas(&rig.sim, user))
        .await
        .unwrap();
    shown.push(format!("{:?} {:?}", response.status(), response.headers()));
    json(response).await;
    let call = || async {
        let response = client
            .clone()
            .oneshot(getmeas(&rig.sim, user))
            .await
            .unwrap();
        json(response).await
    };
    rig.clock.advance(Duration::from_secs(4 * 3600));
    call().await;
    let stored = rig.auth.store().load(user).await.unwrap().unwrap();
    remember(&mut secrets, &stored.token);
    rig.sim
        .revoke_access_token(stored.token.access_token.expose());
    call().await;
    let stored = rig.auth.store().load(user).await.unwrap().unwrap();
    remember(&mut secrets, &stored.token);

    // Failures: a broken token endpoint, then a dead refresh token.
    let failing_call = || async {
        let outcome = client.clone().oneshot(getmeas(&rig.sim, user)).await;
        outcome.err().expect("an error")
    };
    rig.clock.advance(Duration::from_secs(4 * 3600));
    rig.sim.inject(Target::TokenEndpoint, Fault::Truncated, 1);
    let error = failing_call().await;
    shown.push(format!("{error} {error:?}"));
    rig.sim.revoke_user(user);
    let error = failing_call().await;
    shown.push(format!("{error} {error:?}"));
    shown.push(format!("{:?}", rig.auth.store().list().await.unwrap()));
    assert!(rig.auth.metrics().refreshes_started >= 3);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token refreshed"),
        "refresh events are logged"
    );
    assert!(
        logs.contains("authorization"),
        "request headers are logged (sensitive ones hidden)"
    );
    let everything = format!("{logs}\n{}", shown.join("\n"));
    for secret in &secrets {
        let value = secret.expose();
        assert!(value.len() >= 16, "a real secret value");
        assert!(
            !everything.contains(value),
            "a secret leaked: {}...",
            &value[..4]
        );
    }
}
