//! One `Backend` trait for the durable stores, so that every outage, cross-process and
//! cancellation scenario is written once and instantiated per backend
//! ([`for_backends!`](crate::backend::for_backends)).
//!
//! A backend is a fresh namespace on its server (a SQLite file, a PostgreSQL table, a Redis
//! key prefix) plus the faults a test can cause there:
//!
//! | | SQLite | PostgreSQL | Redis (shared server) | Redis (own process) |
//! |---|---|---|---|---|
//! | faulty store | the file, 300 ms busy timeout | through a TCP proxy, own `application_name` | through a TCP proxy, own ACL user | its own `redis-server` (AOF, fsync always) |
//! | `kill_connections` | — (none: not instantiated) | `pg_terminate_backend` | `CLIENT KILL USER` | `CLIENT KILL TYPE normal` |
//! | `down` / `up` | another connection holds the write lock | proxy refuses, then listens again | proxy refuses, then listens again | SIGKILL, then restart from the AOF |
//! | `freeze` / `thaw` | as `down` / `up` (writers wait out the busy timeout) | proxy holds every byte | proxy holds every byte | SIGSTOP / SIGCONT |
//!
//! Scoped so that concurrent tests on the shared servers are not disturbed: only the faulty
//! store's own connections are ever killed, and `cleanup` removes what the namespace holds.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower_withings::store::TokenStore;

use crate::store_support::{TempDir, in_ci, random_hex};

/// A durable store's server and the faults a test can cause on it.
#[allow(async_fn_in_trait)] // tests only: every caller is generic, none needs `Send`
pub trait Backend: Sized + Send + Sync + 'static {
    /// A fresh namespace, or `None` after a loud skip (outside CI) when the server is not
    /// running. In CI an unreachable server fails the test.
    async fn fresh() -> Option<Self>;

    /// What a child process needs to open the same store ([`open_spec`]).
    fn spec(&self) -> String;

    /// A new, independent store instance straight to the server, as another process would
    /// open it; never touched by the faults.
    async fn open(&self) -> Arc<dyn TokenStore> {
        open_spec(&self.spec()).await.expect("the store opens")
    }

    /// The store under test: the faults below happen to it.
    async fn open_faulty(&self) -> Arc<dyn TokenStore>;

    /// Kills the faulty store's server connections; how many died.
    async fn kill_connections(&self) -> i64;

    /// The proxy the faulty store connects through, if it has one: the faults below are the
    /// proxy's unless a backend has its own.
    fn proxy(&self) -> &Proxy {
        unreachable!("a backend without a proxy has faults of its own")
    }

    /// The server is gone: new connections are refused, open ones are closed.
    async fn down(&self) {
        self.proxy().down();
    }

    /// The server is back.
    async fn up(&self) {
        self.proxy().up().await;
    }

    /// The server stops answering: connections stay open, nothing comes back.
    async fn freeze(&self) {
        self.proxy().freeze();
    }

    /// The server answers again (what was held is delivered).
    async fn thaw(&self) {
        self.proxy().thaw();
    }

    /// Removes the namespace.
    async fn cleanup(self);
}

/// The spec of a server store: its kind, URL and namespace (table or key prefix).
#[cfg(any(feature = "postgres", feature = "redis"))]
fn spec_of(kind: &str, url: &str, namespace: &str) -> String {
    format!("{kind}\n{url}\n{namespace}")
}

/// Opens a store from a [`Backend::spec`] (in a child process, or for [`Backend::open`]).
pub async fn open_spec(spec: &str) -> Result<Arc<dyn TokenStore>, tower_withings::Error> {
    let parts: Vec<&str> = spec.split('\n').collect();
    Ok(match parts.as_slice() {
        #[cfg(feature = "sqlite")]
        ["sqlite", path] => Arc::new(tower_withings::store::SqliteStore::open(path).await?),
        #[cfg(feature = "postgres")]
        ["postgres", url, table] => Arc::new(
            tower_withings::store::PostgresStore::builder(url)
                .table(*table)
                .max_connections(4)
                .build()
                .await?,
        ),
        #[cfg(feature = "redis")]
        ["redis", url, prefix] => Arc::new(
            tower_withings::store::RedisStore::builder(url)
                .prefix(*prefix)
                .connect()
                .await?,
        ),
        _ => panic!("bad backend spec {spec:?}"),
    })
}

