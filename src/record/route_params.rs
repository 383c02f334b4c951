//! Route params: the route template matched against the path, in the writer.
//!
//! Template syntax: axum 0.8's `{name}` and `{*rest}`, and the older `:name` and
//! `*rest`. A capture may have a literal prefix or suffix inside its segment
//! (`/files/{name}.json`). Param values are percent-decoded. A gRPC call's
//! params are its service and method, from the path.

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
    let mut path_segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let mut remaining = path.strip_prefix('/').unwrap_or(path);
    for t in template.strip_prefix('/').unwrap_or(template).split('/') {
        // Wildcards take the rest of the path.
        let wildcard = t
            .strip_prefix("{*")
            .and_then(|s| s.strip_suffix('}'))
            .or_else(|| t.strip_prefix('*'));
        if let Some(name) = wildcard {
            if !name.is_empty() {
                params.push((name.to_owned(), decode(remaining)));
            }
            return params;
        }
        let Some(seg) = path_segments.next() else {
            return params;
        };
        remaining = remaining.get(seg.len() + 1..).unwrap_or("");
        if let Some(name) = t.strip_prefix(':') {
            params.push((name.to_owned(), decode(seg)));
            continue;
        }
        if let (Some(open), Some(close)) = (t.find('{'), t.rfind('}')) {
            if open < close {
                let (prefix, name, suffix) = (&t[..open], &t[open + 1..close], &t[close + 1..]);
                if let Some(value) = seg
                    .strip_prefix(prefix)
                    .and_then(|s| s.strip_suffix(suffix))
                {
                    params.push((name.to_owned(), decode(value)));
                }
            }
        }
    }
    params
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
