//! `portcullis audit`: check a log's tamper evidence, and cut a torn last line after a crash.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use gateway::audit::{
    chain::{head_path, load_public_key, public_key_path},
    verify::{self, Report},
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the hash chain, checkpoint signatures and head of one or more log files, given in
    /// chain order (rotated files first: `audit.log.* audit.log`). Exit 0 intact, 1 tampered,
    /// 2 not checkable.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The checkpoint public key (hex). Default: the `.pub` beside the signing key named in
        /// the config, if the config exists.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The signed head file. Default: `<last file>.head` if it exists.
        #[arg(long)]
        head: Option<PathBuf>,
        /// The seq the first file starts at, when older rotated files were archived.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// Cut an incomplete last line (left by a crash mid-write) so the log can be appended to.
    Repair { file: PathBuf },
}

pub fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify { files, public_key, head, from_seq, json } => {
            // `audit.log.*` also matches the head file (and its temporary): they are not logs.
            let files: Vec<PathBuf> = files
                .into_iter()
                .filter(|file| {
                    !file.to_string_lossy().ends_with(".head") && !file.to_string_lossy().ends_with(".head.tmp")
                })
                .collect();
            if files.is_empty() {
                anyhow::bail!("no log files to verify (head files are read with --head)");
            }
            let public_key = match public_key {
                Some(path) => Some(path),
                None => configured_public_key(config_path),
            };
            let key = public_key.as_deref().map(load_public_key).transpose().map_err(anyhow::Error::msg)?;
            let head = head.or_else(|| files.last().map(|file| head_path(file)).filter(|path| path.exists()));
            // A log that cannot be checked at all (unreadable, empty, not a log, another chain's
            // key) is an error, exit 2; tampering found in a readable log is a finding, exit 1.
            let report = verify::verify(&files, key.as_ref(), head.as_deref(), from_seq)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report, public_key.as_deref(), head.as_deref());
            }
            Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Repair { file } => {
            let removed = verify::repair(&file).with_context(|| format!("cannot repair {}", file.display()))?;
            if removed == 0 {
                println!("{}: nothing to repair (the last line is complete).", file.display());
            } else {
                println!(
                    "{}: cut a torn last line of {removed} bytes. Verify it with: portcullis audit verify {}",
                    file.display(),
                    file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The public key beside the configured signing key, when there is a config to read.
fn configured_public_key(config_path: &Path) -> Option<PathBuf> {
    let config = gateway::Config::load(config_path).ok()?;
    let path = public_key_path(&config.audit?.signing_key);
    path.exists().then_some(path)
}

fn print_report(report: &Report, public_key: Option<&Path>, head: Option<&Path>) {
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!("seq {first} to {last}"),
        _ => "no records".to_owned(),
    };
    println!("{} records ({range}) in {} file(s), {} checkpoint(s).", report.records, report.files, report.checkpoints);
    match public_key {
        Some(path) => println!("Checkpoint signatures checked with {}.", path.display()),
        None => println!("Checkpoint signatures NOT checked: give --public-key (the signing key's .pub)."),
    }
    match head {
        Some(path) => println!("Truncation checked against {}.", path.display()),
        None => println!("Truncation NOT checked: no head file (give --head)."),
    }
    if report.unsigned_tail > 0 {
        println!("{} record(s) after the last checkpoint are protected by the hash chain only.", report.unsigned_tail);
    }
    if report.findings.is_empty() {
        println!("OK: the log is intact.");
        return;
    }
    println!("TAMPERED: {} finding(s):", report.findings.len());
    for finding in &report.findings {
        println!("  {}:{}: {:?}: {}", finding.file, finding.line, finding.kind, finding.message);
    }
}
