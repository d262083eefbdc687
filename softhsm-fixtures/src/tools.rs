//! Runs `softhsm2-util` and OpenSC's `pkcs11-tool` as child processes, and finds the SoftHSM2
//! PKCS#11 module.
//!
//! Each command gets `SOFTHSM2_CONF` on the child only. The test process never loads SoftHSM and
//! never changes its own environment, so fixtures created concurrently cannot see each other.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, anyhow, bail};

/// The environment variable that points SoftHSM2 at its configuration file.
pub const SOFTHSM2_CONF_ENV: &str = "SOFTHSM2_CONF";

/// Replaces every secret argument in command descriptions and tool output.
const REDACTED: &str = "<redacted>";

/// Returns the SoftHSM2 PKCS#11 module installed by the Debian package `softhsm2`.
///
/// Looks at `/usr/lib/softhsm/libsofthsm2.so`, then at the multiarch path
/// `/usr/lib/<arch>-linux-gnu/softhsm/libsofthsm2.so`.
pub fn softhsm_module() -> Result<PathBuf> {
    let candidates = module_candidates();
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }

    let tried: Vec<String> = candidates
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    bail!(
        "SoftHSM2 PKCS#11 module not found at {}: install the Debian package softhsm2",
        tried.join(" or ")
    )
}

fn module_candidates() -> [PathBuf; 2] {
    // NOTE: the multiarch triple is `<arch>-linux-gnu`, which is right for x86_64 and aarch64
    // but not for 32-bit ARM (`arm-linux-gnueabihf`).
    let multiarch = format!(
        "/usr/lib/{}-linux-gnu/softhsm/libsofthsm2.so",
        std::env::consts::ARCH
    );
    [
        PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
        PathBuf::from(multiarch),
    ]
}

/// A command-line tool and the Debian package that installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tool {
    program: &'static str,
    package: &'static str,
}

/// SoftHSM2's token management tool.
pub(crate) const SOFTHSM2_UTIL: Tool = Tool {
    program: "softhsm2-util",
    package: "softhsm2",
};

/// OpenSC's generic PKCS#11 tool.
pub(crate) const PKCS11_TOOL: Tool = Tool {
    program: "pkcs11-tool",
    package: "opensc",
};

