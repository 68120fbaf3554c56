//! The OAuth callback parser: no panic; a parsed code is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_withings::oauth::Callback;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(callback) = Callback::parse(text)
    {
        assert!(!callback.code().expose().is_empty());
    }
});
