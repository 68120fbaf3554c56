//! Reading one stream: the typed query for a `lastupdate` read or a window, its rows as
//! [`Record`]s.

use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};

use super::change::Record;
use super::stream::SyncStream;
use crate::data::{
    DataClient, GetActivity, GetIntradayActivity, GetMeas, GetSleep, GetSleepSummary, GetWorkouts,
    HeartList, RowStream,
};
use crate::token::UserId;
use crate::transport::HttpClient;

/// What to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Select {
    /// Created or changed after this (Unix s): `lastupdate`.
    Since(i64),
    /// Records dated in `start..end` (Unix s).
    Window(i64, i64),
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The UTC days covering `start..end`, widened by a day each side (local days are at most
/// 14 h from UTC; records outside are dropped by the version check, never lost).
fn days(start: i64, end: i64) -> (jiff::civil::Date, jiff::civil::Date) {
    let day = SignedDuration::from_hours(24);
    let utc = jiff::tz::TimeZone::UTC;
    let first = ts(start).saturating_sub(day).unwrap_or(ts(start));
    let last = ts(end).saturating_add(day).unwrap_or(ts(end));
    (
        first.to_zoned(utc.clone()).date(),
        last.to_zoned(utc).date(),
    )
}

fn map<T: Send + 'static>(rows: RowStream<T>, f: fn(T) -> Record) -> RowStream<Record> {
    rows.map(move |r| r.map(f)).boxed()
}

/// The rows of `stream` for `user` selected by `select`. A window stream asked with `Since`
/// reads the window from there to `now`.
pub(crate) fn read<S: HttpClient>(
    client: &DataClient<S>,
    user: UserId,
    stream: SyncStream,
    select: Select,
    now: i64,
) -> RowStream<Record> {
    let window = match select {
        Select::Since(s) => (s, now),
        Select::Window(s, e) => (s, e),
    };
    let (ws, we) = (ts(window.0), ts(window.1.saturating_sub(1).max(window.0)));
    let (first, last) = days(window.0, window.1);
    match (stream, select) {
        (SyncStream::Measures, Select::Since(s)) => {
            map(client.rows(user, GetMeas::since(ts(s))), Record::Measures)
        }
        (SyncStream::Measures, Select::Window(..)) => {
            map(client.rows(user, GetMeas::window(ws, we)), Record::Measures)
        }
        (SyncStream::Activity, Select::Since(s)) => map(
            client.rows(user, GetActivity::since(ts(s))),
            Record::Activity,
        ),
        (SyncStream::Activity, Select::Window(..)) => map(
            client.rows(user, GetActivity::days(first, last)),
            Record::Activity,
        ),
        (SyncStream::Workouts, Select::Since(s)) => map(
            client.rows(user, GetWorkouts::since(ts(s))),
            Record::Workout,
        ),
        (SyncStream::Workouts, Select::Window(..)) => map(
            client.rows(user, GetWorkouts::days(first, last)),
            Record::Workout,
        ),
        (SyncStream::SleepSummaries, Select::Since(s)) => map(
            client.rows(user, GetSleepSummary::since(ts(s))),
            Record::SleepSummary,
        ),
        (SyncStream::SleepSummaries, Select::Window(..)) => map(
            client.rows(user, GetSleepSummary::days(first, last)),
            Record::SleepSummary,
        ),
        (SyncStream::Intraday, _) => map(
            client.rows(user, GetIntradayActivity::window(ws, we)),
            Record::Intraday,
        ),
        (SyncStream::Sleep, _) => map(client.rows(user, GetSleep::window(ws, we)), Record::Sleep),
        (SyncStream::Heart, _) => map(client.rows(user, HeartList::window(ws, we)), Record::Heart),
    }
}
