//! Shared setup for the store tests: server URLs, the CI-or-skip rule, unique names.

use std::path::PathBuf;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

pub const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
pub const START_REDIS: &str =
    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no";

pub fn postgres_url() -> String {
    std::env::var("TOWER_WITHINGS_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

pub fn redis_url() -> String {
    std::env::var("TOWER_WITHINGS_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A server the test needs is unreachable: fail in CI, skip loudly elsewhere.
/// Returns normally only outside CI (the caller then returns early).
pub fn unreachable(server: &str, env: &str, start: &str, error: &dyn std::fmt::Display) {
    let message = format!("{server} is not reachable ({error}). Set {env} or start it: {start}");
    if in_ci() {
        panic!("CI=true and {message}");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED: {message}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

/// PostgreSQL is unreachable: fail in CI, skip loudly elsewhere.
pub fn postgres_unreachable(error: &dyn std::fmt::Display) {
    unreachable(
        "PostgreSQL",
        "TOWER_WITHINGS_POSTGRES_URL",
        START_POSTGRES,
        error,
    );
}

/// Redis is unreachable: fail in CI, skip loudly elsewhere.
pub fn redis_unreachable(error: &dyn std::fmt::Display) {
    unreachable("Redis", "TOWER_WITHINGS_REDIS_URL", START_REDIS, error);
}

/// A plain connection to the test database, for raw SQL beside a store (the store keeps its
/// pool to itself).
#[cfg(feature = "postgres")]
pub async fn postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("a connection");
    tokio::spawn(connection);
    client
}

/// The store, or `None` after `unreachable` said its server is down (which fails in CI).
fn or_skip<S, E: std::fmt::Display>(
    opened: Result<S, E>,
    unreachable: fn(&dyn std::fmt::Display),
) -> Option<S> {
    opened.map_err(|error| unreachable(&error)).ok()
}

/// Two `SqliteStore` instances on one file in `dir`, as two processes would open it.
#[cfg(feature = "sqlite")]
pub async fn two_sqlite_instances(
    dir: &TempDir,
) -> (
    tower_withings::store::SqliteStore,
    tower_withings::store::SqliteStore,
) {
    let path = dir.file("tokens.sqlite3");
    let open = || tower_withings::store::SqliteStore::open(&path);
    (open().await.unwrap(), open().await.unwrap())
}

/// A store on a real server, in a namespace of its own for one test: a PostgreSQL table, a
/// Redis key prefix.
#[allow(async_fn_in_trait)] // the tests' own trait: no Send bound wanted
pub trait Fresh: tower_withings::store::TokenStore + Sized {
    /// A store in a fresh namespace, or `None` (after a loud skip) when the server is not
    /// running outside CI.
    async fn fresh() -> Option<Self>;
    /// Another handle on the same namespace (its own pool or connection), as another replica
    /// of the app would have.
    async fn another(&self) -> Self;
    /// Removes everything kept in the namespace.
    async fn clean(&self);
}

/// The store conformance kit on a fresh store, then the shared-store kit on it and another
/// handle on its namespace; cleaned after.
#[cfg(feature = "testkit")]
pub async fn fresh_stores_conform<S: Fresh>() {
    let Some(a) = S::fresh().await else {
        return;
    };
    tower_withings::testkit::check_store(&a).await;
    tower_withings::testkit::check_shared_stores(&a, &a.another().await).await;
    a.clean().await;
}

/// The sync state's contract on two handles on one fresh namespace; cleaned after.
#[cfg(feature = "testkit")]
pub async fn two_fresh_handles_keep_sync_state<S: Fresh>() {
    let Some(a) = S::fresh().await else {
        return;
    };
    tower_withings::testkit::check_sync_state(&a, &a.another().await).await;
    a.clean().await;
}

#[cfg(feature = "postgres")]
impl Fresh for tower_withings::store::PostgresStore {
    /// A table named `withings_test_<random>`.
    async fn fresh() -> Option<Self> {
        let table = format!("withings_test_{}", random_hex(6));
        let store = Self::builder(&postgres_url()).table(&table).build().await;
        or_skip(store, postgres_unreachable)
    }

    async fn another(&self) -> Self {
        Self::builder(&postgres_url())
            .table(self.table())
            .max_connections(4)
            .build()
            .await
            .unwrap()
    }

    async fn clean(&self) {
        drop_postgres_tables(&postgres_client().await, self.table()).await;
    }
}

/// Drops `table` and every table a `PostgresStore` on it keeps beside it (leases, budget,
/// pause, waiters, sync state).
#[cfg(feature = "postgres")]
pub async fn drop_postgres_tables(client: &tokio_postgres::Client, table: &str) {
    for suffix in [
        "", "_leases", "_budget", "_pause", "_waits", "_sync_c", "_sync_v", "_sync_i", "_sync_x",
    ] {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}{suffix}\""))
            .await
            .expect("drop the test tables");
    }
}

#[cfg(feature = "redis")]
impl Fresh for tower_withings::store::RedisStore {
    /// Keys under `withings-test-<random>:`.
    async fn fresh() -> Option<Self> {
        let prefix = format!("withings-test-{}:", random_hex(6));
        or_skip(
            Self::builder(&redis_url()).prefix(prefix).connect().await,
            redis_unreachable,
        )
    }

    async fn another(&self) -> Self {
        Self::builder(&redis_url())
            .prefix(self.prefix())
            .connect()
            .await
            .unwrap()
    }

    /// Deletes every key under the prefix.
    async fn clean(&self) {
        use redis::AsyncCommands;
        let mut conn = redis_connection().await;
        let keys: Vec<String> = conn.keys(format!("{}*", self.prefix())).await.unwrap();
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }
}

/// A plain connection to the test Redis, for looking under a store.
#[cfg(feature = "redis")]
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A random lowercase hex string of `n` bytes.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random user id, well above real Withings ids and within i64.
pub fn random_user() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random source");
    2_000_000_000_000 + (u64::from_le_bytes(bytes) >> 14)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tower-withings-{tag}-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pair for `user` whose tokens name `tag` (`access-{tag}`, `refresh-{tag}`), expiring in
/// 3 h: what the store tests put and compare.
pub fn token(user: u64, tag: &str) -> tower_withings::Token {
    use tower_withings::{Secret, Token, UserId};
    Token {
        user_id: UserId(user),
        access_token: Secret::new(format!("access-{tag}")),
        refresh_token: Secret::new(format!("refresh-{tag}")),
        expires_at: std::time::SystemTime::now() + std::time::Duration::from_secs(10_800),
        scope: "user.metrics".into(),
    }
}

/// User 10's good record, the one [`assert_bad_records_reported`] expects beside the bad ones.
pub async fn put_good_record(store: &dyn tower_withings::store::TokenStore) {
    let now = std::time::SystemTime::now();
    store.put(&token(10, "good"), now).await.unwrap();
}

/// A fresh store holding user 10's good record ([`put_good_record`]), or `None` as
/// [`Fresh::fresh`] says.
pub async fn fresh_with_good_record<S: Fresh>() -> Option<S> {
    let store = S::fresh().await?;
    put_good_record(&store).await;
    Some(store)
}

/// Bad records were written for the `bad` users beside user 10's good one
/// ([`put_good_record`]): each bad one loads as a `CorruptRecord` naming its user and no secret, the
/// good one still loads, `list` skips the bad ones, and `all` (the store's `list_all`)
/// reports each of them.
pub async fn assert_bad_records_reported(
    store: &dyn tower_withings::store::TokenStore,
    bad: &[u64],
    all: Vec<Result<tower_withings::store::StoredToken, tower_withings::Error>>,
) {
    use tower_withings::{Error, Secret, UserId};
    for &user in bad {
        match store.load(UserId(user)).await {
            Err(Error::CorruptRecord {
                user: named,
                reason,
            }) => {
                assert_eq!(named, UserId(user));
                assert!(
                    !reason.contains("secret-"),
                    "user {user}: a secret in the reason"
                );
                let shown = Error::CorruptRecord {
                    user: named,
                    reason,
                }
                .to_string();
                assert!(shown.contains(&user.to_string()), "{shown}");
            }
            Err(other) => panic!("user {user}: expected CorruptRecord, got {other:?}"),
            Ok(_) => panic!("user {user}: expected CorruptRecord, got a record"),
        }
    }
    let good = store.load(UserId(10)).await.unwrap().unwrap();
    assert!(good.token.refresh_token == Secret::new("refresh-good"));
    let listed = store.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.token.user_id).collect::<Vec<_>>(),
        vec![UserId(10)],
        "list skips unreadable records"
    );
    assert_eq!(all.len(), bad.len() + 1, "list_all reports each record");
    assert_eq!(all.iter().filter(|r| r.is_err()).count(), bad.len());
}

/// A store whose backend is down or locked: taking a lease is an error (never a lease), and
/// so is a read.
pub async fn assert_no_lease_from_a_dead_store(store: &dyn tower_withings::store::TokenStore) {
    use tower_withings::{Error, UserId};
    let lease = std::time::Duration::from_secs(30);
    match store.try_lock(UserId(2), lease).await {
        Err(Error::Store { operation, .. }) => assert_eq!(operation, "lock"),
        Err(other) => panic!("expected Err(Store) from a dead store, got {other:?}"),
        Ok(attempt) => panic!("a dead store gave a lease attempt: {attempt:?}"),
    }
    let loaded = store.load(UserId(1)).await;
    assert!(matches!(loaded, Err(Error::Store { .. })), "{loaded:?}");
}
