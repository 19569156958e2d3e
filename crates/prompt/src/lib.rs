//! Prompt rendering for the caption-dataset builder.
//!
//! This crate owns the versioned prompt templates in `prompts/` (`system.j2`, `user_vision.j2`,
//! `user_text.j2`, `repair.j2`, rendered with MiniJinja), the [`FactSheet`] that turns a record's
//! labels and the image stage's measurements into words for those templates, the caption styles
//! a run asks for ([`PromptStyle`]), and the prompt hash recorded on every row (templates and
//! styles). It never calls an endpoint.

#![warn(missing_docs)]

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};
use retina_records::{ImageFacts, Record};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

mod facts;
pub use facts::{Fact, FactSheet, QualityFacts, dr_words, fact_sheet, is_labelled};

/// File names of the templates, in hashing order.
pub const TEMPLATE_FILES: [&str; 4] = ["system.j2", "user_vision.j2", "user_text.j2", "repair.j2"];

const EMBEDDED: [&str; 4] = [
    include_str!("../../../prompts/system.j2"),
    include_str!("../../../prompts/user_vision.j2"),
    include_str!("../../../prompts/user_text.j2"),
    include_str!("../../../prompts/repair.j2"),
];

/// What the `caption` field is asked to be when a run names no styles (the `detailed` style of
/// `schemas/consistency-rules.toml` says the same).
pub const DEFAULT_CAPTION_GUIDANCE: &str = "one English paragraph of 85 to 170 words (at most 256 \
    tokens) that covers, in this order, the imaging modality, optic disc, nerve fibre layer, \
    vessels, macula, background, lesions, image quality and impression";

/// Longest previous answer quoted back in a repair prompt, in characters (a model that looped
/// until `max_tokens` must not double the next prompt).
const MAX_QUOTED_ANSWER: usize = 6000;

/// One caption style a run asks for: `detailed` is the answer's `caption` field, every other
/// style an entry of `caption_variants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptStyle {
    /// Style name (`detailed`, `short`, ...), the key in `caption_variants`.
    pub name: String,
    /// What to write, as the prompt says it ("one or two sentences of 20 to 45 words ...").
    pub guidance: String,
    /// The style's token budget (the guidance should say it in words too).
    pub max_tokens: usize,
}

/// Whether the model sees the image or only the facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptMode {
    /// Vision-language model: the image travels beside the user message.
    Vision,
    /// Language model without vision: the description must rest on the facts alone.
    TextOnly,
}

/// The two messages of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedPrompt {
    /// The system message.
    pub system: String,
    /// The user message (text part; the image, if any, is added by the captioner).
    pub user: String,
}

/// Errors reading or rendering templates; each names the template file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A template file could not be read.
    #[error("cannot read prompt template {}: {source}", path.display())]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A template has a syntax error or failed to render.
    #[error("prompt template {template}: {message}")]
    Template {
        /// The template file (path when loaded from a folder, `prompts/<name>` when embedded).
        template: String,
        /// What went wrong, with the line when MiniJinja knows it.
        message: String,
    },
}

/// The compiled templates, the run's caption styles and their content hash.
#[derive(Clone)]
pub struct PromptSet {
    env: Environment<'static>,
    /// Display name of each template (for errors), indexed like [`TEMPLATE_FILES`].
    origins: [String; 4],
    /// Hash of the template files alone.
    template_hash: String,
    /// Hash of the templates and the styles: what rows record.
    hash: String,
    /// Styles besides `detailed`, in the order asked.
    variants: Vec<PromptStyle>,
    /// What the `caption` field is asked to be.
    caption_guidance: String,
    /// Set only when the embedded templates fail to compile: (template, message).
    compile_error: Option<(String, String)>,
}

impl fmt::Debug for PromptSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptSet")
            .field("origins", &self.origins)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Context of one render: the fact sheet flattened, plus the mode and the caption styles.
#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    facts: &'a FactSheet,
    vision: bool,
    caption_guidance: &'a str,
    variants: &'a [PromptStyle],
}

