//! The board's pages rendered from the fixture's figures, read as a board
//! reader reads them.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::chart::{short_month, Bar, Chart};
use super::format::thousands;
use super::*;
use crate::aggregate::Rebuilding;
use crate::api::fixture::{fixture, Fixture, BIG_AREA, OUTCOME, SMALL_AREA};
use crate::api::response::Timestamp;
use crate::disclosure::Disclosure;

async fn page(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("reads the body");
    (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

async fn mission_page(f: &Fixture, id: &str) -> (StatusCode, String) {
    page(
        mission(
            State(f.shared.clone()),
            UrlPath(id.to_owned()),
            Query(BoardQuery { refresh: None }),
        )
        .await,
    )
    .await
}

async fn index_page(f: &Fixture) -> String {
    let (status, body) = page(
        index(
            State(f.shared.clone()),
            Query(BoardQuery { refresh: Some(1) }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// The element that starts at the first `start` after `after`, up to and
/// including the first `end` after it.
fn element<'a>(page: &'a str, after: &str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(after)
        .unwrap_or_else(|| panic!("no {after} in the page"));
    let begin = from
        + page[from..]
            .find(start)
            .unwrap_or_else(|| panic!("no {start} after {after}"));
    let stop = begin
        + page[begin..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end} after {start}"))
        + end.len();
    &page[begin..stop]
}

/// The text of the cell `data-field="{field}"` in `html`.
fn field<'a>(html: &'a str, field: &str) -> &'a str {
    let marker = format!("data-field=\"{field}\">");
    let from = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} in {html}"))
        + marker.len();
    let to = from + html[from..].find("</").expect("the cell ends");
    &html[from..to]
}

const C: &str = "<span class=\"app-suppressed\" data-suppressed=\"true\">[c]";

#[test]
fn numbers_and_dates_read_as_gov_uk_writes_them() {
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(-1000), "-1,000");
    assert_eq!(month_label("2025-03"), "March 2025");
    assert_eq!(short_month("March 2025"), "Mar 25");
    let t = Timestamp(
        chrono::DateTime::parse_from_rfc3339("2026-11-24T18:30:05+00:00")
            .expect("valid")
            .to_utc(),
    );
    assert_eq!(date_time(t), "24 November 2026 at 18:30:05 UTC");
    assert_eq!(date(t), "24 November 2026");
    assert_eq!(area_label("E08000025"), "Birmingham (E08000025)");
    assert_eq!(area_label("E07000001"), "E07000001");
    assert_eq!(area_label("unknown"), "Area not reported");
    assert_eq!(dom_id("a b\"<c>_d-1"), "a-b--c-_d-1");
}

#[test]
fn suppressed_counts_and_withheld_rates_show_as_c() {
    let d = Disclosure::default();
    assert_eq!(count(&d.count(3, false)), Shown::Suppressed);
    assert_eq!(count(&d.count(1234, false)), Shown::Value("1,235".into()));
    assert_eq!(rate(&d.rate(3, 17, false)), Shown::Suppressed);
    assert_eq!(rate(&d.rate(12, 17, false)), Shown::Value("66.7%".into()));
    assert_eq!(rate(&d.rate(0, 0, false)), Shown::Nothing);
}

#[test]
fn provisional_share_uses_published_counts_only() {
    let audience = Audience::board(Disclosure::default());
    let o = |pending, achieved| {
        Outcome::new(
            &OutcomeCounts {
                pending,
                achieved,
                ..OutcomeCounts::default()
            },
            audience,
        )
    };
    // 22 open and 58 decided are published as 20 and 60: a quarter.
    assert_eq!(provisional_share(&o(22, 58)), Shown::Value("25%".into()));
    assert_eq!(provisional_share(&o(3, 60)), Shown::Suppressed);
    assert_eq!(provisional_share(&o(0, 0)), Shown::Nothing);
}

#[test]
fn charts_draw_withheld_groups_as_c_and_escape_labels() {
    let bars = [
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
    ];
    for chart in [
        Chart::bars("x".into(), "t", &bars),
        Chart::columns("x".into(), "t", &bars),
    ] {
        let svg = chart.expect("bars make a chart").render().expect("renders");
        assert!(
            svg.contains("A&#60;b&#62;") && !svg.contains("A<b>"),
            "{svg}"
        );
        assert!(svg.contains(">[c]</text>"), "{svg}");
        assert!(svg.contains("role=\"img\""), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
    }
    assert!(Chart::bars("x".into(), "t", &[]).is_none());
}

#[tokio::test]
async fn the_mission_page_shows_a_board_reader_the_published_figures() {
    let f = fixture(|_, _| {});
    let (status, html) = mission_page(&f, "opportunity").await;
    assert_eq!(status, StatusCode::OK);
    // 31 in the cohort is published rounded, as 30.
    assert_eq!(
        field(
            element(
                &html,
                "id=\"figures\"",
                "<p class=\"app-figure__value\"",
                "</p>"
            ),
            "cohort"
        ),
        "30"
    );
    let outcome = element(
        &html,
        &format!("<section class=\"app-outcome\" data-outcome=\"{OUTCOME}\""),
        "<section",
        "</section>",
    );
    // 14 of 17 decided, published as 15 of 15: 100.0%.
    assert_eq!(field(outcome, "rate"), "100.0%");
    assert!(outcome.contains(&format!("data-field=\"not_achieved\">{C}")));
    // The small area's row: [c], never its 3 citizens.
    let small = element(
        outcome,
        "data-table=\"area\"",
        &format!("<tr class=\"govuk-table__row\" data-key=\"{SMALL_AREA}\""),
        "</tr>",
    );
    assert!(
        small.contains(&format!("data-field=\"cohort\">{C}")),
        "{small}"
    );
    assert!(
        small.contains(&format!("data-field=\"rate\">{C}")),
        "{small}"
    );
    assert!(!small.contains(">3<"), "{small}");
    let big = element(
        outcome,
        "data-table=\"area\"",
        &format!("data-key=\"{BIG_AREA}\""),
        "</tr>",
    );
    assert_eq!(field(big, "cohort"), "15");
    // Months without the citizens whose cohort month is unknown; areas with them.
    let months = element(outcome, "data-table=\"cohort_month\"", "<tbody", "</tbody>");
    assert_eq!(months.matches("<tr").count(), 2, "{months}");
    assert!(months.contains(">January 2025</th>") && !months.contains("unknown"));
    let areas = element(outcome, "data-table=\"area\"", "<tbody", "</tbody>");
    assert!(areas.contains("data-key=\"unknown\"><th scope=\"row\" class=\"govuk-table__header\">Area not reported</th>"));
    // Charts are images with a text alternative.
    assert_eq!(html.matches("<svg class=\"app-chart\"").count(), 3);
    // The NEET snapshot: 12 of 26, published as 10 of 25; Cardiff's 3 suppressed.
    let neet = element(
        &html,
        "<section class=\"app-snapshot\" data-snapshot=\"neet\"",
        "<section",
        "</section>",
    );
    assert_eq!(field(neet, "rate"), "40.0%");
    assert_eq!(field(neet, "count"), "10");
    assert_eq!(field(neet, "population"), "25");
    let cardiff = element(
        neet,
        "data-table=\"snapshot-area\"",
        &format!("data-key=\"{SMALL_AREA}\""),
        "</tr>",
    );
    assert!(
        cardiff.contains(&format!("data-field=\"population\">{C}")),
        "{cardiff}"
    );
    assert!(html.contains(
        "correct up to event time <strong data-field=\"watermark\">1 June 2026</strong>"
    ));
    assert!(html.contains("<strong data-field=\"updated_at\">2 June 2026 at 09:15:30 UTC</strong>"));
    assert!(html.contains(
        "counts under 10 are shown as [c] and other counts are rounded to the nearest 5"
    ));
    assert!(!html.contains("data-rebuilding"));
}

#[tokio::test]
async fn a_hostile_title_and_descriptions_are_shown_as_text() {
    let f = fixture(|defs, _| {
        let d = defs
            .iter_mut()
            .find(|d| d.id == "opportunity")
            .expect("the opportunity mission");
        d.title = "<script>alert(\"t\")</script> & co".into();
        d.outcomes[0].doc = "<img src=x onerror=alert(1)>".into();
        d.snapshots[0].doc = "\"><b>neet</b>".into();
    });
    for html in [
        mission_page(&f, "opportunity").await.1,
        index_page(&f).await,
    ] {
        assert!(!html.contains("<script>alert"), "the title is escaped");
        assert!(html.contains("&#60;script&#62;alert(&#34;t&#34;)&#60;/script&#62; &#38; co"));
        assert!(
            !html.contains("<img src=x"),
            "an outcome's description is escaped"
        );
        assert!(
            !html.contains("\"><b>neet"),
            "a snapshot's description is escaped"
        );
    }
    let (status, html) = mission_page(&f, "<b>nope</b>").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("There is no mission called ‘&#60;b&#62;nope&#60;/b&#62;’"));
    assert!(
        html.contains("<a class=\"govuk-link\" href=\"/missions/safer_streets\">safer_streets</a>")
    );
}

#[tokio::test]
async fn a_mission_being_rebuilt_says_its_figures_are_incomplete() {
    let f = fixture(|_, metrics| {
        if let Some(m) = metrics.get_mut("opportunity") {
            m.rebuilding = Some(Rebuilding {
                id: "r1".into(),
                started_at: 1_780_000_000_000,
                partitions: 3,
                reset: [0, 1].into(),
                complete: [1].into(),
            });
        }
    });
    let (_, html) = mission_page(&f, "opportunity").await;
    assert!(html.contains("data-rebuilding=\"true\""));
    assert!(html.contains(
        "being rebuilt from the event log and are incomplete until it finishes (1 of 3 parts done)"
    ));
    let index = index_page(&f).await;
    let card = element(&index, "data-mission=\"opportunity\"", "<dl", "</dl>");
    assert!(card.contains("Being rebuilt"));
}

#[tokio::test]
async fn a_mission_without_figures_yet_shows_dashes_not_suppression() {
    let f = fixture(|_, _| {});
    let (status, html) = mission_page(&f, "health_and_work").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<strong data-field=\"watermark\">– (no events yet)</strong>"));
    assert!(html.contains("<strong data-field=\"updated_at\">never</strong>"));
    assert!(
        !html.contains("data-suppressed"),
        "nothing is suppressed when there is nothing"
    );
    assert!(
        !html.contains("<svg class=\"app-chart\""),
        "no charts without groups"
    );
}

#[tokio::test]
async fn the_index_shows_each_missions_headline() {
    let f = fixture(|_, _| {});
    let html = index_page(&f).await;
    assert!(
        html.contains("data-refresh-seconds=\"2\""),
        "refresh is at least 2 s"
    );
    let card = element(&html, "data-mission=\"opportunity\"", "<dl", "</dl>");
    assert_eq!(field(card, "cohort"), "30");
    let outcome = element(card, &format!("data-outcome=\"{OUTCOME}\""), "<dd", "</dd>");
    assert_eq!(field(outcome, "rate"), "100.0%");
    let neet = element(card, "data-snapshot=\"neet\"", "<dd", "</dd>");
    assert_eq!(field(neet, "rate"), "40.0%");
    for id in &f.shared.missions {
        assert!(html.contains(&format!("href=\"/missions/{id}\"")), "{id}");
    }
}
