//! The Withings OAuth 2.0 protocol: authorize URL, callback, code exchange, refresh, signed mode.
//!
//! [`OAuthClient`] holds no token state: it builds URLs and sends token requests through any
//! tower HTTP client you give it (your own stack, or [`crate::transport::plain_http_client`] for
//! a local simulator).

mod authorize;
pub(crate) mod signature;
mod token_response;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

pub(crate) use authorize::check_redirect_uri;
pub use authorize::{AuthorizeRequest, Callback, RedirectPolicy};

pub use crate::config::ClientAuth;
pub(crate) use token_response::parse_token;

use crate::clock::{Clock, SystemClock};
use crate::config::{Credentials, Endpoints};
use crate::error::Error;
use crate::secret::Secret;
use crate::status;
use crate::token::{Scope, Token, UserId};
use crate::transport::{self, HttpClient, Transport};
use tower::ServiceExt;

/// Path of the token endpoint, below the API base.
pub(crate) const TOKEN_PATH: &str = "/v2/oauth2";
/// Path of the nonce endpoint (signed mode), below the API base.
pub(crate) const SIGNATURE_PATH: &str = "/v2/signature";
/// Path of the authorize page, below the account base (`authorize2`, not `authorize`).
pub(crate) const AUTHORIZE_PATH: &str = "/oauth2_user/authorize2";

/// Sends token requests to Withings and builds the URLs of the web flow. Cheap to clone.
#[derive(Clone)]
pub struct OAuthClient {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: Credentials,
    endpoints: Endpoints,
    client_auth: ClientAuth,
    redirect_policy: RedirectPolicy,
    clock: Arc<dyn Clock>,
    /// Answers within the token-call timeout (and, in a handle, within the request budget).
    transport: Transport,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("credentials", &self.inner.credentials)
            .field("endpoints", &self.inner.endpoints)
            .field("client_auth", &self.inner.client_auth)
            .finish_non_exhaustive()
    }
}

/// Configures an [`OAuthClient`].
#[derive(Debug)]
pub struct OAuthClientBuilder {
    credentials: Credentials,
    endpoints: Endpoints,
    client_auth: ClientAuth,
    redirect_policy: RedirectPolicy,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

impl OAuthClientBuilder {
    pub(crate) fn client_id(&self) -> &str {
        &self.credentials.client_id
    }

    pub(crate) fn configured_endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub(crate) fn configured_timeout(&self) -> Duration {
        self.timeout
    }

    crate::setters::setters! {
        /// Where Withings is (default: the public cloud).
        fn endpoints(endpoints: Endpoints) => endpoints;

        /// How token requests authenticate (default: client secret in the body).
        fn client_auth(client_auth: ClientAuth) => client_auth;

        /// Which redirect URIs to accept (default: only those Withings accepts).
        fn redirect_policy(policy: RedirectPolicy) => redirect_policy;

        /// The clock used for `expires_at` and signature timestamps (default: the system clock).
        fn clock(clock: impl Clock) => clock = Arc::new(clock);

        /// How long a token-endpoint call may take before it fails (default 30 s).
        fn timeout(timeout: Duration) => timeout;
    }

    /// Builds the client; token requests go through `http_client`.
    pub fn build(self, http_client: impl HttpClient) -> OAuthClient {
        self.build_with(http_client, |timed| timed)
    }

    /// Builds the client; token requests go through what `around` makes of `http_client`
    /// answering within the timeout (a handle puts its request budget around it).
    pub(crate) fn build_with(
        self,
        http_client: impl HttpClient,
        around: impl FnOnce(Transport) -> Transport,
    ) -> OAuthClient {
        let transport = transport::boxed(http_client);
        OAuthClient {
            inner: Arc::new(Inner {
                credentials: self.credentials,
                endpoints: self.endpoints,
                client_auth: self.client_auth,
                redirect_policy: self.redirect_policy,
                clock: self.clock,
                transport: around(transport::timed(transport, self.timeout)),
            }),
        }
    }
}

/// Which grant a token request uses.
enum Grant<'a> {
    Code {
        code: &'a str,
        redirect_uri: &'a str,
    },
    Refresh {
        refresh_token: &'a str,
    },
}

