//! The requesttoken answer: `{"status":0,"body":{"userid":…,"access_token":…,…}}`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::error::Error;
use crate::secret::Secret;
use crate::status::Envelope;
use crate::token::{Token, UserId};

/// Longest `expires_in` believed (Withings says 10800 s); larger values are clamped.
const MAX_EXPIRES_IN: u64 = 366 * 24 * 3600;

/// Parses a token response received at `received_at`.
///
/// A token comes back only when `status == 0` and both tokens are present and non-empty:
/// anything less must never reach a store (it would overwrite a good pair with nothing).
pub(crate) fn parse_token(bytes: &[u8], received_at: SystemTime) -> Result<Token, Error> {
    let body = Envelope::parse(bytes)?.into_result()?;
    let malformed = |reason: &str| Error::MalformedResponse {
        reason: reason.to_owned(),
    };
    let user_id = match body.get("userid") {
        Some(Value::String(s)) => s.parse::<UserId>().ok(),
        Some(Value::Number(n)) => n.as_u64().map(UserId),
        _ => None,
    }
    .ok_or_else(|| malformed("token response without a numeric userid"))?;
    let access_token = non_empty_string(&body, "access_token")
        .ok_or_else(|| malformed("status 0 but no access_token"))?;
    // It goes into `Authorization: Bearer …`: printable ASCII only, no spaces or line breaks.
    if !crate::token::is_bearer_safe(&access_token) {
        return Err(malformed(
            "access_token has characters an Authorization header cannot carry",
        ));
    }
    let refresh_token = non_empty_string(&body, "refresh_token")
        .ok_or_else(|| malformed("status 0 but no refresh_token"))?;
    let expires_in = match body.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| malformed("token response without a numeric expires_in"))?;
    let scope = match body.get("scope") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(malformed("token response scope is not a string")),
    };
    Ok(Token {
        user_id,
        access_token: Secret::new(access_token),
        refresh_token: Secret::new(refresh_token),
        expires_at: received_at + Duration::from_secs(expires_in.min(MAX_EXPIRES_IN)),
        scope,
    })
}

fn non_empty_string(body: &Value, key: &str) -> Option<String> {
    match body.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The success body from the protocol notes (section 2), byte for byte, tokens shortened there.
    const CAPTURED: &[u8] = br#"{"status":0,"body":{"userid":"46865875","access_token":"a075f8c14fb8df40b08ebc8508533dc332a6910a","refresh_token":"f631236f02b991810feb774765b6ae8e6c6839ca","expires_in":10800,"scope":"user.info,user.metrics","token_type":"Bearer","csrf_token":"PACnnxwHTaBQOzF7bQqwFUUotIuvtzSM"}}"#;

    #[test]
    fn captured_success_body() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = parse_token(CAPTURED, at).unwrap();
        assert_eq!(t.user_id, UserId(46865875));
        assert_eq!(
            t.access_token.expose(),
            "a075f8c14fb8df40b08ebc8508533dc332a6910a"
        );
        assert_eq!(
            t.refresh_token.expose(),
            "f631236f02b991810feb774765b6ae8e6c6839ca"
        );
        assert_eq!(t.expires_at, at + Duration::from_secs(10800));
        assert_eq!(t.scope, "user.info,user.metrics");
    }

    #[test]
    fn userid_as_number_and_no_csrf_token() {
        let body = br#"{"status":0,"body":{"userid":46865875,"access_token":"a","refresh_token":"r","expires_in":"10800"}}"#;
        let t = parse_token(body, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(t.user_id, UserId(46865875));
        assert_eq!(t.scope, "");
        assert_eq!(
            t.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(10800)
        );
    }

    #[test]
    fn nothing_is_a_token_without_status_zero_and_both_tokens() {
        let cases: &[&[u8]] = &[
            br#"{"status":0,"body":{"userid":"1","access_token":"a","expires_in":10800}}"#,
            br#"{"status":0,"body":{"userid":"1","refresh_token":"r","expires_in":10800}}"#,
            br#"{"status":0,"body":{"userid":"1","access_token":"","refresh_token":"r","expires_in":1}}"#,
            br#"{"status":0,"body":{"userid":"1","access_token":null,"refresh_token":null,"expires_in":1}}"#,
            br#"{"status":0,"body":{"access_token":"a","refresh_token":"r","expires_in":1}}"#,
            br#"{"status":0,"body":{"userid":"x1","access_token":"a","refresh_token":"r","expires_in":1}}"#,
            br#"{"status":0,"body":{"userid":"1","access_token":"a","refresh_token":"r"}}"#,
            br#"{"status":0,"body":{"userid":"1","access_token":7,"refresh_token":"r","expires_in":1}}"#,
            // No Authorization header can carry these: never a token, never stored.
            br#"{"status":0,"body":{"userid":"1","access_token":"a\r\nx: y","refresh_token":"r","expires_in":1}}"#,
            br#"{"status":0,"body":{"userid":"1","access_token":"two words","refresh_token":"r","expires_in":1}}"#,
            br#"{"status":0,"body":[]}"#,
            br#"{"status":0}"#,
        ];
        for body in cases {
            let err = parse_token(body, SystemTime::UNIX_EPOCH).unwrap_err();
            assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
        }
        let failed = br#"{"status":503,"body":{},"error":"Invalid Params: invalid refresh_token"}"#;
        assert!(matches!(
            parse_token(failed, SystemTime::UNIX_EPOCH),
            Err(Error::RefreshTokenInvalid)
        ));
    }

    #[test]
    fn absurd_expiry_does_not_overflow() {
        let body = br#"{"status":0,"body":{"userid":"1","access_token":"a","refresh_token":"r","expires_in":18446744073709551615}}"#;
        let t = parse_token(body, SystemTime::now()).unwrap();
        assert!(t.expires_at > SystemTime::now());
    }

    #[test]
    fn errors_never_echo_the_body() {
        let body = br#"{"status":0,"body":{"userid":"1","access_token":"leaky-token-value"}}"#;
        let err = parse_token(body, SystemTime::UNIX_EPOCH).unwrap_err();
        assert!(!err.to_string().contains("leaky-token-value"));
        assert!(!format!("{err:?}").contains("leaky-token-value"));
    }
}
