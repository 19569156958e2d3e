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

/// Facts with the cup-to-disc ratio the fixture answers quote (0.3).
fn facts() -> ImageFacts {
    ImageFacts {
        cup_to_disc_ratio: Some(retina_records::Measured {
            value: 0.31,
            confidence: 0.8,
        }),
        ..ImageFacts::fixture(2000, 1500)
    }
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
        caption_variants: Default::default(),
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
            &[
                "consistency.dr_grade_0",
                "consistency.normal_no_pathology_words",
            ],
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
            &[
                "consistency.dr_grade_0",
                "consistency.normal_no_pathology_words",
            ],
        ),
        case(
            "dr0 negation does not cross sentences",
            grade(0),
            "No drusen. Exudates near the fovea.",
            &[],
            &[
                "consistency.dr_grade_0",
                "consistency.normal_no_pathology_words",
            ],
        ),
        case(
            "dr0 disc haemorrhage excused",
            grade(0),
            "A small disc haemorrhage at the inferior rim.",
            &[DiscHaemorrhage],
            &[
                "consistency.normal_no_lesions",
                "consistency.normal_no_pathology_words",
            ],
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
    // English filler: "word word word" would also fail hygiene.not_english.
    let min = "the disc ".repeat(19) + "disc";
    let max = "the disc ".repeat(131);
    for (caption, expect) in [
        (min.as_str(), Some("budget.caption_too_short")),
        (max.as_str(), Some("budget.caption_too_long,budget.tokens")),
    ] {
        let mut a = answer("", &[]);
        a.caption = caption.trim().to_string();
        let got = codes_of(&run(&a, Labels::default())).join(",");
        assert_eq!(Some(got.as_str()), expect);
    }
    let mut a = answer("", &[]);
    a.caption = "the disc ".repeat(20).trim().to_string();
    assert!(run(&a, Labels::default()).is_accepted());
    // 260 words of one token each fit the word budget but not 256 Gemma-style tokens.
    a.caption = "the disc ".repeat(130).trim().to_string();
    let verdict = run(&a, Labels::default());
    assert_eq!(codes_of(&verdict), ["budget.tokens"]);
    let detail = &verdict.reasons()[0].detail;
    assert!(
        detail.contains("caption (detailed style) has 261 Gemma-style tokens")
            && detail.contains("allows 256"),
        "{detail}"
    );
    a.caption = "the disc ".repeat(100).trim().to_string();
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
            "consistency.normal_no_pathology_words",
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
                    caption_variants: Default::default(),
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

/// Facts with every measurement the measurement rules read, and the disc on the image's right.
fn measured_facts() -> ImageFacts {
    use retina_records::{DiscEstimate, DiscSide, Measured};
    let m = |value: f32| {
        Some(Measured {
            value,
            confidence: 0.9,
        })
    };
    ImageFacts {
        cup_to_disc_ratio: m(0.45),
        vessel_density: m(0.123),
        fractal_dimension: m(1.52),
        tortuosity: m(0.081),
        disc: Some(DiscEstimate {
            x: 0.7,
            y: 0.5,
            diameter: 0.16,
            side: DiscSide::Right,
            confidence: 0.9,
        }),
        fov_fraction: 0.71,
        dark_lesion_candidates: Some(Measured {
            value: 3,
            confidence: 0.6,
        }),
        bright_lesion_candidates: Some(Measured {
            value: 0,
            confidence: 0.6,
        }),
        ..ImageFacts::fixture(2000, 1500)
    }
}

/// One measurement, orientation, vocabulary or hygiene case: text put in `field`.
struct TextCase {
    name: &'static str,
    field: &'static str,
    text: &'static str,
    expect: &'static [&'static str],
}

fn with_text(field: &str, text: &str) -> CaptionAnswer {
    let mut a = answer("", &[]);
    a.optic_disc = "Pink disc with sharp margins and a healthy rim.".into();
    a.caption_variants.insert(
        "short".into(),
        "Colour fundus photograph with a pink optic disc, normal vessels and macula, and no lesions."
            .into(),
    );
    match field {
        "optic_disc" => a.optic_disc = text.into(),
        "vessels" => a.vessels = text.into(),
        "rnfl" => a.rnfl = text.into(),
        "quality" => a.quality = text.into(),
        "impression" => a.impression = text.into(),
        "short" => {
            a.caption_variants.insert("short".into(), text.into());
        }
        _ => a.caption = format!("{FILLER} {text}"),
    }
    a
}

