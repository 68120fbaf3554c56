//! The data endpoints: `/measure`, `/v2/measure`, `/v2/sleep`, `/v2/user`, `/v2/heart`,
//! `/notify`, with plausible Withings-shaped bodies.

use std::fmt::Write;

use serde_json::{Value, json};

use super::Shared;
use super::history::{History, TIMEZONE, V2, mix};
use super::notify::{CALLBACK_STATUS, CALLBACK_UNREACHABLE, KNOWN_APPLI};
use super::oauth::{DEACTIVATED, NOT_IMPLEMENTED};
use super::server::{Reply, Req, err_json, json_str, ok_json};
use super::state::{State, Subscription, SubscriptionKey, scope_has, unix_secs};
use super::{HistoryConfig, SimGroup};

const NO_SUCH_SUBSCRIPTION: &str = "Invalid Params: no such subscription";
const INVALID_CALLBACK: &str = "Invalid Params: invalid callbackurl";
const INVALID_APPLI: &str = "Invalid Params: invalid appli";

/// What a data call needs: an answer now, or a `HEAD` check of a callback URL first.
pub(crate) enum Handled {
    Reply(Reply),
    Check(Pending),
}

/// A subscribe or update waiting for its callback check (the lock is released meanwhile).
pub(crate) struct Pending {
    /// The URL to check.
    pub(crate) url: String,
    token: String,
    change: Change,
}

enum Change {
    Subscribe(Subscription),
    /// The subscription `old` moved to `new`.
    Update {
        old: SubscriptionKey,
        new: Subscription,
    },
}

const INVALID_TOKEN: &str =
    "XRequestID: Not provided invalid_token: The access token provided is invalid";

const DATA_PATHS: [&str; 6] = [
    "/measure",
    "/v2/measure",
    "/v2/sleep",
    "/v2/user",
    "/v2/heart",
    "/notify",
];

/// Whether `path` is one of the data endpoints.
pub(crate) fn is_data_path(path: &str) -> bool {
    DATA_PATHS.contains(&path)
}

/// The scope an action requires (`None`: any valid token), or `None` if the action is unknown.
fn required_scope(path: &str, action: &str) -> Option<Option<&'static str>> {
    let scope = match (path, action) {
        ("/measure", "getmeas") => Some("user.metrics"),
        ("/v2/measure", "getactivity" | "getintradayactivity" | "getworkouts") => {
            Some("user.activity")
        }
        ("/v2/sleep", "get" | "getsummary") => Some("user.activity"),
        ("/v2/user", "get" | "getdevice" | "getgoals") => Some("user.info"),
        ("/v2/heart", "get" | "list") => Some("user.metrics"),
        ("/notify", "subscribe" | "get" | "list" | "update" | "revoke") => None,
        _ => return None,
    };
    Some(scope)
}

/// Extracts the token from `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(header: &str) -> &str {
    match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    }
}

/// Serves a data call.
pub(crate) fn handle(shared: &Shared, req: &Req) -> Handled {
    match handle_locked(shared, req) {
        Ok(reply) => Handled::Reply(reply),
        Err(pending) => Handled::Check(*pending),
    }
}

/// The answer, or (as `Err`) a subscription waiting for its callback check.
fn handle_locked(shared: &Shared, req: &Req) -> Result<Reply, Box<Pending>> {
    let mut st = shared.lock();
    // The header wins; a legacy `access_token` parameter is only looked at without one.
    let token = if req.has_authorization {
        req.authorization.as_deref().map(bearer).unwrap_or("")
    } else {
        match req.param("access_token") {
            Some(t) => {
                st.counters.access_token_in_params += 1;
                t
            }
            None => "",
        }
    };
    let owner = st
        .access
        .get(token)
        .map(|a| (a.client_id.clone(), a.userid, a.scope.clone()));
    let Some((client_id, userid, scope)) = owner.filter(|_| st.access_token_usable(token)) else {
        st.counters.served_401 += 1;
        return Ok(err_json(401, INVALID_TOKEN));
    };
    if st.user_deactivated(userid) {
        return Ok(err_json(503, DEACTIVATED));
    }
    if !st.rate_limit_ok(&client_id) {
        st.counters.served_601 += 1;
        return Ok(err_json(601, "Too many request"));
    }
    let action = req.param("action").unwrap_or("");
    let Some(required) = required_scope(&req.path, action) else {
        return Ok(err_json(2554, NOT_IMPLEMENTED));
    };
    if let Some(required) = required.filter(|r| !scope_has(&scope, r)) {
        return Ok(err_json(
            214,
            &format!("Unauthorized: missing scope {required}"),
        ));
    }
    let key = (userid, req.path.clone(), action.to_owned());
    *st.action_calls.entry(key).or_default() += 1;
    let body = if req.path == "/notify" {
        match notify(&mut st, &client_id, userid, action, req) {
            Ok(Notified::Body(body)) => body.to_string(),
            Ok(Notified::Check { url, change }) => {
                return Err(Box::new(Pending {
                    url,
                    token: token.to_owned(),
                    change,
                }));
            }
            Err(reply) => return Ok(reply),
        }
    } else {
        match serve(&mut st, userid, action, req) {
            Ok(body) => body,
            Err(reply) => return Ok(reply),
        }
    };
    st.mark_access_used(token);
    Ok(ok_json(&body))
}

