//! `data risk`: how re-identifiable rows are by their quasi-identifiers (age, ZIP code, gender,
//! ...). k-anonymity: every combination of quasi-identifier values is shared by at least k rows;
//! l-diversity: each such class holds at least l distinct values of the sensitive column.
//!
//! One streaming pass counts the distinct combinations (memory grows with the number of
//! distinct combinations, not rows); the search for generalisations that reach the target then
//! regroups those counts without reading the file again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use serde::Serialize;

use crate::{
    act::{self, Generalise},
    date::{self, DateOrder},
    read::{self, Format, ReadError},
};

/// Distinct sensitive values remembered per class (enough to judge l up to this).
const MAX_DISTINCT_SENSITIVE: usize = 64;

#[derive(Debug, Clone, Default)]
struct Class {
    rows: u64,
    sensitive: BTreeSet<String>,
}

/// Counts per combination of quasi-identifier values.
#[derive(Debug, Default)]
pub struct Table {
    pub quasi: Vec<String>,
    classes: HashMap<Vec<String>, Class>,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Assessment {
    pub rows: u64,
    pub classes: u64,
    pub smallest_class: u64,
    /// Rows in classes smaller than k.
    pub rows_at_risk: u64,
    pub k: u64,
    pub k_anonymous: bool,
    /// With a sensitive column: the fewest distinct sensitive values in a class, and how many
    /// classes have fewer than l.
    pub l: Option<u64>,
    pub lowest_diversity: Option<u64>,
    pub classes_below_l: Option<u64>,
}

/// A generalisation step for one column, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    Keep,
    AgeBand {
        width: u32,
    },
    /// Dates to their month, read in the column's order of day and month (offered only when
    /// the column's values tell it, or need none).
    Month {
        #[serde(skip)]
        order: Option<DateOrder>,
    },
    Year,
    Truncate {
        keep: usize,
    },
    Suppress,
}

impl Step {
    fn apply(self, value: &str) -> String {
        match self {
            Step::Keep => value.to_owned(),
            Step::AgeBand { width } => {
                act::generalise(Generalise::AgeBand { width, reference_year: 2026 }, value, None)
                    .unwrap_or_else(|| value.to_owned())
            }
            Step::Month { order } => {
                act::generalise(Generalise::Month, value, order).unwrap_or_else(|| value.to_owned())
            }
            Step::Year => act::generalise(Generalise::Year, value, None).unwrap_or_else(|| value.to_owned()),
            Step::Truncate { keep } => value.chars().filter(|c| !c.is_whitespace()).take(keep).collect(),
            Step::Suppress => "*".to_owned(),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Step::Keep => "keep".into(),
            Step::AgeBand { width } => format!("age bands of {width}"),
            Step::Month { .. } => "month".into(),
            Step::Year => "year".into(),
            Step::Truncate { keep } => format!("first {keep} characters"),
            Step::Suppress => "suppress".into(),
        }
    }
}

/// The ladder of generalisations for a column, judged by its values.
fn ladder(values: &BTreeSet<&str>) -> Vec<Step> {
    // An empty cell says nothing about the column's type: it stays empty at every step.
    let values: BTreeSet<&str> = values.iter().copied().filter(|value| !value.is_empty()).collect();
    let numeric = values.iter().all(|v| v.parse::<u32>().is_ok_and(|n| n < 130));
    let dates = values.iter().all(|v| date::read(v).is_some());
    let mut steps = vec![Step::Keep];
    if numeric {
        steps.extend([Step::AgeBand { width: 5 }, Step::AgeBand { width: 10 }, Step::AgeBand { width: 20 }]);
    } else if dates {
        let mut tally = date::Tally::default();
        for value in &values {
            tally.add(value);
        }
        // A month read with a guessed order would put rows in the wrong class: without an
        // order the values tell, only the year (certain either way) is offered.
        let order = tally.order();
        if order.is_some() || tally.verdict() == Some(date::Verdict::Unambiguous) {
            steps.push(Step::Month { order });
        }
        steps.push(Step::Year);
    } else if values.iter().all(|v| v.chars().count() >= 3) {
        let longest = values.iter().map(|v| v.chars().filter(|c| !c.is_whitespace()).count()).max().unwrap_or(0);
        steps.extend((1..longest.min(6)).rev().map(|keep| Step::Truncate { keep }));
    }
    steps.push(Step::Suppress);
    steps
}

impl Table {
    pub fn add(&mut self, quasi_values: Vec<String>, sensitive: Option<&str>) {
        self.rows += 1;
        let class = self.classes.entry(quasi_values).or_default();
        class.rows += 1;
        if let Some(value) = sensitive
            && class.sensitive.len() < MAX_DISTINCT_SENSITIVE
        {
            class.sensitive.insert(value.to_owned());
        }
    }

