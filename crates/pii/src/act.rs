//! Actions on personal data (sans-IO): what `data protect` does to a value, or to the spans
//! found in free text.
//!
//! - `drop` removes the column; `redact` replaces a value (or span) with `[KIND]`;
//! - `mask` keeps the last N characters and the character classes' shape of the rest;
//! - `pseudonymise` is HMAC-SHA-256 over the normalised value under a named key: stable and
//!   joinable across files and runs, irreversible without the key (never a bare hash);
//! - `generalise` coarsens: dates to month or year, ages to bands, postcodes truncated,
//!   coordinates rounded;
//! - `date_shift` moves dates by a per-subject offset derived from the key, so intervals within
//!   one subject's records survive.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    Kind,
    date::{self, DateOrder, civil_from_days, days_from_civil},
};

/// A key for pseudonyms and date shifts. Never printed.
pub struct DataKey {
    pub id: String,
    /// HMAC keyed once (the raw key bytes are zeroised as soon as it is): each use clones it
    /// instead of hashing the key again.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The shortest key accepted: 256 bits.
pub const MIN_KEY_BYTES: usize = 32;

impl DataKey {
    /// A key from its text form: hex (64+ digits) or base64. Too short or malformed is an error.
    pub fn parse(id: &str, text: &str) -> Result<DataKey, String> {
        let text = text.trim();
        let bytes = if text.len() >= 2 * MIN_KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..text.len() / 2).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0)).collect()
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| format!("key '{id}' is neither hex nor base64"))?
        };
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "key '{id}' is {} bytes; pseudonymisation keys must be at least {MIN_KEY_BYTES} bytes (256 bits)",
                bytes.len()
            ));
        }
        let bytes: Vec<u8> = bytes;
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable_hmac());
        let _wiped = Zeroizing::new(bytes);
        Ok(DataKey { id: id.to_owned(), keyed })
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().into()
    }
}

#[expect(clippy::panic, reason = "HMAC accepts keys of every length, so this is unreachable")]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC rejected a key")
}

/// The canonical form of a value of `kind`, so that spellings of one value pseudonymise alike.
pub fn normalise(kind: Kind, value: &str) -> String {
    let value = value.trim();
    match kind {
        Kind::Email => value.to_lowercase(),
        Kind::Phone => {
            let plus = value.starts_with('+');
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            if plus { format!("+{digits}") } else { digits }
        }
        Kind::PaymentCard | Kind::Imei | Kind::UsSsn | Kind::UkNhs => {
            value.chars().filter(char::is_ascii_digit).collect()
        }
        Kind::Iban | Kind::UkNino | Kind::Postcode | Kind::Passport => {
            value.chars().filter(|c| !c.is_whitespace() && *c != '-').collect::<String>().to_uppercase()
        }
        Kind::PersonName => value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
        Kind::MacAddress => value.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_lowercase(),
        _ => value.to_owned(),
    }
}

/// `<kind>_<26 base32 characters>`: 128 bits of HMAC-SHA-256 over the normalised value.
pub fn pseudonym(key: &DataKey, kind: Kind, value: &str) -> String {
    let digest = key.mac(&[b"pseudonym v1", kind.name().as_bytes(), normalise(kind, value).as_bytes()]);
    format!("{}_{}", kind.name(), base32(&digest[..16]))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Keeps the last `keep` alphanumerics; others become `*` (letters) or `#` (digits), so the
/// length and character classes survive (`+44 20 **** 0958` → `+## ## #### 0958`).
pub fn mask(value: &str, keep: usize) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    // Never keep more than half: a short value (a CVV, a first name) is masked, not kept.
    let keep = keep.min(total / 2);
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen + keep > total {
                c
            } else if c.is_ascii_digit() {
                '#'
            } else {
                '*'
            }
        })
        .collect()
}

/// The numeral alphabets of tokenisation: digits for numeric kinds, `0-9A-Za-z` otherwise.
const RADIX62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The smallest domain tokenised (NIST SP 800-38G Rev. 1: at least a million values).
pub const MIN_DOMAIN: f64 = 1_000_000.0;

