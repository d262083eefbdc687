//! Helpers for driving PKCS#11 tools and the conformance probe in the end-to-end tests.
//!
//! [`ToolEnv::start`] creates one or more SoftHSM2 tokens in one token store, a policy that
//! allows chosen keys, and starts the real keyserver on 127.0.0.1. Each token's name in the
//! policy equals its backend label, so a tool gets the same token label whether it
//! loads SoftHSM2 directly ([`Backend::Direct`]) or through keyrelay ([`Backend::Keyrelay`]).
//!
//! The keyserver runs under a small shell wrapper that stops it when the test process closes
//! the wrapper's standard input, so a keyserver never outlives the test that started it, even
//! when the test panics or keeps the environment in a static.

use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use softhsm_fixtures::{
    FixtureKey, KeySpec, SOFTHSM2_CONF_ENV, TlsFiles, TokenFixture, issue_tls_server_cert,
    softhsm_module,
};
use tempfile::TempDir;

use crate::{Credential, SecretSource, build_artifact, module_path, require_tool, run};

/// How long the keyserver may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Shell wrapper around the keyserver: `$0` is the keyserver, `$@` its arguments. Standard
/// input stays open while the test keeps its write end open, and end of file sends SIGTERM to the keyserver.
/// The wrapper exits with the keyserver's status.
const LIFETIME_WRAPPER: &str = r#"exec 3<&0
"$0" "$@" </dev/null &
pid=$!
(read -r _ <&3; kill -TERM "$pid" 2>/dev/null) &
wait "$pid""#;

/// A key pair that [`ToolEnv::start`] adds with `pkcs11-tool` because the fixture crate has
/// no [`KeySpec`] for it.
#[derive(Clone, Debug)]
pub struct ExtraKey {
    /// CKA_LABEL of the private and public key.
    pub label: String,
    /// CKA_ID as hex.
    pub id_hex: String,
    /// `--key-type` argument of `pkcs11-tool --keypairgen`, e.g. `EC:secp521r1`.
    pub key_type: String,
    /// Sets CKA_ALWAYS_AUTHENTICATE on the private key.
    pub always_authenticate: bool,
}

/// One token of a [`ToolEnv`]: its keys and which of them the client may use.
#[derive(Clone, Debug)]
pub struct TokenPlan {
    /// Token label on SoftHSM2 and token name in the policy.
    pub name: String,
    /// Key pairs with certificates.
    pub keys: Vec<KeySpec>,
    /// Key pairs without certificates.
    pub extra_keys: Vec<ExtraKey>,
    /// Labels of the keys the client may use; the other keys are in the policy but not
    /// allowed to the client.
    pub allowed: Vec<String>,
}

impl TokenPlan {
    /// Creates a plan that allows every key to the client.
    pub fn allowing_all(name: &str, keys: Vec<KeySpec>) -> Self {
        let allowed = keys.iter().map(|key| key.label.clone()).collect();
        Self {
            name: name.to_owned(),
            keys,
            extra_keys: Vec::new(),
            allowed,
        }
    }
}

/// Where a tool loads its PKCS#11 module from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SoftHSM2's module on the environment's token store.
    Direct,
    /// `libkeyrelay_pkcs11.so`, talking to the environment's keyserver.
    Keyrelay,
}

impl Backend {
    /// Both backends, SoftHSM2 first.
    pub const BOTH: [Backend; 2] = [Backend::Direct, Backend::Keyrelay];
}

/// A running keyserver with its tokens, policy and files.
#[derive(Debug)]
pub struct ToolEnv {
    /// Folder with the token store, policy, TLS files, audit log and client configurations.
    pub dir: TempDir,
    /// The credential allowed to use each plan's `allowed` keys.
    pub credential: Credential,
    tokens: Vec<TokenFixture>,
    softhsm2_conf: PathBuf,
    direct_conf: PathBuf,
    tls: TlsFiles,
    policy: PathBuf,
    address: SocketAddr,
    server: Option<Child>,
}

