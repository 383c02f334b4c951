//! The page's files, embedded in the crate: each served with an `ETag` (a
//! hash of its bytes, computed once), answered `304` when the client has it,
//! and gzipped (once) for clients that take gzip.

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest as _, Sha256};

use super::headers;
use super::negotiate::accepts_gzip;
use crate::endpoint::UsageBody;

/// The page itself; `{{base}}` is replaced per request (see [`super::html`]).
pub(super) const HTML: &str = include_str!("page.html");

/// An embedded file served below the mount point.
pub(super) struct Asset {
    /// Its name below `M` (`page.js`).
    pub(super) name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    encoded: OnceLock<Encoded>,
}

/// What is computed once per asset: its tags and its gzipped bytes.
struct Encoded {
    etag: HeaderValue,
    gzip_etag: HeaderValue,
    gzip: Bytes,
}

/// Every asset the page loads.
pub(super) static ASSETS: [Asset; 2] = [
    Asset::new(
        "page.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page.js"),
    ),
    Asset::new(
        "page.css",
        "text/css; charset=utf-8",
        include_bytes!("page.css"),
    ),
];

/// How long a browser may use an asset before asking again (it then gets a
/// `304` when nothing changed): short, since asset paths carry no version.
const CACHE_CONTROL: &str = "public, max-age=300, must-revalidate";

/// The asset named `name`, if there is one.
pub(super) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        Self {
            name,
            content_type,
            bytes,
            encoded: OnceLock::new(),
        }
    }

    fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(|| {
            let hash = Sha256::digest(self.bytes);
            let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
            let tag = |suffix: &str| {
                HeaderValue::from_str(&format!("\"{hex}{suffix}\""))
                    .expect("hex digits are a valid header value")
            };
            Encoded {
                etag: tag(""),
                gzip_etag: tag("-gz"),
                gzip: Bytes::from(gzip(self.bytes)),
            }
        })
    }

    /// The answer to a `GET` of this asset with these request headers.
    pub(super) fn response(&self, request: &HeaderMap) -> Response<UsageBody> {
        let encoded = self.encoded();
        let gzipped = accepts_gzip(request);
        let etag = if gzipped {
            &encoded.gzip_etag
        } else {
            &encoded.etag
        };
        let fresh = if_none_match(request, &[&encoded.etag, &encoded.gzip_etag]);
        let body = match (fresh, gzipped) {
            (true, _) => Bytes::new(),
            (false, true) => encoded.gzip.clone(),
            (false, false) => Bytes::from_static(self.bytes),
        };
        let mut res = Response::new(UsageBody::new(body));
        let headers = res.headers_mut();
        headers::secure(headers);
        headers.insert(header::ETAG, etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        if fresh {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            return res;
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if gzipped {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        res
    }
}

/// Whether `If-None-Match` names one of `tags` (weak comparison, as RFC 9110
/// asks for `If-None-Match`), or is `*`.
fn if_none_match(request: &HeaderMap, tags: &[&HeaderValue]) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value.split(',').map(str::trim).any(|given| {
                given == "*" || {
                    let given = given.strip_prefix("W/").unwrap_or(given);
                    tags.iter().any(|tag| tag.as_bytes() == given.as_bytes())
                }
            })
        })
    })
}

/// `bytes` gzipped at the best level (done once per asset, or once per page).
pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::best(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn gzip_round_trips_and_is_smaller() {
        for asset in &ASSETS {
            let packed = &asset.encoded().gzip;
            assert!(packed.len() < asset.bytes.len(), "{}", asset.name);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, asset.bytes, "{}", asset.name);
        }
    }

    #[test]
    fn if_none_match_forms() {
        let tag = HeaderValue::from_static("\"abc\"");
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, value.parse().unwrap());
            if_none_match(&headers, &[&tag])
        };
        assert!(check("\"abc\""));
        assert!(check("W/\"abc\""));
        assert!(check("\"x\", \"abc\""));
        assert!(check("*"));
        assert!(!check("\"abd\""));
        assert!(!check("abc"));
        assert!(!if_none_match(&HeaderMap::new(), &[&tag]));
    }
}
