//! `keyserver audit find`: finds the sign records that produced a signature or signed a
//! digest.
//!
//! A signature file may be the raw signature, or any DER structure that contains it, such as
//! the PKCS#7 that `osslsigncode extract-signature` writes or a jar's `META-INF/*.RSA`. Every
//! OCTET STRING and BIT STRING in it is a candidate. A DER ECDSA-Sig-Value is also tried as
//! the raw `r || s` that PKCS#11 returns, for P-256, P-384 and P-521 sizes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::record::{AuditEvent, AuditRecord};
use super::{AuditError, read_lines, sha256_hex};
use crate::digest_info;
use crate::policy::DigestAlgorithm;

/// Deepest DER nesting searched for signatures.
const MAX_DER_DEPTH: usize = 32;

/// Length in bytes of each half of a raw ECDSA signature, for P-256, P-384 and P-521.
const ECDSA_HALF_LENS: [usize; 3] = [32, 48, 66];

/// Reads the hash field of a record that a query compares.
type RecordField = fn(&AuditRecord) -> Option<&String>;

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindQuery {
    /// Bytes of a signature file.
    Signature(Vec<u8>),
    /// A digest that was signed.
    Digest(Vec<u8>),
}

impl FindQuery {
    /// Reads a signature file, decoding PEM if the file is PEM.
    ///
    /// # Errors
    ///
    /// [`AuditError::SignatureFile`] if the file cannot be read.
    pub fn signature_file(path: &Path) -> Result<Self, AuditError> {
        let bytes = std::fs::read(path).map_err(|source| AuditError::SignatureFile {
            path: path.to_owned(),
            source,
        })?;
        let decoded = pem::parse(&bytes).map(|block| block.into_contents());
        Ok(Self::Signature(decoded.unwrap_or(bytes)))
    }

    /// The SHA-256 values a matching record carries, and the field that carries them.
    fn hashes(&self) -> (BTreeSet<String>, RecordField) {
        match self {
            Self::Signature(bytes) => {
                // The file itself may be the signature: raw, or a DER ECDSA-Sig-Value such
                // as `openssl pkeyutl -sign` writes.
                let mut hashes = BTreeSet::new();
                add_signature_forms(bytes, &mut hashes);
                collect_der_candidates(bytes, 0, &mut hashes);
                (hashes, |record| record.signature_sha256.as_ref())
            }
            Self::Digest(digest) => {
                let mut hashes = BTreeSet::from([sha256_hex(digest)]);
                if let Some(algorithm) = DigestAlgorithm::from_output_len(digest.len()) {
                    hashes.insert(sha256_hex(&digest_info::encode(algorithm, digest)));
                }
                (hashes, |record| record.data_sha256.as_ref())
            }
        }
    }
}

/// One record found, as it appears in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// File that holds the record.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The record's JSON text.
    pub text: String,
}

/// Returns the sign records in `files` that match `query`.
///
/// # Errors
///
/// [`AuditError::Open`] if a file cannot be read.
pub fn find(files: &[PathBuf], query: &FindQuery) -> Result<Vec<Found>, AuditError> {
    let (hashes, field) = query.hashes();
    let mut found = Vec::new();
    for path in files {
        for (line, text) in read_lines(path)? {
            let Ok(record) = serde_json::from_str::<AuditRecord>(&text) else {
                continue;
            };
            let matches = record.event == AuditEvent::Sign
                && field(&record).is_some_and(|hash| hashes.contains(hash));
            if matches {
                let path = path.clone();
                found.push(Found { path, line, text });
            }
        }
    }
    Ok(found)
}

/// Adds the hash of every OCTET STRING and BIT STRING inside `der`, and of the raw forms of
/// DER ECDSA signatures, to `hashes`. Stops quietly at anything that is not DER.
fn collect_der_candidates(der: &[u8], depth: usize, hashes: &mut BTreeSet<String>) {
    if depth > MAX_DER_DEPTH {
        return;
    }
    let mut rest = der;
    while let Some((tag, contents, next)) = split_tlv(rest) {
        match tag {
            0x04 => add_signature_forms(contents, hashes),
            0x03 if !contents.is_empty() => add_signature_forms(&contents[1..], hashes),
            _ => {}
        }
        let constructed = tag & 0x20 != 0;
        if constructed || tag == 0x04 {
            collect_der_candidates(contents, depth + 1, hashes);
        }
        rest = next;
    }
}

fn add_signature_forms(bytes: &[u8], hashes: &mut BTreeSet<String>) {
    hashes.insert(sha256_hex(bytes));
    let Some((r, s)) = ecdsa_integers(bytes) else {
        return;
    };
    for half in ECDSA_HALF_LENS {
        if r.len() <= half && s.len() <= half {
            let mut raw = vec![0; 2 * half];
            raw[half - r.len()..half].copy_from_slice(r);
            raw[2 * half - s.len()..].copy_from_slice(s);
            hashes.insert(sha256_hex(&raw));
        }
    }
}

/// Returns `r` and `s`, without leading zeros, if `bytes` is a DER ECDSA-Sig-Value.
fn ecdsa_integers(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, []) = split_tlv(bytes)? else {
        return None;
    };
    let (0x02, r, rest) = split_tlv(body)? else {
        return None;
    };
    let (0x02, s, []) = split_tlv(rest)? else {
        return None;
    };
    let trim = |v: &'_ [u8]| -> usize { v.iter().take_while(|b| **b == 0).count() };
    Some((&r[trim(r)..], &s[trim(s)..]))
}

/// Splits one DER element off `bytes`: its tag, its contents and the rest. Only single-byte
/// tags and definite lengths of up to four bytes are read.
fn split_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_string_inside_sequence_found() {
        let signature = [7u8; 5];
        let der = [0x30, 0x07, 0x04, 0x05, 7, 7, 7, 7, 7];
        let mut hashes = BTreeSet::new();

        collect_der_candidates(&der, 0, &mut hashes);

        assert!(hashes.contains(&sha256_hex(&signature)));
    }

    #[test]
    fn ecdsa_der_signature_yields_raw_form() {
        let der = [0x30, 0x08, 0x02, 0x02, 0x00, 0x81, 0x02, 0x02, 0x01, 0x02];
        let mut raw = vec![0u8; 64];
        raw[31] = 0x81;
        raw[62] = 0x01;
        raw[63] = 0x02;
        let mut hashes = BTreeSet::new();

        add_signature_forms(&der, &mut hashes);

        assert!(hashes.contains(&sha256_hex(&raw)));
    }

    #[test]
    fn bare_ecdsa_signature_file_yields_raw_form() {
        let der = vec![0x30, 0x08, 0x02, 0x02, 0x00, 0x81, 0x02, 0x02, 0x01, 0x02];
        let mut raw = vec![0u8; 64];
        raw[31] = 0x81;
        raw[62] = 0x01;
        raw[63] = 0x02;

        let (hashes, _) = FindQuery::Signature(der).hashes();

        assert!(hashes.contains(&sha256_hex(&raw)));
    }

    #[test]
    fn long_form_length_read() {
        let mut der = vec![0x04, 0x81, 0x80];
        der.extend_from_slice(&[1; 128]);

        let (tag, contents, rest) = split_tlv(&der).unwrap();

        assert_eq!(tag, 0x04);
        assert_eq!(contents.len(), 128);
        assert!(rest.is_empty());
    }
}
