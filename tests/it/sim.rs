//! Drives the Withings simulator over real loopback HTTP with a plain hyper client.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::Sha256;
use tower_withings::UserId;
use withings_sim::{Counters, DEFAULT_USER_ID, DEMO_USER_ID, Fault, SimConfig, Simulator, Target};

const CLIENT: &str = "app-client-id";
const SECRET: &str = "app-secret";
const CALLBACK: &str = "https://app.example.com/withings/callback";
const INVALID_TOKEN: &str =
    "XRequestID: Not provided invalid_token: The access token provided is invalid";
const INVALID_REFRESH: &str = "Invalid Params: invalid refresh_token";
const REDIRECT_MISMATCH: &str =
    "The redirect URI provided is missing or does not match the partner callback URL";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The body `status`, checking the envelope shape real clients rely on.
    fn st(&self) -> i64 {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "HTTP status; body {:?}",
            self.body
        );
        assert!(
            self.body.starts_with("{\"status\":"),
            "body must start with {{\"status\": but is {:?}",
            self.body
        );
        self.json()["status"]
            .as_i64()
            .unwrap_or_else(|| panic!("no status: {}", self.body))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_owned()
    }
    /// Asserts a body error with this status and message.
    fn assert_err(&self, status: i64, error: &str) {
        assert_eq!(self.st(), status, "body {}", self.body);
        assert_eq!(self.error(), error, "body {}", self.body);
    }
    fn body_str(&self, key: &str) -> String {
        self.json()["body"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no string body.{key}: {}", self.body))
            .to_owned()
    }
}

struct Tokens {
    access: String,
    refresh: String,
}

