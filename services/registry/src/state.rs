//! The registry's state: a pure fold over the records of `_joinery_schemas`.
//! Every instance applies the same log in the same order with the same
//! rules, so every instance agrees on every id, including when two instances
//! race to register: the record that lands first in the log wins and the
//! loser's conflicting record is ignored everywhere.

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::compat::Level;

/// A record of `_joinery_schemas`: its value, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum LogRecord {
    /// A (subject, version) and the schema it points to.
    Schema {
        subject: String,
        version: u32,
        id: u32,
        schema: String,
        #[serde(default)]
        deleted: bool,
    },
    /// A compatibility level, global when `subject` is `None`.
    Config {
        subject: Option<String>,
        compatibility: Level,
    },
}

impl LogRecord {
    /// The Kafka key: compaction keeps the newest record per key.
    pub(crate) fn key(&self) -> String {
        match self {
            LogRecord::Schema { subject, version, .. } => {
                serde_json::json!({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}).to_string()
            }
            LogRecord::Config { subject, .. } => {
                serde_json::json!({"keytype": "CONFIG", "subject": subject, "magic": 0}).to_string()
            }
        }
    }
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) deleted: bool,
}

/// A registered schema.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) text: String,
    pub(crate) canonical: String,
    pub(crate) parsed: Schema,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    subjects: BTreeMap<String, Vec<Version>>,
    schemas: HashMap<u32, Stored>,
    ids: HashMap<String, u32>,
    global: Option<Level>,
    per_subject: HashMap<String, Level>,
}

/// Parses a schema and its Avro canonical form.
pub(crate) fn parse(text: &str) -> Result<(Schema, String), apache_avro::Error> {
    let parsed = Schema::parse_str(text)?;
    let canonical = parsed.canonical_form();
    Ok((parsed, canonical))
}

impl State {
    /// Applies one log record. Returns false when it conflicts with what the
    /// log already established (it is then ignored, by every instance alike).
    pub(crate) fn apply(&mut self, record: LogRecord) -> bool {
        match record {
            LogRecord::Config {
                subject: None,
                compatibility,
            } => {
                self.global = Some(compatibility);
                true
            }
            LogRecord::Config {
                subject: Some(s),
                compatibility,
            } => {
                self.per_subject.insert(s, compatibility);
                true
            }
            LogRecord::Schema {
                subject,
                version,
                id,
                schema,
                deleted,
            } => {
                let Ok((parsed, canonical)) = parse(&schema) else {
                    return false;
                };
                if self
                    .schemas
                    .get(&id)
                    .is_some_and(|s| s.canonical != canonical)
                {
                    return false;
                }
                if self.ids.get(&canonical).is_some_and(|i| *i != id) {
                    return false;
                }
                let versions = self.subjects.entry(subject).or_default();
                match versions.iter_mut().find(|v| v.version == version) {
                    Some(v) if v.id != id => return false,
                    Some(v) => v.deleted = deleted,
                    None => {
                        versions.push(Version {
                            version,
                            id,
                            deleted,
                        });
                        versions.sort_unstable_by_key(|v| v.version);
                    }
                }
                self.ids.entry(canonical.clone()).or_insert(id);
                self.schemas.entry(id).or_insert(Stored {
                    text: schema,
                    canonical,
                    parsed,
                });
                true
            }
        }
    }

    pub(crate) fn schema_count(&self) -> usize {
        self.schemas.len()
    }

    pub(crate) fn schema(&self, id: u32) -> Option<&Stored> {
        self.schemas.get(&id)
    }

