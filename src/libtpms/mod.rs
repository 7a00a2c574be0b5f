//! Safe wrapper around the system libtpms.
//!
//! libtpms keeps all its state in process-wide globals and is not thread safe, so it is
//! modelled as a singleton: [`Tpm::acquire`] hands out the one `Tpm` of the process, and
//! every call that enters the library takes `&mut self`. The one exception is
//! [`Canceller`], because cancelling a running command from another thread is exactly
//! what `TPMLIB_CancelCommand` exists for.
//!
//! libtpms calls back into its host (to load and store state, and to ask for the current
//! locality) synchronously, on the calling thread, from inside a library call. Those
//! callbacks are plain C functions without a user pointer, so each wrapper installs the
//! caller's [`Host`] in a thread-local slot for the duration of the call.

mod ffi;
pub mod library;

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::raw::{c_char, c_uchar};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use library::Library;
pub use library::LoadError;

use crate::tpm::TpmVersion;

/// A TPM_RESULT as libtpms returns it: a TPM 1.2 or TPM 2 response code.
pub type TpmRc = u32;

pub const TPM_SUCCESS: TpmRc = 0;
pub const TPM_FAIL: TpmRc = 0x09;
pub const TPM_RETRY: TpmRc = 0x800;

/// The three state blobs libtpms asks its host to keep (`TPMLIB_StateType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    Permanent,
    Volatile,
    SaveState,
}

impl StateKind {
    pub const ALL: [StateKind; 3] = [
        StateKind::Permanent,
        StateKind::Volatile,
        StateKind::SaveState,
    ];

    /// The name libtpms uses for this blob, and the suffix of swtpm's file names.
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Permanent => "permall",
            StateKind::Volatile => "volatilestate",
            StateKind::SaveState => "savestate",
        }
    }

    fn from_name(name: &[u8]) -> Option<StateKind> {
        StateKind::ALL
            .into_iter()
            .find(|kind| kind.name().as_bytes() == name)
    }

    fn lib_type(self) -> i32 {
        match self {
            StateKind::Permanent => ffi::TPMLIB_STATE_PERMANENT,
            StateKind::Volatile => ffi::TPMLIB_STATE_VOLATILE,
            StateKind::SaveState => ffi::TPMLIB_STATE_SAVE_STATE,
        }
    }
}

/// What libtpms needs from the program that runs it, while one of its calls is running.
pub trait Host {
    /// Called before libtpms touches storage.
    fn nvram_init(&mut self) -> Result<(), TpmRc>;
    /// The stored blob, or `None` when there is none (libtpms then manufactures a TPM).
    fn load(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, TpmRc>;
    /// Must be durable when it returns `Ok`: libtpms answers the command after it.
    fn store(&mut self, kind: StateKind, data: &[u8]) -> Result<(), TpmRc>;
    fn delete(&mut self, kind: StateKind, must_exist: bool) -> Result<(), TpmRc>;
    fn locality(&self) -> u8;
}

#[derive(Debug, thiserror::Error)]
pub enum LibtpmsError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("libtpms is already in use by this process")]
    AlreadyAcquired,
    #[error("libtpms could not select TPM version {version} (result {rc:#x})")]
    ChooseVersion { version: TpmVersion, rc: TpmRc },
    #[error("libtpms refused our callbacks (result {rc:#x})")]
    RegisterCallbacks { rc: TpmRc },
}

/// Buffer sizes as `TPMLIB_SetBufferSize` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSize {
    pub current: u32,
    pub min: u32,
    pub max: u32,
}

static ACQUIRED: AtomicBool = AtomicBool::new(false);

/// The process's libtpms.
pub struct Tpm {
    lib: &'static Library,
    version: TpmVersion,
    /// libtpms' response buffer, kept across commands so that it is allocated once.
    resp: *mut c_uchar,
    resp_cap: u32,
}

// SAFETY: libtpms' globals are not tied to a thread; `&mut self` on every call keeps
// the calls serialized, whichever thread owns the `Tpm`.
unsafe impl Send for Tpm {}

