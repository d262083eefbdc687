//! The process-wide module instance created by C_Initialize and dropped by C_Finalize.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cryptoki_sys::*;
use keyrelay_protocol::KeySecret;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::state::State;

/// The initialized module, or `None`.
static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// Everything that lives between C_Initialize and C_Finalize.
#[derive(Debug)]
pub(crate) struct Module {
    /// Process that called C_Initialize. A forked child sees another id and must initialize
    /// a module of its own, because the runtime's threads did not survive the fork.
    pid: u32,
    runtime: tokio::runtime::Runtime,
    /// True when the runtime has its own I/O thread; false when the caller set
    /// CKF_LIBRARY_CANT_CREATE_OS_THREADS and calls drive the I/O themselves.
    own_thread: bool,
    pub(crate) remote: Arc<Remote>,
    /// KeySecret from the configuration; `None` when the PIN is the KeySecret.
    pub(crate) configured_secret: Option<KeySecret>,
    state: Mutex<State>,
}

impl Module {
    fn new(config: Config, own_thread: bool) -> Result<Self> {
        let mut builder = if own_thread {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(1).thread_name("keyrelay-io");
            builder
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let runtime = builder
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the I/O runtime: {e}")))?;
        let remote = {
            let _context = runtime.enter();
            Arc::new(Remote::new(&config)?)
        };
        Ok(Self {
            pid: std::process::id(),
            runtime,
            own_thread,
            remote,
            configured_secret: config.key_secret.clone(),
            state: Mutex::new(State::new(&config.tokens)),
        })
    }

    /// Returns the KeyId the module authenticates with.
    pub(crate) fn key_id(&self) -> &str {
        self.remote.key_id()
    }

    /// Locks the session and slot state. A panic caught while the lock was held leaves it
    /// usable: every state change is completed before any call that could panic.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `future` on the module's runtime and waits for it on the calling thread.
    ///
    /// With its own I/O thread, this works from any thread, including one that belongs to
    /// the host's own tokio runtime, because the calling thread only waits on a channel.
    /// Without one, the calling thread drives the runtime itself.
    pub(crate) fn block_on<F, T>(&self, future: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        if !self.own_thread {
            return self.runtime.block_on(future);
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .map_err(|_| Error::Internal("the module's I/O runtime stopped".into()))?
    }
}

/// Returns the module initialized in this process.
pub(crate) fn get() -> Result<Arc<Module>> {
    let guard = MODULE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match guard.as_ref() {
        Some(module) if module.pid == std::process::id() => Ok(module.clone()),
        _ => Err(Error::NotInitialized),
    }
}

/// Creates the module from the configuration in the environment. `own_thread` is false when
/// the caller forbids the module to create threads.
pub(crate) fn initialize(own_thread: bool) -> Result<()> {
    let mut guard = MODULE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(module) = guard.take() {
        if module.pid == std::process::id() {
            *guard = Some(module);
            return Err(Error::AlreadyInitialized);
        }
        // Inherited from the parent through fork(): its runtime threads do not exist here,
        // and dropping it would wait for them, so it is leaked instead.
        std::mem::forget(module);
    }
    let config = Config::from_env()?;
    tracing::debug!(?config, "initializing");
    *guard = Some(Arc::new(Module::new(config, own_thread)?));
    Ok(())
}

/// Drops the module, closing the connection to the keyserver.
pub(crate) fn finalize() -> Result<()> {
    let module = {
        let mut guard = MODULE
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.take() {
            Some(module) if module.pid == std::process::id() => module,
            Some(inherited) => {
                std::mem::forget(inherited);
                return Err(Error::NotInitialized);
            }
            None => return Err(Error::NotInitialized),
        }
    };
    module.remote.close();
    // Calls still running on other threads hold their own reference and finish first.
    if let Ok(module) = Arc::try_unwrap(module) {
        module
            .runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
    Ok(())
}

/// Checks the arguments of C_Initialize (PKCS#11 v2.40 section 5.4) and returns whether the
/// module may create a thread of its own.
///
/// With CKF_LIBRARY_CANT_CREATE_OS_THREADS, as GnuTLS's p11tool sets it, the module creates
/// no thread: the calling threads drive the connection during their calls, so keep-alives
/// stop between calls and the next signature may have to reconnect.
///
/// The module always locks with native mutexes. It accepts application-supplied mutex
/// functions without CKF_OS_LOCKING_OK too, and does not call them, as SoftHSM2 does: GnuTLS's
/// p11tool passes them that way and would otherwise fail to load the module.
pub(crate) fn check_initialize_args(args: Option<&CK_C_INITIALIZE_ARGS>) -> Result<bool> {
    let Some(args) = args else { return Ok(true) };
    if !args.pReserved.is_null() {
        return Err(Error::ArgumentsBad("pReserved must be NULL"));
    }
    let supplied = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    let all = supplied.iter().all(|&s| s);
    if !all && supplied.iter().any(|&s| s) {
        return Err(Error::ArgumentsBad(
            "mutex functions must be all set or all NULL",
        ));
    }
    Ok(args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0)
}
