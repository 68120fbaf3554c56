//! The one table of measure types: code, name, SI unit and kind, from Withings' OpenAPI table
//! (withings-data.md §4.2), with the peers' mistakes left out.
//!
//! Names and units are never written anywhere else: [`MeasureType::name`],
//! [`MeasureType::unit`] and [`MeasureType::kind`] all read [`MeasureType::TABLE`].
//! Checked against the document where peers went wrong: QT interval is 137 (not 138),
//! atrial fibrillation from ECG is 130 (139 is the PPG result), 170 is visceral fat (168 is
//! extracellular water), hydration (77) is in kg, and 130/139 are classifications with no unit.

use super::code::{code_or_name, parse_error};

/// What a measure type's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MeasureKind {
    /// A quantity in the table's unit (`None` where Withings gives no unit: scores, counts).
    Quantity,
    /// A class code, not a quantity (130, 139: the AFib results): never add or average it.
    Classification,
}

/// One row of the measure table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureInfo {
    /// The type.
    pub measure_type: MeasureType,
    /// Short lowercase name (`weight`, `fat_ratio`, …).
    pub name: &'static str,
    /// SI unit symbol of `value × 10^unit`, where there is one.
    pub unit: Option<&'static str>,
    /// Quantity or classification.
    pub kind: MeasureKind,
}

macro_rules! measure_types {
    ( $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $name:literal, $unit:expr, $kind:ident; )+ ) => {
        /// A measure type (`type` in a group's `measures`, `meastype(s)` in `getmeas`).
        ///
        /// ```
        /// use tower_withings::data::{MeasureKind, MeasureType};
        ///
        /// assert_eq!(MeasureType::from_code(1), MeasureType::Weight);
        /// assert_eq!(MeasureType::Weight.unit(), Some("kg"));
        /// assert_eq!(MeasureType::from_code(137), MeasureType::QtInterval);
        /// assert_eq!(MeasureType::from_code(170).name(), "visceral_fat");
        /// assert_eq!(MeasureType::from_code(139).kind(), MeasureKind::Classification);
        /// assert_eq!(MeasureType::from_code(9999), MeasureType::Unknown(9999));
        /// assert_eq!("fat_ratio".parse::<MeasureType>().unwrap(), MeasureType::FatRatio);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum MeasureType {
            $( $(#[$vmeta])* $variant, )+
            /// A code this crate does not know yet, kept as sent.
            Unknown(i64),
        }

        impl MeasureType {
            /// The table: one row per known type, in code order.
            pub const TABLE: &'static [MeasureInfo] = &[
                $( MeasureInfo {
                    measure_type: MeasureType::$variant,
                    name: $name,
                    unit: $unit,
                    kind: MeasureKind::$kind,
                }, )+
            ];

            /// The wire code.
            pub const fn code(self) -> i64 {
                match self {
                    $( MeasureType::$variant => $code, )+
                    MeasureType::Unknown(code) => code,
                }
            }

            /// The type for a wire code; unknown codes are kept as [`MeasureType::Unknown`].
            pub const fn from_code(code: i64) -> Self {
                match code {
                    $( $code => MeasureType::$variant, )+
                    other => MeasureType::Unknown(other),
                }
            }
        }
    };
}