#[test]
fn measurement_orientation_vocabulary_and_hygiene_table() {
    let t = |name, field, text, expect| TextCase {
        name,
        field,
        text,
        expect,
    };
    let cases = [
        // Quoted numbers against the facts.
        t(
            "cdr faithful",
            "optic_disc",
            "Cup-to-disc ratio 0.45 with a healthy rim.",
            &[],
        ),
        t(
            "cdr rounded",
            "optic_disc",
            "The vertical cup-to-disc ratio measures 0.47.",
            &[],
        ),
        t(
            "cdr wrong",
            "optic_disc",
            "Cup-to-disc ratio of 0.8.",
            &["measurement.cup_to_disc_ratio"],
        ),
        t(
            "cdr wrong in caption",
            "caption",
            "The CDR is 0.7.",
            &["measurement.cup_to_disc_ratio"],
        ),
        t(
            "density faithful",
            "vessels",
            "Vessel density of 12.3% of the field.",
            &[],
        ),
        t(
            "density wrong",
            "vessels",
            "Vessels covering 25% of the field.",
            &["measurement.vessel_density"],
        ),
        t(
            "fractal faithful",
            "vessels",
            "A fractal dimension of 1.52.",
            &[],
        ),
        t(
            "fractal wrong",
            "caption",
            "A branching fractal dimension of 1.71.",
            &["measurement.fractal_dimension"],
        ),
        t(
            "tortuosity wrong",
            "vessels",
            "Tortuosity index 0.4.",
            &["measurement.tortuosity"],
        ),
        t(
            "disc diameter faithful",
            "optic_disc",
            "The disc diameter is 16% of the field.",
            &[],
        ),
        t(
            "disc diameter wrong",
            "optic_disc",
            "The disc diameter is 30% of the field.",
            &["measurement.disc_diameter"],
        ),
        t(
            "fov wrong",
            "quality",
            "The field of view fills 95% of the frame.",
            &["measurement.field_of_view"],
        ),
        t(
            "dark count faithful",
            "caption",
            "Automatic analysis found 3 haemorrhage-like spots.",
            &[],
        ),
        t(
            "dark count wrong",
            "caption",
            "Automatic analysis found 9 haemorrhage-like spots.",
            &["measurement.dark_lesion_count"],
        ),
        t(
            "bright count wrong",
            "caption",
            "There are 4 bright lesion candidates.",
            &["measurement.bright_lesion_count"],
        ),
        t(
            "numbers elsewhere are free",
            "caption",
            "Photographed at 45 degrees in 2 fields.",
            &[],
        ),
        // Disc side against the measured disc (right side of the image).
        t(
            "disc side faithful",
            "optic_disc",
            "The optic disc lies on the right side of the frame.",
            &[],
        ),
        t(
            "disc side wrong",
            "optic_disc",
            "The optic disc lies on the left side of the image.",
            &["consistency.disc_side"],
        ),
        t(
            "disc side wrong in short",
            "short",
            "Right eye fundus with the disc on the left side of the frame and no lesions at all.",
            &["consistency.disc_side"],
        ),
        // Vocabulary.
        t(
            "british spelling",
            "caption",
            "No haemorrhages and no oedema.",
            &[],
        ),
        t(
            "american spelling",
            "caption",
            "No hemorrhages are seen.",
            &["vocabulary.synonym"],
        ),
        t(
            "abbreviation",
            "impression",
            "Moderate NPDR.",
            &["vocabulary.synonym"],
        ),
        // Hygiene additions.
        t(
            "refusal",
            "caption",
            "As an AI language model I cannot diagnose.",
            &["hygiene.refusal"],
        ),
        t(
            "date of birth",
            "caption",
            "Patient born on 12/03/1961.",
            &["hygiene.personal_data"],
        ),
        t(
            "record number",
            "impression",
            "Medical record number 55123.",
            &["hygiene.personal_data"],
        ),
        t(
            "iso date",
            "quality",
            "Taken 2019-04-02 at the clinic.",
            &["hygiene.personal_data"],
        ),
        t(
            "not english",
            "impression",
            "Die Papille ist vital und scharf begrenzt, keine Blutungen, Makula regelrecht, Gefäße unauffällig, Hintergrund regelrecht.",
            &["hygiene.not_english"],
        ),
        t(
            "not latin",
            "quality",
            "Глазное дно без патологии, диск бледно-розовый, сосуды в норме.",
            &["hygiene.not_english"],
        ),
        // Short variants are captions too.
        t(
            "short faithful",
            "short",
            "Colour fundus photograph of an eye with a pink optic disc, cup-to-disc ratio 0.45, normal vessels and macula, and no lesions.",
            &[],
        ),
        t(
            "short hedges",
            "short",
            "Colour fundus photograph of an eye with a pink disc; glaucoma may be present according to the findings here.",
            &["hygiene.hedging"],
        ),
        t(
            "short too short",
            "short",
            "Normal fundus.",
            &["budget.variant_too_short"],
        ),
        t(
            "short over CLIP budget",
            "short",
            "Colour fundus photograph of an eye with a pink optic disc, a cup-to-disc ratio of 0.45, a healthy neuroretinal rim, visible nerve fibre layer striations in both arcades, arteries and veins of normal calibre and course with a vessel density of 12.3% of the field, a fractal dimension of 1.52, a present foveal reflex, an even orange background, and good focus and illumination.",
            &["budget.tokens"],
        ),
    ];
    for case in cases {
        let a = with_text(case.field, case.text);
        let mut rec = record(Labels::default());
        rec.laterality = Laterality::Right;
        let raw = serde_json::to_string(&a).unwrap();
        let verdict = styled_validator().validate(&raw, &rec, &measured_facts());
        let mut got = codes_of(&verdict);
        got.sort_unstable();
        assert_eq!(got, case.expect, "{}: {:?}", case.name, verdict.reasons());
    }
}

