//! The examples, run as tests against the simulator: each example file is compiled into this
//! test as a module, and its own `run()` (or, for the web app, its router) is called. `main`
//! and what only it uses are dead code here. Its own binary: `[[test]] examples` carries the
//! examples' required feature (`rustls`); `reqwest_client` is compiled in with feature
//! `reqwest` too, `sync_lifecycle` with `sqlite` (a default feature).

#[allow(dead_code)]
#[path = "../examples/hyper_client.rs"]
mod hyper_client;
#[allow(dead_code)]
#[path = "../examples/multi_user.rs"]
mod multi_user;
#[allow(dead_code)]
#[path = "../examples/notifications.rs"]
mod notifications;
#[cfg(feature = "reqwest")]
#[allow(dead_code)]
#[path = "../examples/reqwest_client.rs"]
mod reqwest_client;
#[cfg(feature = "sqlite")]
#[allow(dead_code)]
#[path = "../examples/sync_lifecycle.rs"]
mod sync_lifecycle;
#[allow(dead_code)]
#[path = "../examples/web_login.rs"]
mod web_login;
#[allow(dead_code)]
#[path = "../examples/weight_history.rs"]
mod weight_history;

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use url::Url;
use withings_sim::{DEFAULT_USER_ID, HistoryConfig, Simulator};

#[tokio::test]
async fn hyper_client_example_runs() {
    hyper_client::run().await.unwrap();
}

/// Every weight the simulator holds for the user, one line each, exact, across pages.
#[tokio::test]
async fn weight_history_example_prints_every_weight_once() {
    let sim = weight_history::simulator().await.unwrap();
    let mut out = Vec::new();
    let printed = weight_history::run(&sim, &mut out).await.unwrap();
    let mut lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut want: Vec<String> = (sim.measure_groups(DEFAULT_USER_ID).iter())
        .filter(|g| g.category == 1)
        .filter_map(|g| {
            let m = g.measures.iter().find(|m| m.meastype == 1)?;
            let date = jiff::Timestamp::from_second(i64::try_from(g.date).unwrap()).unwrap();
            let kg = tower_withings::data::Exact::new(m.value, i32::try_from(m.unit).unwrap());
            Some(format!("weight: {date} {kg} kg"))
        })
        .collect();
    assert_eq!(printed, lines.len());
    assert!(want.len() > 365, "a year of weighings: {}", want.len());
    assert!(
        sim.calls(DEFAULT_USER_ID, "/measure", "getmeas") > 1,
        "several pages"
    );
    lines.sort();
    want.sort();
    assert_eq!(lines, want);
    assert!(lines[0].starts_with("weight: 20"), "{}", lines[0]);
}

