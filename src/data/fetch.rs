//! From a notification to the data calls it asks for (withings-data.md §5).
//!
//! Each [`Appli`] maps to what to fetch: 1, 2, 4, 58 to `getmeas` with their measure types;
//! 16 to activity and workouts; 44 to sleep summaries; 54 to the heart list; 46, 50–53, 55 to
//! nothing. A received [`Notification`] gives the typed requests for its window.

use jiff::{SignedDuration, Timestamp};

use super::activity::GetActivity;
use super::measure::GetMeas;
use super::measure_type::MeasureType;
use super::sleep::GetSleepSummary;
use super::workout::GetWorkouts;
use super::{HeartList, Window};
use crate::notify::{Appli, Notification};

/// What a category of notification means to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchPlan {
    /// `getmeas` with these types (one call).
    Measures(&'static [MeasureType]),
    /// `getactivity` and `getworkouts` (activity notifications cover both).
    ActivityAndWorkouts,
    /// Sleep `getsummary`.
    SleepSummary,
    /// Heart `list` (then heart `get` for a signal).
    HeartList,
    /// Nothing to fetch (user actions, bed in/out, device events); unknown categories too.
    Nothing,
}

use MeasureType as T;

/// Appli 1: Withings' own example after a weight notification (1, 5, 6, 8, 76, 77, 88, 91),
/// plus the body-composition types scales added since (waters, visceral fat, segmental,
/// metabolic, vascular age).
const BODY: &[MeasureType] = &[
    T::Weight,
    T::FatFreeMass,
    T::FatRatio,
    T::FatMass,
    T::MuscleMass,
    T::Hydration,
    T::BoneMass,
    T::PulseWaveVelocity,
    T::VascularAge,
    T::ExtracellularWater,
    T::IntracellularWater,
    T::VisceralFat,
    T::SegmentalFatFreeMass,
    T::SegmentalFatMass,
    T::SegmentalMuscleMass,
    T::BasalMetabolicRate,
    T::MetabolicAge,
];
/// Appli 2: temperatures.
const TEMPERATURE: &[MeasureType] = &[T::Temperature, T::BodyTemperature, T::SkinTemperature];
/// Appli 4: blood pressure, pulse, SpO2.
const HEART: &[MeasureType] = &[
    T::DiastolicBloodPressure,
    T::SystolicBloodPressure,
    T::HeartPulse,
    T::Spo2,
];
/// Appli 58: glucose.
const GLUCOSE: &[MeasureType] = &[T::Glucose];

impl FetchPlan {
    /// The plan for a category.
    ///
    /// ```
    /// use tower_withings::data::{FetchPlan, MeasureType};
    /// use tower_withings::notify::Appli;
    ///
    /// assert_eq!(FetchPlan::for_appli(Appli::Glucose), FetchPlan::Measures(&[MeasureType::Glucose]));
    /// assert_eq!(FetchPlan::for_appli(Appli::Activity), FetchPlan::ActivityAndWorkouts);
    /// assert_eq!(FetchPlan::for_appli(Appli::BedIn), FetchPlan::Nothing);
    /// ```
    pub fn for_appli(appli: Appli) -> FetchPlan {
        match Appli::from_code(appli.code()) {
            Appli::Weight => FetchPlan::Measures(BODY),
            Appli::Temperature => FetchPlan::Measures(TEMPERATURE),
            Appli::Heart => FetchPlan::Measures(HEART),
            Appli::Glucose => FetchPlan::Measures(GLUCOSE),
            Appli::Activity => FetchPlan::ActivityAndWorkouts,
            Appli::Sleep => FetchPlan::SleepSummary,
            Appli::Ecg => FetchPlan::HeartList,
            _ => FetchPlan::Nothing,
        }
    }
}

/// One typed request a notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fetch {
    /// `getmeas`.
    Measures(GetMeas),
    /// `getactivity`.
    Activity(GetActivity),
    /// `getworkouts`.
    Workouts(GetWorkouts),
    /// Sleep `getsummary`.
    SleepSummary(GetSleepSummary),
    /// Heart `list`.
    Heart(HeartList),
}

/// A data notification without the `startdate`/`enddate` of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "notification for appli {0} carries no startdate/enddate window: read with `since` instead"
)]
pub struct NoWindow(pub Appli);

