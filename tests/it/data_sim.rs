//! `DataClient` against the simulator's seeded history, through the real auth layer (and the
//! reqwest middleware): every endpoint, every page, values exactly as the simulator holds
//! them, unknown codes kept, the 24 h endpoints split into calls the simulator counts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use tower::ServiceBuilder;
use tower_withings::data::{
    Attrib, DataClient, GetActivity, GetIntradayActivity, GetMeas, GetSleep, GetSleepSummary,
    GetWorkouts, HeartList, MeasureGroup, SleepState, WorkoutCategory,
};
use tower_withings::store::MemoryStore;
use tower_withings::transport::{self, HttpClient};
use tower_withings::{Secret, Token, UserId, WithingsAuth, clock::Clock, clock::ManualClock};
use withings_sim::{HistoryConfig, Series, SimGroup, Simulator};

use crate::common::{CLIENT_ID, auth_builder, endpoints, rows, simulator_with};

#[path = "../support/history_codes.rs"]
mod history_codes;

const USER: UserId = UserId(46_865_875);
const SCOPE: &str = "user.info,user.metrics,user.activity";
/// 2026-01-01T00:00:00Z: the histories end here, whatever the day the tests run.
const ANCHOR: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

struct Setup {
    sim: Simulator,
    auth: WithingsAuth,
}

/// A history anchored at [`ANCHOR`]: `days` days of `groups_per_day` groups, served in pages of
/// `page_size` (the simulator's defaults are 2 and 50).
fn history(days: u32, groups_per_day: u32, page_size: usize) -> HistoryConfig {
    HistoryConfig {
        days,
        groups_per_day,
        page_size,
        anchor: Some(ANCHOR),
        ..HistoryConfig::default()
    }
}

/// A simulator with `history`, and a handle holding `USER`'s token (every data scope).
async fn setup(history: HistoryConfig) -> Setup {
    let sim = simulator_with(history).await;
    let clock = ManualClock::new();
    let auth = auth_builder(&sim, &clock)
        .store(MemoryStore::new())
        .build(transport::plain_http_client());
    let g = sim.issue_grant(CLIENT_ID, USER, SCOPE);
    auth.import(Token {
        user_id: USER,
        access_token: Secret::new(g.access_token),
        refresh_token: Secret::new(g.refresh_token),
        expires_at: clock.now() + Duration::from_secs(g.expires_in),
        scope: SCOPE.into(),
    })
    .await
    .unwrap();
    Setup { sim, auth }
}

impl Setup {
    /// The data client over the app's stack: `auth.layer()` in front of hyper-util's client.
    fn data(&self) -> DataClient<impl HttpClient + use<>> {
        let stack = ServiceBuilder::new()
            .layer(self.auth.layer())
            .service(transport::plain_http_client());
        DataClient::new(stack, &endpoints(&self.sim))
    }
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_second(i64::try_from(secs).unwrap()).unwrap()
}

fn secs(t: Option<Timestamp>) -> u64 {
    u64::try_from(t.unwrap().as_second()).unwrap()
}

/// Asserts that the groups read are exactly the simulator's: each once, every measure with
/// its exact `(value, unit)`, its code (known or not) and its position.
fn assert_same_groups(read: &[MeasureGroup], held: &[SimGroup]) {
    let mut by_id: BTreeMap<i64, &MeasureGroup> = BTreeMap::new();
    for g in read {
        assert!(
            by_id.insert(g.grpid, g).is_none(),
            "group {} read twice",
            g.grpid
        );
    }
    assert_eq!(by_id.len(), held.len(), "groups read vs held");
    let mut measures = BTreeSet::new();
    for h in held {
        let g = by_id[&i64::try_from(h.grpid).unwrap()];
        assert_eq!(secs(g.date), h.date);
        assert_eq!(secs(g.created), h.created);
        assert_eq!(secs(g.modified), h.modified);
        assert_eq!(g.attrib.map(Attrib::code), Some(h.attrib));
        assert_eq!(g.category.map(|c| c.code()), Some(h.category));
        assert_eq!(g.source.deviceid, h.source.deviceid);
        let got: Vec<(i64, i64, i32, Option<i64>)> = (g.measures.iter())
            .map(|m| {
                (
                    m.measure_type.code(),
                    m.value.value,
                    m.value.unit,
                    m.position,
                )
            })
            .collect();
        let want: Vec<(i64, i64, i32, Option<i64>)> = (h.measures.iter())
            .map(|m| {
                (
                    m.meastype,
                    m.value,
                    i32::try_from(m.unit).unwrap(),
                    m.position,
                )
            })
            .collect();
        assert_eq!(got, want, "group {}", h.grpid);
        for m in &g.measures {
            assert!(
                measures.insert(m.key(g.grpid)),
                "measure {:?} twice",
                m.key(g.grpid)
            );
        }
    }
}

