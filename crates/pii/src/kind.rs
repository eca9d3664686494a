//! The kinds of personal data we find.

use serde::Serialize;

/// A kind of personal data (or of a secret found in data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    PaymentCard,
    Iban,
    IpAddress,
    MacAddress,
    UsSsn,
    UkNhs,
    UkNino,
    DateOfBirth,
    Postcode,
    CryptoWallet,
    Coordinates,
    Imei,
    Passport,
    Credential,
    PersonName,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Email,
        Kind::Phone,
        Kind::PaymentCard,
        Kind::Iban,
        Kind::IpAddress,
        Kind::MacAddress,
        Kind::UsSsn,
        Kind::UkNhs,
        Kind::UkNino,
        Kind::DateOfBirth,
        Kind::Postcode,
        Kind::CryptoWallet,
        Kind::Coordinates,
        Kind::Imei,
        Kind::Passport,
        Kind::Credential,
        Kind::PersonName,
    ];

    /// The stable name used in reports, policies and `--fail-on`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::PaymentCard => "payment_card",
            Kind::Iban => "iban",
            Kind::IpAddress => "ip_address",
            Kind::MacAddress => "mac_address",
            Kind::UsSsn => "us_ssn",
            Kind::UkNhs => "uk_nhs",
            Kind::UkNino => "uk_nino",
            Kind::DateOfBirth => "date_of_birth",
            Kind::Postcode => "postcode",
            Kind::CryptoWallet => "crypto_wallet",
            Kind::Coordinates => "coordinates",
            Kind::Imei => "imei",
            Kind::Passport => "passport",
            Kind::Credential => "credential",
            Kind::PersonName => "person_name",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
