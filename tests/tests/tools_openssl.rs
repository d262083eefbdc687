//! `openssl req -x509`, `openssl cms -sign` and `openssl pkeyutl` through libp11's engine,
//! once with SoftHSM2's module and once with keyrelay's. Every result is verified with the
//! key's certificate.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use keyrelay_tests::run_failing;
use keyrelay_tests::tools::{
    Backend, TOOLS_TOKEN, TokenPlan, ToolEnv, openssl_engine_config, require_engine, standard_plan,
    stdout_text,
};
use keyrelay_tests::{require_tool, run};
use softhsm_fixtures::{EC_SIGNING_LABEL, KeyKind, KeySpec, RSA_SIGNING_LABEL};

/// Options that make OpenSSL sign with RSASSA-PSS, SHA-256 and a 32-byte salt.
const PSS_OPTIONS: [&str; 2] = ["rsa_padding_mode:pss", "rsa_pss_saltlen:32"];

/// Builds an `openssl` command that loads libp11's engine with `backend`'s module.
fn openssl(env: &ToolEnv, backend: Backend) -> Result<Command> {
    require_tool("openssl", "openssl")?;
    require_engine()?;
    let config = openssl_engine_config(
        env.dir.path(),
        &env.module(backend)?,
        &format!("{backend:?}"),
    )?;
    let mut command = env.command("openssl", backend)?;
    command.env("OPENSSL_CONF", config);
    Ok(command)
}

fn key_uri(label: &str) -> String {
    format!("pkcs11:token={TOOLS_TOKEN};object={label};type=private")
}

fn file(env: &ToolEnv, name: &str, backend: Backend) -> PathBuf {
    env.dir.path().join(format!("{backend:?}-{name}"))
}

/// Signs a SHA-256 digest with `openssl pkeyutl` and returns the signature file.
fn pkeyutl_sign(env: &ToolEnv, backend: Backend, label: &str, options: &[&str]) -> Result<PathBuf> {
    let digest = env.dir.path().join("digest.bin");
    fs::write(
        &digest,
        ring::digest::digest(&ring::digest::SHA256, b"keyrelay").as_ref(),
    )?;
    let signature = file(env, &format!("{label}.sig"), backend);
    let mut command = openssl(env, backend)?;
    command
        .args([
            "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
        ])
        .args(["-inkey", &key_uri(label), "-passin"])
        .arg(format!("pass:{}", env.pin(backend, TOOLS_TOKEN)))
        .args(["-pkeyopt", "digest:sha256"]);
    for option in options {
        command.args(["-pkeyopt", option]);
    }
    run(command.arg("-in").arg(&digest).arg("-out").arg(&signature))?;

    let mut verify = Command::new("openssl");
    verify
        .args(["pkeyutl", "-verify", "-certin", "-inkey"])
        .arg(env.key(label).certificate_pem_path())
        .args(["-pkeyopt", "digest:sha256"]);
    for option in options {
        verify.args(["-pkeyopt", option]);
    }
    let report = stdout_text(
        verify
            .arg("-in")
            .arg(&digest)
            .arg("-sigfile")
            .arg(&signature),
    )?;
    assert!(
        report.contains("Signature Verified Successfully"),
        "{backend:?}: {report}"
    );
    Ok(signature)
}

#[test]
fn pkeyutl_rsa_matches_softhsm() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let direct = pkeyutl_sign(&env, Backend::Direct, RSA_SIGNING_LABEL, &[])?;
    let keyrelay = pkeyutl_sign(&env, Backend::Keyrelay, RSA_SIGNING_LABEL, &[])?;
    assert!(
        fs::read(direct)? == fs::read(keyrelay)?,
        "PKCS#1 v1.5 signatures of one digest with one key must be identical"
    );
    Ok(())
}

#[test]
fn pkeyutl_rsa_pss_verifies() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        pkeyutl_sign(&env, backend, RSA_SIGNING_LABEL, &PSS_OPTIONS)?;
    }
    Ok(())
}

#[test]
fn pkeyutl_ecdsa_verifies() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        pkeyutl_sign(&env, backend, EC_SIGNING_LABEL, &[])?;
    }
    Ok(())
}

