//! The keyserver commands, as the binary runs them: `serve`, `check` and `credential new`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{AuditError, AuditLog};
use crate::auth::Authenticator;
use crate::backend::{Backend, BackendError};
use crate::credential::{self, Credential, CredentialError};
use crate::policy::{Policy, PolicyError};
use crate::server::{Server, ServerError, Service};

/// Errors of the keyserver commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy file is unreadable or invalid, or a PIN cannot be read.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A backend token or key cannot be used.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The TLS files or the listen address cannot be used.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A credential cannot be created.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The ready file cannot be written.
    #[error("cannot write ready file {}: {source}", path.display())]
    ReadyFile {
        /// Path given with `--ready-file`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The signal handlers cannot be installed.
    #[error("cannot install the SIGTERM and SIGINT handlers: {0}")]
    Signal(std::io::Error),
    /// A startup task panicked.
    #[error("startup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the server for the policy at `config` until SIGTERM or SIGINT.
///
/// Once the endpoint is bound, this logs "listening" and, if `ready_file` is given, writes
/// the bound address into it.
///
/// # Errors
///
/// Any startup failure. Once serving, the server logs request errors and keeps running.
pub async fn serve(config: &Path, ready_file: Option<&Path>) -> Result<(), Error> {
    let shutdown = shutdown_signal()?;
    let policy = Policy::load(config)?;
    let audit = AuditLog::open(&policy.server.audit_log)?;
    let settings = policy.server.clone();
    let (policy, backend) = tokio::task::spawn_blocking(move || {
        let backend = Backend::open(&policy);
        (policy, backend)
    })
    .await?;
    let service = Arc::new(Service {
        authenticator: Authenticator::new(policy.clients),
        backend: backend?,
        audit,
        max_input_len: settings.max_input_len,
    });
    let server = Server::bind(&settings, service.clone())?;
    let address = server.local_addr().map_err(|source| ServerError::Bind {
        address: settings.listen,
        source,
    })?;
    tracing::info!(%address, policy = %config.display(), "listening");
    if let Some(path) = ready_file {
        write_ready_file(path, address)?;
    }
    server.run(shutdown).await;
    close_backend(service).await;
    tracing::info!("stopped");
    Ok(())
}

/// Returns a future that completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl Future<Output = ()>, Error> {
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Writes `address` into `path` through a temporary file and a rename, so a reader never sees
/// a partial address.
fn write_ready_file(path: &Path, address: SocketAddr) -> Result<(), Error> {
    let ready_error = |source| Error::ReadyFile {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(ready_error)?;
    file.write_all(address.to_string().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(ready_error)?;
    std::fs::rename(&temporary, path).map_err(ready_error)
}

/// Closes the backend sessions and modules, unless a request task still owns a reference to
/// the service.
async fn close_backend(service: Arc<Service>) {
    let Ok(service) = Arc::try_unwrap(service) else {
        tracing::warn!(
            "requests still use the backend after the drain timeout; leaving its sessions open"
        );
        return;
    };
    let closed = tokio::task::spawn_blocking(move || service.backend.close()).await;
    if let Err(error) = closed {
        tracing::warn!(%error, "closing the backend failed");
    }
}

/// Summary of a successful [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    /// Number of tokens opened.
    pub tokens: usize,
    /// Number of keys resolved.
    pub keys: usize,
    /// Number of clients.
    pub clients: usize,
}

/// Validates the policy at `config` as `serve` would, without binding: it reads the PINs,
/// opens the tokens, resolves the keys and loads the TLS files. Blocks.
///
/// # Errors
///
/// The first failure found; a [`PolicyError::Invalid`] lists every policy problem.
pub fn check(config: &Path) -> Result<CheckSummary, Error> {
    let policy = Policy::load(config)?;
    crate::server::check_tls(&policy.server)?;
    let backend = Backend::open(&policy)?;
    backend.close();
    Ok(CheckSummary {
        tokens: policy.tokens.len(),
        keys: policy.keys.len(),
        clients: policy.clients.len(),
    })
}

/// Creates a credential for `keys`, checking the names against the policy at `config` if
/// given, and returns the text to show the operator.
///
/// # Errors
///
/// An unreadable or invalid policy, unknown key names, or a random number generator failure.
pub fn new_credential(keys: &[String], config: Option<&Path>) -> Result<String, Error> {
    let policy = config.map(Policy::load).transpose()?;
    credential::check_keys(keys, policy.as_ref())?;
    let credential = Credential::generate()?;
    Ok(credential_text(&credential, keys))
}

fn credential_text(credential: &Credential, keys: &[String]) -> String {
    format!(
        "KeyId:     {}\n\
         KeySecret: {}\n\
         \n\
         The KeySecret is shown only this once. Give it to the client now; the server keeps\n\
         only its SHA-256 and cannot show it again.\n\
         \n\
         Add this entry to the policy file, then restart the keyserver:\n\
         \n\
         {}",
        credential.key_id,
        credential.key_secret(),
        credential.policy_entry(keys)
    )
}
