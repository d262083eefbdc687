//! The policy file: which tokens the server opens, which keys it signs with, and which client
//! credentials may use which keys.
//!
//! [`Policy::load`] parses the TOML and checks everything that needs no token: field names and
//! types, cross-references, hex values and slot id collisions. Relative paths are resolved
//! against the folder that contains the policy file. PINs are read only when the backend opens
//! the tokens, through [`PinSource::read`].

mod pin;
mod rules;
mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keyrelay_protocol::{MAX_MESSAGE_LEN, slot_id_for_token};
use time::OffsetDateTime;
use toml::Spanned;

pub use pin::{Pin, PinSource};
pub use rules::{DigestAlgorithm, DigestSource, Quota, Rules, digest_source, mechanism_from_name};

use crate::auth::Verifier;
use schema::{RawAudit, RawClient, RawKey, RawPolicy, RawServer, RawToken};

/// Default for `server.max_input_len`, in bytes.
pub const DEFAULT_MAX_INPUT_LEN: u32 = 4096;

/// Default for `server.sessions_per_token`.
pub const DEFAULT_SESSIONS_PER_TOKEN: u32 = 4;

/// Upper bound of `server.max_input_len`: an encoded request must still fit in one message.
pub const MAX_INPUT_LEN_LIMIT: u32 = (MAX_MESSAGE_LEN - 4096) as u32;

/// Upper bound of `server.sessions_per_token`.
pub const SESSIONS_PER_TOKEN_LIMIT: u32 = 256;

/// Default for `audit.anchor_interval_seconds`: one signed anchor record per hour.
pub const DEFAULT_ANCHOR_INTERVAL_SECONDS: u32 = 3600;

/// Default for `audit.max_file_bytes`: the audit log rotates once it reaches 64 MiB.
pub const DEFAULT_MAX_AUDIT_FILE_BYTES: u64 = 64 << 20;

/// Smallest `audit.max_file_bytes`, so that a file always holds several records.
pub const MIN_AUDIT_FILE_BYTES: u64 = 4096;

/// Errors from loading a policy or reading a PIN it names.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// Path of the policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid policy file {}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// Path of the policy file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message, which names the field.
        message: String,
    },
    /// The file parsed but some values are invalid or inconsistent.
    #[error("invalid policy file {}: {}", path.display(), ProblemList(problems))]
    Invalid {
        /// Path of the policy file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
    /// A token's PIN file could not be read.
    #[error(
        "cannot read PIN file {} of token {token}: {source}; \
         check that it exists and that the keyserver may read it",
        path.display()
    )]
    PinFile {
        /// Token name.
        token: String,
        /// Path of the PIN file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A token's PIN variable is not set or not valid Unicode.
    #[error("environment variable {var} holding the PIN of token {token} is not set")]
    PinEnv {
        /// Token name.
        token: String,
        /// Name of the variable.
        var: String,
    },
    /// A token's PIN source is empty.
    #[error("the {source_name} holding the PIN of token {token} is empty")]
    PinEmpty {
        /// Token name.
        token: String,
        /// The PIN file or variable, as [`PinSource`] displays it.
        source_name: String,
    },
}

/// One invalid value in the policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the value.
    pub line: usize,
    /// Dotted path of the field, such as `keys.release-rsa.token`.
    pub field: String,
    /// Description of the fault and its fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A validated policy.
#[derive(Debug)]
pub struct Policy {
    /// Path the policy was loaded from.
    pub path: PathBuf,
    /// Settings of the `[server]` table.
    pub server: ServerSettings,
    /// Backend tokens by name.
    pub tokens: BTreeMap<String, TokenPolicy>,
    /// Signing keys by name.
    pub keys: BTreeMap<String, KeyPolicy>,
    /// Client credentials, in file order.
    pub clients: Vec<ClientPolicy>,
    /// Settings of the `[audit]` table.
    pub audit: AuditSettings,
}

/// The `[audit]` table, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// PKCS#8 PEM file of the Ed25519 key that signs anchor records.
    pub signing_key: PathBuf,
    /// Seconds between two periodic anchor records.
    pub anchor_interval_seconds: u32,
    /// Size in bytes from which the audit log rotates to a new file.
    pub max_file_bytes: u64,
}

/// The `[server]` table, with paths resolved.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub certificate_chain: PathBuf,
    /// PEM private key of the leaf certificate.
    pub private_key: PathBuf,
    /// JSON Lines audit log.
    pub audit_log: PathBuf,
    /// Maximum length in bytes of `SignInput::Data`.
    pub max_input_len: u32,
    /// Number of backend sessions opened on each token.
    pub sessions_per_token: u32,
}

