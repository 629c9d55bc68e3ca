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
//! Every figure comes from the same function as the JSON API
//! ([`crate::api::headline`], [`crate::api::counts_json`]) with disclosure
//! control applied, so the page and the API cannot disagree. The board needs
//! no token: after the 10-5 rule its figures are fit for publication.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use tower_http::services::ServeDir;

use crate::api::{counts_json, headline};
use crate::Shared;

/// Names of the local authority districts the demo and the load generator
/// use, by ONS code; other codes are shown as the code alone.
const AREA_NAMES: &[(&str, &str)] = &[
    ("E06000023", "Bristol, City of"),
    ("E08000003", "Manchester"),
    ("E08000025", "Birmingham"),
    ("E09000030", "Tower Hamlets"),
    ("S12000049", "Glasgow City"),
    ("W06000015", "Cardiff"),
];

const HEADER: &str = include_str!("../board/header.html");
const FOOTER: &str = include_str!("../board/footer.html");
const SCRIPT: &str = include_str!("../board/board.js");
const STYLE: &str = include_str!("../board/board.css");

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A string made safe for an HTML `id` (and `aria-labelledby`): letters,
/// digits, `-` and `_` kept, anything else `-`.
fn dom_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn area_label(code: &str) -> String {
    match AREA_NAMES.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => format!("{name} ({code})"),
        None if code == "unknown" => "Area not reported".into(),
        None => code.to_owned(),
    }
}

/// `2025-03` → `March 2025`.
fn month_label(key: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d")
        .map_or_else(|_| key.to_owned(), |d| d.format("%B %Y").to_string())
}

/// RFC 3339 → `24 November 2026 at 18:30 UTC`, GOV.UK style.
fn when(v: &Value, with_time: bool) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(if with_time {
        t.format("%-d %B %Y at %H:%M:%S UTC").to_string()
    } else {
        t.format("%-d %B %Y").to_string()
    })
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

const SUPPRESSED: &str = "<span class=\"app-suppressed\" data-suppressed=\"true\">[c]<span class=\"govuk-visually-hidden\"> (fewer than the disclosure threshold: suppressed)</span></span>";

/// A published count: rounded value, or `[c]` when suppressed.
fn count(v: &Value) -> String {
    if v["suppressed"] == Value::Bool(true) {
        SUPPRESSED.into()
    } else {
        v["value"].as_i64().map_or("0".into(), thousands)
    }
}

/// The rate of an outcome as a percentage; `[c]` when withheld, a dash when
/// nothing is decided yet.
fn rate(v: &Value) -> String {
    if v["withheld"] == Value::Bool(true) {
        SUPPRESSED.into()
    } else {
        v["value"]
            .as_f64()
            .map_or("–".into(), |r| format!("{:.1}%", r * 100.0))
    }
}

/// Share of the cohort whose outcome is still open (provisional), computed
/// from the published counts so that it reveals nothing they do not.
fn provisional_share(o: &Value) -> Option<f64> {
    let pending = o["pending"]["value"].as_i64()?;
    let decided = o["final"]["value"].as_i64()?;
    (pending + decided > 0).then(|| pending as f64 / (pending + decided) as f64)
}

