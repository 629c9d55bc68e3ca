//! The metrics API (JSON).
//!
//! - `GET /v1/missions`: every mission and its headline figures.
//! - `GET /v1/missions/{mission}/metrics?group_by=area|cohort_month`.
//!   Both need a bearer token: a board token (scoped to missions) gets
//!   figures under disclosure control, an operator token exact figures.
//!
//! The bodies are the types of [`response`]; the HTML board
//! ([`crate::board`]) renders the same types.

pub(crate) mod response;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use joinery_domain::YearMonth;
use joinery_runtime::auth::Principal;
use serde::Deserialize;

use crate::aggregate::{Counts, MissionMetrics};
use crate::Shared;
use response::{ApiError, Audience, GroupBy, Grouped, Mission, MissionList};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: message.into(),
    };
    (status, Json(body)).into_response()
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

/// Whom a principal's figures are for: operators get exact figures, every
/// other reader figures under disclosure control.
fn audience(s: &Shared, p: &Principal) -> Audience {
    if *p == Principal::Operator {
        Audience::operator(s.disclosure)
    } else {
        Audience::board(s.disclosure)
    }
}

/// A mission's headline figures for `audience` (its definition looked up).
pub(crate) fn headline(s: &Shared, id: &str, m: &MissionMetrics, audience: Audience) -> Mission {
    let def = s.defs.iter().find(|d| d.id == id);
    Mission::headline(id, def, m, audience)
}

async fn list(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let p = match principal(&s, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let metrics = s.metrics.read();
    let audience = audience(&s, &p);
    let missions = s
        .missions
        .iter()
        .filter(|m| p.may_read(m))
        .map(|m| headline(&s, m, &metrics[m], audience))
        .collect();
    Json(MissionList { missions }).into_response()
}

#[derive(Deserialize)]
struct MetricsQuery {
    /// `area` or `cohort_month`; anything else is refused with a message.
    group_by: Option<String>,
    /// First cohort month (YYYY-MM) to include.
    from: Option<String>,
    /// Last cohort month (YYYY-MM) to include.
    to: Option<String>,
}

fn month(name: &str, value: Option<&str>) -> Result<Option<YearMonth>, String> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                let shown: String = v.chars().take(24).collect();
                format!("`{name}={shown}` is not a cohort month; use YYYY-MM, e.g. {name}=2026-01")
            })
        })
        .transpose()
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
    let metrics = s.metrics.read();
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
    let audience = audience(&s, &p);
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
    let group_by = match q.group_by.as_deref().map(|g| (g, GroupBy::parse(g))) {
        None => None,
        Some((_, Some(g))) => Some(g),
        Some((other, None)) => {
            return error(StatusCode::BAD_REQUEST, format!("group_by `{other}` is not supported; use group_by=area or group_by=cohort_month"));
        }
    };
    // Group keys are the months' text; `unknown` (no anchor month) is in no range.
    let in_range = |k: &String| {
        k.parse::<YearMonth>()
            .is_ok_and(|k| from.is_none_or(|f| k >= f) && to.is_none_or(|t| k <= t))
    };
    let ranged = from.is_some() || to.is_some();
    let mut body = headline(&s, &mission, m, audience);
    if ranged {
        let mut total = Counts::default();
        for (_, c) in m.by_month.iter().filter(|(k, _)| in_range(k)) {
            total.merge(c);
        }
        body.total = response::Counts::new(None, &total, audience);
        body.from = Some(from);
        body.to = Some(to);
    }
    let groups: Option<BTreeMap<&String, Counts>> = match group_by {
        None => None,
        Some(GroupBy::Area) if ranged => Some(
            m.by_area_month
                .iter()
                .filter_map(|(area, months)| {
                    let mut sum = Counts::default();
                    for (_, c) in months.iter().filter(|(k, _)| in_range(k)) {
                        sum.merge(c);
                    }
                    (sum.cohort != 0).then_some((area, sum))
                })
                .collect(),
        ),
        Some(GroupBy::Area) => Some(m.by_area.iter().map(|(k, c)| (k, c.clone())).collect()),
        Some(GroupBy::CohortMonth) => Some(
            m.by_month
                .iter()
                .filter(|(k, _)| !ranged || in_range(k))
                .map(|(k, c)| (k, c.clone()))
                .collect(),
        ),
    };
    if let (Some(group_by), Some(groups)) = (group_by, groups) {
        body.grouped = Some(Grouped {
            group_by,
            groups: groups
                .iter()
                .map(|(k, c)| response::Counts::new(Some(k), c, audience))
                .collect(),
        });
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
