//! The policy in force, and its reload on SIGHUP or when the file changes.
//!
//! A reload reads and validates the whole file first, then swaps the new policy in with one
//! pointer store, so a request sees either the old policy or the new one, never a mix.
//! Connections in flight keep working, and each of their requests is checked against the
//! policy in force when it arrives. An invalid file is rejected with an error log line and
//! the old policy stays in force.
//!
//! A reload may change clients, environments and access rules, and add keys: a new key is
//! resolved on its already-open token before the new policy goes into force. Changes to
//! `[server]`, `[audit]` or `[tokens]`, or to the token, label or id of an existing key, need
//! a restart, because the tokens are opened and existing keys resolved once, at startup.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{AuditLog, sha256_hex};
use crate::auth::Authenticator;
use crate::backend::Backend;
use crate::policy::{Policy, PolicyError};
use crate::server::Service;

/// How often the policy file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One validated policy with its client index.
#[derive(Debug)]
pub struct PolicyState {
    /// The policy.
    pub policy: Policy,
    /// Its clients, indexed by KeyId.
    pub authenticator: Authenticator,
    /// Hex SHA-256 of the policy file's bytes.
    pub sha256: String,
}

impl PolicyState {
    /// Reads and validates the policy file at `path`.
    ///
    /// # Errors
    ///
    /// The [`PolicyError`] of [`Policy::parse`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let policy = Policy::parse(&text, path)?;
        Ok(Self {
            authenticator: Authenticator::new(policy.clients.clone()),
            policy,
            sha256: sha256_hex(&bytes),
        })
    }
}

/// The policy in force, shared by all requests.
#[derive(Debug)]
pub struct PolicyHandle(RwLock<Arc<PolicyState>>);

impl PolicyHandle {
    /// Puts `state` in force.
    pub fn new(state: PolicyState) -> Self {
        Self(RwLock::new(Arc::new(state)))
    }

    /// Returns the policy in force.
    pub fn current(&self) -> Arc<PolicyState> {
        // The lock guards a single pointer, which a panic cannot leave half-written.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, state: PolicyState) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }
}

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is unreadable or invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The new file changes something that only a restart applies.
    #[error("{0} changed; restart the keyserver to apply that change")]
    NeedsRestart(&'static str),
    /// A key the new file adds cannot be used on its token.
    #[error("a key added by the new file cannot be used: {0}")]
    Backend(#[from] crate::backend::BackendError),
}

/// Loads the policy at `path` and puts it in force if it validates and needs no restart, then
/// writes a `reload` anchor. Returns `false` if the file did not change. Blocks.
///
/// # Errors
///
/// A [`ReloadError`]; the old policy then stays in force.
pub fn reload(
    path: &Path,
    handle: &PolicyHandle,
    audit: &AuditLog,
    backend: &Backend,
) -> Result<bool, ReloadError> {
    let current = handle.current();
    let new = PolicyState::load(path)?;
    if new.sha256 == current.sha256 {
        return Ok(false);
    }
    check_restart_free(&current.policy, &new.policy)?;
    let added = backend.add_keys(&new.policy)?;
    if !added.is_empty() {
        tracing::info!(keys = ?added, "keys added by the reload resolved on their tokens");
    }
    let sha256 = new.sha256.clone();
    let clients = new.policy.clients.len();
    handle.replace(new);
    tracing::info!(policy = %path.display(), %sha256, clients, "policy reloaded");
    if let Err(error) = audit.anchor("reload", Some(&sha256)) {
        tracing::error!(%error, "cannot write the reload anchor to the audit log");
    }
    Ok(true)
}

fn check_restart_free(old: &Policy, new: &Policy) -> Result<(), ReloadError> {
    let (a, b) = (&old.server, &new.server);
    let server_same = a.listen == b.listen
        && a.certificate_chain == b.certificate_chain
        && a.private_key == b.private_key
        && a.audit_log == b.audit_log
        && a.max_input_len == b.max_input_len
        && a.sessions_per_token == b.sessions_per_token;
    if !server_same {
        return Err(ReloadError::NeedsRestart("the [server] table"));
    }
    if old.audit != new.audit {
        return Err(ReloadError::NeedsRestart("the [audit] table"));
    }
    let tokens_same = old.tokens.len() == new.tokens.len()
        && old
            .tokens
            .iter()
            .zip(&new.tokens)
            .all(|((n1, t1), (n2, t2))| {
                n1 == n2 && t1.module == t2.module && t1.label == t2.label && t1.pin == t2.pin
            });
    if !tokens_same {
        return Err(ReloadError::NeedsRestart("the [tokens] tables"));
    }
    // New keys are resolved on their open tokens by the reload, and removed ones simply
    // fall out of use. A key that keeps its name must keep its place, because the backend
    // resolved that name once.
    let keys_moved = old.keys.iter().any(|(name, old_key)| {
        new.keys.get(name).is_some_and(|new_key| {
            new_key.token != old_key.token || new_key.locator != old_key.locator
        })
    });
    if keys_moved {
        return Err(ReloadError::NeedsRestart(
            "the token, label or id of an existing key",
        ));
    }
    Ok(())
}

/// Reloads the policy at `path` on each SIGHUP and whenever its content changes, until the
/// task is aborted. A rejected file is logged once, not on every poll.
///
/// # Errors
///
/// The I/O error if the SIGHUP handler cannot be installed.
pub fn spawn_watcher(
    path: PathBuf,
    service: Arc<Service>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = service.policy.current().sha256.clone();
    Ok(tokio::spawn(async move {
        loop {
            let trigger = tokio::select! {
                _ = hangup.recv() => "SIGHUP",
                _ = poll.tick() => "file change",
            };
            let seen = std::fs::read(&path).map(|bytes| sha256_hex(&bytes)).ok();
            if trigger != "SIGHUP" && seen.as_ref().is_none_or(|seen| *seen == last_seen) {
                continue;
            }
            last_seen = seen.unwrap_or_default();
            let (path, service) = (path.clone(), service.clone());
            let task = tokio::task::spawn_blocking(move || {
                reload(&path, &service.policy, &service.audit, &service.backend)
            });
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(
                    trigger,
                    "policy reload rejected, the previous policy stays in force: {error}"
                ),
                Err(error) => tracing::error!(%error, "policy reload task failed"),
            }
        }
    }))
}
