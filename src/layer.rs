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
use crate::refresh::{Reason, Slot, SnapshotState};
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
        let now = core.clock().now();
        let slot = core.refresher.slot(user, now);
        let current = slot.current.load();
        let stale = match current.as_deref() {
            Some(snapshot) => {
                if let Some(header) = snapshot.usable(now) {
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
    /// Every path that returns `Poll::Ready` moves to `Done` first, so a poll after completion
    /// never touches a finished inner future.
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<F, ResB>
    where
        ResB: Body,
    {
        Passthrough { #[pin] fut: F },
        Failed { error: Error },
        Calling { #[pin] fut: F },
        Peeking { parts: http::response::Parts, body: WithingsBody<ResB> },
        Slow { fut: BoxResponse<ResB> },
        Done,
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
        Self::new(State::Failed { error }, None)
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
                    let output = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let response = output.map_err(Into::into)?;
                    return Poll::Ready(Ok(response.map(WithingsBody::new)));
                }
                StateProj::Failed { .. } => {
                    let error = match this.state.as_mut().project_replace(State::Done) {
                        StateOwned::Failed { error } => error,
                        _ => Error::PolledAfterCompletion, // not reached: the state was Failed
                    };
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Calling { fut } => {
                    let output = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let (parts, body) = output.map_err(Into::into)?.into_parts();
                    let mut body = WithingsBody::for_response(&parts.headers, body);
                    match first_look(parts.status) {
                        Look::Failed => Response::from_parts(parts, body),
                        Look::ReadStatus => match body.poll_status(cx) {
                            // Usually the first chunk is already there: no move to Peeking.
                            Poll::Ready(status) => {
                                match settle(Response::from_parts(parts, body), status) {
                                    Ok(response) => return Poll::Ready(Ok(response)),
                                    Err(refused) => refused,
                                }
                            }
                            Poll::Pending => {
                                this.state.set(State::Peeking { parts, body });
                                return Poll::Pending;
                            }
                        },
                        Look::Pass => return Poll::Ready(Ok(Response::from_parts(parts, body))),
                    }
                }
                StateProj::Peeking { body, .. } => {
                    let status = ready!(body.poll_status(cx));
                    let StateOwned::Peeking { parts, body } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        // Not reached: the state was Peeking.
                        return Poll::Ready(Err(Error::PolledAfterCompletion.into()));
                    };
                    match settle(Response::from_parts(parts, body), status) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(refused) => refused,
                    }
                }
                StateProj::Slow { fut } => {
                    let output = ready!(fut.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
                StateProj::Done => return Poll::Ready(Err(Error::PolledAfterCompletion.into())),
            };
            // Withings refused the token (the state is `Done`): refresh and replay, if this
            // request can be; a body that cannot be sent twice gets its response at once.
            match this.retry.take() {
                Some(retry) if retry.replay.is_some() => this.state.set(State::Slow {
                    fut: Box::pin(retry.after_failure(failed)),
                }),
                Some(Retry {
                    core,
                    slot,
                    generation,
                    ..
                }) => return Poll::Ready(Ok(not_replayed(&core, slot, generation, failed))),
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
        let Some(mut request) = replay else {
            return Ok(not_replayed(&core, slot, generation, failed));
        };
        drop(failed);
        let refresher = &core.refresher;
        let snapshot = refresher
            .renew(&slot, Some(generation), Reason::Reactive)
            .await?;
        let header = snapshot.header()?;
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

/// A refused request whose body cannot be sent twice: its response goes back at once, as it
/// came and marked [`NotReplayed`], while a detached task refreshes for the next request (the
/// caller neither waits for it nor, by going away, aborts it).
fn not_replayed<B>(
    core: &Core,
    slot: Arc<Slot>,
    generation: u64,
    mut failed: Response<B>,
) -> Response<B> {
    let refresher = &core.refresher;
    Metrics::bump(&refresher.metrics.not_replayed);
    // The refresh runs detached for the next request; this caller does not wait for it.
    refresher.kick(&slot, Some(generation), Reason::Reactive);
    failed.extensions_mut().insert(NotReplayed {
        reason: "the request body is a stream and cannot be sent twice",
    });
    failed
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
    authorize(&mut request, snapshot.header()?);
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

    use std::pin::pin;
    use std::task::Waker;
    use std::time::Duration;

    use http_body::Frame;
    use http_body_util::Full;
    use tower_test::mock;

    use crate::{Clock, Credentials, ManualClock, Secret, Token, WithingsAuth};

    const API: &str = "https://wbsapi.withings.net";
    const USER: UserId = UserId(7);

    /// A response body of one chunk; when `late`, the chunk is not there at the first poll.
    #[derive(Debug)]
    struct TestBody {
        chunk: Option<Bytes>,
        late: bool,
    }

    impl TestBody {
        fn json(text: &'static str) -> Self {
            TestBody {
                chunk: Some(Bytes::from_static(text.as_bytes())),
                late: false,
            }
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::take(&mut self.late) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.chunk.take().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    type Req = Request<Full<Bytes>>;
    type Handle = mock::Handle<Req, Response<TestBody>>;
    type Fut = ResponseFuture<mock::Mock<Req, Response<TestBody>>, Full<Bytes>, TestBody>;

    const OK: &str = r#"{"status":0,"body":{}}"#;
    const REFUSED: &str = r#"{"status":401,"body":{},"error":"invalid_token"}"#;

    fn token(clock: &ManualClock, access: &str) -> Token {
        Token {
            user_id: USER,
            access_token: Secret::new(access),
            refresh_token: Secret::new(format!("refresh-{access}")),
            expires_at: clock.now() + Duration::from_secs(3 * 3600),
            scope: "user.metrics".into(),
        }
    }

    /// A handle on Withings' public cloud whose token calls all fail: none is expected.
    fn auth(clock: &ManualClock) -> WithingsAuth {
        WithingsAuth::builder(Credentials::new("client", "secret"))
            .clock(clock.clone())
            .build(tower::service_fn(|_: Req| async {
                Err::<Response<Full<Bytes>>, BoxError>("no token call expected".into())
            }))
    }

    fn request(url: &str) -> Req {
        let mut request = Request::post(url)
            .body(Full::new(Bytes::from_static(b"action=getmeas")))
            .unwrap();
        request.extensions_mut().insert(USER);
        request
    }

    /// Calls the layer over a mock service with `request`.
    fn send(auth: &WithingsAuth, request: Req) -> (Fut, Handle) {
        let (mut service, handle) = mock::spawn_with(|mock| auth.layer().layer(mock));
        assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
        (service.call(request), handle)
    }

    /// Answers the next request the mock receives; returns its bearer header.
    async fn answer(handle: &mut Handle, status: StatusCode, body: TestBody) -> Option<String> {
        let (request, reply) = handle.next_request().await.expect("a request");
        let mut response = Response::new(body);
        *response.status_mut() = status;
        reply.send_response(response);
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// The future completed: every later poll is `PolledAfterCompletion`, never a panic.
    fn assert_done<R>(mut fut: Pin<&mut impl Future<Output = Result<R, BoxError>>>) {
        for _ in 0..2 {
            match poll_once(fut.as_mut()) {
                Poll::Ready(Err(error)) => assert!(
                    matches!(error.downcast_ref(), Some(Error::PolledAfterCompletion)),
                    "{error}"
                ),
                Poll::Ready(Ok(_)) => panic!("completed twice"),
                Poll::Pending => panic!("pending after completion"),
            }
        }
    }

    #[tokio::test]
    async fn passthrough_is_done_after_completion() {
        let auth = auth(&ManualClock::new());
        let (fut, mut handle) = send(&auth, request("https://example.com/elsewhere"));
        let mut fut = pin!(fut);
        assert_eq!(
            answer(&mut handle, StatusCode::OK, TestBody::json(OK)).await,
            None
        );
        assert!(fut.as_mut().await.is_ok());
        assert_done(fut);
        // An inner error completes it too.
        let (fut, mut handle) = send(&auth, request("https://example.com/elsewhere"));
        let mut fut = pin!(fut);
        handle.next_request().await.unwrap().1.send_error("down");
        assert!(fut.as_mut().await.is_err());
        assert_done(fut);
    }

    #[tokio::test]
    async fn failed_is_done_after_completion() {
        let auth = auth(&ManualClock::new());
        let mut no_user = request(&format!("{API}/measure"));
        no_user.extensions_mut().remove::<UserId>();
        let (fut, _handle) = send(&auth, no_user);
        let mut fut = pin!(fut);
        let error = fut.as_mut().await.unwrap_err();
        assert!(
            matches!(error.downcast_ref(), Some(Error::NoUser)),
            "{error}"
        );
        assert_done(fut);
    }

    #[tokio::test]
    async fn calling_is_done_after_completion() {
        let clock = ManualClock::new();
        let auth = auth(&clock);
        auth.import(token(&clock, "a")).await.unwrap();
        // Status read from the body, any other HTTP status, and an inner error.
        for status in [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE] {
            let (fut, mut handle) = send(&auth, request(&format!("{API}/measure")));
            let mut fut = pin!(fut);
            let bearer = answer(&mut handle, status, TestBody::json(OK)).await;
            assert_eq!(bearer.as_deref(), Some("Bearer a"));
            assert_eq!(fut.as_mut().await.unwrap().status(), status);
            assert_done(fut);
        }
        let (fut, mut handle) = send(&auth, request(&format!("{API}/measure")));
        let mut fut = pin!(fut);
        handle.next_request().await.unwrap().1.send_error("down");
        assert!(fut.as_mut().await.is_err());
        assert_done(fut);
    }

    #[tokio::test]
    async fn calling_refused_then_replayed_is_done_after_completion() {
        let clock = ManualClock::new();
        let auth = auth(&clock);
        auth.import(token(&clock, "a")).await.unwrap();
        let (fut, mut handle) = send(&auth, request(&format!("{API}/measure")));
        let mut fut = pin!(fut);
        let (_, reply) = handle.next_request().await.unwrap();
        // A newer token exists by the time the refusal arrives: the replay needs no refresh.
        auth.import(token(&clock, "b")).await.unwrap();
        reply.send_response(Response::new(TestBody::json(REFUSED)));
        let (response, bearer) = tokio::join!(
            fut.as_mut(),
            answer(&mut handle, StatusCode::OK, TestBody::json(OK))
        );
        assert_eq!(bearer.as_deref(), Some("Bearer b"));
        assert!(response.unwrap().status().is_success());
        assert_eq!(auth.metrics().replays, 1);
        assert_done(fut);
    }

    #[tokio::test]
    async fn peeking_is_done_after_completion() {
        let clock = ManualClock::new();
        let auth = auth(&clock);
        auth.import(token(&clock, "a")).await.unwrap();
        let (fut, mut handle) = send(&auth, request(&format!("{API}/measure")));
        let mut fut = pin!(fut);
        let late = TestBody {
            late: true,
            ..TestBody::json(OK)
        };
        answer(&mut handle, StatusCode::OK, late).await;
        assert!(poll_once(fut.as_mut()).is_pending(), "now peeking");
        assert!(fut.as_mut().await.is_ok());
        assert_done(fut);
    }

    #[tokio::test]
    async fn slow_is_done_after_completion() {
        let clock = ManualClock::new();
        let auth = auth(&clock);
        // In the store but not loaded: the first request loads it on the slow path.
        auth.store()
            .put(&token(&clock, "a"), clock.now())
            .await
            .unwrap();
        let (fut, mut handle) = send(&auth, request(&format!("{API}/measure")));
        let mut fut = pin!(fut);
        let (response, bearer) = tokio::join!(
            fut.as_mut(),
            answer(&mut handle, StatusCode::OK, TestBody::json(OK))
        );
        assert_eq!(bearer.as_deref(), Some("Bearer a"));
        assert!(response.is_ok());
        assert_done(fut);
    }

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
