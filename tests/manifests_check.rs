//! `build-dataset check`: a deliberately broken dataset is reported problem by problem, each with
//! its file and line, and the exit code says so; a clean one passes.

use std::path::Path;
use std::process::Command;

fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

const MANIFEST: &str = r#"
[dataset]
name = "broken"
root = "data"

[labels]
carrier = "csv"
file = "labels.csv"

[columns]
image = "image"
dr_grade = "level"

[images]
path = "train/{image}.jpeg"

[laterality]
from = "file_name"
"#;

fn check(manifest: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_build-dataset"))
        .args(["check", "--manifest"])
        .arg(manifest)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn broken_fixture_names_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write(
        &root,
        "labels.csv",
        "image,level\n10_left,0\n10_right,seven\n11_left,1\n10_left,2\n../escape,1\n12_right,9\n13_left,4\n",
    );
    for image in ["10_left", "10_right", "12_right", "13_left"] {
        write(&root, &format!("train/{image}.jpeg"), "");
    }
    let manifest = dir.path().join("broken.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let (ok, out) = check(&manifest);
    assert!(!ok, "problems must fail the check:\n{out}");
    let labels = root.join("labels.csv").display().to_string();
    for (line, kind, words) in [
        (3, "unknown value", "`seven` is not a whole number"),
        (4, "missing image", "image file not found"),
        (
            5,
            "duplicate id",
            "duplicate of `train/10_left.jpeg` on row 2",
        ),
        (6, "outside the root", "leaves the dataset root"),
        (7, "unknown value", "`9` is outside 0-4"),
    ] {
        let wanted = format!("{labels}:{line} ");
        let hit = out
            .lines()
            .find(|l| l.trim_start().starts_with(&wanted))
            .unwrap_or_else(|| panic!("no problem reported on line {line}:\n{out}"));
        assert!(hit.contains(words), "line {line}: {hit}");
        assert!(out.contains(&format!("{kind} (")), "{kind}:\n{out}");
    }
    assert!(out.contains("2 records, 5 problems"), "{out}");
    assert!(out.contains("dr_grade: 0=1, 4=1"), "{out}");
    assert!(out.contains("laterality: left=2"), "{out}");
}

#[test]
fn clean_fixture_passes_and_fatal_errors_fail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write(&root, "labels.csv", "image,level\n10_left,0\n");
    write(&root, "train/10_left.jpeg", "");
    let manifest = dir.path().join("ok.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let (ok, out) = check(&manifest);
    assert!(ok, "{out}");
    assert!(out.contains("1 records, 0 problems"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        MANIFEST.replace("dr_grade = \"level\"", "dr_grade = \"grade\""),
    )
    .unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok, "{out}");
    assert!(out.contains("no header for `columns.dr_grade`"), "{out}");
}

#[test]
fn manifests_check_spelling_with_root_matches_the_alias() {
    let dir = tempfile::tempdir().unwrap();
    // The data lives elsewhere than the manifest's `root` says; --root points at it.
    let elsewhere = dir.path().join("download");
    write(
        &elsewhere,
        "labels.csv",
        "image,level\n10_left,0\n10_right,seven\n",
    );
    write(&elsewhere, "train/10_left.jpeg", "");
    write(&elsewhere, "train/10_right.jpeg", "");
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_build-dataset"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let manifest_arg = manifest.to_str().unwrap();
    let root_arg = elsewhere.to_str().unwrap();
    let (ok, new) = run(&["manifests", "check", manifest_arg, "--root", root_arg]);
    assert!(!ok, "a problem fails the check:\n{new}");
    assert!(new.contains("1 records, 1 problems"), "{new}");
    let labels = elsewhere.join("labels.csv").display().to_string();
    assert!(new.contains(&format!("{labels}:3 ")), "{new}");
    let (ok, old) = run(&["check", "--manifest", manifest_arg, "--root", root_arg]);
    assert!(!ok);
    assert_eq!(new, old, "both spellings give the same report");
}
