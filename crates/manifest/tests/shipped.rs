//! Every shipped manifest in `data-manifests/` reads its fixture (the real header, 2-5 rows,
//! zero-byte placeholder images) into the expected records.

use retina_manifest::{Manifest, ManifestRead};
use retina_records::{Glaucoma, ItemId, Laterality, QualityGrade, Record};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Loads `data-manifests/<manifest>.toml`, points it at `tests/fixtures/<fixture>` and reads it.
fn read(manifest: &str, fixture: &str) -> (Manifest, ManifestRead) {
    let path = workspace()
        .join("data-manifests")
        .join(format!("{manifest}.toml"));
    let mut manifest = Manifest::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    manifest.set_root(root);
    let read = manifest.read().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        read.problems.is_empty(),
        "{manifest:?}: {:?}",
        read.problems
    );
    (manifest, read)
}

fn paths(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.relative_path.as_str()).collect()
}

#[test]
fn every_shipped_manifest_loads() {
    let dir = workspace().join("data-manifests");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let manifest = Manifest::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(manifest.root(), dir.join("."), "{}", path.display());
            count += 1;
        }
    }
    assert!(count >= 10, "found {count} manifests");
}

#[test]
fn eyepacs() {
    let (manifest, read) = read("eyepacs", "eyepacs");
    assert_eq!(manifest.name(), "eyepacs");
    assert_eq!(
        paths(&read.records),
        [
            "train/10_left.jpeg",
            "train/10_right.jpeg",
            "train/13_left.jpeg",
            "train/15_right.jpeg"
        ]
    );
    let lateralities: Vec<Laterality> = read.records.iter().map(|r| r.laterality).collect();
    use Laterality::{Left, Right};
    assert_eq!(lateralities, [Left, Right, Left, Right]);
    let grades: Vec<Option<u8>> = read.records.iter().map(|r| r.labels.dr_grade).collect();
    assert_eq!(grades, [Some(0), Some(0), Some(2), Some(4)]);
    assert_eq!(
        read.records[0].id,
        ItemId::from_source("eyepacs", "train/10_left.jpeg")
    );
    assert_eq!(read.records[0].split.as_deref(), Some("train"));
    assert!(read.records.iter().all(|r| r.labels.raw.is_empty()));
}

#[test]
fn demo_eyepacs_reads_the_eyepacs_layout() {
    let (manifest, read) = read("demo-eyepacs", "eyepacs");
    assert_eq!(manifest.name(), "demo-eyepacs");
    assert_eq!(read.records.len(), 4);
    assert_eq!(read.records[3].laterality, Laterality::Right);
    assert_eq!(read.records[3].labels.dr_grade, Some(4));
    assert_eq!(
        read.records[3].id,
        ItemId::from_source("demo-eyepacs", "train/15_right.jpeg")
    );
}

#[test]
fn demo_rfmid_flags_become_codes() {
    let (manifest, read) = read("demo-rfmid", "rfmid");
    assert_eq!(manifest.name(), "demo-rfmid");
    assert_eq!(
        paths(&read.records),
        ["Training/1.png", "Training/2.png", "Training/3.png"]
    );
    let first = &read.records[0].labels;
    assert_eq!(first.disease_codes, ["DR", "MH"]);
    assert_eq!(
        first.dr_grade, None,
        "the RFMiD DR flag is not an ICDR grade"
    );
    assert_eq!(first.amd, Some(false));
    assert_eq!(first.glaucoma, None);
    assert_eq!(first.raw.get("Disease_Risk").map(String::as_str), Some("1"));
    assert_eq!(first.raw.len(), 1);
    let second = &read.records[1].labels;
    assert_eq!(second.disease_codes, ["ARMD", "ODC"]);
    assert_eq!(second.amd, Some(true));
    assert_eq!(second.glaucoma, Some(Glaucoma::Suspect));
    let third = &read.records[2];
    assert!(third.labels.disease_codes.is_empty());
    assert!(third.labels.is_normal());
    assert!(
        read.records
            .iter()
            .all(|r| r.laterality == Laterality::Unknown)
    );
}

#[test]
fn aptos2019() {
    let (_, read) = read("aptos2019", "aptos2019");
    assert_eq!(
        paths(&read.records),
        [
            "train_images/000c1434d8d7.png",
            "train_images/001639a390f0.png",
            "train_images/0024cdab0c1e.png"
        ]
    );
    let grades: Vec<Option<u8>> = read.records.iter().map(|r| r.labels.dr_grade).collect();
    assert_eq!(grades, [Some(2), Some(4), Some(1)]);
    assert!(
        read.records
            .iter()
            .all(|r| r.laterality == Laterality::Unknown)
    );
}

