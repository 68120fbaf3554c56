//! One answer page: its rows cut out without building a tree, `more` and `offset` read in
//! every shape Withings sends, each row decoded on its own.
//!
//! `more` is an integer on getmeas, a boolean on v2, `false`, or absent (withings-data.md T1);
//! `offset` is an opaque token sent back verbatim (T2). A row that does not decode is that
//! row's error (T13); duplicates within a page collapse on the row's key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use serde_json::value::RawValue;

use super::error::RowError;
use super::lenient::{self, otherwise_nothing, read};
use super::time::{LocalDay, Zone};
use crate::error::Error;
use crate::status::{self, Peek};

/// The opaque `offset` of a page, to send back exactly as it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offset(pub(crate) String);

impl Offset {
    /// The text sent back in the next request's `offset`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a page says about itself besides its rows.
#[derive(Debug, Default)]
pub struct PageMeta {
    /// `more`, read leniently (absent is false).
    pub more: bool,
    /// `offset`, if any.
    pub offset: Option<Offset>,
    /// The body's `timezone` (getmeas), for rows that carry none.
    pub timezone: Option<String>,
    /// The body's `updatetime` (getmeas: server time).
    pub updatetime: Option<i64>,
    /// The body's `model` (sleep get).
    pub model: Option<i64>,
}

/// What a row decoder may use: the page's meta and a cache of zones, so each zone name is
/// looked up (and warned about) once per page.
#[derive(Debug, Default)]
pub struct Context {
    /// The page's meta.
    pub meta: PageMeta,
    zones: Vec<Zone>,
}

impl Context {
    /// A row's zone as read (a name, not looked up), else the page's, looked up once per page.
    pub(crate) fn zone(&mut self, read: Option<Zone>) -> Option<Zone> {
        let name = match &read {
            Some(z) => z.name(),
            None => self.meta.timezone.as_deref()?,
        };
        if let Some(z) = self.zones.iter().find(|z| z.name() == name) {
            return Some(z.clone());
        }
        let zone = Zone::new(name);
        self.zones.push(zone.clone());
        Some(zone)
    }

    /// A row's local day with its zone looked up (see [`zone`](Self::zone)).
    pub(crate) fn day(&mut self, day: LocalDay) -> LocalDay {
        LocalDay {
            zone: self.zone(day.zone),
            date: day.date,
        }
    }
}

/// A row type: how to decode one row, and its identity for upserts.
pub trait Row: Sized + Send + 'static {
    /// The identity (grpid, id, signalid, day and source, …).
    type Key: Hash + Eq;

    /// The row's identity; rows with the same key in one page collapse (the later one wins).
    /// `None` for rows without one (never collapsed).
    fn key(&self) -> Option<Self::Key>;

    /// Decodes one row from its JSON text; `key` is its name when the rows came as an object
    /// (intraday's epoch-second keys). The error says what is wrong, never the content.
    #[doc(hidden)]
    fn decode(raw: &str, key: Option<&str>, cx: &mut Context) -> Result<Self, String>;
}

/// Reads one row's JSON into its struct; the error says what the row is not and where,
/// never what it holds (serde's messages quote values). A row sent as `[]` is an empty
/// object (T11).
pub(crate) fn read_row<'a, T: de::Deserialize<'a>>(raw: &'a str, not: &str) -> Result<T, String> {
    let empty_list = (raw.trim().strip_prefix('['))
        .and_then(|inner| inner.strip_suffix(']'))
        .is_some_and(|inner| inner.trim().is_empty());
    let raw = if empty_list { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| {
        let message = e.to_string();
        let message = message.split(" at line").next().unwrap_or(&message);
        // serde names a missing key field (`id`, `grpid`, `date`, …) but no value.
        if let Some(field) = message.strip_prefix("missing field ") {
            return format!("{not}: no {field}");
        }
        if let Some(why) = message.strip_prefix(lenient::REASON) {
            return format!("{not}: {why}");
        }
        let why = match e.classify() {
            serde_json::error::Category::Data => "a field of the wrong shape",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Io => "unreadable",
        };
        format!("{not}: {why} at column {}", e.column())
    })
}

