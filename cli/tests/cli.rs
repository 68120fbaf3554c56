//! The `withings` binary, driven as a user would: login through stdin against the simulator,
//! then users, call, refresh, import; and each documented error with its exit code.
//!
//! In the `withings-cli` package: it needs `CARGO_BIN_EXE_withings` (this package's binary) and
//! drives that binary as separate processes, each with only the environment a test gives it.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tower_withings::UserId;
use tower_withings::store::TokenStore;
use withings_sim::DEFAULT_USER_ID;

use common::{
    CLIENT_ID, CLIENT_SECRET, Cli, REDIRECT_URI, finish, login, simulator, simulator_with, withings,
};

#[tokio::test]
async fn login_then_users_call_and_refresh() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);
    let (code, out, err) = cli.login(CLIENT_SECRET, &sim, Duration::ZERO).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), DEFAULT_USER_ID.to_string());

    let (code, out, err) = cli.run(&["users"], "").await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().next().expect("one user");
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[0], DEFAULT_USER_ID.to_string());
    assert_eq!(fields[1], "user.metrics,user.activity");
    assert!(fields[2].ends_with('Z'), "{line}");
    assert_eq!(fields[3], "ok");
    assert_eq!(fields[4], "0d", "refresh-token age: {line}");

    let user = DEFAULT_USER_ID.to_string();
    let (code, out, err) = cli
        .run(
            &["call", "/measure", "getmeas", "meastype=1", "--user", &user],
            "",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let body: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(body["measuregrps"].is_array(), "{out}");

    let (code, _, err) = cli.run(&["refresh", "--user", &user], "").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sim.counters().successful_refreshes, 1);

    // Nothing secret was printed anywhere, and the token file is owner-only.
    let store = tower_withings::store::SqliteStore::open(&cli.store)
        .await
        .unwrap();
    let token = store.load(DEFAULT_USER_ID).await.unwrap().unwrap().token;
    let (_, users_out, users_err) = cli.run(&["users"], "").await;
    for text in [&users_out, &users_err, &out, &err] {
        assert!(!text.contains(token.access_token.expose()));
        assert!(!text.contains(token.refresh_token.expose()));
        assert!(!text.contains(CLIENT_SECRET));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cli.store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn import_from_flags_and_from_withings_json() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);
    cli.import(&sim, 77, "user.metrics").await;
    let (code, _, err) = cli
        .run(&["call", "/measure", "getmeas", "--user", "77"], "")
        .await;
    assert_eq!(code, 0, "{err}");

    let g = sim.issue_grant(CLIENT_ID, UserId(78), "user.metrics");
    let json = format!(
        r#"{{"status":0,"body":{{"userid":"78","access_token":"{}","refresh_token":"{}","expires_in":10800,"scope":"user.metrics"}}}}"#,
        g.access_token, g.refresh_token
    );
    let (code, out, err) = cli.run(&["import", "--json"], &json).await;
    assert_eq!((code, out.trim()), (0, "78"), "{err}");
    let (_, users, _) = cli.run(&["users"], "").await;
    assert_eq!(users.lines().count(), 2, "{users}");

    // forget deletes one user's tokens; a second forget finds none (exit 3).
    let (code, out, err) = cli.run(&["forget", "--user", "77"], "").await;
    assert_eq!((code, out.trim()), (0, "forgot 77"), "{err}");
    let (_, users, _) = cli.run(&["users"], "").await;
    assert_eq!(users.lines().count(), 1, "{users}");
    assert!(!users.contains("77 "), "{users}");
    let (code, _, err) = cli.run(&["forget", "--user", "77"], "").await;
    assert_eq!(code, 3, "{err}");

    // revoke tells Withings (signed) and marks the record.
    let (code, out, err) = cli.run(&["revoke", "--user", "78"], "").await;
    assert_eq!((code, out.trim()), (0, "revoked 78"), "{err}");
    assert!(!sim.is_refresh_token_valid(&g.refresh_token));
    let (_, users, _) = cli.run(&["users"], "").await;
    assert!(users.contains("\tneeds re-auth\t"), "{users}");
}

