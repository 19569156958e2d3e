//! The dataset card (`dataset.json`) and verification of a finished dataset against it.

use crate::ShardError;
use crate::reader::read_keys;
use crate::writer::{CommittedShard, ShardKind, io_err, sync_dir};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// File name of the card inside the dataset directory.
pub const CARD_FILE: &str = "dataset.json";

/// `dataset.json`: what was built, by which model and prompt, and every committed shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCard {
    /// Version of this layout; bumped when columns or the card change incompatibly.
    pub format_version: u32,
    /// Tool and version that wrote the dataset.
    pub created_by: String,
    /// Captioning model name.
    pub model: String,
    /// Endpoint base URL the captions came from.
    pub endpoint: String,
    /// Content hash of the prompt templates.
    pub prompt_hash: String,
    /// Content hash of the caption JSON schema.
    pub schema_hash: String,
    /// Items by final state.
    pub counts: CardCounts,
    /// Every committed shard, accepted and rejects.
    pub shards: Vec<CardShard>,
    /// The Hugging Face features of accepted shards ([`crate::hf_features`]).
    pub features: serde_json::Value,
    /// The run configuration, as the binary chooses to record it.
    pub config: serde_json::Value,
    /// What captioning cost over every run into this folder (absent in older cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CardCost>,
}

/// Requests, tokens and US dollars spent captioning a dataset, over all its runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CardCost {
    /// Answers paid for.
    pub requests: u64,
    /// Answers taken from the response cache (free).
    pub cache_hits: u64,
    /// Prompt tokens paid for.
    pub prompt_tokens: u64,
    /// Of those, tokens served from the provider's prompt cache.
    pub cached_prompt_tokens: u64,
    /// Completion tokens paid for.
    pub completion_tokens: u64,
    /// US dollars at the configured prices; `None` when the model has no price.
    pub usd: Option<f64>,
}

/// Item counts by final state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCounts {
    /// Items with a row in `shards/`.
    pub accepted: u64,
    /// Items rejected for good.
    pub rejected: u64,
    /// Items that failed (retried on the next run).
    pub failed: u64,
}

/// One committed shard as listed in the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardShard {
    /// Relative to the dataset directory, `/`-separated.
    pub path: String,
    /// Accepted or rejects.
    pub kind: ShardKind,
    /// Rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// BLAKE3 of the file, hex.
    pub blake3: String,
}

impl From<&CommittedShard> for CardShard {
    fn from(shard: &CommittedShard) -> Self {
        CardShard {
            path: shard.file_name.clone(),
            kind: shard.kind,
            rows: shard.rows,
            bytes: shard.bytes,
            blake3: shard.blake3.clone(),
        }
    }
}

/// Writes `out_dir/dataset.json` atomically: temporary file, fsync, rename, directory fsync.
pub fn write_card(out_dir: &Path, card: &DatasetCard) -> Result<(), ShardError> {
    let path = out_dir.join(CARD_FILE);
    let tmp = out_dir.join(format!("{CARD_FILE}.tmp"));
    let mut text = serde_json::to_vec_pretty(card).map_err(|source| ShardError::Json {
        path: path.clone(),
        source,
    })?;
    text.push(b'\n');
    let mut file = File::create(&tmp).map_err(|source| io_err(&tmp, source))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_err(&tmp, source))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|source| io_err(&path, source))?;
    sync_dir(out_dir)
}

/// Reads `out_dir/dataset.json`.
pub fn read_card(out_dir: &Path) -> Result<DatasetCard, ShardError> {
    let path = out_dir.join(CARD_FILE);
    let text = fs::read(&path).map_err(|source| io_err(&path, source))?;
    serde_json::from_slice(&text).map_err(|source| ShardError::Json { path, source })
}

/// Result of [`verify_dataset`]: an empty `problems` list means the dataset is sound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Shards that were listed, present and opened as Parquet.
    pub shards_checked: usize,
    /// Rows in those shards.
    pub rows: u64,
    /// One line per problem, naming the file and the reason.
    pub problems: Vec<String>,
}

/// Duplicate ids are listed one per line up to this many, then summarised.
const MAX_DUPLICATE_LINES: usize = 20;

