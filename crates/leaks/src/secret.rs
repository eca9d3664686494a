//! A found secret: its `Debug` is redacted, and it is shown only through [`Secret::redacted`]
//! unless the user asks for the value (`--show-secrets`).

/// A secret as found in a file.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret {
    value: String,
    /// How many leading bytes are a public format prefix (`sk_live_`, `AKIA`), safe to show.
    prefix: usize,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

impl Secret {
    /// A secret that shows nothing of itself but its length.
    pub fn new(value: String) -> Secret {
        Secret { value, prefix: 0 }
    }

    /// A secret whose first `prefix` bytes are its vendor's public prefix: shown when redacted,
    /// as long as that leaves at least half of the secret hidden.
    pub fn with_prefix(value: String, prefix: usize) -> Secret {
        let prefix = if prefix * 2 <= value.len() && value.is_char_boundary(prefix) { prefix } else { 0 };
        Secret { value, prefix }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Enough to recognise the key and nothing to use: the vendor prefix (our own keys keep
    /// their non-secret key id too), then the length. `sk_live_…[32 chars]`.
    pub fn redacted(&self) -> String {
        let value = &self.value;
        let chars = value.chars().count();
        if let Ok(key) = apikey::parse(value) {
            let prefix_len = value.find(key.kid()).map_or(0, |at| at + key.kid().len());
            return format!("{}…[{chars} chars]", &value[..prefix_len]);
        }
        format!("{}…[{chars} chars]", &value[..self.prefix])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_prefixes_and_hides_the_rest() {
        let stripe = Secret::with_prefix("sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(), 8);
        assert_eq!(stripe.redacted(), "sk_live_…[32 chars]");
        // A prefix that would show half the secret or more is not shown.
        assert_eq!(Secret::with_prefix("sk_live_abc".into(), 8).redacted(), "…[11 chars]");
        // Without a declared prefix, separators inside the value show nothing.
        assert_eq!(Secret::new("Tr0ub4dor$xK9pLm2qRt".into()).redacted(), "…[20 chars]");
        let ours = Secret::new("ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4W".into());
        assert_eq!(ours.redacted(), "ptcl_sk_0000TEST…[54 chars]");
        let short = Secret::new("hunter2-hunter3".into());
        assert_eq!(short.redacted(), "…[15 chars]");
        let bare = Secret::new("q8Zt1Lmw9Pxv0RsT7uYb2Nc4".into());
        assert_eq!(bare.redacted(), "…[24 chars]");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::with_prefix("sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(), 8);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("4eC39HqLyjWDarjt"), "{shown}");
    }
}