#[tokio::test]
async fn a_thousand_groups_in_pages_of_17_are_read_whole_exactly_once() {
    let s = setup(history(100, 10, 17)).await;
    let held = s.sim.measure_groups(USER);
    assert_eq!(held.len(), 1_000);
    let read = s.data().collect(USER, GetMeas::since(at(0))).await.unwrap();
    assert!(read.bad_rows.is_empty(), "{:?}", read.bad_rows);
    assert_same_groups(&read.rows, &held);
    // One call per page: the simulator refuses an offset it did not send (status 293), so
    // 59 accepted calls are 58 offsets sent back verbatim.
    assert_eq!(
        s.sim.calls(USER, "/measure", "getmeas"),
        1_000_u64.div_ceil(17)
    );
    // Exact decimals: 56.3 kg stays 56.3.
    let weights: Vec<String> = (read.rows.iter())
        .flat_map(|g| g.measures.iter())
        .filter(|m| m.measure_type.code() == 1)
        .map(|m| m.value.to_string())
        .collect();
    assert!(weights.iter().all(|w| !w.contains("0000")), "{weights:?}");
}

#[tokio::test]
async fn every_unknown_code_survives() {
    let s = setup(history(30, 4, 25)).await;
    let data = s.data();
    let groups = rows(&data, GetMeas::since(at(0))).await;
    let types: BTreeSet<i64> = (groups.iter())
        .flat_map(|g| g.measures.iter().map(|m| m.measure_type.code()))
        .collect();
    let attribs: BTreeSet<i64> = (groups.iter())
        .filter_map(|g| g.attrib)
        .map(Attrib::code)
        .collect();
    history_codes::assert_rare_codes(&types, &attribs);
    // Segmental measures: one type several times in a group, told apart by position.
    let segmental = (groups.iter())
        .find(|g| g.measures.iter().any(|m| m.measure_type.code() == 173))
        .unwrap();
    let positions: BTreeSet<Option<i64>> = (segmental.measures.iter())
        .filter(|m| m.measure_type.code() == 173)
        .map(|m| m.position)
        .collect();
    assert!(
        positions.len() > 1 && !positions.contains(&None),
        "{positions:?}"
    );

    let workouts = rows(&data, GetWorkouts::since(at(0))).await;
    let categories: BTreeSet<WorkoutCategory> =
        workouts.iter().filter_map(|w| w.category).collect();
    assert!(
        categories.contains(&WorkoutCategory::from_code(559))
            || categories.contains(&WorkoutCategory::from_code(9_999)),
        "{categories:?}"
    );
    assert!(
        categories
            .iter()
            .any(|c| matches!(c, WorkoutCategory::Unknown(_))),
        "{categories:?}"
    );
    // Sleep state 5 in the nights' segments, over one call per day (the first night begins
    // the evening before the history's first day).
    let first_night = ANCHOR - 31 * DAY;
    let segments = rows(&data, GetSleep::window(at(first_night), at(ANCHOR))).await;
    assert!(
        segments
            .iter()
            .any(|x| x.state == Some(SleepState::from_code(5)))
    );
    assert_eq!(
        segments.len(),
        s.sim.rows(USER, Series::SleepSegments).len(),
        "every segment of 30 nights, once"
    );
    assert_eq!(s.sim.calls(USER, "/v2/sleep", "get"), 31);
}