#[tokio::test]
async fn errors_are_one_line_with_documented_exit_codes() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);

    // An expired code: 3, and it says why.
    let (code, _, err) = cli
        .login(CLIENT_SECRET, &sim, Duration::from_secs(31))
        .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.lines().last().unwrap().contains("valid 30 s"), "{err}");

    // A wrong secret: 2.
    let (code, _, err) = cli.login("wrong-secret", &sim, Duration::ZERO).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.lines().last().unwrap().contains("OAuth 2.0"), "{err}");

    // An unknown user: 3.
    let (code, _, err) = cli
        .run(&["call", "/measure", "getmeas", "--user", "999"], "")
        .await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A bad store URL: 2.
    let (code, _, err) = cli
        .run(&["--store", "ftp://somewhere/x", "users"], "")
        .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("withings: ") && err.lines().count() == 1,
        "{err}"
    );

    // Withings unreachable: 4.
    cli.import(&sim, 5, "user.metrics").await;
    let (code, _, err) = cli
        .run(
            &["--api-base", "http://127.0.0.1:9", "refresh", "--user", "5"],
            "",
        )
        .await;
    assert_eq!(code, 4, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Exit codes are documented in --help.
    let (code, out, _) = cli.run(&["--help"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Exit codes:") && out.contains("5  the token store failed"),
        "{out}"
    );
}

/// A `NotifyReceiver` on a random loopback port; its callback URL (secret included).
async fn notify_receiver() -> String {
    use tower_withings::notify::NotifyReceiver;
    let (receiver, notifications) = NotifyReceiver::builder(NotifyReceiver::random_secret())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = receiver.callback_url(&format!("http://{}/n", listener.local_addr().unwrap()));
    let app = axum::Router::new().route_service("/n/{secret}", receiver);
    tokio::spawn(async move {
        let _keep = notifications;
        axum::serve(listener, app).await
    });
    url.expose().to_owned()
}

/// `withings notify <action> --user 77 --callback <callback> --appli <applis>`.
async fn notify_77(cli: &Cli, action: &str, callback: &str, applis: &str) -> (i32, String, String) {
    let args = [
        "notify",
        action,
        "--user",
        "77",
        "--callback",
        callback,
        "--appli",
        applis,
    ];
    cli.run(&args, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_subscribe_list_and_revoke() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);
    cli.import(&sim, 77, "user.metrics,user.activity").await;
    let url = notify_receiver().await;
    let (code, out, err) = notify_77(&cli, "subscribe", &url, "1,44").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "subscribed\t1\tweight\nsubscribed\t44\tsleep\n");
    // Idempotent: what exists is left alone; names work as well as codes.
    let (code, out, err) = notify_77(&cli, "subscribe", &url, "weight,user").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "already\t1\tweight\nsubscribed\t46\tuser\n");
    assert_eq!(sim.notify_counters().subscriptions_made, 3);

    let (code, out, err) = cli.run(&["notify", "list", "--user", "77"], "").await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("1\tweight\t{url}\ttower-withings"));

    let (code, out, err) = notify_77(&cli, "revoke", &url, "1").await;
    assert_eq!((code, out.as_str()), (0, "revoked\t1\tweight\n"), "{err}");
    let (_, out, _) = cli.run(&["notify", "list", "--user", "77"], "").await;
    assert_eq!(out.lines().count(), 2, "{out}");
    // Revoking it again: Withings refuses, exit 1, one line.
    let (code, _, err) = notify_77(&cli, "revoke", &url, "1").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such notification subscription"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A callback failing Withings' HEAD check (a wrong secret): 1, and the secret is not shown.
    let wrong = format!("{}-wrong", url);
    let (code, _, err) = notify_77(&cli, "subscribe", &wrong, "1").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HEAD"), "{err}");
    let secret = url.rsplit('/').next().unwrap();
    assert!(!err.contains(secret), "{err}");
    // A URL Withings would refuse: 2, before anything is sent.
    let calls = sim.counters().data_calls;
    let (code, _, err) = notify_77(&cli, "subscribe", "https://203.0.113.9/n", "1").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("callback URL refused"), "{err}");
    assert_eq!(sim.counters().data_calls, calls);
    // An unknown appli name is a usage error.
    let (code, _, err) = notify_77(&cli, "subscribe", &url, "scale").await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn the_request_budget_is_shared_by_every_command_through_the_store() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);
    cli.import(&sim, 79, "user.metrics").await;
    let call = [
        "--requests-per-minute",
        "3",
        "--budget-deadline",
        "1",
        "call",
        "/measure",
        "getmeas",
        "--user",
        "79",
    ];
    for _ in 0..3 {
        let (code, _, err) = cli.run(&call, "").await;
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = cli.run(&["--requests-per-minute", "3", "budget"], "").await;
    assert_eq!(
        (code, out.trim()),
        (0, "budget 3/3 per 60 s, 0 free"),
        "{err}"
    );
    // Three calls from three processes used the minute: the fourth waits its second and
    // gives up (exit 4, retry later) without sending anything.
    let (code, _, err) = cli.run(&call, "").await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("budget"), "{err}");
    assert_eq!(sim.counters().data_calls, 3);
    let (code, out, _) = cli.run(&["--requests-per-minute", "0", "budget"], "").await;
    assert_eq!((code, out.trim()), (0, "budget unlimited"));
}

