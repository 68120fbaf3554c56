//! The status scan: [`StatusReader`] reads a response body's first frames (decoded on the side
//! when compressed) until Withings' `status` is known, holding them for the caller.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};

use super::decode::{Coding, Decoding};
use super::limits::{PEEK_FRAMES, PEEK_FRAMES_PER_POLL, PEEK_LIMIT};
use super::response::WithingsBody;
use crate::status::{Envelope, Peek, StatusScan};

/// A response body being read for its Withings `status`: the body, and the state of the search,
/// kept apart so that the body handed to the caller stays small.
pub(crate) struct StatusReader<B: Body> {
    pub(crate) body: WithingsBody<B>,
    peek: Peeker,
}

/// The state of the status search.
#[derive(Debug)]
struct Peeker {
    scan: StatusScan,
    coding: Coding,
    /// The frames after the first, joined (the first is kept as it came, without a copy);
    /// grows by doubling, never past [`PEEK_LIMIT`]: copying stays linear in what is held.
    joined: Option<BytesMut>,
    /// The decoder of a compressed body, made when its first bytes arrive and dropped as soon
    /// as the status is known.
    decoding: Option<Box<Decoding>>,
    frames: u32,
}

impl<B: Body<Data = Bytes> + Unpin> StatusReader<B> {
    /// The body of a response with these headers: its `Content-Encoding` says how to read the
    /// status. No decoder is made unless the body is compressed.
    pub(crate) fn new(headers: &HeaderMap, inner: B) -> Self {
        Self::with_coding(Coding::of(headers), inner)
    }

    fn with_coding(coding: Coding, inner: B) -> Self {
        StatusReader {
            body: WithingsBody::new(inner),
            peek: Peeker {
                scan: StatusScan::new(),
                coding,
                joined: None,
                decoding: None,
                frames: 0,
            },
        }
    }

    /// The body, with every byte read so far given back first.
    pub(crate) fn into_body(mut self) -> WithingsBody<B> {
        self.settle();
        self.body
    }

    /// How many bytes are held back (for the tests).
    #[cfg(test)]
    pub(crate) fn held_len(&self) -> usize {
        self.held().len()
    }

    /// `body.wait_seconds` of a 601 answer, if the bytes read so far say it.
    pub(crate) fn wait_seconds(&self) -> Option<std::time::Duration> {
        crate::status::find_wait_seconds(self.held()).map(std::time::Duration::from_secs)
    }

    fn held(&self) -> &[u8] {
        match &self.peek.joined {
            Some(joined) => joined,
            None => &self.body.prefix,
        }
    }

    /// Moves the joined bytes into the body's prefix.
    fn settle(&mut self) {
        if let Some(joined) = self.peek.joined.take() {
            self.body.prefix = joined.freeze();
        }
    }

    /// Reads frames until the Withings status is known; `None` when the body has none that can
    /// be found within [`PEEK_LIMIT`] bytes and [`PEEK_FRAMES`] frames (or its coding is not one
    /// this crate decodes). Yields (waking itself) every [`PEEK_FRAMES_PER_POLL`] frames.
    pub(crate) fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<Option<i64>> {
        if self.peek.frames == 0 && self.body.inner.is_end_stream() {
            // An empty body (a `HEAD`-like answer): nothing to read, nothing to hold.
            self.body.ended = true;
            return Poll::Ready(None);
        }
        let mut budget = PEEK_FRAMES_PER_POLL;
        loop {
            if let Some(outcome) = self.verdict() {
                self.peek.decoding = None;
                self.settle();
                return Poll::Ready(outcome);
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            let frame = ready!(Pin::new(&mut self.body.inner).poll_frame(cx));
            self.peek.frames += 1;
            match frame {
                None => self.body.ended = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.take(data),
                    Err(frame) => self.body.held = Some(Box::new(Ok(frame))),
                },
                Some(Err(error)) => self.body.held = Some(Box::new(Err(error))),
            }
        }
    }

