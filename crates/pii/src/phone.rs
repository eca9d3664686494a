//! Phone numbers, validated against the numbering plans (libphonenumber's metadata, as the
//! `phonenumber` crate ships it) with our own matcher: the plans' patterns compiled once per
//! country into anchored regexes. The crate's own `parse` + `is_valid` takes ~14 µs a number
//! (an LRU of regexes keyed by pattern text, hashed per call); this takes well under one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use phonenumber::metadata::{DATABASE, Metadata};
use regex::Regex;

/// One region's plan: the national prefix, and each number type's pattern and lengths.
#[derive(Debug)]
struct Plan {
    national_prefix: Option<String>,
    general: Regex,
    types: Vec<(Regex, Vec<u16>)>,
}

/// The metadata's patterns are laid out over several lines: whitespace is not significant.
fn anchored(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("(?x)^(?:{pattern})$")).ok()
}

impl Plan {
    fn of(metadata: &Metadata) -> Option<Plan> {
        let descriptors = metadata.descriptors();
        let types = [
            descriptors.fixed_line(),
            descriptors.mobile(),
            descriptors.toll_free(),
            descriptors.premium_rate(),
            descriptors.shared_cost(),
            descriptors.personal_number(),
            descriptors.voip(),
            descriptors.pager(),
            descriptors.uan(),
            descriptors.voicemail(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|descriptor| {
            Some((anchored(descriptor.national_number().as_str())?, descriptor.possible_length().to_vec()))
        })
        .collect();
        Some(Plan {
            national_prefix: metadata.national_prefix().map(str::to_owned),
            general: anchored(metadata.descriptors().general().national_number().as_str())?,
            types,
        })
    }

    /// Whether `national` (digits, no prefix) is a number of some type in this plan.
    fn matches(&self, national: &str) -> bool {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        self.general.is_match(national)
            && self.types.iter().any(|(pattern, lengths)| {
                (lengths.is_empty() || lengths.contains(&length)) && pattern.is_match(national)
            })
    }
}

type Plans = Arc<Vec<Plan>>;

/// Plans by country calling code, compiled on first use.
fn plans_for_code(code: u16) -> Option<Plans> {
    static CACHE: OnceLock<Mutex<HashMap<u16, Option<Plans>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&code) {
        return found.clone();
    }
    let plans = DATABASE
        .by_code(&code)
        .map(|regions| Arc::new(regions.into_iter().filter_map(Plan::of).collect::<Vec<_>>()))
        .filter(|plans| !plans.is_empty());
    cache.lock().unwrap_or_else(PoisonError::into_inner).insert(code, plans.clone());
    plans
}

/// The regions whose national formats (without `+`) we recognise, by calling code.
const NATIONAL: [(&str, u16); 6] = [("US", 1), ("GB", 44), ("DE", 49), ("FR", 33), ("IN", 91), ("BR", 55)];

fn national_plans() -> &'static [(String, Plan)] {
    static PLANS: OnceLock<Vec<(String, Plan)>> = OnceLock::new();
    PLANS.get_or_init(|| {
        NATIONAL
            .iter()
            .filter_map(|(region, _)| Some(((*region).to_owned(), Plan::of(DATABASE.by_id(*region)?)?)))
            .collect()
    })
}

/// A number as written, taken apart: its digits, whether it is international (`+44`, or the
/// `00`/`011` dialling prefix), and the sizes of its digit groups.
struct Written {
    digits: String,
    international: bool,
    groups: Vec<usize>,
}

/// Splits off an extension (`x4587`, `ext. 12`, `#12`) and the `(0)` some write after the
/// country code (`+44 (0)20 7946 0958`), which is dialled only from inside the country.
fn written(text: &str) -> Option<Written> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let body = match lower.find("ext").or_else(|| lower.rfind(['x', '#'])) {
        Some(at) => {
            let extension = lower[at..].trim_start_matches(['x', '#', 'e', 't', '.', ' ']);
            if extension.is_empty() || extension.len() > 6 || !extension.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.get(..at)?.trim_end()
        }
        None => text,
    };
    if !body.bytes().all(|b| b.is_ascii_digit() || b" +-().".contains(&b)) {
        return None;
    }
    // `308.271.618-08` (a Brazilian CPF) and similar ids mix dots and dashes; numbers do not.
    if body.contains('.') && body.contains('-') {
        return None;
    }
    let plus = body.starts_with('+');
    let body = if plus { body.replacen("(0)", "", 1) } else { body.to_owned() };
    let groups: Vec<usize> =
        body.split(|c: char| !c.is_ascii_digit()).filter(|group| !group.is_empty()).map(str::len).collect();
    let mut digits: String = body.chars().filter(char::is_ascii_digit).collect();
    let mut international = plus;
    if !plus {
        for prefix in ["011", "00"] {
            if let Some(rest) = digits.strip_prefix(prefix)
                && body.starts_with(prefix)
            {
                digits = rest.to_owned();
                international = true;
                break;
            }
        }
    }
    Some(Written { digits, international, groups })
}