/// The variables `withings sim` prints, one `NAME=value` line each, in this order.
const SIM_VARIABLES: [&str; 7] = [
    "WITHINGS_API_BASE",
    "WITHINGS_ACCOUNT_BASE",
    "WITHINGS_ALLOW_HTTP_LOOPBACK",
    "WITHINGS_CLIENT_ID",
    "WITHINGS_CLIENT_SECRET",
    "WITHINGS_REDIRECT_URI",
    "WITHINGS_STORE",
];

/// `withings sim --port P` running, and the variables it printed.
struct SimProcess {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    vars: BTreeMap<String, String>,
}

impl SimProcess {
    async fn start(port: u16) -> SimProcess {
        let mut command = withings();
        command
            .args(["sim", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut vars = BTreeMap::new();
        for name in SIM_VARIABLES {
            let line = stdout.next_line().await.unwrap().expect("a variable line");
            let (key, value) = line.split_once('=').expect("NAME=value");
            assert_eq!(key, name, "{line}");
            assert!(
                !value.is_empty() && !value.contains(char::is_whitespace),
                "{line}"
            );
            vars.insert(key.to_owned(), value.to_owned());
        }
        SimProcess {
            child,
            stdout,
            vars,
        }
    }

    /// `withings <args>` with only the printed variables.
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = withings();
        command.envs(&self.vars).args(args);
        finish(command, "").await
    }

    /// SIGTERM: exit 0, nothing more printed, its store gone.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(killed.unwrap().success());
        let status = self.child.wait().await.unwrap();
        assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
        let more = self.stdout.next_line().await.unwrap();
        assert_eq!(more, None, "one line per variable, nothing more");
        let store = std::path::Path::new(&self.vars["WITHINGS_STORE"]);
        assert!(!store.exists(), "{}", store.display());
    }
}

/// `withings sim --port P`: its printed lines alone drive the other commands (login shows the
/// simulator's authorize page, users, call, budget); SIGTERM stops it with exit 0, and it
/// starts again on the same port, afresh (new store, no user).
#[tokio::test]
async fn sim_lines_drive_every_command_and_it_restarts_on_the_same_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user = DEFAULT_USER_ID.to_string();
    for run in 0..2 {
        let sim = SimProcess::start(port).await;
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(sim.vars["WITHINGS_API_BASE"], base, "run {run}");
        assert_eq!(sim.vars["WITHINGS_ACCOUNT_BASE"], base, "run {run}");
        assert_eq!(sim.vars["WITHINGS_REDIRECT_URI"], REDIRECT_URI);
        let (code, out, _) = sim.run(&["users"]).await;
        assert_eq!((code, out.as_str()), (0, ""), "run {run}: a fresh store");

        let mut command = withings();
        command
            .envs(&sim.vars)
            .args(["login", "--scope", "user.metrics"]);
        let (url, (code, out, err)) = login(command, None).await;
        assert!(
            url.starts_with(&format!("{base}/oauth2_user/authorize2?")),
            "{url}"
        );
        assert_eq!((code, out.trim()), (0, user.as_str()), "{err}");

        let (code, out, err) = sim.run(&["users"]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with(&format!("{user}\tuser.metrics\t")), "{out}");
        let call = ["call", "/measure", "getmeas", "--user", &user];
        let (code, out, err) = sim.run(&call).await;
        assert_eq!(code, 0, "{err}");
        let body: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(body["measuregrps"].is_array(), "{out}");
        let (code, out, err) = sim.run(&["budget"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("budget "), "{out}");
        sim.stop().await;
    }
}

