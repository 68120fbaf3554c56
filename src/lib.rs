//! Withings OAuth 2.0 for any tower HTTP client.
//!
//! [`WithingsAuthLayer`] wraps any `Service<http::Request<B>>` (hyper-util's client, a
//! `ServiceBuilder` stack, …). For every Withings API request it attaches the right user's bearer
//! token, refreshes it before it expires or when Withings refuses it (HTTP 200 with `"status":401`
//! in the body), runs exactly one refresh per user however many requests wait, saves the rotated
//! pair through a [`TokenStore`] before using it, and replays the request once.
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
//!   (`error.downcast_ref::<Error>()`), whose [`kind`](Error::kind) says what to do about it.
//! - A refused token is refreshed (once per user) and the request replayed once; a second
//!   refusal is [`Error::AccessTokenInvalid`]. A request whose body cannot be sent twice (a
//!   stream) is not replayed: it fails with [`Error::NotReplayed`] (transient: the token is being
//!   refreshed, send the request again), or, from a layer made with
//!   [`not_replayed_as_response`](WithingsAuthLayer::not_replayed_as_response), comes back as
//!   Withings sent it, marked [`NotReplayed`].
//! - Any other Withings body status (601, 2554, 503 …) comes back `Ok` by default, the body
//!   intact: collect the body and read it in one line with [`parse_response`], which gives the
//!   `body` value or the typed error. A layer made with
//!   [`status_errors`](WithingsAuthLayer::status_errors) returns that error itself, so `Ok` means
//!   status 0.
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
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod auth;
pub mod body;
pub mod budget;
pub mod clock;
pub mod config;
pub mod data;
pub mod error;
pub mod events;
pub mod layer;
mod metrics;
pub mod notify;
pub mod oauth;
mod refresh;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod secret;
pub mod status;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
pub mod token;
pub mod transport;

pub use auth::{
    KEEPER_THRESHOLD, Keeper, UserState, UserStatus, WithingsAuth, WithingsAuthBuilder,
};
pub use body::{NotReplayed, ReplayBody, WithingsBody};
pub use budget::RateBudget;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ClientAuth, Credentials, Endpoints};
pub use error::{BoxError, Error, ErrorKind};
pub use events::{Event, Reauthorization};
pub use layer::{WithingsAuthLayer, WithingsAuthService};
pub use metrics::MetricsSnapshot;
pub use oauth::{AuthorizeRequest, Callback, OAuthClient, RedirectPolicy};
pub use secret::Secret;
pub use status::parse_response;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "redis")]
pub use store::RedisStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{MemoryStore, TokenStore};
pub use token::{Scope, Token, UserId};

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
