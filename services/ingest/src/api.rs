//! `POST /v1/events`: status codes and bodies.
//!
//! - 202: every accepted event is in Kafka; the body lists each event's id.
//! - 400: invalid events, each with its index, field and what was expected;
//!   nothing is produced unless `?partial=true`, which produces the valid ones.
//! - 401 without a valid bearer token; 403 for another department's type.
//! - 413 over the body or batch limit; 415 for an unsupported content type.
//! - 503 with `Retry-After` when Kafka cannot take or acknowledge the events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use joinery_domain::{Department, EventType};
use joinery_runtime::auth::Principal;
use joinery_wire::codec::encode_value;
use joinery_wire::framing::frame;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::convert::{convert, Converted};
use crate::error::{Rejected, RequestError};
use crate::Gateway;

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    partial: bool,
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Vec<Json_>, RequestError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let text = std::str::from_utf8(body).map_err(|e| {
        RequestError::BadRequest(format!(
            "body is not valid UTF-8 (byte {}); send UTF-8 JSON",
            e.valid_up_to()
        ))
    })?;
    if ct.starts_with("application/x-ndjson") {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    RequestError::BadRequest(format!("line {} is not JSON: {e}", i + 1))
                })
            })
            .collect()
    } else if ct.starts_with("application/json") {
        match serde_json::from_str::<Json_>(text) {
            Ok(Json_::Array(items)) => Ok(items),
            Ok(one) => Ok(vec![one]),
            Err(e) => Err(RequestError::BadRequest(format!("body is not JSON: {e}; send one event object, an array of them, or NDJSON with Content-Type application/x-ndjson"))),
        }
    } else {
        Err(RequestError::UnsupportedMediaType(format!(
            "content type `{ct}` is not accepted; use application/json or application/x-ndjson"
        )))
    }
}