/// Context of a repair render.
#[derive(Serialize)]
struct RepairContext<'a> {
    user: &'a str,
    attempt: u32,
    previous_answer: &'a str,
    problems: &'a [String],
}

impl PromptSet {
    /// The templates compiled into the binary from `prompts/`, so it works from any folder.
    ///
    /// A unit test guarantees they compile; should they ever not, the set still builds and
    /// every [`render`](Self::render) returns the compile error instead of panicking.
    pub fn embedded() -> PromptSet {
        let sources = EMBEDDED.map(str::to_string);
        let origins = TEMPLATE_FILES.map(|name| format!("prompts/{name}"));
        match PromptSet::from_sources(sources.clone(), origins.clone()) {
            Ok(set) => set,
            Err(err) => {
                let (template, message) = match err {
                    PromptError::Template { template, message } => (template, message),
                    PromptError::Read { path, source } => {
                        (path.display().to_string(), source.to_string())
                    }
                };
                let hash = content_hash(&sources);
                PromptSet {
                    env: Environment::new(),
                    template_hash: hash.clone(),
                    hash,
                    origins,
                    variants: Vec::new(),
                    caption_guidance: DEFAULT_CAPTION_GUIDANCE.to_string(),
                    compile_error: Some((template, message)),
                }
            }
        }
    }

    /// Reads the [`TEMPLATE_FILES`] from `dir` and compiles them.
    pub fn load(dir: &Path) -> Result<PromptSet, PromptError> {
        let mut sources: [String; 4] = Default::default();
        let mut origins: [String; 4] = Default::default();
        for ((source, origin), name) in sources.iter_mut().zip(&mut origins).zip(TEMPLATE_FILES) {
            let path = dir.join(name);
            *source = std::fs::read_to_string(&path).map_err(|e| PromptError::Read {
                path: path.clone(),
                source: e,
            })?;
            *origin = path.display().to_string();
        }
        PromptSet::from_sources(sources, origins)
    }

    /// Compiles the given template sources (same order as [`TEMPLATE_FILES`]).
    fn from_sources(sources: [String; 4], origins: [String; 4]) -> Result<PromptSet, PromptError> {
        let hash = content_hash(&sources);
        let mut env = Environment::new();
        // A misspelt variable must fail loudly, but `{% if absent %}` must work because
        // failed measurements are left out of the fact sheet.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(&origins[0], &e))?;
        env.set_syntax(syntax);
        for ((name, source), origin) in TEMPLATE_FILES.iter().zip(sources).zip(&origins) {
            env.add_template_owned(*name, source)
                .map_err(|e| template_error(origin, &e))?;
        }
        Ok(PromptSet {
            env,
            origins,
            template_hash: hash.clone(),
            hash,
            variants: Vec::new(),
            caption_guidance: DEFAULT_CAPTION_GUIDANCE.to_string(),
            compile_error: None,
        })
    }

    /// The same templates asking for `styles`: `detailed` sets what the `caption` field is
    /// asked to be, every other style becomes an entry of `caption_variants`. The hash covers
    /// the styles, so rows made with other styles stay distinguishable.
    pub fn with_styles(mut self, styles: &[PromptStyle]) -> PromptSet {
        self.caption_guidance = styles.iter().find(|s| s.name == "detailed").map_or_else(
            || DEFAULT_CAPTION_GUIDANCE.to_string(),
            |s| s.guidance.clone(),
        );
        self.variants = styles
            .iter()
            .filter(|s| s.name != "detailed")
            .cloned()
            .collect();
        self.hash = if styles.is_empty() {
            self.template_hash.clone()
        } else {
            let mut hasher = blake3::Hasher::new();
            hasher.update(self.template_hash.as_bytes());
            for style in styles {
                for part in [style.name.as_str(), style.guidance.as_str()] {
                    hasher.update(&(part.len() as u64).to_le_bytes());
                    hasher.update(part.as_bytes());
                }
                hasher.update(&(style.max_tokens as u64).to_le_bytes());
            }
            hasher
                .finalize()
                .to_hex()
                .as_str()
                .chars()
                .take(16)
                .collect()
        };
        self
    }

