//! Caption validation: decides which captioner answers enter the dataset.
//!
//! This crate owns:
//! - [`CaptionSchema`]: the caption JSON schema (`schemas/caption.schema.json`), its canonical
//!   hash (recorded on every row) and its value (sent as the endpoint's `response_format`);
//! - [`Rules`]: the data-driven consistency, hygiene, laterality and length rules
//!   (`schemas/consistency-rules.toml`);
//! - [`Validator`]: parses a raw answer, checks it against the schema and the rules, and returns
//!   a [`Verdict`] with every reason it failed (never only the first).
//!
//! Reason codes are stable and listed in [`codes`] and `docs/validation.md`. Validation does no
//! I/O and never panics on answer text.

#![warn(missing_docs)]

use jsonschema::error::ValidationErrorKind;
use retina_records::{CaptionAnswer, ImageFacts, Record, RejectReason};
use serde_json::Value;
use std::path::{Path, PathBuf};

mod rules;
mod text;
mod tokens;

pub use rules::{RULES_VERSION, Rules, Style};
pub use tokens::TokenizerKind;

/// The stable reason codes this crate produces.
pub mod codes {
    /// The answer is not JSON (detail: parser message, line and column).
    pub const NOT_JSON: &str = "answer.not_json";
    /// The answer breaks the schema (one reason per error; detail starts with the JSON pointer).
    pub const SCHEMA_INVALID: &str = "schema.invalid";
    /// Prefix of label-rule codes: `consistency.<rule id>`.
    pub const CONSISTENCY_PREFIX: &str = "consistency.";
    /// The caption names the other eye than the record's.
    pub const LATERALITY: &str = "consistency.laterality";
    /// Markdown in a text field.
    pub const MARKDOWN: &str = "hygiene.markdown";
    /// Hedging words in a text field.
    pub const HEDGING: &str = "hygiene.hedging";
    /// The caption has line breaks.
    pub const PARAGRAPH: &str = "hygiene.paragraph";
    /// The caption has fewer words than the budget allows.
    pub const TOO_SHORT: &str = "budget.caption_too_short";
    /// The caption has more words than the budget allows.
    pub const TOO_LONG: &str = "budget.caption_too_long";
    /// A caption style's text takes more tokens than its text encoder reads.
    pub const TOO_MANY_TOKENS: &str = "budget.tokens";
    /// A caption variant has fewer words than its style's minimum.
    pub const VARIANT_TOO_SHORT: &str = "budget.variant_too_short";
    /// A caption variant names a style the rules do not define.
    pub const UNKNOWN_STYLE: &str = "budget.unknown_style";
    /// The measured optic disc is on the other side of the image than the text says.
    pub const DISC_SIDE: &str = "consistency.disc_side";
    /// Prefix of measurement-rule codes: `measurement.<id>`.
    pub const MEASUREMENT_PREFIX: &str = "measurement.";
    /// A refusal or the model talking about itself.
    pub const REFUSAL: &str = "hygiene.refusal";
    /// Personal data: a date, a name or record-number cue.
    pub const PERSONAL_DATA: &str = "hygiene.personal_data";
    /// The text does not read as English.
    pub const NOT_ENGLISH: &str = "hygiene.not_english";
    /// A synonym where the vocabulary has a canonical term.
    pub const SYNONYM: &str = "vocabulary.synonym";
}

const EMBEDDED_SCHEMA: &str = include_str!("../../../schemas/caption.schema.json");

/// Longest detail kept from a schema error message (they can quote whole strings).
const MAX_DETAIL_CHARS: usize = 240;

