//! `POST /v2/measure`: daily activity (`getactivity`) and intraday samples
//! (`getintradayactivity`).

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::client::{Form, Query, csv, form};
use super::lenient;
use super::page::{Context, Row};
use super::select::{Days, Selection, Window, unix};
use super::time::{LocalDay, day, instant};

/// `getactivity`: one row per local day and source, by days or changed since an instant.
///
/// ```
/// use jiff::civil::date;
/// use tower_withings::data::GetActivity;
///
/// let query = GetActivity::days(date(2023, 10, 20), date(2023, 10, 21)).fields(&["steps", "distance"]);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetActivity {
    selection: Selection<Days>,
    fields: Vec<String>,
}

impl GetActivity {
    /// Days `first..=last` (local to each record).
    pub fn days(first: Date, last: Date) -> Self {
        GetActivity {
            selection: Selection::Window(Days::new(first, last)),
            fields: Vec::new(),
        }
    }

    /// Days created or changed after `since` (`lastupdate`).
    pub fn since(since: Timestamp) -> Self {
        GetActivity {
            selection: Selection::Since(since),
            fields: Vec::new(),
        }
    }

    /// Only these fields (`data_fields`): the answer then holds only them.
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// The selection.
    pub fn selection(&self) -> Selection<Days> {
        self.selection
    }
}

impl Query for GetActivity {
    type Row = ActivityDay;
    const PATH: &'static str = "/v2/measure";
    const ROWS: &'static str = "activities";
    const PAGED: bool = true;

    fn calls(&self) -> Vec<Form> {
        let mut f = form("getactivity");
        self.selection.push(&mut f);
        if !self.fields.is_empty() {
            f.push(("data_fields", csv(self.fields.iter().cloned())));
        }
        vec![f]
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

#[derive(Deserialize)]
struct RawActivity {
    #[serde(default, deserialize_with = "lenient::string")]
    date: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    brand: Option<i64>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    is_tracker: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    modelid: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    model_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    steps: Option<i64>,
    #[serde(default, deserialize_with = "lenient::float")]
    distance: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    elevation: Option<f64>,
    #[serde(default, deserialize_with = "lenient::int")]
    soft: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    moderate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    intense: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    active: Option<i64>,
    #[serde(default, deserialize_with = "lenient::float")]
    calories: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    totalcalories: Option<f64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_average: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_min: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_max: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_zone_0: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_zone_1: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_zone_2: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hr_zone_3: Option<i64>,
}

impl Row for ActivityDay {
    type Key = ActivityKey;

    fn key(&self) -> Option<ActivityKey> {
        Some(self.identity())
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let a: RawActivity = super::page::read_row(raw, "not an activity day")?;
        let date = a
            .date
            .as_deref()
            .and_then(day)
            .ok_or("no `date` as YYYY-MM-DD")?;
        Ok(ActivityDay {
            day: LocalDay {
                date,
                zone: cx.zone(a.timezone),
            },
            modified: a.modified.and_then(instant),
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

/// The longest window the 24 h endpoints answer in one call.
pub const MAX_CALL_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// `getintradayactivity`: samples in a window, split into ≤24 h calls (a longer window would
/// silently return only its first 24 h). No `since`: this endpoint has no `lastupdate`.
///
/// ```
/// use jiff::Timestamp;
/// use tower_withings::data::{GetIntradayActivity, Query};
///
/// let start = Timestamp::from_second(1_700_000_000).unwrap();
/// let end = Timestamp::from_second(1_700_000_000 + 2 * 86_400).unwrap();
/// assert_eq!(GetIntradayActivity::window(start, end).calls().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetIntradayActivity {
    window: Window,
    fields: Vec<String>,
}

impl GetIntradayActivity {
    /// Samples in `start..=end`.
    pub fn window(start: Timestamp, end: Timestamp) -> Self {
        GetIntradayActivity {
            window: Window::new(start, end),
            fields: Vec::new(),
        }
    }

    /// Only these fields (`data_fields`).
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
}

impl Query for GetIntradayActivity {
    type Row = IntradaySample;
    const PATH: &'static str = "/v2/measure";
    const ROWS: &'static str = "series";
    const PAGED: bool = false;

    fn calls(&self) -> Vec<Form> {
        self.window
            .split(MAX_CALL_WINDOW)
            .into_iter()
            .map(|w| {
                let mut f = form("getintradayactivity");
                f.push(("startdate", unix(w.start)));
                f.push(("enddate", unix(w.end)));
                if !self.fields.is_empty() {
                    f.push(("data_fields", csv(self.fields.iter().cloned())));
                }
                f
            })
            .collect()
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

#[derive(Deserialize)]
struct RawSample {
    #[serde(default, deserialize_with = "lenient::int")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    duration: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    model_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    modelid: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    steps: Option<i64>,
    #[serde(default, deserialize_with = "lenient::float")]
    elevation: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    calories: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    distance: Option<f64>,
    #[serde(default, deserialize_with = "lenient::int")]
    stroke: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    pool_lap: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    heart_rate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::float")]
    spo2_auto: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    rmssd: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    sdnn1: Option<f64>,
    #[serde(default, deserialize_with = "lenient::int")]
    hrv_quality: Option<i64>,
    #[serde(default, deserialize_with = "lenient::float")]
    core_body_temperature: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    rr: Option<f64>,
    #[serde(default, deserialize_with = "lenient::float")]
    chest_movement_rate: Option<f64>,
}

impl Row for IntradaySample {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.timestamp.as_second())
    }

    fn decode(raw: &str, key: Option<&str>, _: &mut Context) -> Result<Self, String> {
        let s: RawSample = super::page::read_row(raw, "not an intraday sample")?;
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