/// Instantiates scenarios per backend: `scenario: [sqlite, postgres, redis]` is a module
/// `scenario` with a test per backend (`scenario::sqlite`, ...) that opens a fresh namespace
/// (or skips loudly outside CI when the server is not running), runs `scenario(&backend)` and
/// removes the namespace. `redis_process` is [`RedisProcess`].
macro_rules! for_backends {
    ($($scenario:ident: [$($backend:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $scenario {
                $($crate::backend::for_backends!(@one $scenario $backend);)*
            }
        )*
    };
    (@one $scenario:ident sqlite) => {
        $crate::backend::for_backends!(@test "sqlite" $scenario sqlite Sqlite);
    };
    (@one $scenario:ident postgres) => {
        $crate::backend::for_backends!(@test "postgres" $scenario postgres Postgres);
    };
    (@one $scenario:ident redis) => {
        $crate::backend::for_backends!(@test "redis" $scenario redis Redis);
    };
    (@one $scenario:ident redis_process) => {
        $crate::backend::for_backends!(@test "redis" $scenario redis_process RedisProcess);
    };
    (@test $feature:literal $scenario:ident $name:ident $backend:ident) => {
        #[cfg(feature = $feature)]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            use $crate::backend::Backend as _;
            let Some(backend) = $crate::backend::$backend::fresh().await else {
                return;
            };
            super::$scenario::<$crate::backend::$backend>(&backend).await;
            backend.cleanup().await;
        }
    };
}
pub(crate) use for_backends;

// ---- SQLite ----

/// A fresh SQLite file; "down" is another connection holding the write lock.
#[cfg(feature = "sqlite")]
pub struct Sqlite {
    dir: TempDir,
    blocker: Mutex<Option<rusqlite::Connection>>,
}

#[cfg(feature = "sqlite")]
impl Sqlite {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.file("tokens.sqlite3")
    }

    fn lock(&self) {
        let conn = rusqlite::Connection::open(self.path()).expect("a raw connection");
        conn.execute_batch("BEGIN EXCLUSIVE")
            .expect("the write lock");
        *self.blocker.lock().unwrap() = Some(conn);
    }

    fn unlock(&self) {
        if let Some(conn) = self.blocker.lock().unwrap().take() {
            conn.execute_batch("ROLLBACK")
                .expect("release the write lock");
        }
    }
}

#[cfg(feature = "sqlite")]
impl Backend for Sqlite {
    async fn fresh() -> Option<Self> {
        Some(Sqlite {
            dir: TempDir::new("backend-sqlite"),
            blocker: Mutex::new(None),
        })
    }

    fn spec(&self) -> String {
        format!("sqlite\n{}", self.path().display())
    }

    async fn open_faulty(&self) -> Arc<dyn TokenStore> {
        Arc::new(
            tower_withings::store::SqliteStore::builder(self.path())
                .busy_timeout(Duration::from_millis(300))
                .open()
                .await
                .expect("the store opens"),
        )
    }

    async fn kill_connections(&self) -> i64 {
        unreachable!("SQLite has no server connections to kill")
    }

    async fn down(&self) {
        self.lock();
    }

    async fn up(&self) {
        self.unlock();
    }

    async fn freeze(&self) {
        self.lock();
    }

    async fn thaw(&self) {
        self.unlock();
    }

    async fn cleanup(self) {} // the file goes with its temp dir
}

// ---- PostgreSQL ----

/// A fresh table; the faulty store connects through a proxy with its own
/// `application_name`, and only its backends are terminated.
#[cfg(feature = "postgres")]
pub struct Postgres {
    pub admin: tokio_postgres::Client,
    pub application: String,
    pub table: String,
    proxy: Proxy,
}

