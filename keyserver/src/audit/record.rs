//! The audit record: one JSON object per line, with the fields an incident responder needs to
//! tie a signature to a request, a client and a calling process.

use std::net::SocketAddr;

use cryptoki::mechanism::MechanismType;
use keyrelay_protocol::{CallerContext, MechanismParameter};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// The kind of audited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditEvent {
    /// A Hello carrying a credential.
    Authenticate,
    /// A Sign request.
    Sign,
    /// A record signed with the audit key that vouches for the chain up to it.
    Anchor,
}

/// The outcome of an audited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// `SignInput::Data`.
    Data,
    /// `SignInput::Digest`.
    Digest,
}

/// The signed part of an anchor record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Why the anchor was written: `start`, `reload`, `interval`, `rotate` or `stop`.
    pub cause: String,
    /// Hex SHA-256 of the policy file in force.
    pub policy_sha256: String,
    /// Hex Ed25519 public key of the audit key.
    pub public_key: String,
    /// Hex Ed25519 signature by the audit key over the anchor's seq, time, prev_sha256,
    /// cause and policy hash.
    pub signature: String,
}

/// One line of the audit log. It has no field for a KeySecret, a PIN or the signed bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time with microseconds.
    pub time: String,
    /// Position in the chain, counting from 0 across rotated files.
    pub seq: u64,
    /// Hex SHA-256 of the previous line without its newline; 64 zeros for the first record.
    pub prev_sha256: String,
    /// Kind of operation.
    pub event: AuditEvent,
    /// KeyId presented by the client.
    pub key_id: Option<String>,
    /// Client's remote IP address and port.
    pub client: Option<String>,
    /// The calling process as the client reports it; the server cannot verify it.
    pub caller: Option<CallerContext>,
    /// Policy token name of the key.
    pub token: Option<String>,
    /// Policy key name requested.
    pub key: Option<String>,
    /// Hex SHA-256 of the DER certificate stored with the key, if the token has one.
    pub certificate_sha256: Option<String>,
    /// Mechanism name such as `CKM_ECDSA`, or its hex value if unknown.
    pub mechanism: Option<String>,
    /// Mechanism parameter, with CKM_* and CKG_* names.
    pub mechanism_parameter: Option<serde_json::Value>,
    /// Kind of sign input.
    pub input: Option<InputKind>,
    /// Hex SHA-256 of the sign input bytes as received: the data, or the digest itself.
    pub data_sha256: Option<String>,
    /// Hex SHA-256 of the signature returned.
    pub signature_sha256: Option<String>,
    /// Outcome.
    pub result: AuditResult,
    /// Reason for a refusal or failure.
    pub reason: Option<String>,
    /// Time from receiving the request to writing this record, in microseconds.
    pub latency_us: u64,
    /// Signature over the chain, on anchor records only.
    pub anchor: Option<Anchor>,
}

impl AuditRecord {
    /// Starts a record of `event` by `key_id` from `client`, timestamped now, with result
    /// [`AuditResult::Ok`] and every optional field empty. The log fills `seq` and
    /// `prev_sha256` when it writes the record.
    pub fn new(event: AuditEvent, key_id: &str, client: SocketAddr) -> Self {
        let mut record = Self::empty(event);
        record.key_id = Some(key_id.to_owned());
        record.client = Some(client.to_string());
        record
    }

    /// Starts a record with no client, timestamped now.
    pub fn empty(event: AuditEvent) -> Self {
        Self {
            time: now_rfc3339(),
            seq: 0,
            prev_sha256: String::new(),
            event,
            key_id: None,
            client: None,
            caller: None,
            token: None,
            key: None,
            certificate_sha256: None,
            mechanism: None,
            mechanism_parameter: None,
            input: None,
            data_sha256: None,
            signature_sha256: None,
            result: AuditResult::Ok,
            reason: None,
            latency_us: 0,
            anchor: None,
        }
    }
}

/// Formats the current UTC time as RFC 3339 with microseconds, such as
/// `2026-12-04T16:30:00.123456Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Formats `time`, which must be UTC, as RFC 3339 with microseconds.
pub fn format_rfc3339(time: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time.format(&format)
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

/// Describes a mechanism parameter for the audit log, or `None` if there is none.
pub fn parameter_json(parameter: &MechanismParameter) -> Option<serde_json::Value> {
    match parameter {
        MechanismParameter::None => None,
        MechanismParameter::RsaPss {
            hash,
            mgf,
            salt_len,
        } => Some(serde_json::json!({
            "hash": mechanism_name(*hash),
            "mgf": mgf_name(*mgf),
            "salt_len": salt_len,
        })),
        MechanismParameter::Eddsa { prehash, context } => Some(serde_json::json!({
            "prehash": prehash,
            "context": hex::encode(context),
        })),
    }
}

fn mgf_name(mgf: u64) -> String {
    use cryptoki_sys as ck;
    let name = match mgf {
        ck::CKG_MGF1_SHA1 => "CKG_MGF1_SHA1",
        ck::CKG_MGF1_SHA224 => "CKG_MGF1_SHA224",
        ck::CKG_MGF1_SHA256 => "CKG_MGF1_SHA256",
        ck::CKG_MGF1_SHA384 => "CKG_MGF1_SHA384",
        ck::CKG_MGF1_SHA512 => "CKG_MGF1_SHA512",
        _ => return format!("{mgf:#x}"),
    };
    name.to_owned()
}
