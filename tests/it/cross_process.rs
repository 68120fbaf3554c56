//! One refresh per user across processes, each scenario written once and instantiated per
//! [`Backend`] at the end of this file (SQLite file, PostgreSQL database, Redis server).
//!
//! * In one test process: several independent `WithingsAuth` instances, each with its own store
//!   instance (own SQLite connection, own pool, own Redis connection) on one backend.
//! * In several OS processes: the test binary starts copies of itself in a child role
//!   (selected by environment variables), each with its own `WithingsAuth` and store.
//! * A lease holder that dies: a child takes the lease and is killed; the survivors wait for
//!   the lease to lapse and then refresh once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_withings::store::{LockAttempt, TokenStore};
use tower_withings::{
    Credentials, Endpoints, Secret, Token, UserId, WithingsAuth, clock::Clock, clock::ManualClock,
};
use withings_sim::Simulator;

use crate::backend::{Backend, for_backends, open_spec};
use crate::common::{CLIENT_ID, CLIENT_SECRET, Hooked, LeaseLog, simulator};
use crate::store_support::random_user;

/// Environment variables of the child role.
pub const ENV_ROLE: &str = "TOWER_WITHINGS_CHILD_ROLE";
const ENV_BACKEND: &str = "TOWER_WITHINGS_CHILD_BACKEND";
const ENV_API: &str = "TOWER_WITHINGS_CHILD_API";
const ENV_USER: &str = "TOWER_WITHINGS_CHILD_USER";
const ENV_REQUESTS: &str = "TOWER_WITHINGS_CHILD_REQUESTS";
const ENV_START_AT: &str = "TOWER_WITHINGS_CHILD_START_AT_MS";
const ENV_LEASE_MS: &str = "TOWER_WITHINGS_CHILD_LEASE_MS";
/// Set: the child runs on the system clock (the stored token is really expired) instead of a
/// manual clock four hours ahead.
const ENV_SYSTEM_CLOCK: &str = "TOWER_WITHINGS_CHILD_SYSTEM_CLOCK";

/// The entry point of child processes; a no-op when run as a normal test.
const CHILD: &str = "cross_process::child_process_entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    child_role().await;
}

/// One independent `WithingsAuth`, as one process or replica would build it, with its clock.
pub fn instance(
    api_base: &str,
    store: Arc<dyn TokenStore>,
    lease: Option<Duration>,
) -> (WithingsAuth, ManualClock) {
    let clock = ManualClock::new();
    (instance_on(api_base, store, lease, clock.clone()), clock)
}

/// One independent `WithingsAuth` on `clock`.
pub fn instance_on(
    api_base: &str,
    store: Arc<dyn TokenStore>,
    lease: Option<Duration>,
    clock: impl Clock,
) -> WithingsAuth {
    let mut builder = WithingsAuth::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(Endpoints::loopback(api_base, api_base).expect("loopback endpoints"))
        .shared_store(store)
        .clock(clock)
        .rate_budget(tower_withings::budget::RateBudget::unlimited())
        .lease_poll(Duration::from_millis(25));
    if let Some(lease) = lease {
        // The lease lasts twice the token timeout.
        builder = builder.token_timeout(lease / 2);
    }
    builder.build(tower_withings::transport::plain_http_client())
}

/// The simulator's grant as the pair the app would have stored, expiring 3 h after `now`.
fn imported(user: u64, grant: &withings_sim::SimGrant, now: SystemTime) -> Token {
    Token {
        user_id: UserId(user),
        access_token: Secret::new(grant.access_token.clone()),
        refresh_token: Secret::new(grant.refresh_token.clone()),
        expires_at: now + Duration::from_secs(grant.expires_in),
        scope: "user.metrics".into(),
    }
}

