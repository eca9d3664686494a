//! The detection rules, as data. Each rule has a stable id, the kind it finds, a pattern for
//! candidates in text, a validator, a base confidence, context words that raise it (or that a
//! weak rule needs), words that veto it, and examples that must and must not be found; `cargo
//! test` checks every example against the whole detector.

use crate::{Kind, validate};

/// Finds a rule's candidates in a text: byte spans (start, end) and confidences.
pub type Finder = fn(&str) -> Vec<(usize, usize, f32)>;

#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    pub kind: Kind,
    /// Candidates in free text (the `regex` crate's syntax; no backtracking, linear time).
    pub pattern: &'static str,
    pub validate: fn(&str) -> bool,
    /// For a rule whose candidates need more than a pattern (names: runs of words weighed
    /// together with their neighbours), finds them in a text: byte spans and confidences. The
    /// pattern then only tells whether to call it.
    pub find: Option<Finder>,
    /// Confidence of a validated candidate without context.
    pub base: f32,
    /// Reported only with a context word before it, or in a column whose header names the kind.
    pub needs_context: bool,
    /// Its validator checks a whole value's shape, so a value of a column classified as this
    /// kind needs no pattern: one validator call.
    pub whole_value: bool,
    /// Words (lower case) within the few words before a candidate that raise confidence.
    pub context: &'static [&'static str],
    /// Words before a candidate that mean it is something else (an order number, a version).
    pub veto: &'static [&'static str],
    /// Texts in which the detector must find this rule's kind.
    pub examples: &'static [&'static str],
    /// Texts in which the detector must find nothing of this kind.
    pub counterexamples: &'static [&'static str],
}

fn always(_: &str) -> bool {
    true
}

fn email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else { return false };
    let local_ok = |b: u8| b.is_ascii_alphanumeric() || b".%+'_-".contains(&b);
    let domain_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(local_ok)
        && domain.bytes().all(domain_ok)
        && !domain.split('.').any(str::is_empty)
        && domain.contains('.')
        && !domain.starts_with('.')
        && psl::suffix(domain.to_ascii_lowercase().as_bytes()).is_some_and(|suffix| suffix.is_known())
}

/// The regions whose national formats we recognise.
pub const PHONE_REGIONS: [phonenumber::country::Id; 6] = {
    use phonenumber::country::Id;
    [Id::US, Id::GB, Id::DE, Id::FR, Id::IN, Id::BR]
};

fn phone(text: &str) -> bool {
    crate::date::read(text).is_none() && crate::phone::valid(text)
}

fn phone_shaped(text: &str) -> bool {
    crate::date::read(text).is_none() && crate::phone::shaped(text)
}

fn credential(text: &str) -> bool {
    if text.starts_with("ptcl_") {
        return validate::ptcl_key(text);
    }
    if text.starts_with("eyJ") {
        return validate::jwt(text);
    }
    true
}

fn uk_postcode(text: &str) -> bool {
    text.len() >= 5
}