/// After the callback check: the subscription is made (or moved) if the callback answered.
pub(crate) fn finish(shared: &Shared, pending: Pending, reachable: bool) -> Reply {
    if !reachable {
        return err_json(CALLBACK_STATUS, CALLBACK_UNREACHABLE);
    }
    let mut st = shared.lock();
    match pending.change {
        Change::Subscribe(sub) => {
            let exists = (st.subscriptions.iter()).any(|s| s.key == sub.key);
            if !exists {
                st.notify_counters.subscriptions_made += 1;
                st.subscriptions.push(sub);
            }
        }
        Change::Update { old, new } => {
            let Some(index) = (st.subscriptions.iter()).position(|s| s.key == old) else {
                return err_json(294, NO_SUCH_SUBSCRIPTION);
            };
            st.subscriptions.remove(index);
            st.subscriptions.retain(|s| s.key != new.key);
            st.subscriptions.push(new);
        }
    }
    st.mark_access_used(&pending.token);
    ok_json("{}")
}

const DAY: u64 = 86_400;

const INVALID_OFFSET: &str = "Invalid Params: invalid offset";
const INVALID_SIGNAL: &str = "Invalid Params: invalid signalid";

/// The answer to a data call other than `/notify`.
fn serve(st: &mut State, userid: u64, action: &str, req: &Req) -> Result<String, Reply> {
    let now = unix_secs(st.now());
    let config = st.config.history.clone();
    let h = st.history(userid);
    // Offsets are only good for the endpoint and user that made them.
    let salt = mix(h.salt ^ fnv(&req.path) ^ fnv(action).rotate_left(17));
    let pager = Pager {
        size: config.page_size.max(1),
        salt,
    };
    // The v2 endpoints selected by local days or `lastupdate`, paged alike.
    let days = |rows: &[Value], key, place| by_day(req, &config, &pager, rows, key, place);
    let body = match (req.path.as_str(), action) {
        // The busiest endpoint is written straight to text: thousands of users at once.
        ("/measure", _) => return getmeas(now, req, &config, &pager, h),
        ("/v2/measure", "getactivity") => days(&h.v2().activities, "activities", Fields::Top),
        ("/v2/measure", "getintradayactivity") => Ok(intraday(now, req, h)),
        ("/v2/measure", _) => days(&h.v2().workouts, "series", Fields::Data),
        ("/v2/sleep", "get") => Ok(sleep_get(now, req, h.v2())),
        ("/v2/sleep", _) => days(&h.v2().summaries, "series", Fields::Data),
        ("/v2/user", "get") => Ok(user_get(userid)),
        ("/v2/user", "getgoals") => Ok(json!({"goals": h.goals.clone().unwrap_or(json!([]))})),
        ("/v2/user", _) => Ok(json!({"devices": h.v2().devices})),
        ("/v2/heart", "get") => heart_get(req, h.v2()),
        (_, _) => heart_list(req, &pager, h.v2()),
    };
    body.map(|b| b.to_string())
}

/// FNV-1a of a string.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Pages of `size` rows; an offset is an opaque number that says where the next page starts,
/// checked against the endpoint's `salt` (it is not a row count).
struct Pager {
    size: usize,
    salt: u64,
}

