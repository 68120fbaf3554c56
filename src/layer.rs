//! [`WithingsAuthLayer`]: bearer injection, auth-failure detection, refresh and one replay.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceExt};

use crate::auth::Core;
use crate::body::{NotReplayed, ReplayBody, WithingsBody};
use crate::error::{BoxError, Error};
use crate::metrics::Metrics;
use crate::oauth::{SIGNATURE_PATH, TOKEN_PATH};
use crate::refresh::{Reason, Slot, Snapshot, SnapshotState};
use crate::status::is_access_token_failure;
use crate::token::UserId;

/// Adds the right Withings user's bearer token to every Withings API request, refreshing it
/// once per user when it expires or Withings refuses it, and replaying the request once.
///
/// Made by [`crate::WithingsAuth::layer`]. Requests to any other host, and to the token and
/// signature endpoints, pass through untouched: the token goes nowhere else.
#[derive(Debug, Clone)]
pub struct WithingsAuthLayer {
    core: Arc<Core>,
    user: Option<UserId>,
}

impl WithingsAuthLayer {
    pub(crate) fn new(core: Arc<Core>, user: Option<UserId>) -> Self {
        WithingsAuthLayer { core, user }
    }
}

impl<S> Layer<S> for WithingsAuthLayer {
    type Service = WithingsAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithingsAuthService {
            core: Arc::clone(&self.core),
            user: self.user,
            inner,
        }
    }
}

/// The service [`WithingsAuthLayer`] makes. Its errors are `BoxError`s holding either the inner
/// service's error or a [`crate::Error`] (downcast to tell them apart).
#[derive(Debug, Clone)]
pub struct WithingsAuthService<S> {
    core: Arc<Core>,
    user: Option<UserId>,
    inner: S,
}

impl<S> WithingsAuthService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for WithingsAuthService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Send,
{
    type Response = Response<WithingsBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let core = &self.core;
        let for_withings = core
            .endpoints()
            .api_path(request.uri())
            .is_some_and(|path| path != TOKEN_PATH && path != SIGNATURE_PATH);
        if !for_withings {
            return ResponseFuture::new(
                State::Passthrough {
                    fut: self.inner.call(request),
                },
                None,
            );
        }
        let user = request.extensions().get::<UserId>().copied().or(self.user);
        let Some(user) = user else {
            return ResponseFuture::failed(Error::NoUser);
        };
        let slot = core.slot(user);
        let current = slot.current.load();
        let stale = match current.as_deref() {
            Some(snapshot) => {
                if let Some(header) = snapshot.usable(core.clock().now()) {
                    // The hot path: a good token, no lock, no refresh.
                    authorize(&mut request, header);
                    let retry = Retry {
                        core: Arc::clone(core),
                        slot,
                        generation: snapshot.generation,
                        replay: replay_copy(&request),
                        service: self.inner.clone(),
                    };
                    return ResponseFuture::new(
                        State::Calling {
                            fut: self.inner.call(request),
                        },
                        Some(retry),
                    );
                }
                if let SnapshotState::Terminal(error) = &snapshot.state {
                    return ResponseFuture::failed(error.clone());
                }
                Some(snapshot.generation)
            }
            None => None,
        };
        drop(current);
        // Slow path: refresh (or load) first. The readied service goes with the request.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let reason = if stale.is_some() {
            Reason::Proactive
        } else {
            Reason::Load
        };
        let core = Arc::clone(core);
        ResponseFuture::new(
            State::Slow {
                fut: Box::pin(send_fresh(core, slot, service, request, stale, reason)),
            },
            None,
        )
    }
}

type BoxResponse<ResB> =
    Pin<Box<dyn Future<Output = Result<Response<WithingsBody<ResB>>, BoxError>> + Send>>;

