//! `portcullis data`: personal data in datasets.

use std::{path::PathBuf, process::ExitCode};

use clap::{Subcommand, ValueEnum};
use pii::{Detector, Kind};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
    Sarif,
    /// One JSON line per finding (file, record, column, kind, rule, byte span, confidence;
    /// never the value), for evaluation and pipelines.
    Findings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find personal data in CSV/TSV or JSON Lines files (gzip or zstd compressed or not).
    /// Exit code: 0 when none is found, 1 when some is, 2 on error (for CI gates).
    Scan {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: OutputFormat,
        /// Exit 1 only for these kinds (comma-separated, e.g. email,payment_card).
        #[arg(long, value_delimiter = ',')]
        fail_on: Vec<String>,
    },
    /// Write a copy with personal data dropped, redacted, masked, pseudonymised (keyed HMAC,
    /// joinable), generalised or date-shifted, by a policy; and a manifest of what was done.
    Protect {
        input: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Where the manifest goes (default: OUT.manifest.json).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Encrypt the output to this age recipient (age1...); may repeat.
        #[arg(long)]
        encrypt_to: Vec<String>,
    },
    /// Undo `tokenise` for the columns the policy tokenises (needs the same keys).
    Reveal {
        input: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// k-anonymity (and l-diversity) of quasi-identifiers, with the least generalisation that
    /// reaches the target. Exit code 0 when it is reached, 1 when not, 2 on error.
    Risk {
        file: PathBuf,
        /// Quasi-identifier columns (comma-separated), e.g. age,zip,gender.
        #[arg(long, value_delimiter = ',', required = true)]
        quasi: Vec<String>,
        #[arg(long)]
        k: u64,
        /// The sensitive column, for l-diversity.
        #[arg(long, requires = "l")]
        sensitive: Option<String>,
        #[arg(long, requires = "sensitive")]
        l: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Scan { files, format, fail_on } => {
            let fail_on = fail_on
                .iter()
                .map(|name| {
                    Kind::parse(name.trim()).ok_or_else(|| {
                        let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
                        anyhow::anyhow!("--fail-on: unknown kind '{name}'; known kinds: {}", known.join(", "))
                    })
                })
                .collect::<anyhow::Result<Vec<Kind>>>()?;
            let detector = Detector::new();
            let mut reports = Vec::with_capacity(files.len());
            // A file that cannot be read is an error (exit 2), but the others are still scanned
            // and reported.
            let mut unreadable = 0usize;
            for file in &files {
                if matches!(format, OutputFormat::Findings) {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let shown = file.display().to_string();
                    let mut failed = None;
                    let mut sink = |located: &pii::scan::Located<'_>| {
                        let line = serde_json::json!({ "file": shown, "finding": located });
                        if let Err(error) = writeln!(out, "{line}") {
                            failed.get_or_insert(error);
                        }
                    };
                    match pii::scan::scan_file_with(&detector, file, Some(&mut sink)) {
                        Ok(report) => reports.push(report),
                        Err(error) => {
                            eprintln!("error: {error}");
                            unreadable += 1;
                        }
                    }
                    if let Some(error) = failed {
                        anyhow::bail!("cannot write the findings: {error}");
                    }
                    out.flush()?;
                } else {
                    use std::io::IsTerminal;
                    let progress = std::io::stderr().is_terminal();
                    match pii::scan::scan_file_reporting(&detector, file, None, progress) {
                        Ok(report) => reports.push(report),
                        Err(error) => {
                            eprintln!("error: {error}");
                            unreadable += 1;
                        }
                    }
                }
            }
            let text = match format {
                OutputFormat::Human => pii::report::human(&reports),
                OutputFormat::Json => pii::report::json(&reports),
                OutputFormat::Sarif => pii::report::sarif(&reports),
                OutputFormat::Findings => String::new(),
            };
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
            let found = reports
                .iter()
                .flat_map(pii::scan::FileReport::kinds)
                .any(|kind| fail_on.is_empty() || fail_on.contains(&kind));
            Ok(if unreadable > 0 {
                ExitCode::from(2)
            } else if found {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Risk { file, quasi, k, sensitive, l, json } => {
            if k < 2 {
                anyhow::bail!("--k must be at least 2");
            }
            let table = pii::risk::table_from_file(&file, &quasi, sensitive.as_deref())?;
            let assessment = table.assess(k, l);
            let reached = assessment.k_anonymous && assessment.classes_below_l.is_none_or(|below| below == 0);
            let suggestion = if reached { None } else { table.suggest(k, l) };
            if json {
                let suggestion = suggestion.as_ref().map(|steps| {
                    steps
                        .iter()
                        .map(|(column, step)| serde_json::json!({ "column": column, "generalise": step.describe() }))
                        .collect::<Vec<_>>()
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "assessment": assessment, "suggestion": suggestion })
                    )?
                );
            } else {
                println!("{} rows, {} classes by ({})", assessment.rows, assessment.classes, quasi.join(", "));
                println!(
                    "smallest class: {} rows; {} rows in classes under k = {}: {}",
                    assessment.smallest_class,
                    assessment.rows_at_risk,
                    k,
                    if assessment.k_anonymous { "k-anonymous" } else { "NOT k-anonymous" }
                );
                if let (Some(l), Some(lowest), Some(below)) =
                    (l, assessment.lowest_diversity, assessment.classes_below_l)
                {
                    println!("lowest diversity: {lowest} distinct values; {below} classes under l = {l}");
                }
                match (&suggestion, reached) {
                    (_, true) => {}
                    (Some(steps), false) => {
                        println!("to reach the target, generalise:");
                        for (column, step) in steps {
                            println!("  {column}: {}", step.describe());
                        }
                    }
                    (None, false) => println!("no generalisation of these columns reaches the target"),
                }
            }
            Ok(if reached { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Reveal { input, policy, out } => {
            let policy = load_policy(&policy)?;
            if out == input {
                anyhow::bail!("--out must differ from the input");
            }
            let revealed = pii::protect::reveal_file(&policy, &input, &out)?;
            let total: u64 = revealed.columns.values().sum();
            eprintln!(
                "{} records, {total} values revealed, {} not tokens of this key; wrote {}",
                revealed.records,
                revealed.failed,
                out.display()
            );
            Ok(if revealed.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Protect { input, policy, out, manifest, encrypt_to } => {
            let policy = load_policy(&policy)?;
            let recipients = pii::protect::parse_recipients(&encrypt_to)?;
            if out == input {
                anyhow::bail!("--out must differ from the input");
            }
            let report = pii::protect::protect_file_to(&Detector::new(), &policy, &input, &out, &recipients)?;
            let manifest_path = manifest.unwrap_or_else(|| {
                let mut name = out.as_os_str().to_owned();
                name.push(".manifest.json");
                PathBuf::from(name)
            });
            let json = serde_json::to_string_pretty(&report)?;
            let temporary = manifest_path.with_extension("json.tmp");
            std::fs::write(&temporary, json.as_bytes())
                .and_then(|()| std::fs::rename(&temporary, &manifest_path))
                .map_err(|e| anyhow::anyhow!("cannot write the manifest {}: {e}", manifest_path.display()))?;
            let changed: u64 = report.counts.values().flat_map(|actions| actions.values()).sum();
            eprintln!(
                "{} records, {changed} values protected, {} rejected; wrote {} and {}",
                report.records,
                report.rejected,
                out.display(),
                manifest_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_policy(path: &std::path::Path) -> anyhow::Result<pii::protect::Policy> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read the policy {}: {e}", path.display()))?;
    let base = path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    Ok(pii::protect::Policy::load(&text, &base, &|name| std::env::var(name).ok())?)
}