#[test]
fn ddr_grade_five_is_ungradable() {
    let (_, read) = read("ddr", "ddr");
    assert_eq!(read.records.len(), 3);
    assert_eq!(
        read.records[0].relative_path,
        "DR_grading/train/007-0004-000.jpg"
    );
    assert_eq!(read.records[0].labels.dr_grade, Some(0));
    assert_eq!(read.records[0].labels.quality, None);
    assert_eq!(read.records[1].labels.dr_grade, None);
    assert_eq!(read.records[1].labels.quality, Some(QualityGrade::Reject));
    assert_eq!(read.records[2].labels.dr_grade, Some(3));
}

#[test]
fn idrid_trailing_space_header() {
    let (manifest, read) = read("idrid", "idrid");
    assert_eq!(manifest.info().field_of_view_degrees, Some(50.0));
    assert_eq!(read.records.len(), 4);
    assert_eq!(
        read.records[0].relative_path,
        "B. Disease Grading/1. Original Images/a. Training Set/IDRiD_001.jpg"
    );
    let pairs: Vec<(Option<u8>, Option<u8>)> = read
        .records
        .iter()
        .map(|r| (r.labels.dr_grade, r.labels.dme))
        .collect();
    assert_eq!(
        pairs,
        [
            (Some(3), Some(2)),
            (Some(3), Some(2)),
            (Some(2), Some(2)),
            (Some(0), Some(0))
        ]
    );
}

#[test]
fn eyeq_unnamed_first_column_and_quality() {
    let (_, read) = read("eyeq", "eyeq");
    assert_eq!(
        paths(&read.records),
        [
            "train/10_left.jpeg",
            "train/10_right.jpeg",
            "train/13_left.jpeg"
        ]
    );
    let quality: Vec<Option<QualityGrade>> =
        read.records.iter().map(|r| r.labels.quality).collect();
    use QualityGrade::{Good, Reject, Usable};
    assert_eq!(quality, [Some(Good), Some(Usable), Some(Reject)]);
    assert_eq!(read.records[2].labels.dr_grade, Some(2));
    assert_eq!(read.records[1].laterality, Laterality::Right);
    assert!(
        read.records.iter().all(|r| r.labels.raw.is_empty()),
        "the pandas index is ignored"
    );
    assert_ne!(
        read.records[0].id,
        ItemId::from_source("eyepacs", "train/10_left.jpeg"),
        "same photo, different dataset: dedup is by content, not id"
    );
}

#[test]
fn g1020_glaucoma() {
    let (_, read) = read("g1020", "g1020");
    assert_eq!(
        paths(&read.records),
        [
            "Images/image_0.jpg",
            "Images/image_1.jpg",
            "Images/image_2.jpg"
        ]
    );
    let labels: Vec<Option<Glaucoma>> = read.records.iter().map(|r| r.labels.glaucoma).collect();
    assert_eq!(
        labels,
        [Some(Glaucoma::No), Some(Glaucoma::Yes), Some(Glaucoma::No)]
    );
}

#[test]
fn airogs_rg_nrg_across_parts() {
    let (_, read) = read("airogs", "airogs");
    assert_eq!(
        paths(&read.records),
        [
            "0/TRAIN000000.jpg",
            "0/TRAIN000001.jpg",
            "1/TRAIN000002.jpg"
        ]
    );
    let labels: Vec<Option<Glaucoma>> = read.records.iter().map(|r| r.labels.glaucoma).collect();
    assert_eq!(
        labels,
        [Some(Glaucoma::No), Some(Glaucoma::Yes), Some(Glaucoma::No)]
    );
}

#[test]
fn messidor2_gradable_and_empty_grades() {
    let (_, read) = read("messidor2", "messidor2");
    assert_eq!(read.records.len(), 4);
    let first = &read.records[0].labels;
    assert_eq!(
        (first.dr_grade, first.dme, first.quality),
        (Some(0), Some(0), None)
    );
    let ungradable = &read.records[2].labels;
    assert_eq!(ungradable.dr_grade, None);
    assert_eq!(ungradable.quality, Some(QualityGrade::Reject));
    let last = &read.records[3];
    assert_eq!(last.relative_path, "IMAGES/IM002385.JPG");
    assert_eq!((last.labels.dr_grade, last.labels.dme), (Some(2), Some(1)));
}
