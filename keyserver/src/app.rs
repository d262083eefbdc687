//! The keyserver commands, as the binary runs them: `serve` and `credential new`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{AuditError, AuditLog};
use crate::backend::{Backend, BackendError};
use crate::credential::{self, Credential, CredentialError};
use crate::policy::PolicyError;
use crate::quota::Quotas;
use crate::server::{Server, ServerError, Service};
use crate::state::{PolicyHandle, PolicyState};

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
    /// The policy file cannot be edited.
    #[error("cannot edit policy file {}: {message}", path.display())]
    PolicyEdit {
        /// Path of the policy file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
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
    #[error("cannot install the SIGTERM, SIGINT and SIGHUP handlers: {0}")]
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
    let state = PolicyState::load(config)?;
    let settings = state.policy.server.clone();
    let audit = AuditLog::open(&settings.audit_log, &state.policy.audit, &state.sha256)?;
    let files =
        crate::audit::chain_files(&settings.audit_log).map_err(|source| AuditError::Open {
            path: settings.audit_log.clone(),
            source,
        })?;
    let quotas = Quotas::from_audit(&files, time::OffsetDateTime::now_utc());
    if let Err(error) = audit.anchor("start", None) {
        tracing::error!(%error, "cannot write the start anchor; every request fails until the audit log is writable");
    }
    let (state, backend) = tokio::task::spawn_blocking(move || {
        let backend = Backend::open(&state.policy);
        (state, backend)
    })
    .await?;
    let anchor_interval = state.policy.audit.anchor_interval_seconds;
    let service = Arc::new(Service {
        policy: PolicyHandle::new(state),
        quotas,
        backend: backend?,
        audit,
        max_input_len: settings.max_input_len,
    });
    let watcher =
        crate::state::spawn_watcher(config.to_owned(), service.clone()).map_err(Error::Signal)?;
    let anchors = spawn_anchor_timer(service.clone(), anchor_interval);
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
    watcher.abort();
    anchors.abort();
    let _ = (watcher.await, anchors.await);
    if let Err(error) = service.audit.anchor("stop", None) {
        tracing::error!(%error, "cannot write the stop anchor to the audit log");
    }
    close_backend(service).await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes an `interval` anchor every `seconds` seconds, until the task is aborted.
fn spawn_anchor_timer(service: Arc<Service>, seconds: u32) -> tokio::task::JoinHandle<()> {
    let period = std::time::Duration::from_secs(seconds.into());
    tokio::spawn(async move {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            timer.tick().await;
            let service = service.clone();
            let written =
                tokio::task::spawn_blocking(move || service.audit.anchor("interval", None)).await;
            if let Ok(Err(error)) = written {
                tracing::error!(%error, "cannot write an interval anchor to the audit log");
            }
        }
    })
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

/// Creates a credential for `keys` and returns the text to show the operator.
///
/// With `config`, the credential is added to that policy file, bound to the environment of
/// its keys. Without it, the text holds the entry to paste, bound to `environment`.
///
/// # Errors
///
/// An unreadable or invalid policy, unknown key names, keys of several environments, a
/// missing environment, or a random number generator failure.
pub fn new_credential(
    keys: &[String],
    config: Option<&Path>,
    environment: Option<&str>,
) -> Result<String, Error> {
    credential::check_keys(keys, None)?;
    let credential = Credential::generate()?;
    let instructions = match config {
        Some(config) => {
            crate::policy_edit::add_client(config, &credential, keys, OffsetDateTime::now_utc())?;
            format!(
                "The entry is now in {}; a running keyserver applies it at its next reload.\n",
                config.display()
            )
        }
        None => {
            let environment = environment.ok_or(CredentialError::NoEnvironment)?;
            format!(
                "Add this entry to the policy file:\n\n{}",
                credential.policy_entry(keys, environment)
            )
        }
    };
    Ok(format!(
        "KeyId:     {}\n\
         KeySecret: {}\n\
         \n\
         The KeySecret is shown only this once. Give it to the client now; the server keeps\n\
         only its SHA-256 and cannot show it again.\n\
         \n\
         {instructions}",
        credential.key_id,
        credential.key_secret(),
    ))
}
