//! Authentication and allowlist checks through the module, with their audit records.

use anyhow::Result;
use keyrelay_tests::{Credential, Harness, SecretSource, module_path, run, run_failing};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_OTHER_LABEL, RSA_SIGNING_LABEL};

/// A wrong KeySecret distinctive enough that finding it in the audit log means it leaked.
const WRONG_PIN: &str = "wrong-pin-4f7c";

#[test]
fn wrong_secret_is_pin_incorrect() -> Result<()> {
    let harness = Harness::start()?;
    let output = run_failing(
        harness
            .command("pkcs11-tool", SecretSource::Pin)?
            .arg("--module")
            .arg(module_path()?)
            .args(["--login", "--pin", WRONG_PIN, "--list-objects"]),
    )?;
    assert!(output.contains("CKR_PIN_INCORRECT"), "{output}");

    let records = harness.audit_records()?;
    let refused = records
        .iter()
        .filter(|r| r["event"] == "authenticate" && r["result"] == "refused")
        .count();
    assert_eq!(refused, 1, "{records:#?}");
    assert!(!std::fs::read_to_string(harness.audit_log())?.contains(WRONG_PIN));
    Ok(())
}

#[test]
fn unknown_key_id_is_pin_incorrect() -> Result<()> {
    let harness = Harness::start()?;
    let stranger = Credential::generate();
    let config = harness.client_config(&stranger, SecretSource::Pin)?;
    let output = run_failing(
        std::process::Command::new("pkcs11-tool")
            .env("KEYRELAY_CONFIG", config)
            .arg("--module")
            .arg(module_path()?)
            .args(["--login", "--pin", &stranger.secret, "--list-objects"]),
    )?;
    assert!(output.contains("CKR_PIN_INCORRECT"), "{output}");

    let records = harness.audit_records()?;
    let refused = records
        .iter()
        .find(|r| r["event"] == "authenticate")
        .expect("a record");
    assert_eq!(refused["key_id"], stranger.key_id.as_str());
    assert_eq!(refused["result"], "refused");
    Ok(())
}

#[test]
fn key_outside_allowlist_is_invisible() -> Result<()> {
    let harness = Harness::start()?;
    let listing = run(harness
        .command("pkcs11-tool", SecretSource::File)?
        .arg("--module")
        .arg(module_path()?)
        .args(["--login", "--pin", "unused", "--list-objects"]))?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains(RSA_SIGNING_LABEL), "{listing}");
    assert!(listing.contains(EC_SIGNING_LABEL), "{listing}");
    assert!(!listing.contains(RSA_OTHER_LABEL), "{listing}");

    // pkcs11-tool selects the signing key by CKA_ID, not by label.
    let other_id = harness
        .token
        .key(RSA_OTHER_LABEL)
        .expect("a standard key")
        .id_hex();
    let output = run_failing(
        harness
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
            ])
            .args(["--id", &other_id, "--input-file", "/etc/hostname"]),
    )?;
    assert!(output.contains("Private key not found"), "{output}");

    let records = harness.audit_records()?;
    let accepted = records
        .iter()
        .filter(|r| r["event"] == "authenticate" && r["result"] == "ok")
        .count();
    assert_eq!(accepted, 2, "{records:#?}");
    assert!(
        records.iter().all(|r| r["key"] != RSA_OTHER_LABEL),
        "{records:#?}"
    );
    Ok(())
}
