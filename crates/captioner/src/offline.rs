//! The embedded offline captioner: a deterministic, seeded writer of structured captions.
//!
//! It never sees the image. Every statement rests on the record's labels, the image stage's
//! measurements, or fundus anatomy that holds for every photograph (the disc lies nasal to the
//! macula, the arcades curve around it). Lesions are listed only when the labels imply them.
//! Several phrasings per section, chosen by a ChaCha RNG seeded from (seed, item id), keep
//! captions varied yet reproducible.

use crate::{
    CaptionError, CaptionReply, CaptionRequest, Captioner, CaptionerInfo, estimate_tokens,
};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use retina_records::{
    CaptionAnswer, Centring, DiscSide, Glaucoma, ImageFacts, Labels, Laterality, LesionExtent,
    LesionFinding, LesionLocation, LesionType, Measured, QualityGrade, Record, Usage,
};
use retina_validate::{Style, TokenizerKind};

/// Bounds from `schemas/caption.schema.json` (a test checks they match the file).
pub(crate) mod bounds {
    pub const OPTIC_DISC: usize = 400;
    pub const RNFL: usize = 300;
    pub const VESSELS: usize = 400;
    pub const MACULA: usize = 300;
    pub const BACKGROUND: usize = 300;
    pub const QUALITY: usize = 300;
    pub const IMPRESSION: usize = 300;
    pub const CAPTION_MIN: usize = 40;
    pub const CAPTION_MAX: usize = 1600;
    pub const LESIONS_MAX: usize = 8;
}

/// Caption length target in words (the RetinaLogos examples run 85-186).
pub(crate) const CAPTION_WORDS: std::ops::RangeInclusive<usize> = 85..=190;

/// Measurements below this confidence are not quoted.
const MIN_CONFIDENCE: f32 = 0.4;

/// A caption style's budget as the offline captioner fits it.
#[derive(Debug, Clone, PartialEq)]
struct Budget {
    name: String,
    tokenizer: TokenizerKind,
    max_tokens: usize,
    min_words: usize,
}

impl Budget {
    fn of(style: &Style) -> Budget {
        Budget {
            name: style.name().to_string(),
            tokenizer: style.tokenizer(),
            max_tokens: style.max_tokens(),
            min_words: style.min_words(),
        }
    }

    fn fits(&self, text: &str) -> bool {
        self.tokenizer.count(text) <= self.max_tokens
    }
}

/// The embedded captioner used when no endpoint is configured.
#[derive(Debug, Clone)]
pub struct OfflineCaptioner {
    seed: u64,
    /// The `detailed` style's budget, when styles were given.
    detailed: Option<Budget>,
    /// Every other style asked for, written into `caption_variants`.
    variants: Vec<Budget>,
}

impl OfflineCaptioner {
    /// A captioner whose output is a pure function of `seed`, the item id, labels and facts.
    /// It writes the detailed caption only; see [`OfflineCaptioner::with_styles`].
    pub fn new(seed: u64) -> Self {
        OfflineCaptioner {
            seed,
            detailed: None,
            variants: Vec::new(),
        }
    }

    /// Writes every style in `styles`: `detailed` (the caption) fitted to its token budget, and
    /// every other style into `caption_variants`, fitted to its budget and minimum length.
    pub fn with_styles(mut self, styles: &[Style]) -> Self {
        self.detailed = styles
            .iter()
            .find(|s| s.name() == "detailed")
            .map(Budget::of);
        self.variants = styles
            .iter()
            .filter(|s| s.name() != "detailed")
            .map(Budget::of)
            .collect();
        self
    }

    /// Writes the structured answer for one item.
    pub fn answer(&self, record: &Record, facts: &ImageFacts) -> CaptionAnswer {
        // Multiply before mixing so nearby seeds do not cancel nearby id hashes.
        let mixed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ record.id.stable_hash();
        let mut rng = ChaCha8Rng::seed_from_u64(mixed);
        let truth = Truth::from_record(record);
        let metrics = Metrics::from_facts(facts);
        let mut answer = Writer {
            rng: &mut rng,
            truth: &truth,
            metrics: &metrics,
            detailed: self.detailed.as_ref(),
        }
        .write();
        for budget in &self.variants {
            let text = short_caption(&truth, &answer, budget);
            answer.caption_variants.insert(budget.name.clone(), text);
        }
        answer
    }
}

/// A short caption from the answer's own grounded statements (eye, impression, lesion list),
/// most important first, keeping each only while the style's token budget holds.
fn short_caption(truth: &Truth, answer: &CaptionAnswer, budget: &Budget) -> String {
    let eye = truth.eye;
    let mut sentences = vec![format!("Colour fundus photograph of the {eye}.")];
    let impression = answer.impression.trim();
    if !impression.is_empty() {
        sentences.push(impression.to_string());
    }
    if !answer.lesions.is_empty() {
        let phrases: Vec<String> = answer
            .lesions
            .iter()
            .take(3)
            .map(|l| lesion_phrase(l, false))
            .collect();
        sentences.push(format!("Lesions: {}.", join_list(&phrases)));
    }
    let filler = [
        "The optic disc, the retinal vessels and the macula are visible.",
        "The photograph shows the posterior pole inside a circular field.",
        "The major vascular arcades curve above and below the macula.",
    ];
    let mut out = String::new();
    for sentence in sentences {
        let candidate = if out.is_empty() {
            sentence
        } else {
            format!("{out} {sentence}")
        };
        if budget.fits(&candidate) {
            out = candidate;
        }
    }
    for extra in filler {
        if word_count(&out) >= budget.min_words.max(12) {
            break;
        }
        let candidate = format!("{out} {extra}");
        if budget.fits(&candidate) {
            out = candidate;
        }
    }
    out
}

#[async_trait::async_trait]
impl Captioner for OfflineCaptioner {
    fn info(&self) -> CaptionerInfo {
        CaptionerInfo {
            model: "retina-offline-v1".to_string(),
            endpoint: format!("offline:seed={}", self.seed),
            vision: false,
        }
    }

