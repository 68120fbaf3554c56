//! The handle's user lifecycle against the simulator: what `users()` says of each
//! authorization, the keeper, `revoke`, and a refused refresh token.

use std::sync::Arc;
use std::time::Duration;

use tower_withings::{
    Credentials, Error, Secret, Token, UserId, WithingsAuth, auth::AuthState,
    auth::KEEPER_THRESHOLD, auth::UserInfo, clock::Clock, transport,
};

use crate::common::{CLIENT_ID, Rig, USER, needs_reauthorization, rig_2s, wait_until};

fn state(users: &[UserInfo]) -> AuthState {
    users.iter().find(|u| u.user == USER).expect("listed").state
}

/// The state `users()` lists [`USER`] in now.
async fn listed_state(rig: &Rig) -> AuthState {
    state(&rig.auth.users().await.unwrap())
}

#[tokio::test]
async fn users_say_what_each_authorization_is_good_for() {
    let rig = rig_2s().await;
    let users = rig.auth.users().await.unwrap();
    assert_eq!(state(&users), AuthState::Ok);
    assert_eq!(users[0].refresh_token_age, Duration::ZERO);
    assert!(!format!("{users:?}").contains(rig.token.access_token.expose()));

    rig.clock.advance(Duration::from_secs(3 * 3600 - 60));
    let users = rig.auth.users().await.unwrap();
    assert_eq!(state(&users), AuthState::Expiring);
    assert_eq!(
        users[0].refresh_token_age,
        Duration::from_secs(3 * 3600 - 60)
    );

    rig.sim.deactivate_user(USER);
    assert!(rig.auth.refresh(USER).await.is_err());
    assert_eq!(listed_state(&rig).await, AuthState::Deactivated);

    rig.auth.mark_revoked(USER).await.unwrap();
    assert_eq!(listed_state(&rig).await, AuthState::Revoked);
}

/// Only the users whose refresh token is older than the threshold are refreshed.
#[tokio::test]
async fn the_keeper_refreshes_only_old_refresh_tokens() {
    let rig = rig_2s().await;
    let old = UserId(1_001);
    let grant = rig.sim.issue_grant(CLIENT_ID, old, "user.metrics");
    let token = Token {
        user_id: old,
        access_token: Secret::new(grant.access_token),
        refresh_token: Secret::new(grant.refresh_token),
        expires_at: rig.clock.now() + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    };
    // Granted 301 days ago (its access token long expired, the refresh token still good).
    let granted = rig.clock.now() - Duration::from_secs(301 * 86_400);
    rig.auth.store().put(&token, granted).await.unwrap();
    assert_eq!(
        rig.auth.keep_fresh(KEEPER_THRESHOLD).await.unwrap(),
        vec![old]
    );
    assert_eq!(rig.sim.counters().refreshes, 1);
    let users = rig.auth.users().await.unwrap();
    assert!(
        users
            .iter()
            .all(|u| u.refresh_token_age < Duration::from_secs(60))
    );
    // Nothing is old any more.
    assert!(
        rig.auth
            .keep_fresh(KEEPER_THRESHOLD)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(rig.sim.counters().refreshes, 1);
}

/// The spawned keeper does the same every period, and stops when dropped.
#[tokio::test]
async fn the_keeper_runs_until_dropped() {
    let rig = rig_2s().await;
    let granted = rig.clock.now() - Duration::from_secs(301 * 86_400);
    rig.auth.store().put(&rig.token, granted).await.unwrap();
    let keeper = rig.auth.keeper(Duration::from_millis(10));
    wait_until(|| async { rig.sim.counters().successful_refreshes == 1 }).await;
    assert_eq!(rig.sim.counters().successful_refreshes, 1);
    drop(keeper);
    let granted = rig.clock.now() - Duration::from_secs(302 * 86_400);
    let current = rig.auth.store().load(USER).await.unwrap().unwrap().token;
    rig.auth.store().put(&current, granted).await.unwrap();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        rig.sim.counters().refreshes,
        1,
        "a dropped keeper refreshed"
    );
}

/// `revoke` is signed (the simulator checks the HMAC and consumes the nonce), kills the
/// user's tokens at Withings, and marks the record revoked.
#[tokio::test]
async fn revoke_is_signed_and_marks_the_user() {
    let rig = rig_2s().await;
    let nonces = rig.sim.counters().nonces;
    rig.auth.revoke(USER).await.unwrap();
    assert_eq!(rig.sim.counters().nonces, nonces + 1, "signed: one nonce");
    assert!(
        !rig.sim
            .is_refresh_token_valid(rig.token.refresh_token.expose())
    );
    assert!(
        !rig.sim
            .is_access_token_valid(rig.token.access_token.expose())
    );
    assert!(needs_reauthorization(&rig.auth, USER).await);
    assert_eq!(listed_state(&rig).await, AuthState::Revoked);
}

/// A wrong signature (wrong secret) is refused by Withings: nothing is marked.
#[tokio::test]
async fn a_refused_revoke_marks_nothing() {
    let rig = rig_2s().await;
    let impostor = WithingsAuth::builder(Credentials::new(CLIENT_ID, "wrong-secret"))
        .endpoints(rig.sim.endpoints())
        .shared_store(Arc::clone(rig.auth.store()))
        .build(transport::plain_http_client());
    let error = impostor.revoke(USER).await.unwrap_err();
    assert!(matches!(error, Error::InvalidClient { .. }), "{error:?}");
    assert!(!error.to_string().contains("wrong-secret"), "{error}");
    assert!(
        rig.sim
            .is_refresh_token_valid(rig.token.refresh_token.expose())
    );
    assert!(!needs_reauthorization(&rig.auth, USER).await);
}

#[tokio::test]
async fn a_refused_refresh_token_lists_as_needing_reauthorization() {
    let rig = rig_2s().await;
    rig.sim.revoke_user(USER);
    assert!(rig.auth.refresh(USER).await.is_err());
    assert_eq!(listed_state(&rig).await, AuthState::NeedsReauthorization);
}
