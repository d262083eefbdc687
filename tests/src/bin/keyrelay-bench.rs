//! Benchmark: signing on SoftHSM2 directly against the same signature through keyrelay
//! (`libkeyrelay_pkcs11.so`, QUIC on 127.0.0.1, `keyserver`, the same SoftHSM2 token).
//!
//! Usage, after `cargo build --release --workspace` with the same target folder:
//!
//! ```sh
//! cargo run --release -p keyrelay-tests --bin keyrelay-bench -- [--write BENCHMARKS.md]
//!     [--dir PARENT] [--iterations N] [--warmup N] [--seconds S] [--cold-runs N]
//! ```
//!
//! The benchmark starts a keyserver, then runs each side in a child process of this binary
//! (`--measure direct|keyrelay`), because a PKCS#11 module reads its configuration from the
//! environment at C_Initialize and this process never changes its own environment. It prints
//! a Markdown table and, with `--write`, writes the whole BENCHMARKS.md page.

#[path = "keyrelay-bench/measure.rs"]
mod measure;
#[path = "keyrelay-bench/pkcs11.rs"]
mod pkcs11;
#[path = "keyrelay-bench/report.rs"]
mod report;
#[path = "keyrelay-bench/setup.rs"]
mod setup;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use keyrelay_tests::tools::{TOOLS_TOKEN, output_within_limit};
use ring::signature::{self as sig, UnparsedPublicKey};
use serde_json::Value;
use softhsm_fixtures::{SOFTHSM2_CONF_ENV, softhsm_module};

use measure::{PIN_ENV, Plan, WORKLOADS};
use report::{Breakdown, Context as RunContext, SideResult, Summary};
use setup::{BenchEnv, profile_artifact};

/// Number of timed appends with fdatasync that estimate the cost of one audit write.
const FDATASYNC_SAMPLES: usize = 200;

/// One side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// SoftHSM2's module, loaded directly.
    Direct,
    /// `libkeyrelay_pkcs11.so`, talking to the benchmark's keyserver.
    Keyrelay,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Keyrelay => "keyrelay",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "direct" => Ok(Side::Direct),
            "keyrelay" => Ok(Side::Keyrelay),
            other => bail!("invalid side {other:?}: use direct or keyrelay"),
        }
    }
}

/// Command-line options of the parent process.
#[derive(Debug)]
struct Options {
    write: Option<PathBuf>,
    dir: PathBuf,
    plan: Plan,
    cold_runs: usize,
    /// The arguments as given, to print the command that reproduces the run.
    arguments: Vec<String>,
}

const USAGE: &str = "usage: keyrelay-bench [--write PATH] [--dir PARENT] [--iterations N] \
                     [--warmup N] [--seconds S] [--cold-runs N]";