    async fn caption(&self, request: CaptionRequest) -> Result<CaptionReply, CaptionError> {
        let answer = self.answer(&request.record, &request.facts);
        let raw = serde_json::to_string(&answer).map_err(|e| CaptionError::Fatal {
            message: format!("offline captioner could not serialise its answer: {e}"),
        })?;
        let prompt_tokens = estimate_tokens(&request.prompt.system)
            .saturating_add(estimate_tokens(&request.prompt.user));
        Ok(CaptionReply {
            usage: Usage {
                prompt_tokens,
                completion_tokens: estimate_tokens(&raw),
            },
            raw,
            latency_ms: 0,
            finish_reason: "stop".to_string(),
            cached_prompt_tokens: 0,
            from_cache: false,
        })
    }
}

/// What the labels establish, normalised.
struct Truth {
    eye: &'static str,
    labelled: bool,
    normal: bool,
    /// ICDR grade, only when on the 0-4 scale.
    dr: Option<u8>,
    dme: Option<bool>,
    glaucoma: Option<Glaucoma>,
    amd: bool,
    /// META-PM category, 0 when absent.
    myopia: u8,
    quality: QualityGrade,
    /// Dataset disease codes, sanitised, at most three.
    codes: Vec<String>,
    /// A cup-to-disc ratio from the labels' raw columns (ORIGA-style `CDR`), if any.
    labelled_cdr: Option<f32>,
}

impl Truth {
    fn from_record(record: &Record) -> Truth {
        let labels = &record.labels;
        let labelled = labels.dr_grade.is_some()
            || labels.dme.is_some()
            || labels.glaucoma.is_some()
            || labels.amd.is_some()
            || labels.myopic_maculopathy.is_some()
            || !labels.disease_codes.is_empty();
        Truth {
            eye: match record.laterality {
                Laterality::Left => "left eye",
                Laterality::Right => "right eye",
                Laterality::Unknown => "eye",
            },
            labelled,
            normal: labelled && labels.is_normal(),
            dr: labels.dr_grade.filter(|g| *g <= 4),
            dme: labels.dme.map(|d| d > 0),
            glaucoma: labels.glaucoma,
            amd: labels.amd == Some(true),
            myopia: labels.myopic_maculopathy.unwrap_or(0).min(4),
            quality: labels.quality.unwrap_or(QualityGrade::Good),
            codes: sanitised_codes(labels),
            labelled_cdr: labelled_cdr(labels),
        }
    }
}

fn sanitised_codes(labels: &Labels) -> Vec<String> {
    labels
        .disease_codes
        .iter()
        .map(|code| {
            code.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .take(16)
                .collect::<String>()
        })
        .filter(|code| !code.is_empty())
        .take(3)
        .collect()
}

fn labelled_cdr(labels: &Labels) -> Option<f32> {
    labels.raw.iter().find_map(|(key, value)| {
        if !key.to_ascii_lowercase().contains("cdr") {
            return None;
        }
        let v: f32 = value.trim().parse().ok()?;
        (v.is_finite() && v > 0.05 && v < 1.0).then_some(v)
    })
}

/// The measurements worth quoting (confident, finite, plausible).
struct Metrics {
    density: Option<f32>,
    tortuosity: Option<f32>,
    fractal: Option<f32>,
    cdr: Option<f32>,
    disc_side: Option<DiscSide>,
    centring: Option<Centring>,
    brightness: Option<f32>,
    uniformity: Option<f32>,
    measured_quality: QualityGrade,
    fov_percent: Option<f32>,
    output: (u32, u32),
}

fn confident(m: Option<Measured<f32>>, plausible: std::ops::Range<f32>) -> Option<f32> {
    let m = m?;
    (m.value.is_finite()
        && m.confidence.is_finite()
        && m.confidence >= MIN_CONFIDENCE
        && plausible.contains(&m.value))
    .then_some(m.value)
}

impl Metrics {
    fn from_facts(facts: &ImageFacts) -> Metrics {
        let q = &facts.quality;
        let unit = |v: f32| (v.is_finite() && (0.0..=1.0).contains(&v)).then_some(v);
        Metrics {
            density: confident(facts.vessel_density, 0.001..0.6),
            tortuosity: confident(facts.tortuosity, 0.0..5.0),
            fractal: confident(facts.fractal_dimension, 1.0..2.0),
            cdr: confident(facts.cup_to_disc_ratio, 0.05..1.0),
            disc_side: facts
                .disc
                .filter(|d| d.confidence.is_finite() && d.confidence >= MIN_CONFIDENCE)
                .map(|d| d.side),
            centring: facts.centring,
            brightness: unit(q.brightness),
            uniformity: unit(q.illumination_uniformity),
            measured_quality: q.grade,
            fov_percent: unit(facts.fov_fraction).map(|f| f * 100.0),
            output: (facts.output_width, facts.output_height),
        }
    }
}

/// One caption sentence. Sentences with a priority above 0 may be dropped from the caption
/// (highest first) to meet the word budget; `short` is a terser form used when even the
/// essential sentences run long. Section fields always keep every sentence in full.
struct Sentence {
    text: String,
    priority: u8,
    short: Option<String>,
}

fn essential(text: String) -> Sentence {
    Sentence {
        text,
        priority: 0,
        short: None,
    }
}

fn droppable(priority: u8, text: String) -> Sentence {
    Sentence {
        text,
        priority,
        short: None,
    }
}

struct Writer<'a> {
    rng: &'a mut ChaCha8Rng,
    truth: &'a Truth,
    metrics: &'a Metrics,
    /// The detailed caption's token budget, when styles were given.
    detailed: Option<&'a Budget>,
}

