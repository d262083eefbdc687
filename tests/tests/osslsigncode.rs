//! osslsigncode signs a real Windows executable through the module, and verifies it.

use std::process::Command;

use anyhow::Result;
use keyrelay_tests::{
    Harness, SecretSource, TOKEN_NAME, module_path, require_tool, run, sample_executable,
};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_SIGNING_LABEL};

const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

/// Signs the sample executable with `label`, passing the KeySecret as the PIN.
fn sign_and_verify(label: &str) -> Result<()> {
    require_tool("osslsigncode", "osslsigncode")?;
    anyhow::ensure!(
        std::path::Path::new(ENGINE).exists(),
        "{ENGINE} not found: install the Debian package libengine-pkcs11-openssl"
    );
    let harness = Harness::start()?;
    let input = sample_executable(harness.dir.path())?;
    let output = harness.dir.path().join(format!("signed-{label}.exe"));
    let key_uri = format!("pkcs11:token={TOKEN_NAME};object={label};type=private");

    run(harness
        .command("osslsigncode", SecretSource::Pin)?
        .arg("sign")
        .args(["-pkcs11engine", ENGINE])
        .arg("-pkcs11module")
        .arg(module_path()?)
        .arg("-certs")
        .arg(harness.certificate(label))
        .args(["-key", &key_uri, "-pass", &harness.credential.secret])
        .args(["-h", "sha256", "-n", "keyrelay test"])
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&output))?;

    let verified = run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(harness.token.ca_certificate_pem())
        .arg("-in")
        .arg(&output))?;
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(report.contains("Signature verification: ok"), "{report}");

    let records = harness.audit_records()?;
    let signatures: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "sign" && r["result"] == "ok" && r["key"] == label)
        .collect();
    assert_eq!(
        signatures.len(),
        1,
        "one audited signature expected: {records:#?}"
    );
    assert_eq!(signatures[0]["key_id"], harness.credential.key_id.as_str());

    // osslsigncode blanks its -pass value in argv; the module must still redact that place
    // only, keep the options around it, and never record the secret itself.
    let command_line = &signatures[0]["caller"]["command_line"];
    let arguments: Vec<&str> = command_line
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    let pass = arguments
        .iter()
        .position(|a| *a == "-pass")
        .expect("-pass is recorded");
    assert_eq!(
        arguments.get(pass + 1),
        Some(&"<redacted>"),
        "{arguments:?}"
    );
    assert!(arguments.contains(&"-certs"), "{arguments:?}");
    let log = std::fs::read_to_string(harness.audit_log())?;
    assert!(
        !log.contains(&harness.credential.secret),
        "the audit log holds the KeySecret"
    );
    Ok(())
}

#[test]
fn osslsigncode_signs_pe_with_rsa() -> Result<()> {
    sign_and_verify(RSA_SIGNING_LABEL)
}

#[test]
fn osslsigncode_signs_pe_with_ec() -> Result<()> {
    sign_and_verify(EC_SIGNING_LABEL)
}
