//! [`SqliteStore`]: tokens in one SQLite file, shared safely by every process on the machine.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::ledger;

mod sync;

use super::backend::{Backend, Save};
use super::record::{self, RawRecord};
use super::{
    BudgetLedger, BudgetUsage, Lease, LockAttempt, SlotAsk, SlotGrant, StoreFuture, StoredToken,
};
use crate::error::Error;
use crate::secret::Secret;
use crate::token::{Token, UserId};

/// The schema version this release creates and reads (kept in table `withings_schema`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS withings_tokens (
    user_id               INTEGER PRIMARY KEY,
    access_token          TEXT    NOT NULL,
    refresh_token         TEXT    NOT NULL,
    expires_at_ms         INTEGER NOT NULL,
    scope                 TEXT    NOT NULL,
    needs_reauthorization INTEGER NOT NULL DEFAULT 0,
    refreshed_at_ms       INTEGER NOT NULL,
    format                INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS withings_refresh_leases (
    user_id       INTEGER PRIMARY KEY,
    owner         TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS withings_budget_slots (
    app      TEXT    NOT NULL,
    stamp_ms INTEGER NOT NULL,
    count    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS withings_budget_slots_by_app ON withings_budget_slots (app, stamp_ms);
CREATE TABLE IF NOT EXISTS withings_budget_pauses (
    app      TEXT    PRIMARY KEY,
    until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS withings_budget_waiters (
    app        TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    oldest_ms  INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (app, holder)
);
";

const COLUMNS: &str = "user_id, access_token, refresh_token, expires_at_ms, scope, \
                       needs_reauthorization, refreshed_at_ms, format";

/// Tokens in one SQLite file: the durable default for one machine.
///
/// * **File**: created with owner-only permissions (`0600` on Unix; the `-wal` and `-shm` files
///   SQLite adds inherit them). An existing file is used as it is, with a warning if others can
///   read it.
/// * **Durability**: WAL journal, `synchronous = FULL`, one transaction per write: a pair that
///   [`compare_and_save`](super::TokenStore::compare_and_save) reported saved survives a crash or power
///   loss.
/// * **Several processes** may open the same file. They coordinate refreshes through the
///   `withings_refresh_leases` table, written inside `BEGIN IMMEDIATE` (SQLite's write lock),
///   so exactly one process at a time holds a user's lease. A lease expires on its own (wall
///   clock, milliseconds) if its holder dies. Writers wait for each other up to the busy
///   timeout (default 5 s), then fail with [`Error::Store`], never a false success.
/// * **Threads**: each store owns one connection on its own thread; no SQLite call ever runs on
///   an async executor thread. Store operations of one instance run one after another.
/// * **Layout** (schema version 1, in `withings_schema`): table `withings_tokens` with
///   `user_id`, `access_token`, `refresh_token`, `expires_at_ms`, `scope`,
///   `needs_reauthorization` (0/1), `refreshed_at_ms`, `format` (record format, 1). Times are
///   milliseconds since the Unix epoch: **millisecond precision**. A file written by a newer
///   schema is refused rather than misread.
/// * **Bad rows** (wrong types, unknown format, empty tokens) load as
///   [`Error::CorruptRecord`] for that user only; [`list`](super::TokenStore::list) skips them with a
///   warning, [`list_all`](Self::list_all) reports them.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_withings::Error> {
/// use tower_withings::store::SqliteStore;
/// let store = SqliteStore::open("/var/lib/myapp/withings.sqlite3").await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteStore {
    worker: Arc<Worker>,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// The sync tables exist (created on first use, `sync.rs`).
    sync_ready: std::sync::atomic::AtomicBool,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.worker.path)
            .finish_non_exhaustive()
    }
}

/// Configures and opens a [`SqliteStore`].
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    busy_timeout: Duration,
}

