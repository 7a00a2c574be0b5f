//! `--chroot`, `--runas` and capabilities.

use std::ffi::CString;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, User};

use super::SandboxError;

/// `--chroot <path>`: the daemon sees only that tree from now on. Libraries (libtpms,
/// libcrypto) are already loaded, and randomness comes from getrandom(2), so nothing
/// needs to exist inside.
pub fn enter_chroot(path: &Path) -> Result<(), SandboxError> {
    let fail = |source| SandboxError::Chroot {
        path: path.to_owned(),
        source,
    };
    nix::unistd::chroot(path).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// `--runas <user>`: a name switches to that user's uid, primary group and groups; a
/// number is used as uid and gid, with no supplementary groups.
pub fn switch_user(user: &str) -> Result<(), SandboxError> {
    let step = |step: &'static str| {
        move |source| SandboxError::SwitchUser {
            user: user.to_owned(),
            step,
            source,
        }
    };
    let (uid, gid, groups_of) = if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
        let id: u32 = user
            .parse()
            .map_err(|_| SandboxError::UidOutOfRange(user.to_owned()))?;
        (Uid::from_raw(id), Gid::from_raw(id), None)
    } else {
        let entry = User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| SandboxError::NoSuchUser(user.to_owned()))?;
        (entry.uid, entry.gid, Some(entry.name))
    };
    match groups_of {
        Some(name) => {
            let name = CString::new(name).map_err(|_| SandboxError::NoSuchUser(user.to_owned()))?;
            nix::unistd::initgroups(&name, gid).map_err(step("initgroups"))?;
        }
        None => nix::unistd::setgroups(&[gid]).map_err(step("setgroups"))?,
    }
    nix::unistd::setgid(gid).map_err(step("setgid"))?;
    nix::unistd::setuid(uid).map_err(step("setuid"))
}

/// Drops every capability: once its sockets are bound the daemon needs none (it only
/// reads and writes its own state files). The bounding set is cleared too when allowed,
/// so nothing can regain them.
pub fn drop_capabilities() -> Result<(), SandboxError> {
    let fail = SandboxError::Capabilities;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(fail)? {
        caps::clear(None, CapSet::Bounding).map_err(fail)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(fail)?;
    }
    Ok(())
}
