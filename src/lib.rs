//! Withings OAuth 2.0 for any tower HTTP client.
//!
//! [`WithingsAuthLayer`] wraps any `Service<http::Request<B>>` (hyper-util's client, a
//! `ServiceBuilder` stack, …). For every Withings API request it attaches the right user's bearer
//! token, refreshes it before it expires or when Withings refuses it (HTTP 200 with `"status":401`
//! in the body), runs exactly one refresh per user however many requests wait, saves the rotated
//! pair through a [`TokenStore`](store::TokenStore) before using it, and replays the request once.
//!
//! [`WithingsAuth`] is the handle behind the layers: the OAuth web flow
//! ([`authorize`](WithingsAuth::authorize), [`exchange_code`](WithingsAuth::exchange_code)),
//! the store, and the per-user refresh state.
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
//! use tower_withings::{Credentials, Error, UserId, WithingsAuth, store::MemoryStore, transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let auth = WithingsAuth::builder(Credentials::new("client-id", "client-secret"))
//!     .store(MemoryStore::new())
//!     .build(transport::plain_http_client()); // token calls: use an https client in production
//!
//! let client = ServiceBuilder::new()
//!     .layer(TraceLayer::new_for_http())
//!     .layer(auth.layer())
//!     .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, Duration::from_secs(10)))
//!     .map_response(|r: http::Response<hyper::body::Incoming>| r.map(|b| b.boxed()))
//!     .service(transport::plain_http_client());
//!
//! let request = Request::post("https://wbsapi.withings.net/measure")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .extension(UserId(46865875)) // whose token to use
//!     .body(Full::new(Bytes::from_static(b"action=getmeas&meastype=1")))
//!     .unwrap();
//! // Nobody has authorized yet, so this fails with a typed error before anything is sent.
//! let error = client.oneshot(request).await.err().expect("no token yet");
//! assert!(matches!(error.downcast_ref::<Error>(), Some(Error::UnknownUser(UserId(46865875)))));
//! # }
//! ```
//!
//! The layer spawns its refresh tasks with `tokio::spawn`: use it inside a Tokio runtime.
//!
//! # What a call returns
//!
//! - `Err` holds a [`BoxError`]: either the inner service's error or an [`Error`]
//!   (`error.downcast_ref::<Error>()`), whose [`kind`](Error::kind) (auth, rate, transient,
//!   store, config, usage) says what to do about it without matching every variant.
//! - A refused token (HTTP 401, or `"status"` 100, 101, 102, 200 or 401 in an HTTP 200 body) is
//!   refreshed (once per user) and the request replayed once; a second refusal is
//!   [`Error::AccessTokenInvalid`], never a loop. A request whose body cannot be sent twice (a
//!   stream: a boxed body, hyper's `Incoming`, reqwest's `Body::wrap_stream`, or any body under
//!   a layer made with [`never_replay`](WithingsAuthLayer::never_replay)) is not replayed: it
//!   fails at once with [`Error::NotReplayed`] (kind `Transient`: the token is being refreshed in
//!   the background, send the request again), or, from a layer made with
//!   [`not_replayed_as_response`](WithingsAuthLayer::not_replayed_as_response), comes back as
//!   Withings sent it, marked [`UnreplayedRefusal`](layer::UnreplayedRefusal).
//! - Any other Withings body status (601, 2554, 503 `Invalid Params` …) comes back `Ok` by
//!   default, the body intact: collect the body and read it in one line with
//!   [`parse_response`], which gives the `body` value or the typed error from the same table
//!   the layer uses. A layer made with [`status_errors`](WithingsAuthLayer::status_errors)
//!   returns that error itself, so `Ok` means status 0 (`601` → [`Error::RateLimited`], `2554` →
//!   [`Error::NotImplemented`], `503 User is temporarily deactivated` →
//!   [`Error::UserDeactivated`], …). The status number comes from the body's first bytes; the
//!   message, which decides between some errors, is read from at most 16 KiB of the (small)
//!   error body, else the number alone decides. Bodies that are not Withings JSON and real HTTP
//!   errors from a proxy still come back `Ok`. Either way a 601 pauses the app's request budget
//!   ([`budget`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let sent = br#"{"status":601,"body":{"wait_seconds":9},"error":"Too many request"}"#;
//! # let response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(sent)));
//! use http_body_util::BodyExt;
//! use tower_withings::{Error, parse_response};
//!
//! let bytes = response.into_body().collect().await?.to_bytes();
//! match parse_response(&bytes) {
//!     Ok(body) => println!("{body}"), // status 0: the `body` value
//!     Err(Error::RateLimited { wait }) => assert_eq!(wait.map(|w| w.as_secs()), Some(9)),
//!     Err(other) => return Err(other.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | `SqliteStore` (bundled SQLite: nothing to install) |
//! | `rustls` | | `transport::https_client()`: hyper-rustls with Mozilla's roots |
//! | `postgres` | | `PostgresStore` (tokio-postgres, deadpool pool) |
//! | `redis` | | `RedisStore` |
//! | `testkit` | | the store conformance kit, `testkit::check_store` |
//! | `reqwest` | | `auth.reqwest_middleware()`: the layer as a reqwest-middleware `Middleware` (reqwest without default features: no TLS stack of its own, no openssl) |
//! | `metrics` | | counters and histograms through the `metrics` facade (requests, refusals, replays, refreshes by reason and outcome, refresh and store latency, lease waits, the budget's slots, waits and 601s; no user id as a label) |
//!
//! Without `rustls`, bring your own client: anything that is `Service<http::Request<B>>`. The
//! `withings` command line is not a feature but the `withings-cli` package (`cli/`), with
//! features of its own (`postgres`, `redis`); the simulator is the `withings-sim` package.
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod auth;
mod body;
pub mod budget;
pub mod clock;
mod config;
pub mod data;
mod error;
pub mod events;
pub mod layer;
mod metrics;
pub mod notify;
pub mod oauth;
mod refresh;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
mod secret;
mod setters;
mod status;
pub mod store;
pub mod sync;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod token;
pub mod transport;

pub use auth::handle::WithingsAuth;
pub use config::{Credentials, Endpoints};
pub use error::{BoxError, Error, ErrorKind};
pub use layer::service::{WithingsAuthLayer, WithingsAuthService};
pub use secret::Secret;
pub use status::parse_response;
pub use token::{Scope, Token, UnknownScope, UserId};

/// Internals the fuzz targets (`fuzz/`), the property tests and the `withings` command line
/// reach into. Not part of the API: no documentation, no semver promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::status::{Peek, classify, peek_status};

    /// Parses a `requesttoken` answer (e.g. one obtained by another tool) received at
    /// `received_at`. A token comes back only for `status` 0 with both tokens present.
    pub fn parse_token_response(
        bytes: &[u8],
        received_at: std::time::SystemTime,
    ) -> Result<crate::Token, crate::Error> {
        crate::oauth::parse_token(bytes, received_at)
    }
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
