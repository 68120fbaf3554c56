//! The rarer codes a simulated history draws (a month or more of it): measure types the
//! library knows only by number and device attributions beyond the usual. Support code shared
//! by the simulator's tests, which check its histories hold them (`sim/tests/history.rs`),
//! and the library's, which check they survive decoding (`tests/it/data_sim.rs`).

use std::collections::BTreeSet;

/// Measure types among the rarer ones: body composition, ECG, segmental (`173`–`175`), …
pub const RARE_TYPES: [i64; 9] = [123, 135, 139, 155, 173, 174, 175, 226, 227];

/// Attributions beyond "the user's own device": 10, 17 and one no table names.
pub const RARE_ATTRIBS: [i64; 3] = [10, 17, 10_000];

/// Asserts that every rare type is among `types` and every rare attribution among `attribs`.
pub fn assert_rare_codes(types: &BTreeSet<i64>, attribs: &BTreeSet<i64>) {
    for code in RARE_TYPES {
        assert!(types.contains(&code), "type {code} missing: {types:?}");
    }
    for code in RARE_ATTRIBS {
        assert!(
            attribs.contains(&code),
            "attrib {code} missing: {attribs:?}"
        );
    }
}
