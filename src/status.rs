//! Withings' body status codes: the one table that says what each means.
//!
//! Withings answers almost everything with HTTP 200 and puts the outcome in the JSON body:
//! `{"status":0,"body":{…}}` on success, `{"status":401,"body":{},"error":"…"}` on failure.
//! [`classify`] turns a status and its message into an [`Error`]; [`peek_status`] reads the
//! status from the first bytes of a body without buffering the rest.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, shorten};

/// Maps a non-zero Withings body status (and its `error` text) to an [`Error`].
///
/// Returns `None` for status 0 (success). Where Withings overloads one code (503 means many
/// things), the message decides; where a message is documented without a code (the FAQ's
/// "User is temporarily deactivated", "client_id not authorized"), it is recognised by message.
pub fn classify(status: i64, message: &str, wait_seconds: Option<u64>) -> Option<Error> {
    if status == 0 {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let says = |needle: &str| lower.contains(needle);

    if says("temporarily deactivated") {
        return Some(Error::UserDeactivated);
    }
    if says("client_id not authorized") || says("client id not authorized") {
        return Some(invalid_client(message));
    }
    if says("does not match the partner callback") {
        return Some(Error::RedirectUriMismatch);
    }
    Some(match status {
        100 | 101 | 102 | 200 | 401 => Error::AccessTokenInvalid { status },
        601 => Error::RateLimited {
            wait: wait_seconds.map(Duration::from_secs),
        },
        214 | 277 | 2553 | 2555 => Error::Unauthorized { status },
        2554 => Error::NotImplemented,
        522 => Error::Timeout,
        524 => Error::BadState,
        503 | 293..=295 | 501..=511 => {
            if says("refresh_token") || says("refresh token") {
                Error::RefreshTokenInvalid
            } else if says("invalid code") {
                Error::InvalidCode
            } else if says("grant_type") || says("not specified") {
                Error::InvalidParams {
                    status,
                    message: format!(
                        "{} (send the parameters in a POST form body, not the query string)",
                        shorten(message)
                    ),
                }
            } else if says("client_id")
                || says("client id")
                || says("client_secret")
                || says("client secret")
                || says("invalid signature")
            {
                invalid_client(message)
            } else {
                Error::InvalidParams {
                    status,
                    message: shorten(message),
                }
            }
        }
        _ => Error::UnknownStatus {
            status,
            message: shorten(message),
        },
    })
}

fn invalid_client(message: &str) -> Error {
    Error::InvalidClient {
        detail: shorten(message),
    }
}

/// True when `status` means the access token failed (100, 101, 102, 200, 401): the only
/// statuses that justify a refresh.
pub(crate) fn is_access_token_failure(status: i64) -> bool {
    matches!(status, 100 | 101 | 102 | 200 | 401)
}

/// A parsed Withings response: its status and, on success, its `body`.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub status: i64,
    pub body: Value,
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope {
    status: i64,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    error: Option<Value>,
}

impl Envelope {
    /// Parses a complete Withings JSON response. Non-JSON, truncated and wrongly typed bodies
    /// become [`Error::MalformedResponse`]; the body text never enters the error.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Envelope, Error> {
        let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(|e| {
            let reason = if e.is_eof() {
                "truncated JSON body"
            } else if e.is_syntax() {
                "body is not JSON"
            } else {
                "JSON body without an integer `status`"
            };
            Error::MalformedResponse {
                reason: reason.into(),
            }
        })?;
        let error = match raw.error {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        Ok(Envelope {
            status: raw.status,
            body: raw.body,
            error,
        })
    }

    /// The success body, or the classified error.
    pub(crate) fn into_result(self) -> Result<Value, Error> {
        let wait = self.body.get("wait_seconds").and_then(Value::as_u64);
        match classify(self.status, self.error.as_deref().unwrap_or(""), wait) {
            None => Ok(self.body),
            Some(error) => Err(error),
        }
    }
}

/// Parses a complete Withings response body into its `body` value or the classified error
/// (by [`classify`], the table the layer's
/// [`status_errors`](crate::WithingsAuthLayer::status_errors) uses too). Also at the crate
/// root: `tower_withings::parse_response`.
///
/// The one line that reads a response's status when the layer hands every body status back
/// `Ok` (its default):
///
/// ```
/// use bytes::Bytes;
/// use tower_withings::{Error, parse_response};
///
/// // let bytes = response.into_body().collect().await?.to_bytes();
/// let bytes = Bytes::from_static(br#"{"status":601,"body":{"wait_seconds":9},"error":"Too many request"}"#);
/// match parse_response(&bytes) {
///     Ok(body) => println!("{body}"),
///     Err(Error::RateLimited { wait }) => assert_eq!(wait.unwrap().as_secs(), 9),
///     Err(other) => panic!("{other}"),
/// }
/// // Any bytes will do: a `Vec<u8>`, a slice.
/// let ok: &[u8] = br#"{"status":0,"body":{"measuregrps":[]}}"#;
/// assert!(parse_response(ok).unwrap()["measuregrps"].is_array());
/// ```
pub fn parse_response(bytes: &[u8]) -> Result<Value, Error> {
    Envelope::parse(bytes)?.into_result()
}

/// The number after `"wait_seconds":` in `bytes` (a 601 answer's `body.wait_seconds`), if any.
pub(crate) fn find_wait_seconds(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"wait_seconds\"";
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &bytes[at..];
    let rest = rest.strip_prefix(b":").or_else(|| {
        let skipped = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest[skipped..].strip_prefix(b":")
    })?;
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = rest[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&rest[start..start + digits.min(12)])
        .ok()?
        .parse()
        .ok()
}

/// What the first bytes of a body say about its Withings status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// The body starts `{"status":N` and N is complete.
    Status(i64),
    /// So far it looks like a Withings body, but the status is not complete yet.
    NeedMore,
    /// The body does not start like a Withings envelope (status not first, or not JSON).
    Unknown,
}

