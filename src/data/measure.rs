//! `POST /measure action=getmeas`: measure groups, each a set of measures taken together.

use jiff::Timestamp;
use serde::Deserialize;

use super::client::{Endpoint, Form, Query, csv, form};
use super::code::{Attrib, Category};
use super::lenient::{Field, lenient, reason};
use super::measure_type::MeasureType;
use super::page::{Context, Row, read_row};
use super::select::{Selection, Window};
use super::source::Source;
use super::time::Zone;
use super::value::Exact;

/// `getmeas`: measure groups in a window of measure dates, or created or changed since an
/// instant (Withings' recommended way to stay up to date: it also catches late uploads and
/// edits, withings-data.md T5, T6). Several types are one call (`meastypes`); no types means
/// every type, so new ones are never dropped by an allowlist (T14).
///
/// A window and `since` cannot be mixed: each constructor makes one kind.
///
/// ```compile_fail
/// use jiff::Timestamp;
/// use tower_withings::data::GetMeas;
///
/// let t = Timestamp::UNIX_EPOCH;
/// // `since` and a window in one request: no such method.
/// let query = GetMeas::since(t).window(t, t);
/// ```
///
/// ```
/// use jiff::Timestamp;
/// use tower_withings::data::{GetMeas, MeasureType};
///
/// let query = GetMeas::since(Timestamp::from_second(1_700_000_000).unwrap())
///     .types(&[MeasureType::Weight, MeasureType::FatRatio]);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMeas {
    selection: Selection<Window>,
    types: Vec<MeasureType>,
    category: Option<Category>,
}

impl GetMeas {
    /// Groups whose measure `date` is in `start..=end`.
    pub fn window(start: Timestamp, end: Timestamp) -> Self {
        Self::with(Selection::Window(Window::new(start, end)))
    }

    /// Groups created or changed after `since` (`lastupdate`; the epoch for the whole
    /// history).
    pub fn since(since: Timestamp) -> Self {
        Self::with(Selection::Since(since))
    }

    fn with(selection: Selection<Window>) -> Self {
        GetMeas {
            selection,
            types: Vec::new(),
            category: None,
        }
    }

    /// Only these types, in one call (`meastypes=1,6,…`). Empty: every type.
    pub fn types(mut self, types: &[MeasureType]) -> Self {
        self.types.clear();
        for t in types {
            if !self.types.contains(t) {
                self.types.push(*t);
            }
        }
        self
    }

    /// Only real measures or only goals.
    pub fn category(mut self, category: Category) -> Self {
        self.category = Some(category);
        self
    }

    /// The selection.
    pub fn selection(&self) -> Selection<Window> {
        self.selection
    }

    /// The types asked for (empty: every type).
    pub fn measure_types(&self) -> &[MeasureType] {
        &self.types
    }
}

impl Query for GetMeas {
    type Row = MeasureGroup;
    const ENDPOINT: Endpoint = Endpoint::new("/measure", "measuregrps", true);

    fn calls(&self) -> Vec<Form> {
        let mut f = form("getmeas");
        match self.types.as_slice() {
            [] => {}
            [one] => f.push(("meastype", one.code().to_string())),
            many => f.push(("meastypes", csv(many.iter().map(|t| t.code().to_string())))),
        }
        if let Some(c) = self.category {
            f.push(("category", c.code().to_string()));
        }
        self.selection.push(&mut f);
        vec![f]
    }
}

lenient! {
    /// A measure group: measures taken together by one device at one time. Its identity is
    /// `grpid`; Withings updates the whole group when any measure in it changes.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct MeasureGroup {
        /// `grpid`: the group's identity.
        pub grpid: i64 = required,
        /// When the measures were taken (`date`).
        pub date: Option<Timestamp>,
        /// When Withings stored it (`created`).
        pub created: Option<Timestamp>,
        /// When it last changed (`modified`; the `lastupdate` cursor is the largest of these).
        pub modified: Option<Timestamp>,
        /// How it was attributed to the user.
        pub attrib: Option<Attrib>,
        /// Real measure or goal.
        pub category: Option<Category>,
        /// The device (`deviceid` and `hash_deviceid` are `null` on manual entries; `model` is a
        /// name such as "Body+").
        #[serde(flatten)]
        pub source: Source,
        /// The group's zone, else the answer's.
        pub timezone: Option<Zone>,
        /// `comment`.
        pub comment: Option<String>,
        /// The measures, each once per (type, position).
        pub measures: Vec<Measure>,
    }
}

impl MeasureGroup {
    /// The measure of this type at the whole-body position (no `position`), if any.
    pub fn get(&self, t: MeasureType) -> Option<&Measure> {
        self.measures
            .iter()
            .find(|m| m.measure_type == t && m.position.is_none())
            .or_else(|| self.measures.iter().find(|m| m.measure_type == t))
    }
}

/// One measure of a group. Its identity is `(grpid, type, position)`: segmental types
/// (173–175) repeat one type in a group, told apart by `position` (withings-data.md T9).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Measure {
    /// `type`.
    pub measure_type: MeasureType,
    /// `value × 10^unit`, exact.
    pub value: Exact,
    /// `position` (body segment) for segmental and per-side measures.
    pub position: Option<i64>,
}

impl Measure {
    /// `(grpid, type code, position)`: the identity to upsert on.
    pub fn key(&self, grpid: i64) -> (i64, i64, Option<i64>) {
        (grpid, self.measure_type.code(), self.position)
    }
}

lenient! {
    struct RawMeasure {
        value: Option<i64>,
        #[serde(rename = "type")]
        measure_type: Option<i64>,
        unit: Option<i64>,
        position: Option<i64>,
    }
}

/// Read strictly, unlike every other field: `measures` that are not a list of objects, or a
/// measure without an integer `value`, `type` or `unit`, fail their group, which is never
/// stored without them. One measure per (type, position): a repeat replaces the earlier one.
impl Field for Vec<Measure> {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Option<Vec<RawMeasure>> = Option::deserialize(d)?;
        let raw = raw.unwrap_or_default();
        let mut measures: Vec<Measure> = Vec::with_capacity(raw.len());
        for (i, m) in raw.into_iter().enumerate() {
            let (Some(value), Some(t), Some(unit)) = (m.value, m.measure_type, m.unit) else {
                return Err(reason(format_args!(
                    "measure {i} lacks an integer `value`, `type` or `unit`"
                )));
            };
            let unit = i32::try_from(unit)
                .map_err(|_| reason(format_args!("measure {i} has unit {unit}")))?;
            let measure = Measure {
                measure_type: MeasureType::from_code(t),
                value: Exact::new(value, unit),
                position: m.position,
            };
            match measures
                .iter_mut()
                .find(|x| x.measure_type == measure.measure_type && x.position == measure.position)
            {
                Some(x) => *x = measure,
                None => measures.push(measure),
            }
        }
        Ok(measures)
    }
}

impl Row for MeasureGroup {
    type Key = i64;

    fn key(&self) -> Option<i64> {
        Some(self.grpid)
    }

    fn decode(raw: &str, _: Option<&str>, cx: &mut Context) -> Result<Self, String> {
        let mut g: MeasureGroup = read_row(raw, "not a measure group")?;
        g.timezone = cx.zone(g.timezone);
        Ok(g)
    }
}