fn page(title: &str, refresh: u64, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\" class=\"govuk-template\">\n<head>\
         <meta charset=\"utf-8\"><title>{title} – Joinery mission board</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1, viewport-fit=cover\">\
         <meta name=\"theme-color\" content=\"#1d70b8\">\
         <link rel=\"icon\" sizes=\"48x48\" href=\"/assets/images/favicon.ico\">\
         <link rel=\"icon\" sizes=\"any\" href=\"/assets/images/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/govuk/govuk-frontend.min.css\"><style>{STYLE}</style></head>\n\
         <body class=\"govuk-template__body\" data-refresh-seconds=\"{refresh}\">\
         <script>document.body.className += ' js-enabled' + ('noModule' in HTMLScriptElement.prototype ? ' govuk-frontend-supported' : '');</script>\
         <a href=\"#main-content\" class=\"govuk-skip-link\" data-module=\"govuk-skip-link\">Skip to main content</a>\
         <header class=\"govuk-template__header\">{HEADER}\
         <section aria-label=\"Service information\" class=\"govuk-service-navigation\" data-module=\"govuk-service-navigation\">\
         <div class=\"govuk-width-container\"><div class=\"govuk-service-navigation__container\">\
         <span class=\"govuk-service-navigation__service-name\"><a href=\"/\" class=\"govuk-service-navigation__link\">Joinery mission board</a></span>\
         </div></div></section></header>\
         <div class=\"govuk-width-container\">\
         <div class=\"govuk-phase-banner\"><p class=\"govuk-phase-banner__content\"><strong class=\"govuk-tag govuk-phase-banner__content__tag\">Beta</strong>\
         <span class=\"govuk-phase-banner__text\">Official statistics in development: figures are provisional until every outcome is decided.</span></p></div>\
         <main class=\"govuk-main-wrapper\" id=\"main-content\">{body}\
         <p class=\"govuk-body-s app-refresh\"><span id=\"refresh-status\" role=\"status\" aria-live=\"polite\"></span>\
         <noscript>Reload this page to see the latest figures.</noscript></p>\
         </main></div>{FOOTER}\
         <script src=\"/board.js\"></script>\
         <script type=\"module\">import {{ initAll }} from '/govuk/govuk-frontend.min.js'; initAll();</script>\
         </body></html>"
    ))
}

fn disclosure_note(h: &Value) -> String {
    let threshold = h["disclosure"]["threshold"].as_i64().unwrap_or(10);
    let rounding = h["disclosure"]["rounding"].as_i64().unwrap_or(5);
    format!(
        "<p class=\"govuk-body-s\">To protect individuals, counts under {threshold} are shown as [c] and other counts are rounded to the nearest {rounding}; \
         a rate or a time to achieve is withheld when a count it rests on is suppressed. Rates are achieved ÷ decided (achieved + not achieved), or counted ÷ population for a snapshot, of the published counts.</p>"
    )
}