/// Errors loading a schema or rules file, or compiling the schema.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema file is not JSON.
    #[error("{origin}: schema is not valid JSON: {source}")]
    SchemaJson {
        /// Where the schema came from.
        origin: String,
        /// The parser error (with line and column).
        source: serde_json::Error,
    },
    /// The schema is JSON but not a usable JSON schema.
    #[error("{origin}: not a usable JSON schema: {message}")]
    SchemaCompile {
        /// Where the schema came from.
        origin: String,
        /// What the schema compiler said.
        message: String,
    },
    /// The rules file is not valid TOML or does not match the rules format.
    #[error("{origin}: not a valid rules file: {source}")]
    RulesToml {
        /// Where the rules came from.
        origin: String,
        /// The TOML error (with line and column).
        source: Box<toml::de::Error>,
    },
    /// A rule or section of the rules file is not acceptable.
    #[error("{origin}: {rule}: {message}")]
    Rules {
        /// Where the rules came from.
        origin: String,
        /// The rule id or section name.
        rule: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The caption JSON schema and its canonical hash.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionSchema {
    value: Value,
    hash: String,
    origin: String,
}

impl CaptionSchema {
    /// The schema shipped in `schemas/caption.schema.json`.
    pub fn embedded() -> CaptionSchema {
        // The embedded file is part of the build, not input data; a unit test parses it.
        #[allow(clippy::expect_used)]
        CaptionSchema::parse(EMBEDDED_SCHEMA, "embedded caption.schema.json")
            .expect("embedded schema is valid (checked by tests)")
    }

    /// Reads a schema file and checks that it compiles.
    pub fn load(path: &Path) -> Result<CaptionSchema, ValidateError> {
        let text = std::fs::read_to_string(path).map_err(|source| ValidateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        CaptionSchema::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<CaptionSchema, ValidateError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| ValidateError::SchemaJson {
                origin: origin.to_string(),
                source,
            })?;
        compile_schema(&value, origin)?;
        Ok(CaptionSchema {
            hash: canonical_hash(&value),
            value,
            origin: origin.to_string(),
        })
    }

    /// The schema as JSON, for the endpoint's `response_format`.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// BLAKE3 of the canonical JSON (keys sorted, no whitespace), first 16 hex characters.
    /// Formatting and key order in the file do not change it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The schema for a run that asks for `styles` besides `detailed` (which is the `caption`
    /// field): a required `caption_variants` object with one required, bounded string per style,
    /// so one request returns every style and strict structured output still holds. With no
    /// extra style the schema and its hash are unchanged; otherwise the hash changes.
    pub fn with_variants(&self, styles: &[&Style]) -> CaptionSchema {
        let extra: Vec<&&Style> = styles.iter().filter(|s| s.name() != "detailed").collect();
        if extra.is_empty() {
            return self.clone();
        }
        let mut value = self.value.clone();
        let mut properties = serde_json::Map::new();
        for style in &extra {
            properties.insert(
                style.name().to_string(),
                serde_json::json!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_VARIANT_CHARS,
                    "description": style.guidance(),
                }),
            );
        }
        let names: Vec<&str> = extra.iter().map(|s| s.name()).collect();
        let variants = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": names,
            "properties": properties,
            "description": "The same photograph described again in each further caption style.",
        });
        if let Some(object) = value.as_object_mut() {
            if let Some(Value::Object(props)) = object.get_mut("properties") {
                props.insert("caption_variants".to_string(), variants);
            }
            if let Some(Value::Array(required)) = object.get_mut("required") {
                required.push(Value::String("caption_variants".to_string()));
            }
        }
        CaptionSchema {
            hash: canonical_hash(&value),
            value,
            origin: format!("{} with caption styles {}", self.origin, names.join(", ")),
        }
    }
}

/// Longest caption variant the schema allows, in characters (the token budget is the real limit).
const MAX_VARIANT_CHARS: usize = 800;

