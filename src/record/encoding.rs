//! Bodies in a `Content-Encoding`: decoded by the writer before redaction, so
//! that a compressed body never hides a secret from it. Bounded: at most the
//! capture limit comes out of each step, whatever went in (a decompression
//! bomb costs no more than a plain body of that size).
//!
//! Decoded: `gzip` (and `x-gzip`), `deflate` (zlib-wrapped, or raw as some
//! servers send it), `br` and `zstd`, and chains of them (`gzip, br` is
//! decoded `br` first), up to [`MAX_CODINGS`] steps; `identity` is skipped.
//! A transfer coding other than `chunked` (which the server removes) applies
//! after the content codings and is decoded first. Anything else (`compress`,
//! an unknown name, a longer chain, a stream that does not decode) is
//! withheld: the redactor cannot see into it.
//!
//! The decoders are pure Rust: `flate2`'s Rust backend, `brotli-decompressor`
//! (the decoder half of the `brotli` crate, without the encoder) and `ruzstd`.
//! A zstd frame may declare a window of at most 8 MiB (RFC 9659's bound for
//! HTTP); a brotli stream's window is at most 16 MiB by its format. Those
//! windows are allocated while a body is decoded, then freed.

use std::io::Read as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

/// The longest chain of codings decoded; a longer one is withheld.
pub(crate) const MAX_CODINGS: usize = 4;

/// The largest window a zstd frame may declare (RFC 9659, section 3: a
/// decoder of `Content-Encoding: zstd` need not accept more than 8 MiB).
const ZSTD_MAX_WINDOW: u64 = 8 << 20;

/// A captured body after its `Content-Encoding` was looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EncodedBody {
    /// Not encoded (no `Content-Encoding`, or `identity`): as it came.
    Plain(Bytes),
    /// Decoded from this encoding (the codings as sent, lower case, joined
    /// by `", "`); `cut` when the output stopped at the limit or the input
    /// was cut.
    Decoded {
        bytes: Bytes,
        encoding: String,
        cut: bool,
    },
    /// In an encoding the writer cannot decode (`compress`, an unknown name,
    /// a chain longer than [`MAX_CODINGS`], a stream that does not decode):
    /// not kept, since the redactor cannot see into it. `encoding` says
    /// which.
    Withheld { encoding: String },
}

/// One content coding the writer decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "gzip" | "x-gzip" => Self::Gzip,
            "deflate" => Self::Deflate,
            "br" => Self::Brotli,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    /// Decodes `input`, keeping at most `limit` bytes; `true` when there was
    /// more, or the stream broke off.
    fn decode(self, input: &[u8], limit: usize) -> (Vec<u8>, bool) {
        match self {
            // Several gzip members in a row are one body (RFC 1952).
            Self::Gzip => read_some(flate2::read::MultiGzDecoder::new(input), limit),
            // HTTP's `deflate` is zlib-wrapped; some servers send raw deflate.
            Self::Deflate => match read_some(flate2::read::ZlibDecoder::new(input), limit) {
                (out, _) if out.is_empty() => {
                    read_some(flate2::read::DeflateDecoder::new(input), limit)
                }
                done => done,
            },
            Self::Brotli => read_some(brotli_decompressor::Decompressor::new(input, 4096), limit),
            Self::Zstd => zstd(input, limit),
        }
    }
}

