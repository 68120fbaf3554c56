//! The callback Withings POSTs notifications to: a tower `Service` for any server.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::sync::mpsc;
use tower::Service;

use super::dedupe::{Dedupe, Key, Reservation, Reserved};
use super::network::{Network, PeerAddr};
use super::queue::Notifications;
use super::stats::{ReceiverStats, Stats, bump};
use super::{Action, Notification};
use crate::auth::WithingsAuth;
use crate::error::{BoxError, Error};
use crate::secret::Secret;
use crate::store::TokenStore;
use crate::token::UserId;

/// Configures a [`NotifyReceiver`]; see [`NotifyReceiver::builder`]. The receiver keeps it as
/// its settings.
#[derive(Debug)]
pub struct NotifyReceiverBuilder {
    secret: Secret,
    limits: Limits,
    networks: Vec<Network>,
    marker: Option<Marker>,
    intake: Option<crate::sync::Intake>,
}

/// What a receiver holds to: how many notifications wait for the app, how much of a body it
/// reads, how long an answer may take, and how long and how many delivered notifications it
/// remembers to answer their repeats.
#[derive(Debug, Clone, Copy)]
struct Limits {
    queue: usize,
    max_body: usize,
    deadline: Duration,
    dedupe_window: Duration,
    dedupe_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue: 1024,
            max_body: 16 * 1024,
            deadline: Duration::from_millis(1500),
            dedupe_window: Duration::from_secs(15 * 60),
            dedupe_capacity: 10_000,
        }
    }
}

/// How a revocation is recorded: in the store only, or through a handle (store and memory).
#[derive(Clone)]
enum Marker {
    Store(Arc<dyn TokenStore>),
    Auth(WithingsAuth),
}

impl fmt::Debug for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Marker::Store(_) => "Store",
            Marker::Auth(_) => "Auth",
        })
    }
}

impl Marker {
    /// Marks `user` (if stored and not marked yet): true if marked now.
    async fn mark(&self, user: UserId) -> Result<bool, Error> {
        match self {
            Marker::Auth(auth) => auth.mark_revoked(user).await,
            Marker::Store(store) => crate::store::mark_current(store.as_ref(), user).await,
        }
    }
}

impl NotifyReceiverBuilder {
    crate::setters::setters! {
        /// How many notifications may wait for the app (default 1024). When the queue is full the
        /// receiver answers 503 and Withings retries later: nothing is acknowledged and dropped.
        fn queue(capacity: usize) => limits.queue = capacity.max(1);

        /// The largest body read (default 16 KiB; Withings' forms are about 100 bytes). Larger
        /// bodies are answered 413 without being held.
        fn max_body(bytes: usize) => limits.max_body;

        /// Every answer is made within this (default 1.5 s, inside Withings' 2 s): a body that is
        /// slower to arrive, or a store slower to mark an unlinked user, gets 503 and a retry.
        fn deadline(deadline: Duration) => limits.deadline;
    }

    /// A notification delivered once is answered 200 but not delivered again if it comes back
    /// within this while (default 15 min; same `userid`, `appli`, `startdate`, `enddate`,
    /// `date` and `action`), remembering at most `capacity` of them (default 10 000; past that
    /// the oldest is forgotten). Withings retries a notification it thinks failed.
    pub fn dedupe(mut self, window: Duration, capacity: usize) -> Self {
        self.limits.dedupe_window = window;
        self.limits.dedupe_capacity = capacity.max(1);
        self
    }

    /// Accepts requests only from this network (call again for more). The peer address comes
    /// from a [`PeerAddr`] (or `SocketAddr`) request extension; without one, or outside every
    /// network, the answer is 403. Default: any source (the secret alone authenticates).
    pub fn allow_network(mut self, network: Network) -> Self {
        self.networks.push(network);
        self
    }

