//! Feature `reqwest`: the same Withings OAuth for [reqwest](https://docs.rs/reqwest), as a
//! [`reqwest_middleware::Middleware`].
//!
//! [`WithingsMiddleware`] is made by
//! [`WithingsAuth::reqwest_middleware`](crate::WithingsAuth::reqwest_middleware) (the user comes
//! from each request's `UserId` extension) or
//! [`WithingsAuth::reqwest_middleware_for`](crate::WithingsAuth::reqwest_middleware_for) (one
//! user, unless a request names another):
//!
//! ```no_run
//! # async fn example(auth: tower_withings::WithingsAuth) -> Result<(), Box<dyn std::error::Error>> {
//! use tower_withings::{Error, UserId};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(auth.reqwest_middleware())
//!     .build();
//! let response = client
//!     .post("https://wbsapi.withings.net/measure")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body("action=getmeas&meastype=1")
//!     .with_extension(UserId(46865875)) // whose token to use
//!     .send()
//!     .await;
//! match response {
//!     Ok(response) => println!("{}", response.text().await?),
//!     // What the tower layer fails with, as `reqwest_middleware::Error::Middleware`.
//!     Err(reqwest_middleware::Error::Middleware(error)) => match error.downcast_ref::<Error>() {
//!         Some(Error::NeedsReauthorization(user)) => println!("{user} must log in again"),
//!         _ => return Err(error.into()),
//!     },
//!     Err(error) => return Err(error.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! Beside the crate (from git until it is published, see the README), the app names reqwest
//! itself; tower-withings picks no TLS stack for it (reqwest's default is rustls):
//!
//! ```toml
//! tower-withings = { git = "https://github.com/tower-withings/tower-withings", default-features = false, features = ["sqlite", "reqwest"] }
//! reqwest = "0.13"
//! reqwest-middleware = "0.5"
//! ```
//!
//! # Not a second implementation
//!
//! A request is sent by the tower layer's own request path, with the rest of the middleware
//! chain (`Next::run`) as the service below it: the same API-host check (a request anywhere else,
//! or to the token and signature endpoints, goes on untouched, with no token), the same user
//! choice, token lookup, single refresh per user through the handle's refresher and store, the
//! same body-status classification (HTTP 401, or HTTP 200 whose body `status` is 100, 101, 102,
//! 200 or 401; the first bytes are read in place and given back to the caller), and one replay.
//! What happens is what [`WithingsAuthLayer`](crate::WithingsAuthLayer) does, counted in the same
//! [`metrics`](crate::WithingsAuth::metrics).
//!
//! # Replays, errors
//!
//! - A refused request is replayed once, after the refresh, if it can be cloned: the rule of
//!   [`reqwest::Request::try_clone`], a body in memory (`.body("…")`, `.form(…)`, `.json(…)`,
//!   or none). A second refusal is [`Error::AccessTokenInvalid`]: no loops.
//! - A streaming body (`reqwest::Body::wrap_stream`, `Body::wrap`) cannot be sent twice: its
//!   refusal fails at once with [`Error::NotReplayed`] (send the request again), while the token
//!   is refreshed in the background for the next request; as with the layer's streaming bodies.
//!   [`WithingsMiddleware::not_replayed_as_response`] gives the refusal back instead, `Ok` with
//!   the Withings body intact and a [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal) extension
//!   (`response.extensions()`).
//! - A Withings body status other than 0 (`601`, `2554`, …) comes back `Ok` by default: read it
//!   with [`crate::parse_response`] on the bytes (`response.bytes().await?`).
//!   [`WithingsMiddleware::status_errors`] makes it the typed error instead, as the layer's
//!   [`status_errors`](crate::WithingsAuthLayer::status_errors) does.
//! - Everything the crate fails with is `reqwest_middleware::Error::Middleware` holding a
//!   [`crate::Error`] (`downcast_ref::<tower_withings::Error>()`); what reqwest or a later
//!   middleware fails with comes back as it was.
//! - The replay is sent through the rest of the chain again, with the request as first sent;
//!   the chain's `Extensions` are those the previous attempt left.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, Uri};
use reqwest::{Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
use tower::Service;

use crate::body::WithingsBody;
use crate::budget::{Budget, Lane, Priority};
use crate::error::{BoxError, Error};
use crate::layer::{self, CloneBody, Destination, ResponseMode, Shared};
use crate::refresh::Refresher;
use crate::token::UserId;

/// Withings OAuth for a reqwest client: a [`reqwest_middleware::Middleware`] on the handle's
/// refresher and store (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct WithingsMiddleware {
    /// The handle's refresher, and its request budget: every attempt this middleware sends
    /// takes a slot.
    shared: Arc<Shared>,
    user: Option<UserId>,
    mode: ResponseMode,
}

