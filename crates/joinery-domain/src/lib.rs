//! # joinery-domain
//!
//! The vocabulary every other Joinery crate speaks: departments, event types,
//! citizen keys and event ids, and the pseudonymisation that turns a raw
//! identifier (NINO, NHS number, ULN) into a `citizen_key` before anything
//! reaches Kafka.
//!
//! # Layout
//!
//! - [`department`]: the closed list of departments and their event types, and
//!   the Kafka topic each department publishes to.
//! - [`ids`]: `CitizenKey` and `EventId` newtypes, parsed at the boundary.
//! - [`codes`]: `MissionId`, `OutcomeId`, `AreaCode` (ONS GSS) and
//!   `YearMonth`, the typed forms of values that travel as text.
//! - [`pseudonym`]: identifier normalisation and the keyed HMAC pseudonym,
//!   shared by the ingest gateway and departments that produce directly.
//! - [`event`]: the decoded form of a department event that the processor and
//!   the mission engine work on.

pub mod codes;
pub mod department;
pub mod event;
pub mod ids;
pub mod pseudonym;
pub mod view;

pub use codes::{AreaCode, InvalidCode, MissionId, OutcomeId, YearMonth};
pub use department::{Department, EventType};
pub use event::{Event, FieldValue, Millis};
pub use ids::{CitizenKey, EventId};
pub use pseudonym::{IdentifierKind, PseudonymError, Pseudonymiser};
pub use view::{MissionView, OutcomeState, OutcomeView, SnapshotView};
