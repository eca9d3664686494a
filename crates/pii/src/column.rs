//! Column classification: what a column's header says it holds. Headers are normalised
//! (lower case, separators to `_`); names that are unambiguous count wherever they appear as a
//! word (`customer_email`), ambiguous ones (`name`, `lat`) only as the whole header.

use crate::Kind;

/// Normalises a header: lower case, runs of non-alphanumerics to one `_`, camelCase split.
pub fn normalise(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 4);
    let mut previous_lower = false;
    for c in header.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            previous_lower = false;
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Words that name a kind wherever they appear in a header.
const WORDS: &[(&str, Kind)] = &[
    ("email", Kind::Email),
    ("mail", Kind::Email),
    ("phone", Kind::Phone),
    ("telephone", Kind::Phone),
    ("mobile", Kind::Phone),
    ("msisdn", Kind::Phone),
    ("iban", Kind::Iban),
    ("ssn", Kind::UsSsn),
    ("nhs", Kind::UkNhs),
    ("nino", Kind::UkNino),
    ("dob", Kind::DateOfBirth),
    ("birthdate", Kind::DateOfBirth),
    ("birthday", Kind::DateOfBirth),
    ("zip", Kind::Postcode),
    ("zipcode", Kind::Postcode),
    ("postcode", Kind::Postcode),
    ("imei", Kind::Imei),
    ("passport", Kind::Passport),
    ("wallet", Kind::CryptoWallet),
    ("latitude", Kind::Coordinates),
    ("longitude", Kind::Coordinates),
    ("ip", Kind::IpAddress),
    ("ipv4", Kind::IpAddress),
    ("ipv6", Kind::IpAddress),
    ("mac", Kind::MacAddress),
    ("maiden", Kind::PersonName),
    ("surname", Kind::PersonName),
    ("forename", Kind::PersonName),
    ("firstname", Kind::PersonName),
    ("lastname", Kind::PersonName),
    ("fullname", Kind::PersonName),
    ("cvv", Kind::PaymentCard),
    ("cvv2", Kind::PaymentCard),
    ("cvc", Kind::PaymentCard),
    ("password", Kind::Credential),
    ("passwd", Kind::Credential),
    ("pwd", Kind::Credential),
    ("passphrase", Kind::Credential),
    ("secret", Kind::Credential),
    ("credential", Kind::Credential),
    ("credentials", Kind::Credential),
    ("apikey", Kind::Credential),
    ("dsn", Kind::Credential),
];

/// Whole headers (after normalising) that name a kind.
const HEADERS: &[(&str, Kind)] = &[
    ("name", Kind::PersonName),
    ("full_name", Kind::PersonName),
    ("first_name", Kind::PersonName),
    ("firstname", Kind::PersonName),
    ("last_name", Kind::PersonName),
    ("lastname", Kind::PersonName),
    ("surname", Kind::PersonName),
    ("given_name", Kind::PersonName),
    ("family_name", Kind::PersonName),
    ("middle_name", Kind::PersonName),
    ("customer_name", Kind::PersonName),
    ("contact_name", Kind::PersonName),
    ("patient_name", Kind::PersonName),
    ("tel", Kind::Phone),
    ("cell", Kind::Phone),
    ("fax", Kind::Phone),
    ("card", Kind::PaymentCard),
    ("card_number", Kind::PaymentCard),
    ("credit_card", Kind::PaymentCard),
    ("cc", Kind::PaymentCard),
    ("cc_number", Kind::PaymentCard),
    ("ccnumber", Kind::PaymentCard),
    ("cardnumber", Kind::PaymentCard),
    ("creditcard", Kind::PaymentCard),
    ("credit_card_number", Kind::PaymentCard),
    ("pan", Kind::PaymentCard),
    ("date_of_birth", Kind::DateOfBirth),
    ("birth_date", Kind::DateOfBirth),
    ("postal_code", Kind::Postcode),
    ("post_code", Kind::Postcode),
    ("lat", Kind::Coordinates),
    ("lon", Kind::Coordinates),
    ("lng", Kind::Coordinates),
    ("coordinates", Kind::Coordinates),
    ("ip_address", Kind::IpAddress),
    ("mac_address", Kind::MacAddress),
    ("social_security_number", Kind::UsSsn),
    ("ni_number", Kind::UkNino),
    ("national_insurance_number", Kind::UkNino),
    ("api_key", Kind::Credential),
    ("access_token", Kind::Credential),
    ("refresh_token", Kind::Credential),
    ("auth_token", Kind::Credential),
    ("session_token", Kind::Credential),
    ("bearer_token", Kind::Credential),
    ("id_token", Kind::Credential),
    ("token", Kind::Credential),
    ("private_key", Kind::Credential),
    ("secret_key", Kind::Credential),
    ("client_secret", Kind::Credential),
    ("connection_string", Kind::Credential),
    ("conn_str", Kind::Credential),
    ("database_url", Kind::Credential),
    ("db_url", Kind::Credential),
    ("pass", Kind::Credential),
];

