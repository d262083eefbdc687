//! Statistics over the samples, the Markdown table, and the BENCHMARKS.md page.

use std::fmt::Write as _;

/// Summary of a set of duration samples, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    /// Summarizes samples given in nanoseconds. Percentiles use the nearest-rank method.
    pub fn from_nanos(samples: &[u64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |percent: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let index = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1] as f64 / 1000.0
        };
        Self {
            median: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
        }
    }
}

/// Everything measured on one side: SoftHSM2 directly, or keyrelay.
#[derive(Clone, Debug)]
pub struct SideResult {
    /// Latency of CKM_SHA256_RSA_PKCS with RSA-2048.
    pub rsa: Summary,
    /// Latency of CKM_ECDSA with P-256.
    pub ecdsa: Summary,
    /// Signatures per second: RSA with 1 and 4 threads, then ECDSA with 1 and 4 threads.
    pub throughput: [f64; 4],
    /// C_Initialize to the end of the first signature in fresh processes.
    pub cold: Summary,
    /// Peak resident set size of the measuring process, in KiB.
    pub peak_rss_kib: u64,
}

/// Measurements of the keyrelay side that explain its overhead.
#[derive(Clone, Debug)]
pub struct Breakdown {
    /// The keyserver's `latency_us` of successful RSA sign records: from the start of the
    /// request stream to the audit record, without the audit write.
    pub server_rsa: Summary,
    /// The same for ECDSA.
    pub server_ecdsa: Summary,
    /// Append plus fdatasync of one audit-sized line in the benchmark folder.
    pub fdatasync: Summary,
    /// Peak resident set size of the keyserver, in KiB.
    pub keyserver_peak_rss_kib: Option<u64>,
}

/// The run's settings and the machine it ran on.
#[derive(Clone, Debug)]
pub struct Context {
    /// Command that reproduces the run.
    pub command: String,
    /// Folder that held the token store and the audit log, with its filesystem type.
    pub folder: String,
    /// Filesystem type of that folder, as `df --output=fstype` prints it.
    pub filesystem: String,
    /// Lines that describe the machine, the software, the date and the load averages.
    pub machine: Vec<String>,
    /// Timed signatures per workload and side in the latency loops.
    pub iterations: usize,
    /// Untimed signatures per workload before the latency loops.
    pub warmup: usize,
    /// Seconds of each throughput run.
    pub throughput_seconds: f64,
    /// Fresh processes per side for the cold start.
    pub cold_runs: usize,
    /// Signatures the keyserver audited as successful during the run.
    pub audited_signatures: usize,
    /// Signatures the keyrelay side reported.
    pub keyrelay_signatures: u64,
}

fn ratio(keyrelay: f64, direct: f64) -> String {
    format!("{:.2}", keyrelay / direct)
}

/// Returns the Markdown table that compares both sides.
pub fn table(direct: &SideResult, keyrelay: &SideResult) -> String {
    let mut rows: Vec<(String, f64, f64, usize)> = Vec::new();
    for (name, d, k) in [
        ("RSA-2048 CKM_SHA256_RSA_PKCS", direct.rsa, keyrelay.rsa),
        ("EC P-256 CKM_ECDSA", direct.ecdsa, keyrelay.ecdsa),
    ] {
        rows.push((
            format!("{name}, latency median (µs)"),
            d.median,
            k.median,
            0,
        ));
        rows.push((format!("{name}, latency p90 (µs)"), d.p90, k.p90, 0));
        rows.push((format!("{name}, latency p99 (µs)"), d.p99, k.p99, 0));
    }
    let labels = [
        "RSA-2048, 1 thread",
        "RSA-2048, 4 threads",
        "EC P-256, 1 thread",
        "EC P-256, 4 threads",
    ];
    for (index, label) in labels.iter().enumerate() {
        rows.push((
            format!("{label}, throughput (signatures/s)"),
            direct.throughput[index],
            keyrelay.throughput[index],
            0,
        ));
    }
    rows.push((
        "C_Initialize to first signature, median (ms)".to_owned(),
        direct.cold.median / 1000.0,
        keyrelay.cold.median / 1000.0,
        1,
    ));
    rows.push((
        "C_Initialize to first signature, p90 (ms)".to_owned(),
        direct.cold.p90 / 1000.0,
        keyrelay.cold.p90 / 1000.0,
        1,
    ));
    rows.push((
        "Peak RSS of the client process (MiB)".to_owned(),
        direct.peak_rss_kib as f64 / 1024.0,
        keyrelay.peak_rss_kib as f64 / 1024.0,
        1,
    ));
    let mut text = String::from(
        "| Measure | SoftHSM2 direct | keyrelay | keyrelay / direct |\n|---|---:|---:|---:|\n",
    );
    for (name, d, k, decimals) in rows {
        let _ = writeln!(
            text,
            "| {name} | {d:.decimals$} | {k:.decimals$} | {} |",
            ratio(k, d)
        );
    }
    text
}

