//! [`RedisStore`]: tokens in Redis, for any number of processes and replicas.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation, Value};

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
use crate::token::{Token, UserId};

/// Tokens in Redis (a single server, or a primary with replicas; not Redis Cluster).
///
/// **Keys** (prefix configurable, default `withings:`):
///
/// | key | type | content |
/// |---|---|---|
/// | `withings:token:<user id>` | hash | `format` (record format, `1`), `user_id`, `access_token`, `refresh_token`, `expires_at_ms`, `scope`, `needs_reauthorization` (`0`/`1`), `refreshed_at_ms` |
/// | `withings:lock:<user id>` | string with expiry | the refresh lease's owner value |
/// | `withings:budget:<client id>` | sorted set with expiry | the request budget's grants (`stamp:count:tag`, scored by stamp) |
/// | `withings:budget-pause:<client id>` | string with expiry | set while a 601 stops the app |
/// | `withings:budget-waiters:<client id>` | hash with expiry | per budget holder with requests waiting: `oldest:count:expiry` (ms), so the oldest are served first |
///
/// Times are milliseconds since the Unix epoch: **millisecond precision**. Keys never expire
/// on their own except the lease; nothing is deleted by this crate.
///
/// * **Compare-and-save**, **put** and **mark** are Lua scripts, so each is atomic.
/// * **Refresh lease**: `SET <lock key> <owner> NX PX <lease>`, released by a Lua
///   compare-and-delete, so only the owner releases it and a dead holder's lease expires by
///   itself. A lock key without expiry was not written by this crate: it is reported as
///   [`Error::CorruptRecord`] rather than waited on forever.
/// * **Connection**: one auto-reconnecting multiplexed connection (`ConnectionManager`).
///   While Redis is unreachable every call fails with [`Error::Store`] (after the answer timeout,
///   default 5 s: [`RedisStoreBuilder::timeouts`], at worst), never a false lock.
/// * **Bad keys** (a token key that is not a hash, fields missing or unparsable, an unknown
///   format) load as [`Error::CorruptRecord`] for that user only; [`list`](super::TokenStore::list)
///   (a `SCAN` over `<prefix>token:*`) skips them with a warning, [`list_all`](Self::list_all)
///   reports them. Keys whose suffix is not a user id are ignored.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_withings::Error> {
/// use tower_withings::store::RedisStore;
/// let store = RedisStore::builder("redis://127.0.0.1:6379").prefix("myapp:withings:").connect().await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisStore`].
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStoreBuilder {
    /// The URL may hold a password: a [`Secret`], so it never shows in `Debug`.
    url: Secret,
    prefix: String,
    timeouts: Timeouts,
}

impl RedisStoreBuilder {
    crate::setters::setters! {
        /// The prefix of every key this store uses (default `withings:`).
        fn prefix(prefix: impl Into<String>) => prefix = prefix.into();
        /// How long one connection attempt may take (default 2 s), and how long a command may
        /// wait for its answer (default 5 s).
        fn timeouts(timeouts: Timeouts) => timeouts;
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] for an invalid URL or an unreachable server.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        let client = redis::Client::open(self.url.expose())
            // The parser's message could quote the URL, password included.
            .map_err(|_| Error::store("connect", "invalid Redis connection URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeouts.connect)
            .set_response_timeout(self.timeouts.answer)
            // The layer backs off on its own; a store call should fail fast when Redis is down.
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| Error::store("connect", e))?;
        Ok(RedisStore::with_connection(conn, self.prefix))
    }
}

/// The Lua scripts, each atomic on the server.
struct Scripts {
    load: Script,
    put: Script,
    compare_and_save: Script,
    mark: Script,
    lock: Script,
    unlock: Script,
    budget: BudgetScripts,
}

/// The request budget: a sorted set of grants per app, scored by stamp, and a pause key.
struct BudgetScripts {
    reserve: Script,
    pause: Script,
    usage: Script,
}

/// Reads the server clock into `now` (ms) and drops the grants out of the window at KEYS[1]
/// (window in ARGV[1]); `counted` is what stays, `oldest` the first stamp.
const WINDOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local counted, oldest = 0, nil
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  counted = counted + (tonumber(string.match(entries[i], '^%d+:(%d+):')) or 0)
  if oldest == nil then oldest = tonumber(entries[i + 1]) end
end
";

/// Replaces the hash at KEYS[1] with the fields in ARGV[a..a+6].
const WRITE: &str = r"
local function write(key, a)
  redis.call('DEL', key)
  redis.call('HSET', key,
    'format', ARGV[a], 'user_id', ARGV[a + 1],
    'access_token', ARGV[a + 2], 'refresh_token', ARGV[a + 3],
    'expires_at_ms', ARGV[a + 4], 'scope', ARGV[a + 5],
    'needs_reauthorization', '0', 'refreshed_at_ms', ARGV[a + 6])