    crate::setters::setters! {
        /// Where the tokens are: on `action=unlink` or `delete` the user's record is marked with
        /// [`TokenStore::mark_needs_reauthorization`] (its stored refresh token is the one marked)
        /// before the notification is acknowledged, so layers fail their requests with
        /// [`Error::NeedsReauthorization`] at their next refresh. If the store fails, the answer is
        /// 503 and Withings retries. Prefer [`auth`](Self::auth) in the process that sends
        /// requests.
        fn store(store: Arc<dyn TokenStore>) => marker = Some(Marker::Store(store));

        /// As [`store`](Self::store), through the handle: the record is marked with
        /// [`WithingsAuth::mark_revoked`], so this handle's layers also fail the user's requests at
        /// once with [`Error::AccessRevoked`], sending nothing.
        fn auth(auth: &WithingsAuth) => marker = Some(Marker::Auth(auth.clone()));

        /// Inbox first: each notification is stored durably in the sync's inbox
        /// ([`SyncEngine::intake`](crate::sync::SyncEngine::intake)) before it is acknowledged;
        /// a store that fails or is slower than the deadline is a 503, so Withings retries. The
        /// queue then gets a copy only when it has room (a full queue is no longer a 503: the
        /// inbox holds the notification).
        fn intake(intake: crate::sync::Intake) => intake = Some(intake);
    }

    /// The receiver (the `Service` to mount) and the queue the app reads.
    ///
    /// # Errors
    ///
    /// [`Error::CallbackUrl`] if the secret is not 16 to 128 characters of `A-Z a-z 0-9 - _`
    /// (it goes into a URL path and must be hard to guess).
    pub fn build(self) -> Result<(NotifyReceiver, Notifications), Error> {
        let secret = self.secret.expose();
        let url_safe = secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !(16..=128).contains(&secret.len()) || !url_safe {
            return Err(Error::CallbackUrl {
                reason: "the notification secret must be 16 to 128 characters of A-Z, a-z, 0-9, - or _ (NotifyReceiver::random_secret makes one)".into(),
            });
        }
        let limits = self.limits;
        let (tx, rx) = mpsc::channel(limits.queue);
        let receiver = NotifyReceiver {
            inner: Arc::new(Inner {
                settings: self,
                tx,
                dedupe: Mutex::new(Dedupe::new(limits.dedupe_window, limits.dedupe_capacity)),
                stats: Stats::default(),
            }),
        };
        Ok((receiver, Notifications::new(rx)))
    }
}

/// Receives Withings notifications: a tower `Service<http::Request<B>>` for any server (axum's
/// `route_service`, hyper, …).
///
/// - It is authenticated by a **secret in the callback URL's last path segment**
///   (`https://app.example.com/withings/notify/<secret>`, see
///   [`callback_url`](Self::callback_url)), compared in constant time; a wrong or missing
///   secret is a 404 and nothing is delivered. Mount it on a route whose last segment is free
///   (axum: `route_service("/withings/notify/{secret}", receiver)`). Withings signs nothing,
///   so the secret (and optionally [`allow_network`](NotifyReceiverBuilder::allow_network))
///   is what tells its requests from anyone's.
/// - `HEAD` and `GET` (Withings' check of the URL) are answered 200 at once.
/// - A `POST` form becomes a [`Notification`] in the bounded queue ([`Notifications`]) and is
///   answered 200; when the queue is full, 503 so that Withings retries: never a 200 for a
///   notification that is then dropped. A repeat of a notification already delivered is
///   answered 200 and not queued again. With an [`intake`](NotifyReceiverBuilder::intake),
///   the 200 comes once the notification is durable in the sync's inbox instead.
/// - Malformed forms are 400, bodies over the cap 413, other methods 405; nothing panics.
/// - Every answer comes within the [`deadline`](NotifyReceiverBuilder::deadline), whatever the
///   app does with the queue.
/// - `action=unlink` / `delete` marks the user in the [`store`](NotifyReceiverBuilder::store)
///   before it is acknowledged, and is delivered like any notification, so the app is told.
///
/// The secret never appears in logs, `Debug` output or errors of this crate; keep it out of
/// your own access logs too (it is in the request path).
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use tower::ServiceExt;
/// use tower_withings::notify::{Appli, NotifyReceiver};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (receiver, mut notifications) = NotifyReceiver::builder(NotifyReceiver::random_secret())
///     .build()
///     .unwrap();
/// let callback = receiver.callback_url("https://app.example.com/withings/notify");
/// // What Withings sends (the path is the callback URL's):
/// let path = callback.expose().trim_start_matches("https://app.example.com");
/// let post = Request::post(path)
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body(Full::new(Bytes::from("userid=46865875&appli=1&startdate=1700000000&enddate=1700000001")))
///     .unwrap();
/// let response = receiver.clone().oneshot(post).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(notifications.recv().await.unwrap().appli, Appli::Weight);
///
/// // Without the secret: 404, nothing delivered.
/// let forged = Request::post("/withings/notify/guess")
///     .body(Full::new(Bytes::from("userid=1&appli=1")))
///     .unwrap();
/// assert_eq!(receiver.oneshot(forged).await.unwrap().status(), StatusCode::NOT_FOUND);
/// assert!(notifications.try_recv().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct NotifyReceiver {
    inner: Arc<Inner>,
}