/// Signs a text with `openssl cms -sign` and verifies the result against the test CA.
fn cms_sign(env: &ToolEnv, backend: Backend, label: &str, options: &[&str]) -> Result<()> {
    let content = env.dir.path().join("content.txt");
    fs::write(&content, "keyrelay signs this text\n")?;
    let signed = file(env, &format!("{label}.p7m"), backend);
    let mut command = openssl(env, backend)?;
    command
        .args(["cms", "-sign", "-binary", "-nodetach", "-md", "sha256"])
        .args(["-engine", "pkcs11", "-keyform", "engine", "-inkey"])
        .arg(key_uri(label))
        .arg("-passin")
        .arg(format!("pass:{}", env.pin(backend, TOOLS_TOKEN)))
        .arg("-signer")
        .arg(env.key(label).certificate_pem_path());
    for option in options {
        command.args(["-keyopt", option]);
    }
    run(command
        .arg("-in")
        .arg(&content)
        .args(["-outform", "DER", "-out"])
        .arg(&signed))?;

    let verified = run(Command::new("openssl")
        .args([
            "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
        ])
        .arg("-CAfile")
        .arg(env.ca_certificate_for(label))
        .arg("-in")
        .arg(&signed))?;
    assert_eq!(
        verified.stdout,
        fs::read(&content)?,
        "{backend:?}: the verified content differs"
    );
    Ok(())
}

#[test]
fn cms_signs_with_rsa() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        cms_sign(&env, backend, RSA_SIGNING_LABEL, &[])?;
    }
    Ok(())
}

#[test]
fn cms_signs_with_rsa_pss() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        cms_sign(&env, backend, RSA_SIGNING_LABEL, &PSS_OPTIONS)?;
    }
    Ok(())
}

#[test]
fn cms_signs_with_ecdsa() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        cms_sign(&env, backend, EC_SIGNING_LABEL, &[])?;
    }
    Ok(())
}

/// Makes a self-signed certificate with `openssl req -x509` and checks its signature.
fn req_x509(env: &ToolEnv, backend: Backend, label: &str) -> Result<()> {
    let certificate = file(env, &format!("{label}-self.pem"), backend);
    run(openssl(env, backend)?
        .args(["req", "-new", "-x509", "-days", "1", "-sha256"])
        .args(["-engine", "pkcs11", "-keyform", "engine", "-key"])
        .arg(key_uri(label))
        .arg("-passin")
        .arg(format!("pass:{}", env.pin(backend, TOOLS_TOKEN)))
        .args(["-subj", &format!("/CN={label} self-signed"), "-out"])
        .arg(&certificate))?;
    verify_self_signed(&certificate, env.key(label).public_key_spki_der())
}

fn verify_self_signed(certificate: &Path, expected_spki: &[u8]) -> Result<()> {
    let verified = stdout_text(
        Command::new("openssl")
            .args(["verify", "-check_ss_sig", "-CAfile"])
            .arg(certificate)
            .arg(certificate),
    )?;
    assert!(verified.contains(": OK"), "{verified}");
    let der = run(Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -noout -pubkey -in \"$1\" | openssl pkey -pubin -outform DER")
        .arg("sh")
        .arg(certificate))?;
    assert!(
        der.stdout == expected_spki,
        "the certificate carries another public key than the token's"
    );
    Ok(())
}

#[test]
fn req_x509_with_rsa() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        req_x509(&env, backend, RSA_SIGNING_LABEL)?;
    }
    Ok(())
}

#[test]
fn req_x509_with_ecdsa() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    for backend in Backend::BOTH {
        req_x509(&env, backend, EC_SIGNING_LABEL)?;
    }
    Ok(())
}

/// libp11 0.4.12 finds no private key on a token that also contains an Ed25519 key. Through
/// keyrelay the policy hides the Ed25519 key from this client, so the RSA key stays usable.
#[test]
fn hidden_ed25519_spares_libp11() -> Result<()> {
    let mut plan = TokenPlan::allowing_all(
        TOOLS_TOKEN,
        vec![
            KeySpec::new(RSA_SIGNING_LABEL, [0x01], KeyKind::Rsa { bits: 2048 }),
            KeySpec::new("ed-hidden", [0x09], KeyKind::Ed25519),
        ],
    );
    plan.allowed = vec![RSA_SIGNING_LABEL.to_owned()];
    let env = ToolEnv::start(&[plan])?;

    // run_failing fails the test if libp11 succeeds on SoftHSM2.
    run_failing(
        openssl(&env, Backend::Direct)?
            .args([
                "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
            ])
            .args(["-inkey", &key_uri(RSA_SIGNING_LABEL), "-passin"])
            .arg(format!("pass:{}", env.pin(Backend::Direct, TOOLS_TOKEN)))
            .args(["-in", "/etc/hostname", "-out", "/dev/null"]),
    )?;
    pkeyutl_sign(&env, Backend::Keyrelay, RSA_SIGNING_LABEL, &[])?;
    Ok(())
}
