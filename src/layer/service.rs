//! [`WithingsAuthLayer`] and [`WithingsAuthService`]: what happens when a request goes out.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::bearer::authorize;
use super::future::{Need, ResponseFuture};
use super::inner::InnerService;
use super::replay::{CloneBody, CloneBodyFn, DefaultCloneBody, NeverReplay, Replay, RequestCopy};
use super::{Destination, ResponseMode, Shared, destination, not_api_host};
use crate::body::WithingsBody;
use crate::budget::{Budget, BudgetService};
use crate::error::{BoxError, Error};
use crate::refresh::{Lookup, Refresher};
use crate::token::UserId;

/// Adds the right Withings user's bearer token to every Withings API request, refreshing it
/// once per user when it expires or Withings refuses it, and replaying the request once.
///
/// Made by [`crate::WithingsAuth::layer`]. Requests to any other host, and to the token and
/// signature endpoints, pass through untouched: the token goes nowhere else (a request to
/// another host that names a user fails with [`Error::NotApiHost`], unsent: it was meant for
/// Withings). See the
/// [module docs](crate::layer) for what the layer needs of the request and response bodies.
#[derive(Debug, Clone)]
pub struct WithingsAuthLayer<P = DefaultCloneBody> {
    shared: Arc<Shared>,
    /// The inner service is wrapped in the request budget (unless `without_budget`).
    budgeted: bool,
    user: Option<UserId>,
    policy: P,
    mode: ResponseMode,
}

impl WithingsAuthLayer {
    pub(crate) fn new(
        refresher: Arc<Refresher>,
        budget: Arc<Budget>,
        user: Option<UserId>,
    ) -> Self {
        WithingsAuthLayer {
            shared: Arc::new(Shared { refresher, budget }),
            budgeted: true,
            user,
            policy: DefaultCloneBody,
            mode: ResponseMode::default(),
        }
    }
}

impl<P> WithingsAuthLayer<P> {
    /// Copies request bodies for a replay with `policy` (default [`DefaultCloneBody`]).
    pub fn clone_body<Q>(self, policy: Q) -> WithingsAuthLayer<Q> {
        WithingsAuthLayer {
            shared: self.shared,
            budgeted: self.budgeted,
            user: self.user,
            policy,
            mode: self.mode,
        }
    }

    crate::setters::setters! {
        /// Leaves the request budget out: the layer sends straight to the inner service, which
        /// must then hold [`WithingsAuth::budget_layer`](crate::WithingsAuth::budget_layer)
        /// itself (say, under a retry layer, so that every retry takes a slot). By default the
        /// inner service is wrapped in it: no request of the layer, replays included, goes past
        /// the budget. A 601 still pauses the budget either way.
        fn without_budget() => budgeted = false;

        /// Opt-in: every answer whose Withings body status is not 0 becomes `Err`, holding the
        /// [`Error`] the [status table](crate::parse_response) gives it (`2554` →
        /// [`Error::NotImplemented`], `601` → [`Error::RateLimited`], `503 Invalid Params` →
        /// [`Error::InvalidParams`], …), so `Ok` means status 0.
        ///
        /// It applies to the answer the caller would get, after the refusal and replay logic (a
        /// refused token is still refreshed and replayed first; a 601 still pauses the request
        /// budget). The status number comes from the first bytes, as always; to take Withings'
        /// message, which decides between some errors (status 503), the rest of an error body is
        /// read, at most 16 KiB of it (error bodies are a few hundred bytes); past that, or in a
        /// compressed body, the error is classified from the number alone. Status 0, a body that is
        /// not a Withings envelope (HTML, `status` not a number), a real HTTP error status (a
        /// proxy's 502) and any request the layer does not authorize (other hosts, token calls)
        /// still come back `Ok`, untouched.
        ///
        /// Without it (the default), the body status is yours to read, in one line once the body is
        /// collected: [`crate::parse_response`].
        ///
        /// ```
        /// # use tower_withings::{Credentials, WithingsAuth, transport};
        /// # let auth = WithingsAuth::builder(Credentials::new("id", "secret"))
        /// #     .build(transport::plain_http_client());
        /// let layer = auth.layer().status_errors(); // Ok(response) now means `"status":0`
        /// # let _ = layer;
        /// ```
        fn status_errors() => mode.status_errors = true;

        /// Opt-in: a refused request that could not be replayed (its body is a stream, or the layer
        /// [never replays](Self::never_replay)) comes back `Ok`, as Withings sent it (HTTP 401, or
        /// HTTP 200 with `"status":401` in the body) and marked
        /// [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal), for callers who want that body.
        /// By default it is `Err(`[`Error::NotReplayed`]`)`. Either way the token is refreshed at
        /// once, in the background, for the next request.
        ///
        /// It takes precedence over [`status_errors`](Self::status_errors) for those refusals.
        fn not_replayed_as_response() => mode.not_replayed_as_response = true;
    }