impl Writer<'_> {
    fn pick<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options.choose(self.rng).copied().unwrap_or("")
    }

    fn one_of(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    fn write(mut self) -> CaptionAnswer {
        let glaucoma_side = self.pick(&["inferior", "superior"]);
        let lesions = self.lesions(glaucoma_side);
        let has = |kind: LesionType| lesions.iter().any(|l| l.kind == kind);
        let at = |kind: LesionType, places: &[LesionLocation]| {
            lesions
                .iter()
                .any(|l| l.kind == kind && places.contains(&l.location))
        };
        let view = LesionView {
            nv_disc: at(LesionType::Neovascularisation, &[LesionLocation::OpticDisc]),
            nv_elsewhere: lesions.iter().any(|l| {
                l.kind == LesionType::Neovascularisation && l.location != LesionLocation::OpticDisc
            }),
            ppa: has(LesionType::PeripapillaryAtrophy),
            venous_beading: has(LesionType::VenousBeading),
            irma: has(LesionType::Irma),
            macular_exudates: at(
                LesionType::HardExudate,
                &[LesionLocation::Macula, LesionLocation::Fovea],
            ),
            drusen: has(LesionType::Drusen),
            macular_atrophy: at(
                LesionType::ChorioretinalAtrophy,
                &[LesionLocation::Macula, LesionLocation::Fovea],
            ),
            atrophy: has(LesionType::ChorioretinalAtrophy),
            tessellation: has(LesionType::Tessellation),
            four_quadrant_haemorrhages: at(
                LesionType::IntraretinalHaemorrhage,
                &[LesionLocation::Diffuse],
            ),
        };

        let modality = self.modality();
        let disc = self.optic_disc(&view, glaucoma_side);
        let rnfl = self.rnfl(glaucoma_side);
        let vessels = self.vessels(&view);
        let macula = self.macula(&view);
        let background = self.background(&view);
        let lesion_sentence = self.lesion_sentence(&lesions);
        let quality = self.quality();
        let impression = self.impression();

        let section = |sentences: &[Sentence], max: usize| bound(&join(sentences), max);
        let answer_sections = (
            section(&disc, bounds::OPTIC_DISC),
            section(&rnfl, bounds::RNFL),
            section(&vessels, bounds::VESSELS),
            section(&macula, bounds::MACULA),
            section(&background, bounds::BACKGROUND),
            section(&quality, bounds::QUALITY),
            section(&impression, bounds::IMPRESSION),
        );

        let mut caption_parts: Vec<Sentence> = Vec::new();
        for mut group in [
            modality,
            disc,
            rnfl,
            vessels,
            macula,
            background,
            lesion_sentence,
            quality,
            impression,
        ] {
            // Every section keeps at least its first sentence in the caption.
            if let Some(first) = group.first_mut() {
                first.priority = 0;
            }
            caption_parts.extend(group);
        }
        let padding = self.padding();
        let budget = self.detailed;
        let fits = |text: &str| budget.is_none_or(|b| b.fits(text));
        let caption = fit_caption(caption_parts, padding, &fits);

        CaptionAnswer {
            optic_disc: answer_sections.0,
            rnfl: answer_sections.1,
            vessels: answer_sections.2,
            macula: answer_sections.3,
            background: answer_sections.4,
            lesions,
            quality: answer_sections.5,
            impression: answer_sections.6,
            caption,
            caption_variants: Default::default(),
        }
    }

    /// Lesions the labels imply, most important first, at most the schema's eight.
    fn lesions(&mut self, glaucoma_side: &str) -> Vec<LesionFinding> {
        use LesionExtent as E;
        use LesionLocation as L;
        use LesionType as T;
        // (priority, finding): priority 0 findings are what the labels require.
        let mut found: Vec<(u8, LesionFinding)> = Vec::new();
        let mut add = |priority: u8, kind: T, location: L, extent: E| {
            if !found
                .iter()
                .any(|(_, f)| f.kind == kind && f.location == location)
            {
                found.push((
                    priority,
                    LesionFinding {
                        kind,
                        location,
                        extent,
                    },
                ));
            }
        };
        let quadrant = [L::Superior, L::Inferior, L::Temporal, L::Nasal];
        match self.truth.dr {
            Some(1) => {
                let loc = *[L::PosteriorPole, L::Temporal, L::Macula]
                    .choose(self.rng)
                    .unwrap_or(&L::PosteriorPole);
                let ext = *[E::Few, E::Single].choose(self.rng).unwrap_or(&E::Few);
                add(0, T::Microaneurysm, loc, ext);
            }
            Some(2) => {
                let ma_loc = *[L::PosteriorPole, L::Temporal]
                    .choose(self.rng)
                    .unwrap_or(&L::PosteriorPole);
                let ma_ext = *[E::Few, E::Several].choose(self.rng).unwrap_or(&E::Few);
                let h_loc = *[L::Superior, L::Inferior, L::Temporal, L::PosteriorPole]
                    .choose(self.rng)
                    .unwrap_or(&L::PosteriorPole);
                let h_ext = *[E::Few, E::Several].choose(self.rng).unwrap_or(&E::Few);
                let ex_loc = *[L::Temporal, L::PosteriorPole, L::Superior, L::Inferior]
                    .choose(self.rng)
                    .unwrap_or(&L::Temporal);
                let ex_ext = *[E::Few, E::Several].choose(self.rng).unwrap_or(&E::Few);
                add(0, T::IntraretinalHaemorrhage, h_loc, h_ext);
                add(1, T::Microaneurysm, ma_loc, ma_ext);
                add(1, T::HardExudate, ex_loc, ex_ext);
                if self.chance(0.3) {
                    let loc = *quadrant.choose(self.rng).unwrap_or(&L::Superior);
                    add(3, T::CottonWoolSpot, loc, E::Single);
                }
            }
            Some(3) => {
                add(0, T::IntraretinalHaemorrhage, L::Diffuse, E::Many);
                let which = self.one_of(3);
                if which != 1 {
                    let loc = *[L::Superior, L::Inferior]
                        .choose(self.rng)
                        .unwrap_or(&L::Superior);
                    add(0, T::VenousBeading, loc, E::Several);
                }
                if which != 0 {
                    let loc = *[L::Temporal, L::Nasal, L::PosteriorPole]
                        .choose(self.rng)
                        .unwrap_or(&L::Temporal);
                    add(0, T::Irma, loc, E::Few);
                }
                add(1, T::Microaneurysm, L::PosteriorPole, E::Many);
                if self.chance(0.5) {
                    let loc = *[L::Temporal, L::PosteriorPole]
                        .choose(self.rng)
                        .unwrap_or(&L::Temporal);
                    add(2, T::HardExudate, loc, E::Several);
                }
            }
            Some(4) => {
                let nv_loc = *[
                    L::OpticDisc,
                    L::Superior,
                    L::Inferior,
                    L::Temporal,
                    L::Periphery,
                ]
                .choose(self.rng)
                .unwrap_or(&L::OpticDisc);
                let nv_ext = *[E::Single, E::Few].choose(self.rng).unwrap_or(&E::Single);
                add(0, T::Neovascularisation, nv_loc, nv_ext);
                let h_loc = *[L::PosteriorPole, L::Diffuse]
                    .choose(self.rng)
                    .unwrap_or(&L::PosteriorPole);
                add(1, T::IntraretinalHaemorrhage, h_loc, E::Several);
                add(2, T::Microaneurysm, L::PosteriorPole, E::Several);
                if self.chance(0.4) {
                    let loc = *[L::Inferior, L::PosteriorPole]
                        .choose(self.rng)
                        .unwrap_or(&L::Inferior);
                    let ext = *[E::Single, E::Few].choose(self.rng).unwrap_or(&E::Single);
                    add(2, T::PreretinalHaemorrhage, loc, ext);
                }
            }
            _ => {}
        }
        // DR grade 0 with oedema is contradictory; grade 0 forbids diabetic lesions, so the
        // oedema is left to the impression.
        if self.truth.dme == Some(true) && self.truth.dr != Some(0) {
            let loc = *[L::Fovea, L::Macula].choose(self.rng).unwrap_or(&L::Macula);
            let ext = *[E::Few, E::Several].choose(self.rng).unwrap_or(&E::Few);
            add(0, T::HardExudate, loc, ext);
        }
        if self.truth.amd {
            let ext = *[E::Few, E::Several, E::Many]
                .choose(self.rng)
                .unwrap_or(&E::Several);
            add(0, T::Drusen, L::Macula, ext);
        }
        if self.truth.glaucoma == Some(Glaucoma::Yes) {
            let loc = if glaucoma_side == "superior" {
                L::Superior
            } else {
                L::Inferior
            };
            add(0, T::RnflDefect, loc, E::Single);
        }
        if self.truth.myopia >= 1 {
            let (loc, ext) = if self.truth.myopia >= 2 {
                (L::Diffuse, E::Extensive)
            } else {
                (
                    L::PosteriorPole,
                    *[E::Several, E::Many]
                        .choose(self.rng)
                        .unwrap_or(&E::Several),
                )
            };
            add(0, T::Tessellation, loc, ext);
            add(1, T::PeripapillaryAtrophy, L::Peripapillary, E::Single);
            // META-PM 2-4 is atrophy: required by the rule myopia_atrophy, so never cut.
            match self.truth.myopia {
                2 => add(0, T::ChorioretinalAtrophy, L::PosteriorPole, E::Extensive),
                3 => add(0, T::ChorioretinalAtrophy, L::PosteriorPole, E::Several),
                4 => add(0, T::ChorioretinalAtrophy, L::Macula, E::Extensive),
                _ => {}
            }
        }
        // Keep the required findings when over the limit; then restore reading order.
        let mut ranked: Vec<(usize, u8, LesionFinding)> = found
            .into_iter()
            .enumerate()
            .map(|(i, (p, f))| (i, p, f))
            .collect();
        ranked.sort_by_key(|(i, p, _)| (*p, *i));
        ranked.truncate(bounds::LESIONS_MAX);
        ranked.sort_by_key(|(i, _, _)| *i);
        ranked.into_iter().map(|(_, _, f)| f).collect()
    }

    fn modality(&mut self) -> Vec<Sentence> {
        let eye = self.truth.eye;
        let centring = match self.metrics.centring {
            Some(Centring::Disc) => "disc-centred ",
            Some(Centring::Macula) => "macula-centred ",
            None => "",
        };
        let text = match self.one_of(4) {
            0 => format!("A {centring}colour fundus photograph of the {eye}."),
            1 => format!(
                "This {centring}colour fundus photograph shows the posterior pole of the {eye}."
            ),
            2 => format!(
                "Colour retinal photograph of the {eye}, {}.",
                match self.metrics.centring {
                    Some(Centring::Disc) => "centred on the optic disc",
                    Some(Centring::Macula) => "centred on the macula",
                    None => "showing the posterior pole",
                }
            ),
            _ => format!(
                "The image is a {centring}colour fundus photograph of the {eye} within a circular field of view."
            ),
        };
        vec![essential(text)]
    }

    fn optic_disc(&mut self, view: &LesionView, glaucoma_side: &str) -> Vec<Sentence> {
        let mut out = Vec::new();
        let position = match self.metrics.disc_side {
            Some(DiscSide::Left) => Some("on the left side of the frame"),
            Some(DiscSide::Right) => Some("on the right side of the frame"),
            Some(DiscSide::Centre) => Some("in the centre of the frame"),
            None => None,
        };
        let labelled = self.truth.labelled;
        let glaucoma = self.truth.glaucoma;
        let healthy_disc =
            labelled && matches!(glaucoma, None | Some(Glaucoma::No)) && !view.nv_disc && !view.ppa;
        let first = match (position, healthy_disc) {
            (Some(pos), true) => match self.one_of(3) {
                0 => format!("The optic disc sits {pos}, pink with a sharp, regular margin."),
                1 => format!("The optic disc lies {pos} and has a healthy pink-orange colour and distinct margins."),
                _ => format!("Positioned {pos}, the optic disc is round and pink with well-defined borders."),
            },
            (Some(pos), false) => match self.one_of(2) {
                0 => format!("The optic disc lies {pos}, where the retinal vessels converge."),
                _ => format!("The optic disc is located {pos}, with the central vessel trunk at its centre."),
            },
            (None, true) => self
                .pick(&[
                    "The optic disc is pink with a sharp, regular margin.",
                    "The optic disc has a healthy pink-orange colour and distinct margins.",
                    "The optic disc is round and well perfused, with clear borders.",
                ])
                .to_string(),
            (None, false) => self
                .pick(&[
                    "The optic disc lies nasal to the macula, where the retinal vessels converge.",
                    "The optic disc sits nasal to the fovea, at the origin of the vascular arcades.",
                ])
                .to_string(),
        };
        out.push(essential(first));

        let cdr = self.usable_cdr();
        match glaucoma {
            Some(Glaucoma::Yes) => {
                let cup = match cdr {
                    Some(v) => format!(
                        "The disc shows a large cup, with a vertical cup-to-disc ratio of {v:.2}."
                    ),
                    None => self
                        .pick(&[
                            "The disc shows a large cup with a deep excavation.",
                            "A large cup occupies most of the disc.",
                        ])
                        .to_string(),
                };
                out.push(essential(cup));
                let rim = match self.one_of(3) {
                    0 => {
                        format!("Neuroretinal rim thinning is marked at the {glaucoma_side} pole.")
                    }
                    1 => format!(
                        "There is focal rim thinning of the neuroretinal rim {glaucoma_side}ly, breaking the ISNT pattern."
                    ),
                    _ => format!("The {glaucoma_side} neuroretinal rim shows clear rim thinning."),
                };
                out.push(essential(rim));
            }
            Some(Glaucoma::Suspect) => {
                let cup = match cdr {
                    Some(v) => {
                        format!("The cup is enlarged, with a vertical cup-to-disc ratio of {v:.2}.")
                    }
                    None => "The cup is enlarged relative to the disc.".to_string(),
                };
                out.push(essential(cup));
                out.push(droppable(
                    3,
                    format!(
                        "The neuroretinal rim shows borderline rim thinning {glaucoma_side}ly."
                    ),
                ));
            }
            _ => {
                if let Some(v) = cdr {
                    let text = match self.one_of(3) {
                        0 => format!("The vertical cup-to-disc ratio measures {v:.2}."),
                        1 => format!(
                            "The cup is central, with a vertical cup-to-disc ratio of {v:.2}."
                        ),
                        _ => format!("Cup-to-disc ratio is {v:.2} in the vertical meridian."),
                    };
                    out.push(droppable(2, text));
                }
                if healthy_disc {
                    let rim = self.pick(&[
                        "The neuroretinal rim is evenly preserved and follows the ISNT pattern.",
                        "The neuroretinal rim is healthy, thickest inferiorly and superiorly.",
                        "A full, pink neuroretinal rim surrounds the cup.",
                    ]);
                    out.push(droppable(3, rim.to_string()));
                }
            }
        }
        if view.nv_disc {
            out.push(droppable(
                2,
                self.pick(&[
                    "Fine new vessels of neovascularisation cross the disc surface.",
                    "Neovascularisation of the disc forms a fine vascular frond on its surface.",
                ])
                .to_string(),
            ));
        }
        if view.ppa {
            out.push(droppable(
                3,
                self.pick(&[
                    "A crescent of peripapillary atrophy borders the temporal disc margin.",
                    "Peripapillary atrophy surrounds the temporal edge of the disc.",
                ])
                .to_string(),
            ));
        }
        out
    }

    /// The cup-to-disc ratio to quote: labelled first, then measured, only when it agrees
    /// with the glaucoma label (a measurement contradicting the label is not repeated).
    fn usable_cdr(&self) -> Option<f32> {
        let value = self.truth.labelled_cdr.or(self.metrics.cdr)?;
        let agrees = match self.truth.glaucoma {
            Some(Glaucoma::Yes) => value >= 0.6,
            Some(Glaucoma::Suspect) => value >= 0.5,
            Some(Glaucoma::No) => value <= 0.65,
            None if self.truth.normal => value <= 0.65,
            None => (0.1..=0.95).contains(&value),
        };
        agrees.then_some(value)
    }

    fn rnfl(&mut self, glaucoma_side: &str) -> Vec<Sentence> {
        let quality = self.truth.quality;
        let text = match self.truth.glaucoma {
            Some(Glaucoma::Yes) => match self.one_of(3) {
                0 => format!("A wedge-shaped RNFL defect extends from the {glaucoma_side} pole of the disc along the arcuate bundle."),
                1 => format!("The retinal nerve fibre layer shows an RNFL defect {glaucoma_side}ly, a dark wedge where the striations are lost."),
                _ => format!("Nerve fibre layer striations are lost in a wedge-shaped RNFL defect in the {glaucoma_side} arcuate region."),
            },
            Some(Glaucoma::Suspect) => format!(
                "The retinal nerve fibre layer striations are thinner {glaucoma_side}ly, without a discrete wedge defect."
            ),
            _ if quality == QualityGrade::Reject => self
                .pick(&[
                    "The retinal nerve fibre layer cannot be assessed in detail at this image quality.",
                    "Image quality is too low to judge the nerve fibre layer striations.",
                ])
                .to_string(),
            _ if !self.truth.labelled => match quality {
                QualityGrade::Good => self
                    .pick(&[
                        "Retinal nerve fibre layer striations are visible along the arcades.",
                        "The nerve fibre layer reflex is visible along the superior and inferior arcades.",
                    ])
                    .to_string(),
                _ => "The retinal nerve fibre layer reflex is faint at this image quality.".to_string(),
            },
            _ => match quality {
                QualityGrade::Good => self
                    .pick(&[
                        "Retinal nerve fibre layer striations are clearly visible along the superior and inferior arcades, with no wedge defect.",
                        "The nerve fibre layer shows a uniform striated reflex along both arcades and no focal defect.",
                        "A healthy, evenly striated retinal nerve fibre layer runs along the arcades without any wedge defect.",
                    ])
                    .to_string(),
                _ => self
                    .pick(&[
                        "The retinal nerve fibre layer striations are faint but continuous along the arcades, with no focal defect.",
                        "The nerve fibre layer reflex is subdued at this image quality, with no wedge defect seen.",
                    ])
                    .to_string(),
            },
        };
        let mut out = vec![essential(text)];
        if self.truth.myopia >= 1 {
            out.push(droppable(
                4,
                "The nerve fibre layer reflex is muted against the tessellated background."
                    .to_string(),
            ));
        }
        out
    }

    fn vessels(&mut self, view: &LesionView) -> Vec<Sentence> {
        let mut out = Vec::new();
        let first = if self.truth.normal {
            self.pick(&[
                "The retinal arteries and veins have normal calibre and a regular course, the arteries narrower than the veins.",
                "Arteries and veins leave the disc with normal calibre and an even, regular course.",
                "The vascular arcades show normal arterial and venous calibre with a smooth course.",
            ])
            .to_string()
        } else {
            self.pick(&[
                "The major vascular arcades leave the disc superiorly and inferiorly and curve around the macula.",
                "The retinal arteries and veins branch from the disc into the superior and inferior arcades.",
                "The vascular arcades arch above and below the macula from the optic disc.",
            ])
            .to_string()
        };
        out.push(essential(first));
        if view.venous_beading {
            out.push(droppable(
                2,
                self.pick(&[
                    "The veins show segmental venous beading.",
                    "Venous beading is present along the major veins.",
                ])
                .to_string(),
            ));
        }
        if view.irma {
            out.push(droppable(
                2,
                "Intraretinal microvascular abnormalities lie between the arcades.".to_string(),
            ));
        }
        if view.nv_elsewhere {
            out.push(droppable(
                2,
                self.pick(&[
                    "Neovascularisation elsewhere forms fine new vessel fronds along the arcade.",
                    "Fronds of neovascularisation arise from a major vein away from the disc.",
                ])
                .to_string(),
            ));
        }
        let mut numbers: Vec<String> = Vec::new();
        if let Some(d) = self.metrics.density {
            numbers.push(match self.one_of(2) {
                0 => format!("a vessel density of {:.1}% of the field", d * 100.0),
                _ => format!("vessels covering {:.1}% of the field", d * 100.0),
            });
        }
        if let Some(t) = self.metrics.tortuosity {
            let course = if t < 0.1 {
                "low tortuosity"
            } else if t < 0.2 {
                "moderate tortuosity"
            } else {
                "marked tortuosity"
            };
            numbers.push(format!("{course} (index {t:.3})"));
        }
        if let Some(f) = self.metrics.fractal {
            numbers.push(format!("a branching fractal dimension of {f:.2}"));
        }
        if !numbers.is_empty() {
            let list = join_list(&numbers);
            let text = match self.one_of(3) {
                0 => format!("Measurement gives {list}."),
                1 => format!("The vessel network has {list}."),
                _ => format!("Vessel analysis shows {list}."),
            };
            out.push(droppable(1, text));
        }
        out
    }

    fn macula(&mut self, view: &LesionView) -> Vec<Sentence> {
        let mut out = Vec::new();
        if view.macular_exudates {
            out.push(droppable(
                2,
                self.pick(&[
                    "Hard exudates lie close to the fovea, within the macular region.",
                    "The macula carries yellow hard exudates near the foveal centre.",
                    "Clusters of hard exudates sit at the macula, close to the fovea.",
                ])
                .to_string(),
            ));
        }
        if view.drusen {
            out.push(droppable(
                2,
                self.pick(&[
                    "Yellow drusen are scattered across the macula.",
                    "The macula shows drusen clustered around the fovea.",
                    "Drusen dot the macular region.",
                ])
                .to_string(),
            ));
        }
        if view.macular_atrophy {
            out.push(droppable(
                2,
                "The macula shows well-demarcated chorioretinal atrophy.".to_string(),
            ));
        }
        if out.is_empty() {
            let no_exudates = self.truth.dme != Some(true)
                && !self.truth.amd
                && (self.truth.normal || self.truth.dme == Some(false) || self.truth.dr == Some(0));
            let text = if no_exudates {
                self.pick(&[
                    "The macula is flat with a bright foveal reflex and no exudates.",
                    "A clear foveal reflex marks the centre of the macula, with no exudates near the fovea.",
                    "The fovea shows a crisp reflex and the macula has no exudates.",
                ])
            } else {
                self.pick(&[
                    "The macula lies temporal to the disc, with the darker fovea at its centre.",
                    "The fovea forms the darker centre of the macula, temporal to the disc.",
                ])
            };
            out.push(essential(text.to_string()));
        }
        out
    }

    fn background(&mut self, view: &LesionView) -> Vec<Sentence> {
        let mut out = Vec::new();
        if view.tessellation {
            out.push(essential(
                self.pick(&[
                    "The background is tessellated, with large choroidal vessels showing through a thin pigment layer.",
                    "A tessellated fundus background reveals the choroidal vessels.",
                ])
                .to_string(),
            ));
            if view.atrophy && !view.macular_atrophy {
                out.push(droppable(
                    2,
                    "Pale areas of chorioretinal atrophy lie across the posterior pole."
                        .to_string(),
                ));
            }
        } else {
            let tone = match self.metrics.brightness {
                Some(b) if b < 0.2 => "a deep red",
                Some(b) if b > 0.6 => "a light orange",
                _ => "an orange-red",
            };
            let text = if self.truth.normal {
                match self.one_of(3) {
                    0 => format!("The fundus background has {tone} colour with even pigmentation."),
                    1 => {
                        format!("The background is {tone}, evenly pigmented out to the periphery.")
                    }
                    _ => format!("Even pigmentation gives the background {tone} tone."),
                }
            } else {
                match self.one_of(2) {
                    0 => format!("The fundus background has {tone} colour."),
                    _ => format!("The background shows {tone} tone."),
                }
            };
            out.push(essential(text));
        }
        if view.four_quadrant_haemorrhages {
            out.push(droppable(
                2,
                self.pick(&[
                    "Intraretinal haemorrhages are scattered through all four quadrants.",
                    "Blot haemorrhages extend into all four quadrants.",
                ])
                .to_string(),
            ));
        }
        out
    }

    fn lesion_sentence(&mut self, lesions: &[LesionFinding]) -> Vec<Sentence> {
        if lesions.is_empty() {
            let dr_free =
                (self.truth.normal || self.truth.dr == Some(0)) && self.truth.dme != Some(true);
            if !dr_free {
                // Labels say nothing about lesions (unlabelled, or only unknown codes).
                return Vec::new();
            }
            let text = self.pick(&[
                "There are no microaneurysms, no haemorrhages, no exudates and no neovascularisation.",
                "No haemorrhages, no exudates and no neovascularisation are present.",
                "The retina is free of haemorrhages, with no exudates and no neovascularisation.",
            ]);
            return vec![essential(text.to_string())];
        }
        let phrases: Vec<String> = lesions.iter().map(|l| lesion_phrase(l, true)).collect();
        let mut short: Vec<String> = Vec::new();
        for phrase in lesions.iter().map(|l| lesion_phrase(l, false)) {
            if !short.contains(&phrase) {
                short.push(phrase);
            }
        }
        let opening = self.one_of(3);
        let sentence = |list: String| match opening {
            0 => format!("Lesions comprise {list}."),
            1 => format!("The fundus shows {list}."),
            _ => format!("Visible lesions are {list}."),
        };
        vec![Sentence {
            text: sentence(join_list(&phrases)),
            priority: 0,
            short: Some(sentence(join_list(&short))),
        }]
    }

    fn quality(&mut self) -> Vec<Sentence> {
        let grade = self.truth.quality;
        let light = match self.metrics.uniformity {
            Some(u) if u >= 0.8 => "even illumination",
            Some(u) if u >= 0.6 => "slightly uneven illumination",
            Some(_) => "uneven illumination",
            None => "adequate illumination",
        };
        let exposure = match self.metrics.brightness {
            Some(b) if b < 0.2 => Some("a dark exposure"),
            Some(b) if b > 0.7 => Some("a bright exposure"),
            _ => None,
        };
        let first = match grade {
            QualityGrade::Good => match self.one_of(3) {
                0 => format!("Image quality is good, with sharp focus and {light}."),
                1 => format!("The photograph is of good quality: in focus, with {light}."),
                _ => format!("Good image quality, with clear focus and {light}."),
            },
            QualityGrade::Usable => match self.one_of(2) {
                0 => format!("Image quality is usable, with some blur and {light}."),
                _ => format!(
                    "The photograph is of usable quality, with reduced sharpness and {light}."
                ),
            },
            QualityGrade::Reject => match self.one_of(2) {
                0 => format!("Image quality is poor, with blur and {light}."),
                _ => format!("The photograph is of poor quality, limited by blur and {light}."),
            },
        };
        let mut out = vec![essential(first)];
        if let Some(exposure) = exposure {
            out.push(droppable(5, format!("The image has {exposure}.")));
        }
        if let Some(fov) = self.metrics.fov_percent
            && self.chance(0.5)
        {
            out.push(droppable(
                5,
                format!("The circular field of view fills {fov:.0}% of the original frame."),
            ));
        }
        if self.truth.labelled && grade != self.metrics.measured_quality && self.chance(0.3) {
            out.push(droppable(
                5,
                format!(
                    "Automatic grading rates it {}.",
                    self.metrics.measured_quality.as_str()
                ),
            ));
        }
        out
    }

    fn impression(&mut self) -> Vec<Sentence> {
        let eye = self.truth.eye;
        if self.truth.normal {
            let text = match self.one_of(3) {
                0 => format!(
                    "Impression: a normal fundus of the {eye} with no signs of retinopathy."
                ),
                1 => format!("Overall, a healthy {eye} fundus without retinopathy."),
                _ => format!("The {eye} fundus is normal, with no retinopathy."),
            };
            return vec![essential(text)];
        }
        if !self.truth.labelled {
            let text = match self.one_of(2) {
                0 => format!(
                    "Overall, a {} quality photograph of the {eye} described from its measurements.",
                    self.truth.quality.as_str()
                ),
                _ => format!(
                    "Impression: a {} quality fundus image of the {eye}, without a diagnostic grade.",
                    self.truth.quality.as_str()
                ),
            };
            return vec![essential(text)];
        }
        let mut parts: Vec<String> = Vec::new();
        match self.truth.dr {
            Some(1) => parts.push("mild non-proliferative diabetic retinopathy".into()),
            Some(2) => parts.push("moderate non-proliferative diabetic retinopathy".into()),
            Some(3) => parts.push("severe non-proliferative diabetic retinopathy".into()),
            Some(4) => parts.push("proliferative diabetic retinopathy".into()),
            _ => {}
        }
        match (self.truth.dme, self.truth.dr) {
            (Some(true), _) => parts.push("diabetic macular oedema".into()),
            (Some(false), Some(1..=4)) => parts.push("no macular oedema".into()),
            _ => {}
        }
        match self.truth.glaucoma {
            Some(Glaucoma::Yes) => parts.push("glaucomatous optic neuropathy".into()),
            Some(Glaucoma::Suspect) => parts.push("a borderline glaucomatous optic disc".into()),
            _ => {}
        }
        if self.truth.amd {
            parts.push("age-related macular degeneration".into());
        }
        match self.truth.myopia {
            1 => parts.push("a tessellated myopic fundus".into()),
            2..=4 => parts.push(format!(
                "myopic maculopathy (META-PM category {})",
                self.truth.myopia
            )),
            _ => {}
        }
        if parts.is_empty() {
            if self.truth.dr == Some(0) {
                parts.push("no diabetic retinopathy".into());
            }
            if !self.truth.codes.is_empty() {
                parts.push(format!(
                    "findings labelled {} by the dataset",
                    self.truth.codes.join(", ")
                ));
            }
        }
        if parts.is_empty() {
            parts.push("a fundus without a specific labelled diagnosis".into());
        }
        let list = join_list(&parts);
        let text = match self.one_of(3) {
            0 => format!("Impression: {list} in the {eye}."),
            1 => format!("Overall, the {eye} shows {list}."),
            _ => format!("The findings indicate {list} in the {eye}."),
        };
        vec![essential(text)]
    }

    /// Extra grounded sentences used only when the caption is short of the word budget.
    fn padding(&mut self) -> Vec<String> {
        let mut pool = vec![
            "The major vascular arcades curve above and below the macula.".to_string(),
            "Branch vessels fan out from the disc towards the periphery.".to_string(),
            "The macula lies temporal to the optic disc.".to_string(),
            "The photograph shows the posterior pole inside a circular field with a dark surround."
                .to_string(),
            format!(
                "The image is stored at {} by {} pixels.",
                self.metrics.output.0, self.metrics.output.1
            ),
        ];
        if let Some(fov) = self.metrics.fov_percent {
            pool.push(format!(
                "The field of view covers {fov:.0}% of the original frame."
            ));
        }
        // Shuffle by repeated picks so padded captions still vary.
        let mut out = Vec::new();
        while !pool.is_empty() {
            let i = self.one_of(pool.len());
            if i < pool.len() {
                out.push(pool.remove(i));
            } else {
                break;
            }
        }
        out
    }
}

