//! Control records on a view topic: how a rebuild tells every reader of
//! `joinery.views.<mission>` that the views before it no longer count.
//!
//! `joinery rebuild <mission>` writes a **reset** record to every partition
//! of the mission's view topic before it evaluates the log, and a
//! **complete** record to every partition once all its views are
//! acknowledged. A reader drops, at a partition's reset, every contribution
//! it took from that partition, and applies the views after it: the
//! rebuild's, and the live processor's. The figures are those of the log
//! evaluated afresh by the current definitions, whatever the old views said.
//!
//! The records carry the header [`CONTROL_HEADER`] and a small JSON body
//! instead of an Avro view; readers check the header before decoding. Reset
//! and complete have keys of their own, so compaction keeps the newest of
//! each: a reader starting from the beginning of a compacted topic still
//! meets the newest reset after every view it voids.

use serde::{Deserialize, Serialize};

pub use crate::names::CONTROL_HEADER;

/// What a control record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// `reset` or `complete`.
    pub kind: ControlKind,
    /// The mission whose views it concerns.
    pub mission: String,
    /// Id of the rebuild (unique per run).
    pub rebuild: String,
    /// Partitions of the view topic, each of which gets one record of each kind.
    pub partitions: i32,
    /// Wall-clock time the rebuild started (ms since the epoch).
    pub started_at: i64,
}

/// The kind of a control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Views before this point in the partition no longer count.
    Reset,
    /// The rebuild has published every view of this partition.
    Complete,
}

impl ControlKind {
    /// The header value and key suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Reset => "reset",
            ControlKind::Complete => "complete",
        }
    }
}

impl Control {
    /// The record key: one per kind, never a citizen key (those are 64 hex characters).
    pub fn key(&self) -> Vec<u8> {
        format!("joinery.control.{}", self.kind.as_str()).into_bytes()
    }

    /// The record value.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control record serialises")
    }

    /// Reads a control record's value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Control, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_records_round_trip_and_never_look_like_a_citizen() {
        let c = Control {
            kind: ControlKind::Reset,
            mission: "opportunity".parse().unwrap(),
            rebuild: "r1".into(),
            partitions: 3,
            started_at: 5,
        };
        assert_eq!(Control::from_bytes(&c.to_bytes()).expect("reads"), c);
        assert_ne!(c.key().len(), 64);
        let done = Control {
            kind: ControlKind::Complete,
            ..c.clone()
        };
        assert_ne!(
            done.key(),
            c.key(),
            "compaction keeps the newest of each kind"
        );
    }
}