impl ToolEnv {
    /// Creates the tokens in one SoftHSM2 store, writes the policy and starts the keyserver.
    pub fn start(plans: &[TokenPlan]) -> Result<Self> {
        require_tool("softhsm2-util", "softhsm2")?;
        require_tool("pkcs11-tool", "opensc")?;
        let dir = tempfile::Builder::new()
            .prefix("keyrelay-tools-")
            .tempdir()?;
        let mut tokens = Vec::new();
        for plan in plans {
            let folder = dir.path().join(format!("fixture-{}", plan.name));
            let token = TokenFixture::create(&folder, &plan.name, &plan.keys)?;
            for extra in &plan.extra_keys {
                add_extra_key(&token, extra)?;
            }
            tokens.push(token);
        }
        let softhsm2_conf = merge_token_stores(dir.path(), &tokens)?;
        // Tools that load SoftHSM2 directly get their own copy of the store, because
        // processes sharing token files with the keyserver sometimes do not find the token.
        let direct_conf = copy_store(&softhsm2_conf, &dir.path().join("direct-store"))?;
        let tls = issue_tls_server_cert(&dir.path().join("tls"), &["localhost", "127.0.0.1"])?;
        let credential = Credential::generate();
        let policy = dir.path().join("policy.toml");
        write_audit_key(dir.path())?;
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        fs::write(
            &policy,
            policy_text(plans, &tokens, &tls, &credential, listen),
        )?;
        let mut env = Self {
            dir,
            credential,
            tokens,
            softhsm2_conf,
            direct_conf,
            tls,
            policy,
            address: listen,
            server: None,
        };
        env.spawn_server()?;
        Ok(env)
    }

    /// Returns the address the keyserver listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns the SoftHSM2 configuration of the keyserver's token store.
    pub fn softhsm2_conf(&self) -> &Path {
        &self.softhsm2_conf
    }

    /// Returns the SoftHSM2 configuration of the store copy that tools load directly.
    pub fn direct_conf(&self) -> &Path {
        &self.direct_conf
    }

    /// Returns the fixture token named `name`.
    pub fn token(&self, name: &str) -> &TokenFixture {
        self.tokens
            .iter()
            .find(|token| token.token_label() == name)
            .unwrap_or_else(|| panic!("no token {name:?} in this environment"))
    }

    /// Returns the fixture key labelled `label`, on whichever token contains it.
    pub fn key(&self, label: &str) -> &FixtureKey {
        self.tokens
            .iter()
            .find_map(|token| token.key(label))
            .unwrap_or_else(|| panic!("no key {label:?} in this environment"))
    }

    /// Returns the test CA certificate that issued the certificate of key `label`.
    pub fn ca_certificate_for(&self, label: &str) -> &Path {
        self.tokens
            .iter()
            .find(|token| token.key(label).is_some())
            .map(TokenFixture::ca_certificate_pem)
            .unwrap_or_else(|| panic!("no key {label:?} in this environment"))
    }

    /// Returns the PKCS#11 module a tool loads for `backend`.
    pub fn module(&self, backend: Backend) -> Result<PathBuf> {
        match backend {
            Backend::Direct => softhsm_module(),
            Backend::Keyrelay => module_path(),
        }
    }

    /// Returns the PIN a tool gives to C_Login on token `name`: the SoftHSM2 user PIN directly, and
    /// an unused word through keyrelay, whose configuration names a KeySecret file.
    pub fn pin(&self, backend: Backend, name: &str) -> String {
        match backend {
            Backend::Direct => self.token(name).user_pin().to_owned(),
            Backend::Keyrelay => "unused".to_owned(),
        }
    }

    /// Builds a command for `program` that loads `backend`'s module: `SOFTHSM2_CONF` or
    /// `KEYRELAY_CONFIG` (with a KeySecret file) is set on the child.
    pub fn command(&self, program: &str, backend: Backend) -> Result<Command> {
        match backend {
            Backend::Direct => Ok(self.direct_command(program)),
            Backend::Keyrelay => self.keyrelay_command(program, SecretSource::File),
        }
    }

