//! Audit log: one JSON Lines record per authentication attempt, per sign request and per
//! anchor, chained by hashes and anchored by signatures of the audit key.
//!
//! Each record is written, flushed and synced to disk before the caller sends its response,
//! so a signature never leaves the server without a durable record of it. A failed write is
//! cut back off the file, and the caller must withhold the result. The file is opened for
//! appending and created with mode 0600. Writes block, so callers run them on a blocking
//! thread.
//!
//! Every record carries its sequence number and the SHA-256 of the previous line. When the
//! file reaches `audit.max_file_bytes`, it is renamed to `NAME.YYYYMMDDTHHMMSS.ffffffZ` and the
//! chain continues in a new file that starts with a `rotate` anchor, so the rotated files and
//! the current one, in name order, form one chain.

mod anchor;
mod find;
mod record;
mod verify;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::signature::{Ed25519KeyPair, KeyPair};
use time::OffsetDateTime;
use time::macros::format_description;

pub use anchor::{generate as generate_key, load_public_key, load_signing_key};
pub use find::{FindQuery, Found, find};
pub use record::{
    Anchor, AuditEvent, AuditRecord, AuditResult, InputKind, format_rfc3339, mechanism_name,
    now_rfc3339, parameter_json, sha256_hex,
};
pub use verify::{VerifyReport, verify};

use crate::policy::AuditSettings;

/// `prev_sha256` of the first record of a chain.
pub const GENESIS_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors from opening, writing, reading or checking the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log file could not be opened or created.
    #[error(
        "cannot open audit log {}: {source}; check that its folder exists and is writable",
        path.display()
    )]
    Open {
        /// Path of the log.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record could not be written or synced.
    #[error("cannot write audit log {}: {source}", path.display())]
    Write {
        /// Path of the log.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An existing log file cannot be continued or checked.
    #[error("audit log {}:{line}: {message}", path.display())]
    Corrupt {
        /// Path of the log.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A signature file given to `audit find` cannot be read.
    #[error("cannot read signature file {}: {source}", path.display())]
    SignatureFile {
        /// Path of the signature file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The audit key file cannot be used.
    #[error("audit key {}: {message}", path.display())]
    Key {
        /// Path of the key file.
        path: PathBuf,
        /// What is wrong, without key material.
        message: String,
    },
}

/// An append-only, hash-chained JSON Lines file shared by all requests.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    key: Ed25519KeyPair,
    max_file_bytes: u64,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    /// `None` after a rotation failed to open the new file: every write then fails.
    file: Option<File>,
    /// Length of the file up to its last complete record.
    len: u64,
    /// Set after a failed write that could not be cut off the file.
    damaged: bool,
    next_seq: u64,
    prev_sha256: String,
    policy_sha256: String,
}

/// Where the chain stands at the end of an existing log.
struct ChainTail {
    len: u64,
    next_seq: u64,
    prev_sha256: String,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600 if it does not exist, and
    /// continues the chain from its last record or from the newest rotated file. A partial
    /// last line, left by a crash during a write that was never acknowledged, is cut off.
    ///
    /// # Errors
    ///
    /// [`AuditError::Open`], [`AuditError::Key`], or [`AuditError::Corrupt`] if the last
    /// record is not a chained audit record.
    pub fn open(
        path: &Path,
        settings: &AuditSettings,
        policy_sha256: &str,
    ) -> Result<Self, AuditError> {
        let key = anchor::load_signing_key(&settings.signing_key)?;
        let open_error = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let file = open_append(path).map_err(open_error)?;
        let tail = read_tail(path, &file)?;
        let state = LogState {
            file: Some(file),
            len: tail.len,
            damaged: false,
            next_seq: tail.next_seq,
            prev_sha256: tail.prev_sha256,
            policy_sha256: policy_sha256.to_owned(),
        };
        Ok(Self {
            path: path.to_owned(),
            key,
            max_file_bytes: settings.max_file_bytes,
            state: Mutex::new(state),
        })
    }

    /// Path of the current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line with its place in the chain, then flushes and syncs the
    /// file. Blocks.
    ///
    /// # Errors
    ///
    /// [`AuditError::Write`] if writing or syncing fails. The caller must then withhold
    /// the result of the audited operation.
    pub fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut state = self.lock();
        self.append(&mut state, record.clone())?;
        self.rotate_if_full(&mut state);
        Ok(())
    }

    /// Writes an anchor record signed with the audit key. `policy_sha256`, when given,
    /// replaces the policy hash recorded by later anchors. Blocks.
    ///
    /// # Errors
    ///
    /// [`AuditError::Write`].
    pub fn anchor(&self, cause: &str, policy_sha256: Option<&str>) -> Result<(), AuditError> {
        let mut state = self.lock();
        if let Some(hash) = policy_sha256 {
            state.policy_sha256 = hash.to_owned();
        }
        self.append_anchor(&mut state, cause)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // The guarded state is a file handle and chain counters that a panic cannot leave
        // half-updated, so a poisoned lock is recovered.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn append_anchor(&self, state: &mut LogState, cause: &str) -> Result<(), AuditError> {
        let mut record = AuditRecord::empty(AuditEvent::Anchor);
        record.seq = state.next_seq;
        record.prev_sha256 = state.prev_sha256.clone();
        let message = anchor::signed_message(&record, cause, &state.policy_sha256);
        record.anchor = Some(Anchor {
            cause: cause.to_owned(),
            policy_sha256: state.policy_sha256.clone(),
            public_key: hex::encode(self.key.public_key().as_ref()),
            signature: hex::encode(self.key.sign(&message).as_ref()),
        });
        self.append(state, record)
    }

    fn append(&self, state: &mut LogState, mut record: AuditRecord) -> Result<(), AuditError> {
        let write_error = |source| AuditError::Write {
            path: self.path.clone(),
            source,
        };
        let file = state
            .file
            .as_mut()
            .ok_or_else(|| write_error(std::io::Error::other("no audit file is open")))?;
        if state.damaged {
            file.set_len(state.len).map_err(write_error)?;
            state.damaged = false;
        }
        record.seq = state.next_seq;
        record.prev_sha256 = state.prev_sha256.clone();
        let mut line = serde_json::to_vec(&record).expect("an audit record always serializes");
        let hash = sha256_hex(&line);
        line.push(b'\n');
        if let Err(error) = append_synced(file, &line) {
            // Cut off what part of the line reached the file, so the chain stays intact.
            state.damaged = file.set_len(state.len).is_err();
            return Err(write_error(error));
        }
        state.len += line.len() as u64;
        state.next_seq += 1;
        state.prev_sha256 = hash;
        Ok(())
    }

    /// Rotates the file once it reached the size limit. A failure is logged: the record
    /// that triggered it is already durable.
    fn rotate_if_full(&self, state: &mut LogState) {
        if state.len < self.max_file_bytes {
            return;
        }
        let rotated = rotated_name(&self.path, OffsetDateTime::now_utc());
        if let Err(error) = std::fs::rename(&self.path, &rotated) {
            tracing::error!(%error, path = %self.path.display(), "cannot rotate the audit log");
            return;
        }
        state.file = None;
        match open_append(&self.path) {
            Ok(file) => {
                state.file = Some(file);
                state.len = 0;
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(),
                    "cannot create a new audit log after rotation; signing stops");
                return;
            }
        }
        tracing::info!(rotated = %rotated.display(), "audit log rotated");
        if let Err(error) = self.append_anchor(state, "rotate") {
            tracing::error!(%error, "cannot write the rotate anchor");
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn append_synced(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    file.write_all(line)?;
    file.flush()?;
    file.sync_data()
}

/// Returns the name a log file gets when it is rotated at `time`.
fn rotated_name(path: &Path, time: OffsetDateTime) -> PathBuf {
    let format =
        format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:6]Z");
    let stamp = time.format(&format).expect("a UTC time formats");
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{stamp}"));
    PathBuf::from(name)
}

/// Lists the rotated files of the log at `path`, oldest first, followed by `path` itself if
/// it exists.
pub fn chain_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let prefix = format!(
        "{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| is_rotated_name(p, &prefix))
        .collect();
    files.sort();
    if path.is_file() {
        files.push(path.to_owned());
    }
    Ok(files)
}

fn is_rotated_name(path: &Path, prefix: &str) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.strip_prefix(prefix)
        .is_some_and(|stamp| stamp.len() == 23 && stamp.ends_with('Z'))
}

/// Reads the complete lines of a log file, with their 1-based line numbers.
pub fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, AuditError> {
    let text = std::fs::read(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    let complete = match text.iter().rposition(|b| *b == b'\n') {
        Some(end) => &text[..=end],
        None => &[][..],
    };
    Ok(String::from_utf8_lossy(complete)
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.to_owned()))
        .collect())
}

