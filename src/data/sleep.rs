//! `POST /v2/sleep`: sleep segments (`get`) and nightly summaries (`getsummary`).

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::Deserializer;
use serde::de::{MapAccess, Visitor};

use super::code::{SleepModel, SleepState};
use super::lenient::{self, Field, lenient, otherwise_nothing};
use super::page::{Context, Row, read_row};
use super::select::request;
use super::source::Source;
use super::time::{LocalDay, instant};

request! {
    /// Sleep `get`: segments (state over time) in a window, split into ≤24 h calls (a longer
    /// window silently returns only its first 24 h, withings-data.md T4). No `since`: the
    /// endpoint has no `lastupdate`. `fields` asks for series too (`hr`, `rr`, `snoring`, …).
    ///
    /// ```
    /// use jiff::Timestamp;
    /// use tower_withings::data::{GetSleep, Query};
    ///
    /// let start = Timestamp::from_second(1_700_000_000).unwrap();
    /// let end = Timestamp::from_second(1_700_000_000 + 3 * 86_400).unwrap();
    /// assert_eq!(GetSleep::window(start, end).calls().len(), 3); // three calls of 24 h
    /// ```
    GetSleep by window {
        action: "get", path: "/v2/sleep", rows: "series" => SleepSegment
    }
}

/// Samples of one series: `(instant, value)` in the order sent.
pub type Samples = Vec<(Timestamp, f64)>;

lenient! {
    /// One sleep segment: a state from `start` to `end`, with the series asked for. Segments
    /// have no identity of their own (`(start, state)` is unconfirmed as unique): they are
    /// never collapsed.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct SleepSegment {
        /// Start.
        #[serde(rename = "startdate")]
        pub start: Option<Timestamp>,
        /// End.
        #[serde(rename = "enddate")]
        pub end: Option<Timestamp>,
        /// State.
        pub state: Option<SleepState>,
        /// The answer's device family (`model` of the body: tracker or sleep monitor).
        pub device: Option<SleepModel> = skip,
        /// The device (`model`, a name here; `model_id`; `hash_deviceid`).
        #[serde(flatten)]
        pub source: Source,
        /// `hr` (bpm).
        pub hr: Samples,
        /// `rr` (breaths per minute).
        pub rr: Samples,
        /// `snoring`.
        pub snoring: Samples,
        /// `sdnn_1`.
        pub sdnn_1: Samples,
        /// `rmssd`.
        pub rmssd: Samples,
        /// `hrv_quality`.
        pub hrv_quality: Samples,
        /// `mvt_score`.
        pub mvt_score: Samples,
        /// `chest_movement_rate`.
        pub chest_movement_rate: Samples,
        /// `withings_index`.
        pub withings_index: Samples,
        /// `breathing_sounds`.
        pub breathing_sounds: Samples,
    }
}

/// A `{"<epoch>": number}` map; anything else (or a bad entry) is skipped.
impl Field for Samples {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Samples, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Samples;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of epoch seconds to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Samples, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value = map.next_value_seed(lenient::read::<Option<f64>>())?;
                    if let (Some(at), Some(v)) = (key.trim().parse().ok().and_then(instant), value)
                    {
                        out.push((at, v));
                    }
                }
                Ok(out)
            }
            otherwise_nothing!(seq null bool i64 u64 f64 str);
        }
        d.deserialize_any(V)
    }
}

impl Row for SleepSegment {
    type Key = ();

    fn key(&self) -> Option<()> {
        None
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut s: SleepSegment = read_row(raw, "not a sleep segment")?;
        s.device = cx.meta.model.map(SleepModel::from_code);
        Ok(s)
    }
}

request! {
    /// Sleep `getsummary`: one row per night (or nap), by local days (the wake-up day) or
    /// changed since an instant. Summaries are edited days later: read by `since` to see the
    /// edits. `fields` limits `data` to those fields.
    ///
    /// ```
    /// use jiff::civil::date;
    /// use tower_withings::data::GetSleepSummary;
    ///
    /// let query = GetSleepSummary::days(date(2021, 4, 17), date(2021, 4, 18)).fields(&["sleep_score"]);
    /// # let _ = query;
    /// ```
    GetSleepSummary by days_or_since {
        action: "getsummary", path: "/v2/sleep", rows: "series" => SleepSummary
    }
}

