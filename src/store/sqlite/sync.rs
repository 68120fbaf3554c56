//! The sync state of a [`SqliteStore`], in the same file as the tokens. Tables are created on
//! first use; every write is one `BEGIN IMMEDIATE` transaction.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, immediate, wall_millis};
use crate::error::Error;
use crate::store::record;
use crate::store::sync_backend::{Key, SyncBackend};
use crate::sync::{Commit, InboxEntry, StreamState, SyncLease, SyncStream, VersionEntry};
use crate::token::UserId;

const SYNC_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS withings_sync_streams (
    user_id          INTEGER NOT NULL,
    stream           TEXT    NOT NULL,
    cursor           INTEGER,
    backfill_next    INTEGER,
    backfill_horizon INTEGER,
    swept_at         INTEGER,
    fence            INTEGER NOT NULL DEFAULT 0,
    owner            TEXT,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, stream)
);
CREATE TABLE IF NOT EXISTS withings_sync_versions (
    user_id INTEGER NOT NULL,
    stream  TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    at      INTEGER,
    PRIMARY KEY (user_id, stream, id)
);
CREATE INDEX IF NOT EXISTS withings_sync_versions_by_at ON withings_sync_versions (user_id, stream, at);
CREATE TABLE IF NOT EXISTS withings_sync_inbox (
    user_id  INTEGER NOT NULL,
    stream   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, stream)
);
CREATE TABLE IF NOT EXISTS withings_sync_stopped (
    user_id INTEGER PRIMARY KEY,
    reason  TEXT    NOT NULL
);
";

fn failed(operation: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::store(operation, e)
}

fn stream_of(name: &str) -> Option<SyncStream> {
    name.parse().ok()
}

/// A row of `STATE_COLUMNS`.
fn state_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StreamState> {
    let backfill = (row.get(1)?, row.get(2)?);
    let (cursor, swept_at) = (row.get(0)?, row.get(3)?);
    Ok(StreamState::stored(cursor, backfill, swept_at, row.get(4)?))
}

const STATE_COLUMNS: &str = "cursor, backfill_next, backfill_horizon, swept_at, fence";

impl SqliteStore {
    /// Runs `f` on the connection thread, creating the sync tables first if needed.
    async fn sync_call<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let ready = self.worker.sync_ready.load(Ordering::Acquire);
        let result = self
            .call(operation, move |conn| {
                if !ready {
                    conn.execute_batch(SYNC_SCHEMA).map_err(failed(operation))?;
                }
                f(conn)
            })
            .await;
        if result.is_ok() {
            self.worker.sync_ready.store(true, Ordering::Release);
        }
        result
    }
}

