//! Redaction, applied by the writer before a record reaches any sink: headers,
//! query parameters and body fields, by name. What is redacted, and how, is
//! documented for users on the middleware module (`src/middleware/mod.rs`,
//! "Redaction").

use http::HeaderName;

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

mod body;
mod form;
mod headers;
mod json;
mod nets;
mod prefilter;
mod rules;
mod text;
mod verdicts;
mod words;

pub(crate) use rules::NameRules;
pub(crate) use verdicts::HeaderVerdicts;
pub use words::is_secret_name;

use prefilter::KeySearch;

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

    pub(super) fn is_field(&self, name: &str) -> bool {
        self.field_matcher.matches(name)
    }

    pub(super) fn is_header(&self, name: &HeaderName) -> bool {
        self.header_matcher.matches(name.as_str())
    }

    /// Whether a form field name is secret: the name, or any `[...]` segment
    /// of it (Rails and PHP nest fields as `user[password]`, `password[]`).
    pub(super) fn is_form_field(&self, name: &str) -> bool {
        self.is_field(name)
            || name
                .split(['[', ']'])
                .any(|segment| !segment.is_empty() && self.is_field(segment))
    }
}

/// The authorization scheme whose credentials are masked wherever they stand.
const BEARER: &str = "bearer";

/// How many times the net percent-decodes a text that still holds a `%`.
const DECODE_LAYERS: usize = 3;