struct H {
    sim: Simulator,
    client: HttpClient,
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn enc(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn is_hex40(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hmac_hex(key: &str, msg: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn query_pairs(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn get_pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl H {
    async fn new() -> H {
        Self::with(SimConfig::default()).await
    }

    async fn with(config: SimConfig) -> H {
        let sim = Simulator::start_with(config).await.unwrap();
        sim.register_client(CLIENT, SECRET, &[CALLBACK]);
        H {
            sim,
            client: http_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.api_base(), path)
    }

    async fn try_send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Resp, hyper_util::client::legacy::Error> {
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Resp {
        self.try_send(req).await.unwrap()
    }

    async fn get(&self, path_and_query: &str) -> Resp {
        let req = Request::get(self.url(path_and_query))
            .body(Full::default())
            .unwrap();
        self.send(req).await
    }

    fn form_request(&self, path: &str, pairs: &[(&str, &str)]) -> Request<Full<Bytes>> {
        Request::post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(enc(pairs))))
            .unwrap()
    }

    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        self.send(self.form_request(path, pairs)).await
    }

    /// authorize2 asked for a code (`response_type=code`) with these.
    async fn authorize(
        &self,
        client_id: &str,
        state: &str,
        scope: &str,
        redirect_uri: &str,
    ) -> Resp {
        self.authorize_url(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("state", state),
            ("scope", scope),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    async fn authorize_url(&self, params: &[(&str, &str)]) -> Resp {
        self.get(&format!("/oauth2_user/authorize2?{}", enc(params)))
            .await
    }

    /// Runs authorize2 for CLIENT and returns the code.
    async fn code(&self, scope: &str) -> String {
        let r = self
            .authorize_url(&[
                ("response_type", "code"),
                ("client_id", CLIENT),
                ("state", "st"),
                ("scope", scope),
                ("redirect_uri", CALLBACK),
            ])
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
        let loc = r.headers["location"].to_str().unwrap().to_owned();
        get_pair(&query_pairs(&loc), "code").unwrap().to_owned()
    }

    async fn exchange(&self, code: &str, redirect_uri: &str) -> Resp {
        self.post(
            "/v2/oauth2",
            &[
                ("action", "requesttoken"),
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Resp {
        self.send(self.refresh_request(refresh_token)).await
    }

    /// The API refuses `access_token` (401, invalid token).
    async fn assert_token_refused(&self, access_token: &str) {
        self.getmeas(access_token)
            .await
            .assert_err(401, INVALID_TOKEN);
    }

    /// Both tokens of `grant` are dead: the access token is refused at the API, the refresh
    /// token at the token endpoint.
    async fn assert_grant_dead(&self, grant: &withings_sim::SimGrant) {
        self.assert_token_refused(&grant.access_token).await;
        self.refresh(&grant.refresh_token)
            .await
            .assert_err(503, INVALID_REFRESH);
    }

    /// The app's refresh of `refresh_token`, with its secret, as a request.
    fn refresh_request(&self, refresh_token: &str) -> Request<Full<Bytes>> {
        self.form_request(
            "/v2/oauth2",
            &[
                ("action", "requesttoken"),
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("refresh_token", refresh_token),
            ],
        )
    }

    async fn refresh_ok(&self, refresh_token: &str) -> Tokens {
        let r = self.refresh(refresh_token).await;
        assert_eq!(r.st(), 0, "{}", r.body);
        tokens(&r)
    }

    async fn data(&self, path: &str, action: &str, token: &str) -> Resp {
        let req = Request::post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(enc(&[("action", action)]))))
            .unwrap();
        self.send(req).await
    }

    async fn getmeas(&self, token: &str) -> Resp {
        self.data("/measure", "getmeas", token).await
    }
}

fn tokens(r: &Resp) -> Tokens {
    Tokens {
        access: r.body_str("access_token"),
        refresh: r.body_str("refresh_token"),
    }
}

#[tokio::test]
async fn full_flow_with_rotation() {
    let h = H::new().await;
    // 1. authorize2 redirects with a code and the state, percent-encoded.
    let state = "csrf value/1&2=3";
    let r = h
        .authorize(CLIENT, state, "user.info,user.metrics", CALLBACK)
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&format!("{CALLBACK}?code=")), "{loc}");
    assert!(loc.contains("&state=csrf%20value%2F1%262%3D3"), "{loc}");
    let pairs = query_pairs(&loc);
    assert_eq!(get_pair(&pairs, "state"), Some(state));
    let code = get_pair(&pairs, "code").unwrap().to_owned();

    // 2. code exchange.
    let r = h.exchange(&code, CALLBACK).await;
    assert_eq!(r.st(), 0, "{}", r.body);
    let body = &r.json()["body"];
    assert_eq!(body["userid"], Value::String(DEFAULT_USER_ID.to_string()));
    assert_eq!(body["expires_in"], 10_800);
    assert_eq!(body["scope"], "user.info,user.metrics");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["csrf_token"].is_string());
    let t1 = tokens(&r);
    assert!(is_hex40(&t1.access) && is_hex40(&t1.refresh), "{}", r.body);
    assert_ne!(t1.access, t1.refresh);

    // 3. data call.
    let r = h.getmeas(&t1.access).await;
    assert_eq!(r.st(), 0, "{}", r.body);
    let b = &r.json()["body"];
    assert_eq!(b["timezone"], "Europe/Paris");
    let grp = &b["measuregrps"][0];
    assert_eq!(grp["category"], 1);
    assert_eq!(grp["measures"][0]["type"], 1);
    assert_eq!(grp["measures"][0]["unit"], -3);
    assert!(grp["measures"][0]["value"].as_i64().unwrap() > 0);
    let updatetime = b["updatetime"].as_u64().unwrap();
    assert!(updatetime.abs_diff(unix(h.sim.now())) < 5);
    for grp in b["measuregrps"].as_array().unwrap() {
        assert!(grp["date"].as_u64().unwrap() <= updatetime, "{grp}");
        assert!(grp["created"].as_u64().unwrap() <= updatetime, "{grp}");
    }

    // 4. refresh rotates; the old refresh token survives until the new access token is used.
    let t2 = h.refresh_ok(&t1.refresh).await;
    assert_ne!(t2.access, t1.access);
    assert_ne!(t2.refresh, t1.refresh);
    assert!(h.sim.is_refresh_token_valid(&t1.refresh));
    // The old access token stays valid until its own expiry.
    assert_eq!(h.getmeas(&t1.access).await.st(), 0);
    assert!(h.sim.is_refresh_token_valid(&t1.refresh));
    // First use of the new access token kills the previous refresh token.
    assert_eq!(h.getmeas(&t2.access).await.st(), 0);
    assert!(!h.sim.is_refresh_token_valid(&t1.refresh));
    h.sim.advance(Duration::from_secs(11));
    h.refresh(&t1.refresh)
        .await
        .assert_err(503, INVALID_REFRESH);
    // The old access token still works.
    assert_eq!(h.getmeas(&t1.access).await.st(), 0);

    // 5. without using the new access token, the old refresh token dies 8 h after rotation.
    let t3 = h.refresh_ok(&t2.refresh).await;
    h.sim.advance(Duration::from_secs(7 * 3600));
    // Still valid after 7 h: presenting it again rotates once more.
    let t4 = h.refresh_ok(&t2.refresh).await;
    assert_ne!(t4.refresh, t3.refresh);
    h.sim.advance(Duration::from_secs(3600 + 1));
    h.refresh(&t2.refresh)
        .await
        .assert_err(503, INVALID_REFRESH);
    // The newest refresh tokens are fine; t1's access token (3 h) has long expired.
    assert!(h.sim.is_refresh_token_valid(&t3.refresh));
    assert!(h.sim.is_refresh_token_valid(&t4.refresh));
    h.getmeas(&t1.access).await.assert_err(401, INVALID_TOKEN);
    assert_eq!(h.getmeas(&t4.access).await.st(), 0);
    assert_eq!(h.refresh_ok(&t4.refresh).await.access.len(), 40);

    assert_eq!(
        h.sim.counters(),
        Counters {
            code_exchanges: 1,
            successful_code_exchanges: 1,
            refreshes: 6,
            successful_refreshes: 4,
            nonces: 0,
            data_calls: 6,
            served_401: 1,
            served_601: 0,
            served_invalid_refresh: 2,
            bearer_where_none_belongs: 0,
            access_token_in_params: 0,
        }
    );
}

#[tokio::test]
async fn code_is_valid_30_seconds_and_single_use() {
    let h = H::new().await;
    let code = h.code("user.metrics").await;
    h.sim.advance(Duration::from_secs(31));
    h.exchange(&code, CALLBACK)
        .await
        .assert_err(503, "Invalid Params: invalid code");

    let code = h.code("user.metrics").await;
    h.sim.advance(Duration::from_secs(29));
    // Wrong redirect_uri (one byte off) is refused and does not consume the code.
    h.exchange(&code, &format!("{CALLBACK}/"))
        .await
        .assert_err(503, REDIRECT_MISMATCH);
    let r = h.exchange(&code, CALLBACK).await;
    assert_eq!(r.st(), 0, "{}", r.body);
    assert_eq!(r.body_str("scope"), "user.metrics");
    // Single use.
    h.exchange(&code, CALLBACK)
        .await
        .assert_err(503, "Invalid Params: invalid code");
    h.exchange("0000000000000000000000000000000000000000", CALLBACK)
        .await
        .assert_err(503, "Invalid Params: invalid code");

    // A code issued to another client is invalid for this one.
    h.sim.register_client("other", "other-secret", &[CALLBACK]);
    let r = h.authorize("other", "s", "user.info", CALLBACK).await;
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    let other_code = get_pair(&query_pairs(&loc), "code").unwrap().to_owned();
    h.exchange(&other_code, CALLBACK)
        .await
        .assert_err(503, "Invalid Params: invalid code");

    let c = h.sim.counters();
    assert_eq!((c.code_exchanges, c.successful_code_exchanges), (6, 1));
}

#[tokio::test]
async fn redirect_uri_compared_exactly_with_encoding() {
    let h = H::new().await;
    let cb = "https://app.example.com/cb?next=%2Fhome";
    h.sim.register_client("enc", "enc-secret", &[cb]);
    let r = h.authorize("enc", "s", "user.metrics", cb).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&format!("{cb}&code=")), "{loc}");
    let code = get_pair(&query_pairs(&loc), "code").unwrap().to_owned();
    let exchange = |redirect: &'static str| {
        let code = code.clone();
        let h = &h;
        async move {
            h.post(
                "/v2/oauth2",
                &[
                    ("action", "requesttoken"),
                    ("grant_type", "authorization_code"),
                    ("client_id", "enc"),
                    ("client_secret", "enc-secret"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                ],
            )
            .await
        }
    };
    // Same URL with the inner encoding undone is a different string.
    exchange("https://app.example.com/cb?next=/home")
        .await
        .assert_err(503, REDIRECT_MISMATCH);
    assert_eq!(exchange(cb).await.st(), 0);
}

#[tokio::test]
async fn token_endpoint_reads_only_the_form_body() {
    let h = H::new().await;
    let code = h.code("user.metrics").await;
    let params = enc(&[
        ("action", "requesttoken"),
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("code", &code),
        ("redirect_uri", CALLBACK),
    ]);
    // GET with everything in the query string.
    h.get(&format!("/v2/oauth2?{params}"))
        .await
        .assert_err(503, "Invalid_params: invalid grant_type");
    // POST with everything in the query string and an empty body.
    let req = Request::post(h.url(&format!("/v2/oauth2?{params}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::default())
        .unwrap();
    h.send(req)
        .await
        .assert_err(503, "Invalid_params: invalid grant_type");
    // POST with a body that is not form-encoded.
    let req = Request::post(h.url("/v2/oauth2"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"action":"requesttoken","grant_type":"authorization_code"}"#,
        )))
        .unwrap();
    h.send(req)
        .await
        .assert_err(503, "Invalid_params: invalid grant_type");
    // grant_type in the body, client_id only in the query.
    let req = Request::post(h.url(&format!("/v2/oauth2?client_id={CLIENT}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(
            "action=requesttoken&grant_type=authorization_code",
        )))
        .unwrap();
    h.send(req).await.assert_err(
        503,
        "Invalid_request: The client ID was not specified in the request",
    );
    for (action, grant_type, status, error) in [
        // Wrong action.
        (
            "getaccesstoken",
            "authorization_code",
            2554,
            "Not implemented",
        ),
        // Unknown grant type.
        (
            "requesttoken",
            "password",
            503,
            "Invalid_params: invalid grant_type",
        ),
    ] {
        let pairs = [
            ("action", action),
            ("grant_type", grant_type),
            ("client_id", CLIENT),
        ];
        h.post("/v2/oauth2", &pairs).await.assert_err(status, error);
    }
    // Unknown client, wrong secret, missing secret.
    let base = [
        ("action", "requesttoken"),
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    h.post(
        "/v2/oauth2",
        &with(&[("client_id", "nobody"), ("client_secret", SECRET)]),
    )
    .await
    .assert_err(503, "Invalid Params: invalid client_id");
    h.post(
        "/v2/oauth2",
        &with(&[("client_id", CLIENT), ("client_secret", "wrong")]),
    )
    .await
    .assert_err(503, "Invalid Params: invalid client_secret");
    h.post("/v2/oauth2", &with(&[("client_id", CLIENT)]))
        .await
        .assert_err(503, "Invalid Params: invalid client_secret");
    // None of that consumed the code.
    assert_eq!(h.exchange(&code, CALLBACK).await.st(), 0);
    // GETs and non-form bodies carry no grant_type: they are not counted as exchanges.
    assert_eq!(h.sim.counters().code_exchanges, 6);
}

#[tokio::test]
async fn oauth1_credentials_are_not_authorized() {
    let h = H::new().await;
    h.sim.register_oauth1_client("oauth1-key", "oauth1-secret");
    let r = h
        .post(
            "/v2/oauth2",
            &[
                ("action", "requesttoken"),
                ("grant_type", "refresh_token"),
                ("client_id", "oauth1-key"),
                ("client_secret", "oauth1-secret"),
                ("refresh_token", "whatever"),
            ],
        )
        .await;
    r.assert_err(503, "client_id not authorized");
    // It has no callback URL either: authorize2 refuses it.
    let r = h
        .authorize("oauth1-key", "s", "user.metrics", CALLBACK)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body, REDIRECT_MISMATCH);
}

#[test]
fn hmac_matches_fixed_vectors() {
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"getnonce,client,1700000000",hashlib.sha256).hexdigest())'
    assert_eq!(
        hmac_hex("secret", "getnonce,client,1700000000"),
        "4b8337ee03dce86858470675ac49d649acea0f1afaaafcd539b925f6e26084ee"
    );
    assert_eq!(
        hmac_hex("secret", "requesttoken,client,0123456789abcdef"),
        "0dd300e2f10ca352138463201e2a5aa823b02e3f479607dbd1745515a41fc3e6"
    );
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn signed_mode_nonce_and_signature() {
    let h = H::new().await;
    // Signatures are checked against the *simulator* clock.
    h.sim.advance(Duration::from_secs(3 * 86_400));
    let getnonce = |ts: u64, sig: Option<String>| {
        let h = &h;
        async move {
            let ts = ts.to_string();
            let sig = sig.unwrap_or_else(|| hmac_hex(SECRET, &format!("getnonce,{CLIENT},{ts}")));
            h.post(
                "/v2/signature",
                &[
                    ("action", "getnonce"),
                    ("client_id", CLIENT),
                    ("timestamp", &ts),
                    ("signature", &sig),
                ],
            )
            .await
        }
    };
    let now = unix(h.sim.now());
    // Real time would be 3 days off.
    getnonce(unix(SystemTime::now()), None)
        .await
        .assert_err(503, "Invalid Params: invalid timestamp");
    getnonce(now - 11 * 60, None)
        .await
        .assert_err(503, "Invalid Params: invalid timestamp");
    getnonce(now, Some("00".repeat(32)))
        .await
        .assert_err(503, "Invalid Params: invalid signature");
    // Uppercase hex is not the documented form.
    getnonce(
        now,
        Some(hmac_hex(SECRET, &format!("getnonce,{CLIENT},{now}")).to_uppercase()),
    )
    .await
    .assert_err(503, "Invalid Params: invalid signature");
    let r = getnonce(now - 9 * 60, None).await;
    assert_eq!(r.st(), 0, "{}", r.body);
    let nonce = r.body_str("nonce");
    assert!(!nonce.is_empty());

    let grant = h.sim.issue_grant(CLIENT, UserId(42), "user.metrics");
    let signed_refresh = |nonce: String, sig: String, refresh: String| {
        let h = &h;
        async move {
            h.post(
                "/v2/oauth2",
                &[
                    ("action", "requesttoken"),
                    ("grant_type", "refresh_token"),
                    ("client_id", CLIENT),
                    ("nonce", &nonce),
                    ("signature", &sig),
                    ("refresh_token", &refresh),
                ],
            )
            .await
        }
    };
    let good_sig = |n: &str| hmac_hex(SECRET, &format!("requesttoken,{CLIENT},{n}"));
    // Bad signature: refused, nonce not consumed.
    signed_refresh(nonce.clone(), "ab".repeat(32), grant.refresh_token.clone())
        .await
        .assert_err(503, "Invalid Params: invalid signature");
    // Valid signature over a nonce that was never issued.
    let fake = "f".repeat(40);
    signed_refresh(fake.clone(), good_sig(&fake), grant.refresh_token.clone())
        .await
        .assert_err(503, "Invalid Params: invalid nonce");
    let r = signed_refresh(nonce.clone(), good_sig(&nonce), grant.refresh_token.clone()).await;
    assert_eq!(r.st(), 0, "{}", r.body);
    assert_eq!(r.body_str("userid"), "42");
    let t = tokens(&r);
    // Nonces are single use.
    signed_refresh(nonce.clone(), good_sig(&nonce), t.refresh.clone())
        .await
        .assert_err(503, "Invalid Params: invalid nonce");
    // Nonces expire after 30 minutes.
    let r = getnonce(now, None).await;
    let old_nonce = r.body_str("nonce");
    h.sim.advance(Duration::from_secs(30 * 60 + 1));
    signed_refresh(old_nonce.clone(), good_sig(&old_nonce), t.refresh.clone())
        .await
        .assert_err(503, "Invalid Params: invalid nonce");
    // A nonce issued to another client does not work for this one.
    h.sim
        .register_client("second", "second-secret", &[CALLBACK]);
    let now = unix(h.sim.now());
    let r = h
        .post(
            "/v2/signature",
            &[
                ("action", "getnonce"),
                ("client_id", "second"),
                ("timestamp", &now.to_string()),
                (
                    "signature",
                    &hmac_hex("second-secret", &format!("getnonce,second,{now}")),
                ),
            ],
        )
        .await;
    let foreign = r.body_str("nonce");
    signed_refresh(foreign.clone(), good_sig(&foreign), t.refresh.clone())
        .await
        .assert_err(503, "Invalid Params: invalid nonce");
    assert_eq!(h.sim.counters().nonces, 7);
}

#[tokio::test]
async fn same_refresh_within_10_seconds_gets_601() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(7), "user.metrics");
    let t = h.refresh_ok(&g.refresh_token).await;
    let r = h.refresh(&g.refresh_token).await;
    r.assert_err(601, "Same arguments in less than 10 seconds");
    assert_eq!(r.json()["body"]["wait_seconds"], 10);
    h.sim.advance(Duration::from_secs(4));
    let r = h.refresh(&g.refresh_token).await;
    assert_eq!(r.st(), 601);
    // The 601 did not restart the window.
    assert_eq!(r.json()["body"]["wait_seconds"], 6);
    h.sim.advance(Duration::from_secs(6));
    // The old token is still valid (the new access token was never used): rotates again.
    let t2 = h.refresh_ok(&g.refresh_token).await;
    assert_ne!(t2.refresh, t.refresh);
    // Even an invalid token gets the 601 first when repeated.
    h.refresh("nope").await.assert_err(503, INVALID_REFRESH);
    assert_eq!(h.refresh("nope").await.st(), 601);
    let c = h.sim.counters();
    assert_eq!(
        (
            c.refreshes,
            c.successful_refreshes,
            c.served_601,
            c.served_invalid_refresh
        ),
        (6, 2, 3, 1)
    );
}

