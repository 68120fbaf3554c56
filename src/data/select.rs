//! What a request selects: a window (Unix instants or local days, as each endpoint takes) or
//! `since` (Withings' `lastupdate`), never both.
//!
//! Withings documents the two as exclusive ("DO NOT USE WITH"), and a client that sent both
//! got empty answers for hundreds of users (withings-data.md T3). Here each request is built by
//! one constructor (`window`, `days` or `since`) and has no way to add the other, so the mix
//! does not compile.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use super::client::{Form, form};

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
        let (start, end) = ordered(start, end);
        Window { start, end }
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
        let (first, last) = ordered(first, last);
        Days { first, last }
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

/// The two in order, earlier first.
fn ordered<T: Ord>(a: T, b: T) -> (T, T) {
    if b < a { (b, a) } else { (a, b) }
}

pub(crate) fn unix(t: Timestamp) -> String {
    t.as_second().to_string()
}

/// A window's parameters on the wire: Unix seconds or local days.
pub(crate) trait Span: Copy {
    /// Adds the window's parameters to `form`.
    fn push(self, form: &mut Form);
}

impl Span for Window {
    fn push(self, form: &mut Form) {
        form.push(("startdate", unix(self.start)));
        form.push(("enddate", unix(self.end)));
    }
}

impl Span for Days {
    fn push(self, form: &mut Form) {
        form.push(("startdateymd", self.first.to_string()));
        form.push(("enddateymd", self.last.to_string()));
    }
}

impl<W> Selection<W> {
    /// Adds the window's parameters, or `lastupdate`, to `form`.
    pub(crate) fn push(&self, form: &mut Form)
    where
        W: Span,
    {
        match *self {
            Selection::Window(w) => w.push(form),
            Selection::Since(t) => form.push(("lastupdate", unix(t))),
        }
    }
}

/// `data_fields`, when some are asked for.
fn push_fields(form: &mut Form, fields: &[String]) {
    if !fields.is_empty() {
        form.push(("data_fields", fields.join(",")));
    }
}

/// The longest window the 24 h endpoints answer in one call.
pub const MAX_CALL_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// How a request's selection becomes its calls.
pub(crate) trait Calls: Copy {
    /// Whether the answers page with `more`/`offset`.
    const PAGED: bool;
    /// The form of each call: `action`, the selection, `data_fields`.
    fn calls(self, action: &'static str, fields: &[String]) -> Vec<Form>;
}

/// Local days or `since`: one call, paged.
impl Calls for Selection<Days> {
    const PAGED: bool = true;
    fn calls(self, action: &'static str, fields: &[String]) -> Vec<Form> {
        let mut f = form(action);
        self.push(&mut f);
        push_fields(&mut f, fields);
        vec![f]
    }
}

/// A window on a 24 h endpoint: one call per piece of at most [`MAX_CALL_WINDOW`], no paging.
impl Calls for Window {
    const PAGED: bool = false;
    fn calls(self, action: &'static str, fields: &[String]) -> Vec<Form> {
        self.split(MAX_CALL_WINDOW)
            .into_iter()
            .map(|piece| {
                let mut f = form(action);
                piece.push(&mut f);
                push_fields(&mut f, fields);
                f
            })
            .collect()
    }
}

/// Declares a request with `data_fields` (`fields`) selected `by days_or_since` (constructors
/// `days` and `since`) or `by window` (constructor `window`); see [`Calls`] for its calls.
macro_rules! request {
    (
        $(#[$meta:meta])*
        $name:ident by $by:ident {
            action: $action:literal, path: $path:literal, rows: $rows:literal => $row:ty
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            selection: $crate::data::select::request!(@selection $by),
            fields: Vec<String>,
        }

        impl $name {
            $crate::data::select::request!(@constructors $by);

            /// `data_fields`: the fields to ask for (what they do is in the type's documentation).
            pub fn fields(mut self, fields: &[&str]) -> Self {
                self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
                self
            }

            fn with(selection: $crate::data::select::request!(@selection $by)) -> Self {
                $name { selection, fields: Vec::new() }
            }
        }

        impl $crate::data::Query for $name {
            type Row = $row;
            const ENDPOINT: $crate::data::Endpoint = $crate::data::Endpoint::new(
                $path,
                $rows,
                <$crate::data::select::request!(@selection $by) as $crate::data::select::Calls>::PAGED,
            );

            fn calls(&self) -> Vec<$crate::data::Form> {
                $crate::data::select::Calls::calls(self.selection, $action, &self.fields)
            }
        }
    };
    (@selection days_or_since) => { $crate::data::Selection<$crate::data::Days> };
    (@selection window) => { $crate::data::Window };
    (@constructors days_or_since) => {
        /// Rows on the local days `first..=last` (each record's own day).
        pub fn days(first: ::jiff::civil::Date, last: ::jiff::civil::Date) -> Self {
            Self::with($crate::data::Selection::Window($crate::data::Days::new(first, last)))
        }

        /// Rows created or changed after `since` (`lastupdate`).
        pub fn since(since: ::jiff::Timestamp) -> Self {
            Self::with($crate::data::Selection::Since(since))
        }

        /// The selection.
        pub fn selection(&self) -> $crate::data::Selection<$crate::data::Days> {
            self.selection
        }
    };
    (@constructors window) => {
        /// Rows in `start..=end`.
        pub fn window(start: ::jiff::Timestamp, end: ::jiff::Timestamp) -> Self {
            Self::with($crate::data::Window::new(start, end))
        }
    };
}
pub(crate) use request;

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
