//! Loading and checking definitions.

use super::*;

const CAPS: &str =
    "[capability.left]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.EducationExited\"\n";

fn caps() -> BTreeMap<String, Capability> {
    parse_capabilities(Path::new("capabilities.toml"), CAPS).expect("valid")
}

fn repository() -> std::path::PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../missions")
}

#[test]
fn the_repository_missions_load_each_named_by_its_file() {
    let dir = repository();
    let ids: Vec<String> = load_dir(&dir)
        .expect("load")
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    // Every mission file, whatever missions there are: adding one needs no
    // change here.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the missions directory")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_str()?.to_owned();
            (p.extension()? == "toml" && stem != "capabilities").then_some(stem)
        })
        .collect();
    files.sort();
    assert_eq!(ids, files);
}

#[test]
fn a_mission_reads_the_departments_of_its_capabilities_events() {
    use joinery_domain::Department::*;
    let departments: BTreeMap<String, Vec<joinery_domain::Department>> = load_dir(&repository())
        .expect("load")
        .into_iter()
        .map(|m| (m.id.to_string(), m.departments().into_iter().collect()))
        .collect();
    // Whose lateness decides when each mission's statuses are final.
    for (id, want) in [
        ("health_and_work", vec![Dwp, Hmrc, Dhsc]),
        ("opportunity", vec![Dfe, Hmrc]),
        ("safer_streets", vec![Hmrc, Moj, Mhclg]),
        ("uc_into_work", vec![Dwp, Hmrc]),
        ("youth_participation", vec![Dfe, Hmrc]),
    ] {
        assert_eq!(departments[id], want, "{id}");
    }
}

#[test]
fn the_fingerprint_follows_the_rules_and_not_the_wording() {
    let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
    let m = |t: &str| parse_mission(Path::new("m.toml"), t, &caps()).expect("valid");
    let base = fingerprint(&[m(text)]);
    assert_eq!(base, fingerprint(&[m(text)]), "stable");
    let reworded = text
        .replace("title = \"t\"", "title = \"New title\"")
        .replace("doc = \"d\"", "doc = \"Reworded\"");
    assert_eq!(base, fingerprint(&[m(&reworded)]), "wording is not a rule");
    assert_ne!(
        base,
        fingerprint(&[m(&text.replace("within_days = 3", "within_days = 4"))]),
        "a window is"
    );
    assert_ne!(
        base,
        fingerprint(&[m(&text.replace("id = \"o\"", "id = \"p\""))])
    );
    assert_ne!(base, fingerprint(&[]), "a mission removed");
}

#[test]
fn counts_and_durations_are_checked_where_they_are_used() {
    let bad = "[capability.x]\ndoc = \"x\"\nkind = \"duration\"\nof = \"left\"\n[capability.left]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.EducationExited\"\n";
    let msg = parse_capabilities(Path::new("c.toml"), bad)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("must name an interval capability"), "{msg}");
    let caps = parse_capabilities(
        Path::new("c.toml"),
        &format!("{CAPS}[capability.n]\ndoc = \"x\"\nkind = \"count\"\nevent = \"dfe.EducationExited\"\n"),
    )
    .expect("valid");
    let anchor_is_count = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"n\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
    assert!(parse_mission(Path::new("m.toml"), anchor_is_count, &caps).is_err());
    let require_occurrence = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\nrequire = [{ capability = \"left\", at_least = 1 }]\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
    let msg = parse_mission(Path::new("m.toml"), require_occurrence, &caps)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("count or duration"), "{msg}");
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\nfavourite_colour = \"blue\"\n";
    let err = parse_mission(Path::new("m.toml"), text, &caps()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("m.toml:7:"), "{msg}");
    assert!(msg.contains("favourite_colour"), "{msg}");
}

#[test]
fn unknown_capabilities_and_event_types_are_refused_with_the_reason() {
    let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"in_work\"\nwithin_days = 3\n";
    let msg = parse_mission(Path::new("m.toml"), text, &caps())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`in_work`") && msg.contains("left"), "{msg}");
    let bad = "[capability.x]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.Graduated\"\n";
    let msg = parse_capabilities(Path::new("c.toml"), bad)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dfe.Graduated"), "{msg}");
    let bad =
        "[capability.x]\ndoc = \"x\"\nkind = \"sometimes\"\nevent = \"dfe.EducationExited\"\n";
    assert!(parse_capabilities(Path::new("c.toml"), bad)
        .unwrap_err()
        .to_string()
        .contains("sometimes"));
}

/// A mission file with `cohort` and `outcome` sections around `body`.
fn mission_with(body: &str) -> String {
    format!("id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n{body}")
}

