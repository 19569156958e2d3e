use super::*;
use proptest::prelude::*;
use retina_records::{
    Centring, DiscEstimate, DiscSide, Glaucoma, Labels, Laterality, Measured, QualityGrade,
    QualityMetrics, Sex,
};

fn record(labels: Labels) -> Record {
    let mut record = Record::new(
        "idrid",
        "train/IDRiD_001.jpg",
        PathBuf::from("/d/IDRiD_001.jpg"),
    );
    record.laterality = Laterality::Right;
    record.labels = labels;
    record
}

fn m(value: f32, confidence: f32) -> Option<Measured<f32>> {
    Some(Measured { value, confidence })
}

fn full_facts() -> ImageFacts {
    ImageFacts {
        original_width: 4288,
        original_height: 2848,
        output_width: 1024,
        output_height: 1024,
        fov_fraction: 0.71,
        quality: QualityMetrics {
            brightness: 0.41,
            contrast: 0.18,
            sharpness: 152.3,
            illumination_uniformity: 0.86,
            grade: QualityGrade::Good,
        },
        disc: Some(DiscEstimate {
            x: 0.31,
            y: 0.52,
            diameter: 0.14,
            side: DiscSide::Left,
            confidence: 0.9,
        }),
        centring: Some(Centring::Macula),
        vessel_density: m(0.078, 0.8),
        tortuosity: m(0.061, 0.6),
        fractal_dimension: m(1.49, 0.7),
        cup_to_disc_ratio: m(0.48, 0.82),
        bright_lesion_candidates: Some(Measured {
            value: 3,
            confidence: 0.4,
        }),
        dark_lesion_candidates: None,
        perceptual_hash: 0xdead_beef,
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
        bright_lesion_candidates: None,
        dark_lesion_candidates: None,
        ..full_facts()
    }
}

fn dr2() -> Labels {
    Labels {
        dr_grade: Some(2),
        dme: Some(0),
        age: Some(63.4),
        sex: Some(Sex::Female),
        ..Labels::default()
    }
}

#[test]
fn embedded_templates_compile_and_render() {
    let set = PromptSet::embedded();
    assert!(set.compile_error.is_none(), "{:?}", set.compile_error);
    let out = set
        .render(&record(dr2()), &full_facts(), PromptMode::Vision)
        .unwrap();
    assert!(!out.system.is_empty() && !out.user.is_empty());
    for text in [&out.system, &out.user] {
        assert!(!text.contains("{{") && !text.contains("{%"), "{text}");
        assert!(!text.contains("\n\n\n"), "blank runs must be collapsed");
    }
}

#[test]
fn rendering_includes_grade_words_and_measurements() {
    let set = PromptSet::embedded();
    let out = set
        .render(&record(dr2()), &full_facts(), PromptMode::Vision)
        .unwrap();
    let user = &out.user;
    for needle in [
        "ICDR grade 2 of 4",
        "moderate non-proliferative diabetic retinopathy",
        "no diabetic macular oedema",
        "right eye",
        "63-year-old female",
        "vertical cup-to-disc ratio: 0.48; confidence 0.82 (high)",
        "vessel density: 7.8% of field-of-view pixels",
        "vessel tortuosity: 0.061",
        "vessel fractal dimension: 1.49",
        "bright lesion candidates: 3",
        "macula-centred",
        "Image quality: good (measured)",
        "1024 x 1024 pixels",
        "Dataset: idrid",
    ] {
        assert!(user.contains(needle), "missing {needle:?} in:\n{user}");
    }
    // Facts come first, then the sections, then the caption paragraph.
    let facts_at = user.find("ICDR grade 2").unwrap();
    let disc_at = user.find("1. optic_disc").unwrap();
    let rnfl_at = user.find("2. rnfl").unwrap();
    let impression_at = user.find("8. impression").unwrap();
    let caption_at = user.find("Finally, caption").unwrap();
    assert!(facts_at < disc_at && disc_at < rnfl_at && rnfl_at < impression_at);
    assert!(impression_at < caption_at);
    assert!(user.contains("85 to 170 words"));
    assert!(
        !user.contains("caption_variants"),
        "no variants unless asked"
    );
}

#[test]
fn absent_measurements_are_omitted_not_zero() {
    let set = PromptSet::embedded();
    let mut facts = bare_facts();
    // A failed method that still wrote NaN counts as absent too.
    facts.tortuosity = m(f32::NAN, 0.5);
    let out = set
        .render(&record(dr2()), &facts, PromptMode::Vision)
        .unwrap();
    for absent in [
        "cup-to-disc ratio:",
        "vessel density",
        "vessel tortuosity",
        "fractal dimension",
        "lesion candidates",
        "optic disc position",
        "centring",
    ] {
        assert!(!out.user.contains(absent), "{absent:?} should be omitted");
    }
    assert!(!out.user.contains("NaN") && !out.user.contains("0.00 ("));
    assert!(out.user.contains("Automatic measurements: none succeeded"));
}