#[cfg(feature = "postgres")]
impl Postgres {
    /// An admin connection with its own application name, or `None` after a loud skip.
    pub async fn admin() -> Option<tokio_postgres::Client> {
        let mut config: tokio_postgres::Config =
            crate::store_support::postgres_url().parse().unwrap();
        config.application_name("tower-withings-backend-admin");
        config.connect_timeout(Duration::from_secs(5));
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                Some(client)
            }
            Err(error) => {
                crate::store_support::postgres_unreachable(&error);
                None
            }
        }
    }

    /// Terminates `application`'s backends matching `condition`; how many.
    pub async fn terminate(
        admin: &tokio_postgres::Client,
        application: &str,
        condition: &str,
    ) -> i64 {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 {condition}"
        );
        admin.query_one(&sql, &[&application]).await.unwrap().get(0)
    }
}

#[cfg(feature = "postgres")]
impl Backend for Postgres {
    async fn fresh() -> Option<Self> {
        let admin = Self::admin().await?;
        let proxy = Proxy::start(server_addr(&crate::store_support::postgres_url())).await;
        Some(Postgres {
            admin,
            application: format!("tw-outage-{}", random_hex(6)),
            table: format!("withings_test_{}", random_hex(6)),
            proxy,
        })
    }

    fn spec(&self) -> String {
        spec_of(
            "postgres",
            &crate::store_support::postgres_url(),
            &self.table,
        )
    }

    async fn open_faulty(&self) -> Arc<dyn TokenStore> {
        let base = via_port(&crate::store_support::postgres_url(), self.proxy.port);
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}application_name={}", self.application);
        Arc::new(
            tower_withings::store::PostgresStore::builder(&url)
                .table(&self.table)
                .max_connections(4)
                .timeouts(tower_withings::store::Timeouts::new(
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                ))
                .build()
                .await
                .expect("the store connects"),
        )
    }

    async fn kill_connections(&self) -> i64 {
        Self::terminate(&self.admin, &self.application, "").await
    }

    fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    async fn cleanup(self) {
        crate::store_support::drop_postgres_tables(&self.admin, &self.table).await;
    }
}

// ---- Redis ----

#[cfg(feature = "redis")]
async fn redis_connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// A Redis store that gives up quickly on a server that is gone or silent.
#[cfg(feature = "redis")]
async fn faulty_redis(url: &str, prefix: &str) -> Arc<dyn TokenStore> {
    let store = tower_withings::store::RedisStore::builder(url)
        .prefix(prefix)
        .timeouts(tower_withings::store::Timeouts::new(
            Duration::from_millis(500),
            Duration::from_secs(1),
        ));
    Arc::new(store.connect().await.expect("the store connects"))
}

/// Deletes every key under `prefix`.
#[cfg(feature = "redis")]
async fn redis_delete_prefix(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
    }
}

/// A fresh key prefix on the shared server; the faulty store logs in as an ACL user of its
/// own through a proxy, and only that user's clients are killed.
#[cfg(feature = "redis")]
pub struct Redis {
    admin: redis::aio::MultiplexedConnection,
    name: String,
    password: String,
    prefix: String,
    proxy: Proxy,
}

#[cfg(feature = "redis")]
impl Backend for Redis {
    async fn fresh() -> Option<Self> {
        let url = crate::store_support::redis_url();
        let mut admin = match redis_connection(&url).await {
            Ok(admin) => admin,
            Err(error) => {
                crate::store_support::redis_unreachable(&error);
                return None;
            }
        };
        let backend = Redis {
            name: format!("tw-outage-{}", random_hex(6)),
            password: random_hex(16),
            prefix: format!("withings-test-{}:", random_hex(6)),
            admin: admin.clone(),
            proxy: Proxy::start(server_addr(&url)).await,
        };
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&backend.name)
            .arg("on")
            .arg(format!(">{}", backend.password))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER (Redis 6 or later)");
        Some(backend)
    }

    fn spec(&self) -> String {
        spec_of("redis", &crate::store_support::redis_url(), &self.prefix)
    }

    async fn open_faulty(&self) -> Arc<dyn TokenStore> {
        let base = via_port(&crate::store_support::redis_url(), self.proxy.port);
        let (scheme, rest) = base.split_once("://").unwrap();
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let url = format!("{scheme}://{}:{}@{rest}", self.name, self.password);
        faulty_redis(&url, &self.prefix).await
    }

    async fn kill_connections(&self) -> i64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&self.name)
            .query_async(&mut self.admin.clone())
            .await
            .unwrap()
    }

    fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    async fn cleanup(mut self) {
        redis_delete_prefix(&mut self.admin, &self.prefix).await;
        let _: () = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&self.name)
            .query_async(&mut self.admin)
            .await
            .unwrap();
    }
}