fn compile_schema(value: &Value, origin: &str) -> Result<jsonschema::Validator, ValidateError> {
    jsonschema::validator_for(value).map_err(|e| ValidateError::SchemaCompile {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

/// Writes `value` as JSON with object keys sorted at every level and no whitespace.
/// Done by hand because serde_json's map order depends on a feature another crate may enable.
/// The response cache's keys are hashed from this form too.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn canonical_hash(value: &Value) -> String {
    let mut text = String::new();
    canonical_json(value, &mut text);
    blake3::hash(text.as_bytes())
        .to_hex()
        .chars()
        .take(16)
        .collect()
}

/// The outcome of validating one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The answer enters the dataset.
    Accepted(CaptionAnswer),
    /// The answer is rejected for every listed reason; `answer` is the parsed answer when it
    /// parsed into a [`CaptionAnswer`] (kept for the rejects file and QA).
    Rejected {
        /// Every failed check.
        reasons: Vec<RejectReason>,
        /// The answer, when it parsed.
        answer: Option<CaptionAnswer>,
    },
}

impl Verdict {
    /// Whether the answer was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted(_))
    }

    /// The reasons of a rejection (empty when accepted).
    pub fn reasons(&self) -> &[RejectReason] {
        match self {
            Verdict::Accepted(_) => &[],
            Verdict::Rejected { reasons, .. } => reasons,
        }
    }

    /// The parsed answer, if any.
    pub fn answer(&self) -> Option<&CaptionAnswer> {
        match self {
            Verdict::Accepted(answer) => Some(answer),
            Verdict::Rejected { answer, .. } => answer.as_ref(),
        }
    }
}

/// A harmless change made to the raw answer before parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repair {
    /// Leading or trailing whitespace removed.
    TrimmedWhitespace,
    /// A byte-order mark removed.
    StrippedByteOrderMark,
    /// A surrounding markdown code fence (```json ... ```) removed.
    StrippedCodeFence,
}

impl Repair {
    /// Stable name, for rows and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::TrimmedWhitespace => "trimmed_whitespace",
            Repair::StrippedByteOrderMark => "stripped_bom",
            Repair::StrippedCodeFence => "stripped_code_fence",
        }
    }
}

/// A verdict with the repairs made to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// The outcome.
    pub verdict: Verdict,
    /// Repairs made to the raw text before parsing, in order.
    pub repairs: Vec<Repair>,
}

/// Checks answers against the compiled schema and the rules. Cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Validator {
    schema: jsonschema::Validator,
    rules: Rules,
}

impl Validator {
    /// Compiles the schema and takes the rules.
    pub fn new(schema: &CaptionSchema, rules: Rules) -> Result<Validator, ValidateError> {
        Ok(Validator {
            schema: compile_schema(&schema.value, &schema.origin)?,
            rules,
        })
    }

    /// Validates one raw answer for `record`. Never panics. Strips a surrounding ```json fence
    /// and whitespace first (see [`Validator::validate_detailed`] for the repairs made).
    pub fn validate(&self, raw: &str, record: &Record, facts: &ImageFacts) -> Verdict {
        self.validate_detailed(raw, record, facts).verdict
    }

    /// Like [`Validator::validate`], also reporting the repairs made to the raw text.
    ///
    /// `facts` are the image stage's measurements: quoted numbers and the disc side are checked
    /// against them.
    pub fn validate_detailed(&self, raw: &str, record: &Record, facts: &ImageFacts) -> Validation {
        let (text, repairs) = strip(raw);
        let verdict = self.validate_text(text, record, facts);
        Validation { verdict, repairs }
    }