impl Pager {
    fn check(&self, position: u64) -> u64 {
        100 + mix(self.salt ^ position) % 900
    }

    fn token(&self, position: usize) -> u64 {
        let p = position as u64;
        p * 1_000 + self.check(p)
    }

    /// The rows of this page among `len`, and the offset of the next page if there is one.
    fn page(&self, len: usize, req: &Req) -> Result<(std::ops::Range<usize>, Option<u64>), Reply> {
        let start = match req.param("offset").map(str::trim).filter(|o| !o.is_empty()) {
            None | Some("0") => 0,
            Some(raw) => {
                let token: u64 = raw.parse().map_err(|_| err_json(293, INVALID_OFFSET))?;
                let position = token / 1_000;
                if position == 0 || token % 1_000 != self.check(position) {
                    return Err(err_json(293, INVALID_OFFSET));
                }
                usize::try_from(position).unwrap_or(usize::MAX).min(len)
            }
        };
        let end = start.saturating_add(self.size).min(len);
        let next = (end < len).then(|| self.token(end));
        Ok((start..end, next))
    }
}

fn wanted_types(req: &Req) -> Option<Vec<i64>> {
    let raw = req.param("meastypes").or_else(|| req.param("meastype"))?;
    Some(
        raw.split(',')
            .filter_map(|t| t.trim().parse().ok())
            .collect(),
    )
}

/// A Unix-seconds parameter.
fn secs_param(req: &Req, key: &str) -> Option<u64> {
    req.param(key).and_then(|v| v.trim().parse().ok())
}

/// A JSON string, or `null`.
fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

/// A group as getmeas sends it, with only the `wanted` measures, written to `out`.
fn write_group(out: &mut String, g: &SimGroup, wanted: Option<&[i64]>) {
    let _ = write!(
        out,
        "{{\"grpid\":{},\"attrib\":{},\"date\":{},\"created\":{},\"modified\":{},\"category\":{},\"deviceid\":{},\"hash_deviceid\":{},\"model\":{},\"modelid\":{},\"measures\":[",
        g.grpid,
        g.attrib,
        g.date,
        g.created,
        g.modified,
        g.category,
        opt_str(g.source.deviceid.as_deref()),
        opt_str(g.source.hash_deviceid.as_deref()),
        opt_str(g.source.model.as_deref()),
        g.source
            .modelid
            .map_or_else(|| "null".to_owned(), |m| m.to_string()),
    );
    let measures = (g.measures.iter()).filter(|m| wanted.is_none_or(|w| w.contains(&m.meastype)));
    for (i, m) in measures.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"value\":{},\"type\":{},\"unit\":{},\"algo\":0,\"fm\":3",
            m.value, m.meastype, m.unit
        );
        if let Some(p) = m.position {
            let _ = write!(out, ",\"position\":{p}");
        }
        out.push('}');
    }
    let _ = write!(
        out,
        "],\"comment\":null,\"timezone\":{},\"is_inconclusive\":false}}",
        json_str(TIMEZONE)
    );
}

/// getmeas: a window on `date` or `lastupdate` on `modified`, the newest upload first (so not
/// in date order), `more` as an integer.
fn getmeas(
    now: u64,
    req: &Req,
    config: &HistoryConfig,
    pager: &Pager,
    h: &History,
) -> Result<String, Reply> {
    let wanted = wanted_types(req);
    let category: Option<i64> = req.param("category").and_then(|c| c.trim().parse().ok());
    let (start, end, since) = (
        secs_param(req, "startdate"),
        secs_param(req, "enddate"),
        secs_param(req, "lastupdate"),
    );
    let mixed = since.is_some() && (start.is_some() || end.is_some());
    let mut groups: Vec<&SimGroup> = if mixed && config.mixed_selection_empty {
        Vec::new()
    } else {
        (h.groups.iter())
            .filter(|g| start.is_none_or(|s| g.date >= s) && end.is_none_or(|e| g.date <= e))
            .filter(|g| since.is_none_or(|l| g.modified >= l))
            .filter(|g| category.is_none_or(|c| g.category == c))
            .filter(|g| {
                (wanted.as_ref()).is_none_or(|w| g.measures.iter().any(|m| w.contains(&m.meastype)))
            })
            .collect()
    };
    groups.sort_by(|a, b| b.created.cmp(&a.created).then(b.grpid.cmp(&a.grpid)));
    let (range, next) = pager.page(groups.len(), req)?;
    let mut body = format!(
        "{{\"updatetime\":{now},\"timezone\":{},\"more\":{}",
        json_str(TIMEZONE),
        i32::from(next.is_some())
    );
    if let Some(offset) = next {
        let _ = write!(body, ",\"offset\":{offset}");
    }
    body.push_str(",\"measuregrps\":[");
    for (i, g) in groups[range].iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_group(&mut body, g, wanted.as_deref());
    }
    body.push_str("]}");
    Ok(body)
}

