//! When to refresh ([`RefreshPolicy`]), why ([`Reason`]), and the header a token becomes.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::error::Error;
use crate::secret::Secret;
use crate::token::{Token, UserId, is_bearer_safe};

/// Why a refresh was asked for (recorded in traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Nothing loaded yet for this user.
    Load,
    /// The access token is expired or inside the skew window.
    Proactive,
    /// Withings refused the access token.
    Reactive,
    /// Asked for explicitly.
    Forced,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Load => "load",
            Reason::Proactive => "proactive",
            Reason::Reactive => "reactive",
            Reason::Forced => "forced",
        }
    }
}

/// When to refresh and how hard to retry.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    /// Refresh this long before `expires_at`.
    pub skew: Duration,
    /// Plus up to this much more, fixed per user, so tokens issued together spread out.
    pub jitter: Duration,
    /// First wait after a failed refresh; doubles per failure up to `backoff_cap`.
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_cap: Duration,
    /// How long a cross-process refresh lease lasts if its holder dies.
    pub lease: Duration,
    /// How often a process waiting on another's lease re-reads the store.
    pub lease_poll: Duration,
    /// A user untouched this long loses its in-memory slot (reloaded from the store on next use).
    pub idle_eviction: Duration,
}

impl RefreshPolicy {
    /// When to refresh a pair granted at `granted_at`: `skew` plus the user's jitter before it
    /// expires, but never in the first half of its life, so a token shorter-lived than the
    /// skew is not refreshed on every request.
    pub(crate) fn refresh_at(&self, token: &Token, granted_at: SystemTime) -> SystemTime {
        let early = token
            .expires_at
            .checked_sub(self.skew + user_jitter(token.user_id, self.jitter))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let lifetime = token
            .expires_at
            .duration_since(granted_at)
            .unwrap_or(Duration::ZERO);
        let half_life = granted_at
            .checked_add(lifetime / 2)
            .map_or(token.expires_at, |t| t.min(token.expires_at));
        early.max(half_life)
    }

    /// True when a pair granted at `granted_at` needs no refresh yet at `now`.
    pub(crate) fn is_fresh(&self, token: &Token, granted_at: SystemTime, now: SystemTime) -> bool {
        now < self.refresh_at(token, granted_at)
    }
}

/// `Bearer <token>` as a sensitive header value (hidden from `Debug`, never HPACK-indexed).
/// A token a header cannot carry is an error, never a placeholder header.
pub(crate) fn bearer_header(access_token: &Secret) -> Result<HeaderValue, Error> {
    let unfit = || Error::MalformedResponse {
        reason: "the access token has characters an Authorization header cannot carry".into(),
    };
    if !is_bearer_safe(access_token.expose()) {
        return Err(unfit());
    }
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", access_token.expose())).map_err(|_| unfit())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A fixed fraction of `jitter` for `user`, so a fleet of tokens issued together does not
/// refresh together.
fn user_jitter(user: UserId, jitter: Duration) -> Duration {
    let spread = user.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    jitter.mul_f64(spread as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_fixed_per_user_and_bounded() {
        let j = Duration::from_secs(60);
        assert_eq!(user_jitter(UserId(1), j), user_jitter(UserId(1), j));
        assert_ne!(user_jitter(UserId(1), j), user_jitter(UserId(2), j));
        for id in 0..1000 {
            assert!(user_jitter(UserId(id), j) < j);
        }
        assert_eq!(user_jitter(UserId(5), Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn bearer_header_is_sensitive_and_hidden_from_debug() {
        let h = bearer_header(&Secret::new("tok123")).unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer tok123");
        assert!(!format!("{h:?}").contains("tok123"));
    }

    #[test]
    fn a_token_no_header_can_carry_is_an_error_not_a_placeholder() {
        for bad in ["tok\r\nx-evil: 1", "tok\0", "caf\u{e9}", "two words", ""] {
            assert!(matches!(
                bearer_header(&Secret::new(bad)),
                Err(Error::MalformedResponse { .. })
            ));
        }
    }

    fn policy(skew: u64, jitter: u64) -> RefreshPolicy {
        RefreshPolicy {
            skew: Duration::from_secs(skew),
            jitter: Duration::from_secs(jitter),
            backoff_base: Duration::ZERO,
            backoff_cap: Duration::ZERO,
            lease: Duration::from_secs(90),
            lease_poll: Duration::from_millis(100),
            idle_eviction: Duration::from_secs(900),
        }
    }

    fn lasting(granted_at: SystemTime, lifetime: Duration) -> Token {
        Token {
            user_id: UserId(46865875),
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            expires_at: granted_at + lifetime,
            scope: String::new(),
        }
    }

    #[test]
    fn never_refresh_in_the_first_half_of_a_token_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = policy(300, 60);
        let secs = |s: u64| Duration::from_secs(s);
        // Shorter-lived than skew + jitter: the refresh point is the half-life.
        for life in [2, 3, 120, 300, 359] {
            let token = lasting(t0, secs(life));
            assert_eq!(p.refresh_at(&token, t0), t0 + secs(life) / 2, "{life} s");
            assert!(p.is_fresh(&token, t0, t0 + secs(life) / 2 - Duration::from_millis(1)));
            assert!(!p.is_fresh(&token, t0, t0 + secs(life) / 2));
        }
        // A normal 3 h token: skew (plus this user's jitter) before expiry.
        let token = lasting(t0, secs(10_800));
        let at = p.refresh_at(&token, t0);
        assert!(
            at <= t0 + secs(10_800 - 300) && at > t0 + secs(10_800 - 360),
            "{at:?}"
        );
        // A token living a year, and one already expired when granted (clock skew).
        let year = lasting(t0, secs(366 * 86_400));
        assert!(p.refresh_at(&year, t0) > t0 + secs(365 * 86_400));
        let past = lasting(t0, Duration::ZERO);
        assert_eq!(p.refresh_at(&past, t0 + secs(10)), t0);
        // Granted "after" it expires: never later than the expiry.
        assert!(p.refresh_at(&past, t0 + secs(10)) <= past.expires_at);
    }
}
