//! A Withings user's token pair and the identifiers around it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// A Withings user id, e.g. `46865875`.
///
/// Withings sends it as a string in real token responses and as an integer in its OpenAPI schema;
/// both parse to this. Attach it to a request as an extension to say whose token to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(UserId)
    }
}

impl From<u64> for UserId {
    fn from(id: u64) -> Self {
        UserId(id)
    }
}

/// The data scopes an app asks a user for (sent comma-separated to `authorize2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `user.info`: personal data, device link and unlink (SDK partners only).
    UserInfo,
    /// `user.metrics`: measurements (getmeas, heart).
    UserMetrics,
    /// `user.activity`: activity, workouts and sleep.
    UserActivity,
    /// `user.sleepevents`: bed in / bed out notifications.
    UserSleepEvents,
}

impl Scope {
    /// Every scope Withings documents.
    pub const ALL: [Scope; 4] = [
        Scope::UserInfo,
        Scope::UserMetrics,
        Scope::UserActivity,
        Scope::UserSleepEvents,
    ];

    /// The wire name, e.g. `user.metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UserInfo => "user.info",
            Scope::UserMetrics => "user.metrics",
            Scope::UserActivity => "user.activity",
            Scope::UserSleepEvents => "user.sleepevents",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that Withings does not document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown Withings scope {0:?}: expected user.info, user.metrics, user.activity or user.sleepevents"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The token pair Withings granted for one user, with its absolute expiry.
///
/// `Debug` shows everything but the two tokens (a [`Secret`] redacts itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Whose token this is.
    pub user_id: UserId,
    /// The bearer token for API calls (3 h).
    pub access_token: Secret,
    /// The token that buys the next pair (1 year; rotated by every refresh).
    pub refresh_token: Secret,
    /// When the access token stops working: `received_at + expires_in`.
    pub expires_at: SystemTime,
    /// The granted scopes, comma-separated as Withings returns them.
    pub scope: String,
}

impl Token {
    /// True when the access token has expired at `now`, or will within `skew`.
    pub fn expires_within(&self, now: SystemTime, skew: Duration) -> bool {
        match self.expires_at.duration_since(now) {
            Ok(left) => left <= skew,
            Err(_) => true,
        }
    }
}

/// True when `access_token` can go into `Authorization: Bearer …` as it is: printable ASCII,
/// no spaces or line breaks (RFC 6750's token characters are a subset).
pub(crate) fn is_bearer_safe(access_token: &str) -> bool {
    !access_token.is_empty() && access_token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: SystemTime) -> Token {
        Token {
            user_id: UserId(7),
            access_token: Secret::new("access-secret-value"),
            refresh_token: Secret::new("refresh-secret-value"),
            expires_at,
            scope: "user.metrics".into(),
        }
    }

    #[test]
    fn debug_never_shows_tokens() {
        let shown = format!("{:?}", token(SystemTime::now()));
        assert!(!shown.contains("access-secret-value"), "{shown}");
        assert!(!shown.contains("refresh-secret-value"), "{shown}");
        assert!(shown.contains("UserId(7)"), "{shown}");
    }

    #[test]
    fn expiry_window() {
        let now = SystemTime::now();
        let t = token(now + Duration::from_secs(600));
        assert!(!t.expires_within(now, Duration::from_secs(300)));
        assert!(t.expires_within(now, Duration::from_secs(600)));
        assert!(t.expires_within(now + Duration::from_secs(601), Duration::ZERO));
    }

    #[test]
    fn scopes_round_trip_and_reject_unknown() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("user.everything".parse::<Scope>().is_err());
        assert_eq!("46865875".parse::<UserId>().unwrap(), UserId(46865875));
        assert!("abc".parse::<UserId>().is_err());
    }
}
