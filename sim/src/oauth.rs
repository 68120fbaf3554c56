//! The OAuth side: `authorize2`, `logout`, partner disconnection, the token endpoint
//! (`/v2/oauth2`) and the nonce endpoint (`/v2/signature`).

use std::time::Duration;

use http::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::notify::Delivery;
use super::server::{Reply, Req, err_json, err_json_body, json_str, ok_json};
use super::state::{State, elapsed, hmac_hex, unix_secs};
use super::{
    CODE_TTL, DEMO_USER_ID, KNOWN_SCOPES, NONCE_TTL, Shared, SimGrant, TIMESTAMP_TOLERANCE,
};

/// Path prefix of the page where a user unlinks a partner app.
pub(crate) const DISCONNECT_PREFIX: &str = "/partner/disconnect_partner/";

const REDIRECT_MISMATCH: &str =
    "The redirect URI provided is missing or does not match the partner callback URL";
const INVALID_GRANT_TYPE: &str = "Invalid_params: invalid grant_type";
const NO_CLIENT_ID: &str = "Invalid_request: The client ID was not specified in the request";
const INVALID_CLIENT_ID: &str = "Invalid Params: invalid client_id";
const INVALID_CLIENT_SECRET: &str = "Invalid Params: invalid client_secret";
const CLIENT_NOT_AUTHORIZED: &str = "client_id not authorized";
const INVALID_SIGNATURE: &str = "Invalid Params: invalid signature";
const INVALID_NONCE: &str = "Invalid Params: invalid nonce";
const INVALID_TIMESTAMP: &str = "Invalid Params: invalid timestamp";
const INVALID_CODE: &str = "Invalid Params: invalid code";
const INVALID_REFRESH: &str = "Invalid Params: invalid refresh_token";
const SAME_ARGUMENTS: &str = "Same arguments in less than 10 seconds";
pub(crate) const DEACTIVATED: &str = "User is temporarily deactivated";
pub(crate) const NOT_IMPLEMENTED: &str = "Not implemented";

/// Characters of `state` left as is in the redirect (RFC 3986 unreserved).
const STATE_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn bad_request(message: &str) -> Reply {
    Reply::Text(StatusCode::BAD_REQUEST, message.to_owned())
}

