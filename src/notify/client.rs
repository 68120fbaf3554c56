//! `POST {api}/notify`: subscribe, get, list, update, revoke, through the layer.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::Appli;
use crate::auth::WithingsAuth;
use crate::error::{BoxError, Error, shorten};
use crate::oauth::RedirectPolicy;
use crate::secret::Secret;
use crate::status;
use crate::token::UserId;
use crate::transport::HttpClient;

/// The notification service's path below the API base.
pub(crate) const NOTIFY_PATH: &str = "/notify";

/// Answers of `/notify` are small (a list of subscriptions); anything past this is not Withings.
const MAX_ANSWER: usize = 1024 * 1024;

/// The comment sent with a subscription when none is given (Withings shows it to nobody but
/// the app; some API versions require one).
const DEFAULT_COMMENT: &str = "tower-withings";

type Boxed =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError>;

/// One subscription: Withings POSTs to `callback` when `appli` data of the user changes.
///
/// `callback` is a [`Secret`]: it normally carries the receiver's secret, so `Debug` hides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The callback URL, exactly as Withings stores it.
    pub callback: Secret,
    /// The category.
    pub appli: Appli,
    /// The app's comment, if any.
    pub comment: Option<String>,
}

/// What [`NotifyClient::ensure_subscribed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ensured {
    /// Categories subscribed now.
    pub subscribed: Vec<Appli>,
    /// Categories that already had a subscription to this callback URL (left alone).
    pub already: Vec<Appli>,
}

/// How [`NotifyClient::ensure_subscribed`] retries transient refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RetryPolicy {
    attempts: u32,
    base: Duration,
    cap: Duration,
}

