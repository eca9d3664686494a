//! `portcullis leaks scan`: find credentials in app bundles (APK, AAB, IPA, XAPK, jars, zips,
//! tarballs) and source trees; optionally revoke our own keys it finds.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use leaks::{
    Rules,
    baseline::Baseline,
    enumerate::{Budget, Limits},
    report,
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing the arguments moves the lint to the top-level command"
)]
pub enum Command {
    /// Scan files, directories and archives for embedded credentials. Exit 1 when a secret is
    /// found that the baseline does not accept, 0 when none is, 2 on error or when a run budget
    /// stopped the scan before any was found. Public-by-design identifiers (Google AIza keys,
    /// publishable keys) are reported but do not fail the run.
    Scan(ScanArgs),
    /// List the rules: id, severity, title.
    Rules,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files, directories or archives (APK, AAB, IPA, XAPK, zip, jar, tar, gzip).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Write the report here (written whole, then renamed) instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print secret values; without it they are redacted to their prefix and length.
    #[arg(long)]
    show_secrets: bool,
    /// Accept the findings listed in this baseline file.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write every finding of this scan to a baseline file (accepting them), then exit 0.
    #[arg(long, conflicts_with = "baseline")]
    write_baseline: Option<PathBuf>,
    /// In directories, skip what .gitignore, .git/info/exclude and .ignore files exclude.
    #[arg(long)]
    gitignore: bool,
    /// More rules (same format as the built-in rules.toml), added to the built-in ones.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Revoke the Portcullis keys found (in the store of --config); audit-logged.
    #[arg(long)]
    revoke: bool,
    /// Archives inside archives opened at most.
    #[arg(long, default_value_t = 5)]
    max_depth: usize,
    /// Archive members per input at most.
    #[arg(long, default_value_t = 200_000)]
    max_entries: u64,
    /// Decompressed bytes per input at most, e.g. 4G, 512M.
    #[arg(long, default_value = "4G")]
    max_bytes: String,
    /// A member may decompress to at most this many times its compressed size.
    #[arg(long, default_value_t = 200)]
    max_ratio: u64,
    /// Bytes scanned in the whole run at most (all inputs), e.g. 10G; then the scan stops and
    /// the report is partial.
    #[arg(long)]
    max_run_bytes: Option<String>,
    /// Files scanned in the whole run at most (archive members included); then the scan stops
    /// and the report is partial.
    #[arg(long)]
    max_run_files: Option<u64>,
    /// Time for the whole run at most, e.g. 90s, 10m; then the scan stops and the report is
    /// partial.
    #[arg(long, value_parser = gateway::time::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Threads that scan files (0: one per core); the report is the same for any number.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// `512M`, `4G`, `100K`, `1000`, given to `flag`.
fn parse_size(flag: &str, text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(scale))
        .filter(|&bytes| bytes > 0)
        .with_context(|| format!("{flag} {text}: use a size such as 512M or 4G"))
}

pub async fn run(config_path: &Path, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Rules => {
            let rules = Rules::builtin().context("the built-in rules")?;
            let mut out = String::new();
            for rule in rules.iter() {
                let kind = if rule.public { " (public by design)" } else { "" };
                out.push_str(&format!("{:<36} {:<8} {}{kind}\n", rule.id, rule.severity.name(), rule.title));
            }
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan(args) => scan(config_path, args).await,
    }
}

