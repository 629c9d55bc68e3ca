//! Configuration of the services, read once at start-up and passed to the
//! service as its own config struct (nothing global).
//!
//! Four layers, each over the one before: the defaults embedded from
//! `config/default.toml`, the operator's `--config` file (`JOINERY_CONFIG`),
//! the `JOINERY_*` environment variables each service has always read, and
//! the command-line flags. [`figment`] merges them and remembers where each
//! value came from, so that an error names the file, variable or flag at
//! fault and `joinery config show` can say where each setting came from.
//! A table or key that is not in the default file is refused.
//!
//! [`settings`] holds the tables; this module the layers and the messages.

pub(crate) mod settings;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use figment::error::Kind;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::IgnoredAny;
use serde::Deserialize;

use settings::{KafkaTable, Table};

/// The defaults: every key of every table, documented.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// What the embedded defaults are called in messages.
const DEFAULTS: &str = "the embedded defaults (services/joinery/config/default.toml)";

/// The tables a file may hold: anything else is a mistake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only to refuse unknown tables
struct Tables {
    kafka: Option<IgnoredAny>,
    registry: Option<IgnoredAny>,
    ingest: Option<IgnoredAny>,
    processor: Option<IgnoredAny>,
    projections: Option<IgnoredAny>,
}

/// One value set by an environment variable or a flag. Its `Debug` leaves
/// the value out: it may be a secret.
#[derive(Clone, PartialEq)]
pub(crate) struct Entry {
    /// Its key, `table.key`.
    pub(crate) key: String,
    /// The variable or flag that set it, for messages.
    pub(crate) label: String,
    /// Its text, parsed into the key's type on extraction.
    pub(crate) value: String,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Where a service's settings come from, lowest layer first after the
/// defaults. Its `Debug` names the variables set, never their values (the
/// key and tokens are among them).
#[derive(Clone, Default)]
pub(crate) struct Sources {
    /// The operator's file, `--config` or `JOINERY_CONFIG`.
    pub(crate) file: Option<PathBuf>,
    /// The environment, `JOINERY_*` variables only.
    pub(crate) env: BTreeMap<String, String>,
    /// Values given on the command line.
    pub(crate) flags: Vec<Entry>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Sources {
    /// The `JOINERY_*` variables of this process.
    pub(crate) fn environment() -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("JOINERY_")) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("the environment variable {name} is not UTF-8"))?;
            env.insert(name.to_owned(), value);
        }
        Ok(env)
    }
}

/// A TOML document as a layer.
struct TomlLayer {
    /// The file it was read from; `None` for the embedded defaults.
    path: Option<PathBuf>,
    text: String,
}

