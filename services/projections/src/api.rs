//! The metrics API (JSON).
//!
//! - `GET /v1/missions`: every mission and its headline figures.
//! - `GET /v1/missions/{mission}/metrics?group_by=area|cohort_month`.
//!   Both need a bearer token: a board token (scoped to missions) gets
//!   figures under disclosure control, an operator token exact figures.
//!
//! The HTML board is in [`crate::board`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use joinery_runtime::auth::Principal;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::aggregate::{quantile, Counts, MissionMetrics, SnapshotGroup};
use crate::Shared;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A request without a valid bearer token.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token: send `Authorization: Bearer <board or operator token>`",
        )
    }
}

fn principal(s: &Shared, headers: &HeaderMap) -> Result<Principal, Unauthorized> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.tokens.authenticate(auth).ok_or(Unauthorized)
}

fn iso(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// The rate `num / den`, with disclosure control applied unless `exact`.
fn rate_json(s: &Shared, num: i64, den: i64, exact: bool) -> Value {
    json!(s.disclosure.rate(num, den, exact))
}

/// A snapshot group's figures (population, count, rate), with disclosure
/// control applied unless `exact`.
pub(crate) fn snapshot_group_json(s: &Shared, g: &SnapshotGroup, exact: bool) -> Value {
    let d = s.disclosure;
    json!({
        "population": d.count(g.population, exact),
        "count": d.count(g.holds, exact),
        "rate": rate_json(s, g.holds, g.population, exact),
    })
}

/// Every snapshot measure of a mission: its definition, the total and the
/// breakdown by area.
pub(crate) fn snapshots_json(s: &Shared, id: &str, m: &MissionMetrics, exact: bool) -> Value {
    let defs = s
        .defs
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.snapshots.as_slice())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for def in defs {
        let counts = m.snapshots.get(&def.id).cloned().unwrap_or_default();
        let mut v = snapshot_group_json(s, &counts.total, exact);
        v["doc"] = json!(def.doc);
        v["by_area"] = counts
            .by_area
            .iter()
            .map(|(area, g)| {
                let mut a = snapshot_group_json(s, g, exact);
                a["key"] = json!(area);
                a
            })
            .collect();
        out.insert(def.id.clone(), v);
    }
    Value::Object(out)
}

/// One group's figures, with disclosure control applied unless `exact`.
pub(crate) fn counts_json(s: &Shared, c: &Counts, exact: bool) -> Value {
    let d = s.disclosure;
    let mut outcomes = serde_json::Map::new();
    for (name, o) in &c.outcomes {
        let decided = o.achieved + o.not_achieved;
        let rate = rate_json(s, o.achieved, decided, exact);
        let n: i64 = o.durations.values().sum();
        let durations = if d.withholds(n, exact) || n == 0 {
            json!({"median_days": null, "p90_days": null, "withheld": d.withholds(n, exact), "method": "exact nearest-rank over whole days", "error_bound_days": 0})
        } else {
            json!({"median_days": quantile(&o.durations, 0.5), "p90_days": quantile(&o.durations, 0.9), "withheld": false, "method": "exact nearest-rank over whole days", "error_bound_days": 0})
        };
        outcomes.insert(
            name.clone(),
            json!({
                "achieved": d.count(o.achieved, exact),
                "not_achieved": d.count(o.not_achieved, exact),
                "pending": d.count(o.pending, exact),
                "provisional": d.count(o.pending, exact),
                "final": d.count(decided, exact),
                "rate": rate,
                "days_to_achieve": durations,
            }),
        );
    }
    json!({"cohort": d.count(c.cohort, exact), "outcomes": outcomes})
}

pub(crate) fn headline(s: &Shared, id: &str, m: &MissionMetrics, exact: bool) -> Value {
    let def = s.defs.iter().find(|d| d.id == id);
    json!({
        "mission": id,
        "title": def.map(|d| d.title.as_str()),
        "doc": def.map(|d| d.doc.as_str()),
        "outcome_definitions": def.map(|d| d.outcomes.iter().map(|o| json!({"id": o.id, "doc": o.doc})).collect::<Vec<_>>()),
        "exact": exact,
        "disclosure": if exact { Value::Null } else { json!({"rule": "counts under threshold suppressed, others rounded", "threshold": s.disclosure.threshold, "rounding": s.disclosure.rounding}) },
        "watermark": iso(m.watermark),
        "updated_at": iso(m.updated_at),
        "total": counts_json(s, &m.total, exact),
        "snapshots": snapshots_json(s, id, m, exact),
        "rebuilding": m.rebuilding.as_ref().map(|r| json!({
            "rebuild": r.id,
            "started_at": iso(r.started_at),
            "partitions": r.partitions,
            "partitions_complete": r.complete.len(),
        })),
    })
}

