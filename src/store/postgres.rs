//! [`PostgresStore`]: tokens in PostgreSQL, for any number of processes and replicas.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, Row};

use super::ledger;

mod sync;

use super::backend::{Backend, Save};
use super::record::{self, RawRecord};
use super::{
    BudgetLedger, BudgetUsage, Lease, LockAttempt, SlotAsk, SlotGrant, StoreFuture, StoredToken,
    Timeouts,
};
use crate::error::Error;
use crate::secret::Secret;
use crate::token::UserId;

/// The default table name; the lease table is the same name with `_leases` appended.
const DEFAULT_TABLE: &str = "withings_tokens";

/// Tokens in a PostgreSQL table, shared by every process and replica that uses the database.
///
/// * **Tables** (created if missing, unless [`PostgresStoreBuilder::create_tables`] says not
///   to; the SQL is [`PostgresStore::schema_sql`], for your migration tool): `withings_tokens`
///   (configurable) with `user_id BIGINT PRIMARY KEY`, `access_token`, `refresh_token`,
///   `expires_at TIMESTAMPTZ`, `scope`, `needs_reauthorization BOOLEAN`,
///   `refreshed_at TIMESTAMPTZ`, `format SMALLINT` (record format, 1) and `updated_at`; and
///   `withings_tokens_leases` with `user_id`, `owner`, `expires_at`. Times keep PostgreSQL's
///   **microsecond precision**.
/// * **Compare-and-save** is one `UPDATE … WHERE user_id = $1 AND refresh_token = $spent`.
/// * **Refresh lease**: one `INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <=
///   clock_timestamp()` on the lease table: it succeeds for exactly one caller while the lease
///   is live, and a lease whose holder died lapses at its expiry. Expiry is measured by the
///   **database server's clock**, so replicas with skewed clocks still agree.
/// * **Connections**: a `deadpool-postgres` pool (default 8 connections, plain TCP). For TLS,
///   build a pool with your TLS connector and pass it to [`PostgresStoreBuilder::pool`].
///   A database that cannot be reached gives [`Error::Store`] (within the connect timeout,
///   default 5 s: [`PostgresStoreBuilder::timeouts`]), never a false lock. A database that
///   stops answering (a network partition, a hung host) gives [`Error::Store`] after the answer
///   timeout (default 5 s), and the
///   connection that got no answer leaves the pool, rather than holding the user's refresh
///   for as long as TCP keeps the connection open.
/// * **Bad rows** (unknown format, empty tokens, columns of the wrong type) load as
///   [`Error::CorruptRecord`] for that user only; [`list`](super::TokenStore::list) skips them with a
///   warning, [`list_all`](Self::list_all) reports them.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_withings::Error> {
/// use tower_withings::store::PostgresStore;
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PostgresStore {
    pool: Pool,
    sql: Arc<Statements>,
    answer_timeout: Duration,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresStore`].
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PostgresStoreBuilder {
    source: Source,
    table: String,
    create_tables: bool,
    max_connections: usize,
    timeouts: Timeouts,
}

#[derive(Debug)]
enum Source {
    /// The URL may hold a password: a [`Secret`], so it never shows in `Debug`.
    Url(Secret),
    Pool(Pool),
}

impl PostgresStoreBuilder {
    crate::setters::setters! {
        /// Uses an existing pool (e.g. one with TLS) instead of a URL.
        fn pool(pool: Pool) => source = Source::Pool(pool);
        /// The token table's name (default `withings_tokens`): letters, digits and `_`, at
        /// most 56 characters, not starting with a digit. Leases go to `<table>_leases`.
        fn table(name: impl Into<String>) => table = name.into();
        /// Whether to create missing tables when connecting (default `true`). Turn it off when
        /// a migration tool applies [`PostgresStore::schema_sql`] instead.
        fn create_tables(create: bool) => create_tables;
        /// Pool size when connecting by URL (default 8).
        fn max_connections(max: usize) => max_connections = max.max(1);
        /// How long opening a connection (or waiting for a pooled one) may take, and how long
        /// one store operation may wait for the database's answer once it has a connection
        /// (default 5 s each). Past the answer timeout an operation fails with
        /// [`Error::Store`] and the connection is dropped from the pool.
        fn timeouts(timeouts: Timeouts) => timeouts;
    }

    /// Builds the store and, unless told not to, creates its tables.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] for an invalid URL or table name, or when creating the tables fails
    /// (the database is unreachable, or the role may not create tables).
    pub async fn build(self) -> Result<PostgresStore, Error> {
        let sql = Arc::new(Statements::new(&self.table)?);
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => {
                let mut config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
                    // The parser's message could quote the URL, password included.
                    Error::store("connect", "invalid PostgreSQL connection URL")
                })?;
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(self.timeouts.connect);
                }
                let manager = Manager::from_config(
                    config,
                    NoTls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                Pool::builder(manager)
                    .max_size(self.max_connections)
                    .runtime(Runtime::Tokio1)
                    .create_timeout(Some(self.timeouts.connect))
                    .wait_timeout(Some(self.timeouts.connect))
                    .build()
                    .map_err(|e| Error::store("connect", e))?
            }
        };
        let store = PostgresStore {
            pool,
            sql,
            answer_timeout: self.timeouts.answer,
        };
        if self.create_tables {
            store.create_tables().await?;
        }
        Ok(store)
    }
}

/// The SQL text of every statement, with the table names filled in.
struct Statements {
    table: String,
    schema: String,
    load: String,
    list: String,
    put: String,
    compare_and_save: String,
    mark: String,
    delete: String,
    lock: String,
    unlock: String,
    budget: BudgetStatements,
    sync: sync::SyncSql,
    /// The sync tables exist (created on first use, `sync.rs`).
    sync_ready: std::sync::atomic::AtomicBool,
}

/// The request budget's statements: slots in `{table}_budget`, one row per app (its pause,
/// and the row lock that serialises reservations) in `{table}_pause`, one row per holder with
/// waiters in `{table}_waits`.
struct BudgetStatements {
    app_row: String,
    lock_app: String,
    prune: String,
    count: String,
    insert: String,
    waiters: String,
    pause: String,
    usage: String,
}

const SELECT: &str = "user_id, access_token, refresh_token, expires_at, scope, \
                      needs_reauthorization, refreshed_at, format";

impl Statements {
    fn new(table: &str) -> Result<Self, Error> {
        let valid = !table.is_empty()
            && table.len() <= 56
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::store(
                "connect",
                format!(
                    "invalid table name {:?}: use letters, digits and _, at most 56 characters",
                    crate::error::shorten(table)
                ),
            ));
        }
        let t = format!("\"{table}\"");
        let l = format!("\"{table}_leases\"");
        let b = format!("\"{table}_budget\"");
        let p = format!("\"{table}_pause\"");
        let w = format!("\"{table}_waits\"");
        const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";
        Ok(Statements {
            table: table.to_owned(),
            sync: sync::SyncSql::new(table),
            sync_ready: Default::default(),
            schema: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    user_id               BIGINT      PRIMARY KEY,
    access_token          TEXT        NOT NULL,
    refresh_token         TEXT        NOT NULL,
    expires_at            TIMESTAMPTZ NOT NULL,
    scope                 TEXT        NOT NULL,
    needs_reauthorization BOOLEAN     NOT NULL DEFAULT FALSE,
    refreshed_at          TIMESTAMPTZ NOT NULL,
    format                SMALLINT    NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {l} (
    user_id    BIGINT      PRIMARY KEY,
    owner      TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {b} (
    app      TEXT   NOT NULL,
    stamp_ms BIGINT NOT NULL,
    count    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS \"{table}_budget_by_app\" ON {b} (app, stamp_ms);
CREATE TABLE IF NOT EXISTS {p} (
    app             TEXT   PRIMARY KEY,
    paused_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {w} (
    app        TEXT   NOT NULL,
    holder     TEXT   NOT NULL,
    oldest_ms  BIGINT NOT NULL,
    count      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (app, holder)
);
"
            ),
            load: format!("SELECT {SELECT} FROM {t} WHERE user_id = $1"),
            list: format!("SELECT {SELECT} FROM {t} ORDER BY user_id"),
            put: format!(
                "INSERT INTO {t} (user_id, access_token, refresh_token, expires_at, scope,
                                  needs_reauthorization, refreshed_at, format)
                 VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7)
                 ON CONFLICT (user_id) DO UPDATE SET
                     access_token = EXCLUDED.access_token,
                     refresh_token = EXCLUDED.refresh_token,
                     expires_at = EXCLUDED.expires_at,
                     scope = EXCLUDED.scope,
                     needs_reauthorization = FALSE,
                     refreshed_at = EXCLUDED.refreshed_at,
                     format = EXCLUDED.format,
                     updated_at = now()"
            ),
            compare_and_save: format!(
                "UPDATE {t} SET
                     access_token = $2,
                     refresh_token = $3,
                     expires_at = $4,
                     scope = $5,
                     needs_reauthorization = FALSE,
                     refreshed_at = $6,
                     format = $7,
                     updated_at = now()
                 WHERE user_id = $1 AND refresh_token = $8"
            ),
            mark: format!(
                "UPDATE {t} SET needs_reauthorization = TRUE, updated_at = now()
                 WHERE user_id = $1 AND refresh_token = $2"
            ),
            delete: format!("DELETE FROM {t} WHERE user_id = $1"),
            lock: format!(
                "INSERT INTO {l} AS lease (user_id, owner, expires_at)
                 VALUES ($1, $2, clock_timestamp() + $3::BIGINT * INTERVAL '1 millisecond')
                 ON CONFLICT (user_id) DO UPDATE SET
                     owner = EXCLUDED.owner,
                     expires_at = EXCLUDED.expires_at
                 WHERE lease.expires_at <= clock_timestamp()"
            ),
            unlock: format!("DELETE FROM {l} WHERE user_id = $1 AND owner = $2"),
            budget: BudgetStatements {
                app_row: format!("INSERT INTO {p} (app) VALUES ($1) ON CONFLICT (app) DO NOTHING"),
                lock_app: format!(
                    "SELECT paused_until_ms, {NOW_MS} FROM {p} WHERE app = $1 FOR UPDATE"
                ),
                prune: format!("DELETE FROM {b} WHERE app = $1 AND stamp_ms <= $2"),
                // The slots, and other holders' live waiters (this holder's row goes: a grant
                // replaces it), in one round trip.
                count: format!(
                    "WITH gone AS (DELETE FROM {w} WHERE app = $1 AND (holder = $2 OR expires_ms <= $3)),
                          others AS (SELECT MIN(oldest_ms) AS oldest, COALESCE(SUM(count), 0)::BIGINT AS waiting
                                     FROM {w} WHERE app = $1 AND holder <> $2 AND expires_ms > $3)
                     SELECT COALESCE(SUM(count), 0)::BIGINT, MIN(stamp_ms),
                            (SELECT oldest FROM others), (SELECT waiting FROM others)
                     FROM {b} WHERE app = $1"
                ),
                insert: format!("INSERT INTO {b} (app, stamp_ms, count) VALUES ($1, $2, $3)"),
                waiters: format!(
                    "INSERT INTO {w} AS w (app, holder, oldest_ms, count, expires_ms)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (app, holder) DO UPDATE SET oldest_ms = EXCLUDED.oldest_ms,
                         count = EXCLUDED.count, expires_ms = EXCLUDED.expires_ms"
                ),
                pause: format!(
                    "INSERT INTO {p} AS pause (app, paused_until_ms) VALUES ($1, {NOW_MS} + $2)
                     ON CONFLICT (app) DO UPDATE SET paused_until_ms =
                         GREATEST(pause.paused_until_ms, EXCLUDED.paused_until_ms)"
                ),
                usage: format!(
                    "SELECT COALESCE((SELECT SUM(count) FROM {b}
                                      WHERE app = $1 AND stamp_ms > {NOW_MS} - $2), 0)::BIGINT,
                            COALESCE((SELECT paused_until_ms FROM {p} WHERE app = $1), 0)
                                - {NOW_MS}"
                ),
            },
        })
    }
}

impl PostgresStore {
    /// Connects by URL with default settings and creates the tables if missing.
    ///
    /// # Errors
    ///
    /// See [`PostgresStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).build().await
    }

    /// Starts configuring a store for the database at `url`
    /// (e.g. `postgres://user@host:5432/db`).
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            source: Source::Url(Secret::new(url)),
            table: DEFAULT_TABLE.to_owned(),
            create_tables: true,
            max_connections: 8,
            timeouts: Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        }
    }

    /// The SQL that creates the tables for `table` (idempotent: `CREATE TABLE IF NOT EXISTS`),
    /// for migration tools.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] for an invalid table name.
    pub fn schema_sql(table: &str) -> Result<String, Error> {
        Ok(Statements::new(table)?.schema)
    }

    /// The token table's name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// Creates the tables if missing. Safe to run from several processes at once (it takes a
    /// transaction-scoped advisory lock first).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the database is unreachable or refuses.
    pub async fn create_tables(&self) -> Result<(), Error> {
        let failed = |e: crate::error::BoxError| Error::store("create tables", e);
        let mut client = self.pool.get().await.map_err(|e| failed(e.into()))?;
        let tx = client.transaction().await.map_err(|e| failed(e.into()))?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&advisory_key(&self.sql.table)],
        )
        .await
        .map_err(|e| failed(e.into()))?;
        tx.batch_execute(&self.sql.schema)
            .await
            .map_err(|e| failed(e.into()))?;
        tx.commit().await.map_err(|e| failed(e.into()))
    }

    /// Every record, with each unreadable one as [`Error::CorruptRecord`] in its place (rows
    /// whose user id is negative are left out), ordered by user id.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the table cannot be read at all.
    pub async fn list_all(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        let rows = self.query("list", &self.sql.list, &[]).await?;
        let mut all = Vec::with_capacity(rows.len());
        for row in &rows {
            match row
                .try_get::<_, Option<i64>>(0)
                .ok()
                .flatten()
                .and_then(|id| u64::try_from(id).ok())
            {
                Some(id) => all.push(decode(row, UserId(id))),
                None => tracing::warn!("skipping a token row whose user id is not usable"),
            }
        }
        Ok(all)
    }

    async fn client(&self, operation: &'static str) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::store(operation, e))
    }

    /// Runs `f` on a pooled connection, for at most the answer timeout. A connection that did
    /// not answer in time is taken out of the pool: it may be one that will never answer.
    async fn with_client<T, F>(&self, operation: &'static str, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, tokio_postgres::Error>,
    {
        let mut client = self.client(operation).await?;
        match tokio::time::timeout(self.answer_timeout, f(&mut client)).await {
            Ok(result) => result.map_err(|e| Error::store(operation, e)),
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err(Error::store(
                    operation,
                    format!(
                        "PostgreSQL did not answer within {:?} (answer timeout)",
                        self.answer_timeout
                    ),
                ))
            }
        }
    }

    async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.with_client(operation, async |client| {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        })
        .await
    }

    async fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.with_client(operation, async |client| {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, params).await
        })
        .await
    }

    /// Runs `f` in a transaction on a pooled connection, as [`with_client`](Self::with_client).
    async fn transaction<T, F>(&self, operation: &'static str, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, tokio_postgres::Error>,
    {
        self.with_client(operation, async |client| {
            let tx = client.transaction().await?;
            let out = f(&tx).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }
}

/// The request budget in the same database: every replica shares it. A reservation is one
/// transaction that locks the app's row in `{table}_pause` (`SELECT … FOR UPDATE`, so
/// reservations of one app take turns), drops the slots out of the window, counts the rest and
/// the other holders' waiters (one statement), inserts the grant, and records this holder's
/// waiters the grant did not cover (only then: one more statement), all on the database
/// server's clock.
impl BudgetLedger for PostgresStore {
    fn reserve<'a>(&'a self, ask: &'a SlotAsk<'a>) -> StoreFuture<'a, SlotGrant> {
        Box::pin(async move {
            let sql = &self.sql.budget;
            self.transaction("budget", async |tx| {
                tx.execute(&sql.app_row, &[&ask.app]).await?;
                let row = tx.query_one(&sql.lock_app, &[&ask.app]).await?;
                let (paused, now): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                let mine = ledger::waiting_since(ask, now);
                let window = ledger::window_millis(ask.window);
                tx.execute(&sql.prune, &[&ask.app, &now.saturating_sub(window)])
                    .await?;
                let row = tx
                    .query_one(&sql.count, &[&ask.app, &ask.holder, &now])
                    .await?;
                let (counted, oldest): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
                let others = row
                    .try_get::<_, Option<i64>>(2)?
                    .map(|oldest| {
                        Ok::<_, tokio_postgres::Error>(ledger::Others {
                            oldest,
                            count: row.try_get(3)?,
                        })
                    })
                    .transpose()?;
                let (grant, waiters) =
                    ledger::decide(ask, now, counted, oldest, Some(paused), &mine, others);
                if let Some(w) = waiters {
                    tx.execute(
                        &sql.waiters,
                        &[&ask.app, &ask.holder, &w.oldest, &w.count, &w.expires],
                    )
                    .await?;
                }
                if grant.granted > 0 {
                    let stamp = now.saturating_add(ledger::window_millis(ask.hold));
                    let count = i64::from(grant.granted);
                    tx.execute(&sql.insert, &[&ask.app, &stamp, &count]).await?;
                }
                Ok(grant)
            })
            .await
        })
    }

    fn pause<'a>(&'a self, app: &'a str, wait: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let wait = ledger::window_millis(wait);
            self.execute("budget", &self.sql.budget.pause, &[&app, &wait])
                .await
                .map(drop)
        })
    }

    fn usage<'a>(&'a self, app: &'a str, window: Duration) -> StoreFuture<'a, BudgetUsage> {
        Box::pin(async move {
            let window = ledger::window_millis(window);
            let rows = self
                .query("budget", &self.sql.budget.usage, &[&app, &window])
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| Error::store("budget", "no answer"))?;
            let used: i64 = row.try_get(0).map_err(|e| Error::store("budget", e))?;
            let paused_ms: i64 = row.try_get(1).map_err(|e| Error::store("budget", e))?;
            Ok(BudgetUsage {
                used: u32::try_from(used).unwrap_or(u32::MAX),
                paused_for: u64::try_from(paused_ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
            })
        })
    }
}

