//! What a request selects: a window (Unix instants or local days, as each endpoint takes) or
//! `since` (Withings' `lastupdate`), never both.
//!
//! Withings documents the two as exclusive ("DO NOT USE WITH"), and a client that sent both
//! got empty answers for hundreds of users (withings-data.md T3). Here each request is built by
//! one constructor (`window`, `days` or `since`) and has no way to add the other, so the mix
//! does not compile.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

/// A span of instants, `start` to `end` (Unix seconds on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First instant.
    pub start: Timestamp,
    /// Last instant.
    pub end: Timestamp,
}

impl Window {
    /// `start..end`; the two are swapped if given in the wrong order.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        if end < start {
            Window {
                start: end,
                end: start,
            }
        } else {
            Window { start, end }
        }
    }

    /// The window cut into consecutive pieces of at most `max` each (the 24 h endpoints
    /// silently answer only the first 24 h of a longer window, withings-data.md T4).
    ///
    /// ```
    /// use jiff::{SignedDuration, Timestamp};
    /// use tower_withings::data::Window;
    ///
    /// let start = Timestamp::from_second(1_700_000_000).unwrap();
    /// let end = Timestamp::from_second(1_700_000_000 + 3 * 86_400).unwrap();
    /// let pieces = Window::new(start, end).split(SignedDuration::from_hours(24));
    /// assert_eq!(pieces.len(), 3);
    /// assert_eq!(pieces[0].start, start);
    /// assert_eq!(pieces[2].end, end);
    /// ```
    pub fn split(self, max: SignedDuration) -> Vec<Window> {
        let max = if max <= SignedDuration::ZERO {
            SignedDuration::from_secs(1)
        } else {
            max
        };
        let mut pieces = Vec::new();
        let mut start = self.start;
        loop {
            let end = match start.checked_add(max) {
                Ok(end) if end < self.end => end,
                _ => self.end,
            };
            pieces.push(Window { start, end });
            if end >= self.end {
                return pieces;
            }
            start = end;
        }
    }
}

/// A span of local days, `first` to `last` inclusive (`YYYY-MM-DD` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Days {
    /// First day.
    pub first: Date,
    /// Last day.
    pub last: Date,
}

impl Days {
    /// `first..=last`; swapped if given in the wrong order.
    pub fn new(first: Date, last: Date) -> Self {
        if last < first {
            Days {
                first: last,
                last: first,
            }
        } else {
            Days { first, last }
        }
    }
}

/// Either a window or `since`: what a request with both kinds of selection holds. Built only
/// by the requests' constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection<W> {
    /// Data in this window (by measure date, or local day).
    Window(W),
    /// Data created or changed after this instant (`lastupdate`; the epoch for everything).
    Since(Timestamp),
}

pub(crate) fn unix(t: Timestamp) -> String {
    t.as_second().to_string()
}

pub(crate) fn ymd(d: Date) -> String {
    d.to_string()
}

impl Selection<Window> {
    pub(crate) fn push(&self, form: &mut Vec<(&'static str, String)>) {
        match self {
            Selection::Window(w) => {
                form.push(("startdate", unix(w.start)));
                form.push(("enddate", unix(w.end)));
            }
            Selection::Since(t) => form.push(("lastupdate", unix(*t))),
        }
    }
}

impl Selection<Days> {
    pub(crate) fn push(&self, form: &mut Vec<(&'static str, String)>) {
        match self {
            Selection::Window(d) => {
                form.push(("startdateymd", ymd(d.first)));
                form.push(("enddateymd", ymd(d.last)));
            }
            Selection::Since(t) => form.push(("lastupdate", unix(*t))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn windows_split_into_pieces_that_cover_them_exactly() {
        let day = SignedDuration::from_hours(24);
        let w = Window::new(at(0), at(86_400));
        assert_eq!(w.split(day), vec![w]);
        let w = Window::new(at(0), at(86_401));
        assert_eq!(
            w.split(day),
            vec![
                Window::new(at(0), at(86_400)),
                Window::new(at(86_400), at(86_401))
            ]
        );
        let w = Window::new(at(5), at(5));
        assert_eq!(w.split(day), vec![w]);
        let w = Window::new(at(10), at(0));
        assert_eq!((w.start, w.end), (at(0), at(10)));
        assert_eq!(
            Window::new(at(0), at(10)).split(SignedDuration::ZERO).len(),
            10
        );
    }
}
