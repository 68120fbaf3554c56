//! The one error type of this crate. Each message says what happened and what to do.

use std::time::Duration;

use http::StatusCode;

use crate::token::UserId;

/// A boxed error, as tower services return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a transport or store backend, shareable between the callers waiting on one
/// refresh.
pub(crate) type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to Withings or keeping its tokens.
///
/// Withings reports most failures as HTTP 200 with a `status` in the JSON body; [`parse_response`](crate::parse_response)
/// maps each documented status to one of these variants. No variant ever carries a token or the
/// client secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- what Withings said (body status) ----
    /// Status 100, 101, 102, 200 or 401: the access token is invalid, expired or revoked.
    #[error(
        "access token invalid, expired or revoked (Withings status {status}): refresh it and retry"
    )]
    AccessTokenInvalid {
        /// The body status Withings sent.
        status: i64,
    },
    /// Withings refused the access token (status 100, 101, 102, 200, 401, or HTTP 401) and the
    /// request could not be sent again: its body cannot be sent twice (a stream, or a layer that
    /// never replays). Nothing is wrong with the user's authorization: the token is being
    /// refreshed in the background, and the same request sent again gets the new one.
    ///
    /// What the layer and the reqwest middleware return by default for such a refusal;
    /// [`WithingsAuthLayer::not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response)
    /// gives the refused response instead, marked [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal).
    #[error(
        "Withings refused the access token (status {status}) and the request could not be replayed (its body cannot be sent twice): the token is being refreshed; send the request again"
    )]
    NotReplayed {
        /// The body status Withings sent (401 for an HTTP 401).
        status: i64,
    },
    /// Status 503 `invalid refresh_token`: rotated away, expired, or the user unlinked the app or
    /// was deleted.
    #[error(
        "refresh token no longer valid (rotated, expired, app unlinked or user deleted): the user must authorize again"
    )]
    RefreshTokenInvalid,
    /// Status 503 `invalid code`.
    #[error(
        "authorization code expired or already used: codes are valid 30 s and single use, restart authorize"
    )]
    InvalidCode,
    /// Wrong client id or secret, or OAuth 1.0 credentials (`client_id not authorized`).
    #[error(
        "client credentials refused by Withings ({detail}): use the client id and secret of an OAuth 2.0 partner app"
    )]
    InvalidClient {
        /// What Withings said, shortened.
        detail: String,
    },
    /// The `redirect_uri` is not (byte for byte) one of the app's registered callback URLs.
    #[error(
        "redirect_uri missing or not matching the partner app's callback URL: send exactly the registered URL, identically in authorize2 and requesttoken"
    )]
    RedirectUriMismatch,
    /// Status 293–295, 501–511 and other `Invalid Params` answers.
    #[error("invalid parameters (Withings status {status}): {message}")]
    InvalidParams {
        /// The body status.
        status: i64,
        /// What Withings said, shortened, with a hint where one is known.
        message: String,
    },
    /// Status 214, 277, 2553, 2555: this app or token may not use this service (often a scope).
    #[error(
        "not authorized for this service (Withings status {status}): check the scopes the user granted"
    )]
    Unauthorized {
        /// The body status.
        status: i64,
    },
    /// Status 2554: unknown action or path.
    #[error("not implemented by Withings (status 2554): check the service path and action")]
    NotImplemented,
    /// Status 522: Withings timed out.
    #[error("Withings timed out (status 522): retry later")]
    Timeout,
    /// Status 524: bad state.
    #[error("Withings reports a bad state (status 524): retry later")]
    BadState,
    /// Status 601: too many requests (or the same refresh twice within 10 s).
    #[error("rate limited by Withings (status 601){}: back off before retrying", wait_hint(.wait))]
    RateLimited {
        /// How long Withings asked to wait (`body.wait_seconds`), when it said.
        wait: Option<Duration>,
    },
    /// The app's request budget had no slot within the deadline: nothing was sent, so no 601.
    #[error(
        "the app's Withings request budget had no free slot within {} s: nothing was sent; retry later or raise the budget",
        .waited.as_secs_f32()
    )]
    BudgetExhausted {
        /// How long the request waited.
        waited: Duration,
    },
    /// The user asked Withings to delete their account and has 7 days to change their mind.
    #[error(
        "user is temporarily deactivated (deletion pending for up to 7 days): keep their tokens and retry once a day"
    )]
    UserDeactivated,
    /// A body status this crate does not know.
    #[error("Withings status {status}: {message}")]
    UnknownStatus {
        /// The body status.
        status: i64,
        /// What Withings said, shortened.
        message: String,
    },

    // ---- what the transport said ----
    /// A real HTTP error status (Withings itself answers 200; this comes from a proxy or outage).
    #[error("HTTP {status} from the Withings endpoint (proxy or outage): retry later")]
    Http {
        /// The HTTP status.
        status: StatusCode,
    },
    /// The response was not the JSON Withings sends: not JSON, truncated, wrong types, too large.
    #[error("malformed response from Withings: {reason}")]
    MalformedResponse {
        /// What was wrong with it (never the body itself).
        reason: String,
    },
    /// The request could not be sent or the response not received.
    #[error("could not reach Withings: {0}")]
    Transport(#[source] SharedError),
    /// The token endpoint did not answer in time.
    #[error("Withings token endpoint did not answer within {0:?}: retry later")]
    TokenEndpointTimeout(Duration),

    // ---- local mistakes, caught before anything is sent ----
    /// A redirect URI Withings would refuse.
    #[error("redirect URI refused: {reason} (allow it explicitly only for local simulators)")]
    RedirectUri {
        /// Why it is refused.
        reason: String,
    },
    /// A base URL that cannot be used.
    #[error("invalid {which} base URL: {reason}")]
    BaseUrl {
        /// `api` or `account`.
        which: &'static str,
        /// Why.
        reason: String,
    },
    /// The `state` in the callback is not the one this flow issued: a forged or stale callback.
    #[error("OAuth state mismatch: the callback was not started by this login; restart authorize")]
    StateMismatch,
    /// The callback has no `code` (or no `state`).
    #[error("callback is missing `{0}`: pass the full redirected URL or its query string")]
    CallbackMissing(&'static str),
    /// The user declined, or Withings reported an error on the callback.
    #[error("authorization refused: {0}")]
    AuthorizationDenied(String),
    /// An authorize URL asking for no scope at all.
    #[error("no scope requested: ask for at least one (e.g. user.metrics)")]
    NoScope,
    /// A request for the Withings API carried no [`UserId`] and the layer has no default user.
    #[error(
        "no Withings user for this request: add a UserId request extension or bind the layer to a user"
    )]
    NoUser,
    /// A request naming a Withings user ([`UserId`] extension) went to a host other than the
    /// configured API host: it was not sent (a token goes to the API host only).
    #[error(
        "a request for a Withings user went to {host}, not to the configured API host {api}: nothing was sent; use the API base of your Endpoints (localhost and 127.0.0.1 are different hosts)"
    )]
    NotApiHost {
        /// Where the request went (scheme, host, port).
        host: String,
        /// The configured API base.
        api: String,
    },
    /// HTTP 404 from the API host: Withings has no endpoint at that path.
    #[error(
        "HTTP 404 from the Withings API host: no endpoint at this path; check the service path (e.g. /measure, /v2/measure)"
    )]
    EndpointNotFound,
    /// No token is stored for this user.
    #[error("no token stored for Withings user {0}: run the authorization flow first")]
    UnknownUser(UserId),
    /// Withings answered a refresh of this user's token with another user's id. The pair it sent
    /// is kept in the store but never used for this user, whose record is marked.
    #[error(
        "Withings answered the refresh of user {asked}'s token for user {answered}: the pair was kept but not used; user {asked} must authorize again"
    )]
    UserMismatch {
        /// The user whose refresh token was spent.
        asked: UserId,
        /// The user id in Withings' answer.
        answered: UserId,
    },
    /// The user revoked this app's access (Withings' `unlink` or `delete` notification): only a
    /// new authorization helps.
    #[error(
        "Withings user {0} revoked this app's access (unlinked it or deleted their account): they must authorize again"
    )]
    AccessRevoked(UserId),
    /// This user's refresh token is dead; only a new code exchange helps.
    #[error("Withings user {0} must authorize again (refresh token no longer valid)")]
    NeedsReauthorization(UserId),

    // ---- notifications ----
    /// A notification callback URL Withings would refuse (https, a host name that is not
    /// localhost, port 80 or 443, at most 255 characters), caught before anything is sent. The
    /// URL itself is never in the message: it carries the receiver's secret.
    #[error(
        "notification callback URL refused: {reason} (allow loopback callbacks explicitly only for local simulators)"
    )]
    CallbackUrl {
        /// Why it is refused.
        reason: String,
    },
    /// Withings refused a subscription because its check of the callback failed: the URL did
    /// not answer Withings' `HEAD` request with 2xx in time. Retrying does not help until the
    /// receiver answers.
    #[error(
        "Withings refused the notification callback ({message}): the URL must answer Withings' HEAD request with 2xx within 2 s; check the URL, the receiver's route and its secret"
    )]
    CallbackRefused {
        /// What Withings said, shortened, with the callback URL taken out.
        message: String,
    },
    /// Withings has no subscription for this user, callback URL and appli.
    #[error(
        "no such notification subscription for this user, callback URL and appli: list the user's subscriptions to see the ones that exist"
    )]
    NoSuchSubscription,

    // ---- token stores ----
    /// The token store failed; the token pair in use is unchanged.
    #[error("token store failed to {operation}: {source}")]
    Store {
        /// What the store was asked to do (`load`, `save`, `lock`, …).
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: SharedError,
    },
    /// A stored record could not be read (bad row, foreign data); other users are unaffected.
    #[error("stored token for Withings user {user} is unreadable: {reason}")]
    CorruptRecord {
        /// Whose record.
        user: UserId,
        /// What is wrong with it.
        reason: String,
    },
    /// A response future was polled again after it completed (a bug in the caller).
    #[error("a tower-withings response future was polled after it completed")]
    PolledAfterCompletion,
    /// The refresh task ended without an outcome (it panicked); the next request tries again.
    #[error("the token refresh for Withings user {0} was interrupted: retry")]
    RefreshInterrupted(UserId),
}

