//! Notifications end to end on the simulator: subscriptions through the layer, Withings' HEAD
//! check, deliveries to a `NotifyReceiver` served by axum on loopback, retries, duplicates,
//! unlinks, and hostile forms. No mocks; counts, never wall-clock assertions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tower::{Layer, ServiceExt};
use tower_withings::notify::{
    Action, Appli, FormError, Network, Notification, Notifications, NotifyClient, NotifyReceiver,
    NotifyReceiverBuilder, PeerAddr,
};
use tower_withings::{Error, UserId, oauth::RedirectPolicy, transport};
use withings_sim::{Fault, Target};

/// A receiver served by axum on a random loopback port.
struct Served {
    /// The callback URL, secret included.
    url: String,
    /// `http://127.0.0.1:PORT`.
    origin: String,
    receiver: NotifyReceiver,
    notifications: Notifications,
}

#[path = "../support/notify_server.rs"]
mod notify_server;
use notify_server::{ROUTE, serve_receiver};

async fn serve(builder: NotifyReceiverBuilder) -> Served {
    let (receiver, notifications) = builder.build().unwrap();
    let (origin, url) = serve_receiver(receiver.clone()).await;
    Served {
        url,
        origin,
        receiver,
        notifications,
    }
}

/// `builder`'s receiver served, with the user's weight notifications subscribed to it.
async fn subscribed(rig: &Rig, builder: NotifyReceiverBuilder) -> Served {
    let served = serve(builder).await;
    notify_client(rig)
        .ensure_subscribed(USER, &served.url, &[Appli::Weight])
        .await
        .unwrap();
    served
}

fn receiver() -> NotifyReceiverBuilder {
    NotifyReceiver::builder(NotifyReceiver::random_secret())
}

/// The client for `/notify`, allowing the loopback callbacks of these tests, retrying fast.
fn notify_client(rig: &Rig) -> NotifyClient {
    NotifyClient::new(&rig.auth, http())
        .callback_policy(RedirectPolicy::AllowLoopback)
        .retry(4, Duration::from_millis(1), Duration::from_millis(20))
}

/// The next notification the app gets (bounded wait for the simulator's background delivery).
async fn next(notifications: &mut Notifications) -> Notification {
    tokio::time::timeout(Duration::from_secs(5), notifications.recv())
        .await
        .expect("a notification within 5 s")
        .expect("the queue is open")
}

/// POSTs `body` to `url` as a form; the status.
async fn post(url: &str, body: impl Into<Bytes>) -> StatusCode {
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(body.into()))
        .unwrap();
    http().request(request).await.unwrap().status()
}

async fn head(url: &str) -> StatusCode {
    let request = Request::head(url).body(Full::new(Bytes::new())).unwrap();
    http().request(request).await.unwrap().status()
}

