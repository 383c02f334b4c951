//! Redaction, applied by the writer before a record reaches any sink: headers,
//! query parameters and body fields, by name. What is redacted, and how, is
//! documented for users on the middleware module (`src/middleware/mod.rs`,
//! "Redaction").

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::hooks::Protocol;

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

mod form;
mod json;
mod rules;
mod text;
mod verdicts;
mod words;

pub(crate) use rules::NameRules;
pub(crate) use verdicts::HeaderVerdicts;
pub use words::is_secret_name;

use json::mask_json;

const REDACTED_JSON: &[u8] = b"\"[REDACTED]\"";

/// `[REDACTED]` percent-encoded, for values inside URLs.
const REDACTED_FORM: &[u8] = b"%5BREDACTED%5D";

/// The redaction rules of a layer.
#[derive(Debug, Clone)]
pub(crate) struct Redaction {
    headers: NameRules,
    fields: NameRules,
    header_matcher: rules::Matcher,
    field_matcher: rules::Matcher,
    /// Finds the fields, lower-cased, in one pass: the body prefilter.
    keys: KeySearch,
    /// Every field name and pattern, lower-cased, for the key-value net.
    needles: Vec<String>,
    /// Whether bearer credentials are masked wherever they stand: when the
    /// field rules take `authorization` for a secret name (the defaults do).
    bearer: bool,
}

/// A multi-substring search for the lower-cased field names: Teddy (SIMD,
/// every name in one pass) where the CPU has it, else one `memmem` pass per name.
#[derive(Debug, Clone)]
enum KeySearch {
    Packed {
        searcher: aho_corasick::packed::Searcher,
        longest: usize,
    },
    Finders(Vec<memchr::memmem::Finder<'static>>),
}

impl KeySearch {
    /// `names` lower-cased, without duplicates.
    fn new(mut names: Vec<String>) -> Self {
        // A name that contains another is found through the shorter one
        // (`access_token` through `token`): fewer names, faster search.
        let all = names.clone();
        names.retain(|n| !all.iter().any(|m| m != n && n.contains(m.as_str())));
        let longest = names.iter().map(String::len).max().unwrap_or(0);
        let packed = aho_corasick::packed::Config::new()
            .builder()
            .extend(names.iter())
            .build();
        match packed {
            Some(searcher) if !names.is_empty() => Self::Packed { searcher, longest },
            _ => Self::Finders(
                names
                    .iter()
                    .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                    .collect(),
            ),
        }
    }

    fn longest(&self) -> usize {
        match self {
            Self::Packed { longest, .. } => *longest,
            Self::Finders(finders) => finders.iter().map(|f| f.needle().len()).max().unwrap_or(0),
        }
    }

    fn is_in(&self, haystack: &[u8]) -> bool {
        match self {
            Self::Packed { searcher, .. } => searcher.find(haystack).is_some(),
            Self::Finders(finders) => finders.iter().any(|f| f.find(haystack).is_some()),
        }
    }
}

impl Default for Redaction {
    fn default() -> Self {
        Self::new(NameRules::defaults(), NameRules::defaults())
    }
}

impl Redaction {
    pub(crate) fn new(headers: NameRules, fields: NameRules) -> Self {
        let field_matcher = fields.matcher();
        let bearer = field_matcher.matches("authorization");
        // The prefilter also finds `bearer` when bearer credentials are
        // masked wherever they stand: one pass finds either.
        let mut searched = fields.needles();
        if bearer && !searched.is_empty() {
            searched.push(BEARER.to_owned());
        }
        Self {
            keys: KeySearch::new(searched),
            needles: fields.needles(),
            bearer,
            header_matcher: headers.matcher(),
            field_matcher,
            headers,
            fields,
        }
    }

    /// No redaction at all (for tests).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Self::new(NameRules::default(), NameRules::default())
    }

    /// These rules with the header rules changed by `change`.
    pub(crate) fn with_headers(&self, change: impl FnOnce(&mut NameRules)) -> Self {
        let mut headers = self.headers.clone();
        change(&mut headers);
        Self::new(headers, self.fields.clone())
    }