fn present(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// `GET /oauth2_user/authorize2`: validates, auto-approves and redirects with a code.
pub(crate) fn authorize(shared: &Shared, req: &Req) -> Reply {
    if req.method != Method::GET {
        return Reply::Text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into());
    }
    let mut st = shared.lock();
    let client_id = req.query("client_id").unwrap_or("");
    let Some(client) = st.clients.get(client_id) else {
        return bad_request("invalid client_id");
    };
    let redirect_uri = match req.query("redirect_uri") {
        Some(r) if client.callbacks.iter().any(|c| c == r) => r,
        _ => return bad_request(REDIRECT_MISMATCH),
    };
    if req.query("response_type") != Some("code") {
        return bad_request("invalid response_type: only response_type=code is supported");
    }
    let Some(state) = present(req.query("state")) else {
        return bad_request("missing state parameter");
    };
    let scope = req.query("scope").unwrap_or("");
    if scope.is_empty() || !scope.split(',').all(|s| KNOWN_SCOPES.contains(&s)) {
        return bad_request(
            "invalid scope: expected a comma-separated list of \
             user.info, user.metrics, user.activity, user.sleepevents",
        );
    }
    let userid = if req.query("mode") == Some("demo") {
        DEMO_USER_ID.0
    } else {
        st.config.approving_user.0
    };
    let code = st.new_code(client_id, redirect_uri, scope, userid);
    let (base, fragment) = match redirect_uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (redirect_uri, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut location = format!(
        "{base}{sep}code={code}&state={}",
        utf8_percent_encode(state, STATE_ENCODE)
    );
    if let Some(f) = fragment {
        location.push('#');
        location.push_str(f);
    }
    Reply::Redirect(location)
}

/// `GET /logout?r=<encoded authorize2 URL>`: "logs out" and redirects to `r`.
pub(crate) fn logout(shared: &Shared, req: &Req) -> Reply {
    let Some(r) = req.query("r") else {
        return bad_request("missing r parameter");
    };
    let ours = url::Url::parse(r).is_ok_and(|u| {
        u.scheme() == "http"
            && u.host_str() == Some("127.0.0.1")
            && u.port() == Some(shared.addr.port())
            && u.path() == "/oauth2_user/authorize2"
    });
    if ours {
        Reply::Redirect(r.to_owned())
    } else {
        bad_request("invalid r parameter: must be an authorize2 URL of this server")
    }
}

/// `GET /partner/disconnect_partner/<client_id>?selecteduser=<userid>`: the user unlinks the
/// app, killing all of that user's tokens for that client.
pub(crate) fn disconnect(shared: &Shared, req: &Req) -> (Reply, Vec<Delivery>) {
    let raw = req.path.strip_prefix(DISCONNECT_PREFIX).unwrap_or("");
    let client_id = percent_decode_str(raw).decode_utf8_lossy();
    let mut st = shared.lock();
    if !st.clients.contains_key(client_id.as_ref()) {
        return (bad_request("invalid client_id"), Vec::new());
    }
    let Some(userid) = req
        .query("selecteduser")
        .and_then(|u| u.parse::<u64>().ok())
    else {
        return (bad_request("invalid selecteduser"), Vec::new());
    };
    // The app's user-event subscriptions hear about it before they are removed.
    let deliveries = st.user_event(userid, "unlink", Some(client_id.as_ref()));
    st.revoke_user(userid, Some(client_id.as_ref()));
    (
        Reply::Text(
            StatusCode::OK,
            "The application has been unlinked from your account.".into(),
        ),
        deliveries,
    )
}

/// `POST /v2/oauth2`. Returns the reply and the latency to add before sending it.
pub(crate) fn token(shared: &Shared, req: &Req) -> (Reply, Duration) {
    let mut st = shared.lock();
    let latency = st.config.token_latency;
    (token_inner(&mut st, req), latency)
}

fn token_inner(st: &mut State, req: &Req) -> Reply {
    // Parameters come only from the form body: a GET or query-string call has none.
    if req.method != Method::POST {
        return err_json(503, INVALID_GRANT_TYPE);
    }
    if req.form("action") == Some("revoke") {
        return revoke(st, req);
    }
    let Some(grant_type) = present(req.form("grant_type")) else {
        return err_json(503, INVALID_GRANT_TYPE);
    };
    let Some(client_id) = present(req.form("client_id")) else {
        return err_json(503, NO_CLIENT_ID);
    };
    if req.form("action") != Some("requesttoken") {
        return err_json(2554, NOT_IMPLEMENTED);
    }
    if grant_type != "authorization_code" && grant_type != "refresh_token" {
        return err_json(503, INVALID_GRANT_TYPE);
    }
    if let Err(reply) = authenticate(st, client_id, req) {
        return reply;
    }
    if grant_type == "authorization_code" {
        exchange_code(st, client_id, req)
    } else {
        refresh(st, client_id, req)
    }
}

/// `action=revoke`: signed only (a nonce and `signature` over `revoke,<client_id>,<nonce>`),
/// with the `userid`; the user's tokens for this app die and their subscriptions go.
fn revoke(st: &mut State, req: &Req) -> Reply {
    let Some(client_id) = present(req.form("client_id")) else {
        return err_json(503, NO_CLIENT_ID);
    };
    if req.form("client_secret").is_some() {
        // Withings documents revoke as signed only.
        return err_json(503, INVALID_SIGNATURE);
    }
    if let Err(reply) = check_signed(st, client_id, "revoke", req) {
        return reply;
    }
    let Some(userid) = req.form("userid").and_then(|u| u.parse::<u64>().ok()) else {
        return err_json(503, "Invalid Params: invalid userid");
    };
    st.revoke_user(userid, Some(client_id));
    ok_json("{}")
}

/// Checks the client exists, is OAuth 2.0, and signed `action,<client_id>,<nonce>` with a
/// fresh nonce of its own, which is then consumed.
fn check_signed(st: &mut State, client_id: &str, action: &str, req: &Req) -> Result<(), Reply> {
    let Some(client) = st.clients.get(client_id) else {
        return Err(err_json(503, INVALID_CLIENT_ID));
    };
    if client.oauth1 {
        return Err(err_json(503, CLIENT_NOT_AUTHORIZED));
    }
    let (Some(nonce), Some(signature)) = (req.form("nonce"), req.form("signature")) else {
        return Err(err_json(503, INVALID_SIGNATURE));
    };
    let expected = hmac_hex(&client.secret, &format!("{action},{client_id},{nonce}"));
    if signature != expected {
        return Err(err_json(503, INVALID_SIGNATURE));
    }
    let now = st.now();
    let fresh = st
        .nonces
        .get(nonce)
        .is_some_and(|n| n.client_id == client_id && elapsed(now, n.issued) < NONCE_TTL);
    if !fresh {
        return Err(err_json(503, INVALID_NONCE));
    }
    st.nonces.remove(nonce);
    Ok(())
}

/// Checks that the client exists, is OAuth 2.0, and proved its secret (directly or by a
/// signed nonce, which is then consumed).
fn authenticate(st: &mut State, client_id: &str, req: &Req) -> Result<(), Reply> {
    let Some(client) = st.clients.get(client_id) else {
        return Err(err_json(503, INVALID_CLIENT_ID));
    };
    if client.oauth1 {
        return Err(err_json(503, CLIENT_NOT_AUTHORIZED));
    }
    if let Some(secret) = req.form("client_secret") {
        return if secret == client.secret {
            Ok(())
        } else {
            Err(err_json(503, INVALID_CLIENT_SECRET))
        };
    }
    if req.form("nonce").is_none() || req.form("signature").is_none() {
        return Err(err_json(503, INVALID_CLIENT_SECRET));
    }
    check_signed(st, client_id, "requesttoken", req)
}

fn exchange_code(st: &mut State, client_id: &str, req: &Req) -> Reply {
    let now = st.now();
    let code = req.form("code").unwrap_or("");
    let Some(c) = st
        .codes
        .get(code)
        .filter(|c| c.authorization.client_id == client_id && elapsed(now, c.issued) <= CODE_TTL)
    else {
        return err_json(503, INVALID_CODE);
    };
    if req.form("redirect_uri") != Some(c.redirect_uri.as_str()) {
        return err_json(503, REDIRECT_MISMATCH);
    }
    let userid = c.authorization.userid;
    if st.user_deleted(userid) {
        return err_json(503, INVALID_CODE);
    }
    if st.user_deactivated(userid) {
        return err_json(503, DEACTIVATED);
    }
    let Some(c) = st.codes.remove(code) else {
        return err_json(503, INVALID_CODE);
    };
    let scope = c.authorization.scope;
    let grant = st.issue_pair(client_id, userid, &scope, None);
    st.counters.successful_code_exchanges += 1;
    token_body(st, userid, &scope, &grant)
}

fn refresh(st: &mut State, client_id: &str, req: &Req) -> Reply {
    let Some(token) = present(req.form("refresh_token")) else {
        st.counters.served_invalid_refresh += 1;
        return err_json(503, INVALID_REFRESH);
    };
    if let Some(wait) = st.present_refresh(token) {
        st.counters.served_601 += 1;
        return err_json_body(601, &format!("{{\"wait_seconds\":{wait}}}"), SAME_ARGUMENTS);
    }
    let owner = st
        .refresh
        .get(token)
        .filter(|r| r.authorization.client_id == client_id)
        .map(|r| r.authorization.userid);
    let Some(userid) = owner.filter(|_| st.refresh_token_usable(token)) else {
        st.counters.served_invalid_refresh += 1;
        return err_json(503, INVALID_REFRESH);
    };
    if st.user_deactivated(userid) {
        return err_json(503, DEACTIVATED);
    }
    let Some((userid, scope, grant)) = st.rotate(token) else {
        st.counters.served_invalid_refresh += 1;
        return err_json(503, INVALID_REFRESH);
    };
    st.counters.successful_refreshes += 1;
    token_body(st, userid, &scope, &grant)
}

/// The success body, field order and types as real Withings sends them (userid a string).
fn token_body(st: &mut State, userid: u64, scope: &str, grant: &SimGrant) -> Reply {
    let csrf = st.random_token();
    Reply::Json(format!(
        "{{\"status\":0,\"body\":{{\"userid\":\"{userid}\",\"access_token\":\"{}\",\
         \"refresh_token\":\"{}\",\"expires_in\":{},\"scope\":{},\"token_type\":\"Bearer\",\
         \"csrf_token\":\"{csrf}\"}}}}",
        grant.access_token,
        grant.refresh_token,
        grant.expires_in,
        json_str(scope),
    ))
}

/// `POST /v2/signature` with `action=getnonce` (body only).
pub(crate) fn signature(shared: &Shared, req: &Req) -> Reply {
    let mut st = shared.lock();
    if req.method != Method::POST || req.form("action") != Some("getnonce") {
        return err_json(2554, NOT_IMPLEMENTED);
    }
    let Some(client_id) = present(req.form("client_id")) else {
        return err_json(503, NO_CLIENT_ID);
    };
    let Some(client) = st.clients.get(client_id) else {
        return err_json(503, INVALID_CLIENT_ID);
    };
    if client.oauth1 {
        return err_json(503, CLIENT_NOT_AUTHORIZED);
    }
    let timestamp = req.form("timestamp").unwrap_or("");
    let now = unix_secs(st.now());
    let in_window = timestamp
        .parse::<u64>()
        .is_ok_and(|ts| ts.abs_diff(now) <= TIMESTAMP_TOLERANCE.as_secs());
    if !in_window {
        return err_json(503, INVALID_TIMESTAMP);
    }
    let expected = hmac_hex(&client.secret, &format!("getnonce,{client_id},{timestamp}"));
    if req.form("signature") != Some(expected.as_str()) {
        return err_json(503, INVALID_SIGNATURE);
    }
    let nonce = st.new_nonce(client_id);
    Reply::Json(format!(
        "{{\"status\":0,\"body\":{{\"nonce\":\"{nonce}\"}}}}"
    ))
}
