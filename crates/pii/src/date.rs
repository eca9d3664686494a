//! Dates as people write them: ISO `1982-03-29`, numeric `3/29/1982` (month first),
//! `29/3/1982` or `29.3.1982` (day first), month names (`Mar 29, 1982`, `29 March 1982`), and
//! two-digit years from 32 to 99 (`3/29/82`; a smaller one could be a day, so it is not read).
//!
//! A numeric date whose day and month are both 12 or less (`3/4/1982`) can be read either way:
//! one value cannot say which. A column can: a value over 12 in the first place makes it day
//! first, in the second month first. [`Tally`] counts that evidence over a column's values, and
//! a column where nothing tells (every value could be either) or where values disagree has no
//! order: its ambiguous dates are never read with a guessed one.

use serde::Serialize;

/// Where a column writes the month in numeric dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DateOrder {
    MonthFirst,
    DayFirst,
}

/// A date as written, before the order of day and month is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Year, month and day, placed beyond doubt (ISO, a month name, a part over 12, or day and
    /// month equal).
    Placed(i32, u32, u32),
    /// A numeric date whose first two parts are both 12 or less and differ.
    Either { year: i32, first: u32, second: u32 },
}

impl Written {
    pub fn year(self) -> i32 {
        match self {
            Written::Placed(year, _, _) | Written::Either { year, .. } => year,
        }
    }
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A month's name, in full or abbreviated to three letters (`Sept` too), in any case.
fn month_named(word: &str) -> Option<u32> {
    let lower = word.trim_end_matches('.').to_ascii_lowercase();
    if lower.len() < 3 {
        return None;
    }
    let index = MONTHS
        .iter()
        .position(|month| *month == lower || (lower.len() == 3 || lower == "sept") && month.starts_with(&lower))?;
    u32::try_from(index + 1).ok()
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn valid(year: i32, month: u32, day: u32) -> bool {
    (1..=9999).contains(&year) && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

/// A year written with four digits, or two from 32 to 99 (19xx).
fn year_of(token: &str) -> Option<i32> {
    let value: i32 = token.parse().ok()?;
    match token.len() {
        4 => Some(value),
        2 if value >= 32 => Some(1900 + value),
        _ => None,
    }
}

fn number(token: &str, max_len: usize) -> Option<u32> {
    (!token.is_empty() && token.len() <= max_len && token.bytes().all(|b| b.is_ascii_digit()))
        .then(|| token.parse().ok())
        .flatten()
}

/// Reads a date in any of the forms above; `None` if `text` is not one (or not a real day).
pub fn read(text: &str) -> Option<Written> {
    let text = text.trim();
    if text.len() < 6 || text.len() > 32 {
        return None;
    }
    if text.bytes().any(|b| b.is_ascii_alphabetic()) {
        return read_named(text);
    }
    // Numeric: three parts with one separator, used twice (`3/29/1982`, not `3/29-1982`).
    let separator = text.bytes().find(|b| !b.is_ascii_digit())?;
    if !b"-/.".contains(&separator) {
        return None;
    }
    let mut parts = text.split(char::from(separator));
    let (Some(a), Some(b), Some(c), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if a.len() == 4 {
        let (year, month, day) = (year_of(a)?, number(b, 2)?, number(c, 2)?);
        return valid(year, month, day).then_some(Written::Placed(year, month, day));
    }
    let (first, second, year) = (number(a, 2)?, number(b, 2)?, year_of(c)?);
    let day_first = valid(year, second, first);
    let month_first = valid(year, first, second);
    match (month_first, day_first) {
        (true, true) if first == second => Some(Written::Placed(year, first, second)),
        (true, true) => Some(Written::Either { year, first, second }),
        (true, false) => Some(Written::Placed(year, first, second)),
        (false, true) => Some(Written::Placed(year, second, first)),
        (false, false) => None,
    }
}

/// `Mar 29, 1982`, `March 29 1982`, `29 March 1982`, `29-Mar-1982`, `29th March 1982`.
fn read_named(text: &str) -> Option<Written> {
    let mut tokens = text.split([' ', ',', '-', '/', '.']).filter(|token| !token.is_empty());
    let (Some(a), Some(b), Some(c), None) = (tokens.next(), tokens.next(), tokens.next(), tokens.next()) else {
        return None;
    };
    let day_of = |token: &str| {
        let digits = token.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = &token[digits.len()..];
        (suffix.is_empty() || ["st", "nd", "rd", "th"].contains(&suffix.to_ascii_lowercase().as_str()))
            .then(|| number(digits, 2))
            .flatten()
    };
    let (month, day, year) = if let Some(month) = month_named(a) {
        (month, day_of(b)?, year_of(c)?)
    } else if let Some(month) = month_named(b) {
        (month, day_of(a)?, year_of(c)?)
    } else {
        return None;
    };
    valid(year, month, day).then_some(Written::Placed(year, month, day))
}

/// A date read with a column's order: `None` if `text` is not a date, or if it could be read
/// either way and the order is not known.
pub fn parse(text: &str, order: Option<DateOrder>) -> Option<(i32, u32, u32)> {
    match (read(text)?, order) {
        (Written::Placed(year, month, day), _) => Some((year, month, day)),
        (Written::Either { year, first, second }, Some(DateOrder::MonthFirst)) => Some((year, first, second)),
        (Written::Either { year, first, second }, Some(DateOrder::DayFirst)) => Some((year, second, first)),
        (Written::Either { .. }, None) => None,
    }
}

/// What a column's dates say about their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every date is placed without an order (ISO, month names, ...).
    Unambiguous,
    MonthFirst,
    DayFirst,
    /// Every numeric date could be read either way: the order is not guessed.
    Ambiguous,
    /// Some dates are month first, others day first.
    Mixed,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Unambiguous => "unambiguous",
            Verdict::MonthFirst => "month first",
            Verdict::DayFirst => "day first",
            Verdict::Ambiguous => "ambiguous: day and month are 12 or less in every value, so their order is unknown",
            Verdict::Mixed => "mixed: some values are month first, others day first",
        }
    }
}

/// Evidence for a column's date order, counted value by value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    placed: u64,
    month_first: u64,
    day_first: u64,
    either: u64,
}

