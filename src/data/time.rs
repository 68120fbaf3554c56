//! Time as Withings means it: instants are Unix seconds in UTC; days (`date` on v2 rows,
//! `*ymd` parameters) are local to the record's IANA `timezone`.
//!
//! A zone name the tz database does not know is kept as text with a warning, never an error
//! (a peer raised on it, withings-data.md §1).

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A record's IANA time zone: its name as sent, and the zone when the tz database knows it.
///
/// ```
/// use tower_withings::data::Zone;
///
/// let paris = Zone::new("Europe/Paris");
/// assert!(paris.tz().is_some());
/// let odd = Zone::new("Mars/Olympus_Mons"); // a warning is logged, nothing fails
/// assert_eq!(odd.name(), "Mars/Olympus_Mons");
/// assert!(odd.tz().is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    name: String,
    tz: Option<TimeZone>,
}

impl Zone {
    /// Looks `name` up in the tz database; an unknown name is kept, with a `tracing` warning.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let tz = match jiff::tz::db().get(&name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                tracing::warn!(timezone = %crate::error::shorten(&name), "unknown IANA time zone in a Withings record; kept as text");
                None
            }
        };
        Zone { name, tz }
    }

    /// The name alone, not looked up yet (a row's field before its page resolves it).
    pub(crate) fn named(name: String) -> Self {
        Zone { name, tz: None }
    }

    /// The name as Withings sent it (`Europe/Paris`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone, when the tz database knows the name.
    pub fn tz(&self) -> Option<&TimeZone> {
        self.tz.as_ref()
    }
}

/// A local calendar day and the zone it is local to (a v2 row's `date` and `timezone`).
///
/// ```
/// use jiff::civil::date;
/// use tower_withings::data::{LocalDay, Zone};
///
/// let day = LocalDay { date: date(2021, 4, 18), zone: Some(Zone::new("Europe/Paris")) };
/// let (start, end) = day.bounds().unwrap();
/// assert_eq!(start.to_string(), "2021-04-17T22:00:00Z");
/// assert_eq!(end.to_string(), "2021-04-18T22:00:00Z");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDay {
    /// The day.
    pub date: Date,
    /// The record's zone, when it carried one.
    pub zone: Option<Zone>,
}

impl LocalDay {
    /// The day's first instant and the next day's, in UTC (`None` without a known zone).
    pub fn bounds(&self) -> Option<(Timestamp, Timestamp)> {
        let tz = self.zone.as_ref()?.tz()?;
        let start = self.date.to_zoned(tz.clone()).ok()?.timestamp();
        let end = self
            .date
            .tomorrow()
            .ok()?
            .to_zoned(tz.clone())
            .ok()?
            .timestamp();
        Some((start, end))
    }
}

/// A Unix second as an instant (`None` outside jiff's range, ±9999 years).
pub(crate) fn instant(seconds: i64) -> Option<Timestamp> {
    Timestamp::from_second(seconds).ok()
}

/// A `YYYY-MM-DD` day.
pub(crate) fn day(text: &str) -> Option<Date> {
    text.trim().parse().ok()
}
