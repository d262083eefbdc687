//! Facts about the process that loaded the module, sent to the keyserver for its audit log.
//!
//! Everything here is reported by the client and cannot be verified by the server. Values
//! that look like passwords, PINs or secrets are redacted from the command line before they
//! leave the process.

use std::fs;
use std::io::Read;

use keyrelay_protocol::CallerContext;
use ring::digest;

/// Replacement for a redacted value.
const REDACTED: &str = "<redacted>";

/// Maximum length of a command-line argument sent, in bytes. Longer ones are cut.
const MAX_ARGUMENT_LEN: usize = 1024;

/// Most command-line arguments sent; the rest are dropped.
const MAX_ARGUMENTS: usize = 256;

/// Environment variables that identify a CI job on common CI systems.
const CI_VARIABLES: [&str; 24] = [
    "CI",
    "GITHUB_REPOSITORY",
    "GITHUB_WORKFLOW",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_JOB",
    "GITHUB_SHA",
    "GITHUB_ACTOR",
    "CI_PROJECT_PATH",
    "CI_PIPELINE_ID",
    "CI_JOB_ID",
    "CI_COMMIT_SHA",
    "GITLAB_USER_LOGIN",
    "JENKINS_URL",
    "JOB_NAME",
    "BUILD_NUMBER",
    "BUILD_URL",
    "BUILD_BUILDID",
    "SYSTEM_TEAMPROJECT",
    "BUILDKITE_BUILD_ID",
    "BUILDKITE_JOB_ID",
    "CIRCLE_WORKFLOW_ID",
    "CIRCLE_BUILD_NUM",
    "TRAVIS_JOB_ID",
];

/// Words in an option name that mark its value as secret.
const SECRET_WORDS: [&str; 6] = ["pass", "pin", "secret", "token", "credential", "key-secret"];

/// Collects the caller context of the current process.
pub(crate) fn collect() -> CallerContext {
    let executable = fs::read_link("/proc/self/exe")
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    CallerContext {
        host_name: read_trimmed("/proc/sys/kernel/hostname"),
        os_user: os_user(),
        executable_sha256: file_sha256(&executable).unwrap_or_default(),
        executable,
        command_line: redact(command_line()),
        ci: CI_VARIABLES
            .iter()
            .filter_map(|name| {
                std::env::var(name)
                    .ok()
                    .map(|value| (name.to_string(), value))
            })
            .collect(),
    }
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// Returns the user name of the process's real user id, from the passwd database.
fn os_user() -> String {
    // SAFETY: getuid takes no pointers, so it cannot touch memory of ours; POSIX says it
    // cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut entry: libc::passwd = zeroed_passwd();
    let mut buffer = vec![0 as libc::c_char; 4096];
    let mut result = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the size passed, and getpwuid_r writes
    // only within `buffer` and `entry`.
    let rv = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    if rv != 0 || result.is_null() || entry.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    name.to_string_lossy().into_owned()
}

fn zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers, valid when zeroed.
    unsafe { std::mem::zeroed() }
}

fn file_sha256(path: &str) -> Option<String> {
    let mut file = fs::File::open(path).ok()?;
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).ok()?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
    }
    Some(hex(context.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the process's arguments through the standard library, which keeps each argument
/// in its place even when the program has blanked one: osslsigncode overwrites its `-pass`
/// value, and /proc/self/cmdline would then show a run of NUL bytes in its place.
fn command_line() -> Vec<String> {
    std::env::args_os()
        .take(MAX_ARGUMENTS)
        .map(|argument| {
            let mut text = argument.to_string_lossy().into_owned();
            if text.len() > MAX_ARGUMENT_LEN {
                let mut end = MAX_ARGUMENT_LEN;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            text
        })
        .collect()
}

/// Replaces secret-looking values: the argument after an option such as `-pass` or
/// `--pin`, the value of `--password=...`, `pin-value=` in PKCS#11 URIs, and OpenSSL's
/// `pass:...` pass phrase arguments.
fn redact(arguments: Vec<String>) -> Vec<String> {
    let mut redacted = Vec::with_capacity(arguments.len());
    let mut hide_next = false;
    for argument in arguments {
        if hide_next {
            hide_next = false;
            redacted.push(REDACTED.to_owned());
            continue;
        }
        let (cleaned, takes_value) = redact_one(&argument);
        hide_next = takes_value;
        redacted.push(cleaned);
    }
    redacted
}

/// Redacts one argument and returns whether the next argument is its secret value.
fn redact_one(argument: &str) -> (String, bool) {
    if argument.starts_with("pass:") {
        return (format!("pass:{REDACTED}"), false);
    }
    if argument.contains("pin-value=") {
        return (redact_uri_pin(argument), false);
    }
    let Some(option) = argument.strip_prefix('-') else {
        return (argument.to_owned(), false);
    };
    let option = option.trim_start_matches('-');
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    let lower = name.to_ascii_lowercase();
    if !SECRET_WORDS.iter().any(|word| lower.contains(word)) {
        return (argument.to_owned(), false);
    }
    if value.is_none() {
        return (argument.to_owned(), true);
    }
    // The dashes, then the option name, then the redacted value.
    let name_end = argument.len() - option.len() + name.len();
    (format!("{}={REDACTED}", &argument[..name_end]), false)
}

fn redact_uri_pin(uri: &str) -> String {
    uri.split(';')
        .map(|part| match part.split_once("pin-value=") {
            Some((prefix, _)) => format!("{prefix}pin-value={REDACTED}"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(arguments: &[&str]) -> Vec<String> {
        arguments
            .iter()
            .map(|argument| argument.to_string())
            .collect()
    }

    #[test]
    fn option_value_is_redacted() {
        let command = strings(&["osslsigncode", "sign", "-pass", "hunter2", "-in", "a.exe"]);
        let expected = strings(&["osslsigncode", "sign", "-pass", REDACTED, "-in", "a.exe"]);
        assert_eq!(redact(command), expected);
    }

    #[test]
    fn inline_option_value_is_redacted() {
        let command = strings(&["tool", "--pin=1234", "--storepass", "x", "--verbose"]);
        let expected = strings(&[
            "tool",
            "--pin=<redacted>",
            "--storepass",
            REDACTED,
            "--verbose",
        ]);
        assert_eq!(redact(command), expected);
    }

    #[test]
    fn uri_pin_and_openssl_pass_are_redacted() {
        let command = strings(&[
            "openssl",
            "pkcs11:token=t;pin-value=1234;object=k",
            "pass:abc",
        ]);
        let expected = strings(&[
            "openssl",
            "pkcs11:token=t;pin-value=<redacted>;object=k",
            "pass:<redacted>",
        ]);
        assert_eq!(redact(command), expected);
    }

    #[test]
    fn option_after_redacted_value_is_kept() {
        let command = strings(&["osslsigncode", "sign", "-pass", "s3cret", "-certs", "c.pem"]);
        let expected = strings(&["osslsigncode", "sign", "-pass", REDACTED, "-certs", "c.pem"]);
        assert_eq!(redact(command), expected);
    }

    #[test]
    fn ordinary_arguments_are_kept() {
        let command = strings(&["jarsigner", "-keystore", "NONE", "-sigalg", "SHA256withRSA"]);
        assert_eq!(redact(command.clone()), command);
    }

    #[test]
    fn collect_reports_this_process() {
        let caller = collect();
        assert!(!caller.executable.is_empty());
        assert_eq!(caller.executable_sha256.len(), 64);
        assert!(!caller.os_user.is_empty());
        assert!(!caller.command_line.is_empty());
    }
}