/// Plain http without `--allow-http-loopback` is refused with a message that names the flag;
/// `WITHINGS_ALLOW_HTTP_LOOPBACK` does what the flag does; `users` and `budget`, which send
/// nothing, need neither, and `users` needs no client credentials.
#[tokio::test]
async fn plain_http_names_the_flag_and_store_only_commands_need_neither_it_nor_credentials() {
    let sim = simulator().await;
    let cli = Cli::new(&sim);
    cli.import(&sim, 81, "user.metrics").await;
    // The hosts and the store, nothing else.
    let bare = |args: &[&str]| {
        let mut command = withings();
        command
            .env("WITHINGS_API_BASE", &cli.api)
            .env("WITHINGS_ACCOUNT_BASE", &cli.api)
            .env("WITHINGS_STORE", &cli.store)
            .args(args);
        command
    };
    let call = ["call", "/measure", "getmeas", "--user", "81"];
    let mut command = bare(&call);
    command
        .env("WITHINGS_CLIENT_ID", CLIENT_ID)
        .env("WITHINGS_CLIENT_SECRET", CLIENT_SECRET);
    let (code, _, err) = finish(command, "").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("plain http is refused"), "{err}");
    assert!(err.contains("--allow-http-loopback"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(sim.counters().data_calls, 0);

    let mut command = bare(&call);
    command
        .env("WITHINGS_CLIENT_ID", CLIENT_ID)
        .env("WITHINGS_CLIENT_SECRET", CLIENT_SECRET)
        .env("WITHINGS_ALLOW_HTTP_LOOPBACK", "true");
    let (code, _, err) = finish(command, "").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sim.counters().data_calls, 1);

    let (code, out, err) = finish(bare(&["users"]), "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("81\tuser.metrics\t"), "{out}");
    let mut command = bare(&["budget"]);
    command.env("WITHINGS_CLIENT_ID", CLIENT_ID);
    let (code, out, err) = finish(command, "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("budget 1/"), "{out}");
    // The budget is the app's: without a client id there is none to read.
    let (code, _, err) = finish(bare(&["budget"]), "").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("WITHINGS_CLIENT_ID"), "{err}");
}

/// `withings demo`, the README's main job: the whole story on embedded defaults (its own
/// simulator and store, no credentials), every step printed, exit 0. Its 400 calls within a
/// second must not wait on the default request budget.
#[tokio::test]
async fn demo_tells_the_whole_story_and_exits_0() {
    let child = withings().arg("demo").stdin(Stdio::null()).spawn().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(50), child.wait_with_output())
        .await
        .expect("the demo finishes well within the budget's 60 s deadline")
        .unwrap();
    let (out, err) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    let steps: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        steps,
        [
            "simulator",
            "store",
            "step",
            "step",
            "step",
            "step",
            "step",
            "step",
            "summary"
        ]
    );
    assert!(out.contains("200 answered, 1 refresh"), "{out}");
    assert!(out.contains("200 replayed"), "{out}");
}