    /// These rules with the field rules changed by `change`.
    pub(crate) fn with_fields(&self, change: impl FnOnce(&mut NameRules)) -> Self {
        let mut fields = self.fields.clone();
        change(&mut fields);
        Self::new(self.headers.clone(), fields)
    }

    fn is_field(&self, name: &str) -> bool {
        self.field_matcher.matches(name)
    }

    pub(super) fn is_header(&self, name: &HeaderName) -> bool {
        self.header_matcher.matches(name.as_str())
    }

    /// Redacts headers: every value of a name the rules match, or of a name
    /// with any value marked sensitive, is replaced by one `[REDACTED]`. In the
    /// other values, a URL's query parameters whose names are secret fields
    /// (a token in a `Referer`, say) are masked. Repeated headers are kept as
    /// they came; only the wire form joins them.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn headers(&self, headers: HeaderMap) -> HeaderMap {
        self.headers_with(headers, |name| self.is_header(name))
    }

    /// [`headers`](Self::headers), with the rules' verdicts on names taken
    /// from (and kept in) `verdicts`: what the writer calls.
    pub(crate) fn headers_cached(
        self: &Arc<Self>,
        headers: HeaderMap,
        verdicts: &mut HeaderVerdicts,
    ) -> HeaderMap {
        self.headers_with(headers, |name| verdicts.is_secret(self, name))
    }

    fn headers_with(
        &self,
        mut headers: HeaderMap,
        mut is_secret: impl FnMut(&HeaderName) -> bool,
    ) -> HeaderMap {
        // One pass over the names, masking in place. A name with a redacted
        // value has all its values redacted into one (the iteration gives a
        // name's values one after another): a list only for such names with
        // more than one value.
        let mut repeated: Vec<HeaderName> = Vec::new();
        // The name of the value before, and whether it was redacted.
        let mut before: Option<(&HeaderName, bool)> = None;
        for (name, value) in headers.iter_mut() {
            let repeat = before.filter(|(b, _)| *b == name);
            let redact = repeat.is_some_and(|(_, redacted)| redacted)
                || value.is_sensitive()
                || is_secret(name);
            if redact {
                if repeat.is_some() && repeated.last() != Some(name) {
                    repeated.push(name.clone());
                }
                *value = HeaderValue::from_static(REDACTED);
            }
            before = Some((name, redact));
        }
        if !repeated.is_empty() {
            headers = without_repeats(headers, &repeated);
        }
        // Secret parameters in URLs (query or fragment), URL user-info and
        // other `name=value` text in the values that stay; credentials in
        // the items of a list that carries them.
        for (name, value) in headers.iter_mut() {
            let bytes = value.as_bytes();
            if bytes == REDACTED.as_bytes() {
                continue;
            }
            if CREDENTIAL_LISTS.contains(&name.as_str()) {
                if let Some(masked) = mask_credential_list(bytes, |w| self.is_field(w)) {
                    *value = HeaderValue::from_bytes(&masked)
                        .unwrap_or(HeaderValue::from_static(REDACTED));
                }
                continue;
            }
            if !text::may_hold_key(bytes) {
                continue;
            }
            // A key needs a `=` or `:` after it, user-info an `@`, each maybe
            // percent-encoded; bearer credentials a blank before them.
            if memchr::memchr3(b'=', b':', b'@', bytes).is_none()
                && memchr::memchr(b'%', bytes).is_none()
                && !(self.bearer && text::has_bearer(bytes))
            {
                continue;
            }
            let masked = self.mask_text_decoding(bytes, REDACTED_FORM);
            if let Some(masked) = masked {
                *value =
                    HeaderValue::from_bytes(&masked).unwrap_or(HeaderValue::from_static(REDACTED));
            }
        }
        headers
    }

    /// A fast, conservative test for the scans: whether any field name (or
    /// `bearer`, see `new`) occurs anywhere in the body (ASCII
    /// case-insensitively), or a URL with user-info, or the body has escapes (`\`, `%`), which could spell a
    /// name in another way. A false yes costs only the exact scan.
    fn may_hold_field_key(&self, body: &[u8]) -> bool {
        memchr::memchr2(b'\\', b'%', body).is_some()
            || self.holds_field_name(body)
            || text::has_userinfo(body)
    }

    /// Whether any field name or pattern occurs in `body`, ASCII
    /// case-insensitively: one pass of the multi-substring search.
    fn holds_field_name(&self, body: &[u8]) -> bool {
        // Lower-case into a stack window, overlapping by the longest name less
        // one byte, so no name is split between windows and nothing is allocated.
        const WINDOW: usize = 512;
        let longest = self.keys.longest();
        if longest == 0 {
            return false;
        }
        if longest >= WINDOW / 2 {
            let lower = body.to_ascii_lowercase();
            return self.keys.is_in(&lower);
        }
        let mut buf = [0u8; WINDOW];
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(body.len());
            let window = &mut buf[..end - start];
            window.copy_from_slice(&body[start..end]);
            window.make_ascii_lowercase();
            if self.keys.is_in(window) {
                return true;
            }
            if end == body.len() {
                return false;
            }
            start = end - (longest - 1);
        }
    }

    /// Whether a form field name is secret: the name, or any `[...]` segment
    /// of it (Rails and PHP nest fields as `user[password]`, `password[]`).
    fn is_form_field(&self, name: &str) -> bool {
        self.is_field(name)
            || name
                .split(['[', ']'])
                .any(|segment| !segment.is_empty() && self.is_field(segment))
    }

    /// Redacts a raw query string; unchanged when nothing matches. Other
    /// pairs keep their bytes as they came.
    pub(crate) fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if self.fields.is_empty() {
            return Cow::Borrowed(query);
        }
        match self.mask_form(query.as_bytes()) {
            None => Cow::Borrowed(query),
            // Only ASCII replaced ASCII: still UTF-8.
            Some(masked) => Cow::Owned(String::from_utf8_lossy(&masked).into_owned()),
        }
    }

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
        } else if super::looks_like_json_container(current) {
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

    /// The net over any text: the value after every secret name that stands
    /// as a key (see [`text::mask_key_values`]), the user-info of every URL
    /// (see [`text::mask_userinfo`]) and, when the field rules take
    /// `authorization` for a secret name, every bearer credential (see
    /// [`text::mask_bearer`]), each replaced by `[REDACTED]`.
    /// `None` when nothing was masked.
    fn mask_text(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.mask_text_with(bytes, REDACTED.as_bytes())
    }

    /// [`Self::mask_text`] with another replacement.
    fn mask_text_with(&self, bytes: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
        if self.fields.is_empty() {
            return None;
        }
        // One search finds the field names and `bearer` (see `new`).
        let holds = self.holds_field_name(bytes);
        let keys = if holds {
            text::mask_key_values(
                bytes,
                &self.needles,
                |key| self.field_matcher.matches_in_text(key),
                replacement,
            )
        } else {
            None
        };
        let current = keys.as_deref().unwrap_or(bytes);
        let userinfo = text::mask_userinfo(current, replacement);
        let current = userinfo.as_deref().unwrap_or(current);
        (holds && self.bearer)
            .then(|| text::mask_bearer(current, replacement))
            .flatten()
            .or(userinfo)
            .or(keys)
    }

    /// [`Self::mask_text_with`], then again on the text percent-decoded, up to
    /// [`DECODE_LAYERS`] times while a `%` is left (a URL inside a parameter
    /// of a URL, encoded once per level), each layer decoded from the one
    /// above it as masked: the deepest layer that masked anything is kept, in
    /// its decoded form (or the text as it came, masked, when only that
    /// layer held a secret).
    fn mask_text_decoding(&self, bytes: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
        self.mask_text_layers(bytes, replacement)
            .map(|(masked, _)| masked)
    }

    /// [`Self::mask_text_decoding`], with the layer the text comes from: 0
    /// when it is the text as it came (masked), else how many times it was
    /// percent-decoded.
    fn mask_text_layers(&self, bytes: &[u8], replacement: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut best = self
            .mask_text_with(bytes, replacement)
            .map(|masked| (masked, 0));
        let mut current: Cow<'_, [u8]> = match &best {
            Some((masked, _)) => Cow::Owned(masked.clone()),
            None => Cow::Borrowed(bytes),
        };
        for layer in 1..=DECODE_LAYERS {
            if memchr::memchr(b'%', &current).is_none() {
                break;
            }
            let decoded: Vec<u8> = percent_encoding::percent_decode(&current).collect();
            if decoded.len() == current.len() {
                // Nothing decoded (a lone `%`): no deeper layer.
                break;
            }
            current = match self.mask_text(&decoded) {
                Some(masked) => {
                    best = Some((masked.clone(), layer));
                    Cow::Owned(masked)
                }
                None => Cow::Owned(decoded),
            };
        }
        best
    }

    /// Form-encoded text (a query string, a form body): pairs with a secret
    /// name masked, and the net over every other decoded name and value.
    fn mask_form(&self, input: &[u8]) -> Option<Vec<u8>> {
        let nets = form::Nets {
            decoded: |t: &[u8]| self.mask_text_decoding(t, REDACTED.as_bytes()),
            raw: |t: &[u8]| self.mask_text_with(t, REDACTED_FORM),
        };
        form::mask_urlencoded(input, |k| self.is_form_field(k), &nets)
    }

    /// A JSON string value (`quoted`, with its quotes) that hides a secret as
    /// text (`"password=..."`, `"Authorization: Bearer ..."`, a URL with
    /// user-info, JSON inside a string), masked and quoted again. `None`
    /// when nothing was masked.
    fn mask_json_string(&self, quoted: &[u8]) -> Option<Vec<u8>> {
        let inner = quoted.get(1..)?;
        let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
        let has_escape = memchr::memchr2(b'\\', b'%', inner).is_some();
        if !has_escape && !self.holds_field_name(inner) && !text::has_userinfo(inner) {
            return None;
        }
        match serde_json::from_slice::<String>(quoted) {
            Ok(decoded) => {
                let masked = self.mask_text_decoding(decoded.as_bytes(), REDACTED.as_bytes())?;
                serde_json::to_vec(&String::from_utf8_lossy(&masked)).ok()
            }
            // Cut by the capture limit (or invalid): masked as it came.
            Err(_) => {
                let masked = self.mask_text(inner)?;
                let mut out = Vec::with_capacity(masked.len() + 2);
                out.push(b'"');
                out.extend_from_slice(&masked);
                if quoted.len() > 1 && quoted.ends_with(b"\"") {
                    out.push(b'"');
                }
                Some(out)
            }
        }
    }

    /// The path with secrets it carries masked: the raw value of every route
    /// parameter whose name is a secret field (`/reset/{token}`), and the
    /// net over the path's text (matrix parameters such as `;token=...`, in
    /// raw and percent-decoded form). `None` when nothing was masked.
    pub(crate) fn path(&self, path: &str, route: Option<&str>) -> Option<String> {
        if self.fields.is_empty() {
            return None;
        }
        let params = route
            .filter(|route| super::route_params::param_names(route).any(|n| self.is_field(n)))
            .and_then(|route| {
                super::route_params::mask_params(route, path, REDACTED, |name| self.is_field(name))
            });
        let current = params.as_deref().unwrap_or(path);
        // A key needs a `=` or `:`, user-info an `@`, a bearer credential a
        // blank, each maybe percent-encoded: most paths have none of these.
        if memchr::memchr3(b'=', b':', b'@', current.as_bytes()).is_none()
            && memchr::memchr3(b'%', b' ', b'\t', current.as_bytes()).is_none()
        {
            return params;
        }
        match self.mask_text_layers(current.as_bytes(), REDACTED.as_bytes()) {
            // Only in the path as it came: kept as it came, masked.
            Some((raw, 0)) => Some(String::from_utf8_lossy(&raw).into_owned()),
            // Found in the decoded text (maybe in the raw text too, masked
            // before it was decoded): encoded again, so that the path stays
            // one path.
            Some((decoded, _)) => {
                Some(percent_encoding::percent_encode(&decoded, PATH_ENCODE).collect())
            }
            None => params,
        }
    }
}