/// The fewest digits of a national number written without its trunk prefix (`0`): US, Indian
/// and Brazilian numbers have ten or more. Shorter runs without one are house numbers,
/// postcodes and ZIP+4 codes far more often than numbers dialled in their own area.
const MIN_DIGITS_WITHOUT_TRUNK_PREFIX: usize = 10;

/// How national numbers written without a trunk prefix are grouped, when they are: North
/// American 3-3-4 (`(202) 555-0143`, `202.555.0143`, `1-202-555-0143` after its `1`), Indian
/// mobiles 5-5 (`98765 43210`) and Brazilian area code and number (`(11) 91234-5678`). Other
/// groupings of as many digits (`2270-66-1551`) are ids.
const GROUPINGS_WITHOUT_TRUNK_PREFIX: &[&[usize]] = &[&[3, 3, 4], &[5, 5], &[2, 5, 4], &[2, 4, 4]];

/// A phone number as written: `+` and a country code (or the `00`/`011` dialling prefix), or
/// a national number of one of the recognised regions, valid by its numbering plan; with an
/// extension (`x4587`) if any.
pub fn valid(text: &str) -> bool {
    let Some(Written { digits, international, groups }) = written(text) else { return false };
    if !(7..=15).contains(&digits.len()) {
        return false;
    }
    if international {
        return (1..=3).any(|split| {
            digits
                .get(..split)
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(plans_for_code)
                .is_some_and(|plans| plans.iter().any(|plan| plan.matches(&digits[split..])))
        });
    }
    national_plans().iter().any(|(region, plan)| {
        let (national, trunk) = match plan.national_prefix.as_deref().map(|prefix| digits.strip_prefix(prefix)) {
            Some(Some(rest)) => (rest, true),
            _ => (digits.as_str(), false),
        };
        let grouping = if trunk && region != "US" {
            true
        } else {
            let national_groups = if trunk { groups.get(1..).unwrap_or_default() } else { &groups[..] };
            groups.len() == 1 || GROUPINGS_WITHOUT_TRUNK_PREFIX.contains(&national_groups)
        };
        let long_enough = trunk && region != "US" || national.len() >= MIN_DIGITS_WITHOUT_TRUNK_PREFIX;
        grouping && long_enough && plan.matches(national)
    })
}

/// A run of digits written as a phone number is: 7 to 15 digits in groups, an optional
/// extension; not checked against any plan. Only a rule that needs context uses it (`Phone:
/// 451 5986`), since without a word saying so such a run is as often something else.
pub fn shaped(text: &str) -> bool {
    written(text).is_some_and(|Written { digits, groups, .. }| {
        (7..=15).contains(&digits.len()) && groups.len() <= 6 && groups.iter().all(|size| (1..=10).contains(size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_phone_number_is_not_one() {
        for text in [
            "211.3375",       // a decimal
            "20515-0104",     // ZIP+4
            "17151 2450",     // a house number and the next one
            "308.271.618-08", // a Brazilian CPF
            "2270-66-1551",   // a licence number
            "3610-114",       // a Portuguese postcode
            "224 4966",
        ] {
            assert!(!valid(text), "{text}");
        }
    }

    #[test]
    fn common_ways_of_writing_numbers_are_found_whole() {
        for text in [
            "(202)555-0143",
            "9498777106",
            "345-899-3560x4587",
            "259.735.7502x459",
            "+1-903-240-4508x769",
            "+447911 123 456",
            "+46 (0)157 548 89",
            "001-518-640-0854",
            "+1 202 555 0143 ext. 12",
        ] {
            assert!(valid(text), "{text}");
        }
    }

    #[test]
    fn agrees_with_libphonenumber_on_written_numbers() {
        let numbers = [
            "+44 20 7946 0958",
            "+1 (202) 555-0143",
            "+49 30 901820",
            "+33 1 42 68 53 00",
            "+91 98765 43210",
            "+55 11 91234-5678",
            "020 7946 0958",
            "(202) 555-0143",
            "030 901820 11",
            "01 42 68 53 00",
            "98765 43210",
            "0151 23456789",
            "+1 000 000 0000",
            "+44 12",
            "12345678",
            "+999 1234 5678",
            "(11) 91234-5678",
            "+61 2 9374 4000",
            "+81 3-1234-5678",
        ];
        assert!(!valid("call 020 7946 0958"), "a phone number is all a phone value holds");
        // Deliberately stricter than libphonenumber: national numbers under ten digits need
        // their trunk prefix (`12345678` is a German number to it; written so, it is an id).
        let stricter = ["12345678"];
        for number in numbers {
            let reference = number.starts_with('+')
                && phonenumber::parse(None, number).is_ok_and(|n| phonenumber::is_valid(&n))
                || !number.starts_with('+')
                    && crate::rules::PHONE_REGIONS.iter().any(|region| {
                        phonenumber::parse(Some(*region), number).is_ok_and(|n| phonenumber::is_valid(&n))
                    });
            assert_eq!(valid(number), reference && !stricter.contains(&number), "{number}");
        }
    }
}
