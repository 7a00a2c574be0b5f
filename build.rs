//! Finds the system libtpms with pkg-config (Debian: `libtpms-dev`) and tells the code its
//! soname, which the daemon opens at run time (`src/libtpms/library.rs`: loading it and
//! libcrypto is most of a start-up, so it happens after the sockets are bound). The
//! library is not linked: only the runtime package (Debian: `libtpms0`) is needed to run.

use std::path::{Path, PathBuf};

fn main() {
    let library = match pkg_config::Config::new()
        .atleast_version("0.9")
        .cargo_metadata(false)
        .probe("libtpms")
    {
        Ok(library) => library,
        Err(err) => panic!(
            "libtpms was not found with pkg-config ({err}); install it (Debian: apt-get install libtpms-dev)"
        ),
    };
    let dirs: Vec<PathBuf> = library
        .link_paths
        .iter()
        .cloned()
        .chain(default_library_dirs())
        .collect();
    let Some(soname) = dirs.iter().find_map(|dir| soname_in(dir)) else {
        panic!(
            "libtpms.so was not found in {dirs:?} (pkg-config's link paths and the default library directories)"
        );
    };
    println!("cargo:rustc-env=VTPM_LIBTPMS_SONAME={soname}");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
}

/// The directory of the system's libraries, where pkg-config gives no `-L`.
fn default_library_dirs() -> Vec<PathBuf> {
    let multiarch = format!(
        "/usr/lib/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    [
        multiarch.as_str(),
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The soname of the libtpms in `dir`: the `libtpms.so.N` that is the same file as the
/// development link `libtpms.so` (the runtime package ships only `libtpms.so.N`).
fn soname_in(dir: &Path) -> Option<String> {
    let development = std::fs::canonicalize(dir.join("libtpms.so")).ok()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let major = name.strip_prefix("libtpms.so.")?;
        let same_file = std::fs::canonicalize(entry.path()).ok()? == development;
        (same_file && !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
            .then_some(name)
    })
}