/// Returns the table of the keyrelay overhead's parts.
pub fn breakdown_table(keyrelay: &SideResult, breakdown: &Breakdown) -> String {
    let mut text = String::from("| Part | RSA-2048 (µs) | EC P-256 (µs) |\n|---|---:|---:|\n");
    let rest_rsa = rest(keyrelay.rsa.median, breakdown.server_rsa.median, breakdown);
    let rest_ecdsa = rest(
        keyrelay.ecdsa.median,
        breakdown.server_ecdsa.median,
        breakdown,
    );
    let rows = [
        (
            "Signature through keyrelay, median, as the client sees it",
            keyrelay.rsa.median,
            keyrelay.ecdsa.median,
        ),
        (
            "Keyserver `latency_us`, median: request stream to audit record, before the write",
            breakdown.server_rsa.median,
            breakdown.server_ecdsa.median,
        ),
        (
            "Append and fdatasync of one audit-sized line in the same folder, median",
            breakdown.fdatasync.median,
            breakdown.fdatasync.median,
        ),
        (
            "Rest: module, loopback QUIC round trip, encoding, server logging (by subtraction)",
            rest_rsa,
            rest_ecdsa,
        ),
    ];
    for (name, rsa, ecdsa) in rows {
        // A negative rest means the separately measured fdatasync was slower than during the
        // signatures, so the subtraction has no meaning on this run.
        let cell = |value: f64| {
            if value < 0.0 {
                "n/a".to_owned()
            } else {
                format!("{value:.0}")
            }
        };
        let _ = writeln!(text, "| {name} | {} | {} |", cell(rsa), cell(ecdsa));
    }
    text
}

fn rest(client_median: f64, server_median: f64, breakdown: &Breakdown) -> f64 {
    client_median - server_median - breakdown.fdatasync.median
}

