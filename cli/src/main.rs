//! `withings`: get Withings tokens and call the API from a terminal.
//!
//! Every command goes through the same `WithingsAuth` and `WithingsAuthLayer` a server would use,
//! so `call` refreshes and replays exactly as the library does.

mod data;
mod demo;
mod store;
mod sync;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_withings::notify::{Appli, NotifyClient};
use tower_withings::{
    Credentials, Endpoints, Error, ErrorKind, Scope, Secret, Token, UserId, WithingsAuth,
    budget::RateBudget, oauth::Callback, oauth::RedirectPolicy, transport,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  Withings refused the call (its body status says why; not an auth problem)
  2  usage or configuration: bad arguments, bad store URL, missing or wrong client credentials
  3  the user must (re)authorize: unknown user, expired or used code, dead refresh token
  4  Withings unreachable or failing for now: network, HTTP 5xx, timeout, rate limit (retry)
  5  the token store failed";

/// Get tokens for Withings users and call the Withings API.
#[derive(Debug, Parser)]
#[command(name = "withings", version, after_help = EXIT_CODES)]
struct Cli {
    /// The partner app's client id.
    #[arg(long, env = "WITHINGS_CLIENT_ID", global = true)]
    client_id: Option<String>,
    /// The partner app's client secret (prefer the environment variable).
    #[arg(
        long,
        env = "WITHINGS_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    client_secret: Option<String>,
    /// The API host.
    #[arg(
        long,
        env = "WITHINGS_API_BASE",
        global = true,
        default_value = "https://wbsapi.withings.net"
    )]
    api_base: String,
    /// The account host (authorize pages).
    #[arg(
        long,
        env = "WITHINGS_ACCOUNT_BASE",
        global = true,
        default_value = "https://account.withings.com"
    )]
    account_base: String,
    /// Where tokens live: a SQLite path, postgres://… or redis://… [default: a SQLite file in
    /// the user's data directory]
    #[arg(long, env = "WITHINGS_STORE", global = true)]
    store: Option<String>,
    /// Allow plain http, only to 127.0.0.0/8 or ::1 (local simulators).
    #[arg(
        long,
        env = "WITHINGS_ALLOW_HTTP_LOOPBACK",
        global = true,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    allow_http_loopback: bool,
    /// The app's request budget: at most this many requests to Withings in any 60 s, shared
    /// through --store by every command and process using it (0: no budget).
    #[arg(
        long,
        env = "WITHINGS_REQUESTS_PER_MINUTE",
        global = true,
        default_value_t = RateBudget::STANDARD_PER_MINUTE
    )]
    requests_per_minute: u32,
    /// How long a command waits for a budget slot before failing (exit 4).
    #[arg(long, value_name = "SECONDS", global = true, default_value_t = 60)]
    budget_deadline: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Authorize a user: prints the authorize URL, reads the redirected URL (or bare code) on
    /// stdin, stores the tokens, prints the Withings user id.
    Login {
        /// One of the app's registered callback URLs.
        #[arg(long, env = "WITHINGS_REDIRECT_URI")]
        redirect_uri: String,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',', default_value = "user.metrics")]
        scope: Vec<Scope>,
        /// Log in Withings' demo user.
        #[arg(long)]
        demo: bool,
    },
    /// Adopt tokens obtained elsewhere (flags, or Withings' requesttoken JSON on stdin).
    Import {
        /// The Withings user id (needed with the flags; the JSON carries its own).
        #[arg(long, required_unless_present = "json")]
        user: Option<UserId>,
        /// The access token.
        #[arg(long, required_unless_present = "json")]
        access_token: Option<String>,
        /// The refresh token.
        #[arg(long, required_unless_present = "json")]
        refresh_token: Option<String>,
        /// Seconds until the access token expires.
        #[arg(long, required_unless_present = "json")]
        expires_in: Option<u64>,
        /// Granted scopes, comma-separated.
        #[arg(long, default_value = "")]
        scope: String,
        /// Read `{"status":0,"body":{…}}` from stdin instead.
        #[arg(long, conflicts_with_all = ["user", "access_token", "refresh_token", "expires_in"])]
        json: bool,
    },
    /// One line per stored user: id, scope, expiry, status. Never a token. Reads the store
    /// only: no client credentials needed.
    Users,
    /// Call the API through the layer (refresh and replay included); prints the JSON `body`.
    Call {
        /// Service path, e.g. /measure or /v2/sleep.
        path: String,
        /// The action, e.g. getmeas.
        action: String,
        /// More parameters as key=value.
        params: Vec<String>,
        /// The Withings user.
        #[arg(long)]
        user: UserId,
    },
    #[command(flatten)]
    Data(data::DataCommand),
    /// Refresh a user's token now.
    Refresh {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
    },
    /// Revoke this app's access for a user at Withings (signed; their notification
    /// subscriptions go too), then mark their record. Prints `revoked <id>`.
    Revoke {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
    },
    /// Delete a user's tokens from the store (Withings is not told: the user's grant stays
    /// valid there until it expires or they unlink the app). Prints `forgot <id>`.
    Forget {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
    },
    /// A user's notification subscriptions (Withings POSTs to the callback URL when data
    /// changes).
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// The request budget's current window: slots used of the limit, and any pause a 601
    /// asked for. Prints `budget <used>/<limit> per 60 s, <free> free[, paused <s> s]`.
    Budget,
    /// Keep a copy of users' data up to date: print every new, edited or deleted record, one
    /// line each. `--once` catches up and exits; without it, serves the notification receiver
    /// on --listen and sweeps until Ctrl-C or SIGTERM, printing `callback: <URL>` first (the URL
    /// to subscribe users to, secret included). Cursors persist in --store: the next run prints
    /// only what changed since. `withings sync status`: each user's streams, cursors and lag.
    Sync(sync::SyncArgs),
    /// Everything on embedded defaults, no credentials: a local simulator, a demo login,
    /// concurrent calls across a forced expiry and a revocation.
    Demo,
    /// A local Withings simulator on 127.0.0.1, for apps in any language and for the other
    /// commands: prints one `NAME=value` line per variable they read, then serves until Ctrl-C
    /// or SIGTERM.
    ///
    /// The lines: WITHINGS_API_BASE and WITHINGS_ACCOUNT_BASE (the same address),
    /// WITHINGS_ALLOW_HTTP_LOOPBACK, the test app's WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and
    /// WITHINGS_REDIRECT_URI, and WITHINGS_STORE (a fresh SQLite file, deleted when the
    /// simulator stops, so simulated tokens never mix with real ones). To point every command
    /// at it: `withings sim > sim.env &` then `set -a; . ./sim.env; set +a`. State lives in
    /// memory: a restart starts afresh. Every user has 90 days of seeded data (measures,
    /// activity, workouts, sleep, ECGs) for the data commands.
    Sim {
        /// The port to listen on (0: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Subscribe the user at the callback URL for each appli; the ones already there are left
    /// alone. Withings first checks the URL with a HEAD request (it must answer 2xx). Prints
    /// `subscribed` or `already`, the appli code and name, one line each.
    Subscribe {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
        /// The callback URL (https, a host name, port 80 or 443, at most 255 characters).
        #[arg(long)]
        callback: String,
        /// Comma-separated appli codes or names: 1 weight, 2 temperature, 4 heart, 16 activity,
        /// 44 sleep, 46 user, 50 bed_in, 51 bed_out, 52 inflate, 54 ecg, 55 ecg_failed,
        /// 58 glucose.
        #[arg(long, value_delimiter = ',', required = true)]
        appli: Vec<Appli>,
    },
    /// One line per subscription of the user: appli code, name, callback URL, comment.
    List {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
        /// Only this appli.
        #[arg(long)]
        appli: Option<Appli>,
    },
    /// Revoke the user's subscriptions at the callback URL, for each appli given (every appli
    /// without `--appli`).
    Revoke {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
        /// The callback URL, exactly as subscribed.
        #[arg(long)]
        callback: String,
        /// Comma-separated appli codes or names.
        #[arg(long, value_delimiter = ',')]
        appli: Vec<Appli>,
    },
}

