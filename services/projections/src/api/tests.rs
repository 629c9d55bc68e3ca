//! The metrics API's responses, held against golden files: the JSON a
//! board, a dashboard or a test reads must not change shape (field names,
//! nesting, null or absent) by accident. `JOINERY_BLESS=1 cargo test -p
//! joinery-projections` rewrites the files after a deliberate change.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::fixture::{
    fixture, Fixture, BOARD_TOKEN, OPERATOR_TOKEN, OUTCOME, SAFER_STREETS_TOKEN, SMALL_AREA,
};
use super::{list, mission_metrics, MetricsQuery};
use crate::aggregate::Rebuilding;

fn headers(token: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(token) = token {
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a valid header"),
        );
    }
    h
}

/// The status line and body as the golden files hold them.
async fn text(r: Response) -> String {
    let status = r.status().as_u16();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("reads the body");
    format!(
        "{status}\n{}",
        String::from_utf8(body.to_vec()).expect("UTF-8")
    )
}

async fn metrics(f: &Fixture, token: Option<&str>, mission: &str, query: &str) -> Response {
    let uri: Uri = format!("/?{query}").parse().expect("a valid query");
    let q: Query<MetricsQuery> = Query::try_from_uri(&uri).expect("a query the handler takes");
    mission_metrics(
        State(f.shared.clone()),
        Path(mission.to_owned()),
        q,
        headers(token),
    )
    .await
    .into_response()
}

/// The fixture, with `safer_streets` being rebuilt.
fn with_rebuild() -> Fixture {
    fixture(|_, metrics| {
        if let Some(m) = metrics.get_mut("safer_streets") {
            m.rebuilding = Some(Rebuilding {
                id: "r1".into(),
                started_at: 1_780_000_000_000,
                partitions: 4,
                reset: [0, 1].into(),
                complete: [1].into(),
            });
        }
    })
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/api")
        .join(name)
}

fn check(name: &str, got: &str) {
    let path = golden(name);
    if std::env::var_os("JOINERY_BLESS").is_some() {
        std::fs::write(&path, got).expect("writes the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("reads the golden file");
    assert!(
        got == want,
        "{name} differs from its golden file\n--- want\n{want}\n--- got\n{got}"
    );
}

#[tokio::test]
async fn responses_keep_their_shape_byte_for_byte() {
    let f = with_rebuild();
    for (name, token) in [
        ("list-board.json", BOARD_TOKEN),
        ("list-operator.json", OPERATOR_TOKEN),
    ] {
        let r = list(State(f.shared.clone()), headers(Some(token)))
            .await
            .into_response();
        check(name, &text(r).await);
    }
    for (name, token, mission, query) in [
        (
            "opportunity-board.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "",
        ),
        (
            "opportunity-board-by-area.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "group_by=area",
        ),
        (
            "opportunity-operator-by-month.json",
            Some(OPERATOR_TOKEN),
            "opportunity",
            "group_by=cohort_month",
        ),
        (
            "opportunity-board-january-by-area.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "group_by=area&from=2025-01&to=2025-01",
        ),
        (
            "opportunity-operator-to-february-by-month.json",
            Some(OPERATOR_TOKEN),
            "opportunity",
            "group_by=cohort_month&to=2025-02",
        ),
        (
            "opportunity-operator-from-february.json",
            Some(OPERATOR_TOKEN),
            "opportunity",
            "from=2025-02",
        ),
        (
            "safer-streets-rebuilding-by-area.json",
            Some(SAFER_STREETS_TOKEN),
            "safer_streets",
            "group_by=area",
        ),
        ("error-no-token.json", None, "opportunity", ""),
        (
            "error-out-of-scope.json",
            Some(SAFER_STREETS_TOKEN),
            "opportunity",
            "",
        ),
        ("error-unknown-mission.json", Some(BOARD_TOKEN), "nope", ""),
        (
            "error-unknown-grouping.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "group_by=nope",
        ),
        (
            "error-not-a-month.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "from=2025-13",
        ),
        (
            "error-inverted-range.json",
            Some(BOARD_TOKEN),
            "opportunity",
            "from=2025-03&to=2025-01",
        ),
    ] {
        check(name, &text(metrics(&f, token, mission, query).await).await);
    }
}

async fn json(r: Response) -> Value {
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("reads the body");
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::test]
async fn a_board_token_gets_a_small_areas_figures_suppressed_and_an_operator_exact() {
    let f = fixture(|_, _| {});
    let board = json(metrics(&f, Some(BOARD_TOKEN), "opportunity", "group_by=area").await).await;
    let small = board["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == SMALL_AREA))
        .expect("the small area is a group");
    assert_eq!(
        small["cohort"],
        serde_json::json!({"value": null, "suppressed": true})
    );
    let rate = &small["outcomes"][OUTCOME]["rate"];
    assert_eq!(
        (rate["value"].is_null(), &rate["withheld"]),
        (true, &Value::Bool(true))
    );
    assert_eq!(board["exact"], false);
    assert_eq!(board["disclosure"]["threshold"], 10);

    let exact = json(metrics(&f, Some(OPERATOR_TOKEN), "opportunity", "group_by=area").await).await;
    let small = exact["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == SMALL_AREA))
        .expect("the small area is a group");
    assert_eq!(small["cohort"]["value"], 3);
    assert_eq!(exact["disclosure"], Value::Null);
}

#[tokio::test]
async fn the_watermark_is_withheld_while_a_partition_is_unread_or_unannounced() {
    let watermark = |f: &Fixture| {
        let f = f.shared.clone();
        async move {
            let r = mission_metrics(
                State(f),
                Path("opportunity".to_owned()),
                Query::try_from_uri(&"/?".parse::<Uri>().expect("a uri")).expect("a query"),
                headers(Some(OPERATOR_TOKEN)),
            )
            .await
            .into_response();
            json(r).await["watermark"].clone()
        }
    };
    let mut f = fixture(|_, _| {});
    assert_eq!(
        watermark(&f).await,
        Value::String("2026-06-01T00:00:00+00:00".into()),
        "final up to the least announced partition's watermark"
    );
    // Partition 2 (never announced) has not been read through yet: it may
    // hold citizens the figures leave out.
    Arc::get_mut(&mut f.shared)
        .expect("the fixture's only handle")
        .coverage
        .read_through = Box::new(|_, p| p != 2);
    assert_eq!(watermark(&f).await, Value::Null);

    // Views of partition 2 read, its watermark record not yet: nothing final.
    let f = fixture(|_, metrics| {
        metrics
            .get_mut("opportunity")
            .expect("the fixture's mission")
            .saw_view(2);
    });
    assert_eq!(watermark(&f).await, Value::Null);
    f.shared
        .metrics
        .write()
        .get_mut("opportunity")
        .expect("the fixture's mission")
        .partition_watermark(2, 1_780_444_800_000);
    assert_eq!(
        watermark(&f).await,
        Value::String("2026-06-01T00:00:00+00:00".into())
    );
}
