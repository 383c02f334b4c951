//! The text nets with a layer's rules: over any text, form-encoded text
//! (the query, form bodies), JSON string values and the path, each also
//! percent-decoded in layers.

use std::borrow::Cow;

use super::{form, text, Redaction, DECODE_LAYERS, REDACTED, REDACTED_FORM};

impl Redaction {
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

    /// The net over any text: the value after every secret name that stands
    /// as a key (see [`text::mask_key_values`]), the user-info of every URL
    /// (see [`text::mask_userinfo`]) and, when the field rules take
    /// `authorization` for a secret name, every bearer credential (see
    /// [`text::mask_bearer`]), each replaced by `[REDACTED]`.
    /// `None` when nothing was masked.
    pub(super) fn mask_text(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.mask_text_with(bytes, REDACTED.as_bytes())
    }

    /// [`Self::mask_text`] with another replacement.
    pub(super) fn mask_text_with(&self, bytes: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
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
    pub(super) fn mask_text_decoding(&self, bytes: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
        self.mask_text_layers(bytes, replacement)
            .map(|(masked, _)| masked)
    }

    /// [`Self::mask_text_decoding`], with the layer the text comes from: 0
    /// when it is the text as it came (masked), else how many times it was
    /// percent-decoded.
    pub(super) fn mask_text_layers(
        &self,
        bytes: &[u8],
        replacement: &[u8],
    ) -> Option<(Vec<u8>, usize)> {
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
    pub(super) fn mask_form(&self, input: &[u8]) -> Option<Vec<u8>> {
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
    pub(super) fn mask_json_string(&self, quoted: &[u8]) -> Option<Vec<u8>> {
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
            .filter(|route| {
                crate::record::route_params::param_names(route).any(|n| self.is_field(n))
            })
            .and_then(|route| {
                crate::record::route_params::mask_params(route, path, REDACTED, |name| {
                    self.is_field(name)
                })
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

/// What a masked path encodes again: controls, blanks, `%`, `?`, `#` and
/// bytes that are not ASCII.
const PATH_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#')
    .add(b'"');