/// The app `withings sim` registers: test values, printed for the programs pointed at it.
const SIM_CLIENT_ID: &str = "withings-sim-client";
const SIM_CLIENT_SECRET: &str = "withings-sim-secret";
const SIM_REDIRECT_URI: &str = "https://app.example.com/withings/callback";

/// `withings sim`: a simulator on `port` until Ctrl-C or SIGTERM.
async fn sim(port: u16) -> CliResult<()> {
    use withings_sim::{DEFAULT_USER_ID, HistoryConfig, SimConfig, Simulator};
    // Three months of data per user, served in pages of 50: enough to page through.
    let history = HistoryConfig {
        days: 90,
        ..HistoryConfig::default()
    };
    let config = SimConfig {
        history,
        ..SimConfig::default()
    };
    let sim = Simulator::start_on(port, config)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    sim.register_client(SIM_CLIENT_ID, SIM_CLIENT_SECRET, &[SIM_REDIRECT_URI]);
    // Listening for the signals before the lines are out: a program that read them may stop
    // the simulator at once.
    let stop =
        shutdown_signal().map_err(|e| Failure::usage(format!("cannot wait for signals: {e}")))?;
    // The commands pointed at this simulator keep their tokens in a store of its own.
    let scratch = std::env::temp_dir().join(format!(
        "withings-sim-{}-{}",
        sim.addr().port(),
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).map_err(|e| Failure {
        code: 5,
        message: format!("cannot create {}: {e}", scratch.display()),
    })?;
    let lines = [
        ("WITHINGS_API_BASE", sim.api_base()),
        ("WITHINGS_ACCOUNT_BASE", sim.account_base()),
        ("WITHINGS_ALLOW_HTTP_LOOPBACK", "true".to_owned()),
        ("WITHINGS_CLIENT_ID", SIM_CLIENT_ID.to_owned()),
        ("WITHINGS_CLIENT_SECRET", SIM_CLIENT_SECRET.to_owned()),
        ("WITHINGS_REDIRECT_URI", SIM_REDIRECT_URI.to_owned()),
        (
            "WITHINGS_STORE",
            scratch.join("tokens.db").to_string_lossy().into_owned(),
        ),
    ];
    for (name, value) in lines {
        println!("{name}={value}");
    }
    eprintln!(
        "withings sim: authorize2 approves at once as user {DEFAULT_USER_ID} (mode=demo: {}); \
         Ctrl-C or SIGTERM stops it",
        Simulator::DEMO_USER_ID
    );
    stop.await;
    drop(sim);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM: the handlers are in place when this returns.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// A failure: one line for the terminal and its exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match error.kind() {
            ErrorKind::Store => 5,
            ErrorKind::Auth => 3,
            ErrorKind::Config => 2,
            ErrorKind::Transient | ErrorKind::Rate => 4,
            // Withings refused the call for a reason that is not an auth problem.
            _ => 1,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

type CliResult<T> = Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&Failure {
                code: 1,
                message: format!("cannot start: {e}"),
            });
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    eprintln!("withings: {}", failure.message);
    ExitCode::from(failure.code)
}

async fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Demo => return demo::run(cli.store.as_deref()).await,
        Command::Sim { port } => return sim(port).await,
        _ => {}
    }
    let reach = match &cli.command {
        Command::Users | Command::Budget => Reach::StoreOnly,
        Command::Sync(args) if sync::store_only(args) => Reach::StoreOnly,
        _ => Reach::Withings,
    };
    let auth = connect(&cli, reach).await?;
    let hosts = endpoints(&cli);
    match cli.command {
        Command::Login {
            redirect_uri,
            scope,
            demo,
        } => login(&auth, &redirect_uri, &scope, demo).await,
        Command::Import {
            user,
            access_token,
            refresh_token,
            expires_in,
            scope,
            json,
        } => {
            let token = if json {
                let mut input = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                    .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
                tower_withings::__private::parse_token_response(&input, SystemTime::now())?
            } else {
                let missing = || {
                    Failure::usage(
                        "--user, --access-token, --refresh-token and --expires-in go together",
                    )
                };
                Token {
                    user_id: user.ok_or_else(missing)?,
                    access_token: Secret::new(access_token.ok_or_else(missing)?),
                    refresh_token: Secret::new(refresh_token.ok_or_else(missing)?),
                    expires_at: SystemTime::now()
                        + Duration::from_secs(expires_in.ok_or_else(missing)?.min(366 * 86400)),
                    scope,
                }
            };
            let user = auth.import(token).await?;
            println!("{user}");
            Ok(())
        }
        Command::Users => users(&auth).await,
        Command::Budget => budget(&auth).await,
        Command::Call {
            path,
            action,
            params,
            user,
        } => call(&auth, &cli.api_base, &path, &action, &params, user).await,
        Command::Refresh { user } => {
            let progress = Progress::start(&format!("refreshing user {user}"));
            let outcome = auth.refresh(user).await;
            progress.done();
            outcome?;
            println!("refreshed {user}");
            Ok(())
        }
        Command::Revoke { user } => {
            auth.revoke(user).await?;
            println!("revoked {user}");
            Ok(())
        }
        Command::Forget { user } => {
            if auth.forget(user).await? {
                println!("forgot {user}");
                Ok(())
            } else {
                Err(Error::UnknownUser(user).into())
            }
        }
        Command::Notify { command } => notify(&auth, cli.allow_http_loopback, command).await,
        Command::Data(command) => data::run(&auth, &hosts?, command).await,
        Command::Sync(args) => sync::run(&auth, hosts, cli.allow_http_loopback, args).await,
        Command::Demo | Command::Sim { .. } => unreachable!("handled above"),
    }
}

