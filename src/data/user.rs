//! `POST /v2/user`: the user's devices (`getdevice`) and goals (`getgoals`).

use jiff::Timestamp;
use serde::Deserialize;

use super::client::{DataClient, Form, Query, form};
use super::error::DataError;
use super::lenient;
use super::page::{Context, Row};
use super::time::{Zone, instant};
use super::value::Exact;
use crate::token::UserId;
use crate::transport::HttpClient;

/// `getdevice`: the devices linked to the user (a snapshot; no selection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetDevices;

impl Query for GetDevices {
    type Row = Device;
    const PATH: &'static str = "/v2/user";
    const ROWS: &'static str = "devices";
    const PAGED: bool = false;

    fn calls(&self) -> Vec<Form> {
        vec![form("getdevice")]
    }
}

/// One device; its identity is `deviceid`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Device {
    /// `deviceid`.
    pub deviceid: String,
    /// `hash_deviceid`.
    pub hash_deviceid: Option<String>,
    /// `type`: "Scale", "Blood Pressure Monitor", "Activity Tracker", "Sleep Monitor", …
    pub kind: Option<String>,
    /// `model` (may be empty, e.g. Sleep Analyzer).
    pub model: Option<String>,
    /// `model_id`.
    pub model_id: Option<i64>,
    /// `battery`.
    pub battery: Option<Battery>,
    /// `timezone`.
    pub timezone: Option<Zone>,
    /// `first_session_date`.
    pub first_session: Option<Timestamp>,
    /// `last_session_date`.
    pub last_session: Option<Timestamp>,
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

impl Battery {
    fn parse(s: &str) -> Battery {
        match s {
            "high" => Battery::High,
            "medium" => Battery::Medium,
            "low" => Battery::Low,
            "unknown" => Battery::Unknown,
            other => Battery::Other(crate::error::shorten(other)),
        }
    }
}

#[derive(Deserialize)]
struct RawDevice {
    #[serde(default, deserialize_with = "lenient::string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    hash_deviceid: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    model_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    modelid: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    battery: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    first_session_date: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    last_session_date: Option<i64>,
}

impl Row for Device {
    type Key = String;

    fn key(&self) -> Option<String> {
        Some(self.deviceid.clone())
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let d: RawDevice = super::page::read_row(raw, "not a device")?;
        Ok(Device {
            deviceid: d.deviceid.ok_or("no `deviceid`")?,
            hash_deviceid: d.hash_deviceid,
            kind: d.kind,
            model: d.model,
            model_id: d.model_id.or(d.modelid),
            battery: d.battery.as_deref().map(Battery::parse),
            timezone: cx.zone(d.timezone),
            first_session: d.first_session_date.and_then(instant),
            last_session: d.last_session_date.and_then(instant),
        })
    }
}

/// The user's goals (`getgoals`); every goal optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Goals {
    /// Steps a day.
    #[serde(default, deserialize_with = "lenient::int")]
    pub steps: Option<i64>,
    /// Sleep a night, s.
    #[serde(default, deserialize_with = "lenient::int")]
    pub sleep: Option<i64>,
    /// Weight, kg, exact.
    #[serde(default, deserialize_with = "weight")]
    pub weight: Option<Exact>,
}

fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Exact>, D::Error> {
    #[derive(Deserialize)]
    struct W {
        #[serde(default, deserialize_with = "lenient::int")]
        value: Option<i64>,
        #[serde(default, deserialize_with = "lenient::int")]
        unit: Option<i64>,
    }
    let w: Option<W> = lenient::object(d)?;
    Ok(w.and_then(|w| Some(Exact::new(w.value?, i32::try_from(w.unit?).ok()?))))
}

#[derive(Deserialize)]
struct GoalsBody {
    #[serde(default, deserialize_with = "lenient::object")]
    goals: Option<Goals>,
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
