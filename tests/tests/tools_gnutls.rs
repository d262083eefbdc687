//! GnuTLS's `p11tool --list-all` and `--test-sign`, once with SoftHSM2's module and once with
//! keyrelay's.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::Result;
use keyrelay_tests::tools::{Backend, TOOLS_TOKEN, ToolEnv, standard_plan, stdout_text};
use keyrelay_tests::{require_tool, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_OTHER_LABEL, RSA_SIGNING_LABEL};

/// Builds a logged-in `p11tool` command with `backend`'s module; GNUTLS_PIN carries the PIN.
fn p11tool(env: &ToolEnv, backend: Backend) -> Result<Command> {
    require_tool("p11tool", "gnutls-bin")?;
    let mut command = env.command("p11tool", backend)?;
    command
        .env("GNUTLS_PIN", env.pin(backend, TOOLS_TOKEN))
        .arg("--provider")
        .arg(env.module(backend)?)
        .arg("--login");
    Ok(command)
}

/// Label and type of every object p11tool lists, as `label: type` entries.
fn listed_objects(listing: &str) -> BTreeSet<String> {
    let mut objects = BTreeSet::new();
    let mut kind = "";
    for line in listing.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Type:") {
            kind = value.trim();
        }
        if let Some(value) = line.strip_prefix("Label:") {
            objects.insert(format!("{}: {kind}", value.trim()));
        }
    }
    objects
}

#[test]
fn list_all_matches_softhsm() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let token_uri = format!("pkcs11:token={TOOLS_TOKEN}");
    let direct = stdout_text(p11tool(&env, Backend::Direct)?.args(["--list-all", &token_uri]))?;
    let keyrelay = stdout_text(p11tool(&env, Backend::Keyrelay)?.args(["--list-all", &token_uri]))?;

    let expected: BTreeSet<String> = listed_objects(&direct)
        .into_iter()
        .filter(|object| !object.starts_with(RSA_OTHER_LABEL))
        .collect();
    assert_eq!(
        expected.len(),
        6,
        "SoftHSM2 lists key pair and certificate of both allowed keys:\n{direct}"
    );
    assert_eq!(
        listed_objects(&keyrelay),
        expected,
        "keyrelay lists SoftHSM2's objects less those of the hidden key:\n{keyrelay}"
    );
    Ok(())
}

#[test]
fn test_sign_passes() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for label in [RSA_SIGNING_LABEL, EC_SIGNING_LABEL] {
        let key_uri = format!("pkcs11:token={TOOLS_TOKEN};object={label};type=private");
        for backend in Backend::BOTH {
            // p11tool reports each step of --test-sign on standard error.
            let output = run(p11tool(&env, backend)?.args(["--test-sign", &key_uri]))?;
            let report = String::from_utf8_lossy(&output.stderr);
            assert!(
                report.contains("Verifying against public key in the token... ok"),
                "{backend:?} {label}:\n{report}"
            );
        }
    }
    Ok(())
}
