//! The seeded per-user history the data endpoints serve: measure groups, activity days,
//! workouts, nights, ECGs, devices and goals, drawn once per user from
//! [`HistoryConfig::seed`] and the user id, then changed only by the test's own calls.
//!
//! What it holds on purpose (withings-data.md §6): late uploads (`created` days or weeks after
//! `date`), edits (`modified` after `created`), unknown codes (measure types 123, 135, 139, 155,
//! 226, 227; attribs 10, 17, 10000; sleep state 5; workout categories 559 and 9999),
//! segmental types 173–175 repeated in one group by `position`, manual entries with a null
//! `deviceid`, several sleep summaries on one date, users with no goals.

use serde_json::{Value, json};

use super::{HistoryConfig, SimGroup, SimMeasure, SimSource};

/// The zone every simulated user lives in.
pub(crate) const TIMEZONE: &str = "Europe/Paris";

const DAY: u64 = 86_400;

/// SplitMix64: small, fast and the same everywhere.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True `percent` times in a hundred.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (which must not be empty).
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }
}

/// The SplitMix64 finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `YYYY-MM-DD` of a Unix timestamp (UTC; the simulated days never straddle midnight in Paris).
pub(crate) fn ymd(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(secs / DAY).unwrap_or(0) + 719_468;
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

/// A device of the simulated user.
struct Dev {
    kind: &'static str,
    model: &'static str,
    model_id: i64,
    battery: &'static str,
    id: String,
    hash: String,
}

/// One user's data. The v2 rows are drawn only when first asked for: ten thousand users
/// reading their weights cost ten thousand small histories.
pub(crate) struct History {
    /// Measure groups, in no particular order.
    pub(crate) groups: Vec<SimGroup>,
    /// The v2 rows, once drawn.
    v2: Option<V2>,
    /// getgoals `goals` (`None`: the user set none, served as `[]`).
    pub(crate) goals: Option<Value>,
    /// Where the history begins and ends (Unix seconds).
    pub(crate) span: (u64, u64),
    /// Seeds everything drawn for this user.
    pub(crate) salt: u64,
    userid: u64,
    next_grpid: u64,
}

/// The v2 rows of a user.
pub(crate) struct V2 {
    /// getactivity rows, one per day, oldest first.
    pub(crate) activities: Vec<Value>,
    /// getworkouts rows, oldest first.
    pub(crate) workouts: Vec<Value>,
    /// sleep getsummary rows, oldest first.
    pub(crate) summaries: Vec<Value>,
    /// sleep get segments, oldest first.
    pub(crate) segments: Vec<Value>,
    /// heart list rows, oldest first.
    pub(crate) ecgs: Vec<Value>,
    /// getdevice rows.
    pub(crate) devices: Vec<Value>,
}

/// A user's weight in grams before the day-to-day drift: distinct for user ids that differ by
/// less than 30 000.
fn base_weight(userid: u64) -> i64 {
    55_000 + i64::try_from(userid % 30_000).unwrap_or(0)
}

/// The drift (grams) on day `d`: the same for every user, so distinct bases stay distinct.
fn drift(seed: u64, d: u64) -> i64 {
    i64::try_from(mix(seed ^ d.wrapping_mul(0x51)) % 1_201).unwrap_or(0) - 600
}

impl History {
    /// The history of `userid` under `config`, ending at `anchor` (Unix seconds).
    pub(crate) fn generate(config: &HistoryConfig, userid: u64, anchor: u64) -> History {
        let salt = mix(config.seed ^ mix(userid));
        let mut rng = Rng::new(salt);
        let days = u64::from(config.days);
        let per_day = u64::from(config.groups_per_day);
        let devs = devices(salt);
        let start = anchor.saturating_sub(days * DAY);
        let mut h = History {
            groups: Vec::new(),
            v2: None,
            goals: None,
            span: (start, anchor),
            salt,
            userid,
            next_grpid: 5_000_000_000 + (userid % 1_000_000) * 10_000_000,
        };
        let latest = anchor.saturating_sub(60);
        let span = DAY / (per_day + 1);
        let mut extra = 0u64;
        for d in 0..days {
            // Day `d` ends `days - 1 - d` days before the anchor.
            let end = anchor.saturating_sub((days - 1 - d) * DAY);
            let weight = base_weight(userid) + drift(config.seed, d);
            for k in 0..per_day {
                let date = end
                    .saturating_sub((per_day - k) * span)
                    .saturating_sub(rng.below(span / 2));
                // The first group of a day is a weighing; the others take turns, so every kind
                // (and every unknown code) shows up in any history of a few days.
                let (kind, round) = if k == 0 {
                    (Kind::Scale, 0)
                } else {
                    extra += 1;
                    (OTHERS[usize::try_from(extra % 8).unwrap_or(0)], extra / 8)
                };
                let mut group = h.group(kind, round, &mut rng, &devs, date, weight);
                // Most groups reach the cloud within a day; one in ten weeks later.
                let delay = if !config.late_uploads {
                    60 + rng.below(3_540)
                } else if rng.chance(10) {
                    3 * DAY + rng.below(37 * DAY)
                } else if rng.chance(50) {
                    60 + rng.below(3_600)
                } else {
                    3_600 + rng.below(35 * 3_600)
                };
                group.created = (date + delay).min(latest).max(date);
                group.modified = if config.late_uploads && rng.chance(8) {
                    (group.created + DAY + rng.below(9 * DAY)).min(latest)
                } else {
                    group.created
                }
                .max(group.created);
                if d + 1 == days && k == 0 {
                    // The newest upload is the latest weighing.
                    group.created = anchor.saturating_sub(30).max(date);
                    group.modified = group.created;
                }
                h.groups.push(group);
            }
        }
        // One user in four set no goals: Withings then sends `goals: []`.
        if mix(salt ^ 0x60A1) % 4 != 0 {
            h.goals = Some(json!({
                "steps": 10_000,
                "sleep": 28_800,
                "weight": {"value": base_weight(userid) - 2_000, "unit": -3},
            }));
        }
        h
    }

    /// The v2 rows, drawn the first time.
    pub(crate) fn v2(&mut self) -> &mut V2 {
        let v2 = match self.v2.take() {
            Some(v2) => v2,
            None => self.draw_v2(),
        };
        self.v2.insert(v2)
    }

    fn draw_v2(&self) -> V2 {
        let (start, anchor) = self.span;
        let days = (anchor - start) / DAY;
        let userid = self.userid;
        let devs = devices(self.salt);
        let mut rng = Rng::new(self.salt ^ 0x7632_7632);
        let mut v2 = V2 {
            activities: Vec::new(),
            workouts: Vec::new(),
            summaries: Vec::new(),
            segments: Vec::new(),
            ecgs: Vec::new(),
            devices: Vec::new(),
        };
        let mut ids = Ids {
            workout: 3_000_000_000 + (userid % 1_000_000) * 100_000,
            summary: 2_000_000_000 + (userid % 1_000_000) * 100_000,
            signal: 100_000_000 + (userid % 1_000_000) * 10_000,
        };
        for d in 0..days {
            let end = anchor.saturating_sub((days - 1 - d) * DAY);
            v2.day(d, end, anchor, &mut rng, &devs, &mut ids);
        }
        v2.devices = devs
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                json!({
                    "type": dev.kind,
                    "model": dev.model,
                    "model_id": dev.model_id,
                    "battery": dev.battery,
                    "deviceid": dev.id,
                    "hash_deviceid": dev.hash,
                    "timezone": TIMEZONE,
                    "first_session_date": if i == 3 { Value::Null } else { json!(start) },
                    "last_session_date": anchor.saturating_sub(3_600 * (i as u64 + 1)),
                })
            })
            .collect();
        v2
    }

    /// A fresh group id for this user.
    pub(crate) fn grpid(&mut self) -> u64 {
        self.next_grpid += 1;
        self.next_grpid
    }

    fn group(
        &mut self,
        kind: Kind,
        round: u64,
        rng: &mut Rng,
        devs: &[Dev],
        date: u64,
        weight: i64,
    ) -> SimGroup {
        let m = |meastype, value, unit| SimMeasure {
            meastype,
            value,
            unit,
            position: None,
        };
        let scale = &devs[0];
        let (attrib, category, dev, measures) = match kind {
            Kind::Scale => {
                let fat = 18_000 + i64::try_from(rng.below(6_000)).unwrap_or(0);
                let fat_mass = weight * fat / 100_000;
                let mut measures = vec![
                    m(1, weight, -3),
                    m(6, fat, -3),
                    m(8, fat_mass, -3),
                    m(5, weight - fat_mass, -3),
                    m(76, (weight - fat_mass) * 95 / 1_000, -2),
                    m(77, (weight - fat_mass) * 70 / 1_000, -2),
                    m(88, 300 + i64::try_from(rng.below(60)).unwrap_or(0), -2),
                ];
                if rng.chance(30) {
                    measures.push(m(
                        226,
                        1_500 + i64::try_from(rng.below(300)).unwrap_or(0),
                        0,
                    ));
                    measures.push(m(227, 30 + i64::try_from(rng.below(20)).unwrap_or(0), 0));
                    measures.push(m(170, 40 + i64::try_from(rng.below(80)).unwrap_or(0), -1));
                }
                let attrib = rng.pick(&[0, 0, 0, 0, 0, 8, 1, 10, 10_000]);
                (attrib, 1, Some(scale), measures)
            }
            Kind::Manual => (
                rng.pick(&[2, 4]),
                1,
                None,
                vec![m(1, weight + 300, -3), m(4, 1_780, -3)],
            ),
            Kind::Objective => (2, 2, None, vec![m(1, weight - 2_000, -3)]),
            Kind::Pressure => {
                let sys = 110 + i64::try_from(rng.below(30)).unwrap_or(0);
                (
                    rng.pick(&[0, 5]),
                    1,
                    Some(&devs[1]),
                    vec![
                        m(9, sys - 40, 0),
                        m(10, sys, 0),
                        m(11, 55 + i64::try_from(rng.below(30)).unwrap_or(0), 0),
                    ],
                )
            }
            Kind::Segmental => {
                let mut measures = vec![m(1, weight, -3)];
                for (ty, base) in [(173, 900), (174, 250), (175, 850)] {
                    for (position, share) in [(12, 10), (10, 10), (3, 30), (2, 30), (11, 100)] {
                        measures.push(SimMeasure {
                            meastype: ty,
                            value: base * share / 10 + i64::try_from(rng.below(50)).unwrap_or(0),
                            unit: -2,
                            position: Some(position),
                        });
                    }
                }
                (0, 1, Some(scale), measures)
            }
            Kind::Unknown => (
                [17, 10, 10_000][usize::try_from(round % 3).unwrap_or(0)],
                1,
                Some(&devs[2]),
                vec![
                    m(123, 3_800 + i64::try_from(rng.below(900)).unwrap_or(0), -2),
                    m(135, 90 + i64::try_from(rng.below(20)).unwrap_or(0), 0),
                    m(139, i64::try_from(rng.below(3)).unwrap_or(0), 0),
                    m(155, 35 + i64::try_from(rng.below(20)).unwrap_or(0), 0),
                ],
            ),
            Kind::Temperature => (
                0,
                1,
                Some(&devs[2]),
                vec![m(
                    71,
                    36_400 + i64::try_from(rng.below(900)).unwrap_or(0),
                    -3,
                )],
            ),
        };
        SimGroup {
            grpid: self.grpid(),
            attrib,
            category,
            date,
            created: date,
            modified: date,
            source: SimSource {
                deviceid: dev.map(|d| d.id.clone()),
                hash_deviceid: dev.map(|d| d.hash.clone()),
                model: dev.map(|d| d.model.to_owned()),
                modelid: dev.map(|d| d.model_id),
            },
            measures,
        }
    }

    /// Intraday samples every 5 minutes in `[from, to)` (within the history and before `now`).
    pub(crate) fn intraday(&self, from: u64, to: u64, now: u64) -> serde_json::Map<String, Value> {
        let mut series = serde_json::Map::new();
        let first = from.max(self.span.0);
        let mut at = first.div_ceil(300) * 300;
        while at < to && at <= now {
            let r = mix(self.salt ^ at);
            series.insert(
                at.to_string(),
                json!({
                    "deviceid": Value::Null,
                    "hash_deviceid": Value::Null,
                    "model": "ScanWatch 2",
                    "model_id": 93,
                    "duration": 300,
                    "steps": r % 400,
                    "elevation": (r >> 9) % 3,
                    "calories": ((r >> 12) % 200) as f64 / 10.0,
                    "distance": ((r >> 20) % 3_000) as f64 / 10.0,
                    "stroke": 0,
                    "pool_lap": 0,
                    "heart_rate": 55 + (r >> 30) % 60,
                    "spo2_auto": 94 + (r >> 40) % 6,
                }),
            );
            at += 300;
        }
        series
    }
}