measure_types! {
    /// 1: weight.
    Weight = 1 => "weight", Some("kg"), Quantity;
    /// 4: height.
    Height = 4 => "height", Some("m"), Quantity;
    /// 5: fat-free mass.
    FatFreeMass = 5 => "fat_free_mass", Some("kg"), Quantity;
    /// 6: fat ratio.
    FatRatio = 6 => "fat_ratio", Some("%"), Quantity;
    /// 8: fat mass.
    FatMass = 8 => "fat_mass", Some("kg"), Quantity;
    /// 9: diastolic blood pressure.
    DiastolicBloodPressure = 9 => "diastolic_blood_pressure", Some("mmHg"), Quantity;
    /// 10: systolic blood pressure.
    SystolicBloodPressure = 10 => "systolic_blood_pressure", Some("mmHg"), Quantity;
    /// 11: heart pulse.
    HeartPulse = 11 => "heart_pulse", Some("bpm"), Quantity;
    /// 12: temperature.
    Temperature = 12 => "temperature", Some("°C"), Quantity;
    /// 54: SpO2.
    Spo2 = 54 => "spo2", Some("%"), Quantity;
    /// 71: body temperature.
    BodyTemperature = 71 => "body_temperature", Some("°C"), Quantity;
    /// 73: skin temperature.
    SkinTemperature = 73 => "skin_temperature", Some("°C"), Quantity;
    /// 76: muscle mass.
    MuscleMass = 76 => "muscle_mass", Some("kg"), Quantity;
    /// 77: hydration (a mass, not a ratio).
    Hydration = 77 => "hydration", Some("kg"), Quantity;
    /// 88: bone mass.
    BoneMass = 88 => "bone_mass", Some("kg"), Quantity;
    /// 91: pulse wave velocity.
    PulseWaveVelocity = 91 => "pulse_wave_velocity", Some("m/s"), Quantity;
    /// 119: glucose (not in the OpenAPI getmeas table; Withings' notification page).
    Glucose = 119 => "glucose", Some("mg/dL"), Quantity;
    /// 123: VO2 max.
    Vo2Max = 123 => "vo2_max", Some("ml/min/kg"), Quantity;
    /// 130: atrial fibrillation result from ECG (a class code).
    AfibEcg = 130 => "afib_ecg", None, Classification;
    /// 135: QRS interval (unit OPEN; milliseconds by third parties).
    QrsInterval = 135 => "qrs_interval", None, Quantity;
    /// 136: PR interval (unit OPEN).
    PrInterval = 136 => "pr_interval", None, Quantity;
    /// 137: QT interval (unit OPEN).
    QtInterval = 137 => "qt_interval", None, Quantity;
    /// 138: corrected QT interval (unit OPEN).
    CorrectedQtInterval = 138 => "corrected_qt_interval", None, Quantity;
    /// 139: atrial fibrillation result from PPG (a class code).
    AfibPpg = 139 => "afib_ppg", None, Classification;
    /// 155: vascular age.
    VascularAge = 155 => "vascular_age", Some("years"), Quantity;
    /// 158: Nerve Health Score, left foot (not in the OpenAPI table).
    NerveHealthLeft = 158 => "nerve_health_left", None, Quantity;
    /// 159: Nerve Health Score, right foot (not in the OpenAPI table).
    NerveHealthRight = 159 => "nerve_health_right", None, Quantity;
    /// 167: Nerve Health Score, two-electrode conductance, feet.
    NerveHealthFeet = 167 => "nerve_health_feet", None, Quantity;
    /// 168: extracellular water.
    ExtracellularWater = 168 => "extracellular_water", Some("kg"), Quantity;
    /// 169: intracellular water.
    IntracellularWater = 169 => "intracellular_water", Some("kg"), Quantity;
    /// 170: visceral fat (unitless index).
    VisceralFat = 170 => "visceral_fat", None, Quantity;
    /// 173: segmental fat-free mass, one measure per `position` (unit OPEN).
    SegmentalFatFreeMass = 173 => "segmental_fat_free_mass", None, Quantity;
    /// 174: segmental fat mass, one measure per `position` (unit OPEN).
    SegmentalFatMass = 174 => "segmental_fat_mass", None, Quantity;
    /// 175: segmental muscle mass, one measure per `position` (unit OPEN).
    SegmentalMuscleMass = 175 => "segmental_muscle_mass", None, Quantity;
    /// 196: electrodermal activity, feet.
    ElectrodermalActivityFeet = 196 => "electrodermal_activity_feet", None, Quantity;
    /// 197: electrodermal activity, left foot (not in the OpenAPI table).
    ElectrodermalActivityLeft = 197 => "electrodermal_activity_left", None, Quantity;
    /// 198: electrodermal activity, right foot (not in the OpenAPI table).
    ElectrodermalActivityRight = 198 => "electrodermal_activity_right", None, Quantity;
    /// 226: basal metabolic rate.
    BasalMetabolicRate = 226 => "basal_metabolic_rate", Some("kcal"), Quantity;
    /// 227: metabolic age.
    MetabolicAge = 227 => "metabolic_age", Some("years"), Quantity;
    /// 229: electrochemical skin conductance (unit OPEN; µS by third parties).
    SkinConductance = 229 => "skin_conductance", None, Quantity;
}

impl MeasureType {
    /// This type's row of [`TABLE`](Self::TABLE) (`None` for unknown codes).
    pub fn info(self) -> Option<&'static MeasureInfo> {
        Self::TABLE.iter().find(|row| row.measure_type == self)
    }

    /// Short lowercase name; `unknown` for codes not in the table.
    pub fn name(self) -> &'static str {
        self.info().map_or("unknown", |row| row.name)
    }

    /// SI unit symbol, where the table has one.
    pub fn unit(self) -> Option<&'static str> {
        self.info().and_then(|row| row.unit)
    }

    /// Quantity or classification; unknown codes are taken as quantities with no unit.
    pub fn kind(self) -> MeasureKind {
        self.info().map_or(MeasureKind::Quantity, |row| row.kind)
    }
}

super::code::code_traits!(MeasureType);

parse_error! {
    /// Why a string is not a [`MeasureType`].
    ParseMeasureTypeError: "is not a measure type: use a code (1, 6, 173, …) or a name (weight, fat_ratio, …)"
}

/// A code (`1`, any integer, unknown ones kept) or a table name (`weight`, case-insensitive).
impl std::str::FromStr for MeasureType {
    type Err = ParseMeasureTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = MeasureType::TABLE
            .iter()
            .map(|row| (row.measure_type, row.name));
        code_or_name(s, MeasureType::from_code, named).ok_or_else(|| ParseMeasureTypeError::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_one_row_per_code_and_avoids_the_peers_mistakes() {
        let mut codes: Vec<i64> = MeasureType::TABLE
            .iter()
            .map(|r| r.measure_type.code())
            .collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n, "a code twice in the table");
        for row in MeasureType::TABLE {
            assert_eq!(
                MeasureType::from_code(row.measure_type.code()),
                row.measure_type
            );
            assert_eq!(row.name.parse::<MeasureType>().unwrap(), row.measure_type);
        }
        assert_eq!(MeasureType::from_code(137).name(), "qt_interval");
        assert_eq!(MeasureType::from_code(130).name(), "afib_ecg");
        assert_eq!(MeasureType::from_code(168).name(), "extracellular_water");
        assert_eq!(MeasureType::Hydration.unit(), Some("kg"));
        assert_eq!(MeasureType::AfibEcg.unit(), None);
        assert_eq!(MeasureType::AfibEcg.kind(), MeasureKind::Classification);
        for code in [123, 135, 139, 155, 173, 226, 227] {
            assert!(!matches!(
                MeasureType::from_code(code),
                MeasureType::Unknown(_)
            ));
        }
        assert_eq!(MeasureType::from_code(78), MeasureType::Unknown(78));
        assert_eq!(MeasureType::from_code(78).name(), "unknown");
    }
}
