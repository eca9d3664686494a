//! Masked examples for reports: enough to recognise the kind, never enough to recover a value
//! (`j***@e***.com`, `4*** **** **** **11`).

use crate::Kind;

/// Masks a found value for display. A credential shows nothing of itself but its length: any
/// character of a password or key is a character an attacker need not guess.
pub fn example(kind: Kind, value: &str) -> String {
    if kind == Kind::Credential {
        return format!("[{} chars]", value.chars().count());
    }
    if kind == Kind::Email
        && let Some((local, domain)) = value.rsplit_once('@')
    {
        let suffix = psl::suffix(domain.to_ascii_lowercase().as_bytes())
            .and_then(|suffix| std::str::from_utf8(suffix.as_bytes()).ok().map(str::to_owned))
            .unwrap_or_default();
        let first = |text: &str| text.chars().next().map(String::from).unwrap_or_default();
        return format!("{}***@{}***.{suffix}", first(local), first(domain));
    }
    keep_ends(value, 1, 2)
}

/// Keeps the first `head` and last `tail` alphanumerics; others become `*`, separators stay.
pub fn keep_ends(value: &str, head: usize, tail: usize) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    if total <= head + tail + 2 {
        return value.chars().map(|c| if c.is_alphanumeric() { '*' } else { c }).collect();
    }
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen <= head || seen > total - tail { c } else { '*' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_masked() {
        assert_eq!(example(Kind::Email, "jane.doe@example.com"), "j***@e***.com");
        assert_eq!(example(Kind::Email, "a@b.co.uk"), "a***@b***.co.uk");
        assert_eq!(example(Kind::PaymentCard, "4111 1111 1111 1111"), "4*** **** **** **11");
        assert_eq!(example(Kind::UsSsn, "536-90-4399"), "5**-**-**99");
        assert_eq!(example(Kind::Postcode, "94105"), "*****");
    }

    #[test]
    fn credential_examples_show_no_character_of_the_secret() {
        assert_eq!(example(Kind::Credential, "eiZookooB7"), "[10 chars]");
        assert_eq!(example(Kind::Credential, "ghp_0123456789abcdefghijABCDEFGHIJ012345"), "[40 chars]");
    }
}
