//! What a replay keeps of a request, and how it sends it again after a refresh.
//!
//! The copy is taken before the bearer header is set, with only what a replay needs: a few
//! headers are kept inline (no map to allocate), and the extensions are not cloned when the only
//! one is the [`UserId`] (it is put back on replay).

use std::sync::Arc;

use bytes::Bytes;
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version,
};
use http_body::Body;
use tower::{Service, ServiceExt};

use super::bearer::authorize;
use super::classify::{ResponseMode, Verdict, answer, inspect};
use super::shared::Shared;
use crate::body::{ReplayBody, UnreplayedRefusal, WithingsBody};
use crate::error::{BoxError, Error};
use crate::metrics::Metrics;
use crate::refresh::Reason;
use crate::token::UserId;

/// How many header values are copied inline (a form API call has one or two); a request with
/// more copies its map.
const INLINE_HEADERS: usize = 2;

/// A request as first sent, minus the bearer header, ready to be sent again.
pub(super) struct RequestCopy<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeadersCopy,
    extensions: ExtensionsCopy,
    body: B,
}

enum HeadersCopy {
    Inline([Option<(HeaderName, HeaderValue)>; INLINE_HEADERS]),
    Map(HeaderMap),
}

enum ExtensionsCopy {
    None,
    User(UserId),
    All(Extensions),
}

/// How the layer gets a second copy of a request's body, to replay the request after a
/// refresh if Withings refused its token. Set with
/// [`WithingsAuthLayer::clone_body`](crate::WithingsAuthLayer::clone_body) and its shortcuts.
///
/// - [`DefaultCloneBody`] (the default) asks the body type: [`ReplayBody`].
/// - [`NeverReplay`] keeps no copy: a refusal fails at once with [`Error::NotReplayed`] (or
///   comes back marked [`UnreplayedRefusal`], with
///   [`not_replayed_as_response`](crate::WithingsAuthLayer::not_replayed_as_response)), and the
///   next request gets the refreshed token. Any body type goes through.
/// - [`CloneBodyFn`], your own function: for a body type of another crate (the orphan rule
///   keeps you from implementing [`ReplayBody`] for `axum::body::Body`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy request bodies of type `{B}` for a replay",
    label = "the layer's body policy",
    note = "with the default policy the body must implement `ReplayBody`; for a foreign body type use `layer.clone_body_with(|body| …)` or `layer.never_replay()`"
)]
pub trait CloneBody<B> {
    /// A copy of `body` to send again, or `None` to not replay this request.
    fn clone_body(&self, body: &B) -> Option<B>;
}

/// The default [`CloneBody`]: bodies that are [`ReplayBody`] replay as it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultCloneBody;

impl<B: ReplayBody> CloneBody<B> for DefaultCloneBody {
    fn clone_body(&self, body: &B) -> Option<B> {
        body.try_clone()
    }
}

/// A [`CloneBody`] that never replays (and takes any body type).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverReplay;

impl<B> CloneBody<B> for NeverReplay {
    fn clone_body(&self, _: &B) -> Option<B> {
        None
    }
}

/// A [`CloneBody`] made of a function, like tower-http's `clone_body_fn`.
#[derive(Clone, Copy)]
pub struct CloneBodyFn<F>(pub(super) F);

impl<F> std::fmt::Debug for CloneBodyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloneBodyFn")
    }
}

impl<B, F: Fn(&B) -> Option<B>> CloneBody<B> for CloneBodyFn<F> {
    fn clone_body(&self, body: &B) -> Option<B> {
        (self.0)(body)
    }
}

impl<B> RequestCopy<B> {
    /// A copy of `request`, if `policy` can copy its body. `user` is the request's own
    /// [`UserId`] extension, already looked up by the caller.
    pub(super) fn of(
        request: &Request<B>,
        policy: &impl CloneBody<B>,
        user: Option<UserId>,
    ) -> Option<Self> {
        let body = policy.clone_body(request.body())?;
        Some(RequestCopy {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: HeadersCopy::of(request.headers()),
            extensions: ExtensionsCopy::of(request.extensions(), user),
            body,
        })
    }
}