fn parse_options(arguments: &[String]) -> Result<Options> {
    let mut options = Options {
        write: None,
        dir: std::env::temp_dir(),
        plan: Plan {
            warmup: 50,
            iterations: 1000,
            throughput_duration: Duration::from_secs(3),
        },
        cold_runs: 20,
        arguments: arguments.to_vec(),
    };
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("invalid number {value:?} for {flag}"))
        };
        match flag.as_str() {
            "--write" => options.write = Some(PathBuf::from(value)),
            "--dir" => options.dir = PathBuf::from(value),
            "--iterations" => options.plan.iterations = number()?,
            "--warmup" => options.plan.warmup = number()?,
            "--seconds" => {
                let seconds: f64 = value
                    .parse()
                    .with_context(|| format!("invalid number of seconds {value:?}"))?;
                options.plan.throughput_duration = Duration::from_secs_f64(seconds);
            }
            "--cold-runs" => options.cold_runs = number()?,
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        options.plan.iterations > 0,
        "--iterations must be at least 1"
    );
    ensure!(options.cold_runs > 0, "--cold-runs must be at least 1");
    Ok(options)
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = if arguments.first().map(String::as_str) == Some("--measure") {
        run_child(&arguments[1..])
    } else {
        parse_options(&arguments).and_then(|options| run_parent(&options))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyrelay-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs in the child: `SIDE PHASE MODULE TOKEN WARMUP ITERATIONS SECONDS`, and prints one JSON
/// line.
fn run_child(arguments: &[String]) -> Result<()> {
    let [side, phase, module, token, warmup, iterations, seconds] = arguments else {
        bail!("--measure takes SIDE PHASE MODULE TOKEN WARMUP ITERATIONS SECONDS");
    };
    Side::parse(side)?;
    let pin = std::env::var(PIN_ENV).with_context(|| format!("{PIN_ENV} is not set"))?;
    let plan = Plan {
        warmup: warmup.parse()?,
        iterations: iterations.parse()?,
        throughput_duration: Duration::from_secs_f64(seconds.parse()?),
    };
    let value = match phase.as_str() {
        "warm" => measure::run_warm(module, token, &pin, plan)?,
        "cold" => measure::run_cold(module, token, &pin)?,
        other => bail!("invalid phase {other:?}: use warm or cold"),
    };
    println!("{value}");
    Ok(())
}

/// Starts a child that measures `side` in `phase` and returns its JSON line.
fn measure_side(env: &BenchEnv, side: Side, phase: &str, plan: Plan) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(&exe);
    let module = match side {
        Side::Direct => {
            command
                .env(SOFTHSM2_CONF_ENV, &env.direct_conf)
                .env(PIN_ENV, env.token.user_pin())
                .env_remove("KEYRELAY_CONFIG");
            softhsm_module()?
        }
        Side::Keyrelay => {
            // The configuration names a KeySecret file, so C_Login accepts any PIN.
            command
                .env("KEYRELAY_CONFIG", &env.client_config)
                .env(PIN_ENV, "unused")
                .env_remove(SOFTHSM2_CONF_ENV);
            profile_artifact("libkeyrelay_pkcs11.so")?
        }
    };
    command
        .env_remove("KEYRELAY_KEY_ID")
        .env_remove("KEYRELAY_KEY_SECRET")
        .arg("--measure")
        .args([side.name(), phase])
        .arg(&module)
        .arg(TOOLS_TOKEN)
        .args([
            plan.warmup.to_string(),
            plan.iterations.to_string(),
            plan.throughput_duration.as_secs_f64().to_string(),
        ]);
    let output = output_within_limit(&command)?;
    if !output.status.success() {
        bail!(
            "the {} {phase} measurement failed with {}:\n{}",
            side.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .with_context(|| format!("the {} {phase} measurement printed nothing", side.name()))?;
    serde_json::from_str(line).with_context(|| format!("invalid measurement output {line:?}"))
}

fn run_parent(options: &Options) -> Result<()> {
    let started = Instant::now();
    if std::env::current_exe()?
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == "debug")
    {
        eprintln!(
            "keyrelay-bench: warning: this is a debug build; use `cargo run --release` for \
             numbers worth recording"
        );
    }
    let load_at_start = load_average();
    eprintln!("keyrelay-bench: creating the token and starting the keyserver");
    let mut env = BenchEnv::start(&options.dir)?;

    let mut warm = Vec::new();
    for side in [Side::Direct, Side::Keyrelay] {
        eprintln!(
            "keyrelay-bench: measuring latency and throughput, {}",
            side.name()
        );
        warm.push(measure_side(&env, side, "warm", options.plan)?);
    }
    eprintln!(
        "keyrelay-bench: measuring the cold start, {} processes per side",
        options.cold_runs
    );
    let mut cold = [Vec::new(), Vec::new()];
    for _ in 0..options.cold_runs {
        for (index, side) in [Side::Direct, Side::Keyrelay].into_iter().enumerate() {
            let value = measure_side(&env, side, "cold", options.plan)?;
            cold[index].push(
                value["first_signature_ns"]
                    .as_u64()
                    .context("first_signature_ns is missing from the cold-start output")?,
            );
        }
    }

    for (side, value) in [Side::Direct, Side::Keyrelay].iter().zip(&warm) {
        verify_signatures(&env, *side, value)?;
    }
    let keyserver_peak_rss_kib = env
        .keyserver_pid()
        .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| measure::vm_hwm_kib(&status).ok());
    env.stop_keyserver()?;
    let audit = AuditSummary::read(&env.audit_log)?;
    let fdatasync = measure_fdatasync(env.folder(), audit.median_line_bytes)?;

    let direct = side_result(&warm[0], &cold[0])?;
    let keyrelay = side_result(&warm[1], &cold[1])?;
    let keyrelay_signatures = signatures_made(&warm[1], options)? + options.cold_runs as u64;
    ensure!(
        audit.signatures == keyrelay_signatures as usize,
        "the audit log holds {} successful signatures, but the keyrelay side made {}",
        audit.signatures,
        keyrelay_signatures
    );
    let breakdown = Breakdown {
        server_rsa: Summary::from_nanos(&audit.rsa_latency_ns),
        server_ecdsa: Summary::from_nanos(&audit.ecdsa_latency_ns),
        fdatasync,
        keyserver_peak_rss_kib,
    };
    let context = RunContext {
        command: reproduce_command(options),
        folder: options.dir.display().to_string(),
        filesystem: filesystem_type(&options.dir),
        machine: machine_description(&load_at_start),
        iterations: options.plan.iterations,
        warmup: options.plan.warmup,
        throughput_seconds: options.plan.throughput_duration.as_secs_f64(),
        cold_runs: options.cold_runs,
        audited_signatures: audit.signatures,
        keyrelay_signatures,
    };

    println!("{}", report::table(&direct, &keyrelay));
    println!("{}", report::breakdown_table(&keyrelay, &breakdown));
    if let Some(path) = &options.write {
        fs::write(path, report::page(&context, &direct, &keyrelay, &breakdown))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("keyrelay-bench: wrote {}", path.display());
    }
    eprintln!(
        "keyrelay-bench: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds one side's results from its warm measurement and its cold-start samples.
fn side_result(warm: &Value, cold: &[u64]) -> Result<SideResult> {
    let latency = |name: &str| -> Result<Summary> {
        let samples: Vec<u64> = warm["latency_ns"][name]
            .as_array()
            .with_context(|| format!("latency samples for {name} are missing"))?
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        Ok(Summary::from_nanos(&samples))
    };
    let mut throughput = [0.0; 4];
    let runs = warm["throughput"]
        .as_array()
        .context("throughput is missing from the measurement output")?;
    ensure!(
        runs.len() == 4,
        "expected 4 throughput runs, got {}",
        runs.len()
    );
    for (slot, run) in throughput.iter_mut().zip(runs) {
        let signatures = run["signatures"]
            .as_f64()
            .context("a throughput run has no signature count")?;
        let seconds = run["seconds"]
            .as_f64()
            .context("a throughput run has no duration")?;
        *slot = signatures / seconds;
    }
    Ok(SideResult {
        rsa: latency("rsa")?,
        ecdsa: latency("ecdsa")?,
        throughput,
        cold: Summary::from_nanos(cold),
        peak_rss_kib: warm["peak_rss_kib"]
            .as_u64()
            .context("peak_rss_kib is missing from the measurement output")?,
    })
}

/// Counts the signatures a warm measurement made: warm-up, timed loops and throughput runs.
fn signatures_made(warm: &Value, options: &Options) -> Result<u64> {
    let per_workload = (options.plan.warmup + options.plan.iterations) as u64;
    let mut total = per_workload * WORKLOADS.len() as u64;
    for run in warm["throughput"]
        .as_array()
        .context("throughput is missing from the measurement output")?
    {
        let threads = run["threads"]
            .as_u64()
            .context("a throughput run has no thread count")?;
        total += run["signatures"]
            .as_u64()
            .context("a throughput run has no signature count")?;
        total += threads * measure::THREAD_WARMUP as u64;
    }
    Ok(total)
}

/// Verifies the last latency-loop signature of each workload against the fixture's public key.
fn verify_signatures(env: &BenchEnv, side: Side, warm: &Value) -> Result<()> {
    for workload in WORKLOADS {
        let signature = warm["signatures"][workload.name]
            .as_str()
            .with_context(|| format!("the {} signature is missing", workload.name))?;
        let signature = hex::decode(signature)?;
        let key = env
            .token
            .key(workload.label)
            .with_context(|| format!("no fixture key {}", workload.label))?;
        let public_key = subject_public_key(key.public_key_spki_der())?;
        let algorithm: &dyn sig::VerificationAlgorithm = match workload.name {
            "rsa" => &sig::RSA_PKCS1_2048_8192_SHA256,
            _ => &sig::ECDSA_P256_SHA256_FIXED,
        };
        // ECDSA_P256_SHA256_FIXED hashes the message itself, so it checks a raw CKM_ECDSA
        // signature over the message's SHA-256 digest.
        UnparsedPublicKey::new(algorithm, public_key)
            .verify(measure::MESSAGE, &signature)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the {} {} signature does not verify",
                    side.name(),
                    workload.name
                )
            })?;
    }
    Ok(())
}

