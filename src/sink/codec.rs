//! Column encodings shared by the SQL sinks: header maps and route params as JSON
//! documents that keep every byte and every repeat.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::SinkError;

/// Encodes headers as `[[name, value], ...]` in order, repeats kept; a value that
/// is not UTF-8 is stored as `{"b64": "..."}`.
pub(crate) fn headers_to_json(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let v = match value.to_str() {
                    Ok(s) => Value::String(s.to_owned()),
                    Err(_) => serde_json::json!({
                        "b64": base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
                    }),
                };
                Value::Array(vec![Value::String(name.as_str().to_owned()), v])
            })
            .collect(),
    )
}

/// Decodes what [`headers_to_json`] wrote.
pub(crate) fn headers_from_json(value: &Value) -> Result<HeaderMap, SinkError> {
    let corrupt = |what: &str| {
        SinkError::message(
            crate::SinkErrorKind::Corrupt,
            format!("stored headers: {what}"),
        )
    };
    let items = value.as_array().ok_or_else(|| corrupt("not an array"))?;
    let mut map = HeaderMap::with_capacity(items.len());
    for item in items {
        let (name, v) = match item.as_array().map(Vec::as_slice) {
            Some([Value::String(n), v]) => (n, v),
            _ => return Err(corrupt("entry is not [name, value]")),
        };
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| corrupt(&format!("bad name {name:?}: {e}")))?;
        let bad = |why: &dyn std::fmt::Display| corrupt(&format!("bad value of {name:?}: {why}"));
        let value = match v {
            Value::String(s) => HeaderValue::from_str(s).map_err(|e| bad(&e))?,
            Value::Object(o) => {
                let b64 = o
                    .get("b64")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&"an object without a `b64` string"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| bad(&e))?;
                HeaderValue::from_bytes(&bytes).map_err(|e| bad(&e))?
            }
            other => return Err(bad(&format!("neither a string nor an object: {other}"))),
        };
        map.append(header, value);
    }
    Ok(map)
}

/// Encodes route params as `[[name, value], ...]`, in order.
pub(crate) fn params_to_json(params: &[(String, String)]) -> Value {
    Value::Array(
        params
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), Value::String(v.clone())]))
            .collect(),
    )
}

/// Decodes what [`params_to_json`] wrote.
pub(crate) fn params_from_json(value: &Value) -> Result<Vec<(String, String)>, SinkError> {
    let corrupt = || {
        SinkError::message(
            crate::SinkErrorKind::Corrupt,
            "stored params: not [[name, value], ...]",
        )
    };
    value
        .as_array()
        .ok_or_else(corrupt)?
        .iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(corrupt()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_repeats_and_opaque_bytes() {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("x-raw", HeaderValue::from_bytes(&[0xff, b'a']).unwrap());
        let back = headers_from_json(&headers_to_json(&h)).unwrap();
        assert_eq!(back, h);
        assert!(headers_from_json(&serde_json::json!({"a": 1})).is_err());
    }

    #[test]
    fn params_round_trip() {
        let p = vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        assert_eq!(params_from_json(&params_to_json(&p)).unwrap(), p);
    }
}