    /// The styles asked for besides `detailed`, in order.
    pub fn variants(&self) -> &[PromptStyle] {
        &self.variants
    }

    /// Content hash (blake3 hex, 16 chars) over all templates and the styles: recorded on every
    /// row.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The prompt of a re-ask: `prompt` with `prompts/repair.j2` in place of its user message,
    /// which quotes the original user message, the rejected answer (cut to a few thousand
    /// characters) and the validator's messages.
    pub fn render_repair(
        &self,
        prompt: &RenderedPrompt,
        attempt: u32,
        previous_answer: &str,
        problems: &[String],
    ) -> Result<RenderedPrompt, PromptError> {
        if let Some((template, message)) = &self.compile_error {
            return Err(PromptError::Template {
                template: template.clone(),
                message: message.clone(),
            });
        }
        let quoted: String = if previous_answer.chars().count() > MAX_QUOTED_ANSWER {
            let mut cut: String = previous_answer.chars().take(MAX_QUOTED_ANSWER).collect();
            cut.push_str(" [... cut]");
            cut
        } else {
            previous_answer.to_string()
        };
        let context = RepairContext {
            user: &prompt.user,
            attempt,
            previous_answer: &quoted,
            problems,
        };
        Ok(RenderedPrompt {
            system: prompt.system.clone(),
            user: self
                .render_template(3, minijinja::Value::from(minijinja::value::Serde(&context)))?,
        })
    }

    /// Renders the system and user messages for one item.
    pub fn render(
        &self,
        record: &Record,
        facts: &ImageFacts,
        mode: PromptMode,
    ) -> Result<RenderedPrompt, PromptError> {
        if let Some((template, message)) = &self.compile_error {
            return Err(PromptError::Template {
                template: template.clone(),
                message: message.clone(),
            });
        }
        let sheet = fact_sheet(record, facts);
        let context = Context {
            facts: &sheet,
            vision: mode == PromptMode::Vision,
            caption_guidance: &self.caption_guidance,
            variants: &self.variants,
        };
        let user_index = match mode {
            PromptMode::Vision => 1,
            PromptMode::TextOnly => 2,
        };
        Ok(RenderedPrompt {
            system: self.render_one(0, &context)?,
            user: self.render_one(user_index, &context)?,
        })
    }

    fn render_one(&self, index: usize, context: &Context<'_>) -> Result<String, PromptError> {
        self.render_template(
            index,
            minijinja::Value::from(minijinja::value::Serde(context)),
        )
    }

    fn render_template(
        &self,
        index: usize,
        context: minijinja::Value,
    ) -> Result<String, PromptError> {
        let (Some(name), Some(origin)) = (TEMPLATE_FILES.get(index), self.origins.get(index))
        else {
            return Err(PromptError::Template {
                template: format!("template #{index}"),
                message: "no such template".to_string(),
            });
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_error(origin, &e))?;
        let text = template
            .render(context)
            .map_err(|e| template_error(origin, &e))?;
        Ok(tidy(&text))
    }
}

/// Trims trailing spaces and collapses runs of blank lines left by conditional blocks.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

fn template_error(origin: &str, err: &minijinja::Error) -> PromptError {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line})"));
    }
    PromptError::Template {
        template: origin.to_string(),
        message,
    }
}

fn content_hash(sources: &[String; 4]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (name, source) in TEMPLATE_FILES.iter().zip(sources) {
        // Length-prefixed so moving text between templates changes the hash.
        hasher.update(name.as_bytes());
        hasher.update(&(source.len() as u64).to_le_bytes());
        hasher.update(source.as_bytes());
    }
    let hex = hasher.finalize().to_hex();
    hex.as_str().chars().take(16).collect()
}

#[cfg(test)]
mod tests;
