//! [`ResponseFuture`]: the answer to a request through [`WithingsAuthService`](super::WithingsAuthService).
//!
//! On the hot path it is a small state machine around the inner future: the inner future, and
//! a pointer to what a replay would need. The response is classified by one step,
//! `poll_refusal`: HTTP 401, or HTTP 200 whose body `status` is an access-token failure. Only a
//! body whose status is not in its first chunk, a refresh, or a replay allocate a state of
//! their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;

use super::bearer::authorize;
use super::classify::{ResponseMode, Verdict, answer, inspect, poll_refusal};
use super::inner::InnerService;
use super::replay::{CloneBody, Replay, RequestCopy};
use super::shared::Shared;
use crate::body::{StatusReader, WithingsBody, status_error};
use crate::budget::{BudgetFuture, BudgetService};
use crate::error::{BoxError, Error};
use crate::refresh::Reason;
use crate::token::UserId;

type BoxResponse<ResB> =
    Pin<Box<dyn Future<Output = Result<Response<WithingsBody<ResB>>, BoxError>> + Send>>;

pin_project! {
    /// The future of [`WithingsAuthService`](super::WithingsAuthService).
    ///
    /// Polled after it completed, it returns [`Error::PolledAfterCompletion`].
    pub struct ResponseFuture<S, B, ResB>
    where
        S: Service<Request<B>>,
        ResB: Body,
    {
        #[pin]
        state: State<BudgetFuture<S::Future, S::Response>, ResB>,
        // Boxed: most requests never replay, and the future stays small to move.
        replay: Option<Box<Replay<S, B>>>,
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
        Peeking { response: Box<(Parts, StatusReader<ResB>)> },
        Slow { fut: BoxResponse<ResB> },
        Done,
    }
}

impl<S, B, ResB> ResponseFuture<S, B, ResB>
where
    S: Service<Request<B>>,
    ResB: Body,
{
    pub(super) fn passthrough(fut: BudgetFuture<S::Future, S::Response>) -> Self {
        ResponseFuture {
            state: State::Passthrough { fut },
            replay: None,
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error },
            replay: None,
        }
    }

    pub(super) fn calling(
        fut: BudgetFuture<S::Future, S::Response>,
        replay: Box<Replay<S, B>>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            replay: Some(replay),
        }
    }
}

