//! Who a client certificate names, compared structurally.
//!
//! A listed mutual-TLS client is recognised by its whole subject (the sequence of relative
//! distinguished names, each a set of attribute type and value) or by one subject alternative
//! name of a given type. Both sides are parsed into the same typed values and compared exactly:
//! never as rendered strings, where a common name `a,O=b` and the two attributes `CN=a`, `O=b`
//! print alike, and where trimming would make `a ` and `a` one name.
//!
//! Configured subjects use RFC 4514 string syntax (`\,` `\+` `\\` `\"` `\ ` and `\XX` escapes),
//! written in the order the certificate holds its RDNs (as `openssl x509 -noout -subject`
//! prints them). Forms that RFC 4514 leaves open to two readings are refused when the config
//! loads: unescaped quotes, `;` `<` `>`, unescaped blanks at either end of a value, empty values,
//! and `#` hex values.

use std::{fmt, net::IpAddr};

/// An attribute type, by its dotted object identifier (`2.5.4.3` for CN).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttributeType(String);

/// Short names accepted in configured subjects, and the OIDs they stand for.
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

impl AttributeType {
    fn parse(text: &str) -> Result<AttributeType, String> {
        if let Some((_, oid)) = ATTRIBUTE_NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
            return Ok(AttributeType((*oid).to_owned()));
        }
        let numeric = !text.is_empty()
            && text.split('.').count() >= 2
            && text.split('.').all(|arc| {
                !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()) && (arc == "0" || !arc.starts_with('0'))
            });
        if numeric {
            return Ok(AttributeType(text.to_owned()));
        }
        Err(format!(
            "unknown attribute type '{text}': use CN, O, OU, C, L, ST, STREET, DC, UID, SERIALNUMBER, \
             emailAddress, or a dotted OID"
        ))
    }

    fn name(&self) -> &str {
        ATTRIBUTE_NAMES.iter().find(|(_, oid)| *oid == self.0).map_or(self.0.as_str(), |(name, _)| name)
    }
}

/// One attribute of a name: its type and its exact value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attribute {
    pub kind: AttributeType,
    /// The decoded string. Values in string types we cannot decode are `None` and match nothing.
    pub value: Option<String>,
}

/// A distinguished name: RDNs in certificate order, each a set of attributes (kept sorted so
/// that the order inside a multi-valued RDN does not matter, as in DER's SET OF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<Vec<Attribute>>);

