//! `POST /v2/sleep`: sleep segments (`get`) and nightly summaries (`getsummary`).

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::activity::MAX_CALL_WINDOW;
use super::client::{Form, Query, csv, form};
use super::code::{self, SleepModel, SleepState};
use super::lenient;
use super::page::{Context, Row};
use super::select::{Days, Selection, Window, unix};
use super::time::{LocalDay, day, instant};

/// Sleep `get`: segments (state over time) in a window, split into ≤24 h calls (a longer
/// window silently returns only its first 24 h, withings-data.md T4). No `since`: the
/// endpoint has no `lastupdate`.
///
/// ```
/// use jiff::Timestamp;
/// use tower_withings::data::{GetSleep, Query};
///
/// let start = Timestamp::from_second(1_700_000_000).unwrap();
/// let end = Timestamp::from_second(1_700_000_000 + 3 * 86_400).unwrap();
/// assert_eq!(GetSleep::window(start, end).calls().len(), 3); // three calls of 24 h
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSleep {
    window: Window,
    fields: Vec<String>,
}

impl GetSleep {
    /// Segments in `start..=end`.
    pub fn window(start: Timestamp, end: Timestamp) -> Self {
        GetSleep {
            window: Window::new(start, end),
            fields: Vec::new(),
        }
    }

    /// Also these series (`data_fields`: `hr`, `rr`, `snoring`, …).
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
}

impl Query for GetSleep {
    type Row = SleepSegment;
    const PATH: &'static str = "/v2/sleep";
    const ROWS: &'static str = "series";
    const PAGED: bool = false;

