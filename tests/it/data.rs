//! The data module through the real auth layer: a `tower::service_fn` plays Withings' data
//! endpoints (pages, offsets, refusals) and another its token endpoint; every call goes
//! through `auth.layer()` as an app's would. Captured answers from a peer's fixtures
//! (tests/fixtures/data/README.md) decode as typed rows.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use tower::ServiceBuilder;
use tower_withings::data::{
    Attrib, Battery, Category, DataClient, DataError, GetActivity, GetDevices, GetIntradayActivity,
    GetMeas, GetSleep, GetSleepSummary, GetWorkouts, HeartList, MeasureType, SleepState,
    WorkoutCategory,
};
use tower_withings::transport::HttpClient;

use crate::common::rows;

#[path = "../support/fake_handle.rs"]
mod fake_handle;
use fake_handle::fake_handle;
use tower_withings::{Endpoints, Error, UserId, WithingsAuth};

const USER: UserId = UserId(46865875);

/// One data call as the fake Withings received it.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    form: HashMap<String, String>,
    bearer: Option<String>,
}

impl Sent {
    fn get(&self, key: &str) -> Option<&str> {
        self.form.get(key).map(String::as_str)
    }
}

type Answer = dyn Fn(&Sent, usize) -> String + Send + Sync;

/// A fake Withings: answers data calls with `answer(call, n)` (n counts calls from 0), logs
/// them, and refreshes tokens (`access-2`, `access-3`, …).
#[derive(Clone)]
struct Fake {
    answer: Arc<Answer>,
    sent: Arc<Mutex<Vec<Sent>>>,
    refreshes: Arc<Mutex<usize>>,
}