    fn regroup(&self, steps: &[Step]) -> HashMap<Vec<String>, Class> {
        let mut grouped: HashMap<Vec<String>, Class> = HashMap::new();
        for (values, class) in &self.classes {
            let key: Vec<String> = values.iter().zip(steps).map(|(value, step)| step.apply(value)).collect();
            let target = grouped.entry(key).or_default();
            target.rows += class.rows;
            for value in &class.sensitive {
                if target.sensitive.len() < MAX_DISTINCT_SENSITIVE {
                    target.sensitive.insert(value.clone());
                }
            }
        }
        grouped
    }

    fn assess_classes(&self, classes: &HashMap<Vec<String>, Class>, k: u64, l: Option<u64>) -> Assessment {
        let smallest = classes.values().map(|class| class.rows).min().unwrap_or(0);
        let at_risk = classes.values().filter(|class| class.rows < k).map(|class| class.rows).sum();
        let diversity = l.map(|_| classes.values().map(|class| class.sensitive.len() as u64).min().unwrap_or(0));
        Assessment {
            rows: self.rows,
            classes: classes.len() as u64,
            smallest_class: smallest,
            rows_at_risk: at_risk,
            k,
            k_anonymous: smallest >= k,
            l,
            lowest_diversity: diversity,
            classes_below_l: l
                .map(|l| classes.values().filter(|class| (class.sensitive.len() as u64) < l).count() as u64),
        }
    }

    pub fn assess(&self, k: u64, l: Option<u64>) -> Assessment {
        self.assess_classes(&self.classes, k, l)
    }

    /// The least generalisation (fewest total steps, then fewest suppressions) that makes the
    /// table k-anonymous (and l-diverse), if one exists within the ladders.
    pub fn suggest(&self, k: u64, l: Option<u64>) -> Option<Vec<(String, Step)>> {
        let columns = self.quasi.len();
        let ladders: Vec<Vec<Step>> = (0..columns)
            .map(|index| ladder(&self.classes.keys().map(|values| values[index].as_str()).collect()))
            .collect();
        // Breadth-first over total steps; the lattice is small (a few steps per column).
        let mut candidates: Vec<Vec<usize>> = vec![vec![0; columns]];
        let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
        while !candidates.is_empty() {
            let mut passing: Vec<(usize, Vec<usize>)> = Vec::new();
            let mut next = Vec::new();
            for levels in candidates {
                if !seen.insert(levels.clone()) {
                    continue;
                }
                let steps: Vec<Step> = levels.iter().zip(&ladders).map(|(level, ladder)| ladder[*level]).collect();
                let assessment = self.assess_classes(&self.regroup(&steps), k, l);
                let diverse = assessment.classes_below_l.is_none_or(|below| below == 0);
                if assessment.k_anonymous && diverse {
                    let suppressed = steps.iter().filter(|step| **step == Step::Suppress).count();
                    passing.push((suppressed, levels.clone()));
                }
                for column in 0..columns {
                    if levels[column] + 1 < ladders[column].len() {
                        let mut raised = levels.clone();
                        raised[column] += 1;
                        next.push(raised);
                    }
                }
            }
            if let Some((_, levels)) = passing.into_iter().min() {
                return Some(
                    levels
                        .iter()
                        .zip(&ladders)
                        .zip(&self.quasi)
                        .map(|((level, ladder), column)| (column.clone(), ladder[*level]))
                        .collect(),
                );
            }
            candidates = next;
        }
        None
    }
}

