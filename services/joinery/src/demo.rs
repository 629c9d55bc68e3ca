//! Demo department feeds for the local stack: synthetic citizens on the
//! journeys of the three missions, published through the ingest gateway with
//! each department's own token (`JOINERY_TOKEN_<DEPARTMENT>`), at a steady
//! rate:
//!
//! - education leavers (DfE), most of whom start work (HMRC), some briefly;
//! - benefit claimants with a health condition (DWP) referred for
//!   mental-health treatment (DHSC), treated after a wait, some then working;
//! - people released from custody (MoJ), some settled in accommodation
//!   (MHCLG), some working, some reoffending.
//!
//! Simulated time runs faster than real time, so outcomes resolve on the
//! watermark while the demo runs. Seeded: the same seed sends the same events.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use joinery_domain::Department;
use joinery_runtime::retry::{retry, Policy};
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

/// An event and the simulated day it is due.
type Dated = (i64, Value);

struct Citizen<'a> {
    rng: &'a mut StdRng,
    n: u64,
    area: &'static str,
    birth: String,
    start: chrono::NaiveDate,
    events: Vec<Dated>,
}

impl Citizen<'_> {
    fn emit(&mut self, day: i64, event_type: &str, fields: Value) {
        let id = uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string();
        let mut e = json!({
            "type": event_type, "event_id": id,
            "occurred_at": (self.start + chrono::Duration::days(day)).format("%Y-%m-%d").to_string(),
            "nino": nino(self.n), "area_code": self.area, "birth_year_month": self.birth,
        });
        if let (Some(e), Value::Object(f)) = (e.as_object_mut(), fields) {
            e.extend(f);
        }
        self.events.push((day, e));
    }

    fn maybe_job(&mut self, from: i64, p: f64, within: std::ops::Range<i64>) {
        if self.rng.random_bool(p) {
            let start = from + self.rng.random_range(within);
            let id = format!("EMP-{}-{start}", self.n);
            self.emit(
                start,
                "hmrc.EmploymentStarted",
                json!({"employment_id": id, "weekly_hours_band": "FROM_30"}),
            );
            if self.rng.random_bool(0.3) {
                let end = start + self.rng.random_range(10..200);
                self.emit(end, "hmrc.EmploymentEnded", json!({"employment_id": id}));
            }
        }
    }
}

/// The events of one synthetic citizen, in no particular order.
fn journey(rng: &mut StdRng, n: u64, day: i64, start: chrono::NaiveDate) -> Vec<Dated> {
    let area = AREAS[rng.random_range(0..AREAS.len())];
    let kind = rng.random_range(0..100);
    let birth_year = if kind < 60 {
        2007
    } else {
        1975 + rng.random_range(0..25)
    };
    let birth = format!(
        "{}-{:02}",
        birth_year + rng.random_range(0..3),
        rng.random_range(1..=12)
    );
    let mut c = Citizen {
        rng,
        n,
        area,
        birth,
        start,
        events: Vec::new(),
    };
    if kind < 60 {
        let reason = if c.rng.random_bool(0.85) {
            "COMPLETED"
        } else {
            "WITHDREW"
        };
        c.emit(
            day,
            "dfe.EducationExited",
            json!({"provider_urn": "100001", "level": "LEVEL_3", "reason": reason}),
        );
        c.maybe_job(day, 0.7, 5..220);
    } else if kind < 85 {
        let health = c.rng.random_bool(0.7);
        c.emit(day - 30, "dwp.BenefitClaimStarted", json!({"claim_id": format!("C-{n}"), "benefit": "UNIVERSAL_CREDIT", "health_condition": health}));
        let pathway = if c.rng.random_bool(0.8) {
            "MENTAL_HEALTH"
        } else {
            "MUSCULOSKELETAL"
        };
        c.emit(
            day,
            "dhsc.ReferralReceived",
            json!({"referral_id": format!("R-{n}"), "pathway": pathway}),
        );
        if c.rng.random_bool(0.9) {
            let wait = c.rng.random_range(7..200);
            c.emit(
                day + wait,
                "dhsc.TreatmentStarted",
                json!({"referral_id": format!("R-{n}"), "pathway": pathway}),
            );
            c.maybe_job(day + wait, 0.35, 30..400);
        }
    } else {
        c.emit(
            day,
            "moj.ReleasedFromCustody",
            json!({"establishment_code": "MDI", "release_type": "LICENCE"}),
        );
        if c.rng.random_bool(0.5) {
            let status = if c.rng.random_bool(0.8) {
                "SETTLED"
            } else {
                "TEMPORARY"
            };
            let after = c.rng.random_range(0..8);
            c.emit(
                day + after,
                "mhclg.AccommodationRecorded",
                json!({"status": status}),
            );
        }
        c.maybe_job(day, 0.3, 3..90);
        if c.rng.random_bool(0.25) {
            let offence = day + c.rng.random_range(20..400);
            let disposal = (start + chrono::Duration::days(offence + 60))
                .format("%Y-%m-%d")
                .to_string();
            c.emit(
                offence,
                "moj.ProvenReoffence",
                json!({"offence_group": "THEFT", "disposal_date": disposal}),
            );
        }
    }
    if c.rng.random_bool(0.02) {
        // A department retry: the same event sent twice is applied once.
        if let Some(first) = c.events.first().cloned() {
            c.events.push(first);
        }
    }
    c.events
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
    let events = &events;
    let attempt = move || async move {
        let resp = http
            .post(url)
            .bearer_auth(token)
            .json(events)
            .send()
            .await
            .context("ingest gateway unreachable")
            .map_err(Refused::Other)?;
        match resp.status().as_u16() {
            202 => Ok(()),
            s @ (429 | 503) => Err(Refused::Busy(s)),
            s => Err(Refused::Other(anyhow::anyhow!(
                "gateway refused demo events ({s}): {}",
                resp.text().await.unwrap_or_default()
            ))),
        }
    };
    let busy = |e: &Refused| matches!(e, Refused::Busy(_));
    retry(&Policy::GATEWAY_BUSY, "posting demo events", busy, attempt)
        .await
        .map_err(|e| match e {
            Refused::Busy(s) => anyhow::anyhow!("gateway busy ({s})"),
            Refused::Other(e) => e,
        })
}