fn updated_line(h: &Value) -> String {
    format!(
        "<p class=\"govuk-body\">Figures are correct up to event time <strong data-field=\"watermark\">{}</strong>; \
         last updated <strong data-field=\"updated_at\">{}</strong>.</p>",
        when(&h["watermark"], false).unwrap_or_else(|| "– (no events yet)".into()),
        when(&h["updated_at"], true).unwrap_or_else(|| "never".into()),
    )
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

async fn index(State(s): State<Arc<Shared>>, Query(q): Query<BoardQuery>) -> Html<String> {
    let metrics = s.metrics.read().expect("lock");
    let mut body = String::from(
        "<h1 class=\"govuk-heading-xl\">Mission outcomes</h1>\
         <p class=\"govuk-body-l\">How citizens' outcomes are changing for each government mission, joined across departments.</p>\
         <div id=\"figures\">",
    );
    for id in &s.missions {
        let h = headline(&s, id, &metrics[id], false);
        let title = esc(h["title"].as_str().unwrap_or(id));
        let _ = write!(
            body,
            "<div class=\"govuk-summary-card\" data-mission=\"{id}\"><div class=\"govuk-summary-card__title-wrapper\">\
             <h2 class=\"govuk-summary-card__title\"><a class=\"govuk-link\" href=\"/missions/{id}\">{title}</a></h2></div>\
             <div class=\"govuk-summary-card__content\"><p class=\"govuk-body\">{}</p><dl class=\"govuk-summary-list\">\
             <div class=\"govuk-summary-list__row\"><dt class=\"govuk-summary-list__key\">Citizens in cohort</dt><dd class=\"govuk-summary-list__value\" data-field=\"cohort\">{}</dd></div>",
            esc(h["doc"].as_str().unwrap_or("")),
            count(&h["total"]["cohort"]),
        );
        if !h["rebuilding"].is_null() {
            let _ = write!(
                body,
                "<div class=\"govuk-summary-list__row\" data-rebuilding=\"true\"><dt class=\"govuk-summary-list__key\">Status</dt>\
                 <dd class=\"govuk-summary-list__value\"><strong class=\"govuk-tag govuk-tag--yellow\">Being rebuilt</strong> figures incomplete until it finishes</dd></div>"
            );
        }
        for (name, doc) in outcome_docs(&h) {
            let o = &h["total"]["outcomes"][&name];
            let _ = write!(
                body,
                "<div class=\"govuk-summary-list__row\" data-outcome=\"{n}\"><dt class=\"govuk-summary-list__key\">{}</dt>\
                 <dd class=\"govuk-summary-list__value\"><span data-field=\"rate\">{}</span> achieved \
                 <span class=\"govuk-body-s app-secondary\">(<span data-field=\"achieved\">{}</span> of <span data-field=\"final\">{}</span> decided; <span data-field=\"pending\">{}</span> provisional)</span></dd></div>",
                esc(&doc),
                rate(&o["rate"]),
                count(&o["achieved"]),
                count(&o["final"]),
                count(&o["pending"]),
                n = esc(&name),
            );
        }
        if let Some(snapshots) = h["snapshots"].as_object() {
            for (name, v) in snapshots {
                let _ = write!(
                    body,
                    "<div class=\"govuk-summary-list__row\" data-snapshot=\"{n}\"><dt class=\"govuk-summary-list__key\">{}</dt>\
                     <dd class=\"govuk-summary-list__value\"><span data-field=\"rate\">{}</span> \
                     <span class=\"govuk-body-s app-secondary\">(<span data-field=\"count\">{}</span> of <span data-field=\"population\">{}</span> in the population)</span></dd></div>",
                    esc(v["doc"].as_str().unwrap_or(name)),
                    rate(&v["rate"]),
                    count(&v["count"]),
                    count(&v["population"]),
                    n = esc(name),
                );
            }
        }
        let _ = write!(
            body,
            "<div class=\"govuk-summary-list__row\"><dt class=\"govuk-summary-list__key\">Correct up to</dt><dd class=\"govuk-summary-list__value\">{}</dd></div>\
             </dl></div></div>",
            when(&h["watermark"], false).unwrap_or_else(|| "– (no events yet)".into())
        );
    }
    if let Some(first) = s.missions.first() {
        body.push_str(&disclosure_note(&headline(
            &s,
            first,
            &metrics[first],
            false,
        )));
    }
    body.push_str("</div>");
    page("Mission outcomes", q.refresh(), &body)
}

/// (outcome id, its documentation), in definition order.
fn outcome_docs(h: &Value) -> Vec<(String, String)> {
    h["outcome_definitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| {
                    Some((
                        o["id"].as_str()?.to_owned(),
                        o["doc"].as_str().unwrap_or("").to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One bar of a chart: its label and the published rate.
struct Bar {
    label: String,
    rate: Option<f64>,
    withheld: bool,
}

/// A column chart (`vertical`) or bar chart of rates from 0 to 100%, as SVG.
/// Withheld bars are drawn as `[c]`. The chart is an image with a text
/// alternative; the table after it carries the same figures.
fn chart(id: &str, title: &str, bars: &[Bar], vertical: bool) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let mut svg = String::new();
    let summary = format!(
        "{title}. {} groups; the table that follows gives every figure.",
        bars.len()
    );
    if vertical {
        let (w, h, left, bottom, top) = (680.0, 260.0, 48.0, 48.0, 12.0);
        let plot_h = h - bottom - top;
        let step = (w - left - 8.0) / bars.len() as f64;
        let _ = write!(svg, "<svg class=\"app-chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"{id}-t\" focusable=\"false\"><title id=\"{id}-t\">{}</title>", esc(&summary));
        for pct in [0, 25, 50, 75, 100] {
            let y = top + plot_h * (1.0 - f64::from(pct) / 100.0);
            let _ = write!(svg, "<line class=\"app-chart__grid\" x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"app-chart__axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{pct}%</text>", w - 8.0, left - 6.0, y + 4.0);
        }
        let label_every = (bars.len() / 12).max(1);
        for (i, b) in bars.iter().enumerate() {
            let x = left + step * i as f64 + step * 0.15;
            let bw = step * 0.7;
            match b.rate {
                Some(r) if !b.withheld => {
                    let bh = plot_h * r;
                    let _ = write!(svg, "<rect class=\"app-chart__bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\"><title>{}: {:.1}%</title></rect>", top + plot_h - bh, esc(&b.label), r * 100.0);
                }
                _ => {
                    let _ = write!(svg, "<text class=\"app-chart__withheld\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", x + bw / 2.0, top + plot_h - 4.0, if b.withheld { "[c]" } else { "–" });
                }
            }
            if i.is_multiple_of(label_every) {
                let _ = write!(svg, "<text class=\"app-chart__axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", x + bw / 2.0, h - bottom + 18.0, esc(&short_month(&b.label)));
            }
        }
    } else {
        let row = 28.0;
        let (w, left, top) = (680.0, 230.0, 8.0);
        let h = top + row * bars.len() as f64 + 24.0;
        let plot_w = w - left - 60.0;
        let _ = write!(svg, "<svg class=\"app-chart\" viewBox=\"0 0 {w} {h:.0}\" role=\"img\" aria-labelledby=\"{id}-t\" focusable=\"false\"><title id=\"{id}-t\">{}</title>", esc(&summary));
        for pct in [0, 50, 100] {
            let x = left + plot_w * f64::from(pct) / 100.0;
            let _ = write!(svg, "<line class=\"app-chart__grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\"/><text class=\"app-chart__axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{pct}%</text>", h - 20.0, h - 4.0);
        }
        for (i, b) in bars.iter().enumerate() {
            let y = top + row * i as f64;
            let _ = write!(svg, "<text class=\"app-chart__label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 8.0, y + row * 0.65, esc(&b.label));
            match b.rate {
                Some(r) if !b.withheld => {
                    let bw = plot_w * r;
                    let _ = write!(svg, "<rect class=\"app-chart__bar\" x=\"{left}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{}: {:.1}%</title></rect><text class=\"app-chart__value\" x=\"{:.1}\" y=\"{:.1}\">{:.1}%</text>", y + 4.0, row - 8.0, esc(&b.label), r * 100.0, left + bw + 4.0, y + row * 0.65, r * 100.0);
                }
                _ => {
                    let _ = write!(
                        svg,
                        "<text class=\"app-chart__withheld\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                        left + 4.0,
                        y + row * 0.65,
                        if b.withheld { "[c]" } else { "–" }
                    );
                }
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// `March 2025` → `Mar 25` for chart axes.
fn short_month(label: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("1 {label}"), "%d %B %Y")
        .map_or_else(|_| label.to_owned(), |d| d.format("%b %y").to_string())
}

/// The table of one grouping (cohort month or area) for one outcome.
fn group_table(
    caption: &str,
    kind: &str,
    groups: &[(String, String, Value)],
    outcome: &str,
) -> String {
    let mut t = format!(
        "<table class=\"govuk-table\" data-table=\"{kind}\" data-outcome=\"{o}\"><caption class=\"govuk-table__caption govuk-table__caption--s\">{}</caption>\
         <thead class=\"govuk-table__head\"><tr class=\"govuk-table__row\"><th scope=\"col\" class=\"govuk-table__header\">{}</th>\
         <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">In cohort</th>\
         <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Achieved</th>\
         <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Not achieved</th>\
         <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Provisional</th>\
         <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Rate</th></tr></thead><tbody class=\"govuk-table__body\">",
        esc(caption),
        if kind == "area" { "Area" } else { "Cohort month" },
        o = esc(outcome),
    );
    for (key, label, c) in groups {
        let o = &c["outcomes"][outcome];
        let _ = write!(
            t,
            "<tr class=\"govuk-table__row\" data-key=\"{}\"><th scope=\"row\" class=\"govuk-table__header\">{}</th>\
             <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"cohort\">{}</td>\
             <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"achieved\">{}</td>\
             <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"not_achieved\">{}</td>\
             <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"pending\">{}</td>\
             <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"rate\">{}</td></tr>",
            esc(key),
            esc(label),
            count(&c["cohort"]),
            count(&o["achieved"]),
            count(&o["not_achieved"]),
            count(&o["pending"]),
            rate(&o["rate"]),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// A warning while the mission is being rebuilt: its figures are incomplete.
fn rebuilding_warning(h: &Value) -> String {
    let r = &h["rebuilding"];
    if r.is_null() {
        return String::new();
    }
    format!(
        "<div class=\"govuk-warning-text\" data-rebuilding=\"true\"><span class=\"govuk-warning-text__icon\" aria-hidden=\"true\">!</span>\
         <strong class=\"govuk-warning-text__text\"><span class=\"govuk-visually-hidden\">Warning</span>\
         These figures are being rebuilt from the event log and are incomplete until it finishes ({} of {} parts done).</strong></div>",
        r["partitions_complete"].as_i64().unwrap_or(0),
        r["partitions"].as_i64().unwrap_or(0),
    )
}

/// A snapshot measure (e.g. NEET) at the watermark: headline figures, a
/// chart and a table by area. `v` is its API JSON.
fn snapshot_section(name: &str, v: &Value) -> String {
    let id = dom_id(name);
    let doc = v["doc"].as_str().unwrap_or(name);
    let mut out = format!(
        "<section class=\"app-snapshot\" data-snapshot=\"{n}\" aria-labelledby=\"s-{id}\">\
         <h2 class=\"govuk-heading-l\" id=\"s-{id}\">{}</h2>\
         <p class=\"govuk-body\">Everyone Joinery knows of who is in the population at the watermark, whether or not they are in the cohort above.</p>\
         <div class=\"govuk-grid-row\">\
         <div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\"><p class=\"govuk-body-s app-figure__label\">Rate</p><p class=\"app-figure__value\" data-field=\"rate\">{}</p></div></div>\
         <div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\"><p class=\"govuk-body-s app-figure__label\">Citizens</p><p class=\"app-figure__value\" data-field=\"count\">{}</p>\
         <p class=\"govuk-body-s\">of <span data-field=\"population\">{}</span> in the population</p></div></div></div>",
        esc(doc),
        rate(&v["rate"]),
        count(&v["count"]),
        count(&v["population"]),
        n = esc(name),
    );
    let areas: Vec<(String, String, &Value)> = v["by_area"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    let key = g["key"].as_str().unwrap_or("unknown").to_owned();
                    let label = area_label(&key);
                    (key, label, g)
                })
                .collect()
        })
        .unwrap_or_default();
    if !areas.is_empty() {
        let bars: Vec<Bar> = areas
            .iter()
            .map(|(_, label, g)| Bar {
                label: label.clone(),
                rate: g["rate"]["value"].as_f64(),
                withheld: g["rate"]["withheld"] == Value::Bool(true),
            })
            .collect();
        let _ = write!(
            out,
            "<h3 class=\"govuk-heading-m\">By area</h3><figure class=\"app-figure-chart\">{}</figure>\
             <table class=\"govuk-table\" data-table=\"snapshot-area\" data-snapshot=\"{n}\"><caption class=\"govuk-table__caption govuk-table__caption--s\">{} by area (the latest area reported for the citizen)</caption>\
             <thead class=\"govuk-table__head\"><tr class=\"govuk-table__row\"><th scope=\"col\" class=\"govuk-table__header\">Area</th>\
             <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">In population</th>\
             <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Citizens</th>\
             <th scope=\"col\" class=\"govuk-table__header govuk-table__header--numeric\">Rate</th></tr></thead><tbody class=\"govuk-table__body\">",
            chart(&format!("snapshot-{id}"), &format!("Rate by area, {doc}"), &bars, false),
            esc(doc.trim_end_matches('.')),
            n = esc(name),
        );
        for (key, label, g) in &areas {
            let _ = write!(
                out,
                "<tr class=\"govuk-table__row\" data-key=\"{}\"><th scope=\"row\" class=\"govuk-table__header\">{}</th>\
                 <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"population\">{}</td>\
                 <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"count\">{}</td>\
                 <td class=\"govuk-table__cell govuk-table__cell--numeric\" data-field=\"rate\">{}</td></tr>",
                esc(key),
                esc(label),
                count(&g["population"]),
                count(&g["count"]),
                rate(&g["rate"]),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

fn bars(groups: &[(String, String, Value)], outcome: &str) -> Vec<Bar> {
    groups
        .iter()
        .map(|(_, label, c)| Bar {
            label: label.clone(),
            rate: c["outcomes"][outcome]["rate"]["value"].as_f64(),
            withheld: c["outcomes"][outcome]["rate"]["withheld"] == Value::Bool(true),
        })
        .collect()
}

async fn mission(
    State(s): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<BoardQuery>,
) -> Response {
    let metrics = s.metrics.read().expect("lock");
    let Some(m) = metrics.get(&id) else {
        let mut body = format!(
            "<h1 class=\"govuk-heading-l\">Page not found</h1><p class=\"govuk-body\">There is no mission called ‘{}’. The missions are:</p><ul class=\"govuk-list govuk-list--bullet\">",
            esc(&id)
        );
        for known in &s.missions {
            let _ = write!(
                body,
                "<li><a class=\"govuk-link\" href=\"/missions/{known}\">{known}</a></li>"
            );
        }
        body.push_str("</ul>");
        return (
            StatusCode::NOT_FOUND,
            page("Page not found", q.refresh(), &body),
        )
            .into_response();
    };
    let h = headline(&s, &id, m, false);
    let title = esc(h["title"].as_str().unwrap_or(&id));
    let months: Vec<(String, String, Value)> = m
        .by_month
        .iter()
        .filter(|(k, _)| k.as_str() != "unknown")
        .map(|(k, c)| (k.clone(), month_label(k), counts_json(&s, c, false)))
        .collect();
    let areas: Vec<(String, String, Value)> = m
        .by_area
        .iter()
        .map(|(k, c)| (k.clone(), area_label(k), counts_json(&s, c, false)))
        .collect();

    let mut body = format!(
        "<nav class=\"govuk-breadcrumbs\" aria-label=\"Breadcrumb\"><ol class=\"govuk-breadcrumbs__list\">\
         <li class=\"govuk-breadcrumbs__list-item\"><a class=\"govuk-breadcrumbs__link\" href=\"/\">Missions</a></li>\
         <li class=\"govuk-breadcrumbs__list-item\">{title}</li></ol></nav>\
         <span class=\"govuk-caption-l\">Mission</span><h1 class=\"govuk-heading-xl\">{title}</h1>\
         <p class=\"govuk-body-l\">{}</p><div id=\"figures\" data-mission=\"{id}\">{}",
        esc(h["doc"].as_str().unwrap_or("")),
        updated_line(&h),
    );
    body.push_str(&rebuilding_warning(&h));
    let _ = write!(
        body,
        "<div class=\"govuk-grid-row\"><div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\">\
         <p class=\"govuk-body-s app-figure__label\">Citizens in cohort</p><p class=\"app-figure__value\" data-field=\"cohort\">{}</p></div></div></div>",
        count(&h["total"]["cohort"])
    );
    for (name, doc) in outcome_docs(&h) {
        let o = &h["total"]["outcomes"][&name];
        let nothing_yet =
            o["pending"]["value"].as_i64() == Some(0) && o["final"]["value"].as_i64() == Some(0);
        let share = match provisional_share(o) {
            Some(p) => format!("{:.0}%", p * 100.0),
            None if nothing_yet => "–".to_owned(),
            None => SUPPRESSED.to_owned(),
        };
        let median = &o["days_to_achieve"];
        let days = match median["median_days"].as_i64() {
            Some(d) => format!(
                "{d} days (90% within {} days)",
                median["p90_days"].as_i64().unwrap_or(d)
            ),
            None if median["withheld"] == Value::Bool(true) => SUPPRESSED.into(),
            None => "–".into(),
        };
        let _ = write!(
            body,
            "<section class=\"app-outcome\" data-outcome=\"{n}\" aria-labelledby=\"o-{id}\">\
             <h2 class=\"govuk-heading-l\" id=\"o-{id}\">{}</h2>\
             <div class=\"govuk-grid-row\">\
             <div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\"><p class=\"govuk-body-s app-figure__label\">Achieved (of those decided)</p><p class=\"app-figure__value\" data-field=\"rate\">{}</p>\
             <p class=\"govuk-body-s\"><span data-field=\"achieved\">{}</span> achieved, <span data-field=\"not_achieved\">{}</span> not achieved</p></div></div>\
             <div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\"><p class=\"govuk-body-s app-figure__label\">Provisional (still open)</p><p class=\"app-figure__value\" data-field=\"provisional_share\">{share}</p>\
             <p class=\"govuk-body-s\"><span data-field=\"pending\">{}</span> citizens whose window has not closed</p></div></div>\
             <div class=\"govuk-grid-column-one-third\"><div class=\"app-figure\"><p class=\"govuk-body-s app-figure__label\">Median time to achieve</p><p class=\"app-figure__value app-figure__value--s\" data-field=\"median_days\">{days}</p></div></div>\
             </div>",
            esc(&doc),
            rate(&o["rate"]),
            count(&o["achieved"]),
            count(&o["not_achieved"]),
            count(&o["pending"]),
            n = esc(&name),
            id = dom_id(&name),
        );
        if !months.is_empty() {
            let _ = write!(
                body,
                "<h3 class=\"govuk-heading-m\">Trend by cohort month</h3><figure class=\"app-figure-chart\">{}</figure>{}",
                chart(&format!("trend-{}", dom_id(&name)), &format!("Rate achieved by cohort month, {doc}"), &bars(&months, &name), true),
                group_table("Outcome by cohort month (the month the citizen joined the cohort)", "cohort_month", &months, &name),
            );
        }
        if !areas.is_empty() {
            let _ = write!(
                body,
                "<h3 class=\"govuk-heading-m\">By area</h3><figure class=\"app-figure-chart\">{}</figure>{}",
                chart(&format!("area-{}", dom_id(&name)), &format!("Rate achieved by area, {doc}"), &bars(&areas, &name), false),
                group_table("Outcome by area (local authority district of residence)", "area", &areas, &name),
            );
        }
        body.push_str("</section>");
    }
    if let Some(snapshots) = h["snapshots"].as_object() {
        for (name, v) in snapshots {
            body.push_str(&snapshot_section(name, v));
        }
    }
    body.push_str(&disclosure_note(&h));
    let _ = write!(
        body,
        "<p class=\"govuk-body-s\">The same figures as data: <a class=\"govuk-link\" href=\"/openapi.json\">metrics API</a> (<code>GET /v1/missions/{id}/metrics</code>, needs a board token).</p></div>"
    );
    page(&title, q.refresh(), &body).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_read_as_gov_uk_writes_them() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(month_label("2025-03"), "March 2025");
        assert_eq!(short_month("March 2025"), "Mar 25");
        assert_eq!(
            when(&Value::String("2026-11-24T18:30:05+00:00".into()), true).as_deref(),
            Some("24 November 2026 at 18:30:05 UTC")
        );
        assert_eq!(area_label("E08000025"), "Birmingham (E08000025)");
        assert_eq!(area_label("E07000001"), "E07000001");
        assert_eq!(dom_id("a b\"<c>_d-1"), "a-b--c-_d-1");
    }

    #[test]
    fn suppressed_counts_and_withheld_rates_show_as_c() {
        let suppressed = serde_json::json!({"value": null, "suppressed": true});
        assert!(count(&suppressed).contains("[c]"));
        assert_eq!(
            count(&serde_json::json!({"value": 1235, "suppressed": false})),
            "1,235"
        );
        assert!(rate(&serde_json::json!({"value": null, "withheld": true})).contains("[c]"));
        assert_eq!(
            rate(&serde_json::json!({"value": 0.4567, "withheld": false})),
            "45.7%"
        );
        assert_eq!(
            rate(&serde_json::json!({"value": null, "withheld": false})),
            "–"
        );
    }

    #[test]
    fn provisional_share_uses_published_counts_only() {
        let o = serde_json::json!({"pending": {"value": 20}, "final": {"value": 60}});
        assert_eq!(provisional_share(&o), Some(0.25));
        let hidden = serde_json::json!({"pending": {"value": null, "suppressed": true}, "final": {"value": 60}});
        assert_eq!(provisional_share(&hidden), None);
    }

    #[test]
    fn charts_draw_withheld_groups_as_c_and_escape_labels() {
        let svg = chart(
            "x",
            "t",
            &[
                Bar {
                    label: "A<b>".into(),
                    rate: Some(0.5),
                    withheld: false,
                },
                Bar {
                    label: "B".into(),
                    rate: None,
                    withheld: true,
                },
            ],
            false,
        );
        assert!(svg.contains("A&lt;b&gt;") && !svg.contains("A<b>"));
        assert!(svg.contains(">[c]</text>"));
        assert!(svg.contains("role=\"img\""));
        assert_eq!(svg.matches("<rect").count(), 1);
    }
}
