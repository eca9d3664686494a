//! Checks a candidate secret must pass after its pattern matched: the placeholder veto every
//! rule shares, Shannon entropy for weakly anchored rules, and the named validators (our own
//! key checksum, JWT lifetime, PEM body).

use base64::Engine as _;

/// A rule's extra check, named in `rules.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    /// A Portcullis key whose CRC-32 checksum is right: exact precision.
    Ptcl,
    /// A JWT that lives longer than a day (or forever).
    Jwt,
    /// A PEM private-key block with a real body.
    Pem,
    /// A value found only by its name: it must mix letters and digits and must not read as a
    /// code identifier (`__X32_SYSCALL_BIT`, `empty_brace_token`, `my-secret-key-name`).
    Generic,
    /// A password found by its name: it must not read as a code identifier or a path, and it
    /// must either have the entropy of a random string or mix kinds of characters (`p@ssword`,
    /// `Tr0ub4dor`): a bare word (`butterfly`, `required`) is UI text or a placeholder.
    Password,
    /// A value a sentence gives for a credential (`Password is CrazyPassword`, `Key is
    /// 123myKey456`): it must mix kinds of characters and must not read as a constant or a path.
    /// Joined capitalised words are allowed, since prose names no type.
    Prose,
}

impl Validator {
    pub fn check(self, secret: &str) -> bool {
        match self {
            Validator::Ptcl => apikey::parse(secret).is_ok(),
            Validator::Jwt => jwt_is_long_lived(secret),
            Validator::Pem => pem_has_body(secret),
            Validator::Generic => generic_value(secret),
            // Passwords may be words joined by dashes (`correct-horse-battery-staple`), not by
            // underscores or dots, which join identifiers (`some_pass`, `mysql_native_password`).
            Validator::Password => {
                !reads_as_code(secret, &['_', '.'])
                    && !mostly_escapes(secret)
                    && (entropy(secret) >= PASSWORD_ENTROPY || character_kinds(secret) >= 2)
            }
            // Joined capitalised words are allowed in prose, which names no type.
            Validator::Prose => {
                let camel = secret.starts_with(|c: char| c.is_ascii_lowercase()) && camel_case_words(secret);
                character_kinds(secret) >= 2
                    && !reads_as_constant_or_path(secret)
                    && !numeric_literal(secret)
                    && !joined_words(secret, &['_', '-', '.'])
                    && !camel
            }
        }
    }
}