fn refused(caps_text: &str, mission: Option<&str>) -> String {
    let caps = parse_capabilities(Path::new("capabilities.toml"), caps_text);
    let result = match (caps, mission) {
        (Err(e), _) => Err(e),
        (Ok(_), None) => return "accepted".into(),
        (Ok(c), Some(m)) => parse_mission(Path::new("m.toml"), m, &c).map(|_| ()),
    };
    result.map_or_else(|e| e.to_string(), |()| "accepted".into())
}

#[test]
fn every_kind_of_mistake_is_refused_with_its_file_line_and_what_was_expected() {
    let cap = |body: &str| format!("{CAPS}\n[capability.x]\ndoc = \"x\"\n{body}");
    // CAPS is 4 lines, then a blank line, so capability x starts on line 6
    // and its third line (the first of `body`) is line 8.
    for (body, line, says) in [
        // An event type that does not exist.
        ("kind = \"first\"\nevent = \"dfe.Graduated\"", 9, "dfe.Graduated"),
        // A field the event does not have: its fields are listed.
        ("kind = \"first\"\nevent = \"dfe.EducationExited\"\nwhere = { reason_code = \"X\" }", 10, "its fields are level, provider_urn, reason"),
        // A symbol outside the enum: the symbols are listed.
        ("kind = \"first\"\nevent = \"dfe.EducationExited\"\nwhere = { reason = \"GRADUATED\" }", 10, "one of COMPLETED, WITHDREW"),
        // A value of the wrong shape.
        ("kind = \"first\"\nevent = \"dwp.BenefitClaimStarted\"\nwhere = { health_condition = \"yes\" }", 10, "expected true or false"),
        // A range on text.
        ("kind = \"first\"\nevent = \"dfe.EducationExited\"\nwhere = { provider_urn = { at_least = 3 } }", 10, "need a number or a moment"),
        // Presence of a field that is always there.
        ("kind = \"first\"\nevent = \"dfe.EducationExited\"\nwhere = { provider_urn = { present = true } }", 10, "always present"),
        // A range that matches nothing.
        ("kind = \"first\"\nevent = \"moj.ProvenReoffence\"\nwhere = { disposal_date = { at_least = 2026-02-01, at_most = 2026-01-01 } }", 10, "nothing matches"),
        // An interval without match_on, and with one neither event has.
        ("kind = \"interval\"\nstart = \"hmrc.EmploymentStarted\"\nend = \"hmrc.EmploymentEnded\"", 6, "needs `match_on`"),
        ("kind = \"interval\"\nstart = \"hmrc.EmploymentStarted\"\nend = \"hmrc.EmploymentEnded\"\nmatch_on = \"employer\"", 11, "not a field of hmrc.EmploymentStarted"),
        // A kind that does not exist.
        ("kind = \"sometimes\"\nevent = \"dfe.EducationExited\"", 8, "expected first, last, interval, count or duration"),
    ] {
        let msg = refused(&cap(body), None);
        assert!(
            msg.starts_with(&format!("capabilities.toml:{line}:")) && msg.contains(says),
            "{body}\n=> {msg}"
        );
    }
    // Filters that are right are accepted, with dates as dates.
    let ok = cap("kind = \"first\"\nevent = \"moj.ProvenReoffence\"\nwhere = { offence_group = [\"THEFT\", \"DRUGS\"], disposal_date = { at_least = \"2025-01-01\" } }");
    assert_eq!(refused(&ok, None), "accepted");

    let caps = format!("{CAPS}[capability.job]\ndoc = \"x\"\nkind = \"interval\"\nstart = \"hmrc.EmploymentStarted\"\nend = \"hmrc.EmploymentEnded\"\nmatch_on = \"employment_id\"\n[capability.n]\ndoc = \"x\"\nkind = \"count\"\nevent = \"dfe.EducationExited\"\n");
    let cohort = "[cohort]\ndoc = \"c\"\nanchor = \"left\"\n";
    // Lines: 1-3 the header, 4-6 the cohort, 7 [[outcome]], 8 id, 9 doc.
    for (outcome, line, says) in [
        (
            "condition = \"in_work\"\nwithin_days = 3",
            10,
            "`in_work`, which is not defined",
        ),
        (
            "condition = { all_of = [\"job\", \"left\"] }\nwithin_days = 3",
            10,
            "write a state outcome",
        ),
        (
            "condition = { not = \"job\" }\nwithin_days = 3",
            10,
            "write a state outcome",
        ),
        (
            "state = { any_of = [\"job\", \"n\"] }\nat_days = 3",
            10,
            "`n` is a count or duration",
        ),
        (
            "state = { sometimes = [\"job\"] }\nat_days = 3",
            10,
            "expected any_of, all_of or not",
        ),
        ("state = { any_of = [] }\nat_days = 3", 10, "non-empty list"),
        ("state = \"job\"", 7, "needs `at_days`"),
        (
            "state = \"job\"\nat_days = 3\nwithin_days = 3",
            7,
            "belong to event outcomes",
        ),
        ("condition = \"job\"", 7, "needs `within_days`"),
        ("within_days = 3", 7, "needs either `condition`"),
        (
            "condition = \"left\"\nwithin_days = 3\nsustained_days = 2",
            10,
            "sustained_days needs interval conditions",
        ),
        (
            "condition = \"job\"\nwithin_days = 3\nbetter = \"more\"",
            12,
            "expected \"higher\" or \"lower\"",
        ),
    ] {
        let m = mission_with(&format!(
            "{cohort}[[outcome]]\nid = \"o\"\ndoc = \"d\"\n{outcome}\n"
        ));
        let msg = refused(&caps, Some(&m));
        assert!(
            msg.starts_with(&format!("m.toml:{line}:")) && msg.contains(says),
            "{outcome}\n=> {msg}"
        );
    }
    let m = mission_with("[cohort]\ndoc = \"c\"\nanchor = \"left\"\nat_anchor = { not = \"nothing\" }\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"job\"\nwithin_days = 3\n");
    let msg = refused(&caps, Some(&m));
    assert!(
        msg.starts_with("m.toml:7:") && msg.contains("`nothing`"),
        "{msg}"
    );
}