/// `POST {api}/measure action=getmeas` for `user` through `auth`'s layer; the body's status.
pub async fn getmeas(auth: &WithingsAuth, api_base: &str, user: u64) -> Result<i64, String> {
    let service = auth
        .layer()
        .layer(tower_withings::transport::plain_http_client());
    let request = Request::post(format!("{api_base}/measure"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(UserId(user))
        .body(Full::new(Bytes::from_static(b"action=getmeas")))
        .unwrap();
    let response = service
        .oneshot(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| "body failed".to_owned())?
        .to_bytes();
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    json["status"]
        .as_i64()
        .ok_or_else(|| format!("no status in {json}"))
}

/// The counters every single-flight scenario must end with.
fn assert_one_refresh(sim: &Simulator, what: &str) {
    let c = sim.counters();
    assert_eq!(
        c.successful_refreshes, 1,
        "{what}: successful refreshes {c:?}"
    );
    assert_eq!(c.refreshes, 1, "{what}: refresh calls {c:?}");
    assert_eq!(c.served_601, 0, "{what}: 601 answers {c:?}");
    assert_eq!(
        c.served_invalid_refresh, 0,
        "{what}: invalid refresh answers {c:?}"
    );
}

/// `instances` independent `WithingsAuth`s in this process, each on its own store instance,
/// fire `per_instance` concurrent requests each for one user whose token expired: exactly one
/// refresh reaches Withings and every request succeeds.
async fn instances_refresh_once<B: Backend>(backend: &B) {
    let (instances, per_instance) = (4, 8);
    let sim = simulator().await;
    let api = sim.api_base();
    let user = random_user();
    let grant = sim.issue_grant(CLIENT_ID, UserId(user), "user.metrics");

    let mut auths = Vec::new();
    for _ in 0..instances {
        let store = backend.open().await;
        auths.push(instance(&api, store, None));
    }
    let (first, first_clock) = &auths[0];
    first
        .import(imported(user, &grant, first_clock.now()))
        .await
        .expect("import");
    for (_, clock) in &auths {
        clock.advance(Duration::from_secs(4 * 3600));
    }

    let start = Arc::new(tokio::sync::Barrier::new(instances * per_instance));
    let mut tasks = Vec::new();
    for (i, (auth, _)) in auths.iter().enumerate() {
        for _ in 0..per_instance {
            let (auth, api, start) = (auth.clone(), api.clone(), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                (i, getmeas(&auth, &api, user).await)
            }));
        }
    }
    for task in tasks {
        let (i, outcome) = task.await.expect("request task");
        assert_eq!(outcome, Ok(0), "a request through instance {i} failed");
    }
    assert_one_refresh(&sim, "in-process instances");
    let started: u64 = auths
        .iter()
        .map(|(a, _)| a.metrics().refreshes_started)
        .sum();
    assert_eq!(started, 1, "refreshes started across instances");

    // The rotated pair is what the store holds, and every instance keeps using it.
    let stored = auths[0]
        .0
        .store()
        .load(UserId(user))
        .await
        .unwrap()
        .expect("record");
    assert!(stored.token.refresh_token.expose() != grant.refresh_token);
    for (i, (auth, _)) in auths.iter().enumerate() {
        assert_eq!(
            getmeas(auth, &api, user).await,
            Ok(0),
            "instance {i} afterwards"
        );
    }
    assert_one_refresh(&sim, "after a second round");
}

/// Runs the child role if this process was started as a child; returns whether it was.
pub async fn child_role() -> bool {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return false;
    };
    let spec = std::env::var(ENV_BACKEND).expect("backend");
    let user: u64 = std::env::var(ENV_USER)
        .expect("user")
        .parse()
        .expect("user id");
    let store = open_spec(&spec).await.expect("child opens its store");
    match role.as_str() {
        "requests" => {
            let api = std::env::var(ENV_API).expect("api");
            let n: usize = std::env::var(ENV_REQUESTS).expect("n").parse().expect("n");
            let start_at: u64 = std::env::var(ENV_START_AT)
                .expect("start")
                .parse()
                .expect("ms");
            let auth = if std::env::var_os(ENV_SYSTEM_CLOCK).is_some() {
                instance_on(&api, store, None, tower_withings::clock::SystemClock)
            } else {
                let (auth, clock) = instance(&api, store, None);
                clock.advance(Duration::from_secs(4 * 3600));
                auth
            };
            // Start together with the other children.
            let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start_at);
            if let Ok(wait) = start.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (auth, api) = (auth.clone(), api.clone());
                tasks.push(tokio::spawn(
                    async move { getmeas(&auth, &api, user).await },
                ));
            }
            let mut ok = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(0) => ok += 1,
                    other => println!("CHILD-FAILED {other:?}"),
                }
            }
            println!(
                "CHILD-RESULT ok={ok} of={n} started={}",
                auth.metrics().refreshes_started
            );
            assert_eq!(ok, n, "every request of this child succeeds");
        }
        "hold-lease" => {
            let lease: u64 = std::env::var(ENV_LEASE_MS)
                .expect("lease")
                .parse()
                .expect("ms");
            match store
                .try_lock(UserId(user), Duration::from_millis(lease))
                .await
                .expect("lock")
            {
                LockAttempt::Acquired(_) => println!("LEASE-HELD"),
                LockAttempt::Held => panic!("the lease was already held"),
            }
            tokio::time::sleep(Duration::from_secs(120)).await; // killed long before
        }
        #[cfg(feature = "sqlite")]
        "hold-write" => {
            let path = spec
                .strip_prefix("sqlite\n")
                .expect("hold-write is for SQLite");
            let conn = rusqlite::Connection::open(path).expect("raw connection");
            conn.execute_batch("BEGIN IMMEDIATE").expect("write lock");
            conn.execute(
                "UPDATE withings_tokens SET refresh_token = 'half-written', access_token = 'x'
                 WHERE user_id = ?1",
                [user as i64],
            )
            .expect("uncommitted write");
            println!("WRITE-HELD");
            std::thread::sleep(Duration::from_secs(120)); // killed long before
        }
        "budget-fair" => crate::budget::fair_sender(store).await,
        other => panic!("unknown child role {other}"),
    }
    true
}