impl<B> RequestCopy<B> {
    fn into_request(self) -> Request<B> {
        let mut request = Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.into_map();
        *request.extensions_mut() = self.extensions.into_extensions();
        request
    }
}

impl HeadersCopy {
    fn of(headers: &HeaderMap) -> Self {
        if headers.len() > INLINE_HEADERS {
            return HeadersCopy::Map(headers.clone());
        }
        let mut inline = [const { None }; INLINE_HEADERS];
        for (slot, (name, value)) in inline.iter_mut().zip(headers) {
            *slot = Some((name.clone(), value.clone()));
        }
        HeadersCopy::Inline(inline)
    }

    fn into_map(self) -> HeaderMap {
        match self {
            HeadersCopy::Map(map) => map,
            HeadersCopy::Inline(inline) => {
                let mut map = HeaderMap::with_capacity(INLINE_HEADERS);
                for (name, value) in inline.into_iter().flatten() {
                    map.append(name, value);
                }
                map
            }
        }
    }
}

impl ExtensionsCopy {
    fn of(extensions: &Extensions, user: Option<UserId>) -> Self {
        match (extensions.len(), user) {
            (0, _) => ExtensionsCopy::None,
            (1, Some(user)) => ExtensionsCopy::User(user),
            _ => ExtensionsCopy::All(extensions.clone()),
        }
    }

    fn into_extensions(self) -> Extensions {
        match self {
            ExtensionsCopy::None => Extensions::new(),
            ExtensionsCopy::User(user) => {
                let mut extensions = Extensions::new();
                extensions.insert(user);
                extensions
            }
            ExtensionsCopy::All(extensions) => extensions,
        }
    }
}

/// What a replay needs, kept from the first send.
pub(super) struct Replay<S, B> {
    pub(super) shared: Arc<Shared>,
    /// The replay goes through the request budget (the layer was not made `without_budget`).
    pub(super) budgeted: bool,
    pub(super) user: UserId,
    /// The token generation the first send used.
    pub(super) generation: u64,
    /// The request as first sent, if its body can be sent twice.
    pub(super) copy: Option<RequestCopy<B>>,
    /// What the caller gets for a refusal given back, and for a non-zero body status.
    pub(super) mode: ResponseMode,
    pub(super) service: S,
}

impl<S, B> Replay<S, B> {
    /// The same replay sending through `service`.
    pub(super) fn through<T>(self, service: impl FnOnce(S) -> T) -> Replay<T, B> {
        Replay {
            shared: self.shared,
            budgeted: self.budgeted,
            user: self.user,
            generation: self.generation,
            copy: self.copy,
            mode: self.mode,
            service: service(self.service),
        }
    }
}

impl<S, B> Replay<S, B> {
    /// The refusal (body `status`) of a request whose body cannot be sent twice: the caller
    /// gets it at once, as [`Error::NotReplayed`] or (`not_replayed_as_response`) as it came,
    /// marked [`UnreplayedRefusal`], while a detached task refreshes for the next request (the caller
    /// neither waits for it nor, by going away, aborts it).
    pub(super) fn give_back<R>(
        &self,
        mut refused: Response<R>,
        status: i64,
    ) -> Result<Response<R>, BoxError> {
        Metrics::bump(
            &self.shared.refresher.metrics.not_replayed,
            "withings_not_replayed_total",
        );
        self.shared
            .refresher
            .kick(self.user, Some(self.generation), Reason::Reactive);
        if !self.mode.not_replayed_as_response {
            return Err(Error::NotReplayed { status }.into());
        }
        refused.extensions_mut().insert(UnreplayedRefusal {
            reason: "the request body is a stream and cannot be sent twice",
        });
        Ok(refused)
    }
}

