//! Who the app is (credentials) and where Withings is (endpoints).

use http::Uri;
use http::uri::{Authority, Scheme};

use crate::error::Error;
use crate::secret::Secret;

/// The partner app's OAuth 2.0 credentials. `Debug` hides the secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The app's client id (public).
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: Secret,
}

impl Credentials {
    /// Credentials from the partner dashboard.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<Secret>) -> Self {
        Credentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }
}

/// How token requests prove the app's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Send `client_secret` in the form body (Withings' basic mode).
    #[default]
    Secret,
    /// Never send the secret: fetch a nonce from `/v2/signature` and sign with HMAC-SHA256.
    Signed,
}

/// The two Withings hosts: the API (which also serves the token endpoint) and the account pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    api: BaseUrl,
    account: BaseUrl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseUrl {
    /// Without a trailing slash, e.g. `https://wbsapi.withings.net`.
    text: String,
    scheme: Scheme,
    authority: Authority,
    path: String,
}

impl Endpoints {
    /// Withings' public cloud: `https://wbsapi.withings.net` and `https://account.withings.com`.
    pub fn withings() -> Self {
        Self::custom(
            "https://wbsapi.withings.net",
            "https://account.withings.com",
        )
        .expect("valid built-in URL")
    }

    /// Withings' US medical cloud.
    pub fn us_medical() -> Self {
        Self::custom(
            "https://wbsapi.us.withingsmed.net",
            "https://account.us.withingsmed.com",
        )
        .expect("valid built-in URL")
    }

    /// Other hosts (a proxy, say). Both must be https.
    pub fn custom(api: &str, account: &str) -> Result<Self, Error> {
        Ok(Endpoints {
            api: BaseUrl::parse("api", api, false)?,
            account: BaseUrl::parse("account", account, false)?,
        })
    }

    /// Hosts on this machine (a simulator): plain http is allowed, but only to 127.0.0.0/8,
    /// `::1` or `localhost`.
    pub fn loopback(api: &str, account: &str) -> Result<Self, Error> {
        Ok(Endpoints {
            api: BaseUrl::parse("api", api, true)?,
            account: BaseUrl::parse("account", account, true)?,
        })
    }

    /// The API base URL, without a trailing slash.
    pub fn api_base(&self) -> &str {
        &self.api.text
    }

    /// The account base URL, without a trailing slash.
    pub fn account_base(&self) -> &str {
        &self.account.text
    }

    /// `{api}{path}`, e.g. `api_url("/v2/oauth2")`.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}{}", self.api.text, path)
    }

    /// `{account}{path}`.
    pub fn account_url(&self, path: &str) -> String {
        format!("{}{}", self.account.text, path)
    }

    /// The part of `uri`'s path below the API base when `uri` is on the configured API host
    /// (same scheme, host and port), else `None`. Bearer tokens go only where this is `Some`.
    pub fn api_path<'u>(&self, uri: &'u Uri) -> Option<&'u str> {
        // Byte-equal first (the usual case), then case-insensitively as URIs compare hosts.
        let same_authority = uri.authority().is_some_and(|authority| {
            authority.as_str() == self.api.authority.as_str() || *authority == self.api.authority
        });
        if !same_authority || uri.scheme() != Some(&self.api.scheme) {
            return None;
        }
        // On a segment boundary: a `/withings` base matches `/withings/…`, never `/withingsX`.
        uri.path()
            .strip_prefix(self.api.path.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::withings()
    }
}

impl BaseUrl {
    fn parse(which: &'static str, text: &str, allow_loopback_http: bool) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BaseUrl {
            which,
            reason: reason.to_owned(),
        };
        let text = text.trim_end_matches('/');
        let uri: Uri = text.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL takes no query"));
        }
        if scheme == Scheme::HTTP {
            if !allow_loopback_http {
                return Err(bad("plain http is refused: use https"));
            }
            if !is_loopback_host(authority.host()) {
                return Err(bad("plain http is allowed only to loopback hosts"));
            }
        } else if scheme != Scheme::HTTPS {
            return Err(bad("scheme must be https"));
        }
        Ok(BaseUrl {
            text: text.to_owned(),
            path: uri.path().trim_end_matches('/').to_owned(),
            scheme,
            authority,
        })
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_net_api_host_and_account_host() {
        let e = Endpoints::default();
        assert_eq!(e.api_base(), "https://wbsapi.withings.net");
        assert_eq!(e.account_base(), "https://account.withings.com");
        assert_eq!(
            e.api_url("/v2/oauth2"),
            "https://wbsapi.withings.net/v2/oauth2"
        );
        let us = Endpoints::us_medical();
        assert_eq!(us.api_base(), "https://wbsapi.us.withingsmed.net");
        assert_eq!(us.account_base(), "https://account.us.withingsmed.com");
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_asked() {
        assert!(Endpoints::custom("http://127.0.0.1:1", "http://127.0.0.1:1").is_err());
        assert!(Endpoints::loopback("http://127.0.0.1:1", "http://[::1]:2").is_ok());
        assert!(Endpoints::loopback("http://localhost:1/", "http://127.0.0.2:2").is_ok());
        assert!(Endpoints::loopback("http://10.0.0.1", "http://127.0.0.1").is_err());
        assert!(Endpoints::loopback("http://wbsapi.withings.net", "http://127.0.0.1").is_err());
        assert!(Endpoints::custom("ftp://x", "https://y").is_err());
        assert!(Endpoints::custom("not a url", "https://y").is_err());
    }

    #[test]
    fn api_path_matches_scheme_host_and_port_exactly() {
        let e = Endpoints::withings();
        let path = |u: &str| e.api_path(&u.parse::<Uri>().unwrap()).map(str::to_owned);
        assert_eq!(
            path("https://wbsapi.withings.net/measure?x=1").as_deref(),
            Some("/measure")
        );
        assert_eq!(path("http://wbsapi.withings.net/measure"), None);
        assert_eq!(path("https://wbsapi.withings.net:8443/measure"), None);
        assert_eq!(path("https://wbsapi.withings.com/measure"), None);
        assert_eq!(path("https://evil.example/measure"), None);
        assert_eq!(path("/measure"), None);
        let prefixed =
            Endpoints::custom("https://proxy.example/withings/", "https://a.example").unwrap();
        let uri: Uri = "https://proxy.example/withings/v2/sleep".parse().unwrap();
        assert_eq!(prefixed.api_path(&uri), Some("/v2/sleep"));
        for outside in [
            "https://proxy.example/withingsX/measure",
            "https://proxy.example/withings-evil/measure",
            "https://proxy.example/withings.json",
        ] {
            assert_eq!(
                prefixed.api_path(&outside.parse().unwrap()),
                None,
                "{outside}"
            );
        }
        assert_eq!(
            prefixed.api_path(&"https://proxy.example/other".parse().unwrap()),
            None
        );
    }
}
