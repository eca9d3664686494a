//! Enumeration: directories (optionally minus what `.gitignore` excludes), single files, and
//! the archives inside them, found by magic bytes rather than extension: zip (and so jar, APK,
//! AAB, IPA, XAPK, APKS), gzip and tar, and the containers .NET for Android packs assemblies in
//! ([`assembly`]), nested. Nothing is ever extracted to disk: members are read into memory
//! under hard caps (entries, bytes per member and in all, compression ratio, nesting depth,
//! name length), so an entry named `../../etc/passwd`, an absolute path or a link can never
//! leave the archive, and a zip bomb is cut off after a bounded amount of work. Every file that
//! is not an archive goes to a [`Visit`]or with its path: the outer file first, then each
//! member name (shown joined by `!`, the gitleaks convention).
//!
//! The enumerator also keeps the run's [`Budget`] (bytes and files handed over, wall-clock
//! time, over all inputs together): when one runs out it says so once, as a warning located at
//! the first file not scanned, and hands nothing more over. It decides in the order it walks,
//! on one thread, so where a run stops on bytes or files does not depend on how many threads
//! scan what it hands over.

mod assembly;

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::path::Path;
use std::time::{Duration, Instant};

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

/// What one run (every input together) may scan at most; `None` is no limit. Unlike the
/// [`Limits`], which cut one hostile input short and let the run go on, a budget stops the
/// whole run and makes its report partial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Bytes handed over for scanning (files and members, decompressed), as the report counts them.
    pub bytes: Option<u64>,
    /// Files and archive members handed over for scanning, as the report counts them.
    pub files: Option<u64>,
    /// Wall-clock time from the start of the run. It is checked before each file or member and
    /// between the pieces of a streamed one: a file being decoded when it runs out is finished.
    pub time: Option<Duration>,
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Bytes(u64),
    Files(u64),
    Time(Duration),
}

impl Stop {
    /// `bytes`, `files`, `time`: the budget's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Bytes(_) => "bytes",
            Stop::Files(_) => "files",
            Stop::Time(_) => "time",
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Bytes(limit) => write!(f, "the run's budget of {limit} bytes scanned is spent"),
            Stop::Files(limit) => write!(f, "the run's budget of {limit} files scanned is spent"),
            Stop::Time(limit) => write!(f, "the run's time budget of {:.3} s ran out", limit.as_secs_f64()),
        }
    }
}

/// The run-wide counters a [`Budget`] is checked against.
#[derive(Debug)]
struct Spent {
    budget: Budget,
    deadline: Option<Instant>,
    bytes: u64,
    files: u64,
    stopped: Option<Stop>,
}

impl Spent {
    fn new(budget: Budget) -> Spent {
        let deadline = budget.time.and_then(|time| Instant::now().checked_add(time));
        Spent { budget, deadline, bytes: 0, files: 0, stopped: None }
    }

    fn out_of_time(&self) -> Option<Stop> {
        match (self.deadline, self.budget.time) {
            (Some(deadline), Some(time)) if Instant::now() >= deadline => Some(Stop::Time(time)),
            _ => None,
        }
    }

    /// The budget a file of `len` bytes (`None`: a stream of unknown length) would overrun.
    fn overrun(&self, len: Option<u64>) -> Option<Stop> {
        if let Some(files) = self.budget.files.filter(|&files| self.files >= files) {
            return Some(Stop::Files(files));
        }
        if let Some(bytes) = self.budget.bytes.filter(|&bytes| self.bytes.saturating_add(len.unwrap_or(1)) > bytes) {
            return Some(Stop::Bytes(bytes));
        }
        self.out_of_time()
    }
}

/// Decompression slack below which the ratio cap does not apply (tiny members compress well).
const RATIO_SLACK: u64 = 1 << 20;

/// Receives what enumeration finds. `path` is the outer file, then each member name.
pub trait Visit {
    /// A file that is not an archive (or an archive that could not be opened), whole: owned
    /// when the enumerator read it into a buffer of its own, so it can be handed on uncopied.
    fn file(&mut self, path: &[String], bytes: Cow<'_, [u8]>);
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
    /// What the whole run has handed over, against its budget.
    spent: Spent,
}

impl<'v, V: Visit> Enumerator<'v, V> {
    pub fn new(limits: Limits, visitor: &'v mut V) -> Enumerator<'v, V> {
        Enumerator { limits, visitor, entries: 0, total_bytes: 0, spent: Spent::new(Budget::default()) }
    }

    /// The run's budget; its clock starts now.
    pub fn with_budget(mut self, budget: Budget) -> Enumerator<'v, V> {
        self.spent = Spent::new(budget);
        self
    }

    /// Which budget stopped the run, if one did: the report is then partial.
    pub fn stopped(&self) -> Option<Stop> {
        self.spent.stopped
    }

    /// Records that `stop` ran out at `path` (the first file not scanned, or scanned in part).
    fn stop(&mut self, path: &[String], stop: Stop) {
        if self.spent.stopped.is_none() {
            self.spent.stopped = Some(stop);
            self.visitor.warning(
                path,
                format!("{stop}: the scan stopped here and what follows was not scanned; the report is partial"),
            );
        }
    }

    /// Whether the run goes on: not stopped, and time left (checked before reading anything).
    fn running(&mut self, path: &[String]) -> bool {
        if self.spent.stopped.is_some() {
            return false;
        }
        if let Some(stop) = self.spent.out_of_time() {
            self.stop(path, stop);
            return false;
        }
        true
    }

