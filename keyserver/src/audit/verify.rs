//! `keyserver audit verify`: checks the hash chain, the sequence numbers and the anchor
//! signatures of one or more log files, and reports the first broken record.

use std::path::PathBuf;

use super::record::{AuditEvent, AuditRecord};
use super::{AuditError, GENESIS_SHA256, anchor, read_lines, sha256_hex};

/// Summary of a chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of files read.
    pub files: usize,
    /// Number of records.
    pub records: u64,
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Sequence number of the last record.
    pub last_seq: u64,
    /// Number of valid anchor records.
    pub anchors: u64,
    /// Records after the last anchor, which only the hash chain protects so far.
    pub unanchored: u64,
}

/// The previous record, as the next one must refer to it.
struct Previous {
    path: PathBuf,
    line: usize,
    seq: u64,
    sha256: String,
}

/// Verifies `files`, given oldest first, against the audit public key `public_key`.
///
/// # Errors
///
/// [`AuditError::Corrupt`] naming the first broken record, or [`AuditError::Open`].
pub fn verify(files: &[PathBuf], public_key: &[u8]) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        files: files.len(),
        records: 0,
        first_seq: 0,
        last_seq: 0,
        anchors: 0,
        unanchored: 0,
    };
    let mut previous: Option<Previous> = None;
    for path in files {
        for (line_number, line) in read_lines(path)? {
            let corrupt = |message: String| AuditError::Corrupt {
                path: path.clone(),
                line: line_number,
                message,
            };
            let record: AuditRecord = serde_json::from_str(&line)
                .map_err(|e| corrupt(format!("not an audit record: {e}")))?;
            check_link(&record, previous.as_ref()).map_err(|e| match e {
                LinkError::Here(message) => corrupt(message),
                LinkError::Previous(message) => {
                    let previous = previous.as_ref().expect("set when the link is checked");
                    AuditError::Corrupt {
                        path: previous.path.clone(),
                        line: previous.line,
                        message,
                    }
                }
            })?;
            if record.event == AuditEvent::Anchor {
                check_anchor(&record, public_key).map_err(corrupt)?;
                report.anchors += 1;
                report.unanchored = 0;
            } else {
                report.unanchored += 1;
            }
            if report.records == 0 {
                report.first_seq = record.seq;
            }
            report.records += 1;
            report.last_seq = record.seq;
            previous = Some(Previous {
                path: path.clone(),
                line: line_number,
                seq: record.seq,
                sha256: sha256_hex(line.as_bytes()),
            });
        }
    }
    Ok(report)
}

enum LinkError {
    /// The current record is at fault.
    Here(String),
    /// The previous record no longer hashes to what the current one recorded.
    Previous(String),
}

fn check_link(record: &AuditRecord, previous: Option<&Previous>) -> Result<(), LinkError> {
    let Some(previous) = previous else {
        if record.seq == 0 && record.prev_sha256 != GENESIS_SHA256 {
            let message = "the first record of the chain must have prev_sha256 of 64 zeros";
            return Err(LinkError::Here(message.into()));
        }
        return Ok(());
    };
    if record.seq != previous.seq + 1 {
        return Err(LinkError::Here(format!(
            "sequence number {} follows {}: records were removed, inserted or reordered",
            record.seq, previous.seq
        )));
    }
    if record.prev_sha256 != previous.sha256 {
        return Err(LinkError::Previous(format!(
            "record {} was changed: its SHA-256 {} differs from prev_sha256 {} of record {}",
            previous.seq, previous.sha256, record.prev_sha256, record.seq
        )));
    }
    Ok(())
}

fn check_anchor(record: &AuditRecord, public_key: &[u8]) -> Result<(), String> {
    let anchor_fields = record
        .anchor
        .as_ref()
        .ok_or_else(|| format!("anchor record {} has no anchor field", record.seq))?;
    if anchor_fields.public_key != hex::encode(public_key) {
        return Err(format!(
            "anchor record {} is signed by key {}, not by the audit key given",
            record.seq, anchor_fields.public_key
        ));
    }
    let message =
        anchor::signed_message(record, &anchor_fields.cause, &anchor_fields.policy_sha256);
    let signature = hex::decode(&anchor_fields.signature).unwrap_or_default();
    if !anchor::verify(public_key, &message, &signature) {
        return Err(format!(
            "the signature of anchor record {} is invalid: the anchor or the record before it \
             was changed",
            record.seq
        ));
    }
    Ok(())
}
