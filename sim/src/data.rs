//! The data endpoints: `/measure`, `/v2/measure`, `/v2/sleep`, `/v2/user`, `/v2/heart`,
//! `/notify`, with plausible Withings-shaped bodies.

use serde_json::{Value, json};

use super::Shared;
use super::notify::{CALLBACK_STATUS, CALLBACK_UNREACHABLE, KNOWN_APPLI};
use super::oauth::{DEACTIVATED, NOT_IMPLEMENTED};
use super::server::{Reply, Req, err_json, ok_json};
use super::state::{AddedActivity, AddedMeasure, State, Subscription, scope_has, unix_secs};

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
    Update {
        old_url: String,
        old_appli: i64,
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
        ("/v2/user", "get" | "getdevice") => Some("user.info"),
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
    let now = unix_secs(st.now());
    let no_added = Vec::new();
    let body = match (req.path.as_str(), action) {
        ("/measure", _) => getmeas(
            now,
            userid,
            req,
            st.measures.get(&userid).unwrap_or(&no_added),
        ),
        ("/v2/measure", "getactivity") => getactivity(
            now,
            userid,
            st.activities.get(&userid).map_or(&[][..], Vec::as_slice),
        ),
        ("/v2/measure", "getintradayactivity") => getintradayactivity(now, userid),
        ("/v2/measure", _) => getworkouts(now, userid),
        ("/v2/sleep", "get") => sleep_get(now),
        ("/v2/sleep", _) => sleep_summary(now, userid),
        ("/v2/user", "get") => user_get(userid),
        ("/v2/user", _) => user_devices(now, userid),
        ("/v2/heart", "get") => heart_get(),
        ("/v2/heart", _) => heart_list(now, userid),
        _ => match notify(&mut st, &client_id, userid, action, req) {
            Ok(Notified::Body(body)) => body,
            Ok(Notified::Check { url, change }) => {
                return Err(Box::new(Pending {
                    url,
                    token: token.to_owned(),
                    change,
                }));
            }
            Err(reply) => return Ok(reply),
        },
    };
    st.mark_access_used(token);
    Ok(ok_json(&body.to_string()))
}

/// After the callback check: the subscription is made (or moved) if the callback answered.
pub(crate) fn finish(shared: &Shared, pending: Pending, reachable: bool) -> Reply {
    if !reachable {
        return err_json(CALLBACK_STATUS, CALLBACK_UNREACHABLE);
    }
    let mut st = shared.lock();
    match pending.change {
        Change::Subscribe(sub) => {
            let exists = (st.subscriptions.iter())
                .any(|s| s.same(&sub.client_id, sub.userid, &sub.callbackurl, sub.appli));
            if !exists {
                st.notify_counters.subscriptions_made += 1;
                st.subscriptions.push(sub);
            }
        }
        Change::Update {
            old_url,
            old_appli,
            new,
        } => {
            let Some(index) = (st.subscriptions.iter())
                .position(|s| s.same(&new.client_id, new.userid, &old_url, old_appli))
            else {
                return err_json(294, NO_SUCH_SUBSCRIPTION);
            };
            st.subscriptions.remove(index);
            st.subscriptions
                .retain(|s| !s.same(&new.client_id, new.userid, &new.callbackurl, new.appli));
            st.subscriptions.push(new);
        }
    }
    st.mark_access_used(&pending.token);
    ok_json("{}")
}

