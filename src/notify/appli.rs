//! `appli`: the notification categories Withings documents.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::data::code::{code_or_name, parse_error};

/// A notification category (`appli` on the wire), as Withings documents them.
///
/// Codes from Withings' notification pages (developer guide, "notification content"): 2 is
/// temperature there; 58 is glucose (measure type 119) as the maintained peers read it
/// (aiowithings `GLUCOSE = 58`, open-wearables `applis.py`), Withings' own wording being
/// unconfirmed (withings-data.md §5). What each one means to fetch is
/// [`tower_withings::data::FetchPlan`](crate::data::FetchPlan).
///
/// A code this crate does not know parses as [`Appli::Unknown`], so a category Withings adds
/// later never breaks parsing. Two values are equal when their codes are: `Appli::Unknown(1)`
/// equals [`Appli::Weight`] (but [`Appli::from_code`] never makes the former).
///
/// ```
/// use tower_withings::notify::Appli;
///
/// assert_eq!(Appli::from_code(44), Appli::Sleep);
/// assert_eq!(Appli::Sleep.code(), 44);
/// assert_eq!(Appli::from_code(999), Appli::Unknown(999));
/// assert_eq!("weight".parse::<Appli>().unwrap(), Appli::Weight);
/// assert_eq!("46".parse::<Appli>().unwrap(), Appli::User);
/// assert_eq!(Appli::Weight.to_string(), "1");
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Appli {
    /// 1: weight and body composition (scales, `getmeas`).
    Weight,
    /// 2: temperature (`getmeas` types 12, 71, 73).
    Temperature,
    /// 4: heart rate, blood pressure (`getmeas`).
    Heart,
    /// 16: activity (steps, distance, calories: `getactivity`, `getintradayactivity`).
    Activity,
    /// 44: sleep (`v2/sleep`).
    Sleep,
    /// 46: user actions: `action=unlink`, `delete`, `update`.
    User,
    /// 50: bed in (sleep analyzers).
    BedIn,
    /// 51: bed out (sleep analyzers).
    BedOut,
    /// 52: inflate done (sleep analyzer calibration).
    Inflate,
    /// 53: a device with no account associated (cellular and SDK partners; needs a signature).
    NoAccount,
    /// 54: a new ECG (`v2/heart`).
    Ecg,
    /// 55: an ECG measurement failed.
    EcgFailed,
    /// 58: glucose (`getmeas` type 119).
    Glucose,
    /// A code this crate does not know yet.
    Unknown(u16),
}

impl Appli {
    /// Every category Withings documents (not [`Appli::Unknown`]).
    pub const ALL: [Appli; 13] = [
        Appli::Weight,
        Appli::Temperature,
        Appli::Heart,
        Appli::Activity,
        Appli::Sleep,
        Appli::User,
        Appli::BedIn,
        Appli::BedOut,
        Appli::Inflate,
        Appli::NoAccount,
        Appli::Ecg,
        Appli::EcgFailed,
        Appli::Glucose,
    ];

    /// The wire code, e.g. 44 for [`Appli::Sleep`].
    pub fn code(self) -> u16 {
        match self {
            Appli::Weight => 1,
            Appli::Temperature => 2,
            Appli::Heart => 4,
            Appli::Activity => 16,
            Appli::Sleep => 44,
            Appli::User => 46,
            Appli::BedIn => 50,
            Appli::BedOut => 51,
            Appli::Inflate => 52,
            Appli::NoAccount => 53,
            Appli::Ecg => 54,
            Appli::EcgFailed => 55,
            Appli::Glucose => 58,
            Appli::Unknown(code) => code,
        }
    }

    /// The category for a wire code; unknown codes are kept as [`Appli::Unknown`].
    pub fn from_code(code: u16) -> Appli {
        Appli::ALL
            .into_iter()
            .find(|a| a.code() == code)
            .unwrap_or(Appli::Unknown(code))
    }

    /// A short lowercase name (`weight`, `sleep`, `bed_in`, …; `unknown` for unknown codes).
    pub fn name(self) -> &'static str {
        match Appli::from_code(self.code()) {
            Appli::Weight => "weight",
            Appli::Temperature => "temperature",
            Appli::Heart => "heart",
            Appli::Activity => "activity",
            Appli::Sleep => "sleep",
            Appli::User => "user",
            Appli::BedIn => "bed_in",
            Appli::BedOut => "bed_out",
            Appli::Inflate => "inflate",
            Appli::NoAccount => "no_account",
            Appli::Ecg => "ecg",
            Appli::EcgFailed => "ecg_failed",
            Appli::Glucose => "glucose",
            Appli::Unknown(_) => "unknown",
        }
    }
}

impl PartialEq for Appli {
    fn eq(&self, other: &Self) -> bool {
        self.code() == other.code()
    }
}

impl Eq for Appli {}

impl Hash for Appli {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

impl PartialOrd for Appli {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Appli {
    fn cmp(&self, other: &Self) -> Ordering {
        self.code().cmp(&other.code())
    }
}

impl From<u16> for Appli {
    fn from(code: u16) -> Self {
        Appli::from_code(code)
    }
}

impl From<Appli> for u16 {
    fn from(appli: Appli) -> Self {
        appli.code()
    }
}

/// The wire code, as sent in forms.
impl fmt::Display for Appli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.code().fmt(f)
    }
}

parse_error! {
    /// Why a string is not an [`Appli`].
    ParseAppliError: "is not a notification appli: use a code (1, 2, 4, 16, 44, 46, 50, 51, 52, 53, 54, 55, 58) or a name (weight, temperature, heart, activity, sleep, user, bed_in, bed_out, inflate, no_account, ecg, ecg_failed, glucose)"
}

/// A code (`44`, any number up to 65535) or a name (`sleep`, case-insensitive).
impl FromStr for Appli {
    type Err = ParseAppliError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = Appli::ALL.into_iter().map(|a| (a, a.name()));
        code_or_name(s, Appli::from_code, named).ok_or_else(|| ParseAppliError::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        for appli in Appli::ALL {
            assert_eq!(Appli::from_code(appli.code()), appli);
            assert_eq!(appli.name().parse::<Appli>().unwrap(), appli);
            assert_ne!(appli.name(), "unknown");
        }
        for code in 0..=u16::MAX {
            assert_eq!(Appli::from_code(code).code(), code);
        }
        assert_eq!(Appli::Unknown(1), Appli::Weight);
        assert_eq!(Appli::Unknown(1).name(), "weight");
        assert!("nope".parse::<Appli>().is_err());
        // Withings' table: 2 is temperature, 58 glucose (withings-data.md §5).
        assert_eq!(Appli::from_code(2), Appli::Temperature);
        assert_eq!(Appli::from_code(58), Appli::Glucose);
        assert_eq!(Appli::Glucose.name(), "glucose");
        assert!("70000".parse::<Appli>().is_err());
    }
}