/// Reads the status from the start of a Withings body (`{"status":401,…`), allowing whitespace,
/// without needing the rest of the body.
pub fn peek_status(prefix: &[u8]) -> Peek {
    StatusScan::new().feed(prefix)
}

/// [`peek_status`] one piece at a time: each byte of a body arriving in pieces is looked at
/// once, so reading a long prefix costs its length, not its length times its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusScan(Scan);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before `{`.
    Open,
    /// This many bytes of `"status"` seen (whitespace allowed only before the first).
    Key(u8),
    /// Before `:`.
    Colon,
    /// Before the number.
    Value,
    /// In the number: its sign, digits so far and value.
    Number {
        negative: bool,
        digits: u8,
        value: i64,
    },
    /// `Status` or `Unknown`: nothing more to read.
    Done(Peek),
}

impl StatusScan {
    pub(crate) fn new() -> Self {
        StatusScan(Scan::Open)
    }

    /// What the bytes fed so far say.
    pub(crate) fn peek(&self) -> Peek {
        match self.0 {
            Scan::Done(peek) => peek,
            _ => Peek::NeedMore,
        }
    }

    /// Reads the next bytes of the body; stops at the first byte that decides.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Peek {
        const KEY: &[u8] = b"\"status\"";
        const MAX_DIGITS: u8 = 18;
        let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        // Withings' own form, `{"status":` with no space, is matched at once.
        const START: &[u8] = b"{\"status\":";
        let mut bytes = bytes;
        if self.0 == Scan::Open
            && let Some(rest) = bytes.strip_prefix(START)
        {
            self.0 = Scan::Value;
            bytes = rest;
        }
        for &b in bytes {
            self.0 = match self.0 {
                Scan::Done(_) => break,
                Scan::Open if ws(b) => Scan::Open,
                Scan::Open if b == b'{' => Scan::Key(0),
                Scan::Key(0) if ws(b) => Scan::Key(0),
                Scan::Key(n) if KEY[usize::from(n)] == b => {
                    if usize::from(n) + 1 == KEY.len() {
                        Scan::Colon
                    } else {
                        Scan::Key(n + 1)
                    }
                }
                Scan::Colon if ws(b) => Scan::Colon,
                Scan::Colon if b == b':' => Scan::Value,
                Scan::Value if ws(b) => Scan::Value,
                Scan::Value if b == b'-' => Scan::Number {
                    negative: true,
                    digits: 0,
                    value: 0,
                },
                Scan::Value if b.is_ascii_digit() => Scan::Number {
                    negative: false,
                    digits: 1,
                    value: i64::from(b - b'0'),
                },
                Scan::Number {
                    negative,
                    digits,
                    value,
                } if b.is_ascii_digit() => {
                    if digits == MAX_DIGITS {
                        Scan::Done(Peek::Unknown)
                    } else {
                        Scan::Number {
                            negative,
                            digits: digits + 1,
                            value: value * 10 + i64::from(b - b'0'),
                        }
                    }
                }
                Scan::Number {
                    negative,
                    digits,
                    value,
                } if digits > 0 && (ws(b) || b == b',' || b == b'}') => {
                    Scan::Done(Peek::Status(if negative { -value } else { value }))
                }
                _ => Scan::Done(Peek::Unknown),
            };
        }
        self.peek()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies captured from real Withings traffic (protocol notes, section 5), byte for byte.
    const INVALID_TOKEN: &[u8] = br#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#;
    const INVALID_REFRESH: &[u8] =
        br#"{"status":503,"body":{},"error":"Invalid Params: invalid refresh_token"}"#;

