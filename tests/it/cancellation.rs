//! Cancellation at every await point of a refresh.
//!
//! A store and a token-endpoint client with a gate before (and, where it matters, after) each
//! step of the refresh task: load, try_lock, re-load under the lease, the token call, the
//! answer, compare_and_save, the commit, unlock. For each step in turn the test holds the
//! refresh there and then
//!
//! * drops the **caller** (the request that started the refresh): the detached refresh must
//!   still finish, the store must hold a pair Withings accepts, the next request must succeed
//!   with one token call in total, and the slot must not stay stuck;
//! * drops the **whole `WithingsAuth` and its runtime**: after a restart on the same store the
//!   stored pair must still be accepted by Withings, or the grant must be re-obtainable from
//!   it. No grant is lost.
//!
//! Both are written once and run on every durable [`Backend`] (SQLite, PostgreSQL, Redis).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, for_backends, open_spec};
use crate::common::*;
use crate::store_support::random_user;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt};
use tower_withings::store::{StoreFuture, StoredToken, TokenStore};
use tower_withings::{
    Credentials, Endpoints, Error, UserId, WithingsAuth, clock::ManualClock, transport,
};
use withings_sim::Simulator;

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// The await points of a refresh task, in the order it reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// First read of the store.
    Load,
    /// Taking the refresh lease.
    TryLock,
    /// The read under the lease.
    Reload,
    /// The token call, before it reaches Withings.
    TokenCall,
    /// Withings answered (and rotated the pair); the answer is not yet back in the refresh.
    TokenAnswered,
    /// compare_and_save, before it reaches the store.
    Save,
    /// compare_and_save committed; not yet back in the refresh.
    Saved,
    /// Releasing the lease.
    Unlock,
}

const STEPS: [Step; 8] = [
    Step::Load,
    Step::TryLock,
    Step::Reload,
    Step::TokenCall,
    Step::TokenAnswered,
    Step::Save,
    Step::Saved,
    Step::Unlock,
];

impl Step {
    /// Whether Withings has rotated the pair by the time the refresh is held here.
    fn withings_rotated(self) -> bool {
        !matches!(
            self,
            Step::Load | Step::TryLock | Step::Reload | Step::TokenCall
        )
    }

    /// Whether the store holds the new pair by the time the refresh is held here.
    fn saved(self) -> bool {
        matches!(self, Step::Saved | Step::Unlock)
    }
}

/// A gate armed at a step: it says when the step is reached, and waits to be released.
type Armed = (Step, oneshot::Sender<()>, oneshot::Receiver<()>);

/// The gate armed at one step, and the log of every step passed.
#[derive(Default)]
struct Gates {
    armed: Mutex<Option<Armed>>,
    passed: Mutex<Vec<Step>>,
    loads: AtomicU64,
}

impl Gates {
    /// Holds the refresh at `step`: the first receiver fires when it gets there; it goes on
    /// when the sender fires (or is dropped).
    fn arm(&self, step: Step) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some((step, reached_tx, release_rx));
        (reached_rx, release_tx)
    }

    async fn pass(&self, step: Step) {
        let hold = {
            let mut armed = self.armed.lock().unwrap();
            match armed.take() {
                Some((at, reached, release)) if at == step => Some((reached, release)),
                other => {
                    *armed = other;
                    None
                }
            }
        };
        if let Some((reached, release)) = hold {
            let _ = reached.send(());
            let _ = release.await;
        }
        self.passed.lock().unwrap().push(step);
    }

    fn passed(&self) -> Vec<Step> {
        self.passed.lock().unwrap().clone()
    }
}

/// A real store with a gate at each refresh step.
type GatedStore<S> = Hooked<S, Arc<Gates>>;

impl StoreHooks for Arc<Gates> {
    fn before<'a>(&'a self, call: Call<'a>) -> StoreFuture<'a, ()> {
        let step = match call {
            Call::Load => match self.loads.fetch_add(1, Ordering::SeqCst) % 2 {
                0 => Step::Load,
                _ => Step::Reload,
            },
            Call::Save(_) => Step::Save,
            Call::Lock => Step::TryLock,
            Call::Unlock => Step::Unlock,
        };
        Box::pin(async move {
            self.pass(step).await;
            Ok(())
        })
    }
    fn after<'a>(&'a self, call: Call<'a>, _answer: Answer) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Call::Save(_) = call {
                self.pass(Step::Saved).await;
            }
            Ok(())
        })
    }
}

/// The real HTTP client for token calls, with a gate before the call and after the answer.
fn gated_client(gates: Arc<Gates>) -> impl HttpClient {
    client_around(move |client, request: Request<Full<Bytes>>| {
        let gates = gates.clone();
        async move {
            let token_call = request.uri().path() == "/v2/oauth2";
            if token_call {
                gates.pass(Step::TokenCall).await;
            }
            let response = client.request(request).await;
            if token_call {
                gates.pass(Step::TokenAnswered).await;
            }
            response
        }
    })
}

