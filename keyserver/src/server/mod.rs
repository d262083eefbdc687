//! The QUIC endpoint: accepts connections, hands each to its own task, and shuts down
//! gracefully.
//!
//! Shutdown stops accepting connections and streams, waits up to [`DRAIN_TIMEOUT`] for
//! requests in flight to finish, then closes the endpoint.

mod connection;
mod request;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, VarInt};
use tokio::sync::{mpsc, watch};

pub use tls::MAX_CONCURRENT_STREAMS;

use crate::audit::AuditLog;
use crate::backend::Backend;
use crate::quota::Quotas;
use crate::state::PolicyHandle;

/// Time a client has to send its Hello after the handshake.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Time shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Application error code sent when the server closes a connection on shutdown.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);

/// Errors from setting up or running the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate chain or private key is unusable.
    #[error("TLS setup failed on {}: {message}", path.display())]
    Tls {
        /// The PEM file at fault.
        path: PathBuf,
        /// Description of the fault.
        message: String,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The `server.listen` address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct Service {
    /// The policy in force, which a reload replaces.
    pub policy: PolicyHandle,
    /// Signature counters for the quotas.
    pub quotas: Quotas,
    /// Opened tokens and resolved keys.
    pub backend: Backend,
    /// Audit log.
    pub audit: AuditLog,
    /// Maximum length in bytes of `SignInput::Data`.
    pub max_input_len: u32,
}

/// Loads the certificate chain and private key of `settings` as [`Server::bind`] would.
///
/// # Errors
///
/// [`ServerError::Tls`].
pub fn check_tls(settings: &crate::policy::ServerSettings) -> Result<(), ServerError> {
    tls::server_config(settings).map(drop)
}

/// A bound endpoint, ready to serve.
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
    service: Arc<Service>,
}

impl Server {
    /// Binds the endpoint described by `settings`. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ServerError::Tls`] or [`ServerError::Bind`].
    pub fn bind(
        settings: &crate::policy::ServerSettings,
        service: Arc<Service>,
    ) -> Result<Self, ServerError> {
        let config = tls::server_config(settings)?;
        let endpoint =
            Endpoint::server(config, settings.listen).map_err(|source| ServerError::Bind {
                address: settings.listen,
                source,
            })?;
        Ok(Self { endpoint, service })
    }

    /// Returns the bound address, with the port the system chose if `listen` had port 0.
    ///
    /// # Errors
    ///
    /// The I/O error if the socket cannot report its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves connections until `shutdown` completes, then drains and closes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_sender, stop) = watch::channel(false);
        let (tracker, mut drained) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            let task = connection::serve(
                incoming,
                self.service.clone(),
                stop.clone(),
                tracker.clone(),
            );
            tokio::spawn(task);
        }
        tracing::info!("shutting down: no new connections or requests");
        self.endpoint.set_server_config(None);
        let _ = stop_sender.send(true);
        drop(tracker);
        // Every connection and request task owns a clone of `tracker`, so `recv` returns
        // `None` once all of them have ended.
        match tokio::time::timeout(DRAIN_TIMEOUT, drained.recv()).await {
            Ok(_) => tracing::info!("requests in flight finished"),
            Err(_) => tracing::warn!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "requests still in flight after the drain timeout; closing anyway"
            ),
        }
        self.endpoint.close(CLOSE_SHUTDOWN, b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}