    fn class(status: i64, message: &str) -> Error {
        classify(status, message, None).expect("an error")
    }

    #[test]
    fn a_601_answer_says_how_long_to_wait() {
        let find = |s: &str| find_wait_seconds(s.as_bytes());
        assert_eq!(find(r#"{"status":601,"body":{"wait_seconds":9}}"#), Some(9));
        assert_eq!(
            find(r#"{"status":601,"body":{"wait_seconds" : 12}}"#),
            Some(12)
        );
        assert_eq!(find(r#"{"status":601,"error":"Too many request"}"#), None);
        assert_eq!(find(r#"{"body":{"wait_seconds":"x"}}"#), None);
        assert_eq!(
            find(r#"{"wait_seconds":99999999999999999999999}"#),
            Some(999_999_999_999)
        );
    }

    #[test]
    fn captured_invalid_token_body_is_an_access_token_failure() {
        let err = Envelope::parse(INVALID_TOKEN)
            .unwrap()
            .into_result()
            .unwrap_err();
        assert!(
            matches!(err, Error::AccessTokenInvalid { status: 401 }),
            "{err:?}"
        );
        assert_eq!(peek_status(INVALID_TOKEN), Peek::Status(401));
    }

    #[test]
    fn captured_invalid_refresh_body_is_terminal() {
        let err = Envelope::parse(INVALID_REFRESH)
            .unwrap()
            .into_result()
            .unwrap_err();
        assert!(matches!(err, Error::RefreshTokenInvalid), "{err:?}");
    }

    #[test]
    fn every_row_of_the_status_table() {
        assert!(classify(0, "", None).is_none());
        for s in [100, 101, 102, 200, 401] {
            assert!(matches!(class(s, ""), Error::AccessTokenInvalid { status } if status == s));
            assert!(is_access_token_failure(s));
        }
        for s in [0, 214, 503, 601, 2554] {
            assert!(!is_access_token_failure(s));
        }
        assert!(matches!(
            class(503, "Invalid Params: invalid code"),
            Error::InvalidCode
        ));
        for (s, message) in [
            (503, "Invalid Params: invalid client_id"),
            (503, "Invalid Params: invalid client_secret"),
            (503, "invalid client id/secret"),
            (503, "client_id not authorized"),
            (2555, "client_id not authorized"),
        ] {
            let error = class(s, message);
            assert!(
                matches!(error, Error::InvalidClient { .. }),
                "{s} {message}: {error:?}"
            );
        }
        for s in [293, 294, 295, 501, 505, 511] {
            assert!(
                matches!(class(s, "Invalid Params"), Error::InvalidParams { status, .. } if status == s)
            );
        }
        for s in [214, 277, 2553, 2555] {
            assert!(matches!(class(s, ""), Error::Unauthorized { status } if status == s));
        }
        assert!(matches!(class(2554, ""), Error::NotImplemented));
        assert!(matches!(class(522, ""), Error::Timeout));
        assert!(matches!(class(524, ""), Error::BadState));
        assert!(matches!(
            classify(601, "Same arguments in less than 10 seconds", Some(9)),
            Some(Error::RateLimited { wait: Some(w) }) if w == Duration::from_secs(9)
        ));
        assert!(matches!(
            class(601, "Too many request"),
            Error::RateLimited { wait: None }
        ));
        assert!(matches!(
            class(503, "User is temporarily deactivated"),
            Error::UserDeactivated
        ));
        assert!(matches!(
            class(9999, "mystery"),
            Error::UnknownStatus { status: 9999, .. }
        ));
    }

    #[test]
    fn faq_messages_for_params_outside_the_post_body() {
        for msg in [
            "Invalid_params: invalid grant_type",
            "Invalid_request: The client ID was not specified in the request",
        ] {
            match class(503, msg) {
                Error::InvalidParams { message, .. } => {
                    assert!(message.contains("POST form body"), "{message}")
                }
                other => panic!("{msg}: {other:?}"),
            }
        }
        assert!(matches!(
            class(
                503,
                "The redirect URI provided is missing or does not match the partner callback URL"
            ),
            Error::RedirectUriMismatch
        ));
    }

    #[test]
    fn malformed_bodies_are_typed() {
        for (body, reason) in [
            (&b"<html>502 Bad Gateway</html>"[..], "body is not JSON"),
            (
                &br#"{"status":0,"body":{"userid":"1","acc"#[..],
                "truncated JSON body",
            ),
            (
                &br#"{"status":"zero"}"#[..],
                "JSON body without an integer `status`",
            ),
            (&b""[..], "truncated JSON body"),
        ] {
            match Envelope::parse(body) {
                Err(Error::MalformedResponse { reason: r }) => assert_eq!(r, reason),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn peek_reads_the_status_from_a_prefix() {
        assert_eq!(peek_status(b""), Peek::NeedMore);
        assert_eq!(peek_status(b"{"), Peek::NeedMore);
        assert_eq!(peek_status(b"{\"sta"), Peek::NeedMore);
        assert_eq!(peek_status(b"{\"status\":"), Peek::NeedMore);
        assert_eq!(peek_status(b"{\"status\":40"), Peek::NeedMore);
        assert_eq!(peek_status(b"{\"status\":401,"), Peek::Status(401));
        assert_eq!(peek_status(b"{\"status\":0}"), Peek::Status(0));
        assert_eq!(peek_status(b" { \"status\" : 601 ,"), Peek::Status(601));
        assert_eq!(peek_status(b"{\"status\":-1,"), Peek::Status(-1));
        assert_eq!(peek_status(b"{\"body\":{},\"status\":401}"), Peek::Unknown);
        assert_eq!(peek_status(b"<html>"), Peek::Unknown);
        assert_eq!(peek_status(b"{\"status\":\"401\"}"), Peek::Unknown);
        assert_eq!(
            peek_status(b"{\"status\":99999999999999999999,"),
            Peek::Unknown
        );
    }

    /// The straightforward (rescanning) reader `StatusScan` replaced: the reference it must match.
    fn reference_peek(prefix: &[u8]) -> Peek {
        const KEY: &[u8] = b"\"status\"";
        let mut rest = skip_ws(prefix);
        match rest.first() {
            None => return Peek::NeedMore,
            Some(b'{') => rest = skip_ws(&rest[1..]),
            Some(_) => return Peek::Unknown,
        }
        let n = rest.len().min(KEY.len());
        if rest[..n] != KEY[..n] {
            return Peek::Unknown;
        }
        if n < KEY.len() {
            return Peek::NeedMore;
        }
        rest = skip_ws(&rest[KEY.len()..]);
        match rest.first() {
            None => return Peek::NeedMore,
            Some(b':') => rest = skip_ws(&rest[1..]),
            Some(_) => return Peek::Unknown,
        }
        let negative = rest.first() == Some(&b'-');
        if negative {
            rest = &rest[1..];
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == rest.len() {
            // The number may go on in the next chunk.
            return if digits > 18 {
                Peek::Unknown
            } else {
                Peek::NeedMore
            };
        }
        if digits == 0
            || digits > 18
            || !matches!(rest[digits], b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
        {
            return Peek::Unknown;
        }
        let mut value: i64 = 0;
        for &d in &rest[..digits] {
            value = value * 10 + i64::from(d - b'0');
        }
        Peek::Status(if negative { -value } else { value })
    }

    fn skip_ws(bytes: &[u8]) -> &[u8] {
        let start = bytes
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(bytes.len());
        &bytes[start..]
    }

    proptest::proptest! {
        /// The one-pass scanner says what the rescanning reader said, for any bytes fed in any
        /// pieces: after every piece and at the end.
        #[test]
        fn the_scanner_matches_the_reference_whatever_the_pieces(
            body in proptest::collection::vec(
                proptest::sample::select(b" \t\r\n{}\"status:,-0123456789x".to_vec()),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut scan = StatusScan::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([body.len()]) {
                let fed = scan.feed(&body[start..cut]);
                proptest::prop_assert_eq!(fed, reference_peek(&body[..cut]), "{:?}", &body[..cut]);
                start = cut;
            }
            proptest::prop_assert_eq!(peek_status(&body), reference_peek(&body));
        }

        #[test]
        fn the_scanner_matches_the_reference_on_status_prefixes(
            status in -1_000_000_000_000_000_000i64..1_000_000_000_000_000_000,
            pad in "[ \t\r\n]{0,3}",
            end in proptest::sample::select(vec![",", "}", " ", "x", ""]),
        ) {
            let body = format!("{pad}{{{pad}\"status\"{pad}:{pad}{status}{end}");
            let body = body.as_bytes();
            for cut in 0..=body.len() {
                proptest::prop_assert_eq!(peek_status(&body[..cut]), reference_peek(&body[..cut]));
            }
        }
    }

    #[test]
    fn a_long_prefix_is_fed_once() {
        // Whitespace in a thousand pieces: each piece is looked at once, and the answer stays
        // NeedMore until the status comes.
        let mut scan = StatusScan::new();
        assert_eq!(scan.feed(b"{"), Peek::NeedMore);
        for _ in 0..1000 {
            assert_eq!(scan.feed(b"   "), Peek::NeedMore);
        }
        assert_eq!(scan.feed(b"\"status\":40"), Peek::NeedMore);
        assert_eq!(scan.feed(b"1,"), Peek::Status(401));
        assert_eq!(scan.feed(b"anything"), Peek::Status(401));
        assert_eq!(scan.peek(), Peek::Status(401));
    }
}
