//! Where a row came from: the device, or the app, that recorded it.

use super::lenient::{Field, lenient};

lenient! {
    /// The device (or app) a row came from. Withings writes it flat beside the row's data
    /// (`deviceid`, `hash_deviceid`, `brand`, `is_tracker`, `model`, `modelid`); each field is
    /// `None` where that row kind does not carry it (a measure group has no `brand`, a sleep
    /// segment no `deviceid`).
    ///
    /// ```
    /// use tower_withings::data::{GetActivity, decode_page};
    ///
    /// let answer = br#"{"status":0,"body":{"activities":[{"date":"2023-10-20","steps":1209,
    ///     "deviceid":null,"brand":18,"model":"GoogleFit tracker","model_id":1055,"is_tracker":false}]}}"#;
    /// let page = decode_page::<GetActivity>(answer).unwrap();
    /// let source = &page.rows[0].as_ref().unwrap().source;
    /// assert_eq!((source.brand, source.modelid, source.deviceid.as_deref()), (Some(18), Some(1055), None));
    /// ```
    #[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub struct Source {
        /// `deviceid` (null for manual entries, external sources and some ScanWatch 2 rows).
        pub deviceid: Option<String>,
        /// `hash_deviceid`.
        pub hash_deviceid: Option<String>,
        /// `brand`: 1 Withings, 18 an external source (e.g. Google Fit).
        pub brand: Option<i64>,
        /// `is_tracker`.
        pub is_tracker: Option<bool>,
        /// `model`: the model's name ("Body+", "ScanWatch"; may be empty).
        pub model: Option<String>,
        /// `modelid`, which some answers spell `model_id` (either is read; a row with both
        /// spellings is a malformed row).
        #[serde(alias = "model_id")]
        pub modelid: Option<i64>,
    }
}

/// Read from the row's own flat fields (a `#[serde(flatten)]` field).
impl Field for Source {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}
