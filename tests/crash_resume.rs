//! Crash safety end to end: the real `build-dataset` binary, captioning through the loopback
//! endpoint (with latency, so kills land mid-run), is killed with SIGKILL at seeded random moments
//! and restarted each time; after a final run to completion the dataset must be whole:
//! `verify` passes, every input item is in exactly one of accepted, rejected or failed, no id is
//! written twice, the shard folders hold only the card's shards (no `.tmp`, no truncated file),
//! and the accepted and rejected items are exactly those of an uninterrupted build of the same
//! input.
//!
//! The seed is printed and may be set with `RETINALOGOS_CRASH_SEED` to replay a failure.

mod common;
use common::{BIN, text};

use loopback_endpoint::{Endpoint, FaultRule, Latency, Spec};
use retina_shards::{ShardKind, read_accepted, read_card, read_rejects};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Enough items for six accepted shards per full run at the sizes below.
const ITEMS: usize = 96;
const KILLS: usize = 10;
const DEFAULT_SEED: u64 = 0x5eed_c0de;

/// 768-pixel JPEGs (about 90 KB) in 1 MB shards: a shard commit every 12-15 items, so kills land
/// before, during and after shard commits. No response cache, so every restart calls the endpoint
/// again and takes long enough to be killed again. No repair re-asks, so the endpoint's
/// schema-violating answers end rejected and rejects shards are written too.
const CONFIG: &str = "[image]\nsize = 768\n\n[captioner]\ncache = false\nconcurrency = 4\n\
    initial_concurrency = 4\nadaptive_concurrency = false\ntimeout_secs = 10\n\n\
    [output]\nshard_megabytes = 1\nrow_group_megabytes = 1\n\n\
    [prompt]\nrepair_attempts = 0\n";

/// SplitMix64: a seeded sequence of kill delays without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}

/// Unlabelled photographs, so the endpoint's generic answer is consistent with every item.
fn photos(root: &Path) -> PathBuf {
    common::unlabelled_photos(root, ITEMS)
}

fn build_command(out: &Path, photos: &Path, config: &Path, endpoint: &Endpoint) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "build",
            "--no-qa",
            "--out",
            out.to_str().unwrap(),
            "--images",
        ])
        .arg(photos)
        .args([
            "--endpoint",
            &endpoint.base_url(),
            "--model",
            "loopback-vlm",
        ])
        .arg("--config")
        .arg(config);
    command
}

/// Ids by final state from the shards themselves, failing on any id stored twice.
fn stored_ids(out: &Path) -> BTreeMap<String, &'static str> {
    let card = read_card(out).unwrap();
    let mut ids = BTreeMap::new();
    for shard in &card.shards {
        let path = out.join(&shard.path);
        let found: Vec<(String, &'static str)> = match shard.kind {
            ShardKind::Accepted => read_accepted(&path, false)
                .unwrap()
                .into_iter()
                .map(|row| (row.id, "accepted"))
                .collect(),
            ShardKind::Rejected => read_rejects(&path)
                .unwrap()
                .into_iter()
                .map(|row| (row.id, "rejected"))
                .collect(),
        };
        for (id, state) in found {
            let before = ids.insert(id.clone(), state);
            assert!(
                before.is_none(),
                "{id} stored twice ({}: {state})",
                shard.path
            );
        }
    }
    ids
}

/// Items the journal has committed (accepted or rejected) so far.
fn done_items(out: &Path) -> usize {
    let path = out.join("journal").join("journal.sqlite");
    if !path.exists() {
        return 0;
    }
    let counts = retina_journal::Journal::open_read_only(&path)
        .and_then(|journal| journal.counts())
        .unwrap();
    (counts.accepted + counts.rejected) as usize
}

/// Finished shard files and temporary ones (a shard being written when the process died).
fn shard_files(out: &Path) -> (usize, usize) {
    let (mut done, mut temporary) = (0, 0);
    for kind in [ShardKind::Accepted, ShardKind::Rejected] {
        let Ok(entries) = std::fs::read_dir(out.join(kind.dir_name())) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                temporary += 1;
            } else {
                done += 1;
            }
        }
    }
    (done, temporary)
}

/// The shard folders hold exactly the card's shards, complete: no temporary or stray file.
fn assert_only_committed_files(out: &Path) {
    let card = read_card(out).unwrap();
    let listed: BTreeSet<String> = card.shards.iter().map(|s| s.path.clone()).collect();
    let mut on_disk = BTreeSet::new();
    for kind in [ShardKind::Accepted, ShardKind::Rejected] {
        let Ok(entries) = std::fs::read_dir(out.join(kind.dir_name())) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            on_disk.insert(format!("{}/{name}", kind.dir_name()));
        }
    }
    assert_eq!(
        on_disk, listed,
        "shard folders must hold only the card's shards"
    );
    assert!(
        !out.join("dataset.json.tmp").exists(),
        "a temporary card was left"
    );
}

