//! Which lanes of the request budget ([`Lane`]) the sync draws on ([`SYNC_LANES`]), and the
//! service wrapper that tags and counts every request the sync sends.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::Service;

use crate::budget::Lane;
use crate::error::{BoxError, Error};
use crate::token::UserId;

/// The budget lanes the sync draws on, highest priority first: notification fetches ahead
/// of sweeps (and the reconcile pass) ahead of the backfill of new users. The sync never
/// sends in [`Lane::Interactive`]: that lane is the app's own.
pub const SYNC_LANES: [Lane; 3] = [Lane::Notification, Lane::Sweep, Lane::Backfill];

/// `lane`'s place in [`SYNC_LANES`] (the index of per-lane counters and turns).
pub(crate) fn index(lane: Lane) -> usize {
    match lane {
        Lane::Notification | Lane::Interactive => 0,
        Lane::Sweep => 1,
        Lane::Backfill => 2,
    }
}

/// The `lane` label of `withings_sync_requests_total`.
#[cfg(feature = "metrics")]
pub(crate) fn label(lane: Lane) -> &'static str {
    match lane {
        Lane::Interactive => "interactive",
        Lane::Notification => "notification",
        Lane::Sweep => "sweep",
        Lane::Backfill => "backfill",
    }
}

/// Tags `request` with its lane: **the one place** where the sync's requests meet the request
/// budget's lanes ([`Lane`]), so notification fetches are served ahead of sweeps, and sweeps
/// ahead of backfill, after token calls and the app's own interactive requests.
pub fn tag_lane<B>(request: &mut Request<B>, lane: Lane) {
    request.extensions_mut().insert(lane);
}

/// Requests sent per lane, and the users this process stopped (no request leaves for them).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub sent: [AtomicU64; 3],
    pub refused: AtomicU64,
    stopped: Mutex<HashSet<UserId>>,
}

impl Gate {
    pub(crate) fn stop(&self, user: UserId) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user);
    }

    pub(crate) fn resume(&self, user: UserId) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }

    pub(crate) fn is_stopped(&self, user: UserId) -> bool {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user)
    }
}

/// The app's service with every request tagged with one lane and counted; a request for a
/// user stopped in this process is refused before it leaves ([`Error::AccessRevoked`]).
#[derive(Clone)]
pub(crate) struct Laned<S> {
    pub inner: S,
    pub lane: Lane,
    pub gate: Arc<Gate>,
}

type LanedFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B> Service<Request<Full<Bytes>>> for Laned<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = LanedFuture<Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        let user = request.extensions().get::<UserId>().copied();
        if let Some(user) = user.filter(|u| self.gate.is_stopped(*u)) {
            self.gate.refused.fetch_add(1, Ordering::Relaxed);
            return Box::pin(async move { Err(Error::AccessRevoked(user).into()) });
        }
        tag_lane(&mut request, self.lane);
        self.gate.sent[index(self.lane)].fetch_add(1, Ordering::Relaxed);
        super::events::request_sent(self.lane);
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sync_request_names_its_budget_lane() {
        for (i, lane) in SYNC_LANES.into_iter().enumerate() {
            let mut request = Request::new(());
            tag_lane(&mut request, lane);
            assert_eq!(request.extensions().get::<Lane>(), Some(&lane));
            assert_eq!(index(lane), i, "{lane:?} counts in its own slot");
        }
    }
}