/// Manages users' notification subscriptions (`POST {api}/notify`), each call through
/// [`WithingsAuth::layer_for`] the user: their bearer token attached, refreshed and replayed
/// like any other API call.
///
/// Every method checks the callback URL first with Withings' rules (https, a host name that is
/// not localhost, port 80 or 443, at most 255 characters) and fails with
/// [`Error::CallbackUrl`] before anything is sent;
/// [`callback_policy`](Self::callback_policy) allows loopback http URLs for local simulators.
/// Withings' messages never reach an error with the callback URL in them.
///
/// ```no_run
/// use tower_withings::notify::{Appli, NotifyClient};
/// use tower_withings::{Credentials, UserId, WithingsAuth, transport};
///
/// # async fn example(auth: WithingsAuth) -> Result<(), tower_withings::Error> {
/// let notify = NotifyClient::new(&auth, transport::https_client());
/// let callback = "https://app.example.com/withings/notify/9c2f0e51d7a84b6e8f5f3c1a2b4d6e80";
/// let done = notify
///     .ensure_subscribed(UserId(46865875), callback, &[Appli::Weight, Appli::User])
///     .await?;
/// println!("subscribed {:?}, already there {:?}", done.subscribed, done.already);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NotifyClient {
    auth: WithingsAuth,
    http: Boxed,
    policy: RedirectPolicy,
    retry: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for NotifyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyClient")
            .field("api", &self.auth.oauth().endpoints().api_base())
            .field("policy", &self.policy)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NotifyClient {
    /// A client for the users of `auth`, sending through `http` (hyper-util's client, any
    /// tower HTTP service; the layer is put in front of it for each call).
    pub fn new<S: HttpClient>(auth: &WithingsAuth, http: S) -> NotifyClient {
        let http = http
            .map_err(Into::into)
            .map_response(|response: Response<S::ResponseBody>| {
                response.map(|body| body.map_err(Into::into).boxed_unsync())
            });
        NotifyClient {
            auth: auth.clone(),
            http: BoxCloneSyncService::new(http),
            policy: RedirectPolicy::Withings,
            retry: RetryPolicy {
                attempts: 4,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(30),
            },
            timeout: Duration::from_secs(30),
        }
    }

    /// [`ensure_subscribed`](Self::ensure_subscribed) makes at most `attempts` tries of each
    /// call refused for a transient reason ([`Error::is_transient`]), waiting `base` doubled per
    /// failure (up to `cap`, with jitter) in between; a 601 asking for a wait longer than
    /// `cap` ends the retries. Defaults: 4 attempts, 1 s, 30 s.
    pub fn retry(mut self, attempts: u32, base: Duration, cap: Duration) -> Self {
        self.retry = RetryPolicy {
            attempts: attempts.max(1),
            base,
            cap,
        };
        self
    }

    crate::setters::setters! {
        /// Which callback URLs to accept (default [`RedirectPolicy::Withings`]: only what
        /// Withings accepts; [`RedirectPolicy::AllowLoopback`] also allows http to loopback
        /// hosts on any port, for a local simulator).
        fn callback_policy(policy: RedirectPolicy) => policy;
        /// How long one `/notify` call may take, refresh included (default 30 s).
        fn timeout(timeout: Duration) => timeout;
    }

    /// Checks `callback` with Withings' rules (or the configured policy), without sending
    /// anything.
    pub fn check_callback(&self, callback: &str) -> Result<(), Error> {
        check_callback(callback, self.policy)
    }

    /// `action=subscribe`: Withings first checks the callback with a `HEAD` request (it must
    /// answer 2xx); a failed check is [`Error::CallbackRefused`]. One attempt, no retry.
    pub async fn subscribe(
        &self,
        user: UserId,
        callback: &str,
        appli: Appli,
        comment: Option<&str>,
    ) -> Result<(), Error> {
        let form = form(&[
            ("action", "subscribe"),
            ("callbackurl", callback),
            ("appli", &appli.to_string()),
            ("comment", comment.unwrap_or(DEFAULT_COMMENT)),
        ]);
        self.call(user, form, &[callback])
            .await
            .map_err(subscribe_error)
            .map(drop)
    }

    /// `action=get`: the subscription of `user` for this callback URL and category, if any.
    pub async fn get(
        &self,
        user: UserId,
        callback: &str,
        appli: Appli,
    ) -> Result<Option<Subscription>, Error> {
        let form = form(&[
            ("action", "get"),
            ("callbackurl", callback),
            ("appli", &appli.to_string()),
        ]);
        match self.call(user, form, &[callback]).await.map_err(missing) {
            Ok(body) => subscription(&body).map(Some),
            Err(Error::NoSuchSubscription) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `action=list`: every subscription of `user` (of one category with `appli`).
    pub async fn list(
        &self,
        user: UserId,
        appli: Option<Appli>,
    ) -> Result<Vec<Subscription>, Error> {
        let code = appli.map(|a| a.to_string());
        let mut pairs = vec![("action", "list")];
        if let Some(code) = &code {
            pairs.push(("appli", code));
        }
        let body = self.call(user, form(&pairs), &[]).await?;
        let profiles = match body.get("profiles") {
            None | Some(Value::Null) if body.is_object() => return Ok(Vec::new()),
            Some(Value::Array(profiles)) => profiles,
            _ => return Err(malformed("list answer without a `profiles` array")),
        };
        profiles.iter().map(subscription).collect()
    }

    /// `action=update`: moves the subscription for `callback` and `appli` to `new_callback`
    /// and `new_appli` (Withings checks the new callback as for a subscription).
    pub async fn update(
        &self,
        user: UserId,
        callback: &str,
        appli: Appli,
        new_callback: &str,
        new_appli: Appli,
        comment: Option<&str>,
    ) -> Result<(), Error> {
        let form = form(&[
            ("action", "update"),
            ("callbackurl", callback),
            ("appli", &appli.to_string()),
            ("new_callbackurl", new_callback),
            ("new_appli", &new_appli.to_string()),
            ("comment", comment.unwrap_or(DEFAULT_COMMENT)),
        ]);
        self.call(user, form, &[callback, new_callback])
            .await
            .map_err(|e| subscribe_error(missing(e)))
            .map(drop)
    }

    /// `action=revoke`: removes the subscription for `callback` and `appli` (every category
    /// for that URL with `None`). [`Error::NoSuchSubscription`] if there was none.
    pub async fn revoke(
        &self,
        user: UserId,
        callback: &str,
        appli: Option<Appli>,
    ) -> Result<(), Error> {
        let code = appli.map(|a| a.to_string());
        let mut pairs = vec![("action", "revoke"), ("callbackurl", callback)];
        if let Some(code) = &code {
            pairs.push(("appli", code));
        }
        self.call(user, form(&pairs), &[callback])
            .await
            .map_err(missing)
            .map(drop)
    }

    /// Makes sure `user` has a subscription to `callback` for each of `applis`: lists what
    /// exists, subscribes only what is missing, leaves every other subscription alone (so it
    /// is safe to call at every start or login). Each call is retried on transient refusals
    /// (see [`retry`](Self::retry)); a permanent one comes back at once, e.g.
    /// [`Error::CallbackRefused`] when the callback failed Withings' check.
    pub async fn ensure_subscribed(
        &self,
        user: UserId,
        callback: &str,
        applis: &[Appli],
    ) -> Result<Ensured, Error> {
        self.check_callback(callback)?;
        let existing = self.retrying(|| self.list(user, None)).await?;
        let mut done = Ensured::default();
        for &appli in applis {
            if done.subscribed.contains(&appli) || done.already.contains(&appli) {
                continue;
            }
            let present = existing
                .iter()
                .any(|s| s.appli == appli && s.callback.expose() == callback);
            if present {
                done.already.push(appli);
                continue;
            }
            self.retrying(|| self.subscribe(user, callback, appli, None))
                .await?;
            tracing::info!(user = %user, appli = appli.code(), "subscribed to Withings notifications");
            done.subscribed.push(appli);
        }
        Ok(done)
    }

    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Err(error) if error.is_transient() && attempt < self.retry.attempts => error,
                done => return done,
            };
            let delay = match &error {
                Error::RateLimited { wait: Some(wait) } if *wait > self.retry.cap => {
                    return Err(error);
                }
                Error::RateLimited { wait: Some(wait) } => *wait,
                _ => backoff(self.retry, attempt),
            };
            tracing::debug!(%error, attempt, delay_ms = delay.as_millis() as u64, "notify call refused for now; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One `POST /notify` through the layer bound to `user`; the `body` of a status-0 answer.
    /// The `callbacks` the form names are checked first (nothing is sent if one fails), and
    /// messages are cleaned of them.
    async fn call(&self, user: UserId, form: String, callbacks: &[&str]) -> Result<Value, Error> {
        for callback in callbacks {
            self.check_callback(callback)?;
        }
        let uri = self.auth.oauth().endpoints().api_url(NOTIFY_PATH);
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(Error::transport)?;
        let service = self.auth.layer_for(user).layer(self.http.clone());
        let answer = async {
            let response = service.oneshot(request).await.map_err(from_box)?;
            if response.status() != StatusCode::OK {
                return Err(Error::Http {
                    status: response.status(),
                });
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        malformed(&format!("answer larger than {MAX_ANSWER} bytes"))
                    } else {
                        from_box(e)
                    }
                })?
                .to_bytes();
            status::parse_response(&body)
        };
        let result = match tokio::time::timeout(self.timeout, answer).await {
            Ok(result) => result,
            Err(_) => Err(Error::transport(format!(
                "no answer from {NOTIFY_PATH} within {:?}",
                self.timeout
            ))),
        };
        result.map_err(|error| redact(error, callbacks))
    }
}

