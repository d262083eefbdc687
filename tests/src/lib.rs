//! Harness for keyrelay's end-to-end tests.
//!
//! [`Harness::start`] creates a SoftHSM2 token with the standard keys, a TLS certificate, a
//! policy with one client credential, and starts the real `keyserver` binary on 127.0.0.1.
//! Tests then point real signing tools at the real `libkeyrelay_pkcs11.so`.
//!
//! The binaries come from the same target folder as the test executable, so run
//! `cargo build --workspace` before `cargo test --workspace`. A missing binary or tool fails
//! the test with a message that names what to build or install; nothing is skipped.

#![forbid(unsafe_code)]

pub mod policy;
pub mod tools;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use softhsm_fixtures::{
    EC_SIGNING_LABEL, RSA_OTHER_LABEL, RSA_SIGNING_LABEL, TlsFiles, TokenFixture,
    issue_tls_server_cert, standard_keys,
};
use tempfile::TempDir;

/// Token name in the test policy, which is also the PKCS#11 token label clients see.
pub const TOKEN_NAME: &str = "demo";

/// Backend token label on SoftHSM2.
const BACKEND_LABEL: &str = "keyrelay-e2e";

/// How long the keyserver may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A client credential generated for one test.
#[derive(Clone)]
pub struct Credential {
    /// Public identifier.
    pub key_id: String,
    /// Secret, 64 hex characters.
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Generates a random credential in the format `keyserver credential new` uses.
    pub fn generate() -> Self {
        Self {
            key_id: format!("kr_{}", random_hex(8)),
            secret: random_hex(32),
        }
    }

    /// Hex SHA-256 of the secret: the verifier stored in the policy.
    pub fn verifier(&self) -> String {
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            self.secret.as_bytes(),
        ))
    }
}

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    hex::encode(bytes)
}

/// How the module obtains the KeySecret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The PIN given to C_Login is the KeySecret; the config lists the token names.
    Pin,
    /// The config names a file that contains the KeySecret.
    File,
    /// Neither: the caller sets `KEYRELAY_KEY_SECRET` in the environment.
    Environment,
}

/// A running keyserver with its token, policy and files.
#[derive(Debug)]
pub struct Harness {
    /// The SoftHSM2 token behind the keyserver.
    pub token: TokenFixture,
    /// Folder with the policy, TLS files, audit log and client configurations.
    pub dir: TempDir,
    /// The credential allowed to use `rsa-signing` and `ec-signing`, not `rsa-other`.
    pub credential: Credential,
    /// Address the keyserver listens on.
    pub address: SocketAddr,
    tls: TlsFiles,
    server: Child,
}

impl Harness {
    /// Creates the token and policy and starts the keyserver.
    pub fn start() -> Result<Self> {
        Self::start_with_policy(|text| text)
    }

    /// Like [`Harness::start`], but `edit` rewrites the policy text first. The standard text
    /// puts every key and the client in environment `test`, and ends with the client entry,
    /// so an edit may append rules to it.
    pub fn start_with_policy(edit: impl FnOnce(String) -> String) -> Result<Self> {
        require_tool("softhsm2-util", "softhsm2")?;
        require_tool("pkcs11-tool", "opensc")?;
        let dir = tempfile::Builder::new().prefix("keyrelay-e2e-").tempdir()?;
        let token =
            TokenFixture::create(&dir.path().join("token"), BACKEND_LABEL, &standard_keys())?;
        let tls = issue_tls_server_cert(&dir.path().join("tls"), &["localhost", "127.0.0.1"])?;
        let credential = Credential::generate();
        let policy = dir.path().join("policy.toml");
        run(Command::new(build_artifact("keyserver")?)
            .args(["audit", "keygen", "--out"])
            .arg(dir.path().join("audit-key.pem")))?;
        fs::write(&policy, edit(policy_text(&token, &tls, &credential)))?;
        let (server, address) = start_keyserver(dir.path(), &policy, &token)?;
        Ok(Self {
            token,
            dir,
            credential,
            address,
            tls,
            server,
        })
    }

    /// Path of the policy file.
    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// Path of the audit public key.
    pub fn audit_public_key(&self) -> PathBuf {
        self.dir.path().join("audit-key.pub")
    }

