//! Opening the system libtpms at run time.
//!
//! Why not link it: loading libtpms pulls in libcrypto, and the dynamic loader's work on
//! the two (both are linked `BIND_NOW`: every relocation is resolved at load) was ~3.5 M
//! of the ~3.9 M instructions a linked daemon spent before its control socket answered
//! (about 1 ms here). Opened here instead, that work runs on the daemon's data thread
//! after the control channel already answers what needs no TPM; whatever needs libtpms
//! waits for [`load`], which returns the one process-wide [`Library`]. A daemon
//! [`reserve`]s the opening for its data thread, which opens it once the seccomp filter
//! is on: libtpms' code, its initialisers included, never runs outside the sandbox.
//! The `--print-*` paths and `--chroot` (the library is not inside the jail) just call
//! [`load`] first.
//!
//! The library is never unloaded, so the function pointers stay valid for the process's
//! life. Opening it makes only calls the daemon makes anyway for its state files
//! (`openat`, `read`, `pread64`, `fstat`/`newfstatat`, `mmap`, `mprotect`, `munmap`,
//! `close`): see `sandbox::seccomp`; every integration test opens it under the filter.

use std::os::raw::{c_char, c_int, c_uchar, c_uint};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use super::ffi::{LibtpmsCallbacks, TpmBool, TpmResult};

/// The libtpms pkg-config found at build time, by soname (as the dynamic loader would
/// have found a linked one: `LD_LIBRARY_PATH` and the loader's cache apply).
pub const SONAME: &str = env!("VTPM_LIBTPMS_SONAME");

/// libtpms could not be opened, or lacks a function vtpm calls.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "could not load libtpms ({SONAME}): {reason}; install it (Debian: apt-get install libtpms0)"
)]
pub struct LoadError {
    reason: String,
}

/// The libtpms functions vtpm calls, resolved once.
pub struct Library {
    pub get_version: unsafe extern "C" fn() -> u32,
    pub choose_tpm_version: unsafe extern "C" fn(c_int) -> TpmResult,
    pub main_init: unsafe extern "C" fn() -> TpmResult,
    pub terminate: unsafe extern "C" fn(),
    pub process: unsafe extern "C" fn(
        respbuffer: *mut *mut c_uchar,
        resp_size: *mut u32,
        respbufsize: *mut u32,
        command: *mut c_uchar,
        command_size: u32,
    ) -> TpmResult,
    pub volatile_all_store: unsafe extern "C" fn(*mut *mut c_uchar, *mut u32) -> TpmResult,
    pub cancel_command: unsafe extern "C" fn() -> TpmResult,
    pub get_tpm_property: unsafe extern "C" fn(c_int, *mut c_int) -> TpmResult,
    pub get_info: unsafe extern "C" fn(c_uint) -> *mut c_char,
    pub register_callbacks: unsafe extern "C" fn(*mut LibtpmsCallbacks) -> TpmResult,
    pub set_debug_fd: unsafe extern "C" fn(c_int),
    pub set_debug_level: unsafe extern "C" fn(c_uint),
    pub set_debug_prefix: unsafe extern "C" fn(*const c_char) -> TpmResult,
    pub set_buffer_size: unsafe extern "C" fn(u32, *mut u32, *mut u32) -> u32,
    pub set_state: unsafe extern "C" fn(c_int, *const c_uchar, u32) -> TpmResult,
    pub hash_start: unsafe extern "C" fn() -> TpmResult,
    pub hash_data: unsafe extern "C" fn(*const c_uchar, u32) -> TpmResult,
    pub hash_end: unsafe extern "C" fn() -> TpmResult,
    pub established_get: unsafe extern "C" fn(*mut TpmBool) -> TpmResult,
    pub established_reset: unsafe extern "C" fn() -> TpmResult,
    pub malloc: unsafe extern "C" fn(*mut *mut c_uchar, u32) -> TpmResult,
    pub free: unsafe extern "C" fn(*mut c_uchar),
    /// Keeps the library mapped; it is never closed (the pointers above point into it).
    _handle: libloading::Library,
}

static LIBRARY: OnceLock<Result<Library, LoadError>> = OnceLock::new();
/// Who opens the library: a daemon leaves it to its data thread, which opens it once its
/// seccomp filter is in place, so that libtpms' code never runs outside the sandbox.
static OPENER: Mutex<Opener> = Mutex::new(Opener::Anyone);
static OPENED: Condvar = Condvar::new();

#[derive(Clone, Copy, PartialEq, Eq)]
enum Opener {
    /// The first caller of [`load`].
    Anyone,
    /// The holder of the [`Reservation`]: other callers wait for it.
    Reserved,
    /// The reservation ended without opening the library (start-up failed).
    Abandoned,
}