async fn stored(backend: &impl Backend, user: UserId) -> StoredToken {
    // A new store instance: its own connection, as a restarted process would open it.
    let store = backend.open().await;
    store.load(user).await.unwrap().expect("the user's record")
}

/// The grant is not lost: Withings still accepts the stored refresh token.
fn assert_grant_alive(sim: &Simulator, stored: &StoredToken, what: &str) {
    assert!(
        sim.is_refresh_token_valid(stored.token.refresh_token.expose()),
        "{what}: the stored refresh token is no longer accepted by Withings (grant lost)"
    );
}

async fn dropping_the_caller_at_any_await_point_of_a_refresh_loses_nothing<B: Backend>(
    backend: &B,
) {
    for step in STEPS {
        let user = UserId(random_user());
        let sim = simulator().await;
        let clock = ManualClock::new();
        let gates = Arc::new(Gates::default());
        let store: GatedStore<_> = Hooked {
            inner: backend.open().await,
            hooks: gates.clone(),
        };
        let auth = auth_builder(&sim, &clock)
            .store(store)
            .build(gated_client(gates.clone()));
        let old = grant(&sim, &clock, user);
        auth.import(old.clone()).await.unwrap();
        let service = auth.layer().layer(transport::plain_http_client());
        clock.advance(EXPIRED);

        let (reached, release) = gates.arm(step);
        let caller = tokio::spawn(service.clone().oneshot(getmeas(&sim, user)));
        tokio::time::timeout(Duration::from_secs(5), reached)
            .await
            .unwrap_or_else(|_| panic!("{step:?}: the refresh never got there"))
            .unwrap();
        caller.abort();
        assert!(
            caller.await.unwrap_err().is_cancelled(),
            "{step:?}: caller dropped"
        );
        release.send(()).unwrap();

        // The detached refresh runs to its end (the lease is released last).
        wait_until(|| async { gates.passed().contains(&Step::Unlock) }).await;
        assert_eq!(
            gates.passed(),
            STEPS.to_vec(),
            "{step:?}: every step once, in order"
        );
        let now = stored(backend, user).await;
        assert_ne!(
            now.token.refresh_token, old.refresh_token,
            "{step:?}: the rotated pair was saved"
        );
        assert_grant_alive(&sim, &now, &format!("{step:?}"));

        // The next request uses the published pair: no second token call.
        expect_ok(&service, &sim, user).await;
        let counters = sim.counters();
        assert_eq!(counters.refreshes, 1, "{step:?}: {counters:?}");
        assert_eq!(counters.successful_refreshes, 1, "{step:?}: {counters:?}");
        assert_eq!(auth.metrics().refreshes_started, 1, "{step:?}");
        assert_eq!(auth.metrics().refreshes_failed, 0, "{step:?}");

        // The slot is free: a new refresh runs (it is not waiting on a flight that ended).
        // The detached flight may still be releasing its lease when the gate log says
        // Unlock; a refresh asked for meanwhile joins it, so ask again, a bounded few times.
        for attempt in 0.. {
            tokio::time::timeout(Duration::from_secs(5), auth.refresh(user))
                .await
                .unwrap_or_else(|_| panic!("{step:?}: the slot is stuck"))
                .unwrap();
            if sim.counters().successful_refreshes == 2 {
                break;
            }
            assert!(attempt < 50, "{step:?}: no new refresh ever ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        expect_ok(&service, &sim, user).await;
        assert_grant_alive(
            &sim,
            &stored(backend, user).await,
            &format!("{step:?}, later"),
        );
    }
}

/// A process that was started and will be dropped at one step of a refresh.
struct Doomed {
    /// Fires when the refresh is held at the step.
    reached: oneshot::Receiver<()>,
    /// Kept by the test until the runtime is gone, so the held step never proceeds.
    release: oneshot::Sender<()>,
    /// Tells the process to drop everything.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Builds a `WithingsAuth` on a gated store (opened from `spec`) inside its own runtime (a
/// process), sends one request for `user` on an expired token, and drops the runtime
/// (everything in it) when told to.
fn start_doomed(
    sim: &Simulator,
    spec: String,
    user: UserId,
    gates: Arc<Gates>,
    step: Step,
) -> Doomed {
    let (reached, release) = gates.arm(step);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (api, account) = (sim.api_base(), sim.account_base());
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let clock = ManualClock::new();
            let store: GatedStore<_> = Hooked {
                inner: open_spec(&spec).await.unwrap(),
                hooks: gates.clone(),
            };
            let auth = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
                .endpoints(Endpoints::loopback(&api, &account).unwrap())
                .clock(clock.clone())
                .token_timeout(Duration::from_millis(300)) // lease: 900 ms
                .backoff(Duration::ZERO, Duration::ZERO)
                .store(store)
                .build(gated_client(gates));
            let service = auth.layer().layer(transport::plain_http_client());
            clock.advance(EXPIRED);
            let request = Request::post(format!("{api}/measure"))
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .extension(user)
                .body(Full::new(Bytes::from_static(b"action=getmeas")))
                .unwrap();
            let _caller = tokio::spawn(service.oneshot(request));
            let _ = stop_rx.await;
        });
        // The refresh task is dropped wherever it is parked; nothing of it runs after this.
        drop(runtime);
    });
    Doomed {
        reached,
        release,
        stop,
        thread,
    }
}