/// Returns the contents of the subjectPublicKey BIT STRING of a DER SubjectPublicKeyInfo:
/// an RSAPublicKey for RSA, the uncompressed point for EC.
fn subject_public_key(spki: &[u8]) -> Result<&[u8]> {
    let (tag, outer, _) = der_element(spki)?;
    ensure!(tag == 0x30, "a SubjectPublicKeyInfo starts with a SEQUENCE");
    let (tag, _, after_algorithm) = der_element(outer)?;
    ensure!(tag == 0x30, "the AlgorithmIdentifier is a SEQUENCE");
    let (tag, bits, _) = der_element(after_algorithm)?;
    ensure!(
        tag == 0x03 && bits.first() == Some(&0),
        "subjectPublicKey is a BIT STRING with no unused bits"
    );
    Ok(&bits[1..])
}

/// Splits one DER element off `input`: returns its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let [tag, first, rest @ ..] = input else {
        bail!("truncated DER element");
    };
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(*first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        ensure!(
            (1..=4).contains(&count) && rest.len() >= count,
            "invalid DER length"
        );
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, &rest[count..])
    };
    ensure!(rest.len() >= len, "truncated DER element");
    Ok((*tag, &rest[..len], &rest[len..]))
}

/// Successful sign records of the audit log, their server-side latency and their size.
struct AuditSummary {
    signatures: usize,
    rsa_latency_ns: Vec<u64>,
    ecdsa_latency_ns: Vec<u64>,
    /// Median length of a successful sign record, newline included.
    median_line_bytes: usize,
}

