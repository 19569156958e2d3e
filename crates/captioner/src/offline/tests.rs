use super::*;
use proptest::prelude::*;
use retina_records::{DiscEstimate, QualityMetrics};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

const SCHEMA_TEXT: &str = include_str!("../../../../schemas/caption.schema.json");

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).unwrap())
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| jsonschema::validator_for(schema()).unwrap())
}

fn record(name: &str, labels: Labels, laterality: Laterality) -> Record {
    let mut record = Record::new("test", name, PathBuf::from(name));
    record.labels = labels;
    record.laterality = laterality;
    record
}

fn m(value: f32, confidence: f32) -> Option<Measured<f32>> {
    Some(Measured { value, confidence })
}

fn full_facts() -> ImageFacts {
    ImageFacts {
        original_width: 3888,
        original_height: 2592,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.7,
        quality: QualityMetrics {
            brightness: 0.4,
            contrast: 0.2,
            sharpness: 120.0,
            illumination_uniformity: 0.85,
            grade: QualityGrade::Good,
        },
        disc: Some(DiscEstimate {
            x: 0.3,
            y: 0.5,
            diameter: 0.15,
            side: DiscSide::Left,
            confidence: 0.9,
        }),
        centring: Some(Centring::Macula),
        vessel_density: m(0.078, 0.8),
        tortuosity: m(0.061, 0.7),
        fractal_dimension: m(1.49, 0.7),
        cup_to_disc_ratio: m(0.42, 0.8),
        bright_lesion_candidates: None,
        dark_lesion_candidates: None,
        perceptual_hash: 7,
    }
}

fn bare_facts() -> ImageFacts {
    ImageFacts {
        disc: None,
        centring: None,
        vessel_density: None,
        tortuosity: None,
        fractal_dimension: None,
        cup_to_disc_ratio: None,
        ..full_facts()
    }
}

fn dr(grade: u8) -> Labels {
    Labels {
        dr_grade: Some(grade),
        ..Labels::default()
    }
}

/// Captions `n` different items with the same labels and facts.
fn many(labels: &Labels, facts: &ImageFacts, n: usize) -> Vec<CaptionAnswer> {
    let captioner = OfflineCaptioner::new(42);
    (0..n)
        .map(|i| {
            let r = record(&format!("img_{i}.jpg"), labels.clone(), Laterality::Right);
            captioner.answer(&r, facts)
        })
        .collect()
}

/// Checks the answer against the schema file and the text rules; returns the raw JSON.
fn assert_well_formed(answer: &CaptionAnswer) -> String {
    let raw = serde_json::to_string(answer).unwrap();
    let value: Value = serde_json::from_str(&raw).unwrap();
    let errors: Vec<String> = validator()
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "schema errors {errors:?} in {raw}");
    let parsed: CaptionAnswer = serde_json::from_str(&raw).unwrap();
    assert_eq!(&parsed, answer);
    let words = answer.caption.split_whitespace().count();
    assert!(
        CAPTION_WORDS.contains(&words),
        "{words} words: {}",
        answer.caption
    );
    assert!(!answer.caption.contains('\n'), "one paragraph");
    for (name, text) in answer
        .sections()
        .into_iter()
        .chain([("caption", answer.caption.as_str())])
    {
        assert!(
            !text.contains("```") && !text.contains("**") && !text.contains('#'),
            "{name}: markdown"
        );
        let lower = format!(
            " {} ",
            text.to_lowercase()
                .replace([',', '.', ':', ';', '(', ')'], " ")
        );
        for hedge in HEDGES {
            assert!(
                !lower.contains(&format!(" {hedge} ")),
                "{name} hedges with {hedge:?}: {text}"
            );
        }
    }
    raw
}

const HEDGES: &[&str] = &[
    "may",
    "might",
    "possibly",
    "perhaps",
    "probably",
    "likely",
    "could",
    "appears",
    "seems",
    "suggestive",
    "suggests",
    "suspicious",
    "suspect",
    "cannot be excluded",
];

/// Words naming diabetic lesions; a grade-0 caption may use them only negated.
const DR_WORDS: &[&str] = &[
    "microaneurysm",
    "haemorrhage",
    "exudate",
    "cotton-wool",
    "neovascular",
    "beading",
    "intraretinal microvascular",
    "irma",
    "fibrous proliferation",
];

const NEGATIONS: &[&str] = &["no", "without", "free of", "absence of"];

