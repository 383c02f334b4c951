//! Body redaction: form, multipart and JSON bodies field by field, and the
//! text net over anything else.

use bytes::Bytes;
use http::HeaderMap;

use super::json::mask_json;
use super::{form, Redaction, REDACTED};
use crate::hooks::Protocol;

impl Redaction {
    /// Redacts a captured body given the headers that describe it and the
    /// exchange's protocol.
    ///
    /// Form and multipart bodies (by content type) and JSON bodies (any body
    /// whose first non-blank byte is `{` or `[`) are masked field by field, on
    /// the raw bytes. In anything else, and in multipart parts and JSON that
    /// does not parse (cut, or not JSON at all), the value after every secret
    /// name that stands as a key (`name=`, `name:`, `<name>`) is masked too:
    /// when in doubt, mask. gRPC message payloads are out of scope.
    pub(crate) fn body(&self, body: Bytes, headers: &HeaderMap, protocol: Protocol) -> Bytes {
        if body.is_empty() || self.fields.is_empty() || protocol.is_grpc() {
            return body;
        }
        // Borrowed, compared ASCII case-insensitively: no allocation per body.
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        let is_multipart = mime
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"));
        let is_form = mime.eq_ignore_ascii_case("application/x-www-form-urlencoded");
        // Parts first, on the bytes as they came: the other nets' masking
        // could hide the parts' framing.
        // A part is masked by its secret name: a body without any field name
        // (nor an escape that could spell one) has no part to mask.
        let may_hold = self.may_hold_field_key(&body);
        let (parts, has_parts) = if is_multipart || may_hold {
            self.mask_parts(&body, content_type, is_multipart)
        } else {
            (None, false)
        };
        let current = parts.as_deref().unwrap_or(&body);
        let masked = if !(if parts.is_some() {
            self.may_hold_field_key(current)
        } else {
            may_hold
        }) {
            // No name of a rule anywhere (nor an escape that could spell one):
            // a form's names may be percent-encoded, so it is always read.
            if is_form {
                self.mask_form(current)
            } else {
                None
            }
        } else if crate::record::looks_like_json_container(current) {
            // JSON first, whatever the label says (JSON sent as a form is common).
            let fields = mask_json(
                current,
                |key| self.is_field(key),
                |s| self.mask_json_string(s),
            );
            let parses = serde_json::from_slice::<serde::de::IgnoredAny>(
                fields.as_deref().unwrap_or(current),
            )
            .is_ok();
            if parses {
                fields
            } else {
                // Cut, or not JSON after all: the text nets first, on the
                // bytes as they came (the JSON scan may mask a string that a
                // text key stands in), then the JSON scan, then the text nets
                // over what that left.
                let text = self.mask_not_json(current, false, has_parts);
                let current = text.as_deref().unwrap_or(current);
                let fields = mask_json(
                    current,
                    |key| self.is_field(key),
                    |s| self.mask_json_string(s),
                );
                let current = fields.as_deref().unwrap_or(current);
                self.mask_not_json(current, false, has_parts)
                    .or(fields)
                    .or(text)
            }
        } else {
            self.mask_not_json(current, is_form, has_parts)
        };
        let masked = masked.or(parts);
        masked.map_or(body, Bytes::from)
    }

    /// Multipart parts whose name is secret, masked: by the content type's
    /// boundary if the body uses it, and by the boundaries the body shows
    /// (the header's may be missing or wrong, or the body labelled as
    /// something else). Also whether the body has parts at all.
    fn mask_parts(
        &self,
        body: &[u8],
        content_type: &str,
        is_multipart: bool,
    ) -> (Option<Vec<u8>>, bool) {
        let mut boundaries: Vec<&str> = is_multipart
            .then(|| form::boundary(content_type))
            .flatten()
            .filter(|b| memchr::memmem::find(body, b.as_bytes()).is_some())
            .into_iter()
            .collect();
        for b in form::boundaries_in_body(body) {
            if !boundaries.contains(&b) {
                boundaries.push(b);
            }
        }
        let mut out: Option<Vec<u8>> = None;
        for boundary in &boundaries {
            let current = out.as_deref().unwrap_or(body);
            if let Some(parts) = form::mask_multipart(current, boundary, |k| self.is_form_field(k))
            {
                out = Some(parts);
            }
        }
        (out, !boundaries.is_empty())
    }

    /// A body that is not JSON: a form's pairs (by content type), and the
    /// text net over the rest, except over a form without parts (its names
    /// and values were netted one by one).
    fn mask_not_json(&self, body: &[u8], is_form: bool, has_parts: bool) -> Option<Vec<u8>> {
        let mut out = if is_form { self.mask_form(body) } else { None };
        if !is_form || has_parts {
            let current = out.as_deref().unwrap_or(body);
            if let Some(text) = self.mask_text_decoding(current, REDACTED.as_bytes()) {
                out = Some(text);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn masks_query_and_form_bodies() {
        let r = Redaction::default();
        assert_eq!(r.query("a=1&b=2"), "a=1&b=2");
        assert_eq!(
            r.query("access_token=abc&x=1&ACCESS_TOKEN=d"),
            "access_token=%5BREDACTED%5D&x=1&ACCESS_TOKEN=%5BREDACTED%5D"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let out = r.body(
            Bytes::from_static(b"user=a&password=p%40ss"),
            &h,
            Protocol::Http,
        );
        assert_eq!(&out[..], b"user=a&password=%5BREDACTED%5D");
    }
}
