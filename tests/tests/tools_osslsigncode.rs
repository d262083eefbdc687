//! osslsigncode signs a real PE executable and a real CAB archive through libp11's engine,
//! once with SoftHSM2's module and once with keyrelay's, and verifies both results.
//!
//! osslsigncode 2.9 has no option for RSA-PSS, so PSS is covered by the `openssl cms` and
//! `pkcs11-tool` tests instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use keyrelay_tests::tools::{
    Backend, PKCS11_ENGINE, TOOLS_TOKEN, ToolEnv, require_engine, standard_plan, stdout_text,
};
use keyrelay_tests::{require_tool, run, sample_executable};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_SIGNING_LABEL};

/// A CAB archive that Debian's libgcab-tests package installs; the gcab project wrote it.
const SAMPLE_CAB: &str = "/usr/libexec/installed-tests/libgcab-1.0/test-mszip.cab";

/// Signing time passed to osslsigncode, so that two PKCS#1 v1.5 signatures of one file with
/// one key are byte-identical.
const SIGNING_TIME: &str = "1700000000";

/// Signs `input` with key `label` through `backend` and returns the signed file.
fn sign(env: &ToolEnv, backend: Backend, label: &str, input: &Path) -> Result<PathBuf> {
    let extension = input.extension().and_then(|e| e.to_str()).unwrap_or("bin");
    let output = env
        .dir
        .path()
        .join(format!("signed-{label}-{backend:?}.{extension}"));
    let key_uri = format!("pkcs11:token={TOOLS_TOKEN};object={label};type=private");
    run(env
        .command("osslsigncode", backend)?
        .args(["sign", "-pkcs11engine", PKCS11_ENGINE, "-pkcs11module"])
        .arg(env.module(backend)?)
        .arg("-certs")
        .arg(env.key(label).certificate_pem_path())
        .args(["-key", &key_uri, "-pass", &env.pin(backend, TOOLS_TOKEN)])
        .args(["-h", "sha256", "-n", "keyrelay test", "-time", SIGNING_TIME])
        .arg("-in")
        .arg(input)
        .arg("-out")
        .arg(&output))?;
    Ok(output)
}

/// Verifies a signed file against the test CA and returns osslsigncode's report.
fn verify(env: &ToolEnv, label: &str, signed: &Path) -> Result<String> {
    stdout_text(
        Command::new("osslsigncode")
            .arg("verify")
            .arg("-CAfile")
            .arg(env.ca_certificate_for(label))
            .arg("-in")
            .arg(signed),
    )
}

/// Signs `input` through both backends, verifies both and returns the two signed files.
fn sign_both(label: &str, input: impl Fn(&Path) -> Result<PathBuf>) -> Result<[Vec<u8>; 2]> {
    require_tool("osslsigncode", "osslsigncode")?;
    require_engine()?;
    let env = ToolEnv::start(&[standard_plan()])?;
    let input = input(env.dir.path())?;
    let mut signed = Vec::new();
    for backend in Backend::BOTH {
        let path = sign(&env, backend, label, &input)?;
        let report = verify(&env, label, &path)?;
        assert!(
            report.contains("Signature verification: ok"),
            "{backend:?}: the signature did not verify:\n{report}"
        );
        signed.push(fs::read(path)?);
    }
    assert_eq!(
        env.audited_signatures(label)?,
        1,
        "keyrelay made one audited signature"
    );
    Ok([signed.remove(0), signed.remove(0)])
}

fn sample_cab(dir: &Path) -> Result<PathBuf> {
    let target = dir.join("sample.cab");
    fs::copy(SAMPLE_CAB, &target)
        .with_context(|| format!("{SAMPLE_CAB} not found: install libgcab-tests"))?;
    Ok(target)
}

#[test]
fn pe_rsa_matches_softhsm() -> Result<()> {
    let [direct, keyrelay] = sign_both(RSA_SIGNING_LABEL, sample_executable)?;
    assert!(
        direct == keyrelay,
        "PKCS#1 v1.5 with a fixed signing time must give identical files"
    );
    Ok(())
}

#[test]
fn pe_ecdsa_verifies() -> Result<()> {
    sign_both(EC_SIGNING_LABEL, sample_executable)?;
    Ok(())
}

#[test]
fn cab_rsa_matches_softhsm() -> Result<()> {
    let [direct, keyrelay] = sign_both(RSA_SIGNING_LABEL, sample_cab)?;
    assert!(
        direct == keyrelay,
        "PKCS#1 v1.5 with a fixed signing time must give identical files"
    );
    Ok(())
}

#[test]
fn cab_ecdsa_verifies() -> Result<()> {
    sign_both(EC_SIGNING_LABEL, sample_cab)?;
    Ok(())
}
