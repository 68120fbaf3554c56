//! The seeded history over real HTTP: raw JSON shapes, opaque offsets, the mixed-selection
//! empty answer, the 24 h caps, mutations and the per-action counters.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower_withings::UserId;
use withings_sim::{HistoryConfig, Series, SimMeasure, Simulator};

#[path = "../../tests/support/history_codes.rs"]
mod history_codes;

const USER: UserId = UserId(4_242);
const SCOPE: &str = "user.info,user.metrics,user.activity";
const ANCHOR: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

struct H {
    sim: Simulator,
    client: Client<HttpConnector, Full<Bytes>>,
    token: String,
}

impl H {
    async fn new(history: HistoryConfig) -> H {
        let sim = Simulator::start_with(history.into()).await.unwrap();
        let token = sim.issue_grant("app", USER, SCOPE).access_token;
        H {
            sim,
            client: Client::builder(TokioExecutor::new()).build_http(),
            token,
        }
    }

    /// The whole answer (`status` and `body`) of one call.
    async fn call(&self, path: &str, pairs: &[(&str, &str)]) -> Value {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let req = http::Request::post(format!("{}{path}", self.sim.api_base()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The body of a successful call.
    async fn body(&self, path: &str, pairs: &[(&str, &str)]) -> Value {
        let answer = self.call(path, pairs).await;
        assert_eq!(answer["status"], 0, "{answer}");
        answer["body"].clone()
    }

    /// Every row of a paged call, following `more`/`offset`; the offsets seen.
    async fn all(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        rows: &str,
    ) -> (Vec<Value>, Vec<String>) {
        let (mut all, mut offsets) = (Vec::new(), Vec::new());
        let mut offset: Option<String> = None;
        loop {
            let mut p = pairs.to_vec();
            if let Some(o) = &offset {
                p.push(("offset", o));
            }
            let body = self.body(path, &p).await;
            all.extend(body[rows].as_array().unwrap().iter().cloned());
            let more = match &body["more"] {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_i64() == Some(1),
                other => panic!("more is {other}"),
            };
            if !more {
                return (all, offsets);
            }
            let next = body["offset"].as_u64().unwrap().to_string();
            offsets.push(next.clone());
            offset = Some(next);
        }
    }
}

fn small() -> HistoryConfig {
    HistoryConfig {
        days: 40,
        groups_per_day: 3,
        page_size: 7,
        anchor: Some(ANCHOR),
        ..HistoryConfig::default()
    }
}

#[tokio::test]
async fn getmeas_pages_with_opaque_offsets_to_exactly_the_history() {
    let h = H::new(small()).await;
    let truth = h.sim.measure_groups(USER);
    assert_eq!(truth.len(), 120);
    let (rows, offsets) = h
        .all(
            "/measure",
            &[("action", "getmeas"), ("lastupdate", "0")],
            "measuregrps",
        )
        .await;
    assert_eq!(offsets.len(), 120 / 7);
    // The offsets are not row counts.
    for (i, o) in offsets.iter().enumerate() {
        assert_ne!(o, &((i + 1) * 7).to_string());
    }
    // Each group once, exactly as the simulator holds it.
    let mut read: BTreeMap<u64, &Value> = BTreeMap::new();
    for row in &rows {
        assert!(
            read.insert(row["grpid"].as_u64().unwrap(), row).is_none(),
            "{row}"
        );
    }
    assert_eq!(read.len(), truth.len());
    for g in &truth {
        let row = read[&g.grpid];
        assert_eq!(row["date"], g.date);
        assert_eq!(row["created"], g.created);
        assert_eq!(row["modified"], g.modified);
        assert_eq!(row["attrib"], g.attrib);
        let measures: Vec<(i64, i64, i64, Option<i64>)> =
            (row["measures"].as_array().unwrap().iter())
                .map(|m| {
                    (
                        m["type"].as_i64().unwrap(),
                        m["value"].as_i64().unwrap(),
                        m["unit"].as_i64().unwrap(),
                        m.get("position").map(|p| p.as_i64().unwrap()),
                    )
                })
                .collect();
        let held: Vec<_> = (g.measures.iter())
            .map(|m| (m.meastype, m.value, m.unit, m.position))
            .collect();
        assert_eq!(measures, held);
    }
    // Newest upload first, so not in date order; late uploads are there.
    let dates: Vec<u64> = rows.iter().map(|r| r["date"].as_u64().unwrap()).collect();
    assert!(dates.windows(2).any(|w| w[0] < w[1]), "rows in date order");
    assert!(
        truth.iter().any(|g| g.created - g.date > 3 * 86_400),
        "no late upload"
    );
    assert!(truth.iter().any(|g| g.modified > g.created), "no edit");
    // A forged or foreign offset is refused.
    let forged = (offsets[0].parse::<u64>().unwrap() + 1).to_string();
    let answer = h
        .call("/measure", &[("action", "getmeas"), ("offset", &forged)])
        .await;
    assert_eq!(answer["status"], 293, "{answer}");
    let answer = h
        .call("/measure", &[("action", "getmeas"), ("offset", "7")])
        .await;
    assert_eq!(answer["status"], 293, "{answer}");
    let answer = h
        .call(
            "/v2/measure",
            &[("action", "getactivity"), ("offset", &offsets[0])],
        )
        .await;
    assert_eq!(answer["status"], 293, "an offset from getmeas: {answer}");
}

#[tokio::test]
async fn getmeas_raw_shapes_unknown_codes_and_segments() {
    let h = H::new(small()).await;
    let body = h.body("/measure", &[("action", "getmeas")]).await;
    // `updatetime` an integer, `more` an integer, `offset` an integer while there is more.
    assert!(body["updatetime"].is_u64(), "{body}");
    assert_eq!(body["more"], 1);
    assert!(body["offset"].is_u64());
    assert_eq!(body["timezone"], "Europe/Paris");
    let first = &body["measuregrps"][0];
    for key in [
        "grpid", "attrib", "date", "created", "modified", "category", "modelid",
    ] {
        assert!(first[key].is_i64(), "{key}: {first}");
    }
    assert!(first.get("model_id").is_none());
    // The newest upload is the latest weighing, weight first.
    assert_eq!(first["measures"][0]["type"], 1);
    assert_eq!(first["measures"][0]["unit"], -3);

    let truth = h.sim.measure_groups(USER);
    let types: BTreeSet<i64> = truth
        .iter()
        .flat_map(|g| g.measures.iter().map(|m| m.meastype))
        .collect();
    let attribs: BTreeSet<i64> = truth.iter().map(|g| g.attrib).collect();
    history_codes::assert_rare_codes(&types, &attribs);
    assert!(truth.iter().any(|g| g.category == 2));
    assert!(truth.iter().any(|g| g.source.deviceid.is_none()));
    // Segmental types repeat in one group, told apart by position.
    let seg = truth
        .iter()
        .find(|g| g.measures.iter().any(|m| m.meastype == 173))
        .unwrap();
    let positions: Vec<Option<i64>> = (seg.measures.iter())
        .filter(|m| m.meastype == 173)
        .map(|m| m.position)
        .collect();
    assert!(positions.len() > 1 && positions.iter().all(Option::is_some));
    let (rows, _) = h
        .all(
            "/measure",
            &[
                ("action", "getmeas"),
                ("meastypes", "173,1"),
                ("category", "1"),
            ],
            "measuregrps",
        )
        .await;
    let row = rows.iter().find(|r| r["grpid"] == seg.grpid).unwrap();
    let wire: Vec<&Value> = (row["measures"].as_array().unwrap().iter())
        .filter(|m| m["type"] == 173)
        .map(|m| &m["position"])
        .collect();
    assert_eq!(wire.len(), positions.len());
    assert!(rows.iter().all(|r| r["category"] == 1));
    for r in &rows {
        for m in r["measures"].as_array().unwrap() {
            assert!(m["type"] == 1 || m["type"] == 173, "{m}");
        }
    }
    // A manual entry's device is null on the wire.
    let manual = truth.iter().find(|g| g.source.deviceid.is_none()).unwrap();
    let date = manual.date.to_string();
    let body = h
        .body(
            "/measure",
            &[
                ("action", "getmeas"),
                ("startdate", &date),
                ("enddate", &date),
            ],
        )
        .await;
    let row = (body["measuregrps"].as_array().unwrap().iter())
        .find(|r| r["grpid"] == manual.grpid)
        .unwrap();
    assert!(
        row["deviceid"].is_null() && row["hash_deviceid"].is_null(),
        "{row}"
    );
}

#[tokio::test]
async fn lastupdate_with_a_window_answers_empty_unless_configured() {
    let h = H::new(small()).await;
    // A window and `lastupdate` at once; without `lastupdate` (`[..3]`), the window alone.
    let mixed = [
        ("action", "getmeas"),
        ("startdate", "0"),
        ("enddate", "9999999999"),
        ("lastupdate", "0"),
    ];
    let body = h.body("/measure", &mixed).await;
    assert_eq!(body["measuregrps"], json!([]));
    assert_eq!(body["more"], 0);
    let body = h.body("/measure", &mixed[..3]).await;
    assert_eq!(body["measuregrps"].as_array().unwrap().len(), 7);
    for (path, action, rows) in [
        ("/v2/measure", "getactivity", "activities"),
        ("/v2/measure", "getworkouts", "series"),
        ("/v2/sleep", "getsummary", "series"),
    ] {
        let mixed_ymd = [
            ("action", action),
            ("startdateymd", "2000-01-01"),
            ("enddateymd", "2100-01-01"),
            ("lastupdate", "0"),
        ];
        let body = h.body(path, &mixed_ymd).await;
        assert_eq!(body[rows], json!([]), "{action}");
        assert_eq!(body["more"], false, "{action}");
        let body = h.body(path, &mixed_ymd[..3]).await;
        assert!(!body[rows].as_array().unwrap().is_empty(), "{action}");
    }

    let both = H::new(HistoryConfig {
        mixed_selection_empty: false,
        ..small()
    })
    .await;
    let body = both.body("/measure", &mixed).await;
    assert_eq!(body["measuregrps"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn sleep_get_and_intraday_return_the_first_24_hours_only() {
    let h = H::new(small()).await;
    let start = ANCHOR - 10 * 86_400;
    let (s, three_days) = (start.to_string(), (start + 3 * 86_400).to_string());
    let [from, to] = [("startdate", s.as_str()), ("enddate", three_days.as_str())];
    let body = h.body("/v2/sleep", &[("action", "get"), from, to]).await;
    let series = body["series"].as_array().unwrap();
    assert!(!series.is_empty());
    for seg in series {
        let t = seg["startdate"].as_u64().unwrap();
        assert!(t >= start && t < start + 86_400, "{seg}");
        assert!(seg["state"].is_i64() && seg["hr"].is_object(), "{seg}");
    }
    let segments = h.sim.rows(USER, Series::SleepSegments);
    let held = (segments.iter())
        .filter(|x| (start..start + 86_400).contains(&x["startdate"].as_u64().unwrap()))
        .count();
    assert_eq!(series.len(), held);
    assert!(segments.iter().any(|x| x["state"] == 5), "sleep state 5");
    // data_fields: only what was asked.
    let only_hr = [("action", "get"), from, to, ("data_fields", "hr")];
    let body = h.body("/v2/sleep", &only_hr).await;
    assert!(body["series"][0].get("rr").is_none() && body["series"][0]["hr"].is_object());

    let intraday = [("action", "getintradayactivity"), from, to];
    let body = h.body("/v2/measure", &intraday).await;
    let series = body["series"].as_object().unwrap();
    assert_eq!(series.len(), 86_400 / 300);
    for (key, sample) in series {
        let t: u64 = key.parse().unwrap();
        assert!(t >= start && t < start + 86_400);
        assert!(
            sample["steps"].is_u64() && sample["model_id"] == 93,
            "{sample}"
        );
    }
    assert_eq!(h.sim.calls(USER, "/v2/sleep", "get"), 2);
    assert_eq!(h.sim.calls(USER, "/v2/measure", "getintradayactivity"), 1);
    assert_eq!(h.sim.calls(USER, "/v2/measure", "getactivity"), 0);
}

#[tokio::test]
async fn v2_shapes_as_captured() {
    let h = H::new(small()).await;
    let (activities, _) = h
        .all("/v2/measure", &[("action", "getactivity")], "activities")
        .await;
    assert_eq!(activities.len(), 40);
    assert_eq!(activities, h.sim.rows(USER, Series::Activity));
    let day = &activities[0];
    assert!(
        day["date"].as_str().unwrap().len() == 10 && day["modelid"].is_i64(),
        "{day}"
    );
    assert!(activities.iter().any(|a| a["deviceid"].is_null()));
    let body = h
        .body(
            "/v2/measure",
            &[("action", "getactivity"), ("data_fields", "steps")],
        )
        .await;
    let row = &body["activities"][0];
    assert!(
        row["steps"].is_u64() && row.get("calories").is_none(),
        "{row}"
    );
    assert_eq!(body["more"], true);
    assert!(body["offset"].is_u64());

    let (workouts, _) = h
        .all("/v2/measure", &[("action", "getworkouts")], "series")
        .await;
    assert_eq!(workouts, h.sim.rows(USER, Series::Workouts));
    let categories: BTreeSet<i64> = workouts
        .iter()
        .map(|w| w["category"].as_i64().unwrap())
        .collect();
    assert!(
        categories.contains(&559) || categories.contains(&9_999),
        "{categories:?}"
    );
    assert!(
        workouts
            .iter()
            .all(|w| w["data"]["core_body_temperature_status"].is_string())
    );

    let (summaries, _) = h
        .all("/v2/sleep", &[("action", "getsummary")], "series")
        .await;
    assert_eq!(summaries, h.sim.rows(USER, Series::SleepSummaries));
    let dates: Vec<&str> = summaries
        .iter()
        .map(|s| s["date"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = dates.iter().copied().collect();
    assert!(distinct.len() < dates.len(), "two summaries share a date");
    assert!(
        summaries
            .iter()
            .any(|s| s["modified"].as_u64() > s["created"].as_u64())
    );

    let (ecgs, _) = h.all("/v2/heart", &[("action", "list")], "series").await;
    assert_eq!(ecgs.len(), h.sim.rows(USER, Series::Ecgs).len());
    let signalid = ecgs[0]["ecg"]["signalid"].to_string();
    let body = h
        .body("/v2/heart", &[("action", "get"), ("signalid", &signalid)])
        .await;
    assert_eq!(body["signal"].as_array().unwrap().len(), 500);
    assert_eq!(body["sampling_frequency"], 500);
    let answer = h
        .call("/v2/heart", &[("action", "get"), ("signalid", "1")])
        .await;
    assert_eq!(answer["status"], 293);

    let body = h.body("/v2/user", &[("action", "getdevice")]).await;
    let devices = body["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["model"] == "" && d["first_session_date"].is_null())
    );
    assert!(devices.iter().any(|d| d["battery"] == "unknown"));
    let body = h.body("/v2/user", &[("action", "getgoals")]).await;
    assert_eq!(body["goals"], h.sim.goals(USER).unwrap_or(json!([])));
}

#[tokio::test]
async fn a_user_without_goals_gets_an_empty_array() {
    let sim = Simulator::start().await.unwrap();
    let user = (1..100)
        .map(UserId)
        .find(|u| sim.goals(*u).is_none())
        .unwrap();
    let token = sim.issue_grant("app", user, SCOPE).access_token;
    let h = H {
        sim,
        client: Client::builder(TokioExecutor::new()).build_http(),
        token,
    };
    let body = h.body("/v2/user", &[("action", "getgoals")]).await;
    assert_eq!(body["goals"], json!([]));
}

#[tokio::test]
async fn the_same_seed_draws_the_same_history() {
    let (a, b) = (H::new(small()).await, H::new(small()).await);
    assert_eq!(a.sim.measure_groups(USER), b.sim.measure_groups(USER));
    assert_eq!(
        a.sim.rows(USER, Series::SleepSummaries),
        b.sim.rows(USER, Series::SleepSummaries)
    );
    let c = H::new(HistoryConfig { seed: 2, ..small() }).await;
    assert_ne!(a.sim.measure_groups(USER), c.sim.measure_groups(USER));
}

#[tokio::test]
async fn added_edited_and_deleted_groups() {
    let h = H::new(small()).await;
    let grpid = h.sim.add_group(
        USER,
        ANCHOR - 20 * 86_400,
        2,
        vec![SimMeasure::new(1, 56_300, -3), SimMeasure::new(88, 326, -2)],
    );
    // The group as the simulator holds it now.
    let group = || {
        let mut groups = h.sim.measure_groups(USER).into_iter();
        groups.find(|g| g.grpid == grpid).unwrap()
    };
    let added = group();
    let since = added.created.to_string();
    // A late upload: a lastupdate read finds it, whatever its date.
    let body = h
        .body("/measure", &[("action", "getmeas"), ("lastupdate", &since)])
        .await;
    let rows = body["measuregrps"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["measures"][0]["value"], 56_300);

    assert!(
        h.sim
            .edit_group(USER, grpid, vec![SimMeasure::new(1, 56_400, -3)])
    );
    let edited = group();
    assert!(edited.modified > added.modified);
    let body = h
        .body("/measure", &[("action", "getmeas"), ("lastupdate", &since)])
        .await;
    assert_eq!(
        body["measuregrps"][0]["measures"],
        json!([{"value": 56_400, "type": 1, "unit": -3, "algo": 0, "fm": 3}])
    );

    // A deletion: the group is gone, and nothing in a lastupdate read says so.
    assert!(h.sim.delete_group(USER, grpid));
    assert!(!h.sim.delete_group(USER, grpid));
    let body = h
        .body("/measure", &[("action", "getmeas"), ("lastupdate", &since)])
        .await;
    assert_eq!(body["measuregrps"], json!([]));
    assert!(h.sim.measure_groups(USER).iter().all(|g| g.grpid != grpid));
    assert!(!h.sim.edit_group(USER, grpid, Vec::new()));

    // add_measure and add_activity land in the same history.
    let date = h.sim.add_measure(USER, 1, 72_500, -3);
    assert!(
        h.sim
            .measure_groups(USER)
            .iter()
            .any(|g| g.date == date && g.measures[0].value == 72_500)
    );
    let before = h.sim.rows(USER, Series::Activity).len();
    h.sim.add_activity(USER, 1_234);
    h.sim.add_activity(USER, 2_345);
    let rows = h.sim.rows(USER, Series::Activity);
    assert!(rows.len() <= before + 1);
    assert_eq!(rows.iter().filter(|r| r["steps"] == 2_345).count(), 1);
    assert_eq!(h.sim.calls(USER, "/measure", "getmeas"), 3);
    h.sim.reset_counters();
    assert_eq!(h.sim.calls(USER, "/measure", "getmeas"), 0);
}
