//! The record layout the durable stores share: field names, format version, time encoding and
//! the checks that turn a stored row into a [`StoredToken`] or an [`Error::CorruptRecord`].
//!
//! Format 1 stores, per user: `user_id`, `access_token`, `refresh_token`, `expires_at`
//! (milliseconds since the Unix epoch, or a native timestamp where the backend has one), `scope`,
//! `needs_reauthorization`, `refreshed_at`, and the format number itself.

// Each backend uses a different subset of these helpers, and with only some backends compiled
// some helpers go unused.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::StoredToken;
use crate::error::Error;
use crate::secret::Secret;
use crate::token::{Token, UserId};

/// The record format this release writes and reads. A later release that changes the layout
/// bumps it and migrates records (or tables) whose format is lower.
pub(crate) const FORMAT: i64 = 1;

/// A user id as the signed 64-bit integer SQL columns hold.
pub(crate) fn user_column(operation: &'static str, user: UserId) -> Result<i64, Error> {
    i64::try_from(user.0).map_err(|_| {
        Error::store(
            operation,
            format!("Withings user id {user} does not fit a signed 64-bit column"),
        )
    })
}

/// Milliseconds since the Unix epoch, for writing.
pub(crate) fn to_millis(operation: &'static str, time: SystemTime) -> Result<i64, Error> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| Error::store(operation, "timestamp outside 1970..292 million AD"))
}

/// The time `ms` milliseconds after the Unix epoch; `None` for negative values.
pub(crate) fn from_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// A lease length in whole milliseconds, at least one.
pub(crate) fn lease_millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A record as read from a backend, each field still unchecked.
#[derive(Default)]
pub(crate) struct RawRecord {
    pub user_id: Option<i64>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<SystemTime>,
    pub scope: Option<String>,
    pub needs_reauthorization: Option<bool>,
    pub refreshed_at: Option<SystemTime>,
    pub format: Option<i64>,
}

/// Builds the error for `user`'s unreadable record.
pub(crate) fn corrupt(user: UserId, reason: impl Into<String>) -> Error {
    Error::CorruptRecord {
        user,
        reason: reason.into(),
    }
}

impl RawRecord {
    /// Checks every field; the first problem found is the reason (never a token value).
    pub(crate) fn decode(self, user: UserId) -> Result<StoredToken, Error> {
        let missing = |field: &str| corrupt(user, format!("`{field}` is missing or not readable"));
        let format = self.format.ok_or_else(|| missing("format"))?;
        if format != FORMAT {
            return Err(corrupt(
                user,
                format!("record format {format} is not one this release reads (it reads {FORMAT})"),
            ));
        }
        let stored_user = self.user_id.ok_or_else(|| missing("user_id"))?;
        if u64::try_from(stored_user).ok() != Some(user.0) {
            return Err(corrupt(
                user,
                format!("the record names user {stored_user}, not {user}"),
            ));
        }
        let access_token = self.access_token.ok_or_else(|| missing("access_token"))?;
        let refresh_token = self.refresh_token.ok_or_else(|| missing("refresh_token"))?;
        if access_token.is_empty() {
            return Err(corrupt(user, "`access_token` is empty"));
        }
        if refresh_token.is_empty() {
            return Err(corrupt(user, "`refresh_token` is empty"));
        }
        Ok(StoredToken {
            token: Token {
                user_id: user,
                access_token: Secret::new(access_token),
                refresh_token: Secret::new(refresh_token),
                expires_at: self.expires_at.ok_or_else(|| missing("expires_at"))?,
                scope: self.scope.ok_or_else(|| missing("scope"))?,
            },
            needs_reauthorization: self
                .needs_reauthorization
                .ok_or_else(|| missing("needs_reauthorization"))?,
            refreshed_at: self.refreshed_at.ok_or_else(|| missing("refreshed_at"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawRecord {
        RawRecord {
            user_id: Some(7),
            access_token: Some("a".into()),
            refresh_token: Some("r".into()),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(5)),
            scope: Some("user.metrics".into()),
            needs_reauthorization: Some(false),
            refreshed_at: Some(UNIX_EPOCH),
            format: Some(FORMAT),
        }
    }

    #[test]
    fn a_complete_record_decodes() {
        let record = raw().decode(UserId(7)).unwrap();
        assert_eq!(record.token.refresh_token.expose(), "r");
        assert!(!record.needs_reauthorization);
    }

    #[test]
    fn bad_records_name_the_user_and_never_a_token() {
        let cases: Vec<RawRecord> = vec![
            RawRecord {
                format: Some(2),
                ..raw()
            },
            RawRecord {
                user_id: Some(8),
                ..raw()
            },
            RawRecord {
                refresh_token: Some(String::new()),
                ..raw()
            },
            RawRecord {
                expires_at: None,
                ..raw()
            },
        ];
        for case in cases {
            match case.decode(UserId(7)) {
                Err(Error::CorruptRecord { user, reason }) => {
                    assert_eq!(user, UserId(7));
                    assert!(!reason.contains("\"a\""), "{reason}");
                }
                other => panic!("expected CorruptRecord, got {other:?}"),
            }
        }
    }

    #[test]
    fn millis_round_trip_and_reject_negative() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_millis(to_millis("save", t).unwrap()), Some(t));
        assert_eq!(from_millis(-1), None);
        assert!(to_millis("save", UNIX_EPOCH - Duration::from_secs(1)).is_err());
        assert_eq!(lease_millis(Duration::ZERO), 1);
    }
}
