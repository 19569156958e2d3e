//! End-to-end tests of the `build-dataset` binary on the embedded default: synthetic demo data,
//! the offline captioner, real Parquet readers (pyarrow), resume, verify and bad input.
//!
//! The demo images are generated once into the shared cache folder (as a user's first run does)
//! and reused; every test writes its dataset into its own temporary folder.

mod common;
use common::{BIN, python_json, text};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// Demo generation is idempotent but not meant to run twice at once in one cache folder.
static DEMO_LOCK: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> Output {
    let _guard = DEMO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary starts")
}

fn card(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("dataset.json")).expect("dataset.json written");
    serde_json::from_str(&text).expect("dataset.json is JSON")
}

/// Reads every shard with pyarrow and returns what it saw, as JSON.
fn read_with_pyarrow(dir: &Path) -> Value {
    let script = r#"
import json, sys, glob, pyarrow.parquet as pq
out = {"rows": 0, "files": 0, "image_type": None, "hf": None, "ids": [], "grades": [], "captions": 0}
for path in sorted(glob.glob(sys.argv[1] + "/shards/*.parquet")):
    table = pq.read_table(path)
    out["files"] += 1
    out["rows"] += table.num_rows
    out["image_type"] = str(table.schema.field("image").type)
    meta = table.schema.metadata or {}
    out["hf"] = json.loads(meta[b"huggingface"].decode()) if b"huggingface" in meta else None
    out["ids"] += table.column("id").to_pylist()
    out["grades"] += [l["dr_grade"] for l in table.column("labels").to_pylist()]
    out["captions"] += sum(1 for c in table.column("caption").to_pylist() if c and len(c.split()) >= 40)
print(json.dumps(out))
"#;
    python_json(script, dir)
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("shards"))
        .expect("shards folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

#[test]
fn demo_build_end_to_end_then_resume_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let out_str = out.to_str().unwrap();

    let first = run(&["build", "--out", out_str]);
    assert!(first.status.success(), "{}", text(&first));
    for path in [
        "dataset.json",
        "qa/report.html",
        "qa/report.json",
        "qa/report.md",
    ] {
        assert!(out.join(path).is_file(), "{path} missing: {}", text(&first));
    }
    assert!(out.join("rejects").is_dir());
    let card1 = card(&out);
    let accepted = card1["counts"]["accepted"].as_u64().unwrap();
    assert!(accepted >= 200, "only {accepted} accepted: {card1}");

    // A real reader: pyarrow opens every shard, sees the HF image struct and the footer metadata.
    let seen = read_with_pyarrow(&out);
    assert_eq!(seen["rows"].as_u64().unwrap(), accepted);
    assert_eq!(
        seen["image_type"].as_str().unwrap(),
        "struct<bytes: binary, path: string>"
    );
    assert_eq!(
        seen["hf"]["info"]["features"]["image"]["_type"].as_str(),
        Some("Image")
    );
    let mut grades: Vec<i64> = seen["grades"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    grades.sort();
    grades.dedup();
    assert_eq!(grades, vec![0, 1, 2, 3, 4], "every DR grade present");
    assert_eq!(
        seen["captions"].as_u64().unwrap(),
        accepted,
        "every caption is a paragraph"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("qa/report.json")).unwrap())
            .unwrap();
    assert!(
        report["glaucoma"]["suspect"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(report["amd"]["yes"].as_u64().unwrap_or(0) > 0, "{report}");

    // Resume: the second run does no new work and leaves the shards as they were.
    let before: Vec<(PathBuf, Vec<u8>)> = shard_files(&out)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let second = run(&["build", "--out", out_str]);
    assert!(second.status.success(), "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("0 processed now"), "{}", text(&second));
    let after: Vec<(PathBuf, Vec<u8>)> = shard_files(&out)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(
        before, after,
        "a resumed run must not touch committed shards"
    );
    assert_eq!(card(&out)["counts"], card1["counts"]);

    let verify = run(&["verify", out_str]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn verify_detects_a_corrupted_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("small");
    let out_str = out.to_str().unwrap();
    let build = run(&["build", "--out", out_str, "--limit", "12", "--no-qa"]);
    assert!(build.status.success(), "{}", text(&build));
    let verify = run(&["verify", out_str]);
    assert!(verify.status.success(), "{}", text(&verify));

    let shard = shard_files(&out).into_iter().next().expect("a shard");
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let verify = run(&["verify", out_str]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    let name = shard.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(&name),
        "the problem names the shard: {}",
        text(&verify)
    );
}

#[test]
fn bad_images_are_rejected_with_reasons_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("photos");
    std::fs::create_dir_all(&images).unwrap();
    // Two good photographs from the demo, and three bad files.
    let demo = tmp.path().join("demo-src");
    let made = run(&[
        "demo-data",
        "--dir",
        demo.to_str().unwrap(),
        "--eyepacs",
        "2",
        "--rfmid",
        "0",
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let mut copied = 0;
    for entry in std::fs::read_dir(demo.join("eyepacs/train")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, images.join(path.file_name().unwrap())).unwrap();
        copied += 1;
    }
    assert_eq!(copied, 2);
    std::fs::write(images.join("empty.jpg"), b"").unwrap();
    std::fs::write(images.join("garbage.png"), b"this is not a png at all").unwrap();
    let good = std::fs::read(images.join("1_left.jpeg")).unwrap_or_else(|_| {
        std::fs::read(
            std::fs::read_dir(&images)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap()
    });
    std::fs::write(images.join("truncated.jpg"), &good[..good.len() / 3]).unwrap();

    let out = tmp.path().join("out");
    let build = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    assert!(build.status.success(), "{}", text(&build));
    let card = card(&out);
    assert_eq!(card["counts"]["accepted"].as_u64(), Some(2), "{card}");
    assert_eq!(card["counts"]["rejected"].as_u64(), Some(3), "{card}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("qa/report.json")).unwrap())
            .unwrap();
    let reasons = report["reject_reasons"].as_object().unwrap();
    assert!(reasons.contains_key("image.empty"), "{reasons:?}");
    assert!(
        reasons.keys().any(|k| k.starts_with("image.")),
        "{reasons:?}"
    );
}

#[test]
fn missing_manifest_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = tmp.path().join("nope.toml");
    let build = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--manifest",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(build.status.code(), Some(1), "{}", text(&build));
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(stderr.contains("nope.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_subcommand_explains_itself_with_an_example() {
    for sub in ["build", "verify", "qa", "demo-data", "bench"] {
        let help = run(&[sub, "--help"]);
        assert!(help.status.success(), "{}", text(&help));
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert!(
            stdout.contains("Example"),
            "{sub} --help has no example:\n{stdout}"
        );
    }
    let build_help = String::from_utf8_lossy(&run(&["build", "--help"]).stdout).into_owned();
    for option in [
        "--out",
        "--manifest",
        "--images",
        "--endpoint",
        "--model",
        "--config",
        "--limit",
    ] {
        assert!(build_help.contains(option), "build --help lacks {option}");
    }
}
