//! The hooks a user gives the layer and the endpoint, and the view of a request
//! they are handed: [`RequestInfo`], [`IdentifyConsumer`], the route hook
//! ([`default_route`]), the skip hook, and the capture policy hook
//! ([`CapturePolicy`], `hooks/capture_policy.rs`). A leaf: it depends on no
//! other module of the crate.
//!
//! # Who is the consumer
//!
//! By default the consumer is a stable hash of the `Authorization: Bearer <token>`
//! token ([`hash_token`]); the token itself is never stored. Requests without a
//! bearer token are anonymous. A custom derivation (an account id an auth layer
//! put in the request extensions, say) is a closure over [`RequestInfo`]; give the
//! same one to [`UsageLayer`](crate::UsageLayer) and
//! [`UsageService`](crate::UsageService).
//!
//! # Route templates
//!
//! The layer asks the route hook for the route template of each request (on the
//! request path: one extension lookup); the writer derives the params by matching
//! the template against the path, off the request path. See [`default_route`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use hmac::Hmac;
use http::{Extensions, HeaderMap, Method, Uri};
use sha2::{Digest as _, Sha256};

mod capture_policy;
mod token_cache;

pub use capture_policy::{Bodies, CapturePolicy, CaptureRequest};
pub(crate) use capture_policy::{BodyPlan, Ending, PolicyFn, Side};
use token_cache::TokenCache;

/// How a request's body is framed, decided once from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    /// Anything that is not gRPC.
    Http,
    /// gRPC or gRPC-Web (`application/grpc`, `application/grpc-web`, with any
    /// `+proto` / `+json` suffix): the bodies are length-prefixed messages.
    GrpcFramed,
    /// gRPC-Web text (`application/grpc-web-text`): the frames are base64, so
    /// they are not followed.
    GrpcText,
}

impl Protocol {
    /// The protocol of a request with these headers.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        match headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
        {
            Some(ct) if ct.starts_with(b"application/grpc-web-text") => Self::GrpcText,
            Some(ct) if ct.starts_with(b"application/grpc") => Self::GrpcFramed,
            _ => Self::Http,
        }
    }

    /// Whether this is a gRPC call of any kind.
    pub(crate) fn is_grpc(self) -> bool {
        self != Self::Http
    }

    /// Whether the bodies are gRPC frames the layer can follow.
    pub(crate) fn is_framed(self) -> bool {
        self == Self::GrpcFramed
    }
}

/// A borrowed view of a request's head, handed to the crate's hooks.
///
/// ```
/// use tower_usage::RequestInfo;
///
/// let req = http::Request::get("/v1/usage?limit=5").body(()).unwrap();
/// let info = RequestInfo::from_request(&req);
/// assert_eq!(info.uri().path(), "/v1/usage");
/// assert!(!info.is_grpc());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    protocol: Protocol,
}

