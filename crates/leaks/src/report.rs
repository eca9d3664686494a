//! Reports: for people (`human`), for programs (`json`), and SARIF 2.1.0 for code-scanning
//! UIs. Secrets are redacted unless the caller passes `show_secrets`; the fingerprint is what
//! a baseline stores.

use std::fmt::Write as _;

use crate::baseline::fingerprint;
use crate::enumerate::Stop;
use crate::rule::Rules;
use crate::scan::{Finding, Warning};

/// Writes a report (or a baseline) whole: to a temporary file beside `path`, renamed into place,
/// so a reader never sees half of one and a failed write leaves the old file.
pub fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(directory)?;
    std::io::Write::write_all(&mut temporary, bytes)?;
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// What a report shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Show {
    /// Print secret values instead of their redacted form.
    pub secrets: bool,
}

/// Text from the scanned files (member names, context) with control characters escaped, so a
/// hostile archive cannot rewrite the terminal a report is read on.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn secret_text(finding: &Finding, show: Show) -> String {
    if show.secrets { finding.secret.expose().to_owned() } else { finding.secret.redacted() }
}

fn verdict(finding: &Finding) -> &'static str {
    if finding.public { "public by design: check its restrictions" } else { "leaked: revoke and rotate it" }
}

/// One block per finding, then the warnings and a summary line (and, when a budget stopped the
/// run, a line that says the report is partial).
pub fn human(
    findings: &[Finding],
    warnings: &[Warning],
    show: Show,
    files: u64,
    bytes: u64,
    partial: Option<Stop>,
) -> String {
    let mut out = String::new();
    for finding in findings {
        let _ = writeln!(out, "{}  {}", finding.severity.name().to_uppercase(), finding.title);
        let _ = writeln!(out, "  where:   {}", shown(&finding.location()));
        let _ = writeln!(out, "  rule:    {} ({})", finding.rule, verdict(finding));
        let _ = writeln!(out, "  secret:  {}", shown(&secret_text(finding, show)));
        if !finding.context.is_empty() {
            let context = if show.secrets {
                finding.context.replace(&finding.secret.redacted(), finding.secret.expose())
            } else {
                finding.context.clone()
            };
            let _ = writeln!(out, "  context: {}", shown(&context));
        }
        out.push('\n');
    }
    for warning in warnings {
        let _ = writeln!(out, "warning: {}: {}", shown(&warning.path), shown(&warning.message));
    }
    let leaks = findings.iter().filter(|finding| !finding.public).count();
    let _ = writeln!(
        out,
        "{leaks} leaked secret(s), {} public identifier(s) to check, {} warning(s); {files} file(s), {bytes} bytes scanned",
        findings.len() - leaks,
        warnings.len(),
    );
    if let Some(stop) = partial {
        let _ = writeln!(out, "partial report: {stop}, so the scan stopped before the end");
    }
    out
}

fn finding_json(finding: &Finding, show: Show) -> serde_json::Value {
    serde_json::json!({
        "rule": finding.rule,
        "title": finding.title,
        "severity": finding.severity.name(),
        "public": finding.public,
        "path": finding.shown_path(),
        "file": finding.path.first(),
        "members": finding.path.get(1..).unwrap_or_default(),
        "within": finding.within,
        "line": finding.line,
        "column": finding.column,
        "location": finding.location(),
        "context": if show.secrets {
            finding.context.replace(&finding.secret.redacted(), finding.secret.expose())
        } else {
            finding.context.clone()
        },
        "secret": secret_text(finding, show),
        "fingerprint": fingerprint(finding),
    })
}