/// The lifecycle lands every change in the app's table: the history, a new weighing, an edit
/// (its new value) and a deletion (found by the reconcile pass), each weight exact.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lifecycle_example_lands_every_change_in_the_table() {
    use tower_withings::data::Exact;
    let sim = sync_lifecycle::simulator().await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "sync-lifecycle-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ran = sync_lifecycle::run(&sim, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (lines, table) = ran.unwrap();
    assert_eq!(
        lines[..5],
        [
            format!("linked user {DEFAULT_USER_ID}"),
            "subscribed to weight notifications".to_owned(),
            "caught up: 3 weighings".to_owned(),
            "Withings notified 3 times".to_owned(),
            "the table:".to_owned(),
        ]
    );
    // The table holds what the simulator holds now, and the deleted weighing marked so.
    let held = sim.measure_groups(DEFAULT_USER_ID);
    let rows = table.rows().unwrap();
    let live: Vec<(u64, String)> = (rows.iter())
        .filter(|(_, _, deleted)| !deleted)
        .map(|(grpid, weight, _)| (*grpid, weight.clone().unwrap()))
        .collect();
    let want: Vec<(u64, String)> = (held.iter())
        .map(|g| {
            let m = &g.measures[0];
            (
                g.grpid,
                Exact::new(m.value, i32::try_from(m.unit).unwrap()).to_string(),
            )
        })
        .collect();
    assert_eq!(live, want);
    assert!(want.iter().any(|(_, w)| w == "72.45"), "the new weighing");
    assert!(want.iter().any(|(_, w)| w == "71.9"), "the edit");
    let deleted: Vec<u64> = (rows.iter())
        .filter(|(_, _, deleted)| *deleted)
        .map(|(grpid, _, _)| *grpid)
        .collect();
    assert_eq!(deleted.len(), 1, "{lines:?}");
    assert!(held.iter().all(|g| g.grpid != deleted[0]));
    // The printed table is the table.
    assert_eq!(lines.len(), 5 + rows.len(), "{lines:?}");
    assert!(
        lines.contains(&format!("  {} deleted", deleted[0])),
        "{lines:?}"
    );
    let counters = sim.notify_counters();
    assert_eq!(counters.delivery_failures, 0, "{counters:?}");
    assert_eq!(sim.counters().bearer_where_none_belongs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_user_example_runs() {
    multi_user::run().await.unwrap();
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_client_example_runs() {
    reqwest_client::run().await.unwrap();
}

/// The web app on a random loopback port, wired to `sim`; its base URL.
async fn start_web_app(sim: &Simulator) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = web_login::App::on_simulator(sim, &base).unwrap();
    tokio::spawn(async move { axum::serve(listener, web_login::router(app)).await });
    base
}

/// Just enough of a browser: hyper-util's client, a cookie jar (name and value of what any
/// server set: everything here is on 127.0.0.1, where a browser sends cookies whatever the
/// port), and redirects followed or not.
struct Browser {
    client: Client<HttpConnector, Empty<Bytes>>,
    cookies: Mutex<BTreeMap<String, String>>,
    follow_redirects: bool,
}

/// What the browser ended up on.
struct Page {
    status: StatusCode,
    url: Url,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(follow_redirects: bool) -> Browser {
        Browser {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            cookies: Mutex::default(),
            follow_redirects,
        }
    }

    async fn get(&self, url: &str) -> Page {
        let mut url = Url::parse(url).unwrap();
        for _ in 0..10 {
            let mut request = Request::get(url.as_str());
            let cookies: Vec<String> = (self.cookies.lock().unwrap().iter())
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            if !cookies.is_empty() {
                request = request.header(header::COOKIE, cookies.join("; "));
            }
            let response = self.client.request(request.body(Empty::new()).unwrap());
            let response = response.await.unwrap();
            for set in response.headers().get_all(header::SET_COOKIE) {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                let mut jar = self.cookies.lock().unwrap();
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
            let status = response.status();
            let location = (response.headers().get(header::LOCATION))
                .map(|location| location.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            match location {
                Some(next) if self.follow_redirects && status.is_redirection() => {
                    url = url.join(&next).unwrap();
                }
                _ => {
                    return Page {
                        status,
                        url,
                        location,
                        body,
                    };
                }
            }
        }
        panic!("more than 10 redirects");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_logs_a_browser_in_and_shows_its_data() {
    let sim = Simulator::start().await.unwrap();
    let base = start_web_app(&sim).await;
    let browser = Browser::new(true);

    let page = browser.get(&format!("{base}/me")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "not logged in yet");

    // /login → authorize2 (the simulator approves) → /callback → /me, every redirect followed.
    let page = browser.get(&format!("{base}/login")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.url.path(), "/me");
    let expected = format!("Withings user {DEFAULT_USER_ID}: latest weight ");
    assert!(page.body.starts_with(&expected), "{}", page.body);
    // Every weighing of the simulated history fits in the first page.
    let weighings = (sim.measure_groups(DEFAULT_USER_ID).iter())
        .filter(|g| g.measures.iter().any(|m| m.meastype == 1))
        .count();
    assert!(weighings < HistoryConfig::default().page_size);
    let count = format!(" kg ({weighings} weighings)");
    assert!(page.body.contains(&count), "{}", page.body);

    // The session stays logged in: the next pages need no new login.
    let page = browser.get(&format!("{base}/")).await;
    let expected = format!("Logged in as Withings user {DEFAULT_USER_ID}");
    assert!(page.body.contains(&expected), "{}", page.body);
    let page = browser.get(&format!("{base}/me")).await;
    assert_eq!(page.status, StatusCode::OK);

    let counters = sim.counters();
    assert_eq!(counters.successful_code_exchanges, 1, "{counters:?}");
    assert_eq!(counters.data_calls, 2, "{counters:?}");
    assert_eq!(counters.bearer_where_none_belongs, 0, "{counters:?}");
    assert_eq!(counters.access_token_in_params, 0, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_refuses_a_callback_issued_to_another_session() {
    let sim = Simulator::start().await.unwrap();
    let base = start_web_app(&sim).await;

    // An attacker starts a login and stops at the callback URL Withings sends them back to.
    let attacker = Browser::new(false);
    let to_withings = attacker
        .get(&format!("{base}/login"))
        .await
        .location
        .unwrap();
    let to_callback = attacker.get(&to_withings).await.location.unwrap();
    assert!(
        to_callback.starts_with(&format!("{base}/callback?")),
        "{to_callback}"
    );

    // A victim's browser is made to open that URL (login CSRF): with no login in progress...
    let victim = Browser::new(false);
    let page = victim.get(&to_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // ...and with a login of its own in progress: the state was issued to another session.
    victim.get(&format!("{base}/login")).await;
    let page = victim.get(&to_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("state mismatch"), "{}", page.body);
    let page = victim.get(&format!("{base}/me")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // Refused before the code was spent: Withings never saw it.
    assert_eq!(sim.counters().code_exchanges, 0);

    // The callback completes once, in the session it was issued to.
    let page = attacker.get(&to_callback).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/me"));
    let page = attacker.get(&to_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "a second time");
    assert_eq!(sim.counters().successful_code_exchanges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_reports_a_declined_authorization() {
    let sim = Simulator::start().await.unwrap();
    let base = start_web_app(&sim).await;
    let browser = Browser::new(false);
    browser.get(&format!("{base}/login")).await;
    // What Withings sends back when the user declines.
    let page = (browser.get(&format!("{base}/callback?error=access_denied&state=x"))).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("authorization refused: access_denied"),
        "{}",
        page.body
    );
    assert_eq!(sim.counters().code_exchanges, 0);
}

/// The next line the notifications example wrote (bounded wait: it works in the background).
async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), lines.recv())
        .await
        .expect("a line within 10 s")
        .expect("the example is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_example_prints_the_callback_then_each_notification() {
    use withings_sim::DEMO_USER_ID;
    let sim = Simulator::start().await.unwrap();
    let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel();
    let (log_tx, mut log) = tokio::sync::mpsc::unbounded_channel();
    let output = notifications::Output {
        out: Box::new(move |line| drop(out_tx.send(line.to_owned()))),
        log: Box::new(move |line| drop(log_tx.send(line.to_owned()))),
    };
    let options = notifications::Options {
        port: 0,
        weigh_every: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = notifications::run(&sim, options, output, async {
        let _ = stopped.await;
    });
    let driver = async {
        // First line: the callback URL, secret included.
        let first = next_line(&mut out).await;
        let url = first.strip_prefix("callback: ").expect(&first).to_owned();
        let (base, secret) = url.rsplit_once('/').unwrap();
        assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/withings/notify"));
        assert_eq!(secret.len(), 32, "{url}");
        // Once subscribed, the simulated user weighs in; each notification is one line.
        let subscribed = next_line(&mut log).await;
        assert!(subscribed.starts_with("subscribed user"), "{subscribed}");
        assert_eq!(sim.subscriptions(DEMO_USER_ID).len(), 1);
        let mut dates = Vec::new();
        for (i, grams) in [(0, 80_000), (1, 79_500)] {
            if i > 0 {
                sim.advance(std::time::Duration::from_secs(60));
            }
            let date = sim.add_measure(DEMO_USER_ID, 1, grams, -3);
            dates.push(date);
            assert_eq!(
                next_line(&mut out).await,
                format!(
                    "notification: user={DEMO_USER_ID} appli=1 startdate={date} enddate={}",
                    date + 1
                )
            );
            // ...and the new data is fetched through the layer.
            let fetched = next_line(&mut log).await;
            let kg = grams as f64 / 1000.0;
            assert_eq!(
                fetched,
                format!("fetched: 1 new weighing(s) for user {DEMO_USER_ID}, latest {kg} kg")
            );
        }
        // The receiver answers Withings' check on the printed URL, and 404 without the secret.
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let head = |url: String| {
            let client = client.clone();
            async move {
                let request = Request::head(url).body(Empty::new()).unwrap();
                client.request(request).await.unwrap().status()
            }
        };
        assert_eq!(head(url.clone()).await, StatusCode::OK);
        assert_eq!(head(format!("{base}/guess")).await, StatusCode::NOT_FOUND);
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(app, driver);
    result.unwrap();
    assert!(out.try_recv().is_err(), "no other stdout line");
    // The simulator counts a delivery once it has read the 200.
    for _ in 0..500 {
        if sim.notify_counters().deliveries == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let counters = sim.notify_counters();
    assert_eq!(counters.deliveries, 2, "{counters:?}");
    assert_eq!(counters.delivery_failures, 0, "{counters:?}");
    // list + subscribe + one getmeas per notification, all through the layer.
    assert_eq!(sim.counters().data_calls, 4);
    assert_eq!(sim.counters().bearer_where_none_belongs, 0);
}