/// The next ids of v2 rows.
struct Ids {
    workout: u64,
    summary: u64,
    signal: u64,
}

impl V2 {
    /// Day `d`'s activity, workout, night and ECG; the day ends at `end`.
    fn day(&mut self, d: u64, end: u64, anchor: u64, rng: &mut Rng, devs: &[Dev], ids: &mut Ids) {
        let watch = &devs[2];
        let day_start = end.saturating_sub(DAY);
        let steps = 3_000 + rng.below(12_000);
        // A day's row keeps changing until the day is over, and sometimes after.
        let modified = if rng.chance(10) { end + DAY } else { end }.min(anchor.saturating_sub(60));
        let external = rng.chance(15);
        let metric = |x: u64| json!(x);
        self.activities.push(json!({
            "date": ymd(day_start + DAY / 2),
            "timezone": TIMEZONE,
            "deviceid": if external || rng.chance(20) { Value::Null } else { json!(watch.id) },
            "hash_deviceid": if external { Value::Null } else { json!(watch.hash) },
            "brand": if external { 18 } else { 1 },
            "is_tracker": !external,
            "model": if external { "GoogleFit tracker" } else { watch.model },
            "modelid": if external { 1_059 } else { watch.model_id },
            "steps": steps,
            "distance": (steps * 762) as f64 / 1_000.0,
            "elevation": (rng.below(400) as f64) / 10.0,
            "soft": metric(1_800 + rng.below(3_600)),
            "moderate": metric(rng.below(2_400)),
            "intense": metric(rng.below(900)),
            "active": metric(600 + rng.below(2_000)),
            "calories": (steps * 41) as f64 / 1_000.0,
            "totalcalories": (1_800_000 + steps * 41) as f64 / 1_000.0,
            "hr_average": 60 + rng.below(20),
            "hr_min": 45 + rng.below(10),
            "hr_max": 120 + rng.below(60),
            "hr_zone_0": 40_000 + rng.below(10_000),
            "hr_zone_1": 2_000 + rng.below(2_000),
            "hr_zone_2": rng.below(900),
            "hr_zone_3": rng.below(120),
            "modified": modified,
        }));
        if d % 3 == 1 {
            ids.workout += 1;
            let start = day_start + 17 * 3_600 + rng.below(3_600);
            let length = 1_200 + rng.below(3_600);
            let category = rng.pick(&[1, 2, 16, 187, 559, 9_999]);
            let manual = rng.chance(25);
            let edited = rng.chance(20);
            self.workouts.push(json!({
                "id": ids.workout,
                "category": category,
                "timezone": TIMEZONE,
                "model": if manual { 1_055 } else { watch.model_id },
                "attrib": if manual { 7 } else { 0 },
                "startdate": start,
                "enddate": start + length,
                "date": ymd(start),
                "modified": if edited { start + 6 * DAY } else { start + length + 120 }
                    .min(anchor.saturating_sub(60)),
                "deviceid": if manual { Value::Null } else { json!(watch.id) },
                "data": {
                    "calories": 100 + rng.below(400),
                    "intensity": 50,
                    "manual_distance": 0,
                    "manual_calories": 0,
                    "hr_average": 110 + rng.below(40),
                    "hr_min": 80 + rng.below(10),
                    "hr_max": 150 + rng.below(30),
                    "hr_zone_0": rng.below(300),
                    "hr_zone_1": rng.below(600),
                    "hr_zone_2": rng.below(900),
                    "hr_zone_3": rng.below(300),
                    "pause_duration": 0,
                    "algo_pause_duration": Value::Null,
                    "spo2_average": Value::Null,
                    "core_body_temperature_status": "usual",
                    "steps": rng.below(6_000),
                    "distance": rng.below(8_000),
                    "elevation": rng.below(50),
                },
            }));
        }
        // The night that ends on this day's morning (sleep ends 7.5 h before the day's end).
        let wake = end.saturating_sub(16 * 3_600 + rng.below(3_600));
        let mut t = wake.saturating_sub(7 * 3_600 + rng.below(3_600));
        let bed = t;
        let mut states = Vec::new();
        while t < wake {
            let state = rng.pick(&[1, 1, 2, 3, 0, 5]);
            let until = (t + 1_200 + rng.below(3_600)).min(wake);
            let mut hr = serde_json::Map::new();
            let mut rr = serde_json::Map::new();
            let mut at = t;
            while at < until {
                hr.insert(at.to_string(), json!(50 + rng.below(20)));
                rr.insert(at.to_string(), json!(12 + rng.below(6)));
                at += 600;
            }
            self.segments.push(json!({
                "startdate": t,
                "enddate": until,
                "state": state,
                "model": "Sleep Analyzer",
                "model_id": 63,
                "hash_deviceid": devs[3].hash,
                "hr": hr,
                "rr": rr,
                "snoring": {},
            }));
            states.push((state, until - t));
            t = until;
        }
        let total = |s: i64| -> u64 {
            states
                .iter()
                .filter(|(state, _)| *state == s)
                .map(|(_, secs)| secs)
                .sum()
        };
        let late = rng.chance(10);
        let created = if late { wake + 2 * DAY } else { wake + 600 };
        let edited = rng.chance(15);
        ids.summary += 1;
        self.summaries.push(json!({
            "id": ids.summary,
            "timezone": TIMEZONE,
            "model": 32,
            "model_id": 63,
            "startdate": bed,
            "enddate": wake,
            "date": ymd(wake),
            "created": created.min(anchor.saturating_sub(60)),
            "modified": if edited { created + 7 * DAY } else { created }
                .min(anchor.saturating_sub(60)),
            "hash_deviceid": devs[3].hash,
            "completed": true,
            "data": {
                "wakeupduration": total(0),
                "lightsleepduration": total(1),
                "deepsleepduration": total(2),
                "remsleepduration": total(3),
                "wakeupcount": states.iter().filter(|(s, _)| *s == 0).count(),
                "durationtosleep": 300 + rng.below(900),
                "durationtowakeup": 120 + rng.below(600),
                "hr_average": 55 + rng.below(10),
                "hr_min": 45 + rng.below(5),
                "hr_max": 70 + rng.below(20),
                "rr_average": 14,
                "sleep_efficiency": 0.86,
                "sleep_score": 60 + rng.below(35),
                "night_events": [],
            },
        }));
        if d % 6 == 4 {
            // A nap the same local day: a second summary with the same `date`.
            ids.summary += 1;
            let nap = wake + 6 * 3_600;
            self.summaries.push(json!({
                "id": ids.summary,
                "timezone": TIMEZONE,
                "model": 16,
                "model_id": watch.model_id,
                "startdate": nap,
                "enddate": nap + 1_800,
                "date": ymd(wake),
                "created": (nap + 2_400).min(anchor.saturating_sub(60)),
                "modified": (nap + 2_400).min(anchor.saturating_sub(60)),
                "hash_deviceid": watch.hash,
                "completed": true,
                "data": {"lightsleepduration": 1_500, "wakeupduration": 300},
            }));
        }
        if d % 5 == 2 {
            ids.signal += 1;
            let bpm = rng.chance(50);
            let at = day_start + 12 * 3_600 + rng.below(3_600);
            let mut row = json!({
                "deviceid": if bpm { &devs[1].id } else { &watch.id },
                "model": if bpm { 44 } else { watch.model_id },
                "ecg": {"signalid": ids.signal, "afib": rng.pick(&[0, 0, 1, 2])},
                "heart_rate": 60 + rng.below(30),
                "timestamp": at,
                "modified": at + 60,
                "timezone": TIMEZONE,
            });
            if bpm {
                row["bloodpressure"] =
                    json!({"diastole": 70 + rng.below(15), "systole": 110 + rng.below(25)});
            }
            self.ecgs.push(row);
        }
    }
}

