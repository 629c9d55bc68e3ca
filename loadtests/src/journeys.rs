//! The calibrated journey generator: seeded synthetic citizens moving
//! through education, work, benefits, health referrals, custody and housing
//! over a span of simulated days, emitted as each department would publish
//! them (gateway JSON, with reporting delays and a few re-sent events) and,
//! because the generator knows the truth, the exact figures the missions
//! must show ([`Population::expected`]).
//!
//! Rates and their sources are in `loadtests/README.md`. The expected
//! figures come from an oracle written from the mission definitions in
//! `missions/` (not from the engine), so a test comparing them with the
//! running stack checks the engine, the processor and the projections.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use joinery_domain::{EventType, IdentifierKind, Pseudonymiser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

/// 2023-01-01: simulated day 0. The span (two years by default) lies in the
/// past, so that no event is dated after the moment it is published: Joinery
/// holds such an event until event time reaches its date, which the
/// expected figures do not model.
pub const START: &str = "2023-01-01";

/// The year of [`START`], from which ages are drawn.
const START_YEAR: i64 = 2023;

/// Allowed lateness of the processor (its default): the watermark trails the
/// greatest event time of a partition by this many days.
pub const ALLOWED_LATENESS_DAYS: i64 = 7;

/// Local authority districts, with a weight each (roughly by population).
pub const AREAS: [(&str, u32); 6] = [
    ("E08000025", 5), // Birmingham
    ("E08000003", 3), // Manchester
    ("E09000030", 2), // Tower Hamlets
    ("W06000015", 2), // Cardiff
    ("S12000049", 3), // Glasgow City
    ("E06000023", 2), // Bristol
];

/// The rates the generator draws from; see `loadtests/README.md` for sources.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Young leavers who start no job within 180 days of leaving (NEET).
    pub neet: f64,
    /// Young leavers' first jobs that end within 90 days.
    pub early_job_loss: f64,
    /// Mental-health referrals treated within 18 weeks.
    pub treated_within_18_weeks: f64,
    /// Referrals never treated in the span (discharged, dropped out).
    pub never_treated: f64,
    /// Treated claimants starting work within 12 months of treatment.
    pub work_after_treatment: f64,
    /// Prison leavers in settled accommodation within 3 days of release.
    pub settled_on_release: f64,
    /// Prison leavers in work within 6 weeks of release.
    pub work_within_6_weeks: f64,
    /// Prison leavers with a proven reoffence within 12 months.
    pub proven_reoffending: f64,
    /// Events a department sends twice (same event_id).
    pub duplicates: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            neet: 0.12,
            early_job_loss: 0.15,
            treated_within_18_weeks: 0.60,
            never_treated: 0.10,
            work_after_treatment: 0.30,
            settled_on_release: 0.50,
            work_within_6_weeks: 0.20,
            proven_reoffending: 0.25,
            duplicates: 0.02,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorConfig {
    /// Citizens to simulate.
    pub citizens: u64,
    /// Seed: the same seed gives the same events and figures.
    pub seed: u64,
    /// Simulated days (from [`START`]).
    pub span_days: i64,
    /// Rates drawn from.
    pub rates: Rates,
}

impl GeneratorConfig {
    /// `citizens` over two simulated years with the default rates.
    pub fn new(citizens: u64, seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            citizens,
            seed,
            span_days: 730,
            rates: Rates::default(),
        }
    }
}

/// One event as a department publishes it.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// Event type.
    pub event_type: EventType,
    /// Simulated day it happened.
    pub occurred: i64,
    /// Simulated day the department's system recorded (and publishes) it.
    pub recorded: i64,
    /// The gateway's JSON for it (`type`, `nino`, envelope and fields).
    pub json: Value,
    /// Index of the citizen it belongs to.
    pub citizen: usize,
}

/// A simulated population: its events in publishing order, and the truth.
#[derive(Debug)]
pub struct Population {
    /// Generator settings.
    pub config: GeneratorConfig,
    /// Every event (re-sent ones included), ordered by recorded day.
    pub events: Vec<SimEvent>,
    /// Each citizen's NINO.
    pub ninos: Vec<String>,
}

fn date(day: i64) -> String {
    let start = chrono::NaiveDate::parse_from_str(START, "%Y-%m-%d").expect("valid");
    (start + chrono::Duration::days(day))
        .format("%Y-%m-%d")
        .to_string()
}

/// A valid-format NINO never issued (prefix `JG`), unique per citizen.
fn nino(n: u64) -> String {
    format!(
        "JG{:06}{}",
        n % 1_000_000,
        ["A", "B", "C", "D"][(n / 1_000_000 % 4) as usize]
    )
}

struct Builder<'a> {
    rng: &'a mut StdRng,
    events: &'a mut Vec<SimEvent>,
    config: &'a GeneratorConfig,
    citizen: usize,
    nino: String,
    area: &'static str,
    birth: String,
    next_id: &'a mut u128,
}

