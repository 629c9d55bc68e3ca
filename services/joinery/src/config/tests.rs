use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;

use super::settings::{IngestTable, KafkaTable, ProcessorTable, ProjectionsTable, RegistryTable};
use super::*;
use crate::cli::{Cli, Command, ConfigCommand, Service};

const KEY: &str = "a-test-pseudonymisation-key-of-32-bytes-or-more";

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A config file with `text`, readable by its owner only unless `mode` says otherwise.
fn file(dir: &Path, text: &str, mode: u32) -> Result<PathBuf> {
    let path = dir.join("joinery.toml");
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(path)
}

/// The sources of `joinery <args>` with environment `env`, as `main` builds them.
fn sources(args: &[&str], env: BTreeMap<String, String>) -> Result<(Sources, Service)> {
    let cli = Cli::try_parse_from(std::iter::once("joinery").chain(args.iter().copied()))?;
    let service = match cli.command {
        Command::Service(s) => s,
        Command::Config {
            command: ConfigCommand::Show { service },
        } => service,
        other => anyhow::bail!("not a service: {other:?}"),
    };
    let sources = Sources {
        file: cli.config,
        env,
        flags: service.flags(),
    };
    Ok((sources, service))
}

#[test]
fn the_default_file_parses_into_every_service_settings() -> Result<()> {
    let none = Sources::default();
    let kafka = load::<RegistryTable>(&none)?.kafka;
    assert_eq!(
        kafka,
        KafkaTable {
            brokers: "127.0.0.1:9092".into(),
            partitions: 6,
            replication: 1,
            topic_namespace: String::new(),
        }
    );
    assert_eq!(
        load::<RegistryTable>(&none)?.service.listen.to_string(),
        "127.0.0.1:8081"
    );
    let ingest = load::<IngestTable>(&none)?.service;
    assert_eq!(ingest.max_batch, 5000);
    assert_eq!(ingest.pseudonym_key_file, None);
    assert!(ingest.pseudonym_key.is_none());
    let processor = load::<ProcessorTable>(&none)?.service;
    assert_eq!(processor.workers, None);
    assert_eq!(processor.max_batch, 40_000);
    let config = processor.config(&kafka);
    assert_eq!(config.store.block_cache_bytes, 256 << 20);
    assert_eq!(
        config.lateness,
        joinery_processor::Lateness::uniform(7 * joinery_domain::event::DAY_MS)
    );
    let projections = load::<ProjectionsTable>(&none)?.service;
    assert_eq!(projections.sdc_threshold, 10);
    assert_eq!(projections.group, "joinery-projections");
    Ok(())
}

