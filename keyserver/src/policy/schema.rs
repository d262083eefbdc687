//! Serde image of the policy file, before validation.
//!
//! Every table rejects unknown fields. Fields that later checks refer to are [`Spanned`], so a
//! validation error can name the line the administrator has to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub key_id: Spanned<String>,
    pub secret_sha256: Spanned<String>,
    pub keys: Spanned<Vec<Spanned<String>>>,
}