/// Shards a crash left between rename and journal commit are moved to `orphaned/`; they must be
/// complete files whose items all made it into the dataset (redone), so nothing was lost.
fn orphaned_items_are_in_the_dataset(out: &Path, ids: &BTreeMap<String, &'static str>) -> usize {
    let Ok(entries) = std::fs::read_dir(out.join("orphaned")) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let orphan_ids: Vec<String> = match read_accepted(&path, false) {
            Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
            Err(_) => read_rejects(&path)
                .unwrap_or_else(|e| panic!("{} is neither kind of shard: {e}", path.display()))
                .into_iter()
                .map(|r| r.id)
                .collect(),
        };
        for id in orphan_ids {
            assert!(ids.contains_key(&id), "{id} of {} was lost", path.display());
        }
        count += 1;
    }
    count
}

#[test]
fn sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing() {
    let seed = std::env::var("RETINALOGOS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let tmp = tempfile::tempdir().unwrap();
    let photos = photos(tmp.path());
    let config = tmp.path().join("build.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Every 7th request gets an answer that breaks the schema, so rejects shards are written (and
    // killed) too; a fixed 40 ms per request spreads a full run over a few seconds.
    let spec = Spec {
        slots: 4,
        queue: 16,
        latency: Latency::Fixed(Duration::from_millis(40)),
        faults: vec!["schema-violation:every=7".parse::<FaultRule>().unwrap()],
        ..Spec::default()
    };
    let endpoint = runtime
        .block_on(Endpoint::start(spec, "127.0.0.1:0"))
        .unwrap();

    // The reference: the same input built without interruption.
    let reference = tmp.path().join("reference");
    let started = std::time::Instant::now();
    let clean = build_command(&reference, &photos, &config, &endpoint)
        .output()
        .unwrap();
    // Kill delays scale with this machine's speed and with the work left (no fixed timing): from
    // start-up to most of the time the remaining items take, so kills keep landing mid-run.
    let full_run = started.elapsed().as_millis() as u64;
    assert!(clean.status.success(), "{}", text(&clean));
    let reference_ids = stored_ids(&reference);
    assert_eq!(reference_ids.len(), ITEMS);

    let out = tmp.path().join("killed");
    let mut rng = SplitMix(seed);
    let mut landed_mid_run = 0;
    let mut left_tmp = 0;
    let mut log = Vec::new();
    for kill in 0..KILLS {
        let left = (ITEMS - done_items(&out)) as u64;
        let delay = rng.millis(
            full_run / 50,
            full_run / 25 + full_run * left * 8 / 10 / ITEMS as u64,
        );
        let stderr = std::fs::File::create(tmp.path().join(format!("run-{kill}.log"))).unwrap();
        let mut child = build_command(&out, &photos, &config, &endpoint)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let running = child.try_wait().unwrap().is_none();
        // std's kill is SIGKILL on Unix: no handler, no cleanup, no flush.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if running {
            landed_mid_run += 1;
        } else {
            assert!(
                status.success(),
                "seed {seed}, run {kill} failed: {status:?}"
            );
        }
        let (shards, temporaries) = shard_files(&out);
        left_tmp += usize::from(temporaries > 0);
        log.push(format!(
            "run {kill}: kill after {delay:?}, running {running}: {shards} shard file(s), \
             {temporaries} .tmp left"
        ));
    }
    // At least the kills that land during start-up are mid-run, whatever the machine's speed.
    assert!(landed_mid_run > 0, "seed {seed}: no kill landed: {log:#?}");

    let last = build_command(&out, &photos, &config, &endpoint)
        .output()
        .unwrap();
    assert!(last.status.success(), "seed {seed}: {}", text(&last));
    let verify = Command::new(BIN)
        .args(["verify", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(verify.status.success(), "seed {seed}: {}", text(&verify));

    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    let n = |k: &str| card["counts"][k].as_u64().unwrap() as usize;
    assert_eq!(
        n("accepted") + n("rejected") + n("failed"),
        ITEMS,
        "seed {seed}: {card}"
    );
    assert_eq!(n("failed"), 0, "a healthy endpoint fails nothing");

    let ids = stored_ids(&out);
    assert_eq!(
        ids.keys().collect::<Vec<_>>(),
        reference_ids.keys().collect::<Vec<_>>(),
        "seed {seed}: every item exactly once, the same items as an uninterrupted build"
    );
    assert!(
        ids.values().any(|s| *s == "rejected") && ids.values().any(|s| *s == "accepted"),
        "both kinds of shard were exercised: {ids:?}"
    );
    assert_only_committed_files(&out);
    let orphans = orphaned_items_are_in_the_dataset(&out, &ids);
    eprintln!(
        "seed {seed}: {landed_mid_run}/{KILLS} kills mid-run, {left_tmp} left a .tmp shard, \
         {orphans} orphaned shard(s) recovered\n{}",
        log.join("\n")
    );
}
