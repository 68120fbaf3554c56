//! Exact measure values: Withings sends `value × 10^unit` as two integers, kept as they came.
//!
//! Scaling in `f64` prints `56.300000000000004` and `3.2600000000000002 kg` (withings-data.md
//! §4.1, T10); the pair is kept, shown exactly, and turned into a [`Decimal`] or an `f64` only
//! when asked.

use std::fmt;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

/// A number as Withings sends it: `value × 10^unit`, both integers.
///
/// ```
/// use tower_withings::data::Exact;
///
/// let weight = Exact::new(56300, -3);
/// assert_eq!(weight.to_string(), "56.3");
/// assert_eq!(Exact::new(326, -2).to_string(), "3.26");
/// assert_eq!(Exact::new(-5, 2).to_string(), "-500");
/// assert_eq!(weight.decimal().unwrap().to_string(), "56.3");
/// assert_eq!(weight.to_f64(), 56.3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exact {
    /// The integer mantissa.
    pub value: i64,
    /// The power of ten.
    pub unit: i32,
}

impl Exact {
    /// `value × 10^unit`.
    pub const fn new(value: i64, unit: i32) -> Self {
        Exact { value, unit }
    }

    /// The exact decimal, normalized (`56300 × 10^-3` is `56.3`); `None` when it does not fit
    /// a [`Decimal`] (more than 28 decimal places, or beyond ±7.9 × 10^28).
    pub fn decimal(self) -> Option<Decimal> {
        let d = if self.unit <= 0 {
            let scale = u32::try_from(-i64::from(self.unit)).ok()?;
            Decimal::try_from_i128_with_scale(i128::from(self.value), scale).ok()?
        } else {
            let mut d = Decimal::from(self.value);
            for _ in 0..self.unit {
                d = d.checked_mul(Decimal::TEN)?;
            }
            d
        };
        Some(d.normalize())
    }

    /// The nearest `f64` (only for plotting or statistics: it is not exact).
    pub fn to_f64(self) -> f64 {
        match self.decimal().and_then(|d| d.to_f64()) {
            Some(f) => f,
            None => self.value as f64 * 10f64.powi(self.unit),
        }
    }
}

/// Exact, shortest decimal text (`56.3`, `3.26`, `-500`), whatever the size.
impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value == 0 {
            return f.write_str("0");
        }
        let negative = self.value < 0;
        let mut digits = self.value.unsigned_abs().to_string();
        let mut unit = i64::from(self.unit);
        // Drop trailing zeros into the exponent: 56300e-3 is 563e-1.
        while unit < 0 && digits.len() > 1 && digits.ends_with('0') {
            digits.pop();
            unit += 1;
        }
        if negative {
            f.write_str("-")?;
        }
        if unit >= 0 {
            f.write_str(&digits)?;
            for _ in 0..unit.min(4096) {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let places = usize::try_from(-unit).unwrap_or(usize::MAX).min(4096);
        if digits.len() > places {
            let (int, frac) = digits.split_at(digits.len() - places);
            write!(f, "{int}.{frac}")
        } else {
            f.write_str("0.")?;
            for _ in 0..places - digits.len() {
                f.write_str("0")?;
            }
            f.write_str(&digits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_decimal_agree_and_are_exact() {
        for (v, u, text) in [
            (56300, -3, "56.3"),
            (326, -2, "3.26"),
            (118003, -3, "118.003"),
            (0, -3, "0"),
            (5, -3, "0.005"),
            (-5, -3, "-0.005"),
            (2263, 0, "2263"),
            (32, -1, "3.2"),
            (7, 3, "7000"),
            (0, 3, "0"),
            (-1200, -2, "-12"),
        ] {
            let e = Exact::new(v, u);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.decimal().unwrap().to_string(), text);
        }
        assert_eq!(Exact::new(1, -40).decimal(), None);
        assert_eq!(Exact::new(1, -40).to_string().len(), 42);
        assert_eq!(Exact::new(i64::MAX, 30).decimal(), None);
        assert_eq!(
            Exact::new(i64::MIN, -1).to_string(),
            "-922337203685477580.8"
        );
        assert_eq!(Exact::new(56300, -3).to_f64(), 56.3);
        assert_eq!(Exact::new(326, -2).to_f64(), 3.26);
    }
}
