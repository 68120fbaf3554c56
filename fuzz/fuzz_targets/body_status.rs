//! The body-status reader and the envelope parser on arbitrary bytes: no panic, and a status
//! read from the prefix agrees with the one the full parse finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_withings::{__private::Peek, __private::peek_status, parse_response};

fuzz_target!(|data: &[u8]| {
    let peeked = peek_status(data);
    let parsed = parse_response(&bytes::Bytes::copy_from_slice(data));
    if let (Peek::Status(0), Err(error)) = (peeked, &parsed) {
        // A body that starts with status 0 can still be malformed later, never another status.
        assert!(
            matches!(error, tower_withings::Error::MalformedResponse { .. }),
            "{error:?}"
        );
    }
    for cut in 0..data.len().min(64) {
        if let Peek::Status(early) = peek_status(&data[..cut]) {
            assert_eq!(
                Peek::Status(early),
                peeked,
                "a longer prefix changed the status"
            );
        }
    }
});