impl Fetch {
    /// The requests `n` asks for: its `startdate..enddate` window with the category's plan.
    /// Endpoints that take local days (activity, workouts, sleep summaries) get the UTC days
    /// of the window widened by one day on each side, since the user's zone is not in the
    /// notification (a local day is at most 14 h from UTC). Empty for categories with
    /// nothing to fetch.
    ///
    /// ```
    /// use tower_withings::data::Fetch;
    /// use tower_withings::notify::Notification;
    ///
    /// let n = Notification::from_form(b"userid=1&appli=1&startdate=1700000000&enddate=1700000060").unwrap();
    /// let fetches = Fetch::for_notification(&n).unwrap();
    /// assert_eq!(fetches.len(), 1);
    /// assert!(matches!(fetches[0], Fetch::Measures(_)));
    /// ```
    pub fn for_notification(n: &Notification) -> Result<Vec<Fetch>, NoWindow> {
        let plan = FetchPlan::for_appli(n.appli);
        if plan == FetchPlan::Nothing {
            return Ok(Vec::new());
        }
        let window = n
            .startdate
            .zip(n.enddate)
            .and_then(|(s, e)| {
                let s = Timestamp::from_second(i64::try_from(s).ok()?).ok()?;
                let e = Timestamp::from_second(i64::try_from(e).ok()?).ok()?;
                Some(Window::new(s, e))
            })
            .ok_or(NoWindow(n.appli))?;
        let days = || {
            let widen = SignedDuration::from_hours(24);
            let first = window.start.saturating_sub(widen).ok()?;
            let last = window.end.saturating_add(widen).ok()?;
            Some((
                first.to_zoned(jiff::tz::TimeZone::UTC).date(),
                last.to_zoned(jiff::tz::TimeZone::UTC).date(),
            ))
        };
        Ok(match plan {
            FetchPlan::Measures(types) => vec![Fetch::Measures(
                GetMeas::window(window.start, window.end).types(types),
            )],
            FetchPlan::ActivityAndWorkouts => {
                let (first, last) = days().ok_or(NoWindow(n.appli))?;
                vec![
                    Fetch::Activity(GetActivity::days(first, last)),
                    Fetch::Workouts(GetWorkouts::days(first, last)),
                ]
            }
            FetchPlan::SleepSummary => {
                let (first, last) = days().ok_or(NoWindow(n.appli))?;
                vec![Fetch::SleepSummary(GetSleepSummary::days(first, last))]
            }
            FetchPlan::HeartList => vec![Fetch::Heart(HeartList::window(window.start, window.end))],
            FetchPlan::Nothing => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Query;

    #[test]
    fn each_appli_fetches_what_the_table_says() {
        let measures = |a: u16| match FetchPlan::for_appli(Appli::from_code(a)) {
            FetchPlan::Measures(t) => t.iter().map(|t| t.code()).collect::<Vec<_>>(),
            other => panic!("{a}: {other:?}"),
        };
        assert_eq!(measures(1)[..8], [1, 5, 6, 8, 76, 77, 88, 91]);
        assert_eq!(measures(2), [12, 71, 73]);
        assert_eq!(measures(4), [9, 10, 11, 54]);
        assert_eq!(measures(58), [119]);
        assert_eq!(
            FetchPlan::for_appli(Appli::from_code(16)),
            FetchPlan::ActivityAndWorkouts
        );
        assert_eq!(
            FetchPlan::for_appli(Appli::from_code(44)),
            FetchPlan::SleepSummary
        );
        assert_eq!(
            FetchPlan::for_appli(Appli::from_code(54)),
            FetchPlan::HeartList
        );
        for a in [46, 50, 51, 52, 53, 55, 999] {
            assert_eq!(
                FetchPlan::for_appli(Appli::from_code(a)),
                FetchPlan::Nothing,
                "{a}"
            );
        }
    }

    fn forms(n: &str) -> Vec<Vec<(&'static str, String)>> {
        let n = Notification::from_form(n.as_bytes()).unwrap();
        Fetch::for_notification(&n)
            .unwrap()
            .into_iter()
            .flat_map(|f| match f {
                Fetch::Measures(q) => q.calls(),
                Fetch::Activity(q) => q.calls(),
                Fetch::Workouts(q) => q.calls(),
                Fetch::SleepSummary(q) => q.calls(),
                Fetch::Heart(q) => q.calls(),
            })
            .collect()
    }

    fn get<'a>(form: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_notification_gives_the_requests_for_exactly_its_window() {
        let window = "startdate=1700000000&enddate=1700000600";
        // (appli, calls, call, parameter, value); 2023-11-14T22:13:20Z is the window's start,
        // the local-day endpoints widen it by a day each side.
        for (appli, calls, call, key, value) in [
            (58, 1, 0, "action", Some("getmeas")),
            (58, 1, 0, "meastype", Some("119")),
            (58, 1, 0, "startdate", Some("1700000000")),
            (58, 1, 0, "enddate", Some("1700000600")),
            (58, 1, 0, "lastupdate", None),
            (2, 1, 0, "meastypes", Some("12,71,73")),
            (16, 2, 0, "action", Some("getactivity")),
            (16, 2, 1, "action", Some("getworkouts")),
            (16, 2, 0, "startdateymd", Some("2023-11-13")),
            (16, 2, 0, "enddateymd", Some("2023-11-15")),
            (44, 1, 0, "action", Some("getsummary")),
            (54, 1, 0, "action", Some("list")),
            (54, 1, 0, "startdate", Some("1700000000")),
        ] {
            let f = forms(&format!("userid=1&appli={appli}&{window}"));
            assert_eq!(f.len(), calls, "appli {appli}");
            assert_eq!(get(&f[call], key), value, "appli {appli} {key}");
        }

        assert!(forms("userid=1&appli=46&action=unlink").is_empty());
        assert!(forms("userid=1&appli=50&date=1700000000").is_empty());
        let n = Notification::from_form(b"userid=1&appli=1").unwrap();
        assert_eq!(Fetch::for_notification(&n), Err(NoWindow(Appli::Weight)));
    }
}
