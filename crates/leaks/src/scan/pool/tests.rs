use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::enumerate::{Budget, Limits, Stop};
use crate::report::{self, Show};
use crate::scan::Warning;

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules::builtin().unwrap())
}

/// The seeded corpus (three copies of every app and tree), written once for all these tests.
fn corpus() -> &'static Path {
    static CORPUS: OnceLock<tempfile::TempDir> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let directory = tempfile::tempdir().unwrap();
            crate::corpus::app::write(directory.path(), 7, 3).unwrap();
            directory
        })
        .path()
}

/// The shared real apps (`../shared/eval/apps` from the project root), when they are here.
fn real_apps() -> Option<PathBuf> {
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/apps");
    if apps.join("truth.json").is_file() {
        Some(apps)
    } else {
        eprintln!("skipped: the shared real apps are not at {} (see /work/shared/eval/README.md)", apps.display());
        None
    }
}

fn options(threads: usize) -> Options {
    Options { threads, ..Options::default() }
}

/// Every report a run can give (JSON with secrets shown, human, SARIF), one after the other.
fn reports(outcome: &Outcome) -> String {
    let show = Show { secrets: true };
    let (findings, warnings) = (&outcome.findings, &outcome.warnings);
    let (files, bytes, partial) = (outcome.files, outcome.bytes, outcome.partial);
    [
        report::json(findings, warnings, show, files, bytes, partial),
        report::human(findings, warnings, show, files, bytes, partial),
        report::sarif(rules(), findings, warnings, show, partial),
    ]
    .concat()
}

fn scan_with(input: &Path, options: &Options) -> Outcome {
    crate::scan(rules(), &[input], options)
}

#[test]
fn parallel_reports_are_the_single_threaded_report_on_the_corpus() {
    let single = scan_with(corpus(), &options(1));
    assert!(single.findings.len() > 80, "{} findings", single.findings.len());
    assert!(!single.warnings.is_empty(), "the corpus has hostile members that give warnings");
    let expected = reports(&single);
    for threads in [2, 3, 8] {
        let parallel = scan_with(corpus(), &options(threads));
        assert!(reports(&parallel) == expected, "{threads} threads gave another report");
    }
}

#[test]
fn parallel_reports_are_the_single_threaded_report_on_the_real_apps() {
    let Some(apps) = real_apps() else { return };
    let expected = reports(&scan_with(&apps, &options(1)));
    for threads in [2, 4] {
        assert!(reports(&scan_with(&apps, &options(threads))) == expected, "{threads} threads gave another report");
    }
}

#[test]
fn files_streamed_on_the_walking_thread_keep_their_place() {
    // Members over 4 KiB are streamed by the walking thread, the rest go to the workers.
    let limits = Limits { max_member_bytes: 4096, ..Limits::default() };
    let single = scan_with(corpus(), &Options { limits: limits.clone(), ..options(1) });
    let parallel = scan_with(corpus(), &Options { limits, ..options(4) });
    assert!(reports(&parallel) == reports(&single));
}

#[test]
fn one_file_at_a_time_in_flight_gives_the_same_report() {
    let bounds = Bounds { in_flight_bytes: 1, queued_per_thread: 0 };
    let single = scan_with(corpus(), &options(1));
    let parallel = scan_within(rules(), &[corpus()], &options(3), 3, bounds);
    assert!(reports(&parallel) == reports(&single));
}

#[test]
fn a_permit_larger_than_the_cap_is_let_through_alone() {
    let in_flight = InFlight { bytes: Mutex::new(0), freed: Condvar::new(), cap: 10 };
    let big = in_flight.acquire(100);
    assert_eq!(*in_flight.bytes.lock().unwrap(), 100);
    drop(big);
    let small = in_flight.acquire(4);
    let other = in_flight.acquire(6);
    assert_eq!(*in_flight.bytes.lock().unwrap(), 10);
    drop((small, other));
    assert_eq!(*in_flight.bytes.lock().unwrap(), 0);
}

/// The warning that says which budget ran out, and that it is the last one.
fn budget_warning(outcome: &Outcome) -> &Warning {
    let last = outcome.warnings.last().unwrap();
    assert!(last.message.contains("the report is partial"), "{last:?}");
    assert_eq!(outcome.warnings.iter().filter(|warning| warning.message.contains("partial")).count(), 1);
    last
}

