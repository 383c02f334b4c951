//! Route params as a JSON column: `[[name, value], ...]`, in order.

use serde_json::Value;

use crate::{SinkError, SinkErrorKind};

/// Encodes route params as `[[name, value], ...]`, in order.
pub(crate) fn to_json(params: &[(String, String)]) -> Value {
    Value::Array(
        params
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), Value::String(v.clone())]))
            .collect(),
    )
}

/// Decodes what [`to_json`] wrote.
pub(crate) fn from_json(value: &Value) -> Result<Vec<(String, String)>, SinkError> {
    let corrupt = || {
        SinkError::message(
            SinkErrorKind::Corrupt,
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
    fn params_round_trip() {
        let p = vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        assert_eq!(from_json(&to_json(&p)).unwrap(), p);
    }
}