#[test]
fn text_only_variant_says_the_image_is_not_shown() {
    let set = PromptSet::embedded();
    let text = set
        .render(&record(dr2()), &full_facts(), PromptMode::TextOnly)
        .unwrap();
    let vision = set
        .render(&record(dr2()), &full_facts(), PromptMode::Vision)
        .unwrap();
    assert!(text.user.contains("NOT shown"));
    assert!(text.user.contains("facts below only"));
    assert!(!vision.user.contains("NOT shown"));
    assert!(vision.user.contains("The photograph is attached"));
    assert!(text.system.contains("the image is not shown to you"));
    assert!(vision.system.contains("what you see in the image"));
}

#[test]
fn normal_and_unlabelled_records_are_told_apart() {
    let normal = Labels {
        dr_grade: Some(0),
        ..Labels::default()
    };
    let sheet = fact_sheet(&record(normal), &full_facts());
    assert!(sheet.labelled && sheet.normal);
    assert!(sheet.implied.iter().any(|s| s.contains("no lesions")));

    let mut unlabelled = record(Labels {
        quality: Some(QualityGrade::Usable),
        ..Labels::default()
    });
    unlabelled.laterality = Laterality::Unknown;
    let sheet = fact_sheet(&unlabelled, &full_facts());
    assert!(!sheet.labelled && !sheet.normal);
    assert!(sheet.labels.is_empty() && sheet.implied.is_empty() && sheet.eye.is_none());
    assert_eq!(sheet.quality.grade, "usable");
    assert_eq!(sheet.quality.source, "dataset label");
    let out = PromptSet::embedded()
        .render(&unlabelled, &full_facts(), PromptMode::Vision)
        .unwrap();
    assert!(out.user.contains("Diagnostic labels: none given"));
    assert!(out.user.contains("laterality not recorded"));
}

#[test]
fn glaucoma_and_amd_labels_are_worded() {
    let labels = Labels {
        glaucoma: Some(Glaucoma::Yes),
        amd: Some(true),
        myopic_maculopathy: Some(2),
        disease_codes: vec!["ARMD".into()],
        ..Labels::default()
    };
    let sheet = fact_sheet(&record(labels), &full_facts());
    let values: Vec<&str> = sheet.labels.iter().map(|f| f.value.as_str()).collect();
    assert!(values.contains(&"glaucoma (glaucomatous optic neuropathy)"));
    assert!(values.contains(&"age-related macular degeneration present"));
    assert!(
        values
            .iter()
            .any(|v| v.contains("diffuse chorioretinal atrophy"))
    );
    assert!(sheet.notes.contains(&"disease code ARMD".to_string()));
    assert!(sheet.implied.iter().any(|s| s.contains("drusen")));
    assert!(sheet.implied.iter().any(|s| s.contains("rim thinning")));
    assert!(!sheet.normal);
}

fn write_templates(dir: &Path) {
    for (name, source) in TEMPLATE_FILES.iter().zip(EMBEDDED) {
        std::fs::write(dir.join(name), source).unwrap();
    }
}

#[test]
fn loaded_copy_matches_embedded_and_hash_follows_content() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path());
    let loaded = PromptSet::load(dir.path()).unwrap();
    let embedded = PromptSet::embedded();
    assert_eq!(loaded.hash(), embedded.hash());
    assert_eq!(loaded.hash().len(), 16);
    assert!(loaded.hash().chars().all(|c| c.is_ascii_hexdigit()));

    for name in TEMPLATE_FILES {
        let path = dir.path().join(name);
        let original = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{original}\nOne more sentence.")).unwrap();
        let changed = PromptSet::load(dir.path()).unwrap();
        assert_ne!(
            changed.hash(),
            embedded.hash(),
            "editing {name} must change the hash"
        );
        std::fs::write(&path, original).unwrap();
    }
    assert_eq!(PromptSet::load(dir.path()).unwrap().hash(), embedded.hash());
}

#[test]
fn syntax_error_names_the_template_file() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path());
    std::fs::write(
        dir.path().join("user_text.j2"),
        "Facts:\n{% for x in labels %}\n",
    )
    .unwrap();
    let err = PromptSet::load(dir.path()).unwrap_err();
    match &err {
        PromptError::Template { template, .. } => assert!(template.ends_with("user_text.j2")),
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("user_text.j2"), "{err}");
}

#[test]
fn render_error_names_the_template_file() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path());
    std::fs::write(
        dir.path().join("user_vision.j2"),
        "Eye: {{ no_such_fact }}\n",
    )
    .unwrap();
    let set = PromptSet::load(dir.path()).unwrap();
    // The text-only variant does not use the broken template.
    assert!(
        set.render(&record(dr2()), &full_facts(), PromptMode::TextOnly)
            .is_ok()
    );
    let err = set
        .render(&record(dr2()), &full_facts(), PromptMode::Vision)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("user_vision.j2"), "{text}");
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn missing_file_is_a_read_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path());
    std::fs::remove_file(dir.path().join("system.j2")).unwrap();
    match PromptSet::load(dir.path()).unwrap_err() {
        PromptError::Read { path, .. } => assert!(path.ends_with("system.j2")),
        other => panic!("wrong error {other:?}"),
    }
}