impl<S, B, ResB> ResponseFuture<S, B, ResB>
where
    S: InnerService<B, ResB>,
    B: Send + 'static,
    ResB: Body<Data = Bytes, Error: Send> + Unpin + Send + 'static,
{
    /// The slow path: get a usable token (load or refresh), send, and replay once if refused.
    pub(super) fn slow<P: CloneBody<B> + Send + 'static>(
        shared: Arc<Shared>,
        policy: P,
        mode: ResponseMode,
        user: UserId,
        service: BudgetService<S>,
        request: Request<B>,
        need: Need,
    ) -> Self {
        ResponseFuture {
            state: State::Slow {
                fut: Box::pin(send_fresh(
                    shared, policy, mode, user, service, request, need,
                )),
            },
            replay: None,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B, ResB>
where
    S: InnerService<B, ResB>,
    B: Send + 'static,
    ResB: Body<Data = Bytes, Error: Send> + Unpin + Send + 'static,
{
    type Output = Result<Response<WithingsBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let refused = match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => {
                    let output = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let response = output?;
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
                    let (parts, body) = output?.into_parts();
                    let mut body = StatusReader::new(&parts.headers, body);
                    let budget = this.replay.as_ref().map(|r| &r.shared.budget);
                    match poll_refusal(parts.status, &mut body, cx, budget) {
                        // Usually the first chunk is already there: no move to Peeking.
                        Poll::Ready(Verdict::Answer(status)) => {
                            let response = Response::from_parts(parts, body.into_body());
                            match error_status(this.replay, status) {
                                None => return Poll::Ready(Ok(response)),
                                Some(status) => {
                                    this.state.set(failing(response, status));
                                    continue;
                                }
                            }
                        }
                        Poll::Ready(Verdict::Refused(status)) => {
                            (Response::from_parts(parts, body.into_body()), status)
                        }
                        Poll::Ready(Verdict::NotFound) => {
                            return Poll::Ready(Err(Error::EndpointNotFound.into()));
                        }
                        Poll::Pending => {
                            this.state.set(State::Peeking {
                                response: Box::new((parts, body)),
                            });
                            return Poll::Pending;
                        }
                    }
                }
                StateProj::Peeking { response } => {
                    let (parts, body) = &mut **response;
                    let budget = this.replay.as_ref().map(|r| &r.shared.budget);
                    let refusal = ready!(poll_refusal(parts.status, body, cx, budget));
                    let StateOwned::Peeking { response } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        // Not reached: the state was Peeking.
                        return Poll::Ready(Err(Error::PolledAfterCompletion.into()));
                    };
                    let (parts, body) = *response;
                    let response = Response::from_parts(parts, body.into_body());
                    match refusal {
                        Verdict::Answer(status) => match error_status(this.replay, status) {
                            None => return Poll::Ready(Ok(response)),
                            Some(status) => {
                                this.state.set(failing(response, status));
                                continue;
                            }
                        },
                        Verdict::Refused(status) => (response, status),
                        Verdict::NotFound => {
                            return Poll::Ready(Err(Error::EndpointNotFound.into()));
                        }
                    }
                }
                StateProj::Slow { fut } => {
                    let output = ready!(fut.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
                StateProj::Done => return Poll::Ready(Err(Error::PolledAfterCompletion.into())),
            };
            // Withings refused the token (the state is `Done`): refresh and replay, if this request
            // can be; a body that cannot be sent twice gets its answer at once (`give_back`).
            crate::metrics::emit("withings_refusals_total");
            let (refused, status) = refused;
            let Some(mut replay) = this.replay.take() else {
                return Poll::Ready(Ok(refused));
            };
            let Some(copy) = replay.copy.take() else {
                return Poll::Ready(replay.give_back(refused, status));
            };
            drop(refused);
            // The replay goes through the budget too (unless the layer was made without it).
            let (budget, counting) = (Arc::clone(&replay.shared.budget), replay.budgeted);
            let replay = replay.through(|service| BudgetService::new(budget, counting, service));
            this.state.set(State::Slow {
                fut: Box::pin(replay.resend(copy)),
            });
            // The next turn polls the replay.
        }
    }
}

/// The body status that makes an answer an error for this request's layer, if any.
fn error_status<S, B>(replay: &Option<Box<Replay<S, B>>>, status: Option<i64>) -> Option<i64> {
    replay.as_ref()?.mode.error_status(status)
}

/// The state that fails with the typed error of an answer's body `status` (its message may be
/// further in the body, hence a future).
fn failing<F, ResB>(response: Response<WithingsBody<ResB>>, status: i64) -> State<F, ResB>
where
    ResB: Body<Data = Bytes, Error: Send> + Unpin + Send + 'static,
{
    State::Slow {
        fut: Box::pin(async move { Err(status_error(response, status).await.into()) }),
    }
}

/// What the slow path needs before it sends.
pub(super) enum Need {
    /// A token: none is loaded (`None`), or the one of this generation is expiring.
    Token(Option<u64>),
    /// Nothing: the token was usable when the request came.
    Usable {
        header: HeaderValue,
        generation: u64,
    },
}

