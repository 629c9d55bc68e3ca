//! What the processor keeps per citizen and per partition in RocksDB, and
//! the keys it keeps them under.
//!
//! - `c/<partition>/<citizen_key>`: the citizen's events and last views;
//! - `t/<partition>/<deadline>/<citizen_key>`: a timer, fired when the
//!   partition's watermark passes the deadline;
//! - `w/<partition>`: the greatest event time seen in the partition;
//! - offsets and the outbox beside them (see `joinery-store`, `outbox`).

use std::collections::BTreeMap;

use joinery_domain::{CitizenKey, Millis};
use joinery_engine::{CitizenEvents, Evaluation};
use serde::{Deserialize, Serialize};

/// The last view published for one mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub(crate) version: i64,
    pub(crate) evaluation: Evaluation,
}

/// Everything the processor knows about one citizen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CitizenRecord {
    pub(crate) events: CitizenEvents,
    pub(crate) views: BTreeMap<String, Published>,
    /// Kafka timestamp of the newest record applied.
    pub(crate) ingested_at: Millis,
    /// The timer currently set for this citizen, if any.
    pub(crate) timer: Option<Millis>,
}

pub(crate) fn citizen_key(partition: i32, citizen: &CitizenKey) -> Vec<u8> {
    let mut k = b"c/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(citizen.as_str().as_bytes());
    k
}

/// Order-preserving encoding of a signed time.
fn time_bytes(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn timer_prefix(partition: i32) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(b'/');
    k
}

pub(crate) fn timer_key(partition: i32, deadline: Millis, citizen: &CitizenKey) -> Vec<u8> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&time_bytes(deadline));
    k.extend_from_slice(citizen.as_str().as_bytes());
    k
}

/// The first timer key after every deadline at or before `watermark`.
pub(crate) fn timer_end(partition: i32, watermark: Millis) -> Vec<u8> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&time_bytes(watermark.saturating_add(1)));
    k
}

/// The citizen of a timer key.
pub(crate) fn timer_citizen(key: &[u8], partition: i32) -> Option<CitizenKey> {
    let rest = key.get(timer_prefix(partition).len() + 8..)?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

pub(crate) fn max_time_key(partition: i32) -> Vec<u8> {
    let mut k = b"w/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_deadline_including_before_1970() {
        let c: CitizenKey = "ab".repeat(32).parse().expect("key");
        let a = timer_key(1, -5, &c);
        let b = timer_key(1, 3, &c);
        assert!(a < b && b < timer_end(1, 3) && timer_end(1, 2) < b);
        assert_eq!(timer_citizen(&b, 1), Some(c));
    }
}
