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

/// Loads a shipped manifest and points it at `root`, returning what it reads (problems included).
fn read_at(manifest: &str, root: &Path) -> ManifestRead {
    let path = workspace()
        .join("data-manifests")
        .join(format!("{manifest}.toml"));
    let mut manifest = Manifest::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    manifest.set_root(root.to_path_buf());
    manifest.read().unwrap_or_else(|e| panic!("{e}"))
}

/// Writes an XLSX workbook whose first sheet holds `rows` (numbers where a cell parses as one,
/// as Excel stores them), creating folders on the way.
fn write_xlsx(path: &Path, sheet: &str, rows: &[Vec<&str>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let worksheet = workbook.add_worksheet();
    worksheet.set_name(sheet).unwrap();
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32, c as u16);
            if cell.is_empty() {
                continue;
            }
            match cell.parse::<f64>() {
                Ok(number) => worksheet.write_number(r, c, number).unwrap(),
                Err(_) => worksheet.write_string(r, c, *cell).unwrap(),
            };
        }
    }
    workbook.save(path).unwrap();
}

fn touch(root: &Path, relative: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

#[test]
fn odir5k_one_record_per_eye_with_full_width_comma_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let header = vec![
        "ID",
        "Patient Age",
        "Patient Sex",
        "Left-Fundus",
        "Right-Fundus",
        "Left-Diagnostic Keywords",
        "Right-Diagnostic Keywords",
        "N",
        "D",
        "G",
        "C",
        "A",
        "H",
        "M",
        "O",
    ];
    write_xlsx(
        &dir.path().join("training annotation (English).xlsx"),
        "Sheet1",
        &[
            header,
            vec![
                "0",
                "69",
                "Female",
                "0_left.jpg",
                "0_right.jpg",
                "cataract",
                "normal fundus",
                "0",
                "0",
                "0",
                "1",
                "0",
                "0",
                "0",
                "0",
            ],
            vec![
                "1",
                "57",
                "Male",
                "1_left.jpg",
                "1_right.jpg",
                "normal fundus",
                "moderate non proliferative retinopathy\u{FF0C}laser spot",
                "0",
                "1",
                "0",
                "0",
                "0",
                "0",
                "0",
                "1",
            ],
        ],
    );
    for image in ["0_left.jpg", "0_right.jpg", "1_left.jpg", "1_right.jpg"] {
        touch(dir.path(), &format!("ODIR-5K_Training_Dataset/{image}"));
    }
    let read = read_at("odir5k", dir.path());
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(
        paths(&read.records),
        [
            "ODIR-5K_Training_Dataset/0_left.jpg",
            "ODIR-5K_Training_Dataset/0_right.jpg",
            "ODIR-5K_Training_Dataset/1_left.jpg",
            "ODIR-5K_Training_Dataset/1_right.jpg"
        ]
    );
    use Laterality::{Left, Right};
    let eyes: Vec<Laterality> = read.records.iter().map(|r| r.laterality).collect();
    assert_eq!(eyes, [Left, Right, Left, Right]);
    assert_eq!(read.records[0].labels.findings, ["cataract"]);
    assert_eq!(read.records[1].labels.findings, ["normal fundus"]);
    assert_eq!(
        read.records[3].labels.findings,
        ["moderate non proliferative retinopathy", "laser spot"]
    );
    assert_eq!(read.records[0].labels.disease_codes, ["C"]);
    assert_eq!(read.records[3].labels.disease_codes, ["D", "O"]);
    assert_eq!(read.records[0].labels.age, Some(69.0));
    assert_eq!(read.records[2].labels.sex, Some(retina_records::Sex::Male));
    // The per-eye columns are used, so they stay out of raw; the patient ID does not.
    assert_eq!(
        read.records[0].labels.raw.get("ID").map(String::as_str),
        Some("0")
    );
    assert!(
        !read.records[0]
            .labels
            .raw
            .contains_key("Right-Diagnostic Keywords")
    );
    assert_eq!(
        read.records[1].id,
        ItemId::from_source("odir5k", "ODIR-5K_Training_Dataset/0_right.jpg")
    );
}

