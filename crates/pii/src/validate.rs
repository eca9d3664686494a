//! Validators: the checks that turn "looks like" into "is". Each takes the candidate text as
//! found and answers whether it is a valid instance of its kind.

use sha2::{Digest, Sha256};

/// ASCII digits of `text`, skipping spaces and dashes; `None` if anything else appears.
fn digits(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'0'..=b'9' => out.push(byte - b'0'),
            b' ' | b'-' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The Luhn (mod 10) check.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            let digit = u32::from(digit);
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn all_same(digits: &[u8]) -> bool {
    digits.windows(2).all(|pair| pair[0] == pair[1])
}

/// A payment card number: a known issuer range (IIN), a length the issuer uses, and Luhn.
pub fn payment_card(text: &str) -> bool {
    let Some(digits) = digits(text) else { return false };
    if !(12..=19).contains(&digits.len()) || all_same(&digits) {
        return false;
    }
    let prefix = |n: usize| digits.iter().take(n).fold(0u32, |acc, &d| acc * 10 + u32::from(d));
    let len = digits.len();
    let issuer_ok = match digits[0] {
        1 => prefix(4) == 1800 && len == 15, // JCB, legacy 15-digit
        4 => matches!(len, 13 | 16 | 19),    // Visa
        5 => {
            (51..=55).contains(&prefix(2)) && len == 16                                   // Mastercard
            || (prefix(2) == 50 || (56..=59).contains(&prefix(2))) && len >= 12
        } // Maestro
        2 => {
            (2221..=2720).contains(&prefix(4)) && len == 16 // Mastercard 2-series
            || prefix(4) == 2131 && len == 15
        } // JCB, legacy 15-digit
        3 => {
            matches!(prefix(2), 34 | 37) && len == 15                                       // Amex
                || (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len)          // JCB
                || ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39)) && (14..=19).contains(&len) // Diners
        }
        6 => {
            prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3))       // Discover
                || prefix(2) == 62                                                          // UnionPay
                || (56..=69).contains(&prefix(2)) // Maestro
        }
        _ => false,
    };
    issuer_ok && luhn(&digits)
}

/// IBAN length per country (ISO 13616 registry).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BR" => 29,
        "BY" => 28,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IQ" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LC" => 32,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NL" => 18,
        "NO" => 15,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "SA" => 24,
        "SC" => 31,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "ST" => 25,
        "SV" => 28,
        "TL" => 23,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VA" => 22,
        "VG" => 24,
        "XK" => 20,
        _ => return None,
    })
}

/// An IBAN: country, its length, alphanumerics of one case (`GB82 WEST …` or `gb82west…`,
/// never mixed), and ISO 7064 mod 97-10.
pub fn iban(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| *c != ' ').collect();
    let upper = compact.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let lower = compact.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if compact.len() < 15 || !(upper || lower) {
        return false;
    }
    let compact = compact.to_ascii_uppercase();
    let (country, check) = (&compact[..2], &compact[2..4]);
    if iban_length(country) != Some(compact.len()) || !check.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let rearranged = compact[4..].bytes().chain(compact[..4].bytes());
    let mut remainder: u32 = 0;
    for byte in rearranged {
        let value = if byte.is_ascii_digit() { u32::from(byte - b'0') } else { u32::from(byte - b'A') + 10 };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// A UK NHS number: ten digits with a modulus 11 check digit.
pub fn uk_nhs(text: &str) -> bool {
    let Some(digits) = digits(text) else { return false };
    if digits.len() != 10 || all_same(&digits) {
        return false;
    }
    let sum: u32 = digits[..9].iter().enumerate().map(|(i, &d)| u32::from(d) * (10 - i as u32)).sum();
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == u32::from(digits[9])
}

/// A US Social Security number, refusing the ranges never issued and the published samples.
pub fn us_ssn(text: &str) -> bool {
    let delimiters: Vec<char> = text.chars().filter(|c| !c.is_ascii_digit()).collect();
    if delimiters.windows(2).any(|pair| pair[0] != pair[1]) {
        return false;
    }
    let Some(digits) = digits(&text.replace('.', "-")) else { return false };
    if digits.len() != 9 || all_same(&digits) {
        return false;
    }
    let number = |range: std::ops::Range<usize>| digits[range].iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d));
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    let samples = [123_456_789u32, 987_654_320, 78_051_120];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !samples.contains(&number(0..9))
}