/// The simulated user's four devices.
fn devices(salt: u64) -> [Dev; 4] {
    let hex = |n: u64| format!("{:040x}", mix(n ^ salt));
    [
        Dev {
            kind: "Scale",
            model: "Body+",
            model_id: 5,
            battery: "high",
            id: hex(1),
            hash: hex(11),
        },
        Dev {
            kind: "Blood Pressure Monitor",
            model: "BPM Core",
            model_id: 44,
            battery: "unknown",
            id: hex(2),
            hash: hex(12),
        },
        Dev {
            kind: "Activity Tracker",
            model: "ScanWatch 2",
            model_id: 93,
            battery: "medium",
            id: hex(3),
            hash: hex(13),
        },
        Dev {
            kind: "Sleep Monitor",
            model: "",
            model_id: 63,
            battery: "low",
            id: hex(4),
            hash: hex(14),
        },
    ]
}

/// The kinds of a day's groups after its first, in turn.
const OTHERS: [Kind; 8] = [
    Kind::Manual,
    Kind::Pressure,
    Kind::Segmental,
    Kind::Unknown,
    Kind::Temperature,
    Kind::Scale,
    Kind::Pressure,
    Kind::Objective,
];

/// What a generated measure group is.
#[derive(Clone, Copy)]
enum Kind {
    /// A weighing on the scale: weight first, then body composition.
    Scale,
    /// A weight typed in by hand (no device).
    Manual,
    /// A weight objective (category 2).
    Objective,
    /// Blood pressure and pulse from the BPM.
    Pressure,
    /// Segmental composition: 173–175 once per `position`.
    Segmental,
    /// Codes few clients know: 123, 135, 139, 155, with attrib 10, 17 or 10 000.
    Unknown,
    /// Body temperature.
    Temperature,
}
