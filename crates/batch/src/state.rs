//! The local record of batch files and their remote ids, for resuming across restarts.

use crate::BatchError;
use crate::input::{InputFile, sync_dir};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// Name of the state file inside the batch folder.
pub const STATE_FILE: &str = "state.json";

/// Statuses after which a batch changes no more (the Batch API's terminal ones).
const TERMINAL: [&str; 4] = ["completed", "failed", "expired", "cancelled"];

/// Every input file prepared in a dataset's batch folder and how far each has gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    /// Format version of this file.
    pub version: u32,
    /// Files in the order they were prepared.
    pub files: Vec<FileEntry>,
}

/// One input file: local facts, then what the server said at each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the batch folder.
    pub name: String,
    /// Requests in it.
    pub requests: usize,
    /// Size in bytes.
    pub bytes: u64,
    /// Item ids (`custom_id`s) in it: what the join expects back.
    pub items: Vec<String>,
    /// Id the Files API gave the upload.
    #[serde(default)]
    pub input_file_id: Option<String>,
    /// Id of the batch made from it.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// Last status seen (`validating`, `in_progress`, `completed`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Output file id, once the batch has one.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// Error file id, once the batch has one.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Set once its results are in the journal (or its items were given up as failed): its items
    /// may then be prepared again if they are not done.
    #[serde(default)]
    pub collected: bool,
}

impl FileEntry {
    /// A new entry for a file just written.
    pub fn from_input(file: &InputFile) -> Self {
        FileEntry {
            name: file.name.clone(),
            requests: file.requests,
            bytes: file.bytes,
            items: file.ids.clone(),
            input_file_id: None,
            batch_id: None,
            status: None,
            output_file_id: None,
            error_file_id: None,
            collected: false,
        }
    }

    /// True when the batch has reached a status it never leaves.
    pub fn is_terminal(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|status| TERMINAL.contains(&status))
    }

    /// Local name of its downloaded output file.
    pub fn output_name(&self) -> String {
        format!("{}.output.jsonl", self.name.trim_end_matches(".jsonl"))
    }

    /// Local name of its downloaded error file.
    pub fn error_name(&self) -> String {
        format!("{}.errors.jsonl", self.name.trim_end_matches(".jsonl"))
    }
}

impl BatchState {
    /// Reads `dir/state.json`; an empty state when there is none yet.
    pub fn load(dir: &Path) -> Result<Self, BatchError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BatchState {
                    version: 1,
                    files: Vec::new(),
                });
            }
            Err(source) => return Err(BatchError::Io { path, source }),
        };
        let state: BatchState = serde_json::from_str(&text).map_err(|e| BatchError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != 1 {
            return Err(BatchError::State {
                path,
                reason: format!("version {} is not 1", state.version),
            });
        }
        Ok(state)
    }

    /// Writes `dir/state.json` atomically (temporary file, fsync, rename, fsync of the folder),
    /// so a crash leaves the previous or the new state, never half of one.
    pub fn save(&self, dir: &Path) -> Result<(), BatchError> {
        std::fs::create_dir_all(dir).map_err(BatchError::io(dir))?;
        let path = dir.join(STATE_FILE);
        let temporary = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| BatchError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&temporary).map_err(BatchError::io(&temporary))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(BatchError::io(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(BatchError::io(&path))?;
        sync_dir(dir)
    }

    /// Items in files not yet collected: asked already, so never asked again meanwhile.
    pub fn open_items(&self) -> HashSet<&str> {
        self.files
            .iter()
            .filter(|f| !f.collected)
            .flat_map(|f| f.items.iter().map(String::as_str))
            .collect()
    }

    /// The number the next input file gets.
    pub fn next_index(&self) -> usize {
        self.files.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_tracks_open_items() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = BatchState::load(dir.path()).unwrap();
        assert!(state.files.is_empty());
        let mut entry = FileEntry::from_input(&InputFile {
            name: "input-00001.jsonl".into(),
            requests: 2,
            bytes: 10,
            ids: vec!["a".into(), "b".into()],
        });
        entry.batch_id = Some("batch_1".into());
        state.files.push(entry.clone());
        entry.name = "input-00002.jsonl".into();
        entry.items = vec!["c".into()];
        entry.collected = true;
        state.files.push(entry);
        state.save(dir.path()).unwrap();
        let loaded = BatchState::load(dir.path()).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.open_items(), HashSet::from(["a", "b"]));
        assert_eq!(loaded.next_index(), 3);
        assert_eq!(loaded.files[0].output_name(), "input-00001.output.jsonl");
    }

    #[test]
    fn a_broken_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = BatchState::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
