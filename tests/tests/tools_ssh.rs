//! OpenSSH with the module: `ssh-keygen -D` lists the public keys, and `ssh` logs in to a
//! local sshd on 127.0.0.1 with a key on the token. Each step also runs with SoftHSM2's
//! module.

use std::collections::BTreeSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use keyrelay_tests::tools::{
    Backend, TOOLS_TOKEN, ToolEnv, output_within_limit, standard_plan, stdout_text,
};
use keyrelay_tests::{require_tool, run};
use softhsm_fixtures::RSA_OTHER_LABEL;

/// The sshd binary of Debian's openssh-server package.
const SSHD: &str = "/usr/sbin/sshd";

/// Public keys that `ssh-keygen -D` lists, without their comments.
fn listed_keys(env: &ToolEnv, backend: Backend) -> Result<BTreeSet<String>> {
    require_tool("ssh-keygen", "openssh-client")?;
    let listing = stdout_text(
        env.command("ssh-keygen", backend)?
            .arg("-D")
            .arg(env.module(backend)?),
    )?;
    Ok(listing.lines().map(key_without_comment).collect())
}

fn key_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The OpenSSH form of a fixture key's public key.
fn openssh_key(env: &ToolEnv, label: &str) -> Result<String> {
    let der = env.dir.path().join(format!("{label}.spki.der"));
    let pem = env.dir.path().join(format!("{label}.spki.pem"));
    fs::write(&der, env.key(label).public_key_spki_der())?;
    run(Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem))?;
    let text = stdout_text(
        Command::new("ssh-keygen")
            .args(["-i", "-m", "PKCS8", "-f"])
            .arg(&pem),
    )?;
    Ok(key_without_comment(text.trim()))
}

#[test]
fn keygen_lists_allowed_keys() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let hidden = openssh_key(&env, RSA_OTHER_LABEL)?;
    let direct = listed_keys(&env, Backend::Direct)?;
    assert!(
        direct.contains(&hidden),
        "SoftHSM2 lists every key: {direct:#?}"
    );

    let expected: BTreeSet<String> = direct.into_iter().filter(|key| *key != hidden).collect();
    let keyrelay = listed_keys(&env, Backend::Keyrelay)?;
    assert_eq!(
        keyrelay, expected,
        "keyrelay lists SoftHSM2's keys less the hidden one"
    );
    Ok(())
}

/// A local sshd that accepts the keys in `authorized_keys` for root, stopped on drop.
struct Sshd {
    child: Child,
    port: u16,
}

impl Sshd {
    fn start(dir: &Path, authorized_keys: &str) -> Result<Self> {
        require_tool("ssh", "openssh-client")?;
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} not found: install the Debian package openssh-server");
        }
        fs::create_dir_all("/run/sshd")?;
        let host_key = dir.join("ssh_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key))?;
        let authorized = dir.join("authorized_keys");
        fs::write(&authorized, authorized_keys)?;
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nPidFile none\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        // The port is free when the listener is dropped; sshd binds it right after.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let sshd = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("sshd did not listen on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in as root with the token's keys. ssh reads the PIN from the SSH_ASKPASS program.
fn login(env: &ToolEnv, backend: Backend, sshd: &Sshd) -> Result<std::process::Output> {
    let askpass = env.dir.path().join(format!("askpass-{backend:?}.sh"));
    fs::write(
        &askpass,
        format!("#!/bin/sh\necho '{}'\n", env.pin(backend, TOOLS_TOKEN)),
    )?;
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700))?;
    let mut command = env.command("ssh", backend)?;
    command
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .arg("-o")
        .arg(format!("PKCS11Provider={}", env.module(backend)?.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "PreferredAuthentications=publickey"])
        .args(["-o", "ConnectTimeout=10", "-F", "/dev/null"])
        .args([
            "-p",
            &sshd.port.to_string(),
            "root@127.0.0.1",
            "echo logged-in",
        ]);
    output_within_limit(&command)
}

#[test]
fn ssh_logs_in_with_token_key() -> Result<()> {
    let env = ToolEnv::start(&[standard_plan()])?;
    let keys = stdout_text(
        env.command("ssh-keygen", Backend::Keyrelay)?
            .arg("-D")
            .arg(env.module(Backend::Keyrelay)?),
    )?;
    let sshd = Sshd::start(env.dir.path(), &keys)?;
    for backend in Backend::BOTH {
        let output = login(&env, backend, &sshd)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.trim() == "logged-in",
            "{backend:?}: ssh login failed with {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        env.audit_records()?
            .iter()
            .any(|r| r["event"] == "sign" && r["result"] == "ok"),
        "keyrelay audited the login signature"
    );
    Ok(())
}