/// `%c3%89t%C3%A9`: percent escapes make up half the value or more (URL test data).
fn mostly_escapes(value: &str) -> bool {
    let escapes = value
        .as_bytes()
        .windows(3)
        .filter(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
        .count();
    escapes >= 2 && escapes * 3 * 2 >= value.len()
}

/// Domains reserved for documentation (RFC 2606): a match that names one is an example,
/// whatever its secret looks like.
const DOCUMENTATION_HOSTS: &[&str] = &["example.com", "example.net", "example.org"];

/// Whether a rule's whole match names a documentation host (`ftp://user:s3cret@example.com`).
pub fn names_documentation_host(matched: &str) -> bool {
    let lower = matched.to_ascii_lowercase();
    DOCUMENTATION_HOSTS.iter().any(|host| {
        lower.match_indices(host).any(|(at, _)| {
            let after = lower.as_bytes().get(at + host.len());
            !after.is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
        })
    })
}

/// A password of one kind of character needs this entropy (bits per character) to count: random
/// letters reach it, most words do not.
const PASSWORD_ENTROPY: f64 = 3.2;

/// How many kinds of character `value` mixes: lower-case letters, upper-case letters after the
/// first character (a capitalised word is one kind), digits, and anything else.
fn character_kinds(value: &str) -> usize {
    let lower = value.bytes().any(|byte| byte.is_ascii_lowercase());
    let upper = value.bytes().skip(1).any(|byte| byte.is_ascii_uppercase());
    let digit = value.bytes().any(|byte| byte.is_ascii_digit());
    let other = value.bytes().any(|byte| !byte.is_ascii_alphanumeric());
    [lower, upper, digit, other].into_iter().filter(|&kind| kind).count()
}

/// Words and marks that say "this is not a real value": documentation keys, templates,
/// interpolations.
const PLACEHOLDER_MARKS: &[&str] = &[
    "example",
    "placeholder",
    "your_",
    "your-",
    "xxxx",
    "changeme",
    "dummy",
    "sample",
    "redacted",
    "<",
    ">",
    "${",
    "{{",
    "%s",
];

/// Whether `secret` is a placeholder: a marked template value, one character repeated, or a
/// plain ascending run such as `1234567890` or `abcdefgh`.
pub fn is_placeholder(secret: &str) -> bool {
    let lower = secret.to_ascii_lowercase();
    if PLACEHOLDER_MARKS.iter().any(|mark| lower.contains(mark)) {
        return true;
    }
    let bytes = lower.as_bytes();
    let Some(&first) = bytes.first() else { return true };
    if bytes.iter().all(|&byte| byte == first) {
        return true;
    }
    bytes.len() > 1 && bytes.windows(2).all(|pair| pair[1] == pair[0].wrapping_add(1))
}

/// Words that, in the name a value is given under, say the value is text shown to people or
/// names a thing, not a credential: `title_activity_change_password`, `password_hint`,
/// `error_invalid_token`, `btnForgotPassword`.
const NOT_SECRET_NAME_WORDS: &[&str] = &[
    "title",
    "hint",
    "label",
    "lbl",
    "prompt",
    "message",
    "msg",
    "error",
    "button",
    "btn",
    "menu",
    "summary",
    "toast",
    "dialog",
    "desc",
    "description",
    "caption",
    "heading",
    "tooltip",
    "placeholder",
    "activity",
    "screen",
    "fragment",
    "forgot",
    "reset",
    "change",
    "confirm",
    "enter",
    "show",
    "hide",
    "invalid",
    "wrong",
    "incorrect",
    "required",
    "missing",
    "mismatch",
    "toggle",
    "visibility",
    "strength",
];

/// Whether the name a value is given under says it is no secret: a word of the name marks
/// UI text or an identifier ([`NOT_SECRET_NAME_WORDS`]), or the value only repeats the name
/// (`title_activity_change_password = ChangePassword`, `password = "password"`).
pub fn name_says_not_secret(name: &str, value: &str) -> bool {
    let words = name_words(name);
    if words.iter().any(|word| NOT_SECRET_NAME_WORDS.contains(&word.as_str())) {
        return true;
    }
    let letters = |text: &str| -> String {
        text.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
    };
    let value_letters = letters(value);
    !value_letters.is_empty() && letters(name).contains(&value_letters)
}

/// The lower-case words of an identifier, split at separators and where case rises
/// (`btnForgotPassword` is `btn`, `forgot`, `password`).
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphabetic() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Shannon entropy of the characters of `text`, in bits per character.
pub fn entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / total;
            -p * p.log2()
        })
        .sum()
}

/// Tokens that live at most this long are not worth a finding: they expire before anyone can
/// use a copy pulled from an app.
const SHORT_LIVED_SECONDS: i64 = 86_400;

fn jwt_is_long_lived(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let decode = |part: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let (Some(header), Some(claims)) = (decode(header), decode(payload)) else { return false };
    if !header.contains_key("alg") {
        return false;
    }
    let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
    let Some(expires) = number("exp") else { return true };
    match number("iat").or_else(|| number("nbf")) {
        Some(issued) => expires.saturating_sub(issued) > SHORT_LIVED_SECONDS,
        None => true,
    }
}

fn generic_value(value: &str) -> bool {
    let has_digit = value.bytes().any(|byte| byte.is_ascii_digit());
    let has_letter = value.bytes().any(|byte| byte.is_ascii_alphabetic());
    // A bare 40-hex value is a commit or a SHA-1 digest far more often than a key.
    let sha1 = value.len() == 40 && value.bytes().all(|byte| byte.is_ascii_hexdigit());
    has_digit && has_letter && !sha1 && !reads_as_code(value, &['_', '-', '.'])
}

/// Whether a value reads as code rather than as a secret: a constant (`__X32_SYSCALL_BIT`),
/// words joined by separators (`empty_brace_token`, `my-secret-key-2024-prod`), a camelCase
/// identifier (`accessTokenFromOAuth2Response`, `bcryptHashSync`), or a path without capitals
/// (`certs/prod2/server_rsa`).
fn reads_as_code(value: &str, joiners: &[char]) -> bool {
    reads_as_constant_or_path(value)
        || numeric_literal(value)
        || joined_words(value, joiners)
        || camel_case_words(value)
}

