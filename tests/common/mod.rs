//! Shared test setup: a simulator with one registered app, and clients pointed at it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_withings::sim::Simulator;
use tower_withings::{
    AuthorizeRequest, Callback, ClientAuth, Credentials, Endpoints, OAuthClient, Scope, Token,
    transport,
};

pub const CLIENT_ID: &str = "test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret-0f9e8d7c";
pub const REDIRECT_URI: &str = "https://app.example.com/withings/callback";

/// A simulator that knows our app and its callback URL.
pub async fn simulator() -> Simulator {
    let sim = Simulator::start().await.expect("simulator starts");
    sim.register_client(CLIENT_ID, CLIENT_SECRET, &[REDIRECT_URI]);
    sim
}

pub fn endpoints(sim: &Simulator) -> Endpoints {
    Endpoints::loopback(&sim.api_base(), &sim.account_base()).expect("loopback endpoints")
}

pub fn oauth(sim: &Simulator, auth: ClientAuth) -> OAuthClient {
    OAuthClient::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .endpoints(endpoints(sim))
        .client_auth(auth)
        .timeout(Duration::from_secs(5))
        .build(transport::plain_http_client())
}

pub fn http() -> Client<HttpConnector, Full<Bytes>> {
    transport::plain_http_client()
}

/// GETs `url` like a browser would (without following redirects).
pub async fn browser_get(url: &str) -> (StatusCode, Option<String>, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client
        .request(Request::get(url).body(Empty::new()).unwrap())
        .await
        .expect("GET reaches the simulator");
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The user approves: the browser follows authorize2 and lands on the callback URL.
pub async fn approve(request: &AuthorizeRequest) -> Callback {
    let (status, location, body) = browser_get(request.url()).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "authorize2 answered {status}: {body}"
    );
    let location = location.expect("a Location header");
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    Callback::parse(&location).expect("a callback with code and state")
}

/// The whole web flow for the default simulator user.
pub async fn login(client: &OAuthClient, scopes: &[Scope]) -> Token {
    let request = client.authorize(REDIRECT_URI, scopes).unwrap();
    let callback = approve(&request).await;
    client.exchange_code(&callback, &request).await.unwrap()
}

/// POSTs a form to a data endpoint with a bearer token; returns the JSON body.
pub async fn data_call(
    sim: &Simulator,
    path: &str,
    form: &str,
    access_token: &str,
) -> serde_json::Value {
    let request = Request::post(format!("{}{path}", sim.api_base()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap();
    let response = http().request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}
