//! `joinery missions check`: loads a missions directory as the processor
//! and projections will (every event type, field and value checked against
//! the event schemas) and describes each mission, or names the first
//! mistake with its file and line. Writes nothing and needs no service.

use std::fmt::Write as _;
use std::path::Path;

use joinery_engine::definition::{Better, MissionDef};

/// Each mission of `dir` in words, or the first mistake.
pub(crate) fn check(dir: &Path) -> anyhow::Result<String> {
    let missions = joinery_engine::load_missions(dir)?;
    let mut out = String::new();
    for m in &missions {
        describe(&mut out, m)?;
    }
    writeln!(
        out,
        "{} missions in {}: every capability, event type, field and value checked",
        missions.len(),
        dir.display()
    )?;
    Ok(out)
}

fn describe(out: &mut String, m: &MissionDef) -> std::fmt::Result {
    writeln!(
        out,
        "{} ({}): {}",
        m.id,
        m.title,
        m.departments()
            .iter()
            .map(|d| d.code())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let c = &m.cohort;
    write!(out, "  cohort: {}", c.anchor)?;
    if let Some((min, max)) = c.age {
        write!(out, ", aged {min} to {max}")?;
    }
    for a in &c.active_at_anchor {
        write!(out, ", {a} open")?;
    }
    if let Some(a) = &c.at_anchor {
        write!(out, ", {a} at the anchor")?;
    }
    writeln!(out)?;
    for o in &m.outcomes {
        let from = o.from.as_deref().unwrap_or("the anchor");
        match o.at_days {
            Some(days) => write!(
                out,
                "  outcome {}: {} holds {days} days after {from}",
                o.id, o.condition
            )?,
            None => {
                write!(
                    out,
                    "  outcome {}: {} within {} days of {from}",
                    o.id, o.condition, o.within_days
                )?;
                if let Some(s) = o.sustained_days {
                    write!(out, ", kept {s} days")?;
                }
            }
        }
        if o.better == Better::Lower {
            write!(out, " (lower is better)")?;
        }
        writeln!(out)?;
    }
    for s in &m.snapshots {
        write!(out, "  snapshot {}: at the watermark", s.id)?;
        if let Some((min, max)) = s.age {
            write!(out, ", aged {min} to {max}")?;
        }
        for n in &s.open {
            write!(out, ", {n} open")?;
        }
        for n in &s.not_open {
            write!(out, ", {n} not open")?;
        }
        if let Some(st) = &s.state {
            write!(out, ", {st}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
