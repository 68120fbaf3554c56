//! Decoding the start of a compressed response body, only as far as the status needs: at most
//! [`PEEK_LIMIT`] bytes out, each raw byte fed once. The caller still gets the raw bytes.

use brotli_decompressor::{Allocator, StandardAlloc};
use http::HeaderMap;
use http::header::CONTENT_ENCODING;

use super::limits::PEEK_LIMIT;

/// How a response body is encoded, as far as reading its status goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// No `Content-Encoding` (or `identity`): the bytes are the JSON.
    Identity,
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`: zlib as HTTP means it, or the raw deflate some servers send.
    Deflate,
    /// `br`.
    Brotli,
    /// Anything else (`zstd`, `compress`, a chain of codings): the status is unknown.
    Unsupported,
}

impl Coding {
    pub(super) fn of(headers: &HeaderMap) -> Coding {
        if headers.is_empty() {
            return Coding::Identity;
        }
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Coding::Identity;
        };
        if values.next().is_some() {
            return Coding::Unsupported;
        }
        let value = value.to_str().unwrap_or_default().trim();
        let is = |name: &str| value.eq_ignore_ascii_case(name);
        if value.is_empty() || is("identity") {
            Coding::Identity
        } else if is("gzip") || is("x-gzip") {
            Coding::Gzip
        } else if is("deflate") {
            Coding::Deflate
        } else if is("br") {
            Coding::Brotli
        } else {
            Coding::Unsupported
        }
    }
}

type BrotliState = brotli_decompressor::BrotliState<PeekAlloc, StandardAlloc, StandardAlloc>;

/// The largest block of bytes the brotli decoder may reserve: the peek's bound plus the ring
/// buffer's slack (566 bytes). Its ring buffer is as large as the stream's window (up to 16 MiB
/// by RFC 7932) unless the stream is one small final meta-block; a larger window is refused,
/// which fails the side decoding (status unknown, the response passes untouched), instead of
/// reserving megabytes to read 64 KiB.
const BROTLI_BLOCK_LIMIT: usize = PEEK_LIMIT + 1024;

/// The brotli decoder's byte allocator: the standard one, refusing (with an empty block, which
/// the decoder reports as an allocation failure) any block over [`BROTLI_BLOCK_LIMIT`].
#[derive(Debug, Default)]
struct PeekAlloc {
    /// The largest block asked for, and the largest handed out (for the tests).
    #[cfg(test)]
    asked: usize,
    #[cfg(test)]
    largest: usize,
}

impl Allocator<u8> for PeekAlloc {
    type AllocatedMemory = <StandardAlloc as Allocator<u8>>::AllocatedMemory;

    fn alloc_cell(&mut self, len: usize) -> Self::AllocatedMemory {
        #[cfg(test)]
        {
            self.asked = self.asked.max(len);
        }
        if len > BROTLI_BLOCK_LIMIT {
            return StandardAlloc::default().alloc_cell(0);
        }
        #[cfg(test)]
        {
            self.largest = self.largest.max(len);
        }
        StandardAlloc::default().alloc_cell(len)
    }

    fn free_cell(&mut self, data: Self::AllocatedMemory) {
        StandardAlloc::default().free_cell(data);
    }
}

/// Decodes the start of a compressed body, into at most [`PEEK_LIMIT`] bytes.
pub(super) struct Decoding {
    stage: Stage,
    sink: Sink,
}

enum Stage {
    /// Reading the gzip member header (RFC 1952) before the deflate data.
    GzipHeader(GzipHeader),
    /// Waiting for two bytes to tell a zlib stream from raw deflate.
    DeflateStart,
    Inflate(flate2::Decompress),
    Brotli(Box<BrotliState>),
}

/// Where decoded bytes go.
struct Sink {
    /// How many bytes of the raw prefix the decoder has consumed.
    fed: usize,
    /// The decoded bytes are `out[..decoded]`; `out` grows by doubling up to [`PEEK_LIMIT`].
    out: Vec<u8>,
    decoded: usize,
    /// The compressed stream ended: the decoded text is complete.
    finished: bool,
    /// Not a valid stream in its coding.
    failed: bool,
}

impl std::fmt::Debug for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.stage {
            Stage::GzipHeader(_) => "gzip header",
            Stage::DeflateStart => "deflate start",
            Stage::Inflate(_) => "inflate",
            Stage::Brotli(_) => "brotli",
        };
        f.debug_struct("Decoding")
            .field("stage", &stage)
            .field("fed", &self.sink.fed)
            .field("decoded", &self.sink.decoded)
            .field("finished", &self.sink.finished)
            .field("failed", &self.sink.failed)
            .finish()
    }
}

impl Decoding {
    pub(super) fn new(coding: Coding) -> Self {
        let stage = match coding {
            Coding::Gzip => Stage::GzipHeader(GzipHeader::default()),
            // RFC 7932 windows only (up to 16 MiB), not the large-window extension; and no
            // block over the peek's bound (`PeekAlloc`).
            Coding::Brotli => Stage::Brotli(Box::new(BrotliState::new_strict(
                PeekAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ))),
            _ => Stage::DeflateStart,
        };
        Decoding {
            stage,
            sink: Sink {
                fed: 0,
                out: Vec::new(),
                decoded: 0,
                finished: false,
                failed: false,
            },
        }
    }

    pub(super) fn text(&self) -> &[u8] {
        &self.sink.out[..self.sink.decoded]
    }

    pub(super) fn decoded(&self) -> usize {
        self.sink.decoded
    }

    /// How much output room the decoder holds (for the tests: never more than the limit).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.sink.out.capacity()
    }

    /// More text than may be held, or none at all: reading on cannot help.
    pub(super) fn stopped(&self) -> bool {
        let sink = &self.sink;
        sink.failed || (sink.decoded >= PEEK_LIMIT && !sink.finished)
    }

    /// Decodes what it can of `raw`, the whole raw prefix (`raw[..fed]` was consumed before).
    pub(super) fn run(&mut self, raw: &[u8]) {
        let sink = &mut self.sink;
        while !sink.finished && !sink.failed {
            match &mut self.stage {
                Stage::GzipHeader(header) => match header.parse(raw) {
                    Ok(Some(len)) => {
                        sink.fed = len;
                        self.stage = Stage::Inflate(flate2::Decompress::new(false));
                    }
                    Ok(None) => return,
                    Err(()) => sink.failed = true,
                },
                Stage::DeflateStart => {
                    let [cmf, flg, ..] = *raw else { return };
                    // RFC 1950: method 8, window up to 32 KiB, header check; else raw deflate.
                    let zlib = cmf & 0x0f == 8
                        && cmf >> 4 <= 7
                        && ((u16::from(cmf) << 8) | u16::from(flg)) % 31 == 0;
                    self.stage = Stage::Inflate(flate2::Decompress::new(zlib));
                }
                Stage::Inflate(inflate) => return sink.inflate(inflate, raw),
                Stage::Brotli(state) => return sink.brotli(state, raw),
            }
        }
    }
}

impl Sink {
    /// Room for more output: `false` once [`PEEK_LIMIT`] bytes are decoded.
    fn grow(&mut self) -> bool {
        if self.decoded < self.out.len() {
            return true;
        }
        if self.out.len() >= PEEK_LIMIT {
            return false;
        }
        let len = (2 * self.out.len()).clamp(256, PEEK_LIMIT);
        self.out.resize(len, 0);
        true
    }

    fn inflate(&mut self, inflate: &mut flate2::Decompress, raw: &[u8]) {
        while self.grow() {
            let (read, written) = (inflate.total_in(), inflate.total_out());
            let result = inflate.decompress(
                &raw[self.fed..],
                &mut self.out[self.decoded..],
                flate2::FlushDecompress::None,
            );
            // Both at most PEEK_LIMIT: the casts cannot truncate.
            let consumed = (inflate.total_in() - read) as usize;
            let produced = (inflate.total_out() - written) as usize;
            self.fed += consumed;
            self.decoded += produced;
            match result {
                Ok(flate2::Status::StreamEnd) => self.finished = true,
                Ok(_) if consumed == 0 && produced == 0 => {} // needs more input
                Ok(_) => continue,
                Err(_) => self.failed = true,
            }
            return;
        }
    }

    fn brotli(&mut self, state: &mut BrotliState, raw: &[u8]) {
        use brotli_decompressor::{BrotliDecompressStream, BrotliResult};
        while self.grow() {
            let mut available_in = raw.len() - self.fed;
            let mut input_offset = self.fed;
            let mut available_out = self.out.len() - self.decoded;
            let mut output_offset = self.decoded;
            let mut total_out = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                raw,
                &mut available_out,
                &mut output_offset,
                &mut self.out,
                &mut total_out,
                state,
            );
            self.fed = input_offset;
            self.decoded = output_offset;
            match result {
                BrotliResult::ResultSuccess => self.finished = true,
                BrotliResult::NeedsMoreInput => {}
                BrotliResult::NeedsMoreOutput => continue,
                BrotliResult::ResultFailure => self.failed = true,
            }
            return;
        }
    }
}

/// Reads a gzip member header (RFC 1952) as its bytes arrive, each byte looked at once.
#[derive(Default)]
struct GzipHeader {
    flags: u8,
    /// Where the next field starts (or how far a zero-terminated one was searched).
    at: usize,
    /// 0 fixed part, 1 extra field, 2 file name, 3 comment, 4 header CRC.
    part: u8,
}

impl GzipHeader {
    /// The header's length once `raw` holds all of it; `Err` when `raw` is not gzip.
    fn parse(&mut self, raw: &[u8]) -> Result<Option<usize>, ()> {
        const FHCRC: u8 = 0x02;
        const FEXTRA: u8 = 0x04;
        const FNAME: u8 = 0x08;
        const FCOMMENT: u8 = 0x10;
        loop {
            match self.part {
                0 => {
                    // ID1 ID2 CM (deflate) FLG MTIME(4) XFL OS.
                    const MAGIC: [u8; 3] = [0x1f, 0x8b, 8];
                    let n = raw.len().min(MAGIC.len());
                    if raw[..n] != MAGIC[..n] || raw.get(3).is_some_and(|f| f & 0xe0 != 0) {
                        return Err(());
                    }
                    if raw.len() < 10 {
                        return Ok(None);
                    }
                    self.flags = raw[3];
                    self.at = 10;
                }
                1 => {
                    if self.flags & FEXTRA != 0 {
                        let Some(&[lo, hi]) = raw.get(self.at..self.at + 2) else {
                            return Ok(None);
                        };
                        self.at += 2 + usize::from(u16::from_le_bytes([lo, hi]));
                    }
                }
                2 | 3 => {
                    let flag = if self.part == 2 { FNAME } else { FCOMMENT };
                    if self.flags & flag != 0 {
                        let Some(rest) = raw.get(self.at..) else {
                            return Ok(None);
                        };
                        match rest.iter().position(|&b| b == 0) {
                            Some(end) => self.at += end + 1,
                            None => {
                                self.at = raw.len();
                                return Ok(None);
                            }
                        }
                    }
                }
                _ => {
                    if self.flags & FHCRC != 0 {
                        self.flags &= !FHCRC;
                        self.at += 2;
                    }
                    return Ok((raw.len() >= self.at).then_some(self.at));
                }
            }
            self.part += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brotli(text: &[u8], window_bits: u32) -> Vec<u8> {
        use std::io::Write;
        let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, window_bits);
        w.write_all(text).unwrap();
        w.into_inner()
    }

    /// The largest block the brotli decoder asked for, and the largest it got.
    fn blocks(decoding: &Decoding) -> (usize, usize) {
        match &decoding.stage {
            Stage::Brotli(state) => (state.alloc_u8.asked, state.alloc_u8.largest),
            _ => (0, 0),
        }
    }

    /// A body of several meta-blocks with a 16 MiB window would have the decoder reserve the
    /// whole window; it reserves at most the peek's bound and gives up instead.
    #[test]
    fn the_brotli_decoder_reserves_no_more_than_the_peek_s_bound() {
        // Text that does not compress much, so the stream has several meta-blocks.
        let mut text = br#"{"status":0,"body":{"measuregrps":["#.to_vec();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while text.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.extend_from_slice(format!("{x},").as_bytes());
        }
        let raw = brotli(&text, 24);
        let mut decoding = Decoding::new(Coding::Brotli);
        decoding.run(&raw);
        assert!(decoding.stopped(), "{decoding:?}");
        let (asked, got) = blocks(&decoding);
        assert!(asked > 1 << 20, "the stream asks for its window: {asked}");
        assert!(got <= BROTLI_BLOCK_LIMIT, "{got}");
        // A small body, whatever its window, still decodes within the bound.
        let small = br#"{"status":401,"body":{},"error":"invalid_token"}"#;
        let mut decoding = Decoding::new(Coding::Brotli);
        decoding.run(&brotli(small, 24));
        assert_eq!(decoding.text(), small);
        assert!(blocks(&decoding).1 <= BROTLI_BLOCK_LIMIT);
    }
}