#[test]
fn conditions_combine_and_compile_to_what_they_say() {
    let caps = format!("{CAPS}[capability.job]\ndoc = \"x\"\nkind = \"interval\"\nstart = \"hmrc.EmploymentStarted\"\nend = \"hmrc.EmploymentEnded\"\nmatch_on = \"employment_id\"\n");
    let caps = parse_capabilities(Path::new("c.toml"), &caps).expect("valid");
    let m = mission_with("[cohort]\ndoc = \"c\"\nanchor = \"left\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\nstate = { all_of = [\"job\", { not = \"left\" }] }\nat_days = 30\nbetter = \"lower\"\n");
    let m = parse_mission(Path::new("m.toml"), &m, &caps).expect("valid");
    let o = &m.outcomes[0];
    assert_eq!(o.condition.to_string(), "all_of(job, not(left))");
    assert_eq!(
        (o.within_days, o.at_days, o.better),
        (30, Some(30), Better::Lower)
    );
    assert!(m.capabilities.contains_key("job") && m.capabilities.contains_key("left"));
    // A date range includes the whole of its last day.
    let caps = format!("{CAPS}[capability.x]\ndoc = \"x\"\nkind = \"first\"\nevent = \"moj.ProvenReoffence\"\nwhere = {{ disposal_date = {{ at_least = 2024-01-01, at_most = \"2024-12-31\" }} }}\n");
    let caps = parse_capabilities(Path::new("c.toml"), &caps).expect("valid");
    let Capability::First(f) = &caps["x"] else {
        panic!("a first capability")
    };
    let day = |d: &str, t: &str| {
        Some(FieldValue::Int(
            chrono::DateTime::parse_from_rfc3339(&format!("{d}T{t}Z"))
                .expect("a moment")
                .timestamp_millis(),
        ))
    };
    let range = &f.conditions["disposal_date"];
    assert!(range.test(day("2024-01-01", "00:00:00").as_ref()));
    assert!(range.test(day("2024-12-31", "23:59:59").as_ref()));
    assert!(!range.test(day("2025-01-01", "00:00:00").as_ref()));
    assert!(!range.test(day("2023-12-31", "23:59:59").as_ref()));
}

#[test]
fn definitions_written_before_the_language_grew_keep_their_fingerprint() {
    // The fingerprint is what the processor's state was computed under: a
    // change of its text rebuilds the state. A bare capability name, an
    // exact match and an outcome with no state or `better` serialise as
    // they did.
    assert_eq!(
        serde_json::to_value(Condition::Capability("left".into())).expect("serialises"),
        serde_json::json!("left")
    );
    assert_eq!(
        serde_json::to_value(Predicate::Eq(FieldValue::Text("SETTLED".into())))
            .expect("serialises"),
        serde_json::json!("SETTLED")
    );
    let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
    let m = parse_mission(Path::new("m.toml"), text, &caps()).expect("valid");
    let outcome = serde_json::to_value(&m.outcomes[0]).expect("serialises");
    let keys: Vec<&String> = outcome.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys,
        [
            "condition",
            "doc",
            "from",
            "id",
            "sustained_days",
            "within_days"
        ]
    );
    let cohort = serde_json::to_value(&m.cohort).expect("serialises");
    let keys: Vec<&String> = cohort.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["active_at_anchor", "age", "anchor", "require"]);
}
