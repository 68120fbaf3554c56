//! HTTP plumbing: listener, per-connection tasks, request parsing, routing, fault injection
//! and response building.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use super::encoding::{self, Coding};
use super::state::State;
use super::{Fault, Shared, Target, data, notify, oauth};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Binds `127.0.0.1:0` with a deep accept backlog (tests open a thousand connections at once).
pub(crate) fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(4096)
}

/// The accept loop. Connections run in a [`JoinSet`] owned by this future, so aborting the
/// accept task also aborts every open connection.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors or similar: back off a little and keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The error returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
pub(crate) struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the simulator")
    }
}

impl std::error::Error for DroppedOnPurpose {}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DroppedOnPurpose> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(Reply::Text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".into(),
            )
            .into_response());
        }
        // The client went away mid-body: nothing to answer.
        Err(_) => return Err(DroppedOnPurpose),
    };
    let req = Req::new(&parts, &body);
    let reply = route(&shared, &req).await;
    if matches!(reply, Reply::Drop) {
        return Err(DroppedOnPurpose);
    }
    // Data answers are compressed as the client asked (or as forced), like behind a real
    // web server; the OAuth endpoints answer identity.
    let coding = if data::is_data_path(&req.path) {
        let forced = shared.lock().response_encoding;
        forced.or_else(|| encoding::negotiate(&parts.headers))
    } else {
        None
    };
    Ok(reply.into_response_with(coding))
}

async fn route(shared: &Arc<Shared>, req: &Req) -> Reply {
    let target = match req.path.as_str() {
        "/oauth2_user/authorize2" => return oauth::authorize(shared, req),
        "/logout" => return oauth::logout(shared, req),
        p if p.starts_with(oauth::DISCONNECT_PREFIX) => {
            let (reply, deliveries) = oauth::disconnect(shared, req);
            notify::spawn(shared, deliveries);
            return reply;
        }
        "/v2/oauth2" => Target::TokenEndpoint,
        "/v2/signature" => Target::Signature,
        p if data::is_data_path(p) => Target::Data,
        // Includes `/oauth2_user/authorize` (without the 2), as the FAQ warns.
        _ => return Reply::Text(StatusCode::NOT_FOUND, "Not Found".into()),
    };
    let fault = {
        let mut st = shared.lock();
        count_arrival(&mut st, target, req);
        if let Err(wait) = st.app_rate_ok() {
            st.counters.served_601 += 1;
            let wait = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let body = format!("{{\"wait_seconds\":{wait}}}");
            return err_json_body(601, &body, "Too many request");
        }
        st.take_fault(target)
    };
    match fault {
        None => {}
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(fault) => return fault_reply(target, fault),
    }
    match target {
        Target::TokenEndpoint => {
            let (reply, latency) = oauth::token(shared, req);
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            reply
        }
        Target::Signature => oauth::signature(shared, req),
        Target::Data => match data::handle(shared, req) {
            data::Handled::Reply(reply) => reply,
            // Subscribe and update: Withings checks the callback (no lock held meanwhile).
            data::Handled::Check(pending) => {
                let reachable = notify::check_callback(shared, &pending.url).await;
                data::finish(shared, pending, reachable)
            }
        },
    }
}

/// Counts a request as it arrives (before faults).
fn count_arrival(st: &mut State, target: Target, req: &Req) {
    let c = &mut st.counters;
    match target {
        Target::TokenEndpoint => {
            if req.has_authorization {
                c.bearer_where_none_belongs += 1;
            }
            if req.method == Method::POST {
                match req.form("grant_type") {
                    Some("authorization_code") => c.code_exchanges += 1,
                    Some("refresh_token") => c.refreshes += 1,
                    _ => {}
                }
            }
        }
        Target::Signature => {
            if req.has_authorization {
                c.bearer_where_none_belongs += 1;
            }
            c.nonces += 1;
        }
        Target::Data => c.data_calls += 1,
    }
}

