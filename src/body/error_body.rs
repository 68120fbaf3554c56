//! The error body reader: the typed error of an answer whose `status` is not 0, read from a
//! bounded prefix of its (small) body.

use bytes::{Bytes, BytesMut};
use http_body::Body;

use super::limits::{ERROR_BODY_LIMIT, PEEK_FRAMES};
use super::response::WithingsBody;
use crate::error::Error;
use crate::status::Envelope;

/// The typed error of an answer whose body `status` (already peeked) is not 0, for
/// `status_errors`: the one status table ([`crate::status::classify`]) with the body's `error`
/// message and `wait_seconds`, read from at most [`ERROR_BODY_LIMIT`] bytes and
/// [`PEEK_FRAMES`] frames of an uncompressed body; otherwise (a longer, compressed, failing or
/// unparsable body) from the status number alone. The body is dropped.
pub(crate) async fn status_error<B>(response: http::Response<WithingsBody<B>>, status: i64) -> Error
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let identity = response
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_none_or(|coding| coding.as_bytes().eq_ignore_ascii_case(b"identity"));
    let mut body = response.into_body();
    let mut text = BytesMut::new();
    let mut complete = false;
    if identity {
        for _ in 0..PEEK_FRAMES {
            match body.frame().await {
                None => complete = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if text.len() + data.len() <= ERROR_BODY_LIMIT => {
                        text.extend_from_slice(&data);
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => complete = true, // trailers: the data has ended
                },
                Some(Err(_)) => {}
            }
            break;
        }
    }
    if complete {
        if let Ok(envelope) = Envelope::parse(&text) {
            if envelope.status == status {
                if let Err(error) = envelope.into_result() {
                    return error;
                }
            }
        }
    }
    let wait = crate::status::find_wait_seconds(&text);
    crate::status::classify(status, "", wait).unwrap_or(Error::UnknownStatus {
        status,
        message: String::new(),
    })
}