impl std::fmt::Debug for WithingsMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithingsMiddleware")
            .field("user", &self.user)
            .field("status_errors", &self.mode.status_errors)
            .field(
                "not_replayed_as_response",
                &self.mode.not_replayed_as_response,
            )
            .finish_non_exhaustive()
    }
}

impl WithingsMiddleware {
    pub(crate) fn new(
        refresher: Arc<Refresher>,
        budget: Arc<Budget>,
        user: Option<UserId>,
    ) -> Self {
        WithingsMiddleware {
            shared: Arc::new(Shared { refresher, budget }),
            user,
            mode: ResponseMode::default(),
        }
    }

    crate::setters::setters! {
        /// Opt-in, as
        /// [`WithingsAuthLayer::status_errors`](crate::WithingsAuthLayer::status_errors): an answer
        /// whose Withings body status is not 0 is `Err(reqwest_middleware::Error::Middleware(…))`
        /// holding the [`crate::Error`] the status table gives it, so `Ok` means status 0.
        fn status_errors() => mode.status_errors = true;

        /// Opt-in, as
        /// [`WithingsAuthLayer::not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response):
        /// a refusal of a request with a streaming body comes back `Ok`, as it came and marked
        /// [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal), instead of
        /// [`Error::NotReplayed`].
        fn not_replayed_as_response() => mode.not_replayed_as_response = true;
    }
}

#[async_trait::async_trait]
impl Middleware for WithingsMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let uri: Option<Uri> = request.url().as_str().parse().ok();
        let destination = uri.map_or(Destination::Elsewhere, |uri| {
            layer::destination(&self.shared.refresher, &uri)
        });
        match destination {
            // Meant for Withings (it names a user) but not to the API host: not sent.
            Destination::Elsewhere if extensions.get::<UserId>().is_some() => {
                let uri: Uri = request.url().as_str().parse().unwrap_or_default();
                let error = layer::not_api_host(&self.shared.refresher, &uri);
                return Err(reqwest_middleware::Error::middleware(error));
            }
            // Not for Withings: on as it is, no token, nothing converted, nothing counted.
            Destination::Elsewhere => return next.run(request, extensions).await,
            // No token, but Withings counts it: one attempt, within the budget.
            Destination::TokenEndpoint => {
                let chain = Mutex::new(std::mem::take(extensions));
                let lane = Priority::Lane(chain_lane(&chain));
                let outcome = send_one(&self.shared.budget, lane, next, request, &chain).await;
                *extensions = chain.into_inner().unwrap_or_else(PoisonError::into_inner);
                return outcome;
            }
            Destination::Api => {}
        }
        // The request as the layer sees it (its reqwest extensions, the timeout among them,
        // ride along), with the chain's `UserId` where the layer looks for it.
        let mut request = http::Request::<reqwest::Body>::try_from(request)?;
        if let Some(user) = extensions.get::<UserId>().copied() {
            request.extensions_mut().insert(user);
        }
        if let Some(lane) = extensions.get::<Lane>().copied() {
            request.extensions_mut().insert(lane);
        }
        let chain = Mutex::new(std::mem::take(extensions));
        let attempts = Attempts {
            next,
            chain: &chain,
            budget: &self.shared.budget,
        };
        let outcome = layer::send_api(
            &self.shared,
            ReqwestBodies,
            self.mode,
            self.user,
            attempts,
            request,
        )
        .await;
        *extensions = chain.into_inner().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(response) => Ok(from_http(response)),
            Err(error) => Err(middleware_error(error)),
        }
    }
}

/// The rest of the middleware chain as the service the layer's request path sends through:
/// called once per attempt (the first send, and the replay if there is one).
struct Attempts<'a> {
    next: Next<'a>,
    /// The chain's extensions, handed to each attempt in turn.
    chain: &'a Mutex<Extensions>,
    budget: &'a Arc<Budget>,
}

impl<'a> Service<http::Request<reqwest::Body>> for Attempts<'a> {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'a>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<reqwest::Body>) -> Self::Future {
        let (next, chain, budget) = (self.next.clone(), self.chain, self.budget);
        let lane = Priority::of(&request);
        Box::pin(async move {
            let request = Request::try_from(request)?;
            let response = send_one(budget, lane, next, request, chain).await?;
            Ok(to_http(response))
        })
    }
}

/// Sends one attempt down the rest of the chain, once it has a slot of the budget (in its
/// lane): the only place this middleware sends a request to the API host.
async fn send_one(
    budget: &Arc<Budget>,
    lane: Priority,
    next: Next<'_>,
    request: Request,
    chain: &Mutex<Extensions>,
) -> reqwest_middleware::Result<Response> {
    budget
        .take(lane)
        .await
        .map_err(reqwest_middleware::Error::middleware)?;
    let mut extensions = std::mem::take(&mut *chain.lock().unwrap_or_else(PoisonError::into_inner));
    let outcome = next.run(request, &mut extensions).await;
    *chain.lock().unwrap_or_else(PoisonError::into_inner) = extensions;
    outcome
}

