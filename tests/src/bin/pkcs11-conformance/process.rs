//! Cases about processes and threads: fork, concurrent sessions and reconnection.

use std::io::BufRead;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use serde_json::{Value, json};

use crate::cases::rv;
use crate::{Context, MESSAGE, Mechanism, Module};

/// Seconds a forked child may run before SIGALRM ends it, so a hang shows as a failure.
const CHILD_ALARM_SECONDS: u32 = 20;

/// Signs MESSAGE once with `rsa-2048` on `session`.
fn sign_once(module: &Module, session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut mechanism = Mechanism::plain(CKM_SHA256_RSA_PKCS);
    let init = module.sign_init(session, &mut mechanism, key);
    if init != CKR_OK {
        return init;
    }
    module.sign(session, MESSAGE).0
}

/// Runs `body` in a forked child and returns its exit code, or a description of its end.
fn in_child(body: impl FnOnce() -> i32) -> Value {
    // SAFETY: the child only makes PKCS#11 calls, as the case under test requires, and
    // leaves with _exit so it runs no destructors of the parent's state.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: alarm only arms a timer for this process.
        unsafe { libc::alarm(CHILD_ALARM_SECONDS) };
        let code = body();
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just created.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        json!(libc::WEXITSTATUS(status))
    } else {
        json!(format!("killed by signal {}", libc::WTERMSIG(status)))
    }
}

/// Exit codes of the forked children: the index into this list of the first failing step,
/// or 0 when every step succeeded.
pub(crate) fn fork_case(module: Module, token: &str, pin: String) -> Value {
    let context = Context::open(module, token, pin);
    let key = context.private_key("rsa-2048");
    let before = sign_once(&context.module, context.session, key);

    let uninitialized = in_child(|| {
        let mut count = 0;
        let code = crate::call!(
            context.module,
            C_GetSlotList,
            CK_TRUE,
            std::ptr::null_mut(),
            &mut count
        );
        if code == CKR_CRYPTOKI_NOT_INITIALIZED {
            0
        } else {
            1
        }
    });
    let reinitialized = in_child(|| {
        if context.module.initialize() != CKR_OK {
            return 1;
        }
        let slot = context.module.slot(token);
        let session = context.module.open(slot);
        if context.module.login(session, CKU_USER, &context.pin) != CKR_OK {
            return 2;
        }
        let key = context.private_key_in(session, "rsa-2048");
        if sign_once(&context.module, session, key) != CKR_OK {
            return 3;
        }
        0
    });
    let after = sign_once(&context.module, context.session, key);
    json!({
        "parent_before": rv(before),
        "child_without_initialize": uninitialized,
        "child_with_initialize": reinitialized,
        "parent_after": rv(after),
    })
}

/// Eight threads, each with its own session, sign five times each.
pub(crate) fn threads_case(context: Context) -> Value {
    let failures: Vec<CK_RV> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let session = context.module.open(context.slot);
                    let key = context.private_key_in(session, "rsa-2048");
                    (0..5)
                        .map(|_| sign_once(&context.module, session, key))
                        .filter(|code| *code != CKR_OK)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a signing thread"))
            .collect()
    });
    json!({ "failures": failures.iter().map(|code| rv(*code)).collect::<Vec<_>>() })
}

/// Signs, prints a line, waits for a line on standard input (the test restarts or stops the
/// keyserver meanwhile), then signs again on the same session and reports how long it took.
pub(crate) fn reconnect_case(context: Context) -> Value {
    let key = context.private_key("rsa-2048");
    let before = sign_once(&context.module, context.session, key);
    println!("{}", json!({ "before": rv(before) }));
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let started = Instant::now();
    let after = sign_once(&context.module, context.session, key);
    let elapsed = started.elapsed();
    json!({
        "before": rv(before),
        "after": rv(after),
        "seconds": elapsed.as_secs_f64(),
        "within_bound": elapsed < Duration::from_secs(30),
    })
}
