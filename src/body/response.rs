//! [`WithingsBody`]: the response body handed to the caller, the peeked bytes first.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

#[cfg(doc)]
use super::limits::PEEK_LIMIT;

/// The response body handed to the caller: exactly the bytes the server sent.
///
/// While the layer looks for the Withings `status`, it keeps the first bytes here; they are
/// given back first, followed by the rest of the stream untouched.
///
/// A compressed response (`Content-Encoding: gzip`, `x-gzip`, `deflate` (zlib, or raw
/// deflate), `br`) is still given back compressed, byte for byte, so a decompression layer
/// above works as usual; only the first decoded bytes are looked at, decoded on the side. Any
/// other coding (`zstd`, a chain like `gzip, br`) means the status is unknown: the response
/// goes to the caller as it is, and a refusal inside is not recognised.
#[derive(Debug)]
pub struct WithingsBody<B: Body> {
    /// The bytes read while looking for the status, handed back first (empty once given).
    pub(super) prefix: Bytes,
    /// A frame read after them: trailers, an error, or the rest of a data frame that went past
    /// [`PEEK_LIMIT`]. Rare, so boxed: the body moves with every response.
    pub(super) held: Option<Box<Result<Frame<Bytes>, B::Error>>>,
    pub(super) ended: bool,
    pub(super) inner: B,
}

impl<B: Body + Default> Default for WithingsBody<B> {
    /// An empty body, for middleware above the layer that answers by itself with
    /// `Default::default()` (tower-http's `TimeoutLayer` does): the inner body needs a default
    /// too, as `UnsyncBoxBody` and `Full` have (hyper's `Incoming` has none: box it).
    fn default() -> Self {
        WithingsBody::new(B::default())
    }
}

// The held error is never pinned (it is moved out whole), so only `B` decides.
impl<B: Body + Unpin> Unpin for WithingsBody<B> {}

impl<B: Body> WithingsBody<B> {
    /// A body handed on as it is (its status never looked at, or not yet).
    pub(crate) fn new(inner: B) -> Self {
        WithingsBody {
            prefix: Bytes::new(),
            held: None,
            ended: false,
            inner,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for WithingsBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.prefix)))));
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(*held));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held_data = match self.held.as_deref() {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        let held = (self.prefix.len() + held_data) as u64;
        if self.ended {
            return SizeHint::with_exact(held);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}