/// A child process: this test binary running only [`child_process_entry`] in `role`.
pub struct ChildProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProcess {
    pub fn spawn(role: &str, backend: &impl Backend, user: u64, extra: &[(&str, String)]) -> Self {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV_ROLE, role)
            .env(ENV_BACKEND, backend.spec())
            .env(ENV_USER, user.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn the test binary as a child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess { child, lines }
    }

    /// Waits for a line holding `marker` (libtest may print its own text before it on the
    /// same line); returns the line from the marker on.
    pub async fn line_starting(&self, marker: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(marker) => {
                    return line[line.find(marker).unwrap_or(0)..].to_owned();
                }
                Ok(_) => continue,
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("child never printed {marker:?} ({e:?})"),
            }
        }
    }

    /// Waits for the child to exit; panics if it fails or takes longer than `within`.
    pub async fn success(mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "child exited with {status}");
                return self.lines.try_iter().collect();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("child did not finish within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `processes` OS processes (this test binary in the `requests` role), each with its own
/// `WithingsAuth` and store instance, fire `per_process` concurrent requests each at the same
/// moment for one user whose token expired: exactly one refresh reaches Withings.
async fn os_processes_refresh_once<B: Backend>(backend: &B) {
    let (processes, per_process) = (3, 8);
    let sim = simulator().await;
    let user = random_user();
    let grant = sim.issue_grant(CLIENT_ID, UserId(user), "user.metrics");
    let now = SystemTime::now();
    let token = imported(user, &grant, now);
    run_children(&sim, backend, processes, per_process, token, now, &[]).await;
}

/// As [`refresh_once_across_processes`], on the system clock, with access tokens living 3 s
/// (shorter than the refresh skew): the pair one process stores is adopted by the others,
/// never refreshed again.
async fn os_processes_refresh_short_lived_tokens_once<B: Backend>(backend: &B) {
    let processes = 8;
    let sim = simulator().await;
    sim.set_access_token_ttl(Duration::from_secs(3));
    let user = random_user();
    let grant = sim.issue_grant(CLIENT_ID, UserId(user), "user.metrics");
    let granted = SystemTime::now() - Duration::from_secs(10);
    let token = imported(user, &grant, granted); // expired 7 s ago
    let extra = [(ENV_SYSTEM_CLOCK, "1".to_owned())];
    run_children(&sim, backend, processes, 4, token, granted, &extra).await;
}

#[allow(clippy::too_many_arguments)]
async fn run_children(
    sim: &Simulator,
    backend: &impl Backend,
    processes: usize,
    per_process: usize,
    token: Token,
    granted: SystemTime,
    extra: &[(&str, String)],
) {
    let api = sim.api_base();
    let user = token.user_id.0;
    let store = backend.open().await;
    store.put(&token, granted).await.expect("import");

    // Children take a moment to start; they all begin at the same wall-clock instant.
    let start_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 2_500;
    let children: Vec<ChildProcess> = (0..processes)
        .map(|_| {
            let mut env = vec![
                (ENV_API, api.clone()),
                (ENV_REQUESTS, per_process.to_string()),
                (ENV_START_AT, start_at.to_string()),
            ];
            env.extend(extra.iter().cloned());
            ChildProcess::spawn("requests", backend, user, &env)
        })
        .collect();
    let mut started = 0;
    for child in children {
        let lines = child.success(Duration::from_secs(60)).await;
        let result = lines
            .iter()
            .find_map(|l| l.find("CHILD-RESULT").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("no result line in {lines:?}"));
        assert!(result.contains(&format!("ok={per_process} ")), "{result}");
        started += result
            .rsplit("started=")
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .expect("started count");
    }
    assert_one_refresh(sim, "OS processes");
    assert_eq!(started, 1, "refreshes started across processes");
    let stored = store.load(UserId(user)).await.unwrap().expect("record");
    assert!(stored.token.refresh_token != token.refresh_token);
}

/// A process takes the user's refresh lease and is killed (SIGKILL) before releasing it. The
/// survivors wait until the lease lapses, then refresh exactly once.
async fn dead_lease_holder_is_outlived<B: Backend>(backend: &B) {
    let sim = simulator().await;
    let api = sim.api_base();
    let user = random_user();
    let grant = sim.issue_grant(CLIENT_ID, UserId(user), "user.metrics");
    let store = backend.open().await;
    store
        .put(
            &imported(user, &grant, SystemTime::now()),
            SystemTime::now(),
        )
        .await
        .expect("import");

    let lease = Duration::from_millis(2_000);
    let sim = Arc::new(sim);
    let holder = ChildProcess::spawn(
        "hold-lease",
        backend,
        user,
        &[(ENV_LEASE_MS, lease.as_millis().to_string())],
    );
    holder
        .line_starting("LEASE-HELD", Duration::from_secs(30))
        .await;
    holder.kill();

    let watch = {
        let sim = sim.clone();
        LeaseLog::new(move || sim.counters().refreshes)
    };
    let survivor = async || {
        let store = Hooked {
            inner: backend.open().await,
            hooks: watch.clone(),
        };
        let (auth, clock) = instance(&api, Arc::new(store), None);
        clock.advance(Duration::from_secs(4 * 3600));
        getmeas(&auth, &api, user).await
    };
    let (a, b) = tokio::join!(survivor(), survivor());
    assert_eq!(a, Ok(0), "instance A after the holder died");
    assert_eq!(b, Ok(0), "instance B after the holder died");
    let attempts = watch.attempts();
    assert_eq!(
        attempts.first().map(|a| a.0),
        Some(true),
        "the first survivor to try found the dead holder's lease held: {attempts:?}"
    );
    let first_acquired = attempts.iter().position(|a| !a.0).expect("a lease taken");
    assert!(
        attempts[..first_acquired].iter().all(|a| a.1 == 0),
        "no token call while the dead holder's lease stood: {attempts:?}"
    );
    assert_one_refresh(&sim, "after the lease holder died");
}

for_backends! {
    instances_refresh_once: [sqlite, postgres, redis],
    os_processes_refresh_once: [sqlite, postgres, redis],
    os_processes_refresh_short_lived_tokens_once: [sqlite, postgres, redis],
    dead_lease_holder_is_outlived: [sqlite, postgres, redis],
}

/// A process killed in the middle of a write transaction leaves the last committed pair, and
/// no lock behind. SQLite's own: a write transaction held open in a file.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_writer_leaves_the_committed_pair() {
    use tower_withings::store::SqliteStore;
    let backend = crate::backend::Sqlite::fresh().await.unwrap();
    let store = SqliteStore::open(backend.path()).await.unwrap();
    let user = random_user();
    let token = crate::store_support::token(user, "committed");
    store.put(&token, SystemTime::now()).await.unwrap();

    let writer = ChildProcess::spawn("hold-write", &backend, user, &[]);
    writer
        .line_starting("WRITE-HELD", Duration::from_secs(30))
        .await;
    writer.kill();

    let stored = store.load(UserId(user)).await.unwrap().unwrap();
    assert!(
        stored.token.refresh_token == token.refresh_token,
        "rolled back"
    );
    assert!(matches!(
        store.try_lock(UserId(user), Duration::from_secs(5)).await,
        Ok(LockAttempt::Acquired(_))
    ));
    let reopened = SqliteStore::open(backend.path()).await.unwrap();
    assert!(reopened.load(UserId(user)).await.unwrap().is_some());
}
