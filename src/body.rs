//! Bodies: request bodies that can be sent twice, and the response body that lets the layer read
//! Withings' `status` without holding back the rest.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

use crate::status::{Envelope, Peek, peek_status};

/// A request body the layer can send a second time after a refresh.
///
/// Bodies held in memory replay byte for byte; streams cannot, and return `None`: the caller
/// then gets the original auth-failure response, marked with [`NotReplayed`]. Implement it for
/// your own body type if it can be cloned.
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

/// Set on a response that reports an auth failure but was not replayed, saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReplayed {
    /// Why it was not replayed.
    pub reason: &'static str,
}

/// How much of a body the layer holds back, at most, looking for a `status` that is not at its
/// start. Withings puts it first, so normally only the first chunk is looked at.
pub(crate) const PEEK_LIMIT: usize = 64 * 1024;

/// The response body handed to the caller: exactly the bytes the server sent.
///
/// While the layer looks for the Withings `status`, it keeps the first bytes here; they are
/// given back first, followed by the rest of the stream untouched.
#[derive(Debug)]
pub struct WithingsBody<B: Body> {
    prefix: Option<Bytes>,
    held: Option<Result<Frame<Bytes>, B::Error>>,
    ended: bool,
    inner: B,
}

// The held error is never pinned (it is moved out whole), so only `B` decides.
impl<B: Body + Unpin> Unpin for WithingsBody<B> {}

impl<B: Body<Data = Bytes> + Unpin> WithingsBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        WithingsBody {
            prefix: None,
            held: None,
            ended: false,
            inner,
        }
    }

    /// Reads frames until the Withings status is known; `None` when the body has none that can
    /// be found within [`PEEK_LIMIT`] bytes.
    pub(crate) fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<Option<i64>> {
        loop {
            let seen: &[u8] = self.prefix.as_deref().unwrap_or_default();
            let peek = peek_status(seen);
            if let Peek::Status(status) = peek {
                return Poll::Ready(Some(status));
            }
            if self.ended || self.held.is_some() {
                if seen.is_empty() {
                    // Nothing to parse: skip building (and dropping) a JSON error.
                    return Poll::Ready(None);
                }
                return Poll::Ready(Envelope::parse(seen).ok().map(|e| e.status));
            }
            if peek == Peek::Unknown {
                // Not at the start: only a body small enough to hold is worth reading whole.
                let too_big = self
                    .inner
                    .size_hint()
                    .upper()
                    .is_none_or(|upper| seen.len() as u64 + upper > PEEK_LIMIT as u64);
                if too_big || seen.len() >= PEEK_LIMIT {
                    return Poll::Ready(None);
                }
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                None => self.ended = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.append(data),
                    Err(frame) => self.held = Some(Ok(frame)),
                },
                Some(Err(error)) => self.held = Some(Err(error)),
            }
        }
    }

    fn append(&mut self, data: Bytes) {
        self.prefix = Some(match self.prefix.take() {
            None => data,
            Some(seen) => {
                let mut joined = BytesMut::with_capacity(seen.len() + data.len());
                joined.extend_from_slice(&seen);
                joined.extend_from_slice(&data);
                joined.freeze()
            }
        });
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
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(held));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use std::future::poll_fn;

    /// A body delivered in the given chunks, one frame each.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    async fn status_and_bytes<B>(body: B) -> (Option<i64>, Bytes)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let mut body = WithingsBody::new(body);
        let status = poll_fn(|cx| body.poll_status(cx)).await;
        (status, body.collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn status_split_across_chunks_and_bytes_unchanged() {
        let body = chunks(&[b"{\"sta", b"tus\":4", b"01,\"body\":{}}"]);
        let (status, bytes) = status_and_bytes(body).await;
        assert_eq!(status, Some(401));
        assert_eq!(&bytes[..], b"{\"status\":401,\"body\":{}}");
    }

    #[tokio::test]
    async fn status_not_first_is_found_in_a_small_body() {
        let (status, bytes) = status_and_bytes(Full::new(Bytes::from_static(
            b"{\"body\":{},\"status\":401}",
        )))
        .await;
        assert_eq!(status, Some(401));
        assert_eq!(&bytes[..], b"{\"body\":{},\"status\":401}");
    }

    #[tokio::test]
    async fn non_json_and_empty_bodies_have_no_status() {
        let (status, bytes) = status_and_bytes(Full::new(Bytes::from_static(b"<html>"))).await;
        assert_eq!((status, &bytes[..]), (None, &b"<html>"[..]));
        let (status, bytes) = status_and_bytes(Empty::<Bytes>::new()).await;
        assert_eq!((status, bytes.len()), (None, 0));
    }

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

    proptest::proptest! {
        /// Whatever the bytes and however they are chunked, the caller reads exactly the bytes
        /// sent, and a body starting `{"status":N` reports N.
        #[test]
        fn bytes_pass_unchanged_whatever_the_chunking(
            status in proptest::option::of(-1000i64..100_000),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            cuts in proptest::collection::vec(0usize..4000, 0..12),
        ) {
            let mut sent = match status {
                Some(s) => format!("{{\"status\":{s},\"body\":").into_bytes(),
                None => Vec::new(),
            };
            sent.extend_from_slice(&tail);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (sent.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut parts = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([sent.len()]) {
                parts.push(Bytes::copy_from_slice(&sent[start..cut]));
                start = cut;
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (found, received) = runtime.block_on(status_and_bytes(Chunks(parts.into())));
            proptest::prop_assert_eq!(&received[..], &sent[..]);
            if let Some(s) = status {
                proptest::prop_assert_eq!(found, Some(s));
            }
        }
    }
}