impl Builder<'_> {
    /// Reporting delay in days by department: monthly payroll returns,
    /// monthly learner returns, quarterly housing returns, and so on.
    fn delay(&mut self, t: EventType) -> i64 {
        use EventType::*;
        match t {
            EmploymentStarted | EmploymentEnded => self.rng.random_range(0..=35),
            EducationEnrolled | EducationExited => self.rng.random_range(0..=60),
            BenefitClaimStarted | BenefitClaimEnded => self.rng.random_range(0..=7),
            ReferralReceived | TreatmentStarted | TreatmentCompleted => {
                self.rng.random_range(0..=30)
            }
            ReleasedFromCustody => self.rng.random_range(0..=14),
            // A reoffence is recorded once proven, at disposal.
            ProvenReoffence => self.rng.random_range(30..=180),
            AccommodationRecorded => self.rng.random_range(0..=90),
        }
    }

    fn emit(&mut self, t: EventType, day: i64, fields: Value) {
        if day > self.config.span_days {
            return; // after the simulated span: not happened yet
        }
        *self.next_id += 1;
        let recorded = day + self.delay(t);
        let mut json = json!({
            "type": t.qualified_name(),
            "event_id": uuid::Uuid::from_u128(*self.next_id ^ (u128::from(self.config.seed) << 64)).to_string(),
            "occurred_at": date(day),
            "recorded_at": date(recorded),
            "nino": self.nino,
            "birth_year_month": self.birth,
        });
        // HMRC's payroll returns carry no area; the others do.
        if !matches!(t, EventType::EmploymentStarted | EventType::EmploymentEnded) {
            json["area_code"] = json!(self.area);
        }
        if let (Value::Object(j), Value::Object(f)) = (&mut json, fields) {
            j.extend(f);
        }
        let e = SimEvent {
            event_type: t,
            occurred: day,
            recorded,
            json,
            citizen: self.citizen,
        };
        if self.rng.random_bool(self.config.rates.duplicates) {
            let mut again = e.clone();
            again.recorded += self.rng.random_range(1..=10);
            self.events.push(again);
        }
        self.events.push(e);
    }

    fn job(&mut self, start: i64, lasts: Option<i64>, n: u32) {
        let id = format!("{}-E{n}", self.nino);
        self.emit(
            EventType::EmploymentStarted,
            start,
            json!({"employment_id": id, "weekly_hours_band": "FROM_30"}),
        );
        if let Some(d) = lasts {
            self.emit(
                EventType::EmploymentEnded,
                start + d,
                json!({"employment_id": id}),
            );
        }
    }

    /// A young person leaving education aged 16 to 24 (a few older).
    fn leaver(&mut self) {
        let r = self.config.rates.clone();
        let exit = self.rng.random_range(0..self.config.span_days - 30);
        let enrolled = exit - self.rng.random_range(300..=1100);
        self.emit(
            EventType::EducationEnrolled,
            enrolled,
            json!({"provider_urn": "100001", "level": "LEVEL_3", "mode": "FULL_TIME"}),
        );
        self.emit(
            EventType::EducationExited,
            exit,
            json!({"provider_urn": "100001", "level": "LEVEL_3", "reason": "COMPLETED"}),
        );
        if self.rng.random_bool(r.neet) {
            // Not in work within six months; some find work later.
            if self.rng.random_bool(0.5) {
                let start = exit + self.rng.random_range(181..=400);
                self.job(start, None, 1);
            }
            return;
        }
        let start = exit + self.rng.random_range(0..=180);
        if self.rng.random_bool(r.early_job_loss) {
            let lasts = self.rng.random_range(5..=89);
            self.job(start, Some(lasts), 1);
            if self.rng.random_bool(0.5) {
                let again = start + self.rng.random_range(100..=300);
                self.job(again, None, 2);
            }
        } else {
            let lasts = self
                .rng
                .random_bool(0.3)
                .then(|| self.rng.random_range(90..=400));
            self.job(start, lasts, 1);
        }
    }

    /// A claimant with a health condition referred for mental-health
    /// treatment (some referrals come after the claim ended: not in cohort).
    fn health(&mut self) {
        let r = self.config.rates.clone();
        let claim = self.rng.random_range(0..self.config.span_days - 60);
        let id = format!("{}-C1", self.nino);
        self.emit(
            EventType::BenefitClaimStarted,
            claim,
            json!({"claim_id": id, "benefit": "UNIVERSAL_CREDIT", "health_condition": true}),
        );
        let referral = claim + self.rng.random_range(10..=200);
        let claim_ends = if self.rng.random_bool(0.1) {
            Some(referral - self.rng.random_range(1..=5)) // ended before the referral
        } else {
            None
        };
        let referral_id = format!("{}-R1", self.nino);
        self.emit(
            EventType::ReferralReceived,
            referral,
            json!({"referral_id": referral_id, "pathway": "MENTAL_HEALTH"}),
        );
        let treated = if self.rng.random_bool(r.never_treated) {
            None
        } else if self
            .rng
            .random_bool(r.treated_within_18_weeks / (1.0 - r.never_treated))
        {
            Some(referral + self.rng.random_range(7..=126))
        } else {
            Some(referral + self.rng.random_range(127..=330))
        };
        let mut ended = claim_ends;
        if let Some(t) = treated {
            self.emit(
                EventType::TreatmentStarted,
                t,
                json!({"referral_id": referral_id, "pathway": "MENTAL_HEALTH"}),
            );
            let completed = t + self.rng.random_range(40..=120);
            self.emit(
                EventType::TreatmentCompleted,
                completed,
                json!({"referral_id": referral_id, "pathway": "MENTAL_HEALTH", "outcome": "COMPLETED"}),
            );
            if self.rng.random_bool(r.work_after_treatment) {
                let start = t + self.rng.random_range(20..=365);
                self.job(start, None, 1);
                ended = ended.or(Some(start + 14));
            } else if self.rng.random_bool(0.2) {
                let start = t + self.rng.random_range(366..=500);
                self.job(start, None, 1);
            }
        }
        if let Some(e) = ended {
            self.emit(
                EventType::BenefitClaimEnded,
                e,
                json!({"claim_id": id, "benefit": "UNIVERSAL_CREDIT", "reason": "OTHER"}),
            );
        }
    }

    /// A prison leaver: accommodation, work and reoffending after release.
    fn prison_leaver(&mut self) {
        let r = self.config.rates.clone();
        let release = self.rng.random_range(0..self.config.span_days - 30);
        self.emit(
            EventType::ReleasedFromCustody,
            release,
            json!({"establishment_code": "BMI", "release_type": "LICENCE"}),
        );
        if self.rng.random_bool(r.settled_on_release) {
            let day = release + self.rng.random_range(0..=3);
            self.emit(
                EventType::AccommodationRecorded,
                day,
                json!({"status": "SETTLED"}),
            );
        } else {
            let day = release + self.rng.random_range(0..=3);
            self.emit(
                EventType::AccommodationRecorded,
                day,
                json!({"status": "TEMPORARY"}),
            );
            if self.rng.random_bool(0.5) {
                let later = release + self.rng.random_range(4..=200);
                self.emit(
                    EventType::AccommodationRecorded,
                    later,
                    json!({"status": "SETTLED"}),
                );
            }
        }
        if self.rng.random_bool(r.work_within_6_weeks) {
            let start = release + self.rng.random_range(0..=42);
            self.job(start, None, 1);
        } else if self.rng.random_bool(0.3) {
            let start = release + self.rng.random_range(43..=300);
            self.job(start, None, 1);
        }
        let reoffence = if self.rng.random_bool(r.proven_reoffending) {
            Some(release + self.rng.random_range(1..=365))
        } else if self.rng.random_bool(0.1) {
            Some(release + self.rng.random_range(366..=600))
        } else {
            None
        };
        if let Some(day) = reoffence {
            let proven = date(day + self.rng.random_range(30..=180));
            self.emit(
                EventType::ProvenReoffence,
                day,
                json!({"offence_group": "THEFT", "disposal_date": proven}),
            );
        }
    }

    /// Someone in none of the missions' cohorts: job changes and a claim
    /// without a health condition (load the missions must ignore).
    fn background(&mut self) {
        let start = self.rng.random_range(-200..self.config.span_days);
        let lasts = self.rng.random_range(30..=500);
        self.job(start, Some(lasts), 1);
        if self.rng.random_bool(0.3) {
            let id = format!("{}-C1", self.nino);
            let c = self.rng.random_range(0..self.config.span_days);
            self.emit(
                EventType::BenefitClaimStarted,
                c,
                json!({"claim_id": id, "benefit": "JOBSEEKERS_ALLOWANCE", "health_condition": false}),
            );
        }
    }
}

