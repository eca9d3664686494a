//! The rules, as data: `rules.toml` holds each rule's id, pattern, keywords, checks, and the
//! examples it must and must not match (checked by `cargo test`). [`Rules`] compiles them once
//! and finds secrets in a text: a case-insensitive keyword pass (Aho-Corasick) picks the rules
//! worth running, their patterns run, and each candidate must clear the placeholder veto, the
//! rule's entropy floor and its validator. Where matches of several rules overlap, the rule
//! listed first (the more specific) wins. Patterns are checked when the rules load and compiled
//! on first use: most scans need a handful of the rules, and start-up stays a few milliseconds.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::validate::{Validator, entropy, is_placeholder, name_says_not_secret, names_documentation_host};

/// The rule set shipped with the binary.
pub const RULES_TOML: &str = include_str!("../rules.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One rule as written in `rules.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable: baselines, SARIF and suppressions refer to it.
    pub id: String,
    pub title: String,
    pub severity: Severity,
    /// A public-by-design identifier (Google `AIza` keys, publishable keys): reported as
    /// "check its restrictions", not as a leak.
    #[serde(default)]
    pub public: bool,
    /// Lowercase literals; the rule runs only on text holding one of them.
    pub keywords: Vec<String>,
    pub pattern: String,
    #[serde(default)]
    pub min_entropy: Option<f64>,
    #[serde(default)]
    pub validator: Option<Validator>,
    /// A second part that must be found near the secret for it to count (an AWS key ID near a
    /// secret access key): the pair is one finding, and the partner is not reported on its own.
    #[serde(default)]
    pub partner: Option<Partner>,
    pub examples: Vec<String>,
    pub counterexamples: Vec<String>,
}

/// The other half of a paired secret: its pattern, and how far from the secret it may start or
/// end, in bytes, on either side (in the same text: a file, a decoded string, a raw run).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    pub pattern: String,
    pub within: usize,
}

/// A partner is looked for at most this far from its secret.
const MAX_PARTNER_DISTANCE: usize = 4096;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("the rules file does not parse: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("rule {id}: {message}")]
    Invalid { id: String, message: String },
}

fn invalid(id: &str, message: impl Into<String>) -> RuleError {
    RuleError::Invalid { id: id.to_owned(), message: message.into() }
}

#[derive(Debug)]
struct Compiled {
    rule: Rule,
    /// The pattern, compiled on first use, and the capture group that holds the secret (the
    /// whole match when the rule names none). `None`: it parsed but exceeds the size limit.
    program: std::sync::OnceLock<Option<(Regex, usize)>>,
    /// The partner's pattern, compiled on first use like the program.
    partner: std::sync::OnceLock<Option<Regex>>,
}

impl Compiled {
    fn program(&self) -> Option<&(Regex, usize)> {
        self.program
            .get_or_init(|| {
                let regex = regex::RegexBuilder::new(&self.rule.pattern).size_limit(REGEX_SIZE_LIMIT).build().ok()?;
                let group = regex.capture_names().position(|name| name == Some("secret")).unwrap_or(0);
                Some((regex, group))
            })
            .as_ref()
    }

    fn partner(&self) -> Option<&Regex> {
        let pattern = &self.rule.partner.as_ref()?.pattern;
        self.partner
            .get_or_init(|| regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().ok())
            .as_ref()
    }
}

/// A secret one rule found: the index of the rule and the byte range of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
    /// Where the partner of a paired secret was found: covered by this hit, so no other rule
    /// reports it.
    pub partner: Option<(usize, usize)>,
}

/// The compiled rule set.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Compiled>,
    keywords: AhoCorasick,
    /// For each keyword pattern, the rules it enables.
    keyword_rules: Vec<Vec<usize>>,
}

/// One rule reports at most this many secrets from one text (a hostile file could hold
/// millions); the scanner's per-file cap is lower still.
const MAX_HITS_PER_RULE: usize = 10_000;

