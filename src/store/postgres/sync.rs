//! The sync state of a [`PostgresStore`], in the same database as the tokens: tables
//! `<table>_sync_c` (per (user, stream): cursor, lease, fence, backfill, sweep), `_sync_v`
//! (versions delivered), `_sync_i` (inbox), `_sync_x` (stopped users), created on first use.
//! Lease expiry is measured by the database server's clock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::Row;

use super::{PostgresStore, advisory_key};
use crate::error::Error;
use crate::store::record;
use crate::store::sync_backend::{Key, SyncBackend};
use crate::sync::{Commit, InboxEntry, StreamState, SyncLease, SyncStream, VersionEntry};
use crate::token::UserId;

const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// The sync's SQL, with its table names filled in: `<table>_sync_c` (per (user, stream)),
/// `_sync_v` (versions), `_sync_i` (inbox), `_sync_x` (stopped users).
pub(super) struct SyncSql {
    schema: String,
    /// One `DELETE … WHERE user_id = $1` per table.
    forget: [String; 4],
    lease_row: String,
    lease_take: String,
    release: String,
    load: String,
    commit: String,
    commit_versions: String,
    versions: String,
    known: String,
    inbox_push: String,
    inbox: String,
    inbox_ack: String,
    inbox_depth: String,
    stop: String,
    stop_inbox: String,
    stopped: String,
    resume: String,
    streams: String,
}

impl SyncSql {
    pub(super) fn new(table: &str) -> SyncSql {
        let [c, v, i, x] = ["c", "v", "i", "x"].map(|t| format!("\"{table}_sync_{t}\""));
        SyncSql {
            schema: format!(
                "CREATE TABLE IF NOT EXISTS {c} (
    user_id          BIGINT NOT NULL,
    stream           TEXT   NOT NULL,
    cursor           BIGINT,
    backfill_next    BIGINT,
    backfill_horizon BIGINT,
    swept_at         BIGINT,
    fence            BIGINT NOT NULL DEFAULT 0,
    owner            TEXT,
    lease_until_ms   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, stream)
);
CREATE TABLE IF NOT EXISTS {v} (
    user_id BIGINT  NOT NULL,
    stream  TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version BIGINT  NOT NULL,
    deleted BOOLEAN NOT NULL,
    at      BIGINT,
    PRIMARY KEY (user_id, stream, id)
);
CREATE TABLE IF NOT EXISTS {i} (
    user_id  BIGINT NOT NULL,
    stream   TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    count    BIGINT NOT NULL,
    first_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream)
);
CREATE TABLE IF NOT EXISTS {x} (
    user_id BIGINT PRIMARY KEY,
    reason  TEXT   NOT NULL
);"
            ),
            forget: [&c, &v, &i, &x].map(|t| format!("DELETE FROM {t} WHERE user_id = $1")),
            lease_row: format!(
                "INSERT INTO {c} (user_id, stream) VALUES ($1, $2)
                         ON CONFLICT (user_id, stream) DO NOTHING"
            ),
            lease_take: format!(
                "UPDATE {c} SET fence = fence + 1, owner = $3,
                                 lease_until_ms = {NOW_MS} + $4
                             WHERE user_id = $1 AND stream = $2
                               AND (owner IS NULL OR lease_until_ms <= {NOW_MS})
                             RETURNING fence"
            ),
            release: format!(
                "UPDATE {c} SET owner = NULL, lease_until_ms = 0
                 WHERE user_id = $1 AND stream = $2 AND owner = $3"
            ),
            load: format!(
                "SELECT {STATE_COLUMNS} FROM {c} WHERE user_id = $1 AND stream = $2"
            ),
            commit: format!(
                "UPDATE {c} SET
                             lease_until_ms = {NOW_MS} + $5,
                             cursor = CASE WHEN $6::BIGINT IS NULL THEN cursor
                                           WHEN cursor IS NULL OR cursor < $6 THEN $6
                                           ELSE cursor END,
                             backfill_next = COALESCE($7, backfill_next),
                             backfill_horizon = COALESCE($8, backfill_horizon),
                             swept_at = COALESCE($9, swept_at)
                         WHERE user_id = $1 AND stream = $2 AND owner = $3 AND fence = $4"
            ),
            commit_versions: format!(
                "INSERT INTO {v} AS old (user_id, stream, id, version, deleted, at)
                         SELECT $1, $2, * FROM UNNEST($3::TEXT[], $4::BIGINT[], $5::BOOLEAN[], $6::BIGINT[])
                         ON CONFLICT (user_id, stream, id) DO UPDATE SET
                             version = excluded.version,
                             deleted = excluded.deleted,
                             at = COALESCE(excluded.at, old.at)
                         WHERE (excluded.version, excluded.deleted) > (old.version, old.deleted)"
            ),
            versions: format!(
                "SELECT id, version, deleted, at FROM {v}
                     WHERE user_id = $1 AND stream = $2 AND id = ANY($3)"
            ),
            known: format!(
                "SELECT id, version, deleted, at FROM {v}
                     WHERE user_id = $1 AND stream = $2 AND NOT deleted
                       AND at >= $3 AND at <= $4 ORDER BY id"
            ),
            inbox_push: format!(
                "INSERT INTO {i} AS old (user_id, stream, seq, count, first_ms)
                 VALUES ($1, $2, 1, 1, $3)
                 ON CONFLICT (user_id, stream) DO UPDATE SET
                     seq = old.seq + 1, count = old.count + 1"
            ),
            inbox: format!(
                "SELECT user_id, stream, seq, count, first_ms FROM {i}
                     ORDER BY first_ms, user_id, stream LIMIT $1"
            ),
            inbox_ack: format!(
                "DELETE FROM {i} WHERE user_id = $1 AND stream = $2 AND seq = $3"
            ),
            inbox_depth: format!(
                "SELECT COUNT(*) FROM {i}"
            ),
            stop: format!(
                "INSERT INTO {x} (user_id, reason) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason"
            ),
            stop_inbox: format!(
                "DELETE FROM {i} WHERE user_id = $1"
            ),
            stopped: format!(
                "SELECT reason FROM {x} WHERE user_id = $1"
            ),
            resume: format!(
                "DELETE FROM {x} WHERE user_id = $1"
            ),
            streams: format!(
                "SELECT {STATE_COLUMNS}, stream FROM {c} WHERE user_id = $1"
            ),
        }
    }
}

