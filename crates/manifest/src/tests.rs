//! Unit tests of manifest loading and reading, with fixtures generated in temporary folders.

use super::*;
use retina_records::{ItemId, Sex};
use std::fs;

/// Writes `files` (path, contents) under a fresh temporary folder.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, contents).unwrap();
    }
    dir
}

const EYEPACS: &str = r#"
[dataset]
name = "eyepacs"
split = "train"

[labels]
carrier = "csv"
file = "trainLabels.csv"

[columns]
image = "image"
dr_grade = ["level", "diagnosis"]

[images]
path = "train/{image}.jpeg"

[laterality]
from = "file_name"
"#;

fn load(text: &str, dir: &Path) -> Manifest {
    Manifest::from_toml_str(text, dir).unwrap()
}

#[test]
fn reads_rows_in_order_with_ids_and_laterality() {
    let dir = fixture(&[
        (
            "trainLabels.csv",
            "image,level\n10_left,0\n10_right,3\n13_left,1\n",
        ),
        ("train/10_left.jpeg", ""),
        ("train/10_right.jpeg", ""),
        ("train/13_left.jpeg", ""),
    ]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let ids: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "train/10_left.jpeg",
            "train/10_right.jpeg",
            "train/13_left.jpeg"
        ]
    );
    let second = &read.records[1];
    assert_eq!(
        second.id,
        ItemId::from_source("eyepacs", "train/10_right.jpeg")
    );
    assert_eq!(second.laterality, Laterality::Right);
    assert_eq!(second.labels.dr_grade, Some(3));
    assert_eq!(second.split.as_deref(), Some("train"));
    assert_eq!(second.image_path, dir.path().join("train/10_right.jpeg"));
    assert!(second.labels.raw.is_empty());
}

#[test]
fn bad_grade_is_a_row_problem_and_other_rows_read() {
    let dir = fixture(&[
        (
            "trainLabels.csv",
            "image,level\n10_left,0\n10_right,seven\n13_left,9\n13_right,2\n",
        ),
        ("train/10_left.jpeg", ""),
        ("train/10_right.jpeg", ""),
        ("train/13_left.jpeg", ""),
        ("train/13_right.jpeg", ""),
    ]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    let kept: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    assert_eq!(kept, ["train/10_left.jpeg", "train/13_right.jpeg"]);
    assert_eq!(read.problems.len(), 2);
    let first = &read.problems[0];
    assert_eq!(first.row, Some(3));
    assert_eq!(first.item.as_deref(), Some("10_right"));
    assert!(first.file.ends_with("trainLabels.csv"));
    assert!(
        first.reason.contains("dr_grade") && first.reason.contains("seven"),
        "{first}"
    );
    assert!(
        read.problems[1].reason.contains("outside 0-4"),
        "{}",
        read.problems[1]
    );
}

#[test]
fn missing_image_is_a_row_problem() {
    let dir = fixture(&[
        ("trainLabels.csv", "image,level\n10_left,0\n99_left,1\n"),
        ("train/10_left.jpeg", ""),
    ]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.problems.len(), 1);
    let problem = &read.problems[0];
    assert_eq!(problem.row, Some(3));
    assert!(problem.reason.contains("not found") && problem.reason.contains("train/99_left.jpeg"));
}

#[test]
fn missing_header_error_names_file_and_aliases() {
    let dir = fixture(&[("trainLabels.csv", "image,grade\n10_left,0\n")]);
    let error = load(EYEPACS, dir.path()).read().unwrap_err();
    let text = error.to_string();
    assert!(text.contains("trainLabels.csv"), "{text}");
    assert!(text.contains("columns.dr_grade"), "{text}");
    assert!(
        text.contains("\"level\"") && text.contains("\"diagnosis\""),
        "{text}"
    );
    assert!(
        text.contains("\"grade\""),
        "headers found are listed: {text}"
    );
    assert!(matches!(error, ManifestError::MissingHeader { .. }));
}

#[test]
fn missing_label_file_is_fatal_and_named() {
    let dir = fixture(&[]);
    let error = load(EYEPACS, dir.path()).read().unwrap_err();
    assert!(matches!(error, ManifestError::ReadLabels { .. }));
    assert!(error.to_string().contains("trainLabels.csv"), "{error}");
}

#[test]
fn unknown_key_is_an_error_naming_it_with_a_suggestion() {
    let text = EYEPACS.replace("carrier = \"csv\"", "carrier = \"csv\"\nheader_rows = 1");
    let error = Manifest::from_toml_str(&text, Path::new(".")).unwrap_err();
    match &error {
        ManifestError::Toml {
            key,
            suggestion,
            line,
            ..
        } => {
            assert_eq!(key.as_deref(), Some("labels.header_rows"));
            assert_eq!(suggestion.as_deref(), Some("header_row"));
            assert_eq!(*line, 8);
        }
        other => panic!("unexpected {other:?}"),
    }
    let shown = error.to_string();
    assert!(
        shown.contains("header_rows") && shown.contains("did you mean `header_row`"),
        "{shown}"
    );
    let unknown_field = EYEPACS.replace("dr_grade =", "dr_grad =");
    let error = Manifest::from_toml_str(&unknown_field, Path::new(".")).unwrap_err();
    assert!(
        error.to_string().contains("did you mean `dr_grade`"),
        "{error}"
    );
}

#[test]
fn unknown_key_error_from_path_names_the_file() {
    let dir = fixture(&[(
        "m.toml",
        "[dataset]\nname = \"x\"\nroot = \".\"\ncamra = \"a\"\n[labels]\ncarrier = \"none\"\n",
    )]);
    let error = Manifest::from_path(&dir.path().join("m.toml")).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("m.toml") && text.contains("camra") && text.contains("camera"),
        "{text}"
    );
}

