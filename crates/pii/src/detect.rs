//! Detection in text: one pass of all rules' patterns together (a `RegexSet`, one automaton)
//! tells which rules can match at all; only those run to find their candidates, which their
//! validators confirm. Context words raise confidence (and are required by weak rules); veto
//! words drop a candidate; overlapping findings keep the most confident (an e-mail address is
//! not also a name).

use regex::{Regex, RegexSet};

use crate::{
    Kind,
    rules::{RULES, Rule},
};

/// One finding: what, where in the text (byte span), how sure.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// The compiled rules.
#[derive(Debug)]
pub struct Detector {
    set: RegexSet,
    regexes: Vec<Regex>,
}

/// How much context and a matching column header add to a validated candidate's confidence.
const CONTEXT_BONUS: f32 = 0.2;

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

impl Detector {
    #[expect(clippy::expect_used, reason = "the patterns are constants, checked by the tests")]
    pub fn new() -> Detector {
        let set = RegexSet::new(RULES.iter().map(|rule| rule.pattern)).expect("rule patterns compile");
        let regexes = RULES.iter().map(|rule| Regex::new(rule.pattern).expect("rule patterns compile")).collect();
        Detector { set, regexes }
    }

    /// Findings in free text. `column` is the kind the column's header names, if any: it counts
    /// as context for that kind.
    pub fn find(&self, text: &str, column: Option<Kind>) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut lower: Option<String> = None;
        for index in self.set.matches(text).iter() {
            let (rule, regex) = (&RULES[index], &self.regexes[index]);
            // A rule that needs context cannot match without one of its words in the text (or
            // a header naming its kind): skip its search outright. Dates, five-digit numbers and
            // digit runs are everywhere; this keeps them cheap.
            if rule.needs_context && column != Some(rule.kind) {
                let lower = lower.get_or_insert_with(|| text.to_lowercase());
                if !rule.context.iter().any(|word| lower.contains(word)) {
                    continue;
                }
            }
            if let Some(find) = rule.find {
                let bonus = if column == Some(rule.kind) { CONTEXT_BONUS } else { 0.0 };
                findings.extend(find(text).into_iter().map(|(start, end, confidence)| Finding {
                    kind: rule.kind,
                    rule: rule.id,
                    start,
                    end,
                    confidence: (confidence + bonus).min(1.0),
                }));
                continue;
            }
            for candidate in regex.find_iter(text) {
                if let Some(confidence) = judge(rule, text, candidate.start(), candidate.as_str(), column) {
                    findings.push(Finding {
                        kind: rule.kind,
                        rule: rule.id,
                        start: candidate.start(),
                        end: candidate.end(),
                        confidence,
                    });
                }
            }
        }
        resolve_overlaps(findings)
    }

    /// A whole value checked as one kind (a column classified by its header or its sample):
    /// one validator, no search. `None` if the value is not of that kind.
    pub fn value_is(&self, kind: Kind, value: &str) -> Option<Finding> {
        let value_trimmed = value.trim();
        if value_trimmed.is_empty() {
            return None;
        }
        let offset = value.len() - value.trim_start().len();
        let found = |rule: &'static str, confidence: f32| Finding {
            kind,
            rule,
            start: offset,
            end: offset + value_trimmed.len(),
            confidence,
        };
        match kind {
            Kind::PersonName if crate::names::is_name_value(value_trimmed) => return Some(found("person_name", 0.85)),
            Kind::Coordinates => {
                // Latitude or longitude alone, in decimal degrees with some precision.
                if let Some((_, decimals)) = value_trimmed.split_once('.')
                    && decimals.len() >= 3
                    && value_trimmed.parse::<f64>().is_ok_and(|degrees| (-180.0..=180.0).contains(&degrees))
                {
                    return Some(found("coordinates", 0.8));
                }
            }
            _ => {}
        }
        for (rule, regex) in RULES.iter().zip(&self.regexes).filter(|(rule, _)| rule.kind == kind) {
            if rule.whole_value {
                if value_trimmed.len() <= 64 && (rule.validate)(value_trimmed) {
                    return Some(found(rule.id, (rule.base + CONTEXT_BONUS).min(1.0)));
                }
                continue;
            }
            if let Some(candidate) = regex.find(value_trimmed)
                && candidate.start() == 0
                && candidate.end() == value_trimmed.len()
                && (rule.validate)(value_trimmed)
            {
                return Some(found(rule.id, (rule.base + CONTEXT_BONUS).min(1.0)));
            }
        }
        None
    }
}