impl PostgresStore {
    /// Creates the sync tables once per store (under the same advisory lock as the others).
    async fn sync_ready(&self) -> Result<&SyncSql, Error> {
        let n = &self.sql.sync;
        if self.sql.sync_ready.load(Ordering::Acquire) {
            return Ok(n);
        }
        let key = advisory_key(&format!("{}_sync", self.sql.table));
        self.transaction("sync tables", async |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await?;
            tx.batch_execute(&n.schema).await?;
            Ok(())
        })
        .await?;
        self.sql.sync_ready.store(true, Ordering::Release);
        Ok(n)
    }
}

/// A row of `STATE_COLUMNS`.
fn state_row(row: &Row) -> Result<StreamState, tokio_postgres::Error> {
    let backfill = (row.try_get(1)?, row.try_get(2)?);
    let (cursor, swept_at) = (row.try_get(0)?, row.try_get(3)?);
    Ok(StreamState::stored(
        cursor,
        backfill,
        swept_at,
        row.try_get(4)?,
    ))
}

const STATE_COLUMNS: &str = "cursor, backfill_next, backfill_horizon, swept_at, fence";

fn millis(d: Duration) -> i64 {
    record::lease_millis(d)
}

impl SyncBackend for PostgresStore {
    async fn lease(&self, key: Key, ttl: Duration) -> Result<Option<SyncLease>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync lease", user)?;
        let n = self.sync_ready().await?;
        let owner = SyncLease::new_owner();
        let ttl = millis(ttl);
        let name = stream.name();
        let fence = self
            .transaction("sync lease", async |tx| {
                tx.execute(&n.lease_row, &[&id, &name]).await?;
                let row = tx
                    .query_opt(&n.lease_take, &[&id, &name, &owner, &ttl])
                    .await?;
                row.map(|r| r.try_get::<_, i64>(0)).transpose()
            })
            .await?;
        Ok(fence.map(|fence| SyncLease {
            user,
            stream,
            owner,
            fence: u64::try_from(fence).unwrap_or(0),
        }))
    }

    async fn release(&self, lease: &SyncLease) -> Result<(), Error> {
        let id = record::user_column("sync release", lease.user)?;
        let n = self.sync_ready().await?;
        self.execute(
            "sync release",
            &n.release,
            &[&id, &lease.stream.name(), &lease.owner],
        )
        .await?;
        Ok(())
    }

    async fn load(&self, key: Key) -> Result<StreamState, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync load", user)?;
        let n = self.sync_ready().await?;
        let rows = self
            .query("sync load", &n.load, &[&id, &stream.name()])
            .await?;
        match rows.first() {
            Some(row) => state_row(row).map_err(|e| Error::store("sync load", e)),
            None => Ok(StreamState::default()),
        }
    }

    async fn commit(&self, lease: &SyncLease, ttl: Duration, c: Commit<'_>) -> Result<bool, Error> {
        let id = record::user_column("sync commit", lease.user)?;
        let n = self.sync_ready().await?;
        let ttl = millis(ttl);
        let name = lease.stream.name();
        let fence = i64::try_from(lease.fence).unwrap_or(i64::MAX);
        let next = c.backfill.map(|b| b.next_end);
        let horizon = c.backfill.map(|b| b.horizon);
        let ids: Vec<&str> = c.versions.iter().map(|v| v.id.as_str()).collect();
        let versions: Vec<i64> = c.versions.iter().map(|v| v.version).collect();
        let deleted: Vec<bool> = c.versions.iter().map(|v| v.deleted).collect();
        let ats: Vec<Option<i64>> = c.versions.iter().map(|v| v.at).collect();
        self.transaction("sync commit", async |tx| {
            let ours = tx
                .execute(
                    &n.commit,
                    &[
                        &id,
                        &name,
                        &lease.owner,
                        &fence,
                        &ttl,
                        &c.cursor,
                        &next,
                        &horizon,
                        &c.swept_at,
                    ],
                )
                .await?;
            if ours != 1 {
                return Ok(false);
            }
            if !ids.is_empty() {
                tx.execute(
                    &n.commit_versions,
                    &[&id, &name, &ids, &versions, &deleted, &ats],
                )
                .await?;
            }
            Ok(true)
        })
        .await
    }

    async fn versions(&self, key: Key, ids: &[String]) -> Result<Vec<Option<VersionEntry>>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync versions", user)?;
        let n = self.sync_ready().await?;
        let rows = self
            .query("sync versions", &n.versions, &[&id, &stream.name(), &ids])
            .await?;
        let mut found = std::collections::HashMap::new();
        for row in rows {
            let entry = entry_row(&row).map_err(|e| Error::store("sync versions", e))?;
            found.insert(entry.id.clone(), entry);
        }
        Ok(ids.iter().map(|i| found.remove(i)).collect())
    }

    async fn known(&self, key: Key, from: i64, to: i64) -> Result<Vec<VersionEntry>, Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync known", user)?;
        let n = self.sync_ready().await?;
        let rows = self
            .query("sync known", &n.known, &[&id, &stream.name(), &from, &to])
            .await?;
        rows.iter()
            .map(|r| entry_row(r).map_err(|e| Error::store("sync known", e)))
            .collect()
    }

    async fn inbox_push(&self, key: Key, now_ms: i64) -> Result<(), Error> {
        let Key { user, stream } = key;
        let id = record::user_column("sync inbox", user)?;
        let n = self.sync_ready().await?;
        self.execute("sync inbox", &n.inbox_push, &[&id, &stream.name(), &now_ms])
            .await?;
        Ok(())
    }

    async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>, Error> {
        let n = self.sync_ready().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query("sync inbox", &n.inbox, &[&limit]).await?;
        let mut all = Vec::new();
        for row in rows {
            let entry = InboxEntry::from_row(|i| row.try_get(i), |i| row.try_get(i));
            all.extend(entry.map_err(|e| Error::store("sync inbox", e))?);
        }
        Ok(all)
    }

    async fn inbox_ack(&self, entry: &InboxEntry) -> Result<bool, Error> {
        let id = record::user_column("sync inbox", entry.user)?;
        let n = self.sync_ready().await?;
        let seq = i64::try_from(entry.seq).unwrap_or(-1);
        let gone = self
            .execute(
                "sync inbox",
                &n.inbox_ack,
                &[&id, &entry.stream.name(), &seq],
            )
            .await?;
        Ok(gone == 1)
    }

    async fn inbox_depth(&self) -> Result<u64, Error> {
        let n = self.sync_ready().await?;
        let rows = self.query("sync inbox", &n.inbox_depth, &[]).await?;
        let count: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| Error::store("sync inbox", e))?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn stop(&self, user: UserId, reason: &str) -> Result<(), Error> {
        let id = record::user_column("sync stop", user)?;
        let n = self.sync_ready().await?;
        self.transaction("sync stop", async |tx| {
            tx.execute(&n.stop, &[&id, &reason]).await?;
            tx.execute(&n.stop_inbox, &[&id]).await?;
            Ok(())
        })
        .await
    }

    async fn stopped(&self, user: UserId) -> Result<Option<String>, Error> {
        let id = record::user_column("sync stop", user)?;
        let n = self.sync_ready().await?;
        let rows = self.query("sync stop", &n.stopped, &[&id]).await?;
        rows.first()
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| Error::store("sync stop", e))
    }

    async fn resume(&self, user: UserId) -> Result<bool, Error> {
        let id = record::user_column("sync resume", user)?;
        let n = self.sync_ready().await?;
        let gone = self.execute("sync resume", &n.resume, &[&id]).await?;
        Ok(gone == 1)
    }

    async fn forget(&self, user: UserId) -> Result<(), Error> {
        let id = record::user_column("sync forget", user)?;
        let n = self.sync_ready().await?;
        self.transaction("sync forget", async |tx| {
            for forget in &n.forget {
                tx.execute(forget, &[&id]).await?;
            }
            Ok(())
        })
        .await
    }

    async fn streams(&self, user: UserId) -> Result<Vec<(SyncStream, StreamState)>, Error> {
        let id = record::user_column("sync streams", user)?;
        let n = self.sync_ready().await?;
        let rows = self.query("sync streams", &n.streams, &[&id]).await?;
        let mut all = Vec::new();
        for row in rows {
            let name: String = row
                .try_get(5)
                .map_err(|e| Error::store("sync streams", e))?;
            let state = state_row(&row).map_err(|e| Error::store("sync streams", e))?;
            if let Ok(stream) = name.parse::<SyncStream>() {
                all.push((stream, state));
            }
        }
        all.sort_by_key(|(s, _)| *s);
        Ok(all)
    }
}

fn entry_row(row: &Row) -> Result<VersionEntry, tokio_postgres::Error> {
    Ok(VersionEntry {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        deleted: row.try_get(2)?,
        at: row.try_get(3)?,
    })
}
