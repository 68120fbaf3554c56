//! Withings' integer codes as enums that never fail: every one has an `Unknown(n)` arm.
//!
//! Unknown measure types, attribs and sleep states crashed peer clients for years
//! (withings-data.md T8); here a code this crate has not heard of is kept, compared and
//! printed like any other.

/// What every code enum can do: go to and from its wire integer.
pub trait Code: Copy + Eq + std::hash::Hash + std::fmt::Debug {
    /// The enum for a wire code; unknown codes are kept as `Unknown(code)`.
    fn from_code(code: i64) -> Self;
    /// The wire code.
    fn code(self) -> i64;
}

/// Declares a code enum: variants with their codes and short names, plus `Unknown(i64)`.
macro_rules! codes {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $label:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code this crate does not know yet, kept as sent.
            Unknown(i64),
        }

        impl $name {
            /// Every known value, in code order of the table.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The wire code.
            pub const fn code(self) -> i64 {
                match self {
                    $( $name::$variant => $code, )+
                    $name::Unknown(code) => code,
                }
            }

            /// The value for a wire code; unknown codes are kept as `Unknown(code)`.
            pub const fn from_code(code: i64) -> Self {
                match code {
                    $( $code => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }

            /// A short lowercase name (`unknown` for unknown codes).
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        $crate::data::code::code_traits!($name);
    };
}

/// What every code enum has besides its table: [`Code`], `Display` (`unknown (n)` for
/// unknown codes), serde as the bare integer, and a lenient field reader. The enum has
/// `code`, `from_code` and `name`.
macro_rules! code_traits {
    ($name:ident) => {
        impl $crate::data::code::Code for $name {
            fn from_code(code: i64) -> Self {
                $name::from_code(code)
            }
            fn code(self) -> i64 {
                $name::code(self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self {
                    $name::Unknown(code) => write!(f, "unknown ({code})"),
                    known => f.write_str(known.name()),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_i64(self.code())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match <Option<i64> as $crate::data::lenient::Field>::read(d)? {
                    Some(code) => Ok($name::from_code(code)),
                    None => Err(::serde::de::Error::custom("expected an integer code")),
                }
            }
        }

        /// An integer code in any lenient shape.
        impl $crate::data::lenient::FromScalar for $name {
            fn from_scalar(s: $crate::data::lenient::Scalar) -> Option<Self> {
                <i64 as $crate::data::lenient::FromScalar>::from_scalar(s).map($name::from_code)
            }
        }
    };
}
pub(crate) use code_traits;

/// What `FromStr` of a code enum reads: a code (any value of `C`, unknown ones kept) or one
/// of the `named` values' names, case-insensitive; white space around it is ignored.
pub(crate) fn code_or_name<C: std::str::FromStr, T>(
    s: &str,
    from_code: fn(C) -> T,
    named: impl IntoIterator<Item = (T, &'static str)>,
) -> Option<T> {
    let s = s.trim();
    if let Ok(code) = s.parse::<C>() {
        return Some(from_code(code));
    }
    named
        .into_iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(s))
        .map(|(value, _)| value)
}

/// Declares why a string is not a code enum's value: a newtype on the text (at most 200
/// characters), whose message is the text, quoted, then `$message` (what to write instead).
macro_rules! parse_error {
    ($(#[$meta:meta])* $name:ident: $message:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            fn new(text: &str) -> Self {
                $name($crate::error::shorten(text.trim()))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{:?} {}", self.0, $message)
            }
        }

        impl ::std::error::Error for $name {}
    };
}
pub(crate) use parse_error;

codes! {
    /// How a measure group was attributed to the user (`attrib`, withings-data.md §4.3).
    ///
    /// Attrib 1 groups may belong to another person on the same scale: keep them, but let
    /// the user confirm them before trusting them (HA#102562 lost weights by dropping them).
    ///
    /// ```
    /// use tower_withings::data::Attrib;
    ///
    /// assert_eq!(Attrib::from_code(1), Attrib::Ambiguous);
    /// assert_eq!(Attrib::from_code(10000), Attrib::Unknown(10000));
    /// assert!(Attrib::from_code(8).is_users());
    /// ```
    Attrib {
        /// 0: from a device, this user's without doubt.
        Device = 0 => "device",
        /// 1: from a device, maybe another user's (confirm via `confirmuser`).
        Ambiguous = 1 => "ambiguous",
        /// 2: entered manually.
        Manual = 2 => "manual",
        /// 4: entered manually at account creation.
        ManualAtCreation = 4 => "manual_at_creation",
        /// 5: blood pressure monitor, automatic (best of several readings).
        BpmAuto = 5 => "bpm_auto",
        /// 7: confirmed by the user.
        Confirmed = 7 => "confirmed",
        /// 8: as 0 (from a device, this user's).
        DeviceAlt = 8 => "device_alt",
        /// 15: guided measure (Nerve Health).
        Guided = 15 => "guided",
        /// 17: guided Nerve Health Score and ESC (newer document).
        GuidedEsc = 17 => "guided_esc",
    }
}

impl Attrib {
    /// True when the group is surely this user's (0, 2, 4, 5, 7, 8, 15, 17). Unknown codes and
    /// 1 (ambiguous) are not.
    pub fn is_users(self) -> bool {
        !matches!(self, Attrib::Ambiguous | Attrib::Unknown(_))
    }
}

codes! {
    /// A measure group's `category` (withings-data.md §4.4).
    Category {
        /// 1: a real measure.
        Real = 1 => "real",
        /// 2: a user objective (a goal).
        Goal = 2 => "goal",
    }
}

codes! {
    /// A sleep segment's `state` (withings-data.md §4.5; 5 met in the wild).
    SleepState {
        /// 0: awake.
        Awake = 0 => "awake",
        /// 1: light sleep.
        Light = 1 => "light",
        /// 2: deep sleep.
        Deep = 2 => "deep",
        /// 3: REM sleep.
        Rem = 3 => "rem",
        /// 4: entered manually.
        Manual = 4 => "manual",
        /// 5: unspecified.
        Unspecified = 5 => "unspecified",
        /// 15: out of bed (special plans).
        OutOfBed = 15 => "out_of_bed",
    }
}

codes! {
    /// The device family of a sleep record (`model` on sleep answers).
    SleepModel {
        /// 16: an activity tracker or watch.
        Tracker = 16 => "tracker",
        /// 32: a sleep monitor (Sleep Analyzer).
        SleepMonitor = 32 => "sleep_monitor",
    }
}

codes! {
    /// The device of a heart record (`model` on `heart list`; 93 from a peer's enum).
    HeartModel {
        /// 44: BPM Core.
        BpmCore = 44 => "bpm_core",
        /// 91: Move ECG.
        MoveEcg = 91 => "move_ecg",
        /// 93: ScanWatch.
        ScanWatch = 93 => "scanwatch",
    }
}

codes! {
    /// The atrial fibrillation result of an ECG (`ecg.afib`).
    Afib {
        /// 0: negative.
        Negative = 0 => "negative",
        /// 1: positive.
        Positive = 1 => "positive",
        /// 2: inconclusive.
        Inconclusive = 2 => "inconclusive",
    }
}

codes! {
    /// The kind of a workout (`category` on `getworkouts`, Withings' workout table).
    WorkoutCategory {
        /// 1.
        Walk = 1 => "walk",
        /// 2.
        Run = 2 => "run",
        /// 3.
        Hiking = 3 => "hiking",
        /// 4.
        Skating = 4 => "skating",
        /// 5.
        Bmx = 5 => "bmx",
        /// 6.
        Bicycling = 6 => "bicycling",
        /// 7.
        Swimming = 7 => "swimming",
        /// 8.
        Surfing = 8 => "surfing",
        /// 9.
        Kitesurfing = 9 => "kitesurfing",
        /// 10.
        Windsurfing = 10 => "windsurfing",
        /// 11.
        Bodyboard = 11 => "bodyboard",
        /// 12.
        Tennis = 12 => "tennis",
        /// 13.
        TableTennis = 13 => "table_tennis",
        /// 14.
        Squash = 14 => "squash",
        /// 15.
        Badminton = 15 => "badminton",
        /// 16.
        LiftWeights = 16 => "lift_weights",
        /// 17.
        Calisthenics = 17 => "calisthenics",
        /// 18.
        Elliptical = 18 => "elliptical",
        /// 19.
        Pilates = 19 => "pilates",
        /// 20.
        Basketball = 20 => "basketball",
        /// 21.
        Soccer = 21 => "soccer",
        /// 22.
        Football = 22 => "football",
        /// 23.
        Rugby = 23 => "rugby",
        /// 24.
        Volleyball = 24 => "volleyball",
        /// 25.
        WaterPolo = 25 => "water_polo",
        /// 26.
        HorseRiding = 26 => "horse_riding",
        /// 27.
        Golf = 27 => "golf",
        /// 28.
        Yoga = 28 => "yoga",
        /// 29.
        Dancing = 29 => "dancing",
        /// 30.
        Boxing = 30 => "boxing",
        /// 31.
        Fencing = 31 => "fencing",
        /// 32.
        Wrestling = 32 => "wrestling",
        /// 33.
        MartialArts = 33 => "martial_arts",
        /// 34.
        Skiing = 34 => "skiing",
        /// 35.
        Snowboarding = 35 => "snowboarding",
        /// 36.
        Other = 36 => "other",
        /// 128.
        NoActivity = 128 => "no_activity",
        /// 187.
        Rowing = 187 => "rowing",
        /// 188.
        Zumba = 188 => "zumba",
        /// 191.
        Baseball = 191 => "baseball",
        /// 192.
        Handball = 192 => "handball",
        /// 193.
        Hockey = 193 => "hockey",
        /// 194.
        IceHockey = 194 => "ice_hockey",
        /// 195.
        Climbing = 195 => "climbing",
        /// 196.
        IceSkating = 196 => "ice_skating",
        /// 272.
        MultiSport = 272 => "multi_sport",
        /// 306.
        IndoorWalk = 306 => "indoor_walk",
        /// 307.
        IndoorRun = 307 => "indoor_run",
        /// 308.
        IndoorCycling = 308 => "indoor_cycling",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_codes_survive() {
        for a in Attrib::ALL {
            assert_eq!(Attrib::from_code(a.code()), *a);
        }
        for code in [10, 10000, -1] {
            assert_eq!(Attrib::from_code(code), Attrib::Unknown(code));
            assert_eq!(Attrib::from_code(code).code(), code);
        }
        assert_eq!(SleepState::from_code(5), SleepState::Unspecified);
        assert_eq!(SleepState::from_code(6), SleepState::Unknown(6));
        assert_eq!(WorkoutCategory::from_code(559).to_string(), "unknown (559)");
        let s: SleepState = serde_json::from_str("15").unwrap();
        assert_eq!(s, SleepState::OutOfBed);
        assert_eq!(
            serde_json::to_string(&Attrib::Unknown(17_000)).unwrap(),
            "17000"
        );
        assert!(serde_json::from_str::<Attrib>("false").is_err());
    }
}