/// Finds where the chain stands in `path`, cutting off a partial last line.
fn read_tail(path: &Path, file: &File) -> Result<ChainTail, AuditError> {
    let open_error = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let metadata = file.metadata().map_err(open_error)?;
    if !metadata.is_file() {
        // A device such as /dev/full has no records to continue from.
        return Ok(ChainTail {
            len: 0,
            next_seq: 0,
            prev_sha256: GENESIS_SHA256.to_owned(),
        });
    }
    let size = metadata.len();
    let lines = read_lines(path)?;
    let complete_len: u64 = lines.iter().map(|(_, l)| l.len() as u64 + 1).sum();
    if complete_len < size {
        tracing::warn!(path = %path.display(), bytes = size - complete_len,
            "cutting off a partial last audit record left by an interrupted write");
        file.set_len(complete_len).map_err(open_error)?;
    }
    let last = match lines.last() {
        Some(last) => Some((path.to_owned(), last.clone())),
        None => last_rotated_line(path)?,
    };
    let Some((source, (line_number, line))) = last else {
        return Ok(ChainTail {
            len: 0,
            next_seq: 0,
            prev_sha256: GENESIS_SHA256.to_owned(),
        });
    };
    let record: AuditRecord = serde_json::from_str(&line).map_err(|e| AuditError::Corrupt {
        path: source,
        line: line_number,
        message: format!("the last record is not a chained audit record ({e}); move the file aside to start a new chain"),
    })?;
    Ok(ChainTail {
        len: complete_len,
        next_seq: record.seq + 1,
        prev_sha256: sha256_hex(line.as_bytes()),
    })
}

type NumberedLine = (usize, String);

fn last_rotated_line(path: &Path) -> Result<Option<(PathBuf, NumberedLine)>, AuditError> {
    let files = chain_files(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    for file in files.iter().rev().filter(|f| f.as_path() != path) {
        if let Some(last) = read_lines(file)?.pop() {
            return Ok(Some((file.clone(), last)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
