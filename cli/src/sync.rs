//! `withings sync`: the library's sync engine (`tower_withings::sync`) with standard output
//! as its sink. `--once` catches up and exits; without it, the notification receiver and the
//! sweep run until SIGTERM or Ctrl-C. `withings sync status` prints what the store holds.
//!
//! The sink returns `Ok` only once a batch's lines are written and flushed, so a cursor never
//! moves past a line that was not printed; a closed stdout is a sink error and the batch comes
//! again at the next run.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tower::{Layer, ServiceExt};
use tower_withings::data::{IntradaySample, SleepSegment};
use tower_withings::notify::{NotifyClient, NotifyReceiver};
use tower_withings::oauth::RedirectPolicy;
use tower_withings::sync::{
    Backfill, Batch, Change, ChangeKind, Record, Sink, SinkFuture, Step, SyncConfig, SyncEngine,
    SyncEvent, SyncStream,
};
use tower_withings::transport::{self, HttpClient};
use tower_withings::{Endpoints, Error, Secret, UserId, WithingsAuth};

use super::data::{
    activity_json, group_json, heart_json, measure_json, sleep_json, unix, workout_json,
};
use super::{CliResult, Failure, shutdown_signal, utc};

/// How changes are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One short line per change: `upsert 46865875/measures/123 2026-01-05T08:00:00Z` (event,
    /// user/stream/key, version as UTC).
    Text,
    /// One JSON object per change: event, stream, user, key, version (Unix s), record.
    Jsonl,
}

/// `withings sync …`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SyncArgs {
    #[command(subcommand)]
    command: Option<SyncCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SyncCommand {
    /// One line per user and stream: user, stream, cursor (UTC), lag, backfill, state; then
    /// `inbox <pending notifications>`. Reads the store only: no client credentials needed.
    Status,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Sync only this user.
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    user: Option<UserId>,
    /// Sync every linked user in the store (one of --user or --all is required).
    #[arg(long)]
    all: bool,
    /// Comma-separated streams: measures, activity, workouts, sleep (and the window streams
    /// intraday, sleep_get, heart).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "measures,activity,workouts,sleep"
    )]
    streams: Vec<SyncStream>,
    /// A new user's history: records dated within this many days.
    #[arg(long, value_name = "N", default_value_t = 90)]
    backfill_days: u32,
    /// Re-list records dated within this many days at each sweep and print a `delete` for each
    /// printed record that is gone (Withings reports no deletions otherwise). Off by default.
    #[arg(long, value_name = "N")]
    reconcile_days: Option<u32>,
    /// Catch up (pending notifications, a sweep of every stream, the backfill) and exit.
    #[arg(long)]
    once: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Where the notification receiver listens (serving mode).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The public https address in front of --listen that Withings posts to, e.g.
    /// `https://your.app/withings/notify` (the secret is appended). With
    /// --allow-http-loopback it defaults to `http://` and the --listen address.
    #[arg(long, value_name = "URL", env = "WITHINGS_CALLBACK_BASE")]
    callback_base: Option<String>,
    /// The receiver's secret, the callback URL's last segment: pass the same one at every start
    /// so subscribed URLs stay valid [default: a random one per start].
    #[arg(
        long,
        value_name = "SECRET",
        env = "WITHINGS_NOTIFY_SECRET",
        hide_env_values = true
    )]
    notify_secret: Option<String>,
}

/// Whether the command needs only the store (`sync status`).
pub(crate) fn store_only(args: &SyncArgs) -> bool {
    matches!(args.command, Some(SyncCommand::Status))
}

