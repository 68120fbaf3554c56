//! `withings sync` against the simulator on loopback, with a real `--store` (a SQLite file):
//! `--once` prints the whole history exactly and then only what changed, `--user`, `--all` and
//! `--streams` pick what is synced, the serving mode prints its callback URL first, turns a
//! notification into a line and stops on SIGTERM with exit 0, and `sync status` shows the
//! cursors.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tower_withings::UserId;
use tower_withings::data::Exact;
use withings_sim::{HistoryConfig, Series, SimGroup, SimMeasure, Simulator};

use common::{CLIENT_SECRET, Cli, simulator_with, withings};

/// A simulator with `days` of history, `groups` measure groups a day, small pages (so every
/// read pages), late uploads and edits on: what Withings serves.
async fn simulator(days: u32, groups: u32) -> Simulator {
    let history = HistoryConfig {
        days,
        groups_per_day: groups,
        page_size: 7,
        ..HistoryConfig::default()
    };
    simulator_with(history).await
}

/// `simulator(days, groups)` and the CLI with `user` imported (scope `user.metrics`).
async fn linked(days: u32, groups: u32, user: UserId) -> (Simulator, Cli, UserId) {
    let sim = simulator(days, groups).await;
    let cli = Cli::new(&sim);
    cli.import(&sim, user.0, "user.metrics").await;
    (sim, cli, user)
}

/// Each line of `out` as JSON.
fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Asserts that `line` is the upsert of `group` of `user`, every field and value exact.
fn assert_group(line: &Value, user: UserId, group: &SimGroup) {
    assert_eq!(line["event"], "upsert", "{line}");
    assert_eq!(line["stream"], "measures", "{line}");
    assert_eq!(line["user"], user.0, "{line}");
    assert_eq!(line["key"], group.grpid.to_string(), "{line}");
    assert_eq!(line["version"], group.modified, "{line}");
    let record = &line["record"];
    assert_eq!(record["grpid"], group.grpid, "{line}");
    assert_eq!(record["date"], group.date, "{line}");
    assert_eq!(record["modified"], group.modified, "{line}");
    let read: Vec<(i64, Option<i64>, String)> = (record["measures"].as_array().unwrap().iter())
        .map(|m| {
            let value = m["value"].as_str().expect("the value as a string");
            (
                m["type"].as_i64().unwrap(),
                m["position"].as_i64(),
                value.to_owned(),
            )
        })
        .collect();
    let held: Vec<(i64, Option<i64>, String)> = (group.measures.iter())
        .map(|m| {
            let exact = Exact::new(m.value, i32::try_from(m.unit).unwrap());
            (m.meastype, m.position, exact.to_string())
        })
        .collect();
    assert_eq!(read, held, "{line}");
}