/// A validator whose schema asks for the `short` style too.
fn styled_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let rules = Rules::embedded();
        let short = rules.style("short").unwrap().clone();
        let schema = CaptionSchema::embedded().with_variants(&[&short]);
        Validator::new(&schema, rules).unwrap()
    })
}

#[test]
fn styles_shape_the_schema_and_its_hash() {
    let rules = Rules::embedded();
    let base = CaptionSchema::embedded();
    let detailed = rules.style("detailed").unwrap();
    let short = rules.style("short").unwrap();
    assert_eq!(base.with_variants(&[detailed]).hash(), base.hash());
    let styled = base.with_variants(&[detailed, short]);
    assert_ne!(styled.hash(), base.hash(), "styles change the schema hash");
    let value = styled.value();
    assert!(
        value["required"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("caption_variants"))
    );
    assert_eq!(
        value["properties"]["caption_variants"]["required"],
        serde_json::json!(["short"])
    );
    assert_eq!(
        value["properties"]["caption_variants"]["additionalProperties"],
        serde_json::json!(false)
    );
    assert_eq!(
        (short.tokenizer(), short.max_tokens()),
        (TokenizerKind::Clip, 77)
    );
    assert_eq!(
        (detailed.tokenizer(), detailed.max_tokens()),
        (TokenizerKind::GemmaProxy, 256)
    );
    // The styled schema requires the variant; the plain one forbids it.
    let mut a = answer("", &[]);
    let rec = record(Labels::default());
    let plain = serde_json::to_string(&a).unwrap();
    let verdict = styled_validator().validate(&plain, &rec, &facts());
    assert_eq!(
        codes_of(&verdict),
        ["schema.invalid"],
        "{:?}",
        verdict.reasons()
    );
    a.caption_variants.insert(
        "short".into(),
        "Colour fundus photograph with a pink optic disc, normal vessels and macula, and no lesions.".into(),
    );
    let with_short = serde_json::to_string(&a).unwrap();
    assert!(
        styled_validator()
            .validate(&with_short, &rec, &facts())
            .is_accepted()
    );
    let verdict = validator().validate(&with_short, &rec, &facts());
    assert_eq!(codes_of(&verdict), ["schema.invalid"]);
}