#[test]
fn invalid_combinations_name_the_key() {
    let cases = [
        (
            EYEPACS.replace("file = \"trainLabels.csv\"", ""),
            "labels.file",
        ),
        (
            EYEPACS.replace("name = \"eyepacs\"", "name = \"eye pacs\""),
            "dataset.name",
        ),
        (
            EYEPACS.replace("train/{image}.jpeg", "train/{image.jpeg"),
            "images.path",
        ),
        (
            EYEPACS.replace("from = \"file_name\"", "from = \"column\""),
            "laterality.column",
        ),
        (
            format!("{EYEPACS}\n[values.dr_grade]\n\"5\" = \"five\"\n"),
            "values.dr_grade.\"5\"",
        ),
        (
            EYEPACS.replace("file = \"trainLabels.csv\"", "file = \"a\"\nheader_row = 0"),
            "labels.header_row",
        ),
    ];
    for (text, key) in cases {
        let error = Manifest::from_toml_str(&text, Path::new(".")).unwrap_err();
        assert!(
            error.to_string().contains(key),
            "expected {key} in: {error}"
        );
    }
}

#[test]
fn root_is_relative_to_base_dir_and_overridable() {
    let text = EYEPACS.replace("split = \"train\"", "root = \"data/eyepacs\"");
    let mut manifest = load(&text, Path::new("/srv/manifests"));
    assert_eq!(manifest.root(), Path::new("/srv/manifests/data/eyepacs"));
    assert_eq!(manifest.name(), "eyepacs");
    manifest.set_root(PathBuf::from("/elsewhere"));
    assert_eq!(manifest.root(), Path::new("/elsewhere"));
    let absolute = EYEPACS.replace("split = \"train\"", "root = \"/abs\"");
    assert_eq!(load(&absolute, Path::new("/srv")).root(), Path::new("/abs"));
}