/// A decoded page: its rows (or their errors), in order, and its meta.
#[derive(Debug)]
#[non_exhaustive]
pub struct Page<T> {
    /// The rows, duplicates collapsed; a row that could not be read is its error.
    pub rows: Vec<Result<T, RowError>>,
    /// `more`, `offset` and the body's other fields.
    pub meta: PageMeta,
}

/// Decodes one whole answer of `Q` (bytes as Withings sent them) into its typed page: what
/// [`DataClient`](super::DataClient) does with each page, for answers obtained otherwise
/// (a cache, a recorded capture). A non-zero body status is the crate's typed error.
///
/// ```
/// use tower_withings::data::{GetMeas, decode_page};
///
/// let answer = br#"{"status":0,"body":{"measuregrps":[{"grpid":1,"date":1,"measures":[{"value":326,"type":88,"unit":-2}]}],"more":0}}"#;
/// let page = decode_page::<GetMeas>(answer).unwrap();
/// let group = page.rows[0].as_ref().unwrap();
/// assert_eq!(group.measures[0].value.to_string(), "3.26");
/// assert!(!page.meta.more);
/// ```
pub fn decode_page<Q: super::Query>(bytes: &[u8]) -> Result<Page<Q::Row>, Error> {
    decode(bytes, Q::ENDPOINT.rows, 1)
}

/// Decodes a whole answer: the envelope's status through the crate's status table, then the
/// rows under `field` of its `body`.
pub(crate) fn decode<T: Row>(bytes: &[u8], field: &str, page: usize) -> Result<Page<T>, Error> {
    let reordered;
    let bytes = match status::peek_status(bytes) {
        Peek::Status(0) => bytes,
        _ => {
            // Not status 0 first: let the crate's one status table read it, then read the
            // body of a success with the status put first.
            let body = status::parse_response(&bytes::Bytes::copy_from_slice(bytes))?;
            reordered = format!("{{\"status\":0,\"body\":{body}}}");
            reordered.as_bytes()
        }
    };
    let raw = parse(bytes, field)?;
    let mut cx = Context {
        meta: raw.meta,
        zones: Vec::new(),
    };
    let mut rows: Vec<Result<T, RowError>> = Vec::with_capacity(raw.rows.len());
    let mut seen: HashMap<T::Key, usize> = HashMap::new();
    for (index, (key, text)) in raw.rows.into_iter().enumerate() {
        match T::decode(text.get(), key.as_deref(), &mut cx) {
            Ok(row) => match row.key() {
                Some(k) => match seen.get(&k) {
                    Some(&at) => rows[at] = Ok(row),
                    None => {
                        seen.insert(k, rows.len());
                        rows.push(Ok(row));
                    }
                },
                None => rows.push(Ok(row)),
            },
            Err(reason) => rows.push(Err(RowError {
                page,
                index,
                reason,
            })),
        }
    }
    Ok(Page {
        rows,
        meta: cx.meta,
    })
}

/// Decodes the `body` of a status-0 answer as `T` (single-object answers: goals, a signal).
pub(crate) fn decode_body<T: de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    #[derive(serde::Deserialize)]
    struct Envelope<T> {
        body: T,
    }
    match status::peek_status(bytes) {
        Peek::Status(0) => serde_json::from_slice::<Envelope<T>>(bytes)
            .map(|e| e.body)
            .map_err(|e| malformed(&classify_json(&e))),
        _ => {
            let body = status::parse_response(&bytes::Bytes::copy_from_slice(bytes))?;
            serde_json::from_value(body).map_err(|e| malformed(&classify_json(&e)))
        }
    }
}

fn malformed(reason: &str) -> Error {
    Error::MalformedResponse {
        reason: reason.to_owned(),
    }
}

fn classify_json(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "truncated JSON body".into()
    } else if e.is_syntax() {
        "body is not JSON".into()
    } else {
        format!(
            "unexpected shape at line {} column {}",
            e.line(),
            e.column()
        )
    }
}

