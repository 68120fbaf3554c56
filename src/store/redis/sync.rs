//! The sync state of a [`RedisStore`], under the same prefix as the tokens:
//!
//! | key | type | content |
//! |---|---|---|
//! | `<prefix>sync:s:<user>:<stream>` | hash | `cursor`, `bn`/`bh` (backfill next end, horizon), `swept`, `fence`, `owner`, `lu` (lease until, server ms) |
//! | `<prefix>sync:v:<user>:<stream>` | hash | record id → `version:deleted:at` |
//! | `<prefix>sync:ie:<user>:<stream>` | hash | a pending notification: `seq`, `count`, `first` (ms) |
//! | `<prefix>sync:inbox` | sorted set | `<user>:<stream>` scored by `first` |
//! | `<prefix>sync:stopped` | hash | user → why their sync stopped |
//!
//! Leases, commits and inbox acks are Lua scripts (atomic); lease expiry uses the server's
//! `TIME`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisStore;
use crate::error::Error;
use crate::store::record;
use crate::store::sync_backend::{Key, SyncBackend};
use crate::sync::{Commit, InboxEntry, StreamState, SyncLease, SyncStream, VersionEntry};
use crate::token::UserId;

const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local owner = redis.call('HGET', KEYS[1], 'owner')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lu') or '0')
if owner and owner ~= '' and lu > now then return -1 end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lu', now + tonumber(ARGV[2]))
return fence"
    ))
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', '', 'lu', 0)
end
return 1",
    )
});

static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] then
  return 0
end
{NOW}
redis.call('HSET', KEYS[1], 'lu', now + tonumber(ARGV[3]))
if ARGV[4] ~= '' then
  local c = redis.call('HGET', KEYS[1], 'cursor')
  if not c or tonumber(c) < tonumber(ARGV[4]) then redis.call('HSET', KEYS[1], 'cursor', ARGV[4]) end
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'bn', ARGV[5], 'bh', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'swept', ARGV[7]) end
for i = 8, #ARGV, 4 do
  local id, v, d, at = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local old = redis.call('HGET', KEYS[2], id)
  local write = true
  if old then
    local ov, od, oat = string.match(old, '^(-?%d+):(%d):(.*)$')
    if ov then
      ov, od = tonumber(ov), tonumber(od)
      if ov > v or (ov == v and od >= d) then write = false end
      if at == '' then at = oat end
    end
  end
  if write then redis.call('HSET', KEYS[2], id, ARGV[i + 1] .. ':' .. ARGV[i + 2] .. ':' .. at) end
end
return 1"
    ))
});

static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HINCRBY', KEYS[1], 'count', 1)
else
  redis.call('HSET', KEYS[1], 'seq', 1, 'count', 1, 'first', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return 1",
    )
});

static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'seq') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0",
    )
});

fn parse_version(id: &str, raw: &str) -> Option<VersionEntry> {
    let mut parts = raw.splitn(3, ':');
    let version = parts.next()?.parse().ok()?;
    let deleted = parts.next()? == "1";
    let at = parts.next().and_then(|a| a.parse().ok());
    Some(VersionEntry {
        id: id.to_owned(),
        version,
        deleted,
        at,
    })
}

fn field(map: &[(String, String)], name: &str) -> Option<i64> {
    map.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

impl RedisStore {
    fn sync_key(&self, kind: &str, user: UserId, stream: SyncStream) -> String {
        format!("{}sync:{kind}:{user}:{}", self.prefix, stream.name())
    }

    fn inbox_key(&self) -> String {
        format!("{}sync:inbox", self.prefix)
    }

    fn stopped_key(&self) -> String {
        format!("{}sync:stopped", self.prefix)
    }

    async fn stream_state(
        &self,
        user: UserId,
        stream: SyncStream,
    ) -> Result<Option<StreamState>, Error> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.sync_key("s", user, stream));
        let map: Vec<(String, String)> = self.send("sync load", &command).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let backfill = (field(&map, "bn"), field(&map, "bh"));
        let (cursor, swept_at) = (field(&map, "cursor"), field(&map, "swept"));
        let fence = field(&map, "fence").unwrap_or(0);
        Ok(Some(StreamState::stored(cursor, backfill, swept_at, fence)))
    }
}

impl SyncBackend for RedisStore {
    async fn lease(&self, key: Key, ttl: Duration) -> Result<Option<SyncLease>, Error> {
        let Key { user, stream } = key;
        let owner = SyncLease::new_owner();
        let mut script = LEASE.key(self.sync_key("s", user, stream));
        script.arg(&owner).arg(record::lease_millis(ttl));
        let fence: i64 = self.invoke("sync lease", &script).await?;
        Ok(u64::try_from(fence).ok().map(|fence| SyncLease {
            user,
            stream,
            owner,
            fence,
        }))
    }

    async fn release(&self, lease: &SyncLease) -> Result<(), Error> {
        let mut script = RELEASE.key(self.sync_key("s", lease.user, lease.stream));
        script.arg(&lease.owner);
        let _: i64 = self.invoke("sync release", &script).await?;
        Ok(())
    }

    async fn load(&self, key: Key) -> Result<StreamState, Error> {
        let Key { user, stream } = key;
        Ok(self.stream_state(user, stream).await?.unwrap_or_default())
    }

