//! jarsigner signs a real jar through SunPKCS11 loaded with the module, and verifies it.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::{Harness, SecretSource, module_path, require_tool, run};
use softhsm_fixtures::RSA_SIGNING_LABEL;

/// A jar that Debian's libcommons-cli-java package installs; nobody on this project wrote it.
const SAMPLE_JAR: &str = "/usr/share/java/commons-cli.jar";

#[test]
fn jarsigner_signs_jar_with_rsa() -> Result<()> {
    require_tool("jarsigner", "openjdk-17-jdk-headless")?;
    let sample = fs::canonicalize(SAMPLE_JAR)
        .with_context(|| format!("{SAMPLE_JAR} not found: install libcommons-cli-java"))?;
    let harness = Harness::start()?;
    let dir = harness.dir.path();

    // SunPKCS11 selects the token by slot id, which stays stable for a token name.
    let provider = dir.join("sunpkcs11.cfg");
    let module = module_path()?;
    fs::write(
        &provider,
        format!(
            "name = keyrelay\nlibrary = {}\nslot = {}\n",
            module.display(),
            harness.slot_id()
        ),
    )?;
    let signed = dir.join("signed.jar");

    // The KeySecret comes from KEYRELAY_KEY_SECRET, as a CI secret would; the store
    // password is then not a credential.
    run(harness
        .command("jarsigner", SecretSource::Environment)?
        .args(["-keystore", "NONE", "-storetype", "PKCS11"])
        .args(["-addprovider", "SunPKCS11", "-providerArg"])
        .arg(&provider)
        .args([
            "-storepass",
            "unused",
            "-sigalg",
            "SHA256withRSA",
            "-signedjar",
        ])
        .arg(&signed)
        .arg(&sample)
        .arg(RSA_SIGNING_LABEL))?;

    let verified = run(Command::new("jarsigner")
        .args(["-verify", "-verbose"])
        .arg(&signed))?;
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(report.contains("jar verified."), "{report}");
    assert!(
        report.contains(&format!("CN={RSA_SIGNING_LABEL}")),
        "{report}"
    );

    let records = harness.audit_records()?;
    let signature = records
        .iter()
        .find(|r| r["event"] == "sign" && r["result"] == "ok")
        .context("no audited signature")?;
    assert_eq!(signature["mechanism"], "CKM_SHA256_RSA_PKCS");
    assert_eq!(signature["input"], "digest");
    Ok(())
}
