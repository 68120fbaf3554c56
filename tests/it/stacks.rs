//! The layer inside real middleware stacks (tower-http's decompression, redirects and timeout,
//! tower's buffer and concurrency limit), above and below each: a revoked token is refreshed
//! exactly once and the request replayed, and compressed answers still show their body status.
//! Then bodies that never say their status: the peek stays bounded and yields.

use std::future::{Future, poll_fn};
use std::io::Read;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::decompression::DecompressionLayer;
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::timeout::TimeoutLayer;
use tower_withings::BoxError;

type Encodings = Arc<Mutex<Vec<Option<String>>>>;

/// The plain hyper client, recording the `Content-Encoding` of every response it receives.
fn client_recording(
    seen: Encodings,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Future<
        Output = Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    > + Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .map_response(move |response: Response<hyper::body::Incoming>| {
            let encoding = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(encoding);
            response
        })
        .service(http())
}

/// Revokes the access token, sends one getmeas through `service` and checks: one refresh, one
/// replay, and the caller reads a decoded `status: 0` body. Returns the encodings the client
/// saw on the wire.
async fn refreshed_once_and_replayed<S, B>(rig: &Rig, service: S, seen: &Encodings)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    rig.revoke_access_token();
    let response = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["status"], 0, "{body}");
    assert!(body["body"]["measuregrps"].is_array(), "{body}");
    let counters = rig.sim.counters();
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    assert_eq!(counters.successful_refreshes, 1, "{counters:?}");
    assert_eq!(counters.served_401, 1, "{counters:?}");
    assert_eq!(counters.data_calls, 2, "one send, one replay: {counters:?}");
    let metrics = rig.auth.metrics();
    assert_eq!(metrics.refreshes_started, 1, "{metrics:?}");
    assert_eq!(metrics.replays, 1, "{metrics:?}");
    assert_eq!(seen.lock().unwrap().len(), 2, "two answers on the wire");
}

fn encodings(seen: &Encodings) -> Vec<Option<String>> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn decompression_above_the_layer_each_coding() {
    for coding in ["gzip", "deflate", "br"] {
        let rig = rig().await;
        let seen = Encodings::default();
        // Only `coding` is offered, so the simulator answers in it.
        let decompression = DecompressionLayer::new()
            .gzip(coding == "gzip")
            .deflate(coding == "deflate")
            .br(coding == "br");
        let service = ServiceBuilder::new()
            .layer(decompression)
            .layer(rig.auth.layer())
            .service(client_recording(seen.clone()));
        refreshed_once_and_replayed(&rig, service, &seen).await;
        assert_eq!(
            encodings(&seen),
            vec![Some(coding.to_owned()); 2],
            "the 401 and the replay came {coding}-encoded"
        );
    }
}

#[tokio::test]
async fn decompression_below_the_layer() {
    let rig = rig().await;
    let seen = Encodings::default();
    let service = ServiceBuilder::new()
        .layer(rig.auth.layer())
        .layer(DecompressionLayer::new())
        .service(client_recording(seen.clone()));
    refreshed_once_and_replayed(&rig, service, &seen).await;
    assert_eq!(encodings(&seen), vec![Some("br".to_owned()); 2]);
}

/// `other` above the layer, then below it, each time over a fresh rig and `client` (the
/// recording client, or a stack ending in it): a revoked token is refreshed once and the
/// request replayed either way.
async fn above_and_below<L, C, A, B>(other: L, client: impl Fn(Encodings) -> C)
where
    L: Layer<tower_withings::WithingsAuthService<C>> + Layer<C> + Clone,
    <L as Layer<tower_withings::WithingsAuthService<C>>>::Service:
        Service<Request<Full<Bytes>>, Response = Response<A>, Error: std::fmt::Debug>,
    tower_withings::WithingsAuthService<<L as Layer<C>>::Service>:
        Service<Request<Full<Bytes>>, Response = Response<B>, Error: std::fmt::Debug>,
    A: Body<Error: std::fmt::Debug>,
    B: Body<Error: std::fmt::Debug>,
{
    let rig = rig().await;
    let seen = Encodings::default();
    let service = ServiceBuilder::new()
        .layer(other.clone())
        .layer(rig.auth.layer())
        .service(client(seen.clone()));
    refreshed_once_and_replayed(&rig, service, &seen).await;

    let rig = crate::common::rig().await;
    let seen = Encodings::default();
    let service = ServiceBuilder::new()
        .layer(rig.auth.layer())
        .layer(other)
        .service(client(seen.clone()));
    refreshed_once_and_replayed(&rig, service, &seen).await;
}