/// The data commands against the simulator's seeded history: `measures --format jsonl` prints
/// every measure once with its exact value, as the simulator holds it; the selections (--type,
/// --from/--to, --since) pick what Withings would; each other command one line per row.
#[tokio::test]
async fn data_commands_print_every_row_exactly() {
    use tower_withings::data::Exact;
    use withings_sim::{HistoryConfig, Series};

    const ANCHOR: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let sim = simulator_with(HistoryConfig {
        days: 20,
        groups_per_day: 3,
        page_size: 7,
        anchor: Some(ANCHOR),
        ..HistoryConfig::default()
    })
    .await;
    let cli = Cli::new(&sim);
    let user = UserId(4_321);
    cli.import(&sim, user.0, "user.info,user.metrics,user.activity")
        .await;
    let id = user.0.to_string();
    let held = sim.measure_groups(user);
    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let key = |m: &serde_json::Value| {
        (
            m["grpid"].as_u64().unwrap(),
            m["type"].as_i64().unwrap(),
            m["position"].as_i64(),
        )
    };

    // Every measure once, its value the exact decimal.
    let (code, out, err) = cli
        .run(&["measures", "--user", &id, "--format", "jsonl"], "")
        .await;
    assert_eq!(code, 0, "{err}");
    let read = lines(&out);
    let mut want = BTreeMap::new();
    for g in &held {
        for m in &g.measures {
            let value = Exact::new(m.value, i32::try_from(m.unit).unwrap()).to_string();
            want.insert((g.grpid, m.meastype, m.position), (value, g));
        }
    }
    assert_eq!(read.len(), want.len(), "one line per measure");
    for m in &read {
        let (value, g) = &want[&key(m)];
        assert_eq!(m["value"].as_str(), Some(value.as_str()), "{m}");
        assert_eq!(m["date"], g.date, "{m}");
        assert_eq!(m["modified"], g.modified, "{m}");
        assert_eq!(m["attrib"], g.attrib, "{m}");
        assert_eq!(m["category"], g.category, "{m}");
        assert!(m["position"].is_null() || m["position"].is_i64(), "{m}");
    }
    let distinct: std::collections::BTreeSet<_> = read.iter().map(key).collect();
    assert_eq!(distinct.len(), read.len());
    assert_eq!(sim.calls(user, "/measure", "getmeas"), 60_u64.div_ceil(7));

    // --type by name and code: one call for both, only those types.
    let (code, out, err) = cli
        .run(
            &[
                "measures", "--user", &id, "--type", "weight,6", "--format", "jsonl",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let typed = lines(&out);
    let want_typed = want.keys().filter(|(_, t, _)| *t == 1 || *t == 6).count();
    assert_eq!(typed.len(), want_typed);

    // --from/--to: days, the last one included.
    let (code, out, err) = cli
        .run(
            &[
                "measures",
                "--user",
                &id,
                "--from",
                "2025-12-20",
                "--to",
                "2025-12-25",
                "--format",
                "jsonl",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let (from, to) = (1_766_188_800, 1_766_188_800 + 6 * 86_400 - 1);
    let in_window = want
        .values()
        .filter(|(_, g)| (from..=to).contains(&g.date))
        .count();
    assert!(in_window > 0);
    assert_eq!(lines(&out).len(), in_window);

    // --since in Unix seconds: what changed since.
    let since = ANCHOR - 5 * 86_400;
    let (code, out, err) = cli
        .run(
            &[
                "measures",
                "--user",
                &id,
                "--since",
                &since.to_string(),
                "--format",
                "jsonl",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let changed = want.values().filter(|(_, g)| g.modified >= since).count();
    assert_eq!(lines(&out).len(), changed);

    // The table: one line per measure too.
    let (code, out, err) = cli.run(&["measures", "--user", &id], "").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), want.len());

    // A window and --since together, or a bad DATE: usage errors (exit 2).
    let (code, _, err) = cli
        .run(
            &[
                "measures", "--user", &id, "--since", "0", "--from", "0", "--to", "1",
            ],
            "",
        )
        .await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli
        .run(&["measures", "--user", &id, "--since", "yesterday"], "")
        .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("YYYY-MM-DD"), "{err}");

    // The other commands: one line per row the simulator holds.
    for (command, series) in [
        ("activity", Series::Activity),
        ("workouts", Series::Workouts),
        ("sleep", Series::SleepSummaries),
        ("heart", Series::Ecgs),
        ("devices", Series::Devices),
    ] {
        let (code, out, err) = cli
            .run(&[command, "--user", &id, "--format", "jsonl"], "")
            .await;
        assert_eq!(code, 0, "{command}: {err}");
        assert_eq!(lines(&out).len(), sim.rows(user, series).len(), "{command}");
    }
    let (code, out, err) = cli
        .run(
            &[
                "activity",
                "--user",
                &id,
                "--from",
                "2025-12-30",
                "--to",
                "2025-12-31",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, err) = cli
        .run(&["goals", "--user", &id, "--format", "jsonl"], "")
        .await;
    assert_eq!(code, 0, "{err}");
    match sim.goals(user) {
        Some(goals) => {
            let read: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(read["steps"], goals["steps"], "{out}");
        }
        None => assert_eq!(out.trim(), "null"),
    }
    // An unknown user: exit 3, as for every command.
    let (code, _, err) = cli.run(&["measures", "--user", "999"], "").await;
    assert_eq!(code, 3, "{err}");
}

/// `withings sim`'s lines drive the data commands: a login, then measures as JSON lines.
#[tokio::test]
async fn data_commands_against_withings_sim() {
    let sim = SimProcess::start(0).await;
    let user = DEFAULT_USER_ID.to_string();
    let mut command = withings();
    command
        .envs(&sim.vars)
        .args(["login", "--scope", "user.info,user.metrics,user.activity"]);
    let (_, (code, out, err)) = login(command, None).await;
    assert_eq!((code, out.trim()), (0, user.as_str()), "{err}");
    let (code, out, err) = sim
        .run(&[
            "measures", "--user", &user, "--format", "jsonl", "--type", "1",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().count() > 1, "{out}");
    for line in out.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(m["type"], 1, "{line}");
        let value = m["value"].as_str().unwrap();
        assert!(value.parse::<f64>().unwrap() > 40.0, "{line}");
        for field in ["grpid", "date", "modified", "attrib", "category"] {
            assert!(m[field].is_i64(), "{field}: {line}");
        }
        assert!(m.get("position").is_some(), "{line}");
    }
    for command in ["activity", "workouts", "sleep", "heart", "devices", "goals"] {
        let (code, out, err) = sim.run(&[command, "--user", &user]).await;
        assert_eq!(code, 0, "{command}: {err}");
        assert!(!out.is_empty(), "{command}");
    }
    sim.stop().await;
}
