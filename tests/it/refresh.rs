//! When the layer refreshes and what it publishes: the refresh point of short-lived tokens, new
//! authorizations racing refreshes, answers for the wrong user, and per-user memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_withings::store::{MemoryStore, StoreFuture, TokenStore};
use tower_withings::{
    Credentials, Endpoints, Error, Secret, Token, UserId, WithingsAuth, auth::WithingsAuthBuilder,
    clock::Clock, clock::ManualClock, transport,
};
use withings_sim::Simulator;

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// Tokens living 120 s (shorter than the default 5 min skew plus jitter): 20 calls over 2 s
/// after the first refresh make no second one.
#[tokio::test]
async fn a_token_shorter_lived_than_the_skew_is_refreshed_once() {
    let rig = rig().await;
    rig.sim.set_access_token_ttl(Duration::from_secs(120));
    let service = rig.service();
    rig.clock.advance(EXPIRED);
    for _ in 0..20 {
        expect_ok(&service, &rig.sim, USER).await;
        rig.clock.advance(Duration::from_millis(100));
    }
    let counters = rig.sim.counters();
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    // Past half its life, it is refreshed again: once.
    rig.clock.advance(Duration::from_secs(60));
    for _ in 0..5 {
        expect_ok(&service, &rig.sim, USER).await;
    }
    assert_eq!(rig.sim.counters().refreshes, 2);
}

/// A short-lived pair another handle stored is adopted, not refreshed again.
#[tokio::test]
async fn a_short_lived_pair_stored_by_another_handle_is_adopted() {
    let sim = simulator().await;
    sim.set_access_token_ttl(Duration::from_secs(3));
    let clock = ManualClock::new();
    let store = Arc::new(MemoryStore::new());
    let handle = || {
        auth_builder(&sim, &clock)
            .shared_store(store.clone())
            .build(transport::plain_http_client())
    };
    let (first, second) = (handle(), handle());
    first
        .import(grant(&sim, &clock, USER))
        .await
        .expect("import");
    clock.advance(Duration::from_secs(2)); // past half of 3 s
    let via = |auth: &WithingsAuth| auth.layer().layer(transport::plain_http_client());
    expect_ok(&via(&first), &sim, USER).await;
    assert_eq!(sim.counters().refreshes, 1);
    expect_ok(&via(&second), &sim, USER).await;
    expect_ok(&via(&second), &sim, USER).await;
    let counters = sim.counters();
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    assert_eq!(second.metrics().refreshes_started, 0);
}

/// A memory store whose next `load` can be held after it has read the record, so a refresh
/// can be paused between reading the store and publishing what it read.
type PausingStore = Hooked<MemoryStore, Pausing>;

#[derive(Default)]
struct Pausing {
    hold_next_load: Mutex<Option<Hold>>,
}

/// Fires when the held load has read; the load goes on when the receiver fires, failing if
/// told to.
type Hold = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
    bool,
);

impl Pausing {
    /// The next load pauses: `paused` fires when it has read, and it goes on when `release`
    /// fires, then fails with a store error if `fail`.
    fn pause_next_load(
        &self,
        fail: bool,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (paused_tx, paused_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        *self.hold_next_load.lock().unwrap() = Some((paused_tx, release_rx, fail));
        (paused_rx, release_tx)
    }
}

impl StoreHooks for Pausing {
    fn after<'a>(&'a self, call: Call<'a>, _answer: Answer) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let hold = match call {
                Call::Load => self.hold_next_load.lock().unwrap().take(),
                _ => None,
            };
            if let Some((paused, release, fail)) = hold {
                paused.send(()).unwrap();
                release.await.unwrap();
                if fail {
                    return Err(Error::store("load", "connection lost (injected)"));
                }
            }
            Ok(())
        })
    }
    fn inner_leases(&self) -> bool {
        false // as the memory store before it had: the in-process default
    }
}

