//! The Withings data API, typed: every endpoint, exact values, every page, through the app's
//! own stack.
//!
//! Peers lose data at the same places (withings-data.md §6): they read the first page only,
//! mix `lastupdate` with a window, crash on a new code, print weights through `f64`. Here:
//!
//! - **One HTTP path.** [`DataClient`] sends every call through the tower service it is
//!   given: the app's stack with [`WithingsAuth::layer`](crate::WithingsAuth::layer), so the
//!   token, refresh, replay, request budget and body-status classification apply (or the
//!   reqwest middleware, through [`ReqwestService`] with feature `reqwest`).
//! - **Selection that cannot be wrong.** A request is a window *or* `since`, by constructor
//!   ([`GetMeas::window`], [`GetMeas::since`]); windows on the 24 h endpoints ([`GetSleep`],
//!   [`GetIntradayActivity`]) are split into ≤24 h calls.
//! - **Every page.** [`DataClient::rows`] is a stream following `more`/`offset` to the end,
//!   one page in memory at a time; [`DataClient::collect`] gathers them. A repeated offset or
//!   the page cap ends with a typed error and the rows so far ([`Partial`]), never a loop.
//! - **Decoding that never fails on growth.** Codes are enums with an `Unknown(n)` arm,
//!   unknown fields are ignored, non-key fields optional, `false`/`null`/`[]` accepted where
//!   the document says otherwise; a malformed row is [`DataError::Row`] and its page is kept.
//! - **Exact values.** A measure keeps `(value, unit)` as [`Exact`]: `56300 × 10^-3` shows
//!   `56.3`; the name and SI unit come from one table, [`MeasureType::TABLE`].
//! - **Identity for upserts.** `grpid` for groups, `(grpid, type, position)` for measures,
//!   `id` for workouts and sleep summaries, `signalid` for ECGs, day and source for activity
//!   days; duplicates within a page collapse.
//! - **Notifications to fetches.** [`FetchPlan::for_appli`] and [`Fetch::for_notification`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_withings::data::{DataClient, GetMeas, MeasureType};
//! use tower_withings::{Endpoints, UserId};
//!
//! // Any tower service will do; in an app it is the stack with `auth.layer()` in it.
//! let withings = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
//!     let page = r#"{"status":0,"body":{"more":0,"measuregrps":[{"grpid":7,"date":1693651151,
//!         "attrib":0,"category":1,"measures":[{"value":56300,"type":1,"unit":-3}]}]}}"#;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(page))))
//! });
//! let data = DataClient::new(withings, &Endpoints::withings());
//! let groups = data
//!     .collect(UserId(1), GetMeas::since(jiff::Timestamp::UNIX_EPOCH))
//!     .await
//!     .unwrap();
//! let weight = groups.rows[0].get(MeasureType::Weight).unwrap();
//! assert_eq!(weight.value.to_string(), "56.3");
//! assert_eq!(weight.measure_type.unit(), Some("kg"));
//! # }
//! ```

mod activity;
mod client;
pub(crate) mod code;
mod error;
mod fetch;
mod heart;
mod lenient;
mod measure;
mod measure_type;
mod page;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
mod reqwest;
mod select;
mod sleep;
mod source;
mod time;
mod user;
mod value;
mod workout;

pub use activity::{ActivityDay, ActivityKey, GetActivity, GetIntradayActivity, IntradaySample};
pub use client::{
    DEFAULT_MAX_PAGE_BYTES, DEFAULT_PAGE_CAP, DataClient, Endpoint, Form, Query, RowStream, collect,
};
pub use code::{Afib, Attrib, Category, Code, HeartModel, SleepModel, SleepState, WorkoutCategory};
pub use error::{Collected, DataError, Partial, RowError};
pub use fetch::{Fetch, FetchPlan, NoWindow};
pub use heart::{BloodPressure, Ecg, EcgSignal, HeartList, HeartRecord};
pub use measure::{GetMeas, Measure, MeasureGroup};
pub use measure_type::{MeasureInfo, MeasureKind, MeasureType, ParseMeasureTypeError};
pub use page::{Context, Offset, Page, PageMeta, Row, decode_page};
#[cfg(feature = "reqwest")]
pub use reqwest::ReqwestService;
pub use select::{Days, MAX_CALL_WINDOW, Selection, Window};
pub use sleep::{GetSleep, GetSleepSummary, Samples, SleepSegment, SleepSummary, SleepSummaryData};
pub use source::Source;
pub use time::{LocalDay, Zone};
pub use user::{Battery, Device, GetDevices, Goals};
pub use value::Exact;
pub use workout::{GetWorkouts, Workout, WorkoutData};

/// The time crate of this module's API (`Timestamp`, `civil::Date`), for apps without it.
pub use jiff;
/// The decimal crate of [`Exact::decimal`], for apps without it.
pub use rust_decimal;
