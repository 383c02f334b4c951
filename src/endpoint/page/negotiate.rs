//! Content negotiation: whether a request for `M` wants the page (a
//! browser's `Accept`) and whether its client takes gzip.

use http::header::{self, HeaderMap};

/// Whether `Accept` prefers `text/html` over `application/json`.
///
/// `text/html` must be named (a wildcard such as `*/*` or `text/*` never
/// asks for the page), with a quality above `application/json`'s, which is
/// that of its most specific match (`application/json`, `application/*`,
/// `*/*`; 0 when none matches). No `Accept`, `*/*` alone, a tie or anything
/// unparsable: JSON, as API clients have always had.
pub(super) fn prefers_html(headers: &HeaderMap) -> bool {
    let mut html: Option<f32> = None;
    // (specificity, quality) of the best match for application/json.
    let mut json: (u8, f32) = (0, 0.0);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for (range, q) in media_ranges(value) {
            let specificity = match range.as_str() {
                "text/html" => {
                    html = Some(html.map_or(q, |h: f32| h.max(q)));
                    continue;
                }
                "application/json" => 3,
                "application/*" => 2,
                "*/*" => 1,
                _ => continue,
            };
            if specificity > json.0 || (specificity == json.0 && q > json.1) {
                json = (specificity, q);
            }
        }
    }
    html.is_some_and(|html| html > 0.0 && html > json.1)
}

/// Whether `Accept-Encoding` takes gzip (`gzip` or `*` with a quality above 0,
/// unless `gzip;q=0` refuses it).
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for (coding, q) in media_ranges(value) {
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// The items of a comma-separated header with their quality (`q`, 1 when
/// absent or malformed), lowercased, parameters other than `q` dropped.
fn media_ranges(value: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    value.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let range = parts.next()?.trim().to_ascii_lowercase();
        if range.is_empty() {
            return None;
        }
        let mut q = 1.0;
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    q = value
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))?;
                }
            }
        }
        Some((range, q))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(name.clone(), v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn browsers_get_the_page_api_clients_json() {
        for (value, html) in [
            // Chromium, Firefox, Safari navigating.
            ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7", true),
            ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", true),
            ("text/html", true),
            ("application/json;q=0.5, text/html", true),
            // API clients and everything else stays JSON.
            ("*/*", false),
            ("application/json", false),
            ("application/json, text/html", false),
            ("text/html;q=0.5, application/json", false),
            ("text/*", false),
            ("text/html;q=0", false),
            ("text/html;q=0.8, */*;q=0.8", false),
            ("text/html;q=oops", false),
            ("", false),
        ] {
            assert_eq!(prefers_html(&accept(header::ACCEPT, &[value])), html, "{value}");
        }
        assert!(!prefers_html(&HeaderMap::new()));
        assert!(prefers_html(&accept(
            header::ACCEPT,
            &["*/*;q=0.1", "text/html"]
        )));
    }

    #[test]
    fn gzip_when_accepted() {
        for (value, gzip) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip;q=0, *", false),
            ("br", false),
        ] {
            assert_eq!(
                accepts_gzip(&accept(header::ACCEPT_ENCODING, &[value])),
                gzip,
                "{value}"
            );
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