/// On tokio's paused clock: the latency is slept on it, and measured on it, not on the wall.
#[tokio::test(start_paused = true)]
async fn concurrent_refreshes_one_wins_one_gets_601() {
    let h = H::new().await;
    h.sim.set_token_latency(Duration::from_millis(200));
    let g = h.sim.issue_grant(CLIENT, UserId(7), "user.metrics");
    let started = tokio::time::Instant::now();
    let (a, b) = tokio::join!(h.refresh(&g.refresh_token), h.refresh(&g.refresh_token));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let mut statuses = [a.st(), b.st()];
    statuses.sort_unstable();
    assert_eq!(statuses, [0, 601]);
}

#[tokio::test]
async fn refresh_token_dies_after_delete_and_revoke() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(100), "user.metrics");
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    h.sim.delete_user(UserId(100));
    h.assert_grant_dead(&g).await;

    // revoke_user: the user unlinked the app.
    let g = h.sim.issue_grant(CLIENT, UserId(101), "user.metrics");
    h.sim.revoke_user(UserId(101));
    h.assert_grant_dead(&g).await;

    // The disconnect page only affects that client.
    h.sim.register_client("other", "other-secret", &[CALLBACK]);
    let mine = h.sim.issue_grant(CLIENT, UserId(102), "user.metrics");
    let theirs = h.sim.issue_grant("other", UserId(102), "user.metrics");
    let r = h
        .get(&format!(
            "/partner/disconnect_partner/{CLIENT}?selecteduser=102"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.assert_token_refused(&mine.access_token).await;
    assert_eq!(h.getmeas(&theirs.access_token).await.st(), 0);
    assert!(!h.sim.is_refresh_token_valid(&mine.refresh_token));
    assert!(h.sim.is_refresh_token_valid(&theirs.refresh_token));
    let r = h
        .get("/partner/disconnect_partner/unknown?selecteduser=102")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A refresh token of another client is invalid for this one.
    h.refresh(&theirs.refresh_token)
        .await
        .assert_err(503, INVALID_REFRESH);
    // A single revoked access token.
    let g = h.sim.issue_grant(CLIENT, UserId(103), "user.metrics");
    h.sim.revoke_access_token(&g.access_token);
    h.assert_token_refused(&g.access_token).await;
    assert_eq!(h.sim.counters().served_invalid_refresh, 3);
    assert_eq!(h.sim.counters().served_401, 4);
}

#[tokio::test]
async fn deactivated_user() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(200), "user.metrics");
    h.sim.deactivate_user(UserId(200));
    h.getmeas(&g.access_token)
        .await
        .assert_err(503, "User is temporarily deactivated");
    h.refresh(&g.refresh_token)
        .await
        .assert_err(503, "User is temporarily deactivated");
    h.sim.reactivate_user(UserId(200));
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    h.sim.advance(Duration::from_secs(10));
    let t = h.refresh_ok(&g.refresh_token).await;
    assert!(is_hex40(&t.access));
    assert_eq!(h.sim.counters().served_401, 0);
}

