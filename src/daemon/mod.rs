//! The `swtpm socket|chardev` daemon: start-up in swtpm's order (cli.md §7), then two
//! threads — the data channel's (which runs TPM commands) and the main thread (control
//! channel, signals, exit).
//!
//! A plain blocking design rather than an async runtime: a daemon serves one VM with at
//! most one control and one data client at a time, so two threads cover it; tokio would
//! add start-up time, memory and a hand-off on every TPM command for no gain here.

mod control;
mod daemonize;
mod data;
mod keys;
mod malloc;
mod pidfile;
mod polling;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};

use crate::cli::{
    self, CliError, CtrlChannel, DataArg, FlagOptions, Frontend, FrontendArgs, ListenSpec,
    LogOptions, LogTarget, ServerOptions, StartupRequest, StateBackendSpec, TpmStateOptions,
    options,
};
use crate::ctrl::handler::{ControlHandler, lock};
use crate::ctrl::protocol::caps;
use crate::emulator::{Behaviour, Emulator, Keys};
use crate::io::fd::take_inherited;
use crate::io::socket::{Listener, SocketError, Stream};
use crate::io::vtpm_proxy::{self, ProxyError};
use crate::libtpms::{LibtpmsError, StateKind, Tpm, library};
use crate::sandbox::{SandboxError, privileges, seccomp};
use crate::state::dir::DirStore;
use crate::state::file::LinearStore;
use crate::state::{Store, StoreError};
use crate::tpm::{self, StartupType, TpmVersion};
use crate::{log, log_error, log_info};
use control::{ControlLoop, ControlSource};
use daemonize::{DaemonizeError, Readiness, daemonize};
use data::{DataChannel, DataSlot, DataSource};
use keys::{KeyLoadError, load_key};
use pidfile::{PidFile, PidFileError};