/// A simulator, a handle (as `configure` makes it) on a pausing store, and the default user's
/// pair imported.
async fn pausing_rig(
    configure: impl FnOnce(WithingsAuthBuilder) -> WithingsAuthBuilder,
) -> (
    Simulator,
    ManualClock,
    Arc<PausingStore>,
    WithingsAuth,
    Token,
) {
    let sim = simulator().await;
    let clock = ManualClock::new();
    let store = Arc::new(PausingStore::default());
    let auth = configure(auth_builder(&sim, &clock).shared_store(store.clone()))
        .build(transport::plain_http_client());
    let held = grant(&sim, &clock, USER);
    auth.import(held.clone()).await.unwrap();
    (sim, clock, store, auth, held)
}

/// A refresh that read the store, paused, and an import (a new login) lands meanwhile: when
/// the refresh goes on, the new authorization is what requests use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_authorization_wins_over_a_refresh_begun_before_it() {
    let (sim, clock, store, auth, held) = pausing_rig(|b| b).await;
    // Another process rotated the pair: the store has a newer one than this handle holds.
    clock.advance(Duration::from_secs(10_800 - 200));
    let mut rotated = grant(&sim, &clock, USER);
    rotated.expires_at = clock.now() + Duration::from_secs(10_800);
    assert!(
        store
            .compare_and_save(&held.refresh_token, &rotated, clock.now())
            .await
            .unwrap()
    );

    let (service, sent) = recorded(&auth);
    let (paused, release) = store.pause_next_load(false);
    let request = tokio::spawn(service.clone().oneshot(getmeas(&sim, USER)));
    paused.await.unwrap(); // the refresh read `rotated` and is about to adopt it

    let login = grant(&sim, &clock, USER);
    auth.import(login.clone()).await.unwrap();
    release.send(()).unwrap();
    let response = request
        .await
        .unwrap()
        .expect("the paused request is answered");
    assert_eq!(json(response).await["status"], 0);

    expect_ok(&service, &sim, USER).await;
    let bearers: Vec<String> = sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.bearer.clone())
        .collect();
    assert_eq!(
        bearers.last().map(String::as_str),
        Some(login.access_token.expose()),
        "the request after the import used an older pair"
    );
    assert_eq!(sim.counters().refreshes, 0);
}

/// A refresh that fails after a new authorization replaced the one it began with does not put
/// the new authorization into backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_refresh_failure_does_not_back_off_a_new_authorization() {
    let hour = Duration::from_secs(3600);
    let (sim, clock, store, auth, _) = pausing_rig(|b| b.backoff(hour, hour)).await;
    clock.advance(EXPIRED);
    let service = auth.layer().layer(transport::plain_http_client());
    let (paused, release) = store.pause_next_load(true);
    let request = tokio::spawn(service.clone().oneshot(getmeas(&sim, USER)));
    paused.await.unwrap();
    auth.import(grant(&sim, &clock, USER)).await.unwrap();
    release.send(()).unwrap();
    // The paused refresh fails; the request still has the new login's token.
    let response = request.await.unwrap().expect("answered with the new login");
    assert_eq!(json(response).await["status"], 0);
    // The new login expires in turn: its refresh is not refused by the old one's backoff.
    clock.advance(EXPIRED);
    expect_ok(&service, &sim, USER).await;
}

/// A token-endpoint client answering every refresh with a valid pair for user 999.
fn answers_for_another_user(
    calls: Arc<AtomicU64>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            let body = r#"{"status":0,"body":{"userid":"999","access_token":"other-users-access","refresh_token":"rotated-refresh","expires_in":10800,"scope":"user.metrics"}}"#;
            Ok(Response::new(Full::new(Bytes::from_static(
                body.as_bytes(),
            ))))
        }
    })
}