impl Population {
    /// Generates the population of `config`.
    pub fn generate(config: GeneratorConfig) -> Population {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut events = Vec::new();
        let mut ninos = Vec::new();
        let mut next_id = 0u128;
        let total_weight: u32 = AREAS.iter().map(|(_, w)| w).sum();
        for n in 0..config.citizens {
            let nino = nino(n + config.seed * 7919);
            let mut pick = rng.random_range(0..total_weight);
            let area = AREAS
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map_or(AREAS[0].0, |(a, _)| a);
            let kind = rng.random_range(0..100);
            // Ages: leavers mostly 16-24 (a few 25-27, outside the cohort).
            let age_years = match kind {
                0..40 if rng.random_bool(0.05) => rng.random_range(25..=27),
                0..40 => rng.random_range(16..=24),
                _ => rng.random_range(20..=60),
            };
            let birth_month = rng.random_range(1..=12);
            let birth = format!("{:04}-{:02}", START_YEAR - age_years - 1, birth_month);
            let mut b = Builder {
                rng: &mut rng,
                events: &mut events,
                config: &config,
                citizen: ninos.len(),
                nino: nino.clone(),
                area,
                birth,
                next_id: &mut next_id,
            };
            match kind {
                0..40 => b.leaver(),
                40..65 => b.health(),
                65..85 => b.prison_leaver(),
                _ => b.background(),
            }
            ninos.push(nino);
        }
        events.sort_by_key(|e| (e.recorded, e.occurred));
        Population {
            config,
            events,
            ninos,
        }
    }

    /// Each citizen's key under the platform `key`, as the gateway computes it.
    pub fn citizen_keys(&self, key: &[u8]) -> Result<Vec<String>> {
        let p = Pseudonymiser::new(key.to_vec())?;
        self.ninos
            .iter()
            .map(|n| Ok(p.citizen_key(IdentifierKind::Nino, n)?.to_string()))
            .collect()
    }