/// Which lesion-driven statements the sections must make, so text and list agree.
struct LesionView {
    nv_disc: bool,
    nv_elsewhere: bool,
    ppa: bool,
    venous_beading: bool,
    irma: bool,
    macular_exudates: bool,
    drusen: bool,
    macular_atrophy: bool,
    atrophy: bool,
    tessellation: bool,
    four_quadrant_haemorrhages: bool,
}

/// "a few hard exudates in the temporal retina" (without the place when `with_place` is false).
fn lesion_phrase(lesion: &LesionFinding, with_place: bool) -> String {
    use LesionExtent as E;
    let (singular, plural, mass) = lesion_nouns(lesion.kind);
    let noun = if mass {
        let adjective = match lesion.extent {
            E::Single | E::Few => "focal",
            E::Several => "patchy",
            E::Many | E::Extensive => "widespread",
        };
        format!("{adjective} {singular}")
    } else {
        match lesion.extent {
            E::Single => format!("a single {singular}"),
            E::Few => format!("a few {plural}"),
            E::Several => format!("several {plural}"),
            E::Many => format!("many {plural}"),
            E::Extensive => format!("extensive {plural}"),
        }
    };
    let place = match lesion.location {
        LesionLocation::Superior => "in the superior retina",
        LesionLocation::Inferior => "in the inferior retina",
        LesionLocation::Nasal => "in the nasal retina",
        LesionLocation::Temporal => "in the temporal retina",
        LesionLocation::Macula => "at the macula",
        LesionLocation::Fovea => "near the fovea",
        LesionLocation::OpticDisc => "on the optic disc",
        LesionLocation::Peripapillary => "around the disc",
        LesionLocation::PosteriorPole => "at the posterior pole",
        LesionLocation::Periphery => "in the periphery",
        LesionLocation::Diffuse => "throughout the fundus",
    };
    if with_place {
        format!("{noun} {place}")
    } else {
        noun
    }
}

