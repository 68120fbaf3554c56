//! Step 1 and 2 of the web flow: the authorize2 URL, and the callback the user comes back with.

use std::fmt;

use url::{Host, Url};

use crate::config::is_loopback_host;
use crate::error::Error;
use crate::secret::Secret;

/// Which redirect URIs [`crate::oauth::OAuthClient::authorize`] accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedirectPolicy {
    /// Only what Withings accepts as a callback URL: https, a host name (no localhost, no IP
    /// address), port 80 or 443, at most 255 characters.
    #[default]
    Withings,
    /// Also http or https to `localhost`, 127.0.0.0/8 or `::1` on any port (local simulators,
    /// apps in "restricted mode").
    AllowLoopback,
}

/// Refuses redirect URIs that Withings would refuse, saying why.
pub(crate) fn check_redirect_uri(uri: &str, policy: RedirectPolicy) -> Result<(), Error> {
    let refuse = |reason: String| Err(Error::RedirectUri { reason });
    if uri.len() > 255 {
        return refuse(format!("{} characters, Withings allows 255", uri.len()));
    }
    if uri.chars().any(char::is_control) {
        return refuse("it contains control characters".into());
    }
    let Ok(url) = Url::parse(uri) else {
        return refuse("not an absolute URL".into());
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = is_loopback_host(host);
    if loopback && policy == RedirectPolicy::AllowLoopback {
        return match url.scheme() {
            "http" | "https" => Ok(()),
            _ => refuse("scheme must be http or https".into()),
        };
    }
    if url.scheme() != "https" {
        return refuse("Withings requires https".into());
    }
    match url.host() {
        None => refuse("no host".into()),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => {
            refuse("an IP address is not allowed as callback host".into())
        }
        Some(Host::Domain(_)) if loopback => refuse("localhost is not allowed".into()),
        Some(Host::Domain(_)) => match url.port() {
            None | Some(80) | Some(443) => Ok(()),
            Some(port) => refuse(format!("port {port} is not allowed (only 80 or 443)")),
        },
    }
}

/// Where to send the user's browser, and what to keep (in their session) for the callback.
///
/// `Debug` hides the state.
#[derive(Clone)]
pub struct AuthorizeRequest {
    pub(crate) url: String,
    pub(crate) state: Secret,
    pub(crate) redirect_uri: String,
}

impl AuthorizeRequest {
    /// The `authorize2` URL to redirect the browser to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CSRF `state` this request carries; keep it with the user's session.
    pub fn state(&self) -> &str {
        self.state.expose()
    }

    /// The redirect URI, kept so the code exchange sends it byte for byte the same.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Rebuilds the request from what a web app kept in its session (state and redirect URI),
    /// so the callback can be checked on another server than the one that started the flow.
    pub fn resume(state: impl Into<String>, redirect_uri: impl Into<String>) -> Self {
        AuthorizeRequest {
            url: String::new(),
            state: Secret::new(state.into()),
            redirect_uri: redirect_uri.into(),
        }
    }
}

impl fmt::Debug for AuthorizeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A fresh unguessable `state`: 128 random bits, hex.
pub(crate) fn random_state() -> Secret {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    Secret::new(crate::oauth::signature::hex(&bytes))
}

/// What Withings appended to the redirect URI: `code` and `state`, or an `error`.
///
/// `Debug` hides the code.
#[derive(Clone)]
pub struct Callback {
    code: Secret,
    state: String,
}

impl Callback {
    /// Parses the redirected URL, its query string (with or without `?`), from what the user's
    /// browser was sent to.
    pub fn parse(redirected: &str) -> Result<Callback, Error> {
        let redirected = redirected.trim();
        let query = match redirected.split_once('?') {
            Some((_, query)) => query,
            None if redirected.contains('=') => redirected,
            None => "",
        };
        let query = query.split('#').next().unwrap_or_default();
        let (mut code, mut state, mut error) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "code" if code.is_none() => code = Some(value.into_owned()),
                "state" if state.is_none() => state = Some(value.into_owned()),
                "error" if error.is_none() => error = Some(value.into_owned()),
                _ => {}
            }
        }
        if let Some(error) = error {
            return Err(Error::AuthorizationDenied(crate::error::shorten(&error)));
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or(Error::CallbackMissing("code"))?;
        let state = state.ok_or(Error::CallbackMissing("state"))?;
        Ok(Callback {
            code: Secret::new(code),
            state,
        })
    }

    /// The authorization code (valid 30 s, single use).
    pub fn code(&self) -> &Secret {
        &self.code
    }

    /// The returned `state`.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Checks the returned state against the one issued, in constant time.
    pub fn verify(&self, request: &AuthorizeRequest) -> Result<(), Error> {
        if request.state.expose().is_empty() || !request.state.ct_eq(&self.state) {
            return Err(Error::StateMismatch);
        }
        Ok(())
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("code", &self.code)
            .field("state", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(uri: &str, policy: RedirectPolicy) -> Option<String> {
        match check_redirect_uri(uri, policy) {
            Ok(()) => None,
            Err(Error::RedirectUri { reason }) => Some(reason),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirect_uri_rules_from_the_faq() {
        let strict = RedirectPolicy::Withings;
        for uri in [
            "https://app.example.com/callback",
            "https://app.example.com:443/cb?x=1",
            "https://app.example.com:80/cb",
        ] {
            assert_eq!(reason(uri, strict), None, "{uri}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(240));
        // Each refused URI and a word its reason must name.
        for (uri, names) in [
            ("http://app.example.com/cb", "https"),
            ("https://localhost/cb", "localhost"),
            ("https://127.0.0.1/cb", "IP address"),
            ("https://[::1]/cb", "IP address"),
            ("https://93.184.216.34/cb", "IP address"),
            ("https://app.example.com:8443/cb", "8443"),
            (&long, "255"),
            ("/relative", "absolute"),
            ("https://app.example.com/cb\r\nX: y", "control"),
        ] {
            let why = reason(uri, strict).unwrap_or_else(|| panic!("{uri:?} accepted"));
            assert!(why.contains(names), "{uri:?}: {why}");
        }
    }

    #[test]
    fn loopback_only_when_allowed() {
        let lo = RedirectPolicy::AllowLoopback;
        // Each URI, the policy, and whether it accepts it.
        for (uri, policy, accepted) in [
            ("http://127.0.0.1:8080/cb", lo, true),
            ("http://localhost:3000/cb", lo, true),
            ("http://[::1]:3000/cb", lo, true),
            ("http://10.1.2.3:3000/cb", lo, false),
            ("http://127.0.0.1:8080/cb", RedirectPolicy::Withings, false),
        ] {
            let why = reason(uri, policy);
            assert_eq!(why.is_none(), accepted, "{uri} {policy:?}: {why:?}");
        }
    }

    #[test]
    fn callback_parses_url_query_and_bare_query() {
        for input in [
            "https://app.example.com/cb?code=abc&state=s1",
            "?code=abc&state=s1",
            "code=abc&state=s1",
            "  https://app.example.com/cb?state=s1&code=abc#frag \n",
        ] {
            let cb = Callback::parse(input).unwrap();
            assert_eq!(cb.code().expose(), "abc", "{input}");
            assert_eq!(cb.state(), "s1", "{input}");
        }
    }

    #[test]
    fn callback_errors_are_typed() {
        assert!(matches!(
            Callback::parse("https://a/cb?state=s"),
            Err(Error::CallbackMissing("code"))
        ));
        assert!(matches!(
            Callback::parse("https://a/cb?code=c"),
            Err(Error::CallbackMissing("state"))
        ));
        assert!(matches!(
            Callback::parse(""),
            Err(Error::CallbackMissing("code"))
        ));
        assert!(matches!(
            Callback::parse("https://a/cb?error=access_denied&state=s"),
            Err(Error::AuthorizationDenied(e)) if e == "access_denied"
        ));
    }

    #[test]
    fn state_is_verified() {
        let request = AuthorizeRequest::resume("expected-state", "https://a/cb");
        let good = Callback::parse("code=c&state=expected-state").unwrap();
        assert!(good.verify(&request).is_ok());
        let forged = Callback::parse("code=c&state=attacker").unwrap();
        assert!(matches!(forged.verify(&request), Err(Error::StateMismatch)));
        let empty = AuthorizeRequest::resume("", "https://a/cb");
        let blank = Callback::parse("code=c&state=").unwrap();
        assert!(matches!(blank.verify(&empty), Err(Error::StateMismatch)));
    }

    #[test]
    fn debug_hides_code_and_state() {
        let cb = Callback::parse("code=secret-code&state=secret-state").unwrap();
        assert!(!format!("{cb:?}").contains("secret-code"));
        assert!(!format!("{cb:?}").contains("secret-state"));
        let req = AuthorizeRequest::resume("secret-state", "https://a/cb");
        assert!(!format!("{req:?}").contains("secret-state"));
        let a = random_state();
        let b = random_state();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
    }
}
