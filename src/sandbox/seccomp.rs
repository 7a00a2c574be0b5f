//! `--seccomp action=kill|log|none`: an allow-list of the system calls the daemon makes
//! once it serves. swtpm denies a list of dangerous calls and allows the rest; vtpm
//! allows only what it uses, so a compromised libtpms can do little more than answer
//! TPM commands and write its state files.
//!
//! The filter is installed for all threads after start-up (sockets bound, files opened,
//! threads started), so the calls only start-up needs (socket, bind, clone, execve, ...)
//! are not on the list. The test suite runs every daemon with the filter on: a call
//! missing here fails a test, not a VM.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use super::SandboxError;

/// What happens to a system call that is not on the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Kill the process (swtpm's default too).
    #[default]
    Kill,
    /// Allow it, but have the kernel log it (to find what a new code path needs).
    Log,
    /// Install no filter.
    None,
}

/// The calls the running daemon makes, grouped by why.
const ALLOWED: &[libc::c_long] = &[
    // Both channels: sockets and pipes, waiting, passing descriptors.
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_ppoll,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_close,
    libc::SYS_fcntl,
    // State files: open, read, write, flush, rename, remove, lock (fcntl), permissions.
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_fstatfs,
    libc::SYS_fallocate,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_ftruncate,
    // Memory (malloc in Rust, libtpms and OpenSSL; a new malloc arena asks how many CPUs
    // there are).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_sched_getaffinity,
    // Threads and locks between the two daemon threads.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    // Time: lock retries sleep; OpenSSL and logging read clocks (outside the vDSO too).
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // Randomness for libtpms (OpenSSL's DRBG).
    libc::SYS_getrandom,
    // Signals (SIGTERM/SIGINT handling) and leaving: Rust's exit path tears down the
    // signal stack; abort() raises SIGABRT with tgkill.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Calls that exist only on some architectures (newer ones have only the *at forms).
#[cfg(target_arch = "x86_64")]
const ALLOWED_LEGACY: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_rename,
    libc::SYS_unlink,
    libc::SYS_chmod,
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_LEGACY: &[libc::c_long] = &[];

fn target_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// Compiles the allow-list into a BPF program for `action`.
pub fn filter(action: Action) -> Result<Option<BpfProgram>, SandboxError> {
    let mismatch = match action {
        Action::Kill => SeccompAction::KillProcess,
        Action::Log => SeccompAction::Log,
        Action::None => return Ok(None),
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_LEGACY)
        .map(|&call| (call, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, target_arch())
        .map_err(SandboxError::SeccompFilter)?;
    let program: BpfProgram = filter.try_into().map_err(SandboxError::SeccompFilter)?;
    Ok(Some(program))
}

/// Installs the filter for every thread of the process.
pub fn install(action: Action) -> Result<(), SandboxError> {
    match filter(action)? {
        Some(program) => {
            seccompiler::apply_filter_all_threads(&program).map_err(SandboxError::Seccomp)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        assert!(filter(Action::Kill).unwrap().is_some());
        assert!(filter(Action::Log).unwrap().is_some());
        assert!(filter(Action::None).unwrap().is_none());
    }

    #[test]
    fn list_has_no_duplicates() {
        let mut calls: Vec<_> = ALLOWED.iter().chain(ALLOWED_LEGACY).collect();
        let before = calls.len();
        calls.sort();
        calls.dedup();
        assert_eq!(calls.len(), before);
    }
}
