//! Finding image files in folders, and laterality from file names.

use crate::{ManifestError, ProblemKind, RowProblem};
use retina_records::Laterality;
use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

/// Extensions scanned when the manifest lists none (compared ignoring case).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "tif", "tiff", "bmp", "ppm"];

/// Default file-name patterns for the left eye.
pub const DEFAULT_LEFT_PATTERNS: [&str; 2] = ["_left", "OS"];
/// Default file-name patterns for the right eye.
pub const DEFAULT_RIGHT_PATTERNS: [&str; 2] = ["_right", "OD"];

/// Laterality from a file stem by substring patterns.
///
/// A pattern counts only where it is not glued to other letters (`RET002OD` and `10_left` match,
/// `PHOTOS` does not match `OS`). Matching is case-sensitive so `OD` is not found in `good`.
/// When both eyes match, or neither, the answer is `Unknown`.
pub fn laterality_from_name(stem: &str, left: &[String], right: &[String]) -> Laterality {
    let is_left = left.iter().any(|p| contains_token(stem, p));
    let is_right = right.iter().any(|p| contains_token(stem, p));
    match (is_left, is_right) {
        (true, false) => Laterality::Left,
        (false, true) => Laterality::Right,
        _ => Laterality::Unknown,
    }
}

fn contains_token(text: &str, pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let glued = |ch: Option<char>, edge: Option<char>| match (ch, edge) {
        (Some(ch), Some(edge)) => ch.is_alphabetic() && edge.is_alphabetic(),
        _ => false,
    };
    text.match_indices(pattern).any(|(start, matched)| {
        let before = text.get(..start).and_then(|t| t.chars().next_back());
        let after = text
            .get(start + matched.len()..)
            .and_then(|t| t.chars().next());
        !glued(before, pattern.chars().next()) && !glued(after, pattern.chars().next_back())
    })
}

/// A file found by scanning, with its path relative to the scan root (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub relative: String,
    pub path: PathBuf,
}

/// Recursively lists files under `dir` whose extension is in `extensions` (ignoring case),
/// sorted by relative path to `root` so the order is stable. Hidden entries (`.DS_Store`,
/// macOS `._x.jpg` forks) are skipped, and symlinked folders are not followed (no loops).
/// Unreadable subfolders become problems; an unreadable `dir` is an error.
#[cfg(test)]
pub(crate) fn scan(
    dir: &Path,
    root: &Path,
    extensions: &[String],
    problems: &mut Vec<RowProblem>,
) -> Result<Vec<Found>, ManifestError> {
    let mut found = Vec::new();
    for item in Walk::new(dir, root, extensions)? {
        match item {
            Walked::Found(file) => found.push(file),
            Walked::Problem(problem) => problems.push(problem),
        }
    }
    Ok(found)
}

/// What a [`Walk`] yields: an image file, or a folder or symlink it could not use.
#[derive(Debug)]
pub(crate) enum Walked {
    Found(Found),
    Problem(RowProblem),
}

/// One folder entry waiting to be visited; `key` sorts folders as `name/` so a depth-first walk
/// in key order yields the same order as sorting every relative path.
struct Entry {
    key: String,
    path: PathBuf,
    is_dir: bool,
    is_file: bool,
    is_symlink: bool,
}

/// A depth-first, sorted walk that holds one listing per open folder (not every file found), so
/// a folder carrier over a million images streams. Same rules as [`scan`].
pub(crate) struct Walk {
    root: PathBuf,
    extensions: Vec<String>,
    stack: Vec<std::vec::IntoIter<Entry>>,
    problems: VecDeque<RowProblem>,
}

impl Walk {
    /// Starts a walk of `dir`; an unreadable `dir` is an error.
    pub(crate) fn new(
        dir: &Path,
        root: &Path,
        extensions: &[String],
    ) -> Result<Walk, ManifestError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::ReadLabels {
            file: dir.to_path_buf(),
            source,
        })?;
        let mut walk = Walk {
            root: root.to_path_buf(),
            extensions: extensions.to_vec(),
            stack: Vec::new(),
            problems: VecDeque::new(),
        };
        let listing = walk.listing(dir, entries);
        walk.stack.push(listing);
        Ok(walk)
    }

    fn listing(&mut self, folder: &Path, entries: std::fs::ReadDir) -> std::vec::IntoIter<Entry> {
        let mut list = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    self.problems.push_back(folder_problem(folder, &error));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let key = if kind.is_dir() {
                format!("{name}/")
            } else {
                name
            };
            list.push(Entry {
                key,
                path: entry.path(),
                is_dir: kind.is_dir(),
                is_file: kind.is_file(),
                is_symlink: kind.is_symlink(),
            });
        }
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list.into_iter()
    }
}

impl Iterator for Walk {
    type Item = Walked;

