//! The backend PKCS#11 tokens that hold the signing keys.
//!
//! [`Backend::open`] loads each module once, finds each token's slot by label, opens a pool of
//! read-only sessions logged in as the user, resolves every policy key to exactly one private
//! key object and reads the attributes clients may see. All of that happens once, at startup.
//! Afterwards [`Backend::sign`] is the only call that reaches the tokens.
//!
//! Every method blocks on PKCS#11 calls, so async callers run them through
//! `tokio::task::spawn_blocking`.

mod mechanism;
mod objects;
mod pool;
mod raw;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error, Rv, RvError};
use cryptoki::object::{ObjectClass, ObjectHandle};
use keyrelay_protocol::{MechanismEntry, ObjectEntry, object_handle_for, slot_id_for_token};

use crate::policy::{KeyLocator, KeyPolicy, Policy, PolicyError};
use crate::signing::{BackendOperation, KeyKind};
use mechanism::cryptoki_mechanism;
use objects::{KeyFacts, ObjectKind};
use pool::SessionPool;
use token::TokenDescription;

/// Errors from opening the backend tokens or signing on them.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A PIN from the policy could not be read.
    #[error(transparent)]
    Pin(#[from] PolicyError),
    /// A PKCS#11 module could not be loaded or initialized.
    #[error("cannot load PKCS#11 module {}: {source}", path.display())]
    Module {
        /// Module path from the policy.
        path: PathBuf,
        /// The cryptoki error.
        source: Error,
    },
    /// No slot contains a token with the configured label.
    #[error(
        "token {token}: no slot holds a token labelled \"{label}\"; \
         check tokens.{token}.label against the backend's token list"
    )]
    TokenNotFound {
        /// Policy token name.
        token: String,
        /// Backend token label.
        label: String,
    },
    /// Several slots contain a token with the configured label.
    #[error(
        "token {token}: {count} slots hold a token labelled \"{label}\"; give each a unique label"
    )]
    TokenAmbiguous {
        /// Policy token name.
        token: String,
        /// Backend token label.
        label: String,
        /// Number of matching slots.
        count: usize,
    },
    /// A policy key matches no private key on its token.
    #[error("key {key}: no private key with {locator} on token {token}")]
    KeyNotFound {
        /// Policy key name.
        key: String,
        /// Policy token name.
        token: String,
        /// The label or id searched for.
        locator: KeyLocator,
    },
    /// A policy key matches several private keys on its token.
    #[error("key {key}: {count} private keys with {locator} on token {token}; make it unique")]
    KeyAmbiguous {
        /// Policy key name.
        key: String,
        /// Policy token name.
        token: String,
        /// The label or id searched for.
        locator: KeyLocator,
        /// Number of matching private keys.
        count: usize,
    },
    /// A policy key has a type the server cannot sign with.
    #[error("key {key} on token {token} has type {key_type}; only RSA and EC keys are supported")]
    KeyTypeUnsupported {
        /// Policy key name.
        key: String,
        /// Policy token name.
        token: String,
        /// The CKK_* name.
        key_type: String,
    },
    /// Two objects of one token map to the same client object handle.
    #[error(
        "token {token}: objects of keys {first} and {second} map to the same object handle \
         {handle}; rename one of the keys"
    )]
    HandleCollision {
        /// Policy token name.
        token: String,
        /// First key name.
        first: String,
        /// Second key name.
        second: String,
        /// The shared handle.
        handle: u64,
    },
    /// A PKCS#11 call failed.
    #[error(
        "{operation} on token {token} failed: {}",
        describe_cryptoki_error(source)
    )]
    Pkcs11 {
        /// Policy token name.
        token: String,
        /// Operation the server was running, such as "signing".
        operation: &'static str,
        /// The cryptoki error.
        source: Error,
    },
}

impl BackendError {
    /// Returns the CKR_* value and the C_* function name, if the backend returned an error.
    pub fn ck_rv(&self) -> Option<(u64, String)> {
        match self {
            Self::Pkcs11 { source, .. } | Self::Module { source, .. } => ck_rv_of(source),
            _ => None,
        }
    }
}

fn ck_rv_of(error: &Error) -> Option<(u64, String)> {
    let Error::Pkcs11(rv, function) = error else {
        return None;
    };
    Some((rv_value(*rv), function_name(*function)))
}

/// Returns the CKR_* value of `rv`. cryptoki 0.12 only converts values into [`RvError`], so
/// this searches the standard range for the value that converts back to `rv`.
fn rv_value(rv: RvError) -> u64 {
    if let RvError::VendorDefined(value) = rv {
        return value;
    }
    (1..0x1000)
        .find(|&value| Rv::from(value) == Rv::Error(rv))
        .unwrap_or(cryptoki_sys::CKR_GENERAL_ERROR)
}

