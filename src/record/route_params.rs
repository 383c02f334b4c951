//! Route params: the route template matched against the path, in the writer.
//!
//! Template syntax: axum 0.8's `{name}` and `{*rest}`, and the older `:name` and
//! `*rest`. A capture may have a literal prefix or suffix inside its segment
//! (`/files/{name}.json`). Param values are percent-decoded. A gRPC call's
//! params are its service and method, from the path.

use std::ops::Range;

/// The params of a request, given its route template.
pub(crate) fn params_for(route: Option<&str>, path: &str, grpc: bool) -> Vec<(String, String)> {
    if grpc {
        if let Some((service, method)) = grpc_method(path) {
            return vec![
                ("service".to_owned(), service.to_owned()),
                ("method".to_owned(), method.to_owned()),
            ];
        }
    }
    route.map(|t| match_template(t, path)).unwrap_or_default()
}

/// Splits `/pkg.Service/Method`.
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Matches a route template against a path, segment by segment.
///
/// ```text
/// /rest/v1/airdrop/{batchId}  ~  /rest/v1/airdrop/I4WT   =>  batchId = I4WT
/// /files/{*rest}              ~  /files/a/b%20c           =>  rest = a/b c
/// ```
pub(crate) fn match_template(template: &str, path: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    param_ranges(template, path, |name, range| {
        params.push((name.to_owned(), decode(&path[range])));
    });
    params
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

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Protocol;
    use http::HeaderMap;

    fn p(template: &str, path: &str) -> Vec<(String, String)> {
        match_template(template, path)
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
