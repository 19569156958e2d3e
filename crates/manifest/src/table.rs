//! Reading CSV and whitespace-separated TXT label files into headers and rows.

use crate::ManifestError;
use crate::normalise::clean;
use std::path::Path;

/// One data row: its 1-based line in the file and its cells (untrimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub line: Option<usize>,
    pub cells: Vec<String>,
}

impl Row {
    /// The trimmed cell at `index`; a short row reads as empty cells.
    pub fn cell(&self, index: usize) -> &str {
        self.cells.get(index).map_or("", |cell| clean(cell))
    }
}

/// A label table: trimmed header names and data rows in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Row>,
}

/// How to parse a delimited file.
#[derive(Debug, Clone)]
pub(crate) struct CsvOptions {
    pub delimiter: u8,
    /// 1-based record number of the header (ignored when `has_header` is false).
    pub header_row: usize,
    pub has_header: bool,
}

/// Reads a delimited file. Cells are decoded as UTF-8, replacing invalid bytes.
pub(crate) fn read_csv(file: &Path, options: &CsvOptions) -> Result<Table, ManifestError> {
    let bytes = std::fs::read(file).map_err(|source| ManifestError::ReadLabels {
        file: file.to_path_buf(),
        source,
    })?;
    parse_csv(file, &bytes, options)
}

pub(crate) fn parse_csv(
    file: &Path,
    bytes: &[u8],
    options: &CsvOptions,
) -> Result<Table, ManifestError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .from_reader(bytes);
    let mut records = Vec::new();
    let (mut counted_to, mut newlines) = (0usize, 0usize);
    for result in reader.byte_records() {
        let record = result.map_err(|error| ManifestError::Malformed {
            file: file.to_path_buf(),
            reason: format!("unparseable CSV: {error}"),
        })?;
        // Counted from the byte offset (incrementally: records come in order), because the
        // reader's own line count skips blank lines.
        let line = record.position().map(|p| {
            let mut start = usize::try_from(p.byte()).unwrap_or(usize::MAX);
            // The position can point at blank lines the reader skipped before the record.
            while matches!(bytes.get(start), Some(b'\n' | b'\r')) {
                start += 1;
            }
            let between = bytes.get(counted_to..start).unwrap_or_default();
            newlines += between.iter().filter(|b| **b == b'\n').count();
            counted_to = counted_to.max(start);
            newlines + 1
        });
        let cells = record
            .iter()
            .map(|cell| String::from_utf8_lossy(cell).into_owned())
            .collect();
        records.push(Row { line, cells });
    }
    into_table(file, records, options.has_header, options.header_row)
}

/// Reads a whitespace-separated file (one row per non-blank line).
pub(crate) fn read_txt(
    file: &Path,
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    let bytes = std::fs::read(file).map_err(|source| ManifestError::ReadLabels {
        file: file.to_path_buf(),
        source,
    })?;
    parse_txt(file, &bytes, has_header, header_row)
}

pub(crate) fn parse_txt(
    file: &Path,
    bytes: &[u8],
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    let text = String::from_utf8_lossy(bytes);
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !clean(line).is_empty())
        .map(|(index, line)| Row {
            line: Some(index + 1),
            cells: clean(line).split_whitespace().map(str::to_string).collect(),
        })
        .collect();
    into_table(file, records, has_header, header_row)
}

fn into_table(
    file: &Path,
    mut records: Vec<Row>,
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    if !has_header {
        let width = records.iter().map(|r| r.cells.len()).max().unwrap_or(0);
        let headers = (0..width).map(|i| i.to_string()).collect();
        return Ok(Table {
            headers,
            rows: records,
        });
    }
    let header_index = header_row.saturating_sub(1);
    if header_index >= records.len() {
        return Err(ManifestError::Malformed {
            file: file.to_path_buf(),
            reason: format!(
                "the header should be on row {header_row} but the file has {} non-blank rows",
                records.len()
            ),
        });
    }
    let rows = records.split_off(header_index + 1);
    let headers = records
        .pop()
        .map(|header| header.cells.iter().map(|c| clean(c).to_string()).collect())
        .unwrap_or_default();
    Ok(Table { headers, rows })
}

