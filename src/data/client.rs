//! [`DataClient`]: typed data calls sent through the app's own stack, every page followed.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower::ServiceExt;

use super::error::{Collected, DataError, Partial};
use super::page::{self, Offset, Row};
use crate::config::Endpoints;
use crate::error::{BoxError, Error};
use crate::token::UserId;
use crate::transport::HttpClient;

/// A form: the parameters of one call, in order.
pub type Form = Vec<(&'static str, String)>;

/// Where a request goes and how its answers hold their rows.
///
/// ```
/// use tower_withings::data::{Endpoint, GetMeas, Query};
///
/// assert_eq!(GetMeas::ENDPOINT, Endpoint::new("/measure", "measuregrps", true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The service path below the API base (`/measure`, `/v2/sleep`, …).
    pub path: &'static str,
    /// The body field holding the rows (`measuregrps`, `series`, …).
    pub rows: &'static str,
    /// Whether answers page with `more`/`offset`.
    pub paged: bool,
}

impl Endpoint {
    /// The endpoint at `path` whose rows are under `rows`, paged or not.
    pub const fn new(path: &'static str, rows: &'static str, paged: bool) -> Self {
        Endpoint { path, rows, paged }
    }
}

/// A typed data request: where it goes, what its rows are, and the calls it makes (one per
/// window piece for the 24 h endpoints).
pub trait Query: Send + 'static {
    /// The rows it answers with.
    type Row: Row;
    /// Where it goes.
    const ENDPOINT: Endpoint;
    /// The form of each call, `action` first.
    fn calls(&self) -> Vec<Form>;
}

/// Rows as they come, one page in memory at a time. A [`DataError::Row`] item is one
/// malformed row (the stream goes on); any other error is the last item.
pub type RowStream<T> = Pin<Box<dyn Stream<Item = Result<T, DataError>> + Send>>;

/// Typed Withings data calls, each sent through `service`: the app's own tower stack with
/// [`WithingsAuth::layer`](crate::WithingsAuth::layer) in it, so the token, refresh, replay,
/// request budget and body-status classification apply to every page. There is no second
/// HTTP path.
///
/// The user is named per call and travels as the request's [`UserId`] extension. Over
/// reqwest, wrap the middleware client in [`ReqwestService`](super::ReqwestService).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use jiff::Timestamp;
/// use tower::ServiceBuilder;
/// use tower_withings::data::{DataClient, GetMeas, MeasureType};
/// use tower_withings::{Credentials, Endpoints, UserId, WithingsAuth, store::MemoryStore, transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let auth = WithingsAuth::builder(Credentials::new("client-id", "client-secret"))
///     .store(MemoryStore::new())
///     .build(transport::plain_http_client()); // use an https client in production
/// let stack = ServiceBuilder::new()
///     .layer(auth.layer())
///     .service(transport::plain_http_client());
/// let data = DataClient::new(stack, &Endpoints::withings());
///
/// let query = GetMeas::since(Timestamp::UNIX_EPOCH).types(&[MeasureType::Weight, MeasureType::FatRatio]);
/// let mut groups = data.rows(UserId(46865875), query);
/// while let Some(group) = groups.next().await {
///     let group = group?;
///     for m in &group.measures {
///         println!("{:?} {} {}", group.date, m.measure_type, m.value);
///     }
/// }
/// # Ok(()) }
/// ```
pub struct DataClient<S> {
    service: S,
    api: Arc<str>,
    page_cap: usize,
    max_page_bytes: usize,
}

impl<S: Clone> Clone for DataClient<S> {
    fn clone(&self) -> Self {
        DataClient {
            service: self.service.clone(),
            api: self.api.clone(),
            page_cap: self.page_cap,
            max_page_bytes: self.max_page_bytes,
        }
    }
}

impl<S> std::fmt::Debug for DataClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataClient")
            .field("api", &self.api)
            .field("page_cap", &self.page_cap)
            .field("max_page_bytes", &self.max_page_bytes)
            .finish_non_exhaustive()
    }
}

/// Default [`DataClient::page_cap`]: pages followed per call before giving up.
pub const DEFAULT_PAGE_CAP: usize = 1_000;
/// Default [`DataClient::max_page_bytes`].
pub const DEFAULT_MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

impl<S> DataClient<S> {
    /// Calls through `service` to the API host of `endpoints`.
    pub fn new(service: S, endpoints: &Endpoints) -> Self {
        DataClient {
            service,
            api: Arc::from(endpoints.api_base()),
            page_cap: DEFAULT_PAGE_CAP,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
        }
    }

    crate::setters::setters! {
        /// At most this many pages per call (default 1,000): past it, [`DataError::PageCap`].
        fn page_cap(pages: usize) => page_cap = pages.max(1);
        /// A page larger than this (default 64 MiB) is [`Error::MalformedResponse`].
        fn max_page_bytes(bytes: usize) => max_page_bytes;
    }
}