/// The lines of a `--once` run that exited 0.
async fn once(cli: &Cli, args: &[&str]) -> String {
    let mut all = vec!["sync", "--once"];
    all.extend_from_slice(args);
    let (code, out, err) = cli.run(&all, "").await;
    assert_eq!(code, 0, "{all:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_every_group_exactly_then_only_what_changed_and_status_shows_the_cursor() {
    let (sim, cli, user) = linked(20, 3, UserId(4_321)).await;
    let id = user.0.to_string();
    let jsonl = ["--user", &id, "--streams", "measures", "--format", "jsonl"];

    // The first run: every group the simulator holds, once, exactly.
    let out = once(&cli, &jsonl).await;
    let held = sim.measure_groups(user);
    assert_eq!(held.len(), 60);
    let read: BTreeMap<String, Value> = (lines(&out).into_iter())
        .map(|l| (l["key"].as_str().unwrap().to_owned(), l))
        .collect();
    assert_eq!(read.len(), out.lines().count(), "one line per group");
    assert_eq!(read.len(), held.len());
    for g in &held {
        assert_group(&read[&g.grpid.to_string()], user, g);
    }

    // A new group (a late upload, dated two days back) and an edit: the second run prints
    // exactly those two.
    let date = held.iter().map(|g| g.date).max().unwrap() - 2 * 86_400;
    let added = sim.add_group(user, date, 0, vec![SimMeasure::new(1, 72_345, -3)]);
    let edited = held[7].grpid;
    assert!(sim.edit_group(user, edited, vec![SimMeasure::new(1, 80_001, -3)]));
    let out = once(&cli, &jsonl).await;
    let now = sim.measure_groups(user);
    let by_id = |grpid: u64| now.iter().find(|g| g.grpid == grpid).unwrap();
    let mut read = lines(&out);
    read.sort_by_key(|l| l["key"].as_str().unwrap().parse::<u64>().unwrap());
    let mut want = [added, edited];
    want.sort();
    assert_eq!(read.len(), 2, "{out}");
    for (line, grpid) in read.iter().zip(want) {
        assert_group(line, user, by_id(grpid));
    }
    assert_eq!(by_id(edited).measures[0].value, 80_001);

    // Nothing changed since: nothing printed.
    assert_eq!(once(&cli, &jsonl).await, "");

    // Status from the store alone (no credentials): the cursor is the newest `modified`.
    let mut command = withings();
    command
        .env("WITHINGS_STORE", &cli.store)
        .args(["sync", "status"]);
    let (code, out, err) = common::finish(command, "").await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0][..2], [id.as_str(), "measures"], "{out}");
    let newest = now.iter().map(|g| g.modified).max().unwrap();
    let cursor = jiff::Timestamp::from_second(i64::try_from(newest).unwrap()).unwrap();
    assert_eq!(rows[0][2], format!("cursor {cursor}"), "{out}");
    assert!(
        rows[0][3].starts_with("lag ") && rows[0][3].ends_with('s'),
        "{out}"
    );
    assert_eq!(rows[0][4..], ["backfill done", "active"], "{out}");
    assert_eq!(rows[1], ["inbox", "0"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_all_and_streams_pick_what_is_synced() {
    let sim = simulator(7, 2).await;
    let cli = Cli::new(&sim);
    let (a, b) = (UserId(501), UserId(502));
    for user in [a, b] {
        cli.import(&sim, user.0, "user.metrics,user.activity").await;
    }
    let rows = |user, series| sim.rows(user, series).len();
    let count = |out: &str, user: UserId, stream: &str| {
        (lines(out).iter())
            .filter(|l| l["user"] == user.0 && l["stream"] == stream)
            .count()
    };

    // --user: only that user's activity and workouts.
    let id = a.0.to_string();
    let args = [
        "--user",
        &id,
        "--streams",
        "activity,workouts",
        "--format",
        "jsonl",
    ];
    let out = once(&cli, &args).await;
    assert!(rows(a, Series::Activity) > 0 && rows(a, Series::Workouts) > 0);
    assert_eq!(count(&out, a, "activity"), rows(a, Series::Activity));
    assert_eq!(count(&out, a, "workouts"), rows(a, Series::Workouts));
    assert_eq!(
        out.lines().count(),
        count(&out, a, "activity") + count(&out, a, "workouts")
    );

    // --all: the other user's now (the first one's cursors are in the store already).
    let args = [
        "--all",
        "--streams",
        "activity,workouts",
        "--format",
        "jsonl",
    ];
    let out = once(&cli, &args).await;
    assert_eq!(count(&out, b, "activity"), rows(b, Series::Activity));
    assert_eq!(count(&out, b, "workouts"), rows(b, Series::Workouts));
    assert_eq!(
        out.lines().count(),
        count(&out, b, "activity") + count(&out, b, "workouts")
    );

    // The default format: a short line per change, both users' measures.
    let out = once(&cli, &["--all", "--streams", "measures"]).await;
    let groups = sim.measure_groups(a).len() + sim.measure_groups(b).len();
    assert_eq!(out.lines().count(), groups, "{out}");
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[0], "upsert", "{line}");
        let key: Vec<&str> = fields[1].split('/').collect();
        assert!(
            [id.clone(), b.0.to_string()].contains(&key[0].to_owned()),
            "{line}"
        );
        assert_eq!(key[1], "measures", "{line}");
        assert!(fields[2].parse::<jiff::Timestamp>().is_ok(), "{line}");
    }

    // Neither --user nor --all, an unknown stream: usage (2); an unknown user: 3.
    let (code, _, err) = cli.run(&["sync", "--once"], "").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all"), "{err}");
    let (code, _, err) = cli
        .run(&["sync", "--once", "--all", "--streams", "weights"], "")
        .await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli.run(&["sync", "--once", "--user", "999"], "").await;
    assert_eq!(code, 3, "{err}");
    // A callback address Withings would refuse (an IP host): 2 before serving, the secret
    // not shown.
    let secret = "s3cr3t-0123456789abcdef";
    let args = [
        "sync",
        "--all",
        "--listen",
        "127.0.0.1:0",
        "--callback-base",
        "https://203.0.113.9/n",
        "--notify-secret",
        secret,
    ];
    let (code, out, err) = cli.run(&args, "").await;
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("callback URL refused"), "{err}");
    assert!(!err.contains(secret), "{err}");
}