/// A stable 64-bit key for the advisory lock guarding table creation (FNV-1a).
fn advisory_key(table: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "tower-withings:".bytes().chain(table.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A `TIMESTAMPTZ` read as raw microseconds since 2000-01-01, so that no stored value (not even
/// `infinity`) can make the conversion panic.
struct PgTimestamp(i64);

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| "timestamp of the wrong length")?;
        Ok(PgTimestamp(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }
}

impl PgTimestamp {
    /// Seconds from 1970-01-01 to 2000-01-01.
    const EPOCH_2000: u64 = 946_684_800;

    fn to_system_time(&self) -> Option<SystemTime> {
        if self.0 == i64::MAX || self.0 == i64::MIN {
            return None; // 'infinity' / '-infinity'
        }
        let base = UNIX_EPOCH + Duration::from_secs(Self::EPOCH_2000);
        let offset = Duration::from_micros(self.0.unsigned_abs());
        let time = if self.0 >= 0 {
            base.checked_add(offset)
        } else {
            base.checked_sub(offset)
        }?;
        // Before 1970 is not a time this crate writes.
        time.duration_since(UNIX_EPOCH).ok().map(|_| time)
    }
}

fn decode(row: &Row, user: UserId) -> Result<StoredToken, Error> {
    fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Option<T> {
        row.try_get::<_, Option<T>>(i).ok().flatten()
    }
    let time = |i| get::<PgTimestamp>(row, i).and_then(|t| t.to_system_time());
    RawRecord {
        user_id: get::<i64>(row, 0),
        access_token: get::<String>(row, 1),
        refresh_token: get::<String>(row, 2),
        expires_at: time(3),
        scope: get::<String>(row, 4),
        needs_reauthorization: get::<bool>(row, 5),
        refreshed_at: time(6),
        format: get::<i16>(row, 7).map(i64::from),
    }
    .decode(user)
}

fn validate_time(operation: &'static str, time: SystemTime) -> Result<SystemTime, Error> {
    record::to_millis(operation, time).map(|_| time)
}

impl Backend for PostgresStore {
    async fn read(&self, user: UserId) -> Result<Option<StoredToken>, Error> {
        let id = record::user_column("load", user)?;
        let rows = self.query("load", &self.sql.load, &[&id]).await?;
        rows.first().map(|row| decode(row, user)).transpose()
    }

    /// The put or the compare-and-save statement with the token's columns, checked, as
    /// `$1`..`$7`, and the refresh token it replaces, if any, as `$8`.
    async fn save(&self, save: Save<'_>) -> Result<bool, Error> {
        let token = save.token;
        let id = record::user_column("save", token.user_id)?;
        let expires_at = validate_time("save", token.expires_at)?;
        let granted_at = validate_time("save", save.granted_at)?;
        let format = record::FORMAT as i16;
        let (access, refresh) = (token.access_token.expose(), token.refresh_token.expose());
        let spent = save.spent.map(Secret::expose);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &id,
            &access,
            &refresh,
            &expires_at,
            &token.scope,
            &granted_at,
            &format,
        ];
        let sql = match &spent {
            Some(spent) => {
                params.push(spent);
                &self.sql.compare_and_save
            }
            None => &self.sql.put,
        };
        Ok(self.execute("save", sql, &params).await? == 1)
    }

    async fn mark(&self, user: UserId, refused: &Secret) -> Result<(), Error> {
        let id = record::user_column("mark", user)?;
        self.execute("mark", &self.sql.mark, &[&id, &refused.expose()])
            .await
            .map(drop)
    }

    async fn remove(&self, user: UserId) -> Result<bool, Error> {
        let id = record::user_column("delete", user)?;
        let deleted = self.execute("delete", &self.sql.delete, &[&id]).await?;
        Ok(deleted > 0)
    }

    async fn lock(&self, user: UserId, lease: Duration) -> Result<LockAttempt, Error> {
        let id = record::user_column("lock", user)?;
        let granted = Lease::new();
        let lease_ms = record::lease_millis(lease);
        let taken = self
            .execute("lock", &self.sql.lock, &[&id, &granted.owner, &lease_ms])
            .await?;
        Ok(if taken == 1 {
            LockAttempt::Acquired(granted)
        } else {
            LockAttempt::Held
        })
    }

    async fn release(&self, user: UserId, lease: Lease) -> Result<(), Error> {
        let id = record::user_column("unlock", user)?;
        self.execute("unlock", &self.sql.unlock, &[&id, &lease.owner])
            .await
            .map(drop)
    }

    async fn records(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        self.list_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(Statements::new("withings_tokens").is_ok());
        assert!(Statements::new("t_2").is_ok());
        for bad in ["", "1abc", "a-b", "a\"; DROP TABLE x; --", &"x".repeat(57)] {
            assert!(Statements::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_never_panic() {
        for raw in [i64::MAX, i64::MIN, -946_684_800_000_001, 0, 1] {
            let _ = PgTimestamp(raw).to_system_time();
        }
        assert_eq!(PgTimestamp(i64::MAX).to_system_time(), None);
        assert_eq!(
            PgTimestamp(0).to_system_time(),
            Some(UNIX_EPOCH + Duration::from_secs(PgTimestamp::EPOCH_2000))
        );
    }
}
