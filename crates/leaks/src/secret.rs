//! A found secret: its `Debug` is redacted, and it is shown only through [`Secret::redacted`]
//! unless the user asks for the value (`--show-secrets`).

/// A secret as found in a file.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

/// A vendor prefix (`sk_live_`, `ghp_`, `AKIA`) is kept when it ends within this many chars.
const MAX_PREFIX: usize = 12;

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Enough to recognise the key and nothing to use: the vendor prefix (our own keys keep
    /// their non-secret key id too), then the length. `sk_live_…[32 chars]`.
    pub fn redacted(&self) -> String {
        let value = &self.0;
        let chars = value.chars().count();
        if let Ok(key) = apikey::parse(value) {
            let prefix_len = value.find(key.kid()).map_or(0, |at| at + key.kid().len());
            return format!("{}…[{chars} chars]", &value[..prefix_len]);
        }
        if value.starts_with("-----BEGIN") {
            let first = value.split(['\n', '\\']).next().unwrap_or_default();
            return format!("{first}…[{chars} chars]");
        }
        // Only a secret long enough to keep most of itself hidden shows its prefix.
        let prefix_end = if chars >= 20 {
            value
                .char_indices()
                .take(MAX_PREFIX)
                .filter(|(_, c)| matches!(c, '_' | '-' | '.' | '$'))
                .map(|(at, c)| at + c.len_utf8())
                .last()
                .unwrap_or(0)
        } else {
            0
        };
        format!("{}…[{chars} chars]", &value[..prefix_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_prefixes_and_hides_the_rest() {
        let stripe = Secret::new("sk_live_4eC39HqLyjWDarjtT1zdp7dc".into());
        assert_eq!(stripe.redacted(), "sk_live_…[32 chars]");
        let ours = Secret::new("ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4W".into());
        assert_eq!(ours.redacted(), "ptcl_sk_0000TEST…[54 chars]");
        let short = Secret::new("hunter2-hunter3".into());
        assert_eq!(short.redacted(), "…[15 chars]");
        let bare = Secret::new("q8Zt1Lmw9Pxv0RsT7uYb2Nc4".into());
        assert_eq!(bare.redacted(), "…[24 chars]");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("sk_live_4eC39HqLyjWDarjtT1zdp7dc".into());
        let shown = format!("{secret:?}");
        assert!(!shown.contains("4eC39HqLyjWDarjt"), "{shown}");
    }
}
