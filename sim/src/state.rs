//! The simulator's model: clients, codes, tokens, nonces, users, faults and counters.
//!
//! Everything here is synchronous and runs under the shared mutex; no method awaits.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::encoding::Coding;
use super::history::History;
use super::{
    Counters, Fault, NotifyCounters, REFRESH_TOKEN_TTL, ROTATION_GRACE, SAME_ARGS_WINDOW,
    SimConfig, SimGrant, Target,
};

/// A registered partner application.
pub(crate) struct Client {
    pub(crate) secret: String,
    pub(crate) callbacks: Vec<String>,
    pub(crate) oauth1: bool,
}

/// What a user authorized: a client, with a scope.
#[derive(Clone)]
pub(crate) struct Authorization {
    pub(crate) client_id: String,
    pub(crate) userid: u64,
    pub(crate) scope: String,
}

/// An authorization code handed out by `authorize2`.
pub(crate) struct Code {
    /// What the user authorized; the code's exchange turns it into a token pair.
    pub(crate) authorization: Authorization,
    pub(crate) redirect_uri: String,
    pub(crate) issued: SystemTime,
}

/// An access token.
pub(crate) struct Access {
    pub(crate) client_id: String,
    pub(crate) userid: u64,
    pub(crate) scope: String,
    pub(crate) expires_at: SystemTime,
    pub(crate) revoked: bool,
    /// The refresh token this one's pair replaced; killed at this token's first successful use.
    pub(crate) predecessor_refresh: Option<String>,
}

/// A refresh token.
pub(crate) struct Refresh {
    /// What it renews.
    pub(crate) authorization: Authorization,
    pub(crate) expires_at: SystemTime,
    pub(crate) dead: bool,
    /// Set when the token was rotated: it dies at this instant.
    pub(crate) grace_until: Option<SystemTime>,
}

/// A nonce handed out by `getnonce`.
pub(crate) struct Nonce {
    pub(crate) client_id: String,
    pub(crate) issued: SystemTime,
}

/// Account state of a user.
#[derive(Default)]
pub(crate) struct UserState {
    pub(crate) deactivated: bool,
    pub(crate) deleted: bool,
}

/// A `/notify` subscription.
#[derive(Clone)]
pub(crate) struct Subscription {
    /// Which one it is: subscribing again with the same key makes no second one.
    pub(crate) key: SubscriptionKey,
    pub(crate) comment: Option<String>,
    /// Consecutive failed deliveries; at `notify_max_failures` the subscription is removed.
    pub(crate) failures: u32,
}

/// What identifies a subscription: the client, the user, the callback URL and the appli.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionKey {
    pub(crate) client_id: String,
    pub(crate) userid: u64,
    pub(crate) callbackurl: String,
    pub(crate) appli: i64,
}

/// The whole simulated cloud.
pub(crate) struct State {
    pub(crate) offset: Duration,
    pub(crate) config: SimConfig,
    pub(crate) clients: HashMap<String, Client>,
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) access: HashMap<String, Access>,
    pub(crate) refresh: HashMap<String, Refresh>,
    /// Refresh token -> start of its current same-arguments window.
    pub(crate) presented: HashMap<String, SystemTime>,
    pub(crate) nonces: HashMap<String, Nonce>,
    pub(crate) users: HashMap<u64, UserState>,
    pub(crate) faults: HashMap<Target, VecDeque<(Fault, usize)>>,
    pub(crate) counters: Counters,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) notify_counters: NotifyCounters,
    /// User id -> the user's data, drawn at first use (see [`History::generate`]).
    pub(crate) histories: HashMap<u64, History>,
    /// (user id, path, action) -> data calls authenticated as that user.
    pub(crate) action_calls: HashMap<(u64, String, String), u64>,
    /// Client id -> instants of its recent data calls (for the optional rate limit).
    pub(crate) data_calls: HashMap<String, VecDeque<SystemTime>>,
    /// Every request to the API host while an app rate limit is set, in arrival order.
    pub(crate) arrivals: Vec<std::time::Instant>,
    /// The arrivals the app rate limit counts now (those it let through), oldest first.
    pub(crate) app_window: VecDeque<std::time::Instant>,
    /// The `Content-Encoding` of every data answer, whatever the request accepts.
    pub(crate) response_encoding: Option<Coding>,
    rng_fallback: u64,
}

/// Time elapsed from `earlier` to `now`, zero if `earlier` is in the future.
pub(crate) fn elapsed(now: SystemTime, earlier: SystemTime) -> Duration {
    now.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lowercase hex of `bytes`, into one string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `lowercase_hex(HMAC-SHA256(key, message))`.
pub(crate) fn hmac_hex(key: &str, message: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this branch is unreachable in practice.
        Err(_) => String::new(),
    }
}

/// Whether every comma-separated item of `required` is present in the token scope `granted`.
pub(crate) fn scope_has(granted: &str, required: &str) -> bool {
    granted.split(',').any(|s| s == required)
}