/// Where `data_fields` names are looked for in a row.
#[derive(Clone, Copy)]
enum Fields {
    /// At the top (getactivity).
    Top,
    /// In `data` (getworkouts, sleep getsummary).
    Data,
}

/// getactivity's metrics: the fields `data_fields` can leave out.
const ACTIVITY_FIELDS: [&str; 18] = [
    "steps",
    "distance",
    "elevation",
    "soft",
    "moderate",
    "intense",
    "active",
    "calories",
    "totalcalories",
    "hr_average",
    "hr_min",
    "hr_max",
    "hr_zone_0",
    "hr_zone_1",
    "hr_zone_2",
    "hr_zone_3",
    "hr_zone_4",
    "hr_zone_5",
];

/// The `data_fields` list, if sent.
fn data_fields(req: &Req) -> Option<Vec<String>> {
    let raw = req.param("data_fields")?;
    Some(raw.split(',').map(|f| f.trim().to_owned()).collect())
}

/// `row` with only the requested fields.
fn trimmed(row: &Value, fields: Option<&[String]>, place: Fields) -> Value {
    let Some(fields) = fields else {
        return row.clone();
    };
    let keep = |k: &String| fields.iter().any(|f| f == k);
    let mut row = row.clone();
    match place {
        Fields::Top => {
            if let Some(map) = row.as_object_mut() {
                map.retain(|k, _| !ACTIVITY_FIELDS.contains(&k.as_str()) || keep(k));
            }
        }
        Fields::Data => {
            if let Some(map) = row.get_mut("data").and_then(Value::as_object_mut) {
                map.retain(|k, _| keep(k));
            }
        }
    }
    row
}

/// A v2 list selected by local days (`startdateymd`/`enddateymd` on `date`) or `lastupdate`
/// (on `modified`), paged with `more` as a boolean.
fn by_day(
    req: &Req,
    config: &HistoryConfig,
    pager: &Pager,
    rows: &[Value],
    key: &str,
    place: Fields,
) -> Result<Value, Reply> {
    let (from, to) = (req.param("startdateymd"), req.param("enddateymd"));
    let since = secs_param(req, "lastupdate");
    let mixed = since.is_some() && (from.is_some() || to.is_some());
    let selected: Vec<&Value> = if mixed && config.mixed_selection_empty {
        Vec::new()
    } else {
        (rows.iter())
            .filter(|r| {
                let date = r["date"].as_str().unwrap_or("");
                from.is_none_or(|f| date >= f.trim()) && to.is_none_or(|t| date <= t.trim())
            })
            .filter(|r| since.is_none_or(|l| r["modified"].as_u64().unwrap_or(0) >= l))
            .collect()
    };
    let (range, next) = pager.page(selected.len(), req)?;
    let fields = data_fields(req);
    let page: Vec<Value> = selected[range]
        .iter()
        .map(|r| trimmed(r, fields.as_deref(), place))
        .collect();
    Ok(json!({key: page, "more": next.is_some(), "offset": next.unwrap_or(0)}))
}

/// The window of a 24 h endpoint: at most one day from `startdate`; without dates, the last
/// `latest` seconds before now.
fn capped_window(req: &Req, now: u64, latest: u64) -> (u64, u64) {
    match (secs_param(req, "startdate"), secs_param(req, "enddate")) {
        (Some(start), Some(end)) => (start, end.min(start + DAY)),
        (Some(start), None) => (start, start + DAY),
        (None, Some(end)) => (end.saturating_sub(DAY), end),
        (None, None) => (now.saturating_sub(latest), now),
    }
}

