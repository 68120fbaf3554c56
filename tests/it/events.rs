//! The events a handle tells of each user's authorization, against the simulator; none
//! carries a token.

use std::time::Duration;

use tower_withings::{Error, Token, UserId, clock::Clock, events::Event, events::Reauthorization};
use withings_sim::{Fault, Target};

use crate::common::{Rig, USER, needs_reauthorization, rig_2s};

fn no_token_in(event: &Event, token: &Token) {
    let shown = format!("{event:?}");
    assert!(!shown.contains(token.access_token.expose()), "{shown}");
    assert!(!shown.contains(token.refresh_token.expose()), "{shown}");
}

/// What a refresh that `trouble` makes fail tells, the one event checked to hold no token;
/// and the receiver, for what comes after.
async fn event_of_a_failed_refresh(
    trouble: impl FnOnce(&withings_sim::Simulator),
) -> (Event, tokio::sync::broadcast::Receiver<Event>) {
    let Rig {
        sim, auth, token, ..
    } = rig_2s().await;
    let mut events = auth.events();
    trouble(&sim);
    assert!(auth.refresh(USER).await.is_err());
    let event = events.try_recv().expect("an event");
    no_token_in(&event, &token);
    (event, events)
}

#[tokio::test]
async fn a_refresh_tells_of_the_new_pair_without_a_token() {
    let Rig {
        sim: _sim,
        clock,
        auth,
        token,
    } = rig_2s().await;
    let mut events = auth.events();
    auth.refresh(USER).await.unwrap();
    let event = events.try_recv().expect("an event");
    no_token_in(&event, &token);
    let stored = auth.store().load(USER).await.unwrap().unwrap().token;
    no_token_in(&event, &stored);
    match event {
        Event::TokenRotated {
            user,
            generation,
            expires_at,
        } => {
            assert_eq!(user, USER);
            assert_eq!(generation, 2, "import published 1");
            assert!(expires_at > clock.now());
        }
        other => panic!("{other:?}"),
    }
    assert!(events.try_recv().is_err(), "one event per refresh");
}

#[tokio::test]
async fn a_refused_refresh_token_says_the_user_must_log_in_again() {
    let (event, mut events) = event_of_a_failed_refresh(|sim| sim.revoke_user(USER)).await;
    assert!(
        matches!(
            event,
            Event::NeedsReauthorization {
                user: USER,
                why: Reauthorization::RefreshTokenRefused
            }
        ),
        "{event:?}"
    );
    assert!(events.try_recv().is_err(), "no RefreshFailed on top");
}

#[tokio::test]
async fn a_failed_refresh_says_when_it_tries_again() {
    let bad_gateway = |sim: &withings_sim::Simulator| {
        sim.inject(Target::TokenEndpoint, Fault::HttpStatus(502), 1);
    };
    let (event, _) = event_of_a_failed_refresh(bad_gateway).await;
    match event {
        Event::RefreshFailed {
            user,
            error,
            retry_in,
        } => {
            assert_eq!(user, USER);
            assert!(error.is_transient(), "{error:?}");
            assert!(retry_in >= Duration::from_secs(1) && retry_in <= Duration::from_secs(2));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deactivated_user_is_told_apart_from_a_failure() {
    let Rig { sim, auth, .. } = rig_2s().await;
    let mut events = auth.events();
    sim.deactivate_user(USER);
    assert!(auth.refresh(USER).await.is_err());
    let event = events.try_recv().expect("an event");
    let Event::UserDeactivated { user, retry_in } = event else {
        panic!("{event:?}");
    };
    assert_eq!(user, USER);
    // Tokens kept, one attempt a day: until then requests fail fast, nothing is sent.
    assert_eq!(retry_in, Duration::from_secs(24 * 3600));
    let calls = sim.counters().refreshes;
    assert!(matches!(
        auth.refresh(USER).await,
        Err(Error::UserDeactivated)
    ));
    assert_eq!(sim.counters().refreshes, calls, "a refresh was sent");
    assert!(!needs_reauthorization(&auth, USER).await);
}

/// `forget` deletes the record and the in-memory state: the next request finds nothing.
#[tokio::test]
async fn a_forgotten_user_is_gone_from_store_and_memory() {
    let Rig {
        sim: _sim, auth, ..
    } = rig_2s().await;
    assert!(auth.users_in_memory() >= 1);
    assert!(auth.forget(USER).await.unwrap());
    assert!(auth.store().load(USER).await.unwrap().is_none());
    assert_eq!(auth.users_in_memory(), 0);
    assert!(matches!(
        auth.refresh(USER).await,
        Err(Error::UnknownUser(UserId(_)))
    ));
    assert!(!auth.forget(USER).await.unwrap(), "nothing left to delete");
}