/// (singular, plural, mass noun) wording of a lesion type.
fn lesion_nouns(kind: LesionType) -> (&'static str, &'static str, bool) {
    use LesionType as T;
    match kind {
        T::Microaneurysm => ("microaneurysm", "microaneurysms", false),
        T::IntraretinalHaemorrhage => (
            "intraretinal haemorrhage",
            "intraretinal haemorrhages",
            false,
        ),
        T::HardExudate => ("hard exudate", "hard exudates", false),
        T::CottonWoolSpot => ("cotton-wool spot", "cotton-wool spots", false),
        T::VenousBeading => ("venous beading", "venous beading", true),
        T::Irma => (
            "intraretinal microvascular abnormality",
            "intraretinal microvascular abnormalities",
            false,
        ),
        T::Neovascularisation => ("neovascularisation", "neovascularisation", true),
        T::PreretinalHaemorrhage => ("preretinal haemorrhage", "preretinal haemorrhages", false),
        T::VitreousHaemorrhage => ("vitreous haemorrhage", "vitreous haemorrhage", true),
        T::FibrousProliferation => ("fibrous proliferation", "fibrous proliferation", true),
        T::Drusen => ("druse", "drusen", false),
        T::PigmentaryChange => ("pigmentary change", "pigmentary changes", false),
        T::GeographicAtrophy => ("geographic atrophy", "geographic atrophy", true),
        T::ChoroidalNeovascularScar => ("disciform scar", "disciform scars", false),
        T::Tessellation => ("tessellation", "tessellation", true),
        T::PeripapillaryAtrophy => ("peripapillary atrophy", "peripapillary atrophy", true),
        T::ChorioretinalAtrophy => ("chorioretinal atrophy", "chorioretinal atrophy", true),
        T::LacquerCracks => ("lacquer crack", "lacquer cracks", false),
        T::DiscHaemorrhage => ("disc haemorrhage", "disc haemorrhages", false),
        T::RnflDefect => ("RNFL defect", "RNFL defects", false),
        T::ArteriolarNarrowing => ("arteriolar narrowing", "arteriolar narrowing", true),
        T::AvNicking => ("arteriovenous nicking", "arteriovenous nicking", true),
        T::FlameHaemorrhage => ("flame haemorrhage", "flame haemorrhages", false),
        T::Other => ("other finding", "other findings", false),
    }
}

