//! PostgreSQL and Redis going away under a running layer: connections killed by the server,
//! a server killed in the middle of a refresh and restarted, a server unreachable for a while,
//! a server that stops answering.
//! The layer must recover by itself (no restart, no reconnect call), every failure must be a
//! typed error, no refresh may run without the lease, and no grant may be lost.
//!
//! Scoped so that concurrent tests on the shared servers are not disturbed:
//! * PostgreSQL: the store connects with its own `application_name`; only backends with that
//!   name are terminated (`pg_terminate_backend`). Downtime and silence are a TCP proxy owned
//!   by the test.
//! * Redis: the store logs in as its own ACL user; only that user's clients are killed
//!   (`CLIENT KILL USER`). The restart is of a private `redis-server` (AOF, fsync always) on a
//!   free port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};
use tower_withings::store::TokenStore;
use tower_withings::{Error, ManualClock, Token, WithingsAuth, transport};

const EXPIRED: Duration = Duration::from_secs(4 * 3600);

/// One getmeas through the layer: the body status, or the crate's error.
async fn call<S, B>(service: &S, sim: &tower_withings::sim::Simulator) -> Result<i64, Error>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
            Error = tower_withings::BoxError,
        > + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    match service.clone().oneshot(getmeas(sim, USER)).await {
        Ok(response) => Ok(json(response).await["status"].as_i64().unwrap()),
        Err(error) => Err(*error
            .downcast::<Error>()
            .unwrap_or_else(|other| panic!("not a tower_withings::Error: {other}"))),
    }
}

/// The request went through and Withings answered status 0.
#[track_caller]
fn assert_ok(outcome: Result<i64, Error>, what: impl std::fmt::Display) {
    match outcome {
        Ok(0) => {}
        other => panic!("{what}: expected status 0, got {other:?}"),
    }
}

/// A store failure, as the layer must report it.
fn assert_store_error(error: &Error, what: &str) {
    assert!(
        matches!(error, Error::Store { .. }) && error.is_transient(),
        "{what}: expected a transient Error::Store, got {error:?}"
    );
}

