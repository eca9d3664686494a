//! Structured decoders: each turns one file format into the strings it holds, with where each
//! string sits (a string-pool index, a resource name, a plist key path) and, when the format
//! has one, the name that labels it (a resource entry name, an attribute name, a plist key).
//! The name is context for the rules: `google_api_key` next to a value plays the role that
//! `google_api_key = "…"` plays in source code.
//!
//! Decoders never trust a count or offset from the input: every read is bounded by the buffer,
//! nothing is allocated from a declared size, and a malformed file ends in a [`DecodeError`]
//! that says where. Strings emitted before the error stand; the caller then falls back to a
//! raw-byte pass over the whole file, so a decoder failure can lose context but never a key.

pub mod arsc;
pub mod axml;
pub mod binary;
pub mod dex;
pub mod plist;
pub mod protobuf;

/// Receives each decoded string: `location` inside the file (e.g. `string_ids[12]`,
/// `string/google_api_key`), an optional context `name`, and the `value`.
pub trait Sink {
    fn string(&mut self, location: &str, name: Option<&str>, value: &str);
}

impl<F: FnMut(&str, Option<&str>, &str)> Sink for F {
    fn string(&mut self, location: &str, name: Option<&str>, value: &str) {
        self(location, name, value);
    }
}

/// Why a file could not be decoded (fully): the format, the byte offset, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {message} at byte {offset}")]
pub struct DecodeError {
    pub format: &'static str,
    pub offset: usize,
    pub message: String,
}

impl DecodeError {
    pub fn new(format: &'static str, offset: usize, message: impl Into<String>) -> DecodeError {
        DecodeError { format, offset, message: message.into() }
    }
}

/// Most strings a decoder emits from one file; the rest are left to the raw-byte pass.
pub const MAX_STRINGS: usize = 4_000_000;