impl Provider for TomlLayer {
    fn metadata(&self) -> Metadata {
        match &self.path {
            Some(path) => Metadata::from("TOML file", path.as_path()),
            None => Metadata::named(DEFAULTS),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict: Dict = toml::from_str(&self.text).map_err(|e| match &self.path {
            Some(path) => figment::Error::from(format!("{}: {e}", path.display())),
            None => figment::Error::from(format!("{DEFAULTS}: {e}")),
        })?;
        Ok(Profile::Default.collect(dict))
    }
}

/// Environment variables or flags as a layer: every value a string, read
/// as the key's type on extraction, so that `JOINERY_TOPIC_NAMESPACE=2024`
/// stays a string and `JOINERY_PARTITIONS=6` becomes a number.
struct EntryLayer {
    /// `environment variable` or `flag`.
    name: &'static str,
    entries: Vec<Entry>,
}

impl Provider for EntryLayer {
    fn metadata(&self) -> Metadata {
        let labels: Vec<(String, String)> = self
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.label.clone()))
            .collect();
        Metadata::named(self.name).interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            labels
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key, |(_, label)| label.clone())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for e in &self.entries {
            let nested = figment::util::nest(&e.key, Value::from(e.value.clone()))
                .into_dict()
                .expect("a non-empty key nests into a dictionary");
            dict = merge(dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// `b` over `a`, table by table.
fn merge(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        let v = match (a.remove(&k), v) {
            (Some(Value::Dict(_, old)), Value::Dict(tag, new)) => Value::Dict(tag, merge(old, new)),
            (_, v) => v,
        };
        a.insert(k, v);
    }
    a
}

/// The environment variables of tables `A` and `B` that are set.
fn env_entries<A: Table, B: Table>(env: &BTreeMap<String, String>) -> Vec<Entry> {
    let of = |table: &str, pairs: &[(&str, &str)]| -> Vec<Entry> {
        pairs
            .iter()
            .filter_map(|(key, var)| {
                env.get(*var).map(|value| Entry {
                    key: format!("{table}.{key}"),
                    label: (*var).to_owned(),
                    value: value.clone(),
                })
            })
            .collect()
    };
    let mut entries = of(A::NAME, A::ENV);
    entries.extend(of(B::NAME, B::ENV));
    entries
}

/// A service's settings: the shared `[kafka]` table and its own.
#[derive(Debug)]
pub(crate) struct Loaded<T> {
    /// `[kafka]`.
    pub(crate) kafka: KafkaTable,
    /// The service's table.
    pub(crate) service: T,
    /// Where each key's value came from (`table.key` to `default`,
    /// `TOML file …`, `environment variable …` or `flag …`): the merged
    /// layers themselves are dropped, as they hold secrets in the clear.
    origins: BTreeMap<String, Origin>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// The embedded defaults.
    Default,
    /// The `--config` file.
    File(PathBuf),
    /// An environment variable or a flag, named.
    Other(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "TOML file {}", path.display()),
            Origin::Other(what) => f.write_str(what),
        }
    }
}

/// Where each key of tables `A` and `B` came from.
fn origins<A: Table, B: Table>(figment: &Figment) -> BTreeMap<String, Origin> {
    let mut out = BTreeMap::new();
    for (table, keys) in [(A::NAME, A::ENV), (B::NAME, B::ENV)] {
        for (key, _) in keys {
            let path = format!("{table}.{key}");
            if let Some(md) = figment.find_metadata(&path) {
                let origin = match (&md.source, md.name == DEFAULTS) {
                    (Some(Source::File(file)), _) => Origin::File(file.clone()),
                    (_, true) => Origin::Default,
                    _ => Origin::Other(origin(md, &path)),
                };
                out.insert(path, origin);
            }
        }
    }
    out
}

/// Reads the settings of the service whose table is `T`.
pub(crate) fn load<T: Table>(sources: &Sources) -> anyhow::Result<Loaded<T>> {
    let mut figment = Figment::from(TomlLayer {
        path: None,
        text: DEFAULT_TOML.to_owned(),
    });
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let file = TomlLayer {
            path: Some(path.clone()),
            text,
        };
        file.data().map_err(|e| anyhow::anyhow!("{}", e.kind))?;
        figment = figment.merge(file);
    }
    figment = figment
        .merge(EntryLayer {
            name: "environment variable",
            entries: env_entries::<KafkaTable, T>(&sources.env),
        })
        .merge(EntryLayer {
            name: "flag",
            entries: sources.flags.clone(),
        });
    figment.extract::<Tables>().map_err(|e| {
        explain(
            &figment,
            "",
            e,
            "the known tables are kafka, registry, ingest, processor, projections",
        )
    })?;
    let kafka = extract::<KafkaTable>(&figment)?;
    let service = extract::<T>(&figment)?;
    let loaded = Loaded {
        kafka,
        service,
        origins: origins::<KafkaTable, T>(&figment),
    };
    for key in T::SECRETS {
        let key = format!("{}.{key}", T::NAME);
        if let Some(Origin::File(path)) = loaded.origins.get(&key) {
            joinery_runtime::secret::check_owner_only(path)
                .with_context(|| format!("the config file sets the secret {key}"))?;
        }
    }
    Ok(loaded)
}