/// Finds the column for `aliases`: exact match after trimming first (in alias order), then a
/// case-insensitive match.
pub(crate) fn find_column(headers: &[String], aliases: &[String]) -> Option<usize> {
    for alias in aliases {
        let alias = clean(alias);
        if let Some(index) = headers.iter().position(|h| h == alias) {
            return Some(index);
        }
    }
    for alias in aliases {
        let alias = clean(alias);
        if let Some(index) = headers.iter().position(|h| h.eq_ignore_ascii_case(alias)) {
            return Some(index);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            header_row: 1,
            has_header: true,
        }
    }

    #[test]
    fn csv_headers_are_trimmed_and_rows_keep_lines() {
        let text = "\u{FEFF}image, level \n10_left,0\n\n10_right,1\n";
        let table = parse_csv(Path::new("t.csv"), text.as_bytes(), &options()).unwrap();
        assert_eq!(table.headers, vec!["image", "level"]);
        assert_eq!(table.rows.len(), 2);
        assert_eq!(table.rows[0].line, Some(2));
        assert_eq!(table.rows[1].line, Some(4));
        assert_eq!(table.rows[1].cell(1), "1");
        assert_eq!(table.rows[1].cell(7), "", "short rows read as empty");
    }

    #[test]
    fn line_numbers_count_quoted_newlines_and_blank_lines() {
        let text = "id,note\na,\"x\ny\"\n\r\n\nb,z\r\nc,w\n";
        let table = parse_csv(Path::new("t.csv"), text.as_bytes(), &options()).unwrap();
        let lines: Vec<Option<usize>> = table.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![Some(2), Some(6), Some(7)]);
        assert_eq!(table.rows[0].cell(1), "x\ny");
    }

    #[test]
    fn header_on_a_later_row() {
        let text = "title line\nid,grade\na,1\n";
        let mut opts = options();
        opts.header_row = 2;
        let table = parse_csv(Path::new("t.csv"), text.as_bytes(), &opts).unwrap();
        assert_eq!(table.headers, vec!["id", "grade"]);
        assert_eq!(table.rows.len(), 1);
        opts.header_row = 9;
        let error = parse_csv(Path::new("t.csv"), text.as_bytes(), &opts).unwrap_err();
        assert!(error.to_string().contains("t.csv"), "{error}");
    }

    #[test]
    fn txt_without_header_numbers_columns() {
        let text = "007-0004-000.jpg 0\n007-0005-000.jpg   5\n\n";
        let table = parse_txt(Path::new("train.txt"), text.as_bytes(), false, 1).unwrap();
        assert_eq!(table.headers, vec!["0", "1"]);
        assert_eq!(table.rows[1].cell(1), "5");
        assert_eq!(table.rows[1].line, Some(2));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let bytes = b"id,name\n1,caf\xe9\n";
        let table = parse_csv(Path::new("t.csv"), bytes, &options()).unwrap();
        assert_eq!(table.rows[0].cell(1), "caf\u{FFFD}");
    }

    #[test]
    fn column_lookup_prefers_exact_then_case_insensitive() {
        let headers: Vec<String> = ["Level", "level", "image"].map(String::from).to_vec();
        assert_eq!(find_column(&headers, &["level".into()]), Some(1));
        assert_eq!(find_column(&headers, &["IMAGE".into()]), Some(2));
        assert_eq!(find_column(&headers, &["grade".into()]), None);
    }

    proptest! {
        /// Header matching survives trailing/leading spaces in the file and picks any alias.
        #[test]
        fn header_matching_survives_spaces_and_aliases(
            name in "[A-Za-z][A-Za-z _]{0,15}[A-Za-z]",
            lead in " {0,3}",
            trail in " {0,3}",
            alias_first in proptest::bool::ANY,
        ) {
            prop_assume!(name != "id" && name != "other" && name != "no such header");
            let text = format!("id,{lead}{name}{trail},other\nx,3,y\n");
            let table = parse_csv(Path::new("p.csv"), text.as_bytes(), &options()).unwrap();
            let aliases = if alias_first {
                vec!["no such header".to_string(), format!("{name} ")]
            } else {
                vec![name.clone()]
            };
            let index = find_column(&table.headers, &aliases);
            prop_assert_eq!(index, Some(1));
            prop_assert_eq!(table.rows[0].cell(1), "3");
        }
    }
}