#[derive(Default)]
struct RawPage<'de> {
    rows: Vec<(Option<String>, &'de RawValue)>,
    meta: PageMeta,
}

fn parse<'de>(bytes: &'de [u8], field: &str) -> Result<RawPage<'de>, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let page = PageSeed { field, body: false }
        .deserialize(&mut de)
        .map_err(|e| malformed(&classify_json(&e)))?;
    de.end().map_err(|e| malformed(&classify_json(&e)))?;
    Ok(page)
}

/// Reads an answer (`body: false`: only its `body` is read) or its body (the rows under
/// `field`, `more`, `offset` and the meta; `[]` or `null` is an empty page).
struct PageSeed<'f> {
    field: &'f str,
    body: bool,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = RawPage<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.body {
            d.deserialize_any(self)
        } else {
            d.deserialize_map(self)
        }
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = RawPage<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.body {
            "a Withings body"
        } else {
            "a Withings answer"
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut page = RawPage::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match (self.body, key.as_ref()) {
                (false, "body") => {
                    page = map.next_value_seed(PageSeed { body: true, ..self })?;
                }
                (true, k) if k == self.field => page.rows = map.next_value_seed(RowsSeed)?,
                (true, "more") => {
                    page.meta.more = map.next_value_seed(read::<Option<bool>>())? == Some(true)
                }
                (true, "offset") => {
                    let raw: &'de RawValue = map.next_value()?;
                    page.meta.offset = offset(raw);
                }
                (true, "timezone") => page.meta.timezone = map.next_value_seed(read())?,
                (true, "updatetime") => page.meta.updatetime = map.next_value_seed(read())?,
                (true, "model") => page.meta.model = map.next_value_seed(read())?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
    otherwise_nothing!(seq null);
}

/// The offset as text to send back: a JSON string's content, or a number's digits as sent.
fn offset(raw: &RawValue) -> Option<Offset> {
    let text = raw.get().trim();
    match text {
        "null" | "false" | "true" | "" => None,
        t if t.starts_with('"') => serde_json::from_str::<String>(t)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Offset),
        t if t.starts_with('[') || t.starts_with('{') => None,
        t => Some(Offset(t.to_owned())),
    }
}

struct RowsSeed;