/// `YYYY-MM-DD` of a Unix timestamp (UTC).
fn ymd(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn day_start(now: u64) -> u64 {
    now - now % 86_400
}

/// The most recent 07:00 UTC at or before `now`: when the simulated user weighs in and wakes.
fn morning(now: u64) -> u64 {
    let today = day_start(now) + 7 * 3_600;
    if today <= now {
        today
    } else {
        today.saturating_sub(86_400)
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

fn getmeas(now: u64, userid: u64, req: &Req, added: &[AddedMeasure]) -> Value {
    let wanted = wanted_types(req);
    let (start, end, since) = (
        secs_param(req, "startdate"),
        secs_param(req, "enddate"),
        secs_param(req, "lastupdate"),
    );
    let in_range = |date: u64| {
        start.is_none_or(|s| date >= s)
            && end.is_none_or(|e| date <= e)
            && since.is_none_or(|l| date >= l)
    };
    let weight = 70_000 + i64::try_from(userid % 5_000).unwrap_or(0);
    let groups: Vec<Value> = (0..3u64)
        .filter_map(|i| {
            let date = morning(now).saturating_sub(i * 86_400);
            if !in_range(date) {
                return None;
            }
            let g = i64::try_from(i).unwrap_or(0);
            let measures: Vec<Value> = [
                (weight - 150 * g, 1, -3),
                (2_150 + 10 * g, 6, -2),
                (5_480 - 20 * g, 76, -2),
            ]
            .into_iter()
            .filter(|(_, ty, _)| wanted.as_ref().is_none_or(|w| w.contains(ty)))
            .map(|(value, ty, unit)| json!({"value": value, "type": ty, "unit": unit, "algo": 0, "fm": 3}))
            .collect();
            if measures.is_empty() {
                return None;
            }
            Some(json!({
                "grpid": 5_000_000_000u64 + userid % 1_000_000 * 10 + i,
                "attrib": 0,
                "date": date,
                "created": (date + 5).min(now),
                "modified": (date + 5).min(now),
                "category": 1,
                "deviceid": null,
                "hash_deviceid": null,
                "measures": measures,
                "modelid": 5,
                "model": "Body+",
                "comment": null,
            }))
        })
        .collect();
    let mut groups = groups;
    // Added measures come first: the newest group first, as Withings sorts them.
    let added = added
        .iter()
        .rev()
        .filter(|m| in_range(m.date))
        .filter(|m| wanted.as_ref().is_none_or(|w| w.contains(&m.meastype)))
        .map(|m| {
            json!({
                "grpid": m.grpid,
                "attrib": 0,
                "date": m.date,
                "created": m.date,
                "modified": m.date,
                "category": 1,
                "deviceid": null,
                "hash_deviceid": null,
                "measures": [{"value": m.value, "type": m.meastype, "unit": m.unit, "algo": 0, "fm": 3}],
                "modelid": 5,
                "model": "Body+",
                "comment": null,
            })
        });
    groups.splice(0..0, added);
    json!({
        "updatetime": now,
        "timezone": "Europe/Paris",
        "measuregrps": groups,
        "more": 0,
        "offset": 0,
    })
}

fn getactivity(now: u64, userid: u64, added: &[AddedActivity]) -> Value {
    let base = userid % 1_000;
    let added = added.iter().rev().map(|a| (a.date, a.steps));
    let synthetic = (1..=3u64).map(|i| (now.saturating_sub(i * 86_400), 6_000 + base + 500 * i));
    let activities: Vec<Value> = added
        .chain(synthetic)
        .map(|(date, steps)| {
            json!({
                "date": ymd(date),
                "timezone": "Europe/Paris",
                "deviceid": null,
                "hash_deviceid": null,
                "brand": 18,
                "is_tracker": true,
                "steps": steps,
                "distance": steps as f64 * 0.75,
                "elevation": 12.5,
                "soft": 3_600,
                "moderate": 1_200,
                "intense": 300,
                "active": 1_500,
                "calories": 320.4,
                "totalcalories": 2_240.9,
                "hr_average": 71,
                "hr_min": 52,
                "hr_max": 141,
                "hr_zone_0": 40_000,
                "hr_zone_1": 3_000,
                "hr_zone_2": 600,
                "hr_zone_3": 60,
            })
        })
        .collect();
    json!({"activities": activities, "more": false, "offset": 0})
}

fn getintradayactivity(now: u64, userid: u64) -> Value {
    let start = (now - now % 3_600).saturating_sub(3_600);
    let mut series = serde_json::Map::new();
    for i in 0..4u64 {
        series.insert(
            (start + i * 900).to_string(),
            json!({
                "deviceid": null,
                "hash_deviceid": null,
                "model": "Withings ScanWatch",
                "model_id": 93,
                "steps": 40 + (userid + i) % 60,
                "elevation": 0,
                "calories": 2.1,
                "distance": 31.5,
                "stroke": 0,
                "pool_lap": 0,
                "duration": 60,
                "heart_rate": 78,
            }),
        );
    }
    json!({ "series": series })
}

fn getworkouts(now: u64, userid: u64) -> Value {
    let start = day_start(now).saturating_sub(86_400) + 18 * 3_600;
    json!({
        "series": [{
            "id": 900_000 + userid % 100_000,
            "category": 1,
            "timezone": "Europe/Paris",
            "model": 1055,
            "attrib": 7,
            "startdate": start,
            "enddate": start + 1_800,
            "date": ymd(start),
            "modified": start + 1_900,
            "deviceid": null,
            "data": {
                "calories": 180,
                "intensity": 50,
                "manual_distance": 0,
                "manual_calories": 0,
                "hr_average": 121,
                "hr_min": 85,
                "hr_max": 162,
                "steps": 3_900,
                "distance": 3_100,
                "elevation": 8,
            },
        }],
        "more": false,
        "offset": 0,
    })
}

fn night(now: u64) -> (u64, u64) {
    let end = morning(now).saturating_sub(1_800);
    (end.saturating_sub(8 * 3_600), end)
}

fn sleep_get(now: u64) -> Value {
    let (start, _) = night(now);
    let series: Vec<Value> = [(0, 1), (1, 2), (2, 3), (1, 1), (0, 2)]
        .iter()
        .scan(start, |t, &(state, hours)| {
            let s = *t;
            *t += hours * 3_600 / 2;
            Some(json!({"startdate": s, "enddate": *t, "state": state, "hr": {}, "rr": {}}))
        })
        .collect();
    json!({"series": series, "model": 32})
}

fn sleep_summary(now: u64, userid: u64) -> Value {
    let (start, end) = night(now);
    json!({
        "series": [{
            "id": 2_000_000 + userid % 100_000,
            "timezone": "Europe/Paris",
            "model": 32,
            "model_id": 63,
            "startdate": start,
            "enddate": end,
            "date": ymd(end),
            "created": end + 600,
            "modified": end + 600,
            "data": {
                "wakeupduration": 1_200,
                "lightsleepduration": 14_400,
                "deepsleepduration": 6_000,
                "remsleepduration": 5_400,
                "wakeupcount": 2,
                "durationtosleep": 540,
                "durationtowakeup": 300,
                "hr_average": 58,
                "hr_min": 49,
                "hr_max": 77,
                "rr_average": 14,
                "sleep_score": 81,
            },
        }],
        "more": false,
        "offset": 0,
    })
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
            "timezone": "Europe/Paris",
        }
    })
}