    async fn commit(&self, lease: &SyncLease, ttl: Duration, c: Commit<'_>) -> Result<bool, Error> {
        let opt = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
        let mut invocation = COMMIT.prepare_invoke();
        invocation
            .key(self.sync_key("s", lease.user, lease.stream))
            .key(self.sync_key("v", lease.user, lease.stream))
            .arg(&lease.owner)
            .arg(lease.fence.to_string())
            .arg(record::lease_millis(ttl))
            .arg(opt(c.cursor))
            .arg(opt(c.backfill.map(|b| b.next_end)))
            .arg(opt(c.backfill.map(|b| b.horizon)))
            .arg(opt(c.swept_at));
        for v in c.versions {
            invocation
                .arg(&v.id)
                .arg(v.version)
                .arg(u8::from(v.deleted))
                .arg(opt(v.at));
        }
        let ours: i64 = self.invoke("sync commit", &invocation).await?;
        Ok(ours == 1)
    }

    async fn versions(&self, key: Key, ids: &[String]) -> Result<Vec<Option<VersionEntry>>, Error> {
        let Key { user, stream } = key;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("HMGET");
        command.arg(self.sync_key("v", user, stream)).arg(ids);
        let raw: Vec<Option<String>> = self.send("sync versions", &command).await?;
        Ok(ids
            .iter()
            .zip(raw)
            .map(|(id, r)| r.and_then(|r| parse_version(id, &r)))
            .collect())
    }

    async fn known(&self, key: Key, from: i64, to: i64) -> Result<Vec<VersionEntry>, Error> {
        let Key { user, stream } = key;
        let mut command = redis::cmd("HGETALL");
        command.arg(self.sync_key("v", user, stream));
        let all: Vec<(String, String)> = self.send("sync known", &command).await?;
        let mut known: Vec<VersionEntry> = all
            .iter()
            .filter_map(|(id, raw)| parse_version(id, raw))
            .filter(|e| !e.deleted && e.at.is_some_and(|at| from <= at && at <= to))
            .collect();
        known.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(known)
    }

    async fn inbox_push(&self, key: Key, now_ms: i64) -> Result<(), Error> {
        let Key { user, stream } = key;
        let mut script = PUSH.key(self.sync_key("ie", user, stream));
        script.key(self.inbox_key());
        script.arg(format!("{user}:{}", stream.name())).arg(now_ms);
        let _: i64 = self.invoke("sync inbox", &script).await?;
        Ok(())
    }

    async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = isize::try_from(limit)
            .unwrap_or(isize::MAX)
            .saturating_sub(1);
        let mut command = redis::cmd("ZRANGE");
        command.arg(self.inbox_key()).arg(0).arg(stop);
        let members: Vec<String> = self.send("sync inbox", &command).await?;
        let mut all = Vec::new();
        for member in members {
            let Some((user, stream)) = member
                .split_once(':')
                .and_then(|(u, s)| Some((UserId(u.parse().ok()?), s.parse::<SyncStream>().ok()?)))
            else {
                tracing::warn!("skipping an inbox member this release cannot read");
                continue;
            };
            let mut command = redis::cmd("HGETALL");
            command.arg(self.sync_key("ie", user, stream));
            let map: Vec<(String, String)> = self.send("sync inbox", &command).await?;
            let (Some(seq), Some(count), Some(first_ms)) = (
                field(&map, "seq"),
                field(&map, "count"),
                field(&map, "first"),
            ) else {
                continue; // acked between the two reads
            };
            all.push(InboxEntry::stored(user, stream, seq, count, first_ms));
        }
        Ok(all)
    }

    async fn inbox_ack(&self, entry: &InboxEntry) -> Result<bool, Error> {
        let mut script = ACK.key(self.sync_key("ie", entry.user, entry.stream));
        script.key(self.inbox_key());
        script
            .arg(entry.seq.to_string())
            .arg(format!("{}:{}", entry.user, entry.stream.name()));
        let gone: i64 = self.invoke("sync inbox", &script).await?;
        Ok(gone == 1)
    }

    async fn inbox_depth(&self) -> Result<u64, Error> {
        let mut command = redis::cmd("ZCARD");
        command.arg(self.inbox_key());
        self.send("sync inbox", &command).await
    }

    async fn stop(&self, user: UserId, reason: &str) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(self.stopped_key(), user.0.to_string(), reason)
            .ignore();
        for stream in SyncStream::ALL {
            pipe.del(self.sync_key("ie", user, stream)).ignore();
            pipe.zrem(self.inbox_key(), format!("{user}:{}", stream.name()))
                .ignore();
        }
        self.atomically("sync stop", &pipe).await
    }

    async fn stopped(&self, user: UserId) -> Result<Option<String>, Error> {
        let mut command = redis::cmd("HGET");
        command.arg(self.stopped_key()).arg(user.0.to_string());
        self.send("sync stop", &command).await
    }

    async fn resume(&self, user: UserId) -> Result<bool, Error> {
        let mut command = redis::cmd("HDEL");
        command.arg(self.stopped_key()).arg(user.0.to_string());
        let n: i64 = self.send("sync resume", &command).await?;
        Ok(n == 1)
    }

    async fn forget(&self, user: UserId) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for stream in SyncStream::ALL {
            for kind in ["s", "v", "ie"] {
                pipe.del(self.sync_key(kind, user, stream)).ignore();
            }
            pipe.zrem(self.inbox_key(), format!("{user}:{}", stream.name()))
                .ignore();
        }
        pipe.hdel(self.stopped_key(), user.0.to_string()).ignore();
        self.atomically("sync forget", &pipe).await
    }

    async fn streams(&self, user: UserId) -> Result<Vec<(SyncStream, StreamState)>, Error> {
        let mut all = Vec::new();
        for stream in SyncStream::ALL {
            if let Some(state) = self.stream_state(user, stream).await? {
                all.push((stream, state));
            }
        }
        Ok(all)
    }
}