/// A pattern's compiled program may take at most this much memory.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

impl Rules {
    /// The shipped rules.
    pub fn builtin() -> Result<Rules, RuleError> {
        Rules::parse(RULES_TOML)
    }

    pub fn parse(toml_text: &str) -> Result<Rules, RuleError> {
        let file: RuleFile = toml::from_str(toml_text)?;
        let mut ids = std::collections::HashSet::new();
        let mut keyword_patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut rules = Vec::with_capacity(file.rule.len());
        for (index, rule) in file.rule.into_iter().enumerate() {
            if !ids.insert(rule.id.clone()) {
                return Err(invalid(&rule.id, "the id is used twice"));
            }
            if rule.keywords.is_empty() {
                return Err(invalid(&rule.id, "needs at least one keyword"));
            }
            regex_syntax::Parser::new()
                .parse(&rule.pattern)
                .map_err(|error| invalid(&rule.id, format!("pattern: {error}")))?;
            if let Some(partner) = &rule.partner {
                regex_syntax::Parser::new()
                    .parse(&partner.pattern)
                    .map_err(|error| invalid(&rule.id, format!("partner pattern: {error}")))?;
                if partner.within == 0 || partner.within > MAX_PARTNER_DISTANCE {
                    return Err(invalid(&rule.id, format!("partner within must be 1 to {MAX_PARTNER_DISTANCE} bytes")));
                }
            }
            for keyword in &rule.keywords {
                if keyword.is_empty() || keyword.bytes().any(|byte| byte.is_ascii_uppercase()) {
                    return Err(invalid(&rule.id, format!("keyword {keyword:?} must be non-empty lowercase")));
                }
                match keyword_patterns.iter().position(|known| known == keyword) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        keyword_patterns.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
            rules.push(Compiled { rule, program: std::sync::OnceLock::new(), partner: std::sync::OnceLock::new() });
        }
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keyword_patterns)
            .map_err(|error| invalid("(keywords)", error.to_string()))?;
        Ok(Rules { rules, keywords, keyword_rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index).map(|compiled| &compiled.rule)
    }

    /// How much of a secret found by `rule` is its public format prefix: the longest of the
    /// rule's keywords the secret starts with (`sk_live_`, `akia`), or nothing (generic rules).
    pub fn public_prefix(&self, rule: usize, secret: &str) -> usize {
        let Some(compiled) = self.rules.get(rule) else { return 0 };
        compiled
            .rule
            .keywords
            .iter()
            .filter(|keyword| {
                secret.len() >= keyword.len()
                    && secret.as_bytes()[..keyword.len()].eq_ignore_ascii_case(keyword.as_bytes())
            })
            .map(String::len)
            .max()
            .unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|compiled| &compiled.rule)
    }

    /// Every secret in `text`, overlaps resolved, in order of position.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        let mut enabled = vec![false; self.rules.len()];
        let mut any = false;
        for found in self.keywords.find_overlapping_iter(text) {
            for &rule in &self.keyword_rules[found.pattern().as_usize()] {
                enabled[rule] = true;
                any = true;
            }
        }
        if !any {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for (index, compiled) in self.rules.iter().enumerate().filter(|(index, _)| enabled[*index]) {
            self.find_rule(index, compiled, text, &mut hits);
        }
        resolve_overlaps(hits)
    }