#[test]
fn duplicate_rows_keep_the_first() {
    let dir = fixture(&[
        ("trainLabels.csv", "image,level\n10_left,0\n10_left,4\n"),
        ("train/10_left.jpeg", ""),
    ]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.records[0].labels.dr_grade, Some(0));
    assert_eq!(read.problems.len(), 1);
    assert!(
        read.problems[0].reason.contains("duplicate"),
        "{}",
        read.problems[0]
    );
    assert!(
        read.problems[0].reason.contains("row 2"),
        "{}",
        read.problems[0]
    );
}

#[test]
fn path_templates_cannot_escape_the_root() {
    let dir = fixture(&[("trainLabels.csv", "image,level\n../../etc/passwd,0\n,1\n")]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    assert!(read.records.is_empty());
    assert!(
        read.problems[0].reason.contains("leaves the dataset root"),
        "{}",
        read.problems[0]
    );
    assert!(
        read.problems[1].reason.contains("empty"),
        "{}",
        read.problems[1]
    );
}

#[test]
fn extensions_and_alternative_templates_are_tried_in_order() {
    let text = r#"
[dataset]
name = "x"
[labels]
carrier = "csv"
file = "labels.csv"
[columns]
image = "id"
[images]
path = ["part0/{id}", "part1/{id}"]
extensions = ["jpg", ".png"]
"#;
    let dir = fixture(&[
        ("labels.csv", "id\na\nb\n"),
        ("part0/a.png", ""),
        ("part1/a.jpg", ""),
        ("part1/b.png", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    let paths: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    assert_eq!(paths, ["part0/a.png", "part1/b.png"]);
}

#[test]
fn odir_like_columns_map_age_sex_findings_laterality_and_raw() {
    let text = r#"
[dataset]
name = "odir-like"
[labels]
carrier = "csv"
file = "labels.csv"
delimiter = ";"
[columns]
image = "Fundus"
age = "Patient Age"
sex = "Patient Sex"
findings = "Keywords"
glaucoma = "G"
split = "Split"
[images]
path = "{image}"
[laterality]
from = "column"
column = ["Eye", "eye side"]
values = { L = "left", R = "right" }
[values.glaucoma]
"2" = "suspect"
[values.findings]
"normal fundus" = ""
"#;
    let dir = fixture(&[
        (
            "labels.csv",
            "Fundus;Patient Age;Patient Sex;Keywords;G;Eye;Split;Camera\n\
             0_left.jpg;69;Female;moderate NPDR\u{FF0C}drusen, laser spot;2;L;;Canon\n\
             0_right.jpg;69;Female;normal fundus;0;R;test;\n",
        ),
        ("0_left.jpg", ""),
        ("0_right.jpg", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let left = &read.records[0];
    assert_eq!(left.laterality, Laterality::Left);
    assert_eq!(left.labels.age, Some(69.0));
    assert_eq!(left.labels.sex, Some(Sex::Female));
    assert_eq!(
        left.labels.findings,
        ["moderate NPDR", "drusen", "laser spot"]
    );
    assert_eq!(left.labels.glaucoma, Some(Glaucoma::Suspect));
    assert_eq!(
        left.labels.raw.get("Camera").map(String::as_str),
        Some("Canon")
    );
    assert_eq!(left.split, None);
    let right = &read.records[1];
    assert_eq!(right.laterality, Laterality::Right);
    assert!(right.labels.findings.is_empty());
    assert_eq!(right.labels.glaucoma, Some(Glaucoma::No));
    assert_eq!(right.split.as_deref(), Some("test"));
    assert!(right.labels.raw.is_empty(), "empty cells stay out of raw");
}

#[test]
fn bad_laterality_value_is_a_row_problem() {
    let text = r#"
[dataset]
name = "x"
[labels]
carrier = "csv"
file = "l.csv"
[columns]
image = "f"
[images]
path = "{f}"
[laterality]
from = "column"
column = "eye"
"#;
    let dir = fixture(&[
        ("l.csv", "f,eye\na.jpg,OS\nb.jpg,both\n"),
        ("a.jpg", ""),
        ("b.jpg", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.records[0].laterality, Laterality::Left);
    assert!(
        read.problems[0].reason.contains("laterality"),
        "{}",
        read.problems[0]
    );
}

#[test]
fn flags_add_codes_and_set_fields() {
    let text = r#"
[dataset]
name = "flags"
[labels]
carrier = "csv"
file = "l.csv"
[columns]
image = "ID"
[images]
path = "{ID}.png"
[flags]
columns = ["DR", "ARMD", "ODC"]
amd = "ARMD"
glaucoma_suspect = "ODC"
"#;
    let dir = fixture(&[
        (
            "l.csv",
            "ID,Disease_Risk,DR,ARMD,ODC\n1,1,1,1,0\n2,0,0,0,1\n3,1,x,0,0\n",
        ),
        ("1.png", ""),
        ("2.png", ""),
        ("3.png", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    assert_eq!(read.records.len(), 2);
    let one = &read.records[0].labels;
    assert_eq!(one.disease_codes, ["DR", "ARMD"]);
    assert_eq!(one.amd, Some(true));
    assert_eq!(one.glaucoma, None, "ODC 0 does not mean no glaucoma");
    assert_eq!(one.dr_grade, None);
    assert_eq!(one.raw.get("Disease_Risk").map(String::as_str), Some("1"));
    let two = &read.records[1].labels;
    assert_eq!(two.disease_codes, ["ODC"]);
    assert_eq!(two.amd, Some(false));
    assert_eq!(two.glaucoma, Some(Glaucoma::Suspect));
    assert!(
        read.problems[0].reason.contains("flag DR"),
        "{}",
        read.problems[0]
    );
}

#[test]
fn missing_flag_column_is_fatal() {
    let text = r#"
[dataset]
name = "flags"
[labels]
carrier = "csv"
file = "l.csv"
[columns]
image = "ID"
[images]
path = "{ID}.png"
[flags]
columns = ["DR", "NOPE"]
"#;
    let dir = fixture(&[("l.csv", "ID,DR\n1,1\n")]);
    let error = load(text, dir.path()).read().unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains("flags.columns") && shown.contains("NOPE") && shown.contains("l.csv"),
        "{shown}"
    );
}

#[test]
fn placeholder_that_is_no_header_is_fatal() {
    let text = EYEPACS.replace("train/{image}.jpeg", "{folder}/{image}.jpeg");
    let dir = fixture(&[("trainLabels.csv", "image,level\n10_left,0\n")]);
    let error = load(&text, dir.path()).read().unwrap_err();
    assert!(
        error.to_string().contains("images.path") && error.to_string().contains("folder"),
        "{error}"
    );
}

#[test]
fn folder_carrier_labels_from_folder_names() {
    let text = r#"
[dataset]
name = "jsiec-like"
[labels]
carrier = "folder"
[columns]
disease_codes = "folder"
[values.disease_codes]
"0.0.Normal" = ""
"1.0.DR2" = "DR2"
"#;
    let dir = fixture(&[
        ("0.0.Normal/a.jpg", ""),
        ("1.0.DR2/b.JPG", ""),
        ("1.0.DR2/readme.txt", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    assert!(read.problems.is_empty());
    assert_eq!(read.records.len(), 2);
    assert!(read.records[0].labels.disease_codes.is_empty());
    assert_eq!(read.records[1].labels.disease_codes, ["DR2"]);
    assert_eq!(read.records[1].relative_path, "1.0.DR2/b.JPG");
    assert!(
        read.records[1].labels.raw.is_empty(),
        "a mapped folder is not raw"
    );
}

#[test]
fn file_name_carrier_captures_labels() {
    let text = r#"
[dataset]
name = "fives-like"
[labels]
carrier = "file_name"
name_pattern = "{id}_{disease}"
[columns]
disease_codes = "disease"
[images]
dir = "train/Original"
extensions = ["png"]
[values.disease_codes]
N = ""
A = "AMD"
[laterality]
from = "file_name"
"#;
    let dir = fixture(&[
        ("train/Original/1_A.png", ""),
        ("train/Original/2_N.png", ""),
        ("train/Original/odd.png", ""),
        ("other/3_A.png", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    let paths: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    assert_eq!(paths, ["train/Original/1_A.png", "train/Original/2_N.png"]);
    assert_eq!(read.records[0].labels.disease_codes, ["AMD"]);
    assert_eq!(
        read.records[0].labels.raw.get("id").map(String::as_str),
        Some("1")
    );
    assert_eq!(read.problems.len(), 1);
    assert!(read.problems[0].reason.contains("name_pattern"));
    assert_eq!(
        read.problems[0].item.as_deref(),
        Some("train/Original/odd.png")
    );
}

#[test]
fn txt_carrier_ungradable_grade_sets_quality() {
    let text = r#"
[dataset]
name = "ddr"
[labels]
carrier = "txt"
file = "DR_grading/train.txt"
[columns]
image = "0"
dr_grade = "1"
[images]
path = "DR_grading/train/{image}"
[values.dr_grade]
"5" = "ungradable"
"#;
    let dir = fixture(&[
        ("DR_grading/train.txt", "a.jpg 2\nb.jpg 5\n"),
        ("DR_grading/train/a.jpg", ""),
        ("DR_grading/train/b.jpg", ""),
    ]);
    let read = load(text, dir.path()).read().unwrap();
    assert_eq!(read.records[0].labels.dr_grade, Some(2));
    assert_eq!(read.records[0].labels.quality, None);
    assert_eq!(read.records[1].labels.dr_grade, None);
    assert_eq!(read.records[1].labels.quality, Some(QualityGrade::Reject));
}

#[test]
fn image_folder_is_read_recursively_with_laterality() {
    let dir = fixture(&[
        ("b/2_right.png", ""),
        ("a/1_left.jpg", ""),
        ("a/notes.md", ""),
        ("c.ppm", ""),
    ]);
    let read = read_image_folder(dir.path(), "local").unwrap();
    let paths: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    assert_eq!(paths, ["a/1_left.jpg", "b/2_right.png", "c.ppm"]);
    assert_eq!(read.records[0].laterality, Laterality::Left);
    assert_eq!(read.records[1].laterality, Laterality::Right);
    assert_eq!(read.records[2].laterality, Laterality::Unknown);
    assert_eq!(
        read.records[0].id,
        ItemId::from_source("local", "a/1_left.jpg")
    );
    assert_eq!(read.records[0].labels, Labels::default());
    assert!(read_image_folder(&dir.path().join("nope"), "local").is_err());
}

#[test]
fn automorph_features_join_by_image_stem_with_units() {
    let dir = fixture(&[
        ("trainLabels.csv", "image,level\n10_left,0\n10_right,2\n"),
        ("train/10_left.jpeg", ""),
        ("train/10_right.jpeg", ""),
        (
            "M3/Disc_Zone_B_Measurement.csv",
            "Name,Fractal_dimension,Artery_Average_width,Vein_Average_width,CRAE_Knudtson,CRVE_Knudtson,AVR_Knudtson\n\
             10_left.png,1.49,7.1,9.3,12.0,14.0,0.88\n\
             10_right.png,1.41,oops,9.0,,,\n",
        ),
    ]);
    let text = format!(
        "{EYEPACS}\n[[automorph]]\nfile = \"M3/Disc_Zone_B_Measurement.csv\"\nzone = \"disc_zone_b\"\n"
    );
    let read = load(&text, dir.path()).read().unwrap();
    assert_eq!(
        read.records.len(),
        2,
        "a bad feature does not drop the record"
    );
    let raw = &read.records[0].labels.raw;
    let get = |key: &str| raw.get(key).map(String::as_str);
    assert_eq!(
        get("automorph.disc_zone_b.vessels.fractal_dimension"),
        Some("1.49")
    );
    assert_eq!(
        get("automorph.disc_zone_b.artery.average_width_px"),
        Some("7.1")
    );
    assert_eq!(
        get("automorph.disc_zone_b.vein.average_width_px"),
        Some("9.3")
    );
    assert_eq!(
        get("automorph.disc_zone_b.artery.crae_knudtson_px"),
        Some("12.0")
    );
    assert_eq!(
        get("automorph.disc_zone_b.vein.crve_knudtson_px"),
        Some("14.0")
    );
    assert_eq!(
        get("automorph.disc_zone_b.artery_vein.avr_knudtson"),
        Some("0.88")
    );
    let right = &read.records[1].labels.raw;
    assert!(!right.contains_key("automorph.disc_zone_b.artery.average_width_px"));
    assert_eq!(read.problems.len(), 1, "{:?}", read.problems);
    assert_eq!(read.problems[0].row, Some(3));
    assert!(
        read.problems[0]
            .file
            .ends_with("Disc_Zone_B_Measurement.csv")
    );
}

#[cfg(unix)]
#[test]
fn symlinked_image_leading_out_of_the_root_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.jpeg"), b"").unwrap();
    let dir = fixture(&[
        ("trainLabels.csv", "image,level\n10_left,0\n10_right,1\n"),
        ("train/10_right.jpeg", ""),
    ]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.jpeg"),
        dir.path().join("train/10_left.jpeg"),
    )
    .unwrap();
    let read = load(EYEPACS, dir.path()).read().unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].kind, ProblemKind::OutsideRoot);
    assert_eq!(read.problems[0].row, Some(2));
}

#[test]
fn problems_carry_their_kind() {
    let dir = fixture(&[
        (
            "trainLabels.csv",
            "image,level\n10_left,0\n10_left,1\n11_left,seven\n12_left,1\n../x,1\n",
        ),
        ("train/10_left.jpeg", ""),
        ("train/11_left.jpeg", ""),
    ]);
    let read = load(EYEPACS, dir.path()).read().unwrap();
    let kinds: Vec<(Option<usize>, ProblemKind)> =
        read.problems.iter().map(|p| (p.row, p.kind)).collect();
    assert_eq!(
        kinds,
        [
            (Some(3), ProblemKind::Duplicate),
            (Some(4), ProblemKind::UnknownValue),
            (Some(5), ProblemKind::MissingImage),
            (Some(6), ProblemKind::OutsideRoot),
        ]
    );
}

#[test]
fn an_object_storage_root_reads_labels_locally_and_images_by_url() {
    let text = EYEPACS.replace("[dataset]\n", "[dataset]\nroot = \"s3://bucket/eyepacs\"\n");
    let mut manifest = load(&text, Path::new("/manifests"));
    assert_eq!(manifest.root_url(), Some("s3://bucket/eyepacs"));
    assert_eq!(manifest.root_files(), ["trainLabels.csv"]);
    // The caller fetched the label file here and listed the bucket prefix.
    let cache = fixture(&[("trainLabels.csv", "image,level\n10_left,0\n10_right,3\n")]);
    manifest.set_root(cache.path().to_path_buf());
    manifest.set_remote_images(
        "s3://bucket/eyepacs/".into(),
        ["train/10_left.jpeg".to_string()].into_iter().collect(),
    );
    assert_eq!(manifest.root_url(), None);
    let read = manifest.read().unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(
        read.records[0].image_path,
        PathBuf::from("s3://bucket/eyepacs/train/10_left.jpeg")
    );
    // Same id as a local copy of the dataset: ids use the relative path only.
    assert_eq!(
        read.records[0].id,
        ItemId::from_source("eyepacs", "train/10_left.jpeg")
    );
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].kind, ProblemKind::MissingImage);
}

#[test]
fn a_100000_row_label_file_streams_row_by_row() {
    // 100,000 rows, every fifth image on disk: the stream hands out items in file order and the
    // first ones arrive before the rest of the file matters (the file is cut short after the
    // stream has started, and the items already read are the ones the whole file would give).
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("image,level\n");
    for n in 0..100_000 {
        csv.push_str(&format!("{n}_left,{}\n", n % 5));
    }
    fs::write(dir.path().join("trainLabels.csv"), &csv).unwrap();
    fs::create_dir_all(dir.path().join("train")).unwrap();
    for n in (0..100_000).step_by(5000) {
        fs::write(dir.path().join(format!("train/{n}_left.jpeg")), "").unwrap();
    }
    let manifest = load(EYEPACS, dir.path());
    assert_eq!(manifest.estimated_items(), Some(100_000));
    let mut stream = manifest.stream().unwrap();
    let first: Vec<ReadItem> = stream.by_ref().take(3).map(Result::unwrap).collect();
    match &first[0] {
        ReadItem::Record(record) => assert_eq!(record.relative_path, "train/0_left.jpeg"),
        other => panic!("{other:?}"),
    }
    match &first[1] {
        ReadItem::Problem(problem) => {
            assert_eq!(problem.kind, ProblemKind::MissingImage);
            assert_eq!(problem.row, Some(3));
        }
        other => panic!("{other:?}"),
    }
    let (mut records, mut problems) = (1, 2);
    let mut last_row = 0;
    for item in stream {
        match item.unwrap() {
            ReadItem::Record(record) => {
                records += 1;
                assert_eq!(record.labels.dr_grade, Some(0));
            }
            ReadItem::Problem(problem) => {
                problems += 1;
                let row = problem.row.unwrap();
                assert!(row > last_row, "problems come in file order");
                last_row = row;
            }
        }
    }
    assert_eq!((records, problems), (20, 99_980));
    let read = manifest.read().unwrap();
    assert_eq!((read.records.len(), read.problems.len()), (20, 99_980));
}

#[test]
fn bad_bytes_are_a_row_problem_and_a_missing_label_file_an_error_at_open() {
    let dir = fixture(&[("train/1_left.jpeg", ""), ("train/2_left.jpeg", "")]);
    // Invalid UTF-8 is replaced, so the grade is an unknown value on its row, not a fatal error.
    let mut bytes = b"image,level\n1_left,0\n2_left,1\n".to_vec();
    bytes.extend_from_slice(b"3_left,\xff\n");
    fs::write(dir.path().join("trainLabels.csv"), &bytes).unwrap();
    let items: Vec<_> = load(EYEPACS, dir.path()).stream().unwrap().collect();
    assert_eq!(items.len(), 3);
    assert!(matches!(&items[0], Ok(ReadItem::Record(_))));
    assert!(matches!(&items[2], Ok(ReadItem::Problem(_))));
    fs::remove_file(dir.path().join("trainLabels.csv")).unwrap();
    let error = load(EYEPACS, dir.path()).stream().unwrap_err();
    assert!(error.to_string().contains("trainLabels.csv"), "{error}");
}

#[test]
fn folder_walk_order_equals_sorting_every_path() {
    // `.` sorts before `/`, so `a.b/...` comes before `a/...`, as a global sort would have it.
    let names = [
        "a/1.jpg",
        "a.b/2.jpg",
        "a-c.jpg",
        "ab/3.jpg",
        "a/b/4.jpg",
        "a/b.jpg",
        "z.jpg",
        "A/5.jpg",
    ];
    let files: Vec<(&str, &str)> = names.iter().map(|n| (*n, "")).collect();
    let dir = fixture(&files);
    let read = read_image_folder(dir.path(), "local").unwrap();
    let got: Vec<&str> = read
        .records
        .iter()
        .map(|r| r.relative_path.as_str())
        .collect();
    let mut sorted = names.to_vec();
    sorted.sort();
    assert_eq!(got, sorted);
}
