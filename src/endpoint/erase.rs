//! `DELETE M?consumer=<id>`: an admin erases one consumer's records (opt-in,
//! [`UsageService::allow_erasure`](super::UsageService::allow_erasure)).

use std::borrow::Cow;
use std::time::Duration;

use http::{Response, StatusCode};
use serde::Serialize;

use super::params::ParamError;
use super::response;
use super::UsageBody;
use crate::sink::UsageSink;

/// The consumer named by the query string, its only parameter.
pub(super) fn parse(raw: Option<&str>) -> Result<String, ParamError> {
    let bad = |parameter: String, message: String| ParamError {
        status: StatusCode::BAD_REQUEST,
        parameter: Some(Cow::Owned(parameter)),
        message: Cow::Owned(message),
    };
    let mut consumer = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if name != "consumer" {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(
                shown.clone(),
                format!("unknown parameter `{shown}`; DELETE takes only `consumer`"),
            ));
        }
        if consumer.is_some() {
            return Err(bad("consumer".into(), "`consumer` is given twice".into()));
        }
        if value.is_empty() {
            return Err(bad("consumer".into(), "`consumer` is empty".into()));
        }
        consumer = Some(value.into_owned());
    }
    consumer.ok_or_else(|| {
        bad(
            "consumer".into(),
            "`consumer` is required: the consumer whose records to erase".into(),
        )
    })
}

#[derive(Serialize)]
struct Erased<'a> {
    consumer: &'a str,
    erased: u64,
}

/// Erases `consumer` in `sink` within `timeout`: `200` with the count.
pub(super) async fn run<S: UsageSink>(
    sink: S,
    consumer: String,
    timeout: Duration,
) -> Response<UsageBody> {
    match tokio::time::timeout(timeout, sink.erase_consumer(&consumer)).await {
        Ok(Ok(erased)) => {
            tracing::info!(consumer = %consumer, erased, "DELETE /usage: erased a consumer's records");
            let body = serde_json::to_vec(&Erased {
                consumer: &consumer,
                erased,
            })
            .unwrap_or_default();
            response::json(StatusCode::OK, body)
        }
        Ok(Err(err)) => response::sink_error(&err),
        Err(_elapsed) => response::unavailable(),
    }
}
