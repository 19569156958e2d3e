//! `build-dataset manifests check MANIFEST...` (alias `check --manifest PATH...`): validates data manifests against the files on disk
//! without running the pipeline. Prints, per manifest, the record count, counts per label, and
//! every problem (missing images, unreadable rows, unknown values, duplicate ids, paths leaving
//! the root) with its file and line; exits non-zero if there is any.

use anyhow::Result;
use clap::Args;
use retina_manifest::{Manifest, ProblemKind, ReadItem, RowProblem};
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

/// `build-dataset manifests ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ManifestsCommand {
    /// Check data manifests against the files on disk, without running the pipeline: counts per
    /// label, missing images, unreadable rows (file and line), unknown values, duplicate ids.
    /// Exits non-zero if there is any problem.
    #[command(
        after_help = "Examples:\n  build-dataset manifests check data-manifests/eyepacs.toml --root /data/eyepacs\n  build-dataset manifests check data-manifests/papila-od.toml data-manifests/papila-os.toml --root /data/papila"
    )]
    Check {
        /// Data manifests to check.
        #[arg(value_name = "MANIFEST", required = true)]
        manifests: Vec<PathBuf>,
        /// The dataset folder, overriding every manifest's `root`.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

/// Runs `manifests check` (the same as `check --manifest ...`).
pub fn run_manifests(command: ManifestsCommand) -> Result<ExitCode> {
    match command {
        ManifestsCommand::Check { manifests, root } => run(&CheckArgs { manifests, root }),
    }
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
        // An object-storage root: label files fetched to the cache, images checked by listing.
        if let Err(error) = crate::object_storage::localize(&mut manifest) {
            let _ = writeln!(out, "error: {error:#}\n");
            summary.problems += 1;
            continue;
        }
        // Streamed: label counts and ids are kept, not the records.
        let stream = match manifest.stream() {
            Ok(stream) => stream,
            Err(error) => {
                let _ = writeln!(out, "error: {error}\n");
                summary.problems += 1;
                continue;
            }
        };
        let mut problems = Vec::new();
        let mut counts = LabelCounts::default();
        let mut records = 0usize;
        let mut fatal = None;
        for item in stream {
            let record = match item {
                Ok(ReadItem::Record(record)) => record,
                Ok(ReadItem::Problem(problem)) => {
                    problems.push(problem);
                    continue;
                }
                Err(error) => {
                    fatal = Some(error);
                    break;
                }
            };
            records += 1;
            counts.add(&record);
            if let Some(first) = ids.get(&record.id) {
                problems.push(RowProblem {
                    kind: ProblemKind::Duplicate,
                    file: path.clone(),
                    row: None,
                    item: Some(record.relative_path.clone()),
                    reason: format!("id {} is also the id of {first}", record.id),
                });
            } else {
                let source = format!("{} ({})", path.display(), record.relative_path);
                ids.insert(record.id.clone(), source);
            }
        }
        summary.records += records;
        summary.problems += problems.len() + usize::from(fatal.is_some());
        let _ = writeln!(out, "{records} records, {} problems", problems.len());
        counts.write(&mut out);
        write_problems(&mut out, &problems);
        if let Some(error) = fatal {
            let _ = writeln!(out, "error: {error} (the rows after it were not read)");
        }
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

/// Counts per label value, printed as `  dr_grade: 0=2, 2=1, unlabelled=1`.
#[derive(Default)]
struct LabelCounts(BTreeMap<&'static str, BTreeMap<String, usize>>);

impl LabelCounts {
    fn add(&mut self, record: &Record) {
        let mut add = |label: &'static str, value: Option<String>| {
            *self
                .0
                .entry(label)
                .or_default()
                .entry(value.unwrap_or_else(|| "unlabelled".into()))
                .or_default() += 1;
        };
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

    fn write(self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        let _ = writeln!(out, "labels:");
        for (label, values) in self.0 {
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