lenient! {
    /// One sleep summary; its identity is `id`. Its `day` is the local wake-up day.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct SleepSummary {
        /// `id`.
        pub id: i64 = required,
        /// The local wake-up day (`date`, `timezone`).
        #[serde(flatten)]
        pub day: Option<LocalDay>,
        /// Start.
        #[serde(rename = "startdate")]
        pub start: Option<Timestamp>,
        /// End.
        #[serde(rename = "enddate")]
        pub end: Option<Timestamp>,
        /// `created`.
        pub created: Option<Timestamp>,
        /// `modified`.
        pub modified: Option<Timestamp>,
        /// Tracker or sleep monitor (`model`).
        #[serde(rename = "model")]
        pub device: Option<SleepModel>,
        /// `model_id`.
        pub model_id: Option<i64>,
        /// `hash_deviceid`.
        pub hash_deviceid: Option<String>,
        /// `completed`.
        pub completed: Option<bool>,
        /// The metrics (every field optional).
        pub data: SleepSummaryData,
    }
}

lenient! {
    /// A summary's metrics (durations in s, rates per minute). Unknown fields are ignored.
    #[derive(Debug, Clone, Default, PartialEq)]
    #[non_exhaustive]
    pub struct SleepSummaryData {
        /// s awake.
        pub wakeupduration: Option<i64>,
        /// Times woken.
        pub wakeupcount: Option<i64>,
        /// s to fall asleep.
        pub durationtosleep: Option<i64>,
        /// s to get up.
        pub durationtowakeup: Option<i64>,
        /// s of REM.
        pub remsleepduration: Option<i64>,
        /// s of light sleep.
        pub lightsleepduration: Option<i64>,
        /// s of deep sleep.
        pub deepsleepduration: Option<i64>,
        /// s asleep.
        pub total_sleep_time: Option<i64>,
        /// s in bed.
        pub total_timeinbed: Option<i64>,
        /// Ratio asleep / in bed (0–1).
        pub sleep_efficiency: Option<f64>,
        /// s.
        pub sleep_latency: Option<i64>,
        /// s.
        pub wakeup_latency: Option<i64>,
        /// s awake after sleep onset.
        pub waso: Option<i64>,
        /// REM episodes.
        pub nb_rem_episodes: Option<i64>,
        /// Times out of bed.
        pub out_of_bed_count: Option<i64>,
        /// bpm.
        pub hr_average: Option<i64>,
        /// bpm.
        pub hr_min: Option<i64>,
        /// bpm.
        pub hr_max: Option<i64>,
        /// Breaths per minute.
        pub rr_average: Option<i64>,
        /// Breaths per minute.
        pub rr_min: Option<i64>,
        /// Breaths per minute.
        pub rr_max: Option<i64>,
        /// Breathing disturbances intensity.
        pub breathing_disturbances_intensity: Option<i64>,
        /// Apnea-hypopnea index.
        pub apnea_hypopnea_index: Option<f64>,
        /// s snoring.
        pub snoring: Option<i64>,
        /// Snoring episodes.
        pub snoringepisodecount: Option<i64>,
        /// Sleep score (0–100).
        pub sleep_score: Option<i64>,
        /// Average movement score.
        pub mvt_score_avg: Option<f64>,
        /// ms.
        pub rmssd_average: Option<f64>,
        /// `unknown`, `usual`, `elevated`.
        pub core_body_temperature_status: Option<String>,
    }
}

/// `data`: all `None` when it is `[]`, `null` or absent.
impl Field for SleepSummaryData {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient::object_or_default(d)
    }
}

impl Row for SleepSummary {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.id)
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut s: SleepSummary = read_row(raw, "not a sleep summary")?;
        s.day = s.day.map(|d| cx.day(d));
        Ok(s)
    }
}