/// The process's libtpms, opened by the first caller — or, while it is reserved, by the
/// holder of the [`Reservation`], whom the caller waits for. Callers that arrive while
/// another thread opens it wait for the same result.
pub fn load() -> Result<&'static Library, LoadError> {
    if let Some(result) = LIBRARY.get() {
        return result.as_ref().map_err(Clone::clone);
    }
    let mut opener = lock_opener();
    while *opener == Opener::Reserved && LIBRARY.get().is_none() {
        opener = OPENED.wait(opener).unwrap_or_else(|p| p.into_inner());
    }
    if *opener == Opener::Abandoned && LIBRARY.get().is_none() {
        return Err(LoadError {
            reason: "start-up failed before it was opened".into(),
        });
    }
    drop(opener);
    LIBRARY.get_or_init(open).as_ref().map_err(Clone::clone)
}

/// The library if it has been opened already (without waiting or opening it).
pub fn loaded() -> Option<&'static Library> {
    LIBRARY.get().and_then(|result| result.as_ref().ok())
}

/// The right to open the library: until it is used or dropped, [`load`] on other
/// threads waits instead of opening it.
pub struct Reservation(());

/// Reserves the opening for the caller (to hand to the thread that will do it).
pub fn reserve() -> Reservation {
    *lock_opener() = Opener::Reserved;
    Reservation(())
}

impl Reservation {
    /// Opens the library on this thread (the waiting callers get the result).
    pub fn load(self) -> Result<&'static Library, LoadError> {
        let result = LIBRARY.get_or_init(open).as_ref().map_err(Clone::clone);
        drop(self);
        result
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut opener = lock_opener();
        if LIBRARY.get().is_none() {
            *opener = Opener::Abandoned;
        }
        OPENED.notify_all();
    }
}

fn lock_opener() -> MutexGuard<'static, Opener> {
    OPENER.lock().unwrap_or_else(|p| p.into_inner())
}

fn open() -> Result<Library, LoadError> {
    // RTLD_NOW: every symbol is bound here, on the loader thread, not on the first TPM
    // command. RTLD_LOCAL: libtpms' and libcrypto's symbols stay out of the global scope.
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: opening runs the library's initialisers (libtpms' and libcrypto's): they
    // only set up their own globals and are safe to run on any thread.
    let handle =
        unsafe { libloading::os::unix::Library::open(Some(SONAME), flags) }.map_err(|err| {
            LoadError {
                reason: err.to_string(),
            }
        })?;
    let handle = libloading::Library::from(handle);
    // SAFETY (every `symbol` below): the type is the function's C prototype from
    // libtpms' headers (tpm_library.h, tpm_tis.h, tpm_memory.h), and `_handle` keeps the
    // code mapped for as long as the pointers exist (the library is never closed).
    unsafe {
        Ok(Library {
            get_version: symbol(&handle, b"TPMLIB_GetVersion\0")?,
            choose_tpm_version: symbol(&handle, b"TPMLIB_ChooseTPMVersion\0")?,
            main_init: symbol(&handle, b"TPMLIB_MainInit\0")?,
            terminate: symbol(&handle, b"TPMLIB_Terminate\0")?,
            process: symbol(&handle, b"TPMLIB_Process\0")?,
            volatile_all_store: symbol(&handle, b"TPMLIB_VolatileAll_Store\0")?,
            cancel_command: symbol(&handle, b"TPMLIB_CancelCommand\0")?,
            get_tpm_property: symbol(&handle, b"TPMLIB_GetTPMProperty\0")?,
            get_info: symbol(&handle, b"TPMLIB_GetInfo\0")?,
            register_callbacks: symbol(&handle, b"TPMLIB_RegisterCallbacks\0")?,
            set_debug_fd: symbol(&handle, b"TPMLIB_SetDebugFD\0")?,
            set_debug_level: symbol(&handle, b"TPMLIB_SetDebugLevel\0")?,
            set_debug_prefix: symbol(&handle, b"TPMLIB_SetDebugPrefix\0")?,
            set_buffer_size: symbol(&handle, b"TPMLIB_SetBufferSize\0")?,
            set_state: symbol(&handle, b"TPMLIB_SetState\0")?,
            hash_start: symbol(&handle, b"TPM_IO_Hash_Start\0")?,
            hash_data: symbol(&handle, b"TPM_IO_Hash_Data\0")?,
            hash_end: symbol(&handle, b"TPM_IO_Hash_End\0")?,
            established_get: symbol(&handle, b"TPM_IO_TpmEstablished_Get\0")?,
            established_reset: symbol(&handle, b"TPM_IO_TpmEstablished_Reset\0")?,
            malloc: symbol(&handle, b"TPM_Malloc\0")?,
            free: symbol(&handle, b"TPM_Free\0")?,
            _handle: handle,
        })
    }
}

/// The function `name` (NUL-terminated) of `handle`, as a pointer of type `F`.
///
/// # Safety
/// `F` must be the function's exact C type, and the pointer must not be called after
/// `handle` is closed.
unsafe fn symbol<F: Copy>(handle: &libloading::Library, name: &[u8]) -> Result<F, LoadError> {
    // SAFETY: forwarded to the caller (the type); `get` checks that the symbol exists.
    let found = unsafe { handle.get::<F>(name) };
    found.map(|symbol| *symbol).map_err(|err| LoadError {
        reason: err.to_string(),
    })
}