impl SqliteStoreBuilder {
    /// How long a write waits for another connection's write lock before failing
    /// (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating if needed) the file, switches it to WAL and creates the tables.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the file cannot be created or opened, is not a SQLite database,
    /// cannot use WAL, or was written by a newer schema.
    pub async fn open(self) -> Result<SqliteStore, Error> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("tower-withings-sqlite".into())
            .spawn(move || {
                let mut conn = match setup(&self.path, self.busy_timeout) {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                // Runs until every handle to the store is gone; the connection closes here,
                // off the executor.
                for job in queue {
                    // A panicking job must not take the connection down for everyone else.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| Error::store("open", e))?;
        ready_rx
            .await
            .map_err(|_| Error::store("open", WorkerGone))??;
        Ok(SqliteStore {
            worker: Arc::new(Worker {
                jobs,
                path,
                sync_ready: Default::default(),
            }),
        })
    }
}

/// The connection thread stopped (it panicked); the store cannot be used.
#[derive(Debug)]
struct WorkerGone;

impl fmt::Display for WorkerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the SQLite connection thread stopped")
    }
}

impl std::error::Error for WorkerGone {}

fn setup(path: &Path, busy_timeout: Duration) -> Result<Connection, Error> {
    let failed = |e: &dyn fmt::Display| Error::store("open", format!("{}: {e}", path.display()));
    create_private(path).map_err(|e| failed(&e))?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(&e))?;
    conn.busy_timeout(busy_timeout).map_err(|e| failed(&e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| failed(&e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(failed(&format!(
            "cannot use write-ahead logging (journal mode stays {mode:?}); use a local filesystem"
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(|e| failed(&e))?;
    let mut conn = conn;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| failed(&e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS withings_schema (
             id      INTEGER PRIMARY KEY CHECK (id = 1),
             version INTEGER NOT NULL
         );",
    )
    .map_err(|e| failed(&e))?;
    let version: Option<i64> = tx
        .query_row(
            "SELECT version FROM withings_schema WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| failed(&e))?;
    match version {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(failed(&format!(
                "written by a newer tower-withings (schema {v}; this release reads {SCHEMA_VERSION}): upgrade"
            )));
        }
        Some(_) => tx.execute_batch(SCHEMA).map_err(|e| failed(&e))?,
        None => {
            tx.execute_batch(SCHEMA).map_err(|e| failed(&e))?;
            tx.execute(
                "INSERT INTO withings_schema (id, version) VALUES (1, ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(|e| failed(&e))?;
        }
    }
    tx.commit().map_err(|e| failed(&e))?;
    Ok(conn)
}

/// Creates the database file readable by its owner only, unless it exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{:o}", mode & 0o777),
                        "the token database is readable by other users; consider chmod 600"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default settings.
    ///
    /// # Errors
    ///
    /// See [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path).open().await
    }

    /// Starts configuring a store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.worker.path
    }

    /// Every record, with each unreadable one as [`Error::CorruptRecord`] in its place (rows
    /// whose user id itself is unusable are left out), ordered by user id.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the database cannot be read at all.
    pub async fn list_all(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        self.call("list", |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM withings_tokens ORDER BY user_id"
                ))
                .map_err(|e| Error::store("list", e))?;
            let mut rows = statement.query([]).map_err(|e| Error::store("list", e))?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(|e| Error::store("list", e))? {
                match row_user(row) {
                    Some(user) => all.push(decode(row, user)),
                    None => tracing::warn!("skipping a token row whose user id is not usable"),
                }
            }
            Ok(all)
        })
        .await
    }

    /// Runs `f` on the connection thread.
    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.worker
            .jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| Error::store(operation, WorkerGone))?;
        rx.await.map_err(|_| Error::store(operation, WorkerGone))?
    }
}

/// The user id of a row, if it is one.
fn row_user(row: &Row<'_>) -> Option<UserId> {
    match row.get_ref(0) {
        Ok(ValueRef::Integer(id)) => u64::try_from(id).ok().map(UserId),
        _ => None,
    }
}

