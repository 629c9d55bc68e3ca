//! The mission board: HTML pages for mission-board readers, built with the
//! GOV.UK Design System (`govuk-frontend`, served from the directory in
//! [`crate::ProjectionsConfig::board_assets`]).
//!
//! - `GET /`: every mission with its headline figures.
//! - `GET /missions/{mission}`: headline outcome rates, provisional share,
//!   trend by cohort month and breakdown by area, each as an SVG chart with
//!   a table beside it (the tables are the accessible fallback and need no
//!   JavaScript), and when the figures were last updated.
//! - `GET /board.js`: refreshes the figures in place every `?refresh=`
//!   seconds (default 15) and announces the update to screen readers.
//!
//! Every figure is a value of the metrics API's types
//! ([`crate::api::response`]) built for a board reader, so under disclosure
//! control, and the page and the API cannot disagree. The pages are the
//! askama templates in `templates/`, which escape every value they are
//! given. The board needs no token: after the 10-5 rule its figures are fit
//! for publication.

mod chart;
mod format;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tower_http::services::ServeDir;

use crate::aggregate::{MissionMetrics, OutcomeCounts};
use crate::api::headline;
use crate::api::response::{
    Audience, Counts, DisclosureRule, Mission, Outcome, Snapshot, SnapshotGroup,
};
use crate::disclosure::Count;
use crate::Shared;
use chart::{Bar, Chart};
use format::{
    area_label, count, date, date_time, days_to_achieve, dom_id, month_label, provisional_share,
    rate, Shown,
};

const SCRIPT: &str = include_str!("../board/board.js");

/// One defined outcome and its figures in a group; an outcome nobody in
/// the group is counted for has zero figures.
fn outcome_in(c: &Counts, id: &str, audience: Audience) -> Outcome {
    c.outcomes
        .get(id)
        .cloned()
        .unwrap_or_else(|| Outcome::new(&OutcomeCounts::default(), audience))
}

/// A mission as the board shows it: its published figures and each
/// defined outcome's total.
#[derive(Debug)]
struct MissionView {
    /// The figures, as the metrics API sends them to a board reader.
    figures: Mission,
    /// Each defined outcome, in definition order.
    outcomes: Vec<OutcomeView>,
}

/// One defined outcome of a mission.
#[derive(Debug)]
struct OutcomeView {
    /// Outcome id.
    id: joinery_domain::OutcomeId,
    /// Its description, the heading it is shown under.
    doc: String,
    /// Whether a lower rate is the better one.
    lower_is_better: bool,
    /// Its figures for the whole cohort.
    total: Outcome,
}

impl MissionView {
    fn new(s: &Shared, id: &str, m: &MissionMetrics, audience: Audience) -> MissionView {
        let figures = headline(s, id, m, audience);
        let outcomes = figures
            .outcome_definitions
            .iter()
            .flatten()
            .map(|o| OutcomeView {
                id: o.id.clone(),
                doc: o.doc.clone(),
                lower_is_better: o.better == joinery_engine::definition::Better::Lower,
                total: outcome_in(&figures.total, &o.id, audience),
            })
            .collect();
        MissionView { figures, outcomes }
    }

    /// The mission's title, or its id when the definition is missing.
    fn title(&self) -> &str {
        self.figures
            .title
            .as_deref()
            .unwrap_or(&self.figures.mission)
    }

    fn doc(&self) -> &str {
        self.figures.doc.as_deref().unwrap_or_default()
    }

    /// The event time the figures are final up to.
    fn correct_up_to(&self) -> String {
        self.figures
            .watermark
            .map_or_else(|| "– (no events yet)".into(), date)
    }

    /// When the figures last changed.
    fn updated(&self) -> String {
        self.figures
            .updated_at
            .map_or_else(|| "never".into(), date_time)
    }
}

/// `GET /`.
#[derive(Debug, Template)]
#[template(path = "index.html")]
struct IndexPage {
    /// The page title.
    title: &'static str,
    /// Seconds between in-place refreshes.
    refresh: u64,
    /// Every mission, in definition order.
    missions: Vec<MissionView>,
    /// The disclosure rule, explained under the figures.
    rule: Option<DisclosureRule>,
}

