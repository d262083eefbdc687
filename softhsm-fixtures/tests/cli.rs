//! Tests of the `softhsm-fixtures` binary as the demo script runs it.

use std::process::{Command, Output};

fn run_binary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_softhsm-fixtures"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn token_prints_summary() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("token");
    let output = run_binary(&["token", "--dir", dir.to_str().unwrap(), "--label", "demo"]);
    let stdout = text(&output.stdout);

    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    // The summary shows the canonical path of the fixture folder.
    let dir = dir.canonicalize().unwrap();
    assert!(stdout.contains("SoftHSM2 token \"demo\""), "{stdout}");
    assert!(
        stdout.contains(&format!("SOFTHSM2_CONF={}/softhsm2.conf", dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("PIN file: {}/user.pin", dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("CA:       {}/ca.pem", dir.display())),
        "{stdout}"
    );
    for line in [
        "rsa-signing  id 01",
        "ec-signing   id 02",
        "rsa-other    id 03",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in {stdout}");
    }
    assert!(dir.join("certs/ec-signing.pem").is_file());
}

#[test]
fn token_failure_is_one_line_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leftover"), b"x").unwrap();
    let output = run_binary(&[
        "token",
        "--dir",
        dir.path().to_str().unwrap(),
        "--label",
        "demo",
    ]);
    let stderr = text(&output.stderr);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("softhsm-fixtures: error: fixture folder"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn tls_writes_files() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap();
    let output = run_binary(&[
        "tls",
        "--dir",
        dir_text,
        "--name",
        "localhost",
        "--name",
        "::1",
    ]);

    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains("localhost, ::1"));
    for file in ["tls-ca.pem", "server-chain.pem", "server-key.pem"] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
}

#[test]
fn tls_invalid_name_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_binary(&[
        "tls",
        "--dir",
        dir.path().to_str().unwrap(),
        "--name",
        "not a host",
    ]);

    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("\"not a host\""));
}
