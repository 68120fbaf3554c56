//! What the sink receives: [`Change`]s, each an upsert or a delete of one record, with a
//! stable [`RecordKey`] and a version (the `modified` Withings gave).

use std::fmt;

use jiff::Timestamp;

use super::stream::SyncStream;
use crate::data::{
    ActivityDay, HeartRecord, IntradaySample, MeasureGroup, SleepSegment, SleepSummary, Workout,
};
use crate::token::UserId;

/// A record's identity, stable across reads: the user, the stream and the record's own
/// identity as a string (`grpid`, workout or sleep `id`, `YYYY-MM-DD/brand/tracker/deviceid`
/// for activity days, the epoch second for intraday, `start/state` for sleep segments,
/// `signalid` for ECGs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// Whose.
    pub user: UserId,
    /// Which stream.
    pub stream: SyncStream,
    /// The record's identity within the stream.
    pub id: String,
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.user, self.stream, self.id)
    }
}

/// One record as Withings sent it, typed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Record {
    /// A measure group.
    Measures(MeasureGroup),
    /// An activity day.
    Activity(ActivityDay),
    /// A workout.
    Workout(Workout),
    /// A sleep summary.
    SleepSummary(SleepSummary),
    /// An intraday sample.
    Intraday(IntradaySample),
    /// A sleep segment.
    Sleep(SleepSegment),
    /// A heart recording.
    Heart(HeartRecord),
}

/// An upsert or a delete.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// The record as it is now.
    Upsert(Box<Record>),
    /// The record is gone (found by the reconcile pass).
    Delete,
}

/// One change for the sink. Per key, versions only go up: a change never follows one with a
/// higher version, and a delete ranks above an upsert of the same version.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Which record.
    pub key: RecordKey,
    /// Its version: the `modified` Withings gave, in Unix seconds (for records without one,
    /// their own time).
    pub version: i64,
    /// Upsert or delete.
    pub kind: ChangeKind,
}

impl Change {
    /// `(version, is_delete)`: the order changes of one key reach the sink in.
    pub fn rank(&self) -> (i64, bool) {
        (self.version, matches!(self.kind, ChangeKind::Delete))
    }
}

/// What the engine keeps of a record: identity, version, its own time, deleted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    pub id: String,
    pub version: i64,
    /// The record's own time (measure date, day start, workout start, …): where the
    /// reconcile pass looks for it.
    pub at: Option<i64>,
    /// Its `modified`, if Withings gave one (the only thing a cursor is taken from).
    pub modified: Option<i64>,
}

fn secs(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.as_second())
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

impl Record {
    /// Identity, version and times of the record.
    pub(crate) fn describe(&self) -> Described {
        let (id, modified, at) = match self {
            Record::Measures(g) => (
                g.grpid.to_string(),
                secs(g.modified).or(secs(g.created)),
                secs(g.date),
            ),
            Record::Activity(a) => {
                let k = a.identity();
                let day_start = k
                    .date
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .ok()
                    .map(|z| z.timestamp().as_second());
                let tracker = match k.is_tracker {
                    Some(true) => "tracker",
                    Some(false) => "app",
                    None => "-",
                };
                (
                    format!(
                        "{}/{}/{}/{}",
                        k.date,
                        or_dash(&k.brand),
                        tracker,
                        or_dash(&k.deviceid)
                    ),
                    secs(a.modified),
                    day_start,
                )
            }
            Record::Workout(w) => (w.id.to_string(), secs(w.modified), secs(w.start)),
            Record::SleepSummary(s) => (
                s.id.to_string(),
                secs(s.modified).or(secs(s.created)),
                secs(s.start),
            ),
            Record::Intraday(i) => (
                i.timestamp.as_second().to_string(),
                None,
                Some(i.timestamp.as_second()),
            ),
            Record::Sleep(s) => (
                format!(
                    "{}/{}",
                    or_dash(&secs(s.start)),
                    s.state
                        .map_or_else(|| "-".to_owned(), |st| st.code().to_string())
                ),
                None,
                secs(s.start),
            ),
            Record::Heart(h) => (
                h.ecg.and_then(|e| e.signalid).map_or_else(
                    || format!("t{}", or_dash(&secs(h.timestamp))),
                    |s| s.to_string(),
                ),
                secs(h.modified),
                secs(h.timestamp),
            ),
        };
        Described {
            version: modified.or(at).unwrap_or(0),
            id,
            at,
            modified,
        }
    }
}