pub static RULES: &[Rule] = &[
    Rule {
        id: "email",
        kind: Kind::Email,
        pattern: r"(?i)\b[a-z0-9][a-z0-9._%+'-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\b",
        validate: email,
        find: None,
        base: 0.9,
        needs_context: false,
        whole_value: true,
        context: &["email", "e-mail", "mail", "contact"],
        veto: &[],
        examples: &["write to jane.doe@example.co.uk today", "J.Smith+news@mail.example.org"],
        counterexamples: &["user@localhost", "see file@2x.png", "version 1.2@build"],
    },
    Rule {
        id: "phone_international",
        kind: Kind::Phone,
        pattern: r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}[0-9](?:\s?(?:x|ext\.?)\s?[0-9]{1,6}\b)?",
        validate: phone,
        find: None,
        base: 0.85,
        needs_context: false,
        whole_value: true,
        context: &["phone", "tel", "telephone", "mobile", "cell", "call", "fax", "whatsapp"],
        veto: &[],
        examples: &[
            "call +44 20 7946 0958",
            "+1 (202) 555-0143",
            "+49 30 901820",
            "+33 1 42 68 53 00",
            "+91 98765 43210",
            "+55 11 91234-5678",
            "desk +1-903-240-4508x769",
            "+46 (0)157 548 89",
        ],
        counterexamples: &["+1 000 000", "total +12.5%"],
    },
    Rule {
        id: "phone_national",
        kind: Kind::Phone,
        pattern: r"(?:\(0?[0-9]{2,4}\) ?[0-9]{2,6}|\b0?[0-9]{2,5})(?:[ .-][0-9]{2,6}){1,4}(?:\s?(?:x|ext\.?)\s?[0-9]{1,6})?\b",
        validate: phone,
        find: None,
        base: 0.6,
        needs_context: false,
        whole_value: true,
        context: &["phone", "tel", "telephone", "mobile", "cell", "call", "fax"],
        veto: &["order", "invoice", "ref", "sku", "version", "v"],
        examples: &[
            "(202) 555-0143",
            "office (202)555-0143",
            "020 7946 0958",
            "030 901820 11",
            "01 42 68 53 00",
            "phone 98765 43210",
            "345-899-3560x4587",
            "259.735.7502x459",
            "fax 001-518-640-0854",
        ],
        counterexamples: &[
            "order 202 555 0143",
            "2023-01-15",
            "12 34",
            "created 2025-11-03 17:36:00",
            "The restaurant is at 17151 2450 Crown St",
            "my driver's license number is 2270-66-1551",
            "ZIP 20515-0104",
            "CPF 308.271.618-08",
            "a mean of 211.3375",
            "Quinta de São Tiago 3610-114",
        ],
    },
    Rule {
        id: "phone_in_context",
        kind: Kind::Phone,
        // Digits grouped as a phone number is written, with a phone word before it: numbers of
        // regions whose plans are not embedded, and numbers no plan knows, are still phones.
        pattern: r"[+(]?[0-9][0-9 ().-]{5,22}[0-9](?:\s?(?:x|ext\.?)\s?[0-9]{1,6}\b)?",
        validate: phone_shaped,
        find: None,
        base: 0.5,
        needs_context: true,
        whole_value: true,
        context: &[
            "phone",
            "tel",
            "telephone",
            "mobile",
            "cell",
            "call",
            "fax",
            "whatsapp",
            "desk",
            "office",
            "landline",
            "sms",
        ],
        veto: &["order", "invoice", "ref", "sku", "version", "v"],
        examples: &["Phone: 451 5986", "Fax: 9498777106", "Mobile: 0341 8387176", "call me on 9472 7916"],
        counterexamples: &["451 5986", "Phone: 12", "Phone: 2024-03-01", "call 1-2-3"],
    },
    Rule {
        id: "payment_card",
        kind: Kind::PaymentCard,
        pattern: r"\b[0-9]{4}[ -]?[0-9]{4,6}[ -]?[0-9]{4,5}(?:[ -]?[0-9]{1,4})?\b",
        validate: validate::payment_card,
        find: None,
        base: 0.9,
        needs_context: false,
        whole_value: true,
        context: &["card", "credit", "visa", "mastercard", "amex", "cc", "pan", "payment"],
        veto: &["order", "invoice", "tracking", "ref", "reference", "sku", "id"],
        examples: &[
            "card 4111 1111 1111 1111",
            "paid with 5500-0000-0000-0004",
            "378282246310005",
            "my card # 4556737586899855",
        ],
        counterexamples: &[
            "4111 1111 1111 1112",
            "order 4111111111111111",
            "order #4111111111111111",
            "1234 5678 1234 5670",
        ],
    },
    Rule {
        id: "iban",
        kind: Kind::Iban,
        pattern: r"(?i)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        validate: validate::iban,
        find: None,
        base: 0.95,
        needs_context: false,
        whole_value: true,
        context: &["iban", "bank", "account", "transfer"],
        veto: &[],
        examples: &[
            "IBAN GB82 WEST 1234 5698 7654 32",
            "to DE89370400440532013000 please",
            "my iban is gb42nawi04454264788619",
        ],
        counterexamples: &["DE89370400440532013001", "AB12 CDEF GHIJ KLMN"],
    },
    Rule {
        id: "ipv4",
        kind: Kind::IpAddress,
        pattern: r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
        validate: validate::ipv4,
        find: None,
        base: 0.75,
        needs_context: false,
        whole_value: true,
        context: &["ip", "ipv4", "address", "client", "host", "from"],
        veto: &["version", "v", "ver", "release", "build", "firmware", "oid"],
        examples: &["login from 192.168.1.20", "client 10.0.0.7 denied"],
        counterexamples: &["version 10.2.3.4", "v1.2.3.4", "1.2.3.4.5", "300.1.1.1"],
    },
    Rule {
        id: "ipv6",
        kind: Kind::IpAddress,
        pattern: r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?i)\b(?:[0-9a-f]{1,4}:){1,6}(?::[0-9a-f]{1,4}){1,6}\b",
        validate: validate::ipv6,
        find: None,
        base: 0.75,
        needs_context: false,
        whole_value: true,
        context: &["ip", "ipv6", "address", "client", "host"],
        veto: &["time", "at"],
        examples: &[
            "from 2001:db8::8a2e:370:7334",
            "fe80::1ff:fe23:4567:890a",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        ],
        counterexamples: &["at 12:30:45", "ratio 3:4"],
    },
    Rule {
        id: "mac_address",
        kind: Kind::MacAddress,
        pattern: r"(?i)\b[0-9a-f]{2}(?:([:-])[0-9a-f]{2}){5}\b",
        validate: validate::mac,
        find: None,
        base: 0.8,
        needs_context: false,
        whole_value: false,
        context: &["mac", "device", "hardware", "ethernet", "wifi"],
        veto: &[],
        examples: &["mac 00:1A:2B:3C:4D:5E", "device 3c-22-fb-7a-91-0c"],
        counterexamples: &["ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"],
    },
    Rule {
        id: "us_ssn",
        kind: Kind::UsSsn,
        pattern: r"\b[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}\b",
        validate: validate::us_ssn,
        find: None,
        base: 0.65,
        needs_context: false,
        whole_value: true,
        context: &["ssn", "social", "security", "taxpayer"],
        veto: &["phone", "tel", "order"],
        examples: &["SSN 536-90-4399", "social security no 536 90 4399"],
        counterexamples: &["666-90-4399", "536-00-4399", "123-45-6789 is a sample", "900-12-3456"],
    },
    Rule {
        id: "uk_nhs",
        kind: Kind::UkNhs,
        pattern: r"\b[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}\b",
        validate: validate::uk_nhs,
        find: None,
        base: 0.5,
        needs_context: true,
        whole_value: true,
        context: &["nhs", "health", "patient"],
        veto: &[],
        examples: &["NHS number 943 476 5919"],
        counterexamples: &["NHS number 943 476 5918", "943 476 5919"],
    },
    Rule {
        id: "uk_nino",
        kind: Kind::UkNino,
        pattern: r"(?i)\b[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b",
        validate: validate::uk_nino,
        find: None,
        base: 0.85,
        needs_context: false,
        whole_value: true,
        context: &["ni", "nino", "national", "insurance"],
        veto: &[],
        examples: &["NI number AB 12 34 56 C", "nino: JG103759A"],
        counterexamples: &["GB123456A", "QQ123456E"],
    },
    Rule {
        id: "date_of_birth",
        kind: Kind::DateOfBirth,
        pattern: r"\b(?:[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{4})\b",
        validate: validate::plausible_birth_date,
        find: None,
        base: 0.7,
        needs_context: true,
        whole_value: true,
        context: &["dob", "birth", "born", "birthday", "birthdate", "b."],
        veto: &[],
        examples: &["DOB 1984-07-23", "born on 23/07/1984"],
        counterexamples: &["shipped 2024-03-01", "created 1984-07-23 10:00:00"],
    },
    Rule {
        id: "us_zip",
        kind: Kind::Postcode,
        pattern: r"\b[0-9]{5}(?:-[0-9]{4})?\b",
        validate: always,
        find: None,
        base: 0.6,
        needs_context: true,
        whole_value: false,
        context: &["zip", "zipcode", "postal", "postcode"],
        veto: &[],
        examples: &["zip 94105", "ZIP: 10001-1234"],
        counterexamples: &["qty 94105", "94105"],
    },
    Rule {
        id: "uk_postcode",
        kind: Kind::Postcode,
        pattern: r"\b(?:[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2})\b",
        validate: uk_postcode,
        find: None,
        base: 0.6,
        needs_context: true,
        whole_value: false,
        context: &["postcode", "post", "postal", "address", "zip"],
        veto: &[],
        examples: &["postcode SW1A 1AA", "address: 10 Downing St, London SW1A 2AA"],
        counterexamples: &["SW1A 1AA", "model AB1 2CD"],
    },
    Rule {
        id: "crypto_wallet",
        kind: Kind::CryptoWallet,
        pattern: r"\b(?:bc1[ac-hj-np-z02-9]{11,71}|[13][a-km-zA-HJ-NP-Z1-9]{25,34})\b",
        validate: validate::crypto_wallet,
        find: None,
        base: 0.9,
        needs_context: false,
        whole_value: true,
        context: &["wallet", "btc", "bitcoin", "crypto", "address"],
        veto: &[],
        examples: &["send to 1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
        counterexamples: &["1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"],
    },
    Rule {
        id: "coordinates",
        kind: Kind::Coordinates,
        pattern: r"-?[0-9]{1,2}\.[0-9]{4,}\s*,\s*-?[0-9]{1,3}\.[0-9]{4,}",
        validate: validate::coordinates,
        find: None,
        base: 0.7,
        needs_context: false,
        whole_value: false,
        context: &["lat", "latitude", "location", "gps", "coordinates", "position"],
        veto: &[],
        examples: &["at 51.50735, -0.12776", "gps 40.7128,-74.0060"],
        counterexamples: &["91.0000, 10.0000", "1.500, 2.250"],
    },
    Rule {
        id: "imei",
        kind: Kind::Imei,
        pattern: r"\b[0-9]{2}[ -]?[0-9]{6}[ -]?[0-9]{6}[ -]?[0-9]\b",
        validate: validate::imei,
        find: None,
        base: 0.6,
        needs_context: true,
        whole_value: true,
        context: &["imei", "device", "handset", "phone"],
        veto: &[],
        examples: &["IMEI 490154203237518"],
        counterexamples: &["IMEI 490154203237519", "490154203237518"],
    },
    Rule {
        id: "passport",
        kind: Kind::Passport,
        pattern: r"\b[A-Z]{0,2}[0-9]{7,9}\b",
        validate: always,
        find: None,
        base: 0.6,
        needs_context: true,
        whole_value: false,
        context: &["passport"],
        veto: &[],
        examples: &["passport no. 533380006", "Passport: K12345678"],
        counterexamples: &["order 533380006"],
    },
    Rule {
        id: "credential",
        kind: Kind::Credential,
        pattern: r"\bptcl_(?:sk|ak|tk|pk)_[0-9A-Za-z]{46}\b|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bsk_live_[0-9A-Za-z]{24,99}\b|\bxox[baprs]-[0-9A-Za-z-]{10,72}\b|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
        validate: credential,
        find: None,
        base: 0.95,
        needs_context: false,
        whole_value: false,
        context: &["key", "token", "secret", "password", "api"],
        veto: &[],
        examples: &[
            "key ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4W",
            "AKIAIOSFODNN7EXAMPLE",
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ],
        counterexamples: &["ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4X", "AKIA123"],
    },
    Rule {
        id: "person_name",
        kind: Kind::PersonName,
        pattern: r"\p{Lu}\p{Ll}",
        validate: crate::names::is_name,
        find: Some(crate::names::find),
        base: 0.7,
        needs_context: false,
        whole_value: false,
        context: &["name", "mr", "mrs", "ms", "dr", "dear", "customer", "patient", "signed", "contact"],
        veto: &[],
        examples: &[
            "Dear Jane Smith, thank you",
            "spoke to Maria Garcia today",
            "Priya Patel",
            "Szabina J Gelencsér",
            "Mr. Slepička flew home",
            "change it to Faina D. Yefremova",
            "Kevin had given Alma his address",
        ],
        counterexamples: &[
            "New York City",
            "Monday Morning Meeting",
            "1200 Santa Monica Boulevard",
            "12 John Street",
            "Cook County",
            "Avenue Victor Hugo",
            "lives on Kimberly Way",
            "Rapid Cycle Solutions",
            "The quick brown fox",
        ],
    },
];

/// Rules by id (for tests and reports).
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}
