//! QUIC server configuration: TLS 1.3 only, ring as the crypto provider, the keyrelay ALPN,
//! and a cap on concurrent request streams per connection.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::crypto::ring;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ServerError;
use crate::policy::ServerSettings;

/// Maximum number of request streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// Builds the quinn server configuration from the certificate chain and key in `settings`.
pub(super) fn server_config(settings: &ServerSettings) -> Result<quinn::ServerConfig, ServerError> {
    let chain = load_chain(&settings.certificate_chain)?;
    let key = PrivateKeyDer::from_pem_file(&settings.private_key).map_err(|e| {
        tls_error(
            &settings.private_key,
            format!("cannot read a PEM private key: {e}"),
        )
    })?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(&settings.certificate_chain, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            tls_error(
                &settings.private_key,
                format!("key does not suit the chain: {e}"),
            )
        })?;
    tls.alpn_protocols = vec![keyrelay_protocol::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| tls_error(&settings.certificate_chain, e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, format!("cannot read PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(tls_error(path, "holds no PEM certificate".into()));
    }
    Ok(chain)
}

fn tls_error(path: &Path, message: String) -> ServerError {
    ServerError::Tls {
        path: path.to_owned(),
        message,
    }
}
