//! `POST /v2/heart`: ECG records (`list`) and one recording's signal (`get`).

use jiff::Timestamp;

use super::client::{DataClient, Endpoint, Form, Query, form};
use super::code::{Afib, HeartModel};
use super::error::DataError;
use super::lenient::lenient;
use super::page::{Context, Row, read_row};
use super::select::{Span, Window};
use crate::token::UserId;
use crate::transport::HttpClient;

/// Heart `list`: ECG and blood-pressure records in a window (paged). No `since`: the endpoint
/// has no `lastupdate`; read a window with some overlap and upsert on `signalid`.
///
/// ```
/// use jiff::Timestamp;
/// use tower_withings::data::HeartList;
///
/// let query = HeartList::window(Timestamp::from_second(1_700_000_000).unwrap(), Timestamp::now());
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartList {
    window: Window,
}

impl HeartList {
    /// Records in `start..=end`.
    pub fn window(start: Timestamp, end: Timestamp) -> Self {
        HeartList {
            window: Window::new(start, end),
        }
    }
}

impl Query for HeartList {
    type Row = HeartRecord;
    const ENDPOINT: Endpoint = Endpoint::new("/v2/heart", "series", true);

    fn calls(&self) -> Vec<Form> {
        let mut f = form("list");
        self.window.push(&mut f);
        vec![f]
    }
}

lenient! {
    /// One heart record; its identity is the ECG's `signalid`.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct HeartRecord {
        /// When it was taken (`timestamp`).
        pub timestamp: Option<Timestamp>,
        /// `modified`.
        pub modified: Option<Timestamp>,
        /// `deviceid`.
        pub deviceid: Option<String>,
        /// The device.
        pub model: Option<HeartModel>,
        /// `heart_rate` (bpm).
        pub heart_rate: Option<i64>,
        /// The ECG, when there is one.
        pub ecg: Option<Ecg>,
        /// The blood pressure taken with it, if any (`bloodpressure`).
        #[serde(rename = "bloodpressure")]
        pub blood_pressure: Option<BloodPressure>,
    }
}

lenient! {
    /// An ECG's reference and result.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct Ecg {
        /// `signalid`: fetch the signal with [`DataClient::ecg_signal`].
        pub signalid: Option<i64>,
        /// The atrial fibrillation result.
        pub afib: Option<Afib>,
    }
}

lenient! {
    /// A blood pressure (mmHg).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct BloodPressure {
        /// Diastole.
        pub diastole: Option<i64>,
        /// Systole.
        pub systole: Option<i64>,
    }
}

impl Row for HeartRecord {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        self.ecg.and_then(|e| e.signalid)
    }

    fn decode(raw: &str, _: Option<&str>, _: &mut Context) -> Result<Self, String> {
        read_row(raw, "not a heart record")
    }
}

lenient! {
    /// One ECG recording (`get`): the signal in µV, 20–30 s long.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct EcgSignal {
        /// Samples, µV.
        pub signal: Vec<i64>,
        /// Hz (300 or 500).
        pub sampling_frequency: Option<i64>,
        /// Where the device was worn.
        pub wearposition: Option<i64>,
        /// The device.
        pub model: Option<HeartModel>,
        /// bpm.
        pub heart_rate: Option<i64>,
    }
}

impl<S: HttpClient> DataClient<S> {
    /// Heart `get` by `signalid` (with the bearer token): one ECG's signal.
    pub async fn ecg_signal(&self, user: UserId, signalid: i64) -> Result<EcgSignal, DataError> {
        let mut f = form("get");
        f.push(("signalid", signalid.to_string()));
        self.body(user, "/v2/heart", &f).await
    }
}
