//! Which rules the processor's state was computed with, and what happens
//! when they change.
//!
//! Every stored evaluation and timer follows from the missions and the
//! allowed lateness. The state keeps a description of them (a stable
//! serialisation, [`joinery_engine::fingerprint`]); a processor started with
//! other rules deletes its state and rebuilds it from the beginning of the
//! department log.

use joinery_engine::MissionDef;
use joinery_store::Store;

use crate::ProcessorConfig;

/// Key of the description of the definitions (missions and lateness) the
/// state was computed with.
const DEFINITIONS_KEY: &[u8] = b"d/definitions";

/// The description of the rules stored with the state. `v3`: event time
/// is clamped to a record's Kafka timestamp plus the clock skew and events
/// count from their date. `v4`: events are identified by department and
/// id, and kept in every version (corrections, retractions). `v5`: each
/// department has its own lateness, a mission's statuses resolve at event
/// time minus the greatest of its departments', and timers are kept in
/// event time. State
/// computed by earlier rules is rebuilt. The event-time horizon and the
/// per-citizen cap are not part of it: raising either lets dead letters be
/// replayed into the same state; lowering one applies only to records read
/// from then on (rebuild for it to apply to the whole log).
fn description(config: &ProcessorConfig, missions: &[MissionDef]) -> String {
    format!(
        "v5 lateness={} max_clock_skew={}\n{}",
        config.lateness.describe(),
        config.max_clock_skew,
        joinery_engine::fingerprint(missions)
    )
}

/// Opens the state. When it was computed with other definitions (a mission
/// added, removed or changed, another lateness or clock skew, or an earlier
/// version's event-time rules, including state from before the description
/// was kept), its stored evaluations and timers are those of the old rules:
/// it is deleted, and the processor rebuilds it from the beginning of the
/// department log.
pub(crate) fn open_state(
    config: &ProcessorConfig,
    missions: &[MissionDef],
) -> anyhow::Result<Store> {
    let description = description(config, missions);
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open(&config.data_dir, &config.store)?;
    // A partition's watermark is written with its first batch.
    let fresh = store.scan(b"w/", None)?.is_empty();
    let stale = match store.get(DEFINITIONS_KEY)? {
        Some(d) if d == description.as_bytes() => return Ok(store),
        Some(_) => true,
        None => !fresh,
    };
    let store = if stale {
        tracing::warn!(dir = %config.data_dir.display(), "the mission definitions, a department's allowed lateness, the clock skew or the processor's event-time rules changed since this state was computed: deleting it and rebuilding it from the beginning of the department log (run `joinery rebuild <mission>` for each changed mission so that its earlier views stop counting)");
        drop(store);
        std::fs::remove_dir_all(&config.data_dir)?;
        std::fs::create_dir_all(&config.data_dir)?;
        Store::open(&config.data_dir, &config.store)?
    } else {
        store
    };
    let mut b = store.batch();
    b.put(DEFINITIONS_KEY, description.as_bytes());
    store.write(b)?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use joinery_runtime::kafka::KafkaSettings;

    fn missions() -> Vec<MissionDef> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../missions");
        joinery_engine::load_missions(&dir).expect("the repository's missions load")
    }

    fn config(dir: &std::path::Path) -> ProcessorConfig {
        ProcessorConfig::local(
            KafkaSettings::new("127.0.0.1:1"),
            String::new(),
            dir.to_owned(),
        )
    }

    #[test]
    fn state_survives_a_reworded_mission_and_goes_when_a_rule_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("state");
        let config = config(&data);
        let mut defs = missions();
        let store = open_state(&config, &defs).expect("opens");
        let mut b = store.batch();
        b.put(b"c/keep", b"1");
        store.write(b).expect("writes");
        drop(store);

        defs[0].title = "A new title".into();
        let store = open_state(&config, &defs).expect("opens");
        assert!(store.get(b"c/keep").expect("reads").is_some(), "kept");
        drop(store);

        defs[0].outcomes[0].within_days += 1;
        let store = open_state(&config, &defs).expect("opens");
        assert!(store.get(b"c/keep").expect("reads").is_none(), "rebuilt");
        let mut b = store.batch();
        b.put(b"c/keep", b"1");
        store.write(b).expect("writes");
        drop(store);

        // Another department's lateness is another rule.
        let mut config = config;
        config.lateness.departments.insert(
            joinery_domain::Department::Hmrc,
            42 * joinery_domain::event::DAY_MS,
        );
        let store = open_state(&config, &defs).expect("opens");
        assert!(store.get(b"c/keep").expect("reads").is_none(), "rebuilt");
    }

    #[test]
    fn state_of_an_earlier_version_or_without_a_description_is_rebuilt() {
        let defs = missions();
        for old in [
            Some("v2 allowed_lateness=604800000\n[]"),
            Some("v4 allowed_lateness=604800000 max_clock_skew=300000\n[]"),
            None,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = config(&dir.path().join("state"));
            std::fs::create_dir_all(&config.data_dir).expect("mkdir");
            let store = Store::open(&config.data_dir, &config.store).expect("opens");
            let mut b = store.batch();
            if let Some(d) = old {
                b.put(DEFINITIONS_KEY, d);
            }
            b.put(b"w/0", 1i64.to_be_bytes());
            b.put(b"c/old", b"1");
            store.write(b).expect("writes");
            drop(store);
            let store = open_state(&config, &defs).expect("opens");
            assert!(store.get(b"c/old").expect("reads").is_none(), "{old:?}");
            assert_eq!(
                store.get(DEFINITIONS_KEY).expect("reads"),
                Some(description(&config, &defs).into_bytes())
            );
        }
    }
}
