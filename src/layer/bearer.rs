//! The bearer header on a request, and no stale `access_token` in its URL.

use http::{HeaderValue, Request, Uri, header};

/// Sets the bearer header and drops any legacy `access_token` query parameter, so a stale
/// token in the URL can never override the header.
pub(super) fn authorize<B>(request: &mut Request<B>, header: HeaderValue) {
    if request
        .uri()
        .query()
        .is_some_and(|q| q.contains("access_token"))
    {
        *request.uri_mut() = without_access_token(request.uri());
    }
    request.headers_mut().insert(header::AUTHORIZATION, header);
}

fn without_access_token(uri: &Uri) -> Uri {
    let query = uri.query().unwrap_or_default();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            percent_encoding::percent_decode_str(key).decode_utf8_lossy() != "access_token"
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_query_parameter_is_removed() {
        let strip = |u: &str| without_access_token(&u.parse().unwrap()).to_string();
        assert_eq!(
            strip("https://h/measure?action=getmeas&access_token=old&x=1"),
            "https://h/measure?action=getmeas&x=1"
        );
        assert_eq!(
            strip("https://h/measure?access_token=old"),
            "https://h/measure"
        );
        assert_eq!(
            strip("https://h/m?access%5Ftoken=old&a=b"),
            "https://h/m?a=b"
        );
        assert_eq!(
            strip("https://h/m?my_access_token=keep"),
            "https://h/m?my_access_token=keep"
        );
    }
}
