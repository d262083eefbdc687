//! Policy reload during a signing load: a valid and an invalid file, SIGHUP and file change,
//! with no failed request; and a reload that adds a key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use keyrelay_tests::policy::{replace_policy, sign_ok, wait_for_log};
use keyrelay_tests::{Harness, SecretSource, TOKEN_NAME, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_OTHER_LABEL, RSA_SIGNING_LABEL};

/// Signing threads that run while the policy changes.
const SIGNERS: usize = 3;

#[test]
fn reload_during_load_fails_no_request() -> Result<()> {
    let harness = Arc::new(Harness::start()?);
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    let original = std::fs::read_to_string(harness.policy())?;
    let stop = Arc::new(AtomicBool::new(false));
    let signers: Vec<_> = (0..SIGNERS)
        .map(|_| {
            let (harness, config, stop) = (harness.clone(), config.clone(), stop.clone());
            std::thread::spawn(move || -> Result<usize> {
                let mut signed = 0;
                while !stop.load(Ordering::Relaxed) {
                    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
                    signed += 1;
                }
                Ok(signed)
            })
        })
        .collect();

    let valid =
        format!("# Reviewed change: a daily quota.\n{original}signatures_per_day = 100000\n");
    replace_policy(&harness, &valid)?;
    wait_for_log(&harness, "policy reloaded", 1)?;
    replace_policy(&harness, &format!("{valid}[[clients]]\nkey_id = 7\n"))?;
    wait_for_log(&harness, "policy reload rejected", 1)?;
    run(std::process::Command::new("kill").args(["-HUP", &harness.server_pid().to_string()]))?;
    wait_for_log(&harness, "policy reload rejected", 2)?;
    replace_policy(&harness, &original)?;
    wait_for_log(&harness, "policy reloaded", 2)?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for signer in signers {
        total += signer.join().expect("a signer thread panicked")?;
    }
    assert!(total >= SIGNERS, "only {total} signatures");
    let records = harness.audit_records()?;
    assert!(
        records
            .iter()
            .all(|r| r["result"] != "refused" && r["result"] != "failed")
    );
    let reload_anchors = records
        .iter()
        .filter(|r| r["event"] == "anchor" && r["anchor"]["cause"] == "reload")
        .count();
    assert_eq!(reload_anchors, 2, "{records:#?}");
    Ok(())
}

#[test]
fn reload_adds_key_without_restart() -> Result<()> {
    let other_key = format!(
        "[keys.{RSA_OTHER_LABEL}]\ntoken = \"{TOKEN_NAME}\"\nlabel = \"{RSA_OTHER_LABEL}\"\n\
         environment = \"test\"\n\n"
    );
    let without_key = other_key.clone();
    let harness = Harness::start_with_policy(move |text| text.replace(&without_key, ""))?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    let started = std::fs::read_to_string(harness.policy())?;
    assert!(
        !started.contains(&other_key),
        "the key is absent at startup"
    );
    let pid = harness.server_pid();

    let granted = started
        .replace("[[clients]]", &format!("{other_key}[[clients]]"))
        .replace(
            &format!("keys = [\"{RSA_SIGNING_LABEL}\", \"{EC_SIGNING_LABEL}\"]"),
            &format!(
                "keys = [\"{RSA_SIGNING_LABEL}\", \"{EC_SIGNING_LABEL}\", \"{RSA_OTHER_LABEL}\"]"
            ),
        );
    replace_policy(&harness, &granted)?;
    wait_for_log(&harness, "policy reloaded", 1)?;

    sign_ok(&harness, &config, RSA_OTHER_LABEL, "SHA256-RSA-PKCS")?;
    assert_eq!(harness.server_pid(), pid, "the keyserver was not restarted");
    assert!(
        harness.server_log().contains("keys added by the reload"),
        "{}",
        harness.server_log()
    );
    Ok(())
}
