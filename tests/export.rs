//! `build-dataset export` end to end: a small demo build (offline captioner) exported in every
//! format by the binary, each output read back independently (Rust for the JSON formats and the
//! images, Python's `tarfile` for the webdataset shards) and compared with the shards.

mod common;
use common::{BIN, python_json, text};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Demo generation into the shared cache folder is not meant to run twice at once.
static DEMO_LOCK: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary starts")
}

/// Builds 14 demo items; returns the accepted rows by id as the shards hold them.
fn build(out: &Path) -> BTreeMap<String, retina_shards::StoredRow> {
    let guard = DEMO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let built = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "14",
        "--no-qa",
    ]);
    drop(guard);
    assert!(built.status.success(), "{}", text(&built));
    let card = retina_shards::read_card(out).unwrap();
    let mut rows = BTreeMap::new();
    for shard in card.shards.iter().filter(|s| s.path.starts_with("shards/")) {
        for row in retina_shards::read_accepted(&out.join(&shard.path), true).unwrap() {
            rows.insert(row.id.clone(), row);
        }
    }
    assert!(rows.len() >= 10, "too few accepted: {}", rows.len());
    rows
}

fn export(dir: &Path, format: &str, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "export",
        dir.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let done = run(&args);
    assert!(done.status.success(), "{}", text(&done));
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("exported"),
        "{}",
        text(&done)
    );
}

#[test]
fn every_format_round_trips_from_a_real_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("ds");
    let rows = build(&dataset);

    // RetinaLogos: JSONL lines match the shards; width is the decoded image's horizontal size.
    let rl = tmp.path().join("rl");
    export(&dataset, "retinalogos", &rl, &[]);
    let jsonl = std::fs::read_to_string(rl.join("retinalogos.jsonl")).unwrap();
    let mut seen = 0;
    for line in jsonl.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let row = &rows[line["id"].as_str().unwrap()];
        let bytes = std::fs::read(rl.join(line["image"].as_str().unwrap())).unwrap();
        assert_eq!(bytes, row.image);
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!(line["width"].as_u64(), Some(u64::from(decoded.width())));
        assert_eq!(line["height"].as_u64(), Some(u64::from(decoded.height())));
        let caption = &line["caption"];
        if row.captions.len() > 1 {
            assert_eq!(caption[0].as_str(), Some(row.caption.as_str()));
        } else {
            assert_eq!(caption.as_str(), Some(row.caption.as_str()));
        }
        seen += 1;
    }
    assert_eq!(seen, rows.len());
    let meta = std::fs::read_to_string(rl.join("meta.yaml")).unwrap();
    assert!(
        meta.contains("META:") && meta.contains("image_root:"),
        "{meta}"
    );

    // LLaVA: one conversation per accepted row.
    let llava = tmp.path().join("llava");
    export(&dataset, "llava", &llava, &[]);
    let json: Value =
        serde_json::from_slice(&std::fs::read(llava.join("llava.json")).unwrap()).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), rows.len());
    for entry in entries {
        let row = &rows[entry["id"].as_str().unwrap()];
        assert!(
            entry["conversations"][0]["value"]
                .as_str()
                .unwrap()
                .starts_with("<image>\n")
        );
        assert_eq!(
            entry["conversations"][1]["value"].as_str(),
            Some(row.caption.as_str())
        );
    }

    // webdataset: Python's tarfile reads the shards; samples group by key.
    let wds = tmp.path().join("wds");
    export(&dataset, "webdataset", &wds, &["--samples-per-shard", "4"]);
    let script = r#"
import glob, json, sys, tarfile
samples, shards = {}, []
for path in sorted(glob.glob(sys.argv[1] + "/*.tar")):
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        shards.append(len(members) // 3)
        for m in members:
            key, ext = m.name.split(".", 1)
            data = tar.extractfile(m).read()
            entry = samples.setdefault(key, {})
            if ext == "json":
                entry["json"] = json.loads(data)
            elif ext == "txt":
                entry["txt"] = data.decode()
            else:
                entry["image_ext"] = ext
                entry["image_len"] = len(data)
print(json.dumps({"shards": shards, "samples": samples}))
"#;
    let seen = python_json(script, &wds);
    let shards: Vec<u64> = seen["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(shards.iter().all(|n| *n <= 4) && shards.iter().sum::<u64>() == rows.len() as u64);
    let samples = seen["samples"].as_object().unwrap();
    assert_eq!(samples.len(), rows.len());
    for (key, sample) in samples {
        let row = &rows[key];
        assert_eq!(sample["image_ext"], "jpg");
        assert_eq!(sample["image_len"].as_u64(), Some(row.image.len() as u64));
        assert_eq!(sample["txt"].as_str(), Some(row.caption.as_str()));
        assert_eq!(sample["json"]["width"].as_u64(), Some(u64::from(row.width)));
        assert_eq!(
            sample["json"]["dataset"].as_str(),
            Some(row.dataset.as_str())
        );
    }
}

#[test]
fn export_filters_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("ds");
    let rows = build(&dataset);
    let train = tmp.path().join("train");
    let validation = tmp.path().join("validation");
    let split = ["--validation-fraction", "0.5", "--split"];
    export(
        &dataset,
        "llava",
        &train,
        &[&split[..], &["train"]].concat(),
    );
    export(
        &dataset,
        "llava",
        &validation,
        &[&split[..], &["validation"]].concat(),
    );
    let ids = |dir: &Path| -> Vec<String> {
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("llava.json")).unwrap()).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (ids(&train), ids(&validation));
    assert_eq!(a.len() + b.len(), rows.len());
    assert!(
        a.iter().all(|id| !b.contains(id)),
        "the splits are disjoint"
    );

    let none = run(&[
        "export",
        tmp.path().join("absent").to_str().unwrap(),
        "--format",
        "llava",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!none.status.success());
    assert!(text(&none).contains("dataset.json"), "{}", text(&none));
    let bad = run(&[
        "export",
        dataset.to_str().unwrap(),
        "--format",
        "csv",
        "--out",
        tmp.path().join("y").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("retinalogos"), "{}", text(&bad));
}