impl<'de> DeserializeSeed<'de> for RowsSeed {
    type Value = Vec<(Option<String>, &'de RawValue)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed {
    type Value = Vec<(Option<String>, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            rows.push((None, raw));
        }
        Ok(rows)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let raw = map.next_value::<&'de RawValue>()?;
            rows.push((Some(key.into_owned()), raw));
        }
        Ok(rows)
    }
    otherwise_nothing!(null bool i64 u64 str);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason<T>(rows: &[Result<T, RowError>]) -> String {
        rows[0].as_ref().map(|_| ()).unwrap_err().reason.clone()
    }

    /// What each row type says is wrong with a row, as its own decoder words it.
    #[test]
    fn a_bad_row_says_what_its_decoder_found() {
        use crate::data::{GetActivity, GetMeas, decode_page};
        let group = |measures: &str| {
            format!(
                r#"{{"status":0,"body":{{"measuregrps":[{{"grpid":1,"attrib":0,"date":1700000000,
                "category":1,"measures":{measures}}}]}}}}"#
            )
        };
        let lacks = decode_page::<GetMeas>(group(r#"[{"value":7,"type":1}]"#).as_bytes()).unwrap();
        assert_eq!(
            reason(&lacks.rows),
            "not a measure group: measure 0 lacks an integer `value`, `type` or `unit`"
        );
        let unit = decode_page::<GetMeas>(
            group(r#"[{"value":7,"type":1,"unit":99999999999}]"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            reason(&unit.rows),
            "not a measure group: measure 0 has unit 99999999999"
        );
        let day =
            decode_page::<GetActivity>(br#"{"status":0,"body":{"activities":[{"steps":1}]}}"#)
                .unwrap();
        assert_eq!(
            reason(&day.rows),
            "not an activity day: no `date` as YYYY-MM-DD"
        );
        // serde's own messages quote the value: they are never passed on.
        let quoted =
            decode_page::<GetMeas>(br#"{"status":0,"body":{"measuregrps":[{"grpid":"hunter2"}]}}"#)
                .unwrap();
        assert!(
            !reason(&quoted.rows).contains("hunter2"),
            "{}",
            reason(&quoted.rows)
        );
    }

    /// `getdevice` documents `model_id`; answers have been seen to say `modelid` (T11). A
    /// device carrying both is read, `model_id` first, as before rows were declared once.
    #[test]
    fn a_device_with_both_spellings_of_the_model_id_is_read() {
        use crate::data::{GetDevices, decode_page};
        let both = br#"{"status":0,"body":{"devices":[{"deviceid":"d1","model_id":7,"modelid":9},
            {"deviceid":"d2","modelid":9}]}}"#;
        let page = decode_page::<GetDevices>(both).unwrap();
        let ids: Vec<_> = page
            .rows
            .iter()
            .map(|r| r.as_ref().map(|d| d.model_id).ok())
            .collect();
        assert_eq!(ids, [Some(Some(7)), Some(Some(9))]);
    }

    #[derive(Debug, PartialEq)]
    struct Id(i64);

    impl Row for Id {
        type Key = i64;
        fn key(&self) -> Option<i64> {
            Some(self.0)
        }
        fn decode(raw: &str, _: Option<&str>, _: &mut Context) -> Result<Self, String> {
            #[derive(serde::Deserialize)]
            struct R {
                id: i64,
            }
            serde_json::from_str::<R>(raw)
                .map(|r| Id(r.id))
                .map_err(|_| "no integer `id`".into())
        }
    }

    fn page(json: &str) -> Page<Id> {
        decode(json.as_bytes(), "series", 1).unwrap()
    }

    #[test]
    fn more_and_offset_in_every_shape() {
        for (json, more, offset) in [
            (
                r#"{"status":0,"body":{"series":[],"more":1,"offset":17}}"#,
                true,
                Some("17"),
            ),
            (
                r#"{"status":0,"body":{"series":[],"more":0,"offset":0}}"#,
                false,
                Some("0"),
            ),
            (
                r#"{"status":0,"body":{"series":[],"more":true,"offset":"a b"}}"#,
                true,
                Some("a b"),
            ),
            (
                r#"{"status":0,"body":{"series":[],"more":false}}"#,
                false,
                None,
            ),
            (r#"{"status":0,"body":{"series":[]}}"#, false, None),
            (
                r#"{"status":0,"body":{"more":null,"offset":null}}"#,
                false,
                None,
            ),
            (
                r#"{"status":0,"body":{"more":"1","offset":1.50}}"#,
                true,
                Some("1.50"),
            ),
        ] {
            let p = page(json);
            assert_eq!(p.meta.more, more, "{json}");
            assert_eq!(p.meta.offset.as_ref().map(Offset::as_str), offset, "{json}");
        }
    }

    #[test]
    fn a_bad_row_is_its_own_error_and_duplicates_collapse() {
        let p = page(
            r#"{"status":0,"body":{"series":[{"id":1},{"id":"x"},{"id":2,"more":[1]},{"id":1,"v":2}]}}"#,
        );
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.rows[0], Ok(Id(1)));
        assert_eq!(p.rows[1].as_ref().unwrap_err().index, 1);
        assert_eq!(p.rows[2], Ok(Id(2)));
    }

    #[test]
    fn a_row_sent_as_an_empty_list_is_an_empty_object() {
        use crate::data::{IntradaySample, SleepSegment};
        let p = decode::<IntradaySample>(
            br#"{"status":0,"body":{"series":{"1700000000":[]}}}"#,
            "series",
            1,
        )
        .unwrap();
        let sample = p.rows[0].as_ref().unwrap();
        assert_eq!(sample.timestamp.as_second(), 1_700_000_000);
        assert_eq!(sample.steps, None);
        let p = decode::<SleepSegment>(
            b"{\"status\":0,\"body\":{\"series\":[[], [ ], [\n]]}}",
            "series",
            1,
        )
        .unwrap();
        assert_eq!(p.rows.len(), 3);
        for row in &p.rows {
            assert_eq!(
                row.as_ref().unwrap().start,
                None,
                "white space inside is still empty"
            );
        }
    }

    #[test]
    fn a_row_without_its_key_says_which() {
        use crate::data::Workout;
        let p = decode::<Workout>(
            br#"{"status":0,"body":{"series":[{"category":1}]}}"#,
            "series",
            1,
        )
        .unwrap();
        let e = p.rows[0].as_ref().unwrap_err();
        assert_eq!(e.reason, "not a workout: no `id`");
    }

    #[test]
    fn status_errors_come_from_the_status_table() {
        let e = decode::<Id>(br#"{"status":601,"body":{"wait_seconds":3}}"#, "series", 1)
            .err()
            .unwrap();
        assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
        let e = decode::<Id>(b"<html>", "series", 1).err().unwrap();
        assert!(matches!(e, Error::MalformedResponse { .. }), "{e:?}");
        // Status 0 not first: still read.
        let p = decode::<Id>(br#"{"body":{"series":[{"id":4}]},"status":0}"#, "series", 1).unwrap();
        assert_eq!(p.rows, vec![Ok(Id(4))]);
        let e = decode::<Id>(br#"{"status":0,"body":{"series":[{"id":4}"#, "series", 1)
            .err()
            .unwrap();
        assert!(matches!(e, Error::MalformedResponse { .. }), "{e:?}");
    }

    fn decode_all(bytes: &[u8]) {
        use crate::data::*;
        let _ = decode::<MeasureGroup>(bytes, "measuregrps", 1);
        let _ = decode::<ActivityDay>(bytes, "measuregrps", 1);
        let _ = decode::<IntradaySample>(bytes, "measuregrps", 1);
        let _ = decode::<Workout>(bytes, "measuregrps", 1);
        let _ = decode::<SleepSegment>(bytes, "measuregrps", 1);
        let _ = decode::<SleepSummary>(bytes, "measuregrps", 1);
        let _ = decode::<HeartRecord>(bytes, "measuregrps", 1);
        let _ = decode::<Device>(bytes, "measuregrps", 1);
        let _ = decode_body::<Goals>(bytes);
        let _ = decode_body::<EcgSignal>(bytes);
    }

    proptest::proptest! {
        /// No bytes make a decoder panic: any answer is rows, row errors or a typed error.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            decode_all(&bytes);
        }

        /// Answers made of Withings' own words in any order reach deep into the row readers.
        #[test]
        fn any_json_like_answer_decodes_without_panicking(
            tokens in proptest::collection::vec(proptest::sample::select(vec![
                "{", "}", "[", "]", ":", ",", "\"grpid\"", "\"measures\"", "\"value\"",
                "\"type\"", "\"unit\"", "\"date\"", "\"position\"", "\"id\"", "\"data\"",
                "\"series\"", "\"more\"", "\"offset\"", "\"timezone\"", "\"Europe/Paris\"",
                "\"hr\"", "\"ecg\"", "\"goals\"", "\"weight\"", "\"signal\"", "1", "-3", "40",
                "-2147483649", "1e400", "0.5", "99999999999999999999", "null", "false", "true",
                "\"x\"", "\"2023-10-20\"", "\"1700000000\"",
            ]), 0..60),
        ) {
            let mut text = String::from(r#"{"status":0,"body":{"measuregrps":["#);
            text.push_str(&tokens.concat());
            decode_all(text.as_bytes());
            text.push_str("]}}");
            decode_all(text.as_bytes());
            let body = format!(r#"{{"status":0,"body":{}}}"#, tokens.concat());
            decode_all(body.as_bytes());
        }
    }
}
