//! Reading CSV and whitespace-separated TXT label files into headers and rows, one row at a time.
//!
//! CSV and TXT files are streamed: only the reader's buffer and the current row are in memory,
//! whatever the file's length. XLSX workbooks are read whole (they are small: spreadsheets of a
//! few thousand rows) and then handed out row by row like the others.

use crate::ManifestError;
use crate::normalise::clean;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
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

/// Rows as they are read; after an `Err` the iterator ends.
pub(crate) type Rows = Box<dyn Iterator<Item = Result<Row, ManifestError>> + Send>;

/// A label file opened for streaming: its headers, and the data rows still to read.
pub(crate) struct OpenTable {
    pub headers: Vec<String>,
    pub rows: Rows,
}

impl OpenTable {
    /// Reads every remaining row (tests and small files).
    pub fn collect(self) -> Result<Table, ManifestError> {
        let rows = self.rows.collect::<Result<Vec<Row>, ManifestError>>()?;
        Ok(Table {
            headers: self.headers,
            rows,
        })
    }
}

/// How to parse a delimited file.
#[derive(Debug, Clone)]
pub(crate) struct CsvOptions {
    pub delimiter: u8,
    /// 1-based record number of the header (ignored when `has_header` is false).
    pub header_row: usize,
    pub has_header: bool,
}

fn open_file(file: &Path) -> Result<std::fs::File, ManifestError> {
    std::fs::File::open(file).map_err(|source| ManifestError::ReadLabels {
        file: file.to_path_buf(),
        source,
    })
}

/// Opens a delimited file for streaming. Cells are decoded as UTF-8, replacing invalid bytes.
/// A file without a header is read twice: once for its widest row (the column count).
pub(crate) fn open_csv(file: &Path, options: &CsvOptions) -> Result<OpenTable, ManifestError> {
    let rows = csv_rows(file, open_file(file)?, options.delimiter);
    let owned = file.to_path_buf();
    let delimiter = options.delimiter;
    with_header(
        file,
        rows,
        options.has_header,
        options.header_row,
        move || Ok(csv_rows(&owned, open_file(&owned)?, delimiter)),
    )
}

#[cfg(test)]
pub(crate) fn parse_csv(
    file: &Path,
    bytes: &[u8],
    options: &CsvOptions,
) -> Result<Table, ManifestError> {
    let owned = bytes.to_vec();
    let reopen = owned.clone();
    let path = file.to_path_buf();
    let delimiter = options.delimiter;
    let rows = csv_rows(file, std::io::Cursor::new(owned), delimiter);
    with_header(
        file,
        rows,
        options.has_header,
        options.header_row,
        move || Ok(csv_rows(&path, std::io::Cursor::new(reopen), delimiter)),
    )?
    .collect()
}

/// Remembers where every `\n` and `\r` passed, so a record's line can be told from its byte
/// offset after the CSV reader has buffered past it. Marks are dropped as records consume them,
/// so at most a buffer's worth is held.
struct LineMarks<R> {
    inner: R,
    offset: u64,
    /// (byte offset, is `\n`) of every line-break byte not yet consumed.
    marks: VecDeque<(u64, bool)>,
}

impl<R: Read> Read for LineMarks<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, byte) in buf[..n].iter().enumerate() {
            if matches!(byte, b'\n' | b'\r') {
                self.marks
                    .push_back((self.offset + i as u64, *byte == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams the records of a delimited file (no header handling), each with its 1-based line.
fn csv_rows<R: Read + Send + 'static>(file: &Path, reader: R, delimiter: u8) -> Rows {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(LineMarks {
            inner: reader,
            offset: 0,
            marks: VecDeque::new(),
        });
    let file = file.to_path_buf();
    let mut record = csv::ByteRecord::new();
    let mut newlines = 0usize;
    let mut failed = false;
    Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match reader.read_byte_record(&mut record) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(error) => {
                failed = true;
                return Some(Err(ManifestError::Malformed {
                    file: file.clone(),
                    reason: format!("unparseable CSV: {error}"),
                }));
            }
        }
        // Counted from the byte offset, because the reader's own line count skips blank lines.
        let line = record.position().map(|p| {
            let marks = &mut reader.get_mut().marks;
            let mut start = p.byte();
            while let Some(&(at, lf)) = marks.front() {
                if at >= start {
                    break;
                }
                newlines += usize::from(lf);
                marks.pop_front();
            }
            // The position can point at blank lines the reader skipped before the record.
            while let Some(&(at, lf)) = marks.front() {
                if at != start {
                    break;
                }
                newlines += usize::from(lf);
                marks.pop_front();
                start += 1;
            }
            newlines + 1
        });
        let cells = record
            .iter()
            .map(|cell| String::from_utf8_lossy(cell).into_owned())
            .collect();
        Some(Ok(Row { line, cells }))
    }))
}

