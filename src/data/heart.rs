//! `POST /v2/heart`: ECG records (`list`) and one recording's signal (`get`).

use jiff::Timestamp;
use serde::Deserialize;

use super::client::{DataClient, Form, Query, form};
use super::code::{self, Afib, HeartModel};
use super::error::DataError;
use super::lenient;
use super::page::{Context, Row};
use super::select::{Window, unix};
use super::time::instant;
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
    const PATH: &'static str = "/v2/heart";
    const ROWS: &'static str = "series";
    const PAGED: bool = true;

    fn calls(&self) -> Vec<Form> {
        let mut f = form("list");
        f.push(("startdate", unix(self.window.start)));
        f.push(("enddate", unix(self.window.end)));
        vec![f]
    }
}

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
    /// The blood pressure taken with it, if any.
    pub blood_pressure: Option<BloodPressure>,
}

/// An ECG's reference and result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Ecg {
    /// `signalid`: fetch the signal with [`DataClient::ecg_signal`].
    #[serde(default, deserialize_with = "lenient::int")]
    pub signalid: Option<i64>,
    /// The atrial fibrillation result.
    #[serde(default, deserialize_with = "code::lenient")]
    pub afib: Option<Afib>,
}

/// A blood pressure (mmHg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BloodPressure {
    /// Diastole.
    #[serde(default, deserialize_with = "lenient::int")]
    pub diastole: Option<i64>,
    /// Systole.
    #[serde(default, deserialize_with = "lenient::int")]
    pub systole: Option<i64>,
}

#[derive(Deserialize)]
struct RawHeart {
    #[serde(default, deserialize_with = "lenient::int")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "code::lenient")]
    model: Option<HeartModel>,
    #[serde(default, deserialize_with = "lenient::int")]
    heart_rate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::object")]
    ecg: Option<Ecg>,
    #[serde(default, deserialize_with = "lenient::object")]
    bloodpressure: Option<BloodPressure>,
}

impl Row for HeartRecord {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        self.ecg.and_then(|e| e.signalid)
    }

    fn decode(raw: &str, _: Option<&str>, _: &mut Context) -> Result<Self, String> {
        let h: RawHeart = super::page::read_row(raw, "not a heart record")?;
        Ok(HeartRecord {
            timestamp: h.timestamp.and_then(instant),
            modified: h.modified.and_then(instant),
            deviceid: h.deviceid,
            model: h.model,
            heart_rate: h.heart_rate,
            ecg: h.ecg,
            blood_pressure: h.bloodpressure,
        })
    }
}

/// One ECG recording (`get`): the signal in µV, 20–30 s long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct EcgSignal {
    /// Samples, µV.
    #[serde(default, deserialize_with = "lenient::list")]
    pub signal: Vec<i64>,
    /// Hz (300 or 500).
    #[serde(default, deserialize_with = "lenient::int")]
    pub sampling_frequency: Option<i64>,
    /// Where the device was worn.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wearposition: Option<i64>,
    /// The device.
    #[serde(default, deserialize_with = "code::lenient")]
    pub model: Option<HeartModel>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub heart_rate: Option<i64>,
}

impl<S: HttpClient> DataClient<S> {
    /// Heart `get` by `signalid` (with the bearer token): one ECG's signal.
    pub async fn ecg_signal(&self, user: UserId, signalid: i64) -> Result<EcgSignal, DataError> {
        let mut f = form("get");
        f.push(("signalid", signalid.to_string()));
        self.body(user, "/v2/heart", &f).await
    }
}
