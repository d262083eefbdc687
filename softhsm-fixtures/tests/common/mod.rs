//! Helpers shared by the integration tests: independent `pkcs11-tool` calls against a fixture
//! token and certificate checks.
//!
//! These helpers call `pkcs11-tool` directly instead of through the crate, so that the tests
//! check the token with a second code path.

use std::io;
use std::process::{Command, Output};

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use softhsm_fixtures::{
    FixtureKey, ListedObject, ObjectClass, SOFTHSM2_CONF_ENV, TokenFixture, parse_object_listing,
};
use x509_parser::prelude::*;

/// Runs `pkcs11-tool` on the fixture's token with `args` and returns its output.
///
/// Panics with an install hint if `pkcs11-tool` is missing, and with the stderr if it fails.
pub fn pkcs11_tool(fixture: &TokenFixture, args: &[&str]) -> Output {
    let spawned = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(fixture.module())
        .arg("--token-label")
        .arg(fixture.token_label())
        .args(args)
        .env(SOFTHSM2_CONF_ENV, fixture.softhsm2_conf())
        .output();

    let output = match spawned {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            panic!("pkcs11-tool not found: install the Debian package opensc")
        }
        Err(error) => panic!("failed to start pkcs11-tool: {error}"),
    };
    assert!(
        output.status.success(),
        "pkcs11-tool {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Lists the token's objects after logging in with the fixture's user PIN.
pub fn list_objects(fixture: &TokenFixture) -> Vec<ListedObject> {
    let login = ["--login", "--pin", fixture.user_pin(), "--list-objects"];
    let output = pkcs11_tool(fixture, &login);
    parse_object_listing(&String::from_utf8(output.stdout).unwrap())
}

/// Reads an object of `object_type` (`cert` or `pubkey`) with CKA_ID `id_hex` from the token.
pub fn read_object(fixture: &TokenFixture, object_type: &str, id_hex: &str) -> Vec<u8> {
    let args = ["--read-object", "--type", object_type, "--id", id_hex];
    pkcs11_tool(fixture, &args).stdout
}

/// Returns the objects of `class` with the CKA_ID and CKA_LABEL of `key`.
pub fn matching<'a>(
    objects: &'a [ListedObject],
    class: ObjectClass,
    key: &FixtureKey,
) -> Vec<&'a ListedObject> {
    objects
        .iter()
        .filter(|o| o.class == class)
        .filter(|o| o.id().as_deref() == Some(key.id()) && o.label() == Some(key.label()))
        .collect()
}

/// Checks one key's certificate: subject, extensions, public key and the CA's signature.
pub fn check_certificate(key: &FixtureKey, ca_pem: &[u8]) {
    let (_, certificate) = parse_x509_certificate(key.certificate_der()).unwrap();

    assert_eq!(
        certificate.public_key().raw,
        key.public_key_spki_der(),
        "SPKI of {}",
        key.label()
    );
    let common_name = certificate.subject().iter_common_name().next().unwrap();
    assert_eq!(common_name.as_str().unwrap(), key.label());

    let key_usage = certificate
        .key_usage()
        .unwrap()
        .expect("key usage extension")
        .value;
    assert!(
        key_usage.digital_signature(),
        "digitalSignature missing for {}",
        key.label()
    );
    let extended = certificate
        .extended_key_usage()
        .unwrap()
        .expect("EKU extension")
        .value;
    assert!(
        extended.code_signing,
        "codeSigning missing for {}",
        key.label()
    );
    assert!(!certificate.is_ca(), "{} is a CA certificate", key.label());

    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem).unwrap();
    let ca = ca_block.parse_x509().unwrap();
    assert_eq!(
        certificate.issuer(),
        ca.subject(),
        "issuer of {}",
        key.label()
    );
    verify_p256_signature(&certificate, &ca);
}

/// Verifies that `certificate` is signed by the ECDSA P-256 key of `ca`.
fn verify_p256_signature(certificate: &X509Certificate<'_>, ca: &X509Certificate<'_>) {
    let ca_point = &ca.public_key().subject_public_key.data;
    let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ca_point.as_ref());
    let signature = &certificate.signature_value.data;

    verifier
        .verify(certificate.tbs_certificate.as_ref(), signature.as_ref())
        .expect("certificate signature does not verify with the CA key");
}
