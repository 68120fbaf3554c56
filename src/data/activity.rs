//! `POST /v2/measure`: daily activity (`getactivity`) and intraday samples
//! (`getintradayactivity`).

use jiff::Timestamp;
use jiff::civil::Date;

use serde::Deserialize;

use super::lenient::{Field, lenient};
use super::page::{Context, Row, read_row};
use super::select::request;
use super::source::Source;
use super::time::{LocalDay, instant};

request! {
    /// `getactivity`: one row per local day and source, by days or changed since an instant.
    /// `fields` limits the answer to those fields.
    ///
    /// ```
    /// use jiff::civil::date;
    /// use tower_withings::data::GetActivity;
    ///
    /// let query = GetActivity::days(date(2023, 10, 20), date(2023, 10, 21)).fields(&["steps", "distance"]);
    /// # let _ = query;
    /// ```
    GetActivity by days_or_since {
        action: "getactivity", path: "/v2/measure", rows: "activities" => ActivityDay
    }
}

lenient! {
    /// One day of activity from one source. Today's row keeps changing until the day ends.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct ActivityDay {
        /// The local day (`date`, `timezone`).
        #[serde(flatten)]
        pub day: LocalDay = required,
        /// `modified`.
        pub modified: Option<Timestamp>,
        /// The device or app that counted it (`deviceid` is null for some ScanWatch 2 rows and
        /// for external sources).
        #[serde(flatten)]
        pub source: Source,
        /// `steps`.
        pub steps: Option<i64>,
        /// `distance` (m).
        pub distance: Option<f64>,
        /// `elevation` (m).
        pub elevation: Option<f64>,
        /// `soft` (s of soft activity).
        pub soft: Option<i64>,
        /// `moderate` (s).
        pub moderate: Option<i64>,
        /// `intense` (s).
        pub intense: Option<i64>,
        /// `active` (s).
        pub active: Option<i64>,
        /// `calories` (kcal, active).
        pub calories: Option<f64>,
        /// `totalcalories` (kcal).
        pub totalcalories: Option<f64>,
        /// `hr_average` (bpm).
        pub hr_average: Option<i64>,
        /// `hr_min` (bpm).
        pub hr_min: Option<i64>,
        /// `hr_max` (bpm).
        pub hr_max: Option<i64>,
        /// `hr_zone_0`..`hr_zone_3` (s in each zone).
        #[serde(flatten)]
        pub hr_zones: [Option<i64>; 4],
    }
}

/// An activity day's identity: the day and its source (whether a day holds rows from several
/// sources is OPEN, so the source is part of the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivityKey {
    /// The local day.
    pub date: Date,
    /// `brand`.
    pub brand: Option<i64>,
    /// `is_tracker`.
    pub is_tracker: Option<bool>,
    /// `deviceid`.
    pub deviceid: Option<String>,
}

impl ActivityDay {
    /// The identity to upsert on.
    pub fn identity(&self) -> ActivityKey {
        ActivityKey {
            date: self.day.date,
            brand: self.source.brand,
            is_tracker: self.source.is_tracker,
            deviceid: self.source.deviceid.clone(),
        }
    }
}

lenient! {
    /// `hr_zone_0`..`hr_zone_3`, flat in the row.
    struct HrZones {
        hr_zone_0: Option<i64>,
        hr_zone_1: Option<i64>,
        hr_zone_2: Option<i64>,
        hr_zone_3: Option<i64>,
    }
}

/// The seconds in each heart-rate zone (a `#[serde(flatten)]` field).
impl Field for [Option<i64>; 4] {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let z = HrZones::deserialize(d)?;
        Ok([z.hr_zone_0, z.hr_zone_1, z.hr_zone_2, z.hr_zone_3])
    }
}

impl Row for ActivityDay {
    type Key = ActivityKey;

    fn key(&self) -> Option<ActivityKey> {
        Some(self.identity())
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut a: ActivityDay = read_row(raw, "not an activity day")?;
        a.day = cx.day(a.day);
        Ok(a)
    }
}

request! {
    /// `getintradayactivity`: samples in a window, split into ≤24 h calls (a longer window would
    /// silently return only its first 24 h). No `since`: this endpoint has no `lastupdate`.
    /// `fields` limits the samples to those fields.
    ///
    /// ```
    /// use jiff::Timestamp;
    /// use tower_withings::data::{GetIntradayActivity, Query};
    ///
    /// let start = Timestamp::from_second(1_700_000_000).unwrap();
    /// let end = Timestamp::from_second(1_700_000_000 + 2 * 86_400).unwrap();
    /// assert_eq!(GetIntradayActivity::window(start, end).calls().len(), 2);
    /// ```
    GetIntradayActivity by window {
        action: "getintradayactivity", path: "/v2/measure", rows: "series" => IntradaySample
    }
}

lenient! {
    /// One intraday sample, keyed by its start instant.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct IntradaySample {
        /// When it starts (the answer's epoch-second key, else the row's `timestamp`).
        pub timestamp: Timestamp = skip,
        /// `duration` (s).
        pub duration: Option<i64>,
        /// The device (`deviceid`, `model`, `model_id`).
        #[serde(flatten)]
        pub source: Source,
        /// `steps`.
        pub steps: Option<i64>,
        /// `elevation` (m).
        pub elevation: Option<f64>,
        /// `calories` (kcal).
        pub calories: Option<f64>,
        /// `distance` (m).
        pub distance: Option<f64>,
        /// `stroke`.
        pub stroke: Option<i64>,
        /// `pool_lap`.
        pub pool_lap: Option<i64>,
        /// `heart_rate` (bpm).
        pub heart_rate: Option<i64>,
        /// `spo2_auto` (%).
        pub spo2_auto: Option<f64>,
        /// `rmssd` (ms).
        pub rmssd: Option<f64>,
        /// `sdnn1` (ms).
        pub sdnn1: Option<f64>,
        /// `hrv_quality`.
        pub hrv_quality: Option<i64>,
        /// `core_body_temperature` (°C).
        pub core_body_temperature: Option<f64>,
        /// `rr` (breaths per minute).
        pub rr: Option<f64>,
        /// `chest_movement_rate`.
        pub chest_movement_rate: Option<f64>,
    }
}

lenient! {
    /// A sample's own `timestamp`, for rows sent as a list (no epoch-second key).
    struct At {
        timestamp: Option<i64>,
    }
}

impl Row for IntradaySample {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.timestamp.as_second())
    }

    fn decode(raw: &str, key: Option<&str>, _: &mut Context) -> Result<Self, String> {
        let mut s: IntradaySample = read_row(raw, "not an intraday sample")?;
        let at = match key.and_then(|k| k.trim().parse::<i64>().ok()) {
            Some(at) => Some(at),
            None => read_row::<At>(raw, "not an intraday sample")?.timestamp,
        };
        s.timestamp = at.and_then(instant).ok_or("no epoch-second key")?;
        Ok(s)
    }
}