/// getintradayactivity: an object keyed by epoch seconds, the first 24 h of the window only.
fn intraday(now: u64, req: &Req, h: &History) -> Value {
    let (from, to) = capped_window(req, now, 3_600);
    let mut series = h.intraday(from, to, now);
    if let Some(fields) = data_fields(req) {
        const ALWAYS: [&str; 5] = ["deviceid", "hash_deviceid", "model", "model_id", "duration"];
        for sample in series.values_mut().filter_map(Value::as_object_mut) {
            sample.retain(|k, _| ALWAYS.contains(&k.as_str()) || fields.iter().any(|f| f == k));
        }
    }
    json!({ "series": series })
}

/// sleep get: the segments starting in the first 24 h of the window (without dates, the last
/// night); an array, as captured (the document says object).
fn sleep_get(now: u64, req: &Req, h: &V2) -> Value {
    let (from, to) = if req.param("startdate").is_none() && req.param("enddate").is_none() {
        let last = h.summaries.iter().rev().find(|s| s["model"] == 32);
        last.map_or((now.saturating_sub(DAY), now), |s| {
            (
                s["startdate"].as_u64().unwrap_or(0),
                s["enddate"].as_u64().unwrap_or(now),
            )
        })
    } else {
        capped_window(req, now, DAY)
    };
    let fields = data_fields(req);
    const MAPS: [&str; 3] = ["hr", "rr", "snoring"];
    let series: Vec<Value> = (h.segments.iter())
        .filter(|s| s["startdate"].as_u64().is_some_and(|t| t >= from && t < to))
        .map(|s| {
            let mut s = s.clone();
            if let (Some(fields), Some(map)) = (&fields, s.as_object_mut()) {
                map.retain(|k, _| !MAPS.contains(&k.as_str()) || fields.iter().any(|f| f == k));
            }
            s
        })
        .collect();
    json!({"series": series, "model": 32})
}

fn user_get(userid: u64) -> Value {
    json!({
        "user": {
            "userid": userid,
            "firstname": "Sim",
            "lastname": "User",
            "shortname": "SIM",
            "gender": 0,
            "birthdate": 504_921_600,
            "email": format!("user{userid}@example.com"),
            "timezone": TIMEZONE,
        }
    })
}

/// heart get: the signal of `signalid` (without one, the latest ECG's).
fn heart_get(req: &Req, h: &V2) -> Result<Value, Reply> {
    let ecg = match req.param("signalid") {
        Some(raw) => {
            let id: u64 = raw
                .trim()
                .parse()
                .map_err(|_| err_json(293, INVALID_SIGNAL))?;
            (h.ecgs.iter())
                .find(|e| e["ecg"]["signalid"] == id)
                .ok_or_else(|| err_json(293, INVALID_SIGNAL))?
        }
        None => match h.ecgs.last() {
            Some(ecg) => ecg,
            None => return Err(err_json(293, INVALID_SIGNAL)),
        },
    };
    let id = ecg["ecg"]["signalid"].as_u64().unwrap_or(0);
    let signal: Vec<i64> = (0..500u64)
        .map(|i| {
            [0, 12, 80, -30, 5][usize::try_from(i % 5).unwrap_or(0)] + (mix(id ^ i) % 7) as i64
        })
        .collect();
    Ok(json!({
        "signal": signal,
        "sampling_frequency": 500,
        "wearposition": if ecg["model"] == 44 { 0 } else { 1 },
        "model": ecg["model"],
        "heart_rate": ecg["heart_rate"],
    }))
}

/// heart list: a window on `timestamp` (no `lastupdate`), newest first, `more` a boolean.
fn heart_list(req: &Req, pager: &Pager, h: &V2) -> Result<Value, Reply> {
    let (start, end) = (secs_param(req, "startdate"), secs_param(req, "enddate"));
    let selected: Vec<&Value> = (h.ecgs.iter().rev())
        .filter(|e| {
            let t = e["timestamp"].as_u64().unwrap_or(0);
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        })
        .collect();
    let (range, next) = pager.page(selected.len(), req)?;
    let page: Vec<&Value> = selected[range].to_vec();
    Ok(json!({"series": page, "more": next.is_some(), "offset": next.unwrap_or(0)}))
}

/// What a `/notify` call does: answer now, or check a callback first.
enum Notified {
    Body(Value),
    Check { url: String, change: Change },
}

