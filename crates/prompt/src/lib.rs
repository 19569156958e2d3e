//! Prompt rendering for the caption-dataset builder.
//!
//! This crate owns the versioned prompt templates in `prompts/` (`system.j2`, `user_vision.j2`,
//! `user_text.j2`, rendered with MiniJinja), the [`FactSheet`] that turns a record's labels and
//! the image stage's measurements into words for those templates, and the prompt hash recorded
//! on every row. It never calls an endpoint.

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
pub const TEMPLATE_FILES: [&str; 3] = ["system.j2", "user_vision.j2", "user_text.j2"];

const EMBEDDED: [&str; 3] = [
    include_str!("../../../prompts/system.j2"),
    include_str!("../../../prompts/user_vision.j2"),
    include_str!("../../../prompts/user_text.j2"),
];

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

/// The three compiled templates and their content hash.
#[derive(Clone)]
pub struct PromptSet {
    env: Environment<'static>,
    /// Display name of each template (for errors), indexed like [`TEMPLATE_FILES`].
    origins: [String; 3],
    hash: String,
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

/// Context of one render: the fact sheet flattened, plus the mode.
#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    facts: &'a FactSheet,
    vision: bool,
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
                PromptSet {
                    env: Environment::new(),
                    hash: content_hash(&sources),
                    origins,
                    compile_error: Some((template, message)),
                }
            }
        }
    }

    /// Reads `system.j2`, `user_vision.j2` and `user_text.j2` from `dir` and compiles them.
    pub fn load(dir: &Path) -> Result<PromptSet, PromptError> {
        let mut sources: [String; 3] = Default::default();
        let mut origins: [String; 3] = Default::default();
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
    fn from_sources(sources: [String; 3], origins: [String; 3]) -> Result<PromptSet, PromptError> {
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
            hash,
            compile_error: None,
        })
    }

    /// Content hash (blake3 hex, 16 chars) over all templates: recorded on every row.
    pub fn hash(&self) -> &str {
        &self.hash
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
            .render(minijinja::value::Serde(context))
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

fn content_hash(sources: &[String; 3]) -> String {
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