#[test]
fn papila_header_on_row_two_both_eyes() {
    let dir = tempfile::tempdir().unwrap();
    let header = vec![
        "ID",
        "Age",
        "Gender",
        "Diagnosis",
        "dioptre_1",
        "dioptre_2",
        "astigmatism_1",
        "astigmatism_2",
        "Phakic/Pseudophakic",
        "Pneumatic",
        "Perkins",
        "Pachymetry",
        "Axial_Length",
        "VF_MD",
    ];
    for (eye, title) in [("od", "OD"), ("os", "OS")] {
        write_xlsx(
            &dir.path()
                .join(format!("ClinicalData/patient_data_{eye}.xlsx")),
            "Sheet1",
            &[
                vec![
                    "",
                    "",
                    "",
                    "",
                    "Refractive error",
                    "",
                    "",
                    "",
                    "",
                    "IOP",
                    title,
                ],
                header.clone(),
                vec![
                    "#002", "39", "0", "0", "-1.75", "-1", "0.75", "90", "0", "15", "16", "", "",
                    "",
                ],
                vec![
                    "#004", "52.5", "1", "2", "0.5", "", "", "", "1", "", "", "", "", "",
                ],
                vec![
                    "#005", "75", "1", "1", "", "", "", "", "0", "22", "", "", "", "",
                ],
            ],
        );
        for id in ["002", "004", "005"] {
            touch(dir.path(), &format!("FundusImages/RET{id}{title}.jpg"));
        }
    }
    let od = read_at("papila-od", dir.path());
    let os = read_at("papila-os", dir.path());
    assert!(
        od.problems.is_empty() && os.problems.is_empty(),
        "{od:?} {os:?}"
    );
    assert_eq!(
        paths(&od.records),
        [
            "FundusImages/RET002OD.jpg",
            "FundusImages/RET004OD.jpg",
            "FundusImages/RET005OD.jpg"
        ]
    );
    assert!(od.records.iter().all(|r| r.laterality == Laterality::Right));
    assert!(os.records.iter().all(|r| r.laterality == Laterality::Left));
    let glaucoma: Vec<Option<Glaucoma>> = od.records.iter().map(|r| r.labels.glaucoma).collect();
    assert_eq!(
        glaucoma,
        [
            Some(Glaucoma::No),
            Some(Glaucoma::Suspect),
            Some(Glaucoma::Yes)
        ]
    );
    assert_eq!(od.records[1].labels.age, Some(52.5));
    assert_eq!(od.records[0].labels.sex, Some(retina_records::Sex::Male));
    assert_eq!(od.records[1].labels.sex, Some(retina_records::Sex::Female));
    assert_eq!(
        od.records[0]
            .labels
            .raw
            .get("Pneumatic")
            .map(String::as_str),
        Some("15")
    );
    assert_eq!(
        od.records[0]
            .labels
            .raw
            .get("dioptre_1")
            .map(String::as_str),
        Some("-1.75")
    );
    assert_ne!(od.records[0].id, os.records[0].id);
}

#[test]
fn rfmid() {
    let (_, read) = read("rfmid", "rfmid");
    assert_eq!(read.records.len(), 3);
    assert_eq!(read.records[0].labels.disease_codes, ["DR", "MH"]);
    assert_eq!(read.records[1].labels.glaucoma, Some(Glaucoma::Suspect));
    assert_eq!(read.records[1].labels.amd, Some(true));
    assert_eq!(
        read.records[0].id,
        ItemId::from_source("rfmid", "Training/1.png")
    );
}

#[test]
fn refuge_class_from_the_file_name() {
    let (_, read) = read("refuge", "refuge");
    assert_eq!(
        paths(&read.records),
        [
            "Training400/Glaucoma/g0001.jpg",
            "Training400/Non-Glaucoma/n0001.jpg",
            "Training400/Non-Glaucoma/n0002.jpg"
        ]
    );
    let glaucoma: Vec<Option<Glaucoma>> = read.records.iter().map(|r| r.labels.glaucoma).collect();
    assert_eq!(
        glaucoma,
        [Some(Glaucoma::Yes), Some(Glaucoma::No), Some(Glaucoma::No)]
    );
    assert_eq!(
        read.records[0].labels.raw.get("id").map(String::as_str),
        Some("0001")
    );
}

#[test]
fn origa_laterality_column_and_cdr_kept() {
    let (_, read) = read("origa", "origa");
    assert_eq!(
        paths(&read.records),
        ["Images/001.jpg", "Images/002.jpg", "Images/003.jpg"]
    );
    use Laterality::{Left, Right};
    let eyes: Vec<Laterality> = read.records.iter().map(|r| r.laterality).collect();
    assert_eq!(eyes, [Right, Left, Left]);
    assert_eq!(read.records[2].labels.glaucoma, Some(Glaucoma::Yes));
    assert_eq!(read.records[0].labels.glaucoma, Some(Glaucoma::No));
    assert_eq!(
        read.records[2].labels.raw.get("ExpCDR").map(String::as_str),
        Some("0.9629")
    );
}

#[test]
fn jsiec1000_folder_names_are_labels() {
    let (_, read) = read("jsiec1000", "jsiec1000");
    assert_eq!(read.records.len(), 4, "the .DS_Store is skipped");
    let codes: Vec<Vec<String>> = read
        .records
        .iter()
        .map(|r| r.labels.disease_codes.clone())
        .collect();
    assert_eq!(
        codes,
        [
            vec![],
            vec!["DR1".to_string()],
            vec!["Possible glaucoma".to_string()],
            vec!["Blur fundus with suspected PDR".to_string()],
        ]
    );
    assert_eq!(read.records[0].labels.glaucoma, Some(Glaucoma::No));
    assert_eq!(read.records[2].labels.glaucoma, Some(Glaucoma::Suspect));
    assert_eq!(read.records[1].labels.glaucoma, None);
    assert_eq!(read.records[1].relative_path, "0.3.DR1/1ffa92b5.JPG");
}

