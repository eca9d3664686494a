//! Scan reports: human (a table per file), JSON (the [`FileReport`]s), SARIF 2.1.0 (one result
//! per column and kind, for code-scanning UIs).

use std::fmt::Write as _;

use crate::{date::Verdict, scan::FileReport};

/// A report for people: per file, the columns that hold personal data.
pub fn human(reports: &[FileReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = writeln!(
            out,
            "{} ({}, {} records{})",
            report.path,
            report.format,
            report.records,
            if report.problems > 0 { format!(", {} problems", report.problems) } else { String::new() }
        );
        let rows: Vec<_> = report
            .columns
            .iter()
            .flat_map(|column| column.findings.iter().map(move |finding| (column, finding)))
            .collect();
        if rows.is_empty() {
            let _ = writeln!(out, "  no personal data found");
        } else {
            let width = rows.iter().map(|(column, _)| column.column.len()).max().unwrap_or(6).clamp(6, 40);
            let _ = writeln!(out, "  {:<width$}  {:<14} {:>7} {:>6}  EXAMPLES", "COLUMN", "KIND", "ROWS", "CONF");
            for (column, finding) in rows {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<14} {:>6.1}% {:>6.2}  {}",
                    column.column,
                    finding.kind.name(),
                    finding.share * 100.0,
                    finding.confidence,
                    finding.examples.join(", ")
                );
            }
        }
        // Dates whose order of day and month cannot be told are never read with a guessed one:
        // a month or a shift of them is redacted instead, so say so before a policy runs.
        for column in &report.columns {
            if let Some(verdict @ (Verdict::Ambiguous | Verdict::Mixed)) = column.date_order {
                let _ = writeln!(out, "  {}: dates {}", column.column, verdict.describe());
            }
        }
        for problem in report.problem_examples.iter().take(10) {
            let _ = writeln!(out, "  problem at {}: {}", problem.location, problem.message);
        }
        if report.problems > 10 {
            let _ = writeln!(out, "  ... and {} more problems", report.problems - 10);
        }
    }
    out
}

pub fn json(reports: &[FileReport]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "files": reports })).unwrap_or_default()
}

/// SARIF 2.1.0: a rule per kind, a result per (file, column, kind).
pub fn sarif(reports: &[FileReport]) -> String {
    let mut kinds: Vec<crate::Kind> = reports.iter().flat_map(FileReport::kinds).collect();
    kinds.sort();
    kinds.dedup();
    let rules: Vec<serde_json::Value> = kinds
        .iter()
        .map(|kind| {
            serde_json::json!({
                "id": kind.name(),
                "shortDescription": { "text": format!("Personal data: {}", kind.name().replace('_', " ")) },
                "defaultConfiguration": { "level": "warning" },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = reports
        .iter()
        .flat_map(|report| {
            report.columns.iter().flat_map(move |column| {
                column.findings.iter().map(move |finding| {
                    serde_json::json!({
                        "ruleId": finding.kind.name(),
                        "level": "warning",
                        "message": { "text": format!(
                            "column '{}' holds {} in {:.1}% of its values (confidence {:.2}), first in record {}",
                            column.column, finding.kind.name().replace('_', " "), finding.share * 100.0,
                            finding.confidence, finding.first_seen,
                        ) },
                        "locations": [{
                            "physicalLocation": { "artifactLocation": { "uri": report.path } },
                            "logicalLocations": [{ "name": column.column, "kind": "member" }],
                        }],
                        "properties": { "share": finding.share, "confidence": finding.confidence, "examples": finding.examples },
                    })
                })
            })
        })
        .collect();
    let document = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "portcullis data scan",
                "informationUri": "https://github.com/portcullis",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            } },
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}
