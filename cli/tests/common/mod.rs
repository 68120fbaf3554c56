//! What the CLI's test files share: the test app, a simulator that knows it, the `withings`
//! binary run with only the environment a test gives it, a store in a temporary folder, and
//! login through the simulator's authorize page. Each test file uses part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tower_withings::UserId;
use withings_sim::{SimGrant, Simulator};

#[path = "../../../tests/support/app.rs"]
mod app;
pub use app::*;

/// GETs `url` as a browser would, without following a redirect: the status and `Location`.
pub async fn browser_get(url: &str) -> (StatusCode, Option<String>) {
    let client: Client<_, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = client
        .request(request)
        .await
        .expect("GET reaches the simulator");
    let location = response.headers().get(header::LOCATION);
    let location = location.map(|v| v.to_str().unwrap().to_owned());
    (response.status(), location)
}

/// The `withings` binary with nothing from the test's own environment.
pub fn withings() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_withings"));
    command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to the end with `stdin`: (exit code, stdout, stderr).
pub async fn finish(mut command: Command, stdin: &str) -> (i32, String, String) {
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the CLI finishes")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `withings login` in `command`: reads the URL it prints, approves in the "browser", lets
/// `sim`'s clock move by `delay` (if given), and types the redirected URL. Returns the
/// authorize URL and what the command did: (exit code, stdout, stderr).
pub async fn login(
    mut command: Command,
    sim: Option<(&Simulator, Duration)>,
) -> (String, (i32, String, String)) {
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).await.unwrap() > 0,
            "no URL printed: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("http") {
            break line.trim().to_owned();
        }
    };
    let (status, location) = browser_get(&url).await;
    assert_eq!(status, StatusCode::FOUND, "{url}");
    if let Some((sim, delay)) = sim {
        sim.advance(delay);
    }
    let mut stdin = child.stdin.take().unwrap();
    let typed = format!("{}\n", location.unwrap());
    stdin.write_all(typed.as_bytes()).await.unwrap();
    drop(stdin);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    let code = output.status.code().unwrap_or(-1);
    let out = String::from_utf8(output.stdout).unwrap();
    (url, (code, out, seen + &rest))
}

/// The `withings` binary pointed at a simulator, with a store of its own.
pub struct Cli {
    pub api: String,
    pub store: std::path::PathBuf,
    _dir: TempDir,
}

/// A temporary folder removed on drop.
pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cli {
    pub fn new(sim: &Simulator) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "withings-cli-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Cli {
            api: sim.api_base(),
            store: dir.join("tokens.db"),
            _dir: TempDir(dir),
        }
    }

    pub fn command(&self, secret: &str) -> Command {
        let mut command = withings();
        command
            .env("WITHINGS_CLIENT_ID", CLIENT_ID)
            .env("WITHINGS_CLIENT_SECRET", secret)
            .env("WITHINGS_API_BASE", &self.api)
            .env("WITHINGS_ACCOUNT_BASE", &self.api)
            .env("WITHINGS_STORE", &self.store)
            .arg("--allow-http-loopback");
        command
    }

    /// Runs a command to the end: (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut command = self.command(CLIENT_SECRET);
        command.args(args);
        finish(command, stdin).await
    }

    /// `withings import` (flags) of a pair the simulator issues for `user` with `scope`:
    /// exit 0 and the user's id printed. Returns the pair.
    pub async fn import(&self, sim: &Simulator, user: u64, scope: &str) -> SimGrant {
        let g = sim.issue_grant(CLIENT_ID, UserId(user), scope);
        let id = user.to_string();
        let args = [
            "import",
            "--user",
            &id,
            "--access-token",
            &g.access_token,
            "--refresh-token",
            &g.refresh_token,
            "--expires-in",
            "10800",
            "--scope",
            scope,
        ];
        let (code, out, err) = self.run(&args, "").await;
        assert_eq!((code, out.trim()), (0, id.as_str()), "{err}");
        g
    }

    /// `withings login` with this secret, the code typed in after `delay` on `sim`'s clock.
    pub async fn login(
        &self,
        secret: &str,
        sim: &Simulator,
        delay: Duration,
    ) -> (i32, String, String) {
        let mut command = self.command(secret);
        command.args([
            "login",
            "--redirect-uri",
            REDIRECT_URI,
            "--scope",
            "user.metrics,user.activity",
        ]);
        login(command, Some((sim, delay))).await.1
    }
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
