//! glibc malloc settings for a small, long-lived daemon (libc calls nix lacks).

/// One malloc arena for the whole process. glibc gives each thread that allocates its
/// own arena; the data thread's (where libtpms and OpenSSL allocate for every TPM
/// command) kept ~48 KiB of its own beside the main heap. The daemon's two threads
/// rarely allocate at the same time, so they lose nothing by sharing one. Call it
/// before any thread is started.
pub fn use_one_arena() {
    // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX takes any positive
    // count, and glibc applies it to arenas created from now on.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}