/// On tokio's paused clock: an injected delay is slept on it, and measured on it.
#[tokio::test(start_paused = true)]
async fn injected_faults() {
    let h = H::new().await;
    let g = h
        .sim
        .issue_grant(CLIENT, UserId(300), "user.metrics,user.activity");

    // Real HTTP error, twice, then normal service.
    h.sim.inject(Target::Data, Fault::HttpStatus(502), 2);
    for _ in 0..2 {
        let r = h.getmeas(&g.access_token).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.body.contains("502 Bad Gateway"), "{}", r.body);
    }
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);

    // Faults target only their endpoint group.
    h.sim.inject(Target::Signature, Fault::HttpStatus(500), 1);
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    h.sim.clear_faults();

    // Dropped connection: no response at all.
    h.sim.inject(Target::TokenEndpoint, Fault::Drop, 1);
    let err = h.try_send(h.refresh_request(&g.refresh_token)).await;
    assert!(err.is_err(), "expected a connection error, got {err:?}");
    // The dropped refresh was never processed: the token is still fresh (no 601).
    let t = h.refresh_ok(&g.refresh_token).await;

    // Body status with wait_seconds.
    h.sim.inject(
        Target::Data,
        Fault::BodyStatus {
            status: 601,
            error: "Too many request".into(),
            wait_seconds: Some(7),
        },
        1,
    );
    let r = h.getmeas(&t.access).await;
    r.assert_err(601, "Too many request");
    assert_eq!(r.json()["body"]["wait_seconds"], 7);
    h.sim.inject(
        Target::TokenEndpoint,
        Fault::BodyStatus {
            status: 522,
            error: "Timeout".into(),
            wait_seconds: None,
        },
        1,
    );
    let r = h.refresh(&t.refresh).await;
    r.assert_err(522, "Timeout");
    assert_eq!(r.json()["body"], serde_json::json!({}));

    // Non-JSON body with HTTP 200.
    h.sim.inject(Target::Data, Fault::NonJson, 1);
    let r = h.getmeas(&t.access).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with('<'), "{}", r.body);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());

    // Truncated JSON with HTTP 200.
    for target in [Target::Data, Target::TokenEndpoint, Target::Signature] {
        h.sim.inject(target, Fault::Truncated, 1);
    }
    for path in ["/measure", "/v2/oauth2", "/v2/signature"] {
        let r = h.post(path, &[("action", "getmeas")]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.starts_with("{\"status\":0,\"body\":{"), "{}", r.body);
        assert!(
            serde_json::from_str::<Value>(&r.body).is_err(),
            "{}",
            r.body
        );
    }

    // Delay, then normal service.
    h.sim
        .inject(Target::Data, Fault::Delay(Duration::from_millis(300)), 1);
    let started = tokio::time::Instant::now();
    assert_eq!(h.getmeas(&t.access).await.st(), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    assert_eq!(h.getmeas(&t.access).await.st(), 0);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the delay was for one call"
    );

    // Faults queue in order.
    h.sim.inject(Target::Data, Fault::HttpStatus(503), 1);
    h.sim.inject(Target::Data, Fault::NonJson, 1);
    assert_eq!(
        h.getmeas(&t.access).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(h.getmeas(&t.access).await.body.starts_with('<'));
    assert_eq!(h.getmeas(&t.access).await.st(), 0);

    // Faulted calls are counted on arrival; served_* counts only genuine answers.
    let c = h.sim.counters();
    assert_eq!(c.data_calls, 12);
    assert_eq!(c.refreshes, 3);
    assert_eq!(c.successful_refreshes, 1);
    assert_eq!(c.served_601, 0);
    assert_eq!(c.nonces, 1);
}