impl<S, B, ResB> Replay<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>, Error: Into<BoxError>>,
    ResB: Body<Data = Bytes> + Unpin,
{
    /// After Withings refused the token: one refresh (shared, skipped if a newer token already
    /// exists) and one replay of `copy`. A second refusal is an error, never a loop.
    /// `service` takes the budget slot; a 601 answer pauses the budget.
    pub(super) async fn resend(
        self,
        copy: RequestCopy<B>,
    ) -> Result<Response<WithingsBody<ResB>>, BoxError> {
        let Replay {
            shared,
            user,
            generation,
            mode,
            mut service,
            ..
        } = self;
        let refresher = &shared.refresher;
        let snapshot = refresher
            .renew_user(user, Some(generation), Reason::Reactive)
            .await?;
        let mut request = copy.into_request();
        authorize(&mut request, snapshot.header()?.clone());
        let service = service.ready().await.map_err(Into::into)?;
        crate::metrics::emit("withings_requests_total");
        Metrics::bump(&refresher.metrics.replays, "withings_replays_total");
        tracing::debug!(user = %user, generation = snapshot.generation, "replaying after refresh");
        let response = service.call(request).await.map_err(Into::into)?;
        match inspect(response, &shared.budget).await {
            (_, Verdict::Refused(status)) => Err(Error::AccessTokenInvalid { status }.into()),
            (response, Verdict::Answer(status)) => answer(response, status, mode).await,
            (_, Verdict::NotFound) => Err(Error::EndpointNotFound.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn request(headers: &[(&'static str, &'static str)], user: bool) -> Request<Full<Bytes>> {
        let mut request = Request::post("https://wbsapi.withings.net/measure?x=1")
            .version(Version::HTTP_11)
            .body(Full::new(Bytes::from_static(b"action=getmeas")))
            .unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        if user {
            request.extensions_mut().insert(UserId(7));
        }
        request
    }

    fn same<B>(a: &Request<B>, b: &Request<B>) {
        assert_eq!(a.method(), b.method());
        assert_eq!(a.uri(), b.uri());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.headers(), b.headers());
        assert_eq!(
            a.extensions().get::<UserId>(),
            b.extensions().get::<UserId>()
        );
    }

    #[test]
    fn a_copy_is_the_request_as_sent_whatever_its_headers_and_extensions() {
        let few = [("content-type", "application/x-www-form-urlencoded")];
        let two = [("x-a", "1"), ("x-a", "2")];
        let repeated = [("x-a", "1"), ("x-a", "2"), ("x-b", "3"), ("x-a", "4")];
        let many = [
            ("x-1", "1"),
            ("x-2", "2"),
            ("x-3", "3"),
            ("x-4", "4"),
            ("x-1", "5"),
        ];
        for headers in [&few[..], &two[..], &repeated[..], &many[..], &[]] {
            for user in [false, true] {
                let original = request(headers, user);
                let copy = RequestCopy::of(&original, &DefaultCloneBody, user.then_some(UserId(7)))
                    .expect("a Full body replays");
                same(&copy.into_request(), &original);
            }
        }
        // Other extensions are kept too.
        let mut original = request(&few, true);
        original.extensions_mut().insert(42u32);
        let copy = RequestCopy::of(&original, &DefaultCloneBody, Some(UserId(7)))
            .unwrap()
            .into_request();
        assert_eq!(copy.extensions().get::<u32>(), Some(&42));
        assert_eq!(copy.extensions().get::<UserId>(), Some(&UserId(7)));
        let mut only_other = request(&few, false);
        only_other.extensions_mut().insert(42u32);
        let copy = RequestCopy::of(&only_other, &DefaultCloneBody, None)
            .unwrap()
            .into_request();
        assert_eq!(copy.extensions().get::<u32>(), Some(&42));
    }
}