#[test]
fn fives_disease_from_the_suffix() {
    let (_, read) = read("fives", "fives");
    assert_eq!(read.records.len(), 4);
    let codes: Vec<Vec<String>> = read
        .records
        .iter()
        .map(|r| r.labels.disease_codes.clone())
        .collect();
    assert_eq!(
        codes,
        [
            vec!["AMD".to_string()],
            vec!["DR".into()],
            vec!["glaucoma".into()],
            vec![]
        ]
    );
    assert_eq!(read.records[0].labels.amd, Some(true));
    assert_eq!(read.records[2].labels.glaucoma, Some(Glaucoma::Yes));
    assert_eq!(read.records[3].labels.glaucoma, Some(Glaucoma::No));
    assert_eq!(read.records[3].labels.amd, Some(false));
    assert_eq!(read.records[1].labels.amd, None);
    assert!(read.records[3].labels.is_normal());
}

#[test]
fn deepdrid_grade_from_the_eye_column() {
    let (_, read) = read("deepdrid", "deepdrid");
    let base = "regular_fundus_images/regular-fundus-training/Images";
    assert_eq!(
        paths(&read.records),
        [
            format!("{base}/1/1_l1.jpg"),
            format!("{base}/1/1_r2.jpg"),
            format!("{base}/2/2_l1.jpg")
        ]
    );
    use Laterality::{Left, Right};
    let eyes: Vec<Laterality> = read.records.iter().map(|r| r.laterality).collect();
    assert_eq!(eyes, [Left, Right, Left]);
    let grades: Vec<Option<u8>> = read.records.iter().map(|r| r.labels.dr_grade).collect();
    assert_eq!(grades, [Some(0), Some(1), None], "5 is ungradable");
    assert_eq!(read.records[0].labels.quality, Some(QualityGrade::Good));
    assert_eq!(read.records[2].labels.quality, Some(QualityGrade::Reject));
    assert_eq!(
        read.records[1]
            .labels
            .raw
            .get("Clarity")
            .map(String::as_str),
        Some("8")
    );
    assert!(!read.records[0].labels.raw.contains_key("image_path"));
}

#[test]
fn brset_flags_eye_and_renamed_columns() {
    let (_, read) = read("brset", "brset");
    assert_eq!(read.records.len(), 3);
    use Laterality::{Left, Right};
    let eyes: Vec<Laterality> = read.records.iter().map(|r| r.laterality).collect();
    assert_eq!(eyes, [Right, Left, Left]);
    let first = &read.records[0].labels;
    assert_eq!(first.glaucoma, Some(Glaucoma::Suspect));
    assert_eq!(first.disease_codes, ["increased_cup_disc"]);
    assert_eq!(first.age, Some(48.0));
    assert_eq!(first.sex, Some(retina_records::Sex::Male));
    assert_eq!(first.quality, Some(QualityGrade::Good));
    let second = &read.records[1].labels;
    assert_eq!(second.dr_grade, Some(2));
    assert_eq!(second.dme, Some(1));
    assert_eq!(second.disease_codes, ["diabetic_retinopathy", "hemorrhage"]);
    let third = &read.records[2].labels;
    assert_eq!(third.amd, Some(true));
    assert_eq!(third.disease_codes, ["amd", "drusens"]);
    assert_eq!(third.quality, Some(QualityGrade::Reject));
    assert_eq!(third.age, None);
    assert_eq!(third.raw.get("Illuminaton").map(String::as_str), Some("2"));
}

#[test]
fn brset_later_release_headers_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/brset");
    let text = std::fs::read_to_string(fixture.join("labels.csv"))
        .unwrap()
        .replacen("drusens", "drusen", 1)
        .replacen("insuline", "insulin", 1);
    std::fs::write(dir.path().join("labels.csv"), text).unwrap();
    for n in 1..=3 {
        touch(dir.path(), &format!("fundus_photos/img0000{n}.jpg"));
    }
    let read = read_at("brset", dir.path());
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(read.records[2].labels.disease_codes, ["amd", "drusens"]);
}

#[test]
fn every_major_dataset_has_a_manifest() {
    let datasets = [
        "eyepacs",
        "eyeq",
        "aptos2019",
        "messidor2",
        "idrid",
        "ddr",
        "odir5k",
        "rfmid",
        "refuge",
        "origa",
        "g1020",
        "papila",
        "airogs",
        "jsiec1000",
        "fives",
        "deepdrid",
        "brset",
    ];
    let dir = workspace().join("data-manifests");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            names.insert(Manifest::from_path(&path).unwrap().name().to_string());
        }
    }
    for dataset in datasets {
        assert!(
            names.contains(dataset),
            "no manifest for {dataset}: {names:?}"
        );
    }
}
