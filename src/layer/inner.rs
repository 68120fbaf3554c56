//! [`InnerService`]: what the layer needs of the service it wraps, named once.

use http::{Request, Response};
use tower::Service;

use crate::error::BoxError;

/// What [`WithingsAuthService`](crate::WithingsAuthService) needs of the service it wraps,
/// named once: an HTTP service taking `Request<B>` and answering `Response<ResB>`, whose errors
/// convert into [`BoxError`], cloneable (a refresh or a replay sends through a clone), and
/// `Send + 'static` with its future (a slow request runs as a boxed future). Every such service
/// has it; there is nothing to implement.
pub trait InnerService<B, ResB>:
    Service<Request<B>, Response = Response<ResB>, Error: Into<BoxError>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B, ResB> InnerService<B, ResB> for S where
    S: Service<
            Request<B>,
            Response = Response<ResB>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}
