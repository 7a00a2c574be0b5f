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

/// The user `--runas` names, looked up before `--chroot` hides the user database.
#[derive(Debug)]
pub struct Identity {
    name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// Looks up `--runas <user>`: a name gives that user's uid, primary group and groups; a
/// number is used as uid and gid, with no supplementary groups (as swtpm).
pub fn resolve_user(user: &str) -> Result<Identity, SandboxError> {
    if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
        let id: u32 = user
            .parse()
            .map_err(|_| SandboxError::UidOutOfRange(user.to_owned()))?;
        let (uid, gid) = (Uid::from_raw(id), Gid::from_raw(id));
        return Ok(Identity {
            name: user.to_owned(),
            uid,
            gid,
            groups: vec![gid],
        });
    }
    let entry = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| SandboxError::NoSuchUser(user.to_owned()))?;
    let name =
        CString::new(entry.name.clone()).map_err(|_| SandboxError::NoSuchUser(user.to_owned()))?;
    let groups =
        nix::unistd::getgrouplist(&name, entry.gid).map_err(|source| SandboxError::SwitchUser {
            user: user.to_owned(),
            step: "getgrouplist",
            source,
        })?;
    Ok(Identity {
        name: entry.name,
        uid: entry.uid,
        gid: entry.gid,
        groups,
    })
}

/// Becomes `identity`: groups first, then the gid, then the uid (after which the
/// process may no longer change any of them).
pub fn switch_user(identity: &Identity) -> Result<(), SandboxError> {
    let step = |step: &'static str| {
        move |source| SandboxError::SwitchUser {
            user: identity.name.clone(),
            step,
            source,
        }
    };
    nix::unistd::setgroups(&identity.groups).map_err(step("setgroups"))?;
    nix::unistd::setgid(identity.gid).map_err(step("setgid"))?;
    nix::unistd::setuid(identity.uid).map_err(step("setuid"))
}

/// What a daemon that still runs as root keeps: access to files it does not own (a
/// state directory owned by `tss`, libvirt's runtime directories). Nothing else: no
/// network, process, mount or ownership privileges.
const KEPT_AS_ROOT: [Capability; 2] = [Capability::CAP_DAC_OVERRIDE, Capability::CAP_FOWNER];

/// Drops every capability the daemon does not need once its sockets are bound: all of
/// them for an ordinary user (libvirt's `tss`), all but file access for root. The
/// bounding set is cleared too when allowed, so nothing can be regained.
pub fn drop_capabilities() -> Result<(), SandboxError> {
    let fail = SandboxError::Capabilities;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(fail)? {
        clear_bounding_set().map_err(fail)?;
    }
    let kept: caps::CapsHashSet = if nix::unistd::geteuid().is_root() {
        KEPT_AS_ROOT.into_iter().collect()
    } else {
        caps::CapsHashSet::new()
    };
    caps::clear(None, CapSet::Ambient).map_err(fail)?;
    caps::clear(None, CapSet::Inheritable).map_err(fail)?;
    caps::set(None, CapSet::Effective, &kept).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(fail)
}

/// Empties the bounding set: one PR_CAPBSET_DROP for each capability the kernel knows
/// (`/proc/sys/kernel/cap_last_cap`). `caps::clear` reads each capability before
/// dropping it: twice the system calls (82 instead of 41 for root), on the path to the
/// first control answer. Without procfs (a chroot may have none) it is used all the same.
fn clear_bounding_set() -> Result<(), caps::errors::CapsError> {
    match caps::runtime::procfs_all_supported(None) {
        Ok(known) => known
            .into_iter()
            .try_for_each(|cap| caps::drop(None, CapSet::Bounding, cap)),
        Err(_) => caps::clear(None, CapSet::Bounding),
    }
}