impl SyncBackend for SqliteStore {
    async fn lease(&self, key: Key, ttl: Duration) -> Result<Option<SyncLease>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync lease", user)?;
        let ttl = record::lease_millis(ttl);
        self.sync_call("sync lease", move |conn| {
            immediate(conn, "sync lease", |tx| {
                let now = wall_millis()?;
                let owner = SyncLease::new_owner();
                tx.execute(
                    "INSERT INTO withings_sync_streams (user_id, stream) VALUES (?1, ?2)
                     ON CONFLICT (user_id, stream) DO NOTHING",
                    params![id, stream.name()],
                )
                .map_err(failed("sync lease"))?;
                let taken = tx
                    .execute(
                        "UPDATE withings_sync_streams
                         SET fence = fence + 1, owner = ?3, lease_until_ms = ?4
                         WHERE user_id = ?1 AND stream = ?2
                           AND (owner IS NULL OR lease_until_ms <= ?5)",
                        params![id, stream.name(), owner, now.saturating_add(ttl), now],
                    )
                    .map_err(failed("sync lease"))?;
                if taken != 1 {
                    return Ok(None);
                }
                let fence: i64 = tx
                    .query_row(
                        "SELECT fence FROM withings_sync_streams WHERE user_id = ?1 AND stream = ?2",
                        params![id, stream.name()],
                        |r| r.get(0),
                    )
                    .map_err(failed("sync lease"))?;
                Ok(Some(SyncLease {
                    user,
                    stream,
                    owner,
                    fence: u64::try_from(fence).unwrap_or(0),
                }))
            })
        })
        .await
    }

    async fn release(&self, lease: &SyncLease) -> Result<(), Error> {
        let id = record::user_column("sync release", lease.user)?;
        let (stream, owner) = (lease.stream.name(), lease.owner.clone());
        self.sync_call("sync release", move |conn| {
            conn.execute(
                "UPDATE withings_sync_streams SET owner = NULL, lease_until_ms = 0
                 WHERE user_id = ?1 AND stream = ?2 AND owner = ?3",
                params![id, stream, owner],
            )
            .map_err(failed("sync release"))?;
            Ok(())
        })
        .await
    }

    async fn load(&self, key: Key) -> Result<StreamState, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync load", user)?;
        self.sync_call("sync load", move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {STATE_COLUMNS} FROM withings_sync_streams WHERE user_id = ?1 AND stream = ?2"
                    ),
                    params![id, stream.name()],
                    state_row,
                )
                .optional()
                .map_err(failed("sync load"))?
                .unwrap_or_default())
        })
        .await
    }

    async fn commit(&self, lease: &SyncLease, ttl: Duration, c: Commit<'_>) -> Result<bool, Error> {
        let id = record::user_column("sync commit", lease.user)?;
        let ttl = record::lease_millis(ttl);
        let stream = lease.stream.name();
        let owner = lease.owner.clone();
        let fence = i64::try_from(lease.fence).unwrap_or(i64::MAX);
        let (cursor, backfill, swept_at) = (c.cursor, c.backfill, c.swept_at);
        let versions = c.versions.to_vec();
        self.sync_call("sync commit", move |conn| {
            immediate(conn, "sync commit", |tx| {
                let now = wall_millis()?;
                let ours = tx
                    .execute(
                        "UPDATE withings_sync_streams SET
                             lease_until_ms = ?5,
                             cursor = CASE WHEN ?6 IS NULL THEN cursor
                                           WHEN cursor IS NULL OR cursor < ?6 THEN ?6
                                           ELSE cursor END,
                             backfill_next = COALESCE(?7, backfill_next),
                             backfill_horizon = COALESCE(?8, backfill_horizon),
                             swept_at = COALESCE(?9, swept_at)
                         WHERE user_id = ?1 AND stream = ?2 AND owner = ?3 AND fence = ?4",
                        params![
                            id,
                            stream,
                            owner,
                            fence,
                            now.saturating_add(ttl),
                            cursor,
                            backfill.map(|b| b.next_end),
                            backfill.map(|b| b.horizon),
                            swept_at
                        ],
                    )
                    .map_err(failed("sync commit"))?;
                if ours != 1 {
                    return Ok(false);
                }
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO withings_sync_versions (user_id, stream, id, version, deleted, at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (user_id, stream, id) DO UPDATE SET
                             version = excluded.version,
                             deleted = excluded.deleted,
                             at = COALESCE(excluded.at, withings_sync_versions.at)
                         WHERE excluded.version > withings_sync_versions.version
                            OR (excluded.version = withings_sync_versions.version
                                AND excluded.deleted > withings_sync_versions.deleted)",
                    )
                    .map_err(failed("sync commit"))?;
                for v in &versions {
                    upsert
                        .execute(params![id, stream, v.id, v.version, v.deleted, v.at])
                        .map_err(failed("sync commit"))?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn versions(&self, key: Key, ids: &[String]) -> Result<Vec<Option<VersionEntry>>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync versions", user)?;
        let ids = ids.to_vec();
        self.sync_call("sync versions", move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT version, deleted, at FROM withings_sync_versions
                     WHERE user_id = ?1 AND stream = ?2 AND id = ?3",
                )
                .map_err(failed("sync versions"))?;
            ids.into_iter()
                .map(|key| {
                    select
                        .query_row(params![id, stream.name(), key], |r| {
                            Ok(VersionEntry {
                                id: key.clone(),
                                version: r.get(0)?,
                                deleted: r.get(1)?,
                                at: r.get(2)?,
                            })
                        })
                        .optional()
                        .map_err(failed("sync versions"))
                })
                .collect()
        })
        .await
    }

    async fn known(&self, key: Key, from: i64, to: i64) -> Result<Vec<VersionEntry>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync known", user)?;
        self.sync_call("sync known", move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, version, deleted, at FROM withings_sync_versions
                     WHERE user_id = ?1 AND stream = ?2 AND deleted = 0
                       AND at >= ?3 AND at <= ?4 ORDER BY id",
                )
                .map_err(failed("sync known"))?;
            let rows = select
                .query_map(params![id, stream.name(), from, to], |r| {
                    Ok(VersionEntry {
                        id: r.get(0)?,
                        version: r.get(1)?,
                        deleted: r.get(2)?,
                        at: r.get(3)?,
                    })
                })
                .map_err(failed("sync known"))?;
            rows.collect::<Result<_, _>>().map_err(failed("sync known"))
        })
        .await
    }

    async fn inbox_push(&self, key: Key, now_ms: i64) -> Result<(), Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync inbox", user)?;
        self.sync_call("sync inbox", move |conn| {
            conn.execute(
                "INSERT INTO withings_sync_inbox (user_id, stream, seq, count, first_ms)
                 VALUES (?1, ?2, 1, 1, ?3)
                 ON CONFLICT (user_id, stream) DO UPDATE SET
                     seq = withings_sync_inbox.seq + 1,
                     count = withings_sync_inbox.count + 1",
                params![id, stream.name(), now_ms],
            )
            .map_err(failed("sync inbox"))?;
            Ok(())
        })
        .await
    }

    async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.sync_call("sync inbox", move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT user_id, stream, seq, count, first_ms FROM withings_sync_inbox
                     ORDER BY first_ms, user_id, stream LIMIT ?1",
                )
                .map_err(failed("sync inbox"))?;
            let rows = select
                .query_map(params![limit], |r| {
                    InboxEntry::from_row(|i| r.get(i), |i| r.get(i))
                })
                .map_err(failed("sync inbox"))?;
            let mut all = Vec::new();
            for entry in rows {
                all.extend(entry.map_err(failed("sync inbox"))?);
            }
            Ok(all)
        })
        .await
    }

    async fn inbox_ack(&self, entry: &InboxEntry) -> Result<bool, Error> {
        let id = record::user_column("sync inbox", entry.user)?;
        let (stream, seq) = (entry.stream.name(), i64::try_from(entry.seq).unwrap_or(-1));
        self.sync_call("sync inbox", move |conn| {
            let gone = conn
                .execute(
                    "DELETE FROM withings_sync_inbox WHERE user_id = ?1 AND stream = ?2 AND seq = ?3",
                    params![id, stream, seq],
                )
                .map_err(failed("sync inbox"))?;
            Ok(gone == 1)
        })
        .await
    }

    async fn inbox_depth(&self) -> Result<u64, Error> {
        self.sync_call("sync inbox", move |conn| {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM withings_sync_inbox", [], |r| r.get(0))
                .map_err(failed("sync inbox"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn stop(&self, user: UserId, reason: &str) -> Result<(), Error> {
        let id = record::user_column("sync stop", user)?;
        let reason = reason.to_owned();
        self.sync_call("sync stop", move |conn| {
            immediate(conn, "sync stop", |tx| {
                tx.execute(
                    "INSERT INTO withings_sync_stopped (user_id, reason) VALUES (?1, ?2)
                     ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason",
                    params![id, reason],
                )
                .and_then(|_| {
                    tx.execute("DELETE FROM withings_sync_inbox WHERE user_id = ?1", [id])
                })
                .map_err(failed("sync stop"))?;
                Ok(())
            })
        })
        .await
    }

    async fn stopped(&self, user: UserId) -> Result<Option<String>, Error> {
        let id = record::user_column("sync stop", user)?;
        self.sync_call("sync stop", move |conn| {
            conn.query_row(
                "SELECT reason FROM withings_sync_stopped WHERE user_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed("sync stop"))
        })
        .await
    }

    async fn resume(&self, user: UserId) -> Result<bool, Error> {
        let id = record::user_column("sync resume", user)?;
        self.sync_call("sync resume", move |conn| {
            let n = conn
                .execute("DELETE FROM withings_sync_stopped WHERE user_id = ?1", [id])
                .map_err(failed("sync resume"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn forget(&self, user: UserId) -> Result<(), Error> {
        let id = record::user_column("sync forget", user)?;
        self.sync_call("sync forget", move |conn| {
            immediate(conn, "sync forget", |tx| {
                for table in [
                    "withings_sync_streams",
                    "withings_sync_versions",
                    "withings_sync_inbox",
                    "withings_sync_stopped",
                ] {
                    tx.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [id])
                        .map_err(failed("sync forget"))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn streams(&self, user: UserId) -> Result<Vec<(SyncStream, StreamState)>, Error> {
        let id = record::user_column("sync streams", user)?;
        self.sync_call("sync streams", move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {STATE_COLUMNS}, stream FROM withings_sync_streams
                     WHERE user_id = ?1 ORDER BY stream"
                ))
                .map_err(failed("sync streams"))?;
            let rows = select
                .query_map([id], |r| Ok((r.get::<_, String>(5)?, state_row(r)?)))
                .map_err(failed("sync streams"))?;
            let mut all = Vec::new();
            for row in rows {
                let (name, state) = row.map_err(failed("sync streams"))?;
                if let Some(stream) = stream_of(&name) {
                    all.push((stream, state));
                }
            }
            all.sort_by_key(|(s, _)| *s);
            Ok(all)
        })
        .await
    }
}