    /// The answer, if reading more cannot change it.
    fn verdict(&self) -> Option<Option<i64>> {
        let peek = &self.peek;
        if let Peek::Status(status) = peek.scan.peek() {
            return Some(Some(status));
        }
        if peek.coding == Coding::Unsupported {
            return Some(None);
        }
        let held = self.held().len();
        let body = &self.body;
        // More text than may be read: the first frame alone was bigger, or decoding stopped.
        let over = held > PEEK_LIMIT || peek.decoding.as_ref().is_some_and(|d| d.stopped());
        let complete =
            body.ended || matches!(body.held.as_deref(), Some(Ok(frame)) if frame.is_trailers());
        if complete && !over {
            // The whole body is here: a status that is not first can still be found.
            let text = match &peek.decoding {
                Some(decoding) => decoding.text(),
                None if peek.coding == Coding::Identity => self.held(),
                None => &[],
            };
            if text.is_empty() {
                // Nothing to parse: skip building (and dropping) a JSON error.
                return Some(None);
            }
            return Some(Envelope::parse(text).ok().map(|e| e.status));
        }
        if over || complete || body.held.is_some() || held >= PEEK_LIMIT {
            return Some(None);
        }
        if peek.frames >= PEEK_FRAMES {
            return Some(None);
        }
        if peek.scan.peek() == Peek::Unknown {
            // Not at the start: only a body small enough to hold is worth reading whole.
            let small = body
                .inner
                .size_hint()
                .upper()
                .is_some_and(|upper| held as u64 + upper <= PEEK_LIMIT as u64);
            if !small {
                return Some(None);
            }
        }
        None
    }

