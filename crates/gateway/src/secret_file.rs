//! Secrets the server keeps in files of its own (the key pepper, the audit signing key):
//! created once, readable by their owner only, never overwritten.

use std::{io::Write, path::Path};

/// Creates `path` with `contents`, mode 0600, failing if it exists.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
