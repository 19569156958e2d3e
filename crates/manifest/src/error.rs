//! Fatal errors and per-row problems.

use std::fmt;
use std::path::PathBuf;

/// A problem that stops a manifest from being loaded or read.
///
/// Every variant names the manifest or label file involved, and the TOML key or header at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file itself could not be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    ReadManifest {
        /// The manifest file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML, or a key is unknown or has the wrong type.
    #[error("manifest {manifest}: line {line}, column {column}{}: {message}{}",
        key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default(),
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Toml {
        /// The manifest file (or `<inline manifest>`).
        manifest: String,
        /// 1-based line of the offending key or value (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// Dotted key at fault (`labels.header_rows`), when it can be told.
        key: Option<String>,
        /// The nearest valid key, when one is close.
        suggestion: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A key has a value that parses but makes no sense (missing companion key, bad template...).
    #[error("manifest {manifest}: key `{key}`: {reason}")]
    Invalid {
        /// The manifest file (or `<inline manifest>`).
        manifest: String,
        /// Dotted TOML key, e.g. `labels.file`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A label file (or image folder to scan) could not be opened or read.
    #[error("cannot read {}: {source}", file.display())]
    ReadLabels {
        /// The label file or folder.
        file: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The label file is not parseable at all (e.g. the header row does not exist).
    #[error("{}: {reason}", file.display())]
    Malformed {
        /// The label file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A header the manifest needs is not in the label file.
    #[error("{}: no header for `{key}` (tried {}); headers found: {}", file.display(),
        quote_list(tried), quote_list(found))]
    MissingHeader {
        /// The label file.
        file: PathBuf,
        /// The manifest key that needs the header, e.g. `columns.dr_grade`.
        key: String,
        /// The header names and aliases tried.
        tried: Vec<String>,
        /// The headers the file has (trimmed).
        found: Vec<String>,
    },
}

fn quote_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What kind of problem a [`RowProblem`] is, for counting and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ProblemKind {
    /// The row names an image file that does not exist.
    MissingImage,
    /// The row could not be read: an empty image cell, a file name not matching the pattern,
    /// an unreadable folder.
    #[default]
    Unreadable,
    /// A cell holds a value its field does not accept (and no value map covers it).
    UnknownValue,
    /// A second row for an image already read.
    Duplicate,
    /// The image path is absolute, contains `..`, or resolves (through a symlink) outside the
    /// dataset root.
    OutsideRoot,
}

impl ProblemKind {
    /// A short lower-case name (`missing image`, `unknown value`, ...).
    pub fn label(self) -> &'static str {
        match self {
            ProblemKind::MissingImage => "missing image",
            ProblemKind::Unreadable => "unreadable row",
            ProblemKind::UnknownValue => "unknown value",
            ProblemKind::Duplicate => "duplicate id",
            ProblemKind::OutsideRoot => "outside the root",
        }
    }
}

/// One row (or image) that could not be read; the other rows are still read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// What kind of problem it is.
    pub kind: ProblemKind,
    /// The label file (or image folder) the row came from.
    pub file: PathBuf,
    /// 1-based line number in the label file; `None` for scanned images.
    pub row: Option<usize>,
    /// The item as the row names it (image cell or relative path), when known.
    pub item: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(row) = self.row {
            write!(f, ":{row}")?;
        }
        if let Some(item) = &self.item {
            write!(f, " ({item})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute =
                previous.get(j).copied().unwrap_or(usize::MAX - 1) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(usize::MAX - 1) + 1;
            let insert = current.last().copied().unwrap_or(usize::MAX - 1) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// The candidate nearest to `word`, if it is plausibly a typo of it.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let best = candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .min_by_key(|(distance, _)| *distance)?;
    // A third of the word's length is about the most a typo changes.
    let limit = (word.chars().count() / 3).max(2);
    (best.0 <= limit).then(|| best.1.to_string())
}

/// Turns a toml error into [`ManifestError::Toml`] with line, column, key and suggestion.
pub(crate) fn toml_error(manifest: &str, text: &str, error: &toml::de::Error) -> ManifestError {
    let message = error.message().trim().to_string();
    let (line, column) = match error.span() {
        Some(span) => line_column(text, span.start),
        None => (0, 0),
    };
    let (table, key_on_line) = if line > 0 {
        context_at(text, line)
    } else {
        (None, None)
    };
    let (name, suggestion) = match parse_unknown_field(&message) {
        Some((name, expected)) => {
            let suggestion = nearest(&name, expected.iter().map(String::as_str));
            (Some(name), suggestion)
        }
        None => (key_on_line, None),
    };
    let key = match (table, name) {
        (Some(table), Some(name)) => Some(format!("{table}.{name}")),
        (table, name) => name.or(table),
    };
    ManifestError::Toml {
        manifest: manifest.to_string(),
        line,
        column,
        key,
        suggestion,
        message,
    }
}

/// The table in force at 1-based `line`, and the key written on that line, if any.
fn context_at(text: &str, line: usize) -> (Option<String>, Option<String>) {
    let lines: Vec<&str> = text.lines().take(line).collect();
    let table = lines.iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    });
    let key = lines.last().and_then(|l| {
        let (key, _) = l.split_once('=')?;
        let key = key.trim().trim_matches('"').trim();
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    });
    (table, key)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split("unknown field `").nth(1)?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("carrier", "carrier"), 0);
        assert_eq!(edit_distance("carier", "carrier"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_ignores_far_words() {
        let keys = ["carrier", "file", "header_row"];
        assert_eq!(nearest("carier", keys), Some("carrier".to_string()));
        assert_eq!(nearest("headr_row", keys), Some("header_row".to_string()));
        assert_eq!(nearest("zzzzzzzzzz", keys), None);
    }

    #[test]
    fn toml_errors_name_the_dotted_key() {
        let text = "[dataset]\nname = \"x\"\n[labels]\ncarrier = \"csv\"\nheader_row = \"one\"\n";
        let error = toml::from_str::<crate::spec::ManifestSpec>(text).unwrap_err();
        match toml_error("m.toml", text, &error) {
            ManifestError::Toml { key, line, .. } => {
                assert_eq!(key.as_deref(), Some("labels.header_row"));
                assert_eq!(line, 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_field_message_is_parsed() {
        let parsed = parse_unknown_field("unknown field `fil`, expected one of `file`, `carrier`");
        assert_eq!(
            parsed,
            Some((
                "fil".to_string(),
                vec!["file".to_string(), "carrier".to_string()]
            ))
        );
        assert_eq!(parse_unknown_field("invalid type: integer"), None);
    }

    #[test]
    fn row_problem_display_names_file_row_and_item() {
        let problem = RowProblem {
            kind: ProblemKind::UnknownValue,
            file: PathBuf::from("labels.csv"),
            row: Some(3),
            item: Some("10_left".to_string()),
            reason: "bad grade".to_string(),
        };
        assert_eq!(problem.to_string(), "labels.csv:3 (10_left): bad grade");
    }
}
