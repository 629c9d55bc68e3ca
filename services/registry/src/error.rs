//! What can go wrong in the registry, classified by what the caller can do
//! about it: fix the request (4xx), retry later (503: Kafka, behind the
//! log, is slow or down), or report a fault (500). Every error answers with
//! Confluent's JSON body (`error_code`, `message`), so Confluent clients
//! read it.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the schema log could not take a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The record did not serialise (a bug: every record is plain data).
    #[error("cannot encode the log record: {0}")]
    Encode(#[source] serde_json::Error),
    /// Kafka did not acknowledge the write. Retryable.
    #[error("writing to {topic}: {source}")]
    Write {
        /// The schema topic.
        topic: String,
        /// Kafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The write was acknowledged but the tail did not apply it in time
    /// (a slow broker). Retryable: a retry finds the registered schema.
    #[error("{topic} record {offset} was written but not read back within {} s", within.as_secs())]
    NotReadBack {
        /// The schema topic.
        topic: String,
        /// The record's offset.
        offset: i64,
        /// How long the tail was given.
        within: Duration,
    },
    /// The tail is gone: the registry is stopping or has failed.
    #[error("the {topic} reader stopped")]
    ReaderStopped {
        /// The schema topic.
        topic: String,
    },
}

impl LogError {
    /// True when the same request may succeed later.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, LogError::Write { .. } | LogError::NotReadBack { .. })
    }
}

/// A request the registry did not fulfil, with the status and Confluent
/// error code it answers with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is wrong (422): a body that is not a schema or a level,
    /// a version that is not a version. `code` is Confluent's (42201
    /// invalid schema, 42202 invalid version, 42203 invalid level).
    #[error("{message}")]
    Invalid {
        /// Confluent's error code.
        code: u32,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// What the request names does not exist (404). `code` is Confluent's
    /// (40401 subject, 40402 version, 40403 schema, 40408 subject config).
    #[error("{message}")]
    NotFound {
        /// Confluent's error code.
        code: u32,
        /// What was not found.
        message: String,
    },
    /// The schema breaks the subject's compatibility level (409).
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", problems.join("; "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Each incompatibility, naming the field and the rule.
        problems: Vec<String>,
    },
    /// Registrations by other instances kept landing first (503: retry).
    #[error("Register operation timed out: concurrent registrations kept winning; retry")]
    RegisterContended,
    /// The schema log could not take the change (503 when retryable,
    /// else 500).
    #[error("Error in the backend data store: {0}")]
    Backend(#[from] LogError),
}

impl ApiError {
    /// 422 with Confluent's `code`.
    pub(crate) fn invalid(code: u32, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// 404 with Confluent's `code`.
    pub(crate) fn not_found(code: u32, message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status and Confluent error code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            ApiError::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, *code),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, *code),
            ApiError::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            ApiError::RegisterContended => (StatusCode::SERVICE_UNAVAILABLE, 50002),
            ApiError::Backend(e) if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, 50001),
            ApiError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

/// The registry's content type.
pub(crate) const CT: &str = "application/vnd.schemaregistry.v1+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, CT)],
            json!({"error_code": code, "message": self.to_string()}).to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_tells_the_caller_what_to_do() {
        let write = LogError::Write {
            topic: "_joinery_schemas".into(),
            source: rdkafka::error::KafkaError::Canceled,
        };
        let stopped = LogError::ReaderStopped {
            topic: "_joinery_schemas".into(),
        };
        let cases = [
            (ApiError::invalid(42201, "Invalid schema"), 422, 42201),
            (ApiError::not_found(40403, "Schema not found"), 404, 40403),
            (
                ApiError::Incompatible {
                    subject: "s".into(),
                    problems: vec!["field x".into()],
                },
                409,
                409,
            ),
            (ApiError::RegisterContended, 503, 50002),
            (ApiError::Backend(write), 503, 50001),
            (ApiError::Backend(stopped), 500, 50001),
        ];
        for (e, status, code) in cases {
            let (s, c) = e.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{e}");
        }
    }
}
