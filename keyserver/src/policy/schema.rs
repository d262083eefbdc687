//! Serde image of the policy file, before validation.
//!
//! Every table rejects unknown fields. Fields that later checks refer to are [`Spanned`], so a
//! validation error can name the line the administrator has to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub server: RawServer,
    #[serde(default)]
    pub tokens: BTreeMap<String, Spanned<RawToken>>,
    #[serde(default)]
    pub keys: BTreeMap<String, Spanned<RawKey>>,
    #[serde(default)]
    pub clients: Vec<Spanned<RawClient>>,
    pub audit: Spanned<RawAudit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub signing_key: String,
    pub anchor_interval_seconds: Option<Spanned<u32>>,
    pub max_file_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    pub certificate_chain: String,
    pub private_key: String,
    pub audit_log: String,
    pub max_input_len: Option<Spanned<u32>>,
    pub sessions_per_token: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub module: String,
    pub label: Spanned<String>,
    pub pin_file: Option<Spanned<String>>,
    pub pin_env: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub token: Spanned<String>,
    pub label: Option<Spanned<String>>,
    pub id: Option<Spanned<String>>,
    pub environment: Spanned<String>,
    pub mechanisms: Option<Spanned<Vec<Spanned<String>>>>,
    pub digests: Option<Spanned<Vec<Spanned<String>>>>,
    pub not_before: Option<Spanned<Datetime>>,
    pub not_after: Option<Spanned<Datetime>>,
    pub networks: Option<Spanned<Vec<Spanned<String>>>>,
    pub signatures_per_minute: Option<Spanned<u32>>,
    pub signatures_per_day: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub key_id: Spanned<String>,
    pub secret_sha256: Spanned<String>,
    pub keys: Spanned<Vec<Spanned<String>>>,
    pub environment: Spanned<String>,
    pub created: Option<Spanned<Datetime>>,
    pub mechanisms: Option<Spanned<Vec<Spanned<String>>>>,
    pub digests: Option<Spanned<Vec<Spanned<String>>>>,
    pub not_before: Option<Spanned<Datetime>>,
    pub not_after: Option<Spanned<Datetime>>,
    pub networks: Option<Spanned<Vec<Spanned<String>>>>,
    pub signatures_per_minute: Option<Spanned<u32>>,
    pub signatures_per_day: Option<Spanned<u32>>,
}

/// The access rules shared by keys and clients, moved out of either entry.
///
/// The fields are repeated in [`RawKey`] and [`RawClient`] because serde cannot combine
/// `flatten` with `deny_unknown_fields`.
#[derive(Debug, Default)]
pub(super) struct RawRules {
    pub mechanisms: Option<Spanned<Vec<Spanned<String>>>>,
    pub digests: Option<Spanned<Vec<Spanned<String>>>>,
    pub not_before: Option<Spanned<Datetime>>,
    pub not_after: Option<Spanned<Datetime>>,
    pub networks: Option<Spanned<Vec<Spanned<String>>>>,
    pub signatures_per_minute: Option<Spanned<u32>>,
    pub signatures_per_day: Option<Spanned<u32>>,
}

macro_rules! take_rules {
    ($raw:expr) => {
        RawRules {
            mechanisms: $raw.mechanisms.take(),
            digests: $raw.digests.take(),
            not_before: $raw.not_before.take(),
            not_after: $raw.not_after.take(),
            networks: $raw.networks.take(),
            signatures_per_minute: $raw.signatures_per_minute.take(),
            signatures_per_day: $raw.signatures_per_day.take(),
        }
    };
}

impl RawKey {
    /// Moves the access rules out of the entry.
    pub fn take_rules(&mut self) -> RawRules {
        take_rules!(self)
    }
}

impl RawClient {
    /// Moves the access rules out of the entry.
    pub fn take_rules(&mut self) -> RawRules {
        take_rules!(self)
    }
}

/// Reads `listen`, with an error that shows the expected form.
fn socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {text:?}: expected IP:PORT, such as 127.0.0.1:4433 or [::1]:4433"
        ))
    })
}
