//! `POST /v2/measure`: daily activity (`getactivity`) and intraday samples
//! (`getintradayactivity`).

use jiff::Timestamp;
use jiff::civil::Date;

use super::lenient::lenient;
use super::page::{Context, Row, read_row};
use super::select::request;
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

/// One day of activity from one source. Today's row keeps changing until the day ends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ActivityDay {
    /// The local day (`date`, `timezone`).
    pub day: LocalDay,
    /// `modified`.
    pub modified: Option<Timestamp>,
    /// `deviceid` (null for some ScanWatch 2 rows and for external sources).
    pub deviceid: Option<String>,
    /// `hash_deviceid`.
    pub hash_deviceid: Option<String>,
    /// `brand`: 1 Withings, 18 an external source (e.g. Google Fit).
    pub brand: Option<i64>,
    /// `is_tracker`.
    pub is_tracker: Option<bool>,
    /// `model`.
    pub model: Option<String>,
    /// `modelid`.
    pub modelid: Option<i64>,
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
    pub hr_zones: [Option<i64>; 4],
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
            brand: self.brand,
            is_tracker: self.is_tracker,
            deviceid: self.deviceid.clone(),
        }
    }
}

lenient! {
    struct RawActivity {
        date: Option<Date>,
        timezone: Option<String>,
        modified: Option<Timestamp>,
        deviceid: Option<String>,
        hash_deviceid: Option<String>,
        brand: Option<i64>,
        is_tracker: Option<bool>,
        model: Option<String>,
        modelid: Option<i64>,
        model_id: Option<i64>,
        steps: Option<i64>,
        distance: Option<f64>,
        elevation: Option<f64>,
        soft: Option<i64>,
        moderate: Option<i64>,
        intense: Option<i64>,
        active: Option<i64>,
        calories: Option<f64>,
        totalcalories: Option<f64>,
        hr_average: Option<i64>,
        hr_min: Option<i64>,
        hr_max: Option<i64>,
        hr_zone_0: Option<i64>,
        hr_zone_1: Option<i64>,
        hr_zone_2: Option<i64>,
        hr_zone_3: Option<i64>,
    }
}

impl Row for ActivityDay {
    type Key = ActivityKey;

    fn key(&self) -> Option<ActivityKey> {
        Some(self.identity())
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let a: RawActivity = read_row(raw, "not an activity day")?;
        let date = a.date.ok_or("no `date` as YYYY-MM-DD")?;
        Ok(ActivityDay {
            day: LocalDay {
                date,
                zone: cx.zone(a.timezone),
            },
            modified: a.modified,
            deviceid: a.deviceid,
            hash_deviceid: a.hash_deviceid,
            brand: a.brand,
            is_tracker: a.is_tracker,
            model: a.model,
            modelid: a.modelid.or(a.model_id),
            steps: a.steps,
            distance: a.distance,
            elevation: a.elevation,
            soft: a.soft,
            moderate: a.moderate,
            intense: a.intense,
            active: a.active,
            calories: a.calories,
            totalcalories: a.totalcalories,
            hr_average: a.hr_average,
            hr_min: a.hr_min,
            hr_max: a.hr_max,
            hr_zones: [a.hr_zone_0, a.hr_zone_1, a.hr_zone_2, a.hr_zone_3],
        })
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

/// One intraday sample, keyed by its start instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IntradaySample {
    /// When it starts (the answer's epoch-second key).
    pub timestamp: Timestamp,
    /// `duration` (s).
    pub duration: Option<i64>,
    /// `deviceid`.
    pub deviceid: Option<String>,
    /// `model`.
    pub model: Option<String>,
    /// `model_id`.
    pub model_id: Option<i64>,
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

lenient! {
    struct RawSample {
        timestamp: Option<i64>,
        duration: Option<i64>,
        deviceid: Option<String>,
        model: Option<String>,
        model_id: Option<i64>,
        modelid: Option<i64>,
        steps: Option<i64>,
        elevation: Option<f64>,
        calories: Option<f64>,
        distance: Option<f64>,
        stroke: Option<i64>,
        pool_lap: Option<i64>,
        heart_rate: Option<i64>,
        spo2_auto: Option<f64>,
        rmssd: Option<f64>,
        sdnn1: Option<f64>,
        hrv_quality: Option<i64>,
        core_body_temperature: Option<f64>,
        rr: Option<f64>,
        chest_movement_rate: Option<f64>,
    }
}

impl Row for IntradaySample {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.timestamp.as_second())
    }

    fn decode(raw: &str, key: Option<&str>, _: &mut Context) -> Result<Self, String> {
        let s: RawSample = read_row(raw, "not an intraday sample")?;
        let at = key
            .and_then(|k| k.trim().parse::<i64>().ok())
            .or(s.timestamp)
            .and_then(instant)
            .ok_or("no epoch-second key")?;
        Ok(IntradaySample {
            timestamp: at,
            duration: s.duration,
            deviceid: s.deviceid,
            model: s.model,
            model_id: s.model_id.or(s.modelid),
            steps: s.steps,
            elevation: s.elevation,
            calories: s.calories,
            distance: s.distance,
            stroke: s.stroke,
            pool_lap: s.pool_lap,
            heart_rate: s.heart_rate,
            spo2_auto: s.spo2_auto,
            rmssd: s.rmssd,
            sdnn1: s.sdnn1,
            hrv_quality: s.hrv_quality,
            core_body_temperature: s.core_body_temperature,
            rr: s.rr,
            chest_movement_rate: s.chest_movement_rate,
        })
    }
}
