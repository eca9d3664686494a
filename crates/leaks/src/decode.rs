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
pub mod dart;
pub mod dex;
pub mod dotnet;
pub mod hermes;
pub mod il2cpp;
pub mod plist;
pub mod protobuf;
pub mod runs;

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

/// Bounded little-endian reads, for every decoder: `None` past the end of the buffer (or on an
/// offset that overflows), never a panic.
pub(crate) mod le {
    pub(crate) fn u16(bytes: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
    }

    pub(crate) fn u32(bytes: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
    }

    pub(crate) fn u64(bytes: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
    }
}

/// Most strings a decoder emits from one file; the rest are left to the raw-byte pass.
pub const MAX_STRINGS: usize = 4_000_000;

/// Names (of resources, elements, attributes) are cut to this many characters in locations.
pub(crate) const MAX_NAME_CHARS: usize = 256;

/// `name`, cut to [`MAX_NAME_CHARS`] characters for use in a location.
pub(crate) fn cut_name(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => name.get(..end).unwrap_or_default().to_owned(),
        None => name.to_owned(),
    }
}

/// How many bytes one file may decode and emit (strings read, locations, names and values
/// emitted): eight times its size plus 64 MiB, far above what a real file needs and far below
/// what many entries pointing at one long string (or overlapping sections) could multiply.
pub(crate) fn output_budget(input_len: usize) -> usize {
    input_len.saturating_mul(8).saturating_add(64 << 20)
}

/// What every decoder passes its strings through: the sink, under two caps, [`MAX_STRINGS`]
/// strings and a budget in bytes for the work of decoding and emitting. Reaching either is a
/// [`DecodeError`], so the caller's raw pass reads the rest.
pub(crate) struct Emitter<'s> {
    sink: &'s mut dyn Sink,
    format: &'static str,
    strings: usize,
    budget: usize,
}

impl<'s> Emitter<'s> {
    pub(crate) fn new(sink: &'s mut dyn Sink, format: &'static str, budget: usize) -> Emitter<'s> {
        Emitter { sink, format, strings: 0, budget }
    }

    /// Spends `cost` bytes of the budget on work that may not be emitted (a string decoded, a
    /// map item read), so shared offsets cannot multiply it either.
    pub(crate) fn charge(&mut self, offset: usize, cost: usize) -> Result<(), DecodeError> {
        self.budget = self.budget.checked_sub(cost).ok_or_else(|| {
            DecodeError::new(self.format, offset, "output budget spent; the rest is left to the raw pass")
        })?;
        Ok(())
    }

    pub(crate) fn emit(
        &mut self,
        offset: usize,
        location: &str,
        name: Option<&str>,
        value: &str,
    ) -> Result<(), DecodeError> {
        if self.strings >= MAX_STRINGS {
            return Err(DecodeError::new(
                self.format,
                offset,
                "string limit reached; the rest is left to the raw pass",
            ));
        }
        self.charge(offset, location.len() + name.map_or(0, str::len) + value.len())?;
        self.strings += 1;
        self.sink.string(location, name, value);
        Ok(())
    }
}

/// What decoder tests share: run a decoder, collect what it emits.
#[cfg(test)]
pub(crate) mod testing {
    use super::{DecodeError, Sink};

    /// (location, name, value) in the order emitted.
    pub(crate) type Found = Vec<(String, Option<String>, String)>;

    pub(crate) fn collect<T>(
        decode: impl FnOnce(&mut dyn Sink) -> Result<T, DecodeError>,
    ) -> (Found, Result<T, DecodeError>) {
        let mut found = Found::new();
        let result = decode(&mut |location: &str, name: Option<&str>, value: &str| {
            found.push((location.to_owned(), name.map(str::to_owned), value.to_owned()));
        });
        (found, result)
    }

    /// The values alone, in order.
    pub(crate) fn values(found: &Found) -> Vec<&str> {
        found.iter().map(|(_, _, value)| value.as_str()).collect()
    }

    pub(crate) fn found(location: &str, name: Option<&str>, value: &str) -> (String, Option<String>, String) {
        (location.to_owned(), name.map(str::to_owned), value.to_owned())
    }
}