fn user_devices(now: u64, userid: u64) -> Value {
    json!({
        "devices": [{
            "type": "Scale",
            "model": "Body+",
            "model_id": 5,
            "battery": "high",
            "deviceid": format!("{:040x}", userid),
            "hash_deviceid": format!("{:040x}", userid.wrapping_mul(31)),
            "timezone": "Europe/Paris",
            "last_session_date": now.saturating_sub(3_600),
        }]
    })
}

fn heart_get() -> Value {
    let signal: Vec<i64> = (0..50).map(|i| [0, 12, 80, -30, 5][i % 5]).collect();
    json!({"signal": signal, "sampling_frequency": 500, "wearposition": 1})
}

fn heart_list(now: u64, userid: u64) -> Value {
    json!({
        "series": [{
            "deviceid": null,
            "model": 44,
            "ecg": {"signalid": 100_000 + userid % 100_000, "afib": 0},
            "bloodpressure": {"diastole": 79, "systole": 121},
            "heart_rate": 68,
            "timestamp": now.saturating_sub(7_200),
            "timezone": "Europe/Paris",
        }],
        "more": false,
        "offset": 0,
    })
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
        "appli": s.appli,
        "callbackurl": s.callbackurl,
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
    let mine = |s: &&Subscription| s.client_id == client_id && s.userid == userid;
    match action {
        "subscribe" => {
            let url = callback_param(req, "callbackurl")?;
            let appli = appli_param(req, "appli")?.ok_or_else(|| err_json(293, INVALID_APPLI))?;
            Ok(Notified::Check {
                url: url.to_owned(),
                change: Change::Subscribe(Subscription {
                    client_id: client_id.to_owned(),
                    userid,
                    callbackurl: url.to_owned(),
                    appli,
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
                .find(|s| s.callbackurl == url && s.appli == appli)
                .map(|s| Notified::Body(profile(s)))
                .ok_or_else(|| err_json(294, NO_SUCH_SUBSCRIPTION))
        }
        "list" => {
            let appli = appli_param(req, "appli")?;
            let profiles: Vec<Value> = (st.subscriptions.iter())
                .filter(mine)
                .filter(|s| appli.is_none_or(|a| a == s.appli))
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
                .find(|s| s.callbackurl == old_url && s.appli == old_appli)
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
                    old_url: old_url.to_owned(),
                    old_appli,
                    new: Subscription {
                        client_id: client_id.to_owned(),
                        userid,
                        callbackurl: new_url.to_owned(),
                        appli: new_appli,
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
                !(s.client_id == client_id
                    && s.userid == userid
                    && s.callbackurl == url
                    && appli.is_none_or(|a| a == s.appli))
            });
            if st.subscriptions.len() == before {
                return Err(err_json(294, NO_SUCH_SUBSCRIPTION));
            }
            Ok(Notified::Body(json!({})))
        }
    }
}