#[tokio::test]
async fn a_refresh_answered_for_another_user_keeps_the_pair_and_never_reuses_the_spent_token() {
    let clock = ManualClock::new();
    let store = Arc::new(MemoryStore::new());
    let calls = Arc::new(AtomicU64::new(0));
    let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::custom("https://wbsapi.example", "https://account.example").unwrap())
        .shared_store(store.clone())
        .clock(clock.clone())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build(answers_for_another_user(calls.clone()));
    let user = UserId(7);
    auth.import(Token {
        user_id: user,
        access_token: Secret::new("old-access"),
        refresh_token: Secret::new("spent-refresh"),
        expires_at: clock.now() + Duration::from_secs(10_800),
        scope: "user.metrics".into(),
    })
    .await
    .unwrap();
    clock.advance(EXPIRED);

    let bearers = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = bearers.clone();
    let api = tower::service_fn(move |request: Request<Full<Bytes>>| {
        if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
            seen.lock()
                .unwrap()
                .push(value.to_str().unwrap().to_owned());
        }
        async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                b"{\"status\":0,\"body\":{}}",
            ))))
        }
    });
    let service = auth.layer_for(user).layer(api);
    for _ in 0..3 {
        let request = Request::post("https://wbsapi.example/measure")
            .body(Full::new(Bytes::from_static(b"action=getmeas")))
            .unwrap();
        let error = auth_error(service.clone().oneshot(request).await.unwrap_err());
        assert!(
            matches!(error, Error::UserMismatch { asked, answered } if asked == user && answered == UserId(999)),
            "{error:?}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the spent refresh token was presented again"
    );
    assert!(
        bearers.lock().unwrap().is_empty(),
        "a request was sent with another user's token"
    );
    let record = store.load(user).await.unwrap().expect("the record is kept");
    assert_eq!(record.token.refresh_token.expose(), "rotated-refresh");
    assert!(record.needs_reauthorization);
}

/// Requests naming users the store does not know leave no in-memory state behind.
#[tokio::test]
async fn unknown_users_leave_no_slot_behind() {
    let (rig, service) = served().await;
    let before = rig.auth.users_in_memory();
    for id in 0..2_000u64 {
        let error = auth_error(
            service
                .clone()
                .oneshot(getmeas(&rig.sim, UserId(1_000_000 + id)))
                .await
                .unwrap_err(),
        );
        assert!(matches!(error, Error::UnknownUser(_)), "{error:?}");
    }
    assert_eq!(rig.auth.users_in_memory(), before);
}

/// Users idle for an eviction period lose their in-memory state; they are reloaded from the
/// store (no refresh) on their next request.
#[tokio::test]
async fn idle_users_are_evicted_and_reloaded_from_the_store() {
    let rig = rig_with(|b| b.evict_idle_after(Duration::from_secs(600))).await;
    let service = rig.service();
    let users: Vec<UserId> = (0..50).map(|i| UserId(5_000 + i)).collect();
    for user in &users {
        rig.auth
            .import(grant(&rig.sim, &rig.clock, *user))
            .await
            .unwrap();
        expect_ok(&service, &rig.sim, *user).await;
    }
    assert!(rig.auth.users_in_memory() >= users.len());
    // A sweep (made by a new user's first request) marks the slots; the next one, a period
    // later, evicts those no request used in between.
    for new_user in [9_998, 9_999] {
        rig.clock.advance(Duration::from_secs(700));
        rig.auth
            .import(grant(&rig.sim, &rig.clock, UserId(new_user)))
            .await
            .unwrap();
    }
    assert!(
        rig.auth.users_in_memory() <= 3,
        "{} users still in memory",
        rig.auth.users_in_memory()
    );
    for user in &users[..5] {
        expect_ok(&service, &rig.sim, *user).await;
    }
    assert_eq!(rig.sim.counters().refreshes, 0);
}

/// A pair no Authorization header could carry is refused at import; the stored pair stays.
#[tokio::test]
async fn an_unsendable_access_token_is_refused_at_import() {
    let rig = rig().await;
    let mut bad = grant(&rig.sim, &rig.clock, USER);
    bad.access_token = Secret::new("line\r\nbreak");
    let error = rig.auth.import(bad).await.unwrap_err();
    assert!(
        matches!(error, Error::MalformedResponse { .. }),
        "{error:?}"
    );
    let stored = rig.auth.store().load(USER).await.unwrap().unwrap();
    assert_eq!(stored.token, rig.token);
    let service = rig.service();
    expect_ok(&service, &rig.sim, USER).await;
}
