//! `POST /v2/measure action=getworkouts`: workouts, edited for days after they happen.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Deserialize;

use super::client::{Form, Query, csv, form};
use super::code::{self, Attrib, WorkoutCategory};
use super::lenient;
use super::page::{Context, Row};
use super::select::{Days, Selection};
use super::time::{LocalDay, day, instant};

/// `getworkouts`: by local days, or changed since an instant.
///
/// ```
/// use jiff::Timestamp;
/// use tower_withings::data::GetWorkouts;
///
/// let query = GetWorkouts::since(Timestamp::from_second(1_693_000_000).unwrap());
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetWorkouts {
    selection: Selection<Days>,
    fields: Vec<String>,
}

impl GetWorkouts {
    /// Workouts on days `first..=last`.
    pub fn days(first: Date, last: Date) -> Self {
        GetWorkouts {
            selection: Selection::Window(Days::new(first, last)),
            fields: Vec::new(),
        }
    }

    /// Workouts created or changed after `since`.
    pub fn since(since: Timestamp) -> Self {
        GetWorkouts {
            selection: Selection::Since(since),
            fields: Vec::new(),
        }
    }

    /// Only these `data` fields (`data_fields`).
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
}

impl Query for GetWorkouts {
    type Row = Workout;
    const PATH: &'static str = "/v2/measure";
    const ROWS: &'static str = "series";
    const PAGED: bool = true;

    fn calls(&self) -> Vec<Form> {
        let mut f = form("getworkouts");
        self.selection.push(&mut f);
        if !self.fields.is_empty() {
            f.push(("data_fields", csv(self.fields.iter().cloned())));
        }
        vec![f]
    }
}

/// One workout; its identity is `id`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Workout {
    /// `id`.
    pub id: i64,
    /// The kind of workout.
    pub category: Option<WorkoutCategory>,
    /// Start.
    pub start: Option<Timestamp>,
    /// End.
    pub end: Option<Timestamp>,
    /// The local day (`date`, `timezone`).
    pub day: Option<LocalDay>,
    /// `modified`.
    pub modified: Option<Timestamp>,
    /// `attrib`.
    pub attrib: Option<Attrib>,
    /// `model` (an integer here).
    pub model: Option<i64>,
    /// `deviceid` (often null).
    pub deviceid: Option<String>,
    /// `data`: the metrics; every field optional (`data_fields` trims the answer).
    pub data: WorkoutData,
}

/// A workout's metrics. Numbers that came as `null` or a string are `None`;
/// `core_body_temperature_status` is text (`unknown`, `usual`, `elevated`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct WorkoutData {
    /// kcal.
    #[serde(default, deserialize_with = "lenient::float")]
    pub calories: Option<f64>,
    /// Intensity (0–100).
    #[serde(default, deserialize_with = "lenient::int")]
    pub intensity: Option<i64>,
    /// Distance entered by hand (m).
    #[serde(default, deserialize_with = "lenient::float")]
    pub manual_distance: Option<f64>,
    /// Calories entered by hand (kcal).
    #[serde(default, deserialize_with = "lenient::float")]
    pub manual_calories: Option<f64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_average: Option<i64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_min: Option<i64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_max: Option<i64>,
    /// s in zone 0.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_zone_0: Option<i64>,
    /// s in zone 1.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_zone_1: Option<i64>,
    /// s in zone 2.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_zone_2: Option<i64>,
    /// s in zone 3.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_zone_3: Option<i64>,
    /// s.
    #[serde(default, deserialize_with = "lenient::int")]
    pub pause_duration: Option<i64>,
    /// s (often null).
    #[serde(default, deserialize_with = "lenient::int")]
    pub algo_pause_duration: Option<i64>,
    /// %.
    #[serde(default, deserialize_with = "lenient::float")]
    pub spo2_average: Option<f64>,
    /// Steps.
    #[serde(default, deserialize_with = "lenient::int")]
    pub steps: Option<i64>,
    /// m.
    #[serde(default, deserialize_with = "lenient::float")]
    pub distance: Option<f64>,
    /// m.
    #[serde(default, deserialize_with = "lenient::float")]
    pub elevation: Option<f64>,
    /// Pool laps.
    #[serde(default, deserialize_with = "lenient::int")]
    pub pool_laps: Option<i64>,
    /// Strokes.
    #[serde(default, deserialize_with = "lenient::int")]
    pub strokes: Option<i64>,
    /// m.
    #[serde(default, deserialize_with = "lenient::int")]
    pub pool_length: Option<i64>,
    /// °C.
    #[serde(default, deserialize_with = "lenient::float")]
    pub core_body_temperature_average: Option<f64>,
    /// `unknown`, `usual`, `elevated`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub core_body_temperature_status: Option<String>,
}

#[derive(Deserialize)]
struct RawWorkout {
    #[serde(default, deserialize_with = "lenient::int")]
    id: Option<i64>,
    #[serde(default, deserialize_with = "code::lenient")]
    category: Option<WorkoutCategory>,
    #[serde(default, deserialize_with = "lenient::int")]
    startdate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    enddate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    date: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "code::lenient")]
    attrib: Option<Attrib>,
    #[serde(default, deserialize_with = "lenient::int")]
    model: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    data: Option<WorkoutData>,
}

impl Row for Workout {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.id)
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let w: RawWorkout = super::page::read_row(raw, "not a workout")?;
        let id = w.id.ok_or("no integer `id`")?;
        let zone = cx.zone(w.timezone);
        Ok(Workout {
            id,
            category: w.category,
            start: w.startdate.and_then(instant),
            end: w.enddate.and_then(instant),
            day: w
                .date
                .as_deref()
                .and_then(day)
                .map(|date| LocalDay { date, zone }),
            modified: w.modified.and_then(instant),
            attrib: w.attrib,
            model: w.model,
            deviceid: w.deviceid,
            data: w.data.unwrap_or_default(),
        })
    }
}
