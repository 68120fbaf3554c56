//! Bodies, one file each: request bodies that can be sent twice (`replay.rs`), the response
//! body that gives the peeked bytes back (`response.rs`), the scan that reads Withings' `status`
//! from its first bytes (`scan.rs`, decoding compressed ones on the side in `decode.rs`), the
//! reader of a small error body (`error_body.rs`), and how much of a body is read (`limits.rs`).

mod decode;
mod error_body;
mod limits;
mod replay;
mod response;
mod scan;

pub(crate) use error_body::status_error;
pub use replay::{ReplayBody, UnreplayedRefusal};
pub use response::WithingsBody;
pub(crate) use scan::StatusReader;
