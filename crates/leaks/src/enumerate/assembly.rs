//! The containers .NET for Android puts assemblies in, opened like archives: an assembly store
//! (`assemblies.blob`) gives each assembly as a member named by the store (`Example.dll`, or
//! `assembly-3.dll` when the store keeps no names), and an `XALZ` assembly is decompressed in
//! place, keeping its path, so `assemblies/Example.dll` is scanned as the DLL it stands for; so
//! is the `payload` section of the ELF library that wraps a store or an assembly in newer
//! releases (`lib/arm64-v8a/libassembly-store.so`).
//! The formats are read by [`crate::decode::dotnet::store`]; the caps are the enumerator's:
//! each assembly counts as a member, and a decompressed one against the ratio and total caps.

use std::borrow::Cow;

use super::{Enumerator, RATIO_SLACK, Visit};
use crate::decode::dotnet::store;

impl<V: Visit> Enumerator<'_, V> {
    pub(super) fn assembly_store(&mut self, path: &[String], bytes: &[u8], depth: usize) -> Result<(), String> {
        let mut members = Vec::new();
        let listed = store::entries(bytes, |name, data| members.push((name.to_owned(), data)));
        for (name, data) in members {
            if !self.admit(path) {
                break;
            }
            let mut inner = path.to_vec();
            inner.push(name);
            self.bytes(&inner, Cow::Borrowed(data), depth + 1);
        }
        listed.map_err(|error| error.to_string())
    }

    pub(super) fn xalz(&mut self, path: &[String], bytes: &[u8], depth: usize) -> Result<(), String> {
        let remaining = self.limits.max_total_bytes.saturating_sub(self.total_bytes);
        let ratio_cap = (bytes.len() as u64).saturating_mul(self.limits.max_ratio).saturating_add(RATIO_SLACK);
        let allowed = self.limits.max_member_bytes.min(ratio_cap).min(remaining);
        let image =
            store::xalz(bytes, usize::try_from(allowed).unwrap_or(usize::MAX)).map_err(|error| error.to_string())?;
        self.total_bytes = self.total_bytes.saturating_add(image.len() as u64);
        self.bytes(path, Cow::Owned(image), depth + 1);
        Ok(())
    }

    pub(super) fn elf_payload(&mut self, path: &[String], bytes: &[u8], depth: usize) -> Result<(), String> {
        let payload = store::elf_payload(bytes).ok_or("no payload section")?;
        self.bytes(path, Cow::Borrowed(payload), depth + 1);
        Ok(())
    }
}
