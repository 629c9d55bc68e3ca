//! What a mission is to the engine: a pure function from a citizen's events
//! and the watermark to an [`Evaluation`].

use joinery_domain::{AreaCode, Millis, MissionId, OutcomeView, SnapshotView, YearMonth};
use serde::{Deserialize, Serialize};

use crate::CitizenEvents;

/// One citizen's evaluation of one mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Whether the citizen is in the mission's cohort.
    pub in_cohort: bool,
    /// Area of the anchor event (or, without one, of any event).
    #[serde(deserialize_with = "joinery_domain::codes::lenient")]
    pub area_code: Option<AreaCode>,
    /// Month of the anchor event.
    #[serde(deserialize_with = "joinery_domain::codes::lenient")]
    pub cohort_month: Option<YearMonth>,
    /// Each outcome's status.
    pub outcomes: Vec<OutcomeView>,
    /// The earliest watermark at which this evaluation could change without
    /// any new event (an outcome's deadline, or for a snapshot the next
    /// event time or birthday month that could move the citizen in or out);
    /// `None` when nothing can change without a new event.
    pub next_deadline: Option<Millis>,
    /// The snapshot measures whose population the citizen is in at the
    /// watermark, whether or not they are in the cohort. Last, and
    /// defaulted, so that records stored (by position) before it existed
    /// still read.
    #[serde(default)]
    pub snapshots: Vec<SnapshotView>,
}

/// A mission: a cohort and its outcomes, evaluated per citizen.
pub trait Mission: std::fmt::Debug + Send + Sync {
    /// The mission id, as in `joinery.views.<id>` and the API.
    fn id(&self) -> &MissionId;

    /// Evaluates the mission over one citizen's events at `watermark`.
    /// Must be deterministic: same events and watermark, same evaluation.
    fn evaluate(&self, events: &CitizenEvents, watermark: Millis) -> Evaluation;
}
