//! # joinery-engine
//!
//! The functional core of Joinery: given one citizen's events (any
//! department, any arrival order, duplicates allowed) and an event-time
//! watermark, compute that citizen's view of every mission. It knows nothing
//! of Kafka, RocksDB, the clock or the network; the live processor, a rebuild
//! and a what-if replay all run this same code.
//!
//! # Layout
//!
//! - [`citizen`]: a citizen's deduplicated event history.
//! - [`mission`]: the `Mission` trait and the evaluation it returns.
//! - [`opportunity`]: the opportunity mission's education-to-employment outcome.
//!
//! ```
//! use joinery_engine::{CitizenEvents, Mission, opportunity::Opportunity};
//! let events = CitizenEvents::default();
//! let eval = Opportunity.evaluate(&events, 0);
//! assert!(!eval.in_cohort);
//! ```

pub mod citizen;
pub mod mission;
pub mod opportunity;

pub use citizen::CitizenEvents;
pub use mission::{builtin_missions, Evaluation, Mission};