/// Runs `withings sync …` through `auth`.
pub(crate) async fn run(
    auth: &WithingsAuth,
    endpoints: CliResult<Endpoints>,
    allow_loopback: bool,
    args: SyncArgs,
) -> CliResult<()> {
    let stack = auth.layer().layer(transport::https_client());
    if let Some(SyncCommand::Status) = args.command {
        let engine = engine(
            auth,
            stack,
            &Endpoints::withings(),
            SyncConfig::default(),
            None,
        )?;
        return status(&engine).await;
    }
    let args = args.run;
    let endpoints = endpoints?;
    let mut config = SyncConfig::default()
        .streams(&args.streams)
        .backfill(Backfill::Days(args.backfill_days))
        .reconcile(
            args.reconcile_days
                .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
        );
    match (args.user, args.all) {
        (Some(user), _) => {
            let record = auth.store().load(user).await?;
            match record {
                None => return Err(Error::UnknownUser(user).into()),
                Some(r) if r.needs_reauthorization => {
                    return Err(Failure {
                        code: 3,
                        message: format!("user {user} must authorize again (withings login)"),
                    });
                }
                Some(_) => config = config.users(&[user]),
            }
        }
        (None, true) => {}
        (None, false) => return Err(Failure::usage("which users? pass --user ID or --all")),
    }
    let workers = config.workers;
    let engine = engine(auth, stack, &endpoints, config, Some(args.format))?;
    if args.once {
        return once(&engine).await;
    }
    let mut events = engine.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => report(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let policy = if allow_loopback {
        RedirectPolicy::AllowLoopback
    } else {
        RedirectPolicy::Withings
    };
    let secret = match args.notify_secret {
        Some(secret) => Secret::new(secret),
        None => NotifyReceiver::random_secret(),
    };
    let (receiver, _queue) = NotifyReceiver::builder(secret)
        .auth(auth)
        .intake(engine.intake())
        .build()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let base = match args.callback_base {
        Some(base) => base,
        None if allow_loopback && bound.ip().is_loopback() => format!("http://{bound}"),
        None => {
            return Err(Failure::usage(
                "no --callback-base: the public https URL in front of --listen that Withings posts to",
            ));
        }
    };
    let callback = receiver.callback_url(&base);
    NotifyClient::new(auth, transport::https_client())
        .callback_policy(policy)
        .check_callback(callback.expose())?;
    let stop =
        shutdown_signal().map_err(|e| Failure::usage(format!("cannot wait for signals: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "callback: {}", callback.expose())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::usage(format!("cannot write to stdout: {e}")))?;
    }
    let (stopping, stopped) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stopping.send(true);
    });
    let server = tokio::spawn(serve(listener, receiver, stopped.clone()));
    let workers = (0..workers).map(|_| work(&engine, stopped.clone()));
    futures_util::future::join_all(workers).await;
    let _ = server.await;
    Ok(())
}

/// The engine over `stack`, printing in `format` (`None`: a sink that prints nothing, for
/// `status`).
fn engine<S: HttpClient>(
    auth: &WithingsAuth,
    stack: S,
    endpoints: &Endpoints,
    config: SyncConfig,
    format: Option<Format>,
) -> CliResult<SyncEngine<S>> {
    let sink = Arc::new(Stdout { format });
    Ok(SyncEngine::new(
        stack,
        endpoints,
        auth.store().clone(),
        sink,
        config,
    )?)
}

/// `--once`: catch up, then exit 0; 3 if a user must authorize again, 4 if work failed.
async fn once<S: HttpClient>(engine: &SyncEngine<S>) -> CliResult<()> {
    let stop =
        shutdown_signal().map_err(|e| Failure::usage(format!("cannot wait for signals: {e}")))?;
    let mut events = engine.events();
    let done = tokio::select! {
        done = engine.run_once() => done?,
        // Stopped by a signal: what was printed is committed, the rest comes next time.
        () = stop => return Ok(()),
    };
    let (mut stopped, mut failed) = (Vec::new(), Vec::new());
    loop {
        match events.try_recv() {
            // The exit's one line says what stopped or failed; malformed rows are warnings.
            Ok(SyncEvent::Stopped { user, reason }) => stopped.push((user, reason)),
            Ok(SyncEvent::Failed { reason, .. }) => failed.push(reason),
            Ok(event) => report(&event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    if let Some((user, reason)) = stopped.first() {
        return Err(Failure {
            code: 3,
            message: format!("user {user}'s sync stopped ({reason}): they must authorize again"),
        });
    }
    if !done {
        let why = match failed.as_slice() {
            [] => "a stream was busy".to_owned(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first}; and {} more", rest.len()),
        };
        return Err(Failure {
            code: 4,
            message: format!("not everything was synced ({why}); run again"),
        });
    }
    Ok(())
}

/// One loop of engine steps until `stopped`: a step in progress is finished first, so no lease
/// is left held.
async fn work<S: HttpClient>(engine: &SyncEngine<S>, mut stopped: watch::Receiver<bool>) {
    const IDLE: Duration = Duration::from_millis(500);
    while !*stopped.borrow() {
        match engine.step().await {
            Ok(Step::Worked(_)) => continue,
            Ok(_) => {}
            Err(error) => eprintln!("withings: {error}"),
        }
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(IDLE) => {}
        }
    }
}

/// The notification receiver on `listener` (every path: the receiver checks the secret in
/// the last segment) until `stopped`.
async fn serve(
    listener: tokio::net::TcpListener,
    receiver: NotifyReceiver,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let receiver = receiver.clone();
        let service = hyper::service::service_fn(move |request| receiver.clone().oneshot(request));
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

/// Says on stderr what went wrong while serving (the engine's events).
fn report(event: &SyncEvent) {
    match event {
        SyncEvent::Stopped { user, reason } => {
            eprintln!("withings: user {user}'s sync stopped: {reason}");
        }
        SyncEvent::Failed {
            user,
            stream,
            reason,
        } => eprintln!("withings: {user}/{stream}: {reason}"),
        SyncEvent::BadRows {
            user,
            stream,
            count,
        } => eprintln!("withings: {user}/{stream}: skipped {count} malformed row(s)"),
        _ => {}
    }
}

/// Standard output as the sink: `Ok` once the batch's lines are written and flushed.
struct Stdout {
    format: Option<Format>,
}

impl Sink for Stdout {
    fn accept<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a> {
        Box::pin(async move {
            let Some(format) = self.format else {
                return Ok(());
            };
            let mut text = String::new();
            for change in &batch.changes {
                text.push_str(&line(format, change));
                text.push('\n');
            }
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        })
    }
}

/// One change as a line (without the newline).
fn line(format: Format, change: &Change) -> String {
    let event = match change.kind {
        ChangeKind::Upsert(_) => "upsert",
        ChangeKind::Delete => "delete",
    };
    match format {
        Format::Text => format!("{event} {} {}", change.key, utc(secs(change.version))),
        Format::Jsonl => {
            let record = match &change.kind {
                ChangeKind::Upsert(record) => record_json(record),
                ChangeKind::Delete => Value::Null,
            };
            json!({
                "event": event,
                "stream": change.key.stream.name(),
                "user": change.key.user.0,
                "key": change.key.id,
                "version": change.version,
                "record": record,
            })
            .to_string()
        }
    }
}

fn secs(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

/// A synced record as JSON: the same fields as the data commands' lines; a measure group with
/// its measures nested, each value the exact decimal as a string.
fn record_json(record: &Record) -> Value {
    match record {
        Record::Measures(g) => {
            let mut group = group_json(g);
            group["measures"] = g.measures.iter().map(measure_json).collect();
            group
        }
        Record::Activity(a) => activity_json(a),
        Record::Workout(w) => workout_json(w),
        Record::SleepSummary(s) => sleep_json(s),
        Record::Heart(h) => heart_json(h),
        Record::Intraday(i) => intraday_json(i),
        Record::Sleep(s) => segment_json(s),
        _ => Value::Null,
    }
}

fn intraday_json(i: &IntradaySample) -> Value {
    json!({
        "timestamp": i.timestamp.as_second(),
        "duration": i.duration,
        "steps": i.steps,
        "calories": i.calories,
        "distance": i.distance,
        "heart_rate": i.heart_rate,
        "deviceid": i.source.deviceid,
    })
}

fn segment_json(s: &SleepSegment) -> Value {
    json!({
        "start": unix(s.start),
        "end": unix(s.end),
        "state": s.state.map(|st| st.code()),
        "model_id": s.source.modelid,
    })
}

/// `withings sync status`.
async fn status<S: HttpClient>(engine: &SyncEngine<S>) -> CliResult<()> {
    let status = engine.status().await?;
    let mut out = std::io::stdout().lock();
    for user in &status.users {
        let state = user
            .stopped
            .as_ref()
            .map_or_else(|| "active".to_owned(), |why| format!("stopped: {why}"));
        if user.streams.is_empty() {
            let _ = writeln!(out, "{}\t-\t-\t-\t-\t{state}", user.user);
        }
        for s in &user.streams {
            let cursor = s
                .state
                .cursor
                .map_or_else(|| "-".to_owned(), |c| utc(secs(c)));
            let lag = s
                .lag
                .map_or_else(|| "-".to_owned(), |l| format!("{}s", l.as_secs()));
            let backfill = match s.state.backfill {
                None => "-".to_owned(),
                Some(b) if b.done() => "done".to_owned(),
                Some(b) => format!("to {}", utc(secs(b.next_end))),
            };
            let _ = writeln!(
                out,
                "{}\t{}\tcursor {cursor}\tlag {lag}\tbackfill {backfill}\t{state}",
                user.user, s.stream
            );
        }
    }
    let _ = writeln!(out, "inbox\t{}", status.inbox_depth);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_withings::sync::RecordKey;

    #[test]
    fn a_delete_is_a_line_with_a_null_record() {
        let change = Change {
            key: RecordKey {
                user: UserId(7),
                stream: SyncStream::Measures,
                id: "12".into(),
            },
            version: 1_700_000_000,
            kind: ChangeKind::Delete,
        };
        assert_eq!(
            line(Format::Text, &change),
            "delete 7/measures/12 2023-11-14T22:13:20Z"
        );
        let json: Value = serde_json::from_str(&line(Format::Jsonl, &change)).unwrap();
        assert_eq!(
            json,
            json!({"event": "delete", "stream": "measures", "user": 7, "key": "12",
                "version": 1_700_000_000, "record": null})
        );
    }
}
