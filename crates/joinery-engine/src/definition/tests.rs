//! Loading and checking definitions.

use super::*;

const CAPS: &str =
    "[capability.left]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.EducationExited\"\n";

fn caps() -> BTreeMap<String, Capability> {
    parse_capabilities(Path::new("capabilities.toml"), CAPS).expect("valid")
}

#[test]
fn the_repository_missions_load() {
    let dir =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../missions");
    let ids: Vec<String> = load_dir(&dir)
        .expect("load")
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(ids, vec!["health_and_work", "opportunity", "safer_streets"]);
}

#[test]
fn a_mission_reads_the_departments_of_its_capabilities_events() {
    use joinery_domain::Department::*;
    let dir =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../missions");
    let departments: Vec<(String, Vec<joinery_domain::Department>)> = load_dir(&dir)
        .expect("load")
        .into_iter()
        .map(|m| (m.id.to_string(), m.departments().into_iter().collect()))
        .collect();
    // Whose lateness decides when each mission's statuses are final.
    assert_eq!(
        departments,
        vec![
            ("health_and_work".to_owned(), vec![Dwp, Hmrc, Dhsc]),
            ("opportunity".to_owned(), vec![Dfe, Hmrc]),
            ("safer_streets".to_owned(), vec![Hmrc, Moj, Mhclg]),
        ]
    );
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
