//! `build-dataset check --manifest PATH...`: validates data manifests against the files on disk
//! without running the pipeline. Prints, per manifest, the record count, counts per label, and
//! every problem (missing images, unreadable rows, unknown values, duplicate ids, paths leaving
//! the root) with its file and line; exits non-zero if there is any.

use anyhow::Result;
use clap::Args;
use retina_manifest::{Manifest, ProblemKind, RowProblem};
use retina_records::{ItemId, Record};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `build-dataset check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A data manifest to check (repeat for several).
    #[arg(long = "manifest", value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,
    /// The dataset folder, overriding every manifest's `root`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// What checking found, for the exit code and for tests.
#[derive(Debug, Default)]
pub struct CheckSummary {
    /// Readable records over all manifests.
    pub records: usize,
    /// Problems (row problems, fatal manifest errors, ids duplicated across manifests).
    pub problems: usize,
}

/// Runs the check, printing the report on standard output.
pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let (report, summary) = check(args);
    print!("{report}");
    Ok(if summary.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks every manifest and returns the report text.
pub fn check(args: &CheckArgs) -> (String, CheckSummary) {
    let mut out = String::new();
    let mut summary = CheckSummary::default();
    // Ids must be unique across manifests too (PAPILA's two workbooks share one dataset name).
    let mut ids: HashMap<ItemId, String> = HashMap::new();
    for path in &args.manifests {
        let _ = writeln!(out, "== {}", path.display());
        let mut manifest = match Manifest::from_path(path) {
            Ok(manifest) => manifest,
            Err(error) => {
                let _ = writeln!(out, "error: {error}\n");
                summary.problems += 1;
                continue;
            }
        };
        if let Some(root) = &args.root {
            manifest.set_root(root.clone());
        }
        let _ = writeln!(
            out,
            "dataset {}, root {}",
            manifest.name(),
            manifest.root().display()
        );
        let read = match manifest.read() {
            Ok(read) => read,
            Err(error) => {
                let _ = writeln!(out, "error: {error}\n");
                summary.problems += 1;
                continue;
            }
        };
        let mut problems = read.problems.clone();
        for record in &read.records {
            let source = format!("{} ({})", path.display(), record.relative_path);
            if let Some(first) = ids.get(&record.id) {
                problems.push(RowProblem {
                    kind: ProblemKind::Duplicate,
                    file: path.clone(),
                    row: None,
                    item: Some(record.relative_path.clone()),
                    reason: format!("id {} is also the id of {first}", record.id),
                });
            } else {
                ids.insert(record.id.clone(), source);
            }
        }
        summary.records += read.records.len();
        summary.problems += problems.len();
        let _ = writeln!(
            out,
            "{} records, {} problems",
            read.records.len(),
            problems.len()
        );
        write_label_counts(&mut out, &read.records);
        write_problems(&mut out, &problems);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "total: {} records, {} problems in {} manifests",
        summary.records,
        summary.problems,
        args.manifests.len()
    );
    (out, summary)
}

fn word<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}").to_lowercase()
}

/// Counts per label value: `  dr_grade: 0=2, 2=1, unlabelled=1`.
fn write_label_counts(out: &mut String, records: &[Record]) {
    let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut add = |label: &'static str, value: Option<String>| {
        *counts
            .entry(label)
            .or_default()
            .entry(value.unwrap_or_else(|| "unlabelled".into()))
            .or_default() += 1;
    };
    for record in records {
        let labels = &record.labels;
        add("laterality", Some(word(&record.laterality)));
        add("split", record.split.clone());
        add("dr_grade", labels.dr_grade.map(|g| g.to_string()));
        add("dme", labels.dme.map(|g| g.to_string()));
        add("glaucoma", labels.glaucoma.as_ref().map(word));
        add("amd", labels.amd.map(|a| a.to_string()));
        add(
            "myopic_maculopathy",
            labels.myopic_maculopathy.map(|g| g.to_string()),
        );
        add("quality", labels.quality.as_ref().map(word));
        add("sex", labels.sex.as_ref().map(word));
        add("age", labels.age.map(|_| "given".to_string()));
        for code in &labels.disease_codes {
            add("disease_codes", Some(code.clone()));
        }
        for finding in &labels.findings {
            add("findings", Some(finding.clone()));
        }
    }
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(out, "labels:");
    for (label, values) in counts {
        // A label nobody has is noise.
        if values.len() == 1 && values.contains_key("unlabelled") {
            continue;
        }
        let mut values: Vec<(String, usize)> = values.into_iter().collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let list: Vec<String> = values.iter().map(|(v, n)| format!("{v}={n}")).collect();
        let _ = writeln!(out, "  {label}: {}", list.join(", "));
    }
}

/// Every problem, grouped by kind, each with its file and line.
fn write_problems(out: &mut String, problems: &[RowProblem]) {
    let mut by_kind: BTreeMap<ProblemKind, Vec<&RowProblem>> = BTreeMap::new();
    for problem in problems {
        by_kind.entry(problem.kind).or_default().push(problem);
    }
    for (kind, list) in by_kind {
        let _ = writeln!(out, "{} ({}):", kind.label(), list.len());
        for problem in list {
            let _ = writeln!(out, "  {problem}");
        }
    }
}
