//! `--vtpm-proxy`: asks the Linux vTPM proxy driver (`/dev/vtpmx`) for a new TPM device
//! whose commands arrive on the returned descriptor.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::fd::take_inherited;

const VTPMX: &str = "/dev/vtpmx";
/// `VTPM_PROXY_FLAG_TPM2`.
const FLAG_TPM2: u32 = 1;

/// `struct vtpm_proxy_new_dev` of `<linux/vtpm_proxy.h>`.
#[repr(C)]
#[derive(Default)]
struct NewDevice {
    flags: u32,
    tpm_num: u32,
    fd: u32,
    major: u32,
    minor: u32,
}

// VTPM_PROXY_IOC_NEW_DEV = _IOWR(0xa1, 0x00, struct vtpm_proxy_new_dev)
nix::ioctl_readwrite!(vtpm_proxy_new_dev, 0xa1, 0x00, NewDevice);

/// A TPM device created by the proxy driver.
pub struct ProxyDevice {
    pub fd: OwnedFd,
    pub tpm_num: u32,
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("Could not open {VTPMX}")]
    Open(#[source] io::Error),
    #[error("the vTPM proxy driver refused to create a device")]
    Create(#[source] nix::Error),
    #[error("the vTPM proxy driver returned an unusable descriptor")]
    Descriptor(#[source] io::Error),
}

pub fn create(tpm2: bool) -> Result<ProxyDevice, ProxyError> {
    let vtpmx = OpenOptions::new()
        .read(true)
        .write(true)
        .open(VTPMX)
        .map_err(ProxyError::Open)?;
    let mut request = NewDevice {
        flags: if tpm2 { FLAG_TPM2 } else { 0 },
        ..NewDevice::default()
    };
    // SAFETY: the ioctl number and structure layout are those of <linux/vtpm_proxy.h>;
    // the kernel fills `request` in place.
    unsafe { vtpm_proxy_new_dev(vtpmx.as_raw_fd(), &mut request) }.map_err(ProxyError::Create)?;
    let fd = take_inherited(request.fd as i32).map_err(ProxyError::Descriptor)?;
    Ok(ProxyDevice {
        fd,
        tpm_num: request.tpm_num,
        major: request.major,
        minor: request.minor,
    })
}