/// A process started again on `backend` after a crash, four hours on (its token expired).
async fn restarted(
    sim: &Simulator,
    backend: &impl Backend,
) -> (
    WithingsAuth,
    tower_withings::WithingsAuthService<impl HttpClient>,
) {
    let clock = ManualClock::new();
    let auth = auth_builder(sim, &clock)
        .shared_store(backend.open().await)
        .lease_poll(Duration::from_millis(20))
        .build(transport::plain_http_client());
    let service = auth
        .layer()
        .layer(client_around(|client, request| client.request(request)));
    clock.advance(EXPIRED);
    (auth, service)
}

async fn dropping_the_runtime_at_any_await_point_of_a_refresh_loses_no_grant<B: Backend>(
    backend: &B,
) {
    for step in STEPS {
        let user = UserId(random_user());
        let sim = simulator().await;
        let old = grant(&sim, &ManualClock::new(), user);
        backend
            .open()
            .await
            .put(&old, SystemTime::now())
            .await
            .unwrap();

        let gates = Arc::new(Gates::default());
        let doomed = start_doomed(&sim, backend.spec(), user, gates.clone(), step);
        tokio::time::timeout(Duration::from_secs(5), doomed.reached)
            .await
            .unwrap_or_else(|_| panic!("{step:?}: the refresh never got there"))
            .unwrap();
        let index = STEPS.iter().position(|s| *s == step).unwrap();
        assert_eq!(gates.passed(), STEPS[..index].to_vec(), "{step:?}");
        doomed.stop.send(()).unwrap();
        let thread = doomed.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        drop(doomed.release);
        assert_eq!(
            gates.passed(),
            STEPS[..index].to_vec(),
            "{step:?}: nothing ran after the runtime was dropped"
        );

        // After the crash: the file holds the old pair or, once committed, the new one.
        let after = stored(backend, user).await;
        if step.saved() {
            assert_ne!(after.token.refresh_token, old.refresh_token, "{step:?}");
        } else {
            // (SQLite keeps times to the millisecond: compare the pair, not the expiry.)
            assert_eq!(after.token.refresh_token, old.refresh_token, "{step:?}");
            assert_eq!(
                after.token.access_token, old.access_token,
                "{step:?}: old pair kept"
            );
        }
        assert_grant_alive(&sim, &after, &format!("{step:?} after the crash"));
        assert_eq!(
            sim.counters().successful_refreshes,
            u64::from(step.withings_rotated()),
            "{step:?}"
        );

        // A restarted process on the same file gets the user going again. Its token is
        // expired, so it must refresh from what is stored (after a lease left by the dead
        // process lapses).
        let (_auth, service) = restarted(&sim, backend).await;
        let first = service.clone().oneshot(getmeas(&sim, user)).await;
        if step.withings_rotated() && !step.saved() {
            // The dead process spent the stored refresh token seconds ago: Withings answers
            // 601 "same arguments within 10 s", a typed, transient error...
            let error = *first
                .expect_err("601 within the same-arguments window")
                .downcast::<Error>()
                .unwrap();
            assert!(
                matches!(error, Error::RateLimited { wait: Some(_) }),
                "{step:?}: {error:?}"
            );
            assert!(error.is_transient());
            assert_grant_alive(
                &sim,
                &stored(backend, user).await,
                &format!("{step:?} after 601"),
            );
            // ... and once the window has passed, the grant is re-obtained from the stored
            // pair (a second restart: the first one's backoff is real time).
            sim.advance(Duration::from_secs(11));
            let (_auth, service) = restarted(&sim, backend).await;
            expect_ok(&service, &sim, user).await;
        } else {
            assert_eq!(
                crate::common::json(first.unwrap()).await["status"],
                0,
                "{step:?}: first request after the restart"
            );
        }
        let now = stored(backend, user).await;
        assert_ne!(now.token.refresh_token, old.refresh_token, "{step:?}");
        assert_grant_alive(&sim, &now, &format!("{step:?} after the restart"));
        let c = sim.counters();
        assert_eq!(c.served_invalid_refresh, 0, "{step:?}: {c:?}");
        eprintln!("{step:?}: recovered after the restart; {c:?}");
    }
}

for_backends! {
    dropping_the_caller_at_any_await_point_of_a_refresh_loses_nothing: [sqlite, postgres, redis],
    dropping_the_runtime_at_any_await_point_of_a_refresh_loses_no_grant: [sqlite, postgres, redis],
}