/// Table `T` of the merged layers.
fn extract<T: Table>(figment: &Figment) -> anyhow::Result<T> {
    figment.focus(T::NAME).extract_lossy::<T>().map_err(|e| {
        let known = format!(
            "the known keys of [{}] are {}",
            T::NAME,
            T::ENV
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        );
        explain(figment, T::NAME, e, &known)
    })
}

/// One message for every error in `error` (about `table`, or the top level
/// when empty), each naming the key, the file, variable or flag that set
/// it, and for an unknown key the known ones.
fn explain(figment: &Figment, table: &str, error: figment::Error, known: &str) -> anyhow::Error {
    let mut message = String::new();
    for e in error {
        let mut path: Vec<String> = Some(table.to_owned())
            .filter(|t| !t.is_empty())
            .into_iter()
            .collect();
        path.extend(e.path.iter().cloned());
        if let Kind::UnknownField(found, _) = &e.kind {
            if path.last() != Some(found) {
                path.push(found.clone());
            }
        }
        let key = path.join(".");
        let origin = e
            .metadata
            .as_ref()
            .or_else(|| figment.find_metadata(&key))
            .map(|md| origin(md, &key))
            .unwrap_or_else(|| "the configuration".to_owned());
        if !message.is_empty() {
            message.push('\n');
        }
        match &e.kind {
            Kind::UnknownField(..) => {
                let _ = write!(message, "unknown key `{key}` in {origin}; {known}");
            }
            Kind::MissingField(field) => {
                let _ = write!(message, "missing key `{key}.{field}` in {DEFAULTS}");
            }
            kind => {
                let _ = write!(message, "{key}: {kind}, in {origin}");
            }
        }
    }
    anyhow::anyhow!(message)
}

/// Where a value came from, for people: `TOML file /etc/joinery.toml`,
/// `environment variable JOINERY_PARTITIONS`, `flag --partitions`.
fn origin(md: &Metadata, key: &str) -> String {
    match &md.source {
        Some(Source::File(path)) => format!("{} {}", md.name, path.display()),
        _ if md.name == DEFAULTS => DEFAULTS.to_owned(),
        _ => {
            let parts: Vec<&str> = key.split('.').collect();
            format!("{} {}", md.name, md.interpolate(&Profile::Default, &parts))
        }
    }
}

impl<T: Table> Loaded<T> {
    /// The settings as TOML, each with where it came from; secrets
    /// redacted. For `joinery config show`.
    pub(crate) fn show(&self) -> anyhow::Result<String> {
        let mut out = format!(
            "# The settings of `joinery {}` and where each came from: the embedded\n\
             # defaults, under the --config file, environment variables and flags.\n\
             # Secrets are redacted.\n",
            T::NAME
        );
        self.show_table(
            &mut out,
            KafkaTable::NAME,
            KafkaTable::ENV,
            &[],
            &self.kafka,
        )?;
        out.push('\n');
        self.show_table(&mut out, T::NAME, T::ENV, T::SECRETS, &self.service)?;
        Ok(out)
    }

    fn show_table<S: serde::Serialize>(
        &self,
        out: &mut String,
        name: &str,
        keys: &[(&str, &str)],
        secrets: &[&str],
        table: &S,
    ) -> anyhow::Result<()> {
        let values = toml::Table::try_from(table).context("showing the settings")?;
        let _ = writeln!(out, "[{name}]");
        for (key, _) in keys {
            let path = format!("{name}.{key}");
            match values.get(*key) {
                Some(value) => {
                    let from = self.origins.get(&path).unwrap_or(&Origin::Default);
                    // Commented out, so that the output read back as a
                    // file does not set a secret to "[redacted]".
                    let hide = if secrets.contains(key) { "# " } else { "" };
                    let _ = writeln!(out, "{hide}{key} = {value}  # {from}");
                }
                None => {
                    let _ = writeln!(out, "# {key} is not set");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
