//! Route params: the route template matched against the path, in the writer.
//!
//! Template syntax: axum 0.8's `{name}` and `{*rest}`, and the older `:name` and
//! `*rest`. A capture may have a literal prefix or suffix inside its segment
//! (`/files/{name}.json`). Param values are percent-decoded. A gRPC call's
//! params are its service and method, from the path.

use std::ops::Range;

/// [`params_into`] a new list: for tests.
#[cfg(test)]
fn params_for(route: Option<&str>, path: &str, grpc: bool) -> Vec<(String, String)> {
    let mut params = Vec::new();
    params_into(route, path, grpc, &mut params);
    params
}

/// The params of a request, given its route template, written over `params`:
/// its pairs' strings are reused (cleared and overwritten in order), the
/// pairs left over dropped. The template is matched against the path segment
/// by segment; a gRPC call's params are its service and method:
///
/// ```text
/// /rest/v1/airdrop/{batchId}  ~  /rest/v1/airdrop/I4WT   =>  batchId = I4WT
/// /files/{*rest}              ~  /files/a/b%20c           =>  rest = a/b c
/// /pkg.Greeter/SayHello (gRPC)                            =>  service = pkg.Greeter, method = SayHello
/// ```
pub(crate) fn params_into(
    route: Option<&str>,
    path: &str,
    grpc: bool,
    params: &mut Vec<(String, String)>,
) {
    let mut n = 0;
    if let Some((service, method)) = grpc.then(|| grpc_method(path)).flatten() {
        put(params, &mut n, "service", service);
        put(params, &mut n, "method", method);
    } else if let Some(template) = route {
        param_ranges(template, path, |name, range| {
            let value = percent_encoding::percent_decode_str(&path[range]).decode_utf8_lossy();
            put(params, &mut n, name, &value);
        });
    }
    params.truncate(n);
}

/// Sets the `n`th pair of `params` (reusing its strings, or pushed), then
/// counts it.
fn put(params: &mut Vec<(String, String)>, n: &mut usize, name: &str, value: &str) {
    match params.get_mut(*n) {
        Some((k, v)) => {
            k.clear();
            k.push_str(name);
            v.clear();
            v.push_str(value);
        }
        None => params.push((name.to_owned(), value.to_owned())),
    }
    *n += 1;
}

/// Splits `/pkg.Service/Method`.
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The path with the raw value of every parameter whose name `is_secret`
/// replaced by `replacement` (so that the parameters read from it show the
/// replacement too). `None` when no such parameter matched.
pub(crate) fn mask_params(
    template: &str,
    path: &str,
    replacement: &str,
    is_secret: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    param_ranges(template, path, |name, range| {
        if is_secret(name) && range.start >= copied {
            out.push_str(&path[copied..range.start]);
            out.push_str(replacement);
            copied = range.end;
        }
    });
    if copied == 0 {
        return None;
    }
    out.push_str(&path[copied..]);
    Some(out)
}

/// The names of the parameters of `template`, without looking at a path.
pub(crate) fn param_names(template: &str) -> impl Iterator<Item = &str> {
    template.split('/').filter_map(|t| {
        if let Some(name) = t.strip_prefix(':').or_else(|| t.strip_prefix('*')) {
            return Some(name.strip_prefix('*').unwrap_or(name));
        }
        let (open, close) = (t.find('{')?, t.rfind('}')?);
        let name = t.get(open + 1..close)?;
        Some(name.strip_prefix('*').unwrap_or(name))
    })
}