end
";

impl Scripts {
    fn new() -> Self {
        Scripts {
            // nil: no key; a string: the key's type when it is not a hash; else the fields.
            load: Script::new(
                r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return false end
if t ~= 'hash' then return t end
return redis.call('HGETALL', KEYS[1])
",
            ),
            put: Script::new(&format!("{WRITE}\nwrite(KEYS[1], 1)\nreturn 1")),
            // 1 saved, 0 not the spent token (or no record), -1 not a hash.
            compare_and_save: Script::new(&format!(
                "{WRITE}
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 0 end
if t ~= 'hash' then return -1 end
if redis.call('HGET', KEYS[1], 'refresh_token') ~= ARGV[1] then return 0 end
write(KEYS[1], 2)
return 1"
            )),
            mark: Script::new(
                r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'refresh_token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'needs_reauthorization', '1')
return 1
",
            ),
            // 1 acquired, 0 held, -1 a foreign key without expiry.
            lock: Script::new(
                r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1 then return -1 end
return 0
",
            ),
            unlock: Script::new(
                r"
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
            ),
            budget: BudgetScripts {
                // ARGV: window, want, limit, hold (ms), a random tag, the holder, the
                // tolerance and the poll (ms, `ledger::tolerance_and_poll`), then how long
                // each of the holder's waiters has waited (ms). KEYS[3]: the waiters' rows.
                // Returns {granted, retry ms}; the same decision as `ledger::decide`.
                reserve: Script::new(&format!(
                    "{WINDOW}
local want, limit, hold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local holder, tolerance, poll = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local mine = {{}}
for i = 9, #ARGV do mine[#mine + 1] = now - tonumber(ARGV[i]) end
table.sort(mine)
redis.call('HDEL', KEYS[3], holder)
local others, waiting = nil, 0
local rows = redis.call('HGETALL', KEYS[3])
for i = 1, #rows, 2 do
  local o, c, e = string.match(rows[i + 1], '^(%-?%d+):(%d+):(%-?%d+)$')
  if o == nil or tonumber(e) <= now then
    redis.call('HDEL', KEYS[3], rows[i])
  else
    if others == nil or tonumber(o) < others then others = tonumber(o) end
    waiting = waiting + tonumber(c)
  end
end
local granted, retry = 0, 0
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  retry = paused
else
  local free = math.max(limit - counted, 0)
  local fair = want
  if others ~= nil then
    local first = 0
    while first < #mine and mine[first + 1] <= others + tolerance do first = first + 1 end
    fair = math.max(first, free - waiting)
  end
  granted = math.max(math.min(want, free, fair), 0)
  if granted > 0 then
    local stamp = now + hold
    redis.call('ZADD', KEYS[1], stamp, stamp .. ':' .. granted .. ':' .. ARGV[5])
    redis.call('PEXPIRE', KEYS[1], window + hold + 1000)
    if oldest == nil then oldest = stamp end
  end
  if granted == want then retry = 0
  elseif granted < math.min(want, free) then retry = poll
  else retry = math.max(oldest + window - now, 1) end
end
if granted < #mine then
  local life = retry + 2 * hold
  redis.call('HSET', KEYS[3], holder, mine[granted + 1] .. ':' .. (#mine - granted) .. ':' .. (now + life))
  if redis.call('PTTL', KEYS[3]) < life + 1000 then redis.call('PEXPIRE', KEYS[3], life + 1000) end
end
return {{granted, retry}}"
                )),
                // ARGV: wait (ms); the longer pause wins.
                pause: Script::new(
                    r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
",
                ),
                // ARGV: window. Returns {counted, pause left in ms (or a negative number)}.
                usage: Script::new(&format!(
                    "{WINDOW}\nreturn {{counted, redis.call('PTTL', KEYS[2])}}"
                )),
            },
        }
    }
}

impl RedisStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "withings:";

    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`) with default settings.
    ///
    /// # Errors
    ///
    /// See [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for the server at `url`.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: Secret::new(url),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeouts: Timeouts::new(Duration::from_secs(2), Duration::from_secs(5)),
        }
    }

    /// A store on a connection you configured yourself, with `prefix` before every key.
    pub fn with_connection(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        RedisStore {
            conn,
            prefix: Arc::from(prefix.into()),
            scripts: Arc::new(Scripts::new()),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key holding `user`'s token hash: `<prefix>token:<user>`.
    pub(crate) fn token_key(&self, user: UserId) -> String {
        format!("{}token:{user}", self.prefix)
    }

    /// The keys of `app`'s request budget: `<prefix>budget:<app>` (its grants),
    /// `<prefix>budget-pause:<app>` and `<prefix>budget-waiters:<app>`.
    fn budget_keys(&self, app: &str) -> [String; 3] {
        [
            format!("{}budget:{app}", self.prefix),
            format!("{}budget-pause:{app}", self.prefix),
            format!("{}budget-waiters:{app}", self.prefix),
        ]
    }

    /// The key holding `user`'s refresh lease: `<prefix>lock:<user>`.
    pub(crate) fn lock_key(&self, user: UserId) -> String {
        format!("{}lock:{user}", self.prefix)
    }

    /// Every record under this prefix, with each unreadable one as [`Error::CorruptRecord`] in
    /// its place, ordered by user id.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if Redis cannot be reached.
    pub async fn list_all(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        let pattern = format!("{}token:*", glob_escape(&self.prefix));
        let head = format!("{}token:", self.prefix);
        let mut conn = self.conn.clone();
        let mut users = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::store("list", e))?;
            for key in keys {
                let user = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| k.strip_prefix(head.as_str()))
                    .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|id| id.parse::<u64>().ok());
                match user {
                    Some(user) => users.push(UserId(user)),
                    None => tracing::warn!("skipping a token key whose suffix is not a user id"),
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        users.sort();
        users.dedup(); // SCAN may return a key twice
        let mut all = Vec::with_capacity(users.len());
        for user in users {
            match self.load_record("list", user).await {
                Ok(Some(record)) => all.push(Ok(record)),
                Ok(None) => {} // deleted meanwhile
                Err(error @ Error::CorruptRecord { .. }) => all.push(Err(error)),
                Err(error) => return Err(error),
            }
        }
        Ok(all)
    }

    async fn load_record(
        &self,
        operation: &'static str,
        user: UserId,
    ) -> Result<Option<StoredToken>, Error> {
        let script = self.scripts.load.key(self.token_key(user));
        let value: Value = self.invoke(operation, &script).await?;
        match value {
            Value::Nil => Ok(None),
            Value::Array(fields) => decode(user, &fields).map(Some),
            Value::BulkString(kind) => Err(record::corrupt(
                user,
                format!(
                    "key {} holds a {}, not a hash",
                    self.token_key(user),
                    String::from_utf8_lossy(&kind)
                ),
            )),
            Value::SimpleString(kind) => Err(record::corrupt(
                user,
                format!("key {} holds a {kind}, not a hash", self.token_key(user)),
            )),
            _ => Err(Error::store(
                operation,
                "unexpected reply from the load script",
            )),
        }
    }

    /// Runs `script` on the shared connection; a failure is [`Error::Store`] for `operation`.
    async fn invoke<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        let answer = script.invoke_async(&mut conn).await;
        answer.map_err(|e| Error::store(operation, e))
    }

    /// Sends `command` on the shared connection; a failure is [`Error::Store`] for `operation`.
    async fn send<T: FromRedisValue>(
        &self,
        operation: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        let answer = command.query_async(&mut conn).await;
        answer.map_err(|e| Error::store(operation, e))
    }

    /// Runs `pipe` (an atomic block) on the shared connection; its answers are not needed.
    async fn atomically(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let answer: Result<Value, _> = pipe.query_async(&mut conn).await;
        answer.map(drop).map_err(|e| Error::store(operation, e))
    }

    /// Arguments for writing a pair: format, user id, access, refresh, expiry, scope, granted.
    fn fields(token: &Token, granted_at: SystemTime) -> Result<[String; 7], Error> {
        Ok([
            record::FORMAT.to_string(),
            token.user_id.to_string(),
            token.access_token.expose().to_owned(),
            token.refresh_token.expose().to_owned(),
            record::to_millis("save", token.expires_at)?.to_string(),
            token.scope.clone(),
            record::to_millis("save", granted_at)?.to_string(),
        ])
    }
}

/// Escapes the glob characters `SCAN MATCH` understands.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads a `HGETALL` reply field by field.
fn decode(user: UserId, fields: &[Value]) -> Result<StoredToken, Error> {
    let mut raw = RawRecord::default();
    let text = |v: &Value| match v {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    };
    let integer = |v: &Value| text(v).and_then(|s| s.parse::<i64>().ok());
    for pair in fields.chunks(2) {
        let [name, value] = pair else { break };
        match text(name).as_deref() {
            Some("format") => raw.format = integer(value),
            Some("user_id") => raw.user_id = integer(value),
            Some("access_token") => raw.access_token = text(value),
            Some("refresh_token") => raw.refresh_token = text(value),
            Some("expires_at_ms") => raw.expires_at = integer(value).and_then(record::from_millis),
            Some("scope") => raw.scope = text(value),
            Some("needs_reauthorization") => {
                raw.needs_reauthorization = match integer(value) {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    _ => None,
                }
            }
            Some("refreshed_at_ms") => {
                raw.refreshed_at = integer(value).and_then(record::from_millis)
            }
            _ => {} // unknown fields: a later format may add some
        }
    }
    raw.decode(user)
}

/// The request budget on the same server: every replica shares it. Each call is one Lua
/// script (atomic), on the server's clock (`TIME`); a reservation also reads and writes the
/// holders' waiters (`budget-waiters`) in the same script.
impl BudgetLedger for RedisStore {
    fn reserve<'a>(&'a self, ask: &'a SlotAsk<'a>) -> StoreFuture<'a, SlotGrant> {
        Box::pin(async move {
            let (tolerance, poll) = ledger::tolerance_and_poll(ask.hold);
            let mut script = self.scripts.budget.reserve.key(&self.budget_keys(ask.app));
            script
                .arg(ledger::window_millis(ask.window))
                .arg(ask.want)
                .arg(ask.limit)
                .arg(ledger::window_millis(ask.hold))
                .arg(Lease::new().owner)
                .arg(ask.holder)
                .arg(tolerance)
                .arg(poll);
            let now = tokio::time::Instant::now();
            for since in ask.waiting {
                script.arg(ledger::whole_millis(now.saturating_duration_since(*since)));
            }
            let (granted, retry): (i64, i64) = self.invoke("budget", &script).await?;
            Ok(SlotGrant {
                granted: u32::try_from(granted).unwrap_or(0).min(ask.want),
                retry_in: Duration::from_millis(u64::try_from(retry).unwrap_or(0)),
            })
        })
    }

    fn pause<'a>(&'a self, app: &'a str, wait: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let [_, pause_key, _] = self.budget_keys(app);
            let mut script = self.scripts.budget.pause.key(pause_key);
            script.arg(ledger::window_millis(wait));
            let _: i64 = self.invoke("budget", &script).await?;
            Ok(())
        })
    }

    fn usage<'a>(&'a self, app: &'a str, window: Duration) -> StoreFuture<'a, BudgetUsage> {
        Box::pin(async move {
            let mut script = self.scripts.budget.usage.key(&self.budget_keys(app));
            script.arg(ledger::window_millis(window));
            let (used, paused): (i64, i64) = self.invoke("budget", &script).await?;
            Ok(BudgetUsage {
                used: u32::try_from(used).unwrap_or(u32::MAX),
                paused_for: u64::try_from(paused)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
            })
        })
    }
}

impl Backend for RedisStore {
    async fn read(&self, user: UserId) -> Result<Option<StoredToken>, Error> {
        self.load_record("load", user).await
    }

    /// The put or the compare-and-save script; the latter gets the refresh token it replaces
    /// before the fields.
    async fn save(&self, save: Save<'_>) -> Result<bool, Error> {
        let fields = Self::fields(save.token, save.granted_at)?;
        let key = self.token_key(save.token.user_id);
        let mut script = match save.spent {
            Some(spent) => {
                let mut script = self.scripts.compare_and_save.key(&key);
                script.arg(spent.expose());
                script
            }
            None => self.scripts.put.key(&key),
        };
        script.arg(&fields[..]);
        let outcome: i64 = self.invoke("save", &script).await?;
        match outcome {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(record::corrupt(
                save.token.user_id,
                format!("key {key} is not a hash"),
            )),
        }
    }

    async fn mark(&self, user: UserId, refused: &Secret) -> Result<(), Error> {
        let mut script = self.scripts.mark.key(self.token_key(user));
        script.arg(refused.expose());
        let _: i64 = self.invoke("mark", &script).await?;
        Ok(())
    }

    async fn remove(&self, user: UserId) -> Result<bool, Error> {
        let mut command = redis::cmd("DEL");
        command.arg(self.token_key(user));
        let deleted: i64 = self.send("delete", &command).await?;
        Ok(deleted > 0)
    }

    async fn lock(&self, user: UserId, lease: Duration) -> Result<LockAttempt, Error> {
        let granted = Lease::new();
        let mut script = self.scripts.lock.key(self.lock_key(user));
        script.arg(&granted.owner).arg(record::lease_millis(lease));
        let outcome: i64 = self.invoke("lock", &script).await?;
        match outcome {
            1 => Ok(LockAttempt::Acquired(granted)),
            0 => Ok(LockAttempt::Held),
            _ => Err(record::corrupt(
                user,
                format!(
                    "lock key {} has no expiry, so it was not written by tower-withings: delete it",
                    self.lock_key(user)
                ),
            )),
        }
    }

    async fn release(&self, user: UserId, lease: Lease) -> Result<(), Error> {
        let mut script = self.scripts.unlock.key(self.lock_key(user));
        script.arg(&lease.owner);
        let _: i64 = self.invoke("unlock", &script).await?;
        Ok(())
    }

    async fn records(&self) -> Result<Vec<Result<StoredToken, Error>>, Error> {
        self.list_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("withings:"), "withings:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
