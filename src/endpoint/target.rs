//! What a request below the mount point asks for: the path below it, parsed
//! once into a [`Target`].

use http::Request;

/// The endpoint a request is for, from the path below the mount point `M`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target<'a> {
    /// `GET M`: a page of records, or an export with `format=`.
    List,
    /// `GET M/summary`.
    Summary,
    /// `GET M/openapi.json`.
    OpenApi,
    /// `GET M/{id}`: one record.
    Record(&'a str),
    /// Anything else below `M`: `404`.
    NotFound,
}

impl<'a> Target<'a> {
    /// The target of `req`, and the mount point when it is known.
    ///
    /// With a `mount_point` ([`UsageService::mount_point`](super::UsageService::mount_point)),
    /// the request path must be it or start with it and a `/`; the rest decides
    /// (any other path is [`NotFound`](Self::NotFound)). Else, mounted with axum's `Router::nest_service(M, ..)`, the service sees the
    /// path below `M` (axum strips the prefix and leaves a `NestedPath`
    /// extension): that path decides. Mounted any other way
    /// (`route_service(M, ..)`, also inside a nested router, tonic's router,
    /// a plain hyper service), the service answers one path only: the
    /// summary when that path ends in `/summary`, else the list.
    pub(super) fn of<B>(
        req: &'a Request<B>,
        mount_point: Option<&'a str>,
    ) -> (Self, Option<&'a str>) {
        if let Some(mount) = mount_point {
            let target = match req.uri().path().strip_prefix(mount) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => Self::below(rest),
                _ => Self::NotFound,
            };
            return (target, Some(mount));
        }
        #[cfg(feature = "axum")]
        if let Some(nested) = req.extensions().get::<axum::extract::NestedPath>() {
            // A `route_service` inside a nested router also sees a
            // `NestedPath` (the outer one) and a stripped path; there, the
            // route it was matched by is that path and nothing more.
            let path = req.uri().path();
            let routed_here = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .is_some_and(|matched| {
                    let prefix = nested.as_str().trim_end_matches('/');
                    // `nest_service(M, ..)` itself matches `M/` as a route
                    // of that name: that is the nest, not a route below it.
                    matched.as_str().strip_prefix(prefix) == Some(path)
                        && matched.as_str().trim_end_matches('/') != prefix
                });
            if !routed_here {
                return (Self::below(path), Some(nested.as_str()));
            }
        }
        // Mounted on `.../summary` itself (`route_service("/v1/usage/summary", ..)`):
        // the summary; on any other path, the list.
        if req.uri().path().trim_end_matches('/').ends_with("/summary") {
            return (Self::Summary, None);
        }
        (Self::List, None)
    }

    /// The target of a path below the mount point (`""`, `/`, `/summary`, ...).
    pub(super) fn below(path: &'a str) -> Self {
        match path {
            "" | "/" => Self::List,
            "/summary" => Self::Summary,
            "/openapi.json" => Self::OpenApi,
            _ => match path.strip_prefix('/') {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::Record(id),
                _ => Self::NotFound,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn paths_below_the_mount_point() {
        assert_eq!(Target::below(""), Target::List);
        assert_eq!(Target::below("/"), Target::List);
        assert_eq!(Target::below("/summary"), Target::Summary);
        assert_eq!(Target::below("/openapi.json"), Target::OpenApi);
        assert_eq!(
            Target::below("/01GPE5J0X7ABCDEFGHJKMNPQRS"),
            Target::Record("01GPE5J0X7ABCDEFGHJKMNPQRS")
        );
        assert_eq!(Target::below("/anything"), Target::Record("anything"));
        for path in ["/a/b", "/summary/", "//", "/openapi.json/x", "x"] {
            assert_eq!(Target::below(path), Target::NotFound, "{path}");
        }
    }

    #[test]
    fn outside_a_nest_every_path_is_the_list_but_a_summary() {
        for path in [
            "/v1/usage",
            "/v1/usage/01ABC",
            "/v1/usage/openapi.json",
            "/",
        ] {
            let req = http::Request::get(path).body(()).unwrap();
            assert_eq!(Target::of(&req, None), (Target::List, None), "{path}");
        }
        // `route_service("/v1/usage/summary", ..)`: the summary.
        for path in ["/v1/usage/summary", "/summary/"] {
            let req = http::Request::get(path).body(()).unwrap();
            assert_eq!(Target::of(&req, None), (Target::Summary, None), "{path}");
        }
    }

    #[test]
    fn a_mount_point_is_stripped_from_the_path() {
        let m = Some("/v1/usage");
        for (path, expected) in [
            ("/v1/usage", Target::List),
            ("/v1/usage/", Target::List),
            ("/v1/usage/summary", Target::Summary),
            ("/v1/usage/01ABC", Target::Record("01ABC")),
            ("/v1/usage2", Target::NotFound),
            ("/v1", Target::NotFound),
            ("/other/v1/usage", Target::NotFound),
        ] {
            let req = http::Request::get(path).body(()).unwrap();
            assert_eq!(Target::of(&req, m), (expected, m), "{path}");
        }
    }
}