impl State {
    pub(crate) fn new(config: SimConfig) -> State {
        State {
            offset: Duration::ZERO,
            config,
            clients: HashMap::new(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            presented: HashMap::new(),
            nonces: HashMap::new(),
            users: HashMap::new(),
            faults: HashMap::new(),
            counters: Counters::default(),
            subscriptions: Vec::new(),
            notify_counters: NotifyCounters::default(),
            histories: HashMap::new(),
            action_calls: HashMap::new(),
            data_calls: HashMap::new(),
            arrivals: Vec::new(),
            app_window: VecDeque::new(),
            response_encoding: None,
            rng_fallback: 0,
        }
    }

    /// The user's data, drawn from the seed the first time it is needed.
    pub(crate) fn history(&mut self, userid: u64) -> &mut History {
        let now = unix_secs(self.now());
        let config = &self.config.history;
        self.histories
            .entry(userid)
            .or_insert_with(|| History::generate(config, userid, config.anchor.unwrap_or(now)))
    }

    /// The simulator clock.
    pub(crate) fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        now.checked_add(self.offset).unwrap_or(now)
    }

    /// 40 lowercase hex characters from the OS random generator.
    pub(crate) fn random_token(&mut self) -> String {
        let mut buf = [0u8; 20];
        if getrandom::fill(&mut buf).is_err() {
            // Extremely unlikely; stay unique and unpredictable enough for a simulator.
            self.rng_fallback = self.rng_fallback.wrapping_add(1);
            let seed = format!(
                "{}:{:?}:{:?}",
                self.rng_fallback,
                SystemTime::now(),
                std::thread::current().id()
            );
            let digest = <Sha256 as sha2::Digest>::digest(seed.as_bytes());
            buf.copy_from_slice(&digest[..20]);
        }
        hex(&buf)
    }

    pub(crate) fn register_client(
        &mut self,
        client_id: &str,
        secret: &str,
        callbacks: Vec<String>,
        oauth1: bool,
    ) {
        self.clients.insert(
            client_id.to_owned(),
            Client {
                secret: secret.to_owned(),
                callbacks,
                oauth1,
            },
        );
    }

    pub(crate) fn user(&self, userid: u64) -> Option<&UserState> {
        self.users.get(&userid)
    }

    pub(crate) fn user_mut(&mut self, userid: u64) -> &mut UserState {
        self.users.entry(userid).or_default()
    }

    pub(crate) fn user_deleted(&self, userid: u64) -> bool {
        self.user(userid).is_some_and(|u| u.deleted)
    }

    pub(crate) fn user_deactivated(&self, userid: u64) -> bool {
        self.user(userid).is_some_and(|u| u.deactivated)
    }