/// True when every DR lesion word in `text` has a negation within three words before it.
fn dr_words_only_negated(text: &str) -> bool {
    text.split('.').all(sentence_dr_words_only_negated)
}

fn sentence_dr_words_only_negated(sentence: &str) -> bool {
    let lower = sentence.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, word) in words.iter().enumerate() {
        let names_lesion = DR_WORDS.iter().any(|d| {
            let first = d.split(' ').next().unwrap_or(d);
            word.starts_with(first)
        });
        if !names_lesion {
            continue;
        }
        let window = words[i.saturating_sub(3)..i].join(" ");
        if !NEGATIONS
            .iter()
            .any(|n| window.split(' ').any(|w| w == *n) || window.contains(n))
        {
            return false;
        }
    }
    true
}

#[test]
fn bounds_match_the_schema_file() {
    let props = &schema()["properties"];
    let max = |name: &str| props[name]["maxLength"].as_u64().unwrap() as usize;
    assert_eq!(max("optic_disc"), bounds::OPTIC_DISC);
    assert_eq!(max("rnfl"), bounds::RNFL);
    assert_eq!(max("vessels"), bounds::VESSELS);
    assert_eq!(max("macula"), bounds::MACULA);
    assert_eq!(max("background"), bounds::BACKGROUND);
    assert_eq!(max("quality"), bounds::QUALITY);
    assert_eq!(max("impression"), bounds::IMPRESSION);
    assert_eq!(max("caption"), bounds::CAPTION_MAX);
    assert_eq!(
        props["caption"]["minLength"].as_u64(),
        Some(bounds::CAPTION_MIN as u64)
    );
    assert_eq!(
        props["lesions"]["maxItems"].as_u64(),
        Some(bounds::LESIONS_MAX as u64)
    );
}

#[test]
fn output_parses_and_satisfies_the_schema() {
    for labels in [dr(0), dr(2), dr(4), Labels::default()] {
        for facts in [full_facts(), bare_facts()] {
            for answer in many(&labels, &facts, 10) {
                assert_well_formed(&answer);
            }
        }
    }
}

#[test]
fn deterministic_for_seed_and_item() {
    let r = record("a.jpg", dr(3), Laterality::Left);
    let a = OfflineCaptioner::new(7).answer(&r, &full_facts());
    let b = OfflineCaptioner::new(7).answer(&r, &full_facts());
    assert_eq!(a, b);
    let seeds: HashSet<String> = (0..20)
        .map(|seed| {
            OfflineCaptioner::new(seed)
                .answer(&r, &full_facts())
                .caption
        })
        .collect();
    assert!(
        seeds.len() > 10,
        "the seed must change the wording: {}",
        seeds.len()
    );
}

#[test]
fn different_ids_rarely_share_a_caption() {
    for labels in [dr(0), dr(2), Labels::default()] {
        let captions: HashSet<String> = many(&labels, &full_facts(), 100)
            .into_iter()
            .map(|a| a.caption)
            .collect();
        assert!(
            captions.len() >= 95,
            "only {} distinct of 100 for {labels:?}",
            captions.len()
        );
    }
}

#[test]
fn grade_zero_lists_no_lesion_and_names_none() {
    for answer in many(&dr(0), &full_facts(), 60) {
        assert!(answer.lesions.is_empty(), "{:?}", answer.lesions);
        assert!(dr_words_only_negated(&answer.caption), "{}", answer.caption);
        for (name, text) in answer.sections() {
            assert!(dr_words_only_negated(text), "{name}: {text}");
        }
        let lower = answer.caption.to_lowercase();
        assert!(
            lower.contains("no haemorrhages") || lower.contains("free of haemorrhages"),
            "{lower}"
        );
        assert!(lower.contains("no exudates") && lower.contains("no neovascularisation"));
        assert!(lower.contains("right eye") && !lower.contains("left eye"));
    }
}

#[test]
fn negation_checker_is_not_vacuous() {
    assert!(dr_words_only_negated(
        "There are no haemorrhages, no exudates and no neovascularisation."
    ));
    assert!(!dr_words_only_negated(
        "Several haemorrhages lie temporally."
    ));
    assert!(!dr_words_only_negated(
        "No drusen. Hard exudates at the macula."
    ));
}