#[test]
fn a_department_has_its_own_lateness_from_the_file_or_its_variable() -> Result<()> {
    use joinery_domain::event::DAY_MS;
    use joinery_domain::Department;
    let dir = tempfile::tempdir()?;
    let path = file(
        dir.path(),
        "[processor]\nallowed_lateness_days = 10\n[processor.lateness_days]\ndfe = 120\n",
        0o600,
    )?;
    let sources = Sources {
        file: Some(path),
        env: [("JOINERY_LATENESS_DAYS_HMRC".to_owned(), "35".to_owned())].into(),
        ..Sources::default()
    };
    let loaded = load::<ProcessorTable>(&sources)?;
    let lateness = loaded.service.config(&loaded.kafka).lateness;
    assert_eq!(lateness.of(Department::Dfe), 120 * DAY_MS);
    assert_eq!(lateness.of(Department::Hmrc), 35 * DAY_MS);
    assert_eq!(lateness.of(Department::Moj), 10 * DAY_MS, "the default");
    // A department that does not exist is refused.
    let path = file(dir.path(), "[processor.lateness_days]\nhmr = 35\n", 0o600)?;
    let e = load::<ProcessorTable>(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .expect_err("`hmr` is not a department");
    assert!(format!("{e:#}").contains("hmr"), "{e:#}");
    Ok(())
}

#[test]
fn the_default_file_names_every_environment_variable() {
    let tables: [&[(&str, &str)]; 5] = [
        KafkaTable::ENV,
        RegistryTable::ENV,
        IngestTable::ENV,
        ProcessorTable::ENV,
        ProjectionsTable::ENV,
    ];
    for (key, var) in tables.concat() {
        assert!(
            DEFAULT_TOML.contains(var),
            "{var} ({key}) is not documented"
        );
    }
}

#[test]
fn an_unknown_key_is_refused_naming_the_file_the_key_and_the_known_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = file(
        dir.path(),
        "[processor]\nlisten = \"127.0.0.1:1\"\nworker = 4\n",
        0o600,
    )?;
    let e = load::<ProcessorTable>(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .expect_err("`worker` is not a key");
    let e = format!("{e:#}");
    assert!(e.contains("unknown key `processor.worker`"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("workers, max_batch"), "{e}");
    Ok(())
}

#[test]
fn an_unknown_table_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = file(dir.path(), "[procesor]\nworkers = 4\n", 0o600)?;
    let e = load::<ProcessorTable>(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .expect_err("`procesor` is not a table");
    let e = format!("{e:#}");
    assert!(e.contains("unknown key `procesor`"), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("kafka, registry"), "{e}");
    Ok(())
}

#[test]
fn a_file_overrides_the_defaults_and_the_environment_overrides_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = file(
        dir.path(),
        "[kafka]\npartitions = 12\ntopic_namespace = \"file.\"\n\
         [processor]\ngroup = \"from-file\"\nworkers = 3\n",
        0o644,
    )?;
    let path = path.display().to_string();
    let (s, _) = sources(
        &["processor", "--config", &path],
        env(&[
            ("JOINERY_TOPIC_NAMESPACE", "2024"),
            ("JOINERY_PROCESSOR_GROUP", "from-env"),
            // Another service's variable is no concern of the processor's.
            ("JOINERY_PROJECTIONS_LISTEN", "not an address"),
        ]),
    )?;
    let loaded = load::<ProcessorTable>(&s)?;
    assert_eq!(loaded.kafka.partitions, 12);
    assert_eq!(
        loaded.kafka.topic_namespace, "2024",
        "a number-like string stays a string"
    );
    assert_eq!(loaded.service.group, "from-env");
    assert_eq!(loaded.service.workers, Some(3));
    assert_eq!(loaded.service.max_batch, 40_000);
    Ok(())
}

#[test]
fn a_flag_overrides_the_environment() -> Result<()> {
    let (s, _) = sources(
        &[
            "processor",
            "--listen",
            "127.0.0.1:9999",
            "--partitions",
            "3",
        ],
        env(&[
            ("JOINERY_PROCESSOR_LISTEN", "127.0.0.1:7777"),
            ("JOINERY_PARTITIONS", "9"),
            ("JOINERY_PROCESSOR_WORKERS", "2"),
        ]),
    )?;
    let loaded = load::<ProcessorTable>(&s)?;
    assert_eq!(loaded.service.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(loaded.kafka.partitions, 3);
    assert_eq!(loaded.service.workers, Some(2));
    Ok(())
}

#[test]
fn a_bad_value_is_refused_naming_its_variable() {
    let e = load::<ProcessorTable>(&Sources {
        env: env(&[("JOINERY_PARTITIONS", "six")]),
        ..Sources::default()
    })
    .expect_err("not a number");
    let e = format!("{e:#}");
    assert!(e.contains("kafka.partitions"), "{e}");
    assert!(e.contains("JOINERY_PARTITIONS"), "{e}");
}

#[test]
fn the_pseudonymisation_key_never_prints() -> Result<()> {
    let (s, service) = sources(
        &["config", "show", "ingest"],
        env(&[("JOINERY_PSEUDONYM_KEY", KEY)]),
    )?;
    assert!(matches!(service, Service::Ingest(_)));
    let loaded = load::<IngestTable>(&s)?;
    let key = loaded.service.pseudonym_key()?;
    assert_eq!(key.expose(), KEY);
    let shown = loaded.show()?;
    for text in [
        format!("{loaded:?}"),
        format!("{:#?}", loaded.service),
        format!("{key} {key:?}"),
        format!("{:?}", loaded.service.config(&loaded.kafka)?),
        shown.clone(),
    ] {
        assert!(!text.contains(KEY), "the key was printed: {text}");
    }
    let line = "# pseudonym_key = \"[redacted]\"  # environment variable JOINERY_PSEUDONYM_KEY";
    assert!(shown.lines().any(|l| l == line), "{shown}");
    // Read back as a config file, the output sets no key.
    let dir = tempfile::tempdir()?;
    let reread = load::<IngestTable>(&Sources {
        file: Some(file(dir.path(), &shown, 0o644)?),
        ..Sources::default()
    })?;
    assert!(reread.service.pseudonym_key.is_none());
    Ok(())
}

#[test]
fn config_show_prints_every_setting_and_where_it_came_from() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = file(dir.path(), "[projections]\nsdc_threshold = 20\n", 0o644)?;
    let path = path.display().to_string();
    let (s, _) = sources(
        &[
            "config",
            "show",
            "projections",
            "--config",
            &path,
            "--group",
            "g1",
        ],
        env(&[("JOINERY_KAFKA_BROKERS", "kafka:9092")]),
    )?;
    let shown = load::<ProjectionsTable>(&s)?.show()?;
    for line in [
        "[kafka]",
        "brokers = \"kafka:9092\"  # environment variable JOINERY_KAFKA_BROKERS",
        "partitions = 6  # default",
        "[projections]",
        &format!("sdc_threshold = 20  # TOML file {path}"),
        "group = \"g1\"  # flag --group",
        "sdc_rounding = 5  # default",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "no line {line:?} in\n{shown}"
        );
    }
    // What it prints is a config file that reads back to the same settings.
    let again = file(dir.path(), &shown, 0o600)?;
    let reread = load::<ProjectionsTable>(&Sources {
        file: Some(again),
        ..Sources::default()
    })?;
    assert_eq!(reread.service, load::<ProjectionsTable>(&s)?.service);
    Ok(())
}