impl<'a> RequestInfo<'a> {
    /// A view of the given parts.
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        extensions: &'a Extensions,
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            extensions,
            protocol: Protocol::of(headers),
        }
    }

    /// A view of a request.
    pub fn from_request<B>(req: &'a http::Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.headers(), req.extensions())
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// Whether the request is a gRPC call: its `content-type` starts with
    /// `application/grpc` (gRPC, gRPC-Web and gRPC-Web text).
    pub fn is_grpc(&self) -> bool {
        self.protocol.is_grpc()
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// The route hook of a layer; the default borrows the template from the request.
pub(crate) type RouteFn =
    Arc<dyn for<'a> Fn(RequestInfo<'a>) -> Option<Cow<'a, str>> + Send + Sync>;

/// The skip hook of a layer.
pub(crate) type SkipFn = Arc<dyn Fn(RequestInfo<'_>) -> bool + Send + Sync>;

/// The default route hook: the route template of a request, where it is known.
///
/// * For gRPC requests ([`RequestInfo::is_grpc`]), the path itself
///   (`/pkg.Service/Method`), whose route params are `{"service":
///   "pkg.Service", "method": "Method"}` (also when tonic's routes sit in an
///   axum router, whose matched path would be `/pkg.Service/{*rest}`).
/// * With the `axum` feature, axum's `MatchedPath` when it is in the request
///   extensions (the layer added with `Router::layer` or `Router::route_layer`;
///   see the crate docs on placement).
/// * Otherwise `None`: the record has no `route` and no params.
///
/// Template syntax: axum 0.8's `{name}` and `{*rest}`, and the older `:name`
/// and `*rest`. A capture may have a literal prefix or suffix inside its segment
/// (`/files/{name}.json`). Param values are percent-decoded.
///
/// A custom hook ([`UsageLayer::route`](crate::UsageLayer::route)) can fall
/// back to it:
///
/// ```
/// use tower_usage::{default_route, MemorySink, RequestInfo, UsageLayer};
///
/// let layer = UsageLayer::new(MemorySink::new()).route(|req: RequestInfo<'_>| {
///     if req.uri().path().starts_with("/static/") {
///         return Some("/static/{*file}".to_owned());
///     }
///     default_route(req).map(str::to_owned)
/// });
/// # let _ = layer;
/// ```
pub fn default_route<'a>(req: RequestInfo<'a>) -> Option<&'a str> {
    // gRPC first: tonic's routes are an axum router whose matched path is
    // `/pkg.Service/{*rest}`, less useful than the method path.
    if req.is_grpc() {
        return Some(req.uri().path());
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    None
}

/// [`default_route`] as a [`RouteFn`].
pub(crate) fn default_route_fn() -> RouteFn {
    Arc::new(|req: RequestInfo<'_>| default_route(req).map(Cow::Borrowed))
}

type IdentifyFn = dyn Fn(RequestInfo<'_>) -> Option<String> + Send + Sync;

/// Derives the consumer of a request. Default: [`IdentifyConsumer::bearer`].
///
/// ```
/// use tower_usage::{IdentifyConsumer, RequestInfo};
///
/// #[derive(Clone)]
/// struct AccountId(String);
///
/// // An auth layer earlier in the stack put the account id in the extensions.
/// let identify = IdentifyConsumer::new(|req: RequestInfo<'_>| {
///     req.extensions().get::<AccountId>().map(|a| a.0.clone())
/// });
///
/// let mut req = http::Request::get("/").body(()).unwrap();
/// req.extensions_mut().insert(AccountId("acct_42".into()));
/// assert_eq!(identify.identify(RequestInfo::from_request(&req)).as_deref(), Some("acct_42"));
/// ```
#[derive(Clone)]
pub struct IdentifyConsumer(Identify);

#[derive(Clone)]
enum Identify {
    /// The default. The layer defers the hash to its writer: the headers are
    /// captured anyway, so the request path skips the SHA-256.
    Bearer,
    /// The bearer token's HMAC-SHA256 under a key; deferred like `Bearer`.
    BearerKeyed(Arc<Keyed>),
    Custom(Arc<IdentifyFn>),
}

/// A keyed bearer derivation: the MAC state with the key applied (cloned per
/// token), and its own cache of ids.
struct Keyed {
    mac: Hmac<Sha256>,
    cache: TokenCache,
}

/// The ids of recently seen tokens for [`IdentifyConsumer::bearer`], whose ids
/// are the same in every layer and service of the process (an unsalted hash),
/// so one cache serves them all.
fn bearer_cache() -> &'static TokenCache {
    static CACHE: std::sync::OnceLock<TokenCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(TokenCache::new)
}

impl IdentifyConsumer {
    /// A custom derivation.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self(Identify::Custom(Arc::new(f)))
    }

    /// The default: the [`hash_token`] of the `Authorization: Bearer` token, or
    /// `None` when there is no well-formed bearer token.
    ///
    /// The id is an unsalted SHA-256 prefix: the same token gives the same id in
    /// every deployment, across restarts and replicas, with no setting to keep.
    /// The price: anyone holding an id can test guesses of the token against
    /// it, so a weak token (a short or dictionary word, like `my-token`) can be
    /// recovered from its id. Where ids are shown to others, or tokens may be
    /// weak, use [`bearer_keyed`](Self::bearer_keyed).
    pub fn bearer() -> Self {
        Self(Identify::Bearer)
    }

    /// The bearer token's HMAC-SHA256 under `key` (its first 16 bytes, as 32
    /// lower-case hex digits), or `None` when there is no well-formed bearer
    /// token. Without the key, an id says nothing about its token, not even to
    /// a dictionary.
    ///
    /// The same key gives the same ids: give it to every replica, and keep it
    /// across restarts (from a secret store, say). A new key gives every
    /// consumer a new id, which cuts it off from the records stored under the
    /// old one; switching from [`bearer`](Self::bearer) does the same. Give the
    /// layer and [`UsageService`](crate::UsageService) the same one.
    ///
    /// ```
    /// use tower_usage::{IdentifyConsumer, RequestInfo};
    ///
    /// let identify = IdentifyConsumer::bearer_keyed(b"a secret of 32 bytes or more....");
    /// let req = http::Request::get("/").header("authorization", "Bearer my-token").body(()).unwrap();
    /// let id = identify.identify(RequestInfo::from_request(&req)).unwrap();
    /// assert_eq!(id.len(), 32);
    /// assert_ne!(id, tower_usage::hash_token("my-token"));
    /// ```
    pub fn bearer_keyed(key: impl AsRef<[u8]>) -> Self {
        // HMAC takes keys of any length.
        let mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        Self(Identify::BearerKeyed(Arc::new(Keyed {
            mac,
            cache: TokenCache::new(),
        })))
    }

    /// The consumer of a request.
    pub fn identify(&self, req: RequestInfo<'_>) -> Option<String> {
        match &self.0 {
            Identify::Custom(f) => f(req),
            _ => self.of_headers(req.headers()),
        }
    }

    /// Whether this is a bearer derivation (keyed or not), which reads only the
    /// headers and so can run later, in the writer, from the captured ones.
    pub(crate) fn is_bearer(&self) -> bool {
        !matches!(self.0, Identify::Custom(_))
    }

    /// The consumer of a request with these headers, for a bearer derivation;
    /// `None` for a custom one.
    ///
    /// The ids of recently seen tokens are cached (a bounded cache keyed by a
    /// keyed hash of the token, never the token: see `hooks/token_cache.rs`),
    /// so a client's next requests skip the SHA-256.
    pub(crate) fn of_headers(&self, headers: &HeaderMap) -> Option<String> {
        self.of_headers_into(headers, String::new())
    }

    /// [`of_headers`](Self::of_headers), written over `buf` when the id comes
    /// from the cache (the writer lends a written record's allocation).
    pub(crate) fn of_headers_into(&self, headers: &HeaderMap, buf: String) -> Option<String> {
        let token = bearer_token(headers)?;
        match &self.0 {
            Identify::Bearer => {
                Some(bearer_cache().get_or_derive(token, || hash_token(token), buf))
            }
            Identify::BearerKeyed(keyed) => Some(keyed.cache.get_or_derive(
                token,
                || {
                    use hmac::Mac as _;
                    let mut mac = keyed.mac.clone();
                    mac.update(token.as_bytes());
                    lower_hex(&mac.finalize().into_bytes()[..16])
                },
                buf,
            )),
            Identify::Custom(_) => None,
        }
    }
}

impl Default for IdentifyConsumer {
    fn default() -> Self {
        Self::bearer()
    }
}

impl fmt::Debug for IdentifyConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str(match self.0 {
            Identify::Bearer => "IdentifyConsumer::bearer()",
            Identify::BearerKeyed(_) => "IdentifyConsumer::bearer_keyed(..)",
            Identify::Custom(_) => "IdentifyConsumer::new(..)",
        })
    }
}