/// Every shard listed in the card exists, matches its blake3 and row count and opens as Parquet;
/// no stray shard files not in the card; no duplicate id across all shards (accepted + rejects);
/// image column non-null. Problems name the file and the reason.
///
/// A `failed` reject row does not count as a duplicate: failed items are retried by design, so
/// the same id may later appear again (accepted, rejected or failed once more).
/// Returns an error only when the card itself cannot be read.
pub fn verify_dataset(out_dir: &Path) -> Result<VerifyReport, ShardError> {
    let card = read_card(out_dir)?;
    let mut report = VerifyReport::default();
    let mut listed = BTreeSet::new();
    // id -> first shard holding it as a final row.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut duplicates = 0usize;

    for shard in &card.shards {
        let name = &shard.path;
        if !listed.insert(name.clone()) {
            report
                .problems
                .push(format!("{name}: listed twice in the card"));
            continue;
        }
        let expected_dir = format!("{}/", shard.kind.dir_name());
        let safe = name.starts_with(&expected_dir)
            && !name.split('/').any(|part| part == ".." || part.is_empty());
        if !safe {
            report.problems.push(format!(
                "{name}: a {:?} shard must be a file under {expected_dir}",
                shard.kind
            ));
            continue;
        }
        let path = out_dir.join(name);
        let (bytes, hash) = match hash_file(&path) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.problems.push(format!("{name}: missing"));
                continue;
            }
            Err(e) => {
                report.problems.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        if bytes != shard.bytes {
            report.problems.push(format!(
                "{name}: size {bytes} bytes, card says {}",
                shard.bytes
            ));
        }
        if hash != shard.blake3 {
            report.problems.push(format!(
                "{name}: blake3 checksum mismatch (file {hash}, card {})",
                shard.blake3
            ));
        }
        let keys = match read_keys(&path, shard.kind == ShardKind::Accepted) {
            Ok(keys) => keys,
            Err(e) => {
                report
                    .problems
                    .push(format!("{name}: does not open as a Parquet shard: {e}"));
                continue;
            }
        };
        let rows = keys.ids.len() as u64;
        if rows != shard.rows {
            report
                .problems
                .push(format!("{name}: {rows} rows, card says {}", shard.rows));
        }
        if keys.null_images > 0 {
            report.problems.push(format!(
                "{name}: {} rows with a null image",
                keys.null_images
            ));
        }
        for (id, is_final) in keys.ids {
            if !is_final {
                continue;
            }
            match seen.get(&id) {
                Some(first) => {
                    duplicates += 1;
                    if duplicates <= MAX_DUPLICATE_LINES {
                        report
                            .problems
                            .push(format!("{name}: duplicate id {id} (also in {first})"));
                    }
                }
                None => {
                    seen.insert(id, name.clone());
                }
            }
        }
        report.shards_checked += 1;
        report.rows += rows;
    }
    if duplicates > MAX_DUPLICATE_LINES {
        report.problems.push(format!(
            "{} more duplicate ids not listed",
            duplicates - MAX_DUPLICATE_LINES
        ));
    }

    for kind in [ShardKind::Accepted, ShardKind::Rejected] {
        let dir = out_dir.join(kind.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: cannot list: {e}", kind.dir_name()));
                continue;
            }
        };
        let mut strays = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let rel = format!(
                        "{}/{}",
                        kind.dir_name(),
                        entry.file_name().to_string_lossy()
                    );
                    if !listed.contains(&rel) {
                        strays.push(rel);
                    }
                }
                Err(e) => report
                    .problems
                    .push(format!("{}: cannot list: {e}", kind.dir_name())),
            }
        }
        strays.sort();
        for rel in strays {
            report
                .problems
                .push(format!("{rel}: stray file not listed in the card"));
        }
    }
    Ok(report)
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, hasher.finalize().to_hex().to_string()))
}

/// Why cards cannot be merged into one ([`merge_cards`]).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no cards to merge")]
    Empty,
    /// Two parts were built differently; their rows do not belong in one dataset.
    #[error(
        "{folder}: built with {field} {found:?}, but {first} with {expected:?}; parts of one dataset must share model, prompt and schema"
    )]
    Mismatch {
        /// The part that differs.
        folder: String,
        /// The first part.
        first: String,
        /// `model`, `prompt_hash`, `schema_hash` or `format_version`.
        field: &'static str,
        /// The first part's value.
        expected: String,
        /// This part's value.
        found: String,
    },
}

