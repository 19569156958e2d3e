//! The fact sheet: a record's labels and an image's measurements turned into words for templates.
//!
//! Everything here is pure formatting. Values are rounded, carry units, and measurements carry
//! the method's confidence; a measurement that failed (absent, or not a finite number) is left
//! out entirely so no template can show it as zero.

use retina_records::{
    Centring, DiscSide, Glaucoma, ImageFacts, Laterality, Measured, QualityGrade, Record, Sex,
};
use serde::Serialize;

/// One named fact in words, as templates print it (`- name: value (confidence ...)`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fact {
    /// What the fact is ("vertical cup-to-disc ratio").
    pub name: String,
    /// The value with its unit or meaning ("0.48").
    pub value: String,
    /// The method's confidence in words ("0.82 (high)"); absent for labels and exact facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
}

impl Fact {
    fn exact(name: &str, value: String) -> Fact {
        Fact {
            name: name.to_string(),
            value,
            confidence: None,
        }
    }

    fn measured(name: &str, value: String, confidence: f32) -> Fact {
        Fact {
            name: name.to_string(),
            value,
            confidence: Some(confidence_words(confidence)),
        }
    }
}

/// Image quality as the templates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityFacts {
    /// `good`, `usable` or `reject`.
    pub grade: String,
    /// Where the grade comes from: the dataset's label wins over the measured grade.
    pub source: String,
    /// The measured metrics in words.
    pub metrics: Vec<Fact>,
}

/// The facts given to the templates: labels in words, measurements rounded with units and
/// confidence, absent ones omitted. Serialised field names are the template variable names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactSheet {
    /// Dataset name from the manifest.
    pub dataset: String,
    /// "right eye" or "left eye"; absent when laterality is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eye: Option<String>,
    /// True when the dataset gave at least one diagnostic label (DR, DME, glaucoma, AMD,
    /// myopic maculopathy or disease codes).
    pub labelled: bool,
    /// True when labelled and the labels describe a normal eye.
    pub normal: bool,
    /// Diagnostic labels in words.
    pub labels: Vec<Fact>,
    /// Dataset disease codes and free-text findings, verbatim.
    pub notes: Vec<String>,
    /// What the labels imply should be visible (e.g. "microaneurysms").
    pub implied: Vec<String>,
    /// Age and sex in words; absent when neither is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Image quality grade and metrics.
    pub quality: QualityFacts,
    /// Image geometry: resolution, field of view, centring, disc position.
    pub image: Vec<Fact>,
    /// Automatic measurements that succeeded.
    pub measurements: Vec<Fact>,
}

/// Builds the fact sheet of one record and its measured image facts.
pub fn fact_sheet(record: &Record, facts: &ImageFacts) -> FactSheet {
    let labels = &record.labels;
    let eye = match record.laterality {
        Laterality::Left => Some("left eye".to_string()),
        Laterality::Right => Some("right eye".to_string()),
        Laterality::Unknown => None,
    };
    let labelled = is_labelled(labels);
    let mut notes: Vec<String> = labels
        .disease_codes
        .iter()
        .map(|code| format!("disease code {}", code.trim()))
        .collect();
    notes.extend(
        labels
            .findings
            .iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty()),
    );
    FactSheet {
        dataset: record.dataset.clone(),
        eye,
        labelled,
        normal: labelled && labels.is_normal(),
        labels: label_facts(labels),
        notes,
        implied: implied_findings(labels),
        patient: patient_words(labels.age, labels.sex),
        quality: quality_facts(labels.quality, facts),
        image: image_facts(facts),
        measurements: measurement_facts(facts),
    }
}

/// True when the labels carry any diagnosis (quality, age and sex alone do not count).
pub fn is_labelled(labels: &retina_records::Labels) -> bool {
    labels.dr_grade.is_some()
        || labels.dme.is_some()
        || labels.glaucoma.is_some()
        || labels.amd.is_some()
        || labels.myopic_maculopathy.is_some()
        || !labels.disease_codes.is_empty()
}

/// ICDR grade in words, with what the grade means.
pub fn dr_words(grade: u8) -> String {
    match grade {
        0 => "ICDR grade 0 of 4, no diabetic retinopathy".to_string(),
        1 => "ICDR grade 1 of 4, mild non-proliferative diabetic retinopathy (microaneurysms only)"
            .to_string(),
        2 => "ICDR grade 2 of 4, moderate non-proliferative diabetic retinopathy (more than \
              microaneurysms: dot and blot haemorrhages, hard exudates or cotton-wool spots)"
            .to_string(),
        3 => "ICDR grade 3 of 4, severe non-proliferative diabetic retinopathy (haemorrhages in \
              four quadrants, venous beading in two, or intraretinal microvascular abnormalities \
              in one)"
            .to_string(),
        4 => "ICDR grade 4 of 4, proliferative diabetic retinopathy (neovascularisation, \
              preretinal or vitreous haemorrhage, fibrous proliferation)"
            .to_string(),
        other => format!("grade {other}, outside the ICDR 0-4 scale (ungradable in the dataset)"),
    }
}

