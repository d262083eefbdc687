//! File helpers: fresh fixture folders, owner-only files for secrets, and random PINs.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, ensure};
use ring::rand::{SecureRandom, SystemRandom};

/// Permission bits for files that hold PINs or private keys: read and write for the owner.
const OWNER_ONLY: u32 = 0o600;

/// Creates `dir` if needed, checks that it is empty, and returns its absolute path.
pub(crate) fn prepare_empty_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)
        .with_context(|| format!("failed to create fixture folder {}", dir.display()))?;
    let absolute = dir
        .canonicalize()
        .with_context(|| format!("failed to resolve fixture folder {}", dir.display()))?;

    let mut entries = fs::read_dir(&absolute)
        .with_context(|| format!("failed to read fixture folder {}", absolute.display()))?;
    ensure!(
        entries.next().is_none(),
        "fixture folder {} is not empty: pass a new or empty folder",
        absolute.display()
    );
    Ok(absolute)
}

/// Creates `dir` and its parents if needed.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create folder {}", dir.display()))
}

/// Writes `contents` to `path`, replacing any existing file.
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

/// Writes `contents` to `path` with mode 0600, replacing any existing file.
///
/// A new file is created with mode 0600, and an existing file gets mode 0600 before the
/// contents are written.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(OWNER_ONLY)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.set_permissions(Permissions::from_mode(OWNER_ONLY))
        .with_context(|| format!("failed to set mode 0600 on {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Returns `len` random bytes from the operating system as lowercase hex.
pub(crate) fn random_hex(len: usize) -> Result<String> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_file_mode_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();

        write_private_file(&path, b"new").unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn non_empty_folder_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("leftover"), b"").unwrap();

        let message = prepare_empty_dir(dir.path()).unwrap_err().to_string();
        assert!(message.contains("is not empty"), "{message}");
    }

    #[test]
    fn random_hex_length_and_uniqueness() {
        let first = random_hex(16).unwrap();
        let second = random_hex(16).unwrap();

        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
