//! Writing Batch API input files, split by request count and size.

use crate::{BatchError, CHAT_COMPLETIONS_URL};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Most requests and bytes one input file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per file (the Batch API allows 50,000).
    pub max_requests: usize,
    /// Bytes per file (the Batch API allows 200 MB; base64 images reach this first).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Decimal megabytes: below the API's limit however it counts a megabyte.
        Limits {
            max_requests: 50_000,
            max_bytes: 200_000_000,
        }
    }
}

/// One finished input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// File name inside the writer's folder, e.g. `input-00001.jsonl`.
    pub name: String,
    /// Requests (lines) in it.
    pub requests: usize,
    /// Its size in bytes.
    pub bytes: u64,
    /// The `custom_id` of every line, in order.
    pub ids: Vec<String>,
}

struct Open {
    writer: BufWriter<File>,
    temporary: PathBuf,
    file: InputFile,
}

/// Writes request lines into as many files as [`Limits`] need.
///
/// Each file is written under a temporary name, fsync'd and renamed when full or at
/// [`InputWriter::finish`], so a crash never leaves a half file under a final name.
pub struct InputWriter {
    dir: PathBuf,
    prefix: String,
    next_index: usize,
    limits: Limits,
    current: Option<Open>,
    finished: Vec<InputFile>,
    seen: HashSet<String>,
}

impl InputWriter {
    /// A writer into `dir` (created if missing) naming files `<prefix>-<index>.jsonl`, the first
    /// numbered `first_index`.
    pub fn new(
        dir: &Path,
        prefix: &str,
        first_index: usize,
        limits: Limits,
    ) -> Result<Self, BatchError> {
        std::fs::create_dir_all(dir).map_err(BatchError::io(dir))?;
        Ok(InputWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            next_index: first_index,
            limits: Limits {
                max_requests: limits.max_requests.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            current: None,
            finished: Vec::new(),
            seen: HashSet::new(),
        })
    }

    /// The JSONL line (with its newline) for one request.
    pub fn line(custom_id: &str, body: &Value) -> String {
        let mut line = json!({
            "custom_id": custom_id,
            "method": "POST",
            "url": CHAT_COMPLETIONS_URL,
            "body": body,
        })
        .to_string();
        line.push('\n');
        line
    }

