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

/// Why a metrics request was refused. Every variant is the caller's to
/// fix, and says how; the figures themselves cannot fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// No bearer token, or one that is not known.
    #[error(
        "missing or invalid bearer token: send `Authorization: Bearer <board or operator token>`"
    )]
    Unauthorized,
    /// The token's principal may not read this mission.
    #[error("this token may not read mission `{0}`")]
    Forbidden(String),
    /// No mission has this id.
    #[error("unknown mission `{mission}`; known missions: {known}")]
    UnknownMission {
        /// The id asked for (shortened when long).
        mission: String,
        /// The missions that exist.
        known: String,
    },
    /// A query parameter is invalid.
    #[error("{0}")]
    BadQuery(String),
}

impl RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::Unauthorized => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::UnknownMission { .. } => StatusCode::NOT_FOUND,
            RequestError::BadQuery(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// A value from the request, shortened for an error message.
fn shown(v: &str) -> String {
    v.chars().take(40).collect()
}

fn principal(s: &Shared, headers: &HeaderMap) -> Result<Principal, RequestError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.tokens
        .authenticate(auth)
        .ok_or(RequestError::Unauthorized)
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
    let mut body = Mission::headline(id, def, m, audience);
    if !m.watermark_covers(s.coverage.partitions, |p| (s.coverage.read_through)(id, p)) {
        // A partition not yet read (or not yet announced): nothing is
        // known to be final.
        body.watermark = None;
    }
    body
}

async fn list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<MissionList>, RequestError> {
    let p = principal(&s, &headers)?;
    let metrics = s.metrics.read();
    let audience = audience(&s, &p);
    let missions = s
        .missions
        .iter()
        .filter(|m| p.may_read(m))
        .map(|m| headline(&s, m, &metrics[m], audience))
        .collect();
    Ok(Json(MissionList { missions }))
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

fn month(name: &str, value: Option<&str>) -> Result<Option<YearMonth>, RequestError> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                RequestError::BadQuery(format!(
                    "`{name}={}` is not a cohort month; use YYYY-MM, e.g. {name}=2026-01",
                    shown(v)
                ))
            })
        })
        .transpose()
}

async fn mission_metrics(
    State(s): State<Arc<Shared>>,
    Path(mission): Path<String>,
    Query(q): Query<MetricsQuery>,
    headers: HeaderMap,
) -> Result<Json<Mission>, RequestError> {
    let p = principal(&s, &headers)?;
    let metrics = s.metrics.read();
    let Some(m) = metrics.get(&mission) else {
        return Err(RequestError::UnknownMission {
            mission: shown(&mission),
            known: s.missions.join(", "),
        });
    };
    if !p.may_read(&mission) {
        return Err(RequestError::Forbidden(mission));
    }
    let audience = audience(&s, &p);
    let (from, to) = (
        month("from", q.from.as_deref())?,
        month("to", q.to.as_deref())?,
    );
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return Err(RequestError::BadQuery(format!("from={f} is after to={t}")));
        }
    }
    let group_by = match q.group_by.as_deref().map(|g| (g, GroupBy::parse(g))) {
        None => None,
        Some((_, Some(g))) => Some(g),
        Some((other, None)) => {
            return Err(RequestError::BadQuery(format!(
                "group_by `{}` is not supported; use group_by=area or group_by=cohort_month",
                shown(other)
            )));
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
    Ok(Json(body))
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