/// Words that make a header about a property of the kind, not the kind itself
/// (`email_verified`, `phone_type`, `telephone_country_code`, `password_changed_at`).
const QUALIFIERS: &[&str] = &[
    "type",
    "kind",
    "format",
    "status",
    "verified",
    "valid",
    "validated",
    "count",
    "country",
    "provider",
    "domain",
    "changed",
    "updated",
    "created",
    "expires",
    "expiry",
    "length",
    "policy",
    "hint",
    "strength",
    "reset",
    "opt",
    "consent",
    "flag",
    "enabled",
    "required",
];

/// Whole headers that name a kind only when the values agree (`name` is a person's in a table
/// of customers, a city's in a table of cities).
const AMBIGUOUS: &[&str] = &["name"];

/// Header words that say a column holds something other than people's names: places,
/// categories, organisations (a city called `Hamilton` is not a person).
const NOT_PEOPLE: &[&str] = &[
    "city",
    "cities",
    "town",
    "village",
    "airport",
    "station",
    "port",
    "country",
    "countries",
    "nation",
    "nationality",
    "state",
    "province",
    "region",
    "district",
    "county",
    "municipality",
    "borough",
    "suburb",
    "neighbourhood",
    "neighborhood",
    "continent",
    "capital",
    "place",
    "location",
    "locality",
    "area",
    "zone",
    "street",
    "road",
    "address",
    "venue",
    "sex",
    "gender",
    "occupation",
    "job",
    "profession",
    "title",
    "role",
    "department",
    "company",
    "employer",
    "organisation",
    "organization",
    "org",
    "brand",
    "product",
    "team",
    "category",
    "class",
    "type",
    "status",
    "race",
    "ethnicity",
    "religion",
    "language",
    "education",
    "relationship",
    "marital",
    "workclass",
    "species",
    "breed",
    "genre",
];

/// Headers that, beside a bare `name`, say the table's rows are places or things, not people.
const THING_TABLE: &[&str] = &[
    "population",
    "country_code",
    "countrycode",
    "iso",
    "iso2",
    "iso3",
    "area",
    "elevation",
    "altitude",
    "continent",
    "capital",
    "district",
    "province",
    "region",
    "latitude",
    "longitude",
    "lat",
    "lon",
    "lng",
    "gdp",
    "iata",
    "icao",
    "price",
    "sku",
    "quantity",
    "qty",
    "category",
    "brand",
    "manufacturer",
];

/// Whether a column may hold people's names: not when its header names a place or a category
/// (`city`, `country_code`, `occupation`), nor when it is a bare `name` in a table whose other
/// headers describe places or things (`population`, `district`) and none a person.
pub fn may_hold_person_names(header: &str, headers: &[&str]) -> bool {
    let normal = normalise(header);
    if normal.split('_').any(|word| NOT_PEOPLE.contains(&word)) {
        return false;
    }
    if matches!(normal.as_str(), "name" | "names" | "title") {
        let others: Vec<String> =
            headers.iter().map(|other| normalise(other)).filter(|other| *other != normal).collect();
        let about_people = others.iter().any(|other| {
            kind_from_header(other).is_some_and(|kind| kind != Kind::Coordinates && kind != Kind::Postcode)
        });
        let about_things = others.iter().any(|other| {
            THING_TABLE.contains(&other.as_str()) || other.split('_').any(|word| NOT_PEOPLE.contains(&word))
        });
        return about_people || !about_things;
    }
    true
}

/// The kind a header names among the table's headers: a bare `name` in a table of places
/// names no kind.
pub fn kind_in_table(header: &str, headers: &[&str]) -> Option<Kind> {
    kind_from_header(header).filter(|kind| *kind != Kind::PersonName || may_hold_person_names(header, headers))
}

