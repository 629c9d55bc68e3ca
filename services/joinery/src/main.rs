//! The `joinery` command: runs any Joinery service, and the demo department
//! feeds. A service's settings are the embedded defaults, under a
//! `--config` file, under `JOINERY_...` environment variables (listed in
//! `--help`), under flags (see [`config`]).
//!
//! ```text
//! joinery registry | ingest | processor | projections   run one service
//! joinery config show <service>                         the settings it would run with
//! joinery demo                                          synthetic department feeds
//! joinery publish events.ndjson                         publish a file as a department
//! joinery rebuild <mission>                             backfill a mission from the log
//! ```

mod cli;
mod config;
mod deadletter;
mod demo;
mod missions;
mod publish;

/// jemalloc rather than glibc's allocator, for Rust and (through the
/// `unprefixed_malloc_on_supported_platforms` feature) RocksDB and librdkafka
/// too: the processor allocates and frees many small objects per event on
/// several threads, where glibc spent about a quarter of its time (arena
/// locks, consolidation) with 1M citizens.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::Duration;

use cli::{Cli, Command, ConfigCommand, MissionsCommand, Service};
use config::settings::{IngestTable, ProcessorTable, ProjectionsTable, RegistryTable, Table};
use config::{load, Loaded, Sources};
use joinery_runtime::shutdown_signal;
use tokio_util::sync::CancellationToken;

async fn run_until_signal<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    f(cancel).await
}

/// The settings of service `T`: the defaults, the `--config` file, the
/// environment, then `flags`.
fn settings<T: Table>(
    file: Option<std::path::PathBuf>,
    flags: Vec<config::Entry>,
) -> anyhow::Result<Loaded<T>> {
    load::<T>(&Sources {
        file,
        env: Sources::environment()?,
        flags,
    })
}

/// The effective settings of `service`, for `joinery config show`.
fn show(file: Option<std::path::PathBuf>, service: &Service) -> anyhow::Result<String> {
    let flags = service.flags();
    match service {
        Service::Registry(_) => settings::<RegistryTable>(file, flags)?.show(),
        Service::Ingest(_) => settings::<IngestTable>(file, flags)?.show(),
        Service::Processor(_) => settings::<ProcessorTable>(file, flags)?.show(),
        Service::Projections(_) => settings::<ProjectionsTable>(file, flags)?.show(),
    }
}

async fn run_service(file: Option<std::path::PathBuf>, service: Service) -> anyhow::Result<()> {
    let flags = service.flags();
    match service {
        Service::Registry(_) => {
            let s = settings::<RegistryTable>(file, flags)?;
            let config = s.service.config(&s.kafka);
            run_until_signal(|c| joinery_registry::run(config, c)).await
        }
        Service::Ingest(_) => {
            let s = settings::<IngestTable>(file, flags)?;
            let config = s.service.config(&s.kafka)?;
            run_until_signal(|c| joinery_ingest::run(config, c)).await
        }
        Service::Processor(_) => {
            let s = settings::<ProcessorTable>(file, flags)?;
            let config = s.service.config(&s.kafka);
            run_until_signal(|c| joinery_processor::run(config, c)).await
        }
        Service::Projections(_) => {
            let s = settings::<ProjectionsTable>(file, flags)?;
            let config = s.service.config(&s.kafka);
            run_until_signal(|c| joinery_projections::run(config, c)).await
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    joinery_runtime::telemetry::init_tracing();
    let cli = Cli::parse_with_env_help();
    match cli.command {
        Command::Service(service) => run_service(cli.config, service).await,
        Command::Config {
            command: ConfigCommand::Show { service },
        } => {
            print!("{}", show(cli.config, &service)?);
            Ok(())
        }
        Command::Rebuild(args) => {
            let s = settings::<ProcessorTable>(cli.config, args.flags())?;
            let data = tempfile::tempdir()?;
            let config = s.service.rebuild_config(
                &s.kafka,
                args.mission,
                args.listen,
                data.path().to_owned(),
            );
            run_until_signal(
                |c| async move { joinery_processor::rebuild(config, c).await.map(|_| ()) },
            )
            .await
        }
        Command::Missions {
            command: MissionsCommand::Check { dir },
        } => {
            print!("{}", missions::check(&dir)?);
            Ok(())
        }
        Command::Deadletter(args) => {
            let s = settings::<ProcessorTable>(cli.config, args.flags())?;
            deadletter::run(&s.kafka.settings(), args.what).await
        }
        Command::Publish(args) => {
            if publish::run(args).await?.all_accepted() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Demo(args) => {
            run_until_signal(|c| demo::run(args, c, Duration::from_secs(1))).await
        }
    }
}