/// Why the gateway did not take a batch of demo events.
#[derive(Debug)]
enum Refused {
    /// 429 or 503: waited out.
    Busy(u16),
    /// Anything else: the demo stops.
    Other(anyhow::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Busy(s) => write!(f, "gateway busy (HTTP {s})"),
            Refused::Other(e) => write!(f, "{e:#}"),
        }
    }
}

fn tokens() -> anyhow::Result<BTreeMap<String, String>> {
    Department::ALL
        .into_iter()
        .map(|d| {
            let var = format!("JOINERY_TOKEN_{}", d.code().to_uppercase());
            let token = std::env::var(&var).with_context(|| {
                format!(
                    "{var} is not set: the demo publishes as each department with its own token"
                )
            })?;
            Ok((d.code().to_owned(), token))
        })
        .collect()
}

/// How far back the demo's simulated history starts, in days.
const HISTORY_DAYS: i64 = 730;

/// Runs the feeds until `cancel` fires or `--citizens` have been sent.
pub(crate) async fn run(
    args: DemoArgs,
    cancel: CancellationToken,
    tick: Duration,
) -> anyhow::Result<()> {
    let tokens = tokens()?;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", args.ingest_url.trim_end_matches('/'));
    let mut rng = StdRng::seed_from_u64(args.seed);
    // Simulated time starts two years ago, runs fast through that history,
    // then keeps pace with the calendar: Joinery holds an event dated after
    // the moment it was published until event time reaches its date, so a
    // demo running ahead of the real date would show nothing new.
    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(HISTORY_DAYS);
    let real_today = || (chrono::Utc::now().date_naive() - start).num_days();
    // Events wait here until simulated time reaches their day.
    let mut due: Vec<Dated> = Vec::new();
    let (mut n, mut today) = (0u64, 30i64);
    tracing::info!(%url, "demo feeds started");
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        // New citizens arrive in proportion to the simulated days that
        // passed: all of them while the history runs, a day's share once
        // the demo keeps pace with the calendar.
        let next = (today + args.days_per_second).min(real_today()).max(today);
        let passed = u64::try_from(next - today).unwrap_or(0);
        today = next;
        let per_day = u64::from(args.citizens_per_second);
        let arrivals = (per_day * passed / u64::try_from(args.days_per_second.max(1)).unwrap_or(1))
            .min(per_day);
        for _ in 0..arrivals {
            if args.citizens > 0 && n >= args.citizens {
                break;
            }
            let day = today - rng.random_range(0..args.days_per_second.max(1));
            due.extend(journey(&mut rng, n, day, start));
            n += 1;
        }
        let (now, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(d, _)| *d <= today);
        due = later;
        let mut by_department: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (_, e) in now {
            let dept = e["type"]
                .as_str()
                .and_then(|t| t.split_once('.'))
                .map(|(d, _)| d.to_owned())
                .unwrap_or_default();
            by_department.entry(dept).or_default().push(e);
        }
        for (dept, events) in by_department {
            post(&http, &url, &tokens[&dept], events).await?;
        }
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

    #[test]
    fn demo_journeys_cover_every_department() {
        let mut rng = StdRng::seed_from_u64(1);
        let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date");
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..400 {
            for (_, e) in journey(&mut rng, n, 100, start) {
                seen.insert(
                    e["type"]
                        .as_str()
                        .unwrap_or_default()
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }
}