/// Reads a row column by column, so that one bad value names its field and its user.
fn decode(row: &Row<'_>, user: UserId) -> Result<StoredToken, Error> {
    let value = |i: usize| row.get_ref(i).ok();
    let integer = |i: usize| match value(i) {
        Some(ValueRef::Integer(v)) => Some(v),
        _ => None,
    };
    let text = |i: usize| match value(i) {
        Some(ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    };
    RawRecord {
        user_id: integer(0),
        access_token: text(1),
        refresh_token: text(2),
        expires_at: integer(3).and_then(record::from_millis),
        scope: text(4),
        needs_reauthorization: match integer(5) {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        refreshed_at: integer(6).and_then(record::from_millis),
        format: integer(7),
    }
    .decode(user)
}

/// Column values for writing a pair.
struct Fields {
    user: i64,
    access: String,
    refresh: String,
    expires_at_ms: i64,
    scope: String,
    refreshed_at_ms: i64,
}

impl Fields {
    fn new(operation: &'static str, token: &Token, granted_at: SystemTime) -> Result<Self, Error> {
        Ok(Fields {
            user: record::user_column(operation, token.user_id)?,
            access: token.access_token.expose().to_owned(),
            refresh: token.refresh_token.expose().to_owned(),
            expires_at_ms: record::to_millis(operation, token.expires_at)?,
            scope: token.scope.clone(),
            refreshed_at_ms: record::to_millis(operation, granted_at)?,
        })
    }

    /// `?1`..`?7` of the put and compare-and-save statements.
    fn columns(&self) -> [&dyn rusqlite::ToSql; 7] {
        [
            &self.user,
            &self.access,
            &self.refresh,
            &self.expires_at_ms,
            &self.scope,
            &self.refreshed_at_ms,
            &record::FORMAT,
        ]
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: SQLite's write lock is taken first, so what
/// `f` reads and writes is one step for every process sharing the file.
fn immediate<T>(
    conn: &mut Connection,
    operation: &'static str,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Error::store(operation, e))?;
    let out = f(&tx)?;
    tx.commit().map_err(|e| Error::store(operation, e))?;
    Ok(out)
}

fn wall_millis() -> Result<i64, Error> {
    record::to_millis("lock", SystemTime::now())
}

/// The request budget in the same file: every process on the machine shares it. Each
/// reservation is one `BEGIN IMMEDIATE` transaction (SQLite's write lock), stamped with the
/// system clock all those processes share; the holders' waiters are rows of
/// `withings_budget_waiters`.
impl BudgetLedger for SqliteStore {
    fn reserve<'a>(&'a self, ask: &'a SlotAsk<'a>) -> StoreFuture<'a, SlotGrant> {
        let (app, want, limit, window, hold) = (
            ask.app.to_owned(),
            ask.want,
            ask.limit,
            ask.window,
            ask.hold,
        );
        let (holder, waiting) = (ask.holder.to_owned(), ask.waiting.to_vec());
        Box::pin(self.call("budget", move |conn| {
            let ask = SlotAsk {
                app: &app,
                want,
                limit,
                window,
                hold,
                holder: &holder,
                waiting: &waiting,
            };
            let failed = |e| Error::store("budget", e);
            immediate(conn, "budget", |tx| {
                let now = wall_millis()?;
                let window = ledger::window_millis(ask.window);
                tx.prepare_cached(
                    "DELETE FROM withings_budget_slots WHERE app = ?1 AND stamp_ms <= ?2",
                )
                .and_then(|mut s| s.execute(params![ask.app, now.saturating_sub(window)]))
                .map_err(failed)?;
                let (counted, oldest): (i64, Option<i64>) = tx
                    .prepare_cached(
                        "SELECT COALESCE(SUM(count), 0), MIN(stamp_ms) FROM withings_budget_slots
                     WHERE app = ?1",
                    )
                    .and_then(|mut s| s.query_row([ask.app], |r| Ok((r.get(0)?, r.get(1)?))))
                    .map_err(failed)?;
                let paused = paused_until(tx, ask.app)?;
                // Other holders' live waiters; this holder's row is replaced below.
                tx.prepare_cached(
                    "DELETE FROM withings_budget_waiters
                 WHERE app = ?1 AND (holder = ?2 OR expires_ms <= ?3)",
                )
                .and_then(|mut s| s.execute(params![ask.app, ask.holder, now]))
                .map_err(failed)?;
                let others: (Option<i64>, i64) = tx
                .prepare_cached(
                    "SELECT MIN(oldest_ms), COALESCE(SUM(count), 0) FROM withings_budget_waiters
                     WHERE app = ?1",
                )
                .and_then(|mut s| s.query_row([ask.app], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(failed)?;
                let others = others.0.map(|oldest| ledger::Others {
                    oldest,
                    count: others.1,
                });
                let mine = ledger::waiting_since(&ask, now);
                let (grant, row) =
                    ledger::decide(&ask, now, counted, oldest, paused, &mine, others);
                if let Some(row) = row {
                    tx.prepare_cached(
                    "INSERT INTO withings_budget_waiters (app, holder, oldest_ms, count, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![ask.app, ask.holder, row.oldest, row.count, row.expires])
                })
                .map_err(failed)?;
                }
                if grant.granted > 0 {
                    let stamp = now.saturating_add(ledger::window_millis(ask.hold));
                    tx.prepare_cached(
                    "INSERT INTO withings_budget_slots (app, stamp_ms, count) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![ask.app, stamp, grant.granted]))
                .map_err(failed)?;
                }
                Ok(grant)
            })
        }))
    }

    fn pause<'a>(&'a self, app: &'a str, wait: Duration) -> StoreFuture<'a, ()> {
        let app = app.to_owned();
        Box::pin(self.call("budget", move |conn| {
            let until = wall_millis()?.saturating_add(ledger::window_millis(wait));
            conn.prepare_cached(
                "INSERT INTO withings_budget_pauses (app, until_ms) VALUES (?1, ?2)
                 ON CONFLICT (app) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms)",
            )
            .and_then(|mut s| s.execute(params![app, until]))
            .map_err(|e| Error::store("budget", e))
            .map(drop)
        }))
    }

    fn usage<'a>(&'a self, app: &'a str, window: Duration) -> StoreFuture<'a, BudgetUsage> {
        let app = app.to_owned();
        Box::pin(self.call("budget", move |conn| {
            let now = wall_millis()?;
            let since = now.saturating_sub(ledger::window_millis(window));
            let used: i64 = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(count), 0) FROM withings_budget_slots
                     WHERE app = ?1 AND stamp_ms > ?2",
                )
                .and_then(|mut s| s.query_row(params![app, since], |r| r.get(0)))
                .map_err(|e| Error::store("budget", e))?;
            let paused = paused_until(conn, &app)?.filter(|until| *until > now);
            Ok(BudgetUsage {
                used: u32::try_from(used).unwrap_or(u32::MAX),
                paused_for: paused.map(|until| Duration::from_millis((until - now) as u64)),
            })
        }))
    }
}

fn paused_until(conn: &Connection, app: &str) -> Result<Option<i64>, Error> {
    conn.prepare_cached("SELECT until_ms FROM withings_budget_pauses WHERE app = ?1")
        .and_then(|mut s| s.query_row([app], |r| r.get(0)).optional())
        .map_err(|e| Error::store("budget", e))
}

impl Backend for SqliteStore {
    async fn read(&self, user: UserId) -> Result<Option<StoredToken>, Error> {
        let id = record::user_column("load", user)?;
        self.call("load", move |conn| {
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM withings_tokens WHERE user_id = ?1"
                ))
                .map_err(|e| Error::store("load", e))?;
            let mut rows = statement.query([id]).map_err(|e| Error::store("load", e))?;
            match rows.next().map_err(|e| Error::store("load", e))? {
                Some(row) => decode(row, user).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// An upsert, or, over a spent refresh token, an update of the row still holding it (`?8`).
    async fn save(&self, save: Save<'_>) -> Result<bool, Error> {
        let f = Fields::new("save", save.token, save.granted_at)?;
        let spent = save.spent.map(|spent| spent.expose().to_owned());
        self.call("save", move |conn| {
            let sql: Cow<'static, str> = match spent {
                Some(_) => Cow::Borrowed(
                    "UPDATE withings_tokens SET
                                access_token = ?2,
                                refresh_token = ?3,
                                expires_at_ms = ?4,
                                scope = ?5,
                                needs_reauthorization = 0,
                                refreshed_at_ms = ?6,
                                format = ?7
                            WHERE user_id = ?1 AND refresh_token = ?8",
                ),
                None => Cow::Owned(format!(
                    "INSERT INTO withings_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)
                     ON CONFLICT (user_id) DO UPDATE SET
                         access_token = excluded.access_token,
                         refresh_token = excluded.refresh_token,
                         expires_at_ms = excluded.expires_at_ms,
                         scope = excluded.scope,
                         needs_reauthorization = 0,
                         refreshed_at_ms = excluded.refreshed_at_ms,
                         format = excluded.format"
                )),
            };
            let spent = spent.as_ref().map(|spent| spent as &dyn rusqlite::ToSql);
            let values = f.columns().into_iter().chain(spent);
            conn.prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                .map(|changed| changed == 1)
                .map_err(|e| Error::store("save", e))
        })
        .await
    }

    async fn mark(&self, user: UserId, refused: &Secret) -> Result<(), Error> {
        let id = record::user_column("mark", user)?;
        let refused = refused.expose().to_owned();
        self.call("mark", move |conn| {
            conn.prepare_cached(
                "UPDATE withings_tokens SET needs_reauthorization = 1
                 WHERE user_id = ?1 AND refresh_token = ?2",
            )
            .and_then(|mut s| s.execute(params![id, refused]))
            .map_err(|e| Error::store("mark", e))?;
            Ok(())
        })
        .await
    }

    async fn remove(&self, user: UserId) -> Result<bool, Error> {
        let id = record::user_column("delete", user)?;
        self.call("delete", move |conn| {
            conn.prepare_cached("DELETE FROM withings_tokens WHERE user_id = ?1")
                .and_then(|mut s| s.execute(params![id]))
                .map(|deleted| deleted > 0)
                .map_err(|e| Error::store("delete", e))
        })
        .await
    }

    async fn lock(&self, user: UserId, lease: Duration) -> Result<LockAttempt, Error> {
        let id = record::user_column("lock", user)?;
        let lease_ms = record::lease_millis(lease);
        self.call("lock", move |conn| {
            let granted = Lease::new();
            let taken = immediate(conn, "lock", |tx| {
                let now = wall_millis()?;
                tx.prepare_cached(
                    "INSERT INTO withings_refresh_leases (user_id, owner, expires_at_ms)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE SET
                         owner = excluded.owner,
                         expires_at_ms = excluded.expires_at_ms
                     WHERE withings_refresh_leases.expires_at_ms <= ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        granted.owner,
                        now.saturating_add(lease_ms),
                        now
                    ])
                })
                .map_err(|e| Error::store("lock", e))
            })?;
            Ok(if taken == 1 {
                LockAttempt::Acquired(granted)
            } else {
                LockAttempt::Held
            })
        })
        .await
    }

    async fn release(&self, user: UserId, lease: Lease) -> Result<(), Error> {
        let id = record::user_column("unlock", user)?;
        self.call("unlock", move |conn| {
            conn.prepare_cached(
                "DELETE FROM withings_refresh_leases WHERE user_id = ?1 AND owner = ?2",
            )
            .and_then(|mut s| s.execute(params![id, lease.owner]))
            .map_err(|e| Error::store("unlock", e))?;
            Ok(())
        })
        .await
    }

    async fn records(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        self.list_all().await
    }
}