/// The version vtpm reports (`--version`, `--print-capabilities`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error("{0} is not supported by this build of vtpm yet")]
    NotSupported(String),
    #[error("Could not open logfile {path} for writing")]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--log fd={fd} is not an open descriptor")]
    LogFd {
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Libtpms(#[from] LibtpmsError),
    #[error("could not set up the control channel")]
    Ctrl(#[source] SocketError),
    #[error("could not set up the data channel")]
    Server(#[source] SocketError),
    #[error("Cannot open {path}")]
    Chardev {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the data channel descriptor {fd} cannot be used")]
    DataFd {
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    VtpmProxy(#[from] ProxyError),
    #[error("Error: Missing character device or file descriptor")]
    MissingChardev,
    #[error("Error: Cannot accept file descriptors with values 0, 1, or 2")]
    StandardFd,
    #[error("Error: --tpmstate option is required for --print-states")]
    PrintStatesNeedsState,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyLoadError),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error("Error: Could not initialize libtpms.")]
    StartTpm,
    #[error("the TPM did not accept the Startup command (response code {0:#x})")]
    Startup(u32),
    #[error(transparent)]
    Daemonize(#[from] DaemonizeError),
    #[error("could not set up signal handling")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

pub use crate::log::error_chain;

/// Asks the main thread to end the daemon with a status; readable by its poll.
pub struct ExitSignal {
    status: AtomicI32,
    wake: UnixStream,
}

impl ExitSignal {
    pub fn request(&self, status: i32) {
        self.status.store(status, Ordering::SeqCst);
        let _ = (&self.wake).write(&[1]);
    }
}

/// Files the daemon created and removes when it ends, however it ends.
#[derive(Default)]
struct Cleanup {
    sockets: Vec<PathBuf>,
    pid_file: Option<PidFile>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pid_file) = &self.pid_file {
            pid_file.remove();
        }
    }
}

/// How start-up ended before serving.
enum Early {
    /// A `--print-*` request was answered.
    Done,
    /// Start-up ended without an error, with this status (startup-deactivated on TPM 2).
    Quit(i32),
    Failed(DaemonError),
}

impl<E: Into<DaemonError>> From<E> for Early {
    fn from(err: E) -> Early {
        Early::Failed(err.into())
    }
}

/// Runs `swtpm socket|chardev` and returns the process's exit status.
pub fn run(args: FrontendArgs) -> i32 {
    malloc::use_one_arena();
    let readiness = if args.daemon {
        match daemonize() {
            Ok(readiness) => Some(readiness),
            Err(err) => return fail(&err.into()),
        }
    } else {
        None
    };
    let mut cleanup = Cleanup::default();
    match prepare(args, &mut cleanup) {
        Ok(daemon) => daemon.serve(readiness),
        Err(Early::Done) => 0,
        Err(Early::Quit(status)) => status,
        Err(Early::Failed(err)) => fail(&err),
    }
}

fn fail(err: &DaemonError) -> i32 {
    log_error!("{}", error_chain(err));
    1
}

/// Everything start-up produced: ready to serve.
struct Daemon {
    emulator: Arc<Mutex<Emulator>>,
    control: ControlSource,
    data: DataSource,
    data_slot: Arc<DataSlot>,
    ctrl_terminate: bool,
    data_terminate: bool,
    startup: Option<StartupType>,
    seccomp: seccomp::Action,
    /// Readable once SIGTERM or SIGINT arrived (the write end is the handlers').
    wake: (UnixStream, UnixStream),
    cleanup: Cleanup,
}

fn prepare(args: FrontendArgs, cleanup: &mut Cleanup) -> Result<Daemon, Early> {
    if let Some((option, _)) = args.not_yet_supported.first() {
        return Err(DaemonError::NotSupported(option.to_string()).into());
    }
    // As swtpm: chroot, then runas, then the log (cli.md §7). The user is looked up
    // before the chroot hides /etc/passwd.
    let identity = args
        .runas
        .as_deref()
        .map(privileges::resolve_user)
        .transpose()?;
    if let Some(root) = &args.chroot {
        // libtpms is opened at run time (see `Daemon::serve`): inside the chroot it
        // would not be found.
        library::load().map_err(LibtpmsError::from)?;
        privileges::enter_chroot(root)?;
    }
    if let Some(identity) = &identity {
        privileges::switch_user(identity)?;
    }
    if let Some(log) = &args.log {
        configure_log(&options::parse_log(log)?)?;
    }
    let version = if args.tpm2 {
        TpmVersion::V2
    } else {
        TpmVersion::V1_2
    };
    if args.print_capabilities {
        print_capabilities(args.tpm2)?;
        return Err(Early::Done);
    }
    let (control, ctrl_terminate) = open_control(&args, cleanup)?;
    let frontend = args.frontend.unwrap_or(Frontend::Socket);
    let mut vtpm_proxy_flags = false;
    let (data, data_slot) = match frontend {
        Frontend::Socket => open_socket_data(&args, cleanup)?,
        Frontend::Chardev => {
            let (stream, from_proxy) = open_chardev(&args, version)?;
            vtpm_proxy_flags = from_proxy;
            (DataSource::Connected(stream), DataSlot::taken())
        }
    };

    let state = match &args.tpmstate {
        Some(text) => Some(options::parse_tpmstate(text)?),
        None => std::env::var_os("TPM_PATH").map(|dir| TpmStateOptions {
            backend: StateBackendSpec::Dir(PathBuf::from(dir)),
            mode: None,
            lock: None,
        }),
    };
    if args.print_states {
        let Some(state) = args.tpmstate.as_ref().and(state.as_ref()) else {
            return Err(DaemonError::PrintStatesNeedsState.into());
        };
        print_states(&mut open_store(state, version)?)?;
        return Err(Early::Done);
    }

    // Keys are read here, after the sockets exist and before the pid file (cli.md §7).
    let keys = Keys {
        state: load_key_option(args.key.as_deref())?,
        migration: load_key_option(args.migration_key.as_deref())?,
    };
    let pid = args.pid.as_deref().map(options::parse_pid).transpose()?;
    let locality = args
        .locality
        .as_deref()
        .map(options::parse_locality)
        .transpose()?
        .unwrap_or_default();
    let mut flags = args
        .flags
        .as_deref()
        .map(options::parse_flags)
        .transpose()?
        .unwrap_or_default();
    if vtpm_proxy_flags {
        apply_vtpm_proxy_defaults(&mut flags);
    }
    let migration = args
        .migration
        .as_deref()
        .map(options::parse_migration)
        .transpose()?
        .unwrap_or_default();
    let seccomp = args
        .seccomp
        .as_deref()
        .map(options::parse_seccomp)
        .transpose()?
        .unwrap_or_default();
    if args.fd.is_some_and(|fd| (0..=2).contains(&fd)) {
        return Err(DaemonError::StandardFd.into());
    }
    // Signals are caught from before the pid file exists: whoever waits for it (as
    // swtpm_setup does) may send SIGTERM at once, and the daemon must still clean up.
    let wake = UnixStream::pair().map_err(DaemonError::Signals)?;
    register_signals(&wake.1)?;
    if let Some(pid) = &pid {
        cleanup.pid_file = Some(PidFile::write(pid)?);
    }

    let store = state
        .as_ref()
        .map(|state| open_store(state, version))
        .transpose()?;
    let behaviour = Behaviour {
        reject_locality_4: locality.reject_locality_4,
        allow_set_locality: locality.allow_set_locality || vtpm_proxy_flags,
        disable_auto_shutdown: flags.disable_auto_shutdown,
        incoming_migration: migration.incoming,
        release_lock_outgoing: migration.release_lock_outgoing,
    };
    let mut emulator = Emulator::new(version, store, keys, behaviour);
    let startup = match flags.startup {
        StartupRequest::Send(kind) => Some(kind),
        StartupRequest::Unspecified | StartupRequest::Nothing => None,
    };
    if startup == Some(StartupType::Deactivated) && version == TpmVersion::V2 {
        // swtpm exits with status 0 here, after the sockets and pid file were set up.
        log_error!("TPM 2 does not support startup deactivated.");
        return Err(Early::Quit(0));
    }
    let start_now =
        flags.not_need_init || startup.is_some() || (args.print_info.is_some() && state.is_some());
    if start_now && emulator.start().is_err() {
        return Err(DaemonError::StartTpm.into());
    }
    if let Some(info_flags) = args.print_info {
        let text = emulator.info_text(info_flags).unwrap_or_default();
        println!("{text}");
        emulator.stop();
        return Err(Early::Done);
    }
    // Sockets are bound and files open: no capability is needed from here on.
    privileges::drop_capabilities()?;
    Ok(Daemon {
        emulator: Arc::new(Mutex::new(emulator)),
        control,
        data,
        data_slot: Arc::new(data_slot),
        ctrl_terminate,
        data_terminate: args.terminate,
        startup,
        seccomp,
        wake,
        cleanup: std::mem::take(cleanup),
    })
}

/// `--key` or `--migration-key`: parses the option and reads the key it names.
fn load_key_option(text: Option<&str>) -> Result<Option<crate::state::key::AesKey>, DaemonError> {
    let Some(text) = text else {
        return Ok(None);
    };
    Ok(Some(load_key(&options::parse_key(text)?)?))
}

fn configure_log(options: &LogOptions) -> Result<(), DaemonError> {
    let prefix = options.prefix.clone().unwrap_or_default();
    let destination = match &options.target {
        LogTarget::Disabled => log::Destination::Nowhere,
        LogTarget::Stderr => log::Destination::Stderr,
        LogTarget::File(path) => {
            let append_or_truncate = if options.truncate {
                libc::O_TRUNC
            } else {
                libc::O_APPEND
            };
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | append_or_truncate)
                .open(path)
                .map_err(|source| DaemonError::LogFile {
                    path: path.clone(),
                    source,
                })?;
            log::Destination::File(file)
        }
        LogTarget::Fd(fd) => {
            let file = File::from(
                take_inherited(*fd).map_err(|source| DaemonError::LogFd { fd: *fd, source })?,
            );
            log::Destination::File(file)
        }
    };
    log::configure(destination, options.level.max(1), prefix);
    Ok(())
}

fn print_capabilities(tpm2: bool) -> Result<(), DaemonError> {
    let rsa_sizes = if tpm2 {
        let mut tpm = Tpm::acquire(TpmVersion::V2)?;
        tpm.info(TPMLIB_INFO_TPMFEATURES)
            .map(|json| rsa_key_sizes(&json))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    println!(
        "{}",
        cli::capabilities::capabilities_json(tpm2, &rsa_sizes, VERSION)
    );
    Ok(())
}

/// `TPMLIB_INFO_TPMFEATURES`: libtpms describes the RSA key sizes it supports.
const TPMLIB_INFO_TPMFEATURES: u32 = 4;

/// The numbers in `"RSAKeySizes":[1024,2048,3072]` of libtpms' features JSON.
fn rsa_key_sizes(features_json: &str) -> Vec<u32> {
    let Some(start) = features_json.find("\"RSAKeySizes\":[") else {
        return Vec::new();
    };
    let list = &features_json[start + "\"RSAKeySizes\":[".len()..];
    let list = &list[..list.find(']').unwrap_or(0)];
    list.split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn open_control(
    args: &FrontendArgs,
    cleanup: &mut Cleanup,
) -> Result<(ControlSource, bool), Early> {
    let Some(text) = &args.ctrl else {
        return Ok((ControlSource::None, false));
    };
    let ctrl = options::parse_ctrl(text)?;
    let source = match &ctrl.channel {
        CtrlChannel::Listen(spec) => {
            let listener = Listener::open(spec, "control channel").map_err(DaemonError::Ctrl)?;
            cleanup
                .sockets
                .extend(listener.created_path().map(PathBuf::from));
            ControlSource::Listener(listener)
        }
        CtrlChannel::UnixClientFd(fd) => {
            let fd = crate::io::socket::take_socket(*fd, "UnixIO client control channel")
                .map_err(DaemonError::Ctrl)?;
            ControlSource::Connected(Stream::Unix(fd.into()))
        }
    };
    Ok((source, ctrl.terminate))
}

fn open_socket_data(
    args: &FrontendArgs,
    cleanup: &mut Cleanup,
) -> Result<(DataSource, DataSlot), Early> {
    if let Some(fd) = args.fd {
        return Ok((DataSource::Connected(connected_fd(fd)?), DataSlot::taken()));
    }
    let server = match &args.server {
        None => return Ok((DataSource::FromControlChannel, DataSlot::default())),
        Some(DataArg::Port(port)) => ServerOptions::Listen {
            spec: ListenSpec::Tcp {
                bindaddr: std::net::Ipv4Addr::LOCALHOST.into(),
                port: *port,
                ifname: None,
            },
            disconnect: true,
        },
        Some(DataArg::Server(text)) => {
            options::parse_server(text, std::env::var("TPM_PORT").ok().as_deref())?
        }
    };
    let source = match server {
        ServerOptions::Listen { spec, disconnect } => {
            let listener = Listener::open(&spec, "server").map_err(DaemonError::Server)?;
            cleanup
                .sockets
                .extend(listener.created_path().map(PathBuf::from));
            DataSource::Listener {
                listener,
                disconnect,
            }
        }
        ServerOptions::ConnectedFd(fd) => {
            let owned =
                crate::io::socket::take_socket(fd, "TCP socket").map_err(DaemonError::Server)?;
            DataSource::Connected(
                Stream::from_owned(owned).map_err(|source| DaemonError::DataFd { fd, source })?,
            )
        }
    };
    Ok((source, DataSlot::taken()))
}

fn connected_fd(fd: i32) -> Result<Stream, DaemonError> {
    take_inherited(fd)
        .and_then(Stream::from_owned)
        .map_err(|source| DaemonError::DataFd { fd, source })
}

/// The chardev front end's data channel; `true` when it is a vTPM proxy device.
fn open_chardev(args: &FrontendArgs, version: TpmVersion) -> Result<(Stream, bool), DaemonError> {
    if args.vtpm_proxy {
        let device = vtpm_proxy::create(version == TpmVersion::V2)?;
        println!(
            "New TPM device: /dev/tpm{} (major/minor = {}/{})",
            device.tpm_num, device.major, device.minor
        );
        return Ok((Stream::File(device.fd.into()), true));
    }
    if let Some(fd) = args.fd {
        return Ok((connected_fd(fd)?, false));
    }
    let Some(path) = &args.chardev else {
        return Err(DaemonError::MissingChardev);
    };
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| DaemonError::Chardev {
            path: path.clone(),
            source,
        })?;
    Ok((Stream::File(device), false))
}

/// `--vtpm-proxy` starts the TPM itself (the kernel expects a started TPM) unless
/// `--flags` says otherwise, and lets the kernel switch localities in-band.
fn apply_vtpm_proxy_defaults(flags: &mut FlagOptions) {
    flags.not_need_init = true;
    if flags.startup == StartupRequest::Unspecified {
        flags.startup = StartupRequest::Send(StartupType::Clear);
    }
}

/// The storage `--tpmstate` names. Nothing is opened yet: storage is first touched when
/// the TPM starts (or for `--print-states`). Locking is on by default for a directory
/// and off for a linear file, as in swtpm.
fn open_store(state: &TpmStateOptions, version: TpmVersion) -> Result<Store, DaemonError> {
    match &state.backend {
        StateBackendSpec::Dir(dir) => Ok(Store::Dir(DirStore::new(
            dir.clone(),
            version,
            state.mode,
            state.lock.unwrap_or(true),
        ))),
        StateBackendSpec::File(path) => Ok(Store::Linear(LinearStore::new(
            path.clone(),
            state.mode,
            state.lock.unwrap_or(false),
        ))),
        StateBackendSpec::Unsupported(uri) => {
            Err(StoreError::UnsupportedBackend { uri: uri.clone() }.into())
        }
    }
}

/// `--print-states`: which blobs exist and their stored sizes, on one line. The
/// storage is not locked (swtpm 0.10 does not either): it may be in use.
fn print_states(store: &mut Store) -> Result<(), DaemonError> {
    let mut entries = Vec::new();
    for kind in StateKind::ALL {
        if let Some(size) = store.stored_size(kind)? {
            entries.push(format!(
                " {{\"name\": \"{}\", \"size\": {size}}}",
                kind.name()
            ));
        }
    }
    // swtpm's exact spacing: `[]` when empty, else `[ {...}, {...} ]`.
    let list = match entries.is_empty() {
        true => "[]".to_owned(),
        false => format!("[{} ]", entries.join(",")),
    };
    let mut out = io::stdout().lock();
    let _ = write!(out, "{{ \"type\": \"swtpm\", \"states\": {list} }}");
    let _ = out.flush();
    Ok(())
}

/// The control capabilities this daemon reports (CMD_GET_CAPABILITY).
fn capabilities(version: TpmVersion) -> u32 {
    let all = (caps::LOCK_STORAGE << 1) - 1;
    match version {
        TpmVersion::V2 => all,
        // The TCG send-command prefix is a TPM 2 feature.
        TpmVersion::V1_2 => all & !caps::SEND_COMMAND_HEADER,
    }
}

impl Daemon {
    fn serve(self, readiness: Option<Readiness>) -> i32 {
        let Daemon {
            emulator,
            control,
            data,
            data_slot,
            ctrl_terminate,
            data_terminate,
            startup,
            seccomp,
            wake: (wake_read, wake_write),
            cleanup,
        } = self;
        if let Some(readiness) = readiness {
            readiness.ready();
        }
        if let Some(kind) = startup {
            if let Err(err) = send_startup(&emulator, kind) {
                return fail(&err);
            }
        }
        let (version, config_flags) = {
            let emu = lock(&emulator);
            (emu.version(), emu.config_flags())
        };
        let exit = Arc::new(ExitSignal {
            status: AtomicI32::new(0),
            wake: wake_write,
        });
        let channel = DataChannel {
            emulator: Arc::clone(&emulator),
            slot: Arc::clone(&data_slot),
            exit: Arc::clone(&exit),
            terminate: data_terminate,
        };
        // The main thread goes on to serve the control channel at once; the data thread
        // first installs the seccomp filter (for all threads), then opens libtpms, then
        // serves the data channel. Both take long (~0.2 ms and ~1 ms here) and need
        // no control client, so they are off the path to the first control answer.
        // Meanwhile the control channel answers what needs no TPM; whatever needs
        // libtpms waits for the data thread's `Reservation`, so libtpms' code runs
        // only under the filter (as does every byte of the data channel).
        let reservation = library::reserve();
        let spawned = std::thread::Builder::new()
            .name("data".into())
            .spawn(move || {
                if enter_sandbox_and_load(seccomp, reservation) {
                    channel.run(data);
                } else {
                    channel.exit.request(1);
                }
            });
        if let Err(err) = spawned {
            return fail(&DaemonError::Signals(err));
        }
        let mut control_loop = ControlLoop {
            handler: ControlHandler::new(
                Arc::clone(&emulator),
                capabilities(version),
                config_flags,
            ),
            data: &*data_slot,
            terminate: ctrl_terminate,
            wake: wake_read,
        };
        let status = control_loop
            .run(control)
            .unwrap_or_else(|| exit.status.load(Ordering::SeqCst));
        // The TPM stops under the lock: a command in flight completes and is stored first.
        let mut emu = lock(&emulator);
        emu.stop();
        log_info!("vtpm exiting with status {status}");
        drop(cleanup);
        // Exit while holding the emulator, so that the data thread cannot start another
        // TPM command on the stopped TPM.
        std::process::exit(status)
    }
}

/// On the data thread, before it serves: the seccomp filter (a thread's own start-up —
/// robust futex list, rseq, its name — needs calls the filter does not allow, so it can
/// only go on once the threads run), then libtpms. `false`: the daemon cannot serve.
fn enter_sandbox_and_load(seccomp: seccomp::Action, reservation: library::Reservation) -> bool {
    if let Err(err) = seccomp::install(seccomp) {
        log_error!("{}", error_chain(&DaemonError::from(err)));
        return false;
    }
    if let Err(err) = reservation.load() {
        log_error!(
            "{}",
            error_chain(&DaemonError::from(LibtpmsError::from(err)))
        );
        return false;
    }
    true
}

/// SIGTERM and SIGINT wake the main thread through `wake`.
///
/// They are held back while the handlers are registered: signal-hook installs its
/// handler before it records the action, and a signal that came in between ran no action
/// and was lost (the daemon then served on: a SIGTERM sent as soon as the control socket
/// answered went unheeded about once in 200 starts). A held signal is delivered when they
/// are unblocked, to the registered action. Only the main thread exists at this point.
fn register_signals(wake: &UnixStream) -> Result<(), DaemonError> {
    let mut held = SigSet::empty();
    held.add(Signal::SIGTERM);
    held.add(Signal::SIGINT);
    held.thread_block()
        .map_err(|errno| DaemonError::Signals(errno.into()))?;
    let registered = [Signal::SIGTERM, Signal::SIGINT]
        .into_iter()
        .try_for_each(|signal| {
            let pipe = wake.try_clone()?;
            signal_hook::low_level::pipe::register(signal as i32, pipe).map(drop)
        })
        .map_err(DaemonError::Signals);
    held.thread_unblock()
        .map_err(|errno| DaemonError::Signals(errno.into()))?;
    registered
}

/// `--flags startup-*`: the daemon sends TPM_Startup / TPM2_Startup itself.
fn send_startup(emulator: &Mutex<Emulator>, kind: StartupType) -> Result<(), DaemonError> {
    let mut emu = lock(emulator);
    let command =
        tpm::startup_command(emu.version(), kind).ok_or(DaemonError::Startup(u32::MAX))?;
    match emu.send_own_command(&command) {
        Some(0) => Ok(()),
        rc => Err(DaemonError::Startup(rc.unwrap_or(u32::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_sizes_from_libtpms_features() {
        let json =
            r#"{"TPMFeatures":{"RSAKeySizes":[1024,2048,3072],"CamelliaKeySizes":[128,256]}}"#;
        assert_eq!(rsa_key_sizes(json), vec![1024, 2048, 3072]);
        assert_eq!(rsa_key_sizes("{}"), Vec::<u32>::new());
        assert_eq!(rsa_key_sizes(r#"{"RSAKeySizes":["#), Vec::<u32>::new());
    }

    #[test]
    fn capability_bits_match_swtpm() {
        assert_eq!(capabilities(TpmVersion::V2), 0x1FFFF);
        assert_eq!(capabilities(TpmVersion::V1_2), 0x17FFF);
    }

    #[test]
    fn error_chain_prints_each_cause_once() {
        let err = DaemonError::LogFile {
            path: "/x/log".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            error_chain(&err),
            "Could not open logfile /x/log for writing: No such file or directory (os error 2)"
        );
        let err = DaemonError::Ctrl(SocketError::BindUnix {
            path: "/x/ctrl".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(
            error_chain(&err),
            "could not set up the control channel: Could not open UnixIO socket /x/ctrl: \
             No such file or directory (os error 2)"
        );
    }
}