/// getmeas through the layer for `user` between `start` and `end`: the measure groups.
async fn getmeas_between(rig: &Rig, user: UserId, start: u64, end: u64) -> Vec<serde_json::Value> {
    let client = rig.service();
    let form = format!("action=getmeas&meastype=1&category=1&startdate={start}&enddate={end}");
    let request = Request::post(format!("{}/measure", rig.sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(user)
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let json = json(client.oneshot(request).await.unwrap()).await;
    assert_eq!(json["status"], 0, "{json}");
    json["body"]["measuregrps"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_new_data_is_notified_and_fetched_through_the_layer() {
    let rig = rig().await;
    let mut served = serve(receiver().store(rig.auth.store().clone())).await;
    let notify = notify_client(&rig);

    let done = notify
        .ensure_subscribed(USER, &served.url, &[Appli::Weight, Appli::User])
        .await
        .unwrap();
    assert_eq!(done.subscribed, [Appli::Weight, Appli::User]);
    assert!(done.already.is_empty());
    // Idempotent: a second call lists and leaves both alone.
    let again = notify
        .ensure_subscribed(USER, &served.url, &[Appli::Weight, Appli::User])
        .await
        .unwrap();
    assert!(again.subscribed.is_empty());
    assert_eq!(again.already, [Appli::Weight, Appli::User]);
    let counters = rig.sim.notify_counters();
    assert_eq!(counters.subscriptions_made, 2, "{counters:?}");
    assert_eq!(counters.callback_checks, 2, "{counters:?}");
    assert_eq!(served.receiver.stats().checks, 2);

    // The user steps on the scale: Withings notifies, the app fetches the new data.
    let date = rig.sim.add_measure(USER, 1, 72_500, -3);
    let n = next(&mut served.notifications).await;
    assert_eq!(n.user, USER);
    assert_eq!(n.appli, Appli::Weight);
    assert_eq!(n.startdate, Some(date));
    assert_eq!(n.enddate, Some(date + 1));
    let groups = getmeas_between(&rig, n.user, date, date + 1).await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["measures"][0]["value"], 72_500);
    assert_eq!(groups[0]["date"], date);
    assert!(served.notifications.try_recv().is_none(), "delivered once");
    // The simulator records the 200 once it has read it.
    wait_until(|| async { rig.sim.notify_counters().deliveries == 1 }).await;
    assert_eq!(rig.sim.notify_counters().delivery_failures, 0);
    // A temperature is another category: nobody subscribed, nothing sent.
    rig.sim.add_measure(USER, 71, 3_690, -2);
    assert_eq!(rig.sim.notify_counters().delivery_attempts, 1);

    // get, list, update, revoke.
    let listed = notify.list(USER, None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.callback.expose() == served.url));
    assert!(
        !format!("{listed:?}").contains(&served.url),
        "Debug hides it"
    );
    let got = notify.get(USER, &served.url, Appli::Weight).await.unwrap();
    assert_eq!(got.unwrap().comment.as_deref(), Some("tower-withings"));
    notify
        .update(
            USER,
            &served.url,
            Appli::Weight,
            &served.url,
            Appli::Heart,
            Some("bp"),
        )
        .await
        .unwrap();
    let heart = notify.list(USER, Some(Appli::Heart)).await.unwrap();
    assert_eq!(heart.len(), 1);
    assert_eq!(heart[0].comment.as_deref(), Some("bp"));
    notify
        .revoke(USER, &served.url, Some(Appli::Heart))
        .await
        .unwrap();
    assert_eq!(
        notify.get(USER, &served.url, Appli::Heart).await.unwrap(),
        None
    );
    let again = notify.revoke(USER, &served.url, Some(Appli::Heart)).await;
    assert!(matches!(again, Err(Error::NoSuchSubscription)), "{again:?}");
    assert_eq!(notify.list(USER, None).await.unwrap().len(), 1);
    assert_eq!(rig.sim.counters().bearer_where_none_belongs, 0);
}

#[tokio::test]
async fn a_callback_failing_withings_head_check_is_a_typed_refusal_not_retried() {
    let rig = rig().await;
    let notify = notify_client(&rig);

    // An app answering 405 to HEAD (the classic mistake): only POST is routed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let post_only = format!(
        "http://{}/hook/0123456789abcdef0123",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new().route("/hook/{secret}", axum::routing::post(|| async { "" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(head(&post_only).await, StatusCode::METHOD_NOT_ALLOWED);

    let error = notify
        .ensure_subscribed(USER, &post_only, &[Appli::Weight])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CallbackRefused { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("HEAD"), "{text}");
    assert!(!text.contains("0123456789abcdef0123"), "{text}");
    let counters = rig.sim.notify_counters();
    assert_eq!(counters.callback_checks, 1, "permanent: not retried");
    assert_eq!(counters.callback_check_failures, 1);
    assert!(rig.sim.subscriptions(USER).is_empty());

    // Our receiver, but a callback URL with the wrong secret: its HEAD gets 404, refused too.
    let served = serve(receiver()).await;
    let wrong = format!("{}/withings/notify/not-the-secret-at-all", served.origin);
    let error = notify
        .subscribe(USER, &wrong, Appli::Weight, None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CallbackRefused { .. }), "{error:?}");
    assert_eq!(served.receiver.stats().wrong_secret, 1);
    // With the right one, accepted.
    notify
        .subscribe(USER, &served.url, Appli::Weight, None)
        .await
        .unwrap();
    assert_eq!(rig.sim.subscriptions(USER).len(), 1);

    // URLs Withings would refuse never leave: checked before any call.
    let calls = rig.sim.counters().data_calls;
    let strict = NotifyClient::new(&rig.auth, http());
    for bad in [
        served.url.as_str(), // http, an IP, port not 80/443: fine for the simulator only
        "https://localhost/withings/notify/x",
        "https://203.0.113.7/withings/notify/x",
        "https://app.example.com:8443/withings/notify/x",
    ] {
        let error = strict
            .ensure_subscribed(USER, bad, &[Appli::Weight])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::CallbackUrl { .. }),
            "{bad}: {error:?}"
        );
    }
    let long = format!("https://app.example.com/{}", "n".repeat(250));
    assert!(matches!(
        strict.subscribe(USER, &long, Appli::Weight, None).await,
        Err(Error::CallbackUrl { .. })
    ));
    assert_eq!(rig.sim.counters().data_calls, calls, "nothing was sent");
}

#[tokio::test]
async fn ensure_subscribed_retries_transient_refusals() {
    let rig = rig().await;
    let served = serve(receiver()).await;
    let notify = notify_client(&rig);
    // The list is refused twice for transient reasons: an HTTP 502, then a 601.
    let calls = rig.sim.counters().data_calls;
    rig.sim.inject(Target::Data, Fault::HttpStatus(502), 1);
    rig.sim.inject(
        Target::Data,
        Fault::BodyStatus {
            status: 601,
            error: "Too many request".into(),
            wait_seconds: None,
        },
        1,
    );
    let done = notify
        .ensure_subscribed(USER, &served.url, &[Appli::Weight])
        .await
        .unwrap();
    assert_eq!(done.subscribed, [Appli::Weight]);
    // 3 list attempts + 1 subscribe.
    assert_eq!(rig.sim.counters().data_calls - calls, 4);

    // Refused for good after the configured attempts: the last transient error comes back.
    rig.sim.inject(Target::Data, Fault::HttpStatus(503), 10);
    let error = notify
        .ensure_subscribed(USER, &served.url, &[Appli::Sleep])
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(rig.sim.counters().data_calls - calls, 8, "4 attempts");
    rig.sim.clear_faults();
    assert_eq!(rig.sim.subscriptions(USER).len(), 1);
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_404_and_delivers_nothing() {
    let mut served = serve(receiver()).await;
    let form = "userid=1&appli=1&startdate=10&enddate=11";
    let base = format!("{}/withings/notify", served.origin);
    let secret = served.url.rsplit('/').next().unwrap().to_owned();
    for path in [
        format!("{base}/wrong"),
        format!("{base}/{}", &secret[..secret.len() - 1]),
        format!("{base}/{secret}x"),
        format!("{base}/{}", secret.to_uppercase()),
    ] {
        assert_eq!(post(&path, form).await, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(head(&path).await, StatusCode::NOT_FOUND, "{path}");
    }
    // Not even routed to the receiver: axum's own 404.
    assert_eq!(post(&base, form).await, StatusCode::NOT_FOUND);
    assert_eq!(served.receiver.stats().wrong_secret, 8);
    assert!(served.notifications.try_recv().is_none());
    // The right one works.
    assert_eq!(post(&served.url, form).await, StatusCode::OK);
    assert_eq!(next(&mut served.notifications).await.user, UserId(1));
    // The secret is in no Debug output.
    let debug = format!("{:?} {:?}", served.receiver, served.notifications);
    assert!(!debug.contains(&secret), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_the_simulator_redelivers() {
    let rig = rig().await;
    rig.sim.set_notify_retry_interval(Duration::from_millis(20));
    rig.sim.set_notify_max_failures(1_000);
    let mut served = subscribed(&rig, receiver().queue(1)).await;

    let first = rig.sim.add_measure(USER, 1, 71_000, -3);
    wait_until(|| async { served.receiver.stats().delivered == 1 }).await;
    rig.sim.advance(Duration::from_secs(60));
    let second = rig.sim.add_measure(USER, 1, 71_200, -3);
    // The app reads nothing yet: the second is refused with 503, and retried.
    wait_until(|| async { rig.sim.notify_counters().delivery_failures >= 2 }).await;
    assert_eq!(served.receiver.stats().delivered, 1);
    assert!(served.receiver.stats().queue_full >= 2);

    // The app catches up; the retry gets through; nothing was lost or doubled.
    assert_eq!(next(&mut served.notifications).await.startdate, Some(first));
    assert_eq!(
        next(&mut served.notifications).await.startdate,
        Some(second)
    );
    wait_until(|| async { rig.sim.notify_counters().deliveries == 2 }).await;
    let counters = rig.sim.notify_counters();
    assert_eq!(counters.subscriptions_removed, 0, "{counters:?}");
    assert_eq!(served.receiver.stats().delivered, 2);
    assert!(served.notifications.try_recv().is_none());
}

/// Stopping the app: a closed queue answers 503 (Withings retries later) and still gives the
/// app every notification it acknowledged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_queue_answers_503_and_keeps_what_it_acknowledged() {
    let rig = rig().await;
    rig.sim.set_notify_retry_interval(Duration::from_secs(3600));
    let mut served = subscribed(&rig, receiver()).await;
    let acknowledged = rig.sim.add_measure(USER, 1, 71_000, -3);
    wait_until(|| async { served.receiver.stats().delivered == 1 }).await;

    served.notifications.close();
    rig.sim.advance(Duration::from_secs(60));
    rig.sim.add_measure(USER, 1, 71_200, -3);
    wait_until(|| async { rig.sim.notify_counters().delivery_failures == 1 }).await;
    assert_eq!(served.receiver.stats().delivered, 1);
    // What was acknowledged before the close is still there, then the queue ends.
    assert_eq!(
        served.notifications.recv().await.map(|n| n.startdate),
        Some(Some(acknowledged))
    );
    assert!(served.notifications.try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_loses_its_subscription() {
    let rig = rig().await;
    rig.sim.set_notify_retry_interval(Duration::from_millis(5));
    rig.sim.set_notify_max_failures(3);
    let served = subscribed(&rig, receiver()).await;
    // The app stopped reading (its queue is gone): 503, never 200-and-drop.
    drop(served.notifications);
    rig.sim.add_measure(USER, 1, 70_000, -3);
    wait_until(|| async { rig.sim.notify_counters().subscriptions_removed == 1 }).await;
    let counters = rig.sim.notify_counters();
    assert_eq!(counters.delivery_failures, 3, "{counters:?}");
    assert_eq!(counters.deliveries, 0, "{counters:?}");
    assert_eq!(served.receiver.stats().queue_full, 3);
    assert_eq!(served.receiver.stats().delivered, 0);
    assert!(rig.sim.subscriptions(USER).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_again_reaches_the_app_once() {
    let rig = rig().await;
    rig.sim.set_notify_duplicates(2);
    let mut served = subscribed(&rig, receiver()).await;
    let date = rig.sim.add_measure(USER, 1, 70_100, -3);
    assert_eq!(next(&mut served.notifications).await.startdate, Some(date));
    wait_until(|| async { served.receiver.stats().duplicates == 2 }).await;
    assert_eq!(rig.sim.notify_counters().duplicates_sent, 2);
    assert!(served.notifications.try_recv().is_none(), "delivered once");
    // A new notification (another range) is delivered.
    rig.sim.advance(Duration::from_secs(60));
    let later = rig.sim.add_measure(USER, 1, 70_200, -3);
    assert_eq!(next(&mut served.notifications).await.startdate, Some(later));
    wait_until(|| async { served.receiver.stats().duplicates == 4 }).await;
    assert_eq!(served.receiver.stats().delivered, 2);
    assert!(served.notifications.try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_user_is_marked_and_fails_fast_with_a_typed_error() {
    let rig = rig().await;
    let mut served = serve(receiver().auth(&rig.auth)).await;
    notify_client(&rig)
        .ensure_subscribed(USER, &served.url, &[Appli::Weight, Appli::User])
        .await
        .unwrap();
    expect_ok(&rig.service(), &rig.sim, USER).await;

    rig.sim.unlink_user(USER);
    let n = next(&mut served.notifications).await;
    assert_eq!((n.user, n.appli), (USER, Appli::User));
    assert_eq!(n.action, Some(Action::Unlink));
    assert!(n.is_revocation());
    // Marked before it was acknowledged.
    let record = rig.auth.store().load(USER).await.unwrap().unwrap();
    assert!(record.needs_reauthorization);
    assert_eq!(served.receiver.stats().users_marked, 1);

    // The layer refuses the user at once with a typed error: nothing is sent, the refresh
    // token is never spent.
    let client = rig.service();
    let before = rig.sim.counters();
    for _ in 0..3 {
        let error = client.clone().oneshot(getmeas(&rig.sim, USER)).await;
        let error = auth_error(error.unwrap_err());
        assert!(
            matches!(error, Error::AccessRevoked(UserId(u)) if u == USER.0),
            "{error:?}"
        );
    }
    assert_eq!(rig.sim.counters().refreshes, 0);
    let after = rig.sim.counters();
    assert_eq!(after.data_calls, before.data_calls, "a request was sent");
    // Another process (a new handle on the same store) fails at once, sending nothing.
    let calls = rig.sim.counters().data_calls;
    let other = auth_builder(&rig.sim, &rig.clock)
        .shared_store(rig.auth.store().clone())
        .build(transport::plain_http_client());
    let service = other.layer().layer(transport::plain_http_client());
    let error = auth_error(service.oneshot(getmeas(&rig.sim, USER)).await.unwrap_err());
    assert!(matches!(error, Error::NeedsReauthorization(_)), "{error:?}");
    assert_eq!(rig.sim.counters().data_calls, calls);
    assert_eq!(rig.sim.counters().refreshes, 0);
    // Unlinking removed the subscriptions on Withings' side.
    assert!(rig.sim.subscriptions(USER).is_empty());
    // A new authorization brings the user back.
    rig.auth
        .import(grant(&rig.sim, &rig.clock, USER))
        .await
        .unwrap();
    expect_ok(&client, &rig.sim, USER).await;
}

#[tokio::test]
async fn malformed_and_oversized_forms_are_refused_without_panic() {
    let mut served = serve(receiver().max_body(1024)).await;
    for body in [
        &b""[..],
        b"garbage",
        b"\xff\xfe\x00\x01",
        b"appli=1",
        b"userid=1",
        b"userid=abc&appli=1",
        b"userid=1&appli=1&startdate=-5",
        b"userid=1&appli=99999",
        b"userid=1&userid=2&appli=1",
        b"userid=%00&appli=1",
    ] {
        assert_eq!(
            post(&served.url, Bytes::from_static(body)).await,
            StatusCode::BAD_REQUEST,
            "{body:?}"
        );
    }
    // Over the cap, declared: refused before reading.
    assert_eq!(
        post(&served.url, vec![b'a'; 64 * 1024]).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Not a form.
    let json = Request::post(&served.url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{\"userid\":1}")))
        .unwrap();
    assert_eq!(
        http().request(json).await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let put = Request::put(&served.url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        http().request(put).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let stats = served.receiver.stats();
    assert_eq!((stats.malformed, stats.too_large), (12, 1), "{stats:?}");
    assert!(served.notifications.try_recv().is_none());
    // Still serving.
    assert_eq!(head(&served.url).await, StatusCode::OK);
    assert_eq!(post(&served.url, "userid=5&appli=16").await, StatusCode::OK);
    assert_eq!(next(&mut served.notifications).await.appli, Appli::Activity);
}

/// A request body arriving in these chunks, one frame each, without a length.
fn chunked(
    chunks: Vec<Bytes>,
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    let frames = chunks.into_iter().map(|c| Ok(Frame::data(c)));
    StreamBody::new(futures_util::stream::iter(frames))
}

/// A request body that never finishes (a slow or stalled sender).
fn stalled() -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static {
    StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, Infallible>,
    >())
}

fn to_receiver<B>(served: &Served, body: B) -> Request<B> {
    let path = served.url.trim_start_matches(&served.origin).to_owned();
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn an_endless_or_stalled_body_is_bounded_in_memory_and_time() {
    let served = serve(
        receiver()
            .max_body(1024)
            .deadline(Duration::from_millis(200)),
    )
    .await;
    // 1 MiB in 1 KiB chunks with no Content-Length: 413 once past the cap.
    let chunks = chunked((0..1024).map(|_| Bytes::from(vec![b'x'; 1024])).collect());
    let response = served
        .receiver
        .clone()
        .oneshot(to_receiver(&served, chunks))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body that never ends: 503 at the deadline, so Withings retries.
    let response = served
        .receiver
        .clone()
        .oneshot(to_receiver(&served, stalled()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(served.receiver.stats().unavailable, 1);
}

#[tokio::test]
async fn the_source_allow_list_uses_the_peer_address() {
    let (receiver, mut notifications) = receiver()
        .allow_network("10.0.0.0/8".parse::<Network>().unwrap())
        .build()
        .unwrap();
    let url = receiver.callback_url("https://app.example.com/n");
    let path = url.expose().trim_start_matches("https://app.example.com");
    let send = |peer: Option<SocketAddr>| {
        let mut request = Request::post(path)
            .body(Full::new(Bytes::from_static(b"userid=7&appli=44")))
            .unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        receiver.clone().oneshot(request)
    };
    let status = |r: Result<http::Response<Full<Bytes>>, Infallible>| r.unwrap().status();
    assert_eq!(status(send(None).await), StatusCode::FORBIDDEN);
    let outside: SocketAddr = "192.0.2.1:443".parse().unwrap();
    assert_eq!(status(send(Some(outside)).await), StatusCode::FORBIDDEN);
    assert!(notifications.try_recv().is_none());
    let inside: SocketAddr = "10.20.30.40:5555".parse().unwrap();
    assert_eq!(status(send(Some(inside)).await), StatusCode::OK);
    assert_eq!(notifications.recv().await.unwrap().appli, Appli::Sleep);
    assert_eq!(receiver.stats().forbidden_source, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_behind_axum_connect_info() {
    use axum::extract::ConnectInfo;
    let rig = rig().await;
    let (receiver, mut notifications) = receiver()
        .allow_network("127.0.0.0/8".parse().unwrap())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let url = receiver.callback_url(&format!("{origin}/withings/notify"));
    // As the PeerAddr docs show: copy axum's ConnectInfo into the extension the receiver reads.
    let service = tower::ServiceBuilder::new()
        .map_request(|mut request: axum::extract::Request| {
            if let Some(ConnectInfo(peer)) = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .copied()
            {
                request.extensions_mut().insert(PeerAddr(peer));
            }
            request
        })
        .service(receiver.clone());
    let app = axum::Router::new().route_service(ROUTE, service);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    notify_client(&rig)
        .ensure_subscribed(USER, url.expose(), &[Appli::Sleep])
        .await
        .unwrap();
    rig.sim
        .send_notification(USER, 44, 1_700_000_000, 1_700_030_000);
    let n = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.appli, n.enddate), (Appli::Sleep, Some(1_700_030_000)));
    assert_eq!(receiver.stats().forbidden_source, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Whatever the bytes, the parser returns a notification or a typed error.
    #[test]
    fn the_form_parser_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Notification::from_form(&body);
    }

    /// Any form Withings could send parses to what it says, whatever other fields come with it
    /// and in any order.
    #[test]
    fn well_formed_forms_parse_and_unknown_fields_are_ignored(
        user in proptest::num::u64::ANY,
        appli in proptest::num::u16::ANY,
        start in proptest::option::of(proptest::num::u64::ANY),
        end in proptest::option::of(proptest::num::u64::ANY),
        action in proptest::option::of("[a-z]{1,10}"),
        extra in proptest::collection::vec(("[a-z_]{1,12}", "\\PC{0,20}"), 0..5),
        seed in proptest::num::u64::ANY,
    ) {
        let known = ["userid", "appli", "startdate", "enddate", "date", "deviceid", "action"];
        let mut pairs: Vec<(String, String)> = vec![
            ("userid".into(), user.to_string()),
            ("appli".into(), appli.to_string()),
        ];
        if let Some(start) = start { pairs.push(("startdate".into(), start.to_string())); }
        if let Some(end) = end { pairs.push(("enddate".into(), end.to_string())); }
        if let Some(action) = &action { pairs.push(("action".into(), action.clone())); }
        pairs.extend(extra.into_iter().filter(|(k, _)| !known.contains(&k.as_str())));
        // A deterministic shuffle.
        let n = pairs.len();
        for i in 0..n {
            let j = (seed.rotate_left(i as u32) as usize) % n;
            pairs.swap(i, j);
        }
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let parsed = Notification::from_form(body.as_bytes()).unwrap();
        proptest::prop_assert_eq!(parsed.user, UserId(user));
        proptest::prop_assert_eq!(parsed.appli.code(), appli);
        proptest::prop_assert_eq!(parsed.startdate, start);
        proptest::prop_assert_eq!(parsed.enddate, end);
        proptest::prop_assert_eq!(parsed.action.as_ref().map(|a| a.as_str().to_owned()), action);
        proptest::prop_assert_eq!(Notification::from_form(parsed.to_form().as_bytes()), Ok(parsed));
    }

    /// The receiver answers any body with 200, 400 or 413, never a panic or a 5xx, and
    /// delivers exactly the bodies the parser accepts.
    #[test]
    fn the_receiver_answers_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (receiver, mut notifications) = receiver().max_body(1024).build().unwrap();
            let url = receiver.callback_url("https://a.example/n");
            let path = url.expose().trim_start_matches("https://a.example").to_owned();
            let request = Request::post(path).body(Full::new(Bytes::from(body.clone()))).unwrap();
            let status = receiver.oneshot(request).await.unwrap().status();
            let parsed = Notification::from_form(&body);
            match status {
                StatusCode::OK => assert_eq!(notifications.try_recv(), Some(parsed.unwrap())),
                StatusCode::BAD_REQUEST => {
                    assert!(matches!(parsed, Err(FormError::Missing(_) | FormError::Invalid(_) | FormError::Repeated(_))));
                    assert!(notifications.try_recv().is_none());
                }
                StatusCode::PAYLOAD_TOO_LARGE => assert!(body.len() > 1024),
                other => panic!("{other}"),
            }
        });
    }
}