#[test]
fn the_byte_budget_stops_the_run_with_a_warning_and_a_prefix_of_the_findings() {
    let full = scan_with(corpus(), &options(1));
    let budget = Budget { bytes: Some(full.bytes / 3), ..Budget::default() };
    for threads in [1, 2] {
        let partial = scan_with(corpus(), &Options { budget, ..options(threads) });
        assert_eq!(partial.partial, Some(Stop::Bytes(full.bytes / 3)));
        assert!(partial.bytes <= full.bytes / 3, "{} bytes scanned", partial.bytes);
        assert!(partial.bytes > 0);
        assert!(budget_warning(&partial).message.contains(&format!("budget of {} bytes", full.bytes / 3)));
        // Findings come in the order files are handed over: a stopped run found a prefix of them.
        assert!(!partial.findings.is_empty() && partial.findings.len() < full.findings.len());
        for (found, expected) in partial.findings.iter().zip(&full.findings) {
            assert_eq!(found.location(), expected.location());
        }
    }
}

#[test]
fn the_file_budget_stops_the_run_after_that_many_files() {
    let budget = Budget { files: Some(25), ..Budget::default() };
    let single = scan_with(corpus(), &Options { budget, ..options(1) });
    assert_eq!(single.files, 25);
    assert_eq!(single.partial, Some(Stop::Files(25)));
    assert!(budget_warning(&single).message.contains("budget of 25 files"));
    let parallel = scan_with(corpus(), &Options { budget, ..options(3) });
    assert!(reports(&parallel) == reports(&single), "where a run stops does not depend on threads");
}

#[test]
fn a_budget_the_run_stays_within_leaves_it_complete() {
    let full = scan_with(corpus(), &options(1));
    let budget = Budget { bytes: Some(full.bytes), files: Some(full.files), time: Some(Duration::from_secs(3600)) };
    let within = scan_with(corpus(), &Options { budget, ..options(2) });
    assert_eq!(within.partial, None);
    assert!(reports(&within) == reports(&full));
}

#[test]
fn the_time_budget_stops_the_run_with_a_warning() {
    let budget = Budget { time: Some(Duration::ZERO), ..Budget::default() };
    for threads in [1, 2] {
        let stopped = scan_with(corpus(), &Options { budget, ..options(threads) });
        assert_eq!(stopped.partial, Some(Stop::Time(Duration::ZERO)));
        assert_eq!(stopped.files, 0);
        assert!(stopped.findings.is_empty());
        assert!(budget_warning(&stopped).message.contains("time budget"));
    }
}

#[test]
fn the_byte_budget_cuts_a_streamed_file() {
    let directory = tempfile::tempdir().unwrap();
    let key = "ghp_Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh3Jk6LzX";
    let mut text = format!("token = {key}\n");
    text.push_str(&"filler line without anything in it\n".repeat(2000));
    text.push_str(&format!("late = {}\n", key.replace('Z', "Y")));
    std::fs::write(directory.path().join("big.txt"), &text).unwrap();
    let limits = Limits { max_member_bytes: 1000, ..Limits::default() };
    let budget = Budget { bytes: Some(5000), ..Budget::default() };
    let outcome = scan_with(directory.path(), &Options { limits, budget, ..options(2) });
    assert_eq!(outcome.bytes, 5000);
    assert_eq!(outcome.partial, Some(Stop::Bytes(5000)));
    assert_eq!(outcome.findings.len(), 1, "only the key before the cut: {:?}", outcome.findings);
    assert!(budget_warning(&outcome).path.ends_with("big.txt"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any thread count, queue bound and in-flight cap, with or without streaming and a file
    /// budget, gives the single-threaded report.
    #[test]
    fn any_thread_count_gives_the_single_threaded_report(
        threads in 2usize..9,
        queued_per_thread in 0usize..4,
        in_flight_bytes in prop_oneof![Just(1u64), Just(64 << 10), Just(IN_FLIGHT_BYTES)],
        streamed in any::<bool>(),
        files in prop::option::of(1u64..600),
    ) {
        let limits = if streamed { Limits { max_member_bytes: 2048, ..Limits::default() } } else { Limits::default() };
        let options = Options { limits, budget: Budget { files, ..Budget::default() }, ..options(1) };
        let expected = reports(&scan_with(corpus(), &options));
        let bounds = Bounds { in_flight_bytes, queued_per_thread };
        let parallel = scan_within(rules(), &[corpus()], &options, threads, bounds);
        prop_assert!(reports(&parallel) == expected);
    }
}