/// One invocation of a [`Tool`] against one SoftHSM2 configuration file.
///
/// Arguments added with [`ToolCommand::secret_arg`] never appear in error messages: they are
/// replaced by `<redacted>` in the command description and in the captured output.
#[derive(Clone)]
pub(crate) struct ToolCommand {
    tool: Tool,
    conf: PathBuf,
    args: Vec<OsString>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for ToolCommand {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

impl ToolCommand {
    /// Starts a command for `tool` whose child process gets `SOFTHSM2_CONF=conf`.
    pub(crate) fn new(tool: Tool, conf: &Path) -> Self {
        Self {
            tool,
            conf: conf.to_path_buf(),
            args: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Appends one argument that may be shown in error messages.
    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends one argument, such as a PIN, that error messages must not show.
    pub(crate) fn secret_arg(mut self, secret: &str) -> Self {
        self.args.push(secret.into());
        if !secret.is_empty() {
            self.secrets.push(secret.to_owned());
        }
        self
    }

    /// Runs the command with stdin closed and returns its output if it exits with status 0.
    ///
    /// A missing program yields an error naming the Debian package to install. A failed run
    /// yields an error with the command line and the tool's stderr, with secrets redacted.
    pub(crate) fn run(&self) -> Result<Output> {
        let spawned = Command::new(self.tool.program)
            .args(&self.args)
            .env(SOFTHSM2_CONF_ENV, &self.conf)
            .stdin(Stdio::null())
            .output();

        let output = match spawned {
            Ok(output) => output,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                bail!(
                    "{} not found: install the Debian package {}",
                    self.tool.program,
                    self.tool.package
                )
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("failed to start `{}`", self.describe()));
            }
        };

        if !output.status.success() {
            return Err(anyhow!(
                "`{}` failed with {}: {}",
                self.describe(),
                output.status,
                self.failure_text(&output)
            ));
        }
        Ok(output)
    }

    /// Runs the command and returns its stdout as UTF-8 text.
    pub(crate) fn run_text(&self) -> Result<String> {
        let output = self.run()?;
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{}` printed output that is not UTF-8", self.describe()))
    }

    /// Formats the command line as `SOFTHSM2_CONF=... program args`, with secrets redacted.
    fn describe(&self) -> String {
        let mut words = vec![
            format!("{SOFTHSM2_CONF_ENV}={}", self.conf.display()),
            self.tool.program.to_owned(),
        ];
        for arg in &self.args {
            let text = arg.to_string_lossy();
            if self.secrets.iter().any(|secret| *secret == text) {
                words.push(REDACTED.to_owned());
            } else {
                words.push(text.into_owned());
            }
        }
        words.join(" ")
    }

    /// Returns the tool's stderr (or stdout when stderr is empty) on one line, redacted.
    fn failure_text(&self, output: &Output) -> String {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        if text.trim().is_empty() {
            return "no output".to_owned();
        }

        let one_line: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        self.redact(&one_line.join("; "))
    }

    fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_owned();
        for secret in &self.secrets {
            redacted = redacted.replace(secret.as_str(), REDACTED);
        }
        redacted
    }
}

/// The module, configuration file and token label that select one fixture token.
#[derive(Clone, Debug)]
pub(crate) struct TokenTarget {
    pub(crate) module: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) token_label: String,
}

impl TokenTarget {
    /// Starts a `pkcs11-tool` command that opens this token without logging in.
    pub(crate) fn pkcs11_tool(&self) -> ToolCommand {
        ToolCommand::new(PKCS11_TOOL, &self.conf)
            .arg("--module")
            .arg(&self.module)
            .arg("--token-label")
            .arg(&self.token_label)
    }

    /// Starts a `pkcs11-tool` command that logs in to this token as the user.
    pub(crate) fn pkcs11_tool_login(&self, user_pin: &str) -> ToolCommand {
        // NOTE: pkcs11-tool 0.23 reads the PIN only from its command line (or a terminal), so
        // other local users can see it in the process list while the command runs. Fixture
        // PINs are random throwaway values, which keeps this acceptable for tests.
        self.pkcs11_tool()
            .arg("--login")
            .arg("--pin")
            .secret_arg(user_pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISSING: Tool = Tool {
        program: "softhsm-fixtures-no-such-tool",
        package: "example-pkg",
    };

    #[test]
    fn missing_tool_names_package() {
        let error = ToolCommand::new(MISSING, Path::new("/nonexistent.conf"))
            .run()
            .unwrap_err();
        let message = error.to_string();

        assert!(
            message.contains("softhsm-fixtures-no-such-tool not found"),
            "{message}"
        );
        assert!(
            message.contains("install the Debian package example-pkg"),
            "{message}"
        );
    }

    #[test]
    fn failure_redacts_secret_arguments() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let error = ToolCommand::new(sh, Path::new("/x.conf"))
            .arg("-c")
            .arg("echo \"bad pin $0\" >&2; exit 3")
            .secret_arg("s3cret-pin")
            .run()
            .unwrap_err();
        let message = error.to_string();

        assert!(!message.contains("s3cret-pin"), "{message}");
        assert!(message.contains("bad pin <redacted>"), "{message}");
        assert!(message.contains("SOFTHSM2_CONF=/x.conf sh -c"), "{message}");
        assert!(message.contains("exit status: 3"), "{message}");
    }

    #[test]
    fn child_sees_softhsm2_conf() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let stdout = ToolCommand::new(sh, Path::new("/fixture/softhsm2.conf"))
            .arg("-c")
            .arg("printf %s \"$SOFTHSM2_CONF\"")
            .run_text()
            .unwrap();

        assert_eq!(stdout, "/fixture/softhsm2.conf");
        assert!(std::env::var_os(SOFTHSM2_CONF_ENV).is_none_or(|v| v != "/fixture/softhsm2.conf"));
    }

    #[test]
    fn module_is_found() {
        let module = softhsm_module().unwrap();
        assert!(
            module.ends_with("softhsm/libsofthsm2.so"),
            "{}",
            module.display()
        );
    }
}