/// After a fault is over, the layer recovers by itself: requests 50 ms apart (the layer runs
/// here without backoff; this stands in for its default one) work by the third at the latest,
/// and each that does not is a typed store error: the failures that reveal a dead connection.
/// A PostgreSQL connection can take two: the query that receives the termination notice, and,
/// within a few milliseconds of it, one more on the same connection before the pool sees it
/// closed. Returns the failures.
async fn recovers<S, B>(service: &S, sim: &tower_withings::sim::Simulator, what: &str) -> Vec<Error>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
            Error = tower_withings::BoxError,
        > + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut failures = Vec::new();
    loop {
        match call(service, sim).await {
            Ok(status) => {
                assert_eq!(status, 0, "{what}");
                return failures;
            }
            Err(error) => {
                assert_store_error(&error, what);
                failures.push(error);
                assert!(failures.len() < 3, "{what}: not recovered: {failures:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The grant is alive: Withings accepts the stored refresh token.
async fn assert_grant_alive(
    store: &dyn TokenStore,
    sim: &tower_withings::sim::Simulator,
    what: &str,
) -> Token {
    let stored = store.load(USER).await.unwrap().expect("the record").token;
    assert!(
        sim.is_refresh_token_valid(stored.refresh_token.expose()),
        "{what}: the stored refresh token is not accepted (grant lost)"
    );
    stored
}

/// A handle on `store` at `sim`, the default user's grant imported.
async fn handle(
    sim: &tower_withings::sim::Simulator,
    store: Arc<dyn TokenStore>,
) -> (WithingsAuth, ManualClock, Token) {
    let clock = ManualClock::new();
    let auth = auth_builder(sim, &clock)
        .shared_store(store)
        .lease_poll(Duration::from_millis(20))
        .build(transport::plain_http_client());
    let token = grant(sim, &clock, USER.0);
    auth.import(token.clone()).await.unwrap();
    (auth, clock, token)
}

/// Starts a request whose refresh is in flight at Withings (answer held 400 ms), and returns
/// once Withings has rotated the pair: the store is about to be asked to save it.
async fn refresh_in_flight<S, B>(
    service: &S,
    sim: &tower_withings::sim::Simulator,
) -> JoinHandle<Result<i64, Error>>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
            Error = tower_withings::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    sim.set_token_latency(Duration::from_millis(400));
    let rotated = sim.counters().successful_refreshes;
    let request = getmeas(sim, USER);
    let service = service.clone();
    let task = tokio::spawn(async move {
        match service.oneshot(request).await {
            Ok(response) => Ok(json(response).await["status"].as_i64().unwrap()),
            Err(error) => Err(*error.downcast::<Error>().unwrap()),
        }
    });
    wait_until(|| async { sim.counters().successful_refreshes > rotated }).await;
    sim.set_token_latency(Duration::ZERO);
    task
}

/// A TCP proxy in front of a server: `down` closes every connection and stops listening (the
/// server is gone, connections are refused), `up` listens again on the same port; `freeze`
/// keeps every connection open but passes nothing (a server that stops answering: a network
/// partition, a hung host), `thaw` delivers what was held and goes on.
struct Proxy {
    port: u16,
    target: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            target,
            accept: Mutex::new(None),
            frozen: tokio::sync::watch::Sender::new(false),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let frozen = self.frozen.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task: aborting it closes every proxied connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let frozen = frozen.clone();
                connections.spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        tokio::join!(
                            pump(from_client, to_server, frozen.subscribe()),
                            pump(from_server, to_client, frozen.subscribe()),
                        );
                    }
                });
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    fn down(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }

    async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(error) => panic!("proxy cannot listen on {} again: {error}", self.port),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// Copies one direction of a proxied connection, holding the bytes while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err()
            || to.write_all(&buffer[..n]).await.is_err()
        {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `host:port` of a `scheme://[user[:password]@]host:port[/...]` URL.
fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap();
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its host and port replaced by `127.0.0.1:port`.
fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((c, r)) => (format!("{c}@"), r),
        None => (String::new(), rest),
    };
    let tail = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme}://{credentials}127.0.0.1:{port}{tail}")
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::store_support::{postgres_unreachable, postgres_url, random_hex};
    use tower_withings::store::PostgresStore;

    /// An admin connection (its own application name), or `None` after a loud skip.
    async fn admin() -> Option<tokio_postgres::Client> {
        let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
        config.application_name("tower-withings-outage-admin");
        config.connect_timeout(Duration::from_secs(5));
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                Some(client)
            }
            Err(error) => {
                postgres_unreachable(&error);
                None
            }
        }
    }

    /// The test URL, through `port` if given, with a unique application name.
    fn url(application: &str, port: Option<u16>) -> String {
        let base = postgres_url();
        let base = port.map_or(base.clone(), |p| via_port(&base, p));
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}application_name={application}")
    }

    struct Db {
        admin: tokio_postgres::Client,
        application: String,
        table: String,
    }

    impl Db {
        async fn new() -> Option<Db> {
            let admin = admin().await?;
            Some(Db {
                admin,
                application: format!("tw-outage-{}", random_hex(6)),
                table: format!("withings_outage_{}", random_hex(6)),
            })
        }

        async fn store(&self, port: Option<u16>) -> PostgresStore {
            PostgresStore::builder(&url(&self.application, port))
                .table(&self.table)
                .max_connections(4)
                .connect_timeout(Duration::from_secs(1))
                .build()
                .await
                .expect("the store connects")
        }

        /// Another store on the same table whose connections are never killed, to look at
        /// what is stored.
        async fn checker(&self) -> PostgresStore {
            PostgresStore::builder(&url(&format!("{}-check", self.application), None))
                .table(&self.table)
                .max_connections(1)
                .build()
                .await
                .expect("the checker connects")
        }

        /// Terminates every backend of the store's connections; how many.
        async fn kill_connections(&self) -> i64 {
            self.admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1",
                    &[&self.application],
                )
                .await
                .unwrap()
                .get(0)
        }

        /// Waits until one of the store's backends waits on a lock, then terminates it.
        async fn kill_waiting_backend(&self) {
            let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE application_name = $1 AND wait_event_type = 'Lock'";
            for _ in 0..500 {
                let killed: i64 = self
                    .admin
                    .query_one(sql, &[&self.application])
                    .await
                    .unwrap()
                    .get(0);
                if killed > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the store never waited on the lock");
        }

        async fn drop_tables(&self) {
            self.admin
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS \"{0}\"; DROP TABLE IF EXISTS \"{0}_leases\";",
                    self.table
                ))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_connections_killed_again_and_again_the_layer_recovers_by_itself() {
        let Some(db) = Db::new().await else { return };
        let sim = simulator().await;
        let check = db.checker().await;
        let (auth, clock, _) = handle(&sim, Arc::new(db.store(None).await)).await;
        let service = auth.layer().layer(transport::plain_http_client());
        let mut failures = Vec::new();
        for round in 1..=5u64 {
            // Between refreshes: every connection of the pool dies.
            let killed = db.kill_connections().await;
            assert!(killed >= 1, "round {round}: no connection to kill");
            clock.advance(EXPIRED);
            let what = format!("round {round}, {killed} connections killed");
            failures.push(recovers(&service, &sim, &what).await);
            let c = sim.counters();
            assert_eq!(c.successful_refreshes, round, "{what}: one rotation: {c:?}");
            assert_eq!(c.refreshes, round, "{what}: {c:?}");
            assert_grant_alive(&check, &sim, &what).await;
        }
        for round in 6..=8u64 {
            // During a refresh: Withings has rotated, the connections die before the save.
            let what = format!("round {round}, connections killed mid-refresh");
            clock.advance(EXPIRED);
            let task = refresh_in_flight(&service, &sim).await;
            db.kill_connections().await;
            let mut failed = Vec::new();
            match task.await.unwrap() {
                Ok(status) => assert_eq!(status, 0, "{what}"),
                Err(error) => {
                    assert_store_error(&error, &what);
                    failed.push(error);
                    // The pair Withings granted was kept: a retry saves it.
                    failed.extend(recovers(&service, &sim, &what).await);
                }
            }
            failures.push(failed);
            let c = sim.counters();
            assert_eq!(c.refreshes, round, "{what}: no second token call: {c:?}");
            let stored = assert_grant_alive(&check, &sim, &what).await;
            assert!(sim.is_access_token_valid(stored.access_token.expose()));
        }
        eprintln!("failed attempts per round: {failures:?}");
        db.drop_tables().await;
    }

    /// A backend terminated while the store waits inside one operation (held there by a lock
    /// the admin connection takes): the error is typed and names the operation, Withings saw
    /// only what it should, and the layer recovers by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_backend_killed_inside_each_store_operation() {
        let Some(mut db) = Db::new().await else {
            return;
        };
        let sim = simulator().await;
        let check = db.checker().await;
        let (auth, clock, _) = handle(&sim, Arc::new(db.store(None).await)).await;
        let service = auth.layer().layer(transport::plain_http_client());
        let t = db.table.clone();
        let cases = [
            (
                "load",
                format!("LOCK TABLE \"{t}\" IN ACCESS EXCLUSIVE MODE"),
            ),
            (
                "lock",
                format!("LOCK TABLE \"{t}_leases\" IN EXCLUSIVE MODE"),
            ),
            (
                "save",
                format!(
                    "SELECT 1 FROM \"{t}\" WHERE user_id = {} FOR UPDATE",
                    USER.0
                ),
            ),
        ];
        let mut rotations = 0;
        for (operation, blocker) in cases {
            clock.advance(EXPIRED);
            let before = check.load(USER).await.unwrap().unwrap().token;
            let application = db.application.clone();
            let tx = db.admin.transaction().await.unwrap();
            tx.batch_execute(&blocker).await.unwrap();
            let task = tokio::spawn(service.clone().oneshot(getmeas(&sim, USER)));
            // Everything before the operation went through; now it waits on the lock.
            kill_waiting(&application).await;
            let error = *task
                .await
                .unwrap()
                .expect_err("the operation's connection was killed")
                .downcast::<Error>()
                .unwrap();
            tx.rollback().await.unwrap();
            match &error {
                Error::Store { operation: op, .. } => assert_eq!(*op, operation, "{error}"),
                other => panic!("{operation}: expected Error::Store, got {other:?}"),
            }
            assert!(error.is_transient());
            let stored = check.load(USER).await.unwrap().unwrap().token;
            assert_eq!(
                stored.refresh_token, before.refresh_token,
                "{operation}: untouched"
            );
            assert!(sim.is_refresh_token_valid(stored.refresh_token.expose()));
            if operation == "save" {
                rotations += 1; // Withings rotated; the new pair waits for the retried save
            }
            let c = sim.counters();
            assert_eq!(c.successful_refreshes, rotations, "{operation}: {c:?}");

            let failures = recovers(&service, &sim, operation).await;
            if operation != "save" {
                rotations += 1;
            }
            let c = sim.counters();
            assert_eq!(c.refreshes, rotations, "{operation}: one token call: {c:?}");
            assert_grant_alive(&check, &sim, operation).await;
            eprintln!("{operation}: {error}; then {failures:?}");
        }
        db.drop_tables().await;
    }

    /// Terminates the backend of `application` that waits on a lock, from its own connection.
    async fn kill_waiting(application: &str) {
        let killer = Db {
            admin: admin().await.unwrap(),
            application: application.to_owned(),
            table: String::new(),
        };
        killer.kill_waiting_backend().await;
    }

    /// A server that stops answering (connections stay open, nothing comes back: a network
    /// partition, a hung host). Each store call must give up with a typed error, with the
    /// store's default settings, rather than hold the user's refresh (and every request
    /// waiting on it) for as long as TCP keeps the connection. When the server answers again
    /// the layer recovers by itself; a save that timed out but was then delivered and
    /// committed is adopted, not requested again from Withings.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_that_stops_answering_is_a_typed_error_not_a_stuck_user() {
        let Some(db) = Db::new().await else { return };
        let sim = simulator().await;
        let proxy = Proxy::start(server_addr(&postgres_url())).await;
        let check = db.checker().await;
        let store = PostgresStore::builder(&url(&db.application, Some(proxy.port)))
            .table(&db.table)
            .build()
            .await
            .unwrap();
        let (auth, clock, _) = handle(&sim, Arc::new(store)).await;
        let service = auth.layer().layer(transport::plain_http_client());
        let stuck = Duration::from_secs(20);

        proxy.freeze();
        assert_ok(call(&service, &sim).await, "a valid token needs no store");
        clock.advance(EXPIRED);
        let started = Instant::now();
        let (a, b) = tokio::time::timeout(stuck, async {
            tokio::join!(call(&service, &sim), call(&service, &sim))
        })
        .await
        .expect("requests hang on a database that does not answer: the user is stuck");
        for outcome in [a, b] {
            let error = outcome.expect_err("the database does not answer");
            assert_store_error(&error, "frozen");
        }
        let waited = started.elapsed();
        assert_eq!(sim.counters().refreshes, 0, "no refresh without the store");
        proxy.thaw();
        let first = recovers(&service, &sim, "answering again").await;
        assert_eq!(sim.counters().successful_refreshes, 1);
        assert_grant_alive(&check, &sim, "answering again").await;

        // Frozen while Withings rotates: the save gets no answer and gives up; the held
        // UPDATE is delivered when the server answers again.
        clock.advance(EXPIRED);
        let task = refresh_in_flight(&service, &sim).await;
        proxy.freeze();
        let error = tokio::time::timeout(stuck, task)
            .await
            .expect("the refresh hangs on a save that gets no answer")
            .unwrap()
            .expect_err("the save got no answer");
        assert!(
            matches!(
                error,
                Error::Store {
                    operation: "save",
                    ..
                }
            ),
            "{error:?}"
        );
        proxy.thaw();
        let second = recovers(&service, &sim, "answering again after the save").await;
        let c = sim.counters();
        assert_eq!(
            c.refreshes, 2,
            "the granted pair was kept, not re-requested: {c:?}"
        );
        let stored = assert_grant_alive(&check, &sim, "after the held save").await;
        assert!(sim.is_access_token_valid(stored.access_token.expose()));
        eprintln!("gave up after {waited:?}; then {first:?}, {second:?}");
        db.drop_tables().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_unreachable_for_a_while_then_back_the_layer_recovers_by_itself() {
        let Some(db) = Db::new().await else { return };
        let sim = simulator().await;
        let proxy = Proxy::start(server_addr(&postgres_url())).await;
        let check = db.checker().await;
        let (auth, clock, _) = handle(&sim, Arc::new(db.store(Some(proxy.port)).await)).await;
        let service = auth.layer().layer(transport::plain_http_client());

        // Down between refreshes.
        proxy.down();
        for _ in 0..3 {
            assert_ok(call(&service, &sim).await, "a valid token needs no store");
        }
        clock.advance(EXPIRED);
        for attempt in 0..3 {
            let started = Instant::now();
            let error = call(&service, &sim).await.expect_err("the store is down");
            assert_store_error(&error, &format!("attempt {attempt}"));
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        assert_eq!(sim.counters().refreshes, 0, "no refresh without the store");
        proxy.up().await;
        let first = recovers(&service, &sim, "back up").await;
        assert_eq!(sim.counters().successful_refreshes, 1);
        assert_grant_alive(&check, &sim, "back up").await;

        // Down while Withings rotates: the save fails, the new pair is kept for the retry.
        clock.advance(EXPIRED);
        let task = refresh_in_flight(&service, &sim).await;
        proxy.down();
        let error = task.await.unwrap().expect_err("saving with the store down");
        assert!(
            matches!(
                error,
                Error::Store {
                    operation: "save",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = call(&service, &sim).await.expect_err("still down");
        assert_store_error(&error, "still down");
        proxy.up().await;
        let second = recovers(&service, &sim, "back up after a failed save").await;
        let c = sim.counters();
        assert_eq!(
            c.refreshes, 2,
            "the granted pair was saved, not re-requested: {c:?}"
        );
        assert_eq!(c.successful_refreshes, 2, "{c:?}");
        let stored = assert_grant_alive(&check, &sim, "after the failed save").await;
        assert!(sim.is_access_token_valid(stored.access_token.expose()));
        eprintln!("first attempts after coming back: {first:?}, {second:?}");
        db.drop_tables().await;
    }
}

#[cfg(feature = "redis")]
mod redis_outage {
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::store_support::{TempDir, in_ci, random_hex, redis_unreachable, redis_url};
    use tower_withings::store::RedisStore;

    async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await
    }

    /// A Redis user of the test's own on the shared server, so that only the test's
    /// connections are killed.
    struct OwnUser {
        admin: redis::aio::MultiplexedConnection,
        name: String,
        password: String,
        prefix: String,
    }

    impl OwnUser {
        async fn create() -> Option<OwnUser> {
            let mut admin = match connect(&redis_url()).await {
                Ok(admin) => admin,
                Err(error) => {
                    redis_unreachable(&error);
                    return None;
                }
            };
            let user = OwnUser {
                name: format!("tw-outage-{}", random_hex(6)),
                password: random_hex(16),
                prefix: format!("withings-outage-{}:", random_hex(6)),
                admin: admin.clone(),
            };
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&user.name)
                .arg("on")
                .arg(format!(">{}", user.password))
                .arg("~*")
                .arg("&*")
                .arg("+@all")
                .query_async(&mut admin)
                .await
                .expect("ACL SETUSER (Redis 6 or later)");
            Some(user)
        }

        fn url(&self) -> String {
            let base = redis_url();
            let (scheme, rest) = base.split_once("://").unwrap();
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("{scheme}://{}:{}@{rest}", self.name, self.password)
        }

        /// `CLIENT KILL USER <name>`: how many connections died.
        async fn kill_connections(&self) -> i64 {
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(&self.name)
                .query_async(&mut self.admin.clone())
                .await
                .unwrap()
        }

        async fn remove(mut self) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query_async(&mut self.admin)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut self.admin)
                    .await
                    .unwrap();
            }
            let _: () = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query_async(&mut self.admin)
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_connections_killed_again_and_again_the_layer_recovers_by_itself() {
        let Some(user) = OwnUser::create().await else {
            return;
        };
        let sim = simulator().await;
        let store = RedisStore::builder(&user.url())
            .prefix(user.prefix.as_str())
            .response_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("the store connects");
        // Looks at what is stored over a connection that is never killed.
        let check = RedisStore::builder(&redis_url())
            .prefix(user.prefix.as_str())
            .connect()
            .await
            .unwrap();
        let (auth, clock, _) = handle(&sim, Arc::new(store)).await;
        let service = auth.layer().layer(transport::plain_http_client());
        let mut failures = Vec::new();
        for round in 1..=5u64 {
            let killed = user.kill_connections().await;
            assert!(killed >= 1, "round {round}: no connection to kill");
            clock.advance(EXPIRED);
            let what = format!("round {round}, {killed} connections killed");
            failures.push(recovers(&service, &sim, &what).await);
            let c = sim.counters();
            assert_eq!(c.successful_refreshes, round, "{what}: {c:?}");
            assert_eq!(c.refreshes, round, "{what}: {c:?}");
            assert_grant_alive(&check, &sim, &what).await;
        }
        for round in 6..=8u64 {
            let what = format!("round {round}, connections killed mid-refresh");
            clock.advance(EXPIRED);
            let task = refresh_in_flight(&service, &sim).await;
            user.kill_connections().await;
            let mut failed = Vec::new();
            match task.await.unwrap() {
                Ok(status) => assert_eq!(status, 0, "{what}"),
                Err(error) => {
                    assert_store_error(&error, &what);
                    failed.push(error);
                    // The pair Withings granted was kept: a retry saves it.
                    failed.extend(recovers(&service, &sim, &what).await);
                }
            }
            failures.push(failed);
            let c = sim.counters();
            assert_eq!(c.refreshes, round, "{what}: no second token call: {c:?}");
            let stored = assert_grant_alive(&check, &sim, &what).await;
            assert!(sim.is_access_token_valid(stored.access_token.expose()));
        }
        eprintln!("failed attempts per round: {failures:?}");
        user.remove().await;
    }

    /// A Redis that stops answering (connections open, nothing comes back): typed errors after
    /// the response timeout, no token call, and recovery once it answers again, including
    /// after a save that timed out while Withings' new pair was waiting for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_that_stops_answering_is_a_typed_error_not_a_stuck_user() {
        let Some(user) = OwnUser::create().await else {
            return;
        };
        let sim = simulator().await;
        let proxy = Proxy::start(server_addr(&redis_url())).await;
        let store = RedisStore::builder(&via_port(&user.url(), proxy.port))
            .prefix(user.prefix.as_str())
            .response_timeout(Duration::from_secs(1))
            .connect()
            .await
            .expect("the store connects");
        let check = RedisStore::builder(&redis_url())
            .prefix(user.prefix.as_str())
            .connect()
            .await
            .unwrap();
        let (auth, clock, _) = handle(&sim, Arc::new(store)).await;
        let service = auth.layer().layer(transport::plain_http_client());
        let stuck = Duration::from_secs(20);

        proxy.freeze();
        assert_ok(call(&service, &sim).await, "a valid token needs no store");
        clock.advance(EXPIRED);
        let started = Instant::now();
        let (a, b) = tokio::time::timeout(stuck, async {
            tokio::join!(call(&service, &sim), call(&service, &sim))
        })
        .await
        .expect("requests hang on a Redis that does not answer: the user is stuck");
        for outcome in [a, b] {
            assert_store_error(&outcome.expect_err("Redis does not answer"), "frozen");
        }
        let waited = started.elapsed();
        assert_eq!(sim.counters().refreshes, 0, "no refresh without the store");
        proxy.thaw();
        let first = recovers(&service, &sim, "answering again").await;
        assert_eq!(sim.counters().successful_refreshes, 1);
        assert_grant_alive(&check, &sim, "answering again").await;

        clock.advance(EXPIRED);
        let task = refresh_in_flight(&service, &sim).await;
        proxy.freeze();
        let error = tokio::time::timeout(stuck, task)
            .await
            .expect("the refresh hangs on a save that gets no answer")
            .unwrap()
            .expect_err("the save got no answer");
        assert!(
            matches!(
                error,
                Error::Store {
                    operation: "save",
                    ..
                }
            ),
            "{error:?}"
        );
        proxy.thaw();
        let second = recovers(&service, &sim, "answering again after the save").await;
        let c = sim.counters();
        assert_eq!(
            c.refreshes, 2,
            "the granted pair was kept, not re-requested: {c:?}"
        );
        let stored = assert_grant_alive(&check, &sim, "after the held save").await;
        assert!(sim.is_access_token_valid(stored.access_token.expose()));
        eprintln!("gave up after {waited:?}; then {first:?}, {second:?}");
        user.remove().await;
    }

    /// A private redis-server (append-only file, fsync always) on a free port.
    struct OwnRedis {
        child: Option<Child>,
        port: u16,
        dir: TempDir,
    }

    impl OwnRedis {
        fn start() -> Option<OwnRedis> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = OwnRedis {
                child: None,
                port,
                dir: TempDir::new("own-redis"),
            };
            match server.spawn() {
                Ok(()) => Some(server),
                Err(error) => {
                    let message =
                        format!("cannot run redis-server ({error}); install redis-server");
                    assert!(!in_ci(), "CI=true and {message}");
                    eprintln!("!!! SKIPPED: {message}");
                    None
                }
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn spawn(&mut self) -> std::io::Result<()> {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(&self.dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.child = Some(child);
            Ok(())
        }

        async fn ready(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut conn) = connect(&self.url()).await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                {
                    return;
                }
                assert!(Instant::now() < deadline, "own redis-server did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// SIGKILL: no shutdown, no final save; what survives is the fsynced append-only file.
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }

        async fn restart(&mut self) {
            self.spawn().unwrap();
            self.ready().await;
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_server_killed_and_restarted_mid_run_loses_nothing() {
        let Some(mut server) = OwnRedis::start() else {
            return;
        };
        server.ready().await;
        let sim = simulator().await;
        let store: Arc<dyn TokenStore> = Arc::new(
            RedisStore::builder(&server.url())
                .connection_timeout(Duration::from_millis(500))
                .response_timeout(Duration::from_secs(1))
                .connect()
                .await
                .unwrap(),
        );
        let (auth, clock, _) = handle(&sim, store.clone()).await;
        let service = auth.layer().layer(transport::plain_http_client());

        // Killed between refreshes, down for a while.
        server.kill();
        for _ in 0..3 {
            assert_ok(call(&service, &sim).await, "a valid token needs no store");
        }
        clock.advance(EXPIRED);
        for attempt in 0..3 {
            let started = Instant::now();
            let error = call(&service, &sim).await.expect_err("the store is down");
            assert_store_error(&error, &format!("attempt {attempt}"));
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        assert_eq!(sim.counters().refreshes, 0, "no refresh without the store");
        server.restart().await;
        let first = recovers(&service, &sim, "restarted").await;
        assert_eq!(sim.counters().successful_refreshes, 1);
        assert_grant_alive(&*store, &sim, "restarted").await;

        // Killed while Withings rotates: the save fails, the pair is kept for the retry, and
        // the restarted server (its append-only file) still has the previous pair.
        clock.advance(EXPIRED);
        let task = refresh_in_flight(&service, &sim).await;
        server.kill();
        let error = task
            .await
            .unwrap()
            .expect_err("saving with the server dead");
        assert!(
            matches!(
                error,
                Error::Store {
                    operation: "save",
                    ..
                }
            ),
            "{error:?}"
        );
        server.restart().await;
        let second = recovers(&service, &sim, "restarted after a failed save").await;
        let c = sim.counters();
        assert_eq!(
            c.refreshes, 2,
            "the granted pair was saved, not re-requested: {c:?}"
        );
        let stored = assert_grant_alive(&*store, &sim, "after the failed save").await;
        assert!(sim.is_access_token_valid(stored.access_token.expose()));

        // And that pair is durable: it survives one more crash.
        server.kill();
        server.restart().await;
        let fresh = RedisStore::connect(&server.url()).await.unwrap();
        let after = fresh.load(USER).await.unwrap().unwrap().token;
        assert_eq!(after, stored, "the saved pair survived a SIGKILL");
        eprintln!("first attempts after restarts: {first:?}, {second:?}");
    }
}
