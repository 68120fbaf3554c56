//! Field decoders that accept what Withings actually sends, not only what its document says.
//!
//! Integers have come as `false`, strings as `null`, objects as `[]` (withings-data.md T11):
//! each reader turns the unexpected shape into "no value" instead of failing the row. A struct
//! declared with [`lenient!`] reads every field through its type's [`Field`] reader.

use std::fmt;
use std::marker::PhantomData;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::time::{LocalDay, Zone, day, instant};

/// How a field of a [`lenient!`] struct is read: the unexpected shapes are its `None` (or
/// empty) value, never an error.
pub(crate) trait Field: Sized {
    /// Reads the field's value.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// The `deserialize_with` of every [`lenient!`] field.
pub(crate) fn field<'de, D: Deserializer<'de>, T: Field>(d: D) -> Result<T, D::Error> {
    T::read(d)
}

/// A [`Field`] reader as a seed, for values read by hand from a map.
pub(crate) fn read<T: Field>() -> Read<T> {
    Read(PhantomData)
}

/// See [`read`].
pub(crate) struct Read<T>(PhantomData<T>);

impl<'de, T: Field> DeserializeSeed<'de> for Read<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::read(d)
    }
}

/// Declares a struct read leniently: each field through its type's [`Field`] reader, absent
/// fields `Default`, unknown fields ignored. `Option` of the struct is then a field too: a
/// nested object, `None` for `[]`, `null` or `false` (`goals: []`, T11).
///
/// A field may end in a mode: `= required` (absent, or unreadable by its [`Field`] reader,
/// fails the whole struct: a row's identity) or `= skip` (not read: its `Default`, filled in
/// by the row's decoder from the page or the row's key). Serde attributes pass through
/// (`rename`, `alias` for Withings' two spellings, `flatten` for a group of flat wire fields
/// such as a row's [`Source`](super::Source)).
macro_rules! lenient {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($fields:tt)* }
    ) => {
        $crate::data::lenient::lenient!(@fields [$(#[$meta])* $vis struct $name] [] $($fields)*);
    };
    (@fields $head:tt [$($done:tt)*]
        $(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty = required, $($rest:tt)*
    ) => {
        $crate::data::lenient::lenient!(@fields $head [$($done)*
            $(#[$fmeta])*
            #[serde(deserialize_with = "crate::data::lenient::field")]
            $fvis $field: $ty,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*]
        $(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty = skip, $($rest:tt)*
    ) => {
        $crate::data::lenient::lenient!(@fields $head [$($done)*
            $(#[$fmeta])*
            #[serde(skip)]
            $fvis $field: $ty,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*]
        $(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty, $($rest:tt)*
    ) => {
        $crate::data::lenient::lenient!(@fields $head [$($done)*
            $(#[$fmeta])*
            #[serde(default, deserialize_with = "crate::data::lenient::field")]
            $fvis $field: $ty,
        ] $($rest)*);
    };
    (@fields [$(#[$meta:meta])* $vis:vis struct $name:ident] [$($done:tt)*]) => {
        $(#[$meta])*
        #[derive(::serde::Deserialize)]
        $vis struct $name { $($done)* }

        impl $crate::data::lenient::Field for Option<$name> {
            fn read<'de, D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::data::lenient::object(d)
            }
        }
    };
}
pub(crate) use lenient;

/// The `visit_*` methods of a lenient visitor for the shapes it does not take (`bool`, `i64`,
/// `u64`, `f64`, `str`, `null`, `seq`, `map`): each gives the value's `Default`, what it skips
/// read to its end.
macro_rules! otherwise_nothing {
    ($($shape:ident)+) => { $( $crate::data::lenient::otherwise_nothing!(@ $shape); )+ };
    (@bool) => { $crate::data::lenient::otherwise_nothing!(@scalar visit_bool bool); };
    (@i64) => { $crate::data::lenient::otherwise_nothing!(@scalar visit_i64 i64); };
    (@u64) => { $crate::data::lenient::otherwise_nothing!(@scalar visit_u64 u64); };
    (@f64) => { $crate::data::lenient::otherwise_nothing!(@scalar visit_f64 f64); };
    (@str) => { $crate::data::lenient::otherwise_nothing!(@scalar visit_str &str); };
    (@scalar $visit:ident $ty:ty) => {
        fn $visit<E>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (@null) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_some<D: ::serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
    (@seq) => {
        fn visit_seq<A>(self, mut seq: A) -> Result<Self::Value, A::Error>
        where
            A: ::serde::de::SeqAccess<'de>,
        {
            while seq.next_element::<::serde::de::IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (@map) => {
        fn visit_map<A>(self, mut map: A) -> Result<Self::Value, A::Error>
        where
            A: ::serde::de::MapAccess<'de>,
        {
            while map
                .next_entry::<::serde::de::IgnoredAny, ::serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Default::default())
        }
    };
}
pub(crate) use otherwise_nothing;

/// A value a JSON scalar can stand for; a scalar of the wrong kind is `None`. `Option` of such
/// a value is a [`Field`].
pub(crate) trait FromScalar: Sized {
    /// The value `s` stands for, if any.
    fn from_scalar(s: Scalar) -> Option<Self>;
}

impl<T: FromScalar> Field for Option<T> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(T::from_scalar(d.deserialize_any(ScalarVisitor)?))
    }
}

/// An integer, an integral float, or a decimal string; not `true`/`false`.
impl FromScalar for i64 {
    fn from_scalar(s: Scalar) -> Option<i64> {
        s.number()?.as_int()
    }
}

/// A number, or a numeric string (`true`/`false` are 1 and 0).
impl FromScalar for f64 {
    fn from_scalar(s: Scalar) -> Option<f64> {
        s.number().map(Number::as_float)
    }
}

/// A string, or a number written out; not `true`/`false`.
impl FromScalar for String {
    fn from_scalar(s: Scalar) -> Option<String> {
        match s {
            Scalar::Str(s) => Some(s),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Big(u) => Some(u.to_string()),
            Scalar::Float(f) => Some(f.to_string()),
            Scalar::Bool(_) | Scalar::Nothing => None,
        }
    }
}

/// `true`/`false`, or an integer (non-zero is true).
impl FromScalar for bool {
    fn from_scalar(s: Scalar) -> Option<bool> {
        match s.number()? {
            Number::Bool(b) => Some(b),
            n => n.as_int().map(|i| i != 0),
        }
    }
}

/// Unix seconds.
impl FromScalar for Timestamp {
    fn from_scalar(s: Scalar) -> Option<Timestamp> {
        i64::from_scalar(s).and_then(instant)
    }
}

/// A `YYYY-MM-DD` day.
impl FromScalar for Date {
    fn from_scalar(s: Scalar) -> Option<Date> {
        day(&String::from_scalar(s)?)
    }
}

/// Marks a reason a decoder words itself, so that [`read_row`](super::page::read_row) passes it
/// on (serde's own messages quote the value and are not passed on).
pub(crate) const REASON: &str = "row reason: ";

/// A row's decoder's own reason for failing it (it must not quote the row's content).
pub(crate) fn reason<E: de::Error>(why: fmt::Arguments<'_>) -> E {
    E::custom(format_args!("{REASON}{why}"))
}

/// A required field (`= required` in [`lenient!`]): a value of another shape fails the struct.
impl<T: FromScalar> Field for T {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::read(d)?
            .ok_or_else(|| de::Error::custom("a required field of the wrong shape"))
    }
}

/// A zone name, not empty; looked up by the page ([`Context::zone`](super::page::Context::zone)),
/// which knows the page's zone and each name's lookup.
impl FromScalar for Zone {
    fn from_scalar(s: Scalar) -> Option<Zone> {
        String::from_scalar(s)
            .filter(|n| !n.is_empty())
            .map(Zone::named)
    }
}

/// The flat `date` and `timezone` of a v2 row, as one `#[serde(flatten)]` field.
#[derive(serde::Deserialize)]
struct DayFields {
    #[serde(default, deserialize_with = "field")]
    date: Option<Date>,
    #[serde(default, deserialize_with = "field")]
    timezone: Option<Zone>,
}

/// A row's local day (flattened): `None` without a `YYYY-MM-DD` `date`.
impl Field for Option<LocalDay> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = DayFields::deserialize(d)?;
        Ok(f.date.map(|date| LocalDay {
            date,
            zone: f.timezone,
        }))
    }
}

/// A row's local day (flattened, required): no `date` fails the row.
impl Field for LocalDay {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<LocalDay>::read(d)?.ok_or_else(|| reason(format_args!("no `date` as YYYY-MM-DD")))
    }
}

/// A nested object's fields (`data` of a workout or a summary): all `None` for `[]`, `null`,
/// `false`.
pub(crate) fn object_or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default,
    Option<T>: Field,
{
    Ok(Option::<T>::read(d)?.unwrap_or_default())
}

/// Integers (an ECG signal); see [`list`].
impl Field for Vec<i64> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        list(d)
    }
}

/// One JSON value as sent, when it is a scalar.
#[derive(Default)]
pub(crate) enum Scalar {
    Int(i64),
    /// An integer above `i64::MAX`.
    Big(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// `null`, an array or an object.
    #[default]
    Nothing,
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    /// The number it is or spells (a string is trimmed, then read as an integer or a float).
    fn number(self) -> Option<Number> {
        match self {
            Scalar::Int(i) => Some(Number::Int(i)),
            Scalar::Float(f) => f.is_finite().then_some(Number::Float(f)),
            Scalar::Bool(b) => Some(Number::Bool(b)),
            Scalar::Str(s) => {
                let s = s.trim();
                match s.parse::<i64>() {
                    Ok(i) => Some(Number::Int(i)),
                    Err(_) => s
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Number::Float),
                }
            }
            Scalar::Big(_) | Scalar::Nothing => None,
        }
    }
}

impl Number {
    fn as_int(self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(i),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }

    fn as_float(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
            Number::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::Big(v), Scalar::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    otherwise_nothing!(null seq map);
}

/// An object decoded as `T`, or `None` for `[]`, `null`, `false` (`goals: []`, T11).
pub(crate) fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::Deserialize<'de>,
{
    struct Obj<T>(PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for Obj<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        otherwise_nothing!(seq null bool i64 u64 f64 str);
    }
    d.deserialize_any(Obj(PhantomData))
}

/// A list of `T`, or empty for `null`/`false`/`{}`; elements that do not decode are skipped.
pub(crate) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned,
{
    struct Seq;
    impl<'de> Visitor<'de> for Seq {
        type Value = Option<Vec<Box<serde_json::value::RawValue>>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(Some(out))
        }
        otherwise_nothing!(map null bool i64 u64 f64 str);
    }
    let raw = d.deserialize_any(Seq).map_err(de::Error::custom)?;
    Ok(raw
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_str(r.get()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    lenient! {
        struct Row {
            i: Option<i64>,
            s: Option<String>,
            f: Option<f64>,
            b: Option<bool>,
        }
    }

    fn row(json: &str) -> Row {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_shapes_withings_sends_are_accepted() {
        let r = row(r#"{"i":false,"s":null,"f":[],"b":1}"#);
        assert_eq!((r.i, r.s, r.f, r.b), (None, None, None, Some(true)));
        let r = row(r#"{"i":"12","s":42,"f":1028.559,"b":false}"#);
        assert_eq!(r.i, Some(12));
        assert_eq!(r.s.as_deref(), Some("42"));
        assert_eq!(r.f, Some(1028.559));
        assert_eq!(r.b, Some(false));
        let r = row(r#"{"i":{"a":[1]},"s":{"x":1},"f":"n/a","b":null,"extra":[1,2]}"#);
        assert_eq!((r.i, r.s, r.f, r.b), (None, None, None, None));
        let r = row(r#"{}"#);
        assert_eq!((r.i, r.s), (None, None));
        let r = row(r#"{"i":" 12.0 ","s":18446744073709551615,"f":true,"b":"0"}"#);
        assert_eq!(r.i, Some(12));
        assert_eq!(r.s.as_deref(), Some("18446744073709551615"));
        assert_eq!((r.f, r.b), (Some(1.0), Some(false)));
        let r = row(r#"{"i":18446744073709551615,"s":" x ","f":"1e400","b":0.5}"#);
        assert_eq!(
            (r.i, r.s.as_deref(), r.f, r.b),
            (None, Some(" x "), None, None)
        );
    }
}
