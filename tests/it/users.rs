//! The handle's user lifecycle against the simulator: what `users()` says of each
//! authorization, the keeper, `revoke`, and a refused refresh token.

use std::sync::Arc;
use std::time::Duration;

use tower_withings::{
    Credentials, Error, Secret, Token, UserId, WithingsAuth, auth::AuthState,
    auth::KEEPER_THRESHOLD, auth::UserInfo, clock::Clock, transport,
};

use crate::common::{CLIENT_ID, Rig, USER, needs_reauthorization, rig_2s};

fn state(users: &[UserInfo]) -> AuthState {
    users.iter().find(|u| u.user == USER).expect("listed").state
}

#[tokio::test]
async fn users_say_what_each_authorization_is_good_for() {
    let Rig {
        sim,
        clock,
        auth,
        token,
    } = rig_2s().await;
    let users = auth.users().await.unwrap();
    assert_eq!(state(&users), AuthState::Ok);
    assert_eq!(users[0].refresh_token_age, Duration::ZERO);
    assert!(!format!("{users:?}").contains(token.access_token.expose()));

    clock.advance(Duration::from_secs(3 * 3600 - 60));
    let users = auth.users().await.unwrap();
    assert_eq!(state(&users), AuthState::Expiring);
    assert_eq!(
        users[0].refresh_token_age,
        Duration::from_secs(3 * 3600 - 60)
    );

    sim.deactivate_user(USER);
    assert!(auth.refresh(USER).await.is_err());
    assert_eq!(state(&auth.users().await.unwrap()), AuthState::Deactivated);

    auth.mark_revoked(USER).await.unwrap();
    assert_eq!(state(&auth.users().await.unwrap()), AuthState::Revoked);
}

/// Only the users whose refresh token is older than the threshold are refreshed.
#[tokio::test]
async fn the_keeper_refreshes_only_old_refresh_tokens() {
    let Rig {
        sim, clock, auth, ..
    } = rig_2s().await;
    let old = UserId(1_001);
    let grant = sim.issue_grant(CLIENT_ID, old, "user.metrics");
    let token = Token {
        user_id: old,
        access_token: Secret::new(grant.access_token),
        refresh_token: Secret::new(grant.refresh_token),
        expires_at: clock.now() + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    };
    // Granted 301 days ago (its access token long expired, the refresh token still good).
    let granted = clock.now() - Duration::from_secs(301 * 86_400);
    auth.store().put(&token, granted).await.unwrap();
    assert_eq!(auth.keep_fresh(KEEPER_THRESHOLD).await.unwrap(), vec![old]);
    assert_eq!(sim.counters().refreshes, 1);
    let users = auth.users().await.unwrap();
    assert!(
        users
            .iter()
            .all(|u| u.refresh_token_age < Duration::from_secs(60))
    );
    // Nothing is old any more.
    assert!(auth.keep_fresh(KEEPER_THRESHOLD).await.unwrap().is_empty());
    assert_eq!(sim.counters().refreshes, 1);
}

/// The spawned keeper does the same every period, and stops when dropped.
#[tokio::test]
async fn the_keeper_runs_until_dropped() {
    let Rig {
        sim,
        clock,
        auth,
        token,
    } = rig_2s().await;
    let granted = clock.now() - Duration::from_secs(301 * 86_400);
    auth.store().put(&token, granted).await.unwrap();
    let keeper = auth.keeper(Duration::from_millis(10));
    for _ in 0..500 {
        if sim.counters().successful_refreshes == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.counters().successful_refreshes, 1);
    drop(keeper);
    let granted = clock.now() - Duration::from_secs(302 * 86_400);
    let current = auth.store().load(USER).await.unwrap().unwrap().token;
    auth.store().put(&current, granted).await.unwrap();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.counters().refreshes, 1, "a dropped keeper refreshed");
}

/// `revoke` is signed (the simulator checks the HMAC and consumes the nonce), kills the
/// user's tokens at Withings, and marks the record revoked.
#[tokio::test]
async fn revoke_is_signed_and_marks_the_user() {
    let Rig {
        sim, auth, token, ..
    } = rig_2s().await;
    let nonces = sim.counters().nonces;
    auth.revoke(USER).await.unwrap();
    assert_eq!(sim.counters().nonces, nonces + 1, "signed: one nonce");
    assert!(!sim.is_refresh_token_valid(token.refresh_token.expose()));
    assert!(!sim.is_access_token_valid(token.access_token.expose()));
    assert!(needs_reauthorization(&auth, USER).await);
    assert_eq!(state(&auth.users().await.unwrap()), AuthState::Revoked);
}

/// A wrong signature (wrong secret) is refused by Withings: nothing is marked.
#[tokio::test]
async fn a_refused_revoke_marks_nothing() {
    let Rig {
        sim, auth, token, ..
    } = rig_2s().await;
    let impostor = WithingsAuth::builder(Credentials::new(CLIENT_ID, "wrong-secret"))
        .endpoints(sim.endpoints())
        .shared_store(Arc::clone(auth.store()))
        .build(transport::plain_http_client());
    let error = impostor.revoke(USER).await.unwrap_err();
    assert!(matches!(error, Error::InvalidClient { .. }), "{error:?}");
    assert!(!error.to_string().contains("wrong-secret"), "{error}");
    assert!(sim.is_refresh_token_valid(token.refresh_token.expose()));
    assert!(!needs_reauthorization(&auth, USER).await);
}

#[tokio::test]
async fn a_refused_refresh_token_lists_as_needing_reauthorization() {
    let Rig { sim, auth, .. } = rig_2s().await;
    sim.revoke_user(USER);
    assert!(auth.refresh(USER).await.is_err());
    assert_eq!(
        state(&auth.users().await.unwrap()),
        AuthState::NeedsReauthorization
    );
}
