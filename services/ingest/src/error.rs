//! Why `POST /v1/events` refused a request, classified by what the caller
//! can do about it: fix the request (4xx), send it again later (503 with
//! `Retry-After`: Kafka is slow or down; re-sent events are applied once),
//! or report a fault (500). Each answers `{"error": message}`, plus the
//! rejected events when some are invalid.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::convert::FieldError;

/// The `Retry-After` (seconds) of a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// One event of a request that did not convert, with why.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Rejected {
    /// Its position in the request.
    pub(crate) index: usize,
    /// Its `event_id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    /// Each invalid field and what was expected.
    pub(crate) errors: Vec<FieldError>,
}

/// A refused request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// No valid bearer token (401).
    #[error(
        "missing or invalid bearer token: send `Authorization: Bearer <your department's token>`"
    )]
    Unauthenticated,
    /// The token may not publish these events (403).
    #[error("{0}")]
    Forbidden(String),
    /// The body cannot be read as events (400).
    #[error("{0}")]
    BadRequest(String),
    /// Some events are invalid and nothing was published (400).
    #[error("{} of {total} events are invalid; nothing was published. Fix them, or send ?partial=true to publish the valid ones", rejected.len())]
    InvalidEvents {
        /// How many events the request held.
        total: usize,
        /// The invalid ones.
        rejected: Vec<Rejected>,
    },
    /// The body or the batch is over its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The content type is not JSON or NDJSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Kafka could not take or acknowledge the events (503, retry).
    #[error("{0}")]
    KafkaUnavailable(String),
    /// A fault of the gateway (500).
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    /// The status the request is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::Unauthenticated => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::BadRequest(_) | RequestError::InvalidEvents { .. } => {
                StatusCode::BAD_REQUEST
            }
            RequestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::KafkaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut response = match self {
            RequestError::InvalidEvents { rejected, .. } => (
                status,
                Json(json!({"error": message, "rejected": rejected})),
            )
                .into_response(),
            _ => (status, Json(json!({ "error": message }))).into_response(),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kafka_failure_asks_the_client_to_retry() {
        let retry = RequestError::KafkaUnavailable("queue full".into()).into_response();
        assert_eq!(retry.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            retry.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("5"))
        );
        for e in [
            RequestError::Unauthenticated,
            RequestError::BadRequest("no events in the body".into()),
            RequestError::Internal("encoding".into()),
        ] {
            let r = e.into_response();
            assert!(r.status().is_client_error() || r.status().is_server_error());
            assert!(r.headers().get(header::RETRY_AFTER).is_none(), "{r:?}");
        }
    }
}