/// Words or numbers joined by one of `joiners`: `empty_brace_token`, `my-secret-key-2024-prod`.
fn joined_words(value: &str, joiners: &[char]) -> bool {
    let parts: Vec<&str> = value.split(joiners).filter(|part| !part.is_empty()).collect();
    parts.len() >= 2
        && parts.iter().all(|part| {
            part.bytes().all(|byte| byte.is_ascii_alphabetic()) || part.bytes().all(|byte| byte.is_ascii_digit())
        })
}

/// Suffixes that make a number a typed literal in Rust, C, Java or Kotlin (`16384u32`, `30L`).
const NUMBER_SUFFIXES: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64", "ull", "ul",
    "ll", "l", "u", "f", "d",
];

/// A number with a type suffix: `16384u32`, `-2147212282i32`, `1_000_000L`.
fn numeric_literal(value: &str) -> bool {
    let unsigned = value.strip_prefix('-').unwrap_or(value);
    let digits = unsigned.bytes().take_while(|byte| byte.is_ascii_digit() || *byte == b'_').count();
    let suffix = unsigned.get(digits..).unwrap_or_default().to_ascii_lowercase();
    digits > 0 && NUMBER_SUFFIXES.contains(&suffix.as_str())
}

/// `__X32_SYSCALL_BIT`, `certs/prod2/server_rsa`.
fn reads_as_constant_or_path(value: &str) -> bool {
    let constant = value.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_');
    (constant && value.contains('_')) || (value.contains('/') && !value.bytes().any(|byte| byte.is_ascii_uppercase()))
}

/// `accessTokenFromOAuth2Response`, `PasswordEncoder`: starts with a letter, and every letter
/// run (split where case rises and after digits) is at least three letters, as words are.
/// Random strings change case every couple of characters, so some run is shorter.
fn camel_case_words(value: &str) -> bool {
    let bytes = value.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut runs = 0usize;
    let mut shortest = usize::MAX;
    let mut current = 0usize;
    let mut previous: Option<u8> = None;
    for &byte in bytes {
        if byte.is_ascii_alphabetic() {
            let starts_run = match previous {
                None => true,
                Some(before) => before.is_ascii_digit() || (byte.is_ascii_uppercase() && before.is_ascii_lowercase()),
            };
            if starts_run {
                if current > 0 {
                    shortest = shortest.min(current);
                }
                runs += 1;
                current = 0;
            }
            current += 1;
        }
        previous = Some(byte);
    }
    shortest = shortest.min(current);
    runs >= 2 && shortest >= 3
}

/// A private-key block needs a body of at least this many base64 characters to hold a key.
const MIN_PEM_BODY: usize = 64;

