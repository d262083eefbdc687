//! jarsigner and keytool through SunPKCS11, once with SoftHSM2's module and once with
//! keyrelay's: RSA, RSA-PSS and ECDSA signatures on a real jar, and the key entries keytool
//! lists.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::tools::{Backend, TOOLS_TOKEN, ToolEnv, standard_plan, stdout_text};
use keyrelay_tests::{require_tool, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_OTHER_LABEL, RSA_SIGNING_LABEL};

/// A jar that Debian's libcommons-cli-java package installs; nobody on this project wrote it.
const SAMPLE_JAR: &str = "/usr/share/java/commons-cli.jar";

/// Writes a SunPKCS11 configuration for `backend`. Through keyrelay the slot id is stable;
/// SoftHSM2 assigns random slot ids, so there the token is the first slot of the direct store,
/// which contains only this token.
fn provider_config(env: &ToolEnv, backend: Backend) -> Result<PathBuf> {
    let selector = match backend {
        Backend::Direct => "slotListIndex = 0".to_owned(),
        Backend::Keyrelay => format!(
            "slot = {}",
            keyrelay_protocol::slot_id_for_token(TOOLS_TOKEN)
        ),
    };
    let path = env.dir.path().join(format!("sunpkcs11-{backend:?}.cfg"));
    fs::write(
        &path,
        format!(
            "name = keyrelay{backend:?}\nlibrary = {}\n{selector}\n",
            env.module(backend)?.display()
        ),
    )?;
    Ok(path)
}

/// Builds a keytool or jarsigner command with the PKCS#11 keystore of `backend`.
fn pkcs11_command(env: &ToolEnv, program: &str, backend: Backend) -> Result<Command> {
    let mut command = env.command(program, backend)?;
    command
        .args(["-keystore", "NONE", "-storetype", "PKCS11"])
        .args(["-addprovider", "SunPKCS11", "-providerArg"])
        .arg(provider_config(env, backend)?)
        .args(["-storepass", &env.pin(backend, TOOLS_TOKEN)]);
    Ok(command)
}

fn sample_jar() -> Result<PathBuf> {
    require_tool("jarsigner", "openjdk-17-jdk-headless")?;
    fs::canonicalize(SAMPLE_JAR)
        .with_context(|| format!("{SAMPLE_JAR} not found: install libcommons-cli-java"))
}

/// Signs the sample jar with `label` and `algorithm` through `backend`, then verifies it.
fn sign_and_verify(env: &ToolEnv, backend: Backend, label: &str, algorithm: &str) -> Result<()> {
    let signed = env
        .dir
        .path()
        .join(format!("signed-{algorithm}-{backend:?}.jar"));
    run(pkcs11_command(env, "jarsigner", backend)?
        .args(["-sigalg", algorithm, "-signedjar"])
        .arg(&signed)
        .arg(sample_jar()?)
        .arg(label))?;
    let report = verify(&signed)?;
    assert!(
        report.contains("jar verified."),
        "{backend:?}: {algorithm} did not verify:\n{report}"
    );
    assert!(
        report.contains(&format!("CN={label}")),
        "{backend:?}: the signer is not {label}:\n{report}"
    );
    Ok(())
}

fn verify(signed: &Path) -> Result<String> {
    stdout_text(
        Command::new("jarsigner")
            .args(["-verify", "-verbose"])
            .arg(signed),
    )
}

/// Signs through both backends and checks keyrelay audited one signature with `mechanism`.
fn sign_both(label: &str, algorithm: &str, mechanism: &str) -> Result<()> {
    sample_jar()?;
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        sign_and_verify(&env, backend, label, algorithm)?;
    }
    let records = env.audit_records()?;
    let mechanisms: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "sign" && r["result"] == "ok")
        .map(|r| &r["mechanism"])
        .collect();
    assert_eq!(mechanisms, [mechanism], "audited signatures: {records:#?}");
    Ok(())
}

#[test]
fn signs_jar_with_rsa() -> Result<()> {
    sign_both(RSA_SIGNING_LABEL, "SHA256withRSA", "CKM_SHA256_RSA_PKCS")
}

#[test]
fn signs_jar_with_rsa_pss() -> Result<()> {
    sign_both(RSA_SIGNING_LABEL, "RSASSA-PSS", "CKM_RSA_PKCS_PSS")
}

#[test]
fn signs_jar_with_ecdsa() -> Result<()> {
    sign_both(EC_SIGNING_LABEL, "SHA256withECDSA", "CKM_ECDSA")
}

/// Aliases and entry types of `keytool -list` output, one `alias, type` pair per entry.
fn key_entries(listing: &str) -> Vec<String> {
    let mut entries: Vec<String> = listing
        .lines()
        .filter(|line| line.contains("Entry"))
        .map(|line| {
            let mut fields = line.split(", ");
            let alias = fields.next().unwrap_or_default();
            let kind = fields.last().unwrap_or_default();
            format!("{alias}, {kind}")
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn keytool_lists_allowed_entries() -> Result<()> {
    require_tool("keytool", "openjdk-17-jdk-headless")?;
    let env = ToolEnv::start(&[standard_plan()])?;
    let direct = stdout_text(pkcs11_command(&env, "keytool", Backend::Direct)?.arg("-list"))?;
    let keyrelay = stdout_text(pkcs11_command(&env, "keytool", Backend::Keyrelay)?.arg("-list"))?;

    let expected: Vec<String> = key_entries(&direct)
        .into_iter()
        .filter(|entry| !entry.starts_with(RSA_OTHER_LABEL))
        .collect();
    assert_eq!(
        expected.len(),
        2,
        "SoftHSM2 lists both allowed keys:\n{direct}"
    );
    assert_eq!(
        key_entries(&keyrelay),
        expected,
        "keyrelay lists SoftHSM2's entries less the key the policy hides:\n{keyrelay}"
    );
    Ok(())
}
