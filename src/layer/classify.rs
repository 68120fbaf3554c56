//! The one classification of a response: refused (refresh and replay) or an answer for the
//! caller, with its body status; and what the caller gets for an answer ([`ResponseMode`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::Body;

use crate::body::{StatusReader, WithingsBody, status_error};
use crate::budget::{Budget, RATE_LIMITED};
use crate::error::BoxError;
use crate::status::is_access_token_failure;

/// What the caller gets back for the answers that are not plain successes: the layer's two
/// opt-ins ([`WithingsAuthLayer::status_errors`], [`WithingsAuthLayer::not_replayed_as_response`]),
/// shared with the reqwest middleware. Both off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResponseMode {
    /// A non-zero body status (after the refusal and replay logic) is `Err`, classified by
    /// [`crate::status::classify`].
    pub(crate) status_errors: bool,
    /// A refusal that could not be replayed is the response as it came, marked
    /// [`UnreplayedRefusal`](crate::layer::UnreplayedRefusal), rather than [`Error::NotReplayed`].
    pub(crate) not_replayed_as_response: bool,
}

impl ResponseMode {
    /// The body status that makes this answer an error, if any (only with `status_errors`).
    pub(crate) fn error_status(self, status: Option<i64>) -> Option<i64> {
        status.filter(|status| self.status_errors && *status != 0)
    }
}

/// What [`poll_refusal`] found a response to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Withings refused the token: this body status (401 for an HTTP 401).
    Refused(i64),
    /// An answer for the caller, with its Withings body status when it has one (HTTP 200 and
    /// a status found in the first bytes).
    Answer(Option<i64>),
    /// HTTP 404: the API host has no endpoint at this path (a wrong path, not an outage).
    NotFound,
}

/// The one classification of a response: [`Verdict::Refused`] when it refuses the token (HTTP
/// 401, or HTTP 200 whose body `status` is 100, 101, 102, 200 or 401), else an answer for the
/// caller, with its body status. Reads at most the body's first bytes, which stay in `body`.
///
/// A body status 601 is a rate limit, never a token failure: no refresh; the response goes to
/// the caller (as it came, or as `Error::RateLimited` with `status_errors`), and the app's
/// budget stops everyone for its `wait_seconds`.
pub(super) fn poll_refusal<B: Body<Data = Bytes> + Unpin>(
    status: StatusCode,
    body: &mut StatusReader<B>,
    cx: &mut Context<'_>,
    budget: Option<&Arc<Budget>>,
) -> Poll<Verdict> {
    match status {
        StatusCode::UNAUTHORIZED => Poll::Ready(Verdict::Refused(401)),
        StatusCode::OK => body.poll_status(cx).map(|status| {
            if status == Some(RATE_LIMITED) {
                if let Some(budget) = budget {
                    budget.rate_limited(body.wait_seconds());
                }
            }
            match status {
                Some(status) if is_access_token_failure(status) => Verdict::Refused(status),
                status => Verdict::Answer(status),
            }
        }),
        StatusCode::NOT_FOUND => Poll::Ready(Verdict::NotFound),
        _ => Poll::Ready(Verdict::Answer(None)),
    }
}

/// What the caller gets for an answer: the response, or with `status_errors` and a non-zero
/// body status, its typed error.
pub(super) async fn answer<B: Body<Data = Bytes> + Unpin>(
    response: Response<WithingsBody<B>>,
    status: Option<i64>,
    mode: ResponseMode,
) -> Result<Response<WithingsBody<B>>, BoxError> {
    match mode.error_status(status) {
        None => Ok(response),
        Some(status) => Err(status_error(response, status).await.into()),
    }
}

/// [`poll_refusal`] for async code: the response (body intact) and what it is.
pub(super) async fn inspect<B: Body<Data = Bytes> + Unpin>(
    response: Response<B>,
    budget: &Arc<Budget>,
) -> (Response<WithingsBody<B>>, Verdict) {
    let (parts, body) = response.into_parts();
    let mut body = StatusReader::new(&parts.headers, body);
    let refusal = poll_fn(|cx| poll_refusal(parts.status, &mut body, cx, Some(budget))).await;
    (Response::from_parts(parts, body.into_body()), refusal)
}