    /// Issues a new access + refresh pair. `predecessor` is the refresh token being rotated.
    pub(crate) fn issue_pair(
        &mut self,
        client_id: &str,
        userid: u64,
        scope: &str,
        predecessor: Option<String>,
    ) -> SimGrant {
        let now = self.now();
        let ttl = self.config.access_token_ttl;
        let access_token = self.random_token();
        let refresh_token = self.random_token();
        self.access.insert(
            access_token.clone(),
            Access {
                client_id: client_id.to_owned(),
                userid,
                scope: scope.to_owned(),
                expires_at: now.checked_add(ttl).unwrap_or(now),
                revoked: false,
                predecessor_refresh: predecessor,
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            Refresh {
                authorization: Authorization {
                    client_id: client_id.to_owned(),
                    userid,
                    scope: scope.to_owned(),
                },
                expires_at: now.checked_add(REFRESH_TOKEN_TTL).unwrap_or(now),
                dead: false,
                grace_until: None,
            },
        );
        SimGrant {
            access_token,
            refresh_token,
            expires_in: ttl.as_secs(),
        }
    }

    /// Access token exists, is not revoked or expired, and its user is not deleted.
    pub(crate) fn access_token_usable(&self, token: &str) -> bool {
        let now = self.now();
        self.access
            .get(token)
            .is_some_and(|a| !a.revoked && now < a.expires_at && !self.user_deleted(a.userid))
    }

    /// Refresh token exists, is alive, within its lifetimes, and its user is not deleted.
    pub(crate) fn refresh_token_usable(&self, token: &str) -> bool {
        let now = self.now();
        self.refresh.get(token).is_some_and(|r| {
            !r.dead
                && now < r.expires_at
                && r.grace_until.is_none_or(|g| now < g)
                && !self.user_deleted(r.authorization.userid)
        })
    }

    /// Records a refresh token presentation. Returns `Some(wait_seconds)` if it was already
    /// presented within [`SAME_ARGS_WINDOW`]. A rejected (601) presentation does not extend the
    /// window: it is measured from the first presentation that was not itself rejected.
    pub(crate) fn present_refresh(&mut self, token: &str) -> Option<u64> {
        let now = self.now();
        if let Some(&since) = self.presented.get(token) {
            let age = elapsed(now, since);
            if age < SAME_ARGS_WINDOW {
                let remaining = SAME_ARGS_WINDOW - age;
                let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
                return Some(secs.max(1));
            }
        }
        if self.presented.len() > 4096 {
            self.presented
                .retain(|_, t| elapsed(now, *t) < SAME_ARGS_WINDOW);
        }
        self.presented.insert(token.to_owned(), now);
        None
    }

    /// Rotates `old` (already checked usable): issues a new pair and starts the grace period.
    pub(crate) fn rotate(&mut self, old: &str) -> Option<(u64, String, SimGrant)> {
        let now = self.now();
        let deadline = now.checked_add(ROTATION_GRACE).unwrap_or(now);
        let r = self.refresh.get_mut(old)?;
        r.grace_until = Some(r.grace_until.map_or(deadline, |g| g.min(deadline)));
        let Authorization {
            client_id,
            userid,
            scope,
        } = r.authorization.clone();
        let grant = self.issue_pair(&client_id, userid, &scope, Some(old.to_owned()));
        Some((userid, scope, grant))
    }

    /// First successful use of an access token: its predecessor refresh token dies.
    pub(crate) fn mark_access_used(&mut self, token: &str) {
        let pred = self
            .access
            .get_mut(token)
            .and_then(|a| a.predecessor_refresh.take());
        if let Some(r) = pred.and_then(|p| self.refresh.get_mut(&p)) {
            r.dead = true;
        }
    }

    /// Kills every token of `userid`, or only those of `client_id` if given.
    pub(crate) fn revoke_user(&mut self, userid: u64, client_id: Option<&str>) {
        let matches = |uid: u64, cid: &str| uid == userid && client_id.is_none_or(|c| c == cid);
        for a in self.access.values_mut() {
            if matches(a.userid, &a.client_id) {
                a.revoked = true;
            }
        }
        for r in self.refresh.values_mut() {
            if matches(r.authorization.userid, &r.authorization.client_id) {
                r.dead = true;
            }
        }
        self.subscriptions
            .retain(|s| !matches(s.key.userid, &s.key.client_id));
    }

    pub(crate) fn inject(&mut self, target: Target, fault: Fault, times: usize) {
        if times > 0 {
            self.faults
                .entry(target)
                .or_default()
                .push_back((fault, times));
        }
    }

    /// Takes the next pending fault for `target`, if any.
    pub(crate) fn take_fault(&mut self, target: Target) -> Option<Fault> {
        let queue = self.faults.get_mut(&target)?;
        let (fault, remaining) = queue.front_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    /// Stores a new authorization code and returns it.
    pub(crate) fn new_code(
        &mut self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        userid: u64,
    ) -> String {
        let now = self.now();
        if self.codes.len() > 4096 {
            self.codes
                .retain(|_, c| elapsed(now, c.issued) <= super::CODE_TTL);
        }
        let code = self.random_token();
        self.codes.insert(
            code.clone(),
            Code {
                authorization: Authorization {
                    client_id: client_id.to_owned(),
                    userid,
                    scope: scope.to_owned(),
                },
                redirect_uri: redirect_uri.to_owned(),
                issued: now,
            },
        );
        code
    }

    /// Stores a new nonce for `client_id` and returns it.
    pub(crate) fn new_nonce(&mut self, client_id: &str) -> String {
        let now = self.now();
        if self.nonces.len() > 4096 {
            self.nonces
                .retain(|_, n| elapsed(now, n.issued) < super::NONCE_TTL);
        }
        let nonce = self.random_token();
        self.nonces.insert(
            nonce.clone(),
            Nonce {
                client_id: client_id.to_owned(),
                issued: now,
            },
        );
        nonce
    }

    /// Records a request to the API host against the app-wide limit: `Err(wait)` (how long
    /// until the window has room) if it is over.
    pub(crate) fn app_rate_ok(&mut self) -> Result<(), Duration> {
        let Some(limit) = self.config.app_rate_limit else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        self.arrivals.push(now);
        while self
            .app_window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.window)
        {
            self.app_window.pop_front();
        }
        if self.app_window.len() >= usize::try_from(limit.limit).unwrap_or(usize::MAX) {
            let oldest = self.app_window.front().copied().unwrap_or(now);
            return Err(limit.window.saturating_sub(now.duration_since(oldest)));
        }
        self.app_window.push_back(now);
        Ok(())
    }

    /// Records a data call by `client_id`; returns false if it exceeds the rate limit.
    pub(crate) fn rate_limit_ok(&mut self, client_id: &str) -> bool {
        let Some(limit) = self.config.data_rate_limit_per_minute else {
            return true;
        };
        let now = self.now();
        let calls = self.data_calls.entry(client_id.to_owned()).or_default();
        while calls
            .front()
            .is_some_and(|t| elapsed(now, *t) >= Duration::from_secs(60))
        {
            calls.pop_front();
        }
        if calls.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return false;
        }
        calls.push_back(now);
        true
    }
}
