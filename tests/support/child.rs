//! A child process for the crash tests: this test binary run again as one of its own tests,
//! in a role its environment variables give it, its stdout read line by line on a thread.
//! Dropping it SIGKILLs it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in a child: the test it runs as (the others return at once).
const ENV_CHILD: &str = "TOWER_WITHINGS_CHILD";
/// Set in a child: the simulator's API base URL.
const ENV_API: &str = "TOWER_WITHINGS_CHILD_API";

/// Whether this process is a child (the parent's tests then return at once).
pub fn is_child() -> bool {
    std::env::var_os(ENV_CHILD).is_some()
}

/// The simulator's API base URL if this process is a child spawned to run `test`; `None` in a
/// normal test run (the child test then has nothing to do).
pub fn api_for(test: &str) -> Option<String> {
    (std::env::var(ENV_CHILD).ok()? == test).then(|| std::env::var(ENV_API).unwrap())
}

pub struct Child {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Runs this test binary again with only the test `test` (`--exact`), against the
    /// simulator at `api`, with `env` set; its stderr goes nowhere.
    pub fn spawn(test: &str, api: &str, env: &[(&str, &OsStr)]) -> Child {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, test)
            .env(ENV_API, api)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test binary as a child");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Child { child, lines }
    }

    /// Waits up to `within` for a line containing `word`; returns it and every line before it.
    /// Fails the test if the child does not say it in time (or dies first).
    pub async fn wait_for(&self, word: &str, within: Duration) -> (String, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(word) => return (line, seen),
                Ok(line) => seen.push(line),
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Err(e) => panic!("the child never said {word} ({e:?}); it said {seen:?}"),
            }
        }
    }

    /// SIGKILL, then everything it printed (the pipe keeps what was written before death).
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
        let mut lines = Vec::new();
        // The reader thread ends at EOF, which comes right after the process died.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A random number below `n`: when to kill.
pub fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % n
}
