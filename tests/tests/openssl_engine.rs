//! `openssl pkeyutl` signs through libp11's engine and the module; openssl verifies the
//! signature against the certificate.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use keyrelay_tests::{Harness, SecretSource, TOKEN_NAME, module_path, require_tool, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_SIGNING_LABEL};

const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

/// Writes an OpenSSL configuration that loads the pkcs11 engine with the module.
fn openssl_config(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("openssl.cnf");
    fs::write(
        &path,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
             [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
             dynamic_path = {ENGINE}\nMODULE_PATH = {}\ninit = 0\n",
            module_path()?.display()
        ),
    )?;
    Ok(path)
}

fn sign_digest_and_verify(label: &str) -> Result<()> {
    require_tool("openssl", "openssl")?;
    anyhow::ensure!(
        Path::new(ENGINE).exists(),
        "{ENGINE} not found: install the Debian package libengine-pkcs11-openssl"
    );
    let harness = Harness::start()?;
    let dir = harness.dir.path();
    let config = openssl_config(dir)?;
    let digest = dir.join("digest.bin");
    fs::write(
        &digest,
        ring::digest::digest(&ring::digest::SHA256, b"keyrelay").as_ref(),
    )?;
    let signature = dir.join("signature.bin");
    // libp11 0.4.12 accepts PINs of 4 to 32 characters only, too short for a 256-bit
    // KeySecret, so the module reads the KeySecret from a file and the PIN is unused.
    let key_uri = format!("pkcs11:token={TOKEN_NAME};object={label};type=private");

    run(harness
        .command("openssl", SecretSource::File)?
        .env("OPENSSL_CONF", &config)
        .args([
            "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
        ])
        .args([
            "-inkey",
            &key_uri,
            "-passin",
            "pass:unused",
            "-pkeyopt",
            "digest:sha256",
            "-in",
        ])
        .arg(&digest)
        .arg("-out")
        .arg(&signature))?;

    let verified = run(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-certin", "-inkey"])
        .arg(harness.certificate(label))
        .args(["-pkeyopt", "digest:sha256", "-in"])
        .arg(&digest)
        .arg("-sigfile")
        .arg(&signature))?;
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(
        report.contains("Signature Verified Successfully"),
        "{report}"
    );
    Ok(())
}

#[test]
fn pkeyutl_signs_with_rsa() -> Result<()> {
    sign_digest_and_verify(RSA_SIGNING_LABEL)
}

#[test]
fn pkeyutl_signs_with_ec() -> Result<()> {
    sign_digest_and_verify(EC_SIGNING_LABEL)
}