/// Withings' callback URL rules, as for redirect URIs (the same code checks both).
pub(crate) fn check_callback(callback: &str, policy: RedirectPolicy) -> Result<(), Error> {
    crate::oauth::check_redirect_uri(callback, policy).map_err(|error| match error {
        Error::RedirectUri { reason } => Error::CallbackUrl { reason },
        other => other,
    })
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        form.append_pair(key, value);
    }
    form.finish()
}

fn malformed(reason: &str) -> Error {
    Error::MalformedResponse {
        reason: reason.to_owned(),
    }
}

/// The error inside a tower error: ours, or the transport's.
fn from_box(error: BoxError) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::transport(other),
    }
}

/// A refused subscription whose message is about the callback: Withings' check failed.
/// (Observed: status 293 "The callback URL … is either unknown or invalid".)
fn subscribe_error(error: Error) -> Error {
    match error {
        Error::InvalidParams { status, message }
            if message.to_ascii_lowercase().contains("callback") =>
        {
            let _ = status;
            Error::CallbackRefused { message }
        }
        other => other,
    }
}

/// Withings' "no such subscription" (status 294 in the simulator; OPEN for real Withings,
/// recognised by its message too).
fn missing(error: Error) -> Error {
    match &error {
        Error::InvalidParams { status, message } => {
            let lower = message.to_ascii_lowercase();
            let no_such = lower.contains("no such")
                || lower.contains("not found")
                || lower.contains("does not exist")
                || lower.contains("doesn't exist");
            if *status == 294 || (lower.contains("subscription") && no_such) {
                Error::NoSuchSubscription
            } else {
                error
            }
        }
        _ => error,
    }
}