    fn find_rule(&self, index: usize, compiled: &Compiled, text: &str, hits: &mut Vec<Hit>) {
        let rule = &compiled.rule;
        let Some((regex, secret_group)) = compiled.program() else { return };
        let mut found = 0usize;
        for captures in regex.captures_iter(text) {
            if found >= MAX_HITS_PER_RULE {
                break;
            }
            let Some(secret) = captures.get(*secret_group) else { continue };
            let value = secret.as_str();
            if value.is_empty() || is_placeholder(value) {
                continue;
            }
            if rule.min_entropy.is_some_and(|floor| entropy(value) < floor) {
                continue;
            }
            if rule.validator.is_some_and(|validator| !validator.check(value)) {
                continue;
            }
            if captures.get(0).is_some_and(|whole| names_documentation_host(whole.as_str())) {
                continue;
            }
            if let Some(name) = captures.name("name")
                && name_says_not_secret(full_name(text, name.start(), name.end()), value)
            {
                continue;
            }
            let partner = match &rule.partner {
                Some(partner) => match find_partner(compiled, partner.within, text, secret.start(), secret.end()) {
                    Some(found) => Some(found),
                    None => continue,
                },
                None => None,
            };
            hits.push(Hit { rule: index, start: secret.start(), end: secret.end(), partner });
            found += 1;
        }
    }
}

/// The partner nearest to the secret at `start..end`, starting and ending within `within` bytes
/// of it and not overlapping it.
fn find_partner(compiled: &Compiled, within: usize, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let regex = compiled.partner()?;
    let mut from = start.saturating_sub(within);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let limit = end.saturating_add(within).min(text.len());
    regex
        .find_iter(text.get(from..)?)
        .map(|found| (from + found.start(), from + found.end()))
        .take_while(|&(partner_start, _)| partner_start < limit)
        .filter(|&(partner_start, partner_end)| partner_end <= limit && (partner_end <= start || partner_start >= end))
        .min_by_key(
            |&(partner_start, partner_end)| {
                if partner_end <= start { start - partner_end } else { partner_start - end }
            },
        )
}

/// A name is read back this far at most, in bytes.
const MAX_NAME_BYTES: usize = 128;