/// One `[tokens.NAME]` table.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// PKCS#11 module path, or a bare file name for the dynamic loader to search.
    pub module: PathBuf,
    /// Backend token label that identifies the slot.
    pub label: String,
    /// Source of the user PIN.
    pub pin: PinSource,
}

/// One `[keys.NAME]` table.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// Name of the token that stores the key.
    pub token: String,
    /// How to find the private key on that token.
    pub locator: KeyLocator,
    /// Environment, such as `test` or `release`, that the key belongs to.
    pub environment: String,
    /// Rules every use of the key must satisfy.
    pub rules: Rules,
}

/// The attribute that identifies a private key on its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocator {
    /// CKA_LABEL, as UTF-8.
    Label(String),
    /// CKA_ID bytes.
    Id(Vec<u8>),
}

impl fmt::Display for KeyLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "CKA_LABEL \"{label}\""),
            Self::Id(id) => write!(f, "CKA_ID {}", hex::encode(id)),
        }
    }
}

/// One `[[clients]]` entry.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Public half of the credential.
    pub key_id: String,
    /// SHA-256 of the KeySecret.
    pub verifier: Verifier,
    /// Names of the keys the client may use.
    pub keys: BTreeSet<String>,
    /// Environment the client is bound to; all its keys belong to it.
    pub environment: String,
    /// Creation time of the credential, as `credential new` recorded it.
    pub created: Option<OffsetDateTime>,
    /// Rules every request of the client must satisfy.
    pub rules: Rules,
}

impl Policy {
    /// Reads and validates the policy file at `path`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Read`], [`PolicyError::Syntax`] or [`PolicyError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates policy `text` as if it had been read from `path`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Syntax`] or [`PolicyError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| syntax_error(text, path, &e))?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let mut validator = Validator {
            text,
            base_dir,
            problems: Vec::new(),
        };
        let policy = validator.policy(raw, path);
        if validator.problems.is_empty() {
            return Ok(policy);
        }
        validator.problems.sort_by_key(|p| p.line);
        Err(PolicyError::Invalid {
            path: path.to_owned(),
            problems: validator.problems,
        })
    }
}

fn syntax_error(text: &str, path: &Path, error: &toml::de::Error) -> PolicyError {
    let offset = error.span().map_or(0, |span| span.start);
    let (line, column) = line_and_column(text, offset);
    PolicyError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: error.message().to_owned(),
    }
}

