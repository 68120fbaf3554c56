//! Feature `reqwest`: [`ReqwestService`], a reqwest-middleware client as the tower service a
//! [`DataClient`](super::DataClient) sends through.
//!
//! The client's own middleware chain does the work: with
//! [`WithingsAuth::reqwest_middleware`](crate::WithingsAuth::reqwest_middleware) in it, each
//! data call gets the token, refresh, replay and status classification of the tower layer.
//! This adapter only moves the request and the `UserId` across.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body_util::{BodyExt, Full};
use reqwest_middleware::ClientWithMiddleware;

use crate::error::{BoxError, Error};
use crate::token::UserId;

/// A [`ClientWithMiddleware`] as a `tower::Service`: the request's [`UserId`] extension goes
/// into the middleware chain's extensions, where the Withings middleware reads it.
///
/// ```no_run
/// # async fn example(auth: tower_withings::WithingsAuth) {
/// use tower_withings::Endpoints;
/// use tower_withings::data::{DataClient, ReqwestService};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(auth.reqwest_middleware())
///     .build();
/// let data = DataClient::new(ReqwestService::new(client), &Endpoints::withings());
/// # let _ = data;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReqwestService {
    client: ClientWithMiddleware,
}

impl ReqwestService {
    /// Sends through `client` (build it with the Withings middleware).
    pub fn new(client: ClientWithMiddleware) -> Self {
        ReqwestService { client }
    }
}

impl tower::Service<Request<Full<Bytes>>> for ReqwestService {
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let user = parts.extensions.get::<UserId>().copied();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let request = reqwest::Request::try_from(Request::from_parts(parts, bytes))
                .map_err(Error::transport)?;
            let mut extensions = Extensions::new();
            if let Some(user) = user {
                extensions.insert(user);
            }
            match client
                .execute_with_extensions(request, &mut extensions)
                .await
            {
                Ok(response) => Ok(Response::from(response)),
                Err(reqwest_middleware::Error::Middleware(error)) => {
                    Err(match error.downcast::<Error>() {
                        Ok(ours) => Box::new(ours) as BoxError,
                        Err(other) => other.into(),
                    })
                }
                Err(reqwest_middleware::Error::Reqwest(error)) => Err(Box::new(error) as BoxError),
            }
        })
    }
}
