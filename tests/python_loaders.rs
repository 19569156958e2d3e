//! The shards open directly in the tools trainers use: Hugging Face `datasets`
//! (`load_dataset("parquet", data_files=...)`, offline) with the image column typed `Image` and
//! decoding to the recorded width and height, pyarrow, polars and DuckDB. The Python packages are
//! pinned in scripts/test-requirements.txt and installed by scripts/setup-test-env.sh into a
//! cached virtual environment (`RETINALOGOS_PYTHON`).

mod common;
use common::{BIN, python_json, text};

use serde_json::Value;
use std::process::Command;

const SCRIPT: &str = r#"
import glob, json, os, sys
dataset_dir = sys.argv[1]
# Never reach the Hub: everything is local files. Caches go beside the dataset, not in $HOME.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(dataset_dir, "..", "hf-home")
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
files = sorted(glob.glob(os.path.join(dataset_dir, "shards", "*.parquet")))
pattern = os.path.join(dataset_dir, "shards", "*.parquet")
out = {"files": len(files)}

import datasets
from datasets import load_dataset
ds = load_dataset("parquet", data_files=files, split="train")
out["hf_rows"] = len(ds)
out["hf_image_feature"] = type(ds.features["image"]).__name__
out["hf_captions_feature"] = type(ds.features["captions"]).__name__
out["hf_labels_dr_grade"] = str(ds.features["labels"]["dr_grade"].dtype)
mismatched, modes = [], set()
for row in ds:
    image = row["image"]
    modes.add(image.mode)
    image.load()
    if [image.width, image.height] != [row["width"], row["height"]]:
        mismatched.append([row["id"], image.width, image.height, row["width"], row["height"]])
out["hf_size_mismatches"] = mismatched
out["hf_modes"] = sorted(modes)
out["hf_first_caption_words"] = len(ds[0]["caption"].split())

import pyarrow.parquet as pq
table = pq.read_table(files)
out["pyarrow_rows"] = table.num_rows
out["pyarrow_ids"] = len(set(table.column("id").to_pylist()))

import polars as pl
frame = pl.scan_parquet(pattern).select(["id", "width", "height", "labels"]).collect()
out["polars_rows"] = frame.height
out["polars_dr_grades"] = sorted(g for g in frame["labels"].struct.field("dr_grade").unique().to_list() if g is not None)

import duckdb
con = duckdb.connect()
rows, ids, min_width = con.execute(
    f"SELECT count(*), count(DISTINCT id), min(width) FROM read_parquet('{pattern}')"
).fetchone()
image_bytes = con.execute(
    f"SELECT min(octet_length(image.bytes)) FROM read_parquet('{pattern}')"
).fetchone()[0]
out["duckdb"] = {"rows": rows, "ids": ids, "min_width": min_width, "min_image_bytes": image_bytes}
print(json.dumps(out))
"#;

#[test]
fn datasets_pyarrow_polars_and_duckdb_load_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    // Small shards so the loaders see several files.
    let config = tmp.path().join("build.toml");
    std::fs::write(&config, "[output]\nshard_megabytes = 1\n").unwrap();
    let built = Command::new(BIN)
        .args([
            "build",
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "24",
            "--no-qa",
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    let accepted = card["counts"]["accepted"].as_u64().unwrap();
    assert!(accepted >= 15, "{card}");

    let seen = python_json(SCRIPT, &out);
    assert!(
        seen["files"].as_u64().unwrap() >= 2,
        "several shards: {seen}"
    );
    assert_eq!(seen["hf_rows"].as_u64(), Some(accepted), "{seen}");
    assert_eq!(seen["hf_image_feature"], "Image", "{seen}");
    // `datasets` 4+ reads the footer's `Sequence` of strings as its `List` feature.
    let captions = seen["hf_captions_feature"].as_str().unwrap_or_default();
    assert!(["List", "Sequence"].contains(&captions), "{seen}");
    assert_eq!(seen["hf_labels_dr_grade"], "int8", "{seen}");
    assert_eq!(seen["hf_size_mismatches"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["hf_modes"], serde_json::json!(["RGB"]), "{seen}");
    assert!(
        seen["hf_first_caption_words"].as_u64().unwrap() >= 20,
        "{seen}"
    );
    assert_eq!(seen["pyarrow_rows"].as_u64(), Some(accepted), "{seen}");
    assert_eq!(seen["pyarrow_ids"].as_u64(), Some(accepted), "{seen}");
    assert_eq!(seen["polars_rows"].as_u64(), Some(accepted), "{seen}");
    assert!(
        !seen["polars_dr_grades"].as_array().unwrap().is_empty(),
        "{seen}"
    );
    let duck = &seen["duckdb"];
    assert_eq!(duck["rows"].as_u64(), Some(accepted), "{seen}");
    assert_eq!(duck["ids"].as_u64(), Some(accepted), "{seen}");
    assert!(duck["min_width"].as_u64().unwrap() > 0, "{seen}");
    assert!(duck["min_image_bytes"].as_u64().unwrap() > 1000, "{seen}");
}