    /// Text of the keyserver's log so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("keyserver.log")).unwrap_or_default()
    }

    /// Process id of the keyserver, for signals.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// A `keyserver` command with the token's SoftHSM2 configuration.
    pub fn keyserver(&self) -> Result<Command> {
        let mut command = Command::new(build_artifact("keyserver")?);
        command.env(
            softhsm_fixtures::SOFTHSM2_CONF_ENV,
            self.token.softhsm2_conf(),
        );
        Ok(command)
    }

    /// Stops the keyserver and starts it again on the same policy and audit log.
    pub fn restart(&mut self) -> Result<()> {
        stop_server(&mut self.server);
        let _ = fs::remove_file(self.dir.path().join("keyserver.addr"));
        let (server, address) = start_keyserver(self.dir.path(), &self.policy(), &self.token)?;
        self.server = server;
        self.address = address;
        Ok(())
    }

    /// Path of the audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Parses every record of the audit log.
    pub fn audit_records(&self) -> Result<Vec<serde_json::Value>> {
        let text = fs::read_to_string(self.audit_log()).context("cannot read the audit log")?;
        text.lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("bad record {line}")))
            .collect()
    }

    /// The PKCS#11 slot id of the test token, as SunPKCS11 configurations name it.
    pub fn slot_id(&self) -> u64 {
        keyrelay_protocol::slot_id_for_token(TOKEN_NAME)
    }

    /// Writes a client configuration for `credential` and returns its path.
    pub fn client_config(&self, credential: &Credential, source: SecretSource) -> Result<PathBuf> {
        self.client_config_at(credential, source, self.address)
    }

    /// Writes a client configuration for `credential` that connects to `server`, and returns
    /// its path.
    pub fn client_config_at(
        &self,
        credential: &Credential,
        source: SecretSource,
        server: SocketAddr,
    ) -> Result<PathBuf> {
        let name = format!("client-{}-{source:?}-{server}.toml", credential.key_id);
        let path = self.dir.path().join(name);
        let mut text = format!(
            "server = \"{}\"\nserver_name = \"localhost\"\nca_certificate = \"{}\"\n\
             key_id = \"{}\"\n",
            server,
            self.tls.ca_certificate.display(),
            credential.key_id,
        );
        // Only the KeySecret-as-PIN mode needs the token names; the other modes learn the
        // slots from the keyserver, as a configuration written from the README does.
        if source == SecretSource::Pin {
            writeln!(text, "tokens = [\"{TOKEN_NAME}\"]")?;
        }
        if source == SecretSource::File {
            let secret_file = self
                .dir
                .path()
                .join(format!("{}.secret", credential.key_id));
            fs::write(&secret_file, format!("{}\n", credential.secret))?;
            writeln!(text, "key_secret_file = \"{}\"", secret_file.display())?;
        }
        fs::write(&path, text)?;
        Ok(path)
    }

    /// A command with `KEYRELAY_CONFIG` set to a configuration for the harness credential.
    pub fn command(&self, program: &str, source: SecretSource) -> Result<Command> {
        let config = self.client_config(&self.credential, source)?;
        let mut command = Command::new(program);
        command
            .env("KEYRELAY_CONFIG", config)
            .env_remove("KEYRELAY_KEY_SECRET");
        if source == SecretSource::Environment {
            command.env("KEYRELAY_KEY_SECRET", &self.credential.secret);
        }
        Ok(command)
    }

    /// Certificate of a fixture key, as a PEM file.
    pub fn certificate(&self, label: &str) -> PathBuf {
        self.token
            .key(label)
            .expect("a standard fixture key")
            .certificate_pem_path()
            .to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        stop_server(&mut self.server);
    }
}

/// Stops the keyserver with SIGTERM, or SIGKILL if it does not exit within 10 s.
fn stop_server(server: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn policy_text(token: &TokenFixture, tls: &TlsFiles, credential: &Credential) -> String {
    let keys: String = [RSA_SIGNING_LABEL, EC_SIGNING_LABEL, RSA_OTHER_LABEL]
        .iter()
        .map(|label| {
            format!(
                "[keys.{label}]\ntoken = \"{TOKEN_NAME}\"\nlabel = \"{label}\"\n\
                 environment = \"test\"\n\n"
            )
        })
        .collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncertificate_chain = \"{chain}\"\n\
         private_key = \"{key}\"\naudit_log = \"audit.jsonl\"\n\n\
         [tokens.{TOKEN_NAME}]\nmodule = \"{module}\"\nlabel = \"{BACKEND_LABEL}\"\n\
         pin_file = \"{pin}\"\n\n[audit]\nsigning_key = \"audit-key.pem\"\n\n{keys}\
         [[clients]]\nkey_id = \"{key_id}\"\nsecret_sha256 = \"{verifier}\"\n\
         keys = [\"{RSA_SIGNING_LABEL}\", \"{EC_SIGNING_LABEL}\"]\nenvironment = \"test\"\n",
        chain = tls.server_chain.display(),
        key = tls.server_key.display(),
        module = token.module().display(),
        pin = token.user_pin_file().display(),
        key_id = credential.key_id,
        verifier = credential.verifier(),
    )
}