/// The codings of a body: the values of `Content-Encoding`, then those of
/// `Transfer-Encoding` but `chunked`, in the order they were applied;
/// `identity` and blanks left out. Lower case, trimmed.
fn codings(headers: &HeaderMap) -> Vec<String> {
    let lists = |name| {
        headers
            .get_all(name)
            .into_iter()
            .flat_map(|v: &HeaderValue| v.as_bytes().split(|&b| b == b','))
    };
    lists(http::header::CONTENT_ENCODING)
        .chain(lists(http::header::TRANSFER_ENCODING).filter(|c| {
            !String::from_utf8_lossy(c)
                .trim()
                .eq_ignore_ascii_case("chunked")
        }))
        .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Whether `headers` say the body is in a coding (other than `identity` and
/// `chunked`): cheap, for the common case of a body in none.
fn may_be_encoded(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::CONTENT_ENCODING)
        || headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

/// Decodes `body` by the codings `headers` name (see the [module
/// docs](self)), keeping at most `limit` bytes of each step.
pub(crate) fn decode(body: Bytes, headers: &HeaderMap, limit: usize) -> EncodedBody {
    if body.is_empty() || !may_be_encoded(headers) {
        return EncodedBody::Plain(body);
    }
    let names = codings(headers);
    if names.is_empty() {
        return EncodedBody::Plain(body);
    }
    let encoding = names.join(", ");
    let steps: Option<Vec<Coding>> = names.iter().map(|n| Coding::of(n)).collect();
    let Some(steps) = steps.filter(|s| s.len() <= MAX_CODINGS) else {
        return EncodedBody::Withheld { encoding };
    };
    // The last coding applied is undone first.
    let mut current: Option<Vec<u8>> = None;
    let mut cut = false;
    for step in steps.iter().rev() {
        let input = current.as_deref().unwrap_or(&body);
        let (out, step_cut) = step.decode(input, limit);
        if out.is_empty() {
            return EncodedBody::Withheld { encoding };
        }
        cut |= step_cut;
        current = Some(out);
    }
    EncodedBody::Decoded {
        bytes: Bytes::from(current.unwrap_or_default()),
        encoding,
        cut,
    }
}

/// Reads up to `limit` bytes; `true` when there was more, or the stream broke
/// off (a body cut by the capture limit ends mid-stream).
fn read_some(reader: impl std::io::Read, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut reader = reader.take(limit as u64 + 1);
    let complete = reader.read_to_end(&mut out).is_ok();
    let cut = out.len() > limit || !complete;
    out.truncate(limit);
    (out, cut)
}

/// The frames of a zstd body, one after the other (RFC 8878 allows several),
/// up to `limit` bytes.
fn zstd(mut input: &[u8], limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while !input.is_empty() {
        let mut frame = ruzstd::decoding::FrameDecoder::new();
        frame.set_max_window_size(ZSTD_MAX_WINDOW);
        let Ok(mut decoder) =
            ruzstd::decoding::StreamingDecoder::new_with_decoder(&mut input, frame)
        else {
            // Not a frame (or one with too large a window): what came before
            // it is kept, marked cut.
            return (out, true);
        };
        let room = (limit + 1 - out.len()) as u64;
        let complete = (&mut decoder).take(room).read_to_end(&mut out).is_ok();
        if out.len() > limit || !complete {
            out.truncate(limit);
            return (out, true);
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    fn brotli_of(data: &[u8]) -> Bytes {
        let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        e.write_all(data).unwrap();
        Bytes::from(e.into_inner())
    }

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-encoding", encoding.parse().unwrap());
        h
    }

    #[test]
    fn gzip_and_deflate_are_decoded() {
        let d = decode(gzip(b"{\"password\":\"x\"}"), &headers("gzip"), 1024);
        assert_eq!(
            d,
            EncodedBody::Decoded {
                bytes: Bytes::from_static(b"{\"password\":\"x\"}"),
                encoding: "gzip".into(),
                cut: false
            }
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"a=1").unwrap();
        let d = decode(Bytes::from(z.finish().unwrap()), &headers("Deflate"), 1024);
        assert!(
            matches!(d, EncodedBody::Decoded { ref bytes, .. } if &bytes[..] == b"a=1"),
            "{d:?}"
        );
        assert_eq!(
            decode(Bytes::from_static(b"x"), &HeaderMap::new(), 9),
            EncodedBody::Plain(Bytes::from_static(b"x"))
        );
        assert_eq!(
            decode(Bytes::from_static(b"x"), &headers("identity"), 9),
            EncodedBody::Plain(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_a_cut_stream_keeps_what_came() {
        let bomb = gzip(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000);
        match decode(bomb.clone(), &headers("gzip"), 4096) {
            EncodedBody::Decoded { bytes, cut, .. } => assert!(bytes.len() == 4096 && cut),
            other => panic!("{other:?}"),
        }
        let text: Vec<u8> = (0..4000u32)
            .flat_map(|i| format!("k{}=v{}&", i * 7919 % 10007, i * 104_729 % 10009).into_bytes())
            .collect();
        let whole = gzip(&text);
        let cut = whole.slice(..whole.len() / 2);
        match decode(cut, &headers("gzip"), 1 << 20) {
            EncodedBody::Decoded { bytes, cut, .. } => {
                assert!(cut && !bytes.is_empty() && text.starts_with(&bytes));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_cannot_be_decoded_is_withheld() {
        for (encoding, body) in [
            ("br", b"\x1b\x03".to_vec()),
            ("gzip", b"not gzip".to_vec()),
            ("zstd", b"not zstd".to_vec()),
            ("compress", b"x".to_vec()),
            ("gzip, br", b"x".to_vec()),
            ("gzip, gzip, gzip, gzip, gzip", gzip(b"x").to_vec()),
        ] {
            assert!(
                matches!(
                    decode(Bytes::from(body), &headers(encoding), 1024),
                    EncodedBody::Withheld { .. }
                ),
                "{encoding}"
            );
        }
    }

    #[test]
    fn chains_are_undone_last_coding_first() {
        let inner = gzip(b"password=x");
        let twice = gzip(&inner);
        let d = decode(twice, &headers("gzip, x-gzip"), 1024);
        assert_eq!(
            d,
            EncodedBody::Decoded {
                bytes: Bytes::from_static(b"password=x"),
                encoding: "gzip, x-gzip".into(),
                cut: false
            }
        );
        // The same chain as two header lines, with `identity` between.
        let mut h = headers("gzip");
        h.append("content-encoding", HeaderValue::from_static("identity"));
        h.append("content-encoding", HeaderValue::from_static("GZIP"));
        assert!(matches!(
            decode(gzip(&gzip(b"a")), &h, 99),
            EncodedBody::Decoded { ref bytes, .. } if &bytes[..] == b"a"
        ));
        // `identity` first does not hide the gzip after it.
        let mut h = headers("identity");
        h.append("content-encoding", HeaderValue::from_static("gzip"));
        assert!(matches!(
            decode(gzip(b"a"), &h, 9),
            EncodedBody::Decoded { ref bytes, .. } if &bytes[..] == b"a"
        ));
        // A transfer coding is undone before the content coding.
        let mut h = headers("gzip");
        h.insert(
            "transfer-encoding",
            HeaderValue::from_static("deflate, chunked"),
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&gzip(b"t=1")).unwrap();
        assert_eq!(
            decode(Bytes::from(z.finish().unwrap()), &h, 99),
            EncodedBody::Decoded {
                bytes: Bytes::from_static(b"t=1"),
                encoding: "gzip, deflate".into(),
                cut: false
            }
        );
        let mut chunked = HeaderMap::new();
        chunked.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert_eq!(
            decode(Bytes::from_static(b"x"), &chunked, 9),
            EncodedBody::Plain(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn brotli_and_zstd_are_decoded_and_bounded() {
        let text = b"{\"access_token\":\"s3cr3t\",\"token_type\":\"bearer\"}";
        let d = decode(brotli_of(text), &headers("br"), 1024);
        assert_eq!(
            d,
            EncodedBody::Decoded {
                bytes: Bytes::copy_from_slice(text),
                encoding: "br".into(),
                cut: false
            }
        );
        let z = Bytes::from(ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        assert!(matches!(
            decode(z.clone(), &headers("zstd"), 1024),
            EncodedBody::Decoded { ref bytes, cut: false, .. } if &bytes[..] == text
        ));
        // Two frames are one body.
        let two = Bytes::from([&z[..], &z[..]].concat());
        assert!(matches!(
            decode(two, &headers("zstd"), 1024),
            EncodedBody::Decoded { ref bytes, cut: false, .. } if bytes.len() == 2 * text.len()
        ));
        // Bombs stop at the limit.
        let zeros = vec![0u8; 4_000_000];
        let zbomb = Bytes::from(ruzstd::encoding::compress_to_vec(
            &zeros[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        assert!(zbomb.len() < 100_000, "{}", zbomb.len());
        assert!(matches!(
            decode(zbomb, &headers("zstd"), 4096),
            EncodedBody::Decoded { ref bytes, cut: true, .. } if bytes.len() == 4096
        ));
        let bbomb = brotli_of(&zeros);
        assert!(bbomb.len() < 1000, "{}", bbomb.len());
        assert!(matches!(
            decode(bbomb, &headers("br"), 4096),
            EncodedBody::Decoded { ref bytes, cut: true, .. } if bytes.len() == 4096
        ));
        // `gzip, br`: brotli first, then gzip.
        let chain = brotli_of(&gzip(b"password=x"));
        assert!(matches!(
            decode(chain, &headers("gzip, br"), 1024),
            EncodedBody::Decoded { ref bytes, .. } if &bytes[..] == b"password=x"
        ));
    }
}