/// The whole identifier whose end a rule's `name` group matched (`title_activity_change_password`
/// for a match of `password`): the group, extended to the left over identifier characters, at
/// most [`MAX_NAME_BYTES`] back.
fn full_name(text: &str, start: usize, end: usize) -> &str {
    let bytes = text.as_bytes();
    let floor = start.saturating_sub(MAX_NAME_BYTES);
    let mut from = start;
    while from > floor
        && bytes.get(from - 1).is_some_and(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
    {
        from -= 1;
    }
    text.get(from..end).unwrap_or_default()
}

/// Keeps, among hits whose secrets overlap, the one of the rule listed first; a paired hit also
/// claims its partner's place, so the partner is not reported again by a later rule. The kept
/// intervals never overlap, so one look at the kept interval starting last before a candidate's
/// end tells whether it overlaps any: O(n log n).
fn resolve_overlaps(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by_key(|hit| (hit.rule, hit.start));
    // Each kept interval: the hit, or `None` for a partner's place.
    let mut kept: std::collections::BTreeMap<usize, (usize, Option<Hit>)> = std::collections::BTreeMap::new();
    let free = |kept: &std::collections::BTreeMap<usize, (usize, Option<Hit>)>, start: usize, end: usize| {
        kept.range(..end).next_back().is_none_or(|(_, (other_end, _))| *other_end <= start)
    };
    for hit in hits {
        if !free(&kept, hit.start, hit.end) {
            continue;
        }
        if let Some((partner_start, partner_end)) = hit.partner
            && free(&kept, partner_start, partner_end)
        {
            kept.insert(partner_start, (partner_end, None));
        }
        kept.insert(hit.start, (hit.end, Some(hit)));
    }
    kept.into_values().filter_map(|(_, hit)| hit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::builtin().unwrap_or_else(|error| panic!("{error}"))
    }

    /// The shipped rules load, and there are enough of them to cover what apps leak.
    #[test]
    fn builtin_rules_load() {
        assert!(rules().len() >= 60, "{} rules", rules().len());
    }

    /// `rules.toml`'s own examples: each must be found by its rule, each counterexample must not.
    #[test]
    fn every_rule_matches_its_examples_and_not_its_counterexamples() {
        let rules = rules();
        let mut failures = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            assert!(rule.examples.len() >= 2 && rule.counterexamples.len() >= 2, "{}: too few examples", rule.id);
            for example in &rule.examples {
                let hits = rules.find(example);
                // The rule itself must find it (another rule winning the overlap is fine only
                // if this rule also matched on its own).
                let mut own = Vec::new();
                rules.find_rule(index, &rules.rules[index], example, &mut own);
                if own.is_empty() {
                    failures.push(format!("{}: does not match {example:?}", rule.id));
                } else if hits.is_empty() {
                    failures.push(format!("{}: {example:?} found nothing overall", rule.id));
                }
            }
            for counterexample in &rule.counterexamples {
                let mut own = Vec::new();
                rules.find_rule(index, &rules.rules[index], counterexample, &mut own);
                if !own.is_empty() {
                    failures.push(format!("{}: matches counterexample {counterexample:?}", rule.id));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_pattern_compiles_within_the_size_limit() {
        let rules = rules();
        for compiled in &rules.rules {
            assert!(
                compiled.program().is_some(),
                "{}: does not compile within {REGEX_SIZE_LIMIT} bytes",
                compiled.rule.id
            );
        }
    }

    #[test]
    fn ids_are_stable_kebab_case() {
        for rule in rules().iter() {
            assert!(
                rule.id.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'),
                "{}",
                rule.id
            );
        }
    }

    #[test]
    fn bad_rule_files_are_refused_with_the_rule_named() {
        let base = |extra: &str| {
            format!(
                "[[rule]]\nid = \"x\"\ntitle = \"X\"\nseverity = \"high\"\nkeywords = [\"x\"]\npattern = '''x'''\nexamples = []\ncounterexamples = []\n{extra}"
            )
        };
        assert!(Rules::parse(&base("")).is_ok());
        let error = Rules::parse(&base("colour = 1")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("colour"), "{error}");
        let twice = format!("{}\n{}", base(""), base(""));
        let error = Rules::parse(&twice).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("used twice"), "{error}");
        let error =
            Rules::parse(&base("").replace("'''x'''", "'''(x'''")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("rule x: pattern"), "{error}");
    }

    #[test]
    fn the_more_specific_rule_wins_an_overlap() {
        let hit = |rule, start, end| Hit { rule, start, end, partner: None };
        let hits = resolve_overlaps(vec![hit(5, 0, 10), hit(1, 2, 10), hit(7, 20, 30)]);
        assert_eq!(hits, vec![hit(1, 2, 10), hit(7, 20, 30)]);
    }

    #[test]
    fn a_paired_secret_hides_its_partner_from_later_rules() {
        let pair = Hit { rule: 1, start: 40, end: 80, partner: Some((10, 30)) };
        let hits = resolve_overlaps(vec![Hit { rule: 2, start: 10, end: 30, partner: None }, pair.clone()]);
        assert_eq!(hits, vec![pair]);
    }

    #[test]
    fn a_partner_must_be_near_its_secret() {
        let rules = Rules::parse(
            "[[rule]]\nid = 'x'\ntitle = 'X'\nseverity = 'high'\nkeywords = ['s']\npattern = '''s[0-9]{4}'''\n\
             partner = { pattern = '''p[0-9]{4}''', within = 10 }\nexamples = []\ncounterexamples = []\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(rules.find("p1234 s5678").len(), 1);
        assert_eq!(rules.find("s5678 ........ p1234").len(), 0);
        assert_eq!(rules.find("s5678 alone").len(), 0);
        let error = Rules::parse(
            "[[rule]]\nid = 'x'\ntitle = 'X'\nseverity = 'high'\nkeywords = ['s']\npattern = '''s'''\n\
             partner = { pattern = '''p''', within = 100000 }\nexamples = []\ncounterexamples = []\n",
        )
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
        assert!(error.contains("partner within"), "{error}");
    }
}