fn arb_measured() -> impl Strategy<Value = Option<Measured<f32>>> {
    prop_oneof![
        Just(None),
        (
            prop_oneof![-1.0f32..3.0, Just(f32::NAN), Just(f32::INFINITY)],
            prop_oneof![0.0f32..1.0, Just(f32::NAN), Just(2.0f32)]
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
        myopia in proptest::option::of(0u8..6),
        codes in proptest::collection::vec("[A-Z]{1,5}", 0..3),
        findings in proptest::collection::vec("[a-zA-Z ,]{0,20}", 0..2),
        age in proptest::option::of(prop_oneof![0.0f32..120.0, Just(f32::NAN)]),
    ) -> Labels {
        Labels { dr_grade: dr, dme, glaucoma, amd, myopic_maculopathy: myopia,
            disease_codes: codes, findings, age, ..Labels::default() }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_labels_and_facts_render_cleanly(
        labels in arb_labels(),
        cdr in arb_measured(),
        density in arb_measured(),
        tort in arb_measured(),
        fov in prop_oneof![0.0f32..1.0, Just(f32::NAN)],
        vision in any::<bool>(),
    ) {
        let mut facts = full_facts();
        facts.cup_to_disc_ratio = cdr;
        facts.vessel_density = density;
        facts.tortuosity = tort;
        facts.fov_fraction = fov;
        let mode = if vision { PromptMode::Vision } else { PromptMode::TextOnly };
        let out = PromptSet::embedded().render(&record(labels), &facts, mode).unwrap();
        prop_assert!(!out.user.contains("NaN") && !out.user.contains("{{"));
        let sheet = fact_sheet(&Record::new("x", "y", PathBuf::new()), &facts);
        for fact in sheet.measurements.iter().chain(&sheet.image) {
            prop_assert!(!fact.value.contains("inf") && !fact.value.contains("NaN"), "{:?}", fact);
        }
        prop_assert_eq!(
            sheet.measurements.iter().any(|f| f.name.contains("cup-to-disc")),
            cdr.is_some_and(|m| m.value.is_finite() && m.confidence.is_finite())
        );
    }
}

fn short_style() -> PromptStyle {
    PromptStyle {
        name: "short".into(),
        guidance: "one or two sentences of 20 to 45 words".into(),
        max_tokens: 77,
    }
}

#[test]
fn styles_reach_the_prompt_and_the_hash() {
    let plain = PromptSet::embedded();
    let detailed = PromptStyle {
        name: "detailed".into(),
        guidance: "one paragraph of 60 words".into(),
        max_tokens: 256,
    };
    let styled = PromptSet::embedded().with_styles(&[detailed.clone(), short_style()]);
    assert_ne!(styled.hash(), plain.hash(), "styles change the prompt hash");
    let other = PromptSet::embedded().with_styles(std::slice::from_ref(&detailed));
    assert_ne!(other.hash(), styled.hash());
    assert_eq!(PromptSet::embedded().with_styles(&[]).hash(), plain.hash());
    assert_eq!(styled.variants(), &[short_style()]);
    for mode in [PromptMode::Vision, PromptMode::TextOnly] {
        let user = styled
            .render(&record(dr2()), &full_facts(), mode)
            .unwrap()
            .user;
        assert!(
            user.contains("caption: one paragraph of 60 words"),
            "{user}"
        );
        assert!(
            user.contains("caption_variants") && user.contains("- short: one or two sentences"),
            "{user}"
        );
    }
}

#[test]
fn repair_prompt_quotes_the_answer_and_every_problem() {
    let set = PromptSet::embedded();
    let first = set
        .render(&record(dr2()), &full_facts(), PromptMode::TextOnly)
        .unwrap();
    let problems = vec![
        "consistency.dr_grade_2: lesions list none of intraretinal_haemorrhage".to_string(),
        "hygiene.hedging: caption hedges with \"may\"".to_string(),
    ];
    let repair = set
        .render_repair(&first, 1, "{\"caption\":\"old\"}", &problems)
        .unwrap();
    assert_eq!(repair.system, first.system);
    assert!(
        repair.user.starts_with(&first.user),
        "the first ask is kept"
    );
    assert!(repair.user.contains("{\"caption\":\"old\"}"));
    for problem in &problems {
        assert!(repair.user.contains(problem.as_str()), "{problem}");
    }
    assert!(repair.user.contains("attempt 1"));
    let long = "x".repeat(20_000);
    let cut = set.render_repair(&first, 2, &long, &problems).unwrap();
    assert!(
        cut.user.len() < first.user.len() + 8_000,
        "long answers are cut"
    );
}