fn fault_reply(target: Target, fault: Fault) -> Reply {
    match fault {
        Fault::HttpStatus(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let line = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            Reply::Html(
                status,
                format!(
                    "<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n\
                     <center><h1>{line}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                     </body>\r\n</html>\r\n"
                ),
            )
        }
        Fault::Drop => Reply::Drop,
        Fault::BodyStatus {
            status,
            error,
            wait_seconds,
        } => {
            let body = match wait_seconds {
                Some(w) => format!("{{\"wait_seconds\":{w}}}"),
                None => "{}".to_owned(),
            };
            err_json_body(status, &body, &error)
        }
        Fault::NonJson => Reply::Html(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><title>Withings</title></head>\
             <body><h1>Service temporarily unavailable</h1>\
             <p>We are performing maintenance. Please try again later.</p></body></html>\n"
                .to_owned(),
        ),
        Fault::Truncated => Reply::Json(
            match target {
                Target::TokenEndpoint => {
                    "{\"status\":0,\"body\":{\"userid\":\"46865875\",\"access_token\":\"a075f8c1"
                }
                Target::Signature => "{\"status\":0,\"body\":{\"nonce\":\"3f1e",
                Target::Data => {
                    "{\"status\":0,\"body\":{\"updatetime\":1700000000,\"timezone\":\"Europe/Pa"
                }
            }
            .to_owned(),
        ),
        // Handled by the caller; serve normally if it ever gets here.
        Fault::Delay(_) => err_json(500, "Unexpected fault"),
    }
}

/// A parsed request: everything the handlers need, owned.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    /// The `Authorization` header, if present and readable as a string.
    pub(crate) authorization: Option<String>,
    /// Whether any `Authorization` header was present (even an unreadable one).
    pub(crate) has_authorization: bool,
}

fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Req {
    fn new(parts: &http::request::Parts, body: &[u8]) -> Req {
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let form = if is_form {
            form_urlencoded::parse(body).into_owned().collect()
        } else {
            Vec::new()
        };
        let auth = parts.headers.get(AUTHORIZATION);
        Req {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query,
            form,
            authorization: auth.and_then(|v| v.to_str().ok()).map(str::to_owned),
            has_authorization: auth.is_some(),
        }
    }

    /// A query-string parameter (decoded; the last one wins if repeated).
    pub(crate) fn query(&self, key: &str) -> Option<&str> {
        last(&self.query, key)
    }

    /// A form-body parameter (decoded; only from an `application/x-www-form-urlencoded` body).
    pub(crate) fn form(&self, key: &str) -> Option<&str> {
        last(&self.form, key)
    }

    /// A parameter from the form body, else from the query string.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.form(key).or_else(|| self.query(key))
    }
}

/// What to answer.
pub(crate) enum Reply {
    /// HTTP 200, `application/json`.
    Json(String),
    /// `text/plain`.
    Text(StatusCode, String),
    /// `text/html`.
    Html(StatusCode, String),
    /// HTTP 302 to this location.
    Redirect(String),
    /// Close the connection without answering.
    Drop,
}

impl Reply {
    fn into_response(self) -> Response<Full<Bytes>> {
        self.into_response_with(None)
    }

    /// The response, its body encoded in `coding` if any.
    fn into_response_with(self, coding: Option<Coding>) -> Response<Full<Bytes>> {
        let (status, content_type, body, location) = match self {
            Reply::Json(b) => (StatusCode::OK, "application/json", b, None),
            Reply::Text(s, b) => (s, "text/plain; charset=utf-8", b, None),
            Reply::Html(s, b) => (s, "text/html; charset=utf-8", b, None),
            Reply::Redirect(to) => (
                StatusCode::FOUND,
                "text/html; charset=utf-8",
                String::new(),
                Some(to),
            ),
            Reply::Drop => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                String::new(),
                None,
            ),
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.body_mut() = Full::new(match coding {
            Some(coding) => encoding::encode(coding, body, response.headers_mut()),
            None => Bytes::from(body),
        });
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(to) = location {
            match HeaderValue::from_str(&to) {
                Ok(v) => {
                    response.headers_mut().insert(LOCATION, v);
                }
                Err(_) => {
                    return Reply::Text(
                        StatusCode::BAD_REQUEST,
                        "redirect target is not a valid header value".into(),
                    )
                    .into_response();
                }
            }
        }
        response
    }
}

/// JSON-escapes a string (with quotes).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `{"status":0,"body":<body>}`; `body` must be a JSON object.
pub(crate) fn ok_json(body: &str) -> Reply {
    Reply::Json(format!("{{\"status\":0,\"body\":{body}}}"))
}

/// `{"status":<status>,"body":{},"error":"<error>"}`.
pub(crate) fn err_json(status: i64, error: &str) -> Reply {
    err_json_body(status, "{}", error)
}

/// `{"status":<status>,"body":<body>,"error":"<error>"}`.
pub(crate) fn err_json_body(status: i64, body: &str, error: &str) -> Reply {
    Reply::Json(format!(
        "{{\"status\":{status},\"body\":{body},\"error\":{}}}",
        json_str(error)
    ))
}
