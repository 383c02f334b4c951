//! The default rule for secret names: by *word*, not by substring.
//!
//! A usage log that hides `max_tokens` or `usage.total_tokens` (the numbers a
//! consumer is billed by) is as wrong as one that stores a password, so a
//! name is not secret because it *contains* `token` or `auth`; it is secret
//! when its words say so. The rule has one statement, for users, with its
//! table of examples on both sides: `src/docs/redaction.md` (the `middleware`
//! module's Redaction section). This file is its one implementation; the
//! tables it is held to are `tests/redaction_words.rs`.

/// Whether `name` (a header, query parameter, form or JSON field, multipart
/// part or route parameter name) is secret by the default redaction rule:
/// by word, not by substring (see
/// [the rule and its table](crate::middleware#redaction)).
///
/// ```
/// use tower_usage::middleware::is_secret_name;
///
/// for secret in ["access_token", "client_secret", "x-api-key", "sessionId", "new_password"] {
///     assert!(is_secret_name(secret), "{secret}");
/// }
/// for clear in ["max_tokens", "token_type", "tokenDefinitionId", "author", "pageToken"] {
///     assert!(!is_secret_name(clear), "{clear}");
/// }
/// ```
///
/// Names added with [`redact_fields`](crate::UsageLayer::redact_fields) and
/// the other `redact_*` methods are not part of this rule: it is what the
/// defaults take for a secret. No allocation.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.as_bytes();
    if contains_ignore_case(name, b"passw") || contains_ignore_case(name, b"passphrase") {
        return true;
    }
    let mut last: Option<&[u8]> = None;
    let mut before: Option<&[u8]> = None;
    for word in words(name) {
        if word.eq_ignore_ascii_case(b"pwd") || word.eq_ignore_ascii_case(b"secret") {
            return true;
        }
        before = last;
        last = Some(word);
    }
    let Some(last) = last else {
        return false;
    };
    if LAST_WORDS.iter().any(|w| last.eq_ignore_ascii_case(w)) {
        // `verify_jwt`, `require_jwt`: a setting about tokens, not one.
        return !(last.eq_ignore_ascii_case(b"jwt")
            && before.is_some_and(|b| JWT_SETTINGS.iter().any(|w| b.eq_ignore_ascii_case(w))));
    }
    // `passcode`, `user_passcode`, `passCode` (one word split by its
    // capital), but not `passcodeRequired` (a setting about passcodes).
    if strip_suffix_ignore_case(last, b"passcode").is_some()
        || (last.eq_ignore_ascii_case(b"code")
            && before.is_some_and(|b| b.eq_ignore_ascii_case(b"pass"))
            && contains_ignore_case(name, b"passcode"))
    {
        return true;
    }
    if let Some(stem) = strip_suffix_ignore_case(last, b"token") {
        // `token` alone: the word before says what kind; `pagetoken`: the
        // part before it does.
        let kind = if stem.is_empty() {
            before.unwrap_or_default()
        } else {
            stem
        };
        return !NOT_SECRET_TOKENS
            .iter()
            .any(|w| kind.eq_ignore_ascii_case(w));
    }
    if SUFFIXES
        .iter()
        .any(|s| strip_suffix_ignore_case(last, s).is_some())
    {
        return true;
    }
    if let Some(stem) = strip_suffix_ignore_case(last, b"key") {
        // `key` alone: the word before says what kind; `apikey`: the part
        // before it does.
        let kind = if stem.is_empty() {
            before.unwrap_or_default()
        } else {
            stem
        };
        return is_key_kind(kind);
    }
    before.is_some_and(|before| {
        COMPOUNDS
            .iter()
            .any(|(b, l)| before.eq_ignore_ascii_case(b) && last.eq_ignore_ascii_case(l))
    })
}

/// Last two words that make a name secret: `session_id`, and `id_token_hint`
/// (it carries a whole ID token).
const COMPOUNDS: &[(&[u8], &[u8])] = &[(b"session", b"id"), (b"token", b"hint")];

/// Whether `kind`, before `key`, makes a key's name: one of [`KEY_KINDS`],
/// or a word ending in `api` (`rapidapi`).
fn is_key_kind(kind: &[u8]) -> bool {
    !kind.is_empty()
        && (KEY_KINDS.iter().any(|k| kind.eq_ignore_ascii_case(k))
            || strip_suffix_ignore_case(kind, b"api").is_some())
}

/// Substrings that every name the rule takes for secret holds (ASCII
/// case-insensitively): what a text is searched for before its keys are
/// read (`key` stands for the compounds, `sid` for `sessid`).
pub(crate) const NEEDLES: &[&str] = &[
    "passw",
    "passphrase",
    "passcode",
    "pwd",
    "jwt",
    "assertion",
    "mnemonic",
    "auth",
    "credential",
    "cookie",
    "session",
    "sid",
    "token",
    "secret",
    "key",
];

/// A last word that makes a name secret.
const LAST_WORDS: &[&[u8]] = &[
    b"auth",
    b"authorization",
    b"credential",
    b"credentials",
    b"cookie",
    b"session",
    b"sid",
    b"jwt",
    b"assertion",
    b"mnemonic",
];

/// The word before a last word `jwt` that makes the name a setting about
/// tokens rather than one (Supabase's `verify_jwt`).
const JWT_SETTINGS: &[&[u8]] = &[b"verify", b"require", b"requires", b"use", b"enable"];

/// A last word that ends in one of these makes a name secret (`token` is
/// handled apart, for its exceptions).
const SUFFIXES: &[&[u8]] = &[b"secret", b"sessionid", b"sessid", b"pwd"];

