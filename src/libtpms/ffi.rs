//! Types and constants of the libtpms C API we use (`/usr/include/libtpms/`). The
//! functions themselves are resolved at run time: see `super::library`.

use std::os::raw::{c_char, c_int, c_uchar};

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
