//! Validator tests: parsing, schema, every rule (pass and fail), properties.

use super::*;
use proptest::prelude::*;
use retina_records::{
    Glaucoma, Labels, Laterality, LesionExtent, LesionFinding, LesionLocation, LesionType,
};
use std::sync::OnceLock;

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| Validator::new(&CaptionSchema::embedded(), Rules::embedded()).unwrap())
}

fn facts() -> ImageFacts {
    ImageFacts::fixture(2000, 1500)
}

fn record(labels: Labels) -> Record {
    let mut record = Record::new("test", "a/1.png", PathBuf::from("/data/a/1.png"));
    record.labels = labels;
    record
}

fn grade(g: u8) -> Labels {
    Labels {
        dr_grade: Some(g),
        ..Labels::default()
    }
}

fn lesion(kind: LesionType) -> LesionFinding {
    LesionFinding {
        kind,
        location: LesionLocation::PosteriorPole,
        extent: LesionExtent::Few,
    }
}

/// Neutral filler that keeps captions inside the word budget without naming any lesion.
const FILLER: &str = "Colour fundus photograph of the posterior pole. The optic disc is pink \
    with a sharp margin and a healthy neuroretinal rim. The retinal vessels have normal calibre \
    and course. The foveal reflex is present and the background has even orange pigmentation \
    throughout the photographed field.";

fn answer(caption_extra: &str, lesions: &[LesionType]) -> CaptionAnswer {
    CaptionAnswer {
        optic_disc: "Pink disc with sharp margins, cup-to-disc ratio 0.3.".into(),
        rnfl: "Striations visible in the arcades.".into(),
        vessels: "Normal calibre and course.".into(),
        macula: "Foveal reflex present.".into(),
        background: "Even orange fundus.".into(),
        lesions: lesions.iter().map(|k| lesion(*k)).collect(),
        quality: "Good focus and illumination.".into(),
        impression: "Findings as described.".into(),
        caption: format!("{FILLER} {caption_extra}"),
    }
}

fn run(answer: &CaptionAnswer, labels: Labels) -> Verdict {
    let raw = serde_json::to_string(answer).unwrap();
    validator().validate(&raw, &record(labels), &facts())
}