/// Takes the callback URLs (and their last path segment, where the receiver's secret lives)
/// out of every message that came from Withings.
fn redact(error: Error, hide: &[&str]) -> Error {
    let clean = |text: String| -> String {
        let mut text = text;
        for url in hide.iter().filter(|u| !u.is_empty()) {
            let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
            text = text.replace(url, "[callback URL]");
            text = text.replace(&encoded, "[callback URL]");
            let segment = url.rsplit('/').next().unwrap_or_default();
            let last = segment.split(['?', '#']).next().unwrap_or_default();
            if last.len() >= 8 {
                text = text.replace(last, "[redacted]");
            }
            // Withings' message arrives already cut to 200 characters: a URL cut inside its
            // secret matches neither of the above, so everything after the part before the
            // secret goes too, up to the next quote, space or the cut.
            let base = &url[..url.len() - segment.len()];
            if base.len() >= 8 {
                let encoded: String = form_urlencoded::byte_serialize(base.as_bytes()).collect();
                for prefix in [base, encoded.as_str()] {
                    while let Some(at) = text.find(prefix) {
                        let end = text[at..]
                            .find([' ', '\'', '"', '…'])
                            .map_or(text.len(), |e| at + e);
                        text.replace_range(at..end, "[callback URL]");
                    }
                }
            }
        }
        shorten(&text)
    };
    match error {
        Error::InvalidParams { status, message } => Error::InvalidParams {
            status,
            message: clean(message),
        },
        Error::UnknownStatus { status, message } => Error::UnknownStatus {
            status,
            message: clean(message),
        },
        Error::InvalidClient { detail } => Error::InvalidClient {
            detail: clean(detail),
        },
        other => other,
    }
}

/// `base · 2^(attempt-1)`, capped, between half and all of it (jitter).
fn backoff(retry: RetryPolicy, attempt: u32) -> Duration {
    let exp = retry
        .base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(retry.cap);
    let mut byte = [0u8; 1];
    let unit = match getrandom::fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    capped / 2 + capped.mul_f64(unit / 2.0)
}

/// One entry of a `list` answer, or a `get` body.
fn subscription(value: &Value) -> Result<Subscription, Error> {
    let appli = match value.get("appli") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .and_then(|code| u16::try_from(code).ok())
    .ok_or_else(|| malformed("subscription without a numeric `appli`"))?;
    let callback = match value.get("callbackurl") {
        Some(Value::String(url)) => url.clone(),
        _ => return Err(malformed("subscription without a `callbackurl`")),
    };
    let comment = match value.get("comment") {
        Some(Value::String(comment)) => Some(comment.clone()),
        _ => None,
    };
    Ok(Subscription {
        callback: Secret::new(callback),
        appli: Appli::from_code(appli),
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_rules_are_the_redirect_rules_with_their_own_error() {
        let strict = RedirectPolicy::Withings;
        assert!(check_callback("https://app.example.com/withings/notify/abc", strict).is_ok());
        for bad in [
            "http://app.example.com/n",
            "https://127.0.0.1/n",
            "https://localhost/n",
            "https://app.example.com:8443/n",
            "not a url",
        ] {
            match check_callback(bad, strict) {
                Err(Error::CallbackUrl { reason }) => assert!(!reason.contains(bad), "{reason}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let long = format!("https://app.example.com/{}", "x".repeat(240));
        assert!(matches!(
            check_callback(&long, strict),
            Err(Error::CallbackUrl { .. })
        ));
        let loopback = RedirectPolicy::AllowLoopback;
        assert!(check_callback("http://127.0.0.1:3001/n/secret", loopback).is_ok());
        assert!(check_callback("http://app.example.com:3001/n", loopback).is_err());
    }

    #[test]
    fn withings_messages_lose_the_callback_url_and_its_secret() {
        let url = "https://app.example.com/n/s3cr3t-s3cr3t";
        let error = Error::InvalidParams {
            status: 293,
            message: format!("The callback URL '{url}' is either unknown or invalid"),
        };
        let error = subscribe_error(redact(error, &[url]));
        let text = error.to_string();
        assert!(matches!(error, Error::CallbackRefused { .. }), "{error:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        let error = redact(
            Error::UnknownStatus {
                status: 1,
                message: "about …/s3cr3t-s3cr3t?x=1".into(),
            },
            &[url],
        );
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    /// Withings' message is cut to 200 characters before it is redacted: a long URL is cut
    /// inside the secret, and no piece of the secret may survive.
    #[test]
    fn a_callback_url_cut_inside_its_secret_loses_the_piece_too() {
        let secret = "Zq9".repeat(42); // 126 characters, as long as the receiver allows
        for base_len in [20, 60, 120, 160] {
            let base = format!("https://app.example.com/{}/", "b".repeat(base_len));
            let url = format!("{base}{secret}");
            let said = format!("The callback URL '{url}' is either unknown or invalid");
            let error = crate::status::classify(293, &said, None).expect("an error");
            let text = subscribe_error(redact(error, &[url.as_str()])).to_string();
            for window in secret.as_bytes().windows(6) {
                let piece = std::str::from_utf8(window).unwrap();
                assert!(!text.contains(piece), "base {base_len}: {text}");
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(350),
        };
        for (attempt, full) in [(1, 100), (2, 200), (3, 350), (9, 350)] {
            let d = backoff(retry, attempt);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