    /// Holds back a data frame and looks at its bytes (only those within [`PEEK_LIMIT`]).
    fn take(&mut self, mut data: Bytes) {
        let start = self.held().len();
        if start == 0 {
            // The first frame is kept whole, without a copy.
            self.body.prefix = data;
        } else {
            let room = PEEK_LIMIT.saturating_sub(start);
            if data.len() > room {
                // The rest goes to the caller after the prefix, never copied.
                self.body.held = Some(Box::new(Ok(Frame::data(data.split_off(room)))));
            }
            if data.is_empty() {
                return;
            }
            let joined = self.peek.joined.get_or_insert_with(BytesMut::new);
            let held = if joined.is_empty() {
                &self.body.prefix[..]
            } else {
                &joined[..]
            };
            let needed = held.len() + data.len(); // at most PEEK_LIMIT: see `room`
            if joined.capacity() < needed {
                // Doubling, capped at the limit: copying stays linear in what is held.
                let mut grown = BytesMut::with_capacity(
                    (2 * held.len()).clamp(needed.max(256), PEEK_LIMIT.max(needed)),
                );
                grown.extend_from_slice(held);
                *joined = grown;
            }
            joined.extend_from_slice(&data);
        }
        let Peeker {
            scan,
            coding,
            joined,
            decoding,
            ..
        } = &mut self.peek;
        let raw = match joined {
            Some(joined) => &joined[..],
            None => &self.body.prefix[..],
        };
        let raw = &raw[..raw.len().min(PEEK_LIMIT)];
        match *coding {
            Coding::Identity => {
                if start < raw.len() {
                    scan.feed(&raw[start..]);
                }
            }
            Coding::Unsupported => {}
            coding => {
                let decoding = decoding.get_or_insert_with(|| Box::new(Decoding::new(coding)));
                let before = decoding.decoded();
                decoding.run(raw);
                scan.feed(&decoding.text()[before..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error_body::status_error;
    use super::super::limits::ERROR_BODY_LIMIT;
    use super::*;
    use crate::error::Error;
    use http::header::CONTENT_ENCODING;
    use http_body_util::BodyExt;
    use http_body_util::{Empty, Full};
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::future::poll_fn;

    /// A body delivered in `first`'s chunks, one frame each, then, if set, `forever`'s chunk
    /// forever (never pending, never ending), keeping what it made.
    struct Chunks {
        first: VecDeque<Bytes>,
        forever: Option<Bytes>,
        produced: Vec<u8>,
        frames: usize,
    }

    impl Chunks {
        /// A body of the chunks `first`, then its end.
        fn new(first: VecDeque<Bytes>) -> Self {
            Chunks {
                first,
                forever: None,
                produced: Vec::new(),
                frames: 0,
            }
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let this = self.get_mut();
            let Some(data) = this.first.pop_front().or_else(|| this.forever.clone()) else {
                return Poll::Ready(None);
            };
            this.produced.extend_from_slice(&data);
            this.frames += 1;
            assert!(
                this.forever.is_none() || this.frames < 100_000,
                "the peek never stops"
            );
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks::new(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    async fn status_and_bytes<B>(body: B) -> (Option<i64>, Bytes)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let mut body = StatusReader::with_coding(Coding::Identity, body);
        let status = poll_fn(|cx| body.poll_status(cx)).await;
        (status, body.into_body().collect().await.unwrap().to_bytes())
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

    /// `status_errors`' error: the message of a small body decides (here between two 503s);
    /// a body longer than the limit, or compressed, is classified from the number alone.
    #[tokio::test]
    async fn a_status_error_reads_the_message_of_small_bodies_only() {
        let response = |headers: HeaderMap, body: Chunks| {
            let mut response = http::Response::new(WithingsBody::new(body));
            *response.headers_mut() = headers;
            response
        };
        let deactivated = chunks(&[
            b"{\"status\":503,\"body\":{},",
            b"\"error\":\"User is temporarily deactivated\"}",
        ]);
        let error = status_error(response(HeaderMap::new(), deactivated), 503).await;
        assert!(matches!(error, Error::UserDeactivated), "{error:?}");
        let wait = chunks(&[b"{\"status\":601,\"body\":{\"wait_seconds\":7}}"]);
        let error = status_error(response(HeaderMap::new(), wait), 601).await;
        assert!(
            matches!(error, Error::RateLimited { wait: Some(w) } if w.as_secs() == 7),
            "{error:?}"
        );
        // Longer than the limit: the message is past what is read.
        let mut long = b"{\"status\":503,\"body\":\"".to_vec();
        long.resize(ERROR_BODY_LIMIT + 1, b'x');
        long.extend_from_slice(b"\",\"error\":\"User is temporarily deactivated\"}");
        let error = status_error(response(HeaderMap::new(), cut(&long, 1000)), 503).await;
        assert!(
            matches!(error, Error::InvalidParams { status: 503, .. }),
            "{error:?}"
        );
        // Compressed: not read at all.
        let sent = encode(
            "gzip",
            b"{\"status\":503,\"error\":\"User is temporarily deactivated\"}",
        );
        let error = status_error(response(headers("gzip"), cut(&sent, 4)), 503).await;
        assert!(
            matches!(error, Error::InvalidParams { status: 503, .. }),
            "{error:?}"
        );
    }

    /// `plain` encoded in `coding` ("gzip", "x-gzip", "deflate" (zlib), "deflate-raw", "br").
    fn encode(coding: &str, plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let level = flate2::Compression::default();
        match coding {
            "gzip" | "x-gzip" => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), level);
                w.write_all(plain).unwrap();
                w.finish().unwrap()
            }
            "deflate" => {
                let mut w = flate2::write::ZlibEncoder::new(Vec::new(), level);
                w.write_all(plain).unwrap();
                w.finish().unwrap()
            }
            "deflate-raw" => {
                let mut w = flate2::write::DeflateEncoder::new(Vec::new(), level);
                w.write_all(plain).unwrap();
                w.finish().unwrap()
            }
            "br" => {
                let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
                w.write_all(plain).unwrap();
                w.flush().unwrap();
                w.into_inner()
            }
            other => panic!("{other}"),
        }
    }

    fn headers(coding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let name = if coding == "deflate-raw" {
            "deflate"
        } else {
            coding
        };
        headers.insert(CONTENT_ENCODING, name.parse().unwrap());
        headers
    }

    /// Reads the status of `body` sent with these headers, then the bytes the caller gets.
    async fn status_and_bytes_of<B>(headers: &HeaderMap, body: B) -> (Option<i64>, Bytes)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let mut body = StatusReader::new(headers, body);
        let status = poll_fn(|cx| body.poll_status(cx)).await;
        assert!(
            body.peek.decoding.is_none(),
            "the decoder is dropped once done"
        );
        (status, body.into_body().collect().await.unwrap().to_bytes())
    }

    /// `bytes` in `size`-byte frames.
    fn cut(bytes: &[u8], size: usize) -> Chunks {
        Chunks::new(bytes.chunks(size).map(Bytes::copy_from_slice).collect())
    }

    const REFUSED: &[u8] = br#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#;

    #[tokio::test]
    async fn every_coding_shows_its_status_and_keeps_its_bytes() {
        for coding in ["gzip", "x-gzip", "deflate", "deflate-raw", "br"] {
            let sent = encode(coding, REFUSED);
            for size in [1, 2, 7, sent.len()] {
                let (status, bytes) = status_and_bytes_of(&headers(coding), cut(&sent, size)).await;
                assert_eq!(status, Some(401), "{coding} in {size}-byte frames");
                assert_eq!(
                    &bytes[..],
                    &sent[..],
                    "{coding}: the compressed bytes, untouched"
                );
            }
            // Status not first, in a small body: found in the decoded whole.
            let sent = encode(coding, br#"{"body":{},"status":401}"#);
            let full = Full::new(Bytes::from(sent.clone()));
            let (status, bytes) = status_and_bytes_of(&headers(coding), full).await;
            assert_eq!((status, &bytes[..]), (Some(401), &sent[..]), "{coding}");
        }
        // `identity` says what no header says.
        let (status, _) = status_and_bytes_of(&headers("identity"), cut(REFUSED, 3)).await;
        assert_eq!(status, Some(401));
    }

    #[tokio::test]
    async fn gzip_header_fields_are_skipped() {
        let mut sent = flate2::GzBuilder::new()
            .filename("status.json")
            .comment("a comment")
            .extra(vec![7; 300])
            .write(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut sent, REFUSED).unwrap();
        let sent = sent.finish().unwrap();
        for size in [1, 5, sent.len()] {
            let (status, bytes) = status_and_bytes_of(&headers("gzip"), cut(&sent, size)).await;
            assert_eq!((status, &bytes[..]), (Some(401), &sent[..]), "{size}");
        }
        // A header CRC (FHCRC), which flate2 never writes: two more bytes after the header.
        let plain = encode("gzip", REFUSED);
        let mut with_crc = plain[..10].to_vec();
        with_crc[3] |= 0x02;
        with_crc.extend_from_slice(&[0xab, 0xcd]);
        with_crc.extend_from_slice(&plain[10..]);
        let (status, _) = status_and_bytes_of(&headers("gzip"), cut(&with_crc, 1)).await;
        assert_eq!(status, Some(401));
    }

    #[tokio::test]
    async fn unknown_codings_are_not_read_at_all() {
        let mut two_lines = headers("gzip");
        two_lines.append(CONTENT_ENCODING, "br".parse().unwrap());
        for headers in [headers("zstd"), headers("gzip, br"), two_lines] {
            let mut body = StatusReader::new(&headers, chunks(&[REFUSED]));
            let status = poll_fn(|cx| body.poll_status(cx)).await;
            assert_eq!(status, None, "{headers:?}");
            assert_eq!(body.body.inner.first.len(), 1, "not a frame read");
            let bytes = body.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], REFUSED);
        }
    }

    #[tokio::test]
    async fn a_corrupt_or_mislabelled_stream_has_no_status() {
        let gzip = encode("gzip", REFUSED);
        let mut corrupt = gzip[..12].to_vec();
        corrupt.extend_from_slice(&[0xff; 64]);
        for (coding, sent) in [
            ("gzip", corrupt),
            ("gzip", REFUSED.to_vec()),
            ("br", REFUSED.to_vec()),
            ("deflate", REFUSED.to_vec()),
            ("br", gzip.clone()),
        ] {
            let (status, bytes) = status_and_bytes_of(&headers(coding), cut(&sent, 4)).await;
            assert_eq!(status, None, "{coding}: {sent:?}");
            assert_eq!(&bytes[..], &sent[..]);
        }
    }

    #[test]
    fn a_decompression_bomb_is_decoded_only_up_to_the_limit() {
        let mut plain = b"{".to_vec();
        plain.resize(8 << 20, b' ');
        for coding in ["gzip", "deflate", "br"] {
            let sent = encode(coding, &plain);
            assert!(sent.len() < PEEK_LIMIT, "{coding}: {}", sent.len());
            let mut decoding = Decoding::new(Coding::of(&headers(coding)));
            decoding.run(&sent);
            if coding == "br" {
                // Its first meta-block needs a ring buffer of the whole 4 MiB window: the
                // decoder may not reserve it (past the peek's bound) and stops at once.
                assert_eq!(decoding.decoded(), 0, "{coding}");
            } else {
                assert_eq!(decoding.decoded(), PEEK_LIMIT, "{coding}");
            }
            assert!(decoding.capacity() <= PEEK_LIMIT, "{coding}");
            assert!(decoding.stopped(), "{coding}");
            // And as a body: no status, every byte given back.
            let mut body = StatusReader::new(&headers(coding), cut(&sent, 1000));
            let status = poll_until_ready(&mut body).0;
            assert_eq!(status, None, "{coding}");
            assert!(body.held_len() <= PEEK_LIMIT);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let bytes = runtime
                .block_on(body.into_body().collect())
                .unwrap()
                .to_bytes();
            assert_eq!(&bytes[..], &sent[..], "{coding}");
        }
    }

    /// Counts the wake-ups a peek asks for.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Polls the status by hand until it is ready: (status, polls, wake-ups asked for).
    fn poll_until_ready<B>(body: &mut StatusReader<B>) -> (Option<i64>, usize, usize)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let bound = (PEEK_FRAMES / PEEK_FRAMES_PER_POLL) as usize + 2;
        for polls in 1..=bound {
            if let Poll::Ready(status) = body.poll_status(&mut cx) {
                return (
                    status,
                    polls,
                    wakes.0.load(std::sync::atomic::Ordering::SeqCst),
                );
            }
        }
        panic!("not ready after {bound} polls");
    }

    #[test]
    fn endless_bodies_are_peeked_within_bounds_and_yield() {
        let spaces = Bytes::from(vec![b' '; 1000]);
        let cases: [(&[u8], Bytes); 6] = [
            (b"{", spaces.clone()),
            (b"{\"status\":", spaces.clone()),
            (b"{", Bytes::new()),
            (b"{", Bytes::from_static(b" ")),
            (b"{\"status\":", Bytes::from_static(b"\n")),
            (b"{\"sta", Bytes::from(vec![b' '; 100_000])),
        ];
        for (head, chunk) in cases {
            for coding in ["identity", "gzip"] {
                let first: VecDeque<Bytes> = if coding == "identity" {
                    [Bytes::from_static(head)].into()
                } else {
                    // The same whitespace compressed, in one-byte frames (then `chunk`
                    // forever: garbage after the stream, never decoded that far).
                    let mut plain = head.to_vec();
                    let pad = if chunk.is_empty() { 0 } else { 1 << 20 };
                    plain.resize(head.len() + pad, chunk.first().copied().unwrap_or(b' '));
                    encode("gzip", &plain)
                        .into_iter()
                        .map(|b| Bytes::copy_from_slice(&[b]))
                        .collect()
                };
                let endless = Chunks {
                    forever: Some(chunk.clone()),
                    ..Chunks::new(first)
                };
                let mut body = StatusReader::new(&headers(coding), endless);
                let (status, polls, wakes) = poll_until_ready(&mut body);
                let (read, frames) = (body.body.inner.produced.len(), body.body.inner.frames);
                let what = format!(
                    "\"{}\" then {}-byte chunks, {coding}: {polls} polls, {read} bytes in {frames} frames",
                    head.escape_ascii(),
                    chunk.len(),
                );
                assert_eq!(status, None, "{what}");
                let per_poll = PEEK_FRAMES_PER_POLL as usize;
                assert!(polls >= frames.div_ceil(per_poll), "yields: {what}");
                assert_eq!(wakes, polls - 1, "each yield woke the task: {what}");
                assert!(frames <= PEEK_FRAMES as usize, "{what}");
                assert!(body.held_len() <= PEEK_LIMIT, "{what}");
                assert!(read <= PEEK_LIMIT + chunk.len(), "{what}");
                if coding == "identity" && chunk.len() < 1000 {
                    assert!(polls > 2, "{what}");
                }
                // The caller reads the bytes read so far, then the stream as it goes on.
                let mut given = Vec::new();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut body = body.into_body();
                while given.len() < read {
                    let frame = runtime.block_on(body.frame()).unwrap().unwrap();
                    given.extend_from_slice(frame.data_ref().unwrap());
                }
                assert_eq!(given, body.inner.produced, "{what}");
                let next = runtime.block_on(body.frame()).unwrap().unwrap();
                assert_eq!(
                    body.inner.produced.len(),
                    read + next.data_ref().unwrap().len()
                );
            }
        }
    }

    #[tokio::test]
    async fn a_status_across_the_limit_is_still_read_within_it() {
        // Ten one-byte frames, then one big frame holding the rest of the status: the part of
        // it within the limit is looked at, the rest handed on without a copy.
        let mut parts: Vec<Bytes> = b"{\"status\":"
            .iter()
            .map(|b| Bytes::copy_from_slice(&[*b]))
            .collect();
        let mut big = b"401,\"body\":\"".to_vec();
        big.resize(200_000, b'x');
        parts.push(Bytes::from(big));
        let sent: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        let mut body = StatusReader::with_coding(Coding::Identity, Chunks::new(parts.into()));
        let status = poll_fn(|cx| body.poll_status(cx)).await;
        assert_eq!(status, Some(401));
        assert_eq!(body.held_len(), PEEK_LIMIT);
        assert_eq!(
            body.body.size_hint().lower(),
            sent.len() as u64,
            "the held rest counts"
        );
        let bytes = body.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &sent[..]);
    }

    #[test]
    fn bodies_stay_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<WithingsBody<Full<Bytes>>>();
    }

    proptest::proptest! {
        /// Whatever the bytes, their coding and however they are chunked, the caller reads
        /// exactly the bytes sent, and a body starting `{"status":N` (once decoded) reports N.
        #[test]
        fn bytes_pass_unchanged_whatever_the_chunking(
            status in proptest::option::of(-1000i64..100_000),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            cuts in proptest::collection::vec(0usize..4000, 0..12),
            coding in proptest::sample::select(vec!["identity", "gzip", "deflate", "br"]),
        ) {
            let mut plain = match status {
                Some(s) => format!("{{\"status\":{s},\"body\":").into_bytes(),
                None => Vec::new(),
            };
            plain.extend_from_slice(&tail);
            let sent = if coding == "identity" { plain } else { encode(coding, &plain) };
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
            let (found, received) =
                runtime.block_on(status_and_bytes_of(&headers(coding), Chunks::new(parts.into())));
            proptest::prop_assert_eq!(&received[..], &sent[..]);
            if let Some(s) = status {
                proptest::prop_assert_eq!(found, Some(s));
            }
        }
    }
}
