//! The requesttoken answer parser: no panic; a token only with status 0 and both tokens.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use tower_withings::__private::parse_token_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = parse_token_response(data, SystemTime::UNIX_EPOCH) {
        assert!(!token.access_token.expose().is_empty());
        assert!(!token.refresh_token.expose().is_empty());
    }
});
