//! The registry's in-memory state, rebuilt from `_joinery_schemas`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One registered (subject, version) and the schema it points to: the value
/// of a `_joinery_schemas` record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SchemaRecord {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Versions of each subject, in order: (version, schema id).
    subjects: BTreeMap<String, Vec<(u32, u32)>>,
    /// Schema text by id.
    schemas: HashMap<u32, String>,
    /// Id of each distinct schema, by its Avro canonical form.
    ids: HashMap<String, u32>,
    /// Canonical form by id.
    canonical: HashMap<u32, String>,
}

impl State {
    pub(crate) fn apply(&mut self, r: SchemaRecord, canonical: String) {
        self.schemas.entry(r.id).or_insert(r.schema);
        self.ids.entry(canonical.clone()).or_insert(r.id);
        self.canonical.entry(r.id).or_insert(canonical);
        let versions = self.subjects.entry(r.subject).or_default();
        if !versions.iter().any(|(v, _)| *v == r.version) {
            versions.push((r.version, r.id));
            versions.sort_unstable();
        }
    }

    pub(crate) fn schema_count(&self) -> usize {
        self.schemas.len()
    }

    pub(crate) fn schema(&self, id: u32) -> Option<&str> {
        self.schemas.get(&id).map(String::as_str)
    }

    pub(crate) fn subjects(&self) -> Vec<String> {
        self.subjects.keys().cloned().collect()
    }

    pub(crate) fn versions(&self, subject: &str) -> Option<&[(u32, u32)]> {
        self.subjects.get(subject).map(Vec::as_slice)
    }

    /// The version of `subject` whose schema has this canonical form.
    pub(crate) fn find(&self, subject: &str, canonical: &str) -> Option<(u32, u32)> {
        let id = *self.ids.get(canonical)?;
        self.versions(subject)?
            .iter()
            .copied()
            .find(|(_, i)| *i == id)
    }

    /// What registering `canonical` under `subject` would write: the id is
    /// shared by identical schemas across subjects, else the next free one.
    pub(crate) fn next_record(&self, subject: &str, schema: &str, canonical: &str) -> SchemaRecord {
        let id = self
            .ids
            .get(canonical)
            .copied()
            .unwrap_or_else(|| self.schemas.keys().max().map_or(1, |m| m + 1));
        let version = self
            .versions(subject)
            .and_then(|v| v.last())
            .map_or(1, |(v, _)| v + 1);
        SchemaRecord {
            subject: subject.to_owned(),
            version,
            id,
            schema: schema.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_schemas_share_an_id_and_versions_count_up() {
        let mut s = State::default();
        let r1 = s.next_record("a", "{}", "A");
        assert_eq!((r1.version, r1.id), (1, 1));
        s.apply(r1, "A".into());
        let r2 = s.next_record("b", "{}", "A");
        assert_eq!((r2.version, r2.id), (1, 1));
        s.apply(r2, "A".into());
        let r3 = s.next_record("a", "{x}", "B");
        assert_eq!((r3.version, r3.id), (2, 2));
        s.apply(r3, "B".into());
        assert_eq!(s.find("a", "B"), Some((2, 2)));
        assert_eq!(s.find("b", "B"), None);
        assert_eq!(s.subjects(), vec!["a".to_owned(), "b".to_owned()]);
    }
}