fn numeric(kind: Kind) -> bool {
    matches!(kind, Kind::PaymentCard | Kind::UsSsn | Kind::UkNhs | Kind::Imei | Kind::Phone)
}

/// Luhn-checked kinds keep a valid check digit: the body is encrypted, the check recomputed.
fn luhn_checked(kind: Kind) -> bool {
    matches!(kind, Kind::PaymentCard | Kind::Imei)
}

fn luhn_digit(body: &[u16]) -> u16 {
    let sum: u16 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            if index % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// FF1 (NIST SP 800-38G) over a value's numerals, separators kept in place: digits for
/// numeric kinds, `0-9A-Za-z` otherwise (other characters stay as they are). The tweak is the
/// column, so one value tokenises differently in different columns. Reversible by
/// [`reveal`] with the same key and column. Values with fewer than a million possible
/// numeral strings are refused.
pub fn tokenise(key: &DataKey, column: &str, kind: Kind, value: &str) -> Result<String, String> {
    ff1(key, column, kind, value, true)
}

/// The inverse of [`tokenise`].
pub fn reveal(key: &DataKey, column: &str, kind: Kind, token: &str) -> Result<String, String> {
    ff1(key, column, kind, token, false)
}

fn ff1(key: &DataKey, column: &str, kind: Kind, value: &str, encrypt: bool) -> Result<String, String> {
    use fpe::ff1::{FF1, FlexibleNumeralString};
    let radix: u32 = if numeric(kind) { 10 } else { 62 };
    let to_numeral = |c: char| -> Option<u16> {
        if radix == 10 {
            c.to_digit(10).map(|d| d as u16)
        } else {
            c.is_ascii().then(|| RADIX62.iter().position(|&b| char::from(b) == c).map(|p| p as u16)).flatten()
        }
    };
    // Characters outside the alphabet would stay in clear: such values are refused (redacted).
    if value.chars().any(|c| c.is_alphanumeric() && to_numeral(c).is_none()) {
        return Err("the value holds characters outside the tokenisation alphabet".into());
    }
    let numerals: Vec<u16> = value.chars().filter_map(to_numeral).collect();
    let checked = luhn_checked(kind) && numerals.len() >= 2;
    // The check digit is recomputed, so only numbers whose check digit is valid reveal whole.
    if checked && encrypt {
        let digits: Vec<u8> = numerals.iter().map(|&n| u8::try_from(n).unwrap_or(0)).collect();
        if !crate::validate::luhn(&digits) {
            return Err("not a valid number (Luhn): it would not reveal to itself".into());
        }
    }
    let body_len = if checked { numerals.len() - 1 } else { numerals.len() };
    if (f64::from(radix)).powi(i32::try_from(body_len).unwrap_or(0)) < MIN_DOMAIN {
        return Err(format!("too short to tokenise safely ({body_len} numerals)"));
    }
    let derived = key.mac(&[b"ff1 v1"]);
    let cipher = FF1::<aes::Aes256>::new(&derived, radix).map_err(|e| format!("{e:?}"))?;
    let body = FlexibleNumeralString::from(numerals[..body_len].to_vec());
    let tweak = column.as_bytes();
    let result = if encrypt { cipher.encrypt(tweak, &body) } else { cipher.decrypt(tweak, &body) };
    let mut out_numerals: Vec<u16> = Vec::from(result.map_err(|e| format!("{e:?}"))?);
    if checked {
        out_numerals.push(luhn_digit(&out_numerals));
    }
    let mut next = out_numerals.into_iter();
    Ok(value
        .chars()
        .map(|c| match to_numeral(c) {
            Some(_) => next.next().map_or(c, |n| char::from(RADIX62[usize::from(n)])),
            None => c,
        })
        .collect())
}

/// `[EMAIL]`, `[PHONE]`, ...
pub fn redaction(kind: Kind) -> String {
    format!("[{}]", kind.name().to_uppercase())
}

/// Shifts a date by the subject's offset (within ±`max_days`, never 0), derived from the key
/// and the subject, so one subject's dates move together. `order` is the column's order of day
/// and month ([`crate::date::Tally`]). `None` if `value` is not a date, or could be read
/// either way and `order` is unknown.
pub fn date_shift(
    key: &DataKey,
    subject: &str,
    value: &str,
    max_days: u32,
    order: Option<DateOrder>,
) -> Option<String> {
    // Without a subject every record would move by the same offset: one known date would
    // reveal them all. Such dates are not shifted (the caller redacts them).
    if subject.trim().is_empty() {
        return None;
    }
    let (year, month, day) = date::parse(value, order)?;
    let digest = key.mac(&[b"date shift v1", subject.as_bytes()]);
    let raw = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let span = max_days.max(1);
    let magnitude = i64::from(raw % span + 1);
    let offset = if digest[4] & 1 == 0 { magnitude } else { -magnitude };
    let (year, month, day) = civil_from_days(days_from_civil(year, month, day) + offset);
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

/// Ways to coarsen a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generalise {
    /// A date to `YYYY`.
    Year,
    /// A date to `YYYY-MM`.
    Month,
    /// An age (or a birth date, as of `reference_year`) to a band of `width` years (`30-39`).
    AgeBand { width: u32, reference_year: i32 },
    /// Keep the first `keep` characters (postcodes, ZIP codes): `SW1A 1AA` → `SW1`.
    Truncate { keep: usize },
    /// Round numbers (coordinates) to `decimals`.
    Round { decimals: u32 },
}

/// Applies a generalisation; `None` if the value does not have the shape it needs. `order` is
/// the column's order of day and month: a year is certain without it, a month is not, so a
/// date that could be read either way has no month when `order` is unknown.
pub fn generalise(how: Generalise, value: &str, order: Option<DateOrder>) -> Option<String> {
    let value = value.trim();
    match how {
        Generalise::Year => date::read(value).map(|written| format!("{:04}", written.year())),
        Generalise::Month => date::parse(value, order).map(|(year, month, _)| format!("{year:04}-{month:02}")),
        Generalise::AgeBand { width, reference_year } => {
            let age = match value.parse::<u32>() {
                Ok(age) => age,
                Err(_) => u32::try_from(reference_year - date::read(value)?.year()).ok()?,
            };
            let width = width.max(1);
            let low = age / width * width;
            Some(format!("{low}-{}", low + width - 1))
        }
        Generalise::Truncate { keep } => {
            let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            Some(compact.chars().take(keep).collect())
        }
        Generalise::Round { decimals } => {
            let number: f64 = value.parse().ok()?;
            Some(format!("{number:.prec$}", prec = decimals as usize))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> DataKey {
        DataKey::parse("k", &format!("{byte:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(DataKey::parse("k", "abcd").unwrap_err().contains("at least 32 bytes"));
        assert!(DataKey::parse("k", "!!!").is_err());
        assert!(DataKey::parse("k", &"ab".repeat(32)).is_ok());
        assert!(!format!("{:?}", key(1)).contains("01"), "Debug shows no key material");
    }

    #[test]
    fn pseudonyms_join_across_spellings() {
        let key = key(7);
        assert_eq!(pseudonym(&key, Kind::Email, "Jane@Example.com "), pseudonym(&key, Kind::Email, "jane@example.com"));
        assert_eq!(pseudonym(&key, Kind::Phone, "+44 20 7946 0958"), pseudonym(&key, Kind::Phone, "+442079460958"));
        assert!(pseudonym(&key, Kind::Email, "a@example.com").starts_with("email_"));
        assert_eq!(pseudonym(&key, Kind::Email, "a@example.com").len(), "email_".len() + 26);
    }

    #[test]
    fn generalisations() {
        assert_eq!(generalise(Generalise::Year, "1984-07-23", None).as_deref(), Some("1984"));
        assert_eq!(generalise(Generalise::Month, "23/07/1984", None).as_deref(), Some("1984-07"));
        assert_eq!(
            generalise(Generalise::AgeBand { width: 10, reference_year: 2026 }, "37", None).as_deref(),
            Some("30-39")
        );
        assert_eq!(
            generalise(Generalise::AgeBand { width: 10, reference_year: 2026 }, "1984-07-23", None).as_deref(),
            Some("40-49")
        );
        assert_eq!(generalise(Generalise::Truncate { keep: 3 }, "SW1A 1AA", None).as_deref(), Some("SW1"));
        assert_eq!(generalise(Generalise::Round { decimals: 2 }, "51.50735", None).as_deref(), Some("51.51"));
        assert_eq!(generalise(Generalise::Year, "not a date", None), None);
    }

    #[test]
    fn generalising_or_shifting_a_date_never_gives_a_wrong_month() {
        let key = key(3);
        let month = |value: &str, order| generalise(Generalise::Month, value, order);
        // FakeNameGenerator's `Birthday` is month first: 3/29/1982 is March, and so is 3/4/1982.
        assert_eq!(month("3/29/1982", None).as_deref(), Some("1982-03"));
        assert_eq!(month("3/4/1982", Some(DateOrder::MonthFirst)).as_deref(), Some("1982-03"));
        assert_eq!(month("3/4/1982", Some(DateOrder::DayFirst)).as_deref(), Some("1982-04"));
        assert_eq!(month("Mar 29, 1982", None).as_deref(), Some("1982-03"));
        assert_eq!(month("29 March 1982", None).as_deref(), Some("1982-03"));
        // Unknown order: no month is made up, but the year is certain.
        assert_eq!(month("3/4/1982", None), None);
        assert_eq!(generalise(Generalise::Year, "3/4/1982", None).as_deref(), Some("1982"));
        let band = Generalise::AgeBand { width: 10, reference_year: 2026 };
        assert_eq!(generalise(band, "3/4/1982", None).as_deref(), Some("40-49"));
        // A shift starts from the right day: 3/29/1982 is never read as the 3rd of month 29.
        let shifted = date_shift(&key, "alice", "3/29/1982", 30, None).unwrap();
        let from_iso = date_shift(&key, "alice", "1982-03-29", 30, None).unwrap();
        assert_eq!(shifted, from_iso);
        assert_eq!(date_shift(&key, "alice", "3/4/1982", 30, None), None, "unknown order: not shifted");
        assert_eq!(
            date_shift(&key, "alice", "3/4/1982", 30, Some(DateOrder::MonthFirst)),
            date_shift(&key, "alice", "1982-03-04", 30, None)
        );
    }

    #[test]
    fn date_shifts_are_consistent_per_subject() {
        let key = key(3);
        let first = date_shift(&key, "alice", "2024-01-10", 30, None).unwrap();
        let second = date_shift(&key, "alice", "2024-01-20", 30, None).unwrap();
        let (a, b) = (date::parse(&first, None).unwrap(), date::parse(&second, None).unwrap());
        assert_eq!(days_from_civil(b.0, b.1, b.2) - days_from_civil(a.0, a.1, a.2), 10, "intervals survive");
        assert_ne!(first, "2024-01-10");
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn tokens_keep_the_format_and_cards_stay_luhn_valid() {
        let key = key(5);
        let token = tokenise(&key, "card", Kind::PaymentCard, "4111 1111 1111 1111").unwrap();
        assert_ne!(token, "4111 1111 1111 1111");
        assert_eq!(token.len(), 19);
        assert_eq!(token.chars().nth(4), Some(' '));
        let digits: Vec<u8> = token.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
        assert!(crate::validate::luhn(&digits), "{token}");
        assert_eq!(reveal(&key, "card", Kind::PaymentCard, &token).unwrap(), "4111 1111 1111 1111");
        assert_ne!(
            tokenise(&key, "other", Kind::PaymentCard, "4111 1111 1111 1111").unwrap(),
            token,
            "the column is the tweak"
        );
        assert!(tokenise(&key, "zip", Kind::Postcode, "941").is_err(), "domain under a million");
        assert!(tokenise(&key, "name", Kind::PersonName, "Łukasz Żółć").is_err(), "letters outside the alphabet");
        assert!(tokenise(&key, "card", Kind::PaymentCard, "4111 1111 1111 1112").is_err(), "fails Luhn");
        assert_eq!(mask("Ann", 4), "**n", "a short value is masked, not kept");
        assert_eq!(mask("123", 4), "##3");
        assert!(date_shift(&key, "", "2024-01-10", 30, None).is_none(), "no subject, no shift");
        let email = tokenise(&key, "email", Kind::Email, "jane.doe@example.com").unwrap();
        assert_eq!(email.matches('@').count(), 1);
        assert_eq!(reveal(&key, "email", Kind::Email, &email).unwrap(), "jane.doe@example.com");
    }

    proptest! {
        #[test]
        fn tokenise_then_reveal_returns_the_input(value in "[0-9]{7,19}", column in "[a-z_]{1,12}") {
            let key = key(4);
            for kind in [Kind::PaymentCard, Kind::UsSsn, Kind::Phone] {
                let digits: Vec<u8> = value.bytes().map(|b| b - b'0').collect();
                if kind == Kind::PaymentCard && !crate::validate::luhn(&digits) {
                    // A number that fails its check digit is refused (it would not reveal whole).
                    prop_assert!(tokenise(&key, &column, kind, &value).is_err());
                    continue;
                }
                let token = tokenise(&key, &column, kind, &value).unwrap();
                prop_assert_eq!(token.len(), value.len());
                prop_assert_eq!(reveal(&key, &column, kind, &token).unwrap(), value.clone());
            }
        }

        #[test]
        fn alphanumeric_tokens_reveal(value in "[A-Za-z0-9.@_-]{4,40}") {
            let key = key(6);
            let alnum = value.chars().filter(char::is_ascii_alphanumeric).count();
            prop_assume!(alnum >= 4);
            let token = tokenise(&key, "c", Kind::Email, &value).unwrap();
            prop_assert_eq!(reveal(&key, "c", Kind::Email, &token).unwrap(), value);
        }

        #[test]
        fn pseudonyms_are_deterministic_per_key_and_differ_across_keys(value in "[a-z0-9._]{1,20}@example\\.com") {
            let (one, two) = (key(1), key(2));
            prop_assert_eq!(pseudonym(&one, Kind::Email, &value), pseudonym(&one, Kind::Email, &value));
            prop_assert_ne!(pseudonym(&one, Kind::Email, &value), pseudonym(&two, Kind::Email, &value));
        }

        #[test]
        fn mask_keeps_length_and_character_classes(value in "[A-Za-z0-9 +()-]{0,40}", keep in 0usize..6) {
            let masked = mask(&value, keep);
            prop_assert_eq!(masked.chars().count(), value.chars().count());
            for (original, masked) in value.chars().zip(masked.chars()) {
                if original.is_ascii_digit() { prop_assert!(masked == '#' || masked == original); }
                else if original.is_alphabetic() { prop_assert!(masked == '*' || masked == original); }
                else { prop_assert_eq!(masked, original); }
            }
        }

        #[test]
        fn shifted_dates_stay_within_the_bound(days in 0i64..40_000, max in 1u32..400) {
            let (y, m, d) = civil_from_days(days);
            let text = format!("{y:04}-{m:02}-{d:02}");
            let shifted = date_shift(&key(9), "s", &text, max, None).unwrap();
            let (sy, sm, sd) = date::parse(&shifted, None).unwrap();
            let delta = (days_from_civil(sy, sm, sd) - days).abs();
            prop_assert!(delta >= 1 && delta <= i64::from(max));
        }
    }
}