    fn calls(&self) -> Vec<Form> {
        self.window
            .split(MAX_CALL_WINDOW)
            .into_iter()
            .map(|w| {
                let mut f = form("get");
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

/// Samples of one series: `(instant, value)` in the order sent.
pub type Samples = Vec<(Timestamp, f64)>;

/// One sleep segment: a state from `start` to `end`, with the series asked for. Segments
/// have no identity of their own (`(start, state)` is unconfirmed as unique): they are
/// never collapsed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SleepSegment {
    /// Start.
    pub start: Option<Timestamp>,
    /// End.
    pub end: Option<Timestamp>,
    /// State.
    pub state: Option<SleepState>,
    /// The answer's device family (`model` of the body: tracker or sleep monitor).
    pub device: Option<SleepModel>,
    /// `model` (a name here).
    pub model: Option<String>,
    /// `model_id`.
    pub model_id: Option<i64>,
    /// `hash_deviceid`.
    pub hash_deviceid: Option<String>,
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

/// A `{"<epoch>": number}` map; anything else (or a bad entry) is skipped.
fn samples<'de, D: Deserializer<'de>>(d: D) -> Result<Samples, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Samples;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of epoch seconds to numbers")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Samples, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let value: Num = map.next_value()?;
                if let (Some(at), Some(v)) = (key.trim().parse().ok().and_then(instant), value.0) {
                    out.push((at, v));
                }
            }
            Ok(out)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Samples, A::Error> {
            while s.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        fn visit_unit<E>(self) -> Result<Samples, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Samples, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Samples, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Samples, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Samples, E> {
            Ok(Vec::new())
        }
        fn visit_str<E>(self, _: &str) -> Result<Samples, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

struct Num(Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient::float(d).map(Num)
    }
}

#[derive(Deserialize)]
struct RawSegment {
    #[serde(default, deserialize_with = "lenient::int")]
    startdate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    enddate: Option<i64>,
    #[serde(default, deserialize_with = "code::lenient")]
    state: Option<SleepState>,
    #[serde(default, deserialize_with = "lenient::string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    model_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "samples")]
    hr: Samples,
    #[serde(default, deserialize_with = "samples")]
    rr: Samples,
    #[serde(default, deserialize_with = "samples")]
    snoring: Samples,
    #[serde(default, deserialize_with = "samples")]
    sdnn_1: Samples,
    #[serde(default, deserialize_with = "samples")]
    rmssd: Samples,
    #[serde(default, deserialize_with = "samples")]
    hrv_quality: Samples,
    #[serde(default, deserialize_with = "samples")]
    mvt_score: Samples,
    #[serde(default, deserialize_with = "samples")]
    chest_movement_rate: Samples,
    #[serde(default, deserialize_with = "samples")]
    withings_index: Samples,
    #[serde(default, deserialize_with = "samples")]
    breathing_sounds: Samples,
}

impl Row for SleepSegment {
    type Key = ();

    fn key(&self) -> Option<()> {
        None
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let s: RawSegment = super::page::read_row(raw, "not a sleep segment")?;
        Ok(SleepSegment {
            start: s.startdate.and_then(instant),
            end: s.enddate.and_then(instant),
            state: s.state,
            device: cx.meta.model.map(SleepModel::from_code),
            model: s.model,
            model_id: s.model_id,
            hash_deviceid: s.hash_deviceid,
            hr: s.hr,
            rr: s.rr,
            snoring: s.snoring,
            sdnn_1: s.sdnn_1,
            rmssd: s.rmssd,
            hrv_quality: s.hrv_quality,
            mvt_score: s.mvt_score,
            chest_movement_rate: s.chest_movement_rate,
            withings_index: s.withings_index,
            breathing_sounds: s.breathing_sounds,
        })
    }
}

/// Sleep `getsummary`: one row per night (or nap), by local days or changed since an
/// instant. Summaries are edited days later: read by `since` to see the edits.
///
/// ```
/// use jiff::civil::date;
/// use tower_withings::data::GetSleepSummary;
///
/// let query = GetSleepSummary::days(date(2021, 4, 17), date(2021, 4, 18)).fields(&["sleep_score"]);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSleepSummary {
    selection: Selection<Days>,
    fields: Vec<String>,
}

impl GetSleepSummary {
    /// Nights whose wake-up day is in `first..=last`.
    pub fn days(first: Date, last: Date) -> Self {
        GetSleepSummary {
            selection: Selection::Window(Days::new(first, last)),
            fields: Vec::new(),
        }
    }

    /// Summaries created or changed after `since`.
    pub fn since(since: Timestamp) -> Self {
        GetSleepSummary {
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

impl Query for GetSleepSummary {
    type Row = SleepSummary;
    const PATH: &'static str = "/v2/sleep";
    const ROWS: &'static str = "series";
    const PAGED: bool = true;

    fn calls(&self) -> Vec<Form> {
        let mut f = form("getsummary");
        self.selection.push(&mut f);
        if !self.fields.is_empty() {
            f.push(("data_fields", csv(self.fields.iter().cloned())));
        }
        vec![f]
    }
}

/// One sleep summary; its identity is `id`. Its `day` is the local wake-up day.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SleepSummary {
    /// `id`.
    pub id: i64,
    /// The local wake-up day (`date`, `timezone`).
    pub day: Option<LocalDay>,
    /// Start.
    pub start: Option<Timestamp>,
    /// End.
    pub end: Option<Timestamp>,
    /// `created`.
    pub created: Option<Timestamp>,
    /// `modified`.
    pub modified: Option<Timestamp>,
    /// Tracker or sleep monitor (`model`).
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

/// A summary's metrics (durations in s, rates per minute). Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SleepSummaryData {
    /// s awake.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wakeupduration: Option<i64>,
    /// Times woken.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wakeupcount: Option<i64>,
    /// s to fall asleep.
    #[serde(default, deserialize_with = "lenient::int")]
    pub durationtosleep: Option<i64>,
    /// s to get up.
    #[serde(default, deserialize_with = "lenient::int")]
    pub durationtowakeup: Option<i64>,
    /// s of REM.
    #[serde(default, deserialize_with = "lenient::int")]
    pub remsleepduration: Option<i64>,
    /// s of light sleep.
    #[serde(default, deserialize_with = "lenient::int")]
    pub lightsleepduration: Option<i64>,
    /// s of deep sleep.
    #[serde(default, deserialize_with = "lenient::int")]
    pub deepsleepduration: Option<i64>,
    /// s asleep.
    #[serde(default, deserialize_with = "lenient::int")]
    pub total_sleep_time: Option<i64>,
    /// s in bed.
    #[serde(default, deserialize_with = "lenient::int")]
    pub total_timeinbed: Option<i64>,
    /// Ratio asleep / in bed (0–1).
    #[serde(default, deserialize_with = "lenient::float")]
    pub sleep_efficiency: Option<f64>,
    /// s.
    #[serde(default, deserialize_with = "lenient::int")]
    pub sleep_latency: Option<i64>,
    /// s.
    #[serde(default, deserialize_with = "lenient::int")]
    pub wakeup_latency: Option<i64>,
    /// s awake after sleep onset.
    #[serde(default, deserialize_with = "lenient::int")]
    pub waso: Option<i64>,
    /// REM episodes.
    #[serde(default, deserialize_with = "lenient::int")]
    pub nb_rem_episodes: Option<i64>,
    /// Times out of bed.
    #[serde(default, deserialize_with = "lenient::int")]
    pub out_of_bed_count: Option<i64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_average: Option<i64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_min: Option<i64>,
    /// bpm.
    #[serde(default, deserialize_with = "lenient::int")]
    pub hr_max: Option<i64>,
    /// Breaths per minute.
    #[serde(default, deserialize_with = "lenient::int")]
    pub rr_average: Option<i64>,
    /// Breaths per minute.
    #[serde(default, deserialize_with = "lenient::int")]
    pub rr_min: Option<i64>,
    /// Breaths per minute.
    #[serde(default, deserialize_with = "lenient::int")]
    pub rr_max: Option<i64>,
    /// Breathing disturbances intensity.
    #[serde(default, deserialize_with = "lenient::int")]
    pub breathing_disturbances_intensity: Option<i64>,
    /// Apnea-hypopnea index.
    #[serde(default, deserialize_with = "lenient::float")]
    pub apnea_hypopnea_index: Option<f64>,
    /// s snoring.
    #[serde(default, deserialize_with = "lenient::int")]
    pub snoring: Option<i64>,
    /// Snoring episodes.
    #[serde(default, deserialize_with = "lenient::int")]
    pub snoringepisodecount: Option<i64>,
    /// Sleep score (0–100).
    #[serde(default, deserialize_with = "lenient::int")]
    pub sleep_score: Option<i64>,
    /// Average movement score.
    #[serde(default, deserialize_with = "lenient::float")]
    pub mvt_score_avg: Option<f64>,
    /// ms.
    #[serde(default, deserialize_with = "lenient::float")]
    pub rmssd_average: Option<f64>,
    /// `unknown`, `usual`, `elevated`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub core_body_temperature_status: Option<String>,
}

#[derive(Deserialize)]
struct RawSummary {
    #[serde(default, deserialize_with = "lenient::int")]
    id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    date: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    startdate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    enddate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    created: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "code::lenient")]
    model: Option<SleepModel>,
    #[serde(default, deserialize_with = "lenient::int")]
    model_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    completed: Option<bool>,
    #[serde(default, deserialize_with = "lenient::object")]
    data: Option<SleepSummaryData>,
}

impl Row for SleepSummary {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.id)
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let s: RawSummary = super::page::read_row(raw, "not a sleep summary")?;
        let id = s.id.ok_or("no integer `id`")?;
        let zone = cx.zone(s.timezone);
        Ok(SleepSummary {
            id,
            day: s
                .date
                .as_deref()
                .and_then(day)
                .map(|date| LocalDay { date, zone }),
            start: s.startdate.and_then(instant),
            end: s.enddate.and_then(instant),
            created: s.created.and_then(instant),
            modified: s.modified.and_then(instant),
            device: s.model,
            model_id: s.model_id,
            hash_deviceid: s.hash_deviceid,
            completed: s.completed,
            data: s.data.unwrap_or_default(),
        })
    }
}