/// The token of a well-formed `Authorization: Bearer <token>` header.
///
/// The scheme is case-insensitive; the token must be non-empty and hold no
/// whitespace (RFC 6750's `b64token`, loosely).
///
/// ```
/// let mut h = http::HeaderMap::new();
/// h.insert("authorization", "bearer abc.DEF-1".parse().unwrap());
/// assert_eq!(tower_usage::bearer_token(&h), Some("abc.DEF-1"));
/// h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
/// assert_eq!(tower_usage::bearer_token(&h), None);
/// ```
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    // `to_str` lets through visible ASCII, space and tab only: the only
    // whitespace to look for is ' ' and '\t', byte by byte.
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let blank = |c: char| c == ' ' || c == '\t';
    let (scheme, token) = value.trim_matches(blank).split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(blank);
    if token.is_empty() || memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some() {
        return None;
    }
    Some(token)
}

/// The stable consumer id of a bearer token: the first 16 bytes of its SHA-256,
/// as 32 lower-case hex digits. The token cannot be recovered from it.
///
/// ```
/// let id = tower_usage::hash_token("IncYP3edd3blm2ypLGFFOYwQsC5vff3n");
/// assert_eq!(id.len(), 32);
/// assert_eq!(id, tower_usage::hash_token("IncYP3edd3blm2ypLGFFOYwQsC5vff3n"));
/// ```
pub fn hash_token(token: &str) -> String {
    lower_hex(&Sha256::digest(token.as_bytes())[..16])
}

/// `bytes` as lower-case hex digits, two per byte.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_rfc_6750_says_loosely() {
        let token = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            bearer_token(&h).map(str::to_owned)
        };
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bEaReR abc.DEF-1~+/=", Some("abc.DEF-1~+/=")),
            ("  Bearer   abc  ", Some("abc")),
            ("\tBearer abc\t", Some("abc")),
            ("Bearer \tabc", Some("abc")),
            ("Bearer a b", None),
            ("Bearer a\tb", None),
            ("Bearer\tabc", None),
            ("Bearer ", None),
            ("Bearer", None),
            ("Basic abc", None),
            ("Bearerx abc", None),
        ] {
            assert_eq!(token(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn both_bearer_derivations_give_the_same_id_from_the_cache() {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Bearer tok-1".parse().unwrap());
        let plain = IdentifyConsumer::bearer();
        let keyed = IdentifyConsumer::bearer_keyed(b"k");
        let first = (plain.of_headers(&h), keyed.of_headers(&h));
        assert_eq!(first.0.as_deref(), Some(hash_token("tok-1").as_str()));
        assert_eq!((plain.of_headers(&h), keyed.of_headers(&h)), first);
        // Another key, another id, though the token was cached under the first.
        let other = IdentifyConsumer::bearer_keyed(b"k2").of_headers(&h);
        assert_ne!(other, first.1);
        assert_eq!(
            IdentifyConsumer::bearer_keyed(b"k").of_headers(&h),
            first.1,
            "a new cache under the same key derives the same id"
        );
    }
}