/// The slow path: get a usable token (load or refresh), send through `service` (which takes
/// the budget slot), and replay once if refused. A 601 answer pauses `budget`.
pub(super) async fn send_fresh<S, P, B, ResB>(
    shared: Arc<Shared>,
    policy: P,
    mode: ResponseMode,
    user: UserId,
    mut service: S,
    mut request: Request<B>,
    need: Need,
) -> Result<Response<WithingsBody<ResB>>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>, Error: Into<BoxError>>,
    P: CloneBody<B>,
    ResB: Body<Data = Bytes> + Unpin,
{
    let (header, generation) = match need {
        Need::Token(stale) => {
            let reason = if stale.is_some() {
                Reason::Proactive
            } else {
                Reason::Load
            };
            let snapshot = shared.refresher.renew_user(user, stale, reason).await?;
            (snapshot.header()?.clone(), snapshot.generation)
        }
        Need::Usable { header, generation } => (header, generation),
    };
    let own_user = request.extensions().get::<UserId>().copied();
    let copy = RequestCopy::of(&request, &policy, own_user);
    authorize(&mut request, header);
    crate::metrics::emit("withings_requests_total");
    // `service` was readied (`poll_ready`) before it was handed here.
    let response = service.call(request).await.map_err(Into::into)?;
    match inspect(response, &shared.budget).await {
        (response, Verdict::Answer(status)) => answer(response, status, mode).await,
        (_, Verdict::NotFound) => Err(Error::EndpointNotFound.into()),
        (refused, Verdict::Refused(status)) => {
            let replay = Replay {
                shared,
                budgeted: true,
                user,
                generation,
                copy: None,
                mode,
                service,
            };
            match copy {
                Some(copy) => {
                    drop(refused);
                    replay.resend(copy).await
                }
                None => replay.give_back(refused, status),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::pin::pin;
    use std::task::Waker;
    use std::time::Duration;

    use http::{StatusCode, header};
    use http_body::Frame;
    use http_body_util::Full;
    use tower::Layer;
    use tower_test::mock;

    use crate::{Credentials, Secret, Token, WithingsAuth, clock::Clock, clock::ManualClock};

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

    /// A handle (as [`auth`]) holding the user's token `a`, and its clock.
    async fn signed_in() -> (ManualClock, WithingsAuth) {
        let clock = ManualClock::new();
        let auth = auth(&clock);
        auth.import(token(&clock, "a")).await.unwrap();
        (clock, auth)
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

    /// The future fails with a crate [`Error`] that `expected` accepts, and is done after it.
    async fn assert_fails_then_done<R: std::fmt::Debug>(
        mut fut: Pin<&mut impl Future<Output = Result<R, BoxError>>>,
        expected: impl Fn(&Error) -> bool,
    ) {
        let error = fut.as_mut().await.unwrap_err();
        assert!(error.downcast_ref().is_some_and(expected), "{error}");
        assert_done(fut);
    }

    #[tokio::test]
    async fn passthrough_is_done_after_completion() {
        let auth = auth(&ManualClock::new());
        // Another host, and the request names no user (one that does is refused unsent).
        let elsewhere = || {
            let mut request = request("https://example.com/elsewhere");
            request.extensions_mut().remove::<UserId>();
            request
        };
        let (fut, mut handle) = send(&auth, elsewhere());
        let mut fut = pin!(fut);
        assert_eq!(
            answer(&mut handle, StatusCode::OK, TestBody::json(OK)).await,
            None
        );
        assert!(fut.as_mut().await.is_ok());
        assert_done(fut);
        // An inner error completes it too.
        let (fut, mut handle) = send(&auth, elsewhere());
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
        let fut = pin!(fut);
        assert_fails_then_done(fut, |e| matches!(e, Error::NoUser)).await;
    }

    #[tokio::test]
    async fn calling_is_done_after_completion() {
        let (_, auth) = signed_in().await;
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

    type AxumReq = Request<axum::body::Body>;

    fn axum_request() -> AxumReq {
        let mut request = Request::post(format!("{API}/measure"))
            .body(axum::body::Body::from("action=getmeas"))
            .unwrap();
        request.extensions_mut().insert(USER);
        request
    }

    /// A body type of another crate (`axum::body::Body`, no `ReplayBody`) goes through the
    /// layer with a clone policy, and a refused request is replayed with the copy it makes.
    #[tokio::test]
    async fn a_foreign_body_replays_through_a_clone_policy() {
        let (clock, auth) = signed_in().await;
        let layer = auth
            .layer()
            .clone_body_with(|_: &axum::body::Body| Some(axum::body::Body::from("action=getmeas")));
        let (mut service, mut handle) =
            mock::spawn_with::<AxumReq, Response<TestBody>, _, _>(|mock| layer.layer(mock));
        assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
        let mut fut = pin!(service.call(axum_request()));
        let (_, reply) = handle.next_request().await.unwrap();
        auth.import(token(&clock, "b")).await.unwrap();
        reply.send_response(Response::new(TestBody::json(REFUSED)));
        let replayed = async {
            let (request, reply) = handle.next_request().await.expect("a replay");
            reply.send_response(Response::new(TestBody::json(OK)));
            let bearer = request.headers()[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            (bearer, body)
        };
        let (response, (bearer, body)) = tokio::join!(fut.as_mut(), replayed);
        assert!(response.unwrap().status().is_success());
        assert_eq!(bearer, "Bearer b");
        assert_eq!(&body[..], b"action=getmeas");
        assert_eq!(auth.metrics().replays, 1);
    }

    /// `never_replay`: any body type, and a refusal fails at once with `Error::NotReplayed`
    /// (or, with `not_replayed_as_response`, comes back marked).
    #[tokio::test]
    async fn never_replay_takes_any_body_and_gives_the_refusal_back() {
        let (_, auth) = signed_in().await;
        for as_response in [false, true] {
            let mut layer = auth.layer().never_replay();
            if as_response {
                layer = layer.not_replayed_as_response();
            }
            let (mut service, mut handle) =
                mock::spawn_with::<AxumReq, Response<TestBody>, _, _>(|mock| layer.layer(mock));
            assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
            let fut = service.call(axum_request());
            let (_, reply) = handle.next_request().await.unwrap();
            reply.send_response(Response::new(TestBody::json(REFUSED)));
            match fut.await {
                Ok(response) if as_response => {
                    assert!(
                        response
                            .extensions()
                            .get::<crate::layer::UnreplayedRefusal>()
                            .is_some()
                    );
                }
                Err(error) if !as_response => assert!(
                    matches!(
                        error.downcast_ref(),
                        Some(Error::NotReplayed { status: 401 })
                    ),
                    "{error}"
                ),
                Ok(_) => panic!("a response, not the error"),
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(auth.metrics().replays, 0);
        assert_eq!(auth.metrics().not_replayed, 2);
    }

    /// `status_errors` on the hot path, whether the status is in the first poll or a later
    /// one (`Peeking`): the error, and the future is done after it.
    #[tokio::test]
    async fn status_errors_fail_with_the_table_s_error_and_are_done_after() {
        const NOT_IMPLEMENTED: &str = r#"{"status":2554,"body":{},"error":"Not implemented"}"#;
        let (_, auth) = signed_in().await;
        for late in [false, true] {
            let layer = auth.layer().status_errors();
            let (mut service, mut handle) =
                mock::spawn_with::<Req, Response<TestBody>, _, _>(|mock| layer.layer(mock));
            assert!(matches!(service.poll_ready(), Poll::Ready(Ok(()))));
            let fut = pin!(service.call(request(&format!("{API}/measure"))));
            let body = TestBody {
                late,
                ..TestBody::json(NOT_IMPLEMENTED)
            };
            answer(&mut handle, StatusCode::OK, body).await;
            assert_fails_then_done(fut, |e| matches!(e, Error::NotImplemented)).await;
        }
    }

    #[tokio::test]
    async fn calling_refused_then_replayed_is_done_after_completion() {
        let (clock, auth) = signed_in().await;
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
        let (_, auth) = signed_in().await;
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
}
#[cfg(test)]
mod size {
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use std::convert::Infallible;
    use std::future::Ready;
    use std::mem::size_of;

    type B = Full<Bytes>;
    type Inner = tower::util::ServiceFn<fn(Request<B>) -> Ready<Result<Response<B>, Infallible>>>;

    /// The future and the response move with every request: they stay close to the inner
    /// service's (the replay state and a slow peek are boxed).
    #[test]
    fn the_future_and_the_body_stay_small() {
        let inner = size_of::<Ready<Result<Response<B>, Infallible>>>();
        let ours = size_of::<super::ResponseFuture<Inner, B, B>>();
        assert!(
            ours <= inner + 24,
            "ResponseFuture {ours} B over an inner future of {inner} B"
        );
        let body = size_of::<crate::body::WithingsBody<B>>();
        assert!(body <= size_of::<B>() + 48, "WithingsBody {body} B");
    }
}