/// Calls `found` with the name and the byte range in `path` of each
/// parameter of `template`, in order (a callback: no list is allocated).
fn param_ranges<'t>(template: &'t str, path: &str, mut found: impl FnMut(&'t str, Range<usize>)) {
    let base = usize::from(path.starts_with('/'));
    let mut at = base;
    let mut path_segments = path[base..].split('/');
    for t in template.strip_prefix('/').unwrap_or(template).split('/') {
        // Most segments are literal: one pass over their bytes, instead of
        // a search for each kind of capture.
        if !t.bytes().any(|b| matches!(b, b'{' | b':' | b'*')) {
            let Some(seg) = path_segments.next() else {
                return;
            };
            at += seg.len() + 1;
            continue;
        }
        // Wildcards take the rest of the path.
        let wildcard = t
            .strip_prefix("{*")
            .and_then(|s| s.strip_suffix('}'))
            .or_else(|| t.strip_prefix('*'));
        if let Some(name) = wildcard {
            if !name.is_empty() {
                found(name, at.min(path.len())..path.len());
            }
            return;
        }
        let Some(seg) = path_segments.next() else {
            return;
        };
        let seg_start = at;
        at += seg.len() + 1;
        if let Some(name) = t.strip_prefix(':') {
            found(name, seg_start..seg_start + seg.len());
            continue;
        }
        if let (Some(open), Some(close)) = (t.find('{'), t.rfind('}')) {
            if open < close {
                let (prefix, name, suffix) = (&t[..open], &t[open + 1..close], &t[close + 1..]);
                if seg.len() >= prefix.len() + suffix.len()
                    && seg.starts_with(prefix)
                    && seg.ends_with(suffix)
                {
                    let start = seg_start + prefix.len();
                    found(name, start..seg_start + seg.len() - suffix.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Protocol;
    use http::HeaderMap;

    fn p(template: &str, path: &str) -> Vec<(String, String)> {
        params_for(Some(template), path, false)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn matches_axum_templates() {
        assert_eq!(
            p("/rest/v1/airdrop/{batchId}", "/rest/v1/airdrop/I4WT"),
            pairs(&[("batchId", "I4WT")])
        );
        assert_eq!(
            p(
                "/rest/v1/collection/{tokenDefinitionId}/owners",
                "/rest/v1/collection/098f/owners"
            ),
            pairs(&[("tokenDefinitionId", "098f")])
        );
        assert_eq!(
            p("/files/{*rest}", "/files/a/b%20c"),
            pairs(&[("rest", "a/b c")])
        );
        assert_eq!(
            p("/u/:id/x/*tail", "/u/7/x/y/z"),
            pairs(&[("id", "7"), ("tail", "y/z")])
        );
        assert_eq!(
            p("/img/{name}.png", "/img/cat.png"),
            pairs(&[("name", "cat")])
        );
        assert_eq!(p("/static", "/static"), pairs(&[]));
        assert_eq!(p("/a/{x}/{y}", "/a/1"), pairs(&[("x", "1")]));
    }

    #[test]
    fn params_written_over_a_used_list_keep_nothing_of_it() {
        let used = || pairs(&[("a", "stale-1"), ("b", "stale-2"), ("c", "stale-3")]);
        /// Route, path, gRPC, the params wanted.
        type Case<'a> = (Option<&'a str>, &'a str, bool, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                Some("/v1/items/{id}"),
                "/v1/items/x%20y",
                false,
                &[("id", "x y")],
            ),
            (
                Some("/{a}/{b}/{c}/{d}"),
                "/1/2/3/4",
                false,
                &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            ),
            (Some("/static"), "/static", false, &[]),
            (None, "/v1/items/1", false, &[]),
            (
                Some("/pkg.S/M"),
                "/pkg.S/M",
                true,
                &[("service", "pkg.S"), ("method", "M")],
            ),
            // A gRPC path that is not `/service/method`: the template's params.
            (
                Some("/x/{y}/{z}"),
                "/x/1/2",
                true,
                &[("y", "1"), ("z", "2")],
            ),
        ];
        for &(route, path, grpc, want) in cases {
            let mut params = used();
            params_into(route, path, grpc, &mut params);
            assert_eq!(params, pairs(want), "{route:?} {path}");
            assert_eq!(params, params_for(route, path, grpc));
        }
    }

    #[test]
    fn grpc_paths_give_service_and_method() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc+proto".parse().unwrap());
        assert_eq!(
            params_for(
                Some("/pkg.Greeter/SayHello"),
                "/pkg.Greeter/SayHello",
                Protocol::of(&h).is_grpc()
            ),
            pairs(&[("service", "pkg.Greeter"), ("method", "SayHello")])
        );
    }
}
