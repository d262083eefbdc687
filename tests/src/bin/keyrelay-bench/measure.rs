//! The measuring child process: loads one PKCS#11 module, signs, and prints one JSON line.
//!
//! The parent starts this binary again with `--measure SIDE`, the module path, the token label
//! and the environment that module reads at C_Initialize (`SOFTHSM2_CONF` or
//! `KEYRELAY_CONFIG`), set on the child only. The user PIN comes in [`PIN_ENV`], so it never
//! appears on a command line.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cryptoki_sys::{CK_MECHANISM_TYPE, CKM_ECDSA, CKM_SHA256_RSA_PKCS};
use serde_json::{Value, json};
use softhsm_fixtures::{EC_SIGNING_LABEL, RSA_SIGNING_LABEL};

use crate::pkcs11::Module;

/// Environment variable that carries the user PIN to the child.
pub const PIN_ENV: &str = "KEYRELAY_BENCH_PIN";

/// The message every CKM_SHA256_RSA_PKCS signature signs.
pub const MESSAGE: &[u8] = b"keyrelay benchmark message: 64 bytes of text, as a small input..";

/// One signing workload: a mechanism on one of the standard fixture keys.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Short name used in the JSON output and the report.
    pub name: &'static str,
    /// CKA_LABEL of the private key.
    pub label: &'static str,
    /// PKCS#11 mechanism.
    pub mechanism: CK_MECHANISM_TYPE,
}

/// RSA-2048 with CKM_SHA256_RSA_PKCS over [`MESSAGE`], and EC P-256 with raw CKM_ECDSA over
/// the SHA-256 digest of [`MESSAGE`].
pub const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "rsa",
        label: RSA_SIGNING_LABEL,
        mechanism: CKM_SHA256_RSA_PKCS,
    },
    Workload {
        name: "ecdsa",
        label: EC_SIGNING_LABEL,
        mechanism: CKM_ECDSA,
    },
];

impl Workload {
    /// Returns the bytes given to C_Sign: the message, or its SHA-256 digest for raw ECDSA.
    pub fn input(&self) -> Vec<u8> {
        if self.mechanism == CKM_ECDSA {
            ring::digest::digest(&ring::digest::SHA256, MESSAGE)
                .as_ref()
                .to_vec()
        } else {
            MESSAGE.to_vec()
        }
    }
}

/// Numbers of iterations and durations that the parent passes to each child.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Untimed signatures per workload before the latency loop.
    pub warmup: usize,
    /// Timed signatures per workload in the latency loop.
    pub iterations: usize,
    /// Length of each throughput run.
    pub throughput_duration: Duration,
}

/// Thread counts of the throughput runs.
pub const THREAD_COUNTS: [usize; 2] = [1, 4];

/// Untimed signatures each thread makes before a throughput run starts.
pub const THREAD_WARMUP: usize = 5;

/// Loads `module`, logs in on `token` and returns the module and the first session.
fn open(module_path: &str, token: &str, pin: &str) -> Result<(Module, u64, u64)> {
    let module = Module::load(module_path)?;
    module.initialize()?;
    let slot = module.slot(token)?;
    let session = module.open_session(slot)?;
    module.login(session, pin)?;
    Ok((module, slot, session))
}

/// Measures latency, throughput and peak RSS in this process, and returns them as JSON.
///
/// Latency samples are in nanoseconds, one per C_SignInit plus C_Sign pair.
pub fn run_warm(module_path: &str, token: &str, pin: &str, plan: Plan) -> Result<Value> {
    let (module, slot, session) = open(module_path, token, pin)?;
    let mut latency = serde_json::Map::new();
    let mut signatures = serde_json::Map::new();
    for workload in WORKLOADS {
        let key = module.private_key(session, workload.label)?;
        let input = workload.input();
        for _ in 0..plan.warmup {
            module.sign(session, workload.mechanism, key, &input)?;
        }
        let mut samples = Vec::with_capacity(plan.iterations);
        let mut last = Vec::new();
        for _ in 0..plan.iterations {
            let started = Instant::now();
            last = module.sign(session, workload.mechanism, key, &input)?;
            samples.push(started.elapsed().as_nanos() as u64);
        }
        latency.insert(workload.name.to_owned(), json!(samples));
        signatures.insert(workload.name.to_owned(), json!(hex::encode(last)));
    }
    let mut throughput = Vec::new();
    for workload in WORKLOADS {
        for threads in THREAD_COUNTS {
            let (count, elapsed) = throughput_run(&module, slot, workload, threads, plan)?;
            throughput.push(json!({
                "workload": workload.name,
                "threads": threads,
                "signatures": count,
                "seconds": elapsed.as_secs_f64(),
            }));
        }
    }
    let peak_rss_kib = peak_rss_kib()?;
    module.finalize()?;
    Ok(json!({
        "latency_ns": latency,
        "signatures": signatures,
        "throughput": throughput,
        "peak_rss_kib": peak_rss_kib,
    }))
}

/// Runs `threads` threads, each on its own session, that sign `workload` until
/// `plan.throughput_duration` has passed. Returns the signature count and the time from the
/// common start to the last thread's end.
fn throughput_run(
    module: &Module,
    slot: u64,
    workload: Workload,
    threads: usize,
    plan: Plan,
) -> Result<(u64, Duration)> {
    let barrier = Barrier::new(threads + 1);
    let input = workload.input();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(u64, Instant)> {
                    // Every thread reaches the barrier, even after an error, so none waits
                    // forever; the error is returned after it.
                    let prepared = (|| -> Result<(u64, u64)> {
                        let session = module.open_session(slot)?;
                        let key = module.private_key(session, workload.label)?;
                        for _ in 0..THREAD_WARMUP {
                            module.sign(session, workload.mechanism, key, &input)?;
                        }
                        Ok((session, key))
                    })();
                    barrier.wait();
                    let (session, key) = prepared?;
                    let deadline = Instant::now() + plan.throughput_duration;
                    let mut count = 0;
                    while Instant::now() < deadline {
                        module.sign(session, workload.mechanism, key, &input)?;
                        count += 1;
                    }
                    Ok((count, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut total = 0;
        let mut last_end = started;
        for worker in workers {
            let (count, end) = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??;
            total += count;
            last_end = last_end.max(end);
        }
        Ok((total, last_end - started))
    })
}

/// Measures the time from C_Initialize to the end of the first C_Sign in a fresh process: for
/// keyrelay this includes the QUIC connection, the authentication and the catalogue.
pub fn run_cold(module_path: &str, token: &str, pin: &str) -> Result<Value> {
    let module = Module::load(module_path)?;
    let workload = WORKLOADS[0];
    let input = workload.input();
    let started = Instant::now();
    module.initialize()?;
    let slot = module.slot(token)?;
    let session = module.open_session(slot)?;
    module.login(session, pin)?;
    let key = module.private_key(session, workload.label)?;
    module.sign(session, workload.mechanism, key, &input)?;
    let first_signature = started.elapsed();
    module.finalize()?;
    Ok(json!({ "first_signature_ns": first_signature.as_nanos() as u64 }))
}

/// Returns VmHWM, the peak resident set size of this process, in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    vm_hwm_kib(&status)
}

/// Returns VmHWM in KiB from the text of a `/proc/PID/status` file.
pub fn vm_hwm_kib(status: &str) -> Result<u64> {
    let Some(line) = status.lines().find(|line| line.starts_with("VmHWM:")) else {
        bail!("no VmHWM line in the process status");
    };
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("VmHWM is not a number of kB")
}
