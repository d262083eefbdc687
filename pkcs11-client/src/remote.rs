//! The QUIC link to the keyserver.
//!
//! One authenticated connection is kept per module instance and shared by every thread and
//! PKCS#11 session: each request opens its own stream, so concurrent signatures do not wait
//! for each other. When the connection drops, the next request reconnects and authenticates
//! again with the remembered KeySecret, so PKCS#11 session handles outlive any connection.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyrelay_protocol::{
    ALPN, CallerContext, Catalogue, Hello, KeySecret, MAX_MESSAGE_LEN, PROTOCOL_VERSION, Request,
    Response, SignRequest,
};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::error::{Error, Result};

/// Interval of QUIC keep-alive packets, so an idle module keeps its connection.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Time after which a silent connection counts as lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Client side of the keyserver protocol.
#[derive(Debug)]
pub(crate) struct Remote {
    endpoint: quinn::Endpoint,
    server: String,
    server_name: String,
    key_id: String,
    caller: CallerContext,
    connect_timeout: Duration,
    timeout: Duration,
    link: Mutex<Option<Link>>,
}

/// An authenticated connection and the secret that authenticated it.
#[derive(Debug)]
struct Link {
    connection: quinn::Connection,
    secret: KeySecret,
}

impl Remote {
    /// Builds the QUIC endpoint. Must run inside the module's tokio runtime.
    pub(crate) fn new(config: &Config) -> Result<Self> {
        let client_config = client_config(config)?;
        let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::Network(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(client_config);
        Ok(Self {
            endpoint,
            server: config.server.clone(),
            server_name: config.server_name.clone(),
            key_id: config.key_id.clone(),
            caller: crate::caller::collect(),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            link: Mutex::new(None),
        })
    }

    /// Opens a new connection, authenticates with `secret` and returns the catalogue.
    ///
    /// On success the connection replaces the current one; on failure the current one stays.
    pub(crate) async fn authenticate(&self, secret: KeySecret) -> Result<Catalogue> {
        let mut link = self.link.lock().await;
        let (connection, catalogue) = self.connect(&secret).await?;
        if let Some(old) = link.replace(Link { connection, secret }) {
            old.connection.close(0u32.into(), b"replaced");
        }
        Ok(catalogue)
    }

    /// Tells whether a connection was authenticated with exactly `secret`.
    pub(crate) async fn is_authenticated_with(&self, secret: &KeySecret) -> bool {
        self.link
            .lock()
            .await
            .as_ref()
            .is_some_and(|link| &link.secret == secret)
    }

    /// Signs through the keyserver, reconnecting first if the connection was lost.
    pub(crate) async fn sign(&self, request: SignRequest) -> Result<Vec<u8>> {
        let connection = self.live_connection().await?;
        match exchange(&connection, &Request::Sign(request), self.timeout).await? {
            Response::Signature(signature) => Ok(signature),
            Response::Error(reply) => Err(Error::from_reply(reply)),
            other => Err(unexpected(&other)),
        }
    }

    /// Returns the KeyId this client authenticates with.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Closes the connection, for C_Finalize.
    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"finalized");
    }

    async fn live_connection(&self) -> Result<quinn::Connection> {
        let mut guard = self.link.lock().await;
        let link = guard.as_mut().ok_or(Error::UserNotLoggedIn)?;
        if link.connection.close_reason().is_none() {
            return Ok(link.connection.clone());
        }
        tracing::debug!("connection to the keyserver was lost, reconnecting");
        let (connection, _) = self.connect(&link.secret).await.map_err(|e| match e {
            Error::PinIncorrect => Error::UserNotLoggedIn,
            other => other,
        })?;
        link.connection = connection.clone();
        Ok(connection)
    }

    async fn connect(&self, secret: &KeySecret) -> Result<(quinn::Connection, Catalogue)> {
        let connection = tokio::time::timeout(self.connect_timeout, self.handshake())
            .await
            .map_err(|_| {
                Error::Unreachable(format!("connecting to {} timed out", self.server))
            })??;
        let hello = Request::Hello(Hello {
            version: PROTOCOL_VERSION,
            key_id: self.key_id.clone(),
            key_secret: secret.clone(),
            caller: self.caller.clone(),
        });
        match exchange(&connection, &hello, self.connect_timeout).await? {
            Response::Welcome(catalogue) => Ok((connection, catalogue)),
            Response::Error(reply) => Err(Error::from_reply(reply)),
            other => Err(unexpected(&other)),
        }
    }

    async fn handshake(&self) -> Result<quinn::Connection> {
        let address = tokio::net::lookup_host(&self.server)
            .await
            .map_err(|e| Error::Unreachable(format!("cannot resolve {}: {e}", self.server)))?
            .next()
            .ok_or_else(|| Error::Network(format!("{} has no address", self.server)))?;
        let connecting = self
            .endpoint
            .connect(address, &self.server_name)
            .map_err(|e| Error::Network(format!("cannot connect to {address}: {e}")))?;
        connecting.await.map_err(|e| {
            // A certificate the CA does not vouch for is a configuration fault, so name the settings.
            let hint = match e.to_string().contains("invalid peer certificate") {
                true => "; check ca_certificate and server_name in the client configuration",
                false => "",
            };
            Error::Network(format!("connection to {address} failed: {e}{hint}"))
        })
    }
}

/// Sends one request on a new stream and reads the response.
async fn exchange(
    connection: &quinn::Connection,
    request: &Request,
    timeout: Duration,
) -> Result<Response> {
    let bytes = keyrelay_protocol::encode(request)
        .map_err(|e| Error::Internal(format!("cannot encode request: {e}")))?;
    let round_trip = async {
        let (mut send, mut receive) = connection.open_bi().await.map_err(network)?;
        send.write_all(&bytes).await.map_err(network)?;
        send.finish().map_err(network)?;
        receive.read_to_end(MAX_MESSAGE_LEN).await.map_err(network)
    };
    let reply = tokio::time::timeout(timeout, round_trip)
        .await
        .map_err(|_| Error::Network(format!("no response within {} s", timeout.as_secs())))??;
    keyrelay_protocol::decode(&reply)
        .map_err(|e| Error::Network(format!("invalid response from the keyserver: {e}")))
}

fn network(error: impl std::fmt::Display) -> Error {
    Error::Network(error.to_string())
}

fn unexpected(response: &Response) -> Error {
    let kind = match response {
        Response::Welcome(_) => "Welcome",
        Response::Signature(_) => "Signature",
        Response::Error(_) => "Error",
    };
    Error::Network(format!("unexpected {kind} response from the keyserver"))
}

fn client_config(config: &Config) -> Result<quinn::ClientConfig> {
    let roots = root_store(config)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Internal(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Internal(format!("QUIC TLS setup failed: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("the idle timeout fits in a QUIC varint"),
    ));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

fn root_store(config: &Config) -> Result<rustls::RootCertStore> {
    let path = &config.ca_certificate;
    let pem = fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read ca_certificate {}: {e}",
            path.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| {
            Error::Config(format!(
                "invalid PEM in ca_certificate {}: {e}",
                path.display()
            ))
        })?;
        roots.add(certificate).map_err(|e| {
            Error::Config(format!(
                "unusable CA certificate in {}: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "ca_certificate {} contains no certificate",
            path.display()
        )));
    }
    Ok(roots)
}