/// Returns the whole BENCHMARKS.md page.
pub fn page(
    context: &Context,
    direct: &SideResult,
    keyrelay: &SideResult,
    breakdown: &Breakdown,
) -> String {
    let mut text = String::from("# Benchmarks\n\n");
    text.push_str(
        "This page compares signing on SoftHSM2 directly with the same signature through \
         keyrelay (`libkeyrelay_pkcs11.so`, QUIC on loopback, `keyserver`, the same SoftHSM2 \
         token). `keyrelay-bench` wrote it from one run; every number below comes from that \
         run. Run it again to refresh the page.\n\n",
    );
    text.push_str("## Command\n\n```sh\n");
    text.push_str("cargo build --release --workspace\n");
    let _ = writeln!(text, "{}\n```\n", context.command);
    text.push_str(
        "The benchmark loads the `keyserver` and `libkeyrelay_pkcs11.so` from its own target \
         folder, so both must come from the same `--release` build.\n\n",
    );
    text.push_str("## Machine\n\n");
    for line in &context.machine {
        let _ = writeln!(text, "- {line}");
    }
    let _ = writeln!(
        text,
        "- Benchmark folder (token store, audit log): `{}`, filesystem `{}`\n",
        context.folder, context.filesystem
    );
    text.push_str("## What is measured\n\n");
    let _ = writeln!(
        text,
        "- Setup: a SoftHSM2 token with an RSA-2048 key and an EC P-256 key, a policy that \
         allows both to one client with no quota, and a keyserver on 127.0.0.1. The direct side \
         uses its own copy of the token store.\n\
         - Each side runs in a child process of the benchmark, started with only that side's \
         environment (`SOFTHSM2_CONF` or `KEYRELAY_CONFIG`). Both sides call the module \
         through the raw PKCS#11 function list with CKF_OS_LOCKING_OK.\n\
         - Latency: {warmup} untimed signatures, then {iterations} timed C_SignInit plus C_Sign \
         pairs per mechanism on one thread. CKM_SHA256_RSA_PKCS signs a 64-byte message; \
         CKM_ECDSA signs its 32-byte SHA-256 digest. Percentiles use the nearest-rank method.\n\
         - Throughput: 1 and 4 threads, each with its own session, sign for {seconds} s after \
         {thread_warmup} untimed signatures each.\n\
         - Cold start: {cold_runs} fresh processes per side, alternating sides, each timing \
         C_Initialize, slot lookup, C_OpenSession, C_Login, key lookup and one RSA signature. \
         Through keyrelay this includes the QUIC and TLS 1.3 handshake, the authentication and \
         the catalogue download.\n\
         - Peak RSS: VmHWM of the latency and throughput process, read from \
         `/proc/self/status` before C_Finalize.\n\
         - One signature per mechanism and side is verified with `ring` against the key's \
         public key, and the audit log must hold one successful record per keyrelay signature \
         ({audited} audited, {reported} made).\n",
        warmup = context.warmup,
        iterations = context.iterations,
        seconds = context.throughput_seconds,
        thread_warmup = crate::measure::THREAD_WARMUP,
        cold_runs = context.cold_runs,
        audited = context.audited_signatures,
        reported = context.keyrelay_signatures,
    );
    text.push_str("## Results\n\n");
    text.push_str(&table(direct, keyrelay));
    text.push_str(
        "\nA ratio above 1 means keyrelay takes longer or uses more memory; for throughput, a \
         ratio below 1 means keyrelay signs fewer per second.\n\n",
    );
    text.push_str("## Where the keyrelay overhead comes from\n\n");
    text.push_str(&breakdown_table(keyrelay, breakdown));
    text.push('\n');
    text.push_str(&interpretation(context, direct, keyrelay, breakdown));
    text
}