impl AuditSummary {
    fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the audit log {}", path.display()))?;
        let mut summary = Self {
            signatures: 0,
            rsa_latency_ns: Vec::new(),
            ecdsa_latency_ns: Vec::new(),
            median_line_bytes: 0,
        };
        let mut line_lengths = Vec::new();
        for line in text.lines() {
            let record: Value = serde_json::from_str(line)
                .with_context(|| format!("invalid audit record {line:?}"))?;
            if record["event"] != "sign" || record["result"] != "ok" {
                continue;
            }
            summary.signatures += 1;
            line_lengths.push(line.len() + 1);
            let latency_ns = record["latency_us"].as_u64().context("latency_us")? * 1000;
            match record["mechanism"].as_str() {
                Some("CKM_SHA256_RSA_PKCS") => summary.rsa_latency_ns.push(latency_ns),
                Some("CKM_ECDSA") => summary.ecdsa_latency_ns.push(latency_ns),
                _ => {}
            }
        }
        line_lengths.sort_unstable();
        summary.median_line_bytes = line_lengths
            .get(line_lengths.len() / 2)
            .copied()
            .unwrap_or(1);
        Ok(summary)
    }
}

/// Times append plus fdatasync of `line_bytes`-long lines to a new file in `folder`, as the
/// keyserver does for each audit record, and deletes the file.
fn measure_fdatasync(folder: &Path, line_bytes: usize) -> Result<Summary> {
    let path = folder.join("fdatasync-probe.jsonl");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut line = vec![b'x'; line_bytes.saturating_sub(1)];
    line.push(b'\n');
    let mut samples = Vec::with_capacity(FDATASYNC_SAMPLES);
    for _ in 0..FDATASYNC_SAMPLES {
        let started = Instant::now();
        file.write_all(&line)?;
        file.sync_data()?;
        samples.push(started.elapsed().as_nanos() as u64);
    }
    drop(file);
    fs::remove_file(&path)?;
    Ok(Summary::from_nanos(&samples))
}

/// Returns the command line that reproduces this run.
fn reproduce_command(options: &Options) -> String {
    let mut command = String::new();
    if let Ok(target) = std::env::var("CARGO_TARGET_DIR") {
        command.push_str(&format!("CARGO_TARGET_DIR={target} "));
    }
    command.push_str("cargo run --release -p keyrelay-tests --bin keyrelay-bench --");
    for argument in &options.arguments {
        command.push(' ');
        command.push_str(argument);
    }
    command
}

/// Returns the filesystem type of `folder` as `df --output=fstype` prints it, or `unknown`.
fn filesystem_type(folder: &Path) -> String {
    command_text(Command::new("df").arg("--output=fstype").arg(folder))
        .and_then(|text| text.lines().nth(1).map(|line| line.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Returns the trimmed standard output of a successful command.
fn command_text(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Returns the 1, 5 and 15 minute load averages from `/proc/loadavg`, or `unknown`.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Returns lines that describe the CPU, memory, kernel, SoftHSM2, source revision, date and
/// the load averages at the start and at the end of the run.
fn machine_description(load_at_start: &str) -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
        .and_then(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_owned(), |text| text.trim().to_owned());
    let softhsm = command_text(Command::new("softhsm2-util").arg("--version"))
        .unwrap_or_else(|| "unknown".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let revision = command_text(
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(["describe", "--always", "--dirty"]),
    )
    .unwrap_or_else(|| "unknown".to_owned());
    let date = command_text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_else(|| "unknown".to_owned());
    vec![
        format!("CPU: {cpu_model}, {cores} cores available (nproc)"),
        format!("Memory: {memory}"),
        format!("Kernel: Linux {kernel}"),
        format!("SoftHSM2: {softhsm}"),
        format!("Source: git revision {revision} (`-dirty` means uncommitted changes)"),
        format!("Date: {date}"),
        format!(
            "Load average (1, 5, 15 min): {load_at_start} at the start, {} at the end",
            load_average()
        ),
    ]
}
