//! Round trips: export a fixture dataset, read the output back, compare with the reader's view.

use super::*;
use retina_reader::fixture::{HEIGHT, WIDTH};
use retina_reader::{Filter, Split};
use std::collections::BTreeMap;
use std::io::Read;

fn fixture(n: usize) -> (tempfile::TempDir, Dataset, Vec<TrainingRecord>) {
    let dir = tempfile::tempdir().unwrap();
    retina_reader::fixture::write_dataset(&dir.path().join("ds"), n, 20_000).unwrap();
    let dataset = Dataset::open(&dir.path().join("ds")).unwrap();
    let records = dataset
        .stream(&ReadOptions::default())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (dir, dataset, records)
}

fn no_temporary_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name} left behind");
    }
}

#[test]
fn retinalogos_jsonl_and_meta_round_trip() {
    let (dir, dataset, records) = fixture(12);
    let out = dir.path().join("rl");
    let summary = export(&dataset, &ExportOptions::new(Format::RetinaLogos, &out)).unwrap();
    assert_eq!(summary.records, 12);
    let text = fs::read_to_string(out.join(RETINALOGOS_JSONL)).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len());
    for (line, record) in lines.iter().zip(&records) {
        assert_eq!(line["id"], json!(record.id));
        // Width is the horizontal size: the fixture images are 48 wide, 32 high.
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(48), Some(32))
        );
        assert_eq!((WIDTH, HEIGHT), (48, 32));
        let image = out.join(line["image"].as_str().unwrap());
        assert_eq!(
            fs::read(&image).unwrap(),
            record.image,
            "{}",
            image.display()
        );
        if record.captions.len() > 1 {
            let list: Vec<&str> = line["caption"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(list, record.captions);
            assert_eq!(list[0], record.caption, "detailed first");
        } else {
            assert_eq!(line["caption"], json!(record.caption));
        }
    }
    assert!(
        lines.iter().any(|l| l["caption"].is_array()),
        "fixture has variants"
    );
    assert!(lines.iter().any(|l| l["caption"].is_string()));

    let meta = fs::read_to_string(out.join(RETINALOGOS_META)).unwrap();
    assert!(meta.contains("\nMETA:\n  - path: \""), "{meta}");
    let path_line = meta.lines().find(|l| l.contains("- path:")).unwrap();
    let path: String = serde_json::from_str(path_line.split_once(": ").unwrap().1).unwrap();
    assert!(
        Path::new(&path).is_absolute() && Path::new(&path).is_file(),
        "{path}"
    );
    let root_line = meta.lines().find(|l| l.contains("image_root:")).unwrap();
    let root: String = serde_json::from_str(root_line.split_once(": ").unwrap().1).unwrap();
    assert!(
        Path::new(&root)
            .join(lines[0]["image"].as_str().unwrap())
            .is_file()
    );
    assert!(
        meta.contains("    ratio: 1\n") && meta.contains("    type: default\n"),
        "{meta}"
    );
    no_temporary_files(&out);
}

#[test]
fn llava_json_round_trip() {
    let (dir, dataset, records) = fixture(7);
    let out = dir.path().join("llava");
    let mut options = ExportOptions::new(Format::Llava, &out);
    options.llava_instruction = "What does this fundus show?".into();
    export(&dataset, &options).unwrap();
    let json: Value = serde_json::from_slice(&fs::read(out.join(LLAVA_JSON)).unwrap()).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), records.len());
    for (entry, record) in entries.iter().zip(&records) {
        assert_eq!(entry["id"], json!(record.id));
        let turns = entry["conversations"].as_array().unwrap();
        assert_eq!(turns[0]["from"], "human");
        assert_eq!(turns[0]["value"], "<image>\nWhat does this fundus show?");
        assert_eq!(turns[1], json!({"from": "gpt", "value": record.caption}));
        let image = out.join(entry["image"].as_str().unwrap());
        assert_eq!(fs::read(image).unwrap(), record.image);
    }
    no_temporary_files(&out);
}

#[test]
fn llava_of_an_empty_selection_is_an_empty_array() {
    let (dir, dataset, _) = fixture(3);
    let out = dir.path().join("none");
    let mut options = ExportOptions::new(Format::Llava, &out);
    options.read.filter = Filter::default().datasets(["absent"]);
    assert_eq!(export(&dataset, &options).unwrap().records, 0);
    let json: Value = serde_json::from_slice(&fs::read(out.join(LLAVA_JSON)).unwrap()).unwrap();
    assert_eq!(json, json!([]));
}

#[test]
fn webdataset_tar_shards_by_count_round_trip() {
    let (dir, dataset, records) = fixture(10);
    let out = dir.path().join("wds");
    let mut options = ExportOptions::new(Format::WebDataset, &out);
    options.samples_per_shard = 4;
    let summary = export(&dataset, &options).unwrap();
    assert_eq!(
        summary.files,
        ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    );
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut per_shard = Vec::new();
    for name in &summary.files {
        let mut archive = tar::Archive::new(File::open(out.join(name)).unwrap());
        let mut files = 0;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let (key, ext) = path.split_once('.').unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            samples
                .entry(key.into())
                .or_default()
                .insert(ext.into(), bytes);
            files += 1;
        }
        per_shard.push(files / 3);
    }
    assert_eq!(per_shard, [4, 4, 2]);
    assert_eq!(samples.len(), records.len());
    for record in &records {
        let sample = &samples[&record.id];
        assert_eq!(sample.keys().collect::<Vec<_>>(), ["jpg", "json", "txt"]);
        assert_eq!(sample["jpg"], record.image);
        assert_eq!(sample["txt"], record.caption.as_bytes());
        let meta: Value = serde_json::from_slice(&sample["json"]).unwrap();
        assert_eq!(
            (meta["width"].as_u64(), meta["height"].as_u64()),
            (Some(48), Some(32))
        );
        assert_eq!(meta["labels"]["dr_grade"], json!(record.labels.dr_grade));
        assert_eq!(meta["captions"]["detailed"], json!(record.caption));
        assert_eq!(
            meta["captions"].get("short").is_some(),
            record.captions.len() > 1
        );
    }
    no_temporary_files(&out);
}

#[test]
fn exports_follow_the_split_and_reject_bad_options() {
    let (dir, dataset, _) = fixture(30);
    let out = dir.path().join("val");
    let mut options = ExportOptions::new(Format::RetinaLogos, &out);
    options.read.split = Split::Validation;
    options.read.validation_fraction = 0.3;
    let expected = dataset.stream(&options.read).count() as u64;
    assert!(expected > 0 && expected < 30);
    assert_eq!(export(&dataset, &options).unwrap().records, expected);

    options.samples_per_shard = 0;
    assert!(matches!(
        export(&dataset, &options),
        Err(ExportError::Config(_))
    ));
    let err = "csv".parse::<Format>().unwrap_err();
    assert!(
        err.to_string().contains("retinalogos, llava or webdataset"),
        "{err}"
    );
}
