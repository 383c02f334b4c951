//! Who is the consumer: [`IdentifyConsumer`], shared by the layer and the service.
//!
//! By default the consumer is a stable hash of the `Authorization: Bearer <token>`
//! token ([`hash_token`]); the token itself is never stored. Requests without a
//! bearer token are anonymous. A custom derivation (an account id an auth layer
//! put in the request extensions, say) is a closure over [`RequestInfo`]; give the
//! same one to [`UsageLayer`](crate::UsageLayer) and
//! [`UsageService`](crate::UsageService).

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Uri};
use sha2::Digest as _;

/// A borrowed view of a request's head, handed to the crate's hooks.
///
/// ```
/// use tower_usage::RequestInfo;
///
/// let req = http::Request::get("/v1/usage?limit=5").body(()).unwrap();
/// let info = RequestInfo::from_request(&req);
/// assert_eq!(info.uri().path(), "/v1/usage");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
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
    Custom(Arc<IdentifyFn>),
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
    pub fn bearer() -> Self {
        Self(Identify::Bearer)
    }

    /// The consumer of a request.
    pub fn identify(&self, req: RequestInfo<'_>) -> Option<String> {
        match &self.0 {
            Identify::Bearer => bearer_consumer(req.headers()),
            Identify::Custom(f) => f(req),
        }
    }

    /// Whether this is the default, header-only derivation, which can run later
    /// from the captured headers.
    pub(crate) fn is_bearer(&self) -> bool {
        matches!(self.0, Identify::Bearer)
    }
}

/// The default consumer of a request with these headers.
pub(crate) fn bearer_consumer(headers: &HeaderMap) -> Option<String> {
    bearer_token(headers).map(hash_token)
}

impl Default for IdentifyConsumer {
    fn default() -> Self {
        Self::bearer()
    }
}

impl fmt::Debug for IdentifyConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentifyConsumer(..)")
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
/// assert_eq!(tower_usage::consumer::bearer_token(&h), Some("abc.DEF-1"));
/// h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
/// assert_eq!(tower_usage::consumer::bearer_token(&h), None);
/// ```
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token)
}

/// The stable consumer id of a bearer token: the first 16 bytes of its SHA-256,
/// as 32 lower-case hex digits. The token cannot be recovered from it.
///
/// ```
/// let id = tower_usage::consumer::hash_token("IncYP3edd3blm2ypLGFFOYwQsC5vff3n");
/// assert_eq!(id.len(), 32);
/// assert_eq!(id, tower_usage::consumer::hash_token("IncYP3edd3blm2ypLGFFOYwQsC5vff3n"));
/// ```
pub fn hash_token(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(32);
    for &b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}
