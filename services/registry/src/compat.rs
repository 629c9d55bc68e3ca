//! Compatibility rules between a new schema and a subject's registered
//! versions, as the Confluent registry defines them:
//!
//! | level | the new schema must |
//! | --- | --- |
//! | BACKWARD | read data written with the latest version |
//! | FORWARD | be readable by the latest version |
//! | FULL | both |
//! | `*_TRANSITIVE` | the same, against every version, not just the latest |
//! | NONE | nothing |
//!
//! apache-avro's resolution rules decide readability; enum symbols are
//! checked here too (a reader must know every symbol a writer may send,
//! unless its enum has a default). Messages name the field and the rule.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema::{Schema, SchemaKind};
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

/// A compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// No check.
    None,
    /// New reads latest.
    Backward,
    /// New reads every version.
    BackwardTransitive,
    /// Latest reads new.
    Forward,
    /// Every version reads new.
    ForwardTransitive,
    /// Both ways with latest.
    Full,
    /// Both ways with every version.
    FullTransitive,
}

impl Level {
    /// Every level, for error messages.
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "Invalid compatibility level `{s}`; valid levels are {}",
                    Level::ALL.map(Level::name).join(", ")
                )
            })
    }
}

fn describe(e: &apache_avro::error::CompatibilityError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether `reader` can read everything `writer` writes; why not, if not.
fn can_read(writer: &Schema, reader: &Schema) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = SchemaCompatibility::can_read(writer, reader) {
        problems.push(describe(&e));
    }
    enum_symbols(writer, reader, "", &mut problems);
    problems
}

fn enum_symbols(writer: &Schema, reader: &Schema, path: &str, out: &mut Vec<String>) {
    match (writer, reader) {
        (Schema::Record(w), Schema::Record(r)) => {
            for rf in &r.fields {
                if let Some(wf) = w.fields.iter().find(|f| f.name == rf.name) {
                    let p = if path.is_empty() {
                        rf.name.clone()
                    } else {
                        format!("{path}.{}", rf.name)
                    };
                    enum_symbols(&wf.schema, &rf.schema, &p, out);
                }
            }
        }
        (Schema::Enum(w), Schema::Enum(r)) if r.default.is_none() => {
            let missing: Vec<&str> = w
                .symbols
                .iter()
                .filter(|s| !r.symbols.contains(s))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "Field '{path}': the reader's enum lacks symbol(s) {} that the writer may send, and has no default",
                    missing.join(", ")
                ));
            }
        }
        (Schema::Union(w), Schema::Union(r)) => {
            for wv in w.variants() {
                let kind = SchemaKind::from(wv);
                if let Some(rv) = r.variants().iter().find(|v| SchemaKind::from(*v) == kind) {
                    enum_symbols(wv, rv, path, out);
                }
            }
        }
        (Schema::Array(w), Schema::Array(r)) => enum_symbols(&w.items, &r.items, path, out),
        _ => {}
    }
}

/// Why `new` may not be registered after `existing` (oldest first) under
/// `level`; empty when it may.
pub fn check(level: Level, new: &Schema, existing: &[(u32, &Schema)]) -> Vec<String> {
    let against: Vec<&(u32, &Schema)> = if level.transitive() {
        existing.iter().collect()
    } else {
        existing.last().into_iter().collect()
    };
    let mut messages = Vec::new();
    for (version, old) in against {
        if level.backward() {
            for p in can_read(old, new) {
                messages.push(format!(
                    "{level}: the new schema cannot read data written with version {version}: {p}"
                ));
            }
        }
        if level.forward() {
            for p in can_read(new, old) {
                messages.push(format!(
                    "{level}: version {version} cannot read data written with the new schema: {p}"
                ));
            }
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"E","namespace":"gov.joinery.t","fields":[{fields}]}}"#
        ))
        .expect("valid schema")
    }

    const V1: &str = r#"{"name":"a","type":"string"},{"name":"r","type":{"type":"enum","name":"R","symbols":["X","Y"]}}"#;

    #[test]
    fn adding_an_optional_field_with_a_default_is_backward_compatible() {
        let v1 = s(V1);
        let v2 = s(&format!(
            r#"{V1},{{"name":"b","type":["null","long"],"default":null}}"#
        ));
        assert!(check(Level::BackwardTransitive, &v2, &[(1, &v1)]).is_empty());
        assert!(check(Level::FullTransitive, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn a_new_field_without_a_default_is_refused_naming_the_field() {
        let v1 = s(V1);
        let v2 = s(&format!(r#"{V1},{{"name":"b","type":"long"}}"#));
        let m = check(Level::Backward, &v2, &[(1, &v1)]);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("'b'") && m[0].contains("default") && m[0].contains("version 1"),
            "{m:?}"
        );
    }

    #[test]
    fn an_incompatible_type_change_is_refused_naming_the_field() {
        let v1 = s(V1);
        let v2 = s(
            r#"{"name":"a","type":"long"},{"name":"r","type":{"type":"enum","name":"R","symbols":["X","Y"]}}"#,
        );
        let m = check(Level::Backward, &v2, &[(1, &v1)]);
        assert!(m.iter().any(|x| x.contains("'a'")), "{m:?}");
        assert!(check(Level::None, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn removing_an_enum_symbol_breaks_backward_compatibility() {
        let v1 = s(V1);
        let v2 = s(
            r#"{"name":"a","type":"string"},{"name":"r","type":{"type":"enum","name":"R","symbols":["X"]}}"#,
        );
        let m = check(Level::Backward, &v2, &[(1, &v1)]);
        assert!(
            m.iter().any(|x| x.contains("'r'") && x.contains('Y')),
            "{m:?}"
        );
        // Forward is fine: every symbol the new writer sends, the old reader knows.
        assert!(check(Level::Forward, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_version() {
        let v1 = s(r#"{"name":"a","type":"string"}"#);
        let v2 = s(r#"{"name":"a","type":"string"},{"name":"b","type":"long","default":0}"#);
        // v3 drops b's default: fine against v2 (which has b), not against v1.
        let v3 = s(r#"{"name":"a","type":"string"},{"name":"b","type":"long"}"#);
        assert!(check(Level::Backward, &v3, &[(1, &v1), (2, &v2)]).is_empty());
        assert!(!check(Level::BackwardTransitive, &v3, &[(1, &v1), (2, &v2)]).is_empty());
    }

    #[test]
    fn levels_parse_case_insensitively_and_refuse_unknown_ones() {
        assert_eq!(
            "full_transitive".parse::<Level>(),
            Ok(Level::FullTransitive)
        );
        assert!("SIDEWAYS"
            .parse::<Level>()
            .unwrap_err()
            .contains("BACKWARD_TRANSITIVE"));
    }
}
