//! The audit log as evidence: `audit verify` on an intact and a hand-edited chain,
//! `audit find` on a signature made by osslsigncode, and a full disk that stops signing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::policy::{sign_ok, sign_refused};
use keyrelay_tests::{
    Harness, SecretSource, TOKEN_NAME, module_path, require_tool, run, run_failing,
    sample_executable,
};
use softhsm_fixtures::RSA_SIGNING_LABEL;

const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

fn verify(harness: &Harness, log: &Path) -> Result<Command> {
    let mut command = harness.keyserver()?;
    command
        .args(["audit", "verify", "--public-key"])
        .arg(harness.audit_public_key())
        .arg(log);
    Ok(command)
}

#[test]
fn audit_verify_detects_hand_edit() -> Result<()> {
    let harness = Harness::start()?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    for _ in 0..3 {
        sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    }
    let intact = run(&mut verify(&harness, &harness.audit_log())?)?;
    let text = std::fs::read_to_string(harness.audit_log())?;
    let target = text
        .lines()
        .position(|line| line.contains("\"event\":\"sign\""))
        .context("no sign record")?;
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, line)| match i == target {
            true => line.replace("\"rsa-signing\"", "\"ec-signing\""),
            false => line.to_owned(),
        })
        .collect();
    let copy = harness.dir.path().join("edited.jsonl");
    std::fs::write(&copy, edited.join("\n") + "\n")?;

    let broken = run_failing(&mut verify(&harness, &copy)?)?;

    let report = String::from_utf8_lossy(&intact.stdout);
    assert!(report.contains("audit chain valid"), "{report}");
    let location = format!("edited.jsonl:{}:", target + 1);
    assert!(broken.contains(&location), "{location} not in {broken}");
    assert!(broken.contains("was changed"), "{broken}");
    Ok(())
}

#[test]
fn audit_find_locates_osslsigncode_signature() -> Result<()> {
    require_tool("osslsigncode", "osslsigncode")?;
    anyhow::ensure!(
        Path::new(ENGINE).exists(),
        "{ENGINE} not found: install the Debian package libengine-pkcs11-openssl"
    );
    let harness = Harness::start()?;
    let input = sample_executable(harness.dir.path())?;
    let signed = harness.dir.path().join("signed.exe");
    let key_uri = format!("pkcs11:token={TOKEN_NAME};object={RSA_SIGNING_LABEL};type=private");
    run(harness
        .command("osslsigncode", SecretSource::File)?
        .arg("sign")
        .args(["-pkcs11engine", ENGINE])
        .arg("-pkcs11module")
        .arg(module_path()?)
        .arg("-certs")
        .arg(harness.certificate(RSA_SIGNING_LABEL))
        .args(["-key", &key_uri, "-pass", "unused", "-h", "sha256"])
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&signed))?;
    let pkcs7 = harness.dir.path().join("signature.p7");
    run(Command::new("osslsigncode")
        .arg("extract-signature")
        .arg("-in")
        .arg(&signed)
        .arg("-out")
        .arg(&pkcs7))?;

    let found = run(harness
        .keyserver()?
        .args(["audit", "find", "--signature"])
        .arg(&pkcs7)
        .arg(harness.audit_log()))?;

    let lines: Vec<String> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let json = lines[0].split_once(": ").context("no record text")?.1;
    let record: serde_json::Value = serde_json::from_str(json)?;
    assert_eq!(record["key"], RSA_SIGNING_LABEL);
    assert_eq!(record["key_id"], harness.credential.key_id.as_str());
    assert_eq!(record["caller"]["executable"], "/usr/bin/osslsigncode");
    let unknown = run_failing(
        harness
            .keyserver()?
            .args(["audit", "find", "--digest", &"00".repeat(32)])
            .arg(harness.audit_log()),
    )?;
    assert!(unknown.contains("no sign record matches"), "{unknown}");
    Ok(())
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "keyrelay-audit-test",
            ])
            .arg(path))
        .context("the full-disk test mounts a tmpfs and must run as root")?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> Result<()> {
    let output = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", path.display()))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        stderr.contains("No space left"),
        "dd did not fill the disk: {stderr}"
    );
    Ok(())
}

#[test]
fn full_disk_stops_signing() -> Result<()> {
    let mount_dir = tempfile::Builder::new()
        .prefix("keyrelay-audit-fs-")
        .tempdir()?;
    let tmpfs = Tmpfs::mount(mount_dir.path(), "256k")?;
    let log = tmpfs.0.join("audit.jsonl");
    let harness = Harness::start_with_policy(|text| {
        text.replace(
            "audit_log = \"audit.jsonl\"",
            &format!("audit_log = \"{}\"", log.display()),
        )
    })?;
    let config = harness.client_config(&harness.credential, SecretSource::File)?;
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    let filler = tmpfs.0.join("filler");
    fill(&filler)?;

    let refused = sign_refused(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;
    let while_full = std::fs::read_to_string(&log)?;
    std::fs::remove_file(&filler)?;
    sign_ok(&harness, &config, RSA_SIGNING_LABEL, "SHA256-RSA-PKCS")?;

    assert!(refused.contains("CKR_DEVICE_ERROR"), "{refused}");
    assert!(refused.contains("audit log"), "{refused}");
    let signed_while_full = while_full.matches("\"result\":\"ok\",").count();
    let text = std::fs::read_to_string(&log)?;
    let ok_signs = text
        .lines()
        .filter(|l| l.contains("\"event\":\"sign\"") && l.contains("\"result\":\"ok\""))
        .count();
    assert_eq!(ok_signs, 2, "{text}");
    assert!(signed_while_full >= 1, "{while_full}");
    assert!(harness.server_log().contains("audit log write failed"));
    run(&mut verify(&harness, &log)?)?;
    drop(harness);
    Ok(())
}
