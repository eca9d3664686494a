//! Enumeration: directories (optionally minus what `.gitignore` excludes), single files, and
//! the archives inside them, found by magic bytes rather than extension: zip (and so jar, APK,
//! AAB, IPA, XAPK, APKS), gzip and tar, and the containers .NET for Android packs assemblies in
//! ([`assembly`]), nested. Nothing is ever extracted to disk: members are read into memory
//! under hard caps (entries, bytes per member and in all, compression ratio, nesting depth,
//! name length), so an entry named `../../etc/passwd`, an absolute path or a link can never
//! leave the archive, and a zip bomb is cut off after a bounded amount of work. Every file that
//! is not an archive goes to a [`Visit`]or with its path: the outer file first, then each
//! member name (shown joined by `!`, the gitleaks convention).

mod assembly;

use std::io::{Cursor, Read};
use std::path::Path;

/// Hard caps on what one input (a file named or found in a directory) may unfold into.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Archive members, over all nesting levels.
    pub max_entries: u64,
    /// Bytes decompressed from archives, over all nesting levels.
    pub max_total_bytes: u64,
    /// A member may decompress to at most this many times its compressed size (plus 1 MiB).
    pub max_ratio: u64,
    /// Archives inside archives (an APK in an XAPK in a zip is depth 3).
    pub max_depth: usize,
    /// Longest member name accepted.
    pub max_path_len: usize,
    /// Largest file or member held in memory for decoding; larger ones are scanned as a stream.
    pub max_member_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 200_000,
            max_total_bytes: 4 << 30,
            max_ratio: 200,
            max_depth: 5,
            max_path_len: 4096,
            max_member_bytes: 64 << 20,
        }
    }
}

/// Decompression slack below which the ratio cap does not apply (tiny members compress well).
const RATIO_SLACK: u64 = 1 << 20;

/// Receives what enumeration finds. `path` is the outer file, then each member name.
pub trait Visit {
    /// A file that is not an archive (or an archive that could not be opened), whole.
    fn file(&mut self, path: &[String], bytes: &[u8]);
    /// A file too large to hold in memory, as a stream.
    fn large_file(&mut self, path: &[String], reader: &mut dyn Read);
    /// Something was skipped or cut short; the scan goes on.
    fn warning(&mut self, path: &[String], message: String);
}

/// What a buffer's first bytes say it is, for the formats that hold other files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Zip,
    Gzip,
    Tar,
    /// A .NET for Android assembly store (`assemblies.blob`).
    AssemblyStore,
    /// An LZ4-compressed .NET assembly (`XALZ`).
    Xalz,
    /// An ELF shared library wrapping an assembly store or an assembly in its `payload` section.
    ElfPayload,
}

fn container(bytes: &[u8]) -> Option<Container> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") || bytes.starts_with(b"PK\x07\x08") {
        Some(Container::Zip)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Container::Gzip)
    } else if bytes.get(257..262) == Some(b"ustar") {
        Some(Container::Tar)
    } else if bytes.starts_with(crate::decode::dotnet::store::STORE_MAGIC) {
        Some(Container::AssemblyStore)
    } else if bytes.starts_with(crate::decode::dotnet::store::LZ4_MAGIC) {
        Some(Container::Xalz)
    } else if crate::decode::dotnet::store::elf_payload(bytes).is_some() {
        Some(Container::ElfPayload)
    } else {
        None
    }
}

/// Walks inputs and unfolds archives, within [`Limits`].
#[derive(Debug)]
pub struct Enumerator<'v, V: Visit> {
    limits: Limits,
    visitor: &'v mut V,
    /// Members and bytes used so far by the current input.
    entries: u64,
    total_bytes: u64,
}

