//! A crawl split over 4 worker processes (run at once, each with its own journal and shards under
//! `workers/<i>/`), then `finalize`: the same ids and the same captions as one process over the
//! same input (the offline captioner is deterministic). A missing worker makes `finalize` fail,
//! naming it; re-running that worker alone completes the crawl.

mod common;

use common::{BIN, text};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Items of the demo used (the first ones, before partitioning, so every run sees the same set).
const LIMIT: &str = "48";

fn build(out: &Path, cache: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["build", "--no-qa", "--limit", LIMIT, "--out"])
        .arg(out)
        .args(extra)
        .env("RETINALOGOS_CACHE", cache)
        // A Slurm or Kubernetes variable in the test's own environment must not split the runs.
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("RETINALOGOS_WORKERS");
    command
}

/// id -> caption over every accepted shard listed in a card, with the card's paths.
fn captions(dir: &Path) -> BTreeMap<String, String> {
    let card = retina_shards::read_card(dir).expect("card");
    let mut found = BTreeMap::new();
    for shard in card
        .shards
        .iter()
        .filter(|s| s.kind == retina_shards::ShardKind::Accepted)
    {
        for row in retina_shards::read_accepted(&dir.join(&shard.path), false).expect("shard") {
            assert!(
                found.insert(row.id.clone(), row.caption).is_none(),
                "{} twice",
                row.id
            );
        }
    }
    found
}

fn finalize(dir: &Path) -> (bool, String) {
    let output = Command::new(BIN)
        .arg("finalize")
        .arg(dir)
        .output()
        .expect("finalize runs");
    (output.status.success(), text(&output))
}

#[test]
fn four_workers_match_one_process_and_finalize_names_missing_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Generate the demo once, so four processes do not race to create it.
    let output = Command::new(BIN)
        .args(["demo-data", "--dir"])
        .arg(cache.join("demo-v1"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    let single = tmp.path().join("single");
    let output = build(&single, &cache, &[]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let expected = captions(&single);
    assert!(
        expected.len() >= 10,
        "too few accepted items: {}",
        expected.len()
    );

    let crawl = tmp.path().join("crawl");
    // Workers 0, 1 and 3 at once; worker 2 is "lost" until later.
    let mut children = Vec::new();
    for index in ["0", "1", "3"] {
        let child = build(&crawl, &cache, &["--workers", "4", "--worker-index", index])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push((index, child));
    }
    for (index, child) in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "worker {index}: {}", text(&output));
        assert!(
            crawl
                .join("workers")
                .join(index)
                .join("dataset.json")
                .exists()
        );
    }

    let (ok, report) = finalize(&crawl);
    assert!(!ok, "a missing worker must fail finalize:\n{report}");
    assert!(
        report.contains("worker 2: missing") && report.contains("--worker-index 2"),
        "{report}"
    );
    assert!(
        !crawl.join("dataset.json").exists(),
        "no merged card for an incomplete crawl"
    );

    // The lost worker, through the Kubernetes Indexed Job variables instead of flags.
    let output = build(&crawl, &cache, &[])
        .env("JOB_COMPLETION_INDEX", "2")
        .env("RETINALOGOS_WORKERS", "4")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let (ok, report) = finalize(&crawl);
    assert!(ok, "{report}");

    let merged = captions(&crawl);
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the workers together hold exactly the single run's accepted ids"
    );
    assert_eq!(merged, expected, "and the same captions");
    let card = retina_shards::read_card(&crawl).unwrap();
    let single_card = retina_shards::read_card(&single).unwrap();
    assert_eq!(card.counts, single_card.counts);
    assert!(
        card.shards.iter().all(|s| s.path.starts_with("workers/")),
        "shard paths are relative to the merged card"
    );

    // Each worker kept a share of its own: no id in two workers.
    let mut owners = BTreeMap::new();
    for index in 0..4 {
        for id in captions(&crawl.join("workers").join(index.to_string())).into_keys() {
            assert!(owners.insert(id, index).is_none(), "an id in two workers");
        }
    }

    // A re-run of one worker resumes: nothing is done twice.
    let output = build(&crawl, &cache, &["--workers", "4", "--worker-index", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0 processed now"), "{stderr}");

    // The same folder with another worker count is refused.
    let output = build(&crawl, &cache, &["--workers", "8", "--worker-index", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("worker 1 of 4"), "{}", text(&output));
}