pin_project! {
    /// The future of [`WithingsAuthService`]. On the hot path it is a plain state machine
    /// around the inner future; only a refresh or replay boxes a future.
    pub struct ResponseFuture<S, B, ResB>
    where
        S: Service<Request<B>>,
        ResB: Body,
    {
        #[pin]
        state: State<S::Future, ResB>,
        retry: Option<Retry<S, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, ResB>
    where
        ResB: Body,
    {
        Passthrough { #[pin] fut: F },
        Failed { error: Option<Error> },
        Calling { #[pin] fut: F },
        Peeking { parts: Option<http::response::Parts>, body: Option<WithingsBody<ResB>> },
        Slow { fut: BoxResponse<ResB> },
    }
}

impl<S, B, ResB> ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>>,
    ResB: Body,
{
    fn new(state: State<S::Future, ResB>, retry: Option<Retry<S, B>>) -> Self {
        ResponseFuture { state, retry }
    }

    fn failed(error: Error) -> Self {
        Self::new(State::Failed { error: Some(error) }, None)
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Send,
{
    type Output = Result<Response<WithingsBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let failed = match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(response.map(WithingsBody::new)));
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or(Error::PolledAfterCompletion);
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Calling { fut } => {
                    let (parts, body) = ready!(fut.poll(cx)).map_err(Into::into)?.into_parts();
                    let mut body = WithingsBody::for_response(&parts.headers, body);
                    match first_look(parts.status) {
                        Look::Failed => Response::from_parts(parts, body),
                        Look::ReadStatus => match body.poll_status(cx) {
                            // Usually the first chunk is already there: no move to Peeking.
                            Poll::Ready(status) => {
                                // As after Peeking: polled again, the future reports an error.
                                this.state.set(State::Failed { error: None });
                                match settle(Response::from_parts(parts, body), status) {
                                    Ok(response) => return Poll::Ready(Ok(response)),
                                    Err(refused) => refused,
                                }
                            }
                            Poll::Pending => {
                                this.state.set(State::Peeking {
                                    parts: Some(parts),
                                    body: Some(body),
                                });
                                return Poll::Pending;
                            }
                        },
                        Look::Pass => return Poll::Ready(Ok(Response::from_parts(parts, body))),
                    }
                }
                StateProj::Peeking { parts, body } => {
                    let status = match body.as_mut() {
                        Some(body) => ready!(body.poll_status(cx)),
                        None => None,
                    };
                    let (Some(parts), Some(body)) = (parts.take(), body.take()) else {
                        return Poll::Ready(Err(Error::PolledAfterCompletion.into()));
                    };
                    match settle(Response::from_parts(parts, body), status) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(refused) => refused,
                    }
                }
                StateProj::Slow { fut } => return fut.as_mut().poll(cx),
            };
            // Withings refused the token: refresh and replay, if this request can be.
            match this.retry.take() {
                Some(retry) => this.state.set(State::Slow {
                    fut: Box::pin(retry.after_failure(failed)),
                }),
                None => return Poll::Ready(Ok(failed)),
            }
        }
    }
}

/// A response whose body status is known: `Ok` goes to the caller, `Err` was refused.
fn settle<B>(response: Response<B>, status: Option<i64>) -> Result<Response<B>, Response<B>> {
    if status.is_some_and(is_access_token_failure) {
        Err(response)
    } else {
        Ok(response)
    }
}

/// What a response's HTTP status says before its body is read.
enum Look {
    /// HTTP 401: the token was refused.
    Failed,
    /// HTTP 200: the outcome is the body's `status`.
    ReadStatus,
    /// Anything else goes to the caller as it is.
    Pass,
}

fn first_look(status: StatusCode) -> Look {
    match status {
        StatusCode::UNAUTHORIZED => Look::Failed,
        StatusCode::OK => Look::ReadStatus,
        _ => Look::Pass,
    }
}

/// Reads a response's outcome: the response (body intact) and the auth-failure status, if any.
async fn inspect<ResB>(response: Response<ResB>) -> (Response<WithingsBody<ResB>>, Option<i64>)
where
    ResB: Body<Data = Bytes> + Unpin,
{
    let (parts, body) = response.into_parts();
    let mut body = WithingsBody::for_response(&parts.headers, body);
    let failure = match first_look(parts.status) {
        Look::Failed => Some(401),
        Look::ReadStatus => poll_fn(|cx| body.poll_status(cx))
            .await
            .filter(|s| is_access_token_failure(*s)),
        Look::Pass => None,
    };
    (Response::from_parts(parts, body), failure)
}

/// What a replay needs, kept from the first send.
struct Retry<S, B> {
    core: Arc<Core>,
    slot: Arc<Slot>,
    /// The token generation the first send used.
    generation: u64,
    /// A copy of the request as first sent, if its body can be sent twice.
    replay: Option<Request<B>>,
    service: S,
}