    /// Subjects with at least one live version.
    pub(crate) fn subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, v)| v.iter().any(|v| !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Live versions of a subject; `None` when it has none.
    pub(crate) fn versions(&self, subject: &str) -> Option<Vec<Version>> {
        let live: Vec<Version> = self
            .subjects
            .get(subject)?
            .iter()
            .filter(|v| !v.deleted)
            .copied()
            .collect();
        (!live.is_empty()).then_some(live)
    }

    /// The live version of `subject` whose schema has this canonical form.
    pub(crate) fn find(&self, subject: &str, canonical: &str) -> Option<Version> {
        let id = *self.ids.get(canonical)?;
        self.versions(subject)?.into_iter().find(|v| v.id == id)
    }

    /// Live (subject, version) pairs that use schema `id`.
    pub(crate) fn usages(&self, id: u32) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.iter()
                    .filter(|v| v.id == id && !v.deleted)
                    .map(move |v| (s.clone(), v.version))
            })
            .collect()
    }

    /// The level in force for `subject`.
    pub(crate) fn level(&self, subject: &str) -> Level {
        self.per_subject
            .get(subject)
            .copied()
            .unwrap_or_else(|| self.global_level())
    }

    /// The level set on `subject` itself, if any.
    pub(crate) fn subject_level(&self, subject: &str) -> Option<Level> {
        self.per_subject.get(subject).copied()
    }

    /// The global level (BACKWARD_TRANSITIVE unless set).
    pub(crate) fn global_level(&self) -> Level {
        self.global.unwrap_or(Level::BackwardTransitive)
    }

    /// The record that would register `text` under `subject`: its id is shared
    /// by an identical schema anywhere, else the next free one; its version
    /// follows every version the subject ever had.
    pub(crate) fn proposal(&self, subject: &str, text: &str, canonical: &str) -> LogRecord {
        let id = self
            .ids
            .get(canonical)
            .copied()
            .unwrap_or_else(|| self.schemas.keys().max().map_or(1, |m| m + 1));
        let version = self
            .subjects
            .get(subject)
            .and_then(|v| v.last())
            .map_or(1, |v| v.version + 1);
        LogRecord::Schema {
            subject: subject.to_owned(),
            version,
            id,
            schema: text.to_owned(),
            deleted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"string"}]}"#;
    const B: &str = r#"{"type":"record","name":"B","fields":[{"name":"y","type":"long"}]}"#;

    fn reg(s: &mut State, subject: &str, text: &str) -> (u32, u32) {
        let (_, canon) = parse(text).expect("valid");
        let p = s.proposal(subject, text, &canon);
        assert!(s.apply(p.clone()));
        match p {
            LogRecord::Schema { version, id, .. } => (version, id),
            LogRecord::Config { .. } => unreachable!(),
        }
    }

    #[test]
    fn identical_schemas_share_an_id_and_versions_count_up() {
        let mut s = State::default();
        assert_eq!(reg(&mut s, "a", A), (1, 1));
        assert_eq!(reg(&mut s, "b", A), (1, 1));
        assert_eq!(reg(&mut s, "a", B), (2, 2));
        let (_, canon_b) = parse(B).expect("valid");
        assert_eq!(s.find("a", &canon_b).map(|v| v.version), Some(2));
        assert_eq!(s.find("b", &canon_b), None);
        assert_eq!(s.usages(1), vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    }

    #[test]
    fn a_racing_registration_that_reuses_an_id_loses_everywhere() {
        let mut s = State::default();
        let first = LogRecord::Schema {
            subject: "a".into(),
            version: 1,
            id: 1,
            schema: A.into(),
            deleted: false,
        };
        let racer = LogRecord::Schema {
            subject: "b".into(),
            version: 1,
            id: 1,
            schema: B.into(),
            deleted: false,
        };
        assert!(s.apply(first));
        assert!(!s.apply(racer), "id 1 already belongs to A");
        assert_eq!(s.versions("b"), None);
    }

    #[test]
    fn a_deleted_version_is_hidden_but_its_id_still_resolves() {
        let mut s = State::default();
        reg(&mut s, "a", A);
        assert!(s.apply(LogRecord::Schema {
            subject: "a".into(),
            version: 1,
            id: 1,
            schema: A.into(),
            deleted: true
        }));
        assert_eq!(s.versions("a"), None);
        assert!(s.subjects().is_empty());
        assert!(s.schema(1).is_some());
        // Registering it again makes a new version with the same id.
        assert_eq!(reg(&mut s, "a", A), (2, 1));
    }

    #[test]
    fn compatibility_defaults_to_backward_transitive_and_can_be_overridden() {
        let mut s = State::default();
        assert_eq!(s.level("a"), Level::BackwardTransitive);
        s.apply(LogRecord::Config {
            subject: None,
            compatibility: Level::Full,
        });
        s.apply(LogRecord::Config {
            subject: Some("a".into()),
            compatibility: Level::None,
        });
        assert_eq!((s.level("a"), s.level("b")), (Level::None, Level::Full));
    }
}