    fn next(&mut self) -> Option<Walked> {
        loop {
            if let Some(problem) = self.problems.pop_front() {
                return Some(Walked::Problem(problem));
            }
            let entry = match self.stack.last_mut()?.next() {
                Some(entry) => entry,
                None => {
                    self.stack.pop();
                    continue;
                }
            };
            let path = entry.path;
            if entry.is_dir {
                match std::fs::read_dir(&path) {
                    Ok(sub) => {
                        let listing = self.listing(&path, sub);
                        self.stack.push(listing);
                    }
                    Err(error) => self.problems.push_back(folder_problem(&path, &error)),
                }
                continue;
            }
            // A symlink to a file counts; a symlink to a folder is not followed.
            if !entry.is_file && !path.is_file() {
                continue;
            }
            let wanted = path
                .extension()
                .map(|ext| ext.to_string_lossy())
                .is_some_and(|ext| self.extensions.iter().any(|e| e.eq_ignore_ascii_case(&ext)));
            if !wanted {
                continue;
            }
            if entry.is_symlink && !inside_root(&path, &self.root) {
                return Some(Walked::Problem(RowProblem {
                    kind: ProblemKind::OutsideRoot,
                    item: relative_to(&path, &self.root),
                    file: path,
                    row: None,
                    reason: "symlink resolves outside the dataset root".into(),
                }));
            }
            if let Some(relative) = relative_to(&path, &self.root) {
                return Some(Walked::Found(Found { relative, path }));
            }
        }
    }
}

fn folder_problem(folder: &Path, error: &std::io::Error) -> RowProblem {
    RowProblem {
        kind: ProblemKind::Unreadable,
        file: folder.to_path_buf(),
        row: None,
        item: None,
        reason: format!("cannot read folder: {error}"),
    }
}

/// Whether `path`, with every symlink resolved, is still inside `root` (also resolved).
/// Anything that cannot be resolved counts as outside.
pub(crate) fn inside_root(path: &Path, root: &Path) -> bool {
    match (path.canonicalize(), root.canonicalize()) {
        (Ok(path), Ok(root)) => path.starts_with(root),
        _ => false,
    }
}

/// `path` relative to `root`, `/`-separated.
pub(crate) fn relative_to(path: &Path, root: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The stem (file name without extension) of a `/`-separated relative path.
pub(crate) fn stem_of(relative: &str) -> &str {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_patterns() {
        let left = strings(&DEFAULT_LEFT_PATTERNS);
        let right = strings(&DEFAULT_RIGHT_PATTERNS);
        assert_eq!(
            laterality_from_name("10_left", &left, &right),
            Laterality::Left
        );
        assert_eq!(
            laterality_from_name("10_right", &left, &right),
            Laterality::Right
        );
        assert_eq!(
            laterality_from_name("RET002OD", &left, &right),
            Laterality::Right
        );
        assert_eq!(
            laterality_from_name("RET002OS", &left, &right),
            Laterality::Left
        );
        assert_eq!(
            laterality_from_name("IM_OS_3", &left, &right),
            Laterality::Left
        );
        assert_eq!(
            laterality_from_name("PHOTOS_1", &left, &right),
            Laterality::Unknown
        );
        assert_eq!(
            laterality_from_name("good", &left, &right),
            Laterality::Unknown
        );
        assert_eq!(
            laterality_from_name("image_7", &left, &right),
            Laterality::Unknown
        );
        assert_eq!(
            laterality_from_name("x_left_right", &left, &right),
            Laterality::Unknown
        );
    }

    #[test]
    fn custom_patterns() {
        let left = strings(&["-L"]);
        let right = strings(&["-R"]);
        assert_eq!(
            laterality_from_name("p12-L", &left, &right),
            Laterality::Left
        );
        assert_eq!(
            laterality_from_name("p12-R", &left, &right),
            Laterality::Right
        );
        assert_eq!(
            laterality_from_name("p12-Right", &left, &right),
            Laterality::Unknown
        );
    }

    #[test]
    fn stems() {
        assert_eq!(stem_of("train/10_left.jpeg"), "10_left");
        assert_eq!(stem_of("a.b/c"), "c");
        assert_eq!(stem_of(".hidden"), ".hidden");
    }

    #[test]
    fn scan_is_sorted_filtered_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/sub")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        for name in [
            "b/sub/2.PNG",
            "a/1.jpg",
            "a/notes.txt",
            "a/._1.jpg",
            ".DS_Store",
            "c.tif",
        ] {
            std::fs::write(root.join(name), b"").unwrap();
        }
        let mut problems = Vec::new();
        let exts = strings(&IMAGE_EXTENSIONS);
        let found = scan(root, root, &exts, &mut problems).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(names, vec!["a/1.jpg", "b/sub/2.PNG", "c.tif"]);
        assert!(problems.is_empty());
        assert!(scan(&root.join("missing"), root, &exts, &mut problems).is_err());
    }
}
