//! Streamed reading: records and row problems handed out one at a time.

use crate::{ManifestError, ManifestRead, RowProblem};
use retina_records::Record;

/// One item of a streamed read, in label-file (or sorted path) order.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadItem {
    /// A readable labelled image.
    Record(Record),
    /// A row (or image) that was skipped, with file, line and reason.
    Problem(RowProblem),
}

/// Records and problems of one manifest (or image folder), read as they are consumed.
///
/// Only the current row and the reader's buffer are in memory (plus a 64-bit hash per row for
/// duplicate detection), so a label file of any length streams. An `Err` item is a fatal problem
/// found part-way (a CSV that stops parsing); nothing follows it.
pub struct ManifestStream {
    inner: Box<dyn Iterator<Item = Result<ReadItem, ManifestError>> + Send>,
}

impl std::fmt::Debug for ManifestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestStream").finish_non_exhaustive()
    }
}

impl ManifestStream {
    pub(crate) fn new(
        inner: impl Iterator<Item = Result<ReadItem, ManifestError>> + Send + 'static,
    ) -> ManifestStream {
        ManifestStream {
            inner: Box::new(inner),
        }
    }

    /// Reads everything into memory (what [`crate::Manifest::read`] returns).
    pub fn collect_read(self) -> Result<ManifestRead, ManifestError> {
        let mut read = ManifestRead::default();
        for item in self {
            match item? {
                ReadItem::Record(record) => read.records.push(record),
                ReadItem::Problem(problem) => read.problems.push(problem),
            }
        }
        Ok(read)
    }
}

impl Iterator for ManifestStream {
    type Item = Result<ReadItem, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}