impl<S, B, ResB> Retry<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Send,
{
    /// After Withings refused the token: one refresh (shared, skipped if a newer token already
    /// exists) and one replay. A second refusal is an error, never a loop.
    async fn after_failure(
        self,
        failed: Response<WithingsBody<ResB>>,
    ) -> Result<Response<WithingsBody<ResB>>, BoxError> {
        let Retry {
            core,
            slot,
            generation,
            replay,
            mut service,
        } = self;
        let refresher = &core.refresher;
        let Some(mut request) = replay else {
            // Refresh for the next request, but hand back this response as it came.
            let _ = refresher
                .renew(&slot, Some(generation), Reason::Reactive)
                .await;
            Metrics::bump(&refresher.metrics.not_replayed);
            let mut failed = failed;
            failed.extensions_mut().insert(NotReplayed {
                reason: "the request body is a stream and cannot be sent twice",
            });
            return Ok(failed);
        };
        drop(failed);
        let snapshot = refresher
            .renew(&slot, Some(generation), Reason::Reactive)
            .await?;
        let header = ready_header(&snapshot);
        authorize(&mut request, header);
        Metrics::bump(&refresher.metrics.replays);
        tracing::debug!(user = %slot_user(&request), generation = snapshot.generation, "replaying after refresh");
        let response = service
            .ready()
            .await
            .map_err(Into::into)?
            .call(request)
            .await
            .map_err(Into::into)?;
        match inspect(response).await {
            (_, Some(status)) => Err(Error::AccessTokenInvalid { status }.into()),
            (response, None) => Ok(response),
        }
    }
}

/// The slow path: get a usable token (load or refresh), send, and replay once if refused.
async fn send_fresh<S, B, ResB>(
    core: Arc<Core>,
    slot: Arc<Slot>,
    mut service: S,
    mut request: Request<B>,
    stale: Option<u64>,
    reason: Reason,
) -> Result<Response<WithingsBody<ResB>>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Send,
{
    let snapshot = core.refresher.renew(&slot, stale, reason).await?;
    authorize(&mut request, ready_header(&snapshot));
    let replay = replay_copy(&request);
    // `service` was readied by `poll_ready` before `call` handed it here.
    let response = service.call(request).await.map_err(Into::into)?;
    match inspect(response).await {
        (response, None) => Ok(response),
        (failed, Some(_)) => {
            let retry = Retry {
                core,
                slot,
                generation: snapshot.generation,
                replay,
                service,
            };
            retry.after_failure(failed).await
        }
    }
}

/// The header of a snapshot that `renew` returned (always `Ready`).
fn ready_header(snapshot: &Snapshot) -> &HeaderValue {
    match &snapshot.state {
        SnapshotState::Ready { header, .. } => header,
        SnapshotState::Terminal(_) => {
            static NONE: HeaderValue = HeaderValue::from_static("");
            &NONE
        }
    }
}

fn slot_user<B>(request: &Request<B>) -> String {
    request
        .extensions()
        .get::<UserId>()
        .map_or_else(|| "bound".to_owned(), UserId::to_string)
}

/// Sets the bearer header and drops any legacy `access_token` query parameter, so a stale
/// token in the URL can never override the header.
fn authorize<B>(request: &mut Request<B>, header: &HeaderValue) {
    if request
        .uri()
        .query()
        .is_some_and(|q| q.contains("access_token"))
    {
        *request.uri_mut() = without_access_token(request.uri());
    }
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, header.clone());
}

fn without_access_token(uri: &Uri) -> Uri {
    let query = uri.query().unwrap_or_default();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            percent_encoding::percent_decode_str(key).decode_utf8_lossy() != "access_token"
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// A copy of the request to send again, when its body allows.
fn replay_copy<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_query_parameter_is_removed() {
        let strip = |u: &str| without_access_token(&u.parse().unwrap()).to_string();
        assert_eq!(
            strip("https://h/measure?action=getmeas&access_token=old&x=1"),
            "https://h/measure?action=getmeas&x=1"
        );
        assert_eq!(
            strip("https://h/measure?access_token=old"),
            "https://h/measure"
        );
        assert_eq!(
            strip("https://h/m?access%5Ftoken=old&a=b"),
            "https://h/m?a=b"
        );
        assert_eq!(
            strip("https://h/m?my_access_token=keep"),
            "https://h/m?my_access_token=keep"
        );
    }
}