/// Reads `path` and counts its quasi-identifier combinations.
pub fn table_from_file(path: &Path, quasi: &[String], sensitive: Option<&str>) -> Result<Table, ReadError> {
    let parquet = crate::parquet::is_parquet(path);
    let (mut reader, format) = if parquet {
        (None, Format::Parquet)
    } else {
        let mut reader = read::open(path)?;
        let format = read::detect_format(path, &mut reader)?;
        (Some(reader), format)
    };
    let mut table = Table { quasi: quasi.to_vec(), ..Table::default() };
    let mut missing: BTreeMap<String, u64> = BTreeMap::new();
    // JSON Lines have no header: a column exists if some record has it.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let each = |record: &read::Record| {
        if format == Format::JsonLines {
            for (name, _) in &record.fields {
                if !seen.contains(name) {
                    seen.insert(name.clone());
                }
            }
        }
        let lookup =
            |name: &str| record.fields.iter().find(|(column, _)| column == name).map(|(_, value)| value.trim());
        let values: Vec<String> = quasi.iter().map(|name| lookup(name).unwrap_or("").to_owned()).collect();
        for (name, value) in quasi.iter().zip(&values) {
            if value.is_empty() {
                *missing.entry(name.clone()).or_default() += 1;
            }
        }
        table.add(values, sensitive.and_then(lookup));
    };
    let check = |headers: &[String]| -> Result<(), ReadError> {
        for name in quasi.iter().map(String::as_str).chain(sensitive) {
            if !headers.iter().any(|header| header == name) {
                return Err(ReadError::Format {
                    path: path.display().to_string(),
                    message: format!("no column '{name}' (columns: {})", headers.join(", ")),
                });
            }
        }
        Ok(())
    };
    match (format, reader.take()) {
        (Format::Parquet, _) => {
            let headers = crate::parquet::records(path, each, |_| {})?;
            check(&headers)?;
        }
        (Format::Csv { delimiter }, Some(reader)) => {
            let headers = read::csv_records(reader, delimiter, each, |_| {})?;
            check(&headers)?;
        }
        (Format::JsonLines, Some(reader)) => {
            read::jsonl_records(reader, each, |_| {})?;
            let headers: Vec<String> = seen.into_iter().collect();
            check(&headers)?;
        }
        (_, None) => {}
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, &str)]) -> Table {
        let mut table = Table { quasi: vec!["age".into(), "zip".into()], ..Table::default() };
        for (age, zip, disease) in rows {
            table.add(vec![(*age).into(), (*zip).into()], Some(disease));
        }
        table
    }

    #[test]
    fn k_anonymity_and_l_diversity_are_measured() {
        let t = table(&[("34", "94105", "flu"), ("34", "94105", "cold"), ("35", "94107", "flu")]);
        let a = t.assess(2, Some(2));
        assert_eq!((a.classes, a.smallest_class, a.rows_at_risk, a.k_anonymous), (2, 1, 1, false));
        assert_eq!((a.lowest_diversity, a.classes_below_l), (Some(1), Some(1)));
    }

    #[test]
    fn one_empty_cell_does_not_take_a_columns_generalisations_away() {
        let values: BTreeSet<&str> = ["34", "", "36"].into_iter().collect();
        assert!(ladder(&values).contains(&Step::AgeBand { width: 5 }), "{:?}", ladder(&values));
        let values: BTreeSet<&str> = ["1984-07-23", "", "1990-01-02"].into_iter().collect();
        assert!(ladder(&values).contains(&Step::Year), "{:?}", ladder(&values));
        let values: BTreeSet<&str> = ["94105", "", "10001"].into_iter().collect();
        assert!(ladder(&values).contains(&Step::Truncate { keep: 3 }), "{:?}", ladder(&values));
    }

    #[test]
    fn dates_are_generalised_to_their_month_only_in_a_known_order() {
        let month_first: BTreeSet<&str> = ["3/29/1982", "3/4/1982"].into_iter().collect();
        let steps = ladder(&month_first);
        assert!(steps.contains(&Step::Month { order: Some(DateOrder::MonthFirst) }), "{steps:?}");
        assert_eq!(Step::Month { order: Some(DateOrder::MonthFirst) }.apply("3/4/1982"), "1982-03");
        let ambiguous: BTreeSet<&str> = ["3/4/1982", "4/3/1982"].into_iter().collect();
        let steps = ladder(&ambiguous);
        assert!(!steps.iter().any(|step| matches!(step, Step::Month { .. })), "{steps:?}");
        assert!(steps.contains(&Step::Year));
    }

    #[test]
    fn a_json_lines_column_that_does_not_exist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("people.jsonl");
        std::fs::write(&path, "{\"age\": 34, \"zip\": \"94105\"}\n{\"age\": 35}\n").unwrap();
        let error = table_from_file(&path, &["agee".to_owned()], None).unwrap_err();
        assert!(error.to_string().contains("no column 'agee'"), "{error}");
        assert!(table_from_file(&path, &["age".to_owned(), "zip".to_owned()], None).is_ok());
        assert!(table_from_file(&path, &["age".to_owned()], Some("diagnosis")).is_err());
    }

    #[test]
    fn the_least_generalisation_reaching_k_is_suggested() {
        let t = table(&[("34", "94105", "flu"), ("36", "94107", "cold"), ("31", "94103", "flu"), ("38", "94109", "x")]);
        let suggestion = t.suggest(2, None).unwrap();
        let steps: Vec<Step> = suggestion.iter().map(|(_, step)| *step).collect();
        // Age bands of 5 (30-34, 35-39) with ZIP to 4 characters (9410) gives classes of 2.
        assert_eq!(steps, [Step::AgeBand { width: 5 }, Step::Truncate { keep: 4 }]);
        let regrouped = t.regroup(&steps);
        assert!(regrouped.values().all(|class| class.rows >= 2));
    }
}
