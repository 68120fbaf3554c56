//! `POST /v2/measure action=getworkouts`: workouts, edited for days after they happen.

use jiff::Timestamp;

use super::code::{Attrib, WorkoutCategory};
use super::lenient::{Field, lenient, object_or_default};
use super::page::{Context, Row, read_row};
use super::select::request;
use super::time::LocalDay;

request! {
    /// `getworkouts`: by local days, or changed since an instant. `fields` limits `data` to those
    /// fields.
    ///
    /// ```
    /// use jiff::Timestamp;
    /// use tower_withings::data::GetWorkouts;
    ///
    /// let query = GetWorkouts::since(Timestamp::from_second(1_693_000_000).unwrap());
    /// # let _ = query;
    /// ```
    GetWorkouts by days_or_since {
        action: "getworkouts", path: "/v2/measure", rows: "series" => Workout
    }
}

lenient! {
    /// One workout; its identity is `id`.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct Workout {
        /// `id`.
        pub id: i64 = required,
        /// The kind of workout.
        pub category: Option<WorkoutCategory>,
        /// Start.
        #[serde(rename = "startdate")]
        pub start: Option<Timestamp>,
        /// End.
        #[serde(rename = "enddate")]
        pub end: Option<Timestamp>,
        /// The local day (`date`, `timezone`).
        #[serde(flatten)]
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
}

lenient! {
    /// A workout's metrics. Numbers that came as `null` or a string are `None`;
    /// `core_body_temperature_status` is text (`unknown`, `usual`, `elevated`).
    #[derive(Debug, Clone, Default, PartialEq)]
    #[non_exhaustive]
    pub struct WorkoutData {
        /// kcal.
        pub calories: Option<f64>,
        /// Intensity (0–100).
        pub intensity: Option<i64>,
        /// Distance entered by hand (m).
        pub manual_distance: Option<f64>,
        /// Calories entered by hand (kcal).
        pub manual_calories: Option<f64>,
        /// bpm.
        pub hr_average: Option<i64>,
        /// bpm.
        pub hr_min: Option<i64>,
        /// bpm.
        pub hr_max: Option<i64>,
        /// s in zone 0.
        pub hr_zone_0: Option<i64>,
        /// s in zone 1.
        pub hr_zone_1: Option<i64>,
        /// s in zone 2.
        pub hr_zone_2: Option<i64>,
        /// s in zone 3.
        pub hr_zone_3: Option<i64>,
        /// s.
        pub pause_duration: Option<i64>,
        /// s (often null).
        pub algo_pause_duration: Option<i64>,
        /// %.
        pub spo2_average: Option<f64>,
        /// Steps.
        pub steps: Option<i64>,
        /// m.
        pub distance: Option<f64>,
        /// m.
        pub elevation: Option<f64>,
        /// Pool laps.
        pub pool_laps: Option<i64>,
        /// Strokes.
        pub strokes: Option<i64>,
        /// m.
        pub pool_length: Option<i64>,
        /// °C.
        pub core_body_temperature_average: Option<f64>,
        /// `unknown`, `usual`, `elevated`.
        pub core_body_temperature_status: Option<String>,
    }
}

/// `data`: all `None` when it is `[]`, `null` or absent.
impl Field for WorkoutData {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object_or_default(d)
    }
}

impl Row for Workout {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.id)
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut w: Workout = read_row(raw, "not a workout")?;
        w.day = w.day.map(|d| cx.day(d));
        Ok(w)
    }
}