/// What stands before `token` in a token that grants nothing: page cursors
/// (Google's `pageToken`, AWS's `NextToken`, OData's `$skiptoken`, Azure's
/// `continuationToken`) and Postman's per-request cache-buster.
const NOT_SECRET_TOKENS: &[&[u8]] = &[
    b"page",
    b"next",
    b"nextpage",
    b"sync",
    b"continuation",
    b"skip",
    b"resume",
    b"pagination",
    b"paging",
    b"resumption",
    b"delta",
    b"previous",
    b"prev",
    b"change",
    b"lock",
    b"atlassian",
    b"eos",
    b"bos",
    b"pad",
    b"unk",
    b"postman",
];

/// What stands before `key` (the word before a last word `key`, or the part
/// of the last word before it) in the name of a key that grants access:
/// API gateways' (Azure's `Ocp-Apim-Subscription-Key`, `x-functions-key`),
/// storage accounts', services' and SDKs' keys. Not `public`, `primary`,
/// `sort`, `idempotency`, `project`, `issue` or `publishable`: those name
/// what is not a secret.
const KEY_KINDS: &[&[u8]] = &[
    b"api",
    b"access",
    b"private",
    b"priv",
    b"secret",
    b"signing",
    b"encryption",
    b"decryption",
    b"master",
    b"client",
    b"auth",
    b"license",
    b"session",
    b"application",
    b"app",
    b"subscription",
    b"function",
    b"functions",
    b"account",
    b"admin",
    b"service",
    b"server",
    b"hmac",
    b"shared",
    b"storage",
    b"root",
    b"sdk",
    b"write",
    b"deploy",
    b"ingest",
    b"webhook",
    b"mashape",
    b"insert",
    b"read",
    b"customer",
    b"role",
    b"preauth",
    b"ingestion",
];

/// The words of `name` (see the module docs), in order.
fn words(name: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        // Skip separators.
        while at < name.len() && is_separator(name[at]) {
            at += 1;
        }
        if at >= name.len() {
            return None;
        }
        let start = at;
        at += 1;
        while at < name.len() {
            let (prev, cur) = (name[at - 1], name[at]);
            if is_separator(cur) {
                break;
            }
            // `aB`, `1B`, `éB`: a capital after a lower-case letter, a digit
            // or a byte that is not ASCII.
            if cur.is_ascii_uppercase()
                && (prev.is_ascii_lowercase() || prev.is_ascii_digit() || !prev.is_ascii())
            {
                break;
            }
            // `ABc`: the last capital of a run starts the next word.
            if prev.is_ascii_uppercase()
                && cur.is_ascii_uppercase()
                && name.get(at + 1).is_some_and(u8::is_ascii_lowercase)
            {
                break;
            }
            at += 1;
        }
        Some(&name[start..at])
    })
}

/// Separators between words: ASCII that is neither a letter nor a digit.
fn is_separator(b: u8) -> bool {
    b.is_ascii() && !b.is_ascii_alphanumeric()
}

fn strip_suffix_ignore_case<'a>(word: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let split = word.len().checked_sub(suffix.len())?;
    word[split..]
        .eq_ignore_ascii_case(suffix)
        .then(|| &word[..split])
}

/// Whether `hay` holds `needle` (lower-case), ASCII case-insensitively.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_words() {
        let split = |n: &str| {
            words(n.as_bytes())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(split("accessToken"), ["access", "Token"]);
        assert_eq!(split("APIKey"), ["API", "Key"]);
        assert_eq!(split("x-api-key"), ["x", "api", "key"]);
        assert_eq!(split("user[password][]"), ["user", "password"]);
        assert_eq!(split("usage.total_tokens"), ["usage", "total", "tokens"]);
        assert_eq!(split("HTTPAuth2Token"), ["HTTP", "Auth2", "Token"]);
        assert_eq!(split("PHPSESSID"), ["PHPSESSID"]);
        assert_eq!(split("__--"), Vec::<String>::new());
        assert_eq!(split("caf\u{e9}Token"), ["caf\u{e9}", "Token"]);
    }

    #[test]
    fn every_secret_name_holds_a_needle() {
        for name in SECRET {
            let lower = name.to_ascii_lowercase();
            assert!(
                NEEDLES.iter().any(|n| lower.contains(n)),
                "{name} holds no needle"
            );
        }
    }

    #[test]
    fn secret_and_harmless_names() {
        for name in SECRET {
            assert!(is_secret_name(name), "{name} should be secret");
        }
        for name in HARMLESS {
            assert!(!is_secret_name(name), "{name} should stay as sent");
        }
    }

    proptest::proptest! {
        /// Whatever the name, a needle stands in every secret one: the text
        /// nets and the body prefilter search for the needles only.
        #[test]
        fn secret_names_always_hold_a_needle(name in "[a-zA-Z0-9_.\\-]{0,24}") {
            if is_secret_name(&name) {
                let lower = name.to_ascii_lowercase();
                proptest::prop_assert!(NEEDLES.iter().any(|n| lower.contains(n)), "{}", name);
            }
        }
    }

    /// A few names of each side, one per clause of the rule (the tables of
    /// 40 and more are in `tests/redaction_words.rs`, through a real app).
    const SECRET: &[&str] = &[
        "passWord",
        "db_pwd",
        "secret_path",
        "x-auth",
        "credentials",
        "csrftoken",
        "PHPSESSID",
        "clientSecret",
        "APIKey",
        "aws_secret_access_key",
        "sessionId",
        "user[password]",
    ];

    const HARMLESS: &[&str] = &[
        "tokenDefinitionId",
        "usage.total_tokens",
        "token_type",
        "author",
        "authority",
        "keyboard",
        "access_key_id",
        "$skiptoken",
        "postman-token",
        "bypass_whitelist",
        "consider",
        "x-hub-signature-256",
    ];
}
