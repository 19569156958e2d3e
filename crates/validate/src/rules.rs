//! The data-driven rules: the TOML file model, its checks at load time and its evaluation.
//!
//! The file format is documented in `docs/validation.md`; the shipped rules are
//! `schemas/consistency-rules.toml`.

use crate::ValidateError;
use crate::codes;
use crate::text::{Negation, Phrase, Token, context, tokenize};
use retina_records::{CaptionAnswer, Glaucoma, Labels, Laterality, LesionType, RejectReason};
use serde::Deserialize;
use std::collections::BTreeSet;
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
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
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
    rules: Vec<Rule>,
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
        let mut reasons = Vec::new();
        for rule in &self.rules {
            if rule.when.holds(labels)
                && let Some(reason) = self.check_rule(rule, answer, &tokens_of)
            {
                reasons.push(reason);
            }
        }
        if let Some(reason) = self.check_laterality(laterality, &tokens_of) {
            reasons.push(reason);
        }
        reasons.extend(self.check_hygiene(answer, &tokens_of));
        reasons.extend(self.check_budget(answer));
        reasons
    }

    fn check_rule<'t>(
        &self,
        rule: &Rule,
        answer: &CaptionAnswer,
        tokens_of: &impl Fn(Field) -> &'t [Token],
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
        if !rule.require_lesions.is_empty()
            && !rule.require_lesions.iter().any(|k| listed.contains(k))
        {
            problems.push(format!(
                "lesions list none of {}",
                join(rule.require_lesions.iter().map(|k| k.as_str()))
            ));
        }
        for field in &rule.words_in {
            let toks = tokens_of(*field);
            for phrase in &rule.forbid_words {
                if let Some(at) = self
                    .negation
                    .find_affirmed(phrase, &rule.except_words, toks)
                {
                    problems.push(format!(
                        "{} names {:?} (\"... {} ...\")",
                        field.name(),
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

    fn check_laterality<'t>(
        &self,
        laterality: Laterality,
        tokens_of: &impl Fn(Field) -> &'t [Token],
    ) -> Option<RejectReason> {
        let rule = &self.laterality;
        let wrong = match laterality {
            _ if !rule.enabled => return None,
            Laterality::Left => &rule.right,
            Laterality::Right => &rule.left,
            Laterality::Unknown => return None,
        };
        for field in &rule.fields {
            let toks = tokens_of(*field);
            for phrase in wrong {
                if self.negation.find_affirmed(phrase, &[], toks).is_some() {
                    return Some(RejectReason::new(
                        codes::LATERALITY,
                        format!(
                            "the record is a {} eye but {} says {:?}",
                            laterality.as_str(),
                            field.name(),
                            phrase.as_str()
                        ),
                    ));
                }
            }
        }
        None
    }

    fn check_hygiene<'t>(
        &self,
        answer: &CaptionAnswer,
        tokens_of: &impl Fn(Field) -> &'t [Token],
    ) -> Vec<RejectReason> {
        let hygiene = &self.hygiene;
        let mut markdown = Vec::new();
        let mut hedging = Vec::new();
        for field in &hygiene.fields {
            let text = field.text(answer);
            for mark in &hygiene.markdown {
                if text.contains(mark.as_str()) {
                    markdown.push(format!("{} contains {:?}", field.name(), mark));
                }
            }
            let toks = tokens_of(*field);
            for phrase in &hygiene.hedging {
                if let Some(at) = phrase.find_all(toks).next() {
                    hedging.push(format!(
                        "{} hedges with {:?} (\"... {} ...\")",
                        field.name(),
                        phrase.as_str(),
                        context(toks, at, 1)
                    ));
                }
            }
        }
        let mut reasons = Vec::new();
        if !markdown.is_empty() {
            reasons.push(RejectReason::new(codes::MARKDOWN, markdown.join("; ")));
        }
        if !hedging.is_empty() {
            reasons.push(RejectReason::new(codes::HEDGING, hedging.join("; ")));
        }
        if hygiene.one_paragraph && answer.caption.trim().contains(['\n', '\r']) {
            let lines = answer.caption.trim().lines().count();
            reasons.push(RejectReason::new(
                codes::PARAGRAPH,
                format!("caption is not one paragraph: it has line breaks ({lines} lines)"),
            ));
        }
        reasons
    }

    fn check_budget(&self, answer: &CaptionAnswer) -> Option<RejectReason> {
        let words = answer.caption.split_whitespace().count();
        if words < self.min_words {
            Some(RejectReason::new(
                codes::TOO_SHORT,
                format!(
                    "caption has {words} words; the minimum is {}",
                    self.min_words
                ),
            ))
        } else if words > self.max_words {
            Some(RejectReason::new(
                codes::TOO_LONG,
                format!(
                    "caption has {words} words; the maximum is {}",
                    self.max_words
                ),
            ))
        } else {
            None
        }
    }
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
    Ok(Rules {
        min_words: file.budget.min_words,
        max_words: file.budget.max_words,
        hygiene,
        negation,
        laterality,
        rules,
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
        ] {
            assert!(ids.contains(&id), "missing rule {id}");
        }
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