impl Tally {
    /// Counts one value (values that are not dates are ignored).
    pub fn add(&mut self, text: &str) {
        let Some(written) = read(text) else { return };
        match written {
            Written::Either { .. } => self.either += 1,
            Written::Placed(..) => {
                // A numeric date placed by a part over 12 is evidence of the column's order.
                let numeric = !text.bytes().any(|b| b.is_ascii_alphabetic());
                match numeric.then(|| Self::order_shown(text)).flatten() {
                    Some(DateOrder::MonthFirst) => self.month_first += 1,
                    Some(DateOrder::DayFirst) => self.day_first += 1,
                    None => self.placed += 1,
                }
            }
        }
    }

    /// The order a numeric date with its year last shows (a part over 12 is the day).
    fn order_shown(text: &str) -> Option<DateOrder> {
        let mut parts = text.trim().split(['-', '/', '.']);
        let (first, second) = (parts.next()?, parts.next()?);
        if first.len() == 4 {
            return None;
        }
        let (first, second) = (number(first, 2)?, number(second, 2)?);
        match (first > 12, second > 12) {
            (true, false) => Some(DateOrder::DayFirst),
            (false, true) => Some(DateOrder::MonthFirst),
            _ => None,
        }
    }

    /// The column's verdict; `None` if it holds no dates.
    pub fn verdict(&self) -> Option<Verdict> {
        Some(match (self.month_first > 0, self.day_first > 0) {
            (true, true) => Verdict::Mixed,
            (true, false) => Verdict::MonthFirst,
            (false, true) => Verdict::DayFirst,
            (false, false) if self.either > 0 => Verdict::Ambiguous,
            (false, false) if self.placed > 0 => Verdict::Unambiguous,
            (false, false) => return None,
        })
    }