/// Returns the interpretation paragraphs, built from the measured numbers.
fn interpretation(
    context: &Context,
    direct: &SideResult,
    keyrelay: &SideResult,
    breakdown: &Breakdown,
) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Each keyrelay signature is one request over an open QUIC connection. The module sends \
         the digest (it hashes locally for CKM_SHA256_RSA_PKCS), and the keyserver checks the policy, signs on SoftHSM2, \
         appends the audit record and calls fdatasync before it replies. The keyserver's \
         `latency_us` runs from the start of the request stream to the audit record: reading \
         the request, a log line, the hand-off to a blocking thread, the policy check and \
         the SoftHSM2 signature. It stops before the audit write, so the table adds the \
         fdatasync cost measured separately in the same folder after the run. The rest is an \
         estimate from subtracting medians, not a measurement of its own.\n"
    );
    let added_rsa = keyrelay.rsa.median - direct.rsa.median;
    let added_ecdsa = keyrelay.ecdsa.median - direct.ecdsa.median;
    let _ = write!(
        text,
        "On this run an RSA-2048 signature took {:.0} µs through keyrelay against {:.0} µs \
         directly ({added_rsa:.0} µs more), and an ECDSA P-256 signature {:.0} µs against \
         {:.0} µs ({added_ecdsa:.0} µs more).",
        keyrelay.rsa.median, direct.rsa.median, keyrelay.ecdsa.median, direct.ecdsa.median,
    );
    // Within a quarter of each other counts as "about the same" added cost.
    if (added_rsa - added_ecdsa).abs() <= 0.25 * added_rsa.max(added_ecdsa) {
        text.push_str(
            " The added cost per signature is about the same for both mechanisms, so the ratio \
             is larger for the faster one.",
        );
    }
    text.push_str("\n\n");
    let _ = writeln!(
        text,
        "The keyserver's `latency_us` exceeds the direct signature by {:.0} µs for RSA and \
         {:.0} µs for ECDSA (medians): that part of the added cost is spent inside the keyserver, \
         in its SoftHSM2 call or around it.\n",
        breakdown.server_rsa.median - direct.rsa.median,
        breakdown.server_ecdsa.median - direct.ecdsa.median,
    );
    let rest_rsa = rest(keyrelay.rsa.median, breakdown.server_rsa.median, breakdown);
    let rest_ecdsa = rest(
        keyrelay.ecdsa.median,
        breakdown.server_ecdsa.median,
        breakdown,
    );
    if rest_rsa < 0.0 || rest_ecdsa < 0.0 {
        let _ = writeln!(
            text,
            "On this run the fdatasync median measured after the signatures ({:.0} µs) leaves \
             no room for the rest, so the disk was slower during that measurement than during \
             the signatures, and the breakdown does not add up. The load averages under Machine \
             show whether other work ran at the same time.\n",
            breakdown.fdatasync.median
        );
    }
    let fsync_bound = 1e6 / breakdown.fdatasync.median;
    let _ = write!(
        text,
        "The keyserver writes audit records under one lock, one fdatasync each, so it can \
         audit at most about {fsync_bound:.0} records per second on this folder (1 / median \
         fdatasync). With 4 threads, keyrelay reached {:.0} RSA and {:.0} ECDSA signatures \
         per second, against {:.0} and {:.0} directly. This machine has {} CPU cores shared by \
         the benchmark, the keyserver and SoftHSM2.",
        keyrelay.throughput[1],
        keyrelay.throughput[3],
        direct.throughput[1],
        direct.throughput[3],
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let fastest = keyrelay.throughput[1].max(keyrelay.throughput[3]);
    if fastest < 0.5 * fsync_bound {
        text.push_str(
            " Both stay below half of that bound, so on this folder the audit fdatasync does not \
             limit throughput.",
        );
    } else {
        text.push_str(
            " That is close to the bound, so the audit fdatasync limits throughput here.",
        );
    }
    text.push_str("\n\n");
    let _ = writeln!(
        text,
        "A fresh keyrelay process took {:.1} ms from C_Initialize to its first signature \
         (median), against {:.1} ms for SoftHSM2, which loads its token files locally.\n",
        keyrelay.cold.median / 1000.0,
        direct.cold.median / 1000.0,
    );
    let fsync_note = if context.filesystem == "tmpfs" {
        "The folder was on tmpfs, where fdatasync returns without writing to a disk, so these \
         numbers understate the audit cost of a keyserver whose log is on a disk."
            .to_owned()
    } else {
        format!(
            "The folder was on `{}`, not tmpfs, so each fdatasync went through the filesystem to \
             its block device, as for an audit log in production. On tmpfs (`--dir /dev/shm`) fdatasync \
             returns without writing to a disk and keyrelay would look faster.",
            context.filesystem
        )
    };
    let _ = writeln!(
        text,
        "{fsync_note} The numbers come from a single run, so compare ratios \
         rather than absolute values across machines.",
    );
    if let Some(kib) = breakdown.keyserver_peak_rss_kib {
        let _ = writeln!(
            text,
            "\nThe keyserver's own peak RSS was {:.1} MiB.",
            kib as f64 / 1024.0
        );
    }
    text
}
