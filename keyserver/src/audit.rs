//! Audit log: one JSON Lines record per authentication attempt and per sign request.
//!
//! Each record is written, flushed and synced to disk before the caller sends its response,
//! so a signature never leaves the server without a durable record of it. The file is opened
//! for appending and created with mode 0600. Writes block, so callers run them on a blocking
//! thread.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::mechanism::MechanismType;
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

/// Errors from opening or writing the audit log.
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
}

/// The kind of audited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditEvent {
    /// A Hello carrying a credential.
    Authenticate,
    /// A Sign request.
    Sign,
}

/// The outcome of an audited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// The operation succeeded.
    Ok,
    /// The policy or the request's form rejected the operation.
    Refused,
    /// The operation was allowed but the backend failed.
    Failed,
}

/// Whether a sign request carried raw data or a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// `SignInput::Data`.
    Data,
    /// `SignInput::Digest`.
    Digest,
}

/// One line of the audit log. It has no field for a KeySecret, a PIN or the signed bytes.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time with microseconds.
    pub time: String,
    /// Kind of operation.
    pub event: AuditEvent,
    /// KeyId presented by the client.
    pub key_id: String,
    /// Client's remote IP address and port.
    pub client: String,
    /// Policy token name of the key.
    pub token: Option<String>,
    /// Policy key name requested.
    pub key: Option<String>,
    /// Mechanism name such as `CKM_ECDSA`, or its hex value if unknown.
    pub mechanism: Option<String>,
    /// Kind of sign input.
    pub input: Option<InputKind>,
    /// Hex SHA-256 of the sign input bytes as received.
    pub data_sha256: Option<String>,
    /// Hex SHA-256 of the signature returned.
    pub signature_sha256: Option<String>,
    /// Outcome.
    pub result: AuditResult,
    /// Reason for a refusal or failure.
    pub reason: Option<String>,
    /// Time from receiving the request to writing this record, in microseconds.
    pub latency_us: u64,
}

impl AuditRecord {
    /// Starts a record of `event` by `key_id` from `client`, timestamped now, with result
    /// [`AuditResult::Ok`] and every optional field empty.
    pub fn new(event: AuditEvent, key_id: &str, client: std::net::SocketAddr) -> Self {
        Self {
            time: now_rfc3339(),
            event,
            key_id: key_id.to_owned(),
            client: client.to_string(),
            token: None,
            key: None,
            mechanism: None,
            input: None,
            data_sha256: None,
            signature_sha256: None,
            result: AuditResult::Ok,
            reason: None,
            latency_us: 0,
        }
    }
}

/// Formats the current UTC time as RFC 3339 with microseconds, such as
/// `2026-12-04T16:30:00.123456Z`.
pub fn now_rfc3339() -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::now_utc()
        .format(&format)
        .expect("a UTC date of this era formats with a fixed description")
}

/// Returns the `CKM_*` name of `mechanism`, or its value as `0x…` hex if cryptoki does not
/// know it.
pub fn mechanism_name(mechanism: u64) -> String {
    match MechanismType::try_from(mechanism) {
        Ok(known) => known.to_string(),
        Err(_) => format!("{mechanism:#x}"),
    }
}

/// Returns the hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// An append-only JSON Lines file shared by all requests.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    file: File,
    /// Set after a failed write, which may have left a partial line behind.
    damaged: bool,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600 if it does not exist.
    ///
    /// # Errors
    ///
    /// [`AuditError::Open`] if the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        let state = LogState {
            file,
            damaged: false,
        };
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(state),
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line, then flushes and syncs the file. Blocks.
    ///
    /// # Errors
    ///
    /// [`AuditError::Write`] if writing or syncing fails. The caller must then withhold
    /// the result of the audited operation.
    pub fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).expect("an audit record always serializes");
        line.push(b'\n');
        // The guarded state is a file handle and a flag, both still usable after a panic
        // elsewhere, so a poisoned lock is recovered.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.damaged {
            line.insert(0, b'\n');
        }
        let outcome = append(&mut state.file, &line);
        state.damaged = outcome.is_err();
        outcome.map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

fn append(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    file.write_all(line)?;
    file.flush()?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sign_record() -> AuditRecord {
        let client = "127.0.0.1:50000".parse().unwrap();
        let mut record = AuditRecord::new(AuditEvent::Sign, "kr_0123456789abcdef", client);
        record.token = Some("demo".into());
        record.key = Some("release-rsa".into());
        record.mechanism = Some(mechanism_name(cryptoki_sys::CKM_SHA256_RSA_PKCS));
        record.input = Some(InputKind::Digest);
        record.data_sha256 = Some(sha256_hex(b"digest"));
        record.signature_sha256 = Some(sha256_hex(b"signature"));
        record.latency_us = 1234;
        record
    }

    #[test]
    fn record_json_shape() {
        let value = serde_json::to_value(sign_record()).unwrap();

        let object = value.as_object().unwrap();
        let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
        fields.sort_unstable();
        let expected = [
            "client",
            "data_sha256",
            "event",
            "input",
            "key",
            "key_id",
            "latency_us",
            "mechanism",
            "reason",
            "result",
            "signature_sha256",
            "time",
            "token",
        ];
        assert_eq!(fields, expected);
        assert_eq!(value["event"], "sign");
        assert_eq!(value["input"], "digest");
        assert_eq!(value["result"], "ok");
        assert_eq!(value["mechanism"], "CKM_SHA256_RSA_PKCS");
        assert_eq!(value["client"], "127.0.0.1:50000");
        assert_eq!(value["reason"], serde_json::Value::Null);
        assert_eq!(value["latency_us"], 1234);
    }

    #[test]
    fn authenticate_record_has_nulls() {
        let client = "[::1]:4000".parse().unwrap();
        let mut record = AuditRecord::new(AuditEvent::Authenticate, "kr_x", client);
        record.result = AuditResult::Refused;
        record.reason = Some("authentication failed".into());

        let value = serde_json::to_value(record).unwrap();

        assert_eq!(value["event"], "authenticate");
        assert_eq!(value["result"], "refused");
        assert_eq!(value["key"], serde_json::Value::Null);
        assert_eq!(value["client"], "[::1]:4000");
    }

    #[test]
    fn time_format_has_microseconds() {
        let time = now_rfc3339();

        assert_eq!(time.len(), "2026-12-04T16:30:00.123456Z".len(), "{time}");
        assert!(time.ends_with('Z'));
        assert_eq!(&time[10..11], "T");
        assert_eq!(&time[19..20], ".");
    }

    #[test]
    fn mechanism_name_known_and_unknown() {
        assert_eq!(mechanism_name(cryptoki_sys::CKM_ECDSA), "CKM_ECDSA");
        assert_eq!(mechanism_name(0x8000_1234), "0x80001234");
    }

    #[test]
    fn log_appends_lines_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();

        log.write(&sign_record()).unwrap();
        log.write(&sign_record()).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["key"], "release-rsa");
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn log_record_never_holds_secret() {
        let secret = "3f1c5a0e9b7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";
        let client = "127.0.0.1:1".parse().unwrap();
        let record = AuditRecord::new(AuditEvent::Authenticate, "kr_0123456789abcdef", client);

        let line = serde_json::to_string(&record).unwrap();

        assert!(!line.contains(secret));
        assert!(!line.contains("secret"));
    }

    #[test]
    fn log_open_missing_folder_names_path() {
        let err = AuditLog::open(Path::new("/nonexistent/keyrelay/audit.jsonl")).unwrap_err();

        assert!(
            err.to_string()
                .contains("/nonexistent/keyrelay/audit.jsonl")
        );
    }
}
