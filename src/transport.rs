//! The HTTP client that OAuth calls go through: any tower service, boxed once.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::error::{BoxError, Error};

/// Token responses are a few hundred bytes; anything past this is not Withings.
pub(crate) const MAX_OAUTH_RESPONSE: usize = 64 * 1024;

/// A tower HTTP client the crate sends its own form requests through (token calls, notify
/// calls): hyper-util's client, a `ServiceBuilder` stack, any `Service<Request<Full<Bytes>>>`
/// that is `Clone + Send + Sync + 'static` and answers with a `Bytes` body. Implemented for
/// every such service; it only names the bounds once.
pub trait HttpClient:
    Service<
        Request<Full<Bytes>>,
        Response = Response<Self::ResponseBody>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The response body.
    type ResponseBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpClient for S
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type ResponseBody = B;
}

/// A cloneable client for OAuth calls; responses arrive fully read (and size-capped).
pub(crate) type Transport = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, Error>;

/// Boxes any tower HTTP client so OAuth calls can go through the user's own stack.
pub(crate) fn boxed<S: HttpClient>(service: S) -> Transport {
    BoxCloneSyncService::new(service.map_err(Error::transport).and_then(
        |response: Response<S::ResponseBody>| async move {
            let (parts, body) = response.into_parts();
            let collected = Limited::new(body, MAX_OAUTH_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::MalformedResponse {
                            reason: format!("response larger than {MAX_OAUTH_RESPONSE} bytes"),
                        }
                    } else {
                        Error::transport(e)
                    }
                })?;
            Ok(Response::from_parts(parts, collected.to_bytes()))
        },
    ))
}

/// `transport` failing with a typed error after `timeout`.
pub(crate) fn timed(transport: Transport, timeout: Duration) -> Transport {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request<Full<Bytes>>| {
        let call = transport.clone().oneshot(request);
        async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(Error::TokenEndpointTimeout(timeout)),
            }
        }
    }))
}

/// A plain-http hyper client, for the simulator and other loopback servers.
///
/// Real Withings is https only: bring an https client (e.g. `hyper-rustls`) for production.
pub fn plain_http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An https client (rustls, Mozilla's root certificates) for real Withings. Plain http is also
/// accepted, but the endpoints only allow it to loopback hosts (see [`crate::Endpoints::loopback`]).
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub fn https_client() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}