impl<S: HttpClient> DataClient<S> {
    /// One call: the form POSTed to `path` for `user`; the whole answer's bytes.
    async fn send(&self, user: UserId, path: &str, form: &Form) -> Result<Bytes, Error> {
        let body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                body.append_pair(k, v);
            }
            body.finish()
        };
        let request = Request::post(format!("{}{path}", self.api))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .extension(user)
            .body(Full::new(Bytes::from(body)))
            .map_err(Error::transport)?;
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| from_box(e.into()))?;
        if response.status() != StatusCode::OK {
            return Err(Error::Http {
                status: response.status(),
            });
        }
        let limit = self.max_page_bytes;
        Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Error::MalformedResponse {
                        reason: format!("answer larger than {limit} bytes"),
                    }
                } else {
                    from_box(e)
                }
            })
    }

    /// Every row of `query` as a stream, page after page, call after call: `more`/`offset`
    /// followed to the end, the offset sent back verbatim, one page in memory at a time.
    pub fn rows<Q: Query>(&self, user: UserId, query: Q) -> RowStream<Q::Row> {
        let walk = Walk {
            client: self.clone(),
            user,
            calls: query.calls().into(),
            current: None,
            page: 0,
            done: false,
        };
        futures_util::stream::unfold(walk, |mut walk| async move {
            let items = walk.step::<Q>().await?;
            Some((futures_util::stream::iter(items), walk))
        })
        .flatten()
        .boxed()
    }

    /// Every row of `query`, collected; a paging or call error gives the rows read so far
    /// with it ([`Partial`]).
    pub async fn collect<Q: Query>(
        &self,
        user: UserId,
        query: Q,
    ) -> Result<Collected<Q::Row>, Partial<Q::Row>> {
        collect(self.rows(user, query)).await
    }

    /// A single-object answer (`getgoals`, heart `get`): the `body` decoded as `T`.
    pub(crate) async fn body<T: serde::de::DeserializeOwned>(
        &self,
        user: UserId,
        path: &str,
        form: &Form,
    ) -> Result<T, DataError> {
        let bytes = self.send(user, path, form).await?;
        Ok(page::decode_body(&bytes)?)
    }
}

/// Drains a row stream into [`Collected`], or [`Partial`] at the first non-row error.
pub async fn collect<T>(mut rows: RowStream<T>) -> Result<Collected<T>, Partial<T>> {
    let mut collected = Collected::default();
    while let Some(item) = rows.next().await {
        match item {
            Ok(row) => collected.rows.push(row),
            Err(DataError::Row(bad)) => collected.bad_rows.push(bad),
            Err(error) => return Err(Partial { error, collected }),
        }
    }
    Ok(collected)
}

/// The walk through a query's calls and pages.
struct Walk<S> {
    client: DataClient<S>,
    user: UserId,
    calls: VecDeque<Form>,
    /// The call being paged: its form, the offsets already sent, pages read.
    current: Option<(Form, Option<Offset>, HashSet<Offset>, usize)>,
    /// Pages read over every call (row errors name it).
    page: usize,
    done: bool,
}

impl<S: HttpClient> Walk<S> {
    async fn step<Q: Query>(&mut self) -> Option<Vec<Result<Q::Row, DataError>>> {
        if self.done {
            return None;
        }
        if self.current.is_none() {
            let form = self.calls.pop_front()?;
            self.current = Some((form, None, HashSet::new(), 0));
        }
        let (form, offset, sent, pages) = self.current.as_mut()?;
        let mut this = form.clone();
        if let Some(offset) = offset.as_ref() {
            this.push(("offset", offset.as_str().to_owned()));
        }
        self.page += 1;
        *pages += 1;
        let page = match self.client.send(self.user, Q::ENDPOINT.path, &this).await {
            Ok(bytes) => page::decode::<Q::Row>(&bytes, Q::ENDPOINT.rows, self.page),
            Err(error) => Err(error),
        };
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                self.done = true;
                return Some(vec![Err(DataError::Withings(error))]);
            }
        };
        let mut items: Vec<Result<Q::Row, DataError>> = page
            .rows
            .into_iter()
            .map(|r| r.map_err(DataError::Row))
            .collect();
        if !(Q::ENDPOINT.paged && page.meta.more) {
            self.current = None;
            return Some(items);
        }
        let end = match page.meta.offset {
            None => Some(DataError::MoreWithoutOffset { page: self.page }),
            Some(next) if offset.as_ref() == Some(&next) || sent.contains(&next) => {
                Some(DataError::OffsetNotAdvancing {
                    page: self.page,
                    offset: next.0,
                })
            }
            Some(_) if *pages >= self.client.page_cap => Some(DataError::PageCap { pages: *pages }),
            Some(next) => {
                if let Some(previous) = offset.replace(next) {
                    sent.insert(previous);
                }
                None
            }
        };
        if let Some(end) = end {
            self.done = true;
            items.push(Err(end));
        }
        Some(items)
    }
}

/// The error inside a tower error: the crate's own, or the transport's.
fn from_box(error: BoxError) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::transport(other),
    }
}

/// Builds a form from pairs.
pub(crate) fn form(action: &'static str) -> Form {
    vec![("action", action.to_owned())]
}

/// `meastypes` / `data_fields` style lists.
pub(crate) fn csv<I: IntoIterator<Item = String>>(items: I) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}