#[tokio::test]
async fn a_three_day_sleep_get_is_three_calls() {
    let s = setup(history(10, 2, 50)).await;
    let (start, end) = (ANCHOR - 6 * DAY, ANCHOR - 3 * DAY);
    let read = rows(&s.data(), GetSleep::window(at(start), at(end))).await;
    assert_eq!(s.sim.calls(USER, "/v2/sleep", "get"), 3);
    let held: Vec<u64> = (s.sim.rows(USER, Series::SleepSegments).iter())
        .map(|x| x["startdate"].as_u64().unwrap())
        .filter(|t| (start..end).contains(t))
        .collect();
    let got: Vec<u64> = read.iter().map(|x| secs(x.start)).collect();
    assert_eq!(got, held);
    // Intraday likewise: two days are two calls of at most 24 h, every 5-minute sample once.
    let samples = s
        .data()
        .collect(
            USER,
            GetIntradayActivity::window(at(start), at(start + 2 * DAY)),
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(s.sim.calls(USER, "/v2/measure", "getintradayactivity"), 2);
    assert_eq!(samples.len(), 2 * 288);
    let stamps: BTreeSet<Timestamp> = samples.iter().map(|x| x.timestamp).collect();
    assert_eq!(stamps.len(), samples.len());
}

#[tokio::test]
async fn each_endpoint_reads_what_the_simulator_holds() {
    let s = setup(history(40, 3, 7)).await;
    let data = s.data();

    // getmeas, by window and by lastupdate.
    let held = s.sim.measure_groups(USER);
    let (from, to) = (ANCHOR - 10 * DAY, ANCHOR - 5 * DAY);
    let window = data
        .collect(USER, GetMeas::window(at(from), at(to)))
        .await
        .unwrap();
    let in_window: Vec<SimGroup> = (held.iter())
        .filter(|g| (from..=to).contains(&g.date))
        .cloned()
        .collect();
    assert_same_groups(&window.rows, &in_window);

    // getactivity: one row per day, steps as held.
    let days = rows(&data, GetActivity::since(at(0))).await;
    let held_days = s.sim.rows(USER, Series::Activity);
    assert_eq!(days.len(), held_days.len());
    for (day, h) in days.iter().zip(&held_days) {
        assert_eq!(day.day.date.to_string(), h["date"].as_str().unwrap());
        assert_eq!(day.steps, h["steps"].as_i64());
        assert_eq!(day.source.deviceid.as_deref(), h["deviceid"].as_str());
    }

    // getworkouts and sleep getsummary: every id once.
    // The ids of the simulator's rows of a series, in its order.
    let held_ids = |series| -> Vec<i64> {
        let held = s.sim.rows(USER, series);
        held.iter().map(|row| row["id"].as_i64().unwrap()).collect()
    };
    let workouts = rows(&data, GetWorkouts::since(at(0))).await;
    let ids: Vec<i64> = workouts.iter().map(|w| w.id).collect();
    assert_eq!(ids, held_ids(Series::Workouts));
    let nights = rows(&data, GetSleepSummary::since(at(0))).await;
    let ids: Vec<i64> = nights.iter().map(|n| n.id).collect();
    assert_eq!(ids, held_ids(Series::SleepSummaries));
    assert!(s.sim.calls(USER, "/v2/sleep", "getsummary") > 1, "paged");

    // heart list and get.
    let ecgs = rows(&data, HeartList::window(at(0), at(ANCHOR))).await;
    assert_eq!(ecgs.len(), s.sim.rows(USER, Series::Ecgs).len());
    let signalid = ecgs[0].ecg.as_ref().and_then(|e| e.signalid).unwrap();
    let signal = data.ecg_signal(USER, signalid).await.unwrap();
    assert_eq!(signal.signal.len(), 500);
    assert_eq!(signal.sampling_frequency, Some(500));

    // getdevice and getgoals.
    let devices = data.devices(USER).await.unwrap();
    let held_devices = s.sim.rows(USER, Series::Devices);
    assert_eq!(devices.len(), held_devices.len());
    assert!(devices.iter().any(|d| d.first_session.is_none()));
    let goals = data.goals(USER).await.unwrap();
    match s.sim.goals(USER) {
        Some(held) => {
            let goals = goals.unwrap();
            assert_eq!(goals.steps, held["steps"].as_i64());
            let weight = goals.weight.unwrap();
            assert_eq!(weight.value, held["weight"]["value"].as_i64().unwrap());
        }
        None => assert!(goals.is_none()),
    }
}

#[tokio::test]
async fn a_user_with_no_goals_reads_none() {
    let s = setup(HistoryConfig::default()).await;
    let user = (1..200)
        .map(UserId)
        .find(|u| s.sim.goals(*u).is_none())
        .unwrap();
    let g = s.sim.issue_grant(CLIENT_ID, user, SCOPE);
    s.auth
        .import(Token {
            user_id: user,
            access_token: Secret::new(g.access_token),
            refresh_token: Secret::new(g.refresh_token),
            expires_at: std::time::SystemTime::now() + Duration::from_secs(g.expires_in),
            scope: SCOPE.into(),
        })
        .await
        .unwrap();
    assert!(s.data().goals(user).await.unwrap().is_none());
}

#[tokio::test]
async fn edits_show_in_a_lastupdate_read_and_deletions_only_in_a_window_read() {
    let s = setup(history(20, 2, 9)).await;
    let data = s.data();
    let first = rows(&data, GetMeas::since(at(0))).await;
    let cursor = first.iter().filter_map(|g| g.modified).max().unwrap();
    let held = s.sim.measure_groups(USER);
    let (edited, deleted) = (&held[3], &held[4]);
    let mut measures = edited.measures.clone();
    measures[0].value += 100;
    assert!(s.sim.edit_group(USER, edited.grpid, measures));
    assert!(s.sim.delete_group(USER, deleted.grpid));
    // lastupdate from the largest `modified` read: the edit comes back, the deletion does not.
    let since = rows(&data, GetMeas::since(cursor)).await;
    let ids: Vec<i64> = since.iter().map(|g| g.grpid).collect();
    assert!(
        ids.contains(&i64::try_from(edited.grpid).unwrap()),
        "{ids:?}"
    );
    assert!(!ids.contains(&i64::try_from(deleted.grpid).unwrap()));
    let edited_read = since
        .iter()
        .find(|g| g.grpid == i64::try_from(edited.grpid).unwrap())
        .unwrap();
    assert_eq!(
        edited_read.measures[0].value.value,
        edited.measures[0].value + 100
    );
    // A re-read of the deleted group's window, diffed by key, is what shows it gone.
    let window = rows(&data, GetMeas::window(at(deleted.date), at(deleted.date))).await;
    assert!(
        window
            .iter()
            .all(|g| g.grpid != i64::try_from(deleted.grpid).unwrap())
    );
    assert_same_groups(
        &data
            .collect(USER, GetMeas::since(at(0)))
            .await
            .unwrap()
            .rows,
        &s.sim.measure_groups(USER),
    );
}

/// The same reads over reqwest: the Withings middleware on a reqwest client.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_same_reads_through_the_reqwest_middleware() {
    use tower_withings::data::ReqwestService;

    let s = setup(history(100, 10, 17)).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(s.auth.reqwest_middleware())
        .build();
    let data = DataClient::new(ReqwestService::new(client), &endpoints(&s.sim));
    let read = data.collect(USER, GetMeas::since(at(0))).await.unwrap();
    assert_same_groups(&read.rows, &s.sim.measure_groups(USER));
    assert_eq!(
        s.sim.calls(USER, "/measure", "getmeas"),
        1_000_u64.div_ceil(17)
    );
    let (start, end) = (ANCHOR - 6 * DAY, ANCHOR - 3 * DAY);
    data.collect(USER, GetSleep::window(at(start), at(end)))
        .await
        .unwrap();
    assert_eq!(s.sim.calls(USER, "/v2/sleep", "get"), 3);
    let workouts = rows(&data, GetWorkouts::since(at(0))).await;
    assert_eq!(workouts.len(), s.sim.rows(USER, Series::Workouts).len());
    assert_eq!(
        data.devices(USER).await.unwrap().len(),
        s.sim.rows(USER, Series::Devices).len()
    );
}