struct Inner {
    /// What it was built with (the queue's capacity is the channel's).
    settings: NotifyReceiverBuilder,
    tx: mpsc::Sender<Notification>,
    dedupe: Mutex<Dedupe>,
    stats: Stats,
}

impl fmt::Debug for NotifyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyReceiver")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl NotifyReceiver {
    /// Starts configuring a receiver authenticated by `secret` (16 to 128 characters of
    /// `A-Z a-z 0-9 - _`; [`random_secret`](Self::random_secret) makes a good one). Keep the
    /// same secret across restarts: it is part of every subscription's callback URL.
    pub fn builder(secret: impl Into<Secret>) -> NotifyReceiverBuilder {
        NotifyReceiverBuilder {
            secret: secret.into(),
            limits: Limits::default(),
            networks: Vec::new(),
            marker: None,
            intake: None,
        }
    }

    /// 128 random bits, hex: a secret for [`builder`](Self::builder).
    pub fn random_secret() -> Secret {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Secret::new(crate::oauth::signature::hex(&bytes))
    }

    /// The callback URL to subscribe: `base` (where the receiver is mounted, e.g.
    /// `https://app.example.com/withings/notify`) with the secret as its last path segment.
    /// It is a [`Secret`]: whoever knows it can post notifications.
    pub fn callback_url(&self, base: &str) -> Secret {
        Secret::new(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            self.inner.settings.secret.expose()
        ))
    }

    /// What the receiver has answered so far.
    pub fn stats(&self) -> ReceiverStats {
        self.inner.stats.snapshot()
    }
}

/// The receiver's response future.
pub type ReceiverFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for NotifyReceiver
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ReceiverFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ReceiverFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.handle(request).await) })
    }
}