/// Opens a whitespace-separated file (one row per non-blank line) for streaming.
pub(crate) fn open_txt(
    file: &Path,
    has_header: bool,
    header_row: usize,
) -> Result<OpenTable, ManifestError> {
    let rows = txt_rows(file, std::io::BufReader::new(open_file(file)?));
    let owned = file.to_path_buf();
    with_header(file, rows, has_header, header_row, move || {
        Ok(txt_rows(
            &owned,
            std::io::BufReader::new(open_file(&owned)?),
        ))
    })
}

#[cfg(test)]
pub(crate) fn parse_txt(
    file: &Path,
    bytes: &[u8],
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    let owned = bytes.to_vec();
    let reopen = owned.clone();
    let path = file.to_path_buf();
    let rows = txt_rows(file, std::io::Cursor::new(owned));
    with_header(file, rows, has_header, header_row, move || {
        Ok(txt_rows(&path, std::io::Cursor::new(reopen)))
    })?
    .collect()
}

/// Streams the non-blank lines of a text file, split on whitespace, with 1-based line numbers.
fn txt_rows<R: BufRead + Send + 'static>(file: &Path, mut reader: R) -> Rows {
    let file = file.to_path_buf();
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    let mut failed = false;
    Box::new(std::iter::from_fn(move || {
        while !failed {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    failed = true;
                    return Some(Err(ManifestError::ReadLabels {
                        file: file.clone(),
                        source,
                    }));
                }
            }
            line_no += 1;
            let text = String::from_utf8_lossy(&buf);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            let text = clean(text);
            if text.is_empty() {
                continue;
            }
            return Some(Ok(Row {
                line: Some(line_no),
                cells: text.split_whitespace().map(str::to_string).collect(),
            }));
        }
        None
    }))
}

/// Splits off the header: the `header_row`-th row (rows before it are dropped), or, without a
/// header, column numbers `0..width` where `width` is the widest row (read by `reopen`'s pass).
fn with_header(
    file: &Path,
    mut rows: Rows,
    has_header: bool,
    header_row: usize,
    reopen: impl FnOnce() -> Result<Rows, ManifestError>,
) -> Result<OpenTable, ManifestError> {
    if !has_header {
        let mut width = 0;
        for row in reopen()? {
            width = width.max(row?.cells.len());
        }
        let headers = (0..width).map(|i| i.to_string()).collect();
        return Ok(OpenTable { headers, rows });
    }
    let wanted = header_row.max(1);
    let mut seen = 0usize;
    for row in rows.by_ref() {
        let row = row?;
        seen += 1;
        if seen == wanted {
            let headers = row.cells.iter().map(|c| clean(c).to_string()).collect();
            return Ok(OpenTable { headers, rows });
        }
    }
    Err(ManifestError::Malformed {
        file: file.to_path_buf(),
        reason: format!(
            "the header should be on row {header_row} but the file has {seen} non-blank rows"
        ),
    })
}

/// Counts the data rows of a delimited or text file in one pass without keeping them (a cheap
/// pre-count for progress); `None` if the file cannot be read.
pub(crate) fn count_rows(
    file: &Path,
    csv_delimiter: Option<u8>,
    header_rows: usize,
) -> Option<u64> {
    let rows = match csv_delimiter {
        Some(delimiter) => csv_rows(file, open_file(file).ok()?, delimiter),
        None => txt_rows(file, std::io::BufReader::new(open_file(file).ok()?)),
    };
    let mut count = 0u64;
    for row in rows {
        row.ok()?;
        count += 1;
    }
    Some(count.saturating_sub(header_rows as u64))
}

/// Hands out an in-memory table's rows like a streamed file's.
pub(crate) fn table_rows(table: Table) -> OpenTable {
    OpenTable {
        headers: table.headers,
        rows: Box::new(table.rows.into_iter().map(Ok)),
    }
}

/// Reads one sheet of an XLSX workbook: the named sheet (matched after trimming, then ignoring
/// case), or the first. Rows are numbered as the spreadsheet shows them, and `header_row` is
/// that number (PAPILA's header is on row 2). Blank rows are skipped.
pub(crate) fn read_xlsx(
    file: &Path,
    sheet: Option<&str>,
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    let bytes = std::fs::read(file).map_err(|source| ManifestError::ReadLabels {
        file: file.to_path_buf(),
        source,
    })?;
    parse_xlsx(file, bytes, sheet, has_header, header_row)
}