#[test]
fn every_dr_grade_lists_its_supporting_lesion() {
    for grade in 1..=4u8 {
        for answer in many(&dr(grade), &full_facts(), 40) {
            assert_well_formed(&answer);
            let kinds: Vec<LesionType> = answer.lesions.iter().map(|l| l.kind).collect();
            let any = |f: fn(LesionType) -> bool| kinds.iter().any(|k| f(*k));
            match grade {
                1 => {
                    assert!(kinds.contains(&LesionType::Microaneurysm), "{kinds:?}");
                    assert!(!any(LesionType::is_moderate_dr_sign), "{kinds:?}");
                }
                2 => assert!(any(LesionType::is_moderate_dr_sign), "{kinds:?}"),
                3 => {
                    assert!(kinds.contains(&LesionType::IntraretinalHaemorrhage));
                    assert!(
                        kinds.contains(&LesionType::VenousBeading)
                            || kinds.contains(&LesionType::Irma),
                        "{kinds:?}"
                    );
                }
                _ => assert!(any(LesionType::is_proliferative_sign), "{kinds:?}"),
            }
            if grade <= 3 {
                assert!(
                    !any(LesionType::is_proliferative_sign),
                    "grade {grade}: {kinds:?}"
                );
            }
            // The caption names the first lesion in words.
            let (singular, _, _) = lesion_nouns(answer.lesions[0].kind);
            let stem = singular.split(' ').next_back().unwrap_or(singular);
            let stem = &stem[..stem.len().min(8)];
            assert!(
                answer.caption.contains(stem),
                "{stem:?} missing: {}",
                answer.caption
            );
            assert!(answer.caption.contains("diabetic retinopathy"));
        }
    }
}

#[test]
fn amd_gives_drusen_and_no_amd_gives_none() {
    let amd = Labels {
        amd: Some(true),
        ..Labels::default()
    };
    for answer in many(&amd, &full_facts(), 20) {
        assert!(
            answer
                .lesions
                .iter()
                .any(|l| l.kind == LesionType::Drusen && l.location == LesionLocation::Macula)
        );
        assert!(answer.macula.to_lowercase().contains("drusen"));
        assert!(
            answer
                .impression
                .contains("age-related macular degeneration")
        );
    }
    let no_amd = Labels {
        amd: Some(false),
        dr_grade: Some(0),
        ..Labels::default()
    };
    for answer in many(&no_amd, &full_facts(), 20) {
        assert!(answer.lesions.iter().all(|l| !l.kind.is_amd()));
    }
}

#[test]
fn glaucoma_gives_cup_rim_and_rnfl_wording() {
    let yes = Labels {
        glaucoma: Some(Glaucoma::Yes),
        ..Labels::default()
    };
    for answer in many(&yes, &full_facts(), 30) {
        let disc = answer.optic_disc.to_lowercase();
        assert!(
            disc.contains("large cup") && disc.contains("rim thinning"),
            "{disc}"
        );
        assert!(answer.rnfl.contains("RNFL defect"), "{}", answer.rnfl);
        assert!(
            answer
                .lesions
                .iter()
                .any(|l| l.kind == LesionType::RnflDefect)
        );
        // The measured 0.42 contradicts the label and must not be quoted.
        assert!(!disc.contains("0.42"), "{disc}");
        assert!(answer.caption.to_lowercase().contains("rnfl"));
    }
    let mut facts = full_facts();
    facts.cup_to_disc_ratio = m(0.78, 0.9);
    let answer = &many(&yes, &facts, 1)[0];
    assert!(answer.optic_disc.contains("0.78"), "{}", answer.optic_disc);

    let suspect = Labels {
        glaucoma: Some(Glaucoma::Suspect),
        ..Labels::default()
    };
    for answer in many(&suspect, &full_facts(), 20) {
        assert!(
            answer.optic_disc.contains("enlarged"),
            "{}",
            answer.optic_disc
        );
        assert!(
            answer
                .lesions
                .iter()
                .all(|l| l.kind != LesionType::RnflDefect)
        );
        assert!(answer.rnfl.contains("thinner"));
    }
}

#[test]
fn myopia_gives_tessellation_and_peripapillary_atrophy() {
    let myopia = Labels {
        myopic_maculopathy: Some(4),
        ..Labels::default()
    };
    for answer in many(&myopia, &full_facts(), 20) {
        let kinds: Vec<LesionType> = answer.lesions.iter().map(|l| l.kind).collect();
        assert!(kinds.contains(&LesionType::Tessellation));
        assert!(kinds.contains(&LesionType::PeripapillaryAtrophy));
        assert!(kinds.contains(&LesionType::ChorioretinalAtrophy));
        assert!(answer.background.contains("tessellated"));
    }
}

