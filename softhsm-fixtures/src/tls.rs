//! TLS test certificates for the keyserver: a TLS test CA and one server certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::ca::TestCa;
use crate::files::{create_dir, write_file, write_private_file};

/// File name of the TLS test CA certificate (PEM).
pub const TLS_CA_FILE: &str = "tls-ca.pem";

/// File name of the server certificate chain (PEM): the server certificate, then the CA.
pub const SERVER_CHAIN_FILE: &str = "server-chain.pem";

/// File name of the server's private key (PKCS#8 PEM, mode 0600).
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// Paths of the files written by [`issue_tls_server_cert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The TLS test CA certificate (PEM), for clients to trust.
    pub ca_certificate: PathBuf,
    /// The server certificate followed by the CA certificate (PEM).
    pub server_chain: PathBuf,
    /// The server's ECDSA P-256 private key as PKCS#8 PEM, with mode 0600.
    pub server_key: PathBuf,
}

/// Creates a TLS test CA and a server certificate for `names`, and writes them into `dir`.
///
/// A name that parses as an IP address becomes an IP address SAN, any other name a DNS SAN,
/// and the first name is also the subject CN. The certificate has extended key usage
/// serverAuth. Existing files with the same names in `dir` are replaced. The TLS CA is
/// separate from the CA of any token fixture, and its private key is not kept.
pub fn issue_tls_server_cert(dir: &Path, names: &[&str]) -> Result<TlsFiles> {
    ensure!(
        !names.is_empty(),
        "no TLS server names given: pass at least one DNS name or IP"
    );
    for name in names {
        validate_server_name(name)?;
    }
    create_dir(dir)?;

    let ca = TestCa::generate("keyrelay TLS test CA")?;
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .context("failed to generate the TLS server's ECDSA P-256 key")?;
    let server_certificate = ca.issue_tls_server(&server_key, names)?;

    let files = TlsFiles {
        ca_certificate: dir.join(TLS_CA_FILE),
        server_chain: dir.join(SERVER_CHAIN_FILE),
        server_key: dir.join(SERVER_KEY_FILE),
    };
    let chain = format!("{}{}", server_certificate.pem(), ca.certificate_pem());
    write_file(&files.ca_certificate, ca.certificate_pem().as_bytes())?;
    write_file(&files.server_chain, chain.as_bytes())?;
    write_private_file(&files.server_key, server_key.serialize_pem().as_bytes())?;
    Ok(files)
}

/// Accepts an IP address or a DNS name of dot-separated labels of 1 to 63 ASCII letters,
/// digits or hyphens (RFC 1123), at most 253 bytes long in all.
fn validate_server_name(name: &str) -> Result<()> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }

    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        bail!("TLS server name {name:?} is neither an IP address nor a valid DNS name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_checked() {
        for valid in [
            "localhost",
            "127.0.0.1",
            "::1",
            "keyserver.test",
            "a-1.example",
        ] {
            assert!(
                validate_server_name(valid).is_ok(),
                "{valid:?} was rejected"
            );
        }
        for invalid in ["", "bad name", "-x.test", "x..test", "x_y.test", "é.test"] {
            assert!(
                validate_server_name(invalid).is_err(),
                "{invalid:?} was accepted"
            );
        }
    }
}
