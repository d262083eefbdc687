//! A 100 MiB input signed through the module: only its digest reaches the keyserver.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::{Harness, SecretSource, module_path, require_tool, run};
use ring::digest::{SHA256, digest};
use softhsm_fixtures::RSA_SIGNING_LABEL;

/// Size of the signed file: far above the keyserver's limit on raw input, so the signature
/// can only succeed if the module sends the digest.
const INPUT_LEN: usize = 100 << 20;

#[test]
fn large_input_sends_only_digest() -> Result<()> {
    require_tool("pkcs11-tool", "opensc")?;
    let harness = Harness::start()?;
    let dir = harness.dir.path();
    let input = dir.join("large.bin");
    let mut content = vec![0u8; INPUT_LEN];
    content[..8].copy_from_slice(b"keyrelay");
    fs::write(&input, &content)?;
    let signature = dir.join("large.sig");
    let id = harness
        .token
        .key(RSA_SIGNING_LABEL)
        .context("a standard key")?
        .id_hex();

    run(harness
        .command("pkcs11-tool", SecretSource::File)?
        .arg("--module")
        .arg(module_path()?)
        .args([
            "--login",
            "--pin",
            "unused",
            "--sign",
            "-m",
            "SHA256-RSA-PKCS",
            "--id",
            &id,
        ])
        .arg("--input-file")
        .arg(&input)
        .arg("--output-file")
        .arg(&signature))?;

    let public_key = dir.join("rsa-signing.pub");
    let extracted = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(harness.certificate(RSA_SIGNING_LABEL)))?;
    fs::write(&public_key, &extracted.stdout)?;
    let verified = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public_key)
        .arg("-signature")
        .arg(&signature)
        .arg(&input))?;
    assert!(String::from_utf8_lossy(&verified.stdout).contains("Verified OK"));

    let records = harness.audit_records()?;
    let signed = records
        .iter()
        .find(|r| r["event"] == "sign" && r["result"] == "ok")
        .context("no audited signature")?;
    assert_eq!(signed["input"], "digest", "{signed}");
    let expected = hex::encode(digest(&SHA256, digest(&SHA256, &content).as_ref()));
    assert_eq!(
        signed["data_sha256"],
        expected.as_str(),
        "the request carried the digest"
    );
    Ok(())
}