    /// Builds a command for `program` with `SOFTHSM2_CONF` set to the direct copy of the store.
    pub fn direct_command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env(SOFTHSM2_CONF_ENV, &self.direct_conf)
            .env_remove("KEYRELAY_CONFIG");
        command
    }

    /// Builds a command for `program` with `KEYRELAY_CONFIG` set to a configuration for the
    /// environment's credential.
    pub fn keyrelay_command(&self, program: &str, source: SecretSource) -> Result<Command> {
        let config = self.client_config(source)?;
        let mut command = Command::new(program);
        command
            .env("KEYRELAY_CONFIG", config)
            .env_remove("KEYRELAY_KEY_SECRET")
            .env_remove(SOFTHSM2_CONF_ENV);
        if source == SecretSource::Environment {
            command.env("KEYRELAY_KEY_SECRET", &self.credential.secret);
        }
        Ok(command)
    }

    /// Writes a client configuration for the environment's credential and returns its path.
    /// With [`SecretSource::Pin`], the configuration lists every token of the environment.
    pub fn client_config(&self, source: SecretSource) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("client-{source:?}.toml"));
        let names: Vec<String> = self
            .tokens
            .iter()
            .map(|token| format!("\"{}\"", token.token_label()))
            .collect();
        let mut text = format!(
            "server = \"{}\"\nserver_name = \"localhost\"\nca_certificate = \"{}\"\n\
             key_id = \"{}\"\ntokens = [{}]\nconnect_timeout_seconds = 5\n\
             timeout_seconds = 10\n",
            self.address,
            self.tls.ca_certificate.display(),
            self.credential.key_id,
            names.join(", "),
        );
        if source == SecretSource::File {
            let secret_file = self.dir.path().join("client.secret");
            fs::write(&secret_file, format!("{}\n", self.credential.secret))?;
            writeln!(text, "key_secret_file = \"{}\"", secret_file.display())?;
        }
        fs::write(&path, text)?;
        Ok(path)
    }

    /// Parses every record of the audit log.
    pub fn audit_records(&self) -> Result<Vec<serde_json::Value>> {
        let path = self.dir.path().join("audit.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error).context("cannot read the audit log"),
        };
        text.lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("bad record {line}")))
            .collect()
    }

    /// Counts the successful audited signatures made with key `label`.
    pub fn audited_signatures(&self, label: &str) -> Result<usize> {
        let records = self.audit_records()?;
        Ok(records
            .iter()
            .filter(|r| r["event"] == "sign" && r["result"] == "ok" && r["key"] == label)
            .count())
    }

    /// Stops the keyserver and waits until it has exited.
    pub fn stop_server(&mut self) -> Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        // Closing the wrapper's standard input makes it send SIGTERM to the keyserver.
        drop(server.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if server.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.kill();
        let _ = server.wait();
        bail!("the keyserver did not stop within {STOP_TIMEOUT:?} after SIGTERM")
    }

    /// Starts the keyserver again on the address it had, so clients can reconnect.
    pub fn restart_server(&mut self) -> Result<()> {
        self.stop_server()?;
        let text = fs::read_to_string(&self.policy)?;
        let fixed = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.address),
        );
        fs::write(&self.policy, fixed)?;
        self.spawn_server()
    }

    fn spawn_server(&mut self) -> Result<()> {
        let ready = self.dir.path().join("keyserver.addr");
        let _ = fs::remove_file(&ready);
        let log_path = self.dir.path().join("keyserver.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut server = Command::new("sh")
            .arg("-c")
            .arg(LIFETIME_WRAPPER)
            .arg(build_artifact("keyserver")?)
            .args(["serve", "--config"])
            .arg(&self.policy)
            .arg("--ready-file")
            .arg(&ready)
            .env(SOFTHSM2_CONF_ENV, &self.softhsm2_conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start the keyserver")?;
        match crate::wait_until_ready(&mut server, &ready, &log_path) {
            Ok(address) => {
                self.address = address;
                self.server = Some(server);
                Ok(())
            }
            Err(error) => {
                drop(server.stdin.take());
                let _ = server.wait();
                Err(error)
            }
        }
    }
}

impl Drop for ToolEnv {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}

/// Generates `extra` on `token` with `pkcs11-tool`, which runs with the token's own
/// `SOFTHSM2_CONF`.
fn add_extra_key(token: &TokenFixture, extra: &ExtraKey) -> Result<()> {
    let mut command = Command::new("pkcs11-tool");
    command
        .env(SOFTHSM2_CONF_ENV, token.softhsm2_conf())
        .arg("--module")
        .arg(token.module())
        .args(["--token-label", token.token_label(), "--login", "--pin"])
        .arg(token.user_pin())
        .args(["--keypairgen", "--key-type", &extra.key_type])
        .args(["--id", &extra.id_hex, "--label", &extra.label]);
    if extra.always_authenticate {
        command.arg("--always-auth");
    }
    run(&mut command).with_context(|| format!("cannot generate key {:?}", extra.label))?;
    Ok(())
}

/// Copies every fixture's token folder into one SoftHSM2 token store, because one process
/// reads one `SOFTHSM2_CONF`. Returns the configuration file of the merged store.
fn merge_token_stores(dir: &Path, tokens: &[TokenFixture]) -> Result<PathBuf> {
    let store = dir.join("store");
    let token_dir = store.join("tokens");
    fs::create_dir_all(&token_dir)?;
    for token in tokens {
        copy_dir(&token.dir().join(softhsm_fixtures::TOKEN_DIR), &token_dir)?;
    }
    let conf = store.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            token_dir.display()
        ),
    )?;
    Ok(conf)
}