/// "a, b and c".
fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn join(sentences: &[Sentence]) -> String {
    sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Cuts text to at most `max` characters at a word boundary, ending with a full stop.
fn bound(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.chars().count() + word.chars().count() + 2 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let trimmed = out.trim_end_matches([',', ';', ':', '.']);
    let mut out = trimmed.to_string();
    out.push('.');
    out
}

/// Joins the caption sentences, dropping droppable ones (highest priority number first, later
/// ones first) while over the word budget, then using short forms, and adding padding while
/// under it; the result always meets the schema bounds.
fn fit_caption(
    mut parts: Vec<Sentence>,
    padding: Vec<String>,
    fits: &dyn Fn(&str) -> bool,
) -> String {
    let words = |parts: &[Sentence]| parts.iter().map(|p| word_count(&p.text)).sum::<usize>();
    let chars = |parts: &[Sentence]| {
        parts
            .iter()
            .map(|p| p.text.chars().count() + 1)
            .sum::<usize>()
    };
    let over = |parts: &[Sentence]| {
        words(parts) > *CAPTION_WORDS.end()
            || chars(parts) > bounds::CAPTION_MAX
            || !fits(&join(parts))
    };
    while over(&parts) {
        let victim = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.priority > 0)
            .max_by_key(|(i, p)| (p.priority, *i))
            .map(|(i, _)| i);
        let Some(index) = victim else {
            break;
        };
        parts.remove(index);
    }
    if over(&parts) {
        for part in parts.iter_mut() {
            if let Some(short) = part.short.take() {
                part.text = short;
            }
        }
    }
    // The heaviest labels can leave even the essential sentences over the token budget: drop
    // the longest sentence between the modality and the impression until it fits (the sections
    // keep the full text; rules that require words read the sections, not the caption).
    while !fits(&join(&parts)) && parts.len() > 2 {
        let last = parts.len() - 1;
        let Some(index) = (1..last).max_by_key(|&i| parts[i].text.len()) else {
            break;
        };
        parts.remove(index);
    }
    // Padding goes right after the modality sentence so the section order is kept.
    let mut insert_at = 1.min(parts.len());
    for extra in padding {
        if words(&parts) >= *CAPTION_WORDS.start() {
            break;
        }
        if words(&parts) + word_count(&extra) > *CAPTION_WORDS.end() {
            continue;
        }
        parts.insert(insert_at, droppable(6, extra));
        if !fits(&join(&parts)) {
            parts.remove(insert_at);
            continue;
        }
        insert_at += 1;
    }
    let caption = join(&parts);
    let caption = bound(&caption, bounds::CAPTION_MAX);
    if caption.chars().count() < bounds::CAPTION_MIN {
        // Unreachable with the phrase banks above, but the schema minimum must hold.
        return format!("{caption} Colour fundus photograph of the posterior pole.");
    }
    caption
}

#[cfg(test)]
mod tests;
