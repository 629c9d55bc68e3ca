//! The Confluent Schema Registry REST endpoints, with Confluent's JSON
//! shapes and error codes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat::{self, Level};
use crate::error::{ApiError, CT};
use crate::log::SchemaLog;
use crate::state::{parse, LogRecord, State, Version};

pub(crate) struct Shared {
    pub(crate) log: SchemaLog,
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: Value) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, CT)], body.to_string()).into_response())
}

fn subject_not_found(subject: &str) -> ApiError {
    ApiError::not_found(40401, format!("Subject '{subject}' not found."))
}

fn schema_not_found() -> ApiError {
    ApiError::not_found(40403, "Schema not found")
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

fn schema_body(body: &[u8]) -> Result<(SchemaBody, apache_avro::Schema, String), ApiError> {
    let b: SchemaBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(42201, format!("Invalid schema: the body must be JSON {{\"schema\": \"<Avro schema as a JSON string>\"}}: {e}"))
    })?;
    if let Some(t) = b.schema_type.as_deref().filter(|t| *t != "AVRO") {
        return Err(ApiError::invalid(
            42201,
            format!(
                "Invalid schema: schemaType {t} is not supported; this registry holds AVRO schemas"
            ),
        ));
    }
    let (parsed, canonical) =
        parse(&b.schema).map_err(|e| ApiError::invalid(42201, format!("Invalid schema: {e}")))?;
    Ok((b, parsed, canonical))
}

fn version_of(state: &State, subject: &str, version: &str) -> Result<Version, ApiError> {
    let versions = state
        .versions(subject)
        .ok_or_else(|| subject_not_found(subject))?;
    if version == "latest" || version == "-1" {
        return Ok(*versions.last().expect("versions() is never empty"));
    }
    let v: u32 = version.parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::invalid(42202, format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""))
    })?;
    versions
        .into_iter()
        .find(|x| x.version == v)
        .ok_or_else(|| ApiError::not_found(40402, format!("Version {v} not found.")))
}

fn version_json(state: &State, subject: &str, v: Version) -> Value {
    json!({"subject": subject, "version": v.version, "id": v.id, "schema": state.schema(v.id).map(|s| s.text.as_str())})
}

fn incompatibilities(
    state: &State,
    level: Level,
    new: &apache_avro::Schema,
    against: &[Version],
) -> Vec<String> {
    let existing: Vec<(u32, &apache_avro::Schema)> = against
        .iter()
        .filter_map(|v| state.schema(v.id).map(|s| (v.version, &s.parsed)))
        .collect();
    compat::check(level, new, &existing)
}

async fn register(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (b, parsed, canonical) = schema_body(&body)?;
    for _ in 0..5 {
        let proposal = {
            let state = s.log.state.lock();
            if let Some(v) = state.find(&subject, &canonical) {
                return ok(json!({"id": v.id}));
            }
            let level = state.level(&subject);
            let versions = state.versions(&subject).unwrap_or_default();
            let problems = incompatibilities(&state, level, &parsed, &versions);
            if !problems.is_empty() {
                return Err(ApiError::Incompatible { subject, problems });
            }
            state.proposal(&subject, &b.schema, &canonical)
        };
        s.log.append(&proposal).await?;
        let state = s.log.state.lock();
        if let Some(v) = state.find(&subject, &canonical) {
            tracing::info!(%subject, version = v.version, id = v.id, "registered schema");
            return ok(json!({"id": v.id}));
        }
        // Another instance's registration landed first; look again.
    }
    Err(ApiError::RegisterContended)
}

async fn lookup(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (_, _, canonical) = schema_body(&body)?;
    let state = s.log.state.lock();
    if state.versions(&subject).is_none() {
        return Err(subject_not_found(&subject));
    }
    let v = state
        .find(&subject, &canonical)
        .ok_or_else(schema_not_found)?;
    ok(version_json(&state, &subject, v))
}

/// The text of schema `id` (as it appears in the path), or 40403.
fn schema_text(s: &Shared, id: &str) -> Result<String, ApiError> {
    let state = s.log.state.lock();
    id.parse::<u32>()
        .ok()
        .and_then(|id| state.schema(id))
        .map(|stored| stored.text.clone())
        .ok_or_else(schema_not_found)
}

async fn schema_by_id(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    ok(json!({"schema": schema_text(&s, &id)?}))
}

async fn raw_schema_by_id(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, CT)], schema_text(&s, &id)?).into_response())
}