#[test]
fn unlabelled_images_list_no_lesions_and_claim_none() {
    let quality_only = Labels {
        quality: Some(QualityGrade::Usable),
        ..Labels::default()
    };
    for answer in many(&quality_only, &full_facts(), 30) {
        assert!(answer.lesions.is_empty());
        let lower = answer.caption.to_lowercase();
        for word in DR_WORDS.iter().chain(&["drusen", "glaucoma", "normal"]) {
            assert!(!lower.contains(word), "{word:?} in {lower}");
        }
        assert!(answer.quality.contains("usable"));
        assert!(lower.contains("7.8%"), "measurements are quoted: {lower}");
    }
}

#[test]
fn measurements_are_quoted_only_when_present_and_confident() {
    let answer = &many(&dr(0), &full_facts(), 1)[0];
    assert!(
        answer.vessels.contains("7.8%") && answer.vessels.contains("1.49"),
        "{}",
        answer.vessels
    );
    assert!(answer.vessels.contains("0.061"));
    assert!(answer.optic_disc.contains("0.42"));
    assert!(answer.optic_disc.contains("left side of the frame"));

    let mut weak = full_facts();
    weak.vessel_density = m(0.078, 0.1);
    weak.fractal_dimension = m(f32::NAN, 0.9);
    for answer in many(&dr(0), &weak, 10)
        .iter()
        .chain(&many(&dr(0), &bare_facts(), 10))
    {
        assert!(!answer.vessels.contains("7.8") && !answer.vessels.contains("fractal"));
        assert!(!answer.caption.contains("NaN"));
    }
    for answer in many(&dr(0), &bare_facts(), 10) {
        assert!(
            !answer.optic_disc.contains("cup-to-disc"),
            "{}",
            answer.optic_disc
        );
    }
}