    fn validate_text(&self, text: &str, record: &Record, facts: &ImageFacts) -> Verdict {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return Verdict::Rejected {
                    reasons: vec![RejectReason::new(
                        codes::NOT_JSON,
                        format!(
                            "{} (line {}, column {}; answer starts {:?})",
                            e,
                            e.line(),
                            e.column(),
                            truncate(text, 60)
                        ),
                    )],
                    answer: None,
                };
            }
        };
        let schema_reasons = self.check_schema(&value);
        let parsed = serde_json::from_value::<CaptionAnswer>(value);
        if !schema_reasons.is_empty() {
            return Verdict::Rejected {
                reasons: schema_reasons,
                answer: parsed.ok(),
            };
        }
        let answer = match parsed {
            Ok(answer) => answer,
            // Only reachable if the schema file and CaptionAnswer drift apart.
            Err(e) => {
                return Verdict::Rejected {
                    reasons: vec![RejectReason::new(
                        codes::SCHEMA_INVALID,
                        format!("/: passes the schema but not the caption type: {e}"),
                    )],
                    answer: None,
                };
            }
        };
        let reasons = self
            .rules
            .check(&answer, &record.labels, record.laterality, facts);
        if reasons.is_empty() {
            Verdict::Accepted(answer)
        } else {
            Verdict::Rejected {
                reasons,
                answer: Some(answer),
            }
        }
    }

    /// Schema errors of a parsed JSON value, one `schema.invalid` reason each; the detail starts
    /// with the JSON pointer of the offending value (`/` for the root).
    pub fn check_schema(&self, value: &Value) -> Vec<RejectReason> {
        let mut reasons = Vec::new();
        for error in self.schema.iter_errors(value) {
            let pointer = error.instance_path().as_str();
            match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        reasons.push(RejectReason::new(
                            codes::SCHEMA_INVALID,
                            format!(
                                "{pointer}/{}: property not allowed by the schema",
                                escape_pointer(name)
                            ),
                        ));
                    }
                }
                ValidationErrorKind::MaxLength { limit } => {
                    let got = error.instance().as_str().map_or(0, |s| s.chars().count());
                    reasons.push(RejectReason::new(
                        codes::SCHEMA_INVALID,
                        format!(
                            "{}: {got} characters, at most {limit} allowed",
                            root(pointer)
                        ),
                    ));
                }
                ValidationErrorKind::Enum { .. } => {
                    reasons.push(RejectReason::new(
                        codes::SCHEMA_INVALID,
                        format!(
                            "{}: {} is not in the controlled vocabulary",
                            root(pointer),
                            truncate(&error.instance().to_string(), 80)
                        ),
                    ));
                }
                _ => reasons.push(RejectReason::new(
                    codes::SCHEMA_INVALID,
                    format!(
                        "{}: {}",
                        root(pointer),
                        truncate(&error.to_string(), MAX_DETAIL_CHARS)
                    ),
                )),
            }
        }
        reasons
    }

    /// The rules this validator applies.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

/// Builds the follow-up message asking a captioner to fix a rejected answer.
pub fn repair_message(reasons: &[RejectReason]) -> String {
    let mut message = String::from(
        "Your answer was rejected. Return the corrected JSON object only, fixing every problem:\n",
    );
    for reason in reasons {
        message.push_str("- ");
        message.push_str(&reason.code);
        message.push_str(": ");
        message.push_str(&reason.detail);
        message.push('\n');
    }
    message
}

fn root(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// Escapes a property name for a JSON pointer (RFC 6901).
fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}

/// Removes a BOM, surrounding whitespace and a surrounding markdown code fence.
fn strip(raw: &str) -> (&str, Vec<Repair>) {
    let mut repairs = Vec::new();
    let mut text = raw;
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        repairs.push(Repair::StrippedByteOrderMark);
        text = rest;
    }
    let trimmed = text.trim();
    if trimmed.len() != text.len() {
        repairs.push(Repair::TrimmedWhitespace);
    }
    text = trimmed;
    if let Some(inner) = text
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
    {
        // The info string ("json", "JSON", nothing) runs to the first line break or brace.
        let body_start = inner.find(['\n', '{', '[']).unwrap_or(inner.len());
        let (info, body) = inner.split_at(body_start);
        if info.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
            repairs.push(Repair::StrippedCodeFence);
            text = body.trim();
        }
    }
    (text, repairs)
}

#[cfg(test)]
mod tests;