/// Returns the C_* name of a function, such as `C_SignInit`.
fn function_name(function: Function) -> String {
    format!("C_{function:?}")
}

/// Formats a cryptoki error as `C_Sign returned CKR 0x…  (Name)`. cryptoki's own `Display`
/// appends the specification's whole paragraph about the return value.
fn describe_cryptoki_error(error: &Error) -> String {
    match error {
        Error::Pkcs11(rv, function) => format!(
            "{} returned CKR {:#x} ({rv:?})",
            function_name(*function),
            rv_value(*rv)
        ),
        other => other.to_string(),
    }
}

/// One opened backend token.
#[derive(Debug)]
pub struct Token {
    /// Policy token name.
    pub name: String,
    /// Slot id presented to clients.
    pub slot_id: u64,
    description: TokenDescription,
    mechanisms: BTreeMap<u64, MechanismEntry>,
    pool: SessionPool,
    /// The module's C functions, for keys with CKA_ALWAYS_AUTHENTICATE; `None` if they could
    /// not be loaded, which the startup log reports.
    raw: Option<raw::RawFunctions>,
}

impl Token {
    /// Backend manufacturer id, model and serial number.
    pub fn description(&self) -> (&str, &str, &str) {
        let d = &self.description;
        (&d.manufacturer, &d.model, &d.serial_number)
    }

    /// Returns the backend's info for client mechanism `ckm` if the token can serve it.
    pub fn mechanism(&self, ckm: u64) -> Option<&MechanismEntry> {
        self.mechanisms.get(&ckm)
    }

    /// Iterates over the mechanisms the token can serve, sign and digest ones.
    pub fn mechanisms(&self) -> impl Iterator<Item = &MechanismEntry> {
        self.mechanisms.values()
    }
}

/// One resolved policy key.
#[derive(Debug)]
pub struct Key {
    /// Policy key name.
    pub name: String,
    /// Policy token name.
    pub token: String,
    /// Key type.
    pub kind: KeyKind,
    handle: ObjectHandle,
    /// Private key, then public key and certificate when the token has them, as clients
    /// see them.
    pub objects: Vec<ObjectEntry>,
    /// True if the private key has CKA_ALWAYS_AUTHENTICATE, so each signature needs a
    /// context-specific login.
    always_authenticate: bool,
}

impl Key {
    /// Sort key that orders keys as their token does: the backend's object handle. Catalogues
    /// list keys in this order, which stays the same from one connection to the next.
    #[allow(
        clippy::useless_conversion,
        reason = "CK_OBJECT_HANDLE is 32 bits on some targets"
    )]
    pub fn token_order(&self) -> u64 {
        self.handle.handle().into()
    }
}

/// All tokens and keys of a policy.
#[derive(Debug)]
pub struct Backend {
    tokens: BTreeMap<String, Token>,
    /// Resolved keys. A policy reload may add keys, never remove or change them.
    keys: RwLock<BTreeMap<String, Arc<Key>>>,
    contexts: Vec<Pkcs11>,
}

impl Backend {
    /// Opens every token of `policy` and resolves every key. Blocks.
    ///
    /// # Errors
    ///
    /// Any [`BackendError`]: a module, token, PIN or key that cannot be used.
    pub fn open(policy: &Policy) -> Result<Self, BackendError> {
        let mut contexts: HashMap<PathBuf, Pkcs11> = HashMap::new();
        let mut tokens = BTreeMap::new();
        for (name, token_policy) in &policy.tokens {
            if !contexts.contains_key(&token_policy.module) {
                let context = token::load_module(&token_policy.module)?;
                contexts.insert(token_policy.module.clone(), context);
            }
            let context = &contexts[&token_policy.module];
            let token = open_token(
                context,
                name,
                token_policy,
                policy.server.sessions_per_token,
            )?;
            tokens.insert(name.clone(), token);
        }
        let mut keys = BTreeMap::new();
        for (name, key_policy) in &policy.keys {
            let key = resolve_key(&tokens[&key_policy.token], name, key_policy)?;
            keys.insert(name.clone(), Arc::new(key));
        }
        check_handles(keys.values().map(|key| &**key))?;
        let contexts = contexts.into_values().collect();
        Ok(Self {
            tokens,
            keys: RwLock::new(keys),
            contexts,
        })
    }