#[tokio::test]
async fn authorize2_refusals() {
    let h = H::new().await;
    let good = [
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("state", "s"),
        ("scope", "user.metrics,user.activity"),
        ("redirect_uri", CALLBACK),
    ];
    let with = |k: &'static str, v: Option<&'static str>| {
        let mut p: Vec<(&str, &str)> = good.iter().copied().filter(|(pk, _)| *pk != k).collect();
        if let Some(v) = v {
            p.push((k, v));
        }
        p
    };
    let r = h.authorize_url(&with("client_id", Some("nobody"))).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::BAD_REQUEST, "invalid client_id")
    );
    for bad in [
        Some("https://app.example.com/withings/callback/"),
        Some("https://evil.example.com/withings/callback"),
        Some("http://app.example.com/withings/callback"),
        None,
    ] {
        let r = h.authorize_url(&with("redirect_uri", bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(r.body, REDIRECT_MISMATCH);
    }
    for (key, value, needle) in [
        ("scope", Some("user.metrics user.activity"), "scope"),
        ("scope", Some("user.metrics,user.everything"), "scope"),
        ("scope", None, "scope"),
        ("response_type", Some("token"), "response_type"),
        ("response_type", None, "response_type"),
        ("state", None, "state"),
    ] {
        let r = h.authorize_url(&with(key, value)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key}={value:?}");
        assert!(r.body.contains(needle), "{key}: {}", r.body);
    }
    // The wrong endpoint of the FAQ.
    let r = h
        .get(&format!("/oauth2_user/authorize?{}", enc(&good)))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // All four scopes are accepted.
    let r = h
        .authorize_url(&with(
            "scope",
            Some("user.info,user.metrics,user.activity,user.sleepevents"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
}

#[tokio::test]
async fn authorize2_approving_user_and_demo_mode() {
    let h = H::new().await;
    let exchange_userid = |mode: Option<&'static str>| {
        let h = &h;
        async move {
            let mut p = vec![
                ("response_type", "code"),
                ("client_id", CLIENT),
                ("state", "s"),
                ("scope", "user.metrics"),
                ("redirect_uri", CALLBACK),
            ];
            if let Some(m) = mode {
                p.push(("mode", m));
            }
            let r = h.authorize_url(&p).await;
            let loc = r.headers["location"].to_str().unwrap().to_owned();
            let code = get_pair(&query_pairs(&loc), "code").unwrap().to_owned();
            h.exchange(&code, CALLBACK).await.body_str("userid")
        }
    };
    assert_eq!(exchange_userid(None).await, DEFAULT_USER_ID.to_string());
    assert_eq!(
        exchange_userid(Some("demo")).await,
        DEMO_USER_ID.to_string()
    );
    assert_eq!(Simulator::DEMO_USER_ID, DEMO_USER_ID);
    h.sim.set_approving_user(UserId(555));
    assert_eq!(exchange_userid(None).await, "555");
}

#[tokio::test]
async fn logout_redirects_only_to_our_authorize2() {
    let h = H::new().await;
    let authorize = format!(
        "{}/oauth2_user/authorize2?{}",
        h.sim.account_base(),
        enc(&[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("state", "s"),
            ("scope", "user.metrics"),
            ("redirect_uri", CALLBACK),
        ])
    );
    let r = h
        .get(&format!("/logout?{}", enc(&[("r", &authorize)])))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], authorize.as_str());
    let r = h
        .get(&format!(
            "/logout?{}",
            enc(&[("r", "https://evil.example.com/oauth2_user/authorize2")])
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.get("/logout").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn access_token_header_wins_over_parameter() {
    let h = H::new().await;
    let good = h.sim.issue_grant(CLIENT, UserId(400), "user.metrics");
    let dead = h.sim.issue_grant(CLIENT, UserId(401), "user.metrics");
    h.sim.revoke_access_token(&dead.access_token);

    let call = |header: Option<&str>, param_in_body: Option<&str>, param_in_query: Option<&str>| {
        let mut uri = h.url("/measure");
        if let Some(q) = param_in_query {
            uri.push_str(&format!("?access_token={q}"));
        }
        let mut body = vec![("action", "getmeas")];
        if let Some(p) = param_in_body {
            body.push(("access_token", p));
        }
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(t) = header {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Full::new(Bytes::from(enc(&body)))).unwrap()
    };
    // Valid header, stale parameter: the header wins.
    let r = h
        .send(call(
            Some(&good.access_token),
            Some(&dead.access_token),
            None,
        ))
        .await;
    assert_eq!(r.st(), 0, "{}", r.body);
    // Dead header, valid parameter: still the header.
    h.send(call(
        Some(&dead.access_token),
        Some(&good.access_token),
        None,
    ))
    .await
    .assert_err(401, INVALID_TOKEN);
    h.send(call(
        Some(&dead.access_token),
        None,
        Some(&good.access_token),
    ))
    .await
    .assert_err(401, INVALID_TOKEN);
    assert_eq!(h.sim.counters().access_token_in_params, 0);
    // No header: the legacy parameter is accepted (body or query) and counted.
    assert_eq!(
        h.send(call(None, Some(&good.access_token), None))
            .await
            .st(),
        0
    );
    assert_eq!(
        h.send(call(None, None, Some(&good.access_token)))
            .await
            .st(),
        0
    );
    h.send(call(None, None, None))
        .await
        .assert_err(401, INVALID_TOKEN);
    // GET with everything in the query string also works for data endpoints.
    let r = h
        .get(&format!(
            "/measure?action=getmeas&access_token={}",
            good.access_token
        ))
        .await;
    assert_eq!(r.st(), 0);
    let c = h.sim.counters();
    assert_eq!(
        (c.access_token_in_params, c.served_401, c.data_calls),
        (3, 3, 7)
    );
}

#[tokio::test]
async fn authorization_header_on_token_endpoints_is_counted() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(500), "user.metrics");
    let mut req = h.refresh_request(&g.refresh_token);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", g.access_token).parse().unwrap(),
    );
    // Still answered normally.
    assert_eq!(h.send(req).await.st(), 0);
    let mut req = h.form_request("/v2/signature", &[("action", "getnonce")]);
    req.headers_mut()
        .insert("authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
    assert_eq!(h.send(req).await.st(), 503);
    // Bearer on data calls is where it belongs.
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    // Plain token calls without the header are not counted.
    h.refresh("unknown").await;
    assert_eq!(h.sim.counters().bearer_where_none_belongs, 2);
}

#[tokio::test]
async fn data_endpoints_scopes_actions_and_expiry() {
    let h = H::with(SimConfig {
        access_token_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let g = h
        .sim
        .issue_grant(CLIENT, UserId(600), "user.metrics,user.activity");
    assert_eq!(g.expires_in, 60);
    let ok = [
        ("/measure", "getmeas", "measuregrps"),
        ("/v2/measure", "getactivity", "activities"),
        ("/v2/measure", "getintradayactivity", "series"),
        ("/v2/measure", "getworkouts", "series"),
        ("/v2/sleep", "get", "series"),
        ("/v2/sleep", "getsummary", "series"),
        ("/v2/heart", "list", "series"),
        ("/v2/heart", "get", "signal"),
        ("/notify", "list", "profiles"),
    ];
    for (path, action, key) in ok {
        let r = h.data(path, action, &g.access_token).await;
        assert_eq!(r.st(), 0, "{path} {action}: {}", r.body);
        assert!(
            !r.json()["body"][key].is_null(),
            "{path} {action}: {}",
            r.body
        );
    }
    h.data("/v2/user", "getdevice", &g.access_token)
        .await
        .assert_err(214, "Unauthorized: missing scope user.info");
    h.data("/measure", "getactivity", &g.access_token)
        .await
        .assert_err(2554, "Not implemented");
    h.data("/v2/sleep", "", &g.access_token)
        .await
        .assert_err(2554, "Not implemented");
    let info = h.sim.issue_grant(CLIENT, UserId(600), "user.info");
    let r = h.data("/v2/user", "getdevice", &info.access_token).await;
    assert_eq!(r.st(), 0);
    assert_eq!(r.json()["body"]["devices"][0]["model"], "Body+");
    h.data("/measure", "getmeas", &info.access_token)
        .await
        .assert_err(214, "Unauthorized: missing scope user.metrics");
    // Unknown paths are real 404s.
    assert_eq!(h.get("/v2/nothing").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/").await.status, StatusCode::NOT_FOUND);
    // Access tokens expire on the simulator clock; set_access_token_ttl affects new tokens.
    h.sim.set_access_token_ttl(Duration::from_secs(3600));
    let long = h.sim.issue_grant(CLIENT, UserId(600), "user.metrics");
    assert_eq!(long.expires_in, 3600);
    h.sim.advance(Duration::from_secs(61));
    h.assert_token_refused(&g.access_token).await;
    assert_eq!(h.getmeas(&long.access_token).await.st(), 0);
    assert!(!h.sim.is_access_token_valid(&g.access_token));
    assert!(h.sim.is_access_token_valid(&long.access_token));
}

#[tokio::test]
async fn getmeas_filters_types_and_notify_subscriptions() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(700), "user.metrics");
    let r = h
        .post(
            "/measure",
            &[
                ("action", "getmeas"),
                ("meastype", "6"),
                ("access_token", &g.access_token),
            ],
        )
        .await;
    assert_eq!(r.st(), 0);
    let grps = r.json()["body"]["measuregrps"].as_array().unwrap().clone();
    assert!(!grps.is_empty());
    for grp in grps {
        for m in grp["measures"].as_array().unwrap() {
            assert_eq!(m["type"], 6);
        }
    }
    // A callback that answers Withings' HEAD check (and everything else) with 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = format!("http://{}/n", listener.local_addr().unwrap());
    let moved = format!("http://{}/moved", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "" });
        axum::serve(listener, app).await
    });
    let notify = |pairs: Vec<(&'static str, String)>| {
        let h = &h;
        let token = g.access_token.clone();
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let req = Request::post(h.url("/notify"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from(enc(&pairs))))
                .unwrap();
            h.send(req).await
        }
    };
    let s = |v: &str| v.to_owned();
    // A callback Withings cannot reach fails the HEAD check: refused, nothing subscribed.
    notify(vec![
        ("action", s("subscribe")),
        ("callbackurl", s("https://app.example.com/n")),
        ("appli", s("1")),
    ])
    .await
    .assert_err(
        293,
        "Invalid Params: the callback URL is either unknown or invalid (it did not answer HEAD with 2xx in time)",
    );
    let subscribe = vec![
        ("action", s("subscribe")),
        ("callbackurl", local.clone()),
        ("appli", s("1")),
        ("comment", s("scale")),
    ];
    assert_eq!(notify(subscribe.clone()).await.st(), 0);
    assert_eq!(notify(subscribe).await.st(), 0, "subscribing twice is fine");
    let r = notify(vec![("action", s("list"))]).await;
    assert_eq!(
        r.json()["body"]["profiles"][0]["callbackurl"],
        local.as_str()
    );
    assert_eq!(r.json()["body"]["profiles"][0]["comment"], "scale");
    assert_eq!(r.json()["body"]["profiles"].as_array().unwrap().len(), 1);
    let get = |url: &str| {
        vec![
            ("action", s("get")),
            ("callbackurl", s(url)),
            ("appli", s("1")),
        ]
    };
    assert_eq!(notify(get(&local)).await.json()["body"]["appli"], 1);
    notify(get("http://127.0.0.1:1/none"))
        .await
        .assert_err(294, "Invalid Params: no such subscription");
    // Update moves it (the new callback is checked too).
    let r = notify(vec![
        ("action", s("update")),
        ("callbackurl", local.clone()),
        ("appli", s("1")),
        ("new_callbackurl", moved.clone()),
        ("new_appli", s("4")),
    ])
    .await;
    assert_eq!(r.st(), 0, "{}", r.body);
    let r = notify(vec![("action", s("list")), ("appli", s("4"))]).await;
    assert_eq!(
        r.json()["body"]["profiles"][0]["callbackurl"],
        moved.as_str()
    );
    let revoke = vec![
        ("action", s("revoke")),
        ("callbackurl", moved.clone()),
        ("appli", s("4")),
    ];
    assert_eq!(notify(revoke.clone()).await.st(), 0);
    assert_eq!(notify(revoke).await.st(), 294);
    for bad in [
        vec![("action", s("subscribe")), ("appli", s("1"))],
        vec![
            ("action", s("subscribe")),
            ("callbackurl", local.clone()),
            // 3 is no appli Withings documents (2 is temperature).
            ("appli", s("3")),
        ],
        vec![("action", s("subscribe")), ("callbackurl", local.clone())],
    ] {
        assert_eq!(notify(bad).await.st(), 293);
    }
    let r = notify(vec![("action", s("list"))]).await;
    assert_eq!(r.json()["body"]["profiles"], serde_json::json!([]));
    let counters = h.sim.notify_counters();
    assert_eq!(counters.subscriptions_made, 1, "{counters:?}");
    assert_eq!(counters.callback_checks, 4, "{counters:?}");
    assert_eq!(counters.callback_check_failures, 1, "{counters:?}");
}