/// Cancels the TPM command that is running on another thread, if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct Canceller(());

impl Canceller {
    /// A canceller usable before libtpms is loaded (it then has nothing to cancel).
    pub fn new() -> Canceller {
        Canceller(())
    }

    pub fn cancel(self) -> TpmRc {
        // Before libtpms is loaded no command can be running.
        let Some(lib) = library::loaded() else {
            return TPM_SUCCESS;
        };
        // SAFETY: TPMLIB_CancelCommand only sets libtpms' cancel flag; its man page
        // documents calling it from a thread other than the one processing commands.
        unsafe { (lib.cancel_command)() }
    }
}

impl Tpm {
    /// Takes the process's libtpms for a TPM of `version` and registers our callbacks;
    /// waits for libtpms to be loaded (or loads it).
    pub fn acquire(version: TpmVersion) -> Result<Tpm, LibtpmsError> {
        let lib = library::load()?;
        if ACQUIRED.swap(true, Ordering::SeqCst) {
            return Err(LibtpmsError::AlreadyAcquired);
        }
        let lib_version = match version {
            TpmVersion::V1_2 => ffi::TPMLIB_TPM_VERSION_1_2,
            TpmVersion::V2 => ffi::TPMLIB_TPM_VERSION_2,
        };
        let mut callbacks = ffi::LibtpmsCallbacks {
            size_of_struct: std::mem::size_of::<ffi::LibtpmsCallbacks>() as i32,
            tpm_nvram_init: Some(cb_nvram_init),
            tpm_nvram_loaddata: Some(cb_nvram_load),
            tpm_nvram_storedata: Some(cb_nvram_store),
            tpm_nvram_deletename: Some(cb_nvram_delete),
            tpm_io_init: Some(cb_io_init),
            tpm_io_getlocality: Some(cb_get_locality),
            tpm_io_getphysicalpresence: Some(cb_get_physical_presence),
        };
        // SAFETY: libtpms copies the structure; the function pointers are 'static.
        let rc = unsafe { (lib.register_callbacks)(&mut callbacks) };
        if rc != TPM_SUCCESS {
            return Err(LibtpmsError::RegisterCallbacks { rc });
        }
        // SAFETY: plain call with an enum value libtpms defines.
        let rc = unsafe { (lib.choose_tpm_version)(lib_version) };
        if rc != TPM_SUCCESS {
            return Err(LibtpmsError::ChooseVersion { version, rc });
        }
        Ok(Tpm {
            lib,
            version,
            resp: ptr::null_mut(),
            resp_cap: 0,
        })
    }

    pub fn version(&self) -> TpmVersion {
        self.version
    }

    /// libtpms' own version, as `0x00MMmmuu`.
    pub fn library_version(&self) -> u32 {
        // SAFETY: reads a constant.
        unsafe { (self.lib.get_version)() }
    }

    /// Starts the TPM: loads (or manufactures) its state through `host`.
    pub fn main_init(&mut self, host: &mut dyn Host) -> Result<(), TpmRc> {
        // SAFETY: no arguments; callbacks reach `host` through the installed slot.
        rc_to_result(with_host(host, || unsafe { (self.lib.main_init)() }))
    }

    /// Stops the TPM and frees libtpms' internal state (but not state stored by `host`).
    pub fn terminate(&mut self) {
        // SAFETY: valid in any state; libtpms does not call back from here.
        unsafe { (self.lib.terminate)() }
    }