    /// Resolves the keys of `policy` that are not resolved yet, on their already-open
    /// tokens, and returns their names. Blocks. A policy reload calls this before it puts a
    /// policy with new keys in force; nothing changes if any new key fails.
    ///
    /// # Errors
    ///
    /// Any [`BackendError`] of resolving a key, and [`BackendError::HandleCollision`].
    pub fn add_keys(&self, policy: &Policy) -> Result<Vec<String>, BackendError> {
        let mut added = BTreeMap::new();
        for (name, key_policy) in &policy.keys {
            if self.key(name).is_some() {
                continue;
            }
            // The reload lets no token change, and the policy names only known tokens, so
            // the token is open; a key on any other token stays unresolved and unusable.
            let Some(token) = self.tokens.get(&key_policy.token) else {
                continue;
            };
            added.insert(name.clone(), resolve_key(token, name, key_policy)?);
        }
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        check_handles(keys.values().map(|key| &**key).chain(added.values()))?;
        let names = added.keys().cloned().collect();
        keys.extend(added.into_iter().map(|(name, key)| (name, Arc::new(key))));
        Ok(names)
    }

    /// Returns the token named `name`.
    pub fn token(&self, name: &str) -> Option<&Token> {
        self.tokens.get(name)
    }

    /// Returns the key named `name`.
    pub fn key(&self, name: &str) -> Option<Arc<Key>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(name).cloned()
    }

    /// Signs with `key`. Blocks until a session of its token is free.
    ///
    /// A key with CKA_ALWAYS_AUTHENTICATE gets the context-specific login with the token's
    /// PIN between C_SignInit and C_Sign, through the backend's raw function list.
    ///
    /// # Errors
    ///
    /// [`BackendError::Pkcs11`] if the token fails; [`BackendError::ck_rv`] has its CKR_*.
    pub fn sign(&self, key: &Key, operation: &BackendOperation) -> Result<Vec<u8>, BackendError> {
        let token = &self.tokens[&key.token];
        let mechanism = cryptoki_mechanism(operation).map_err(|source| BackendError::Pkcs11 {
            token: key.token.clone(),
            operation: "preparing the mechanism",
            source,
        })?;
        let result = match (&token.raw, key.always_authenticate) {
            (Some(raw), true) => token.pool.run_with_pin(|session, pin| {
                let (handle, payload) = (key.handle.handle(), &operation.payload);
                raw.sign_with_context_login(
                    session.handle(),
                    &mechanism,
                    handle,
                    pin.auth_pin(),
                    payload,
                )
            }),
            _ => token
                .pool
                .run(|session| session.sign(&mechanism, key.handle, &operation.payload)),
        };
        result.map_err(|source| BackendError::Pkcs11 {
            token: key.token.clone(),
            operation: "signing",
            source,
        })
    }

    /// Closes every session, then finalizes every module. Blocks.
    pub fn close(self) {
        drop(self.tokens);
        for context in self.contexts {
            if let Err(error) = context.finalize() {
                tracing::warn!(error = %describe_cryptoki_error(&error), "C_Finalize failed");
            }
        }
    }
}

fn open_token(
    context: &Pkcs11,
    name: &str,
    policy: &crate::policy::TokenPolicy,
    sessions: u32,
) -> Result<Token, BackendError> {
    let pkcs11_error = |operation| {
        move |source| BackendError::Pkcs11 {
            token: name.to_owned(),
            operation,
            source,
        }
    };
    let slot = token::find_slot(context, name, &policy.label)?;
    let description = token::describe(context, slot).map_err(pkcs11_error("reading token info"))?;
    let mechanisms =
        token::signing_mechanisms(context, slot).map_err(pkcs11_error("reading mechanism info"))?;
    let pin = policy.pin.read(name)?;
    let pool = SessionPool::open(context, slot, sessions, pin)
        .map_err(pkcs11_error("opening sessions and logging in"))?;
    tracing::info!(token = name, slot = %slot, sessions, "backend token opened");
    Ok(Token {
        name: name.to_owned(),
        slot_id: slot_id_for_token(name),
        description,
        mechanisms,
        pool,
        raw: load_raw_functions(name, &policy.module),
    })
}

fn load_raw_functions(token: &str, module: &std::path::Path) -> Option<raw::RawFunctions> {
    match raw::RawFunctions::load(module) {
        Ok(functions) => Some(functions),
        Err(error) => {
            tracing::warn!(
                token,
                %error,
                "cannot load the module's C functions; keys with CKA_ALWAYS_AUTHENTICATE will fail"
            );
            None
        }
    }
}

fn resolve_key(token: &Token, name: &str, policy: &KeyPolicy) -> Result<Key, BackendError> {
    let resolved = token
        .pool
        .run(|session| find_key_objects(session, token, name, policy));
    let resolved = resolved.map_err(|source| BackendError::Pkcs11 {
        token: token.name.clone(),
        operation: "reading key objects",
        source,
    })?;
    let not_unique = |count| key_lookup_error(name, token, &policy.locator, count);
    let (handle, kind, objects) = match resolved {
        Resolved::Found {
            handle,
            kind,
            objects,
        } => (handle, kind, objects),
        Resolved::Count(count) => return Err(not_unique(count)),
        Resolved::Unsupported(key_type) => {
            return Err(BackendError::KeyTypeUnsupported {
                key: name.to_owned(),
                token: token.name.clone(),
                key_type,
            });
        }
    };
    tracing::info!(key = name, token = %token.name, objects = objects.len(), "key resolved");
    let always_authenticate = objects.first().is_some_and(|private| {
        private.attribute(cryptoki_sys::CKA_ALWAYS_AUTHENTICATE)
            == Some(&keyrelay_protocol::AttributeValue::Bool(true))
    });
    Ok(Key {
        name: name.to_owned(),
        token: token.name.clone(),
        kind,
        handle,
        objects,
        always_authenticate,
    })
}