impl OAuthClient {
    /// Starts configuring a client for these credentials.
    pub fn builder(credentials: Credentials) -> OAuthClientBuilder {
        OAuthClientBuilder {
            credentials,
            endpoints: Endpoints::default(),
            client_auth: ClientAuth::default(),
            redirect_policy: RedirectPolicy::default(),
            clock: Arc::new(SystemClock),
            timeout: Duration::from_secs(30),
        }
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The app's client id.
    pub fn client_id(&self) -> &str {
        &self.inner.credentials.client_id
    }

    /// The clock this client reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Step 1: the `authorize2` URL asking the user for `scopes`, with a fresh random state.
    pub fn authorize(
        &self,
        redirect_uri: &str,
        scopes: &[Scope],
    ) -> Result<AuthorizeRequest, Error> {
        authorize::check_redirect_uri(redirect_uri, self.inner.redirect_policy)?;
        if scopes.is_empty() {
            return Err(Error::NoScope);
        }
        let scope = scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let state = authorize::random_state();
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.inner.credentials.client_id)
            .append_pair("state", state.expose())
            .append_pair("scope", &scope)
            .append_pair("redirect_uri", redirect_uri);
        let url = format!(
            "{}?{}",
            self.inner.endpoints.account_url(AUTHORIZE_PATH),
            query.finish()
        );
        Ok(AuthorizeRequest {
            url,
            state,
            redirect_uri: redirect_uri.to_owned(),
        })
    }

    /// Like [`authorize`](Self::authorize) with `mode=demo`: Withings logs in its demo user.
    pub fn authorize_demo(
        &self,
        redirect_uri: &str,
        scopes: &[Scope],
    ) -> Result<AuthorizeRequest, Error> {
        let mut request = self.authorize(redirect_uri, scopes)?;
        request.url.push_str("&mode=demo");
        Ok(request)
    }

    /// The FAQ's forced logout: sends the user through `/logout` and back to `request`'s
    /// authorize URL, so they pick the account again.
    pub fn logout_url(&self, request: &AuthorizeRequest) -> String {
        let encoded = form_urlencoded::byte_serialize(request.url.as_bytes()).collect::<String>();
        format!(
            "{}?r={encoded}",
            self.inner.endpoints.account_url("/logout")
        )
    }

    /// The page where a user unlinks this app themselves (partners cannot do it for them).
    pub fn disconnect_url(&self, user: UserId) -> String {
        let client_id =
            form_urlencoded::byte_serialize(self.inner.credentials.client_id.as_bytes())
                .collect::<String>();
        self.inner.endpoints.account_url(&format!(
            "/partner/disconnect_partner/{client_id}?selecteduser={user}"
        ))
    }

    /// Steps 2 and 3: checks the callback's state against `request`, then exchanges its code.
    ///
    /// Codes live 30 s: call this as soon as the user comes back.
    pub async fn exchange_code(
        &self,
        callback: &Callback,
        request: &AuthorizeRequest,
    ) -> Result<Token, Error> {
        callback.verify(request)?;
        self.exchange_unverified_code(callback.code().expose(), &request.redirect_uri)
            .await
    }

    /// Exchanges a bare code (pasted by a user into a CLI, say) without a state check.
    /// Prefer [`exchange_code`](Self::exchange_code) in web apps.
    pub async fn exchange_unverified_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Token, Error> {
        self.request_token(Grant::Code { code, redirect_uri }).await
    }

