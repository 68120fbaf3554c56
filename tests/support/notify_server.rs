//! A notification receiver served by axum on a random loopback port, as an app serves it.
//! Support code shared by the library's notification tests (`tests/it/notify.rs`) and the sync
//! benchmark (`benches/sync.rs`).

use tower_withings::notify::NotifyReceiver;

/// Where the receiver is served: Withings calls `{origin}/withings/notify/{secret}`.
pub const ROUTE: &str = "/withings/notify/{secret}";

/// Serves `receiver` on a random loopback port: its origin (`http://127.0.0.1:PORT`) and its
/// callback URL, secret included.
pub async fn serve_receiver(receiver: NotifyReceiver) -> (String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let url = receiver
        .callback_url(&format!("{origin}/withings/notify"))
        .expose()
        .to_owned();
    let app = axum::Router::new().route_service(ROUTE, receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, url)
}