async fn notify(
    auth: &WithingsAuth,
    allow_loopback: bool,
    command: NotifyCommand,
) -> CliResult<()> {
    let policy = if allow_loopback {
        RedirectPolicy::AllowLoopback
    } else {
        RedirectPolicy::Withings
    };
    let client = NotifyClient::new(auth, transport::https_client()).callback_policy(policy);
    let mut out = std::io::stdout().lock();
    match command {
        NotifyCommand::Subscribe {
            user,
            callback,
            appli,
        } => {
            let done = client.ensure_subscribed(user, &callback, &appli).await?;
            for appli in &appli {
                let what = if done.subscribed.contains(appli) {
                    "subscribed"
                } else {
                    "already"
                };
                let _ = writeln!(out, "{what}\t{}\t{}", appli.code(), appli.name());
            }
        }
        NotifyCommand::List { user, appli } => {
            for s in client.list(user, appli).await? {
                let comment = s.comment.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{comment}",
                    s.appli.code(),
                    s.appli.name(),
                    s.callback.expose(),
                );
            }
        }
        NotifyCommand::Revoke {
            user,
            callback,
            appli,
        } => {
            if appli.is_empty() {
                client.revoke(user, &callback, None).await?;
                let _ = writeln!(out, "revoked\tall");
            }
            for appli in appli {
                client.revoke(user, &callback, Some(appli)).await?;
                let _ = writeln!(out, "revoked\t{}\t{}", appli.code(), appli.name());
            }
        }
    }
    Ok(())
}

/// What a command reaches besides the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The store only (`users`, `budget`): nothing is sent, so neither the hosts nor the client
    /// secret matter.
    StoreOnly,
    /// Withings (or the simulator standing in for it).
    Withings,
}

/// The handle for the configured app, store and hosts.
async fn connect(cli: &Cli, reach: Reach) -> CliResult<WithingsAuth> {
    let builder = match reach {
        Reach::Withings => {
            let (Some(id), Some(secret)) = (&cli.client_id, &cli.client_secret) else {
                return Err(Failure::usage(
                    "no client credentials: set WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET (or --client-id/--client-secret)",
                ));
            };
            let policy = if cli.allow_http_loopback {
                RedirectPolicy::AllowLoopback
            } else {
                RedirectPolicy::Withings
            };
            WithingsAuth::builder(Credentials::new(id.clone(), secret.clone()))
                .endpoints(endpoints(cli)?)
                .redirect_policy(policy)
        }
        Reach::StoreOnly => {
            // No secret and the default hosts: this handle never sends anything. The client id
            // names the app whose request budget `budget` reads.
            let id = cli.client_id.clone().unwrap_or_default();
            WithingsAuth::builder(Credentials::new(id, String::new()))
        }
    };
    let store = store::open(cli.store.as_deref()).await?;
    Ok(builder
        .shared_store(store)
        .rate_budget(rate_budget(cli))
        .build(transport::https_client()))
}

