//! Per-user configuration (`--create-config-files`, cli.md §11.1) and the config-file
//! search order (§11.4): `--config`, else `$XDG_CONFIG_HOME` (or `~/.config`), else
//! `/etc`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::options::ConfigFilesFlags;
use crate::localca::store::current_user;

pub const SETUP_CONF: &str = "swtpm_setup.conf";
pub const LOCALCA_CONF: &str = "swtpm-localca.conf";
pub const LOCALCA_OPTIONS: &str = "swtpm-localca.options";
pub const SYSCONFDIR: &str = "/etc";

/// The user's configuration directory: `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn user_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".config"))
}

/// The user's `name` if it is readable, else the system one if it exists.
pub fn find_config(name: &str) -> Option<PathBuf> {
    user_config_dir()
        .map(|dir| dir.join(name))
        .filter(|path| fs::File::open(path).is_ok())
        .or_else(|| Some(Path::new(SYSCONFDIR).join(name)).filter(|path| path.exists()))
}

#[derive(Debug, thiserror::Error)]
pub enum UserConfError {
    #[error(
        "neither XDG_CONFIG_HOME nor HOME is set, so there is no place for the configuration files"
    )]
    NoConfigDir,
    #[error(
        "running as root, these files would take the place of those in /etc for root; add 'root' (--create-config-files root) if that is wanted"
    )]
    NeedsRootFlag,
    #[error("{} already exists; add 'overwrite' to replace it or 'skip-if-exist' to keep it", .0.display())]
    Exists(PathBuf),
    #[error("user {user} cannot write {}", path.display())]
    Write {
        path: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
}

/// Writes swtpm_setup.conf, swtpm-localca.conf and swtpm-localca.options for this user,
/// with the local CA in `<configdir>/var/lib/swtpm-localca`. Returns the files written
/// (none when `skip_if_exist` found one).
pub fn create_config_files(flags: ConfigFilesFlags) -> Result<Vec<PathBuf>, UserConfError> {
    if nix::unistd::geteuid().is_root() && !flags.root {
        return Err(UserConfError::NeedsRootFlag);
    }
    let dir = user_config_dir().ok_or(UserConfError::NoConfigDir)?;
    let files = [SETUP_CONF, LOCALCA_CONF, LOCALCA_OPTIONS].map(|name| dir.join(name));
    if !flags.overwrite
        && let Some(existing) = files.iter().find(|path| path.exists())
    {
        return if flags.skip_if_exist {
            Ok(Vec::new())
        } else {
            Err(UserConfError::Exists(existing.clone()))
        };
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UserConfError::Write {
            path,
            user: current_user(),
            source,
        }
    };
    let ca_dir = dir.join("var/lib/swtpm-localca");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&ca_dir)
        .map_err(write_err(&ca_dir))?;
    let [setup_conf, localca_conf, localca_options] = &files;
    let contents = [
        (
            setup_conf,
            format!(
                "# swtpm_setup configuration of this user.\n\
                 # vtpm's swtpm_setup issues certificates with its built-in CA whenever\n\
                 # the tool is called swtpm_localca.\n\
                 create_certs_tool = swtpm_localca\n\
                 create_certs_tool_config = {}\n\
                 create_certs_tool_options = {}\n\
                 # PCR banks to activate (comma-separated, no spaces)\n\
                 active_pcr_banks = sha256\n",
                localca_conf.display(),
                localca_options.display()
            ),
        ),
        (
            localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca_dir.display()
            ),
        ),
        (localca_options, platform_options()),
    ];
    for (path, text) in contents {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(path)
            .map_err(write_err(path))?;
        file.write_all(text.as_bytes()).map_err(write_err(path))?;
    }
    Ok(files.to_vec())
}

/// The platform a per-user TPM runs on, for its platform certificate: this kernel.
fn platform_options() -> String {
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().replace(char::is_whitespace, "_"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    format!(
        "--platform-manufacturer {}\n--platform-model {}\n--platform-version {}\n",
        field(|u| u.sysname()),
        field(|u| u.machine()),
        field(|u| u.release()),
    )
}