/// The `appli` parameter: absent, a documented code, or refused.
fn appli_param(req: &Req, key: &str) -> Result<Option<i64>, Reply> {
    match req.param(key).map(str::trim).filter(|a| !a.is_empty()) {
        None => Ok(None),
        Some(raw) => match raw.parse::<i64>() {
            Ok(code) if KNOWN_APPLI.contains(&code) => Ok(Some(code)),
            _ => Err(err_json(293, INVALID_APPLI)),
        },
    }
}

/// A callback URL parameter, present and at most 255 characters (Withings' limit).
fn callback_param<'r>(req: &'r Req, key: &str) -> Result<&'r str, Reply> {
    match req.param(key) {
        Some(url) if !url.is_empty() && url.len() <= 255 => Ok(url),
        _ => Err(err_json(293, INVALID_CALLBACK)),
    }
}

fn profile(s: &Subscription) -> Value {
    json!({
        "appli": s.key.appli,
        "callbackurl": s.key.callbackurl,
        "expires": 2_147_483_647u64,
        "comment": s.comment,
    })
}

fn notify(
    st: &mut State,
    client_id: &str,
    userid: u64,
    action: &str,
    req: &Req,
) -> Result<Notified, Reply> {
    let mine = |s: &&Subscription| s.key.client_id == client_id && s.key.userid == userid;
    match action {
        "subscribe" => {
            let url = callback_param(req, "callbackurl")?;
            let appli = appli_param(req, "appli")?.ok_or_else(|| err_json(293, INVALID_APPLI))?;
            Ok(Notified::Check {
                url: url.to_owned(),
                change: Change::Subscribe(Subscription {
                    key: SubscriptionKey {
                        client_id: client_id.to_owned(),
                        userid,
                        callbackurl: url.to_owned(),
                        appli,
                    },
                    comment: req.param("comment").map(str::to_owned),
                    failures: 0,
                }),
            })
        }
        "get" => {
            let url = callback_param(req, "callbackurl")?;
            let appli = appli_param(req, "appli")?.ok_or_else(|| err_json(293, INVALID_APPLI))?;
            st.subscriptions
                .iter()
                .filter(mine)
                .find(|s| s.key.callbackurl == url && s.key.appli == appli)
                .map(|s| Notified::Body(profile(s)))
                .ok_or_else(|| err_json(294, NO_SUCH_SUBSCRIPTION))
        }
        "list" => {
            let appli = appli_param(req, "appli")?;
            let profiles: Vec<Value> = (st.subscriptions.iter())
                .filter(mine)
                .filter(|s| appli.is_none_or(|a| a == s.key.appli))
                .map(profile)
                .collect();
            Ok(Notified::Body(json!({ "profiles": profiles })))
        }
        "update" => {
            let old_url = callback_param(req, "callbackurl")?;
            let old_appli =
                appli_param(req, "appli")?.ok_or_else(|| err_json(293, INVALID_APPLI))?;
            let new_url = callback_param(req, "new_callbackurl")?;
            let new_appli = appli_param(req, "new_appli")?.unwrap_or(old_appli);
            let Some(old) = (st.subscriptions.iter())
                .filter(mine)
                .find(|s| s.key.callbackurl == old_url && s.key.appli == old_appli)
            else {
                return Err(err_json(294, NO_SUCH_SUBSCRIPTION));
            };
            let comment = req
                .param("comment")
                .map(str::to_owned)
                .or(old.comment.clone());
            Ok(Notified::Check {
                url: new_url.to_owned(),
                change: Change::Update {
                    old: old.key.clone(),
                    new: Subscription {
                        key: SubscriptionKey {
                            callbackurl: new_url.to_owned(),
                            appli: new_appli,
                            ..old.key.clone()
                        },
                        comment,
                        failures: 0,
                    },
                },
            })
        }
        _ => {
            let url = callback_param(req, "callbackurl")?;
            let appli = appli_param(req, "appli")?;
            let before = st.subscriptions.len();
            st.subscriptions.retain(|s| {
                !(mine(&s) && s.key.callbackurl == url && appli.is_none_or(|a| a == s.key.appli))
            });
            if st.subscriptions.len() == before {
                return Err(err_json(294, NO_SUCH_SUBSCRIPTION));
            }
            Ok(Notified::Body(json!({})))
        }
    }
}