/// A user whose grant Withings revoked: the run stops their sync and exits 3, status says so,
/// and the next run refuses them before sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_stops_with_exit_3() {
    let (sim, cli, user) = linked(3, 1, UserId(901)).await;
    let id = user.0.to_string();
    sim.revoke_user(user);
    let args = ["sync", "--once", "--user", &id, "--streams", "measures"];
    let (code, out, err) = cli.run(&args, "").await;
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
    assert!(err.contains("authorize again"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, out, err) = cli.run(&["sync", "status"], "").await;
    assert_eq!(code, 0, "{err}");
    let first: Vec<&str> = out.lines().next().unwrap().split('\t').collect();
    assert_eq!(first[0], id, "{out}");
    assert!(first.last().unwrap().starts_with("stopped: "), "{out}");
    let calls = sim.counters().data_calls;
    let (code, _, err) = cli.run(&args, "").await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(sim.counters().data_calls, calls, "nothing sent for them");
}

/// Withings failing mid-run: exit 4 with one line, and the next run prints everything (no
/// cursor moved past what was not printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_withings_is_exit_4_and_the_next_run_catches_up() {
    use withings_sim::{Fault, Target};
    let (sim, cli, user) = linked(7, 2, UserId(902)).await;
    let id = user.0.to_string();
    sim.inject(Target::Data, Fault::HttpStatus(503), 1);
    let args = ["sync", "--once", "--user", &id, "--streams", "measures"];
    let (code, _, err) = cli.run(&args, "").await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("run again"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, out, err) = cli.run(&args, "").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), sim.measure_groups(user).len(), "{out}");
}

/// The next stdout line of the serving process (bounded wait).
async fn next_line(
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("a line within 30 s")
        .unwrap()
        .expect("the sync is still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_prints_the_callback_then_each_notified_change_and_stops_on_sigterm() {
    let (sim, cli, user) = linked(3, 1, UserId(777)).await;
    let id = user.0.to_string();
    let mut command: Command = cli.command(CLIENT_SECRET);
    command.stdin(Stdio::null()).args([
        "sync",
        "--user",
        &id,
        "--streams",
        "measures",
        "--format",
        "jsonl",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

    // First line: the URL to subscribe, on the receiver's loopback address, secret included.
    let first = next_line(&mut stdout).await;
    let url = first.strip_prefix("callback: ").expect(&first).to_owned();
    let (base, secret) = url.rsplit_once('/').unwrap();
    assert!(base.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(secret.len(), 32, "{url}");

    // The catch-up: the history, one line per group.
    let held = sim.measure_groups(user);
    assert_eq!(held.len(), 3);
    for _ in &held {
        let line: Value = serde_json::from_str(&next_line(&mut stdout).await).unwrap();
        assert_eq!(line["user"], user.0, "{line}");
    }

    // Subscribed at that URL (Withings checks it first), a new weighing is notified and lands
    // as one line.
    let args = [
        "notify",
        "subscribe",
        "--user",
        &id,
        "--callback",
        &url,
        "--appli",
        "1",
    ];
    let (code, out, err) = cli.run(&args, "").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "subscribed\t1\tweight\n"),
        "{err}"
    );
    let date = held.iter().map(|g| g.date).max().unwrap() + 60;
    let added = sim.add_group(user, date, 0, vec![SimMeasure::new(1, 70_125, -3)]);
    let line: Value = serde_json::from_str(&next_line(&mut stdout).await).unwrap();
    let group = sim.measure_groups(user);
    let group = group.iter().find(|g| g.grpid == added).unwrap();
    assert_group(&line, user, group);
    assert_eq!(line["record"]["measures"][0]["value"], "70.125");
    let counters = sim.notify_counters();
    assert_eq!(counters.deliveries, 1, "{counters:?}");
    assert_eq!(counters.delivery_failures, 0, "{counters:?}");

    // SIGTERM: exit 0, nothing more printed.
    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("it stops")
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    assert_eq!(stdout.next_line().await.unwrap(), None);

    // The inbox is empty: the notification was fetched and acknowledged.
    let (code, out, err) = cli.run(&["sync", "status"], "").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().last(), Some("inbox\t0"), "{out}");
}