    /// Appends one request, starting a new file first if this one would exceed a limit.
    pub fn push(&mut self, custom_id: &str, body: &Value) -> Result<(), BatchError> {
        let line = Self::line(custom_id, body);
        let bytes = line.len() as u64;
        if bytes > self.limits.max_bytes {
            return Err(BatchError::RequestTooLarge {
                custom_id: custom_id.to_string(),
                bytes,
                limit: self.limits.max_bytes,
            });
        }
        if !self.seen.insert(custom_id.to_string()) {
            return Err(BatchError::DuplicateId(custom_id.to_string()));
        }
        let full = self.current.as_ref().is_some_and(|open| {
            open.file.requests >= self.limits.max_requests
                || open.file.bytes + bytes > self.limits.max_bytes
        });
        if full {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        open.writer
            .write_all(line.as_bytes())
            .map_err(BatchError::io(&open.temporary))?;
        open.file.requests += 1;
        open.file.bytes += bytes;
        open.file.ids.push(custom_id.to_string());
        Ok(())
    }

    /// Closes the last file and returns every file written, in order.
    pub fn finish(mut self) -> Result<Vec<InputFile>, BatchError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.finished))
    }

    fn open_next(&mut self) -> Result<(), BatchError> {
        let name = format!("{}-{:05}.jsonl", self.prefix, self.next_index);
        self.next_index += 1;
        let temporary = self.dir.join(format!("{name}.tmp"));
        let file = File::create(&temporary).map_err(BatchError::io(&temporary))?;
        self.current = Some(Open {
            writer: BufWriter::with_capacity(1 << 20, file),
            temporary,
            file: InputFile {
                name,
                requests: 0,
                bytes: 0,
                ids: Vec::new(),
            },
        });
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), BatchError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let Open {
            writer,
            temporary,
            file,
        } = open;
        let handle = writer.into_inner().map_err(|e| BatchError::Io {
            path: temporary.clone(),
            source: e.into_error(),
        })?;
        handle.sync_all().map_err(BatchError::io(&temporary))?;
        let target = self.dir.join(&file.name);
        std::fs::rename(&temporary, &target).map_err(BatchError::io(&target))?;
        sync_dir(&self.dir)?;
        self.finished.push(file);
        Ok(())
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BatchError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BatchError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_by_request_count() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_requests: 10,
            max_bytes: 1 << 30,
        };
        let mut writer = InputWriter::new(dir.path(), "input", 1, limits).unwrap();
        for i in 0..25 {
            writer.push(&format!("item-{i}"), &json!({"n": i})).unwrap();
        }
        let files = writer.finish().unwrap();
        let counts: Vec<usize> = files.iter().map(|f| f.requests).collect();
        assert_eq!(counts, vec![10, 10, 5]);
        assert_eq!(files[0].name, "input-00001.jsonl");
        assert_eq!(files[2].name, "input-00003.jsonl");
        let first = lines(&dir.path().join(&files[0].name));
        assert_eq!(first[0]["custom_id"], "item-0");
        assert_eq!(first[0]["method"], "POST");
        assert_eq!(first[0]["url"], "/v1/chat/completions");
        assert_eq!(first[0]["body"], json!({"n": 0}));
        assert!(!dir.path().join("input-00003.jsonl.tmp").exists());
    }

    #[test]
    fn splits_by_bytes_and_refuses_a_line_larger_than_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let body = json!({"text": "x".repeat(100)});
        let line = InputWriter::line("a-0", &body).len() as u64;
        let limits = Limits {
            max_requests: 1000,
            max_bytes: line * 3,
        };
        let mut writer = InputWriter::new(dir.path(), "input", 1, limits).unwrap();
        for i in 0..7 {
            writer.push(&format!("a-{i}"), &body).unwrap();
        }
        let err = writer
            .push("huge", &json!({"text": "y".repeat(1000)}))
            .unwrap_err();
        assert!(matches!(err, BatchError::RequestTooLarge { .. }), "{err}");
        let files = writer.finish().unwrap();
        assert_eq!(
            files.iter().map(|f| f.requests).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        for file in &files {
            let size = std::fs::metadata(dir.path().join(&file.name))
                .unwrap()
                .len();
            assert_eq!(size, file.bytes);
            assert!(size <= limits.max_bytes);
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = InputWriter::new(dir.path(), "input", 1, Limits::default()).unwrap();
        writer.push("same", &json!({})).unwrap();
        assert!(matches!(
            writer.push("same", &json!({})),
            Err(BatchError::DuplicateId(_))
        ));
    }

    proptest! {
        #[test]
        fn every_request_lands_in_exactly_one_file_within_limits(
            sizes in proptest::collection::vec(0usize..200, 1..60),
            max_requests in 1usize..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let limits = Limits { max_requests, max_bytes: 600 };
            let mut writer = InputWriter::new(dir.path(), "p", 1, limits).unwrap();
            let mut expected = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let id = format!("id-{i}");
                let body = json!({"t": "z".repeat(*size)});
                match writer.push(&id, &body) {
                    Ok(()) => expected.push(id),
                    Err(BatchError::RequestTooLarge { .. }) => {}
                    Err(other) => prop_assert!(false, "{other}"),
                }
            }
            let files = writer.finish().unwrap();
            let mut seen = Vec::new();
            for file in &files {
                prop_assert!(file.requests <= max_requests);
                prop_assert!(file.bytes <= 600);
                prop_assert!(file.requests > 0);
                seen.extend(file.ids.iter().cloned());
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