#[tokio::test]
async fn follow_redirect_above_and_below_the_layer() {
    above_and_below(FollowRedirectLayer::new(), client_recording).await;
}

#[tokio::test]
async fn timeout_above_and_below_the_layer() {
    // tower-http's timeout answers with `Default::default()` of the body below it; hyper's
    // `Incoming` has none, so the client's body is boxed (as the crate docs show).
    let boxed = |r: Response<hyper::body::Incoming>| r.map(|b| b.boxed_unsync());
    let timeout =
        TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, Duration::from_secs(10));
    above_and_below(timeout, |seen| {
        ServiceBuilder::new()
            .map_response(boxed)
            .service(client_recording(seen))
    })
    .await;
}

#[tokio::test]
async fn buffer_above_and_below_the_layer() {
    above_and_below(tower::buffer::BufferLayer::new(1), client_recording).await;
}

#[tokio::test]
async fn concurrency_limit_above_and_below_the_layer() {
    // A limit of one: the replay must not wait for the permit of the refused first send.
    let limit = tower::limit::ConcurrencyLimitLayer::new(1);
    above_and_below(limit, client_recording).await;
}

#[tokio::test]
async fn everything_at_once_over_a_server_that_compresses_anyway() {
    let rig = rig().await;
    rig.sim.set_response_encoding(Some("gzip"));
    let seen = Encodings::default();
    let service = ServiceBuilder::new()
        .layer(DecompressionLayer::new())
        .layer(FollowRedirectLayer::new())
        .buffer(4)
        .concurrency_limit(2)
        .layer(rig.auth.layer())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(10),
        ))
        .map_response(|r: Response<hyper::body::Incoming>| r.map(|b| b.boxed_unsync()))
        .service(client_recording(seen.clone()));
    refreshed_once_and_replayed(&rig, service, &seen).await;
    assert_eq!(encodings(&seen), vec![Some("gzip".to_owned()); 2]);
}

/// Decodes a whole body in `coding`, as the caller would.
fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    match coding {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain),
        "deflate" => flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut plain),
        "br" => brotli_decompressor::Decompressor::new(bytes, 4096).read_to_end(&mut plain),
        other => panic!("{other}"),
    }
    .unwrap();
    plain
}

#[tokio::test]
async fn a_server_that_compresses_anyway_without_decompression_anywhere() {
    for coding in ["gzip", "x-gzip", "deflate", "br"] {
        let rig = rig().await;
        rig.sim.set_response_encoding(Some(coding));
        let seen = Encodings::default();
        let service = rig.auth.layer().layer(client_recording(seen.clone()));
        rig.revoke_access_token();
        let response = service.oneshot(getmeas(&rig.sim, USER)).await.unwrap();
        // The caller gets the replay's answer exactly as the server sent it: still encoded.
        assert_eq!(response.headers()[header::CONTENT_ENCODING], coding);
        let length: usize = response.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), length, "{coding}: every byte, nothing added");
        if coding.ends_with("gzip") {
            assert_eq!(&bytes[..2], b"\x1f\x8b", "gzip magic");
        }
        let body: serde_json::Value = serde_json::from_slice(&decode(coding, &bytes)).unwrap();
        assert_eq!(body["status"], 0, "{coding}: {body}");
        // ... and the compressed 401 before it was recognised.
        let counters = rig.sim.counters();
        assert_eq!(counters.served_401, 1, "{coding}: {counters:?}");
        assert_eq!(counters.refreshes, 1, "{coding}: {counters:?}");
        assert_eq!(rig.auth.metrics().replays, 1, "{coding}");
        assert_eq!(encodings(&seen), vec![Some(coding.to_owned()); 2]);
    }
}

