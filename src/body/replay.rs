//! Which request bodies the layer can send twice ([`ReplayBody`]), and the mark on a refusal
//! that was not replayed ([`UnreplayedRefusal`]).

use bytes::Buf;
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

#[cfg(doc)]
use crate::error::Error;

/// A request body the layer can send a second time after a refresh.
///
/// Bodies held in memory replay byte for byte; streams cannot, and return `None`: the caller
/// then gets [`Error::NotReplayed`] (or the original auth-failure response, marked with
/// [`UnreplayedRefusal`], from a layer made with
/// [`not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response)).
/// Implement it for your own body type if it can be cloned.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a request body `WithingsAuthLayer` can take: it does not implement `ReplayBody`",
    label = "the layer needs to know whether this body can be sent twice",
    note = "`http_body_util::Full`, `Empty`, `String`, boxed bodies and hyper's `Incoming` implement it; for a body type of your own, implement `ReplayBody` (return `None` from `try_clone` if it is a stream)"
)]
pub trait ReplayBody: Body + Sized {
    /// A copy to send again, or `None` when this body can only be read once.
    fn try_clone(&self) -> Option<Self>;
}

impl<D: Buf + Clone> ReplayBody for Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D: Buf> ReplayBody for Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl ReplayBody for String {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D: Buf + 'static, E> ReplayBody for BoxBody<D, E> {
    fn try_clone(&self) -> Option<Self> {
        // A boxed body is a stream; only an empty one is known to be the same when re-made.
        self.is_end_stream().then(BoxBody::default)
    }
}

impl<D: Buf + 'static, E> ReplayBody for UnsyncBoxBody<D, E> {
    fn try_clone(&self) -> Option<Self> {
        self.is_end_stream().then(UnsyncBoxBody::default)
    }
}

impl ReplayBody for hyper::body::Incoming {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

/// Set on a response that reports an auth failure but was not replayed, saying why: what a
/// layer made with [`not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response)
/// gives back instead of [`Error::NotReplayed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreplayedRefusal {
    /// Why it was not replayed.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    #[test]
    fn memory_bodies_replay_and_streams_do_not() {
        let full = Full::new(Bytes::from_static(b"action=getmeas"));
        assert!(full.try_clone().is_some());
        assert!(String::from("x").try_clone().is_some());
        assert!(Empty::<Bytes>::new().try_clone().is_some());
        let boxed: BoxBody<Bytes, Infallible> = Full::new(Bytes::from_static(b"x")).boxed();
        assert!(boxed.try_clone().is_none());
        let empty_boxed: BoxBody<Bytes, Infallible> = Empty::new().boxed();
        assert!(empty_boxed.try_clone().is_some());
    }
}
