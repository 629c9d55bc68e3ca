//! `joinery deadletter`: what was refused, why, and sending it back once
//! the cause is fixed.
//!
//! Place in the data flow: the processor and projections copy every record
//! they cannot use to `joinery.deadletter`, with its key and bytes as they
//! were and headers saying why and where it came from. `list` prints those
//! headers (never the payload: a record is shown by its reason, source and
//! error, not its content); `replay` produces the selected records, byte for
//! byte, back to the topic they came from, where they are read again like
//! any other record. The processor applies an event once (same department
//! and event id), so replaying a record twice, or one that was applied
//! meanwhile, changes nothing.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::names::{
    DEAD_LETTER_TOPIC, ERROR_HEADER, ORIGINAL_HEADER_PREFIX, PAYLOAD_OMITTED_HEADER, REASON_HEADER,
    SERVICE_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Header a replayed record carries: the dead letter's offset.
pub(crate) const REPLAYED_FROM_HEADER: &str = "joinery.replayed_from";

/// `joinery deadletter ...`.
#[derive(Debug, Args)]
pub(crate) struct DeadLetterArgs {
    #[command(subcommand)]
    pub(crate) command: DeadLetterCommand,
}

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// List dead letters: offset, service, reason, source and error.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Produce the selected dead letters back to the topics they came from,
    /// once the cause is fixed (a schema registered, a limit raised, a
    /// definition corrected). Replaying twice is harmless: an event is
    /// applied once.
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Print what would be replayed, and replay nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Filter {
    /// Only those with this reason (e.g. `citizen_event_cap`).
    #[arg(long)]
    reason: Option<String>,
    /// Only those refused by this service (`processor` or `projections`).
    #[arg(long)]
    service: Option<String>,
    /// Only these dead-letter offsets (repeatable).
    #[arg(long = "offset")]
    offsets: Vec<i64>,
}

/// One dead letter as read back.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    /// Its offset in the dead-letter topic.
    pub(crate) offset: i64,
    /// Its key (a citizen's pseudonym, or whatever the producer sent).
    key: Option<Vec<u8>>,
    /// The refused record's bytes.
    payload: Vec<u8>,
    /// Its headers, by name.
    headers: Vec<(String, String)>,
}

impl DeadLetter {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn selected(&self, f: &Filter) -> bool {
        f.reason
            .as_deref()
            .is_none_or(|r| r == self.header(REASON_HEADER))
            && f.service
                .as_deref()
                .is_none_or(|s| s == self.header(SERVICE_HEADER))
            && (f.offsets.is_empty() || f.offsets.contains(&self.offset))
    }

    /// One line for `list`: no payload, the error cut to 160 characters.
    fn line(&self) -> String {
        let error: String = self.header(ERROR_HEADER).chars().take(160).collect();
        format!(
            "{:>8}  {:<11}  {:<24}  {}[{}]@{}  {}",
            self.offset,
            self.header(SERVICE_HEADER),
            self.header(REASON_HEADER),
            self.header(SOURCE_TOPIC_HEADER),
            self.header(SOURCE_PARTITION_HEADER),
            self.header(SOURCE_OFFSET_HEADER),
            error
        )
    }
}

/// Every dead letter, from the beginning of the topic to its end now.
fn read(kafka: &KafkaSettings) -> Result<Vec<DeadLetter>> {
    let topic = kafka.topic(DEAD_LETTER_TOPIC);
    let consumer: BaseConsumer = kafka
        .consumer(
            "joinery-deadletter",
            &format!("{}deadletter-{}", kafka.namespace, uuid::Uuid::new_v4()),
        )
        .create()?;
    let (low, high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .with_context(|| format!("cannot read {topic}"))?;
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut next = low;
    while next < high {
        let m = consumer
            .poll(Duration::from_secs(10))
            .with_context(|| format!("timed out reading {topic} at offset {next}"))??;
        next = m.offset() + 1;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DeadLetter {
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    Ok(out)
}

/// Runs `joinery deadletter` against `kafka`, printing to stdout.
pub(crate) async fn run(kafka: &KafkaSettings, args: DeadLetterArgs) -> Result<()> {
    match args.command {
        DeadLetterCommand::List { filter } => {
            let letters = read(kafka)?;
            let selected: Vec<_> = letters.iter().filter(|d| d.selected(&filter)).collect();
            println!(
                "{:>8}  {:<11}  {:<24}  source[partition]@offset  error",
                "offset", "service", "reason"
            );
            for d in &selected {
                println!("{}", d.line());
            }
            println!("{} of {} dead letters", selected.len(), letters.len());
            Ok(())
        }
        DeadLetterCommand::Replay { filter, dry_run } => {
            let letters = read(kafka)?;
            let selected: Vec<_> = letters.iter().filter(|d| d.selected(&filter)).collect();
            let producer: FutureProducer = kafka.producer("joinery-deadletter-replay").create()?;
            let mut replayed = 0usize;
            for d in &selected {
                let topic = d.header(SOURCE_TOPIC_HEADER);
                if topic.is_empty() {
                    println!("{:>8}  skipped: no source topic", d.offset);
                    continue;
                }
                if !d.header(PAYLOAD_OMITTED_HEADER).is_empty() {
                    println!(
                        "{:>8}  skipped: its record was too large to copy ({}); it is at {topic} partition {} offset {}",
                        d.offset,
                        d.header(PAYLOAD_OMITTED_HEADER),
                        d.header(SOURCE_PARTITION_HEADER),
                        d.header(SOURCE_OFFSET_HEADER)
                    );
                    continue;
                }
                if dry_run {
                    println!("{:>8}  would replay to {topic}", d.offset);
                    continue;
                }
                let offset = d.offset.to_string();
                // The record's own headers (a control record's kind), then
                // where it was replayed from.
                let mut headers = OwnedHeaders::new();
                for (k, v) in &d.headers {
                    if let Some(own) = k.strip_prefix(ORIGINAL_HEADER_PREFIX) {
                        headers = headers.insert(Header {
                            key: own,
                            value: Some(v.as_str()),
                        });
                    }
                }
                let headers = headers.insert(Header {
                    key: REPLAYED_FROM_HEADER,
                    value: Some(offset.as_str()),
                });
                let mut record = FutureRecord::to(topic).payload(&d.payload).headers(headers);
                if let Some(k) = &d.key {
                    record = record.key(k);
                }
                // Back to the partition it was read from: a record produced
                // with another partitioner must meet its citizen's state.
                if let Ok(p) = d.header(SOURCE_PARTITION_HEADER).parse::<i32>() {
                    record = record.partition(p);
                }
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("replaying dead letter {}: {e}", d.offset))?;
                replayed += 1;
            }
            if dry_run {
                println!("{} dead letters would be replayed", selected.len());
            } else {
                println!(
                    "replayed {replayed} of {} selected dead letters",
                    selected.len()
                );
                tracing::info!(replayed, "dead letters replayed to their source topics");
            }
            Ok(())
        }
    }
}
