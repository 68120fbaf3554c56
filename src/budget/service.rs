//! The request budget as a tower layer: [`BudgetLayer`] / [`BudgetService`] for API calls, and
//! [`token_client`] around the client token calls go through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::{Budget, Priority};
use crate::error::{BoxError, Error};
use crate::status::{Peek, find_wait_seconds, peek_status};
use crate::transport::Transport;

/// Sends requests to the Withings API host only within the app's request budget
/// ([`RateBudget`](super::RateBudget)): a request without a slot at hand waits in its
/// [`Lane`](super::Lane), then fails with [`Error::BudgetExhausted`]; requests to other hosts
/// pass uncounted.
///
/// [`WithingsAuth::layer`](crate::WithingsAuth::layer) already puts it under the auth layer;
/// made by [`WithingsAuth::budget_layer`](crate::WithingsAuth::budget_layer) for a stack that
/// places it itself (then build the auth layer
/// [`without_budget`](crate::WithingsAuthLayer::without_budget)).
#[derive(Clone)]
pub struct BudgetLayer {
    budget: Arc<Budget>,
}

impl fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("budget", &self.budget.config())
            .finish()
    }
}

impl BudgetLayer {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        BudgetLayer { budget }
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService::new(Arc::clone(&self.budget), true, inner)
    }
}

/// The service [`BudgetLayer`] makes.
#[derive(Clone)]
pub struct BudgetService<S> {
    budget: Arc<Budget>,
    /// False when the app placed the budget elsewhere: everything passes, uncounted.
    counting: bool,
    inner: S,
}

impl<S> fmt::Debug for BudgetService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetService")
            .field("budget", &self.budget.config())
            .field("counting", &self.counting)
            .finish_non_exhaustive()
    }
}

impl<S> BudgetService<S> {
    pub(crate) fn new(budget: Arc<Budget>, counting: bool, inner: S) -> Self {
        BudgetService {
            budget,
            counting,
            inner,
        }
    }

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

    /// False when the app placed the budget elsewhere.
    pub(crate) fn counting(&self) -> bool {
        self.counting
    }

    /// Sends a request the caller knows is not for Withings: uncounted.
    pub(crate) fn call_uncounted<B>(
        &mut self,
        request: Request<B>,
    ) -> BudgetFuture<S::Future, S::Response>
    where
        S: Service<Request<B>>,
    {
        BudgetFuture::ready(self.inner.call(request))
    }

    /// Sends a request to the API host: a slot first (at hand, or waited for in its lane).
    pub(crate) fn call_counted<B>(
        &mut self,
        request: Request<B>,
    ) -> BudgetFuture<S::Future, S::Response>
    where
        S: Service<Request<B>, Error: Into<BoxError>, Future: Send + 'static>
            + Clone
            + Send
            + 'static,
        B: Send + 'static,
    {
        if !self.counting || self.budget.try_take(|| Priority::of(&request)) {
            return BudgetFuture::ready(self.inner.call(request));
        }
        let priority = Priority::of(&request);
        let budget = Arc::clone(&self.budget);
        // The service `poll_ready` readied goes with the request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        BudgetFuture {
            kind: Kind::Waiting {
                fut: Box::pin(async move {
                    budget.take(priority).await?;
                    inner.call(request).await.map_err(Into::into)
                }),
            },
        }
    }
}

impl<S, B> Service<Request<B>> for BudgetService<S>
where
    S: Service<Request<B>, Error: Into<BoxError>, Future: Send + 'static> + Clone + Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BudgetFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.budget.counts(request.uri()) {
            self.call_counted(request)
        } else {
            self.call_uncounted(request)
        }
    }
}

type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The future of [`BudgetService`]: the inner future, after a wait for a slot if there
    /// was none at hand.
    pub struct BudgetFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Ready { #[pin] fut: F },
        Waiting { fut: Waiting<T> },
    }
}

impl<F, T> BudgetFuture<F, T> {
    fn ready(fut: F) -> Self {
        BudgetFuture {
            kind: Kind::Ready { fut },
        }
    }
}

impl<F, T> fmt::Debug for BudgetFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.kind {
            Kind::Ready { .. } => "ready",
            Kind::Waiting { .. } => "waiting",
        };
        f.debug_struct("BudgetFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for BudgetFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}

type TokenRequest = Request<Full<Bytes>>;

/// The client token calls go through, within the budget: each call waits for its slot in the
/// token lane (served first) at most `wait`, and a 601 answer pauses the budget as a data
/// call's does.
pub(crate) fn token_client(budget: Arc<Budget>, wait: Duration, transport: Transport) -> Transport {
    BoxCloneSyncService::new(tower::service_fn(move |request: TokenRequest| {
        let (budget, transport) = (Arc::clone(&budget), transport.clone());
        async move {
            if budget.counts(request.uri()) {
                budget.take_within(Priority::Token, wait).await?;
            }
            let response = transport.oneshot(request).await?;
            if response.status() == StatusCode::OK
                && peek_status(response.body()) == Peek::Status(RATE_LIMITED)
            {
                let wait = find_wait_seconds(response.body()).map(Duration::from_secs);
                budget.rate_limited(wait);
            }
            Ok::<_, Error>(response)
        }
    }))
}

/// The body status of a rate-limited call.
pub(crate) const RATE_LIMITED: i64 = 601;