    /// The events as NDJSON (one gateway event per line).
    pub fn ndjson(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&e.json.to_string());
            out.push('\n');
        }
        out
    }

    /// The figures every mission must show once all the events are in, with
    /// `partitions` partitions and the platform `key`: computed from the
    /// journeys' facts and the mission definitions, independently of the engine.
    pub fn expected(&self, partitions: i32, key: &[u8]) -> Result<Expected> {
        let keys = self.citizen_keys(key)?;
        let partition_of: Vec<i32> = keys
            .iter()
            .map(|k| crate::murmur2_partition(k.as_bytes(), partitions))
            .collect();
        // The watermark of each partition: its greatest event time − lateness.
        let mut max_day: HashMap<i32, i64> = HashMap::new();
        for e in &self.events {
            let m = max_day.entry(partition_of[e.citizen]).or_insert(i64::MIN);
            *m = (*m).max(e.occurred);
        }
        let facts = self.facts();
        Ok(Self::figures(&facts, |i| {
            max_day
                .get(&partition_of[i])
                .map_or(i64::MIN, |d| d - ALLOWED_LATENESS_DAYS)
        }))
    }

    fn facts(&self) -> Vec<Facts> {
        let mut facts: Vec<Facts> = vec![Facts::default(); self.ninos.len()];
        let mut seen = HashSet::new();
        for e in &self.events {
            if seen.insert(e.json["event_id"].as_str().unwrap_or_default().to_owned()) {
                facts[e.citizen].add(e);
            }
        }
        facts
    }

    /// Every citizen's outcomes with citizen `i` evaluated at watermark `wm(i)`.
    fn figures(facts: &[Facts], wm: impl Fn(usize) -> i64) -> Expected {
        let mut expected = Expected::default();
        for (i, f) in facts.iter().enumerate() {
            let wm = wm(i);
            for (mission, eval) in [
                ("opportunity", f.opportunity(wm)),
                ("health_and_work", f.health_and_work(wm)),
                ("safer_streets", f.safer_streets(wm)),
                ("uc_into_work", f.uc_into_work(wm)),
                ("youth_participation", f.youth_participation(wm)),
            ] {
                if let Some((area, mut outcomes)) = eval {
                    // Cohort membership, and so every status, is final only
                    // once the watermark reaches the anchor.
                    if f.anchor_day(mission).is_some_and(|d| d > wm) {
                        for (_, status) in &mut outcomes {
                            *status = Status::Pending;
                        }
                    }
                    let month = f.anchor_month(mission);
                    expected.add(mission, &area, &month, &outcomes);
                }
            }
            if let Some((area, neet)) = f.neet(wm) {
                // Everyone aged 16 to 24: NEET, or else in education,
                // employment or training (EET).
                for (mission, snapshot, holds) in [
                    ("opportunity", "neet", neet),
                    ("youth_participation", "eet", !neet),
                ] {
                    let s = expected
                        .snapshots
                        .entry(mission.into())
                        .or_default()
                        .entry(snapshot.into())
                        .or_default();
                    for g in [&mut s.total, s.by_area.entry(area.clone()).or_default()] {
                        g.population += 1;
                        g.count += i64::from(holds);
                    }
                }
            }
        }
        expected
    }
}

/// Expected figures of one group (a mission total or one area).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedCounts {
    /// Citizens in the cohort.
    pub cohort: i64,
    /// Per outcome: achieved, not achieved, pending, and days to achieve.
    pub outcomes: BTreeMap<String, ExpectedOutcome>,
}

/// Expected figures of one outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedOutcome {
    /// Achieved.
    pub achieved: i64,
    /// Not achieved (deadline passed).
    pub not_achieved: i64,
    /// Still open at the final watermark.
    pub pending: i64,
    /// Days from the window's start to achievement, one per achiever.
    #[serde(skip)]
    pub days: Vec<i64>,
}

impl ExpectedOutcome {
    /// Exact nearest-rank `q`-quantile of the days to achieve.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let mut d = self.days.clone();
        d.sort_unstable();
        if d.is_empty() {
            return None;
        }
        let rank = ((q * d.len() as f64).ceil() as usize).clamp(1, d.len());
        Some(d[rank - 1])
    }
}

/// Expected figures of every mission: the total and by area.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Expected {
    /// Mission → whole cohort.
    pub total: BTreeMap<String, ExpectedCounts>,
    /// Mission → area → cohort in that area.
    pub by_area: BTreeMap<String, BTreeMap<String, ExpectedCounts>>,
    /// Mission → cohort month (`YYYY-MM` of the anchor) → cohort of that month.
    pub by_month: BTreeMap<String, BTreeMap<String, ExpectedCounts>>,
    /// Mission → snapshot id → its figures: `opportunity`'s `neet` (aged
    /// 16 to 24 at the watermark and in neither education nor employment
    /// then) and `youth_participation`'s `eet` (the same population, in
    /// one or the other).
    pub snapshots: BTreeMap<String, BTreeMap<String, ExpectedSnapshot>>,
}

/// Expected figures of a snapshot measure in one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedSnapshotGroup {
    /// Citizens in the population at the watermark.
    pub population: i64,
    /// Of them, those in the measured state.
    pub count: i64,
}