/// Merges the cards of datasets that live in sub-folders of one folder (the workers of a crawl
/// split over machines) into one card for that folder: shard paths get the part's folder as a
/// prefix (`workers/3/shards/part-00000.parquet`), counts and costs are summed, and everything
/// else comes from the first part. Parts must agree on format version, model, prompt and schema.
pub fn merge_cards(parts: &[(String, DatasetCard)]) -> Result<DatasetCard, MergeError> {
    let ((first_folder, first), rest) = parts.split_first().ok_or(MergeError::Empty)?;
    let mut merged = first.clone();
    merged.shards.clear();
    merged.counts = CardCounts::default();
    merged.cost = None;
    for (index, (folder, card)) in parts.iter().enumerate() {
        if index > 0 {
            let checks = [
                (
                    "format_version",
                    first.format_version.to_string(),
                    card.format_version.to_string(),
                ),
                ("model", first.model.clone(), card.model.clone()),
                (
                    "prompt_hash",
                    first.prompt_hash.clone(),
                    card.prompt_hash.clone(),
                ),
                (
                    "schema_hash",
                    first.schema_hash.clone(),
                    card.schema_hash.clone(),
                ),
            ];
            for (field, expected, found) in checks {
                if expected != found {
                    return Err(MergeError::Mismatch {
                        folder: folder.clone(),
                        first: first_folder.clone(),
                        field,
                        expected,
                        found,
                    });
                }
            }
        }
        let prefix = folder.trim_end_matches('/');
        merged
            .shards
            .extend(card.shards.iter().map(|shard| CardShard {
                path: format!("{prefix}/{}", shard.path),
                ..shard.clone()
            }));
        merged.counts.accepted += card.counts.accepted;
        merged.counts.rejected += card.counts.rejected;
        merged.counts.failed += card.counts.failed;
        if let Some(cost) = card.cost {
            let total = merged.cost.get_or_insert(CardCost {
                usd: Some(0.0),
                ..CardCost::default()
            });
            total.requests += cost.requests;
            total.cache_hits += cost.cache_hits;
            total.prompt_tokens += cost.prompt_tokens;
            total.cached_prompt_tokens += cost.cached_prompt_tokens;
            total.completion_tokens += cost.completion_tokens;
            total.usd = total.usd.zip(cost.usd).map(|(a, b)| a + b);
        }
    }
    let _ = rest;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::{DatasetWriter, ShardConfig, hf_features};
    use retina_records::ItemState;

    fn card_for(shards: &[CommittedShard]) -> DatasetCard {
        DatasetCard {
            format_version: 1,
            created_by: "build-dataset test".into(),
            model: "m".into(),
            endpoint: "http://127.0.0.1:1/v1".into(),
            prompt_hash: "p".into(),
            schema_hash: "s".into(),
            counts: CardCounts {
                accepted: 6,
                rejected: 2,
                failed: 1,
            },
            shards: shards.iter().map(CardShard::from).collect(),
            features: hf_features(),
            config: serde_json::json!({"image_size": 1024}),
            cost: None,
        }
    }

    /// A dataset of two accepted shards and one reject shard, with its card.
    fn make_dataset(dir: &Path) -> DatasetCard {
        let mut all = Vec::new();
        for run in 0..2 {
            let mut writer = DatasetWriter::open(dir, ShardConfig::default()).expect("open");
            for i in 0..3 {
                writer
                    .write_accepted(fixtures::accepted("idrid", run * 10 + i, 3000))
                    .expect("write");
            }
            if run == 0 {
                for (n, state) in [
                    (50, ItemState::Rejected),
                    (51, ItemState::Rejected),
                    // Failed in run 0, accepted on the retry in run 1: not a duplicate.
                    (10, ItemState::Failed),
                ] {
                    writer
                        .write_rejected(fixtures::rejected("idrid", n, state))
                        .expect("reject");
                }
            }
            all.extend(writer.finish().expect("finish"));
        }
        let card = card_for(&all);
        write_card(dir, &card).expect("card");
        card
    }

    fn problems(dir: &Path) -> Vec<String> {
        verify_dataset(dir).expect("verify").problems
    }

    #[test]
    fn card_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_card(dir.path()).expect_err("no card yet");
        assert!(err.to_string().contains("dataset.json"), "{err}");
        let card = make_dataset(dir.path());
        assert_eq!(read_card(dir.path()).expect("read"), card);
        assert!(!dir.path().join("dataset.json.tmp").exists());
        let text = fs::read_to_string(dir.path().join(CARD_FILE)).expect("read");
        assert!(text.contains("\"kind\": \"accepted\""), "{text}");
        fs::write(dir.path().join(CARD_FILE), b"{not json").expect("write");
        assert!(matches!(
            read_card(dir.path()),
            Err(ShardError::Json { .. })
        ));
    }

    #[test]
    fn sound_dataset_verifies_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let card = make_dataset(dir.path());
        let report = verify_dataset(dir.path()).expect("verify");
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(report.shards_checked, 3);
        assert_eq!(report.shards_checked, card.shards.len());
        assert_eq!(report.rows, 9);
    }

    #[test]
    fn flipped_byte_is_a_checksum_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let card = make_dataset(dir.path());
        let name = &card.shards[0].path;
        let path = dir.path().join(name);
        let mut bytes = fs::read(&path).expect("read");
        // Flip a bit inside the first image (stored uncompressed, so findable): the file still
        // opens as Parquet and only the checksum can tell.
        let image = fixtures::accepted("idrid", 0, 3000).image;
        let at = bytes
            .windows(64)
            .position(|w| w == &image[..64])
            .expect("image bytes stored verbatim");
        bytes[at + 1000] ^= 0x01;
        fs::write(&path, bytes).expect("write");
        let problems = problems(dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(name.as_str()), "{problems:?}");
        assert!(problems[0].contains("checksum"), "{problems:?}");
    }

    #[test]
    fn truncated_shard_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let card = make_dataset(dir.path());
        let name = &card.shards[1].path;
        let path = dir.path().join(name);
        let len = fs::metadata(&path).expect("meta").len();
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len / 2))
            .expect("truncate");
        let problems = problems(dir.path());
        assert!(
            problems.iter().all(|p| p.starts_with(name.as_str())),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("size")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("does not open")),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_shard_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let card = make_dataset(dir.path());
        let name = &card.shards[0].path;
        fs::remove_file(dir.path().join(name)).expect("remove");
        let report = verify_dataset(dir.path()).expect("verify");
        assert_eq!(report.problems, vec![format!("{name}: missing")]);
        assert_eq!(report.shards_checked, 2);
    }

    #[test]
    fn duplicate_id_across_shards_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut card = make_dataset(dir.path());
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        // Item 1 was accepted in run 0; rejecting it again is a duplicate.
        writer
            .write_rejected(fixtures::rejected("idrid", 1, ItemState::Rejected))
            .expect("write");
        let extra = writer.finish().expect("finish");
        card.shards.extend(extra.iter().map(CardShard::from));
        write_card(dir.path(), &card).expect("card");
        let problems = problems(dir.path());
        let id = fixtures::record("idrid", 1).id;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("duplicate id"), "{problems:?}");
        assert!(problems[0].contains(id.as_str()), "{problems:?}");
        assert!(problems[0].starts_with(&extra[0].file_name), "{problems:?}");
    }

    #[test]
    fn stray_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        make_dataset(dir.path());
        fs::write(dir.path().join("shards/part-00099.parquet"), b"PAR1").expect("write");
        fs::write(dir.path().join("rejects/part-00001.parquet.tmp"), b"x").expect("write");
        let problems = problems(dir.path());
        assert_eq!(
            problems,
            vec![
                "shards/part-00099.parquet: stray file not listed in the card".to_string(),
                "rejects/part-00001.parquet.tmp: stray file not listed in the card".to_string(),
            ]
        );
    }

    #[test]
    fn card_paths_outside_their_directory_are_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut card = make_dataset(dir.path());
        card.shards[0].path = "shards/../dataset.json".into();
        write_card(dir.path(), &card).expect("card");
        let problems = problems(dir.path());
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("shards/../dataset.json: a Accepted")),
            "{problems:?}"
        );
    }

    #[test]
    fn merged_card_prefixes_paths_and_sums_counts() {
        let mut a = card_for(&[]);
        a.shards = vec![CardShard {
            path: "shards/part-00000.parquet".into(),
            kind: ShardKind::Accepted,
            rows: 3,
            bytes: 10,
            blake3: "a".into(),
        }];
        a.counts = CardCounts {
            accepted: 3,
            rejected: 1,
            failed: 0,
        };
        let mut b = a.clone();
        b.counts.failed = 2;
        let merged = merge_cards(&[
            ("workers/0".into(), a.clone()),
            ("workers/1/".into(), b.clone()),
        ])
        .unwrap();
        let paths: Vec<&str> = merged.shards.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "workers/0/shards/part-00000.parquet",
                "workers/1/shards/part-00000.parquet"
            ]
        );
        assert_eq!(
            merged.counts,
            CardCounts {
                accepted: 6,
                rejected: 2,
                failed: 2
            }
        );
        b.model = "other".into();
        let error = merge_cards(&[("workers/0".into(), a), ("workers/1".into(), b)]).unwrap_err();
        assert!(
            error.to_string().contains("workers/1") && error.to_string().contains("model"),
            "{error}"
        );
        assert!(matches!(merge_cards(&[]), Err(MergeError::Empty)));
    }
}