    /// Copies request bodies with `clone`; `None` means "do not replay this one". For body
    /// types of other crates, e.g. with axum:
    ///
    /// ```
    /// # use tower_withings::{Credentials, WithingsAuth, transport};
    /// # let auth = WithingsAuth::builder(Credentials::new("id", "secret"))
    /// #     .build(transport::plain_http_client());
    /// // A body known to be small and in memory can be rebuilt from its bytes; here none is.
    /// let layer = auth.layer().clone_body_with(|_: &axum::body::Body| None);
    /// # let _ = layer;
    /// ```
    pub fn clone_body_with<B, F>(self, clone: F) -> WithingsAuthLayer<CloneBodyFn<F>>
    where
        F: Fn(&B) -> Option<B>,
    {
        self.clone_body(CloneBodyFn(clone))
    }

    /// Never replays: any body type goes through, and a refused request fails at once with
    /// [`Error::NotReplayed`] (or, with [`not_replayed_as_response`](Self::not_replayed_as_response),
    /// comes back marked [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal)), while the token is refreshed for
    /// the next.
    pub fn never_replay(self) -> WithingsAuthLayer<NeverReplay> {
        self.clone_body(NeverReplay)
    }
}

impl<S, P: Clone> Layer<S> for WithingsAuthLayer<P> {
    type Service = WithingsAuthService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        WithingsAuthService {
            shared: Arc::clone(&self.shared),
            user: self.user,
            policy: self.policy.clone(),
            mode: self.mode,
            inner: BudgetService::new(Arc::clone(&self.shared.budget), self.budgeted, inner),
        }
    }
}

/// The service [`WithingsAuthLayer`] makes. Its errors are `BoxError`s holding either the inner
/// service's error or a [`crate::Error`] (downcast to tell them apart).
#[derive(Debug, Clone)]
pub struct WithingsAuthService<S, P = DefaultCloneBody> {
    shared: Arc<Shared>,
    user: Option<UserId>,
    policy: P,
    mode: ResponseMode,
    /// The inner service in the request budget (counting, unless the layer was made
    /// `without_budget`).
    inner: BudgetService<S>,
}

impl<S, P> WithingsAuthService<S, P> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, P, B, ResB> Service<Request<B>> for WithingsAuthService<S, P>
where
    // The `Response` named again: it is what ties `ResB` to `S` for this impl.
    S: InnerService<B, ResB> + Service<Request<B>, Response = Response<ResB>>,
    P: CloneBody<B> + Clone + Send + 'static,
    B: Send + 'static,
    ResB: Body<Data = Bytes, Error: Send> + Unpin + Send + 'static,
{
    type Response = Response<WithingsBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let refresher = &self.shared.refresher;
        match destination(refresher, request.uri()) {
            // A request naming a user is meant for Withings: say where it went instead of
            // sending it without a token.
            Destination::Elsewhere if request.extensions().get::<UserId>().is_some() => {
                return ResponseFuture::failed(not_api_host(refresher, request.uri()));
            }
            Destination::Elsewhere => {
                return ResponseFuture::passthrough(self.inner.call_uncounted(request));
            }
            // No token, but Withings counts it: the budget does.
            Destination::TokenEndpoint => {
                return ResponseFuture::passthrough(self.inner.call_counted(request));
            }
            Destination::Api => {}
        }
        let own_user = request.extensions().get::<UserId>().copied();
        let Some(user) = own_user.or(self.user) else {
            return ResponseFuture::failed(Error::NoUser);
        };
        let now = refresher.now();
        match refresher.lookup(user, now) {
            Lookup::Usable { header, generation } => {
                // The hot path: a good token, no refresh (the budget below takes the slot).
                crate::metrics::emit("withings_requests_total");
                let replay = Box::new(Replay {
                    shared: Arc::clone(&self.shared),
                    budgeted: self.inner.counting(),
                    user,
                    generation,
                    copy: RequestCopy::of(&request, &self.policy, own_user),
                    mode: self.mode,
                    service: self.inner.get_ref().clone(),
                });
                authorize(&mut request, header);
                ResponseFuture::calling(self.inner.call_counted(request), replay)
            }
            Lookup::Terminal(error) => ResponseFuture::failed(error),
            // The slow path: refresh (or load) first.
            Lookup::Stale(stale) => ResponseFuture::slow(
                Arc::clone(&self.shared),
                self.policy.clone(),
                self.mode,
                user,
                self.readied(),
                request,
                Need::Token(stale),
            ),
        }
    }
}

impl<S: Clone, P: Clone> WithingsAuthService<S, P> {
    /// The service `poll_ready` readied, for a future to call later; a clone takes its place.
    fn readied(&mut self) -> BudgetService<S> {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}
