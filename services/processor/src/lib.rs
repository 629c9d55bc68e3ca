//! # joinery-processor
//!
//! The stream processor: a consumer group over every department topic that
//! joins each citizen's events in RocksDB, runs the mission engine over
//! them, and publishes each changed view to `joinery.views.<mission>`.
//!
//! Per batch of records it: decodes each (bad ones become dead letters with
//! the reason, source topic, partition and offset); runs the partition step
//! for each source partition: applies each event to its citizen (duplicates
//! by `event_id` change nothing), advances the partition's watermark
//! (greatest event time minus the allowed lateness) and fires the timers it
//! passes, and evaluates the changed citizens; and writes state, timers,
//! offsets and the outbox of views and dead letters in one RocksDB batch.
//! Only then are the outbox records produced. After a crash it resumes from
//! its own stored offsets and republishes the outbox, so views equal those
//! of a clean replay (effectively once).
//!
//! # Layout
//!
//! The functional core, tested without a broker:
//! - `step`: the partition step, a function of data (events, stored
//!   records, watermark and due timers in; records, timers, views out).
//! - `partition`: what the step reads and in what order, and its writes.
//! - `state`: the per-citizen records, timers and watermark keys in RocksDB.
//! - `definitions`: which rules the state was computed with.
//!
//! The I/O shell:
//! - `service` ([`run`]): start-up and supervision.
//! - `consume`: the batch loop over the stateful consumer.
//! - `decode`: records to events or dead letters.
//! - `worker`: a batch's partitions on worker threads, one RocksDB write each.
//! - `outbox` and `publish`: records written with the state, produced after it.
//! - [`rebuild()`]: `joinery rebuild <mission>`, one mission afresh over the log.
//! - [`settle_views`]: a rebuild's last step on the view topic.

mod config;
mod consume;
mod decode;
mod definitions;
mod metrics;
mod outbox;
mod partition;
mod publish;
mod rebuild;
mod service;
mod settle;
mod state;
mod step;
mod topics;
mod worker;

pub use config::{Lateness, ProcessorConfig, MAX_EVENTS_PER_CITIZEN_LIMIT};
pub use rebuild::rebuild;
pub use service::run;
pub use settle::settle_views;
pub use step::view_version;
pub use topics::{processor_topics, DEAD_LETTER_TOPIC};