/// The lower-case words just before `start` (at most `count`).
fn words_before(text: &str, start: usize, count: usize) -> Vec<String> {
    let mut from = start.saturating_sub(48);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    text[from..start]
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '#'))
        // `#` marks a number ("order #", "card # 4556…"): the word before it says what kind.
        .map(|word| word.trim_end_matches(['.', '#']))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(count)
        .collect()
}

/// The confidence of a candidate, or `None` if it is not one.
fn judge(rule: &Rule, text: &str, start: usize, candidate: &str, column: Option<Kind>) -> Option<f32> {
    if !(rule.validate)(candidate) {
        return None;
    }
    let before = words_before(text, start, 6);
    // The nearest word decides a veto ("order 4111…", "version 10.2.3.4").
    if let Some(nearest) = before.first()
        && rule.veto.contains(&nearest.as_str())
    {
        return None;
    }
    // A candidate glued to a letter or a digit run on either side is part of something else.
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let (mut left, mut right) = (text[..start].chars().rev(), text[start + candidate.len()..].chars());
    let (previous, next) = (left.next(), right.next());
    // `1.2.3.4.5` holds no IP address and `2025-11-03 17:36` no phone number: a dot or a colon
    // followed by a digit continues the number.
    let dotted = |separator: Option<char>, beyond: Option<char>| {
        matches!(separator, Some('.' | ':')) && beyond.is_some_and(|c| c.is_ascii_digit())
    };
    if glued(previous) && rule.kind != Kind::Email
        || glued(next)
        || dotted(next, right.next())
        || dotted(previous, left.next())
    {
        return None;
    }
    let in_context = column == Some(rule.kind)
        || before.iter().any(|word| rule.context.iter().any(|context| word.trim_end_matches(':') == *context));
    if rule.needs_context && !in_context {
        return None;
    }
    Some(if in_context { (rule.base + CONTEXT_BONUS).min(1.0) } else { rule.base })
}

/// Keeps the most confident (then longest) of overlapping findings, in text order.
fn resolve_overlaps(mut findings: Vec<Finding>) -> Vec<Finding> {
    if findings.len() < 2 {
        return findings;
    }
    findings.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    for finding in findings {
        if kept.iter().all(|other| finding.end <= other.start || finding.start >= other.end) {
            kept.push(finding);
        }
    }
    kept.sort_by_key(|finding| finding.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_finds_its_examples_and_not_its_counterexamples() {
        let detector = Detector::new();
        let mut failures = Vec::new();
        for rule in RULES {
            for example in rule.examples {
                if !detector.find(example, None).iter().any(|finding| finding.kind == rule.kind) {
                    failures.push(format!("{}: missed in {example:?}", rule.id));
                }
            }
            for counterexample in rule.counterexamples {
                let found = detector.find(counterexample, None);
                if found.iter().any(|finding| finding.kind == rule.kind) {
                    failures.push(format!("{}: false positive in {counterexample:?}: {found:?}", rule.id));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn an_email_is_not_also_a_name_or_url() {
        let detector = Detector::new();
        let findings = detector.find("mail Jane.Smith@example.com now", None);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, Kind::Email);
        assert_eq!(&"mail Jane.Smith@example.com now"[findings[0].start..findings[0].end], "Jane.Smith@example.com");
    }

    #[test]
    fn a_column_header_is_context() {
        let detector = Detector::new();
        assert!(detector.find("94105", None).is_empty());
        assert_eq!(detector.find("94105", Some(Kind::Postcode))[0].kind, Kind::Postcode);
        assert_eq!(detector.value_is(Kind::Postcode, " 94105 ").map(|f| (f.start, f.end)), Some((1, 6)));
        assert!(detector.value_is(Kind::Email, "not an email").is_none());
        assert!(detector.value_is(Kind::PersonName, "Garcia").is_some());
        assert!(detector.value_is(Kind::Coordinates, "-0.12776").is_some());
    }

    #[test]
    fn a_card_after_a_hash_sign_is_not_vetoed() {
        let detector = Detector::new();
        for text in ["my card # 4556737586899855 is lost", "card #4556737586899855"] {
            let kinds: Vec<Kind> = detector.find(text, None).iter().map(|finding| finding.kind).collect();
            assert_eq!(kinds, [Kind::PaymentCard], "{text}");
        }
        for text in ["order # 4556737586899855", "order #4556737586899855", "order#4556737586899855"] {
            assert!(detector.find(text, None).iter().all(|finding| finding.kind != Kind::PaymentCard), "{text}");
        }
    }

    #[test]
    fn context_raises_confidence() {
        let detector = Detector::new();
        let plain = detector.find("192.168.1.20", None);
        let with_context = detector.find("client ip 192.168.1.20", None);
        assert!(with_context[0].confidence > plain[0].confidence);
    }
}
