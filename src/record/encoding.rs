//! Bodies in a `Content-Encoding`: decoded by the writer before redaction, so
//! that a compressed body never hides a secret from it. Bounded: at most the
//! capture limit comes out, whatever went in (a decompression bomb costs no
//! more than a plain body of that size).

use std::io::Read as _;

use bytes::Bytes;
use http::HeaderMap;

/// A captured body after its `Content-Encoding` was looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EncodedBody {
    /// Not encoded (no `Content-Encoding`, or `identity`): as it came.
    Plain(Bytes),
    /// Decoded from this encoding; `cut` when the output stopped at the limit
    /// or the input was cut.
    Decoded {
        bytes: Bytes,
        encoding: String,
        cut: bool,
    },
    /// In an encoding the writer cannot decode (`br`, `zstd`, a chain): not
    /// kept, since the redactor cannot see into it.
    Withheld { encoding: String },
}

/// Decodes `body` by the `Content-Encoding` of `headers`, keeping at most
/// `limit` bytes.
pub(crate) fn decode(body: Bytes, headers: &HeaderMap, limit: usize) -> EncodedBody {
    let Some(value) = headers.get(http::header::CONTENT_ENCODING) else {
        return EncodedBody::Plain(body);
    };
    let encoding = String::from_utf8_lossy(value.as_bytes())
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() || encoding.is_empty() || encoding == "identity" {
        return EncodedBody::Plain(body);
    }
    let out = match encoding.as_str() {
        "gzip" | "x-gzip" => read_some(flate2::read::GzDecoder::new(&body[..]), limit),
        // HTTP's `deflate` is zlib-wrapped; some servers send raw deflate.
        "deflate" => match read_some(flate2::read::ZlibDecoder::new(&body[..]), limit) {
            (out, _) if out.is_empty() => {
                read_some(flate2::read::DeflateDecoder::new(&body[..]), limit)
            }
            done => done,
        },
        _ => return EncodedBody::Withheld { encoding },
    };
    match out {
        (bytes, _) if bytes.is_empty() => EncodedBody::Withheld { encoding },
        (bytes, cut) => EncodedBody::Decoded {
            bytes: Bytes::from(bytes),
            encoding,
            cut,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
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
            ("gzip, br", b"x".to_vec()),
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
}