/// The kind a header names, if it names one.
pub fn kind_from_header(header: &str) -> Option<Kind> {
    let normal = normalise(header);
    if let Some((_, kind)) = HEADERS.iter().find(|(name, _)| *name == normal) {
        return Some(*kind);
    }
    let words: Vec<&str> = normal.split('_').collect();
    if words.iter().any(|word| QUALIFIERS.contains(word)) {
        return None;
    }
    // A JSON path or a prefixed header ending in a whole header of two words or more
    // (`user.first_name`, `billing_postal_code`); a lone `name` at the end is not enough.
    for take in (2..words.len()).rev() {
        let tail = words[words.len() - take..].join("_");
        if let Some((_, kind)) = HEADERS.iter().find(|(name, _)| *name == tail) {
            return Some(*kind);
        }
    }
    // The last word of a JSON path or header carries the meaning (`user.contact.email`).
    words.iter().rev().find_map(|word| WORDS.iter().find(|(name, _)| name == word).map(|(_, kind)| *kind))
}

/// Whether the header's kind needs the values' agreement before the column is taken as it.
pub fn header_is_ambiguous(header: &str) -> bool {
    AMBIGUOUS.contains(&normalise(header).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_kinds() {
        assert_eq!(kind_from_header("Customer E-mail"), Some(Kind::Email));
        assert_eq!(kind_from_header("customerEmail"), Some(Kind::Email));
        assert_eq!(kind_from_header("user.contact.phone"), Some(Kind::Phone));
        assert_eq!(kind_from_header("First Name"), Some(Kind::PersonName));
        assert_eq!(kind_from_header("ZIP"), Some(Kind::Postcode));
        assert_eq!(kind_from_header("product_name"), None, "a name, but not a person's");
        assert_eq!(kind_from_header("shipping"), None, "ip is a word, not a substring");
        assert_eq!(kind_from_header("order_id"), None);
    }

    #[test]
    fn headers_about_a_property_of_a_kind_are_not_the_kind() {
        assert_eq!(kind_from_header("TelephoneCountryCode"), None);
        assert_eq!(kind_from_header("email_verified"), None);
        assert_eq!(kind_from_header("phone_type"), None);
        assert_eq!(kind_from_header("password_changed_at"), None);
        assert_eq!(kind_from_header("zip_code"), Some(Kind::Postcode), "a code that is the kind");
        assert_eq!(kind_from_header("TelephoneNumber"), Some(Kind::Phone));
    }

    #[test]
    fn secrets_in_data_are_named_by_their_headers() {
        for header in [
            "Password",
            "passwd",
            "user_pwd",
            "client_secret",
            "API Key",
            "apiKey",
            "refresh_token",
            "private_key",
            "DATABASE_URL",
            "connection_string",
            "sentry_dsn",
            "credentials",
        ] {
            assert_eq!(kind_from_header(header), Some(Kind::Credential), "{header}");
        }
        assert_eq!(kind_from_header("MothersMaiden"), Some(Kind::PersonName));
        assert!(header_is_ambiguous("Name") && !header_is_ambiguous("last_name"));
        assert_eq!(kind_from_header("user.first_name"), Some(Kind::PersonName));
        assert_eq!(kind_from_header("patient.surname"), Some(Kind::PersonName));
        assert_eq!(kind_from_header("billing.postal_code"), Some(Kind::Postcode));
        assert_eq!(kind_from_header("product.name"), None);
    }

    #[test]
    fn a_city_column_is_not_a_person_name_column() {
        let cities = ["id", "name", "country_code", "district", "population"];
        for header in ["name", "district", "country_code"] {
            assert!(!may_hold_person_names(header, &cities), "{header}");
        }
        assert_eq!(kind_in_table("name", &cities), None);
        for header in ["city", "Airport", "home_country", "sex", "occupation", "native-country"] {
            assert!(!may_hold_person_names(header, &[header]), "{header}");
        }
        let people = ["id", "name", "email", "city"];
        assert!(may_hold_person_names("name", &people));
        assert_eq!(kind_in_table("name", &people), Some(Kind::PersonName));
        assert!(may_hold_person_names("name", &["name"]));
        assert!(may_hold_person_names("notes", &cities));
    }
}
