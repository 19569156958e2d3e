//! The data-driven rules: the TOML file model, its checks at load time and its evaluation.
//!
//! The file format is documented in `docs/validation.md`; the shipped rules are
//! `schemas/consistency-rules.toml`.

use crate::ValidateError;
use crate::codes;
use crate::text::{Negation, Phrase, Token, context, tokenize};
use crate::tokens::TokenizerKind;
use retina_records::{
    CaptionAnswer, DiscSide, Glaucoma, ImageFacts, Labels, Laterality, LesionLocation, LesionType,
    RejectReason,
};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const EMBEDDED_RULES: &str = include_str!("../../../schemas/consistency-rules.toml");

/// The only rules-file version this crate reads.
pub const RULES_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// File model (what serde reads). Unknown keys are errors so that typos do not silently disable
// a rule.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    version: u32,
    budget: BudgetFile,
    hygiene: HygieneFile,
    negation: NegationFile,
    laterality: LateralityFile,
    #[serde(default)]
    disc_side: Option<DiscSideFile>,
    #[serde(default)]
    vocabulary: Option<VocabularyFile>,
    #[serde(default)]
    style: BTreeMap<String, StyleFile>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
    #[serde(default, rename = "measure")]
    measures: Vec<MeasureFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscSideFile {
    enabled: bool,
    fields: Vec<String>,
    min_confidence: f32,
    left: Vec<String>,
    right: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabularyFile {
    fields: Vec<String>,
    /// Non-canonical word pattern -> canonical term.
    synonyms: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StyleFile {
    description: String,
    tokenizer: String,
    max_tokens: usize,
    #[serde(default)]
    min_words: usize,
    guidance: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasureFile {
    id: String,
    description: String,
    fact: String,
    #[serde(default)]
    cues: Vec<String>,
    #[serde(default)]
    cues_after: Vec<String>,
    fields: Vec<String>,
    window: usize,
    tolerance: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    min_words: usize,
    max_words: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HygieneFile {
    fields: Vec<String>,
    #[serde(default)]
    markdown: Vec<String>,
    #[serde(default)]
    hedging: Vec<String>,
    #[serde(default)]
    one_paragraph: bool,
    #[serde(default)]
    refusal: Vec<String>,
    #[serde(default)]
    personal_data: Vec<String>,
    #[serde(default)]
    dates: bool,
    #[serde(default)]
    english: Option<EnglishFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnglishFile {
    stopwords: Vec<String>,
    min_stopword_share: f64,
    min_words: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NegationFile {
    before: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    terminators: Vec<String>,
    window: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LateralityFile {
    enabled: bool,
    fields: Vec<String>,
    left: Vec<String>,
    right: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    description: String,
    #[serde(default)]
    when: When,
    #[serde(default)]
    forbid_lesions: Vec<String>,
    #[serde(default)]
    require_lesions: Vec<String>,
    #[serde(default)]
    lesion_locations: Vec<String>,
    #[serde(default)]
    forbid_words: Vec<String>,
    #[serde(default)]
    require_words: Vec<String>,
    #[serde(default)]
    except_words: Vec<String>,
    #[serde(default)]
    words_in: Option<Vec<String>>,
}

/// When a rule applies: every given condition must hold; a condition on a label the record does
/// not have never holds (an unlabelled grade says nothing).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct When {
    dr_grade: Option<Vec<u8>>,
    dme: Option<Vec<u8>>,
    myopic_maculopathy: Option<Vec<u8>>,
    glaucoma: Option<Vec<Glaucoma>>,
    amd: Option<bool>,
    /// `true`: `Labels::is_normal()` and a DR grade is given; `false`: the opposite.
    normal: Option<bool>,
    /// Any of these dataset disease codes is present.
    disease_code: Option<Vec<String>>,
}

impl When {
    fn holds(&self, labels: &Labels) -> bool {
        fn in_list(list: &Option<Vec<u8>>, value: Option<u8>) -> bool {
            match list {
                None => true,
                Some(list) => value.is_some_and(|v| list.contains(&v)),
            }
        }
        in_list(&self.dr_grade, labels.dr_grade)
            && in_list(&self.dme, labels.dme)
            && in_list(&self.myopic_maculopathy, labels.myopic_maculopathy)
            && self
                .glaucoma
                .as_ref()
                .is_none_or(|list| labels.glaucoma.is_some_and(|g| list.contains(&g)))
            && self.amd.is_none_or(|want| labels.amd == Some(want))
            && self
                .normal
                .is_none_or(|want| want == (labels.is_normal() && labels.dr_grade.is_some()))
            && self
                .disease_code
                .as_ref()
                .is_none_or(|codes| codes.iter().any(|c| labels.disease_codes.contains(c)))
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled rules.
// ---------------------------------------------------------------------------------------------

/// A text field of [`CaptionAnswer`] by its schema name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Field {
    OpticDisc,
    Rnfl,
    Vessels,
    Macula,
    Background,
    Quality,
    Impression,
    Caption,
}

impl Field {
    const ALL: [Field; 8] = [
        Field::OpticDisc,
        Field::Rnfl,
        Field::Vessels,
        Field::Macula,
        Field::Background,
        Field::Quality,
        Field::Impression,
        Field::Caption,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::OpticDisc => "optic_disc",
            Field::Rnfl => "rnfl",
            Field::Vessels => "vessels",
            Field::Macula => "macula",
            Field::Background => "background",
            Field::Quality => "quality",
            Field::Impression => "impression",
            Field::Caption => "caption",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    fn text(self, answer: &CaptionAnswer) -> &str {
        match self {
            Field::OpticDisc => &answer.optic_disc,
            Field::Rnfl => &answer.rnfl,
            Field::Vessels => &answer.vessels,
            Field::Macula => &answer.macula,
            Field::Background => &answer.background,
            Field::Quality => &answer.quality,
            Field::Impression => &answer.impression,
            Field::Caption => &answer.caption,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    description: String,
    when: When,
    forbid_lesions: Vec<LesionType>,
    require_lesions: Vec<LesionType>,
    /// When not empty, a required lesion counts only at one of these locations.
    lesion_locations: Vec<LesionLocation>,
    forbid_words: Vec<Phrase>,
    require_words: Vec<Phrase>,
    except_words: Vec<Phrase>,
    words_in: Vec<Field>,
}

#[derive(Debug, Clone)]
struct Hygiene {
    fields: Vec<Field>,
    markdown: Vec<String>,
    hedging: Vec<Phrase>,
    one_paragraph: bool,
    refusal: Vec<Phrase>,
    personal_data: Vec<Phrase>,
    dates: bool,
    english: Option<English>,
}

#[derive(Debug, Clone)]
struct English {
    stopwords: BTreeSet<String>,
    min_stopword_share: f64,
    min_words: usize,
}

#[derive(Debug, Clone)]
struct DiscSideRule {
    fields: Vec<Field>,
    min_confidence: f32,
    left: Vec<Phrase>,
    right: Vec<Phrase>,
}

#[derive(Debug, Clone)]
struct Vocabulary {
    fields: Vec<Field>,
    synonyms: Vec<(Phrase, String)>,
}

/// A measured or labelled number a caption may quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MeasureFact {
    CupToDiscRatio,
    VesselDensityPercent,
    FractalDimension,
    Tortuosity,
    DiscDiameterPercent,
    FieldOfViewPercent,
    BrightLesionCandidates,
    DarkLesionCandidates,
}

impl MeasureFact {
    const ALL: [(MeasureFact, &'static str); 8] = [
        (MeasureFact::CupToDiscRatio, "cup_to_disc_ratio"),
        (MeasureFact::VesselDensityPercent, "vessel_density_percent"),
        (MeasureFact::FractalDimension, "fractal_dimension"),
        (MeasureFact::Tortuosity, "tortuosity"),
        (MeasureFact::DiscDiameterPercent, "disc_diameter_percent"),
        (MeasureFact::FieldOfViewPercent, "field_of_view_percent"),
        (
            MeasureFact::BrightLesionCandidates,
            "bright_lesion_candidates",
        ),
        (MeasureFact::DarkLesionCandidates, "dark_lesion_candidates"),
    ];

    fn parse(name: &str) -> Option<MeasureFact> {
        MeasureFact::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
    }

    fn name(self) -> &'static str {
        MeasureFact::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }

    /// Every value the fact may take for this item: the measurement and, for the cup-to-disc
    /// ratio, a labelled value (a raw label column whose name contains `cdr`). Non-finite values
    /// are left out, so a failed measurement makes any quoted number wrong.
    fn values(self, facts: &ImageFacts, labels: &Labels) -> Vec<f64> {
        let f = |v: f32| f64::from(v);
        let mut out: Vec<f64> = match self {
            MeasureFact::CupToDiscRatio => {
                let mut values: Vec<f64> = facts
                    .cup_to_disc_ratio
                    .map(|m| f(m.value))
                    .into_iter()
                    .collect();
                values.extend(labels.raw.iter().filter_map(|(key, value)| {
                    key.to_ascii_lowercase()
                        .contains("cdr")
                        .then(|| value.trim().parse::<f64>().ok())
                        .flatten()
                }));
                values
            }
            MeasureFact::VesselDensityPercent => facts
                .vessel_density
                .map(|m| f(m.value) * 100.0)
                .into_iter()
                .collect(),
            MeasureFact::FractalDimension => facts
                .fractal_dimension
                .map(|m| f(m.value))
                .into_iter()
                .collect(),
            MeasureFact::Tortuosity => facts.tortuosity.map(|m| f(m.value)).into_iter().collect(),
            MeasureFact::DiscDiameterPercent => facts
                .disc
                .map(|d| f(d.diameter) * 100.0)
                .into_iter()
                .collect(),
            MeasureFact::FieldOfViewPercent => vec![f(facts.fov_fraction) * 100.0],
            MeasureFact::BrightLesionCandidates => facts
                .bright_lesion_candidates
                .map(|m| f64::from(m.value))
                .into_iter()
                .collect(),
            MeasureFact::DarkLesionCandidates => facts
                .dark_lesion_candidates
                .map(|m| f64::from(m.value))
                .into_iter()
                .collect(),
        };
        out.retain(|v| v.is_finite());
        out
    }
}

#[derive(Debug, Clone)]
struct Measure {
    id: String,
    description: String,
    fact: MeasureFact,
    cues: Vec<Phrase>,
    cues_after: Vec<Phrase>,
    fields: Vec<Field>,
    window: usize,
    tolerance: f64,
}

/// A caption style: the budget a caption of this style must fit and what the prompt asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    name: String,
    description: String,
    tokenizer: TokenizerKind,
    max_tokens: usize,
    min_words: usize,
    guidance: String,
}

impl Style {
    /// The style's name (`detailed`, `short`, ...); `detailed` is the answer's `caption` field,
    /// every other style a key of `caption_variants`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the style is for.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The tokenizer the budget is counted with.
    pub fn tokenizer(&self) -> TokenizerKind {
        self.tokenizer
    }
    /// Most tokens a caption of this style may take (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    /// Fewest words (0: no minimum beyond the schema's).
    pub fn min_words(&self) -> usize {
        self.min_words
    }
    /// What the prompt asks the model to write for this style.
    pub fn guidance(&self) -> &str {
        &self.guidance
    }
}

#[derive(Debug, Clone)]
struct LateralityRule {
    enabled: bool,
    fields: Vec<Field>,
    left: Vec<Phrase>,
    right: Vec<Phrase>,
}

/// The consistency, hygiene, laterality and budget rules, read from a TOML file
/// (`schemas/consistency-rules.toml` is embedded; see `docs/validation.md` for the format).
#[derive(Debug, Clone)]
pub struct Rules {
    min_words: usize,
    max_words: usize,
    hygiene: Hygiene,
    negation: Negation,
    laterality: LateralityRule,
    disc_side: Option<DiscSideRule>,
    vocabulary: Option<Vocabulary>,
    styles: Vec<Style>,
    rules: Vec<Rule>,
    measures: Vec<Measure>,
}

/// The word lists of one checked text: a field, or one caption variant.
struct Scope<'t> {
    name: String,
    text: &'t str,
    tokens: Vec<Token>,
}

impl Rules {
    /// The rules shipped in `schemas/consistency-rules.toml`.
    pub fn embedded() -> Rules {
        // The embedded file is part of the build, not input data; a unit test parses it.
        #[allow(clippy::expect_used)]
        Rules::parse_with_origin(EMBEDDED_RULES, "embedded consistency-rules.toml")
            .expect("embedded rules file is valid (checked by tests)")
    }

    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<Rules, ValidateError> {
        let text = std::fs::read_to_string(path).map_err(|source| ValidateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Rules::parse_with_origin(&text, &path.display().to_string())
    }

    /// Parses rules from TOML text (the same format as [`Rules::load`]).
    pub fn parse(text: &str) -> Result<Rules, ValidateError> {
        Rules::parse_with_origin(text, "rules text")
    }

    /// The ids of the label rules, in file order (their reason codes are `consistency.<id>`).
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Smallest and largest caption length in words.
    pub fn word_budget(&self) -> (usize, usize) {
        (self.min_words, self.max_words)
    }

    /// The caption styles the rules define, in name order.
    pub fn styles(&self) -> &[Style] {
        &self.styles
    }

    /// The style called `name`, if the rules define it.
    pub fn style(&self, name: &str) -> Option<&Style> {
        self.styles.iter().find(|s| s.name == name)
    }

    /// The ids of the measurement rules (codes `measurement.<id>`).
    pub fn measure_ids(&self) -> impl Iterator<Item = &str> {
        self.measures.iter().map(|m| m.id.as_str())
    }

    fn parse_with_origin(text: &str, origin: &str) -> Result<Rules, ValidateError> {
        let file: RulesFile = toml::from_str(text).map_err(|source| ValidateError::RulesToml {
            origin: origin.to_string(),
            source: Box::new(source),
        })?;
        compile(file, origin)
    }

    /// Applies every rule; returns every failure (not just the first).
    pub(crate) fn check(
        &self,
        answer: &CaptionAnswer,
        labels: &Labels,
        laterality: Laterality,
        facts: &ImageFacts,
    ) -> Vec<RejectReason> {
        let tokens: Vec<(Field, Vec<Token>)> = Field::ALL
            .into_iter()
            .map(|f| (f, tokenize(f.text(answer))))
            .collect();
        let tokens_of = |field: Field| -> &[Token] {
            tokens
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, t)| t.as_slice())
                .unwrap_or_default()
        };
        // Caption variants are captions too: every check on the caption's text (forbidden words,
        // laterality, hygiene) also reads them. Required words stay on the detailed caption.
        let variants: Vec<Scope> = answer
            .caption_variants
            .iter()
            .map(|(style, text)| Scope {
                name: format!("caption_variants.{style}"),
                text,
                tokens: tokenize(text),
            })
            .collect();
        let scopes = |fields: &[Field]| -> Vec<(String, &str, &[Token])> {
            let mut out = Vec::new();
            for field in fields {
                out.push((
                    field.name().to_string(),
                    field.text(answer),
                    tokens_of(*field),
                ));
                if *field == Field::Caption {
                    out.extend(
                        variants
                            .iter()
                            .map(|v| (v.name.clone(), v.text, v.tokens.as_slice())),
                    );
                }
            }
            out
        };
        let mut reasons = Vec::new();
        for rule in &self.rules {
            if rule.when.holds(labels)
                && let Some(reason) = self.check_rule(rule, answer, &tokens_of, &scopes)
            {
                reasons.push(reason);
            }
        }
        for measure in &self.measures {
            if let Some(reason) = check_measure(measure, facts, labels, &scopes(&measure.fields)) {
                reasons.push(reason);
            }
        }
        if let Some(reason) = self.check_laterality(laterality, &scopes(&self.laterality.fields)) {
            reasons.push(reason);
        }
        if let Some(rule) = &self.disc_side
            && let Some(reason) = self.check_disc_side(rule, facts, &scopes(&rule.fields))
        {
            reasons.push(reason);
        }
        if let Some(vocabulary) = &self.vocabulary
            && let Some(reason) = check_vocabulary(vocabulary, &scopes(&vocabulary.fields))
        {
            reasons.push(reason);
        }
        reasons.extend(self.check_hygiene(answer, &scopes(&self.hygiene.fields)));
        reasons.extend(self.check_budget(answer));
        reasons
    }

    fn check_rule<'t, 's>(
        &self,
        rule: &Rule,
        answer: &CaptionAnswer,
        tokens_of: &impl Fn(Field) -> &'t [Token],
        scopes: &impl Fn(&[Field]) -> Vec<(String, &'s str, &'s [Token])>,
    ) -> Option<RejectReason> {
        let mut problems = Vec::new();
        let listed: BTreeSet<LesionType> = answer.lesions.iter().map(|l| l.kind).collect();
        let forbidden: Vec<&str> = listed
            .iter()
            .filter(|k| rule.forbid_lesions.contains(k))
            .map(|k| k.as_str())
            .collect();
        if !forbidden.is_empty() {
            problems.push(format!("lesions list {}", forbidden.join(", ")));
        }
        let placed = |kind: &LesionType| {
            answer.lesions.iter().any(|l| {
                l.kind == *kind
                    && (rule.lesion_locations.is_empty()
                        || rule.lesion_locations.contains(&l.location))
            })
        };
        if !rule.require_lesions.is_empty() && !rule.require_lesions.iter().any(placed) {
            let mut problem = format!(
                "lesions list none of {}",
                join(rule.require_lesions.iter().map(|k| k.as_str()))
            );
            if !rule.lesion_locations.is_empty() {
                problem.push_str(&format!(
                    " at {}",
                    join(rule.lesion_locations.iter().map(|l| l.as_str()))
                ));
            }
            problems.push(problem);
        }
        for (name, _, toks) in scopes(&rule.words_in) {
            for phrase in &rule.forbid_words {
                if let Some(at) = self
                    .negation
                    .find_affirmed(phrase, &rule.except_words, toks)
                {
                    problems.push(format!(
                        "{name} names {:?} (\"... {} ...\")",
                        phrase.as_str(),
                        context(toks, at, 1)
                    ));
                }
            }
        }
        if !rule.require_words.is_empty() {
            let found = rule.words_in.iter().any(|field| {
                let toks = tokens_of(*field);
                rule.require_words.iter().any(|p| {
                    self.negation
                        .find_affirmed(p, &rule.except_words, toks)
                        .is_some()
                })
            });
            if !found {
                problems.push(format!(
                    "{} mention none of {}",
                    join(rule.words_in.iter().map(|f| f.name())),
                    join(rule.require_words.iter().map(|p| p.as_str()))
                ));
            }
        }
        if problems.is_empty() {
            None
        } else {
            Some(RejectReason::new(
                format!("{}{}", codes::CONSISTENCY_PREFIX, rule.id),
                format!("{}: {}", rule.description, problems.join("; ")),
            ))
        }
    }

    fn check_laterality(
        &self,
        laterality: Laterality,
        scopes: &[(String, &str, &[Token])],
    ) -> Option<RejectReason> {
        let rule = &self.laterality;
        let wrong = match laterality {
            _ if !rule.enabled => return None,
            Laterality::Left => &rule.right,
            Laterality::Right => &rule.left,
            Laterality::Unknown => return None,
        };
        for (name, _, toks) in scopes {
            for phrase in wrong {
                if self.negation.find_affirmed(phrase, &[], toks).is_some() {
                    return Some(RejectReason::new(
                        codes::LATERALITY,
                        format!(
                            "the record is a {} eye but {name} says {:?}",
                            laterality.as_str(),
                            phrase.as_str()
                        ),
                    ));
                }
            }
        }
        None
    }

    fn check_disc_side(
        &self,
        rule: &DiscSideRule,
        facts: &ImageFacts,
        scopes: &[(String, &str, &[Token])],
    ) -> Option<RejectReason> {
        let disc = facts.disc.filter(|d| d.confidence >= rule.min_confidence)?;
        let wrong = match disc.side {
            DiscSide::Left => &rule.right,
            DiscSide::Right => &rule.left,
            DiscSide::Centre => return None,
        };
        for (name, _, toks) in scopes {
            for phrase in wrong {
                if let Some(at) = self.negation.find_affirmed(phrase, &[], toks) {
                    return Some(RejectReason::new(
                        codes::DISC_SIDE,
                        format!(
                            "the measured optic disc is on the {} side of the image (confidence \
                             {:.2}) but {name} says {:?} (\"... {} ...\")",
                            match disc.side {
                                DiscSide::Left => "left",
                                _ => "right",
                            },
                            disc.confidence,
                            phrase.as_str(),
                            context(toks, at, phrase_len(phrase))
                        ),
                    ));
                }
            }
        }
        None
    }

    fn check_hygiene(
        &self,
        answer: &CaptionAnswer,
        scopes: &[(String, &str, &[Token])],
    ) -> Vec<RejectReason> {
        let hygiene = &self.hygiene;
        let mut markdown = Vec::new();
        let mut hedging = Vec::new();
        let mut refusal = Vec::new();
        let mut personal = Vec::new();
        let mut foreign = Vec::new();
        for (name, text, toks) in scopes {
            for mark in &hygiene.markdown {
                if text.contains(mark.as_str()) {
                    markdown.push(format!("{name} contains {mark:?}"));
                }
            }
            let first = |phrases: &[Phrase], out: &mut Vec<String>, verb: &str| {
                for phrase in phrases {
                    if let Some(at) = phrase.find_all(toks).next() {
                        out.push(format!(
                            "{name} {verb} {:?} (\"... {} ...\")",
                            phrase.as_str(),
                            context(toks, at, 1)
                        ));
                    }
                }
            };
            first(&hygiene.hedging, &mut hedging, "hedges with");
            first(&hygiene.refusal, &mut refusal, "says");
            first(&hygiene.personal_data, &mut personal, "names");
            if hygiene.dates
                && let Some(date) = find_date(text)
            {
                personal.push(format!("{name} contains the date {date:?}"));
            }
            if let Some(english) = &hygiene.english
                && let Some(problem) = english.check(text, toks)
            {
                foreign.push(format!("{name} {problem}"));
            }
        }
        let mut reasons = Vec::new();
        for (code, problems) in [
            (codes::MARKDOWN, markdown),
            (codes::HEDGING, hedging),
            (codes::REFUSAL, refusal),
            (codes::PERSONAL_DATA, personal),
            (codes::NOT_ENGLISH, foreign),
        ] {
            if !problems.is_empty() {
                reasons.push(RejectReason::new(code, problems.join("; ")));
            }
        }
        if hygiene.one_paragraph {
            let captions = answer.captions_by_style();
            for (style, text) in captions {
                if text.trim().contains(['\n', '\r']) {
                    let lines = text.trim().lines().count();
                    let field = if style == "detailed" {
                        "caption".to_string()
                    } else {
                        format!("caption_variants.{style}")
                    };
                    reasons.push(RejectReason::new(
                        codes::PARAGRAPH,
                        format!("{field} is not one paragraph: it has line breaks ({lines} lines)"),
                    ));
                }
            }
        }
        reasons
    }

    fn check_budget(&self, answer: &CaptionAnswer) -> Vec<RejectReason> {
        let mut reasons = Vec::new();
        let words = answer.caption.split_whitespace().count();
        if words < self.min_words {
            reasons.push(RejectReason::new(
                codes::TOO_SHORT,
                format!(
                    "caption has {words} words; the minimum is {}",
                    self.min_words
                ),
            ));
        } else if words > self.max_words {
            reasons.push(RejectReason::new(
                codes::TOO_LONG,
                format!(
                    "caption has {words} words; the maximum is {}",
                    self.max_words
                ),
            ));
        }
        for (name, text) in answer.captions_by_style() {
            let field = if name == "detailed" {
                "caption".to_string()
            } else {
                format!("caption_variants.{name}")
            };
            let Some(style) = self.style(name) else {
                // A rules file without styles sets no token budget for the detailed caption.
                if name == "detailed" {
                    continue;
                }
                reasons.push(RejectReason::new(
                    codes::UNKNOWN_STYLE,
                    format!("{field}: the rules define no caption style {name:?}"),
                ));
                continue;
            };
            let count = style.tokenizer.count(text);
            if count > style.max_tokens {
                reasons.push(RejectReason::new(
                    codes::TOO_MANY_TOKENS,
                    format!(
                        "{field} ({name} style) has {count} {}; the {name} style allows {}",
                        style.tokenizer.label(),
                        style.max_tokens
                    ),
                ));
            }
            let words = text.split_whitespace().count();
            if name != "detailed" && words < style.min_words {
                reasons.push(RejectReason::new(
                    codes::VARIANT_TOO_SHORT,
                    format!(
                        "{field} ({name} style) has {words} words; the minimum is {}",
                        style.min_words
                    ),
                ));
            }
        }
        reasons
    }
}

impl English {
    /// A problem when a long enough text has too few English function words or too many
    /// letters outside the Latin alphabet.
    fn check(&self, text: &str, toks: &[Token]) -> Option<String> {
        let letters = text.chars().filter(|c| c.is_alphabetic()).count();
        let latin = text
            .chars()
            .filter(|c| {
                c.is_alphabetic() && (c.is_ascii_alphabetic() || ('\u{C0}'..='\u{24F}').contains(c))
            })
            .count();
        if letters >= 20 && (latin as f64) < 0.9 * letters as f64 {
            return Some(format!(
                "is not in the Latin alphabet ({} of {letters} letters are)",
                latin
            ));
        }
        if toks.len() < self.min_words {
            return None;
        }
        let stop = toks
            .iter()
            .filter(|t| self.stopwords.contains(&t.word))
            .count();
        let share = stop as f64 / toks.len() as f64;
        (share < self.min_stopword_share).then(|| {
            format!(
                "does not read as English ({stop} of {} words are common English words; at least \
                 {:.0}% expected)",
                toks.len(),
                self.min_stopword_share * 100.0
            )
        })
    }
}

fn phrase_len(phrase: &Phrase) -> usize {
    phrase
        .as_str()
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|p| !p.is_empty())
        .count()
}

/// A numeric token: `0.45`, `12`, `12.3` (a `%` or unit after it is a separate word).
fn number(word: &str) -> Option<f64> {
    if !word.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    word.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Checks every number quoted next to one of the measure's cues against the fact.
fn check_measure(
    measure: &Measure,
    facts: &ImageFacts,
    labels: &Labels,
    scopes: &[(String, &str, &[Token])],
) -> Option<RejectReason> {
    let values = measure.fact.values(facts, labels);
    let mut problems = Vec::new();
    for (name, _, toks) in scopes {
        let mut quoted: Vec<(usize, f64)> = Vec::new();
        for cue in &measure.cues {
            for start in cue.find_all(toks) {
                let end = start + phrase_len(cue);
                let clause = toks.get(start).map(|t| t.clause);
                let found = toks
                    .iter()
                    .enumerate()
                    .skip(end)
                    .take(measure.window + 1)
                    .take_while(|(_, t)| Some(t.clause) == clause)
                    .find_map(|(i, t)| number(&t.word).map(|v| (i, v)));
                quoted.extend(found);
            }
        }
        for cue in &measure.cues_after {
            for start in cue.find_all(toks) {
                let clause = toks.get(start).map(|t| t.clause);
                let lo = start.saturating_sub(measure.window + 1);
                let found = (lo..start)
                    .rev()
                    .filter_map(|i| toks.get(i).map(|t| (i, t)))
                    .take_while(|(_, t)| Some(t.clause) == clause)
                    .find_map(|(i, t)| number(&t.word).map(|v| (i, v)));
                quoted.extend(found);
            }
        }
        quoted.sort_by_key(|(i, _)| *i);
        quoted.dedup_by_key(|(i, _)| *i);
        for (at, value) in quoted {
            if values.is_empty() {
                problems.push(format!(
                    "{name} quotes {value} (\"... {} ...\") but no {} was measured or labelled",
                    context(toks, at, 1),
                    measure.fact.name()
                ));
            } else if !values
                .iter()
                .any(|v| (v - value).abs() <= measure.tolerance + 1e-9)
            {
                let facts_text = values
                    .iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                problems.push(format!(
                    "{name} quotes {value} (\"... {} ...\") but the {} is {facts_text} (tolerance {})",
                    context(toks, at, 1),
                    measure.fact.name(),
                    measure.tolerance
                ));
            }
        }
    }
    (!problems.is_empty()).then(|| {
        RejectReason::new(
            format!("{}{}", codes::MEASUREMENT_PREFIX, measure.id),
            format!("{}: {}", measure.description, problems.join("; ")),
        )
    })
}

fn check_vocabulary(
    vocabulary: &Vocabulary,
    scopes: &[(String, &str, &[Token])],
) -> Option<RejectReason> {
    let mut problems = Vec::new();
    for (name, _, toks) in scopes {
        for (phrase, canonical) in &vocabulary.synonyms {
            if let Some(at) = phrase.find_all(toks).next() {
                let len = phrase_len(phrase);
                let used = toks
                    .get(at..at + len)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| t.word.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                problems.push(format!("{name} writes {used:?}: use {canonical:?}"));
            }
        }
    }
    (!problems.is_empty()).then(|| RejectReason::new(codes::SYNONYM, problems.join("; ")))
}

/// The first date-like string (`12/03/1961`, `1961-03-12`, `12.03.61`), if any: captions never
/// need one, and a date of birth is personal data.
fn find_date(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        // Three digit groups joined by the same separator: d{1,4} s d{1,2} s d{1,4}.
        let group = |from: usize, max: usize| -> usize {
            chars[from..]
                .iter()
                .take(max + 1)
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        let a = group(i, 4);
        let sep_at = i + a;
        if (1..=4).contains(&a)
            && let Some(&sep) = chars.get(sep_at)
            && matches!(sep, '/' | '-' | '.')
        {
            let b = group(sep_at + 1, 2);
            let sep2_at = sep_at + 1 + b;
            if (1..=2).contains(&b) && chars.get(sep2_at) == Some(&sep) {
                let c = group(sep2_at + 1, 4);
                let end = sep2_at + 1 + c;
                let long_enough = a == 4 || c == 4 || c == 2;
                if (1..=4).contains(&c)
                    && long_enough
                    && !chars.get(end).is_some_and(|ch| ch.is_ascii_digit())
                {
                    return Some(chars[i..end].iter().collect());
                }
            }
        }
        i += a.max(1);
    }
    None
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn compile(file: RulesFile, origin: &str) -> Result<Rules, ValidateError> {
    let err = |rule: &str, message: String| ValidateError::Rules {
        origin: origin.to_string(),
        rule: rule.to_string(),
        message,
    };
    if file.version != RULES_VERSION {
        return Err(err(
            "version",
            format!(
                "version {} is not supported (expected {RULES_VERSION})",
                file.version
            ),
        ));
    }
    if file.budget.min_words > file.budget.max_words {
        return Err(err(
            "budget",
            format!(
                "min_words {} is above max_words {}",
                file.budget.min_words, file.budget.max_words
            ),
        ));
    }
    let phrases = |section: &str, list: &[String]| -> Result<Vec<Phrase>, ValidateError> {
        list.iter()
            .map(|p| Phrase::parse(p).map_err(|m| err(section, m)))
            .collect()
    };
    let fields = |section: &str, list: &[String]| -> Result<Vec<Field>, ValidateError> {
        list.iter()
            .map(|name| {
                Field::parse(name).ok_or_else(|| {
                    err(
                        section,
                        format!(
                            "{name:?} is not a text field (one of {})",
                            join(Field::ALL.iter().map(|f| f.name()))
                        ),
                    )
                })
            })
            .collect()
    };
    if let Some(empty) = file.hygiene.markdown.iter().find(|m| m.is_empty()) {
        return Err(err(
            "hygiene",
            format!("markdown marker {empty:?} is empty"),
        ));
    }
    let hygiene = Hygiene {
        fields: fields("hygiene", &file.hygiene.fields)?,
        markdown: file.hygiene.markdown,
        hedging: phrases("hygiene", &file.hygiene.hedging)?,
        one_paragraph: file.hygiene.one_paragraph,
        refusal: phrases("hygiene", &file.hygiene.refusal)?,
        personal_data: phrases("hygiene", &file.hygiene.personal_data)?,
        dates: file.hygiene.dates,
        english: match file.hygiene.english {
            None => None,
            Some(english) => {
                if !(0.0..=1.0).contains(&english.min_stopword_share) {
                    return Err(err(
                        "hygiene.english",
                        format!(
                            "min_stopword_share {} is not between 0 and 1",
                            english.min_stopword_share
                        ),
                    ));
                }
                Some(English {
                    stopwords: english.stopwords.iter().map(|w| w.to_lowercase()).collect(),
                    min_stopword_share: english.min_stopword_share,
                    min_words: english.min_words,
                })
            }
        },
    };
    let negation = Negation {
        before: phrases("negation", &file.negation.before)?,
        after: phrases("negation", &file.negation.after)?,
        terminators: phrases("negation", &file.negation.terminators)?,
        window: file.negation.window,
    };
    let laterality = LateralityRule {
        enabled: file.laterality.enabled,
        fields: fields("laterality", &file.laterality.fields)?,
        left: phrases("laterality", &file.laterality.left)?,
        right: phrases("laterality", &file.laterality.right)?,
    };
    let mut seen = BTreeSet::new();
    let mut rules = Vec::with_capacity(file.rules.len());
    for raw in file.rules {
        let id = raw.id.as_str();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(id, "id must be non-empty [a-z0-9_]".to_string()));
        }
        if !seen.insert(raw.id.clone()) {
            return Err(err(id, "id is used twice".to_string()));
        }
        if raw.description.trim().is_empty() {
            return Err(err(id, "description is empty".to_string()));
        }
        let lesions = |list: &[String]| -> Result<Vec<LesionType>, ValidateError> {
            let mut out = Vec::new();
            for name in list {
                let expanded = expand_lesions(name).ok_or_else(|| {
                    err(
                        id,
                        format!(
                            "{name:?} is neither a lesion type of the vocabulary nor a group \
                             (@any, @diabetic, @moderate_dr, @proliferative, @amd, \
                             @glaucomatous, @myopic)"
                        ),
                    )
                })?;
                for kind in expanded {
                    if !out.contains(&kind) {
                        out.push(kind);
                    }
                }
            }
            Ok(out)
        };
        let rule = Rule {
            forbid_lesions: lesions(&raw.forbid_lesions)?,
            require_lesions: lesions(&raw.require_lesions)?,
            lesion_locations: raw
                .lesion_locations
                .iter()
                .map(|name| {
                    LesionLocation::parse(name).ok_or_else(|| {
                        err(
                            id,
                            format!("{name:?} is not a lesion location of the vocabulary"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            forbid_words: phrases(id, &raw.forbid_words)?,
            require_words: phrases(id, &raw.require_words)?,
            except_words: phrases(id, &raw.except_words)?,
            words_in: match &raw.words_in {
                Some(list) if list.is_empty() => {
                    return Err(err(id, "words_in is empty".to_string()));
                }
                Some(list) => fields(id, list)?,
                None => vec![Field::Caption],
            },
            id: raw.id.clone(),
            description: raw.description.trim().to_string(),
            when: raw.when,
        };
        if rule.forbid_lesions.is_empty()
            && rule.require_lesions.is_empty()
            && rule.forbid_words.is_empty()
            && rule.require_words.is_empty()
        {
            return Err(err(
                id,
                "rule checks nothing (give forbid_/require_ lesions or words)".to_string(),
            ));
        }
        rules.push(rule);
    }
    let disc_side = match file.disc_side {
        Some(d) if d.enabled => Some(DiscSideRule {
            fields: fields("disc_side", &d.fields)?,
            min_confidence: d.min_confidence,
            left: phrases("disc_side", &d.left)?,
            right: phrases("disc_side", &d.right)?,
        }),
        _ => None,
    };
    let vocabulary = match file.vocabulary {
        Some(v) => Some(Vocabulary {
            fields: fields("vocabulary", &v.fields)?,
            synonyms: v
                .synonyms
                .iter()
                .map(|(pattern, canonical)| {
                    Ok((
                        Phrase::parse(pattern).map_err(|m| err("vocabulary", m))?,
                        canonical.clone(),
                    ))
                })
                .collect::<Result<_, ValidateError>>()?,
        }),
        None => None,
    };
    let mut styles = Vec::new();
    for (name, style) in file.style {
        let section = format!("style.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                &section,
                "style names are non-empty [a-z0-9_]".to_string(),
            ));
        }
        let tokenizer = TokenizerKind::parse(&style.tokenizer).ok_or_else(|| {
            err(
                &section,
                format!(
                    "tokenizer {:?} is not one of {}",
                    style.tokenizer,
                    join(TokenizerKind::ALL.iter().map(|k| k.name()))
                ),
            )
        })?;
        if style.max_tokens == 0 || style.guidance.trim().is_empty() {
            return Err(err(
                &section,
                "needs max_tokens above 0 and a guidance text".to_string(),
            ));
        }
        styles.push(Style {
            name,
            description: style.description.trim().to_string(),
            tokenizer,
            max_tokens: style.max_tokens,
            min_words: style.min_words,
            guidance: style.guidance.trim().to_string(),
        });
    }
    let mut measures = Vec::new();
    for raw in file.measures {
        let id = raw.id.as_str();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(id, "id must be non-empty [a-z0-9_]".to_string()));
        }
        if !seen.insert(format!("measure:{id}")) {
            return Err(err(id, "measure id is used twice".to_string()));
        }
        let fact = MeasureFact::parse(&raw.fact).ok_or_else(|| {
            err(
                id,
                format!(
                    "fact {:?} is not one of {}",
                    raw.fact,
                    join(MeasureFact::ALL.iter().map(|(_, n)| *n))
                ),
            )
        })?;
        if raw.cues.is_empty() && raw.cues_after.is_empty() {
            return Err(err(id, "give cues or cues_after".to_string()));
        }
        if !(raw.tolerance.is_finite() && raw.tolerance >= 0.0) {
            return Err(err(
                id,
                format!("tolerance {} is not a number >= 0", raw.tolerance),
            ));
        }
        measures.push(Measure {
            fact,
            cues: phrases(id, &raw.cues)?,
            cues_after: phrases(id, &raw.cues_after)?,
            fields: fields(id, &raw.fields)?,
            window: raw.window,
            tolerance: raw.tolerance,
            description: raw.description.trim().to_string(),
            id: raw.id,
        });
    }
    Ok(Rules {
        min_words: file.budget.min_words,
        max_words: file.budget.max_words,
        hygiene,
        negation,
        laterality,
        disc_side,
        vocabulary,
        styles,
        rules,
        measures,
    })
}

/// A lesion type name from the vocabulary, or a `@group` of them.
fn expand_lesions(name: &str) -> Option<Vec<LesionType>> {
    let group: fn(LesionType) -> bool = match name {
        "@any" => |_| true,
        "@diabetic" => LesionType::is_diabetic,
        "@moderate_dr" => LesionType::is_moderate_dr_sign,
        "@proliferative" => LesionType::is_proliferative_sign,
        "@amd" => LesionType::is_amd,
        "@glaucomatous" => LesionType::is_glaucomatous,
        "@myopic" => LesionType::is_myopic,
        _ => return LesionType::parse(name).map(|k| vec![k]),
    };
    Some(
        LesionType::ALL
            .iter()
            .copied()
            .filter(|k| group(*k))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[budget]
min_words = 1
max_words = 10
[hygiene]
fields = ["caption"]
[negation]
before = ["no"]
window = 3
[laterality]
enabled = false
fields = ["caption"]
left = ["left eye"]
right = ["right eye"]
"#;

    #[test]
    fn embedded_rules_parse_and_cover_the_brief() {
        let rules = Rules::embedded();
        let ids: Vec<_> = rules.rule_ids().collect();
        for id in [
            "dr_grade_0",
            "dr_grade_1",
            "dr_grade_2",
            "dr_grade_3",
            "dr_grade_4",
            "dr_non_proliferative",
            "amd_present",
            "amd_absent",
            "glaucoma_cupping",
            "normal_no_lesions",
            "normal_no_pathology_words",
            "dme_exudates",
            "dme_absent",
            "myopia_tessellation",
            "myopia_atrophy",
            "glaucoma_absent",
        ] {
            assert!(ids.contains(&id), "missing rule {id}");
        }
        let measures: Vec<_> = rules.measure_ids().collect();
        for id in [
            "cup_to_disc_ratio",
            "vessel_density",
            "fractal_dimension",
            "dark_lesion_count",
        ] {
            assert!(measures.contains(&id), "missing measure {id}");
        }
        assert!(rules.style("detailed").is_some() && rules.style("short").is_some());
        assert_eq!(rules.word_budget(), (40, 260));
    }

    #[test]
    fn minimal_file_parses_with_no_rules() {
        let rules = Rules::parse(MINIMAL).unwrap();
        assert_eq!(rules.rule_ids().count(), 0);
        assert_eq!(rules.word_budget(), (1, 10));
    }

    #[test]
    fn load_errors_name_the_problem() {
        let cases: [(&str, &str); 9] = [
            ("version = 1", "missing field"),
            (
                &MINIMAL.replace("version = 1", "version = 2"),
                "not supported",
            ),
            (&MINIMAL.replace("max_words = 10", "max_words = 0"), "above"),
            (
                &MINIMAL.replace(
                    "fields = [\"caption\"]\n[negation]",
                    "fields = [\"title\"]\n[negation]",
                ),
                "not a text field",
            ),
            (
                &format!(
                    "{MINIMAL}\n[[rule]]\nid = \"x\"\ndescription = \"d\"\nforbid_lesions = [\"wart\"]\n"
                ),
                "neither a lesion type",
            ),
            (
                &format!("{MINIMAL}\n[[rule]]\nid = \"x\"\ndescription = \"d\"\n"),
                "checks nothing",
            ),
            (
                &format!(
                    "{MINIMAL}\n[[rule]]\nid = \"Bad-Id\"\ndescription = \"d\"\nforbid_lesions = [\"@any\"]\n"
                ),
                "[a-z0-9_]",
            ),
            (
                &format!(
                    "{MINIMAL}\n[[rule]]\nid = \"x\"\ndescription = \"d\"\nforbid_lesions = [\"@any\"]\n[[rule]]\nid = \"x\"\ndescription = \"d\"\nforbid_lesions = [\"@any\"]\n"
                ),
                "used twice",
            ),
            (
                &format!(
                    "{MINIMAL}\n[[rule]]\nid = \"x\"\ndescription = \"d\"\nforbid_lesions = [\"@any\"]\nwhen = {{ dr_grad = [1] }}\n"
                ),
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let message = Rules::parse(text).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            );
        }
    }

    #[test]
    fn groups_expand_from_the_vocabulary() {
        let diabetic = expand_lesions("@diabetic").unwrap();
        assert!(diabetic.contains(&LesionType::Microaneurysm));
        assert!(!diabetic.contains(&LesionType::Drusen));
        assert_eq!(expand_lesions("@any").unwrap().len(), LesionType::ALL.len());
        assert_eq!(expand_lesions("drusen"), Some(vec![LesionType::Drusen]));
        assert_eq!(expand_lesions("@nothing"), None);
    }

    #[test]
    fn conditions_need_the_label() {
        let when = When {
            dr_grade: Some(vec![2, 3]),
            ..When::default()
        };
        assert!(!when.holds(&Labels::default()), "no grade, no rule");
        let labels = Labels {
            dr_grade: Some(3),
            ..Labels::default()
        };
        assert!(when.holds(&labels));
        let normal = When {
            normal: Some(true),
            ..When::default()
        };
        assert!(!normal.holds(&Labels::default()), "normal needs a DR grade");
        let zero = Labels {
            dr_grade: Some(0),
            ..Labels::default()
        };
        assert!(normal.holds(&zero));
        let glaucoma = When {
            glaucoma: Some(vec![Glaucoma::Yes]),
            ..When::default()
        };
        let suspect = Labels {
            glaucoma: Some(Glaucoma::Suspect),
            ..Labels::default()
        };
        assert!(!glaucoma.holds(&suspect));
    }
}