fn answer(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    if !text.is_empty() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

fn retry_later(text: &'static str) -> Response<Full<Bytes>> {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

impl Inner {
    async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let networks = &self.settings.networks;
        if !networks.is_empty() {
            let peer = (request.extensions().get::<PeerAddr>().map(|p| p.0))
                .or_else(|| request.extensions().get::<SocketAddr>().copied());
            if !peer.is_some_and(|p| networks.iter().any(|n| n.contains(p.ip()))) {
                bump(&self.stats.forbidden_source);
                tracing::debug!(peer = ?peer, "notification from outside the allowed networks refused");
                return answer(StatusCode::FORBIDDEN, "");
            }
        }
        // The secret is the last path segment; the comparison takes the same time wherever
        // the guess differs.
        let last = request.uri().path().rsplit('/').next().unwrap_or_default();
        if !self.settings.secret.ct_eq(last) {
            bump(&self.stats.wrong_secret);
            tracing::debug!("notification with a wrong or missing secret refused");
            return answer(StatusCode::NOT_FOUND, "");
        }
        match *request.method() {
            Method::HEAD | Method::GET => {
                bump(&self.stats.checks);
                return answer(StatusCode::OK, "");
            }
            Method::POST => {}
            _ => {
                bump(&self.stats.malformed);
                let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, "");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
                return response;
            }
        }
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default())
            .map(|v| v.split(';').next().unwrap_or_default().trim());
        if form_type.is_some_and(|t| !t.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
            bump(&self.stats.malformed);
            return answer(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected an application/x-www-form-urlencoded body\n",
            );
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.limits.max_body as u64) {
            bump(&self.stats.too_large);
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        match tokio::time::timeout(
            self.settings.limits.deadline,
            self.receive(request.into_body()),
        )
        .await
        {
            Ok(response) => response,
            Err(_) => {
                bump(&self.stats.unavailable);
                tracing::warn!(
                    deadline_ms = self.settings.limits.deadline.as_millis() as u64,
                    "notification not handled within the deadline; answering 503 so Withings retries"
                );
                retry_later("not handled in time, retry\n")
            }
        }
    }

    async fn receive<B>(&self, body: B) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let bytes = match Limited::new(body, self.settings.limits.max_body)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<LengthLimitError>() => {
                bump(&self.stats.too_large);
                return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
            }
            Err(_) => {
                bump(&self.stats.malformed);
                return answer(StatusCode::BAD_REQUEST, "body could not be read\n");
            }
        };
        let notification = match Notification::from_form(&bytes) {
            Ok(notification) => notification,
            Err(error) => {
                bump(&self.stats.malformed);
                tracing::debug!(%error, "malformed notification refused");
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(Full::new(Bytes::from(format!("{error}\n"))))
                    .unwrap_or_else(|_| answer(StatusCode::BAD_REQUEST, ""));
            }
        };
        let (user, appli) = (notification.user, notification.appli);
        let reservation = match Reservation::take(&self.dedupe, Key::of(&notification)) {
            Reserved::Fresh(reservation) => reservation,
            Reserved::Duplicate => {
                bump(&self.stats.duplicates);
                tracing::debug!(user = %user, appli = appli.code(), "repeated notification acknowledged, not delivered again");
                return answer(StatusCode::OK, "");
            }
            // The same notification is being handled right now, or the memory is full of
            // notifications in flight: let Withings come back.
            Reserved::Busy => {
                bump(&self.stats.unavailable);
                return retry_later("busy, retry\n");
            }
        };
        if notification.is_revocation()
            && let Some(marker) = &self.settings.marker
        {
            match marker.mark(user).await {
                Ok(true) => {
                    bump(&self.stats.users_marked);
                    tracing::info!(user = %user, action = notification.action.as_ref().map_or("", Action::as_str), "user revoked access; marked as needing re-authorization");
                }
                Ok(false) => {}
                Err(error) => {
                    bump(&self.stats.unavailable);
                    tracing::warn!(user = %user, %error, "could not mark a user who unlinked; answering 503 so Withings retries");
                    return retry_later("store unavailable, retry\n");
                }
            }
        }
        if let Some(intake) = &self.settings.intake {
            if let Err(error) = intake.accept(&notification).await {
                bump(&self.stats.unavailable);
                tracing::warn!(user = %user, appli = appli.code(), %error, "could not store a notification in the sync inbox; answering 503 so Withings retries");
                return retry_later("store unavailable, retry\n");
            }
            // Durable in the inbox: the queue's copy is a courtesy.
            let _ = self.tx.try_send(notification);
            reservation.commit();
            bump(&self.stats.delivered);
            return answer(StatusCode::OK, "");
        }
        match self.tx.try_send(notification) {
            Ok(()) => {
                reservation.commit();
                bump(&self.stats.delivered);
                tracing::debug!(user = %user, appli = appli.code(), "notification delivered");
                answer(StatusCode::OK, "")
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.stats.queue_full);
                tracing::warn!(user = %user, appli = appli.code(), "notification queue full; answering 503 so Withings retries");
                retry_later("queue full, retry\n")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&self.stats.queue_full);
                tracing::warn!(user = %user, appli = appli.code(), "notification queue closed; answering 503 so Withings retries");
                retry_later("not accepting notifications now, retry\n")
            }
        }
    }
}