#[tokio::test]
async fn an_unknown_coding_passes_through_untouched() {
    // Status unknown (zstd, or a chain of codings): the response goes to the caller as it is,
    // no refresh, nothing read beyond what the caller reads.
    for coding in ["zstd", "gzip, br"] {
        let rig = rig().await;
        let (inner, calls) = counting_api(move |_| {
            let mut response = Response::new(Full::new(Bytes::from_static(
                br#"{"status":401,"body":{},"error":"looks like JSON, is not decodable"}"#,
            )));
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, coding.parse().unwrap());
            response
        });
        let response = through_layer(&rig, inner).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_ENCODING], coding);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.starts_with(br#"{"status":401"#));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{coding}: not replayed");
        assert_eq!(rig.sim.counters().refreshes, 0, "{coding}");
    }
}

// ---- bodies that never say their status ----

const SAFETY_NET_BYTES: usize = 256 << 10;
const SAFETY_NET_FRAMES: usize = 8192;

/// An endless body: `head`, then `chunk` forever, counting into `bytes` and `frames` what it
/// produced. As a safety net for a reader that never stops (so such a reader fails the test
/// instead of hanging it), it fails after [`SAFETY_NET_BYTES`] bytes or [`SAFETY_NET_FRAMES`]
/// frames.
fn endless_body(
    head: &'static [u8],
    chunk: &'static [u8],
    bytes: Arc<AtomicUsize>,
    frames: Arc<AtomicUsize>,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static {
    let chunks = std::iter::once(head).chain(std::iter::repeat(chunk));
    let frames = chunks.map(move |data| {
        let data = Bytes::from_static(data);
        let produced = bytes.fetch_add(data.len(), Ordering::SeqCst) + data.len();
        let count = frames.fetch_add(1, Ordering::SeqCst) + 1;
        if produced > SAFETY_NET_BYTES || count > SAFETY_NET_FRAMES {
            return Err::<_, BoxError>("the reader never stopped".into());
        }
        Ok(Frame::data(data))
    });
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// Sends a getmeas to an inner service answering HTTP 200 with `head` then `chunk` forever,
/// polling the layer's future by hand. Checks it completes within a bounded number of polls,
/// having yielded, and that the caller's first frames are exactly the bytes read so far.
async fn endless(head: &'static [u8], chunk: &'static [u8]) {
    let rig = rig().await;
    let bytes = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(AtomicUsize::new(0));
    let (b, f) = (bytes.clone(), frames.clone());
    let inner = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let body = endless_body(head, chunk, b.clone(), f.clone());
        async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
    });
    let service = rig.auth.layer().layer(inner);
    let mut call = pin!(service.oneshot(getmeas(&rig.sim, USER)));
    let mut polls = 0usize;
    let response = poll_fn(|cx| {
        polls += 1;
        call.as_mut().poll(cx)
    })
    .await
    .unwrap();
    let read = bytes.load(Ordering::SeqCst);
    let read_frames = frames.load(Ordering::SeqCst);
    let what = format!(
        "\"{}\" then {}-byte chunks: {polls} polls, {read} bytes in {read_frames} frames",
        head.escape_ascii(),
        chunk.len()
    );
    assert!(
        polls >= 2,
        "never yielded, so no timeout could fire: {what}"
    );
    assert!(polls <= 100, "{what}");
    assert!(
        read <= 64 * 1024 + chunk.len(),
        "held at most the peek limit: {what}"
    );
    assert!(read_frames <= 2048, "{what}");
    assert_eq!(rig.sim.counters().refreshes, 0);

    // The caller reads the held-back bytes first, then the stream goes on.
    let mut body = response.into_body();
    let mut first = Vec::new();
    while first.len() < read {
        let frame = body.frame().await.unwrap().unwrap();
        first.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(first.len(), read, "{what}");
    let mut expected = head.to_vec();
    while expected.len() < read {
        expected.extend_from_slice(chunk);
    }
    assert_eq!(first, expected, "{what}");
    assert_eq!(
        bytes.load(Ordering::SeqCst),
        read,
        "nothing read behind the caller's back"
    );
    let next = body.frame().await.unwrap().unwrap();
    assert_eq!(next.data_ref().unwrap(), chunk, "{what}");
}

#[tokio::test]
async fn endless_whitespace_after_the_brace() {
    endless(b"{", &[b' '; 512]).await;
}

#[tokio::test]
async fn endless_whitespace_after_the_status_key() {
    endless(b"{\"status\":", b" \r\n\t").await;
}

#[tokio::test]
async fn endless_empty_frames() {
    endless(b"{", b"").await;
}

#[tokio::test]
async fn endless_one_byte_chunks() {
    endless(b"{", b" ").await;
}
