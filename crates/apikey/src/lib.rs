//! The self-identifying Portcullis key format.
//!
//! A key reads `ptcl_<type>_<kid:8><secret:32><crc:6>`: a two-letter type, eight base62 characters
//! of public lookup id (the *kid*), thirty-two base62 characters of secret, and a CRC-32/IEEE of
//! everything before it, written big-endian in base62 and zero-padded to six characters. Fifty-four
//! characters in all, matched by [`PATTERN`].
//!
//! The checksum lets a server reject a mistyped or forged-looking key before touching its store,
//! and lets a leak scanner tell a real key from random text with certainty. It is not a secret and
//! proves nothing about authenticity: that is the server's job, with the hash it stores.
//!
//! Nothing here allocates a secret it does not own: [`SecretKey`] zeroes its buffer on drop and
//! never prints its secret through `Debug`.

use std::fmt;
use zeroize::Zeroize;

/// The base62 alphabet, in the order the format fixes.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of a whole key, prefix included.
pub const KEY_LEN: usize = 54;
/// Length of the public key id.
pub const KID_LEN: usize = 8;
/// Length of the secret part.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum.
pub const CRC_LEN: usize = 6;
/// A regular expression that finds keys in text (confirm each match with [`parse`]).
pub const PATTERN: &str = r"\bptcl_(?:sk|ak|tk)_[0-9A-Za-z]{46}\b";

const PREFIX_LEN: usize = 8; // "ptcl_sk_"

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `sk`: a secret key for calling models.
    Secret,
    /// `ak`: an admin key for the admin listener.
    Admin,
    /// `tk`: the id of a short-lived token minted by the broker.
    Token,
}

impl KeyKind {
    /// The two letters of the prefix.
    pub fn code(self) -> &'static str {
        match self {
            KeyKind::Secret => "sk",
            KeyKind::Admin => "ak",
            KeyKind::Token => "tk",
        }
    }

    fn from_code(code: &[u8]) -> Option<KeyKind> {
        match code {
            b"sk" => Some(KeyKind::Secret),
            b"ak" => Some(KeyKind::Admin),
            b"tk" => Some(KeyKind::Token),
            _ => None,
        }
    }
}

/// Why a string is not a well-formed key. Says nothing of the key's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not 54 characters.
    Length,
    /// Does not start with `ptcl_sk_`, `ptcl_ak_` or `ptcl_tk_`.
    Prefix,
    /// A character outside `0-9A-Za-z` after the prefix.
    Alphabet,
    /// The checksum does not match.
    Checksum,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Length => "a key is 54 characters long",
            ParseError::Prefix => "a key starts with ptcl_sk_, ptcl_ak_ or ptcl_tk_",
            ParseError::Alphabet => "a key holds only the characters 0-9, A-Z and a-z after its prefix",
            ParseError::Checksum => "the key's checksum does not match",
        })
    }
}

impl std::error::Error for ParseError {}

/// Why a key could not be generated.
#[derive(Debug)]
pub struct GenerateError(getrandom::Error);

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the operating system's random number generator failed: {}", self.0)
    }
}

impl std::error::Error for GenerateError {}

/// A well-formed key, borrowed from the text it was parsed from.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    kind: KeyKind,
    whole: &'a str,
}

impl<'a> ParsedKey<'a> {
    /// What the key is for.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public lookup id: safe to log and store.
    pub fn kid(&self) -> &'a str {
        &self.whole[PREFIX_LEN..PREFIX_LEN + KID_LEN]
    }

    /// The whole key, secret included: hash it, never log it.
    pub fn expose(&self) -> &'a str {
        self.whole
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid())
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Parses and checks a key: its length, prefix, alphabet and checksum. Runs in time linear in
/// the input and never allocates.
pub fn parse(text: &str) -> Result<ParsedKey<'_>, ParseError> {
    let bytes = text.as_bytes();
    if bytes.len() != KEY_LEN {
        return Err(ParseError::Length);
    }
    if &bytes[..5] != b"ptcl_" || bytes[7] != b'_' {
        return Err(ParseError::Prefix);
    }
    let kind = KeyKind::from_code(&bytes[5..7]).ok_or(ParseError::Prefix)?;
    if !bytes[PREFIX_LEN..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(ParseError::Alphabet);
    }
    let body_end = KEY_LEN - CRC_LEN;
    if checksum(&bytes[..body_end]) != bytes[body_end..] {
        return Err(ParseError::Checksum);
    }
    Ok(ParsedKey { kind, whole: text })
}

/// A freshly generated key. The only copy of its secret: show it once, hash it, drop it.
pub struct SecretKey(String);