/// The configured hosts; plain http only with `--allow-http-loopback`, which a refusal names.
fn endpoints(cli: &Cli) -> CliResult<Endpoints> {
    if cli.allow_http_loopback {
        return Ok(Endpoints::loopback(&cli.api_base, &cli.account_base)?);
    }
    Endpoints::custom(&cli.api_base, &cli.account_base).map_err(|error| {
        let plain_http = [&cli.api_base, &cli.account_base]
            .iter()
            .any(|base| base.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")));
        let mut failure = Failure::from(error);
        if plain_http {
            failure.message.push_str(
                " (for a local simulator: --allow-http-loopback or WITHINGS_ALLOW_HTTP_LOOPBACK=true)",
            );
        }
        failure
    })
}

fn rate_budget(cli: &Cli) -> RateBudget {
    match cli.requests_per_minute {
        0 => RateBudget::unlimited(),
        n => RateBudget::per_minute(n),
    }
    .deadline(Duration::from_secs(cli.budget_deadline))
}

async fn budget(auth: &WithingsAuth) -> CliResult<()> {
    if auth.oauth().client_id().is_empty() {
        return Err(Failure::usage(
            "no client id: set WITHINGS_CLIENT_ID (or --client-id); the budget is the app's",
        ));
    }
    let config = auth.rate_budget();
    let (Some(limit), Some(usage)) = (config.limit(), auth.budget_usage().await?) else {
        println!("budget unlimited");
        return Ok(());
    };
    let window = config.window().as_secs();
    let free = limit.saturating_sub(usage.used);
    match usage.paused_for {
        Some(pause) => println!(
            "budget {}/{limit} per {window} s, {free} free, paused {} s",
            usage.used,
            pause.as_secs_f64().ceil()
        ),
        None => println!("budget {}/{limit} per {window} s, {free} free", usage.used),
    }
    Ok(())
}

async fn login(
    auth: &WithingsAuth,
    redirect_uri: &str,
    scopes: &[Scope],
    demo: bool,
) -> CliResult<()> {
    let request = if demo {
        auth.oauth().authorize_demo(redirect_uri, scopes)?
    } else {
        auth.authorize(redirect_uri, scopes)?
    };
    eprintln!(
        "Open this URL, approve, then paste the URL you were redirected to (or just its code):"
    );
    eprintln!("{}", request.url());
    let progress = Progress::start(
        "waiting for the redirected URL on stdin (codes expire 30 s after approval)",
    );
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    progress.done();
    read.map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
    let input = line.trim();
    if input.is_empty() {
        return Err(Failure {
            code: 3,
            message: "no redirected URL or code given".into(),
        });
    }
    let user = if input.contains("code=") {
        auth.exchange_code(&Callback::parse(input)?, &request)
            .await?
    } else {
        let token = auth
            .oauth()
            .exchange_unverified_code(input, redirect_uri)
            .await?;
        auth.import(token).await?
    };
    println!("{user}");
    Ok(())
}

async fn users(auth: &WithingsAuth) -> CliResult<()> {
    for user in auth.users().await? {
        let scope = if user.scope.is_empty() {
            "-"
        } else {
            &user.scope
        };
        println!(
            "{}\t{}\t{}\t{}\t{}d",
            user.user,
            scope,
            utc(user.expires_at),
            user.state.as_str(),
            user.refresh_token_age.as_secs() / 86_400
        );
    }
    Ok(())
}

async fn call(
    auth: &WithingsAuth,
    api_base: &str,
    path: &str,
    action: &str,
    params: &[String],
    user: UserId,
) -> CliResult<()> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("action", action);
    for param in params {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("parameter {param:?} is not key=value")))?;
        if key == "access_token" {
            return Err(Failure::usage(
                "access_token is added by the layer; do not pass it",
            ));
        }
        form.append_pair(key, value);
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let request = Request::post(format!("{}{path}", api_base.trim_end_matches('/')))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user)
        .body(Full::new(Bytes::from(form.finish())))
        .map_err(|e| Failure::usage(format!("bad request: {e}")))?;
    let client = auth.layer().layer(transport::https_client());
    let response = client
        .oneshot(request)
        .await
        .map_err(|e| match e.downcast::<Error>() {
            Ok(error) => Failure::from(*error),
            Err(other) => Failure::from(Error::transport(other)),
        })?;
    if !response.status().is_success() {
        return Err(Error::Http {
            status: response.status(),
        }
        .into());
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::from(Error::transport(e)))?
        .to_bytes();
    let body = tower_withings::parse_response(&bytes)?;
    let pretty = serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{pretty}");
    Ok(())
}

/// `2026-11-21T19:12:00Z` for a system time (UTC, whole seconds; the epoch before it).
fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map_or_else(
            || format!("{secs} seconds after 1970-01-01T00:00:00Z"),
            |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// A line on stderr while something slow runs, only when stderr is a terminal.
struct Progress {
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { ticker: None };
        }
        let what: Arc<str> = what.into();
        let ticker = tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                eprint!("\r{what} … {} s", started.elapsed().as_secs());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Progress {
            ticker: Some(ticker),
        }
    }

    fn done(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
