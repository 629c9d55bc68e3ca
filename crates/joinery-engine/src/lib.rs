//! # joinery-engine
//!
//! The functional core of Joinery: given one citizen's events (any
//! department, any arrival order, duplicates allowed) and an event-time
//! watermark, compute that citizen's view of every mission. It knows nothing
//! of Kafka, RocksDB, the clock or the network; the live processor, a rebuild
//! and a what-if replay all run this same code.
//!
//! Missions are data, not code: [`definition`] reads them from TOML files
//! (`missions/` in the repository), [`evaluate`] runs them.
//!
//! # Layout
//!
//! - [`citizen`]: a citizen's deduplicated event history.
//! - [`mission`]: the `Mission` trait and the evaluation it returns.
//! - [`definition`]: capabilities and missions from TOML, validated.
//! - [`evaluate`]: cohort, outcome windows and statuses.
//!
//! ```
//! use joinery_engine::{definition, CitizenEvents, Mission};
//! let caps = definition::parse_capabilities("c.toml".as_ref(), r#"
//!     [capability.left_education]
//!     doc = "Left education."
//!     kind = "first"
//!     event = "dfe.EducationExited"
//! "#).unwrap();
//! let mission = definition::parse_mission("m.toml".as_ref(), r#"
//!     id = "leavers"
//!     title = "Leavers"
//!     doc = "Everyone who leaves education."
//!     [cohort]
//!     doc = "Leavers."
//!     anchor = "left_education"
//!     [[outcome]]
//!     id = "left_again"
//!     doc = "Left education again within a year (a toy outcome)."
//!     condition = "left_education"
//!     within_days = 365
//! "#, &caps).unwrap();
//! let eval = mission.evaluate(&CitizenEvents::default(), 0);
//! assert!(!eval.in_cohort);
//! ```

pub mod citizen;
pub mod definition;
pub mod evaluate;
pub mod mission;

pub use citizen::CitizenEvents;
pub use definition::{fingerprint, load_dir as load_missions, DefinitionError, MissionDef};
pub use mission::{Evaluation, Mission};