/// The authorization scheme whose credentials are masked wherever they stand.
const BEARER: &str = "bearer";

/// How many times the net percent-decodes a text that still holds a `%`.
const DECODE_LAYERS: usize = 3;

/// What a masked path encodes again: controls, blanks, `%`, `?`, `#` and
/// bytes that are not ASCII.
const PATH_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#')
    .add(b'"');

/// Header lists whose items can carry credentials: `Sec-WebSocket-Protocol`,
/// where browsers, which cannot set `Authorization` on a WebSocket, put
/// bearer tokens (Kubernetes's `base64url.bearer.authorization.k8s.io.<token>`,
/// `bearer.<token>`, or a pair `access_token, <token>`).
const CREDENTIAL_LISTS: &[&str] = &["sec-websocket-protocol"];

/// A `Sec-WebSocket-Protocol` list with each item that carries a credential
/// replaced by `[REDACTED]`: an item with a word that names a credential
/// (`bearer`, `basic`, `jwt`, or a secret name by the rules: `token`,
/// `authorization`, ...), an item that follows one that is only such a name
/// (`access_token, <token>`), and an item that looks like a JWT. Other items
/// (`v1.chat`, `graphql-ws`) stay as sent. `None` when nothing was masked.
fn mask_credential_list(value: &[u8], is_secret: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok();
    let Some(text) = text else {
        // Not text: nothing can be told apart, so nothing is kept.
        return Some(REDACTED.as_bytes().to_vec());
    };
    let mut out = String::with_capacity(text.len());
    let mut masked = false;
    let mut after_name = false;
    for (i, item) in text.split(',').enumerate() {
        let trimmed = item.trim();
        let words = trimmed.split(['.', '-', '_', ' ', '/', ':']);
        let names_credential = words.clone().any(|w| {
            ["bearer", "basic", "jwt"]
                .iter()
                .any(|c| w.eq_ignore_ascii_case(c))
                || is_secret(w)
        });
        let only_a_name = is_secret(trimmed) || trimmed.eq_ignore_ascii_case("bearer");
        let secret = names_credential || after_name || looks_like_jwt(trimmed);
        after_name = only_a_name;
        if i > 0 {
            out.push(',');
        }
        if secret && !trimmed.is_empty() {
            masked = true;
            let lead = &item[..item.len() - item.trim_start().len()];
            out.push_str(lead);
            out.push_str(REDACTED);
        } else {
            out.push_str(item);
        }
    }
    masked.then(|| out.into_bytes())
}