impl Fake {
    fn new(answer: impl Fn(&Sent, usize) -> String + Send + Sync + 'static) -> Fake {
        Fake {
            answer: Arc::new(answer),
            sent: Arc::default(),
            refreshes: Arc::default(),
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    fn answer(&self, path: &str, headers: &http::HeaderMap, body: &[u8]) -> String {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        if path.ends_with("/v2/oauth2") {
            let mut n = self.refreshes.lock().unwrap();
            *n += 1;
            return format!(
                r#"{{"status":0,"body":{{"userid":"{}","access_token":"access-{}","refresh_token":"refresh-{}","expires_in":10800,"scope":"user.metrics,user.activity","token_type":"Bearer"}}}}"#,
                USER.0,
                *n + 1,
                *n + 1
            );
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let call = Sent {
            path: path.to_owned(),
            form,
            bearer,
        };
        let n = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(call.clone());
            sent.len() - 1
        };
        (self.answer)(&call, n)
    }

    /// The fake as a tower service (what hyper-util's client is in an app).
    fn service(&self) -> impl HttpClient<ResponseBody = Full<Bytes>> + use<> {
        let fake = self.clone();
        tower::service_fn(move |request: Request<Full<Bytes>>| fake.clone().respond(request))
    }

    /// The fake's answer to `request`, as HTTP.
    async fn respond<B>(self, request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let text = self.answer(parts.uri.path(), &parts.headers, &body);
        Ok(Response::new(Full::new(Bytes::from(text))))
    }

    /// The auth handle (token endpoint: this fake) with `USER`'s token imported.
    async fn auth(&self, endpoints: Endpoints) -> WithingsAuth {
        let scope = "user.metrics,user.activity";
        fake_handle(self.service(), endpoints, USER, scope)
            .await
            .unwrap()
    }

    /// A data client over the app's stack: `auth.layer()` in front of this fake.
    async fn client(&self) -> (DataClient<impl HttpClient + use<>>, WithingsAuth) {
        let auth = self.auth(Endpoints::withings()).await;
        let stack = ServiceBuilder::new()
            .layer(auth.layer())
            .service(self.service());
        (DataClient::new(stack, &Endpoints::withings()), auth)
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

/// A measure group's JSON: weight `value`e-3 and a fat ratio.
fn group(grpid: i64, date: i64, value: i64) -> String {
    format!(
        r#"{{"grpid":{grpid},"attrib":0,"date":{date},"created":{c},"modified":{c},"category":1,"deviceid":null,"measures":[{{"value":{value},"type":1,"unit":-3,"algo":3,"fm":3}},{{"value":{fat},"type":6,"unit":-2}}],"modelid":5,"model":"Body+","comment":null}}"#,
        c = date + 84_600,
        fat = 2000 + grpid % 100,
    )
}

#[tokio::test]
async fn a_thousand_groups_in_pages_of_17_are_read_whole_exactly_once() {
    const GROUPS: i64 = 1000;
    const PAGE: i64 = 17;
    // Dates not in order (a late upload every few groups), values distinct.
    let history: Vec<String> = (0..GROUPS)
        .map(|i| {
            group(
                10_000 + i,
                1_600_000_000 + (i * 7919 % GROUPS) * 3600,
                50_000 + i,
            )
        })
        .collect();
    let history = Arc::new(history);
    // Opaque offsets: not row counts, a different token for each page.
    let token = |page: i64| format!("{}", 7_340_033 * (page + 1) % 1_000_003);
    let served = history.clone();
    let fake = Fake::new(move |call, _| {
        let page = match call.get("offset") {
            None => 0,
            Some(o) => (0..).find(|p| token(*p) == o).expect("an offset we sent"),
        };
        let start = (page * PAGE) as usize;
        let end = ((page + 1) * PAGE).min(GROUPS) as usize;
        let more = end < GROUPS as usize;
        let rows = served[start..end].join(",");
        let offset = if more { token(page + 1) } else { "0".into() };
        format!(
            r#"{{"status":0,"body":{{"updatetime":1700000000,"timezone":"Europe\/Paris","measuregrps":[{rows}],"more":{},"offset":{offset}}}}}"#,
            u8::from(more)
        )
    });
    let (data, _auth) = fake.client().await;
    let query =
        GetMeas::since(Timestamp::UNIX_EPOCH).types(&[MeasureType::Weight, MeasureType::FatRatio]);
    let mut stream = data.rows(USER, query);
    let mut seen = HashSet::new();
    let mut count = 0;
    while let Some(group) = stream.next().await {
        let group = group.unwrap();
        count += 1;
        assert!(seen.insert(group.grpid), "grpid {} twice", group.grpid);
        let i = group.grpid - 10_000;
        let weight = group.get(MeasureType::Weight).unwrap();
        assert_eq!((weight.value.value, weight.value.unit), (50_000 + i, -3));
        assert_eq!(
            weight.value.to_string(),
            format!("{}", rust_decimal::Decimal::new(50_000 + i, 3).normalize())
        );
        assert_eq!(group.timezone.as_ref().unwrap().name(), "Europe/Paris");
    }
    assert_eq!(count, GROUPS as usize);
    let sent = fake.sent();
    assert_eq!(
        sent.len(),
        ((GROUPS + PAGE - 1) / PAGE) as usize,
        "one call per page"
    );
    for (n, call) in sent.iter().enumerate() {
        assert_eq!(call.path, "/measure");
        assert_eq!(call.get("action"), Some("getmeas"));
        assert_eq!(
            call.get("meastypes"),
            Some("1,6"),
            "one call for both types"
        );
        assert_eq!(call.get("lastupdate"), Some("0"));
        assert_eq!(
            call.get("startdate"),
            None,
            "never a window with lastupdate"
        );
        assert_eq!(
            call.bearer.as_deref(),
            Some("access-1"),
            "through the layer"
        );
        let expected = (n > 0).then(|| token(n as i64));
        assert_eq!(
            call.get("offset"),
            expected.as_deref(),
            "offset sent back verbatim"
        );
    }
}

/// Two pages of one group each, `more` written as `first_more`, then the end as `last`.
async fn two_pages(first_more: &str, last: &str) -> (usize, usize) {
    let (first_more, last) = (first_more.to_owned(), last.to_owned());
    let fake = Fake::new(move |call, _| {
        if call.get("offset").is_none() {
            format!(
                r#"{{"status":0,"body":{{"series":[{{"id":1,"category":1}}],"more":{first_more},"offset":"opaque 1"}}}}"#
            )
        } else {
            assert_eq!(call.get("offset"), Some("opaque 1"));
            format!(r#"{{"status":0,"body":{{"series":[{{"id":2,"category":2}}]{last}}}}}"#)
        }
    });
    let (data, _auth) = fake.client().await;
    let rows = rows(&data, GetWorkouts::since(at(0))).await;
    (rows.len(), fake.sent().len())
}

#[tokio::test]
async fn more_as_an_integer_a_boolean_false_or_absent() {
    assert_eq!(two_pages("1", r#","more":0,"offset":0"#).await, (2, 2));
    assert_eq!(
        two_pages("true", r#","more":false,"offset":5"#).await,
        (2, 2)
    );
    assert_eq!(two_pages("true", "").await, (2, 2));
    assert_eq!(two_pages("\"1\"", r#","more":null"#).await, (2, 2));
    // `more` false or absent on the first page: one call, whatever the offset says.
    assert_eq!(two_pages("false", "").await, (1, 1));
    assert_eq!(two_pages("0", "").await, (1, 1));
}

#[tokio::test]
async fn a_non_advancing_offset_ends_with_the_rows_so_far() {
    let fake = Fake::new(|_, n| {
        format!(r#"{{"status":0,"body":{{"series":[{{"id":{n}}}],"more":true,"offset":300}}}}"#)
    });
    let (data, _auth) = fake.client().await;
    let partial = data
        .collect(USER, GetSleepSummary::since(at(0)))
        .await
        .unwrap_err();
    assert!(
        matches!(&partial.error, DataError::OffsetNotAdvancing { page: 2, offset } if offset == "300"),
        "{:?}",
        partial.error
    );
    assert_eq!(partial.collected.rows.len(), 2, "both pages' rows kept");
    assert_eq!(fake.sent().len(), 2, "no loop");

    // More, but no offset to follow.
    let fake = Fake::new(|_, _| r#"{"status":0,"body":{"series":[{"id":1}],"more":true}}"#.into());
    let (data, _auth) = fake.client().await;
    let partial = data
        .collect(USER, GetSleepSummary::since(at(0)))
        .await
        .unwrap_err();
    assert!(matches!(
        partial.error,
        DataError::MoreWithoutOffset { page: 1 }
    ));
    assert_eq!(partial.collected.rows.len(), 1);
}

#[tokio::test]
async fn the_page_cap_ends_with_the_rows_so_far() {
    let fake = Fake::new(|_, n| {
        format!(
            r#"{{"status":0,"body":{{"series":[{{"id":{n},"ecg":{{"signalid":{n},"afib":0}}}}],"more":true,"offset":{}}}}}"#,
            n + 1
        )
    });
    let (data, _auth) = fake.client().await;
    let data = data.page_cap(5);
    let partial = data
        .collect(USER, HeartList::window(at(0), at(1_000)))
        .await
        .unwrap_err();
    assert!(
        matches!(partial.error, DataError::PageCap { pages: 5 }),
        "{:?}",
        partial.error
    );
    assert_eq!(partial.collected.rows.len(), 5);
    assert_eq!(fake.sent().len(), 5);
}

#[tokio::test]
async fn a_malformed_row_is_its_own_error_and_the_page_is_kept() {
    let fake = Fake::new(|_, _| {
        format!(
            r#"{{"status":0,"body":{{"measuregrps":[{},{{"grpid":"not a number","date":1}},{},{{"grpid":3,"date":1,"measures":[{{"type":1,"unit":-3}}]}},{}],"more":0}}}}"#,
            group(1, 1_600_000_000, 1),
            group(2, 1_600_000_100, 2),
            group(4, 1_600_000_200, 4),
        )
    });
    let (data, _auth) = fake.client().await;
    let mut stream = data.rows(USER, GetMeas::window(at(0), at(2_000_000_000)));
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    assert_eq!(items.len(), 5, "every row reported, the stream went on");
    let ok: Vec<i64> = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|g| g.grpid)
        .collect();
    assert_eq!(ok, [1, 2, 4]);
    let bad: Vec<usize> = items
        .iter()
        .filter_map(|i| match i {
            Err(DataError::Row(row)) => Some(row.index),
            _ => None,
        })
        .collect();
    assert_eq!(bad, [1, 3]);
    let sent = fake.sent();
    assert_eq!(sent[0].get("startdate"), Some("0"));
    assert_eq!(sent[0].get("enddate"), Some("2000000000"));
    assert_eq!(sent[0].get("lastupdate"), None);
}

#[tokio::test]
async fn a_three_day_sleep_get_is_three_calls_of_at_most_24_hours() {
    let fake = Fake::new(|call, _| {
        let start = call.get("startdate").unwrap();
        format!(
            r#"{{"status":0,"body":{{"model":32,"series":[{{"startdate":{start},"enddate":{start},"state":1,"model":"Aura Sensor V2","model_id":63}}]}}}}"#
        )
    });
    let (data, _auth) = fake.client().await;
    let start = 1_700_000_000;
    let rows = data
        .collect(
            USER,
            GetSleep::window(at(start), at(start + 3 * 86_400)).fields(&["hr", "rr"]),
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 3);
    let sent = fake.sent();
    assert_eq!(sent.len(), 3);
    let mut expected_start = start;
    for call in &sent {
        assert_eq!(call.path, "/v2/sleep");
        assert_eq!(call.get("action"), Some("get"));
        assert_eq!(call.get("data_fields"), Some("hr,rr"));
        let s: i64 = call.get("startdate").unwrap().parse().unwrap();
        let e: i64 = call.get("enddate").unwrap().parse().unwrap();
        assert_eq!(s, expected_start);
        assert!(e - s <= 86_400);
        expected_start = e;
    }
    assert_eq!(expected_start, start + 3 * 86_400);
    assert_eq!(rows[0].state, Some(SleepState::Light));
    assert_eq!(
        rows[0].device,
        Some(tower_withings::data::SleepModel::SleepMonitor)
    );

    // The same for intraday activity: 30 h is two calls.
    let fake = Fake::new(|call, _| {
        let start = call.get("startdate").unwrap();
        format!(
            r#"{{"status":0,"body":{{"series":{{"{start}":{{"steps":12,"duration":60,"deviceid":null,"model":"ScanWatch","model_id":93}}}}}}}}"#
        )
    });
    let (data, _auth) = fake.client().await;
    let rows = data
        .collect(
            USER,
            GetIntradayActivity::window(at(start), at(start + 30 * 3600)),
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(fake.sent().len(), 2);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].timestamp, at(start + 86_400));
    assert_eq!(rows[0].steps, Some(12));
}

#[tokio::test]
async fn a_refused_token_mid_paging_is_refreshed_and_the_page_replayed() {
    let fake = Fake::new(|call, _| {
        if call.bearer.as_deref() == Some("access-1") && call.get("offset").is_some() {
            return r#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#.into();
        }
        match call.get("offset") {
            None => format!(
                r#"{{"status":0,"body":{{"measuregrps":[{}],"more":1,"offset":1}}}}"#,
                group(1, 1_600_000_000, 1)
            ),
            Some(_) => format!(
                r#"{{"status":0,"body":{{"measuregrps":[{}],"more":0}}}}"#,
                group(2, 1_600_000_000, 2)
            ),
        }
    });
    let (data, auth) = fake.client().await;
    let rows = rows(&data, GetMeas::since(at(0))).await;
    assert_eq!(rows.iter().map(|g| g.grpid).collect::<Vec<_>>(), [1, 2]);
    let sent = fake.sent();
    assert_eq!(sent.len(), 3, "page 1, page 2 refused, page 2 replayed");
    assert_eq!(sent[2].bearer.as_deref(), Some("access-2"));
    assert_eq!(sent[2].get("offset"), Some("1"));
    assert_eq!(*fake.refreshes.lock().unwrap(), 1);
    assert_eq!(auth.metrics().replays, 1);
}

#[tokio::test]
async fn body_statuses_are_the_crates_typed_errors() {
    let fake = Fake::new(|_, _| {
        r#"{"status":601,"body":{"wait_seconds":12},"error":"Too many request"}"#.into()
    });
    let (data, _auth) = fake.client().await;
    let partial = data.collect(USER, GetMeas::since(at(0))).await.unwrap_err();
    assert!(
        matches!(
            partial.error,
            DataError::Withings(Error::RateLimited { wait: Some(w) }) if w == Duration::from_secs(12)
        ),
        "{:?}",
        partial.error
    );
    let fake = Fake::new(|_, _| r#"{"status":2554,"body":{}}"#.into());
    let (data, _auth) = fake.client().await;
    let error = data.goals(USER).await.unwrap_err();
    assert!(
        matches!(error, DataError::Withings(Error::NotImplemented)),
        "{error:?}"
    );
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A client answering every call with `body`.
async fn serving(body: String) -> (DataClient<impl HttpClient + use<>>, Fake) {
    let fake = Fake::new(move |_, _| body.clone());
    let (data, _auth) = fake.client().await;
    (data, fake)
}

#[tokio::test]
async fn captured_getmeas_answers_decode_exactly() {
    // No `more`, no `offset`; the same grpid twice (attrib 0, then 8): one group.
    let (data, fake) = serving(fixture("aiow_measurement.json")).await;
    let read = data.collect(USER, GetMeas::since(at(0))).await.unwrap();
    assert!(read.bad_rows.is_empty());
    assert_eq!(fake.sent().len(), 1);
    let grpids: HashSet<i64> = read.rows.iter().map(|g| g.grpid).collect();
    assert_eq!(
        grpids.len(),
        read.rows.len(),
        "duplicates within a page collapse"
    );
    let first = read.rows.iter().find(|g| g.grpid == 4815757309).unwrap();
    assert_eq!(first.attrib, Some(Attrib::DeviceAlt), "the later row wins");
    let weight = first.get(MeasureType::Weight).unwrap();
    assert_eq!(weight.value.to_string(), "118.003");
    assert_eq!(first.source.modelid, Some(5));
    assert_eq!(first.category, Some(Category::Real));
    assert_eq!(first.timezone.as_ref().unwrap().name(), "Europe/Amsterdam");

    // Segmental body composition: one type per position, exact duplicates collapsed.
    let groups = fixture("aiow_measurement_positions.json");
    let (data, _) = serving(format!(
        r#"{{"status":0,"body":{{"updatetime":1704938811,"timezone":"Europe\/Amsterdam","measuregrps":{groups}}}}}"#
    ))
    .await;
    let groups = rows(&data, GetMeas::since(at(0))).await;
    assert_eq!(groups.len(), 2);
    let g = &groups[0];
    let segmental: Vec<(Option<i64>, String)> = g
        .measures
        .iter()
        .filter(|m| m.measure_type == MeasureType::SegmentalFatFreeMass)
        .map(|m| (m.position, m.value.to_string()))
        .collect();
    assert_eq!(
        segmental,
        [
            (Some(12), "40".into()),
            (Some(10), "13.5".into()),
            (Some(3), "4.69".into()),
            (Some(11), "14.06".into()),
            (Some(2), "4.91".into())
        ]
    );
    let fat_free: Vec<_> = g
        .measures
        .iter()
        .filter(|m| m.measure_type == MeasureType::FatFreeMass)
        .collect();
    assert_eq!(fat_free.len(), 1, "(grpid, type, position) is the identity");
    assert_eq!(
        g.get(MeasureType::VisceralFat).unwrap().value.to_string(),
        "3.2"
    );
    assert_eq!(
        g.get(MeasureType::BasalMetabolicRate)
            .unwrap()
            .value
            .to_string(),
        "2263"
    );
    assert_eq!(
        g.get(MeasureType::FatRatio).unwrap().value.to_string(),
        "19.467"
    );
    assert_eq!(g.measures.len(), 28 - 2, "28 sent, two exact repeats");
}

#[tokio::test]
async fn captured_v2_answers_decode() {
    // Activity: `offset: 200` with two rows and `more: false` is the end.
    let (data, fake) = serving(fixture("aiow_activity.json")).await;
    let days = data
        .collect(
            USER,
            GetActivity::days(
                jiff::civil::date(2023, 10, 20),
                jiff::civil::date(2023, 10, 21),
            ),
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(days.len(), 2);
    assert_eq!(fake.sent().len(), 1);
    assert_eq!(fake.sent()[0].get("startdateymd"), Some("2023-10-20"));
    assert_eq!(days[0].distance, Some(1028.559));
    assert_eq!(days[0].source.deviceid, None);
    assert_eq!(days[0].source.brand, Some(18));
    assert_eq!(days[0].day.date, jiff::civil::date(2023, 10, 20));
    assert_eq!(
        days[0].hr_zones,
        [Some(100), Some(200), Some(300), Some(400)]
    );

    // Workouts: null device and null data fields.
    let (data, _) = serving(fixture("aiow_workouts.json")).await;
    let workouts = rows(&data, GetWorkouts::since(at(0))).await;
    assert_eq!(workouts.len(), 10);
    assert_eq!(workouts[0].category, Some(WorkoutCategory::Walk));
    assert_eq!(workouts[0].data.algo_pause_duration, None);
    assert_eq!(workouts[0].data.steps, Some(779));
    assert_eq!(
        workouts[0].day.as_ref().unwrap().date,
        jiff::civil::date(2023, 8, 29)
    );

    // Sleep summaries: the first page of a 300-row answer (`more: true, offset: 300`), then
    // an empty last page.
    let summary = fixture("aiow_sleep_summary_first3.json");
    let fake = Fake::new(move |call, _| match call.get("offset") {
        None => summary.clone(),
        Some("300") => r#"{"status":0,"body":{"series":[],"more":false,"offset":0}}"#.into(),
        Some(other) => panic!("offset {other}"),
    });
    let (data, _auth) = fake.client().await;
    let nights = rows(&data, GetSleepSummary::since(at(0))).await;
    assert_eq!(nights.len(), 3);
    assert_eq!(fake.sent().len(), 2);
    let n = &nights[0];
    assert_eq!(n.id, 2081804182);
    assert_eq!(n.data.sleep_efficiency, Some(0.86));
    assert_eq!(n.data.sleep_score, Some(37));
    assert_eq!(
        n.device,
        Some(tower_withings::data::SleepModel::SleepMonitor)
    );
    let (start, end) = n.day.as_ref().unwrap().bounds().unwrap();
    assert_eq!(start.to_string(), "2021-04-17T22:00:00Z");
    assert_eq!(end.to_string(), "2021-04-18T22:00:00Z");

    // Sleep get: `series` as an array, per-field maps keyed by epoch seconds.
    let (data, _) = serving(fixture("aiow_sleep_first3.json")).await;
    let segments = rows(
        &data,
        GetSleep::window(at(1_618_691_453), at(1_618_697_513)),
    )
    .await;
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[0].state, Some(SleepState::Awake));
    assert_eq!(
        segments[0].hr,
        [(at(1_618_691_453), 70.0), (at(1_618_691_513), 71.0)]
    );

    // Devices: battery "unknown", an empty model; the hand-made fixture repeats one deviceid,
    // which collapses to one device (the last).
    let (data, _) = serving(fixture("aiow_device.json")).await;
    let devices = data.devices(USER).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].model.as_deref(), Some(""));
    assert_eq!(devices[0].model_id, Some(13));
    let (data, _) = serving(fixture("aiow_device.json").replace(
        r#""battery": "high",
                "model": "Body+""#,
        r#""battery": "unknown",
                "model": "Body+""#,
    ))
    .await;
    let all = data.collect(USER, GetDevices).await.unwrap().rows;
    assert_eq!(all.len(), 1);

    // Goals, and `goals: []` when the user set none.
    let (data, _) = serving(fixture("aiow_goals.json")).await;
    let goals = data.goals(USER).await.unwrap().unwrap();
    assert_eq!(goals.steps, Some(10000));
    assert_eq!(goals.weight.unwrap().to_string(), "70.5");
    let (data, _) = serving(fixture("aiow_no_goals.json")).await;
    assert_eq!(data.goals(USER).await.unwrap(), None);
    let _ = Battery::Unknown;
}

#[tokio::test]
async fn the_shapes_that_drift_from_the_document_decode() {
    // updatetime an integer, `model_id` spelled the document's way, `modified: false`, unknown
    // codes everywhere, unknown fields, a string where an integer was expected.
    let (data, _) = serving(
        r#"{"status":0,"body":{"updatetime":1693651185,"measuregrps":[
            {"grpid":9,"attrib":10000,"date":1693651151,"modified":false,"category":3,"deviceid":null,
             "model_id":"7","brand":1,"devtype":32,"is_inconclusive":false,"timezone":"Mars\/Olympus",
             "measures":[{"value":26,"type":9999,"unit":0,"apppfmid":3,"algo_params":{"x":1}},
                         {"value":3,"type":139,"unit":0}]}],"more":false}}"#
            .into(),
    )
    .await;
    let g = rows(&data, GetMeas::since(at(0))).await.remove(0);
    assert_eq!(g.attrib, Some(Attrib::Unknown(10000)));
    assert_eq!(g.category, Some(Category::Unknown(3)));
    assert_eq!(g.modified, None);
    assert_eq!(g.source.modelid, Some(7));
    assert_eq!(g.source.deviceid, None);
    assert_eq!(g.measures[0].measure_type, MeasureType::Unknown(9999));
    assert_eq!(g.measures[0].value.to_string(), "26");
    assert_eq!(
        g.measures[1].measure_type.kind(),
        tower_withings::data::MeasureKind::Classification
    );
    let zone = g.timezone.unwrap();
    assert_eq!(zone.name(), "Mars/Olympus", "an unknown zone is kept");
    assert!(zone.tz().is_none());

    // Workout `data` with strings and nulls, an unknown category; sleep get `series` as an
    // object; an unknown sleep state.
    let (data, _) = serving(
        r#"{"status":0,"body":{"series":[{"id":5,"category":559,"startdate":1,"enddate":2,"date":"2023-01-01",
            "data":{"core_body_temperature_status":"elevated","algo_pause_duration":null,"calories":"12","steps":[]}}],
            "more":false}}"#
            .into(),
    )
    .await;
    let w = rows(&data, GetWorkouts::since(at(0))).await.remove(0);
    assert_eq!(w.category, Some(WorkoutCategory::Unknown(559)));
    assert_eq!(
        w.data.core_body_temperature_status.as_deref(),
        Some("elevated")
    );
    assert_eq!(w.data.calories, Some(12.0));
    assert_eq!(w.data.steps, None);
    assert!(w.day.as_ref().unwrap().zone.is_none());

    let (data, _) = serving(
        r#"{"status":0,"body":{"model":16,"series":{"a":{"startdate":10,"enddate":20,"state":99},"b":{"startdate":20,"state":5}}}}"#
            .into(),
    )
    .await;
    let s = rows(&data, GetSleep::window(at(0), at(100))).await;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].state, Some(SleepState::Unknown(99)));
    assert_eq!(s[1].state, Some(SleepState::Unspecified));
    assert_eq!(s[0].device, Some(tower_withings::data::SleepModel::Tracker));

    // `data_fields` trims the answer: only what was asked comes back, nothing else fails.
    let (data, fake) = serving(
        r#"{"status":0,"body":{"activities":[{"date":"2023-10-20","steps":5}],"more":false,"offset":0}}"#.into(),
    )
    .await;
    let a = rows(&data, GetActivity::since(at(5)).fields(&["steps"]))
        .await
        .remove(0);
    assert_eq!((a.steps, a.distance, a.modified), (Some(5), None, None));
    assert_eq!(fake.sent()[0].get("data_fields"), Some("steps"));
    assert_eq!(fake.sent()[0].get("lastupdate"), Some("5"));
    assert_eq!(fake.sent()[0].get("startdateymd"), None);
}

#[tokio::test]
async fn heart_list_and_an_ecg_signal() {
    let fake = Fake::new(|call, _| {
        match call.get("action") {
        Some("list") => r#"{"status":0,"body":{"series":[
            {"deviceid":"d","model":91,"ecg":{"signalid":77,"afib":2},"heart_rate":61,"timestamp":1700000000,"modified":1700000100},
            {"deviceid":"d","model":44,"ecg":{"signalid":78,"afib":0},"bloodpressure":{"diastole":80,"systole":120},"timestamp":1700000500},
            {"deviceid":"d","model":91,"ecg":{"signalid":77,"afib":1},"timestamp":1700000000}],"more":false}}"#
            .into(),
        Some("get") => {
            assert_eq!(call.get("signalid"), Some("77"));
            r#"{"status":0,"body":{"signal":[1,-2,3],"sampling_frequency":500,"wearposition":1,"model":91,"heart_rate":61}}"#.into()
        }
        other => panic!("{other:?}"),
    }
    });
    let (data, _auth) = fake.client().await;
    let records = data
        .collect(
            USER,
            HeartList::window(at(1_699_999_000), at(1_700_001_000)),
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(records.len(), 2, "signalid 77 twice collapses");
    assert_eq!(
        records[0].ecg.unwrap().afib,
        Some(tower_withings::data::Afib::Positive)
    );
    assert_eq!(records[1].blood_pressure.unwrap().systole, Some(120));
    let signal = data.ecg_signal(USER, 77).await.unwrap();
    assert_eq!(signal.signal, [1, -2, 3]);
    assert_eq!(signal.sampling_frequency, Some(500));
}

