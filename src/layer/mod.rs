//! [`WithingsAuthLayer`]: bearer injection, auth-failure detection, refresh and one replay.
//!
//! Laid out as tower's `retry`: `service.rs` is the layer and the service (what happens when a
//! request goes out), `future.rs` the response future ([`ResponseFuture`]: what happens when
//! the answer comes back), `classify.rs` the one classification of an answer, `bearer.rs` the
//! header, `replay.rs` what a replay keeps of the request and how it sends it again (the
//! [`CloneBody`] policies). The bodies it deals in are [`ReplayBody`] (a request body that can
//! be sent twice) and [`WithingsBody`] (the response body). Below the layer sits the request
//! budget ([`BudgetService`](crate::budget::BudgetService)), unless the layer is made
//! [`without_budget`](crate::WithingsAuthLayer::without_budget).
//!
//! [`WithingsAuthLayer`]: crate::WithingsAuthLayer
//! [`WithingsAuthLayer::not_replayed_as_response`]: crate::WithingsAuthLayer::not_replayed_as_response
//! [`WithingsAuthLayer::clone_body_with`]: crate::WithingsAuthLayer::clone_body_with
//! [`WithingsAuthLayer::never_replay`]: crate::WithingsAuthLayer::never_replay
//!
//! # What the layer asks of the stack below it
//!
//! - The layer keeps a copy of each request so that a refused one can be sent again after the
//!   refresh; its [`CloneBody`] policy copies the body. By default the body must be a
//!   [`ReplayBody`]: `Full`, `Empty` and `String` replay; boxed bodies and hyper's `Incoming`
//!   are streams that do not (a refusal then fails at once with [`Error::NotReplayed`], or comes
//!   back marked [`UnreplayedRefusal`] with
//!   [`WithingsAuthLayer::not_replayed_as_response`]). For any other body type (`axum::body::Body`,
//!   `reqwest::Body`), say how with [`WithingsAuthLayer::clone_body_with`] or
//!   [`WithingsAuthLayer::never_replay`].
//! - The response body must be `Unpin` and carry `Bytes`, because the layer reads its first
//!   bytes in place (the Withings `status` is in the body). hyper's `Incoming` is; a stack whose
//!   body is not (some tower-http bodies are pinned) can box it with
//!   `.map_response(|r| r.map(|b| b.boxed_unsync()))`. Layers above that answer by themselves
//!   with `Default::default()` (tower-http's `TimeoutLayer`) also need that body to have a
//!   default, which boxed bodies have and `Incoming` has not: that is why the crate example
//!   boxes the body below the layer.
//!
//! # What the caller gets back
//!
//! | Withings answered | default | opt-in |
//! |---|---|---|
//! | `"status":0` | `Ok`, the body intact | — |
//! | a refusal (HTTP 401, `"status"` 100/101/102/200/401), replayed | the replay's answer (this table again); refused twice: [`Error::AccessTokenInvalid`] | — |
//! | a refusal that could not be replayed (a stream) | [`Error::NotReplayed`]; the token is refreshed for the next request | [`not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response): `Ok`, as sent, marked [`UnreplayedRefusal`] |
//! | any other status (601, 2554, 503 …) | `Ok`, the body intact: read it with [`crate::parse_response`] | [`status_errors`](crate::WithingsAuthLayer::status_errors): `Err` with the status table's [`Error`] |
//! | not a Withings body (HTML, a proxy's HTTP 502) | `Ok`, untouched | the same |
//! | HTTP 404 from the API host (a wrong path) | [`Error::EndpointNotFound`] | the same |
//! | a request naming a user ([`UserId`] extension) to another host | [`Error::NotApiHost`], nothing sent | the same |
//!
//! A 601 pauses the app's request budget in every case.

mod bearer;
mod classify;
mod future;
mod inner;
mod replay;
pub(crate) mod service;
mod shared;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use tower::Service;

pub use crate::body::{ReplayBody, UnreplayedRefusal, WithingsBody};
use crate::error::{BoxError, Error};
use crate::oauth::{SIGNATURE_PATH, TOKEN_PATH};
use crate::refresh::{Lookup, Refresher};
use crate::token::UserId;
pub(crate) use classify::ResponseMode;
use future::Need;
pub use future::ResponseFuture;
pub use inner::InnerService;
pub use replay::{CloneBody, CloneBodyFn, DefaultCloneBody, NeverReplay};
pub(crate) use shared::Shared;

/// Where a request goes, as far as the layer (and the reqwest middleware) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// Not the configured API host (scheme, host, port, base path): untouched, not counted.
    Elsewhere,
    /// The token or signature endpoint: no token, but Withings counts it against the budget.
    TokenEndpoint,
    /// A Withings API call: it gets the user's token.
    Api,
}

pub(crate) fn destination(refresher: &Refresher, uri: &Uri) -> Destination {
    match refresher.endpoints().api_path(uri) {
        None => Destination::Elsewhere,
        Some(path) if path == TOKEN_PATH || path == SIGNATURE_PATH => Destination::TokenEndpoint,
        Some(_) => Destination::Api,
    }
}

/// The error for a request naming a user that went to `uri`, not the API host.
pub(crate) fn not_api_host(refresher: &Refresher, uri: &Uri) -> Error {
    let host = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => "a URL without a host".to_owned(),
    };
    Error::NotApiHost {
        host,
        api: refresher.endpoints().api_base().to_owned(),
    }
}

/// What [`WithingsAuthService::call`] and its future do with an API request (one that passed
/// [`destination`] as [`Destination::Api`]), as one async function over a service that need not be `Clone` or
/// `'static`: for clients that are not a tower stack (the reqwest middleware calls it with the
/// next middleware as `service`). The same user choice, lookup, refresh, classification and
/// single replay, and what `mode` asks of the answer; `service` is called once, or twice when a
/// refused request is replayed.
#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
pub(crate) async fn send_api<S, P, B, ResB>(
    shared: &Arc<Shared>,
    policy: P,
    mode: ResponseMode,
    bound_user: Option<UserId>,
    mut service: S,
    request: Request<B>,
) -> Result<Response<WithingsBody<ResB>>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>, Error: Into<BoxError>>,
    P: CloneBody<B>,
    ResB: Body<Data = Bytes> + Unpin,
{
    let own_user = request.extensions().get::<UserId>().copied();
    let user = own_user.or(bound_user).ok_or(Error::NoUser)?;
    tower::ServiceExt::ready(&mut service)
        .await
        .map_err(Into::into)?;
    let refresher = &shared.refresher;
    let need = match refresher.lookup(user, refresher.now()) {
        Lookup::Usable { header, generation } => Need::Usable { header, generation },
        Lookup::Terminal(error) => return Err(error.into()),
        Lookup::Stale(stale) => Need::Token(stale),
    };
    future::send_fresh(
        Arc::clone(shared),
        policy,
        mode,
        user,
        service,
        request,
        need,
    )
    .await
}