fn key_lookup_error(name: &str, token: &Token, locator: &KeyLocator, count: usize) -> BackendError {
    let (key, token, locator) = (name.to_owned(), token.name.clone(), locator.clone());
    if count == 0 {
        BackendError::KeyNotFound {
            key,
            token,
            locator,
        }
    } else {
        BackendError::KeyAmbiguous {
            key,
            token,
            locator,
            count,
        }
    }
}

/// The outcome of looking up one policy key on its token.
enum Resolved {
    Found {
        handle: ObjectHandle,
        kind: KeyKind,
        objects: Vec<ObjectEntry>,
    },
    /// Not exactly one private key matched; the number that did.
    Count(usize),
    Unsupported(String),
}

fn find_key_objects(
    session: &cryptoki::session::Session,
    token: &Token,
    name: &str,
    policy: &KeyPolicy,
) -> Result<Resolved, Error> {
    let found = objects::find_private_keys(session, &policy.locator)?;
    let [handle] = found.as_slice() else {
        return Ok(Resolved::Count(found.len()));
    };
    let (kind, id) = match objects::key_facts(session, *handle)? {
        KeyFacts::Supported { kind, id } => (kind, id),
        KeyFacts::Unsupported(key_type) => return Ok(Resolved::Unsupported(key_type)),
    };
    let mut entries = vec![object_entry(
        session,
        token,
        name,
        *handle,
        ObjectKind::PrivateKey,
    )?];
    for kind in [ObjectKind::PublicKey, ObjectKind::Certificate] {
        if let Some(companion) = find_companion(session, token, name, &id, kind)? {
            entries.push(object_entry(session, token, name, companion, kind)?);
        }
    }
    Ok(Resolved::Found {
        handle: *handle,
        kind,
        objects: entries,
    })
}

/// Finds the public key or certificate sharing the private key's CKA_ID. A key without a
/// CKA_ID has none, because an empty id would match unrelated objects.
fn find_companion(
    session: &cryptoki::session::Session,
    token: &Token,
    name: &str,
    id: &[u8],
    kind: ObjectKind,
) -> Result<Option<ObjectHandle>, Error> {
    if id.is_empty() {
        return Ok(None);
    }
    let (first, count) = objects::find_companion(session, kind.class(), id)?;
    if count > 1 {
        tracing::warn!(
            key = name,
            token = %token.name,
            class = %kind.class(),
            count,
            "several objects share the key's CKA_ID; using the first"
        );
    }
    Ok(first)
}

fn object_entry(
    session: &cryptoki::session::Session,
    token: &Token,
    name: &str,
    object: ObjectHandle,
    kind: ObjectKind,
) -> Result<ObjectEntry, Error> {
    let class: ObjectClass = kind.class();
    Ok(ObjectEntry {
        handle: object_handle_for(&token.name, name, *class),
        key_name: name.to_owned(),
        attributes: objects::catalogue_attributes(session, object, kind)?,
    })
}

/// Fails if two objects of one token map to the same client handle.
fn check_handles<'a>(keys: impl Iterator<Item = &'a Key>) -> Result<(), BackendError> {
    let mut owners: HashMap<(&str, u64), &str> = HashMap::new();
    for key in keys {
        for object in &key.objects {
            let slot = (key.token.as_str(), object.handle);
            match owners.insert(slot, &key.name) {
                Some(first) if first != key.name => {
                    return Err(BackendError::HandleCollision {
                        token: key.token.clone(),
                        first: first.to_owned(),
                        second: key.name.clone(),
                        handle: object.handle,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_value_round_trips() {
        for value in [
            cryptoki_sys::CKR_USER_NOT_LOGGED_IN,
            cryptoki_sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
            cryptoki_sys::CKR_DATA_LEN_RANGE,
            0x8000_0042,
        ] {
            let Rv::Error(rv) = Rv::from(value) else {
                panic!("{value:#x} is an error value");
            };
            assert_eq!(rv_value(rv), value);
        }
    }

    #[test]
    fn cryptoki_error_described_briefly() {
        let error = Error::Pkcs11(RvError::DataLenRange, Function::Sign);

        let text = describe_cryptoki_error(&error);

        assert_eq!(text, "C_Sign returned CKR 0x21 (DataLenRange)");
    }
}