pub(crate) fn parse_xlsx(
    file: &Path,
    bytes: Vec<u8>,
    sheet: Option<&str>,
    has_header: bool,
    header_row: usize,
) -> Result<Table, ManifestError> {
    use calamine::Reader;
    let malformed = |reason: String| ManifestError::Malformed {
        file: file.to_path_buf(),
        reason,
    };
    // The workbook parser is third-party code fed untrusted bytes: a panic in it must become an
    // error naming the file, never end the run.
    let parsed = std::panic::catch_unwind(move || {
        let mut workbook: calamine::Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(bytes))
                .map_err(|e| format!("not a readable XLSX workbook: {e}"))?;
        let names = workbook.sheet_names();
        let name = match sheet {
            Some(wanted) => {
                let wanted = clean(wanted);
                names
                    .iter()
                    .find(|n| clean(n) == wanted)
                    .or_else(|| names.iter().find(|n| clean(n).eq_ignore_ascii_case(wanted)))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "no sheet `{wanted}` (sheets: {})",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?
            }
            None => names
                .first()
                .cloned()
                .ok_or_else(|| "the workbook has no sheets".to_string())?,
        };
        let range = workbook
            .worksheet_range(&name)
            .map_err(|e| format!("cannot read sheet `{name}`: {e}"))?;
        let (first_row, first_col) = range
            .start()
            .map_or((0, 0), |(r, c)| (r as usize, c as usize));
        let mut rows = Vec::new();
        for (index, cells) in range.rows().enumerate() {
            let mut texts = vec![String::new(); first_col];
            texts.extend(cells.iter().map(cell_text));
            if texts.iter().all(|t| clean(t).is_empty()) {
                continue;
            }
            rows.push(Row {
                line: Some(first_row + index + 1),
                cells: texts,
            });
        }
        Ok::<_, String>(rows)
    });
    let mut rows = match parsed {
        Ok(Ok(rows)) => rows,
        Ok(Err(reason)) => return Err(malformed(reason)),
        Err(_) => return Err(malformed("not a readable XLSX workbook".into())),
    };
    if !has_header {
        let width = rows.iter().map(|r| r.cells.len()).max().unwrap_or(0);
        let headers = (0..width).map(|i| i.to_string()).collect();
        return Ok(Table { headers, rows });
    }
    let Some(at) = rows.iter().position(|r| r.line == Some(header_row)) else {
        return Err(malformed(format!(
            "the header should be on spreadsheet row {header_row}, which is blank or missing"
        )));
    };
    let data = rows.split_off(at + 1);
    let headers = rows
        .pop()
        .map(|header| header.cells.iter().map(|c| clean(c).to_string()).collect())
        .unwrap_or_default();
    Ok(Table {
        headers,
        rows: data,
    })
}

/// A spreadsheet cell as the text a CSV export would hold: integral numbers without `.0`.
fn cell_text(cell: &calamine::Data) -> String {
    use calamine::Data;
    match cell {
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", *f as i64)
        }
        Data::Float(f) => f.to_string(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => d.as_f64().to_string(),
        Data::Error(e) => e.to_string(),
        Data::Empty => String::new(),
    }
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

    /// A small valid workbook to mutate.
    fn workbook() -> Vec<u8> {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet.write_string(0, 0, "title").unwrap();
        sheet.write_string(1, 0, "ID").unwrap();
        sheet.write_string(1, 1, "Diagnosis").unwrap();
        sheet.write_string(2, 0, "#002").unwrap();
        sheet.write_number(2, 1, 2.0).unwrap();
        book.save_to_buffer().unwrap()
    }

    #[test]
    fn xlsx_header_on_row_two_and_numbers_as_text() {
        let table = parse_xlsx(Path::new("p.xlsx"), workbook(), None, true, 2).unwrap();
        assert_eq!(table.headers, vec!["ID", "Diagnosis"]);
        assert_eq!(table.rows[0].line, Some(3));
        assert_eq!(table.rows[0].cell(0), "#002");
        assert_eq!(table.rows[0].cell(1), "2", "2.0 reads as 2");
        let error = parse_xlsx(Path::new("p.xlsx"), workbook(), Some("Nope"), true, 2)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("p.xlsx") && error.contains("Sheet1"),
            "{error}"
        );
        let error = parse_xlsx(Path::new("p.xlsx"), workbook(), None, true, 7)
            .unwrap_err()
            .to_string();
        assert!(error.contains("row 7"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Arbitrary bytes never panic any carrier: they read, or fail naming the file.
        #[test]
        fn malformed_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                       header_row in 1usize..4, has_header in any::<bool>()) {
            let opts = CsvOptions { delimiter: b',', header_row, has_header };
            for result in [
                parse_csv(Path::new("m.csv"), &bytes, &opts),
                parse_txt(Path::new("m.txt"), &bytes, has_header, header_row),
                parse_xlsx(Path::new("m.xlsx"), bytes.clone(), None, has_header, header_row),
            ] {
                if let Err(error) = result {
                    let text = error.to_string();
                    prop_assert!(text.contains("m."), "{}", text);
                }
            }
        }

        /// A real workbook with flipped bytes or cut short never panics the XLSX reader.
        #[test]
        fn corrupted_workbooks_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
                                           cut in proptest::option::of(any::<usize>())) {
            let mut bytes = workbook();
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            if let Some(cut) = cut {
                let len = bytes.len();
                bytes.truncate(cut % len);
            }
            let _ = parse_xlsx(Path::new("c.xlsx"), bytes, None, true, 2);
        }

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