fn pem_has_body(block: &str) -> bool {
    // The parts between `-----` markers that are not BEGIN/END labels: the body, on one line
    // or many, with header lines (`Proc-Type:`) left out.
    let body_chars = block
        .split("-----")
        .filter(|part| !part.starts_with("BEGIN ") && !part.starts_with("END "))
        .flat_map(|part| part.lines())
        .flat_map(|line| line.split("\\n"))
        .filter(|line| !line.contains(':'))
        .flat_map(str::chars)
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .count();
    body_chars >= MIN_PEM_BODY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised() {
        for text in ["AKIAIOSFODNN7EXAMPLE", "sk_live_xxxxxxxxxxxx", "${API_KEY}", "aaaaaaaa", "123456789", "abcdefgh"]
        {
            assert!(is_placeholder(text), "{text}");
        }
        for text in ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "hunter2hunter3", "q8Zt1"] {
            assert!(!is_placeholder(text), "{text}");
        }
    }

    #[test]
    fn entropy_of_uniform_and_random_text() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        assert!(entropy("4eC39HqLyjWDarjtT1zdp7dc") > 4.0);
    }

    fn jwt(header: &str, claims: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.c2lnbmF0dXJl", engine.encode(header), engine.encode(claims))
    }

    #[test]
    fn jwt_lifetime_decides() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        assert!(Validator::Jwt.check(&jwt(header, r#"{"sub":"svc","iat":1700000000,"exp":1900000000}"#)));
        assert!(Validator::Jwt.check(&jwt(header, r#"{"sub":"svc"}"#)));
        assert!(Validator::Jwt.check(&jwt(header, r#"{"exp":1900000000}"#)));
        assert!(!Validator::Jwt.check(&jwt(header, r#"{"iat":1700000000,"exp":1700000900}"#)));
        assert!(!Validator::Jwt.check(&jwt(r#"{"typ":"JWT"}"#, r#"{"sub":"svc"}"#)));
        assert!(!Validator::Jwt.check(&jwt(header, "[1,2]")));
        assert!(!Validator::Jwt.check("eyJhbGciOi.not-json.sig"));
    }

    #[test]
    fn pem_needs_a_body() {
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ";
        let block = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----");
        assert!(Validator::Pem.check(&block));
        let escaped = format!("-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----");
        assert!(Validator::Pem.check(&escaped));
        let one_line = format!("-----BEGIN PRIVATE KEY----- {body} -----END PRIVATE KEY-----");
        assert!(Validator::Pem.check(&one_line));
        assert!(!Validator::Pem.check("-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----"));
    }

    #[test]
    fn generic_values_must_not_read_as_identifiers() {
        for value in
            ["cfg2Iuh9A5weDri7hxuizv2szGqrlJKx", "uP_yk3xUbapjf0ETx6xLLXknVcXKaiJCmSM8dbBu", "0123abcd9876fedc"]
        {
            assert!(Validator::Generic.check(value), "{value}");
        }
        for value in [
            "__X32_SYSCALL_BIT",
            "empty_brace_token",
            "my-secret-key-2024-prod",
            "abcdefghijklmnopqrst",
            "12345678901234567",
            "accessTokenFromOAuth2Response",
            "generateCsrfToken2",
            "3f786850e387550fdab836ed7e6dc881de23001b",
            "certs/prod2/server_rsa",
        ] {
            assert!(!Validator::Generic.check(value), "{value}");
        }
        for value in ["encryptedPassword", "confirmPassword", "bcryptHashSync", "certs/prod2/server_rsa"] {
            assert!(!Validator::Password.check(value), "{value}");
        }
        for value in [
            "wlNAl__mLt7oKW",
            "Gg7Nk_U4Wi0MeSgE",
            "Tr0ub4dor$xK9pLm2qRt",
            "correct-horse-battery-staple",
            "uJaosgwgEodm",
        ] {
            assert!(Validator::Password.check(value), "{value}");
        }
    }

    #[test]
    fn passwords_that_are_bare_words_or_type_names_are_not_taken() {
        for value in ["p@ssword", "p@ssword2", "hunter2!xy", "qwrtzpsdfghk"] {
            assert!(Validator::Password.check(value), "{value}");
        }
        for value in ["butterfly", "required", "Required", "PasswordEncoder", "ChangePassword", "some_pass", "16384u32"]
        {
            assert!(!Validator::Password.check(value), "{value}");
        }
    }

    #[test]
    fn prose_values_must_mix_kinds_of_characters() {
        for value in ["CrazyPassword", "123myKey456", "p@ssword"] {
            assert!(Validator::Prose.check(value), "{value}");
        }
        for value in ["required", "Incorrect", "SECRET_KEY_NAME", "keys/prod/app", "keyPairGenerator", "NUL-terminated"]
        {
            assert!(!Validator::Prose.check(value), "{value}");
        }
    }

    #[test]
    fn ui_text_names_and_values_repeating_their_name_are_not_secrets() {
        assert!(name_says_not_secret("title_activity_change_password", "ChangePassword"));
        assert!(name_says_not_secret("password_hint", "Xq7Lm2Pz9Rt4"));
        assert!(name_says_not_secret("btnForgotPassword", "Xq7Lm2Pz9Rt4"));
        assert!(name_says_not_secret("db_password", "password"));
        assert!(!name_says_not_secret("db_password", "Xq7Lm2Pz9Rt4"));
        assert!(!name_says_not_secret("API Password", "p@ssword"));
        assert!(!name_says_not_secret("BuildConfig.API_SECRET", "Xq7Lm2Pz9Rt4"));
    }

    #[test]
    fn documentation_hosts_mark_examples() {
        assert!(names_documentation_host("ftp://user1:s3cret1x@example.com"));
        assert!(names_documentation_host("https://u:p@API.EXAMPLE.ORG/"));
        assert!(!names_documentation_host("https://u:p@example.community.io/"));
        assert!(!names_documentation_host("https://u:p@db.acme.io/"));
    }

    #[test]
    fn ptcl_checksum_is_verified() {
        assert!(Validator::Ptcl.check("ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4W"));
        assert!(!Validator::Ptcl.check("ptcl_sk_0000TEST0123456789abcdefghijABCDEFGHIJxy35ki4X"));
    }
}