fn label_facts(labels: &retina_records::Labels) -> Vec<Fact> {
    let mut out = Vec::new();
    if let Some(grade) = labels.dr_grade {
        out.push(Fact::exact("diabetic retinopathy", dr_words(grade)));
    }
    if let Some(dme) = labels.dme {
        let words = match dme {
            0 => "no diabetic macular oedema".to_string(),
            1 => "diabetic macular oedema present (grade 1: hard exudates in the macular region)"
                .to_string(),
            n => format!(
                "diabetic macular oedema, risk grade {n} (hard exudates close to the centre of \
                 the macula)"
            ),
        };
        out.push(Fact::exact("diabetic macular oedema", words));
    }
    if let Some(glaucoma) = labels.glaucoma {
        let words = match glaucoma {
            Glaucoma::No => "no glaucoma",
            Glaucoma::Suspect => "glaucoma suspect (borderline glaucomatous optic disc)",
            Glaucoma::Yes => "glaucoma (glaucomatous optic neuropathy)",
        };
        out.push(Fact::exact("glaucoma", words.to_string()));
    }
    if let Some(amd) = labels.amd {
        let words = if amd {
            "age-related macular degeneration present"
        } else {
            "no age-related macular degeneration"
        };
        out.push(Fact::exact(
            "age-related macular degeneration",
            words.to_string(),
        ));
    }
    if let Some(grade) = labels.myopic_maculopathy {
        let meaning = match grade {
            0 => "no myopic maculopathy",
            1 => "tessellated fundus",
            2 => "diffuse chorioretinal atrophy",
            3 => "patchy chorioretinal atrophy",
            4 => "macular atrophy",
            _ => "outside the META-PM 0-4 scale",
        };
        out.push(Fact::exact(
            "myopic maculopathy",
            format!("META-PM category {grade} of 4, {meaning}"),
        ));
    }
    out
}

fn implied_findings(labels: &retina_records::Labels) -> Vec<String> {
    let mut out: Vec<&str> = Vec::new();
    match labels.dr_grade {
        Some(1) => out.push("microaneurysms"),
        Some(2) => out.extend([
            "microaneurysms",
            "dot and blot haemorrhages or hard exudates",
        ]),
        Some(3) => out.extend([
            "intraretinal haemorrhages in four quadrants",
            "venous beading or intraretinal microvascular abnormalities",
        ]),
        Some(4) => out.push("neovascularisation of the disc or elsewhere"),
        _ => {}
    }
    if labels.dme.unwrap_or(0) > 0 {
        out.push("hard exudates near the fovea");
    }
    if labels.amd == Some(true) {
        out.push("drusen at the macula");
    }
    match labels.glaucoma {
        Some(Glaucoma::Yes) => out.extend([
            "a large cup with neuroretinal rim thinning",
            "a nerve fibre layer defect",
        ]),
        Some(Glaucoma::Suspect) => out.push("an enlarged cup with borderline rim thinning"),
        _ => {}
    }
    match labels.myopic_maculopathy {
        Some(1) => out.push("a tessellated fundus"),
        Some(2..=4) => out.extend(["a tessellated fundus", "chorioretinal atrophy"]),
        _ => {}
    }
    if is_labelled(labels) && labels.is_normal() {
        out.push("no lesions: a normal fundus");
    }
    out.into_iter().map(str::to_string).collect()
}

fn patient_words(age: Option<f32>, sex: Option<Sex>) -> Option<String> {
    let age = age.filter(|a| a.is_finite() && *a > 0.0 && *a < 130.0);
    let sex = sex.map(|s| match s {
        Sex::Female => "female",
        Sex::Male => "male",
    });
    match (age, sex) {
        (Some(a), Some(s)) => Some(format!("{:.0}-year-old {s}", a)),
        (Some(a), None) => Some(format!("{:.0} years old", a)),
        (None, Some(s)) => Some(s.to_string()),
        (None, None) => None,
    }
}

