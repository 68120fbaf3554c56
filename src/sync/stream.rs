//! [`SyncStream`]: what is synced per user, and how each stream is read incrementally.

use std::fmt;
use std::str::FromStr;

use crate::notify::Appli;

/// One kind of record synced per user, with its own cursor.
///
/// The first four are read by `lastupdate` (Withings' modification time); the last three have
/// no `lastupdate` and are read as time windows re-read with an overlap
/// (withings-data.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SyncStream {
    /// `getmeas` measure groups (key `grpid`).
    Measures,
    /// `getactivity` days (key: day and source).
    Activity,
    /// `getworkouts` (key `id`).
    Workouts,
    /// Sleep `getsummary` (key `id`).
    SleepSummaries,
    /// `getintradayactivity` samples (key: epoch second); a window stream.
    Intraday,
    /// Sleep `get` segments (key: start and state); a window stream.
    Sleep,
    /// Heart `list` (key `signalid`); a window stream.
    Heart,
}

/// How a stream is read incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    /// `lastupdate` from the cursor: the newest `modified` accepted.
    LastUpdate,
    /// A time window from the cursor (the newest record time accepted) minus an overlap.
    Window,
}

impl SyncStream {
    /// Every stream.
    pub const ALL: [SyncStream; 7] = [
        SyncStream::Measures,
        SyncStream::Activity,
        SyncStream::Workouts,
        SyncStream::SleepSummaries,
        SyncStream::Intraday,
        SyncStream::Sleep,
        SyncStream::Heart,
    ];

    /// The streams synced by default: the four with `lastupdate`.
    pub const DEFAULT: [SyncStream; 4] = [
        SyncStream::Measures,
        SyncStream::Activity,
        SyncStream::Workouts,
        SyncStream::SleepSummaries,
    ];

    /// Its name (`measures`, `activity`, `workouts`, `sleep`, `intraday`, `sleep_get`,
    /// `heart`), as stored and as the CLI's `--streams` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SyncStream::Measures => "measures",
            SyncStream::Activity => "activity",
            SyncStream::Workouts => "workouts",
            SyncStream::SleepSummaries => "sleep",
            SyncStream::Intraday => "intraday",
            SyncStream::Sleep => "sleep_get",
            SyncStream::Heart => "heart",
        }
    }

    /// How it is read.
    pub fn incremental(self) -> Incremental {
        match self {
            SyncStream::Measures
            | SyncStream::Activity
            | SyncStream::Workouts
            | SyncStream::SleepSummaries => Incremental::LastUpdate,
            SyncStream::Intraday | SyncStream::Sleep | SyncStream::Heart => Incremental::Window,
        }
    }

    /// The streams a notification category asks to fetch (empty for none).
    ///
    /// ```
    /// use tower_withings::notify::Appli;
    /// use tower_withings::sync::SyncStream;
    ///
    /// assert_eq!(SyncStream::for_appli(Appli::Glucose), [SyncStream::Measures]);
    /// assert_eq!(SyncStream::for_appli(Appli::Activity), [SyncStream::Activity, SyncStream::Workouts]);
    /// assert!(SyncStream::for_appli(Appli::BedIn).is_empty());
    /// ```
    pub fn for_appli(appli: Appli) -> &'static [SyncStream] {
        match appli.code() {
            1 | 2 | 4 | 58 => &[SyncStream::Measures],
            16 => &[SyncStream::Activity, SyncStream::Workouts],
            44 => &[SyncStream::SleepSummaries],
            54 => &[SyncStream::Heart],
            _ => &[],
        }
    }
}

impl fmt::Display for SyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream name that is not one of [`SyncStream::name`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown stream {0:?} (expected measures, activity, workouts, sleep, intraday, sleep_get or heart)"
)]
pub struct UnknownStream(pub String);

impl FromStr for SyncStream {
    type Err = UnknownStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SyncStream::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| UnknownStream(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in SyncStream::ALL {
            assert_eq!(s.name().parse::<SyncStream>(), Ok(s));
        }
        assert!("weights".parse::<SyncStream>().is_err());
    }
}