impl SecretKey {
    /// The whole key, secret included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public lookup id.
    pub fn kid(&self) -> &str {
        &self.0[PREFIX_LEN..PREFIX_LEN + KID_LEN]
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}…[redacted])", &self.0[..PREFIX_LEN + KID_LEN])
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Generates a new key of the given kind from the operating system's CSPRNG.
pub fn generate(kind: KeyKind) -> Result<SecretKey, GenerateError> {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str("ptcl_");
    key.push_str(kind.code());
    key.push('_');
    let mut random = [0u8; KID_LEN + SECRET_LEN];
    fill_base62(&mut random)?;
    for byte in random {
        key.push(char::from(byte));
    }
    random.zeroize();
    let crc = checksum(key.as_bytes());
    for byte in crc {
        key.push(char::from(byte));
    }
    Ok(SecretKey(key))
}

/// Fills `out` with uniformly random base62 characters (rejection sampling, no modulo bias).
fn fill_base62(out: &mut [u8]) -> Result<(), GenerateError> {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < out.len() {
        getrandom::fill(&mut pool).map_err(GenerateError)?;
        for &byte in &pool {
            // 248 = 4 * 62: values at or above it would favour the first characters.
            if byte < 248 && filled < out.len() {
                out[filled] = ALPHABET[usize::from(byte % 62)];
                filled += 1;
            }
        }
    }
    pool.zeroize();
    Ok(())
}

/// The six checksum characters for the bytes before them.
pub fn checksum(body: &[u8]) -> [u8; CRC_LEN] {
    let mut value = crc32(body);
    let mut out = [b'0'; CRC_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// CRC-32/IEEE (reflected, polynomial 0xEDB88320), one table lookup per byte. The table is
/// computed at compile time.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTOR: &str = "ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4W";

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reference_test_vector_parses() {
        assert_eq!(crc32(&VECTOR.as_bytes()[..48]), 0xa8e2_7248);
        let key = parse(VECTOR).unwrap();
        assert_eq!(key.kind(), KeyKind::Secret);
        assert_eq!(key.kid(), "0000TEST");
        assert_eq!(key.expose(), VECTOR);
    }

    fn check(input: &str, expected: Result<(), ParseError>) {
        assert_eq!(parse(input).map(|_| ()), expected, "input: {input}");
    }

    #[test]
    fn malformed_keys_are_rejected_precisely() {
        check("", Err(ParseError::Length));
        check(&VECTOR[..53], Err(ParseError::Length));
        check(&format!("{VECTOR}x"), Err(ParseError::Length));
        check(&VECTOR.replace("ptcl_sk_", "ptcl_xk_"), Err(ParseError::Prefix));
        check(&VECTOR.replace("ptcl_sk_", "PTCL_sk_"), Err(ParseError::Prefix));
        check(&VECTOR.replace("ptcl_sk_", "ptcl_sk-"), Err(ParseError::Prefix));
        check(&VECTOR.replace("TEST", "TES-"), Err(ParseError::Alphabet));
        check(&VECTOR.replace("TEST", "TESU"), Err(ParseError::Checksum));
        check(&VECTOR.replace("35ki4W", "35ki4X"), Err(ParseError::Checksum));
        // Multi-byte characters must not break the byte-length arithmetic or slicing.
        check(&VECTOR.replace("xy", "é"), Err(ParseError::Alphabet));
        check(&VECTOR.replace("xy", "éé"), Err(ParseError::Length));
        check(&VECTOR.replace("ptcl_sk_", "ptcl_s\u{e9}"), Err(ParseError::Prefix));
        check(&format!("{}é", &VECTOR[..52]), Err(ParseError::Alphabet));
        check(VECTOR, Ok(()));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = generate(KeyKind::Secret).unwrap();
        let secret = &key.expose()[16..48];
        assert!(!format!("{key:?}").contains(secret));
        let parsed = parse(key.expose()).unwrap();
        assert!(!format!("{parsed:?}").contains(secret));
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate(KeyKind::Admin).unwrap();
        let b = generate(KeyKind::Admin).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("ptcl_ak_"));
    }

    proptest! {
        #[test]
        fn generated_keys_always_parse(kind in prop_oneof![Just(KeyKind::Secret), Just(KeyKind::Admin), Just(KeyKind::Token)]) {
            let key = generate(kind).unwrap();
            let parsed = parse(key.expose()).unwrap();
            prop_assert_eq!(parsed.kind(), kind);
            prop_assert_eq!(parsed.kid(), key.kid());
            prop_assert_eq!(key.expose().len(), KEY_LEN);
        }

        #[test]
        fn any_single_character_change_is_caught(position in 8usize..54, replacement in 0usize..62) {
            let key = generate(KeyKind::Secret).unwrap();
            let mut bytes = key.expose().as_bytes().to_vec();
            let new = ALPHABET[replacement];
            prop_assume!(bytes[position] != new);
            bytes[position] = new;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(parse(&changed).map(|_| ()), Err(ParseError::Checksum));
        }

        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = parse(&text);
        }
    }
}
