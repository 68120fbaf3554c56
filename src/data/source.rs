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
        /// `modelid`, which some answers spell `model_id` (read when `modelid` is absent).
        pub modelid: Option<i64>,
        /// `model_id` as it was read; folded into `modelid` by [`Field::read`], so always
        /// `None` in a row.
        #[serde(rename = "model_id")]
        spelled_model_id: Option<i64>,
    }
}

/// Read from the row's own flat fields (a `#[serde(flatten)]` field).
impl Field for Source {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut source: Source = serde::Deserialize::deserialize(d)?;
        let spelled = source.spelled_model_id.take();
        source.modelid = source.modelid.or(spelled);
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{GetActivity, GetMeas, decode_page};

    /// Withings' documents spell it `model_id` and its answers `modelid` (withings-data.md
    /// T11): a row carrying both is read, `modelid` first, never lost as malformed.
    #[test]
    fn a_row_with_both_spellings_of_the_model_id_is_read() {
        let activity = br#"{"status":0,"body":{"activities":[{"date":"2023-10-20","steps":1,
            "modelid":1055,"model_id":7}]}}"#;
        let page = decode_page::<GetActivity>(activity).unwrap();
        let day = page.rows[0].as_ref().expect("the row is read");
        assert_eq!(day.source.modelid, Some(1055));

        let meas = br#"{"status":0,"body":{"updatetime":1,"timezone":"Europe/Paris","measuregrps":[
            {"grpid":1,"attrib":0,"date":1700000000,"created":1700000000,"category":1,
             "model_id":6,"measures":[{"value":70000,"type":1,"unit":-3}]}]}}"#;
        let page = decode_page::<GetMeas>(meas).unwrap();
        let group = page.rows[0].as_ref().expect("the group is read");
        assert_eq!(group.source.modelid, Some(6), "model_id alone is read too");
    }
}