    /// Step 4: spends `refresh_token` for a new pair. The returned refresh token replaces the old
    /// one: persist the pair before using its access token.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Token, Error> {
        self.request_token(Grant::Refresh {
            refresh_token: refresh_token.expose(),
        })
        .await
    }

    async fn request_token(&self, grant: Grant<'_>) -> Result<Token, Error> {
        let nonce = match self.inner.client_auth {
            ClientAuth::Secret => None,
            ClientAuth::Signed => Some(self.nonce().await?),
        };
        let form = self.token_form(grant, nonce.as_deref());
        let sent_at = self.inner.clock.now();
        let body = self.post_form(TOKEN_PATH, form).await?;
        token_response::parse_token(&body, sent_at)
    }

    /// The requesttoken form: exactly the documented parameters, secret or signature.
    fn token_form(&self, grant: Grant<'_>, nonce: Option<&str>) -> String {
        let credentials = &self.inner.credentials;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("action", "requesttoken");
        match &grant {
            Grant::Code { .. } => form.append_pair("grant_type", "authorization_code"),
            Grant::Refresh { .. } => form.append_pair("grant_type", "refresh_token"),
        };
        form.append_pair("client_id", &credentials.client_id);
        match nonce {
            None => form.append_pair("client_secret", credentials.client_secret.expose()),
            Some(nonce) => {
                let signature = self.sign("requesttoken", nonce);
                form.append_pair("nonce", nonce)
                    .append_pair("signature", &signature)
            }
        };
        match grant {
            Grant::Code { code, redirect_uri } => form
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri),
            Grant::Refresh { refresh_token } => form.append_pair("refresh_token", refresh_token),
        };
        form.finish()
    }

    /// Revokes this app's access for `user` at Withings (`POST /v2/oauth2 action=revoke`,
    /// always signed: a nonce, then an HMAC of `revoke,<client_id>,<nonce>`; the secret never
    /// goes on the wire). Withings also removes the user's notification subscriptions.
    pub async fn revoke(&self, user: UserId) -> Result<(), Error> {
        let nonce = self.nonce().await?;
        let form = self
            .signed_form("revoke", ("nonce", &nonce))
            .append_pair("userid", &user.to_string())
            .finish();
        let body = self.post_form(TOKEN_PATH, form).await?;
        status::parse_response(&body).map(drop)
    }

    /// Signed mode, first call: a single-use nonce from `/v2/signature`.
    async fn nonce(&self) -> Result<String, Error> {
        let timestamp = self
            .inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let form = self
            .signed_form("getnonce", ("timestamp", &timestamp))
            .finish();
        let body = self.post_form(SIGNATURE_PATH, form).await?;
        match status::parse_response(&body)?.get("nonce") {
            Some(Value::String(nonce)) if !nonce.is_empty() => Ok(nonce.clone()),
            _ => Err(Error::MalformedResponse {
                reason: "getnonce answer without a nonce".into(),
            }),
        }
    }

    /// A signed-mode form: `action`, `client_id`, the `(name, value)` pair the signature
    /// covers (a nonce or a timestamp) and `signature`, the HMAC of
    /// `<action>,<client_id>,<value>`; the caller appends the rest.
    fn signed_form(
        &self,
        action: &str,
        (name, value): (&str, &str),
    ) -> form_urlencoded::Serializer<'static, String> {
        let signature = self.sign(action, value);
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("action", action)
            .append_pair("client_id", &self.inner.credentials.client_id)
            .append_pair(name, value)
            .append_pair("signature", &signature);
        form
    }

    /// The `signature` of a signed call: the HMAC of `<action>,<client_id>,<value>` under the
    /// client secret.
    fn sign(&self, action: &str, value: &str) -> String {
        let credentials = &self.inner.credentials;
        signature::sign(
            credentials.client_secret.expose(),
            &[action, &credentials.client_id, value],
        )
    }

    /// POSTs a form body (parameters never in the query: Withings ignores them there).
    async fn post_form(&self, path: &str, form: String) -> Result<Bytes, Error> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.inner.endpoints.api_url(path))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(Error::transport)?;
        let response = self.inner.transport.clone().oneshot(request).await?;
        if response.status() != StatusCode::OK {
            return Err(Error::Http {
                status: response.status(),
            });
        }
        Ok(response.into_body())
    }
}