fn wait_hint(wait: &Option<Duration>) -> String {
    match wait {
        Some(wait) => format!(", wait {} s", wait.as_secs()),
        None => String::new(),
    }
}

/// What kind of failure an [`Error`] is, for code that reacts to it (a retry loop, an exit
/// code, an alert) without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user must authorize (again): only a new code exchange helps.
    Auth,
    /// Too many requests: wait (the error may say how long), then retry.
    Rate,
    /// Withings or the network failed for now: retry later, unchanged.
    Transient,
    /// The token store failed; the pair in use is unchanged.
    Store,
    /// The app's configuration is wrong: credentials, URLs, a missing user or scope.
    Config,
    /// Withings refused this call for a reason retrying does not change (parameters, scope,
    /// service, account state), or the caller misused the API.
    Usage,
}

impl Error {
    /// The kind of failure; every variant has one.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::AccessTokenInvalid { .. }
            | Error::RefreshTokenInvalid
            | Error::InvalidCode
            | Error::StateMismatch
            | Error::CallbackMissing(_)
            | Error::AuthorizationDenied(_)
            | Error::UnknownUser(_)
            | Error::UserMismatch { .. }
            | Error::AccessRevoked(_)
            | Error::NeedsReauthorization(_) => ErrorKind::Auth,
            Error::RateLimited { .. } | Error::BudgetExhausted { .. } => ErrorKind::Rate,
            Error::Timeout
            | Error::BadState
            | Error::Http { .. }
            | Error::MalformedResponse { .. }
            | Error::Transport(_)
            | Error::TokenEndpointTimeout(_)
            | Error::RefreshInterrupted(_)
            | Error::NotReplayed { .. } => ErrorKind::Transient,
            Error::Store { .. } | Error::CorruptRecord { .. } => ErrorKind::Store,
            Error::InvalidClient { .. }
            | Error::RedirectUriMismatch
            | Error::RedirectUri { .. }
            | Error::BaseUrl { .. }
            | Error::NoScope
            | Error::NoUser
            | Error::NotApiHost { .. }
            | Error::CallbackUrl { .. } => ErrorKind::Config,
            Error::InvalidParams { .. }
            | Error::Unauthorized { .. }
            | Error::NotImplemented
            | Error::EndpointNotFound
            | Error::UserDeactivated
            | Error::UnknownStatus { .. }
            | Error::CallbackRefused { .. }
            | Error::NoSuchSubscription
            | Error::PolledAfterCompletion => ErrorKind::Usage,
        }
    }

    /// True for failures worth retrying later without changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout
                | Error::BadState
                | Error::RateLimited { .. }
                | Error::BudgetExhausted { .. }
                | Error::Http { .. }
                | Error::Transport(_)
                | Error::TokenEndpointTimeout(_)
                | Error::MalformedResponse { .. }
                | Error::Store { .. }
                | Error::RefreshInterrupted(_)
                | Error::NotReplayed { .. }
        )
    }
}