    /// Executes one TPM command and returns libtpms' response.
    pub fn process(&mut self, host: &mut dyn Host, command: &mut [u8]) -> Result<&[u8], TpmRc> {
        let mut resp_len: u32 = 0;
        let cmd_len = u32::try_from(command.len()).map_err(|_| TPM_FAIL)?;
        let process = self.lib.process;
        let rc = with_host(host, || {
            // SAFETY: `resp`/`resp_cap` describe a buffer libtpms allocated (or null/0),
            // which it may free and replace; `command` is valid for `cmd_len` bytes.
            unsafe {
                process(
                    &mut self.resp,
                    &mut resp_len,
                    &mut self.resp_cap,
                    command.as_mut_ptr(),
                    cmd_len,
                )
            }
        });
        if rc != TPM_SUCCESS {
            return Err(rc);
        }
        if self.resp.is_null() || resp_len > self.resp_cap {
            return Err(TPM_FAIL);
        }
        // SAFETY: libtpms wrote `resp_len` bytes into its buffer of `resp_cap` bytes.
        Ok(unsafe { std::slice::from_raw_parts(self.resp, resp_len as usize) })
    }

    /// The TPM's volatile state, serialized by libtpms (`TPMLIB_VolatileAll_Store`).
    pub fn volatile_state(&mut self, host: &mut dyn Host) -> Result<Vec<u8>, TpmRc> {
        let mut buf: *mut c_uchar = ptr::null_mut();
        let mut len: u32 = 0;
        // SAFETY: out-pointers to locals; libtpms allocates `buf` with TPM_Malloc.
        let rc = with_host(host, || unsafe {
            (self.lib.volatile_all_store)(&mut buf, &mut len)
        });
        take_lib_buffer(self.lib, rc, buf, len)
    }

    /// Hands libtpms a state blob to use at the next [`Tpm::main_init`]; `None` hides
    /// whatever the host has stored for that kind. libtpms checks a volatile blob
    /// against the permanent state, which it may load through `host`.
    pub fn set_state(
        &mut self,
        host: &mut dyn Host,
        kind: StateKind,
        blob: Option<&[u8]>,
    ) -> Result<(), TpmRc> {
        let (ptr, len) = match blob {
            Some(data) => (
                data.as_ptr(),
                u32::try_from(data.len()).map_err(|_| TPM_FAIL)?,
            ),
            None => (ptr::null(), 0),
        };
        // SAFETY: `ptr` is valid for `len` bytes (or null with 0); libtpms copies it.
        rc_to_result(with_host(host, || unsafe {
            (self.lib.set_state)(kind.lib_type(), ptr, len)
        }))
    }

    /// Sets libtpms' I/O buffer size (0 only queries) and reports the sizes in effect.
    pub fn set_buffer_size(&mut self, wanted: u32) -> BufferSize {
        let (mut min, mut max) = (0u32, 0u32);
        // SAFETY: out-pointers to locals.
        let current = unsafe { (self.lib.set_buffer_size)(wanted, &mut min, &mut max) };
        BufferSize { current, min, max }
    }

