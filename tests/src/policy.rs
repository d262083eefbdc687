//! Policy and audit helpers for the end-to-end tests: signing through pkcs11-tool with a
//! chosen client configuration, and running `keyserver` subcommands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::{Harness, module_path, run, run_failing};

/// A pkcs11-tool sign command through the module, with the KeySecret taken from the client
/// configuration `config`. `mechanism` is a pkcs11-tool name such as `SHA256-RSA-PKCS`.
pub fn sign_command(
    harness: &Harness,
    config: &Path,
    label: &str,
    mechanism: &str,
    output: &Path,
) -> Result<Command> {
    let id = harness
        .token
        .key(label)
        .ok_or_else(|| anyhow::anyhow!("{label} is not a standard fixture key"))?
        .id_hex();
    let input = harness.dir.path().join("input.bin");
    if !input.exists() {
        std::fs::write(&input, [0x5a; 32])?;
    }
    let mut command = Command::new("pkcs11-tool");
    command
        .env("KEYRELAY_CONFIG", config)
        .env_remove("KEYRELAY_KEY_SECRET")
        .arg("--module")
        .arg(module_path()?)
        .args(["--login", "--pin", "unused", "--sign", "-m", mechanism])
        .args(["--id", &id, "--input-file"])
        .arg(input)
        .arg("--output-file")
        .arg(output);
    Ok(command)
}

/// Signs with `label` and fails unless a signature file results.
pub fn sign_ok(harness: &Harness, config: &Path, label: &str, mechanism: &str) -> Result<PathBuf> {
    let output = harness.dir.path().join(format!("sig-{}.bin", unique()));
    run(&mut sign_command(
        harness, config, label, mechanism, &output,
    )?)?;
    anyhow::ensure!(output.exists(), "pkcs11-tool wrote no signature");
    Ok(output)
}

/// Signs with `label`, expecting a failure, and returns pkcs11-tool's output.
pub fn sign_refused(
    harness: &Harness,
    config: &Path,
    label: &str,
    mechanism: &str,
) -> Result<String> {
    let output = harness.dir.path().join(format!("sig-{}.bin", unique()));
    let text = run_failing(&mut sign_command(
        harness, config, label, mechanism, &output,
    )?)?;
    let written = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    anyhow::ensure!(written == 0, "a refused request wrote a signature:\n{text}");
    Ok(text)
}

/// The sign records of the harness audit log.
pub fn sign_records(harness: &Harness) -> Result<Vec<serde_json::Value>> {
    Ok(harness
        .audit_records()?
        .into_iter()
        .filter(|r| r["event"] == "sign")
        .collect())
}

/// Waits up to 10 s for `needle` to appear in the keyserver log.
pub fn wait_for_log(harness: &Harness, needle: &str, count: usize) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if harness.server_log().matches(needle).count() >= count {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!(
        "the keyserver did not log \"{needle}\" {count} times within 10 s:\n{}",
        harness.server_log()
    )
}

/// Replaces the policy file atomically, as an editor that renames its output would.
pub fn replace_policy(harness: &Harness, text: &str) -> Result<()> {
    let temporary = harness.dir.path().join("policy.toml.new");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, harness.policy())?;
    Ok(())
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