/// Reads the body up to `max` bytes. A larger body is still read (up to four
/// times the limit) and discarded, so that the client gets the 413 rather
/// than a connection reset halfway through its upload.
async fn read_body(body: axum::body::Body, max: usize) -> Result<Bytes, RequestError> {
    use futures::StreamExt;
    let too_large =
        || RequestError::TooLarge(format!("request body exceeds {max} bytes: split the batch"));
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RequestError::BadRequest(format!("could not read the request body: {e}"))
        })?;
        seen += chunk.len();
        if seen <= max {
            buf.extend_from_slice(&chunk);
        } else if seen > max.saturating_mul(4) {
            return Err(too_large());
        }
    }
    if seen > max {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

async fn post_events(
    State(g): State<Arc<Gateway>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    // The token is checked before a byte of the body is read: an
    // unauthenticated client cannot make the gateway read megabytes.
    let resp = match department(&g, &headers) {
        Ok(department) => match read_body(body, g.max_body).await {
            Ok(body) => handle(&g, department, params, &headers, &body).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
    .unwrap_or_else(IntoResponse::into_response);
    g.metrics
        .request_seconds
        .with_label_values(&[resp.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The department whose token the request carries.
fn department(g: &Gateway, headers: &HeaderMap) -> Result<Department, RequestError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = g
        .tokens
        .authenticate(auth)
        .ok_or(RequestError::Unauthenticated)?;
    let Principal::Department(department) = principal else {
        return Err(RequestError::Forbidden(
            "this token may not publish events; use a department token".into(),
        ));
    };
    Ok(department)
}

async fn handle(
    g: &Gateway,
    department: Department,
    params: Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, RequestError> {
    let items = parse_body(headers, body)?;
    if items.is_empty() {
        return Err(RequestError::BadRequest("no events in the body".into()));
    }
    if items.len() > g.max_batch {
        return Err(RequestError::TooLarge(format!(
            "{} events in one request; the limit is {}: split the batch",
            items.len(),
            g.max_batch
        )));
    }

    let now = chrono::Utc::now().timestamp_millis();
    let mut accepted: Vec<(usize, Converted)> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let event_id = item
            .get("event_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let typ = item
            .get("type")
            .and_then(|v| v.as_str())
            .and_then(|t| t.parse::<EventType>().ok());
        if let Some(t) = typ {
            if t.department() != department {
                return Err(RequestError::Forbidden(format!("event {index} is {t}, which only {} may publish; this token belongs to {department}", t.department())));
            }
        }
        match convert(
            item,
            |t| g.catalog.event_schema(t).clone(),
            &g.pseudonymiser,
            now,
            g.event_time_horizon,
        ) {
            Ok(c) => accepted.push((index, c)),
            Err(errors) => {
                let label = typ
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "unknown".into());
                g.metrics
                    .events
                    .with_label_values(&[department.code(), &label, "rejected", "invalid"])
                    .inc();
                rejected.push(Rejected {
                    index,
                    event_id,
                    errors,
                });
            }
        }
    }
    if !rejected.is_empty() && !params.partial {
        return Err(RequestError::InvalidEvents {
            total: items.len(),
            rejected,
        });
    }

    // Produce everything first, then wait for every acknowledgement.
    let mut pending = Vec::with_capacity(accepted.len());
    for (index, c) in accepted {
        let schema = g.catalog.event_schema(c.event_type);
        let body = match encode_value(schema, c.value) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, event_type = %c.event_type, "converted event does not match its schema");
                return Err(RequestError::Internal(
                    "internal error encoding an event; nothing further was published".into(),
                ));
            }
        };
        let payload = frame(g.schema_ids[&c.event_type], &body);
        let topic = g.kafka.topic(&c.event_type.department().topic());
        let record = FutureRecord::to(&topic)
            .key(&c.citizen_key)
            .payload(&payload);
        match g.producer.send_result(record) {
            Ok(fut) => pending.push((index, c.event_id, c.event_type, fut)),
            Err((e, _)) => {
                tracing::warn!(error = %e, "producer queue refused an event");
                return Err(RequestError::KafkaUnavailable(format!(
                    "Kafka producer queue is full ({e}); retry after the indicated delay"
                )));
            }
        }
    }
    {
        use rdkafka::producer::Producer;
        g.metrics
            .queue_depth
            .set(i64::from(g.producer.in_flight_count()));
    }
    let mut results = Vec::with_capacity(pending.len());
    let mut failed = None;
    for (index, event_id, t, fut) in pending {
        match tokio::time::timeout(g.delivery_timeout + Duration::from_secs(5), fut).await {
            Ok(Ok(Ok(_))) => {
                g.metrics
                    .events
                    .with_label_values(&[department.code(), &t.to_string(), "accepted", ""])
                    .inc();
                results.push(json!({"index": index, "event_id": event_id, "status": "accepted"}));
            }
            Ok(Ok(Err((e, _)))) => failed = Some(e.to_string()),
            Ok(Err(_)) => failed = Some("delivery cancelled".into()),
            Err(_) => {
                failed = Some(format!(
                    "no acknowledgement within {} s",
                    g.delivery_timeout.as_secs() + 5
                ))
            }
        }
    }
    if let Some(reason) = failed {
        return Err(RequestError::KafkaUnavailable(format!("Kafka did not acknowledge every event ({reason}); retry the whole request: re-sent events are applied once")));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": results.len(), "rejected": rejected, "events": results})),
    )
        .into_response())
}

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) fn router(g: Arc<Gateway>) -> Router {
    // Never a hung request: the delivery wait is bounded, and so is the whole request.
    let request_timeout = g.delivery_timeout + Duration::from_secs(10);
    Router::new()
        .route("/openapi.json", axum::routing::get(openapi))
        .route("/v1/events", post(post_events))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(g)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_str(ct).expect("valid header"),
        );
        h
    }

    #[test]
    fn deep_nesting_and_bad_utf8_are_refused_not_crashed() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let err =
            parse_body(&headers("application/json"), &Bytes::from(deep)).expect_err("too deep");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = parse_body(
            &headers("application/json"),
            &Bytes::from_static(b"{\"a\": \"\xff\"}"),
        )
        .expect_err("not UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let err = parse_body(&headers("text/csv"), &Bytes::from_static(b"a,b")).expect_err("csv");
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    fn json_value() -> impl Strategy<Value = Json_> {
        let leaf = prop_oneof![
            Just(Json_::Null),
            any::<bool>().prop_map(Json_::Bool),
            any::<i64>().prop_map(Json_::from),
            "[ -~]{0,12}".prop_map(Json_::String),
            prop_oneof![
                Just("dfe.EducationExited"),
                Just("hmrc.EmploymentStarted"),
                Just("nope")
            ]
            .prop_map(|s| Json_::String(s.into())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json_::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("event_id".to_owned()),
                        Just("nino".to_owned()),
                        Just("occurred_at".to_owned()),
                        Just("level".to_owned()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Json_::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_request_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), ndjson in any::<bool>()) {
            let ct = if ndjson { "application/x-ndjson" } else { "application/json" };
            let _ = parse_body(&headers(ct), &Bytes::from(bytes));
        }

        #[test]
        fn conversion_never_panics_and_always_explains_a_refusal(value in json_value()) {
            let catalog = joinery_wire::Catalog::load();
            let p = joinery_domain::Pseudonymiser::new(vec![3u8; 32]).expect("key");
            let text = value.to_string();
            if let Ok(items) = parse_body(&headers("application/json"), &Bytes::from(text)) {
                for item in items {
                    if let Err(errors) = convert(&item, |t| catalog.event_schema(t).clone(), &p, 0, 366 * joinery_domain::event::DAY_MS) {
                        prop_assert!(!errors.is_empty());
                        prop_assert!(errors.iter().all(|e| !e.field.is_empty() && !e.message.is_empty()));
                    }
                }
            }
        }
    }
}