/// A private `redis-server` (append-only file, fsync always) on a free port: "down" is a
/// SIGKILL (no shutdown, no final save; what survives is the fsynced file), "up" a restart,
/// "freeze" a SIGSTOP.
#[cfg(feature = "redis")]
pub struct RedisProcess {
    child: Mutex<Option<Child>>,
    port: u16,
    dir: TempDir,
}

#[cfg(feature = "redis")]
impl RedisProcess {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        *self.child.lock().unwrap() = Some(child);
        Ok(())
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = redis_connection(&self.url()).await
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

    fn signal(&self, signal: &str) {
        let pid = self.child.lock().unwrap().as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(feature = "redis")]
impl Backend for RedisProcess {
    async fn fresh() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = RedisProcess {
            child: Mutex::new(None),
            port,
            dir: TempDir::new("own-redis"),
        };
        if let Err(error) = server.spawn() {
            let message = format!("cannot run redis-server ({error}); install redis-server");
            assert!(!in_ci(), "CI=true and {message}");
            eprintln!("!!! SKIPPED: {message}");
            return None;
        }
        server.ready().await;
        Some(server)
    }

    fn spec(&self) -> String {
        let prefix = tower_withings::store::RedisStore::DEFAULT_PREFIX;
        spec_of("redis", &self.url(), prefix)
    }

    async fn open_faulty(&self) -> Arc<dyn TokenStore> {
        faulty_redis(
            &self.url(),
            tower_withings::store::RedisStore::DEFAULT_PREFIX,
        )
        .await
    }

    async fn kill_connections(&self) -> i64 {
        let mut admin = redis_connection(&self.url()).await.unwrap();
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap()
    }

    async fn down(&self) {
        self.kill();
    }

    async fn up(&self) {
        self.spawn().unwrap();
        self.ready().await;
    }

    async fn freeze(&self) {
        self.signal("-STOP");
    }

    async fn thaw(&self) {
        self.signal("-CONT");
    }

    async fn cleanup(self) {} // the server and its directory go on drop
}

// ---- the proxy in front of a server ----

/// A TCP proxy in front of a server: `down` closes every connection and stops listening (the
/// server is gone, connections are refused), `up` listens again on the same port; `freeze`
/// keeps every connection open but passes nothing (a server that stops answering: a network
/// partition, a hung host), `thaw` delivers what was held and goes on.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
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

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    pub fn down(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port (retrying while the old socket is released).
    pub async fn up(&self) {
        let mut last = None;
        for _ in 0..250 {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => return self.serve(listener),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy cannot listen on {} again: {last:?}", self.port);
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
pub fn server_addr(url: &str) -> SocketAddr {
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

/// The networked stores' builders never show their URL: it may hold a password.
#[cfg(any(feature = "postgres", feature = "redis"))]
#[test]
fn builders_never_show_the_url() {
    let mut shown: Vec<String> = Vec::new();
    #[cfg(feature = "postgres")]
    shown.push(format!(
        "{:?}",
        tower_withings::store::PostgresStore::builder("postgres://app:hunter2@db.internal/app")
    ));
    #[cfg(feature = "redis")]
    shown.push(format!(
        "{:?}",
        tower_withings::store::RedisStore::builder("redis://:hunter2@cache.internal:6379")
    ));
    for shown in shown {
        assert!(
            !shown.contains("hunter2") && shown.contains("[redacted]"),
            "{shown}"
        );
    }
}
