//! The Confluent Schema Registry REST endpoints and their error shapes.

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::log::{canonical, SchemaLog};
use crate::state::State;

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) log: SchemaLog,
}

const CT: &str = "application/vnd.schemaregistry.v1+json";

struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, CT)],
            Json(json!({"error_code": self.code, "message": self.message})).to_string(),
        )
            .into_response()
    }
}

fn ok(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, CT)], body.to_string()).into_response()
}

#[derive(Deserialize)]
struct RegisterBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

fn parse_body(body: &[u8]) -> Result<RegisterBody, ApiError> {
    let b: RegisterBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("request body must be JSON {{\"schema\": \"<Avro schema as a string>\"}}: {e}"),
        )
    })?;
    if let Some(t) = &b.schema_type {
        if t != "AVRO" {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("schemaType {t} is not supported; Joinery's registry holds AVRO schemas"),
            ));
        }
    }
    Ok(b)
}

fn canonical_or_422(schema: &str) -> Result<String, ApiError> {
    canonical(schema).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {e}"),
        )
    })
}

async fn register(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b = parse_body(&body)?;
    let canon = canonical_or_422(&b.schema)?;
    let mut state = s.state.lock().await;
    if let Some((_, id)) = state.find(&subject, &canon) {
        return Ok(ok(json!({ "id": id })));
    }
    let record = state.next_record(&subject, &b.schema, &canon);
    s.log.append(&record).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("Error in the backend data store: {e:#}"),
        )
    })?;
    let id = record.id;
    tracing::info!(subject = %record.subject, version = record.version, id, "registered schema");
    state.apply(record, canon);
    Ok(ok(json!({ "id": id })))
}

async fn lookup(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b = parse_body(&body)?;
    let canon = canonical_or_422(&b.schema)?;
    let state = s.state.lock().await;
    if state.versions(&subject).is_none() {
        return Err(subject_not_found(&subject));
    }
    let (version, id) = state
        .find(&subject, &canon)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, 40403, "Schema not found"))?;
    Ok(ok(
        json!({"subject": subject, "version": version, "id": id, "schema": state.schema(id)}),
    ))
}

fn subject_not_found(subject: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        40401,
        format!("Subject '{subject}' not found."),
    )
}

async fn schema_by_id(
    AxState(s): AxState<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let state = s.state.lock().await;
    let schema = id
        .parse::<u32>()
        .ok()
        .and_then(|id| state.schema(id))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, 40403, "Schema not found"))?;
    Ok(ok(json!({ "schema": schema })))
}

async fn subjects(AxState(s): AxState<Arc<Shared>>) -> Response {
    ok(json!(s.state.lock().await.subjects()))
}

async fn versions(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let state = s.state.lock().await;
    let v = state
        .versions(&subject)
        .ok_or_else(|| subject_not_found(&subject))?;
    Ok(ok(json!(v.iter().map(|(v, _)| v).collect::<Vec<_>>())))
}

async fn version(
    AxState(s): AxState<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = s.state.lock().await;
    let versions = state
        .versions(&subject)
        .ok_or_else(|| subject_not_found(&subject))?;
    let found = if version == "latest" || version == "-1" {
        versions.last().copied()
    } else {
        let v: u32 = version.parse().map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42202, format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""))
        })?;
        versions.iter().copied().find(|(x, _)| *x == v)
    };
    let (v, id) = found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        )
    })?;
    Ok(ok(
        json!({"subject": subject, "version": v, "id": id, "schema": state.schema(id)}),
    ))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(shared)
}
