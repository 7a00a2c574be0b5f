//! Raw declarations of the libtpms C API we use (`/usr/include/libtpms/`).
//! Nothing here is safe to call directly: `super::Tpm` is the only caller.

use std::os::raw::{c_char, c_int, c_uchar, c_uint};

pub type TpmResult = u32;
pub type TpmBool = c_uchar;

pub const TPMLIB_TPM_VERSION_1_2: c_int = 0;
pub const TPMLIB_TPM_VERSION_2: c_int = 1;

pub const TPMLIB_STATE_PERMANENT: c_int = 1;
pub const TPMLIB_STATE_VOLATILE: c_int = 2;
pub const TPMLIB_STATE_SAVE_STATE: c_int = 4;

/// `TPMPROP_TPM_BUFFER_MAX` of `enum TPMLIB_TPMProperty`.
pub const TPMPROP_TPM_BUFFER_MAX: c_int = 2;

#[repr(C)]
pub struct LibtpmsCallbacks {
    pub size_of_struct: c_int,
    pub tpm_nvram_init: Option<extern "C" fn() -> TpmResult>,
    pub tpm_nvram_loaddata:
        Option<extern "C" fn(*mut *mut c_uchar, *mut u32, u32, *const c_char) -> TpmResult>,
    pub tpm_nvram_storedata:
        Option<extern "C" fn(*const c_uchar, u32, u32, *const c_char) -> TpmResult>,
    pub tpm_nvram_deletename: Option<extern "C" fn(u32, *const c_char, TpmBool) -> TpmResult>,
    pub tpm_io_init: Option<extern "C" fn() -> TpmResult>,
    pub tpm_io_getlocality: Option<extern "C" fn(*mut u32, u32) -> TpmResult>,
    pub tpm_io_getphysicalpresence: Option<extern "C" fn(*mut TpmBool, u32) -> TpmResult>,
}

#[link(name = "tpms")]
unsafe extern "C" {
    pub fn TPMLIB_GetVersion() -> u32;
    pub fn TPMLIB_ChooseTPMVersion(ver: c_int) -> TpmResult;
    pub fn TPMLIB_MainInit() -> TpmResult;
    pub fn TPMLIB_Terminate();
    pub fn TPMLIB_Process(
        respbuffer: *mut *mut c_uchar,
        resp_size: *mut u32,
        respbufsize: *mut u32,
        command: *mut c_uchar,
        command_size: u32,
    ) -> TpmResult;
    pub fn TPMLIB_VolatileAll_Store(buffer: *mut *mut c_uchar, buflen: *mut u32) -> TpmResult;
    pub fn TPMLIB_CancelCommand() -> TpmResult;
    pub fn TPMLIB_GetTPMProperty(prop: c_int, result: *mut c_int) -> TpmResult;
    pub fn TPMLIB_GetInfo(flags: c_uint) -> *mut c_char;
    pub fn TPMLIB_RegisterCallbacks(callbacks: *mut LibtpmsCallbacks) -> TpmResult;
    pub fn TPMLIB_SetDebugFD(fd: c_int);
    pub fn TPMLIB_SetDebugLevel(level: c_uint);
    pub fn TPMLIB_SetDebugPrefix(prefix: *const c_char) -> TpmResult;
    pub fn TPMLIB_SetBufferSize(wanted: u32, min_size: *mut u32, max_size: *mut u32) -> u32;
    pub fn TPMLIB_SetState(st: c_int, buffer: *const c_uchar, buflen: u32) -> TpmResult;

    pub fn TPM_IO_Hash_Start() -> TpmResult;
    pub fn TPM_IO_Hash_Data(data: *const c_uchar, data_length: u32) -> TpmResult;
    pub fn TPM_IO_Hash_End() -> TpmResult;
    pub fn TPM_IO_TpmEstablished_Get(established: *mut TpmBool) -> TpmResult;
    pub fn TPM_IO_TpmEstablished_Reset() -> TpmResult;

    pub fn TPM_Malloc(buffer: *mut *mut c_uchar, size: u32) -> TpmResult;
    pub fn TPM_Free(buffer: *mut c_uchar);
}
