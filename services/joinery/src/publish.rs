//! `joinery publish`: a department's client for the ingest gateway. Streams
//! an NDJSON file (one event per line) in batches, retries a batch on 503 or
//! 429 after the `Retry-After` the gateway gives, publishes the valid events
//! of a batch and reports the invalid ones by file line, and ends with a
//! summary. Exit status 1 when any event was rejected.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// Options of `joinery publish`.
#[derive(Debug, Args, Clone)]
pub(crate) struct PublishArgs {
    /// NDJSON file: one event object per line (blank lines are skipped).
    file: PathBuf,
    /// Ingest gateway base URL.
    #[arg(
        long,
        env = "JOINERY_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
    /// The department's bearer token.
    #[arg(long, env = "JOINERY_TOKEN")]
    token: String,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Retries of one batch on 503/429 before giving up.
    #[arg(long, default_value_t = 20)]
    retries: u32,
}

/// What happened to the file.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    accepted: u64,
    rejected: u64,
}

/// Prints each rejected event's errors by file line; returns how many were rejected.
fn report_rejected(json: &Value, lines: &[(usize, String)]) -> u64 {
    let mut rejected = 0;
    for r in json["rejected"].as_array().into_iter().flatten() {
        rejected += 1;
        let line = r["index"]
            .as_u64()
            .and_then(|i| lines.get(i as usize))
            .map_or(0, |(n, _)| *n);
        for e in r["errors"].as_array().into_iter().flatten() {
            eprintln!(
                "line {line}: {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            );
        }
    }
    rejected
}

async fn send(
    http: &reqwest::Client,
    args: &PublishArgs,
    lines: &[(usize, String)],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/v1/events?partial=true",
        args.ingest_url.trim_end_matches('/')
    );
    let body = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut attempt = 0;
    loop {
        let resp = http
            .post(&url)
            .bearer_auth(&args.token)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", args.ingest_url))?;
        let status = resp.status().as_u16();
        if matches!(status, 429 | 503) && attempt < args.retries {
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            attempt += 1;
            eprintln!(
                "gateway busy ({status}); retrying in {wait} s (attempt {attempt} of {})",
                args.retries
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let json: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            202 => {
                summary.accepted += json["accepted"].as_u64().unwrap_or(0);
                summary.rejected += report_rejected(&json, lines);
                return Ok(());
            }
            400 => {
                // A batch with nothing valid in it, or a body the gateway could not read.
                summary.rejected += lines.len() as u64;
                let first = lines.first().map_or(0, |(n, _)| *n);
                eprintln!(
                    "lines {first}..{}: refused: {}",
                    first + lines.len() - 1,
                    json["error"].as_str().unwrap_or("(no message)")
                );
                report_rejected(&json, lines);
                return Ok(());
            }
            _ => anyhow::bail!(
                "gateway answered {status}: {}",
                json["error"].as_str().unwrap_or("(no message)")
            ),
        }
    }
}

/// Publishes the file; returns the summary.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<Summary> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut summary = Summary::default();
    let mut batch: Vec<(usize, String)> = Vec::with_capacity(args.batch);
    let mut sent_lines = 0u64;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line
            .with_context(|| format!("{} line {} is not UTF-8 text", args.file.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push((i + 1, line));
        if batch.len() == args.batch.max(1) {
            send(&http, &args, &batch, &mut summary).await?;
            sent_lines += batch.len() as u64;
            eprintln!(
                "sent {sent_lines} events: {} accepted, {} rejected",
                summary.accepted, summary.rejected
            );
            batch.clear();
        }
    }
    if !batch.is_empty() {
        send(&http, &args, &batch, &mut summary).await?;
    }
    println!(
        "{} accepted, {} rejected",
        summary.accepted, summary.rejected
    );
    Ok(summary)
}

impl Summary {
    /// Whether every event was accepted.
    pub(crate) fn all_accepted(&self) -> bool {
        self.rejected == 0
    }
}