/// Copies the contents of folder `from` into folder `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Makes a private copy of the environment's token store in `dir` and returns the copy's
/// SoftHSM2 configuration, so a process can use SoftHSM2 directly without sharing token
/// files with the keyserver or with other tests.
pub fn copy_store(source_conf: &Path, dir: &Path) -> Result<PathBuf> {
    let source_tokens = source_conf
        .parent()
        .context("a SoftHSM2 configuration has a parent folder")?
        .join("tokens");
    let token_dir = dir.join("tokens");
    copy_dir(&source_tokens, &token_dir)?;
    let conf = dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            token_dir.display()
        ),
    )?;
    Ok(conf)
}

/// Name of the environment that every key and the client belong to in the policy.
const ENVIRONMENT: &str = "test";

/// File name of the Ed25519 key that signs the audit log's anchor records.
const AUDIT_KEY_FILE: &str = "audit-key.pem";

/// Writes a new Ed25519 key in PKCS#8 PEM, as the policy's `[audit]` table names it.
fn write_audit_key(dir: &Path) -> Result<()> {
    require_tool("openssl", "openssl")?;
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(dir.join(AUDIT_KEY_FILE)))?;
    Ok(())
}

fn policy_text(
    plans: &[TokenPlan],
    tokens: &[TokenFixture],
    tls: &TlsFiles,
    credential: &Credential,
    listen: SocketAddr,
) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\ncertificate_chain = \"{}\"\n\
         private_key = \"{}\"\naudit_log = \"audit.jsonl\"\n\n\
         [audit]\nsigning_key = \"{AUDIT_KEY_FILE}\"\n\n",
        tls.server_chain.display(),
        tls.server_key.display(),
    );
    let mut allowed = Vec::new();
    for (plan, token) in plans.iter().zip(tokens) {
        let name = &plan.name;
        let _ = write!(
            text,
            "[tokens.{name}]\nmodule = \"{}\"\nlabel = \"{name}\"\npin_file = \"{}\"\n\n",
            token.module().display(),
            token.user_pin_file().display(),
        );
        let labels = plan
            .keys
            .iter()
            .map(|key| &key.label)
            .chain(plan.extra_keys.iter().map(|key| &key.label));
        for label in labels {
            let _ = write!(
                text,
                "[keys.{label}]\ntoken = \"{name}\"\nlabel = \"{label}\"\n\
                 environment = \"{ENVIRONMENT}\"\n\n"
            );
        }
        allowed.extend(plan.allowed.iter().map(|label| format!("\"{label}\"")));
    }
    let _ = write!(
        text,
        "[[clients]]\nkey_id = \"{}\"\nsecret_sha256 = \"{}\"\nkeys = [{}]\n\
         environment = \"{ENVIRONMENT}\"\n",
        credential.key_id,
        credential.verifier(),
        allowed.join(", "),
    );
    text
}

/// Path of libp11's OpenSSL engine from the Debian package libengine-pkcs11-openssl.
pub const PKCS11_ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

/// Fails unless libp11's OpenSSL engine is installed.
pub fn require_engine() -> Result<()> {
    ensure!(
        Path::new(PKCS11_ENGINE).exists(),
        "{PKCS11_ENGINE} not found: install the Debian package libengine-pkcs11-openssl"
    );
    Ok(())
}

/// Writes an OpenSSL configuration that loads libp11's engine with `module` and returns its
/// path. The file name contains `tag`, so configurations for two modules can coexist.
pub fn openssl_engine_config(dir: &Path, module: &Path, tag: &str) -> Result<PathBuf> {
    let path = dir.join(format!("openssl-{tag}.cnf"));
    fs::write(
        &path,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
             [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
             dynamic_path = {PKCS11_ENGINE}\nMODULE_PATH = {}\ninit = 0\n",
            module.display()
        ),
    )?;
    Ok(path)
}

/// Standard output of a successful command as text.
pub fn stdout_text(command: &mut Command) -> Result<String> {
    let output = run(command)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Name of the token that tool tests sign on, both as SoftHSM2 label and policy token name.
pub const TOOLS_TOKEN: &str = "keyrelay-tools";

/// Returns the plan of the standard keys on [`TOOLS_TOKEN`]: `rsa-signing` and `ec-signing` allowed, `rsa-other`
/// in the policy but not allowed to the client.
pub fn standard_plan() -> TokenPlan {
    let mut plan = TokenPlan::allowing_all(TOOLS_TOKEN, softhsm_fixtures::standard_keys());
    plan.allowed
        .retain(|label| label != softhsm_fixtures::RSA_OTHER_LABEL);
    plan
}

pub use crate::output_within_limit;