impl<'v, V: Visit> Enumerator<'v, V> {
    pub fn new(limits: Limits, visitor: &'v mut V) -> Enumerator<'v, V> {
        Enumerator { limits, visitor, entries: 0, total_bytes: 0 }
    }

    /// A file or a directory. With `gitignore`, what `.gitignore`, `.git/info/exclude` and
    /// `.ignore` files exclude is skipped. `.git` directories are always skipped; links are
    /// never followed inside a directory.
    pub fn input(&mut self, path: &Path, gitignore: bool) {
        let shown = vec![path.display().to_string()];
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) => return self.visitor.warning(&shown, format!("cannot read: {error}")),
        };
        if !metadata.is_dir() {
            return self.disk_file(path, shown);
        }
        let walker = ignore::WalkBuilder::new(path)
            .standard_filters(false)
            .hidden(false)
            .follow_links(false)
            .require_git(false)
            .git_ignore(gitignore)
            .git_exclude(gitignore)
            .ignore(gitignore)
            .parents(gitignore)
            .filter_entry(|entry| entry.file_name() != ".git")
            .sort_by_file_name(|a, b| a.cmp(b))
            .build();
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_some_and(|kind| kind.is_file()) => {
                    let path = entry.path();
                    self.disk_file(path, vec![path.display().to_string()]);
                }
                Ok(_) => {}
                Err(error) => self.visitor.warning(&shown, format!("cannot walk: {error}")),
            }
        }
    }

    fn disk_file(&mut self, path: &Path, shown: Vec<String>) {
        self.entries = 0;
        self.total_bytes = 0;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) => return self.visitor.warning(&shown, format!("cannot read: {error}")),
        };
        let mut capped = file.take(self.limits.max_member_bytes.saturating_add(1));
        let mut bytes = Vec::new();
        if let Err(error) = capped.read_to_end(&mut bytes) {
            return self.visitor.warning(&shown, format!("cannot read: {error}"));
        }
        if bytes.len() as u64 > self.limits.max_member_bytes {
            // A large zip (an App Store IPA, a game's XAPK) is opened from disk, seeking, so its
            // members are read one at a time under the usual caps.
            if container(&bytes) == Some(Container::Zip) {
                drop(bytes);
                let opened = std::fs::File::open(path).map_err(|error| format!("cannot read: {error}"));
                let result = opened.and_then(|file| self.zip(&shown, std::io::BufReader::new(file), 0));
                match result {
                    Ok(()) => return,
                    Err(message) => self.visitor.warning(&shown, format!("{message}; scanned as raw bytes")),
                }
                match std::fs::File::open(path) {
                    Ok(mut file) => self.visitor.large_file(&shown, &mut file),
                    Err(error) => self.visitor.warning(&shown, format!("cannot read: {error}")),
                }
                return;
            }
            // Too large to decode whole: scan what was read and the rest as one stream.
            let mut rest = capped.into_inner();
            let mut stream = Cursor::new(bytes).chain(&mut rest);
            self.visitor.large_file(&shown, &mut stream);
            return;
        }
        self.bytes(&shown, &bytes, 0);
    }

    /// Bytes in memory (a whole file or member): unfolds them if they are an archive.
    pub fn bytes(&mut self, path: &[String], bytes: &[u8], depth: usize) {
        let Some(kind) = container(bytes) else { return self.visitor.file(path, bytes) };
        if depth >= self.limits.max_depth {
            self.visitor.warning(
                path,
                format!("archive nested more than {} deep: not opened, scanned as raw bytes", self.limits.max_depth),
            );
            return self.visitor.file(path, bytes);
        }
        let result = match kind {
            Container::Zip => self.zip(path, Cursor::new(bytes), depth),
            Container::Gzip => self.gzip(path, bytes, depth),
            Container::Tar => self.tar(path, bytes, depth),
            Container::AssemblyStore => self.assembly_store(path, bytes, depth),
            Container::Xalz => self.xalz(path, bytes, depth),
            Container::ElfPayload => self.elf_payload(path, bytes, depth),
        };
        if let Err(message) = result {
            // A container that does not open may still hold stored (uncompressed) members:
            // the raw-byte pass sees those.
            self.visitor.warning(path, format!("{message}; scanned as raw bytes"));
            self.visitor.file(path, bytes);
        }
    }

    /// Counts one member against the entry cap; false once it, or the byte cap, is reached.
    fn admit(&mut self, path: &[String]) -> bool {
        if self.total_bytes >= self.limits.max_total_bytes {
            // The read that reached the cap said so; the rest of every archive is skipped.
            return false;
        }
        if self.entries >= self.limits.max_entries {
            if self.entries == self.limits.max_entries {
                self.entries += 1;
                self.visitor.warning(
                    path,
                    format!("more than {} archive members: the rest are skipped", self.limits.max_entries),
                );
            }
            return false;
        }
        self.entries += 1;
        true
    }

    /// Reads a member under the caps. `compressed`: its compressed size, for the ratio cap
    /// (`None` for stored data). Returns the bytes, or hands an oversized member over as a
    /// stream and returns `None`.
    fn read_member(&mut self, path: &[String], reader: &mut dyn Read, compressed: Option<u64>) -> Option<Vec<u8>> {
        let remaining = self.limits.max_total_bytes.saturating_sub(self.total_bytes);
        let ratio_cap = compressed.map(|size| size.saturating_mul(self.limits.max_ratio).saturating_add(RATIO_SLACK));
        let allowed = ratio_cap.map_or(remaining, |cap| cap.min(remaining));
        let hold = self.limits.max_member_bytes.min(allowed);
        let mut bytes = Vec::new();
        let mut limited = reader.take(hold.saturating_add(1));
        let read = limited.read_to_end(&mut bytes);
        let reader = limited.into_inner();
        self.total_bytes = self.total_bytes.saturating_add(bytes.len() as u64);
        if let Err(error) = read {
            self.visitor.warning(path, format!("cannot decompress: {error}; the part read is scanned"));
            return Some(bytes);
        }
        if bytes.len() as u64 <= hold {
            return Some(bytes);
        }
        if hold < self.limits.max_member_bytes {
            // Cut by the ratio or the total cap, not by size: stop here.
            let why = if ratio_cap.is_some_and(|cap| cap <= remaining) {
                format!("decompresses to more than {}x its compressed size (a zip bomb?)", self.limits.max_ratio)
            } else {
                format!("archive contents exceed {} bytes in all", self.limits.max_total_bytes)
            };
            self.visitor.warning(path, format!("{why}: cut off after {hold} bytes, the part read is scanned"));
            bytes.truncate(usize::try_from(hold).unwrap_or(usize::MAX));
            return Some(bytes);
        }
        // Larger than a member may be in memory: scan the rest as a stream, still capped.
        let rest_cap = allowed.saturating_sub(bytes.len() as u64);
        let mut counted = Counted { inner: reader.take(rest_cap), read: 0 };
        let mut stream = Cursor::new(bytes).chain(&mut counted);
        self.visitor.large_file(path, &mut stream);
        self.total_bytes = self.total_bytes.saturating_add(counted.read);
        None
    }

    fn member_name_ok(&mut self, path: &[String], name: &str) -> bool {
        if name.len() > self.limits.max_path_len {
            self.visitor
                .warning(path, format!("a member name is longer than {} bytes: skipped", self.limits.max_path_len));
            return false;
        }
        true
    }

    fn zip<R: Read + std::io::Seek>(&mut self, path: &[String], reader: R, depth: usize) -> Result<(), String> {
        let mut archive = zip::ZipArchive::new(reader).map_err(|error| format!("corrupt zip: {error}"))?;
        for index in 0..archive.len() {
            if !self.admit(path) {
                break;
            }
            let mut entry = match archive.by_index(index) {
                Ok(entry) => entry,
                Err(error) => {
                    self.visitor.warning(path, format!("zip member {index}: {error}; skipped"));
                    continue;
                }
            };
            if entry.is_dir() {
                continue;
            }
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            if !self.member_name_ok(path, &name) {
                continue;
            }
            let mut inner = path.to_vec();
            inner.push(name);
            if entry.is_symlink() {
                self.visitor.warning(&inner, "a link: not followed".to_owned());
                continue;
            }
            if escapes(&inner_name(&inner)) || entry.enclosed_name().is_none() {
                self.visitor.warning(
                    &inner,
                    "the name escapes the archive (`..` or absolute): scanned in memory, never extracted".to_owned(),
                );
            }
            let compressed = match entry.compression() {
                zip::CompressionMethod::Stored => None,
                _ => Some(entry.compressed_size()),
            };
            if let Some(member) = self.read_member(&inner, &mut entry, compressed) {
                drop(entry);
                self.bytes(&inner, &member, depth + 1);
            }
        }
        Ok(())
    }

    fn gzip(&mut self, path: &[String], bytes: &[u8], depth: usize) -> Result<(), String> {
        let last = path.last().map(String::as_str).unwrap_or_default();
        let file_name = last.rsplit('/').next().unwrap_or(last);
        let name = if let Some(stem) = file_name.strip_suffix(".tgz") {
            format!("{stem}.tar")
        } else if let Some(stem) = file_name.strip_suffix(".gz") {
            stem.to_owned()
        } else {
            "(gunzip)".to_owned()
        };
        let mut inner = path.to_vec();
        inner.push(name);
        let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
        if let Some(member) = self.read_member(&inner, &mut decoder, Some(bytes.len() as u64)) {
            self.bytes(&inner, &member, depth + 1);
        }
        Ok(())
    }

    fn tar(&mut self, path: &[String], bytes: &[u8], depth: usize) -> Result<(), String> {
        let mut archive = tar::Archive::new(bytes);
        let entries = archive.entries().map_err(|error| format!("corrupt tar: {error}"))?;
        // Where the member after the last good one begins.
        let mut resume = 0usize;
        for entry in entries {
            if !self.admit(path) {
                break;
            }
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    // The stream is out of step after a bad header: what follows is scanned as
                    // raw bytes, so stored text (keys included) is still seen.
                    self.visitor
                        .warning(path, format!("corrupt tar member: {error}; the rest is scanned as raw bytes"));
                    if let Some(rest) = bytes.get(resume..).filter(|rest| !rest.is_empty()) {
                        self.visitor.file(path, rest);
                    }
                    break;
                }
            };
            let size = usize::try_from(entry.size()).unwrap_or(usize::MAX);
            resume = usize::try_from(entry.raw_file_position())
                .unwrap_or(usize::MAX)
                .saturating_add(size.saturating_add(511) / 512 * 512);
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if !self.member_name_ok(path, &name) {
                continue;
            }
            let mut inner = path.to_vec();
            inner.push(name.clone());
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                self.visitor.warning(&inner, "a link: not followed".to_owned());
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if escapes(&name) {
                self.visitor.warning(
                    &inner,
                    "the name escapes the archive (`..` or absolute): scanned in memory, never extracted".to_owned(),
                );
            }
            if let Some(member) = self.read_member(&inner, &mut entry, None) {
                self.bytes(&inner, &member, depth + 1);
            }
        }
        Ok(())
    }
}

fn inner_name(path: &[String]) -> String {
    path.last().cloned().unwrap_or_default()
}

/// Whether a member name would land outside the directory it was extracted to: absolute
/// (`/x`, `\\x`, `C:x`) or climbing out with `..`.
fn escapes(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.starts_with(['/', '\\'])
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
        || name.split(['/', '\\']).any(|part| part == "..")
}

/// Counts the bytes a stream yields.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.read = self.read.saturating_add(count as u64);
        Ok(count)
    }
}

#[cfg(test)]
mod tests;