/// A UK National Insurance number (HMRC's format rules; the prefixes never issued refused).
pub fn uk_nino(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| *c != ' ').collect::<String>().to_ascii_uppercase();
    let bytes = compact.as_bytes();
    if bytes.len() != 9 {
        return false;
    }
    let (first, second) = (bytes[0], bytes[1]);
    let letters_ok = first.is_ascii_uppercase()
        && second.is_ascii_uppercase()
        && !b"DFIQUV".contains(&first)
        && !b"DFIOQUV".contains(&second);
    let Some(prefix) = compact.get(..2) else { return false };
    letters_ok
        && !["BG", "GB", "NK", "KN", "TN", "NT", "ZZ"].contains(&prefix)
        && bytes[2..8].iter().all(u8::is_ascii_digit)
        && (b'A'..=b'D').contains(&bytes[8])
}

/// An IMEI: 15 digits with a Luhn check digit.
pub fn imei(text: &str) -> bool {
    let Some(digits) = digits(text) else { return false };
    digits.len() == 15 && !all_same(&digits) && luhn(&digits)
}

/// An IPv4 address in dotted decimal without leading zeros.
pub fn ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| !part.is_empty() && (part.len() == 1 || !part.starts_with('0')))
        && text.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_unspecified())
}

pub fn ipv6(text: &str) -> bool {
    text.contains(':') && text.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| !ip.is_unspecified())
}

/// A MAC address (six hex pairs), not all-zero and not broadcast.
pub fn mac(text: &str) -> bool {
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase();
    hex.len() == 12 && hex != "000000000000" && hex != "ffffffffffff"
}

const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A Bitcoin address: Base58Check (`1…`, `3…`) or Bech32/Bech32m (`bc1…`).
pub fn crypto_wallet(text: &str) -> bool {
    if text.len() > 3 && text.get(..3).is_some_and(|head| head.eq_ignore_ascii_case("bc1")) {
        return bech32(text);
    }
    base58check(text)
}

fn base58check(text: &str) -> bool {
    if !(25..=35).contains(&text.len()) {
        return false;
    }
    // Big-number base conversion into 25 bytes.
    let mut bytes = [0u8; 25];
    for character in text.bytes() {
        let Some(mut carry) = BASE58.iter().position(|&b| b == character).map(|v| v as u32) else {
            return false;
        };
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        if carry != 0 {
            return false;
        }
    }
    let leading_ones = text.bytes().take_while(|&b| b == b'1').count();
    let leading_zeros = bytes.iter().take_while(|&&b| b == 0).count();
    if leading_ones != leading_zeros && !(leading_ones == 0 && leading_zeros == 0) {
        return false;
    }
    if !matches!(bytes[0], 0x00 | 0x05) {
        return false;
    }
    let checksum = Sha256::digest(Sha256::digest(&bytes[..21]));
    checksum[..4] == bytes[21..]
}

fn bech32(text: &str) -> bool {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if text.len() > 90 || (text.bytes().any(|b| b.is_ascii_lowercase()) && text.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    let Some((hrp, data)) = lower.rsplit_once('1') else { return false };
    if hrp != "bc" || data.len() < 6 {
        return false;
    }
    let mut values: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|b| b & 31));
    for byte in data.bytes() {
        let Some(value) = CHARSET.iter().position(|&c| c == byte) else { return false };
        values.push(value as u8);
    }
    let mut checksum: u32 = 1;
    const GENERATOR: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
    for value in values {
        let top = checksum >> 25;
        checksum = ((checksum & 0x01ff_ffff) << 5) ^ u32::from(value);
        for (index, generator) in GENERATOR.iter().enumerate() {
            if (top >> index) & 1 == 1 {
                checksum ^= generator;
            }
        }
    }
    checksum == 1 || checksum == 0x2bc8_30a3
}

/// A latitude/longitude pair in decimal degrees with at least three decimals each.
pub fn coordinates(text: &str) -> bool {
    let Some((lat, lon)) = text.split_once(',') else { return false };
    let (Ok(lat), Ok(lon)) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>()) else { return false };
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) && !(lat == 0.0 && lon == 0.0)
}

/// A calendar date (Y-M-D, D/M/Y, M/D/Y or D.M.Y) that could be a birth date: 1900 to today.
pub fn plausible_birth_date(text: &str) -> bool {
    let parts: Vec<u32> = text.split(['-', '/', '.']).filter_map(|part| part.parse().ok()).collect();
    let [a, b, c] = parts[..] else { return false };
    let (year, first, second) = if a > 31 { (a, b, c) } else { (c, a, b) };
    let valid = |month: u32, day: u32| (1..=12).contains(&month) && (1..=31).contains(&day);
    (1900..=2026).contains(&year) && (valid(first, second) || valid(second, first))
}