/// A JWT (or JWS): three base64url parts, the first a JSON header (`eyJ`).
fn looks_like_jwt(item: &str) -> bool {
    item.starts_with("eyJ")
        && item.split('.').count() == 3
        && item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// `headers` with each name in `names` holding one `[REDACTED]` value (in the
/// place of its first), in a new map: `HeaderMap::insert` would do the same
/// but keep the list the dropped values were in allocated, and the writer
/// reuses maps (a client sending a secret header a thousand times would leave
/// a map holding that list).
fn without_repeats(headers: HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    let mut last: Option<HeaderName> = None;
    for (name, value) in headers {
        // `None`: another value of the name before.
        match (name, &last) {
            (Some(name), _) => {
                let value = if names.contains(&name) {
                    HeaderValue::from_static(REDACTED)
                } else {
                    value
                };
                out.append(name.clone(), value);
                last = Some(name);
            }
            (None, Some(name)) if !names.contains(name) => {
                out.append(name.clone(), value);
            }
            (None, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_search_agrees_with_a_plain_substring_test() {
        let names: Vec<String> = ["token", "access_token", "password"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Teddy where the CPU has it, else the same finders as below.
        let packed = KeySearch::new(names.clone());
        let finders = KeySearch::Finders(
            names
                .iter()
                .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                .collect(),
        );
        let hays = [
            "",
            "x",
            "tok",
            "token",
            "a_token_b",
            "passwor",
            "{\"password\":1}",
            "the quick brown fox jumps over the lazy dog, twice over: no names",
        ];
        for hay in hays {
            for pad in [0, 1, 15, 16, 31, 32, 33, 100] {
                let hay = format!("{}{hay}", " ".repeat(pad));
                let want = names.iter().any(|n| hay.contains(n.as_str()));
                assert_eq!(packed.is_in(hay.as_bytes()), want, "{hay:?}");
                assert_eq!(finders.is_in(hay.as_bytes()), want, "{hay:?}");
            }
        }
    }

    #[test]
    fn key_prefilter_finds_keys_and_skips_values() {
        let r = Redaction::default();
        assert!(r.may_hold_field_key(br#"{"a": {"PassWord" : 1}}"#));
        assert!(r.may_hold_field_key(br#"{"k\u0061": 1}"#));
        assert!(!r.may_hold_field_key(br#"{"note": "pass word", "url": "http://tok"}"#));
        // A name inside a value or a longer key is a (harmless) false yes.
        assert!(r.may_hold_field_key(br#"{"my_token": 2}"#));
        // Names across window boundaries are found, at every offset.
        for pad in 0..600 {
            let mut body = vec![b' '; pad];
            body.extend_from_slice(br#"{"Refresh_Token": 1}"#);
            body.extend(std::iter::repeat_n(b' ', 700));
            assert!(r.may_hold_field_key(&body), "missed at offset {pad}");
            let clean = String::from_utf8(body)
                .unwrap()
                .replace("Refresh_Token", "refresh_tokem");
            assert!(
                !r.may_hold_field_key(clean.as_bytes()),
                "false hit at offset {pad}"
            );
        }
    }

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

    #[test]
    fn set_cookie_values_are_kept_apart_when_not_redacted() {
        let r = Redaction::none();
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("vary", HeaderValue::from_static("x"));
        h.append("vary", HeaderValue::from_static("y"));
        let out = r.headers(h);
        let cookies: Vec<_> = out.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        // Redaction never joins: the wire form does (see `record::wire`).
        let vary: Vec<_> = out.get_all("vary").iter().collect();
        assert_eq!(vary, ["x", "y"]);
    }

    #[test]
    fn a_name_with_one_sensitive_value_is_redacted_whole_into_one_value() {
        let r = Redaction::none();
        let sensitive = || {
            let mut v = HeaderValue::from_static("secret");
            v.set_sensitive(true);
            v
        };
        // The sensitive value first, last, in the middle, alone; names around.
        let many = [true; 1000];
        let layouts: [&[bool]; 6] = [
            &[true, false],
            &[false, true],
            &[false, true, false],
            &[true],
            &[true, true, true],
            &many,
        ];
        for layout in layouts {
            let mut h = HeaderMap::new();
            h.append("accept", HeaderValue::from_static("a"));
            for &s in layout {
                let v = if s {
                    sensitive()
                } else {
                    HeaderValue::from_static("clear")
                };
                h.append("x-key", v);
            }
            h.append("vary", HeaderValue::from_static("y"));
            h.append("vary", HeaderValue::from_static("z"));
            let out = r.headers(h);
            let values: Vec<_> = out.get_all("x-key").iter().collect();
            assert_eq!(values, [REDACTED], "{layout:?}");
            assert_eq!(out.get("accept").unwrap(), "a");
            let vary: Vec<_> = out.get_all("vary").iter().collect();
            assert_eq!(vary, ["y", "z"], "a clear name keeps its values");
            let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["accept", "x-key", "vary"], "in order");
            assert_eq!(out.len(), 4, "{}", layout.len());
        }
    }

    #[test]
    fn headers_are_redacted_not_joined() {
        let r = Redaction::default();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("cookie", HeaderValue::from_static("s=1"));
        h.append("cookie", HeaderValue::from_static("t=2"));
        let mut sensitive = HeaderValue::from_static("x");
        sensitive.set_sensitive(true);
        h.insert("x-custom", sensitive);
        let out = r.headers(h);
        assert_eq!(out.get("authorization").unwrap(), REDACTED);
        assert_eq!(out.get("cookie").unwrap(), REDACTED);
        assert_eq!(out.get_all("cookie").iter().count(), 1);
        let accept: Vec<_> = out.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert_eq!(out.get("x-custom").unwrap(), REDACTED);
        let record = crate::UsageRecord {
            response_headers: out,
            ..crate::UsageRecord::default()
        };
        let wire = serde_json::to_value(&record).unwrap();
        assert_eq!(wire["responseHeaders"]["accept"], "a, b");
        assert_eq!(wire["responseHeaders"]["cookie"], REDACTED);
    }
}
