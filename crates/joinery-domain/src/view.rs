//! A citizen's view of one mission: what the engine computes, the processor
//! publishes to `joinery.views.<mission>`, and projections aggregate.

use serde::{Deserialize, Serialize};

use crate::{AreaCode, CitizenKey, Millis, MissionId, OutcomeId, YearMonth};

/// The status of one outcome for one citizen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeState {
    /// Not yet decided: the window is still open on the watermark.
    Pending,
    /// The condition held within the window.
    Achieved,
    /// The deadline passed on the watermark without the condition holding.
    NotAchieved,
}

impl OutcomeState {
    /// The Avro enum symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            OutcomeState::Pending => "PENDING",
            OutcomeState::Achieved => "ACHIEVED",
            OutcomeState::NotAchieved => "NOT_ACHIEVED",
        }
    }

    /// Parses an Avro enum symbol.
    pub fn from_symbol(s: &str) -> Option<OutcomeState> {
        match s {
            "PENDING" => Some(OutcomeState::Pending),
            "ACHIEVED" => Some(OutcomeState::Achieved),
            "NOT_ACHIEVED" => Some(OutcomeState::NotAchieved),
            _ => None,
        }
    }
}

/// One outcome's status for one citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeView {
    /// Outcome id within the mission.
    pub name: OutcomeId,
    /// Its status.
    pub status: OutcomeState,
    /// Event time of the anchor fact the window starts from.
    pub anchor_at: Millis,
    /// Event time at which the status was decided; `None` while pending.
    pub decided_at: Option<Millis>,
    /// Days from anchor to the qualifying event, when achieved.
    pub duration_days: Option<i64>,
}

/// One snapshot measure for one citizen who is in its population at the
/// watermark (e.g. aged 16 to 24 then): whether the measured state holds
/// (e.g. in neither education nor employment then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotView {
    /// Snapshot id within the mission, e.g. `neet`.
    pub name: OutcomeId,
    /// Whether the state holds at the watermark.
    pub holds: bool,
    /// The citizen's area at the watermark (the latest area reported by then).
    #[serde(deserialize_with = "crate::codes::lenient")]
    pub area_code: Option<AreaCode>,
}

/// One citizen's view of one mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionView {
    /// Mission id.
    pub mission: MissionId,
    /// The citizen.
    pub citizen_key: CitizenKey,
    /// Strictly increasing per citizen and mission with every committed change.
    pub version: i64,
    /// Watermark the view was evaluated at.
    pub watermark: Millis,
    /// Whether the citizen is in the mission's cohort.
    pub in_cohort: bool,
    /// Area of the anchor event, for the area breakdown.
    pub area_code: Option<AreaCode>,
    /// Month of the anchor event, for the cohort trend.
    pub cohort_month: Option<YearMonth>,
    /// Each outcome's status.
    pub outcomes: Vec<OutcomeView>,
    /// The snapshot measures whose population the citizen is in at the
    /// watermark (whether or not they are in the cohort).
    pub snapshots: Vec<SnapshotView>,
    /// Kafka timestamp of the newest department record behind the view.
    pub ingested_at: Millis,
}