#[test]
fn a_group_readable_key_file_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("pseudonym.key");
    std::fs::write(&key, format!("{KEY}\n"))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))?;
    let key_path = key.display().to_string();
    let (s, _) = sources(&["ingest", "--pseudonym-key-file", &key_path], env(&[]))?;
    let loaded = load::<IngestTable>(&s)?;
    let e = loaded
        .service
        .config(&loaded.kafka)
        .expect_err("group-readable");
    let e = format!("{e:#}");
    assert!(e.contains(&format!("chmod 600 {key_path}")), "{e}");
    assert!(!e.contains(KEY), "{e}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let config = loaded.service.config(&loaded.kafka)?;
    let direct = joinery_domain::Pseudonymiser::new(KEY.as_bytes().to_vec())?;
    assert_eq!(
        format!(
            "{:?}",
            config
                .pseudonymiser
                .citizen_key(joinery_domain::IdentifierKind::Nino, "AB123456C")
        ),
        format!(
            "{:?}",
            direct.citizen_key(joinery_domain::IdentifierKind::Nino, "AB123456C")
        ),
        "the file's key, without its newline"
    );
    Ok(())
}

#[test]
fn a_config_file_holding_a_secret_must_be_private() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = file(
        dir.path(),
        &format!("[ingest]\npseudonym_key = \"{KEY}\"\n"),
        0o644,
    )?;
    let open = Sources {
        file: Some(path.clone()),
        ..Sources::default()
    };
    let e = load::<IngestTable>(&open).expect_err("world-readable");
    let e = format!("{e:#}");
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    assert_eq!(
        load::<IngestTable>(&open)?
            .service
            .pseudonym_key()?
            .expose(),
        KEY
    );
    // Other services do not read the secret, so their file may be shared.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    load::<ProcessorTable>(&open)?;
    Ok(())
}

#[test]
fn a_missing_config_file_is_an_error() {
    let e = load::<RegistryTable>(&Sources {
        file: Some(PathBuf::from("/nonexistent/joinery.toml")),
        ..Sources::default()
    })
    .expect_err("no such file");
    let e = format!("{e:#}");
    assert!(e.contains("/nonexistent/joinery.toml"), "{e}");
}

#[test]
fn every_service_help_lists_its_environment_variables() -> Result<()> {
    let mut cmd = crate::cli::command();
    let help = cmd
        .find_subcommand_mut("processor")
        .map(|c| c.render_help().to_string())
        .unwrap_or_default();
    assert!(help.contains("JOINERY_PROCESSOR_WORKERS"), "{help}");
    assert!(help.contains("JOINERY_KAFKA_BROKERS"), "{help}");
    Ok(())
}

#[test]
fn where_settings_came_from_prints_names_never_values() {
    let sources = Sources {
        file: None,
        env: env(&[("JOINERY_PSEUDONYM_KEY", KEY)]),
        flags: vec![Entry {
            key: "ingest.pseudonym_key".into(),
            label: "--pseudonym-key".into(),
            value: "a-flag-given-secret".into(),
        }],
    };
    let printed = format!("{sources:?}");
    assert!(printed.contains("JOINERY_PSEUDONYM_KEY"), "{printed}");
    assert!(
        !printed.contains(KEY) && !printed.contains("a-flag-given-secret"),
        "{printed}"
    );
}
