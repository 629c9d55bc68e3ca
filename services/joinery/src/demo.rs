//! Demo department feeds for the local stack: synthetic citizens leave
//! education (DfE) and some start and keep jobs (HMRC), published through
//! the ingest gateway with each department's own token, at a steady rate.
//! Simulated time runs faster than real time, so outcomes resolve on the
//! watermark while the demo runs. Seeded: the same seed sends the same events.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Options of `joinery demo`.
#[derive(Debug, Args, Clone)]
pub(crate) struct DemoArgs {
    /// Ingest gateway base URL.
    #[arg(
        long,
        env = "JOINERY_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
    /// DfE's token.
    #[arg(long, env = "JOINERY_TOKEN_DFE")]
    dfe_token: String,
    /// HMRC's token.
    #[arg(long, env = "JOINERY_TOKEN_HMRC")]
    hmrc_token: String,
    /// New citizens per second.
    #[arg(long, default_value_t = 20)]
    citizens_per_second: u32,
    /// Simulated days that pass per real second.
    #[arg(long, default_value_t = 5)]
    days_per_second: i64,
    /// Stop after this many citizens (0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    citizens: u64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A valid-format NINO for synthetic citizen `n` (prefix `JY`, never issued to anyone).
fn nino(n: u64) -> String {
    format!(
        "JY{:06}{}",
        n % 1_000_000,
        ["A", "B", "C", "D"][(n / 1_000_000 % 4) as usize]
    )
}

const AREAS: [&str; 6] = [
    "E08000025",
    "E08000003",
    "E09000030",
    "W06000015",
    "S12000049",
    "E06000023",
];

fn day(start: chrono::NaiveDate, d: i64) -> String {
    (start + chrono::Duration::days(d))
        .format("%Y-%m-%d")
        .to_string()
}

/// An event and the simulated day it is due.
type Dated = (i64, Value);

/// The events of one synthetic citizen, by department, in occurrence order.
fn journey(
    rng: &mut StdRng,
    n: u64,
    exit_day: i64,
    start: chrono::NaiveDate,
) -> (Vec<Dated>, Vec<Dated>) {
    let area = AREAS[rng.random_range(0..AREAS.len())];
    let id = |rng: &mut StdRng| {
        uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string()
    };
    let mut dfe = vec![(
        exit_day,
        json!({
            "type": "dfe.EducationExited", "event_id": id(rng), "occurred_at": day(start, exit_day),
            "nino": nino(n), "area_code": area, "birth_year_month": format!("{}-{:02}", 2006 + rng.random_range(0..3), rng.random_range(1..=12)),
            "provider_urn": format!("1{:05}", rng.random_range(0..99999)), "level": "LEVEL_3",
            "reason": if rng.random_bool(0.85) { "COMPLETED" } else { "WITHDREW" },
        }),
    )];
    let mut hmrc = vec![];
    if rng.random_bool(0.65) {
        let start_day = exit_day + rng.random_range(5..220);
        let employment_id = format!("EMP-{n}");
        hmrc.push((start_day, json!({
            "type": "hmrc.EmploymentStarted", "event_id": id(rng), "occurred_at": day(start, start_day),
            "nino": nino(n), "area_code": area, "employment_id": employment_id, "weekly_hours_band": "FROM_30",
        })));
        if rng.random_bool(0.3) {
            let end_day = start_day + rng.random_range(10..200);
            hmrc.push((end_day, json!({
                "type": "hmrc.EmploymentEnded", "event_id": id(rng), "occurred_at": day(start, end_day),
                "nino": nino(n), "area_code": area, "employment_id": employment_id,
            })));
        }
    }
    if rng.random_bool(0.02) {
        // A department retry: the same event sent twice is applied once.
        let again = dfe[0].clone();
        dfe.push(again);
    }
    (dfe, hmrc)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    events: Vec<Value>,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    loop {
        let resp = http
            .post(url)
            .bearer_auth(token)
            .json(&events)
            .send()
            .await
            .context("ingest gateway unreachable")?;
        match resp.status().as_u16() {
            202 => return Ok(()),
            429 | 503 => tokio::time::sleep(Duration::from_secs(1)).await,
            s => anyhow::bail!(
                "gateway refused demo events ({s}): {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
}

/// Runs the feeds until `cancel` fires or `--citizens` have been sent.
pub(crate) async fn run(
    args: DemoArgs,
    cancel: CancellationToken,
    tick: Duration,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", args.ingest_url.trim_end_matches('/'));
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date");
    // Events wait here until simulated time reaches their day (sorted by day).
    let mut due: Vec<(i64, &'static str, Value)> = Vec::new();
    let (mut n, mut today) = (0u64, 0i64);
    tracing::info!(%url, "demo feeds started");
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        today += args.days_per_second;
        for _ in 0..args.citizens_per_second {
            if args.citizens > 0 && n >= args.citizens {
                break;
            }
            let exit_day = today - rng.random_range(0..args.days_per_second.max(1));
            let (dfe, hmrc) = journey(&mut rng, n, exit_day, start);
            due.extend(dfe.into_iter().map(|(d, e)| (d, "dfe", e)));
            due.extend(hmrc.into_iter().map(|(d, e)| (d, "hmrc", e)));
            n += 1;
        }
        let (now, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(d, _, _)| *d <= today);
        due = later;
        let (dfe, hmrc): (Vec<_>, Vec<_>) =
            now.into_iter().partition(|(_, dept, _)| *dept == "dfe");
        post(
            &http,
            &url,
            &args.dfe_token,
            dfe.into_iter().map(|(_, _, e)| e).collect(),
        )
        .await?;
        post(
            &http,
            &url,
            &args.hmrc_token,
            hmrc.into_iter().map(|(_, _, e)| e).collect(),
        )
        .await?;
        if args.citizens > 0 && n >= args.citizens && due.is_empty() {
            tracing::info!(citizens = n, "demo feeds sent every citizen");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ninos_are_valid_and_distinct() {
        for n in [0, 1, 999_999, 1_000_000, 3_999_999] {
            assert!(
                joinery_domain::pseudonym::normalise(
                    joinery_domain::IdentifierKind::Nino,
                    &nino(n)
                )
                .is_ok(),
                "{}",
                nino(n)
            );
        }
        assert_ne!(nino(1), nino(1_000_001));
    }
}
