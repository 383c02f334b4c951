//! The OpenAPI 3.1 document of the endpoints, served at `M/openapi.json`.
//!
//! The document is written by hand (`openapi.json` next to this file) rather
//! than generated: the wire form of a record is hand-written serde
//! (`record/wire`), which a derive-based generator such as `utoipa` could not
//! see, and the crate would carry a proc-macro dependency for one static file.
//! The tests below keep it in step with the code: every parameter the service
//! parses is in it and every parameter in it is parsed, the CSV columns and
//! the record's fields match, every `$ref` resolves. Its paths are written
//! under `/usage` and served under the real mount point.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The document as written, with its paths under `/usage`.
pub(super) const SOURCE: &str = include_str!("openapi.json");

/// The prefix of the paths in [`SOURCE`].
const WRITTEN_MOUNT: &str = "/usage";

/// The document with its paths under `mount` (`/v1/usage`), as JSON bytes.
pub(super) fn document(mount: &str) -> Vec<u8> {
    static PARSED: OnceLock<Value> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        serde_json::from_str(SOURCE).expect("openapi.json is valid JSON (checked by a test)")
    });
    let mut doc = parsed.clone();
    if !mount.is_empty() {
        if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
            let moved: Map<String, Value> = std::mem::take(paths)
                .into_iter()
                .map(|(path, item)| {
                    let below = path.strip_prefix(WRITTEN_MOUNT).unwrap_or(&path);
                    (format!("{mount}{below}"), item)
                })
                .collect();
            *paths = moved;
        }
    }
    serde_json::to_vec(&doc).unwrap_or_else(|_| SOURCE.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::endpoint::export::{CSV_BODY_COLUMNS, CSV_COLUMNS};
    use crate::endpoint::params;
    use crate::UsageRecord;

    fn doc() -> Value {
        serde_json::from_str(SOURCE).unwrap()
    }

    /// Resolves a local `$ref` (`#/components/...`).
    fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        doc.pointer(pointer)
    }

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The names of an operation's parameters, `$ref`s resolved.
    fn parameter_names(doc: &Value, path: &str) -> BTreeSet<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| match p.get("$ref").and_then(Value::as_str) {
                        Some(r) => resolve(doc, r).unwrap_or(&Value::Null),
                        None => p,
                    })
                    .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn it_is_openapi_3_1_and_every_ref_resolves() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{} refs", all.len());
        for r in &all {
            assert!(resolve(&doc, r).is_some(), "unresolved $ref {r}");
        }
        for path in [
            "/usage",
            "/usage/{id}",
            "/usage/summary",
            "/usage/openapi.json",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
    }

    #[test]
    fn the_erasure_is_documented_with_every_answer() {
        let doc = doc();
        let delete = &doc["paths"]["/usage"]["delete"];
        assert_eq!(delete["parameters"][0]["name"], "consumer");
        assert_eq!(delete["parameters"][0]["required"], true);
        let codes: BTreeSet<&str> = delete["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected = ["200", "400", "401", "403", "405", "501", "503"];
        assert_eq!(codes, expected.into_iter().collect());
        // Only the list takes DELETE.
        for path in ["/usage/{id}", "/usage/summary", "/usage/openapi.json"] {
            assert!(doc["paths"][path].get("delete").is_none(), "{path}");
        }
    }

    #[test]
    fn the_list_parameters_are_the_parsers() {
        let doc = doc();
        let documented = parameter_names(&doc, "/usage");
        let parsed: BTreeSet<String> = params::names(params::Endpoint::List)
            .map(str::to_owned)
            .collect();
        for name in &parsed {
            assert!(
                documented.contains(name),
                "{name} is parsed, not documented"
            );
        }
        for name in &documented {
            assert!(parsed.contains(name), "{name} is documented, not parsed");
        }
        // The summary's, both ways too.
        let summary = parameter_names(&doc, "/usage/summary");
        let parsed: BTreeSet<String> = params::names(params::Endpoint::Summary)
            .map(str::to_owned)
            .collect();
        assert_eq!(summary, parsed, "the summary's parameters");
        assert_eq!(
            parameter_names(&doc, "/usage/{id}")
                .into_iter()
                .collect::<Vec<_>>(),
            ["id"]
        );
    }

    #[test]
    fn the_record_schema_has_the_wire_fields() {
        let doc = doc();
        let schema = &doc["components"]["schemas"]["Record"];
        let mut record = UsageRecord {
            grpc: Some(crate::GrpcCall {
                status: Some(0),
                message: Some("m".into()),
                request_messages: 1,
                response_messages: 1,
            }),
            ..UsageRecord::default()
        };
        record.capture.request_headers_cut = 1;
        record.request.body.truncated = true;
        record.response.truncated = true;
        let wire = serde_json::to_value(&record).unwrap();
        for key in wire.as_object().unwrap().keys() {
            assert!(
                schema["properties"][key].is_object(),
                "record field {key} is not documented"
            );
        }
        for key in wire["request"].as_object().unwrap().keys() {
            assert!(
                schema["properties"]["request"]["properties"][key].is_object(),
                "request.{key} is not documented"
            );
        }
        for key in schema["required"].as_array().unwrap() {
            assert!(
                wire.get(key.as_str().unwrap()).is_some(),
                "{key} is required, not sent"
            );
        }
    }

    #[test]
    fn the_csv_columns_are_documented() {
        let doc = doc();
        let text = doc["paths"]["/usage"]["get"]["responses"]["200"]["content"]["text/csv"]
            ["schema"]["description"]
            .as_str()
            .unwrap();
        for column in CSV_COLUMNS.iter().chain(CSV_BODY_COLUMNS) {
            assert!(
                text.contains(column),
                "CSV column {column} is not documented"
            );
        }
    }

    #[test]
    fn paths_move_under_the_mount_point() {
        let served: Value = serde_json::from_slice(&document("/v1/usage")).unwrap();
        let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
        assert_eq!(
            paths,
            [
                "/v1/usage",
                "/v1/usage/openapi.json",
                "/v1/usage/summary",
                "/v1/usage/{id}"
            ]
        );
    }
}
