//! Hostile and malformed input never panics, and parsers agree with what was sent.

use std::time::SystemTime;

use proptest::prelude::*;
use tower_withings::__private::parse_token_response;
use tower_withings::{
    __private::Peek, __private::classify, __private::peek_status, parse_response,
};
use tower_withings::{Credentials, Error, Scope, oauth::Callback, oauth::OAuthClient, transport};

/// Arbitrary JSON, nested a few levels, with the keys Withings uses.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("status".to_owned()),
            Just("body".to_owned()),
            Just("error".to_owned()),
            Just("userid".to_owned()),
            Just("access_token".to_owned()),
            Just("refresh_token".to_owned()),
            Just("expires_in".to_owned()),
            Just("scope".to_owned()),
            Just("wait_seconds".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = peek_status(&bytes);
        let _ = parse_response(&bytes::Bytes::from(bytes.clone()));
        let _ = parse_token_response(&bytes, SystemTime::now());
        let _ = Callback::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_parser_never_panics_on_json_and_only_returns_complete_pairs(value in json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(token) = parse_token_response(&bytes, SystemTime::now()) {
            prop_assert_eq!(&value["status"], &serde_json::json!(0));
            prop_assert!(!token.access_token.expose().is_empty());
            prop_assert!(!token.refresh_token.expose().is_empty());
        }
        let _ = parse_response(&bytes::Bytes::from(bytes));
    }

    #[test]
    fn classify_never_panics(status in any::<i64>(), message in ".{0,300}", wait in any::<Option<u64>>()) {
        match classify(status, &message, wait) {
            None => prop_assert_eq!(status, 0),
            Some(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn peek_agrees_with_the_status_sent(status in any::<i64>().prop_filter("18 digits", |s| s.unsigned_abs() < 10u64.pow(18)), ws in "[ \t\r\n]{0,3}") {
        let body = format!("{{{ws}\"status\"{ws}:{ws}{status},\"body\":{{}}}}");
        prop_assert_eq!(peek_status(body.as_bytes()), Peek::Status(status));
        // Every proper prefix either needs more or already knows the status.
        for cut in 0..body.len() {
            match peek_status(&body.as_bytes()[..cut]) {
                Peek::NeedMore => {}
                Peek::Status(s) => prop_assert_eq!(s, status),
                Peek::Unknown => prop_assert!(false, "prefix {:?} called unknown", &body[..cut]),
            }
        }
    }

    #[test]
    fn callbacks_round_trip(code in "\\PC{1,64}", state in "\\PC{0,64}", junk in "[a-z]{1,8}") {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair(&junk, "x")
            .append_pair("code", &code)
            .append_pair("state", &state)
            .finish();
        let callback = Callback::parse(&format!("https://app.example.com/cb?{query}")).unwrap();
        prop_assert_eq!(callback.code().expose(), code.as_str());
        prop_assert_eq!(callback.state(), state.as_str());
    }

    /// Header or log injection through a redirect URI is refused, never sent on.
    #[test]
    fn redirect_uris_with_control_characters_are_refused(prefix in "[a-z/]{0,10}", bad in "[\r\n\t\u{0}]", suffix in ".{0,10}") {
        let client = OAuthClient::builder(Credentials::new("id", "secret")).build(transport::plain_http_client());
        let uri = format!("https://app.example.com/{prefix}{bad}{suffix}");
        let refused = matches!(client.authorize(&uri, &[Scope::UserMetrics]), Err(Error::RedirectUri { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn deeply_nested_json_is_a_typed_error_not_a_stack_overflow() {
    let depth = 100_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let error = parse_token_response(body.as_bytes(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(error, Error::MalformedResponse { .. }),
        "{error:?}"
    );
    let nested_body = format!(
        "{{\"status\":0,\"body\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(parse_response(&bytes::Bytes::from(nested_body)).is_err());
}

#[test]
fn invalid_utf8_is_a_typed_error() {
    let body = b"{\"status\":0,\"body\":{\"userid\":\"1\",\"access_token\":\"\xff\xfe\",\"refresh_token\":\"r\",\"expires_in\":1}}";
    assert!(matches!(
        parse_token_response(body, SystemTime::now()),
        Err(Error::MalformedResponse { .. })
    ));
}