/// The lane the chain's extensions name (`.with_extension(Lane::…)`), else the default.
fn chain_lane(chain: &Mutex<Extensions>) -> Lane {
    let chain = chain.lock().unwrap_or_else(PoisonError::into_inner);
    chain.get().copied().unwrap_or_default()
}

/// Request bodies copied for a replay by reqwest's own rule ([`Request::try_clone`]): a body
/// in memory is copied, a stream is not.
#[derive(Clone, Copy)]
struct ReqwestBodies;

impl CloneBody<reqwest::Body> for ReqwestBodies {
    fn clone_body(&self, body: &reqwest::Body) -> Option<reqwest::Body> {
        body.as_bytes()
            .map(|bytes| reqwest::Body::from(Bytes::copy_from_slice(bytes)))
    }
}

/// reqwest's response as the layer reads it, with its URL kept for the way back.
fn to_http(response: Response) -> http::Response<reqwest::Body> {
    let url = response.url().clone();
    let mut response = http::Response::from(response);
    response.extensions_mut().extend(url_extension(url));
    response
}

/// The response the layer hands back, as reqwest's again: same status, headers, extensions
/// (a [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal) among them), URL, and body bytes.
fn from_http(response: http::Response<WithingsBody<reqwest::Body>>) -> Response {
    Response::from(response.map(reqwest::Body::wrap))
}

/// The extension in which reqwest keeps a response's URL (`Response::url`): only its response
/// builder can set it.
fn url_extension(url: Url) -> Extensions {
    http::Response::builder()
        .url(url)
        .body(())
        .map(|response| response.into_parts().0.extensions)
        .unwrap_or_default()
}

/// What the layer's request path failed with, as reqwest-middleware's error: the chain's own
/// errors as they were, the crate's as `Error::Middleware`.
fn middleware_error(error: BoxError) -> reqwest_middleware::Error {
    match error.downcast::<reqwest_middleware::Error>() {
        Ok(error) => *error,
        Err(error) => match error.downcast::<Error>() {
            Ok(error) => reqwest_middleware::Error::middleware(*error),
            // Not reached: the request path fails with one of the two.
            Err(other) => reqwest_middleware::Error::middleware(Error::transport(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy policy agrees with `reqwest::Request::try_clone` on what can be sent twice.
    #[test]
    fn bodies_replay_exactly_when_reqwest_can_clone_the_request() {
        let url = Url::parse("https://wbsapi.withings.net/measure").unwrap();
        let stream = http_body_util::Full::new(Bytes::from_static(b"action=getmeas"));
        let bodies = [
            (Some(reqwest::Body::from("action=getmeas")), true),
            (None, true),
            (Some(reqwest::Body::wrap(stream)), false),
        ];
        for (body, clonable) in bodies {
            let mut request = Request::new(reqwest::Method::POST, url.clone());
            *request.body_mut() = body;
            assert_eq!(request.try_clone().is_some(), clonable);
            let request = http::Request::<reqwest::Body>::try_from(request).unwrap();
            let copy = ReqwestBodies.clone_body(request.body());
            assert_eq!(copy.is_some(), clonable);
            if let Some(copy) = copy {
                assert_eq!(copy.as_bytes(), request.body().as_bytes());
            }
        }
    }

    /// A response keeps its URL, status, headers and bytes through the layer's types.
    #[tokio::test]
    async fn a_response_goes_to_http_and_back_intact() {
        let url = Url::parse("http://127.0.0.1:9/measure?x=1").unwrap();
        let original = http::Response::builder()
            .status(503)
            .header("x-a", "1")
            .url(url.clone())
            .body(reqwest::Body::from("{\"status\":0}"))
            .unwrap();
        let response = to_http(Response::from(original));
        let back = from_http(response.map(WithingsBody::new));
        assert_eq!(back.url(), &url);
        assert_eq!(back.status(), 503);
        assert_eq!(back.headers()["x-a"], "1");
        assert_eq!(back.text().await.unwrap(), "{\"status\":0}");
    }

    #[test]
    fn errors_keep_their_type() {
        let ours = middleware_error(Error::NoUser.into());
        match ours {
            reqwest_middleware::Error::Middleware(error) => {
                assert!(matches!(error.downcast_ref::<Error>(), Some(Error::NoUser)));
            }
            other => panic!("{other:?}"),
        }
        let chain = reqwest_middleware::Error::middleware(std::fmt::Error);
        match middleware_error(chain.into()) {
            reqwest_middleware::Error::Middleware(error) => {
                assert!(error.downcast_ref::<std::fmt::Error>().is_some());
            }
            other => panic!("{other:?}"),
        }
    }
}