/// `scanned.complete` is false when a budget stopped the run; `scanned.stopped_by` then names
/// it (`bytes`, `files`, `time`).
pub fn json(
    findings: &[Finding],
    warnings: &[Warning],
    show: Show,
    files: u64,
    bytes: u64,
    partial: Option<Stop>,
) -> String {
    let document = serde_json::json!({
        "findings": findings.iter().map(|finding| finding_json(finding, show)).collect::<Vec<_>>(),
        "warnings": warnings,
        "scanned": {
            "files": files,
            "bytes": bytes,
            "complete": partial.is_none(),
            "stopped_by": partial.map(Stop::name),
        },
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

/// A path as a SARIF URI reference: `/` separators, and every byte outside the unreserved and
/// path characters percent-encoded (a space, `#`, `%`, `?`, and `:` so `C:` is not a scheme).
fn uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let path = path.strip_prefix("./").unwrap_or(&path);
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn level(finding: &Finding) -> &'static str {
    use crate::rule::Severity;
    match finding.severity {
        _ if finding.public => "note",
        Severity::Critical | Severity::High => "error",
        Severity::Medium | Severity::Low => "warning",
        Severity::Info => "note",
    }
}

/// SARIF 2.1.0: every rule of the set in the driver, a result per finding. A finding inside
/// an archive points at the archive file, names the member path as a logical location, and
/// carries the full `!` path in its message. A run a budget stopped carries `complete: false`
/// and `stoppedBy` in its invocation's properties (the tool itself ran as asked).
pub fn sarif(rules: &Rules, findings: &[Finding], warnings: &[Warning], show: Show, partial: Option<Stop>) -> String {
    let rule_list: Vec<serde_json::Value> = rules
        .iter()
        .map(|rule| {
            serde_json::json!({
                "id": rule.id,
                "name": rule.id.replace('-', "_"),
                "shortDescription": { "text": rule.title },
                "fullDescription": { "text": if rule.public {
                    format!("{}: public by design; check that it is restricted (by app, API and referrer).", rule.title)
                } else {
                    format!("{}: a credential that must not ship in an app or a repository; revoke and rotate it.", rule.title)
                } },
                "defaultConfiguration": { "level": if rule.public { "note" } else { "error" } },
                "properties": { "severity": rule.severity.name(), "tags": ["security", "secret"] },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|finding| {
            let mut physical = serde_json::json!({
                "artifactLocation": { "uri": finding.path.first().map(|path| uri(path)).unwrap_or_default() },
            });
            if finding.path.len() == 1
                && let (Some(line), Some(column)) = (finding.line, finding.column)
            {
                physical["region"] = serde_json::json!({ "startLine": line, "startColumn": column });
            }
            let mut location = serde_json::json!({ "physicalLocation": physical });
            let inner: Vec<String> =
                finding.path.iter().skip(1).cloned().chain(finding.within.iter().cloned()).collect();
            if !inner.is_empty() {
                location["logicalLocations"] =
                    serde_json::json!([{ "fullyQualifiedName": inner.join("!"), "kind": "member" }]);
            }
            serde_json::json!({
                "ruleId": finding.rule,
                "ruleIndex": rules.iter().position(|rule| rule.id == finding.rule).map_or(-1, |index| index as i64),
                "level": level(finding),
                "message": { "text": format!("{} ({}) at {}: {}", finding.title, secret_text(finding, show), finding.location(), verdict(finding)) },
                "locations": [location],
                "partialFingerprints": { "portcullisLeak/v1": fingerprint(finding) },
            })
        })
        .collect();
    let notifications: Vec<serde_json::Value> = warnings
        .iter()
        .map(|warning| {
            serde_json::json!({
                "level": "warning",
                "message": { "text": format!("{}: {}", warning.path, warning.message) },
            })
        })
        .collect();
    let document = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "portcullis leaks scan",
                "informationUri": "https://github.com/portcullis",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rule_list,
            } },
            "columnKind": "unicodeCodePoints",
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
                "properties": { "complete": partial.is_none(), "stoppedBy": partial.map(Stop::name) },
            }],
            "results": results,
        }],
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn finding(path: &[&str]) -> Finding {
        Finding {
            rule: "github-pat".into(),
            title: "GitHub token".into(),
            severity: crate::rule::Severity::Critical,
            public: false,
            path: path.iter().map(|part| (*part).to_owned()).collect(),
            within: None,
            line: Some(3),
            column: Some(7),
            context: "token: ghp_…[40 chars]".into(),
            secret: Secret::with_prefix("ghp_Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh3Jk6LzX".into(), 4),
        }
    }

    #[test]
    fn control_characters_in_names_cannot_rewrite_the_terminal() {
        let hostile = finding(&["app.apk", "assets/\u{1b}[1A\u{1b}[2Kclean.txt"]);
        let text = human(&[hostile], &[], Show::default(), 1, 1, None);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("\\u{1b}[1A"), "{text}");
    }

    #[test]
    fn sarif_uris_are_percent_encoded_and_columns_are_code_points() {
        assert_eq!(uri("./my app/C:#1%.js"), "my%20app/C%3A%231%25.js");
        assert_eq!(uri("src\\main.rs"), "src/main.rs");
        let rules = crate::Rules::builtin().unwrap_or_else(|error| panic!("{error}"));
        let document: serde_json::Value =
            serde_json::from_str(&sarif(&rules, &[finding(&["my app/x.env"])], &[], Show::default(), None))
                .unwrap_or_default();
        let run = &document["runs"][0];
        assert_eq!(run["columnKind"], "unicodeCodePoints");
        let result = &run["results"][0];
        assert_eq!(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "my%20app/x.env");
        assert_eq!(result["locations"][0]["physicalLocation"]["region"]["startLine"], 3);
        let index = result["ruleIndex"].as_u64().unwrap_or(u64::MAX) as usize;
        assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "github-pat");
        assert!(!result.to_string().contains("Zk3Lm9Qw2Er5"), "redacted in SARIF");
    }
}