/// `GET /missions/{mission}`.
#[derive(Debug, Template)]
#[template(path = "mission.html")]
struct MissionPage {
    /// The mission's title.
    title: String,
    /// Seconds between in-place refreshes.
    refresh: u64,
    /// The mission's headline figures.
    mission: MissionView,
    /// Each defined outcome with its trend and breakdown.
    outcomes: Vec<OutcomeSection>,
    /// Each snapshot measure with its breakdown.
    snapshots: Vec<SnapshotSection>,
}

/// One outcome's section of a mission page.
#[derive(Debug)]
struct OutcomeSection {
    /// Outcome id.
    id: joinery_domain::OutcomeId,
    /// The id made safe for the section's element ids.
    dom_id: String,
    /// Its description, the section's heading.
    doc: String,
    /// Whether a lower rate is the better one.
    lower_is_better: bool,
    /// Its figures for the whole cohort.
    total: Outcome,
    /// By cohort month, then by area; each only when there are groups.
    breakdowns: Vec<Breakdown>,
}

/// An outcome's figures by group: a chart and the table with its figures.
#[derive(Debug)]
struct Breakdown {
    /// The heading above the chart.
    heading: &'static str,
    /// The table's `data-table`: `cohort_month` or `area`.
    kind: &'static str,
    /// The table's caption.
    caption: &'static str,
    /// The heading of the table's first column.
    key_header: &'static str,
    /// The chart of the rates.
    chart: Chart,
    /// One row per group.
    rows: Vec<GroupRow>,
}

/// A group's row in a breakdown table.
#[derive(Debug)]
struct GroupRow {
    /// Area code or cohort month.
    key: String,
    /// The key as the reader knows it.
    label: String,
    /// Citizens of the group in the cohort.
    cohort: Count,
    /// The outcome's figures in the group.
    outcome: Outcome,
}

/// A snapshot measure's section of a mission page.
#[derive(Debug)]
struct SnapshotSection {
    /// Snapshot id.
    id: String,
    /// The id made safe for the section's element ids.
    dom_id: String,
    /// Its figures.
    figures: Snapshot,
    /// One row per area.
    rows: Vec<AreaRow>,
    /// The chart of the rates by area; `None` without areas.
    chart: Option<Chart>,
}

/// An area's row in a snapshot table.
#[derive(Debug)]
struct AreaRow {
    /// Area code.
    key: String,
    /// The area as the reader knows it.
    label: String,
    /// The measure's figures in the area.
    figures: SnapshotGroup,
}

/// `GET /missions/{mission}` for a mission that does not exist.
#[derive(Debug, Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    /// The page title.
    title: &'static str,
    /// Seconds between in-place refreshes.
    refresh: u64,
    /// The mission asked for.
    id: &'a str,
    /// The missions there are.
    missions: &'a [String],
}

/// Renders a page, or answers 500 if a template fails (a bug: they only
/// format values).
fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a board template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct BoardQuery {
    /// Seconds between in-place refreshes (2 to 3600, default 15).
    refresh: Option<u64>,
}

impl BoardQuery {
    fn refresh(&self) -> u64 {
        self.refresh.unwrap_or(15).clamp(2, 3600)
    }
}

async fn index(State(s): State<Arc<Shared>>, Query(q): Query<BoardQuery>) -> Response {
    let audience = Audience::board(s.disclosure);
    let metrics = s.metrics.read();
    let missions: Vec<MissionView> = s
        .missions
        .iter()
        .map(|id| MissionView::new(&s, id, &metrics[id], audience))
        .collect();
    let rule = missions.first().and_then(|m| m.figures.disclosure);
    let page = IndexPage {
        title: "Mission outcomes",
        refresh: q.refresh(),
        missions,
        rule,
    };
    html(StatusCode::OK, &page)
}

