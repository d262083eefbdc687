//! Policy rules through the real module and keyserver: environments, mechanisms and digests,
//! validity windows, source networks, quotas and revoked credentials.

use anyhow::Result;
use keyrelay_tests::policy::{replace_policy, sign_ok, sign_records, sign_refused, wait_for_log};
use keyrelay_tests::{Harness, SecretSource, run};
use softhsm_fixtures::RSA_SIGNING_LABEL;

/// Appends `rules` to the client entry, which ends the standard policy.
fn client_rules(rules: &str) -> impl FnOnce(String) -> String {
    let rules = rules.to_owned();
    move |text| format!("{text}{rules}\n")
}

#[test]
fn environment_mixing_refused_at_load() -> Result<()> {
    let harness = Harness::start()?;
    let mixed = harness.dir.path().join("mixed.toml");
    let text = std::fs::read_to_string(harness.policy())?.replace(
        "label = \"rsa-signing\"\nenvironment = \"test\"",
        "label = \"rsa-signing\"\nenvironment = \"release\"",
    );
    std::fs::write(&mixed, text)?;

    let check = harness
        .keyserver()?
        .arg("check")
        .arg("--config")
        .arg(&mixed)
        .output()?;
    let serve = harness
        .keyserver()?
        .arg("serve")
        .arg("--config")
        .arg(&mixed)
        .output()?;

    assert_eq!(check.status.code(), Some(1));
    assert_eq!(serve.status.code(), Some(1));
    for output in [check, serve] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("environment \"test\""), "{stderr}");
        assert!(stderr.contains("environment \"release\""), "{stderr}");
    }
    Ok(())
}

#[test]
fn check_exit_codes_gate_ci() -> Result<()> {
    let harness = Harness::start()?;
    let risky = harness.dir.path().join("risky.toml");
    let text = std::fs::read_to_string(harness.policy())?
        .replace("environment = \"test\"", "environment = \"release\"");
    std::fs::write(&risky, text)?;

    let clean = harness
        .keyserver()?
        .args(["check", "--config"])
        .arg(harness.policy())
        .output()?;
    let warned = harness
        .keyserver()?
        .args(["check", "--config"])
        .arg(&risky)
        .output()?;

    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert_eq!(warned.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(stderr.contains("has no quota"), "{stderr}");
    assert!(stderr.contains("allows SHA-1"), "{stderr}");
    Ok(())
}

#[test]
fn disallowed_mechanism_and_digest_refused() -> Result<()> {
    let rules =
        "mechanisms = [\"CKM_SHA256_RSA_PKCS\", \"CKM_ECDSA\"]\ndigests = [\"sha384\", \"sha256\"]";
    let harness = Harness::start_with_policy(client_rules(rules))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;

    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    let raw = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA1-RSA-PKCS")?;

    assert!(raw.contains("CKR_MECHANISM_INVALID"), "{raw}");
    let records = sign_records(&harness)?;
    // pkcs11-tool calls C_Sign twice (length, then signature), so one refusal may be audited
    // twice.
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["result"] == "refused")
        .collect();
    assert!(!refused.is_empty(), "{records:#?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("does not allow"),
        "{records:#?}"
    );
    Ok(())
}

#[test]
fn digest_outside_rule_refused() -> Result<()> {
    let harness = Harness::start_with_policy(client_rules("digests = [\"sha384\"]"))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;

    let output = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    assert!(output.contains("CKR_MECHANISM_INVALID"), "{output}");
    let records = sign_records(&harness)?;
    assert!(
        records[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("digest algorithm sha256"),
        "{records:#?}"
    );
    Ok(())
}

#[test]
fn expired_client_refused() -> Result<()> {
    let harness = Harness::start_with_policy(client_rules("not_after = 2020-01-01T00:00:00Z"))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;

    let output = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    assert!(output.contains("validity window"), "{output}");
    let records = harness.audit_records()?;
    let refused = records
        .iter()
        .find(|r| r["event"] == "authenticate" && r["result"] == "refused")
        .expect("a refused authentication");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("2020-01-01"),
        "{refused}"
    );
    assert!(sign_records(&harness)?.is_empty());
    Ok(())
}

#[test]
fn source_network_enforced() -> Result<()> {
    // The client cannot choose its source address, and Linux gives loopback traffic the
    // source 127.0.0.1 whatever 127.0.0.x it is sent to. So the client stays at 127.0.0.1
    // and the policy moves between a second loopback address and the first.
    let harness = Harness::start_with_policy(client_rules("networks = [\"127.0.0.2/32\"]"))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;

    let refused = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    let text = std::fs::read_to_string(harness.policy())?;
    replace_policy(&harness, &text.replace("127.0.0.2/32", "127.0.0.1/32"))?;
    wait_for_log(&harness, "policy reloaded", 1)?;
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    assert!(
        refused.contains("outside the allowed networks"),
        "{refused}"
    );
    let records = harness.audit_records()?;
    let auth: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "authenticate")
        .collect();
    assert_eq!(auth[0]["result"], "refused", "{records:#?}");
    assert_eq!(auth.last().unwrap()["result"], "ok", "{records:#?}");
    assert!(
        auth[0]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{records:#?}"
    );
    Ok(())
}

/// Seconds until the next UTC minute starts.
fn seconds_to_next_minute() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    60 - now % 60
}

#[test]
fn quota_exhaustion_survives_restart_and_recovers() -> Result<()> {
    let mut harness = Harness::start_with_policy(client_rules("signatures_per_minute = 2"))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    // The exhaustion and the restart must fall in one UTC minute.
    if seconds_to_next_minute() < 25 {
        std::thread::sleep(std::time::Duration::from_secs(seconds_to_next_minute() + 1));
    }

    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    let over = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    harness.restart()?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    let after_restart = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    std::thread::sleep(std::time::Duration::from_secs(seconds_to_next_minute() + 1));
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    assert!(over.contains("signature quota exceeded"), "{over}");
    assert!(
        after_restart.contains("signature quota exceeded"),
        "{after_restart}"
    );
    let results: Vec<_> = sign_records(&harness)?
        .iter()
        .map(|r| r["result"].as_str().unwrap_or("").to_owned())
        .collect();
    // Each refused pkcs11-tool run may be audited twice, once per C_Sign call.
    let (first, rest) = results.split_at(2);
    let (last, middle) = rest.split_last().expect("five or more records");
    assert_eq!(first, ["ok", "ok"], "{results:?}");
    assert_eq!(last, "ok", "{results:?}");
    assert!(middle.len() >= 2, "{results:?}");
    assert!(middle.iter().all(|r| r == "refused"), "{results:?}");
    Ok(())
}

#[test]
fn revoked_credential_loses_access() -> Result<()> {
    let harness = Harness::start()?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    run(harness
        .keyserver()?
        .args(["credential", "revoke", "--config"])
        .arg(harness.policy())
        .arg(&harness.credential.key_id))?;
    wait_for_log(&harness, "policy reloaded", 1)?;
    let output = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    // The client configuration names no tokens, so the module has no slot to log in on and
    // fails the slot listing itself, with a line that names the cause.
    assert!(output.contains("CKR_DEVICE_ERROR"), "{output}");
    assert!(
        output.contains("rejected the configured KeyId or KeySecret"),
        "{output}"
    );
    let policy = std::fs::read_to_string(harness.policy())?;
    assert!(!policy.contains(&harness.credential.key_id), "{policy}");
    let records = harness.audit_records()?;
    let last_auth = records
        .iter()
        .rev()
        .find(|r| r["event"] == "authenticate")
        .unwrap();
    assert_eq!(last_auth["result"], "refused");
    Ok(())
}