fn quality_facts(label: Option<QualityGrade>, facts: &ImageFacts) -> QualityFacts {
    let q = &facts.quality;
    let (grade, source) = match label {
        Some(grade) => (grade, "dataset label"),
        None => (q.grade, "measured"),
    };
    let mut metrics = Vec::new();
    if let Some(v) = finite(q.brightness) {
        metrics.push(Fact::exact(
            "brightness",
            format!("{v:.2} (mean luminance in the field, 0-1)"),
        ));
    }
    if let Some(v) = finite(q.contrast) {
        metrics.push(Fact::exact(
            "contrast",
            format!("{v:.2} (luminance standard deviation, 0-1)"),
        ));
    }
    if let Some(v) = finite(q.sharpness) {
        metrics.push(Fact::exact(
            "sharpness",
            format!("{v:.1} (variance of the Laplacian of the green channel)"),
        ));
    }
    if let Some(v) = finite(q.illumination_uniformity) {
        metrics.push(Fact::exact(
            "illumination uniformity",
            format!("{v:.2} (1 is perfectly even)"),
        ));
    }
    if label.is_some() {
        metrics.push(Fact::exact("measured grade", q.grade.as_str().to_string()));
    }
    QualityFacts {
        grade: grade.as_str().to_string(),
        source: source.to_string(),
        metrics,
    }
}

fn image_facts(facts: &ImageFacts) -> Vec<Fact> {
    let mut out = vec![Fact::exact(
        "resolution",
        format!(
            "{} x {} pixels, width x height (original {} x {})",
            facts.output_width, facts.output_height, facts.original_width, facts.original_height
        ),
    )];
    if let Some(v) = finite(facts.fov_fraction) {
        out.push(Fact::exact(
            "field of view",
            format!(
                "{:.0}% of the original frame",
                (v * 100.0).clamp(0.0, 100.0)
            ),
        ));
    }
    if let Some(centring) = facts.centring {
        let words = match centring {
            Centring::Disc => "disc-centred",
            Centring::Macula => "macula-centred",
        };
        out.push(Fact::exact("centring", words.to_string()));
    }
    if let Some(disc) = facts.disc
        && let (Some(x), Some(y), Some(d), Some(c)) = (
            finite(disc.x),
            finite(disc.y),
            finite(disc.diameter),
            finite(disc.confidence),
        )
    {
        let side = match disc.side {
            DiscSide::Left => "left side of the image",
            DiscSide::Right => "right side of the image",
            DiscSide::Centre => "centre of the image",
        };
        out.push(Fact::measured(
            "optic disc position",
            format!(
                "{side}, centre at {x:.2} of the width and {y:.2} of the height, diameter {:.0}% \
                 of the field of view",
                d * 100.0
            ),
            c,
        ));
    }
    out
}

fn measurement_facts(facts: &ImageFacts) -> Vec<Fact> {
    let mut out = Vec::new();
    if let Some((v, c)) = measured_f32(facts.cup_to_disc_ratio) {
        out.push(Fact::measured(
            "vertical cup-to-disc ratio",
            format!("{v:.2}"),
            c,
        ));
    }
    if let Some((v, c)) = measured_f32(facts.vessel_density) {
        out.push(Fact::measured(
            "vessel density",
            format!("{:.1}% of field-of-view pixels", v * 100.0),
            c,
        ));
    }
    if let Some((v, c)) = measured_f32(facts.tortuosity) {
        out.push(Fact::measured(
            "vessel tortuosity",
            format!("{v:.3} (arc length / chord - 1, mean over segments)"),
            c,
        ));
    }
    if let Some((v, c)) = measured_f32(facts.fractal_dimension) {
        out.push(Fact::measured(
            "vessel fractal dimension",
            format!("{v:.2} (box counting)"),
            c,
        ));
    }
    if let Some((v, c)) = measured_u32(facts.bright_lesion_candidates) {
        out.push(Fact::measured(
            "bright lesion candidates",
            format!("{v} exudate-like spots (automatic count, not a diagnosis)"),
            c,
        ));
    }
    if let Some((v, c)) = measured_u32(facts.dark_lesion_candidates) {
        out.push(Fact::measured(
            "dark lesion candidates",
            format!("{v} haemorrhage-like spots (automatic count, not a diagnosis)"),
            c,
        ));
    }
    out
}

fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

/// A float measurement with a finite value and confidence, confidence clamped to 0-1.
pub(crate) fn measured_f32(m: Option<Measured<f32>>) -> Option<(f32, f32)> {
    let m = m?;
    Some((finite(m.value)?, finite(m.confidence)?.clamp(0.0, 1.0)))
}

fn measured_u32(m: Option<Measured<u32>>) -> Option<(u32, f32)> {
    let m = m?;
    Some((m.value, finite(m.confidence)?.clamp(0.0, 1.0)))
}

fn confidence_words(c: f32) -> String {
    let c = if c.is_finite() {
        c.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let word = if c >= 0.75 {
        "high"
    } else if c >= 0.5 {
        "moderate"
    } else {
        "low"
    };
    format!("{c:.2} ({word})")
}