    /// Hands a whole file to the visitor, if the budget allows it.
    fn hand_over(&mut self, path: &[String], bytes: Cow<'_, [u8]>) {
        if self.spent.stopped.is_some() {
            return;
        }
        let len = bytes.len() as u64;
        if let Some(stop) = self.spent.overrun(Some(len)) {
            return self.stop(path, stop);
        }
        self.spent.files += 1;
        self.spent.bytes = self.spent.bytes.saturating_add(len);
        self.visitor.file(path, bytes);
    }

    /// Hands a stream to the visitor, if the budget allows it; the stream is cut where the
    /// byte or time budget runs out.
    fn hand_over_stream(&mut self, path: &[String], reader: &mut dyn Read) {
        if self.spent.stopped.is_some() {
            return;
        }
        if let Some(stop) = self.spent.overrun(None) {
            return self.stop(path, stop);
        }
        self.spent.files += 1;
        let allowed = self.spent.budget.bytes.map(|bytes| bytes.saturating_sub(self.spent.bytes));
        let mut metered = Metered {
            inner: reader,
            read: 0,
            allowed,
            deadline: self.spent.deadline,
            budget: self.spent.budget,
            cut: None,
        };
        self.visitor.large_file(path, &mut metered);
        self.spent.bytes = self.spent.bytes.saturating_add(metered.read);
        if let Some(stop) = metered.cut {
            self.stop(path, stop);
        }
    }

    /// A file or a directory. With `gitignore`, what `.gitignore`, `.git/info/exclude` and
    /// `.ignore` files exclude is skipped. `.git` directories are always skipped; links are
    /// never followed inside a directory.
    pub fn input(&mut self, path: &Path, gitignore: bool) {
        let shown = vec![path.display().to_string()];
        if !self.running(&shown) {
            return;
        }
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
                    let shown = vec![path.display().to_string()];
                    if !self.running(&shown) {
                        break;
                    }
                    self.disk_file(path, shown);
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
                    Ok(mut file) => self.hand_over_stream(&shown, &mut file),
                    Err(error) => self.visitor.warning(&shown, format!("cannot read: {error}")),
                }
                return;
            }
            // Too large to decode whole: scan what was read and the rest as one stream.
            let mut rest = capped.into_inner();
            let mut stream = Cursor::new(bytes).chain(&mut rest);
            self.hand_over_stream(&shown, &mut stream);
            return;
        }
        self.bytes(&shown, Cow::Owned(bytes), 0);
    }

    /// Bytes in memory (a whole file or member): unfolds them if they are an archive.
    pub fn bytes(&mut self, path: &[String], bytes: Cow<'_, [u8]>, depth: usize) {
        let Some(kind) = container(&bytes) else { return self.hand_over(path, bytes) };
        if depth >= self.limits.max_depth {
            self.visitor.warning(
                path,
                format!("archive nested more than {} deep: not opened, scanned as raw bytes", self.limits.max_depth),
            );
            return self.hand_over(path, bytes);
        }
        let result = match kind {
            Container::Zip => self.zip(path, Cursor::new(&bytes[..]), depth),
            Container::Gzip => self.gzip(path, &bytes, depth),
            Container::Tar => self.tar(path, &bytes, depth),
            Container::AssemblyStore => self.assembly_store(path, &bytes, depth),
            Container::Xalz => self.xalz(path, &bytes, depth),
            Container::ElfPayload => self.elf_payload(path, &bytes, depth),
        };
        if let Err(message) = result {
            // A container that does not open may still hold stored (uncompressed) members:
            // the raw-byte pass sees those.
            self.visitor.warning(path, format!("{message}; scanned as raw bytes"));
            self.hand_over(path, bytes);
        }
    }

    /// Counts one member against the entry cap; false once it, or the byte cap, is reached,
    /// or the run is stopped by its budget.
    fn admit(&mut self, path: &[String]) -> bool {
        if !self.running(path) {
            return false;
        }
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
        self.hand_over_stream(path, &mut stream);
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
                self.bytes(&inner, Cow::Owned(member), depth + 1);
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
            self.bytes(&inner, Cow::Owned(member), depth + 1);
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
                        self.hand_over(path, Cow::Borrowed(rest));
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
                self.bytes(&inner, Cow::Owned(member), depth + 1);
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

/// A stream handed over under the run's budget: it ends early where the bytes left or the time
/// run out, and says which.
struct Metered<'r> {
    inner: &'r mut dyn Read,
    read: u64,
    /// Bytes the budget leaves; `None`: no byte budget.
    allowed: Option<u64>,
    deadline: Option<Instant>,
    budget: Budget,
    cut: Option<Stop>,
}

impl Read for Metered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cut.is_some() || buf.is_empty() {
            return Ok(0);
        }
        if let (Some(deadline), Some(time)) = (self.deadline, self.budget.time)
            && Instant::now() >= deadline
        {
            self.cut = Some(Stop::Time(time));
            return Ok(0);
        }
        let mut want = buf.len();
        if let (Some(allowed), Some(limit)) = (self.allowed, self.budget.bytes) {
            let left = allowed.saturating_sub(self.read);
            if left == 0 {
                // At the budget: the stream was cut only if it had more to give.
                let mut probe = [0u8; 1];
                if self.inner.read(&mut probe)? > 0 {
                    self.cut = Some(Stop::Bytes(limit));
                }
                return Ok(0);
            }
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let count = self.inner.read(&mut buf[..want])?;
        self.read = self.read.saturating_add(count as u64);
        Ok(count)
    }
}

#[cfg(test)]
mod tests;