async fn schema_versions(AxState(s): AxState<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let state = s.log.state.lock();
    let id = id
        .parse::<u32>()
        .ok()
        .filter(|id| state.schema(*id).is_some())
        .ok_or_else(schema_not_found)?;
    let usages: Vec<Value> = state
        .usages(id)
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    ok(json!(usages))
}

async fn subjects(AxState(s): AxState<Arc<Shared>>) -> ApiResult {
    ok(json!(s.log.state.lock().subjects()))
}

async fn versions(AxState(s): AxState<Arc<Shared>>, Path(subject): Path<String>) -> ApiResult {
    let state = s.log.state.lock();
    let v = state
        .versions(&subject)
        .ok_or_else(|| subject_not_found(&subject))?;
    ok(json!(v.iter().map(|v| v.version).collect::<Vec<_>>()))
}

async fn get_version(
    AxState(s): AxState<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let state = s.log.state.lock();
    let v = version_of(&state, &subject, &version)?;
    ok(version_json(&state, &subject, v))
}

async fn delete_version(
    AxState(s): AxState<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let record = {
        let state = s.log.state.lock();
        let v = version_of(&state, &subject, &version)?;
        let text = state
            .schema(v.id)
            .map(|x| x.text.clone())
            .unwrap_or_default();
        LogRecord::Schema {
            subject: subject.clone(),
            version: v.version,
            id: v.id,
            schema: text,
            deleted: true,
        }
    };
    s.log.append(&record).await?;
    match record {
        LogRecord::Schema { version, .. } => ok(json!(version)),
        LogRecord::Config { .. } => unreachable!("built as a schema record above"),
    }
}

#[derive(Deserialize)]
struct CompatQuery {
    #[serde(default)]
    verbose: bool,
}

async fn test_compatibility(
    AxState(s): AxState<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<CompatQuery>,
    body: Bytes,
) -> ApiResult {
    let (_, parsed, _) = schema_body(&body)?;
    let state = s.log.state.lock();
    let level = state.level(&subject);
    let all = state
        .versions(&subject)
        .ok_or_else(|| subject_not_found(&subject))?;
    let against = if version == "latest" || version == "-1" {
        all
    } else {
        vec![version_of(&state, &subject, &version)?]
    };
    let messages = incompatibilities(&state, level, &parsed, &against);
    let mut body = json!({"is_compatible": messages.is_empty()});
    if q.verbose || !messages.is_empty() {
        body["messages"] = json!(messages);
    }
    ok(body)
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn level_body(body: &[u8]) -> Result<Level, ApiError> {
    let b: ConfigBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(42203, format!("Invalid compatibility level: the body must be JSON {{\"compatibility\": \"BACKWARD_TRANSITIVE\"}}: {e}"))
    })?;
    b.compatibility
        .parse()
        .map_err(|m: String| ApiError::invalid(42203, m))
}

async fn get_global_config(AxState(s): AxState<Arc<Shared>>) -> ApiResult {
    ok(json!({"compatibilityLevel": s.log.state.lock().global_level()}))
}

async fn put_global_config(AxState(s): AxState<Arc<Shared>>, body: Bytes) -> ApiResult {
    let level = level_body(&body)?;
    s.log
        .append(&LogRecord::Config {
            subject: None,
            compatibility: level,
        })
        .await?;
    ok(json!({"compatibility": level}))
}

#[derive(Deserialize)]
struct ConfigQuery {
    #[serde(rename = "defaultToGlobal", default)]
    default_to_global: bool,
}

async fn get_subject_config(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    Query(q): Query<ConfigQuery>,
) -> ApiResult {
    let state = s.log.state.lock();
    match (state.subject_level(&subject), q.default_to_global) {
        (Some(l), _) => ok(json!({"compatibilityLevel": l})),
        (None, true) => ok(json!({"compatibilityLevel": state.global_level()})),
        (None, false) => Err(ApiError::not_found(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )),
    }
}

async fn put_subject_config(
    AxState(s): AxState<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = level_body(&body)?;
    s.log
        .append(&LogRecord::Config {
            subject: Some(subject),
            compatibility: level,
        })
        .await?;
    ok(json!({"compatibility": level}))
}

async fn mode() -> ApiResult {
    ok(json!({"mode": "READWRITE"}))
}

async fn root() -> ApiResult {
    ok(json!({}))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_compatibility),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route("/mode", get(mode))
        .with_state(shared)
}