/// The same client over reqwest: the Withings middleware on a reqwest client, the fake
/// served over loopback HTTP.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_same_calls_through_the_reqwest_middleware() {
    use tower_withings::data::ReqwestService;

    let fake = Fake::new(|call, _| {
        if call.bearer.as_deref() == Some("access-1") && call.get("offset").is_some() {
            return r#"{"status":401,"body":{},"error":"invalid_token"}"#.into();
        }
        match call.get("offset") {
            None => format!(
                r#"{{"status":0,"body":{{"measuregrps":[{}],"more":true,"offset":"next"}}}}"#,
                group(1, 1_600_000_000, 56_300)
            ),
            Some(_) => format!(
                r#"{{"status":0,"body":{{"measuregrps":[{}],"more":false}}}}"#,
                group(2, 1_600_000_000, 326)
            ),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = fake.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fake = served.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        fake.clone().respond(request)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let endpoints = Endpoints::loopback(&base, &base).unwrap();
    let auth = fake.auth(endpoints.clone()).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth.reqwest_middleware())
        .build();
    let data = DataClient::new(ReqwestService::new(client), &endpoints);
    let rows = rows(&data, GetMeas::since(at(0))).await;
    let weights: Vec<String> = rows
        .iter()
        .map(|g| g.get(MeasureType::Weight).unwrap().value.to_string())
        .collect();
    assert_eq!(weights, ["56.3", "0.326"]);
    let sent = fake.sent();
    assert_eq!(sent.len(), 3, "page 1, page 2 refused, page 2 replayed");
    assert_eq!(sent[0].bearer.as_deref(), Some("access-1"));
    assert_eq!(sent[2].bearer.as_deref(), Some("access-2"));
    assert_eq!(sent[2].get("offset"), Some("next"));
    assert_eq!(auth.metrics().replays, 1);

    // A layer error comes back typed.
    let error = data.goals(UserId(1)).await.unwrap_err();
    assert!(
        matches!(error, DataError::Withings(Error::UnknownUser(UserId(1)))),
        "{error:?}"
    );
}