/// Name, labels, caption text, lesions listed, expected codes.
type LabelCase = (
    &'static str,
    Labels,
    &'static str,
    Vec<LesionFinding>,
    &'static [&'static str],
);

#[test]
fn new_label_rules_table() {
    use LesionType::*;
    let labels = |f: fn(&mut Labels)| {
        let mut l = Labels::default();
        f(&mut l);
        l
    };
    let at = |kind, location| LesionFinding {
        kind,
        location,
        extent: LesionExtent::Few,
    };
    let dme = labels(|l| {
        l.dr_grade = Some(2);
        l.dme = Some(1);
    });
    let myopia2 = labels(|l| l.myopic_maculopathy = Some(2));
    let myopia1 = labels(|l| l.myopic_maculopathy = Some(1));
    let no_glaucoma = labels(|l| l.glaucoma = Some(Glaucoma::No));
    let no_dme = labels(|l| l.dme = Some(0));
    let cases: Vec<LabelCase> = vec![
        (
            "dme exudates at macula",
            dme.clone(),
            "Hard exudates near the fovea.",
            vec![at(HardExudate, LesionLocation::Macula)],
            &[],
        ),
        (
            "dme exudates only in periphery",
            dme,
            "Hard exudates in the periphery.",
            vec![at(HardExudate, LesionLocation::Periphery)],
            &["consistency.dme_exudates"],
        ),
        (
            "no dme stays quiet",
            no_dme.clone(),
            "There is no macular oedema.",
            vec![],
            &[],
        ),
        (
            "no dme but oedema named",
            no_dme,
            "Macular oedema with exudates.",
            vec![],
            &["consistency.dme_absent"],
        ),
        (
            "myopia 1 tessellation",
            myopia1.clone(),
            "A tessellated fundus.",
            vec![at(Tessellation, LesionLocation::Diffuse)],
            &[],
        ),
        (
            "myopia 1 nothing listed",
            myopia1,
            "",
            vec![],
            &["consistency.myopia_tessellation"],
        ),
        (
            "myopia 2 atrophy",
            myopia2.clone(),
            "",
            vec![
                at(Tessellation, LesionLocation::Diffuse),
                at(ChorioretinalAtrophy, LesionLocation::PosteriorPole),
            ],
            &[],
        ),
        (
            "myopia 2 tessellation only",
            myopia2,
            "",
            vec![at(Tessellation, LesionLocation::Diffuse)],
            &["consistency.myopia_atrophy"],
        ),
        (
            "no glaucoma clean",
            no_glaucoma.clone(),
            "No glaucomatous cupping.",
            vec![],
            &[],
        ),
        (
            "no glaucoma but cupping",
            no_glaucoma,
            "Glaucomatous cupping of the disc.",
            vec![],
            &["consistency.glaucoma_absent"],
        ),
        (
            "normal mentions drusen",
            grade(0),
            "Scattered drusen at the macula.",
            vec![],
            &["consistency.normal_no_pathology_words"],
        ),
        (
            "normal negated pathology",
            grade(0),
            "No drusen, atrophy or retinopathy.",
            vec![],
            &[],
        ),
    ];
    for (name, labels, text, lesions, expect) in cases {
        let mut a = answer(text, &[]);
        a.lesions = lesions;
        let verdict = run(&a, labels);
        let mut got = codes_of(&verdict);
        got.sort_unstable();
        assert_eq!(got, expect, "{name}: {:?}", verdict.reasons());
    }
}

proptest! {
    #[test]
    fn styled_validation_never_panics(raw in "\\PC{0,300}", short in "\\PC{0,200}") {
        let rec = record(grade(2));
        let _ = styled_validator().validate(&raw, &rec, &measured_facts());
        let mut a = answer(&raw, &[]);
        a.caption_variants.insert("short".into(), short);
        let text = serde_json::to_string(&a).unwrap();
        let _ = styled_validator().validate(&text, &rec, &measured_facts());
    }
}