impl DistinguishedName {
    /// Parses a configured subject (RFC 4514 syntax, certificate order). Blanks around `,`,
    /// `+` and `=` are separators; blanks inside a value are kept, and a blank at either end of
    /// a value must be escaped (`\ `).
    pub fn parse(text: &str) -> Result<DistinguishedName, String> {
        let mut rdns: Vec<Vec<Attribute>> = Vec::new();
        let mut rdn: Vec<Attribute> = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            // Attribute type up to '='.
            let mut kind = String::new();
            let mut equals = false;
            for c in chars.by_ref() {
                if c == '=' {
                    equals = true;
                    break;
                }
                kind.push(c);
            }
            if !equals {
                return Err(format!("'{}' is not TYPE=value", kind.trim().escape_debug()));
            }
            let kind = AttributeType::parse(kind.trim())?;
            // Leading blanks before a value are separators.
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            if chars.peek() == Some(&'#') {
                return Err(format!(
                    "{}: hex-encoded (#) values are not supported; match such a certificate by a SAN",
                    kind.name()
                ));
            }
            let mut value = String::new();
            // The length of `value` up to its last escaped character: blanks after it are trailing.
            let mut kept = 0;
            let mut end = None;
            while let Some(c) = chars.next() {
                match c {
                    ',' | '+' => {
                        end = Some(c);
                        break;
                    }
                    '\\' => {
                        let escaped = unescape(&mut chars).map_err(|e| format!("{}: {e}", kind.name()))?;
                        value.push_str(&escaped);
                        kept = value.len();
                    }
                    '"' | ';' | '<' | '>' => {
                        return Err(format!(
                            "{}: '{c}' must be escaped as '\\{c}' (RFC 4514); quoted values and ';' separators \
                             are ambiguous",
                            kind.name()
                        ));
                    }
                    c if c.is_control() => {
                        return Err(format!("{}: control characters must be escaped as \\XX", kind.name()));
                    }
                    c => {
                        value.push(c);
                        if c != ' ' {
                            kept = value.len();
                        }
                    }
                }
            }
            if value.len() > kept {
                // Is the blank part of the name or layout? RFC 4514 says a trailing blank must
                // be escaped; a certificate whose name ends in one must not match a name without.
                return Err(format!(
                    "{}: the value ends with a blank; write '\\ ' if it is part of the name, or remove it",
                    kind.name()
                ));
            }
            if value.is_empty() {
                return Err(format!("{}: empty value", kind.name()));
            }
            rdn.push(Attribute { kind, value: Some(value) });
            match end {
                Some('+') => {}
                Some(_) => {
                    rdns.push(finish(std::mem::take(&mut rdn))?);
                    while chars.peek() == Some(&' ') {
                        chars.next();
                    }
                }
                None => {
                    rdns.push(finish(rdn)?);
                    break;
                }
            }
        }
        Ok(DistinguishedName(rdns))
    }

    /// The subject of a certificate, as its DER holds it.
    pub fn from_x509(name: &x509_parser::x509::X509Name<'_>) -> DistinguishedName {
        let rdns = name
            .iter()
            .map(|rdn| {
                let mut attributes: Vec<Attribute> = rdn
                    .iter()
                    .map(|attribute| Attribute {
                        kind: AttributeType(attribute.attr_type().to_id_string()),
                        value: decode_value(attribute),
                    })
                    .collect();
                attributes.sort();
                attributes
            })
            .collect();
        DistinguishedName(rdns)
    }
}

fn finish(mut rdn: Vec<Attribute>) -> Result<Vec<Attribute>, String> {
    rdn.sort();
    if rdn.windows(2).any(|pair| pair[0].kind == pair[1].kind) {
        return Err("an RDN names one attribute type twice".into());
    }
    Ok(rdn)
}

/// The character(s) after a `\`: one special character, a blank, or UTF-8 bytes as hex pairs.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let first = chars.next().ok_or("a trailing '\\' escapes nothing")?;
    if "\"+,;<>\\ #=".contains(first) {
        return Ok(first.to_string());
    }
    let mut bytes = Vec::new();
    let mut high = Some(first);
    loop {
        let (Some(h), Some(l)) = (high.and_then(|c| c.to_digit(16)), chars.next().and_then(|c| c.to_digit(16))) else {
            return Err("'\\' must be followed by one of \" + , ; < > \\ # = blank, or two hex digits".into());
        };
        bytes.push(u8::try_from(h * 16 + l).map_err(|_| "bad hex escape")?);
        // Several `\XX` in a row make one UTF-8 sequence.
        match std::str::from_utf8(&bytes) {
            Ok(text) => return Ok(text.to_owned()),
            Err(error) if error.error_len().is_none() && bytes.len() < 4 => {
                if chars.next() != Some('\\') {
                    return Err("an incomplete UTF-8 sequence in \\XX escapes".into());
                }
                high = chars.next();
            }
            Err(_) => return Err("\\XX escapes that are not UTF-8".into()),
        }
    }
}

/// A directory string's text: UTF8String, PrintableString, IA5String, NumericString,
/// BMPString (UTF-16) and UniversalString (UTF-32). Other types (TeletexString, whose
/// character set is ambiguous) decode to nothing and so match nothing.
fn decode_value(attribute: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let value = attribute.attr_value();
    let data = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
                .collect()
        }
        _ => None,
    }
}

