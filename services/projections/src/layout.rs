//! How projections lay out their RocksDB state: one contribution per
//! citizen and mission, under the view-topic partition it came from, and
//! each mission's metrics.
//!
//! - `v/<mission>/p<partition>/<citizen>`: a citizen's contribution;
//! - `a/<mission>`: the mission's metrics;
//! - offsets beside them (see `joinery-store`).

use joinery_store::Store;

use crate::aggregate::Contribution;

/// Key prefix of each mission's metrics: `a/<mission>`.
pub(crate) const METRICS_PREFIX: &str = "a/";

/// The first key after every key that starts with `prefix` (whose last
/// byte, here always `/`, is below 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    end
}

/// `v/<mission>/`: every contribution of a mission.
pub(crate) fn contribution_prefix(mission: &str) -> String {
    format!("v/{mission}/")
}

/// `v/<mission>/p<partition>/`: the contributions taken from one partition
/// of the mission's view topic (`p-1` for those saved before contributions
/// kept their partition), so that a rebuild's reset of a partition reads
/// only that partition's.
pub(crate) fn partition_prefix(mission: &str, partition: Option<i32>) -> String {
    format!(
        "{}p{}/",
        contribution_prefix(mission),
        partition.unwrap_or(-1)
    )
}

pub(crate) fn contribution_key(mission: &str, partition: Option<i32>, citizen: &str) -> Vec<u8> {
    format!("{}{citizen}", partition_prefix(mission, partition)).into_bytes()
}

/// Moves the contributions an earlier version saved as
/// `v/<mission>/<citizen>` under their partition's prefix, once; returns how
/// many it moved. (Citizen keys are lowercase hex, so all such keys sort
/// before `v/<mission>/p`.)
pub(crate) fn migrate_contribution_keys(store: &Store, mission: &str) -> anyhow::Result<usize> {
    let prefix = contribution_prefix(mission);
    let end = format!("{prefix}p");
    let mut moved = 0;
    loop {
        // In chunks, each written (moved keys deleted) before the next read.
        let old = store.scan_range_limit(prefix.as_bytes(), end.as_bytes(), 10_000)?;
        if old.is_empty() {
            return Ok(moved);
        }
        let mut batch = store.batch();
        for (k, v) in &old {
            let c: Contribution = serde_json::from_slice(v)?;
            let citizen = std::str::from_utf8(&k[prefix.len()..])?;
            batch.put(contribution_key(mission, c.partition, citizen), v);
            batch.delete(k);
        }
        store.write(batch)?;
        moved += old.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use joinery_store::StoreOptions;

    fn contribution(partition: Option<i32>, version: i64) -> Vec<u8> {
        serde_json::to_vec(&Contribution {
            version,
            in_cohort: true,
            area_code: Some("E08000025".parse().unwrap()),
            cohort_month: Some("2026-01".parse().unwrap()),
            outcomes: vec![],
            snapshots: vec![],
            partition,
        })
        .expect("serialises")
    }

    #[test]
    fn contributions_saved_without_their_partition_move_under_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("opens");
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let mut batch = store.batch();
        // As an earlier version saved them: no partition in the key, and
        // for `b` none in the contribution either.
        batch.put(format!("v/opportunity/{a}"), contribution(Some(2), 5));
        batch.put(format!("v/opportunity/{b}"), contribution(None, 6));
        batch.put(format!("v/safer_streets/{a}"), contribution(Some(2), 7));
        batch.put(
            contribution_key("opportunity", Some(0), &c),
            contribution(Some(0), 8),
        );
        store.write(batch).expect("writes");

        assert_eq!(
            migrate_contribution_keys(&store, "opportunity").expect("migrates"),
            2
        );
        let get = |k: Vec<u8>| store.get(k).expect("reads");
        assert_eq!(
            get(contribution_key("opportunity", Some(2), &a)),
            Some(contribution(Some(2), 5))
        );
        assert_eq!(
            get(contribution_key("opportunity", None, &b)),
            Some(contribution(None, 6))
        );
        assert_eq!(get(format!("v/opportunity/{a}").into_bytes()), None);
        assert_eq!(get(format!("v/opportunity/{b}").into_bytes()), None);
        assert_eq!(
            get(contribution_key("opportunity", Some(0), &c)),
            Some(contribution(Some(0), 8))
        );
        assert_eq!(
            get(format!("v/safer_streets/{a}").into_bytes()),
            Some(contribution(Some(2), 7)),
            "another mission's are its own to move"
        );
        assert_eq!(
            migrate_contribution_keys(&store, "opportunity").expect("migrates"),
            0
        );
    }

    #[test]
    fn a_partitions_prefix_holds_its_contributions_and_no_other_partitions() {
        let c = "c".repeat(64);
        let one = partition_prefix("opportunity", Some(1));
        let end = prefix_end(one.as_bytes());
        let inside = |k: &[u8]| k >= one.as_bytes() && k < end.as_slice();
        assert!(inside(&contribution_key("opportunity", Some(1), &c)));
        for other in [Some(0), Some(10), Some(11), Some(2), None] {
            assert!(
                !inside(&contribution_key("opportunity", other, &c)),
                "{other:?}"
            );
        }
    }
}