async fn list(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let p = match principal(&s, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let metrics = s.metrics.read().expect("lock");
    let exact = p == Principal::Operator;
    let missions: Vec<Value> = s
        .missions
        .iter()
        .filter(|m| p.may_read(m))
        .map(|m| headline(&s, m, &metrics[m], exact))
        .collect();
    Json(json!({ "missions": missions })).into_response()
}

#[derive(Deserialize)]
struct MetricsQuery {
    group_by: Option<String>,
    /// First cohort month (YYYY-MM) to include.
    from: Option<String>,
    /// Last cohort month (YYYY-MM) to include.
    to: Option<String>,
}

fn month(name: &str, value: Option<&str>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(v)
            if v.len() == 7
                && chrono::NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d").is_ok() =>
        {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(format!(
            "`{name}={v}` is not a cohort month; use YYYY-MM, e.g. {name}=2026-01"
        )),
    }
}

async fn mission_metrics(
    State(s): State<Arc<Shared>>,
    Path(mission): Path<String>,
    Query(q): Query<MetricsQuery>,
    headers: HeaderMap,
) -> Response {
    let p = match principal(&s, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let metrics = s.metrics.read().expect("lock");
    let Some(m) = metrics.get(&mission) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown mission `{mission}`; known missions: {}",
                s.missions.join(", ")
            ),
        );
    };
    if !p.may_read(&mission) {
        return error(
            StatusCode::FORBIDDEN,
            format!("this token may not read mission `{mission}`"),
        );
    }
    let exact = p == Principal::Operator;
    let (from, to) = match (
        month("from", q.from.as_deref()),
        month("to", q.to.as_deref()),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return error(StatusCode::BAD_REQUEST, format!("from={f} is after to={t}"));
        }
    }
    let in_range = |k: &String| {
        k != "unknown" && from.as_ref().is_none_or(|f| k >= f) && to.as_ref().is_none_or(|t| k <= t)
    };
    let ranged = from.is_some() || to.is_some();
    let mut body = headline(&s, &mission, m, exact);
    if ranged {
        let mut total = Counts::default();
        for (_, c) in m.by_month.iter().filter(|(k, _)| in_range(k)) {
            total.merge(c);
        }
        body["total"] = counts_json(&s, &total, exact);
        body["from"] = json!(from);
        body["to"] = json!(to);
    }
    let by_month_in_range: std::collections::BTreeMap<String, Counts> = m
        .by_month
        .iter()
        .filter(|(k, _)| !ranged || in_range(k))
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    let areas_in_range: std::collections::BTreeMap<String, Counts> = if ranged {
        m.by_area_month
            .iter()
            .filter_map(|(area, months)| {
                let mut sum = Counts::default();
                for (_, c) in months.iter().filter(|(k, _)| in_range(k)) {
                    sum.merge(c);
                }
                (sum.cohort != 0).then(|| (area.clone(), sum))
            })
            .collect()
    } else {
        Default::default()
    };
    let groups = match q.group_by.as_deref() {
        None => None,
        Some("area") if ranged => Some(&areas_in_range),
        Some("area") => Some(&m.by_area),
        Some("cohort_month") => Some(&by_month_in_range),
        Some(other) => {
            return error(StatusCode::BAD_REQUEST, format!("group_by `{other}` is not supported; use group_by=area or group_by=cohort_month"));
        }
    };
    if let Some(groups) = groups {
        body["group_by"] = json!(q.group_by);
        body["groups"] = groups
            .iter()
            .map(|(k, c)| {
                let mut v = counts_json(&s, c, exact);
                v["key"] = json!(k);
                v
            })
            .collect();
    }
    Json(body).into_response()
}

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/missions", get(list))
        .route("/v1/missions/{mission}/metrics", get(mission_metrics))
        .with_state(s)
}