impl fmt::Display for DistinguishedName {
    /// RFC 4514 escaping in certificate order, for logs and messages (never for matching).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, rdn) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            for (position, attribute) in rdn.iter().enumerate() {
                if position > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", attribute.kind.name())?;
                let Some(value) = &attribute.value else {
                    f.write_str("#?")?;
                    continue;
                };
                let last = value.chars().count().saturating_sub(1);
                for (i, c) in value.chars().enumerate() {
                    let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
                    if edge || "\"+,;<>\\".contains(c) {
                        write!(f, "\\{c}")?;
                    } else if c.is_control() {
                        for byte in c.to_string().bytes() {
                            write!(f, "\\{byte:02X}")?;
                        }
                    } else {
                        write!(f, "{c}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A subject alternative name, typed: a DNS name never matches a URI that reads alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanName {
    /// Compared without regard to ASCII case, as DNS names are; never as a wildcard.
    Dns(String),
    /// A URI, such as a SPIFFE id; compared exactly.
    Uri(String),
    /// An RFC 822 e-mail address; compared exactly.
    Email(String),
    Ip(IpAddr),
}

impl SanName {
    /// A configured SAN: `dns:`, `uri:`, `email:` or `ip:` followed by the name, or a bare
    /// name whose type is plain from its form (an address is an IP, a name with a scheme
    /// `x:` is a URI, one with `@` an e-mail address, anything else a DNS name).
    pub fn parse(text: &str) -> Result<SanName, String> {
        if text.is_empty() || text.len() > 1024 {
            return Err("a SAN must be 1 to 1024 characters".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("SAN '{}' holds a blank or control character", text.escape_debug()));
        }
        let typed = |prefix: &str| {
            text.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &text[prefix.len()..])
        };
        let san = if let Some(name) = typed("dns:") {
            SanName::Dns(name.to_ascii_lowercase())
        } else if let Some(name) = typed("uri:") {
            SanName::Uri(name.to_owned())
        } else if let Some(name) = typed("email:") {
            SanName::Email(name.to_owned())
        } else if let Some(name) = typed("ip:") {
            SanName::Ip(name.parse().map_err(|_| format!("'{name}' is not an IP address"))?)
        } else if let Ok(ip) = text.parse::<IpAddr>() {
            SanName::Ip(ip)
        } else if text.contains(':') {
            SanName::Uri(text.to_owned())
        } else if text.contains('@') {
            SanName::Email(text.to_owned())
        } else {
            SanName::Dns(text.to_ascii_lowercase())
        };
        match &san {
            SanName::Dns(name) if name.is_empty() || name.contains('*') => {
                Err(format!("'{text}': a DNS SAN must be a whole name (wildcards never identify one client)"))
            }
            SanName::Uri(name) | SanName::Email(name) if name.is_empty() => Err(format!("'{text}': empty name")),
            _ => Ok(san),
        }
    }

    /// The SANs of a certificate that can identify a client.
    pub fn from_general_name(name: &x509_parser::extensions::GeneralName<'_>) -> Option<SanName> {
        use x509_parser::extensions::GeneralName;
        match name {
            GeneralName::DNSName(text) => Some(SanName::Dns(text.to_ascii_lowercase())),
            GeneralName::URI(text) => Some(SanName::Uri((*text).to_owned())),
            GeneralName::RFC822Name(text) => Some(SanName::Email((*text).to_owned())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| SanName::Ip(IpAddr::from(b))),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| SanName::Ip(IpAddr::from(b))),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for SanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanName::Dns(name) => write!(f, "dns:{name}"),
            SanName::Uri(name) => write!(f, "uri:{name}"),
            SanName::Email(name) => write!(f, "email:{name}"),
            SanName::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: &str, value: &str) -> Attribute {
        Attribute { kind: AttributeType(kind.to_owned()), value: Some(value.to_owned()) }
    }

    fn check(text: &str, expected: Result<Vec<Vec<Attribute>>, &str>) {
        match (DistinguishedName::parse(text), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got.0, want, "{text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn configured_subjects_parse_by_rfc_4514() {
        check("CN=svc-a,O=Portcullis", Ok(vec![vec![attr("2.5.4.3", "svc-a")], vec![attr("2.5.4.10", "Portcullis")]]));
        check("cn = svc-a , o=Portcullis", Err("ends with a blank"));
        check("CN=svc-a, O=Portcullis", Ok(vec![vec![attr("2.5.4.3", "svc-a")], vec![attr("2.5.4.10", "Portcullis")]]));
        check(r"CN=demo-service\,O=Portcullis", Ok(vec![vec![attr("2.5.4.3", "demo-service,O=Portcullis")]]));
        check(r"CN=a\2Cb", Ok(vec![vec![attr("2.5.4.3", "a,b")]]));
        check(r"CN=caf\C3\A9", Ok(vec![vec![attr("2.5.4.3", "café")]]));
        check(r"CN=a\ ", Ok(vec![vec![attr("2.5.4.3", "a ")]]));
        check("CN=a b", Ok(vec![vec![attr("2.5.4.3", "a b")]]));
        check(
            "CN=a+UID=7,O=x",
            Ok(vec![vec![attr("0.9.2342.19200300.100.1.1", "7"), attr("2.5.4.3", "a")], vec![attr("2.5.4.10", "x")]]),
        );
        check("2.5.4.3=a", Ok(vec![vec![attr("2.5.4.3", "a")]]));
        check("CN=a ", Err("ends with a blank"));
        check("CN=\"a, O=b\"", Err("must be escaped"));
        check("CN=a;O=b", Err("must be escaped"));
        check("CN=#0403616263", Err("hex-encoded"));
        check("CN=", Err("empty value"));
        check("CN=a,", Err("is not TYPE=value"));
        check("CN", Err("is not TYPE=value"));
        check("XX=a", Err("unknown attribute type"));
        check("CN=a+CN=b", Err("twice"));
        check(r"CN=a\", Err("escapes nothing"));
        check(r"CN=a\zz", Err("hex digits"));
        check("CN=a\tb", Err("control"));
    }

    #[test]
    fn subjects_print_with_their_escapes() {
        let name = DistinguishedName::parse(r"CN=demo-service\,O=Portcullis,O=x").unwrap();
        assert_eq!(name.to_string(), r"CN=demo-service\,O=Portcullis,O=x");
        assert_eq!(DistinguishedName::parse(&name.to_string()).unwrap(), name);
    }

    #[test]
    fn configured_sans_are_typed() {
        assert_eq!(SanName::parse("spiffe://t/svc-b").unwrap(), SanName::Uri("spiffe://t/svc-b".into()));
        assert_eq!(SanName::parse("Svc.Example.com").unwrap(), SanName::Dns("svc.example.com".into()));
        assert_eq!(SanName::parse("dns:svc").unwrap(), SanName::Dns("svc".into()));
        assert_eq!(SanName::parse("a@example.com").unwrap(), SanName::Email("a@example.com".into()));
        assert_eq!(SanName::parse("10.0.0.1").unwrap(), SanName::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(SanName::parse("ip:::1").unwrap(), SanName::Ip("::1".parse().unwrap()));
        assert!(SanName::parse("*.example.com").is_err());
        assert!(SanName::parse("svc ").is_err());
        assert!(SanName::parse("").is_err());
        assert!(SanName::parse("ip:nope").is_err());
    }

    proptest::proptest! {
        /// Any text either fails with a message or parses to a name that prints back to itself.
        #[test]
        fn hostile_subjects_never_panic_and_parsed_ones_round_trip(text in "[CNOU=,+\\\\ \"#a-z0-9;<>\t\u{e9}]{0,40}") {
            if let Ok(name) = DistinguishedName::parse(&text) {
                proptest::prop_assert_eq!(DistinguishedName::parse(&name.to_string()), Ok(name));
            }
        }
    }
}