/// Converts a byte offset into a 1-based line and column.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Collects every problem of one policy file rather than stopping at the first.
struct Validator<'a> {
    text: &'a str,
    base_dir: PathBuf,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn policy(&mut self, raw: RawPolicy, path: &Path) -> Policy {
        // Cross-references are checked against every declared name, so an invalid token or key
        // is reported once and not again by each entry that names it.
        let token_names: BTreeSet<String> = raw.tokens.keys().cloned().collect();
        let key_environments: BTreeMap<String, String> = raw
            .keys
            .iter()
            .map(|(name, key)| (name.clone(), key.get_ref().environment.get_ref().clone()))
            .collect();
        let server = self.server(raw.server);
        let tokens = self.tokens(raw.tokens);
        let keys = self.keys(raw.keys, &token_names);
        let clients = self.clients(raw.clients, &key_environments);
        let audit = self.audit(raw.audit);
        Policy {
            path: path.to_owned(),
            server,
            tokens,
            keys,
            clients,
            audit,
        }
    }

    fn problem<T>(&mut self, spanned: &Spanned<T>, field: String, message: impl Into<String>) {
        let (line, _) = line_and_column(self.text, spanned.span().start);
        self.problems.push(Problem {
            line,
            field,
            message: message.into(),
        });
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    fn server(&mut self, raw: RawServer) -> ServerSettings {
        let max_input_len = self.bounded(
            raw.max_input_len,
            "server.max_input_len",
            DEFAULT_MAX_INPUT_LEN,
            MAX_INPUT_LEN_LIMIT,
        );
        let sessions_per_token = self.bounded(
            raw.sessions_per_token,
            "server.sessions_per_token",
            DEFAULT_SESSIONS_PER_TOKEN,
            SESSIONS_PER_TOKEN_LIMIT,
        );
        ServerSettings {
            listen: raw.listen,
            certificate_chain: self.resolve(&raw.certificate_chain),
            private_key: self.resolve(&raw.private_key),
            audit_log: self.resolve(&raw.audit_log),
            max_input_len,
            sessions_per_token,
        }
    }

    fn audit(&mut self, raw: Spanned<RawAudit>) -> AuditSettings {
        let raw = raw.into_inner();
        let anchor_interval_seconds = self.bounded(
            raw.anchor_interval_seconds,
            "audit.anchor_interval_seconds",
            DEFAULT_ANCHOR_INTERVAL_SECONDS,
            u32::MAX,
        );
        let max_file_bytes = raw
            .max_file_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_AUDIT_FILE_BYTES, |v| *v.get_ref());
        if let Some(value) = &raw.max_file_bytes
            && *value.get_ref() < MIN_AUDIT_FILE_BYTES
        {
            let message = format!("must be at least {MIN_AUDIT_FILE_BYTES}");
            self.problem(value, "audit.max_file_bytes".to_owned(), message);
        }
        AuditSettings {
            signing_key: self.resolve(&raw.signing_key),
            anchor_interval_seconds,
            max_file_bytes,
        }
    }

    /// Returns the value of an optional integer setting, checking that it is in `1..=max`.
    fn bounded(&mut self, value: Option<Spanned<u32>>, field: &str, default: u32, max: u32) -> u32 {
        let Some(value) = value else {
            return default;
        };
        if !(1..=max).contains(value.get_ref()) {
            let message = format!("must be between 1 and {max}, not {}", value.get_ref());
            self.problem(&value, field.to_owned(), message);
        }
        *value.get_ref()
    }

    fn tokens(
        &mut self,
        raw: BTreeMap<String, Spanned<RawToken>>,
    ) -> BTreeMap<String, TokenPolicy> {
        let mut slot_owners: HashMap<u64, String> = HashMap::new();
        let mut tokens = BTreeMap::new();
        for (name, raw_token) in raw {
            let slot_id = slot_id_for_token(&name);
            if let Some(other) = slot_owners.insert(slot_id, name.clone()) {
                let message = format!(
                    "token names \"{other}\" and \"{name}\" map to the same slot id {slot_id}; \
                     rename one of them"
                );
                self.problem(&raw_token, format!("tokens.{name}"), message);
            }
            if let Some(token) = self.token(&name, raw_token) {
                tokens.insert(name, token);
            }
        }
        tokens
    }

    fn token(&mut self, name: &str, raw: Spanned<RawToken>) -> Option<TokenPolicy> {
        if raw.get_ref().label.get_ref().trim().is_empty() {
            let label = &raw.get_ref().label;
            self.problem(label, format!("tokens.{name}.label"), "must not be empty");
        }
        let pin = self.pin_source(name, &raw)?;
        let raw = raw.into_inner();
        Some(TokenPolicy {
            module: self.module_path(&raw.module),
            label: raw.label.into_inner(),
            pin,
        })
    }

    /// Resolves a module path. A bare file name is left for the dynamic loader to search.
    fn module_path(&self, module: &str) -> PathBuf {
        if module.contains('/') {
            self.resolve(module)
        } else {
            PathBuf::from(module)
        }
    }

    fn pin_source(&mut self, name: &str, raw: &Spanned<RawToken>) -> Option<PinSource> {
        let token = raw.get_ref();
        match (&token.pin_file, &token.pin_env) {
            (Some(file), None) => Some(PinSource::File(self.resolve(file.get_ref()))),
            (None, Some(var)) if var.get_ref().is_empty() => {
                self.problem(var, format!("tokens.{name}.pin_env"), "must not be empty");
                None
            }
            (None, Some(var)) => Some(PinSource::Env(var.get_ref().clone())),
            (Some(_), Some(var)) => {
                let message = "set either pin_file or pin_env, not both";
                self.problem(var, format!("tokens.{name}.pin_env"), message);
                None
            }
            (None, None) => {
                let message = "set pin_file (a file holding the PIN) or pin_env (a variable name)";
                self.problem(raw, format!("tokens.{name}"), message);
                None
            }
        }
    }

    fn keys(
        &mut self,
        raw: BTreeMap<String, Spanned<RawKey>>,
        token_names: &BTreeSet<String>,
    ) -> BTreeMap<String, KeyPolicy> {
        let mut keys = BTreeMap::new();
        for (name, raw_key) in raw {
            let mut raw_key = raw_key.into_inner();
            self.environment_name(&raw_key.environment, &format!("keys.{name}.environment"));
            let rules = self.rules(&format!("keys.{name}"), raw_key.take_rules());
            let token = &raw_key.token;
            if !token_names.contains(token.get_ref()) {
                let message = format!("no token \"{}\" in [tokens]", token.get_ref());
                self.problem(token, format!("keys.{name}.token"), message);
            }
            if let Some(locator) = self.locator(&name, &raw_key) {
                let key = KeyPolicy {
                    token: raw_key.token.into_inner(),
                    locator,
                    environment: raw_key.environment.into_inner(),
                    rules,
                };
                keys.insert(name, key);
            }
        }
        keys
    }

    fn locator(&mut self, name: &str, raw: &RawKey) -> Option<KeyLocator> {
        match (&raw.label, &raw.id) {
            (Some(label), None) => Some(KeyLocator::Label(label.get_ref().clone())),
            (None, Some(id)) => self.key_id_bytes(name, id).map(KeyLocator::Id),
            (Some(_), Some(id)) => {
                let message = "set either label or id, not both";
                self.problem(id, format!("keys.{name}.id"), message);
                None
            }
            (None, None) => {
                let message = "set label (the backend CKA_LABEL) or id (the backend CKA_ID, hex)";
                self.problem(&raw.token, format!("keys.{name}"), message);
                None
            }
        }
    }

    fn key_id_bytes(&mut self, name: &str, id: &Spanned<String>) -> Option<Vec<u8>> {
        match hex::decode(id.get_ref()) {
            Ok(bytes) if !bytes.is_empty() => Some(bytes),
            _ => {
                let message = format!("\"{}\" is not a non-empty hex string", id.get_ref());
                self.problem(id, format!("keys.{name}.id"), message);
                None
            }
        }
    }

    fn environment_name(&mut self, name: &Spanned<String>, field: &str) {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            let message = format!(
                "\"{}\" is not an environment name; use letters, digits, - and _, \
                 such as \"test\" or \"release\"",
                name.get_ref()
            );
            self.problem(name, field.to_owned(), message);
        }
    }

    fn clients(
        &mut self,
        raw: Vec<Spanned<RawClient>>,
        key_environments: &BTreeMap<String, String>,
    ) -> Vec<ClientPolicy> {
        let mut seen = BTreeSet::new();
        let mut clients = Vec::new();
        for (index, raw_client) in raw.into_iter().enumerate() {
            let raw_client = raw_client.into_inner();
            let key_id = &raw_client.key_id;
            if !seen.insert(key_id.get_ref().clone()) {
                let message = format!("duplicate key_id \"{}\"", key_id.get_ref());
                self.problem(key_id, format!("clients[{index}].key_id"), message);
            }
            if let Some(client) = self.client(index, raw_client, key_environments) {
                clients.push(client);
            }
        }
        clients
    }

    fn client(
        &mut self,
        index: usize,
        mut raw: RawClient,
        key_environments: &BTreeMap<String, String>,
    ) -> Option<ClientPolicy> {
        let prefix = format!("clients[{index}]");
        let rules = self.rules(&prefix, raw.take_rules());
        let created = raw
            .created
            .as_ref()
            .and_then(|t| self.datetime(t, &format!("{prefix}.created")));
        if raw.key_id.get_ref().trim().is_empty() {
            self.problem(&raw.key_id, format!("{prefix}.key_id"), "must not be empty");
        }
        let verifier = Verifier::from_hex(raw.secret_sha256.get_ref());
        if verifier.is_none() {
            let message = "must be 64 hex digits, the SHA-256 of the KeySecret";
            self.problem(
                &raw.secret_sha256,
                format!("{prefix}.secret_sha256"),
                message,
            );
        }
        self.environment_name(&raw.environment, &format!("{prefix}.environment"));
        let allowed = self.client_keys(&prefix, &raw, key_environments);
        Some(ClientPolicy {
            key_id: raw.key_id.into_inner(),
            verifier: verifier?,
            keys: allowed,
            environment: raw.environment.into_inner(),
            created,
            rules,
        })
    }

    /// Checks that the client's keys exist and belong to the client's environment.
    fn client_keys(
        &mut self,
        prefix: &str,
        raw: &RawClient,
        key_environments: &BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        let names = &raw.keys;
        let environment = raw.environment.get_ref();
        if names.get_ref().is_empty() {
            self.problem(
                names,
                format!("{prefix}.keys"),
                "must name at least one key",
            );
        }
        // An environment that no key has is most likely a typo, so the message says so.
        let typo_hint = match key_environments.values().any(|known| known == environment) {
            true => String::new(),
            false => format!("; no key belongs to \"{environment}\", so check it for a typo"),
        };
        for name in names.get_ref() {
            match key_environments.get(name.get_ref()) {
                None => {
                    let message = format!("no key \"{}\" in [keys]", name.get_ref());
                    self.problem(name, format!("{prefix}.keys"), message);
                }
                Some(key_environment) if key_environment != environment => {
                    let message = format!(
                        "client {} is bound to environment \"{environment}\" but key \"{}\" \
                         belongs to environment \"{key_environment}\"; a client may only use \
                         keys of its own environment, so give it a separate credential{typo_hint}",
                        raw.key_id.get_ref(),
                        name.get_ref()
                    );
                    self.problem(name, format!("{prefix}.keys"), message);
                }
                Some(_) => {}
            }
        }
        names
            .get_ref()
            .iter()
            .map(|n| n.get_ref().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
