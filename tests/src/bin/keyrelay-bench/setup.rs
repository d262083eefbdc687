//! The benchmark's keyserver environment: a SoftHSM2 token with the standard keys, a second
//! copy of its store for direct use, TLS files, a policy, a client configuration, and a
//! running `keyserver` on 127.0.0.1.
//!
//! `keyrelay_tests::tools::ToolEnv` builds the same environment for the tests, but it finds
//! the `keyserver` binary with `keyrelay_tests::build_artifact`, which expects the calling
//! executable in `<target>/<profile>/deps` as test executables are. This binary runs from
//! `<target>/<profile>`, so it starts the keyserver itself, from the same profile folder.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyrelay_tests::tools::{TOOLS_TOKEN, copy_store};
use keyrelay_tests::{Credential, require_tool, run};
use softhsm_fixtures::{
    EC_SIGNING_LABEL, RSA_SIGNING_LABEL, SOFTHSM2_CONF_ENV, TlsFiles, TokenFixture,
    issue_tls_server_cert, standard_keys,
};
use tempfile::TempDir;

/// How long the keyserver may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns the path of `name` in the folder of the running executable, where
/// `cargo build --workspace` puts the keyserver and the module of the same profile.
pub fn profile_artifact(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let folder = exe
        .parent()
        .context("the executable has no parent folder")?;
    let path = folder.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --release --workspace` with the same \
             CARGO_TARGET_DIR before the benchmark",
            path.display()
        );
    }
    Ok(path)
}

/// A running keyserver with its token, policy and files, all in one temporary folder that is
/// deleted after the keyserver stops.
#[derive(Debug)]
pub struct BenchEnv {
    /// The SoftHSM2 token behind the keyserver.
    pub token: TokenFixture,
    /// SoftHSM2 configuration of a private copy of the token store, for direct use, so the
    /// direct side never shares token files with the keyserver.
    pub direct_conf: PathBuf,
    /// Client configuration of the module, with a KeySecret file.
    pub client_config: PathBuf,
    /// Audit log the keyserver writes.
    pub audit_log: PathBuf,
    server: Option<Child>,
    dir: TempDir,
}

impl BenchEnv {
    /// Creates the token, TLS files, policy and client configuration in a new folder under
    /// `parent`, and starts the keyserver.
    pub fn start(parent: &Path) -> Result<Self> {
        require_tool("softhsm2-util", "softhsm2")?;
        require_tool("pkcs11-tool", "opensc")?;
        let keyserver = profile_artifact("keyserver")?;
        let dir = tempfile::Builder::new()
            .prefix("keyrelay-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
        let token = TokenFixture::create(&dir.path().join("token"), TOOLS_TOKEN, &standard_keys())?;
        let direct_conf = copy_store(token.softhsm2_conf(), &dir.path().join("direct-store"))?;
        let tls = issue_tls_server_cert(&dir.path().join("tls"), &["localhost", "127.0.0.1"])?;
        let credential = Credential::generate();
        run(Command::new(&keyserver)
            .args(["audit", "keygen", "--out"])
            .arg(dir.path().join("audit-key.pem")))?;
        let policy = dir.path().join("policy.toml");
        fs::write(&policy, policy_text(&token, &tls, &credential))?;
        let (server, address) = spawn_keyserver(&keyserver, &policy, dir.path(), &token)?;
        let env = Self {
            direct_conf,
            client_config: dir.path().join("client.toml"),
            audit_log: dir.path().join("audit.jsonl"),
            token,
            server: Some(server),
            dir,
        };
        write_client_config(&env.client_config, &tls, &credential, address)?;
        Ok(env)
    }

    /// Returns the folder that holds the token store, the policy and the audit log.
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the keyserver's process id.
    pub fn keyserver_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Stops the keyserver with SIGTERM and waits for it, killing it after [`STOP_TIMEOUT`].
    pub fn stop_keyserver(&mut self) -> Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(server.id()).context("a process id fits in pid_t")?;
        // SAFETY: kill only sends a signal, to the keyserver this value owns and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
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
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        if let Err(error) = self.stop_keyserver() {
            eprintln!("keyrelay-bench: {error:#}");
        }
    }
}

/// Starts `keyserver serve` on `policy` and returns it with the address from its ready file.
fn spawn_keyserver(
    keyserver: &Path,
    policy: &Path,
    dir: &Path,
    token: &TokenFixture,
) -> Result<(Child, SocketAddr)> {
    let ready = dir.join("keyserver.addr");
    let log_path = dir.join("keyserver.log");
    let log = fs::File::create(&log_path)?;
    let mut command = Command::new(keyserver);
    command
        .args(["serve", "--config"])
        .arg(policy)
        .arg("--ready-file")
        .arg(&ready)
        .env(SOFTHSM2_CONF_ENV, token.softhsm2_conf())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe. PR_SET_PDEATHSIG makes the kernel send SIGTERM to the keyserver if
    // the benchmark dies without running its Drop code.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = command.spawn().context("cannot start the keyserver")?;
    match keyrelay_tests::wait_until_ready(&mut server, &ready, &log_path) {
        Ok(address) => Ok((server, address)),
        Err(error) => {
            let _ = server.kill();
            let _ = server.wait();
            Err(error)
        }
    }
}

/// Returns a policy that lets one client use `rsa-signing` and `ec-signing` with no quota or
/// other access rule, so the benchmark measures signing and auditing, not refusals.
fn policy_text(token: &TokenFixture, tls: &TlsFiles, credential: &Credential) -> String {
    let keys: String = [RSA_SIGNING_LABEL, EC_SIGNING_LABEL]
        .iter()
        .map(|label| {
            format!(
                "[keys.{label}]\ntoken = \"{TOOLS_TOKEN}\"\nlabel = \"{label}\"\n\
                 environment = \"test\"\n\n"
            )
        })
        .collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncertificate_chain = \"{chain}\"\n\
         private_key = \"{key}\"\naudit_log = \"audit.jsonl\"\n\n\
         [audit]\nsigning_key = \"audit-key.pem\"\n\n\
         [tokens.{TOOLS_TOKEN}]\nmodule = \"{module}\"\nlabel = \"{TOOLS_TOKEN}\"\n\
         pin_file = \"{pin}\"\n\n{keys}\
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

/// Writes the module's configuration for `credential` to `path`. It names a KeySecret file,
/// so the module authenticates on its own and C_Login accepts any PIN.
fn write_client_config(
    path: &Path,
    tls: &TlsFiles,
    credential: &Credential,
    server: SocketAddr,
) -> Result<()> {
    let secret_file = path.with_file_name("client.secret");
    fs::write(&secret_file, format!("{}\n", credential.secret))?;
    let text = format!(
        "server = \"{server}\"\nserver_name = \"localhost\"\nca_certificate = \"{}\"\n\
         key_id = \"{}\"\nkey_secret_file = \"{}\"\nconnect_timeout_seconds = 5\n\
         timeout_seconds = 10\n",
        tls.ca_certificate.display(),
        credential.key_id,
        secret_file.display(),
    );
    fs::write(path, text)?;
    Ok(())
}
