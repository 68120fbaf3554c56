//! `POST /v2/user`: the user's devices (`getdevice`) and goals (`getgoals`).

use jiff::Timestamp;

use super::client::{DataClient, Endpoint, Form, Query, form};
use super::error::DataError;
use super::lenient::{Field, FromScalar, Scalar, lenient};
use super::page::{Context, Row, read_row};
use super::time::Zone;
use super::value::Exact;
use crate::token::UserId;
use crate::transport::HttpClient;

/// `getdevice`: the devices linked to the user (a snapshot; no selection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetDevices;

impl Query for GetDevices {
    type Row = Device;
    const ENDPOINT: Endpoint = Endpoint::new("/v2/user", "devices", false);

    fn calls(&self) -> Vec<Form> {
        vec![form("getdevice")]
    }
}

lenient! {
    /// One device; its identity is `deviceid`.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct Device {
        /// `deviceid`.
        pub deviceid: String = required,
        /// `hash_deviceid`.
        pub hash_deviceid: Option<String>,
        /// `type`: "Scale", "Blood Pressure Monitor", "Activity Tracker", "Sleep Monitor", …
        #[serde(rename = "type")]
        pub kind: Option<String>,
        /// `model` (may be empty, e.g. Sleep Analyzer).
        pub model: Option<String>,
        /// `model_id` (read from `modelid` when absent).
        pub model_id: Option<i64>,
        /// `modelid` as it was read; folded into `model_id` by [`Row::decode`], so always
        /// `None` in a row.
        #[serde(rename = "modelid")]
        spelled_modelid: Option<i64>,
        /// `battery`.
        pub battery: Option<Battery>,
        /// `timezone`.
        pub timezone: Option<Zone>,
        /// `first_session_date`.
        #[serde(rename = "first_session_date")]
        pub first_session: Option<Timestamp>,
        /// `last_session_date`.
        #[serde(rename = "last_session_date")]
        pub last_session: Option<Timestamp>,
    }
}

/// A device's battery level as Withings words it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Battery {
    /// `high`.
    High,
    /// `medium`.
    Medium,
    /// `low`.
    Low,
    /// `unknown` (sent by Withings).
    Unknown,
    /// Anything else, as sent.
    Other(String),
}

/// The word as sent (a number is written out).
impl FromScalar for Battery {
    fn from_scalar(s: Scalar) -> Option<Battery> {
        Some(match String::from_scalar(s)?.as_str() {
            "high" => Battery::High,
            "medium" => Battery::Medium,
            "low" => Battery::Low,
            "unknown" => Battery::Unknown,
            other => Battery::Other(crate::error::shorten(other)),
        })
    }
}

impl Row for Device {
    type Key = String;

    fn key(&self) -> Option<String> {
        Some(self.deviceid.clone())
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut d: Device = read_row(raw, "not a device")?;
        d.timezone = cx.zone(d.timezone);
        d.model_id = d.model_id.or(d.spelled_modelid.take());
        Ok(d)
    }
}

lenient! {
    /// The user's goals (`getgoals`); every goal optional.
    #[derive(Debug, Clone, Default, PartialEq)]
    #[non_exhaustive]
    pub struct Goals {
        /// Steps a day.
        pub steps: Option<i64>,
        /// Sleep a night, s.
        pub sleep: Option<i64>,
        /// Weight, kg, exact.
        pub weight: Option<Exact>,
    }
}

lenient! {
    /// A goal weight as sent: `{"value": 56300, "unit": -3}`.
    struct Weight {
        value: Option<i64>,
        unit: Option<i64>,
    }
}

/// The goal weight, exact; `None` unless both numbers are there.
impl Field for Option<Exact> {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w: Option<Weight> = Field::read(d)?;
        Ok(w.and_then(|w| Some(Exact::new(w.value?, i32::try_from(w.unit?).ok()?))))
    }
}

lenient! {
    struct GoalsBody {
        goals: Option<Goals>,
    }
}

impl<S: HttpClient> DataClient<S> {
    /// `getdevice`: every device of the user.
    pub async fn devices(&self, user: UserId) -> Result<Vec<Device>, DataError> {
        match self.collect(user, GetDevices).await {
            Ok(c) => Ok(c.rows),
            Err(p) => Err(p.error),
        }
    }

    /// `getgoals`: the user's goals; `None` when they set none (Withings sends `goals: []`).
    pub async fn goals(&self, user: UserId) -> Result<Option<Goals>, DataError> {
        let body: GoalsBody = self.body(user, "/v2/user", &form("getgoals")).await?;
        Ok(body.goals)
    }
}