    /// The order to read the column's ambiguous dates with, if its values tell it.
    pub fn order(&self) -> Option<DateOrder> {
        match self.verdict()? {
            Verdict::MonthFirst => Some(DateOrder::MonthFirst),
            Verdict::DayFirst => Some(DateOrder::DayFirst),
            Verdict::Unambiguous | Verdict::Ambiguous | Verdict::Mixed => None,
        }
    }
}

/// Days since 1970-01-01 (proleptic Gregorian), and back.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, order: Option<DateOrder>, expected: Option<(i32, u32, u32)>) {
        assert_eq!(parse(text, order), expected, "{text} read {order:?}");
    }

    #[test]
    fn dates_are_read_as_people_write_them() {
        check("1982-03-29", None, Some((1982, 3, 29)));
        check("1982/03/29", None, Some((1982, 3, 29)));
        check("3/29/1982", None, Some((1982, 3, 29)));
        check("29/3/1982", None, Some((1982, 3, 29)));
        check("29.03.1982", None, Some((1982, 3, 29)));
        check("29-03-1982", None, Some((1982, 3, 29)));
        check("Mar 29, 1982", None, Some((1982, 3, 29)));
        check("March 29 1982", None, Some((1982, 3, 29)));
        check("29 March 1982", None, Some((1982, 3, 29)));
        check("29-Mar-1982", None, Some((1982, 3, 29)));
        check("29th March 1982", None, Some((1982, 3, 29)));
        check("Sept 9, 1982", None, Some((1982, 9, 9)));
        check("3/29/82", None, Some((1982, 3, 29)));
        check("5/5/1990", None, Some((1990, 5, 5)));
    }

    #[test]
    fn a_date_that_could_be_either_is_never_read_with_a_guessed_order() {
        check("3/4/1982", None, None);
        check("3/4/1982", Some(DateOrder::MonthFirst), Some((1982, 3, 4)));
        check("3/4/1982", Some(DateOrder::DayFirst), Some((1982, 4, 3)));
        // A value that shows its own order is read so, whatever the column says.
        check("3/29/1982", Some(DateOrder::DayFirst), Some((1982, 3, 29)));
        assert_eq!(read("3/4/1982").map(Written::year), Some(1982), "the year is certain either way");
    }

    #[test]
    fn what_is_not_a_date_is_not_read_as_one() {
        for text in [
            "3/29/05",
            "13/13/1982",
            "2/30/1982",
            "1982-13-01",
            "3/29-1982",
            "12 34 56",
            "211.3375",
            "Marching 29 1982",
            "Jan-20",
            "+44 20 7946 0958",
            "20515-0104",
        ] {
            assert_eq!(read(text), None, "{text}");
        }
    }

    #[test]
    fn a_column_s_values_decide_its_order() {
        let verdict = |values: &[&str]| {
            let mut tally = Tally::default();
            for value in values {
                tally.add(value);
            }
            (tally.verdict(), tally.order())
        };
        assert_eq!(verdict(&["3/4/1982", "3/29/1982"]), (Some(Verdict::MonthFirst), Some(DateOrder::MonthFirst)));
        assert_eq!(verdict(&["3/4/1982", "29/3/1982"]), (Some(Verdict::DayFirst), Some(DateOrder::DayFirst)));
        assert_eq!(verdict(&["3/4/1982", "4/3/1982"]), (Some(Verdict::Ambiguous), None));
        assert_eq!(verdict(&["3/29/1982", "29/3/1982"]), (Some(Verdict::Mixed), None));
        assert_eq!(verdict(&["1982-03-04", "Mar 4, 1982"]), (Some(Verdict::Unambiguous), None));
        assert_eq!(verdict(&["jane", ""]), (None, None));
    }
}