    /// libtpms' JSON description for the `TPMLIB_GetInfo` flags (a 32-bit C enum).
    pub fn info(&mut self, flags: u32) -> Option<String> {
        // SAFETY: returns a malloc'ed NUL-terminated string or null.
        let text = unsafe { (self.lib.get_info)(flags) };
        let text = NonNull::new(text)?;
        // SAFETY: libtpms returned a valid C string that we now own.
        let owned = unsafe { CStr::from_ptr(text.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by libtpms with malloc, freed exactly once here.
        unsafe { libc::free(text.as_ptr().cast()) };
        Some(owned)
    }

    /// The largest command or response libtpms handles.
    pub fn buffer_max(&mut self) -> u32 {
        let mut value: i32 = 0;
        // SAFETY: out-pointer to a local.
        let rc = unsafe { (self.lib.get_tpm_property)(ffi::TPMPROP_TPM_BUFFER_MAX, &mut value) };
        if rc == TPM_SUCCESS && value > 0 {
            value as u32
        } else {
            4096
        }
    }

    pub fn hash_start(&mut self, host: &mut dyn Host) -> Result<(), TpmRc> {
        // SAFETY: no arguments.
        rc_to_result(with_host(host, || unsafe { (self.lib.hash_start)() }))
    }

    pub fn hash_data(&mut self, host: &mut dyn Host, data: &[u8]) -> Result<(), TpmRc> {
        let len = u32::try_from(data.len()).map_err(|_| TPM_FAIL)?;
        // SAFETY: `data` is valid for `len` bytes during the call.
        rc_to_result(with_host(host, || unsafe {
            (self.lib.hash_data)(data.as_ptr(), len)
        }))
    }

    pub fn hash_end(&mut self, host: &mut dyn Host) -> Result<(), TpmRc> {
        // SAFETY: no arguments.
        rc_to_result(with_host(host, || unsafe { (self.lib.hash_end)() }))
    }

    pub fn established(&mut self) -> Result<bool, TpmRc> {
        let mut flag: ffi::TpmBool = 0;
        // SAFETY: out-pointer to a local.
        rc_to_result(unsafe { (self.lib.established_get)(&mut flag) })?;
        Ok(flag != 0)
    }

    /// Resets the established flag; libtpms checks `host.locality()` (3 or 4 only).
    pub fn reset_established(&mut self, host: &mut dyn Host) -> Result<(), TpmRc> {
        // SAFETY: no arguments.
        rc_to_result(with_host(host, || unsafe {
            (self.lib.established_reset)()
        }))
    }

    /// Sends libtpms' debug output to `fd` at `level` with `prefix` on each line.
    pub fn set_debug(&mut self, fd: RawFd, level: u32, prefix: &str) {
        let prefix = CString::new(prefix.replace('\0', "")).unwrap_or_default();
        // SAFETY: plain setters; libtpms copies the prefix.
        unsafe {
            (self.lib.set_debug_fd)(fd);
            (self.lib.set_debug_level)(level);
            (self.lib.set_debug_prefix)(prefix.as_ptr());
        }
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        if !self.resp.is_null() {
            // SAFETY: the buffer came from libtpms' allocator and is freed once.
            unsafe { (self.lib.free)(self.resp) };
        }
    }
}

fn rc_to_result(rc: TpmRc) -> Result<(), TpmRc> {
    if rc == TPM_SUCCESS { Ok(()) } else { Err(rc) }
}

/// Copies a buffer libtpms allocated for us and frees it.
fn take_lib_buffer(
    lib: &Library,
    rc: TpmRc,
    buf: *mut c_uchar,
    len: u32,
) -> Result<Vec<u8>, TpmRc> {
    if buf.is_null() {
        return Err(if rc == TPM_SUCCESS { TPM_FAIL } else { rc });
    }
    // SAFETY: libtpms allocated `buf` with at least `len` valid bytes.
    let data = unsafe { std::slice::from_raw_parts(buf, len as usize) }.to_vec();
    // SAFETY: allocated by TPM_Malloc, freed exactly once.
    unsafe { (lib.free)(buf) };
    rc_to_result(rc).map(|()| data)
}

thread_local! {
    /// The host of the libtpms call running on this thread, if any.
    static ACTIVE_HOST: Cell<Option<NonNull<dyn Host>>> = const { Cell::new(None) };
}

/// Clears the active host when the call ends, also if it unwinds.
struct ActiveHostGuard;

impl Drop for ActiveHostGuard {
    fn drop(&mut self) {
        ACTIVE_HOST.with(|slot| slot.set(None));
    }
}

fn with_host<R>(host: &mut dyn Host, call: impl FnOnce() -> R) -> R {
    let short: NonNull<dyn Host + '_> = NonNull::from(host);
    // SAFETY: only the lifetime is erased; the guard removes the pointer before `host`'s
    // borrow ends, and callbacks run only inside `call` on this thread.
    let erased: NonNull<dyn Host + 'static> = unsafe { std::mem::transmute(short) };
    ACTIVE_HOST.with(|slot| slot.set(Some(erased)));
    let _guard = ActiveHostGuard;
    call()
}

/// Runs `f` on the active host, or answers `fallback` when libtpms calls back outside a
/// wrapped call (it should not).
fn on_host<R>(fallback: R, f: impl FnOnce(&mut dyn Host) -> R) -> R {
    match ACTIVE_HOST.with(|slot| slot.get()) {
        // SAFETY: the pointer was installed by `with_host` for the call now running on
        // this thread, and nothing else borrows the host during a callback.
        Some(mut host) => f(unsafe { host.as_mut() }),
        None => fallback,
    }
}

fn kind_of(name: *const c_char) -> Option<StateKind> {
    if name.is_null() {
        return None;
    }
    // SAFETY: libtpms passes a NUL-terminated constant name.
    StateKind::from_name(unsafe { CStr::from_ptr(name) }.to_bytes())
}

extern "C" fn cb_nvram_init() -> TpmRc {
    on_host(TPM_FAIL, |host| {
        host.nvram_init().err().unwrap_or(TPM_SUCCESS)
    })
}

extern "C" fn cb_nvram_load(
    data: *mut *mut c_uchar,
    length: *mut u32,
    _tpm_number: u32,
    name: *const c_char,
) -> TpmRc {
    let Some(kind) = kind_of(name) else {
        return TPM_FAIL;
    };
    let blob = match on_host(Err(TPM_FAIL), |host| host.load(kind)) {
        Ok(Some(blob)) => blob,
        Ok(None) => return TPM_RETRY,
        Err(rc) => return rc,
    };
    let Ok(len) = u32::try_from(blob.len()) else {
        return TPM_FAIL;
    };
    // libtpms calls back only from inside one of its calls: it is loaded.
    let Some(lib) = library::loaded() else {
        return TPM_FAIL;
    };
    let mut buf: *mut c_uchar = ptr::null_mut();
    // SAFETY: libtpms frees what it receives with TPM_Free, so it must come from
    // TPM_Malloc; we copy `len` bytes into the fresh buffer and hand it over.
    unsafe {
        let rc = (lib.malloc)(&mut buf, len.max(1));
        if rc != TPM_SUCCESS {
            return rc;
        }
        ptr::copy_nonoverlapping(blob.as_ptr(), buf, blob.len());
        *data = buf;
        *length = len;
    }
    TPM_SUCCESS
}

extern "C" fn cb_nvram_store(
    data: *const c_uchar,
    length: u32,
    _tpm_number: u32,
    name: *const c_char,
) -> TpmRc {
    let Some(kind) = kind_of(name) else {
        return TPM_FAIL;
    };
    if data.is_null() && length > 0 {
        return TPM_FAIL;
    }
    let bytes = if length == 0 {
        &[][..]
    } else {
        // SAFETY: libtpms passes `length` readable bytes at `data`.
        unsafe { std::slice::from_raw_parts(data, length as usize) }
    };
    on_host(TPM_FAIL, |host| {
        host.store(kind, bytes).err().unwrap_or(TPM_SUCCESS)
    })
}

extern "C" fn cb_nvram_delete(
    _tpm_number: u32,
    name: *const c_char,
    must_exist: ffi::TpmBool,
) -> TpmRc {
    let Some(kind) = kind_of(name) else {
        return TPM_FAIL;
    };
    on_host(TPM_FAIL, |host| {
        host.delete(kind, must_exist != 0)
            .err()
            .unwrap_or(TPM_SUCCESS)
    })
}

extern "C" fn cb_io_init() -> TpmRc {
    TPM_SUCCESS
}

extern "C" fn cb_get_locality(locality: *mut u32, _tpm_number: u32) -> TpmRc {
    if locality.is_null() {
        return TPM_FAIL;
    }
    let current = on_host(0, |host| host.locality());
    // SAFETY: libtpms passes a valid out-pointer.
    unsafe { *locality = u32::from(current) };
    TPM_SUCCESS
}

extern "C" fn cb_get_physical_presence(present: *mut ffi::TpmBool, _tpm_number: u32) -> TpmRc {
    if present.is_null() {
        return TPM_FAIL;
    }
    // A virtual TPM has no physical-presence pin; TPM 1.2 software presence
    // (TSC_PhysicalPresence) is handled inside libtpms.
    // SAFETY: libtpms passes a valid out-pointer.
    unsafe { *present = 0 };
    TPM_SUCCESS
}