async fn scan(config_path: &Path, args: ScanArgs) -> anyhow::Result<ExitCode> {
    let rules = match &args.rules {
        None => Rules::builtin().context("the built-in rules")?,
        Some(path) => {
            let extra =
                std::fs::read_to_string(path).with_context(|| format!("cannot read the rules {}", path.display()))?;
            Rules::parse(&format!("{}\n{extra}", leaks::rule::RULES_TOML))
                .with_context(|| format!("the rules {}", path.display()))?
        }
    };
    for path in &args.paths {
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let baseline = match &args.baseline {
        Some(path) => Baseline::load(path)?,
        None => Baseline::default(),
    };
    // The keyring is opened before the scan so a bad --config fails fast.
    let keyring = if args.revoke { Some(crate::cmd_keys::keyring(config_path).await?) } else { None };
    let limits = Limits {
        max_depth: args.max_depth,
        max_entries: args.max_entries,
        max_total_bytes: parse_size("--max-bytes", &args.max_bytes)?,
        max_ratio: args.max_ratio,
        ..Limits::default()
    };
    let budget = Budget {
        bytes: args.max_run_bytes.as_deref().map(|text| parse_size("--max-run-bytes", text)).transpose()?,
        files: args.max_run_files,
        time: args.timeout,
    };
    let options = leaks::Options { limits, budget, gitignore: args.gitignore, threads: args.threads };
    let inputs: Vec<&Path> = args.paths.iter().map(PathBuf::as_path).collect();
    let outcome = tokio::task::block_in_place(|| leaks::scan(&rules, &inputs, &options));

    // Every key found is revoked, those a baseline accepts included: it leaked.
    let revoked_all = match &keyring {
        Some(keyring) => revoke(keyring, &outcome.findings).await,
        None => true,
    };
    if let Some(path) = &args.write_baseline {
        Baseline::write(path, &outcome.findings)?;
        eprintln!("Wrote {} finding(s) to the baseline {}.", outcome.findings.len(), path.display());
        if let Some(stop) = outcome.partial {
            eprintln!("The baseline is partial: {stop}, so the scan stopped before the end.");
        }
        return Ok(if revoked_all { ExitCode::SUCCESS } else { ExitCode::from(2) });
    }
    let accepted = outcome.findings.iter().filter(|finding| baseline.contains(finding)).count();
    let findings: Vec<leaks::Finding> =
        outcome.findings.iter().filter(|finding| !baseline.contains(finding)).cloned().collect();
    let show = report::Show { secrets: args.show_secrets };
    let text = match args.format {
        Format::Human => {
            let mut text =
                report::human(&findings, &outcome.warnings, show, outcome.files, outcome.bytes, outcome.partial);
            if accepted > 0 {
                text.push_str(&format!("{accepted} finding(s) accepted by the baseline.\n"));
            }
            text
        }
        Format::Json => report::json(&findings, &outcome.warnings, show, outcome.files, outcome.bytes, outcome.partial),
        Format::Sarif => report::sarif(&rules, &findings, &outcome.warnings, show, outcome.partial),
    };
    match &args.output {
        Some(path) => {
            report::write_whole(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    let leaked = findings.iter().any(|finding| !finding.public);
    // A run a budget stopped and that found nothing has not shown there is nothing: it is not a
    // pass (2). A secret found is reported as such (1) however far the run went.
    if outcome.partial.is_some() && !leaked && revoked_all {
        eprintln!("error: the scan stopped before the end (see the warning); nothing found in the part scanned");
    }
    Ok(if !revoked_all {
        ExitCode::from(2)
    } else if leaked {
        ExitCode::from(1)
    } else if outcome.partial.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Revokes each distinct Portcullis key found, and says which were live. A key that cannot be
/// revoked (the store or the audit log failing) is reported and the others are still tried;
/// returns whether every one was dealt with.
async fn revoke(keyring: &gateway::keys::Keyring, findings: &[leaks::Finding]) -> bool {
    let mut all = true;
    use gateway::keys::LeakedKey;
    let mut done = std::collections::HashSet::new();
    for finding in findings {
        let secret = finding.secret.expose();
        let Ok(key) = apikey::parse(secret) else { continue };
        if !done.insert(secret.to_owned()) {
            continue;
        }
        let kid = key.kid();
        let shown = finding.location();
        match keyring.revoke_leaked(secret, &shown).await {
            Err(error) => {
                all = false;
                eprintln!("error: key {kid} (found at {shown}) could not be revoked: {error}");
            }
            Ok(LeakedKey::Revoked { was_live, announced, .. }) => {
                let state = if was_live { "was live" } else { "had expired" };
                let when = if announced {
                    "every running server was told"
                } else {
                    "servers refuse it within their key cache interval"
                };
                eprintln!("revoked: key {kid} ({state}; found at {shown}); {when}");
            }
            Ok(LeakedKey::AlreadyRevoked { .. }) => eprintln!("already revoked: key {kid} (found at {shown})"),
            Ok(LeakedKey::NotInStore) => eprintln!("not in this store: key {kid} (found at {shown}); nothing revoked"),
        }
    }
    all
}