/// Expected figures of a snapshot measure: the total and by area.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedSnapshot {
    /// Everyone in the population.
    pub total: ExpectedSnapshotGroup,
    /// By the latest area reported by the watermark (`unknown` when none).
    pub by_area: BTreeMap<String, ExpectedSnapshotGroup>,
}

/// An outcome's status at the watermark, with days to achieve when achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Achieved after this many days.
    Achieved(i64),
    /// A state outcome's state held when it was read (no days to achieve).
    Held,
    /// Deadline passed.
    NotAchieved,
    /// Open.
    Pending,
}

impl Expected {
    fn add(&mut self, mission: &str, area: &str, month: &str, outcomes: &[(&str, Status)]) {
        for counts in [
            self.total.entry(mission.into()).or_default(),
            self.by_area
                .entry(mission.into())
                .or_default()
                .entry(area.into())
                .or_default(),
            self.by_month
                .entry(mission.into())
                .or_default()
                .entry(month.into())
                .or_default(),
        ] {
            counts.cohort += 1;
            for (name, s) in outcomes {
                let o = counts.outcomes.entry((*name).into()).or_default();
                match s {
                    Status::Achieved(d) => {
                        o.achieved += 1;
                        o.days.push(*d);
                    }
                    Status::Held => o.achieved += 1,
                    Status::NotAchieved => o.not_achieved += 1,
                    Status::Pending => o.pending += 1,
                }
            }
        }
    }
}

/// One citizen's facts, in simulated days (duplicates removed).
#[derive(Debug, Clone, Default)]
struct Facts {
    birth: Option<(i64, i64)>,
    area: Option<String>,
    /// The first day of any event, and of any event carrying an area.
    first_day: Option<i64>,
    first_area_day: Option<i64>,
    enrolments: Vec<(i64, String)>,
    exit_providers: Vec<(i64, String)>,
    exits: Vec<(i64, String)>,
    job_starts: Vec<(i64, String)>,
    job_ends: Vec<(i64, String)>,
    claims: Vec<(i64, String, bool)>,
    /// Universal Credit claims: (start, claim id, area).
    uc_claims: Vec<(i64, String, String)>,
    claim_ends: Vec<(i64, String)>,
    referrals: Vec<(i64, String)>,
    treatments: Vec<i64>,
    releases: Vec<(i64, String)>,
    settled: Vec<i64>,
    reoffences: Vec<i64>,
}

/// The end of the interval `id` that started on `start`: the first of
/// `ends` with the same id on or after the start (as the engine pairs an
/// interval's start with its end).
fn first_end(ends: &[(i64, String)], id: &str, start: i64) -> Option<i64> {
    ends.iter()
        .filter(|(e, eid)| eid == id && *e >= start)
        .map(|(e, _)| *e)
        .min()
}

fn text(e: &SimEvent, f: &str) -> String {
    e.json[f].as_str().unwrap_or_default().to_owned()
}

impl Facts {
    fn add(&mut self, e: &SimEvent) {
        use EventType::*;
        if self.birth.is_none() {
            let b = text(e, "birth_year_month");
            if let Some((y, m)) = b.split_once('-') {
                self.birth = y.parse().ok().zip(m.parse().ok());
            }
        }
        let area = text(e, "area_code");
        if self.area.is_none() && !area.is_empty() {
            self.area = Some(area.clone());
        }
        let d = e.occurred;
        self.first_day = Some(self.first_day.map_or(d, |f| f.min(d)));
        if !area.is_empty() {
            self.first_area_day = Some(self.first_area_day.map_or(d, |f| f.min(d)));
        }
        match e.event_type {
            EducationEnrolled => self.enrolments.push((d, text(e, "provider_urn"))),
            EducationExited => {
                self.exit_providers.push((d, text(e, "provider_urn")));
                self.exits.push((d, area));
            }
            EmploymentStarted => self.job_starts.push((d, text(e, "employment_id"))),
            EmploymentEnded => self.job_ends.push((d, text(e, "employment_id"))),
            BenefitClaimStarted => {
                self.claims.push((
                    d,
                    text(e, "claim_id"),
                    e.json["health_condition"] == json!(true),
                ));
                if text(e, "benefit") == "UNIVERSAL_CREDIT" {
                    self.uc_claims.push((d, text(e, "claim_id"), area));
                }
            }
            BenefitClaimEnded => self.claim_ends.push((d, text(e, "claim_id"))),
            ReferralReceived if text(e, "pathway") == "MENTAL_HEALTH" => {
                self.referrals.push((d, area));
            }
            TreatmentStarted if text(e, "pathway") == "MENTAL_HEALTH" => self.treatments.push(d),
            ReleasedFromCustody => self.releases.push((d, area)),
            AccommodationRecorded if text(e, "status") == "SETTLED" => self.settled.push(d),
            ProvenReoffence => self.reoffences.push(d),
            _ => {}
        }
    }