#[tokio::test]
async fn optional_data_rate_limit() {
    let h = H::new().await;
    h.sim.set_data_rate_limit(Some(2));
    let g = h.sim.issue_grant(CLIENT, UserId(800), "user.metrics");
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    h.getmeas(&g.access_token)
        .await
        .assert_err(601, "Too many request");
    h.sim.advance(Duration::from_secs(60));
    assert_eq!(h.getmeas(&g.access_token).await.st(), 0);
    assert_eq!(h.sim.counters().served_601, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests() {
    let h = H::new().await;
    let g = h.sim.issue_grant(CLIENT, UserId(900), "user.metrics");
    let url = h.url("/measure");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let client = h.client.clone();
        let url = url.clone();
        let token = g.access_token.clone();
        tasks.spawn(async move {
            let req = Request::post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from("action=getmeas")))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            bytes.starts_with(b"{\"status\":0,")
        });
    }
    let mut ok = 0;
    while let Some(res) = tasks.join_next().await {
        if res.unwrap() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    assert_eq!(h.sim.counters().data_calls, 1000);
}

#[tokio::test]
async fn counters_reset_and_shutdown_on_drop() {
    let h = H::new().await;
    h.refresh("x").await;
    assert_eq!(h.sim.counters().refreshes, 1);
    h.sim.reset_counters();
    assert_eq!(h.sim.counters(), Counters::default());
    let addr = h.sim.addr();
    assert!(h.sim.api_base().ends_with(&addr.port().to_string()));
    assert_eq!(h.sim.api_base(), h.sim.account_base());
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(h);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still listening after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