/// A JWT: three base64url parts whose first decodes to a JSON header with `alg`.
pub fn jwt(text: &str) -> bool {
    let mut parts = text.split('.');
    let (Some(header), Some(_), Some(_)) = (parts.next(), parts.next(), parts.next()) else { return false };
    header.starts_with("eyJ") && header.len() >= 10
}

/// One of our own keys, checksum verified.
pub fn ptcl_key(text: &str) -> bool {
    apikey::parse(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_cards() {
        assert!(payment_card("4111 1111 1111 1111"));
        assert!(payment_card("5500-0000-0000-0004"));
        assert!(payment_card("378282246310005"));
        assert!(!payment_card("4111 1111 1111 1112"), "Luhn fails");
        assert!(!payment_card("1234567812345670"), "passes Luhn, no issuer starts with 1");
        assert!(!payment_card("0000000000000000"));
    }

    #[test]
    fn maestro_legacy_jcb_and_two_series_mastercard_are_not_missed() {
        assert!(payment_card("587428561654"), "Maestro 58, 12 digits");
        assert!(payment_card("6759649826438453"), "Maestro 67");
        assert!(payment_card("180016070420458"), "JCB 1800, 15 digits");
        assert!(payment_card("213176828496175"), "JCB 2131, 15 digits");
        assert!(payment_card("2297051310616322"), "Mastercard 2-series");
        assert!(payment_card("2720994326581252"), "Mastercard 2-series, last range");
        assert!(!payment_card("2131768284961752"), "JCB 2131 is 15 digits (this passes Luhn)");
        assert!(!payment_card("180016070420451"), "Luhn still applies");
    }

    #[test]
    fn ibans() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("DE89370400440532013001"), "mod 97 fails");
        assert!(!iban("GB82WEST123456987654"), "wrong length for GB");
        assert!(!iban("Gb82West12345698765432"), "mixed case");
    }

    #[test]
    fn a_lower_case_iban_is_not_missed() {
        assert!(iban("gb42nawi04454264788619"));
        assert!(iban("gb82 west 1234 5698 7654 32"));
        assert!(!iban("gb82west12345698765433"), "mod 97 still applies");
    }

    #[test]
    fn national_numbers() {
        assert!(uk_nhs("943 476 5919"));
        assert!(!uk_nhs("943 476 5918"));
        assert!(us_ssn("536-90-4399"));
        assert!(!us_ssn("666-90-4399") && !us_ssn("536-00-4399") && !us_ssn("900-12-3456"));
        assert!(!us_ssn("123-45-6789".replace("123-45-6789", "123456789").as_str()), "a published sample");
        assert!(!us_ssn("536-90.4399"), "mixed delimiters");
        assert!(uk_nino("AB 12 34 56 C"));
        assert!(!uk_nino("GB123456A") && !uk_nino("DA123456A") && !uk_nino("AB123456E"));
        assert!(imei("490154203237518"));
        assert!(!imei("490154203237519"));
    }

    #[test]
    fn network_identifiers() {
        assert!(ipv4("192.168.1.20"));
        assert!(!ipv4("192.168.01.20") && !ipv4("256.1.1.1") && !ipv4("0.0.0.0"));
        assert!(ipv6("2001:db8::8a2e:370:7334"));
        assert!(!ipv6("::") && !ipv6("12:30"));
        assert!(mac("00:1A:2B:3C:4D:5E"));
        assert!(!mac("ff:ff:ff:ff:ff:ff"));
    }

    #[test]
    fn wallets() {
        assert!(crypto_wallet("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"));
        assert!(crypto_wallet("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"));
        assert!(crypto_wallet("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"));
        assert!(!crypto_wallet("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"), "checksum");
        assert!(!crypto_wallet("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdr"), "bech32 checksum");
    }

    #[test]
    fn non_ascii_input_is_refused_not_a_panic() {
        assert!(!crypto_wallet("x€"));
        assert!(!uk_nino("Aé123456"));
        assert!(!iban("GB82 WEST 1234 5698 7654 3€"));
    }

    #[test]
    fn dates_and_coordinates() {
        assert!(plausible_birth_date("1984-07-23") && plausible_birth_date("23/07/1984"));
        assert!(!plausible_birth_date("2087-01-01") && !plausible_birth_date("1984-13-40"));
        assert!(coordinates("51.50735, -0.12776"));
        assert!(!coordinates("91.0000, 10.0000"));
    }
}