#[test]
fn reply_carries_json_and_estimated_usage() {
    let captioner = OfflineCaptioner::new(3);
    let r = Arc::new(record("x.jpg", dr(2), Laterality::Left));
    let facts = Arc::new(full_facts());
    let request = CaptionRequest {
        record: r.clone(),
        facts: facts.clone(),
        prompt: retina_prompt::RenderedPrompt {
            system: "one two three".into(),
            user: "four five six seven".into(),
        },
        image: None,
        image_mime: "image/jpeg",
        repair: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let reply = runtime.block_on(captioner.caption(request)).unwrap();
    let parsed: CaptionAnswer = serde_json::from_str(&reply.raw).unwrap();
    assert_eq!(parsed, captioner.answer(&r, &facts));
    assert_eq!(reply.usage.prompt_tokens, 4 + 6);
    assert_eq!(reply.usage.completion_tokens, estimate_tokens(&reply.raw));
    assert!(reply.usage.completion_tokens > 80);
    assert_eq!(reply.latency_ms, 0);
    assert_eq!(reply.finish_reason, "stop");
    let info = captioner.info();
    assert!(!info.vision && info.endpoint.contains("seed=3"));
}

#[test]
fn bound_cuts_at_a_word_and_keeps_the_limit() {
    let text = "alpha beta gamma delta epsilon zeta eta theta";
    let cut = bound(text, 20);
    assert!(cut.chars().count() <= 20, "{cut}");
    assert!(cut.ends_with('.') && cut.starts_with("alpha beta"));
    assert_eq!(bound("short", 20), "short");
}

fn arb_measured(range: std::ops::Range<f32>) -> impl Strategy<Value = Option<Measured<f32>>> {
    prop_oneof![
        Just(None),
        (
            prop_oneof![range, Just(f32::NAN), Just(-1.0f32), Just(50.0f32)],
            prop_oneof![0.0f32..1.0, Just(f32::NAN)]
        )
            .prop_map(|(value, confidence)| Some(Measured { value, confidence })),
    ]
}

prop_compose! {
    fn arb_labels()(
        dr in proptest::option::of(0u8..6),
        dme in proptest::option::of(0u8..3),
        glaucoma in proptest::option::of(prop_oneof![Just(Glaucoma::No), Just(Glaucoma::Suspect), Just(Glaucoma::Yes)]),
        amd in proptest::option::of(any::<bool>()),
        myopia in proptest::option::of(0u8..7),
        codes in proptest::collection::vec("[ -~]{0,30}", 0..5),
        quality in proptest::option::of(prop_oneof![Just(QualityGrade::Good), Just(QualityGrade::Usable), Just(QualityGrade::Reject)]),
        cdr in proptest::option::of("[0-9.a-z]{0,5}"),
    ) -> Labels {
        let mut labels = Labels { dr_grade: dr, dme, glaucoma, amd, myopic_maculopathy: myopia,
            disease_codes: codes, quality, ..Labels::default() };
        if let Some(cdr) = cdr {
            labels.raw.insert("ExpCDR".into(), cdr);
        }
        labels
    }
}

prop_compose! {
    fn arb_facts()(
        cdr in arb_measured(0.0..1.0),
        density in arb_measured(0.0..0.3),
        tortuosity in arb_measured(0.0..0.5),
        fractal in arb_measured(1.0..2.0),
        brightness in prop_oneof![0.0f32..1.0, Just(f32::NAN)],
        uniformity in prop_oneof![0.0f32..1.0, Just(f32::NAN)],
        fov in prop_oneof![0.0f32..1.0, Just(f32::INFINITY)],
        measured in prop_oneof![Just(QualityGrade::Good), Just(QualityGrade::Usable), Just(QualityGrade::Reject)],
        disc in any::<bool>(),
        centring in proptest::option::of(prop_oneof![Just(Centring::Disc), Just(Centring::Macula)]),
    ) -> ImageFacts {
        let mut facts = full_facts();
        facts.cup_to_disc_ratio = cdr;
        facts.vessel_density = density;
        facts.tortuosity = tortuosity;
        facts.fractal_dimension = fractal;
        facts.quality.brightness = brightness;
        facts.quality.illumination_uniformity = uniformity;
        facts.quality.grade = measured;
        facts.fov_fraction = fov;
        if !disc { facts.disc = None; }
        facts.centring = centring;
        facts
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_labels_and_facts_give_schema_bounded_output(
        labels in arb_labels(),
        facts in arb_facts(),
        seed in any::<u64>(),
        name in "[a-z0-9_/]{1,20}",
        side in prop_oneof![Just(Laterality::Left), Just(Laterality::Right), Just(Laterality::Unknown)],
    ) {
        let r = record(&name, labels.clone(), side);
        let answer = OfflineCaptioner::new(seed).answer(&r, &facts);
        assert_well_formed(&answer);
        prop_assert!(answer.lesions.len() <= bounds::LESIONS_MAX);
        prop_assert!(!answer.caption.contains("NaN"));
        let lower = answer.caption.to_lowercase();
        match side {
            Laterality::Left => prop_assert!(!lower.contains("right eye")),
            Laterality::Right => prop_assert!(!lower.contains("left eye")),
            Laterality::Unknown => prop_assert!(!lower.contains("left eye") && !lower.contains("right eye")),
        }
        if labels.dr_grade == Some(0) {
            prop_assert!(answer.lesions.iter().all(|l| !l.kind.is_diabetic()), "{:?}", answer.lesions);
            prop_assert!(dr_words_only_negated(&answer.caption), "{}", answer.caption);
        }
        if labels.dr_grade.unwrap_or(0) <= 3 {
            prop_assert!(answer.lesions.iter().all(|l| !l.kind.is_proliferative_sign()));
        }
        if labels.amd != Some(true) {
            prop_assert!(answer.lesions.iter().all(|l| !l.kind.is_amd()));
        }
        if labels.is_normal() {
            prop_assert!(answer.lesions.is_empty(), "{:?}", answer.lesions);
        }
    }
}

#[test]
fn heaviest_labels_still_fit_the_budget() {
    let everything = Labels {
        dr_grade: Some(4),
        dme: Some(2),
        glaucoma: Some(Glaucoma::Yes),
        amd: Some(true),
        myopic_maculopathy: Some(4),
        disease_codes: vec!["DR".into(), "ARMD".into(), "MYA".into(), "ODC".into()],
        quality: Some(QualityGrade::Reject),
        ..Labels::default()
    };
    let mut longest = 0;
    for answer in many(&everything, &full_facts(), 100) {
        assert_well_formed(&answer);
        assert_eq!(answer.lesions.len(), bounds::LESIONS_MAX);
        let kinds: Vec<LesionType> = answer.lesions.iter().map(|l| l.kind).collect();
        // The findings the labels require survive the cap.
        assert!(kinds.contains(&LesionType::Neovascularisation));
        assert!(kinds.contains(&LesionType::Drusen));
        assert!(kinds.contains(&LesionType::RnflDefect));
        assert!(kinds.contains(&LesionType::Tessellation));
        assert!(
            answer.caption.contains("Impression")
                || answer.caption.contains("Overall")
                || answer.caption.contains("findings indicate")
        );
        longest = longest.max(answer.caption.split_whitespace().count());
    }
    assert!(longest <= *CAPTION_WORDS.end());
}

#[test]
#[ignore = "prints sample captions for reading"]
fn print_samples() {
    let cases = [
        ("normal", dr(0), full_facts()),
        ("dr2", dr(2), full_facts()),
        ("dr4", dr(4), bare_facts()),
        (
            "glaucoma",
            Labels {
                glaucoma: Some(Glaucoma::Yes),
                ..Labels::default()
            },
            full_facts(),
        ),
        ("unlabelled", Labels::default(), bare_facts()),
        (
            "amd",
            Labels {
                amd: Some(true),
                dr_grade: Some(0),
                ..Labels::default()
            },
            full_facts(),
        ),
    ];
    for (name, labels, facts) in cases {
        let answer = &many(&labels, &facts, 1)[0];
        println!(
            "== {name} ({} words)\n{}\n{}\n",
            answer.caption.split_whitespace().count(),
            answer.caption,
            serde_json::to_string_pretty(&answer.lesions).unwrap()
        );
    }
}

#[test]
#[ignore = "throughput measurement; run with --ignored --nocapture"]
fn measure_throughput() {
    let captioner = OfflineCaptioner::new(1);
    let records: Vec<Record> = (0..10_000)
        .map(|i| record(&format!("m_{i}.jpg"), dr((i % 5) as u8), Laterality::Left))
        .collect();
    let facts = full_facts();
    let started = std::time::Instant::now();
    let mut bytes = 0usize;
    for r in &records {
        bytes += serde_json::to_string(&captioner.answer(r, &facts))
            .unwrap()
            .len();
    }
    let elapsed = started.elapsed();
    println!(
        "{} answers in {:?}: {:.0}/s, mean {} bytes",
        records.len(),
        elapsed,
        records.len() as f64 / elapsed.as_secs_f64(),
        bytes / records.len()
    );
}

/// The embedded rules, the schema asking for every style they define, and a validator for it.
fn styled() -> &'static (Vec<retina_validate::Style>, retina_validate::Validator) {
    static STYLED: OnceLock<(Vec<retina_validate::Style>, retina_validate::Validator)> =
        OnceLock::new();
    STYLED.get_or_init(|| {
        let rules = retina_validate::Rules::embedded();
        let styles: Vec<retina_validate::Style> = rules.styles().to_vec();
        let refs: Vec<&retina_validate::Style> = styles.iter().collect();
        let schema = retina_validate::CaptionSchema::embedded().with_variants(&refs);
        (
            styles,
            retina_validate::Validator::new(&schema, rules).unwrap(),
        )
    })
}

#[test]
fn styled_answers_carry_every_style_within_its_budget() {
    let (styles, validator) = styled();
    let captioner = OfflineCaptioner::new(3).with_styles(styles);
    let r = record("a/1.png", dr(2), Laterality::Left);
    let answer = captioner.answer(&r, &full_facts());
    let short = &answer.caption_variants["short"];
    assert!(short.contains("left eye"), "{short}");
    assert!(TokenizerKind::Clip.count(short) <= 77, "{short}");
    assert!(TokenizerKind::GemmaProxy.count(&answer.caption) <= 256);
    let raw = serde_json::to_string(&answer).unwrap();
    let verdict = validator.validate(&raw, &r, &full_facts());
    assert!(verdict.is_accepted(), "{:?}", verdict.reasons());
    // Without styles the answer has no variants and keeps the plain schema.
    assert!(
        OfflineCaptioner::new(3)
            .answer(&r, &full_facts())
            .caption_variants
            .is_empty()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn styled_answers_pass_every_rule(
        labels in arb_labels(),
        facts in arb_facts(),
        seed in any::<u64>(),
        name in "[a-z0-9_/]{1,20}",
        side in prop_oneof![Just(Laterality::Left), Just(Laterality::Right), Just(Laterality::Unknown)],
    ) {
        let (styles, validator) = styled();
        let r = record(&name, labels, side);
        let answer = OfflineCaptioner::new(seed).with_styles(styles).answer(&r, &facts);
        let raw = serde_json::to_string(&answer).unwrap();
        let verdict = validator.validate(&raw, &r, &facts);
        prop_assert!(verdict.is_accepted(), "{:?}\n{}", verdict.reasons(), raw);
    }
}