fn outcome_section(
    o: &OutcomeView,
    months: &[(String, String, Counts)],
    areas: &[(String, String, Counts)],
    audience: Audience,
) -> OutcomeSection {
    let dom = dom_id(&o.id);
    let rows = |groups: &[(String, String, Counts)]| -> Vec<GroupRow> {
        groups
            .iter()
            .map(|(key, label, c)| GroupRow {
                key: key.clone(),
                label: label.clone(),
                cohort: c.cohort,
                outcome: outcome_in(c, &o.id, audience),
            })
            .collect()
    };
    let bars = |rows: &[GroupRow]| -> Vec<Bar> {
        rows.iter()
            .map(|r| Bar {
                label: r.label.clone(),
                rate: r.outcome.rate.value,
                withheld: r.outcome.rate.withheld,
            })
            .collect()
    };
    let mut breakdowns = Vec::new();
    let by_month = rows(months);
    if let Some(chart) = Chart::columns(
        format!("trend-{dom}"),
        &format!("Rate achieved by cohort month, {}", o.doc),
        &bars(&by_month),
    ) {
        breakdowns.push(Breakdown {
            heading: "Trend by cohort month",
            kind: "cohort_month",
            caption: "Outcome by cohort month (the month the citizen joined the cohort)",
            key_header: "Cohort month",
            chart,
            rows: by_month,
        });
    }
    let by_area = rows(areas);
    if let Some(chart) = Chart::bars(
        format!("area-{dom}"),
        &format!("Rate achieved by area, {}", o.doc),
        &bars(&by_area),
    ) {
        breakdowns.push(Breakdown {
            heading: "By area",
            kind: "area",
            caption: "Outcome by area (local authority district of residence)",
            key_header: "Area",
            chart,
            rows: by_area,
        });
    }
    OutcomeSection {
        id: o.id.clone(),
        dom_id: dom,
        doc: o.doc.clone(),
        lower_is_better: o.lower_is_better,
        total: o.total.clone(),
        breakdowns,
    }
}

fn snapshot_section(id: &str, s: &Snapshot) -> SnapshotSection {
    let rows: Vec<AreaRow> = s
        .by_area
        .iter()
        .map(|g| {
            let key = g.key.clone().unwrap_or_else(|| "unknown".into());
            AreaRow {
                label: area_label(&key),
                key,
                figures: g.clone(),
            }
        })
        .collect();
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: r.label.clone(),
            rate: r.figures.rate.value,
            withheld: r.figures.rate.withheld,
        })
        .collect();
    let dom = dom_id(id);
    SnapshotSection {
        id: id.to_owned(),
        chart: Chart::bars(
            format!("snapshot-{dom}"),
            &format!("Rate by area, {}", s.doc),
            &bars,
        ),
        dom_id: dom,
        figures: s.clone(),
        rows,
    }
}

async fn mission(
    State(s): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<BoardQuery>,
) -> Response {
    let metrics = s.metrics.read();
    let Some(m) = metrics.get(&id) else {
        let page = NotFoundPage {
            title: "Page not found",
            refresh: q.refresh(),
            id: &id,
            missions: &s.missions,
        };
        return html(StatusCode::NOT_FOUND, &page);
    };
    let audience = Audience::board(s.disclosure);
    let view = MissionView::new(&s, &id, m, audience);
    let months: Vec<(String, String, Counts)> = m
        .by_month
        .iter()
        .filter(|(k, _)| k.as_str() != "unknown")
        .map(|(k, c)| (k.clone(), month_label(k), Counts::new(Some(k), c, audience)))
        .collect();
    let areas: Vec<(String, String, Counts)> = m
        .by_area
        .iter()
        .map(|(k, c)| (k.clone(), area_label(k), Counts::new(Some(k), c, audience)))
        .collect();
    let page = MissionPage {
        title: view.title().to_owned(),
        refresh: q.refresh(),
        outcomes: view
            .outcomes
            .iter()
            .map(|o| outcome_section(o, &months, &areas, audience))
            .collect(),
        snapshots: view
            .figures
            .snapshots
            .iter()
            .map(|(id, s)| snapshot_section(id, s))
            .collect(),
        mission: view,
    };
    html(StatusCode::OK, &page)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// The board's routes; GOV.UK Frontend's stylesheet, scripts, fonts and
/// images are served from `assets` (its `dist/govuk` directory).
pub(crate) fn router(s: Arc<Shared>, assets: &Path) -> Router {
    if !assets.join("govuk-frontend.min.css").is_file() {
        tracing::warn!(
            dir = %assets.display(),
            "GOV.UK Frontend not found: the board is served unstyled; run deploy/local/setup (npm ci in web/) or set JOINERY_BOARD_ASSETS"
        );
    }
    Router::new()
        .route("/", get(index))
        .route("/missions/{mission}", get(mission))
        .route("/board.js", get(script))
        .nest_service("/govuk", ServeDir::new(assets))
        .nest_service("/assets", ServeDir::new(assets.join("assets")))
        .with_state(s)
}