/// Shortens a server-provided message for inclusion in an error: at most 200 characters, no
/// control characters (no log-line or header injection).
pub(crate) fn shorten(message: &str) -> String {
    let mut out: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if message.chars().count() > 200 {
        out.push('…');
    }
    out
}

impl Error {
    /// A store failure while doing `operation`.
    pub fn store(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Store {
            operation,
            source: std::sync::Arc::from(source.into()),
        }
    }

    /// A transport failure.
    pub fn transport(source: impl Into<BoxError>) -> Self {
        Error::Transport(std::sync::Arc::from(source.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_strips_control_characters_and_caps_length() {
        assert_eq!(shorten("a\r\nb"), "a  b");
        let long = "x".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 201);
    }

    #[test]
    fn every_kind_is_what_a_caller_does_about_it() {
        let user = UserId(7);
        let cases = [
            (Error::NeedsReauthorization(user), ErrorKind::Auth),
            (Error::AccessRevoked(user), ErrorKind::Auth),
            (Error::RateLimited { wait: None }, ErrorKind::Rate),
            (Error::Timeout, ErrorKind::Transient),
            (Error::NotReplayed { status: 401 }, ErrorKind::Transient),
            (Error::store("save", "disk full"), ErrorKind::Store),
            (
                Error::InvalidClient {
                    detail: String::new(),
                },
                ErrorKind::Config,
            ),
            (Error::NotImplemented, ErrorKind::Usage),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
        // Transient and rate-limited failures are the ones worth retrying unchanged.
        assert!(Error::Timeout.is_transient() && Error::RateLimited { wait: None }.is_transient());
        // A refusal that could not be replayed: the token is being refreshed, send it again.
        assert!(Error::NotReplayed { status: 401 }.is_transient());
    }

    #[test]
    fn rate_limited_message_carries_the_wait() {
        let e = Error::RateLimited {
            wait: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            e.to_string(),
            "rate limited by Withings (status 601), wait 7 s: back off before retrying"
        );
    }
}
