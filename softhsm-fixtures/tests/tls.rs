//! Tests of `issue_tls_server_cert`: file layout, SANs, key format and chain order.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use softhsm_fixtures::issue_tls_server_cert;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

fn pem_blocks(path: &std::path::Path) -> Vec<Pem> {
    let bytes = fs::read(path).unwrap();
    Pem::iter_from_buffer(&bytes).map(Result::unwrap).collect()
}

#[test]
fn files_written_with_expected_modes() {
    let dir = tempfile::tempdir().unwrap();
    let files = issue_tls_server_cert(dir.path(), &["localhost", "127.0.0.1"]).unwrap();

    assert_eq!(files.ca_certificate, dir.path().join("tls-ca.pem"));
    assert_eq!(files.server_chain, dir.path().join("server-chain.pem"));
    assert_eq!(files.server_key, dir.path().join("server-key.pem"));
    let key_mode = fs::metadata(&files.server_key)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let key_blocks = pem_blocks(&files.server_key);
    assert_eq!(key_blocks.len(), 1);
    assert_eq!(key_blocks[0].label, "PRIVATE KEY", "key must be PKCS#8");
}

#[test]
fn server_certificate_names_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let files = issue_tls_server_cert(dir.path(), &["localhost", "127.0.0.1"]).unwrap();

    let chain = pem_blocks(&files.server_chain);
    let ca = pem_blocks(&files.ca_certificate);
    assert_eq!(chain.len(), 2, "chain must be server certificate then CA");
    assert_eq!(chain[1].contents, ca[0].contents);

    let server = chain[0].parse_x509().unwrap();
    let ca_certificate = ca[0].parse_x509().unwrap();
    assert_eq!(server.issuer(), ca_certificate.subject());
    assert!(ca_certificate.is_ca());
    assert!(!server.is_ca());
    assert!(
        server
            .extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );

    let sans = &server
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(
        sans.contains(&GeneralName::DNSName("localhost")),
        "{sans:?}"
    );
    assert!(
        sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
        "{sans:?}"
    );
}

#[test]
fn each_call_makes_a_new_ca() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let a = issue_tls_server_cert(first.path(), &["localhost"]).unwrap();
    let b = issue_tls_server_cert(second.path(), &["localhost"]).unwrap();

    assert_ne!(
        fs::read(a.ca_certificate).unwrap(),
        fs::read(b.ca_certificate).unwrap()
    );
}

#[test]
fn invalid_names_rejected() {
    let dir = tempfile::tempdir().unwrap();

    let empty = issue_tls_server_cert(dir.path(), &[]).unwrap_err();
    assert!(
        empty.to_string().contains("no TLS server names"),
        "{empty:#}"
    );
    let spaced = issue_tls_server_cert(dir.path(), &["bad name"]).unwrap_err();
    assert!(spaced.to_string().contains("\"bad name\""), "{spaced:#}");
}
