//! End to end: build a small demo with the embedded offline captioner asking for every caption
//! style, then re-validate every accepted row of the shards with a fresh validator (facts
//! re-measured from the original images, labels re-read from the manifests), and check that the
//! acceptance report agrees with the reject shards.

mod common;
use common::{BIN, text};

use retina_records::{CaptionAnswer, LesionExtent, LesionFinding, LesionLocation, LesionType};
use retina_shards::{ShardKind, read_accepted, read_card, read_rejects};
use retina_validate::{CaptionSchema, Rules, Validator};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

/// Copies a demo manifest next to its generated dataset (`root = "."` is the manifest's folder).
fn place_manifest(source: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, source).expect("manifest written");
    path
}

fn lesion(text: &str) -> LesionFinding {
    let parts: Vec<&str> = text.split(':').collect();
    assert_eq!(parts.len(), 3, "lesion {text}");
    LesionFinding {
        kind: LesionType::parse(parts[0]).expect("lesion type"),
        location: LesionLocation::parse(parts[1]).expect("location"),
        extent: LesionExtent::parse(parts[2]).expect("extent"),
    }
}

#[test]
fn every_accepted_caption_passes_a_fresh_validator_and_the_report_matches_the_rejects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = tmp.path().join("demo");
    let out = tmp.path().join("out");
    let generated = Command::new(BIN)
        .args(["demo-data", "--dir", demo.to_str().unwrap()])
        .args(["--eyepacs", "24", "--rfmid", "16"])
        .output()
        .expect("binary runs");
    assert!(generated.status.success(), "{}", text(&generated));
    let eyepacs = place_manifest(
        include_str!("../data-manifests/demo-eyepacs.toml"),
        &demo.join("eyepacs"),
        "demo-eyepacs.toml",
    );
    let rfmid = place_manifest(
        include_str!("../data-manifests/demo-rfmid.toml"),
        &demo.join("rfmid"),
        "demo-rfmid.toml",
    );
    let config = tmp.path().join("build.toml");
    std::fs::write(&config, "[prompt]\nstyles = [\"detailed\", \"short\"]\n").expect("config");
    let built = Command::new(BIN)
        .args(["build", "--no-qa", "--out", out.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .args(["--manifest", eyepacs.to_str().unwrap()])
        .args(["--manifest", rfmid.to_str().unwrap()])
        .output()
        .expect("binary runs");
    let log = text(&built);
    assert!(built.status.success(), "{log}");
    assert!(
        log.contains("acceptance: "),
        "the build prints the report: {log}"
    );

    // Independent inputs: labels from the manifests, facts re-measured from the originals.
    let mut records = HashMap::new();
    for path in [&eyepacs, &rfmid] {
        let manifest = retina_manifest::Manifest::from_path(path).expect("manifest");
        for record in manifest.read().expect("labels read").records {
            records.insert(record.id.as_str().to_string(), record);
        }
    }
    let rules = Rules::embedded();
    let styles: Vec<_> = ["detailed", "short"]
        .iter()
        .map(|name| rules.style(name).expect("style defined").clone())
        .collect();
    let refs: Vec<_> = styles.iter().collect();
    let validator =
        Validator::new(&CaptionSchema::embedded().with_variants(&refs), rules).expect("validator");

    let card = read_card(&out).expect("card");
    let mut accepted = 0u64;
    for shard in card.shards.iter().filter(|s| s.kind == ShardKind::Accepted) {
        for row in read_accepted(&out.join(&shard.path), false).expect("shard reads") {
            accepted += 1;
            let record = records.get(&row.id).expect("row id is a manifest item");
            let bytes = std::fs::read(&record.image_path).expect("original image");
            let facts = retina_fundus::prepare(&bytes, &retina_fundus::PrepareConfig::default())
                .expect("original prepares")
                .facts;
            let section = |name: &str| row.sections.get(name).cloned().unwrap_or_default();
            let mut variants: BTreeMap<String, String> = row
                .caption_styles
                .iter()
                .cloned()
                .zip(row.captions.iter().cloned())
                .collect();
            assert_eq!(
                variants.remove("detailed").as_deref(),
                Some(row.caption.as_str())
            );
            assert!(
                variants.contains_key("short"),
                "every row has its short caption"
            );
            let answer = CaptionAnswer {
                optic_disc: section("optic_disc"),
                rnfl: section("rnfl"),
                vessels: section("vessels"),
                macula: section("macula"),
                background: section("background"),
                lesions: row.lesions.iter().map(|l| lesion(l)).collect(),
                quality: section("quality"),
                impression: section("impression"),
                caption: row.caption.clone(),
                caption_variants: variants,
            };
            let raw = serde_json::to_string(&answer).expect("serialises");
            let verdict = validator.validate(&raw, record, &facts);
            assert!(
                verdict.is_accepted(),
                "{} breaks a rule: {:?}",
                row.id,
                verdict.reasons()
            );
        }
    }
    assert!(accepted > 0, "the demo accepts captions");

    // Caption banks: every accepted caption lands in the class of each of its labels.
    let banks_path = tmp.path().join("banks.jsonl");
    let banks = Command::new(BIN)
        .args(["caption-banks", out.to_str().unwrap(), "--out"])
        .arg(&banks_path)
        .output()
        .expect("binary runs");
    assert!(banks.status.success(), "{}", text(&banks));
    let lines = std::fs::read_to_string(&banks_path).expect("banks written");
    let mut in_dr_classes = 0u64;
    for line in lines.lines() {
        let bank: serde_json::Value = serde_json::from_str(line).expect("one JSON bank per line");
        let class = bank["class"].as_str().expect("class");
        let captions = bank["captions"].as_array().expect("captions");
        assert_eq!(
            bank["count"].as_u64(),
            Some(captions.len() as u64),
            "{class}"
        );
        for caption in captions {
            let record = &records[caption["id"].as_str().expect("id")];
            if let Some(grade) = class.strip_prefix("dr_grade=") {
                assert_eq!(
                    record.labels.dr_grade.map(|g| g.to_string()).as_deref(),
                    Some(grade)
                );
            }
            assert!(
                caption["captions"]["detailed"].is_string()
                    && caption["captions"]["short"].is_string()
            );
        }
        if class.starts_with("dr_grade=") {
            in_dr_classes += captions.len() as u64;
        }
    }
    assert!(in_dr_classes > 0 && in_dr_classes <= accepted);

    // The acceptance report counts what the reject shards hold.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("qa").join("acceptance.json")).expect("report written"),
    )
    .expect("report is JSON");
    let mut rejected = 0u64;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for shard in card.shards.iter().filter(|s| s.kind == ShardKind::Rejected) {
        for row in read_rejects(&out.join(&shard.path)).expect("rejects read") {
            if row.state != "rejected" {
                continue;
            }
            rejected += 1;
            let mut codes: Vec<String> = row.reasons.iter().map(|r| r.code.clone()).collect();
            codes.sort();
            codes.dedup();
            for code in codes {
                *reasons.entry(code).or_default() += 1;
            }
        }
    }
    assert_eq!(report["accepted"], serde_json::json!(accepted));
    assert_eq!(report["rejected"], serde_json::json!(rejected));
    assert_eq!(report["reasons"], serde_json::json!(reasons));
    let rate = report["acceptance_rate"].as_f64().expect("rate");
    let expected = accepted as f64 / (accepted + rejected) as f64;
    assert!((rate - expected).abs() < 1e-9, "{rate} vs {expected}");
}
