//! `joinery missions check`, as an analyst runs it before proposing a
//! mission: the repository's missions are described, and a mistake is
//! named with its file and line, with a non-zero exit. No broker needed.

use std::path::PathBuf;
use std::process::Command;

fn missions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../missions")
}

fn check(dir: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_joinery"))
        .args(["missions", "check"])
        .arg(dir)
        .output()
        .expect("runs joinery");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_repository_missions_check_and_are_described() {
    let (code, stdout, stderr) = check(&missions_dir());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "outcome off_benefit_in_work_6m: all_of(in_employment, not(on_universal_credit)) holds 182 days after the anchor"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("(lower is better)"), "{stdout}");
    assert!(
        stdout.contains(
            "snapshot eet: at the watermark, aged 16 to 24, any_of(in_education, in_employment)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_misspelt_field_is_refused_with_the_file_and_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(
        missions_dir().join("capabilities.toml"),
        dir.path().join("capabilities.toml"),
    )
    .expect("copies the capabilities");
    // The analyst's typo: `benfit` for `benefit`, on line 10.
    std::fs::write(
        dir.path().join("uc_leavers.toml"),
        "id = \"uc_leavers\"\ntitle = \"t\"\ndoc = \"d\"\n\n[cohort]\ndoc = \"c\"\nanchor = \"started_universal_credit\"\n\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"in_employment\"\nwithin_days = 30\n",
    )
    .expect("writes the mission");
    let caps = std::fs::read_to_string(dir.path().join("capabilities.toml")).expect("reads");
    let caps = caps.replace(
        "start_where = { benefit = \"UNIVERSAL_CREDIT\" }",
        "start_where = { benfit = \"UNIVERSAL_CREDIT\" }",
    );
    let line = caps
        .lines()
        .position(|l| l.contains("benfit"))
        .expect("the typo is in the file")
        + 1;
    std::fs::write(dir.path().join("capabilities.toml"), caps).expect("writes");
    let (code, _, stderr) = check(dir.path());
    assert_ne!(code, Some(0), "a mistake fails the check");
    assert!(
        stderr.contains(&format!("capabilities.toml:{line}:"))
            && stderr.contains("no field `benfit`")
            && stderr.contains("benefit, claim_id, health_condition"),
        "{stderr}"
    );
}