    /// Whole years of age at `day`, counting from the start of the birth month.
    fn age_at(&self, day: i64) -> Option<i64> {
        let (by, bm) = self.birth?;
        let d = chrono::NaiveDate::parse_from_str(START, "%Y-%m-%d")
            .ok()?
            .checked_add_signed(chrono::Duration::try_days(day)?)?;
        let months = (i64::from(chrono::Datelike::year(&d)) * 12
            + i64::from(chrono::Datelike::month(&d)))
            - (by * 12 + bm);
        (months >= 0).then_some(months / 12)
    }

    /// Employments as (start, end if ended): the end is the first
    /// EmploymentEnded of the same id on or after the start.
    fn jobs(&self) -> Vec<(i64, Option<i64>)> {
        self.job_starts
            .iter()
            .map(|(s, id)| (*s, first_end(&self.job_ends, id, *s)))
            .collect()
    }

    /// The end of claim `id` that started on `start`.
    fn claim_end(&self, id: &str, start: i64) -> Option<i64> {
        first_end(&self.claim_ends, id, start)
    }

    /// Whether an employment is open at `day` (started by it, not ended by it).
    fn in_work_at(&self, day: i64) -> bool {
        self.jobs()
            .into_iter()
            .any(|(s, e)| s <= day && e.is_none_or(|e| e > day))
    }

    /// Whether an enrolment is open at `day`: started by it, and not ended
    /// by it by the first exit from the same provider on or after its start.
    fn in_education_at(&self, day: i64) -> bool {
        self.enrolments.iter().any(|(s, provider)| {
            *s <= day && first_end(&self.exit_providers, provider, *s).is_none_or(|e| e > day)
        })
    }

    /// A state read at `day`: decided once the watermark has reached it.
    fn state_at(day: i64, wm: i64, holds: impl FnOnce() -> bool) -> Status {
        if wm < day {
            Status::Pending
        } else if holds() {
            Status::Held
        } else {
            Status::NotAchieved
        }
    }