fn codes_of(verdict: &Verdict) -> Vec<&str> {
    verdict.reasons().iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn embedded_schema_matches_the_vocabulary() {
    let schema = CaptionSchema::embedded();
    let enum_values =
        &schema.value()["properties"]["lesions"]["items"]["properties"]["type"]["enum"];
    let listed: Vec<&str> = enum_values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let vocabulary: Vec<&str> = LesionType::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(listed, vocabulary);
}

#[test]
fn schema_hash_is_canonical() {
    let schema = CaptionSchema::embedded();
    assert_eq!(schema.hash().len(), 16);
    assert!(schema.hash().chars().all(|c| c.is_ascii_hexdigit()));
    // Reformatting and reordering keys keeps the hash; changing content does not.
    let dir = std::env::temp_dir().join(format!("retina-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pretty = dir.join("pretty.json");
    let mut reordered = serde_json::Map::new();
    let original = schema.value().as_object().unwrap();
    for (k, v) in original.iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    std::fs::write(
        &pretty,
        serde_json::to_string_pretty(&Value::Object(reordered)).unwrap(),
    )
    .unwrap();
    assert_eq!(CaptionSchema::load(&pretty).unwrap().hash(), schema.hash());
    let changed = dir.join("changed.json");
    let mut value = schema.value().clone();
    value["title"] = Value::String("Another title".into());
    std::fs::write(&changed, value.to_string()).unwrap();
    assert_ne!(CaptionSchema::load(&changed).unwrap().hash(), schema.hash());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schema_load_errors_name_the_file() {
    let missing = Path::new("/nonexistent/caption.schema.json");
    let message = CaptionSchema::load(missing).unwrap_err().to_string();
    assert!(
        message.contains("/nonexistent/caption.schema.json"),
        "{message}"
    );
    let dir = std::env::temp_dir().join(format!("retina-validate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"type\": ").unwrap();
    let message = CaptionSchema::load(&bad).unwrap_err().to_string();
    assert!(
        message.contains("bad.json") && message.contains("line"),
        "{message}"
    );
    std::fs::write(&bad, "{\"type\": 12}").unwrap();
    let err = CaptionSchema::load(&bad).unwrap_err();
    assert!(matches!(err, ValidateError::SchemaCompile { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_clean_answer_is_accepted() {
    let verdict = run(&answer("No lesions are seen.", &[]), grade(0));
    assert!(verdict.is_accepted(), "{:?}", verdict.reasons());
    assert_eq!(verdict.answer().unwrap().lesions.len(), 0);
}

#[test]
fn code_fences_and_whitespace_are_stripped_and_recorded() {
    let json = serde_json::to_string(&answer("", &[])).unwrap();
    let record = record(grade(0));
    for (raw, expected) in [
        (
            format!("```json\n{json}\n```"),
            vec![Repair::StrippedCodeFence],
        ),
        (
            format!("  \n```JSON {json}```\n"),
            vec![Repair::TrimmedWhitespace, Repair::StrippedCodeFence],
        ),
        (format!("```\n{json}\n```"), vec![Repair::StrippedCodeFence]),
        (
            format!("\u{feff}{json}"),
            vec![Repair::StrippedByteOrderMark],
        ),
        (json.clone(), vec![]),
    ] {
        let out = validator().validate_detailed(&raw, &record, &facts());
        assert!(
            out.verdict.is_accepted(),
            "{raw}: {:?}",
            out.verdict.reasons()
        );
        assert_eq!(out.repairs, expected, "{raw}");
    }
}

#[test]
fn not_json_is_rejected_with_position() {
    for raw in [
        "",
        "Sure! Here is the caption.",
        "{\"optic_disc\": ",
        "```json\n{]\n```",
    ] {
        let verdict = validator().validate(raw, &record(grade(0)), &facts());
        assert_eq!(codes_of(&verdict), ["answer.not_json"], "{raw:?}");
        let detail = &verdict.reasons()[0].detail;
        assert!(
            detail.contains("line") && detail.contains("column"),
            "{detail}"
        );
        assert_eq!(verdict.answer(), None);
    }
}

#[test]
fn schema_violations_carry_the_pointer() {
    let good = serde_json::to_value(answer("", &[LesionType::Drusen])).unwrap();
    let mut extra = good.clone();
    extra["extra"] = Value::from(1);
    let mut bad_type = good.clone();
    bad_type["lesions"][0]["type"] = Value::from("wart");
    let mut too_long = good.clone();
    too_long["rnfl"] = Value::from("x".repeat(301));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("macula");
    let mut wrong_type = good.clone();
    wrong_type["lesions"] = Value::from("none");
    let cases = [
        (extra, "/extra"),
        (bad_type, "/lesions/0/type"),
        (too_long, "/rnfl"),
        (missing, "/: "),
        (wrong_type, "/lesions"),
    ];
    for (value, pointer) in cases {
        let verdict = validator().validate(&value.to_string(), &record(grade(0)), &facts());
        assert!(!verdict.is_accepted());
        assert!(
            verdict
                .reasons()
                .iter()
                .all(|r| r.code == codes::SCHEMA_INVALID),
            "{:?}",
            verdict.reasons()
        );
        assert!(
            verdict
                .reasons()
                .iter()
                .any(|r| r.detail.starts_with(pointer)),
            "{pointer} not in {:?}",
            verdict.reasons()
        );
    }
    // The long-string detail is short and says the limit.
    let mut long = good.clone();
    long["caption"] = Value::from("word ".repeat(400));
    let verdict = validator().validate(&long.to_string(), &record(grade(0)), &facts());
    let detail = &verdict.reasons()[0].detail;
    assert!(detail.contains("1600") && detail.len() < 100, "{detail}");
}

#[test]
fn all_schema_errors_are_reported() {
    let mut value = serde_json::to_value(answer("", &[])).unwrap();
    value["a"] = Value::from(1);
    value["b"] = Value::from(2);
    value["impression"] = Value::from("");
    let verdict = validator().validate(&value.to_string(), &record(grade(0)), &facts());
    assert_eq!(verdict.reasons().len(), 3, "{:?}", verdict.reasons());
}

/// One row of the rule table: labels, caption addition, lesions, expected codes.
struct Case {
    name: &'static str,
    labels: Labels,
    text: &'static str,
    lesions: &'static [LesionType],
    expect: &'static [&'static str],
}

fn case(
    name: &'static str,
    labels: Labels,
    text: &'static str,
    lesions: &'static [LesionType],
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        labels,
        text,
        lesions,
        expect,
    }
}

#[test]
fn label_rules_table() {
    use LesionType::*;
    let amd = |v: bool| Labels {
        amd: Some(v),
        ..Labels::default()
    };
    let glaucoma = Labels {
        glaucoma: Some(Glaucoma::Yes),
        ..Labels::default()
    };
    let cases = [
        // DR grade 0
        case(
            "dr0 clean",
            grade(0),
            "No haemorrhages or exudates.",
            &[],
            &[],
        ),
        case(
            "dr0 lesion listed",
            grade(0),
            "",
            &[Microaneurysm],
            &["consistency.dr_grade_0", "consistency.normal_no_lesions"],
        ),
        case(
            "dr0 caption names haemorrhage",
            grade(0),
            "Scattered dot haemorrhages are present.",
            &[],
            &["consistency.dr_grade_0"],
        ),
        case(
            "dr0 negated list",
            grade(0),
            "There are no microaneurysms, haemorrhages, hard exudates, cotton-wool spots or neovascularisation.",
            &[],
            &[],
        ),
        case(
            "dr0 absent after",
            grade(0),
            "Exudates are absent.",
            &[],
            &[],
        ),
        case(
            "dr0 free of",
            grade(0),
            "The retina is free of haemorrhage.",
            &[],
            &[],
        ),
        case(
            "dr0 without",
            grade(0),
            "Retina without exudates.",
            &[],
            &[],
        ),
        case(
            "dr0 absence of",
            grade(0),
            "Absence of microaneurysms.",
            &[],
            &[],
        ),
        case(
            "dr0 negation does not cross but",
            grade(0),
            "No drusen but a few microaneurysms.",
            &[],
            &["consistency.dr_grade_0"],
        ),
        case(
            "dr0 negation does not cross sentences",
            grade(0),
            "No drusen. Exudates near the fovea.",
            &[],
            &["consistency.dr_grade_0"],
        ),
        case(
            "dr0 disc haemorrhage excused",
            grade(0),
            "A small disc haemorrhage at the inferior rim.",
            &[DiscHaemorrhage],
            &["consistency.normal_no_lesions"],
        ),
        // DR grade 1
        case(
            "dr1 microaneurysm",
            grade(1),
            "A few microaneurysms temporal to the fovea.",
            &[Microaneurysm],
            &[],
        ),
        case("dr1 none", grade(1), "", &[], &["consistency.dr_grade_1"]),
        case(
            "dr1 proliferative",
            grade(1),
            "",
            &[Microaneurysm, Neovascularisation],
            &["consistency.dr_non_proliferative"],
        ),
        // DR grade 2
        case(
            "dr2 haemorrhage",
            grade(2),
            "Dot and blot haemorrhages with no neovascularisation.",
            &[IntraretinalHaemorrhage],
            &[],
        ),
        case(
            "dr2 only microaneurysm",
            grade(2),
            "",
            &[Microaneurysm],
            &["consistency.dr_grade_2"],
        ),
        case(
            "dr2 venous beading is not enough",
            grade(2),
            "",
            &[VenousBeading],
            &["consistency.dr_grade_2"],
        ),
        case(
            "dr2 caption names new vessels",
            grade(2),
            "New vessels at the disc.",
            &[HardExudate],
            &["consistency.dr_non_proliferative"],
        ),
        // DR grade 3
        case("dr3 irma", grade(3), "", &[Irma], &[]),
        case(
            "dr3 only microaneurysm",
            grade(3),
            "",
            &[Microaneurysm],
            &["consistency.dr_grade_3"],
        ),
        case(
            "dr3 vitreous haemorrhage",
            grade(3),
            "",
            &[Irma, VitreousHaemorrhage],
            &["consistency.dr_non_proliferative"],
        ),
        // DR grade 4
        case(
            "dr4 complete",
            grade(4),
            "Neovascularisation elsewhere.",
            &[IntraretinalHaemorrhage, Neovascularisation],
            &[],
        ),
        case(
            "dr4 no proliferative",
            grade(4),
            "",
            &[IntraretinalHaemorrhage],
            &["consistency.dr_grade_4"],
        ),
        case(
            "dr4 nothing",
            grade(4),
            "",
            &[],
            &["consistency.dr_grade_3", "consistency.dr_grade_4"],
        ),
        // AMD
        case("amd drusen", amd(true), "", &[Drusen], &[]),
        case(
            "amd geographic atrophy",
            amd(true),
            "",
            &[GeographicAtrophy],
            &[],
        ),
        case("amd none", amd(true), "", &[], &["consistency.amd_present"]),
        case(
            "no amd with drusen",
            amd(false),
            "",
            &[Drusen],
            &["consistency.amd_absent"],
        ),
        case("no amd clean", amd(false), "", &[Tessellation], &[]),
        // Glaucoma
        case("glaucoma unlabelled", Labels::default(), "", &[], &[]),
        case(
            "glaucoma without cupping text",
            glaucoma.clone(),
            "",
            &[],
            &["consistency.glaucoma_cupping"],
        ),
        // Normal
        case(
            "normal with tessellation",
            grade(0),
            "",
            &[Tessellation],
            &["consistency.normal_no_lesions"],
        ),
        case(
            "not normal without grade",
            Labels::default(),
            "",
            &[Tessellation],
            &[],
        ),
    ];
    for case in cases {
        let verdict = run(&answer(case.text, case.lesions), case.labels);
        let mut got = codes_of(&verdict);
        got.sort_unstable();
        assert_eq!(got, case.expect, "{}: {:?}", case.name, verdict.reasons());
    }
}

#[test]
fn glaucoma_needs_cupping_in_disc_or_rnfl_text() {
    let labels = Labels {
        glaucoma: Some(Glaucoma::Yes),
        ..Labels::default()
    };
    for (optic_disc, rnfl, ok) in [
        (
            "Large cup with inferior rim thinning.",
            "Striations visible.",
            true,
        ),
        ("Pink disc.", "Inferotemporal RNFL defect.", true),
        ("Vertical cupping, ratio 0.8.", "Striations visible.", true),
        ("Pink disc, no cupping.", "No RNFL defect.", false),
        ("Pink disc.", "Striations visible.", false),
    ] {
        let mut a = answer("", &[]);
        a.optic_disc = optic_disc.into();
        a.rnfl = rnfl.into();
        let verdict = run(&a, labels.clone());
        assert_eq!(
            verdict.is_accepted(),
            ok,
            "{optic_disc} / {rnfl}: {:?}",
            verdict.reasons()
        );
    }
}

#[test]
fn laterality_must_match_when_known() {
    for (eye, text, ok) in [
        (Laterality::Left, "This is the left eye.", true),
        (Laterality::Left, "This is the right eye.", false),
        (Laterality::Right, "Right eye, disc on the right.", true),
        (Laterality::Right, "Fundus of the left eye.", false),
        (Laterality::Unknown, "Fundus of the left eye.", true),
    ] {
        let mut rec = record(Labels::default());
        rec.laterality = eye;
        let raw = serde_json::to_string(&answer(text, &[])).unwrap();
        let verdict = validator().validate(&raw, &rec, &facts());
        assert_eq!(verdict.is_accepted(), ok, "{eye:?} {text}");
        if !ok {
            assert_eq!(codes_of(&verdict), ["consistency.laterality"]);
        }
    }
}

#[test]
fn hygiene_table() {
    for (text, expect) in [
        ("Plain text.", None),
        ("There is **bold** text.", Some("hygiene.markdown")),
        ("# Heading", Some("hygiene.markdown")),
        ("A ```code``` span.", Some("hygiene.markdown")),
        ("This may represent drusen.", Some("hygiene.hedging")),
        ("Possibly early change.", Some("hygiene.hedging")),
        ("Glaucoma cannot be excluded.", Some("hygiene.hedging")),
        ("Features suggestive of myopia.", Some("hygiene.hedging")),
        ("Dismay is not a hedge.", None),
        ("Second\n\nparagraph.", Some("hygiene.paragraph")),
    ] {
        let verdict = run(&answer(text, &[]), Labels::default());
        let got = codes_of(&verdict);
        match expect {
            None => assert!(got.is_empty(), "{text}: {got:?}"),
            Some(code) => assert_eq!(got, [code], "{text}"),
        }
    }
    // Hedging in a section counts too.
    let mut a = answer("", &[]);
    a.impression = "Might be early glaucoma.".into();
    assert_eq!(codes_of(&run(&a, Labels::default())), ["hygiene.hedging"]);
}

#[test]
fn budget_table() {
    let min = "word ".repeat(39);
    let max = "word ".repeat(261);
    for (caption, expect) in [
        (min.as_str(), Some("budget.caption_too_short")),
        (max.as_str(), Some("budget.caption_too_long")),
    ] {
        let mut a = answer("", &[]);
        a.caption = caption.trim().to_string();
        let got = codes_of(&run(&a, Labels::default())).join(",");
        assert_eq!(Some(got.as_str()), expect);
    }
    let mut a = answer("", &[]);
    a.caption = "word ".repeat(40).trim().to_string();
    assert!(run(&a, Labels::default()).is_accepted());
    a.caption = "word ".repeat(260).trim().to_string();
    assert!(run(&a, Labels::default()).is_accepted());
}

#[test]
fn every_failure_is_reported() {
    let mut a = answer(
        "**Right eye**. Haemorrhages may be present.",
        &[LesionType::Drusen, LesionType::Microaneurysm],
    );
    a.caption.push_str("\nMore.");
    let mut rec = record(Labels {
        dr_grade: Some(0),
        amd: Some(false),
        ..Labels::default()
    });
    rec.laterality = Laterality::Left;
    let raw = serde_json::to_string(&a).unwrap();
    let verdict = validator().validate(&raw, &rec, &facts());
    let mut got = codes_of(&verdict);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "consistency.amd_absent",
            "consistency.dr_grade_0",
            "consistency.laterality",
            "consistency.normal_no_lesions",
            "hygiene.hedging",
            "hygiene.markdown",
            "hygiene.paragraph",
        ]
    );
    assert_eq!(verdict.answer(), Some(&a), "the parsed answer is kept");
    let message = repair_message(verdict.reasons());
    assert!(message.contains("consistency.dr_grade_0"), "{message}");
}

#[test]
fn rules_file_can_be_loaded_and_changes_behaviour() {
    let text = include_str!("../../../schemas/consistency-rules.toml")
        .replace("min_words = 40", "min_words = 100");
    let dir = std::env::temp_dir().join(format!("retina-validate-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let rules = Rules::load(&path).unwrap();
    assert_eq!(rules.word_budget(), (100, 260));
    let v = Validator::new(&CaptionSchema::embedded(), rules).unwrap();
    let raw = serde_json::to_string(&answer("", &[])).unwrap();
    let verdict = v.validate(&raw, &record(Labels::default()), &facts());
    assert_eq!(codes_of(&verdict), ["budget.caption_too_short"]);
    std::fs::write(&path, "version = ").unwrap();
    let message = Rules::load(&path).unwrap_err().to_string();
    assert!(message.contains("rules.toml"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validator_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Validator>();
}

fn text_field(max: usize) -> impl Strategy<Value = String> {
    // Printable text, including non-ASCII, within the schema's character bounds.
    proptest::collection::vec(proptest::char::any(), 1..=max.min(60))
        .prop_map(|chars| chars.into_iter().collect())
}

fn any_lesion() -> impl Strategy<Value = LesionFinding> {
    (
        proptest::sample::select(LesionType::ALL),
        proptest::sample::select(LesionLocation::ALL),
        proptest::sample::select(LesionExtent::ALL),
    )
        .prop_map(|(kind, location, extent)| LesionFinding {
            kind,
            location,
            extent,
        })
}

fn any_answer() -> impl Strategy<Value = CaptionAnswer> {
    (
        (
            text_field(400),
            text_field(300),
            text_field(400),
            text_field(300),
        ),
        (text_field(300), text_field(300), text_field(300)),
        proptest::collection::vec(any_lesion(), 0..=8),
        proptest::collection::vec(proptest::char::any(), 40..=1600),
    )
        .prop_map(
            |(
                (optic_disc, rnfl, vessels, macula),
                (background, quality, impression),
                lesions,
                caption,
            )| {
                CaptionAnswer {
                    optic_disc,
                    rnfl,
                    vessels,
                    macula,
                    background,
                    lesions,
                    quality,
                    impression,
                    caption: caption.into_iter().collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_is_rejected(raw in "\\PC{0,300}") {
        let verdict = validator().validate(&raw, &record(grade(2)), &facts());
        prop_assert!(!verdict.is_accepted());
        prop_assert!(!verdict.reasons().is_empty());
    }

    #[test]
    fn json_like_text_never_panics(raw in "[\\{\\}\\[\\]\":,a-z0-9 `\n]{0,200}") {
        let verdict = validator().validate(&raw, &record(grade(2)), &facts());
        prop_assert!(!verdict.is_accepted());
    }

    #[test]
    fn in_bounds_answers_pass_the_schema(a in any_answer()) {
        let value = serde_json::to_value(&a).unwrap();
        let reasons = validator().check_schema(&value);
        prop_assert!(reasons.is_empty(), "{:?}", reasons);
    }

    #[test]
    fn answers_with_any_labels_never_panic(
        a in any_answer(),
        dr in proptest::option::of(0u8..6),
        amd in proptest::option::of(any::<bool>()),
    ) {
        let labels = Labels { dr_grade: dr, amd, ..Labels::default() };
        let raw = serde_json::to_string(&a).unwrap();
        let verdict = validator().validate(&raw, &record(labels), &facts());
        // Whatever the rules say, a schema-valid answer is always kept for the rejects file.
        prop_assert_eq!(verdict.answer(), Some(&a));
    }
}