fn start_keyserver(dir: &Path, policy: &Path, token: &TokenFixture) -> Result<(Child, SocketAddr)> {
    let ready = dir.join("keyserver.addr");
    let log = fs::File::create(dir.join("keyserver.log"))?;
    let mut server = Command::new(build_artifact("keyserver")?)
        .arg("serve")
        .arg("--config")
        .arg(policy)
        .arg("--ready-file")
        .arg(&ready)
        .env(softhsm_fixtures::SOFTHSM2_CONF_ENV, token.softhsm2_conf())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the keyserver")?;
    match wait_until_ready(&mut server, &ready, &dir.join("keyserver.log")) {
        Ok(address) => Ok((server, address)),
        Err(error) => {
            let _ = server.kill();
            let _ = server.wait();
            Err(error)
        }
    }
}

/// Waits until a starting keyserver writes its bound address to `ready`, and returns it.
/// Fails, quoting the keyserver's `log`, if it exits first or takes longer than
/// [`START_TIMEOUT`]; the caller then stops it.
pub fn wait_until_ready(server: &mut Child, ready: &Path, log: &Path) -> Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let address = fs::read_to_string(ready)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if let Some(address) = address {
            return Ok(address);
        }
        if let Some(status) = server.try_wait()? {
            let log = fs::read_to_string(log).unwrap_or_default();
            bail!("the keyserver exited with {status} before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("the keyserver was not ready within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of a binary or library built by `cargo build --workspace` next to the test binary.
pub fn build_artifact(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Test binaries live in <target>/<profile>/deps.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test binary path")?;
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace` before the tests",
            path.display()
        );
    }
    Ok(path)
}

/// Path of the PKCS#11 module under test.
pub fn module_path() -> Result<PathBuf> {
    build_artifact("libkeyrelay_pkcs11.so")
}

/// Fails unless `tool` is on PATH, naming the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        bail!("{tool} not found: install the Debian package {package}");
    }
    Ok(())
}

/// Maximum time a tool may run before the test fails, because a hang is a bug, not a slow pass.
const TOOL_TIMEOUT_SECONDS: u32 = 120;

/// Runs `command` under coreutils' `timeout` and returns its output whatever its exit status,
/// so a hanging tool fails the test. A timeout is an error.
pub fn output_within_limit(command: &Command) -> Result<Output> {
    let mut bounded = Command::new("timeout");
    bounded.args(["--kill-after=5", &TOOL_TIMEOUT_SECONDS.to_string()]);
    bounded.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => bounded.env(name, value),
            None => bounded.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        bounded.current_dir(dir);
    }
    let output = bounded
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{command:?}"))?;
    if matches!(output.status.code(), Some(124 | 137)) {
        bail!("{command:?} did not finish within {TOOL_TIMEOUT_SECONDS} s");
    }
    Ok(output)
}

/// Runs a command and returns its output, failing with both output streams if it fails.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = output_within_limit(command)?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Runs a command expected to fail and returns its combined output.
pub fn run_failing(command: &mut Command) -> Result<String> {
    let output = output_within_limit(command)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        bail!("{command:?} succeeded but was expected to fail:\n{text}");
    }
    Ok(text)
}

/// Copies a real Windows PE executable that ships with pip (distlib's launcher) into `dir`.
///
/// pip is part of every CPython installation this project builds on; the launcher is a
/// native x86-64 Windows program written by the distlib project.
pub fn sample_executable(dir: &Path) -> Result<PathBuf> {
    let output = run(Command::new("python3").args([
        "-c",
        "import os, pip._vendor.distlib as d; print(os.path.dirname(d.__file__))",
    ]))
    .context("python3 with pip is needed for the sample executable: install python3-pip")?;
    let distlib = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    let source = distlib.join("t64.exe");
    let target = dir.join("sample.exe");
    fs::copy(&source, &target).with_context(|| format!("cannot copy {}", source.display()))?;
    Ok(target)
}
