//! Compressed answers: the data endpoints honour `Accept-Encoding` (gzip, deflate, br) like a
//! real web server in front of the API would, or use the coding forced with
//! [`Simulator::set_response_encoding`](super::Simulator::set_response_encoding).

use std::io::Write;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, HeaderMap, HeaderValue, VARY};

/// A `Content-Encoding` the simulator can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `x-gzip`: the same bytes under the old name.
    XGzip,
    /// `deflate`: a zlib stream (RFC 1950), as HTTP means it.
    Deflate,
    /// `br` (RFC 7932).
    Brotli,
}

impl Coding {
    /// The coding called `name` (case-insensitive), if the simulator can produce it.
    pub(crate) fn from_name(name: &str) -> Option<Coding> {
        let name = name.trim();
        [Coding::Gzip, Coding::XGzip, Coding::Deflate, Coding::Brotli]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::XGzip => "x-gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }

    fn encode(self, plain: &[u8]) -> Vec<u8> {
        // Writing into a Vec cannot fail.
        let written = match self {
            Coding::Gzip | Coding::XGzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(plain).and_then(|()| w.finish())
            }
            Coding::Deflate => {
                let mut w =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(plain).and_then(|()| w.finish())
            }
            Coding::Brotli => {
                let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
                w.write_all(plain)
                    .and_then(|()| w.flush())
                    .map(|()| w.into_inner())
            }
        };
        written.unwrap_or_default()
    }
}

/// The coding to answer with for the request's `Accept-Encoding` values: the one with the
/// highest `q` the client accepts, ties going to br, then gzip, then deflate. `None`: identity.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Coding> {
    let mut offered: Vec<(String, f32)> = Vec::new();
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
                })
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            offered.push((token, q));
        }
    }
    let q_of = |name: &str| {
        let exact = offered
            .iter()
            .find(|(t, _)| t == name || (name == "gzip" && t == "x-gzip"));
        exact
            .or_else(|| offered.iter().find(|(t, _)| t == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let mut best: Option<(Coding, f32)> = None;
    for coding in [Coding::Brotli, Coding::Gzip, Coding::Deflate] {
        let q = q_of(coding.name());
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// A response body encoded in `coding`, with the headers that say so. An empty body stays
/// as it is.
pub(crate) fn encode(coding: Coding, plain: String, headers: &mut HeaderMap) -> Bytes {
    if plain.is_empty() {
        return Bytes::new();
    }
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    Bytes::from(coding.encode(plain.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn accept_encoding_is_negotiated() {
        assert_eq!(negotiate(&HeaderMap::new()), None);
        assert_eq!(negotiate(&accept("gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("x-gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("gzip,deflate,br")), Some(Coding::Brotli));
        assert_eq!(negotiate(&accept("deflate")), Some(Coding::Deflate));
        assert_eq!(negotiate(&accept("br;q=0.5, gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(&accept("gzip;q=0, identity")), None);
        assert_eq!(negotiate(&accept("zstd")), None);
        assert_eq!(negotiate(&accept("*")), Some(Coding::Brotli));
        assert_eq!(Coding::from_name("X-GZIP"), Some(Coding::XGzip));
        assert_eq!(Coding::from_name("zstd"), None);
    }
}
