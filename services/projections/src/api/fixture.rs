//! A known set of published metrics for the API's and the board's tests:
//! the repository's mission definitions and, for `opportunity`, a cohort
//! with a large area, a small (suppressed) one, open outcomes, citizens
//! without an area or cohort month, and a NEET snapshot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use joinery_domain::{Millis, OutcomeState};
use joinery_engine::{load_missions, MissionDef};
use joinery_runtime::auth::{hash_token, TokenStore};

use crate::aggregate::{Contribution, MissionMetrics};
use crate::disclosure::Disclosure;
use crate::Shared;

/// May read every mission, under disclosure control.
pub(crate) const BOARD_TOKEN: &str = "fixture-board-token";
/// May read only `safer_streets`, under disclosure control.
pub(crate) const SAFER_STREETS_TOKEN: &str = "fixture-safer-streets-token";
/// Reads exact figures.
pub(crate) const OPERATOR_TOKEN: &str = "fixture-operator-token";

pub(crate) const BIG_AREA: &str = "E08000025";
pub(crate) const SMALL_AREA: &str = "W06000015";
pub(crate) const OUTCOME: &str = "sustained_employment_180d";

/// Handlers' state over the fixture; keeps the token file alive.
pub(crate) struct Fixture {
    pub(crate) shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

fn millis(rfc3339: &str) -> Millis {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("a valid fixture time")
        .timestamp_millis()
}

fn citizen(
    area: Option<&str>,
    month: Option<&str>,
    outcome: Option<(OutcomeState, Option<i64>)>,
    neet: Option<bool>,
) -> Contribution {
    Contribution {
        version: 1,
        in_cohort: outcome.is_some(),
        area_code: area.map(str::to_owned),
        cohort_month: month.map(str::to_owned),
        outcomes: outcome
            .map(|(state, days)| (OUTCOME.to_owned(), state, days))
            .into_iter()
            .collect(),
        snapshots: neet
            .map(|holds| ("neet".to_owned(), holds, area.map(str::to_owned)))
            .into_iter()
            .collect(),
        partition: Some(0),
    }
}

/// `opportunity`'s metrics: 14 achieved in Birmingham (January 2025), 3 not
/// achieved in Cardiff (January 2025), 12 open in Manchester (February
/// 2025), 2 open with neither area nor cohort month; a NEET population of
/// 26 with 12 NEET (3 in Cardiff, 9 in Glasgow, not in the cohort).
pub(crate) fn opportunity() -> MissionMetrics {
    let mut m = MissionMetrics::default();
    let watermark = millis("2026-06-01T00:00:00Z");
    let mut citizens = Vec::new();
    for i in 0..14 {
        let days = 20 + 7 * i;
        citizens.push(citizen(
            Some(BIG_AREA),
            Some("2025-01"),
            Some((OutcomeState::Achieved, Some(days))),
            Some(false),
        ));
    }
    for _ in 0..3 {
        citizens.push(citizen(
            Some(SMALL_AREA),
            Some("2025-01"),
            Some((OutcomeState::NotAchieved, None)),
            Some(true),
        ));
    }
    for _ in 0..12 {
        citizens.push(citizen(
            Some("E08000003"),
            Some("2025-02"),
            Some((OutcomeState::Pending, None)),
            None,
        ));
    }
    for _ in 0..2 {
        citizens.push(citizen(
            None,
            None,
            Some((OutcomeState::Pending, None)),
            None,
        ));
    }
    for _ in 0..9 {
        citizens.push(citizen(Some("S12000049"), None, None, Some(true)));
    }
    for c in &citizens {
        assert!(m.apply(None, c));
    }
    // Final up to the watermark in both partitions; a third partition has
    // never held an event.
    m.partition_watermark(0, watermark);
    m.partition_watermark(1, watermark + 86_400_000);
    m.updated_at = millis("2026-06-02T09:15:30Z");
    m
}

/// The repository's missions, `opportunity` with [`opportunity`]'s metrics
/// and the others with none; `edit` may change either before they are
/// shared.
pub(crate) fn fixture(
    edit: impl FnOnce(&mut Vec<MissionDef>, &mut HashMap<String, MissionMetrics>),
) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "{} board:*\n{} board:safer_streets\n{} operator\n",
            hash_token(BOARD_TOKEN),
            hash_token(SAFER_STREETS_TOKEN),
            hash_token(OPERATOR_TOKEN)
        ),
    )
    .expect("writes the token file");
    let mut defs = load_missions(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../missions"))
        .expect("the repository's missions load");
    let mut metrics: HashMap<String, MissionMetrics> = defs
        .iter()
        .map(|d| (d.id.to_string(), MissionMetrics::default()))
        .collect();
    metrics.insert("opportunity".into(), opportunity());
    edit(&mut defs, &mut metrics);
    let shared = Shared {
        metrics: RwLock::new(metrics),
        missions: defs.iter().map(|d| d.id.to_string()).collect(),
        defs,
        tokens: TokenStore::load(&tokens).expect("loads the token file"),
        disclosure: Disclosure::default(),
        // Three partitions, each read through.
        coverage: crate::ViewCoverage {
            partitions: 3,
            read_through: Box::new(|_, _| true),
        },
    };
    Fixture {
        shared: Arc::new(shared),
        _dir: dir,
    }
}