    /// missions/uc_into_work.toml: started a Universal Credit claim; six
    /// months (182 days) later on no Universal Credit claim and in work.
    fn uc_into_work(&self, wm: i64) -> Option<(String, Vec<(&'static str, Status)>)> {
        let (start, _, area) = self.uc_claims.iter().min_by_key(|(d, ..)| *d)?;
        let at = start + 182;
        let status = Self::state_at(at, wm, || {
            let on_uc = self
                .uc_claims
                .iter()
                .any(|(s, id, _)| *s <= at && self.claim_end(id, *s).is_none_or(|e| e > at));
            self.in_work_at(at) && !on_uc
        });
        Some((self.area_at(area), vec![("off_benefit_in_work_6m", status)]))
    }

    /// missions/youth_participation.toml: left education aged 16-24; in
    /// education or work 182 days later; a job or a course starting within
    /// 90 days.
    fn youth_participation(&self, wm: i64) -> Option<(String, Vec<(&'static str, Status)>)> {
        let (exit, area) = self.exits.iter().min_by_key(|(d, _)| *d)?;
        if !(16..=24).contains(&self.age_at(*exit)?) {
            return None;
        }
        let at = exit + 182;
        let participating =
            Self::state_at(at, wm, || self.in_education_at(at) || self.in_work_at(at));
        let starts: Vec<i64> = self
            .job_starts
            .iter()
            .chain(&self.enrolments)
            .map(|(s, _)| *s)
            .collect();
        Some((
            self.area_at(area),
            vec![
                ("participating_at_6m", participating),
                ("reengaged_within_90d", Self::occurs(&starts, *exit, 90, wm)),
            ],
        ))
    }

    /// missions/opportunity.toml, snapshot `neet`: `Some((area, neet))` when
    /// known by the watermark and aged 16 to 24 then; NEET when no
    /// enrolment and no employment is open then (started by it, and not
    /// ended by it).
    fn neet(&self, wm: i64) -> Option<(String, bool)> {
        if self.first_day? > wm || !(16..=24).contains(&self.age_at(wm)?) {
            return None;
        }
        let open = |starts: &[(i64, String)], ends: &[(i64, String)]| {
            starts.iter().any(|(s, id)| {
                *s <= wm && !ends.iter().any(|(e, eid)| eid == id && e >= s && *e <= wm)
            })
        };
        let busy =
            open(&self.enrolments, &self.exit_providers) || open(&self.job_starts, &self.job_ends);
        // Each simulated citizen lives in one area, reported by every
        // department but HMRC.
        let area = match (self.first_area_day, &self.area) {
            (Some(d), Some(a)) if d <= wm => a.clone(),
            _ => "unknown".into(),
        };
        Some((area, !busy))
    }

    /// An occurrence in [from, from + days] at watermark `wm`: achieved
    /// once the watermark has reached it (final), pending before.
    fn occurs(times: &[i64], from: i64, days: i64, wm: i64) -> Status {
        match times
            .iter()
            .filter(|t| **t >= from && **t <= from + days)
            .min()
        {
            Some(t) if *t > wm => Status::Pending,
            Some(t) => Status::Achieved(t - from),
            None if wm >= from + days => Status::NotAchieved,
            None => Status::Pending,
        }
    }

    fn area_at(&self, anchor_area: &str) -> String {
        if anchor_area.is_empty() {
            self.area.clone().unwrap_or_else(|| "unknown".into())
        } else {
            anchor_area.to_owned()
        }
    }

    /// The day of the mission's anchor: the first leaving of education,
    /// mental-health referral or release.
    fn anchor_day(&self, mission: &str) -> Option<i64> {
        let first = |v: &[(i64, String)]| v.iter().map(|(d, _)| *d).min();
        match mission {
            "opportunity" | "youth_participation" => first(&self.exits),
            "health_and_work" => first(&self.referrals),
            "uc_into_work" => self.uc_claims.iter().map(|(d, ..)| *d).min(),
            _ => first(&self.releases),
        }
    }

    /// `YYYY-MM` of the mission's anchor.
    fn anchor_month(&self, mission: &str) -> String {
        self.anchor_day(mission)
            .map_or_else(|| "unknown".into(), |d| date(d)[..7].to_owned())
    }

    /// missions/opportunity.toml: left education aged 16-24; a job starting
    /// within 180 days and kept 90 days.
    fn opportunity(&self, wm: i64) -> Option<(String, Vec<(&'static str, Status)>)> {
        let (exit, area) = self.exits.iter().min_by_key(|(d, _)| *d)?;
        let age = self.age_at(*exit)?;
        if !(16..=24).contains(&age) {
            return None;
        }
        let mut open = false;
        let mut achieved = None;
        let mut jobs = self.jobs();
        jobs.sort_unstable();
        for (s, end) in jobs {
            if s < *exit || s > exit + 180 {
                continue;
            }
            let sustained = s + 90;
            match end {
                Some(e) if e >= sustained => {}
                Some(_) => continue,
                None if wm >= sustained => {}
                None => {
                    open = true;
                    continue;
                }
            }
            achieved = Some((s - exit, sustained));
            break;
        }
        let status = match achieved {
            // Kept 90 days from a day the watermark has not reached: not
            // final yet.
            Some((_, sustained)) if sustained > wm => Status::Pending,
            Some((d, _)) => Status::Achieved(d),
            None if wm >= exit + 180 && !open => Status::NotAchieved,
            None => Status::Pending,
        };
        Some((
            self.area_at(area),
            vec![("sustained_employment_180d", status)],
        ))
    }

    /// missions/health_and_work.toml: referred (mental health) while on a
    /// claim with a health condition; treated within 126 days; among the
    /// treated, a job starting within 365 days of treatment.
    fn health_and_work(&self, wm: i64) -> Option<(String, Vec<(&'static str, Status)>)> {
        let (referral, area) = self.referrals.iter().min_by_key(|(d, _)| *d)?;
        let on_claim = self.claims.iter().any(|(s, id, health)| {
            *health && s <= referral && self.claim_end(id, *s).is_none_or(|e| e > *referral)
        });
        if !on_claim {
            return None;
        }
        let mut outcomes = vec![(
            "treatment_within_18_weeks",
            Self::occurs(&self.treatments, *referral, 126, wm),
        )];
        if let Some(t) = self.treatments.iter().min() {
            let starts: Vec<i64> = self.job_starts.iter().map(|(s, _)| *s).collect();
            outcomes.push((
                "employment_within_12_months_of_treatment",
                Self::occurs(&starts, *t, 365, wm),
            ));
        }
        Some((self.area_at(area), outcomes))
    }

    /// missions/safer_streets.toml: released from custody; settled within 3
    /// days, a job within 42 days, a proven reoffence within 365 days.
    fn safer_streets(&self, wm: i64) -> Option<(String, Vec<(&'static str, Status)>)> {
        let (release, area) = self.releases.iter().min_by_key(|(d, _)| *d)?;
        let starts: Vec<i64> = self.job_starts.iter().map(|(s, _)| *s).collect();
        Some((
            self.area_at(area),
            vec![
                (
                    "settled_accommodation_3d",
                    Self::occurs(&self.settled, *release, 3, wm),
                ),
                ("employment_6w", Self::occurs(&starts, *release, 42, wm)),
                (
                    "proven_reoffence_12m",
                    Self::occurs(&self.reoffences, *release, 365, wm),
                ),
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events_and_figures() {
        let a = Population::generate(GeneratorConfig::new(300, 5));
        let b = Population::generate(GeneratorConfig::new(300, 5));
        assert_eq!(a.ndjson(), b.ndjson());
        let key = b"a platform key of at least thirty-two bytes";
        assert_eq!(
            serde_json::to_string(&a.expected(6, key).unwrap()).unwrap(),
            serde_json::to_string(&b.expected(6, key).unwrap()).unwrap()
        );
        let c = Population::generate(GeneratorConfig::new(300, 6));
        assert_ne!(a.ndjson(), c.ndjson());
    }

    #[test]
    fn events_come_in_recorded_order_with_delays_and_some_resent() {
        let p = Population::generate(GeneratorConfig::new(2000, 1));
        assert!(p.events.windows(2).all(|w| w[0].recorded <= w[1].recorded));
        assert!(p.events.iter().all(|e| e.recorded >= e.occurred));
        let late = p
            .events
            .iter()
            .filter(|e| e.recorded - e.occurred > 7)
            .count();
        assert!(
            late * 4 > p.events.len(),
            "a good share reported over a week late"
        );
        let ids: HashSet<&str> = p
            .events
            .iter()
            .map(|e| e.json["event_id"].as_str().unwrap())
            .collect();
        let resent = p.events.len() - ids.len();
        assert!(
            resent > 0 && resent * 20 < p.events.len(),
            "about 2% re-sent: {resent}"
        );
        for t in EventType::ALL {
            assert!(p.events.iter().any(|e| e.event_type == t), "{t} generated");
        }
    }

    #[test]
    fn figures_land_near_the_calibrated_rates() {
        // A long span and every window closed: the rates the journeys were
        // drawn with, without the provisional bias of recent cohorts (whose
        // achievements are known before their failures).
        let p = Population::generate(GeneratorConfig {
            span_days: 5000,
            ..GeneratorConfig::new(20_000, 2)
        });
        let e = Population::figures(&p.facts(), |_| i64::MAX / 2);
        let rate = |m: &str, o: &str| {
            let x = &e.total[m].outcomes[o];
            x.achieved as f64 / (x.achieved + x.not_achieved) as f64
        };
        // Opportunity: 88% start within 180 days, 85% of those keep it 90 days.
        let opp = rate("opportunity", "sustained_employment_180d");
        assert!((0.70..0.80).contains(&opp), "opportunity {opp}");
        let rtt = rate("health_and_work", "treatment_within_18_weeks");
        assert!((0.55..0.65).contains(&rtt), "18-week RTT {rtt}");
        let reoffending = rate("safer_streets", "proven_reoffence_12m");
        assert!(
            (0.22..0.28).contains(&reoffending),
            "reoffending {reoffending}"
        );
        let settled = rate("safer_streets", "settled_accommodation_3d");
        assert!((0.45..0.55).contains(&settled), "settled {settled}");
        // Universal Credit (the health claimants): off it and in work six
        // months on is rare, as few find work that soon; not none.
        let uc = rate("uc_into_work", "off_benefit_in_work_6m");
        assert!((0.0..0.3).contains(&uc) && uc > 0.0, "UC into work {uc}");
        // Young leavers: the 88% who start within 180 days, less early losses.
        let participating = rate("youth_participation", "participating_at_6m");
        assert!(
            (0.6..0.9).contains(&participating),
            "participating {participating}"
        );
    }

    #[test]
    fn the_oracle_reads_the_mission_rules() {
        let mut f = Facts {
            birth: Some((2006, 6)),
            ..Facts::default()
        };
        f.exits.push((100, "E1".into()));
        f.job_starts.push((150, "j".into()));
        // Open job, 90 days not yet reached at the watermark: pending.
        assert_eq!(f.opportunity(200).unwrap().1[0].1, Status::Pending);
        assert_eq!(f.opportunity(240).unwrap().1[0].1, Status::Achieved(50));
        // Ended after the 90 days, but the watermark is short of the 90th
        // day: pending, then achieved once it gets there.
        let mut kept = f.clone();
        kept.job_ends.push((300, "j".into()));
        assert_eq!(kept.opportunity(200).unwrap().1[0].1, Status::Pending);
        assert_eq!(kept.opportunity(240).unwrap().1[0].1, Status::Achieved(50));
        // Ended after 30 days: not achieved once the window has closed.
        f.job_ends.push((180, "j".into()));
        assert_eq!(f.opportunity(279).unwrap().1[0].1, Status::Pending);
        assert_eq!(f.opportunity(280).unwrap().1[0].1, Status::NotAchieved);
        // Aged 26 at leaving: outside the cohort.
        f.birth = Some((1998, 1));
        assert!(f.opportunity(400).is_none());
    }

    #[test]
    fn the_oracle_reads_the_new_missions_rules() {
        let mut f = Facts::default();
        f.uc_claims.push((10, "c".into(), "E1".into()));
        f.job_starts.push((100, "j".into()));
        // Six months after the claim (day 192): read once the watermark
        // reaches it; still on the claim then, so not achieved.
        assert_eq!(f.uc_into_work(191).unwrap().1[0].1, Status::Pending);
        assert_eq!(f.uc_into_work(192).unwrap().1[0].1, Status::NotAchieved);
        // The claim ended (day 120): off the benefit and in work.
        f.claim_ends.push((120, "c".into()));
        assert_eq!(f.uc_into_work(192).unwrap().1[0].1, Status::Held);
        // The job ended on day 192 itself: not in work at the reading.
        f.job_ends.push((192, "j".into()));
        assert_eq!(f.uc_into_work(400).unwrap().1[0].1, Status::NotAchieved);

        let mut y = Facts {
            birth: Some((2006, 6)),
            ..Facts::default()
        };
        y.enrolments.push((0, "p1".into()));
        y.exit_providers.push((100, "p1".into()));
        y.exits.push((100, "E1".into()));
        // A new course 60 days after leaving: re-engaged, and in education
        // six months on.
        y.enrolments.push((160, "p2".into()));
        let got = y.youth_participation(300).unwrap().1;
        assert_eq!(got[0].1, Status::Held);
        assert_eq!(got[1].1, Status::Achieved(60));
        // Left the new course before the six months: not participating.
        y.exit_providers.push((250, "p2".into()));
        assert_eq!(
            y.youth_participation(300).unwrap().1[0].1,
            Status::NotAchieved
        );
    }
}
