//! Driving the TPM daemon the way swtpm_setup does (cli.md §11.3), so that any
//! swtpm-compatible daemon works: vtpm's or swtpm's. It asks for the daemon's
//! capabilities and existing state, then starts a provisioning instance that talks over
//! two socketpairs (data: `--server type=tcp,fd=N`, control: `--ctrl
//! type=unixio,clientfd=M`), sends it TPM commands one at a time, and ends it with
//! CMD_SHUTDOWN.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::ctrl::protocol::{self, Command as CtrlCommand};
use crate::tpm::response_code;

/// How long a TPM command may take: creating an RSA 3072 key can take many seconds on
/// a loaded host, and swtpm_setup's own timeouts had to be raised for that.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest response a TPM sends.
const MAX_RESPONSE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no TPM daemon 'swtpm' next to {} nor in PATH; install vtpm's swtpm or name the daemon with --tpm", exe.display())]
    DefaultNotFound { exe: PathBuf },
    #[error("--tpm is empty; give the daemon's command line, e.g. --tpm '/usr/bin/swtpm socket'")]
    EmptyCommandLine,
    #[error("cannot run the TPM daemon '{program}'")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("'{command}' failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "'{command}' printed capabilities that are not JSON with a \"features\" list: {output}"
    )]
    Capabilities { command: String, output: String },
    #[error(
        "the TPM daemon '{command}' ended with {status} before it was ready; see its messages above or in the log file"
    )]
    DiedEarly { command: String, status: ExitStatus },
    #[error("the TPM daemon '{command}' did not write its pid file {} within {} s", pidfile.display(), STARTUP_TIMEOUT.as_secs())]
    NotReady { command: String, pidfile: PathBuf },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the TPM daemon closed the {channel} channel (it ended or crashed; see its log)")]
    Closed { channel: &'static str },
    #[error("the TPM answered {command} with error {rc:#x}")]
    Tpm { command: &'static str, rc: u32 },
    #[error("the TPM's response to {command} is malformed")]
    BadResponse { command: &'static str },
    #[error("the TPM daemon answered the control command {command} with error {rc:#x}")]
    Control { command: &'static str, rc: u32 },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// The daemon's command line, e.g. `["/usr/bin/swtpm", "socket"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmProgram {
    argv: Vec<String>,
}

/// What `--print-capabilities` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub features: Vec<String>,
}

impl Capabilities {
    pub fn parse(json: &str) -> Option<Capabilities> {
        let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
        let features = value
            .get("features")?
            .as_array()?
            .iter()
            .map(|feature| feature.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?;
        Some(Capabilities { features })
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The `rsa-keysize-N` sizes, ascending.
    pub fn rsa_key_sizes(&self) -> Vec<u32> {
        let mut sizes: Vec<u32> = self
            .features
            .iter()
            .filter_map(|f| f.strip_prefix("rsa-keysize-")?.parse().ok())
            .collect();
        sizes.sort_unstable();
        sizes
    }
}

/// How the provisioning instance runs.
pub struct RunOptions<'a> {
    pub state_uri: &'a str,
    /// Add `,lock` to `--tpmstate` (only daemons that list `tpmstate-opt-lock` know it).
    pub lock: bool,
    pub tpm2: bool,
    /// The `--key` option value for encrypted state.
    pub key: Option<String>,
    pub logfile: Option<&'a Path>,
}

impl TpmProgram {
    /// `--tpm <cmdline>` split on spaces, or the default `swtpm socket`. The default
    /// daemon is the `swtpm` next to this program first: an installation of vtpm
    /// should drive its own daemon even when another swtpm comes earlier in PATH,
    /// because setup tool and daemon are released together.
    pub fn new(tpm_option: Option<&str>) -> Result<TpmProgram, DaemonError> {
        if let Some(command_line) = tpm_option {
            let argv: Vec<String> = command_line
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if argv.is_empty() {
                return Err(DaemonError::EmptyCommandLine);
            }
            return Ok(TpmProgram { argv });
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let sibling = exe.parent().map(|dir| dir.join("swtpm"));
        let program = sibling
            .filter(|path| is_executable(path))
            .or_else(|| find_in_path("swtpm"))
            .ok_or(DaemonError::DefaultNotFound { exe })?;
        Ok(TpmProgram {
            argv: vec![program.display().to_string(), "socket".into()],
        })
    }

    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    fn command(&self, extra: &[String]) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]).args(extra);
        command
    }

    fn log_args(logfile: Option<&Path>) -> Vec<String> {
        logfile
            .map(|file| vec!["--log".to_string(), format!("file={}", file.display())])
            .unwrap_or_default()
    }

    fn run_for_output(&self, extra: Vec<String>, keep_stderr: bool) -> Result<String, DaemonError> {
        let command_line = format!("{} {}", self.command_line(), extra.join(" "));
        let output = self
            .command(&extra)
            .stdin(Stdio::null())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .output()
            .map_err(|source| DaemonError::Spawn {
                program: self.argv[0].clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(DaemonError::Failed {
                command: command_line,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn capabilities(
        &self,
        tpm2: bool,
        logfile: Option<&Path>,
    ) -> Result<Capabilities, DaemonError> {
        let mut extra = vec!["--print-capabilities".to_string()];
        if tpm2 {
            extra.push("--tpm2".into());
        }
        extra.extend(Self::log_args(logfile));
        let output = self.run_for_output(extra, true)?;
        Capabilities::parse(&output).ok_or_else(|| DaemonError::Capabilities {
            command: format!("{} --print-capabilities", self.command_line()),
            output: output.trim().to_string(),
        })
    }

    /// True if the state at `uri` has a permanent state blob.
    pub fn has_state(
        &self,
        uri: &str,
        tpm2: bool,
        logfile: Option<&Path>,
    ) -> Result<bool, DaemonError> {
        let mut extra = vec![
            "--print-states".to_string(),
            "--tpmstate".into(),
            format!("backend-uri={uri}"),
        ];
        if tpm2 {
            extra.push("--tpm2".into());
        }
        extra.extend(Self::log_args(logfile));
        Ok(self.run_for_output(extra, false)?.contains("permall"))
    }

    /// Starts the provisioning instance and waits until it has written its pid file.
    pub fn start(&self, options: &RunOptions) -> Result<RunningTpm, DaemonError> {
        let (data_ours, data_theirs) = inheritable_socketpair()?;
        let (ctrl_ours, ctrl_theirs) = inheritable_socketpair()?;
        let pidfile = PidFile::create()?;
        let mut extra = vec![
            "--flags".to_string(),
            "not-need-init,startup-clear".into(),
            "--tpmstate".into(),
            format!(
                "backend-uri={}{}",
                options.state_uri,
                if options.lock { ",lock" } else { "" }
            ),
            "--pid".into(),
            format!("file={}", pidfile.path.display()),
        ];
        if options.tpm2 {
            extra.push("--tpm2".into());
        }
        if let Some(key) = &options.key {
            extra.extend(["--key".to_string(), key.clone()]);
        }
        extra.extend(Self::log_args(options.logfile));
        extra.extend([
            "--server".to_string(),
            format!("type=tcp,fd={}", data_theirs.as_raw_fd()),
            "--ctrl".into(),
            format!("type=unixio,clientfd={}", ctrl_theirs.as_raw_fd()),
        ]);
        let command_line = format!("{} {}", self.command_line(), extra.join(" "));
        let quiet = options.logfile.is_some();
        let mut command = self.command(&extra);
        command.stdin(Stdio::null());
        if quiet {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|source| DaemonError::Spawn {
            program: self.argv[0].clone(),
            source,
        })?;
        // The daemon has its own copies now.
        drop(data_theirs);
        drop(ctrl_theirs);
        let mut tpm = RunningTpm {
            child,
            data: UnixStream::from(data_ours),
            ctrl: UnixStream::from(ctrl_ours),
            pidfile,
            command_line,
        };
        tpm.wait_ready()?;
        for stream in [&tpm.data, &tpm.ctrl] {
            stream
                .set_read_timeout(Some(COMMAND_TIMEOUT))
                .map_err(io_err("cannot set a timeout on the TPM's sockets"))?;
        }
        Ok(tpm)
    }
}

/// A socketpair whose first end stays in this process and whose second end is
/// inherited by the daemon (close-on-exec cleared only there).
fn inheritable_socketpair() -> Result<(OwnedFd, OwnedFd), DaemonError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::empty(),
    )
    .map_err(|errno| io_err("cannot create a socketpair for the TPM daemon")(errno.into()))?;
    fcntl(&ours, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|errno| io_err("cannot set close-on-exec on a socket")(errno.into()))?;
    Ok((ours, theirs))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// `$TMPDIR/.swtpm_setup.pidfile.<random>`, removed when dropped.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn create() -> Result<PidFile, DaemonError> {
        let dir = std::env::temp_dir();
        for _ in 0..16 {
            let path = dir.join(format!(".swtpm_setup.pidfile.{}", random_suffix()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(PidFile { path }),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(io_err(format!(
                        "cannot create the pid file {}",
                        path.display()
                    ))(err));
                }
            }
        }
        Err(io_err(format!(
            "cannot create a pid file in {}",
            dir.display()
        ))(io::ErrorKind::AlreadyExists.into()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Six random letters and digits for temporary names.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The provisioning instance. Dropping it without `shutdown` kills it.
pub struct RunningTpm {
    child: Child,
    data: UnixStream,
    ctrl: UnixStream,
    pidfile: PidFile,
    command_line: String,
}

impl RunningTpm {
    fn wait_ready(&mut self) -> Result<(), DaemonError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err("cannot wait for the TPM daemon"))?
            {
                return Err(DaemonError::DiedEarly {
                    command: self.command_line.clone(),
                    status,
                });
            }
            if fs::metadata(&self.pidfile.path).is_ok_and(|meta| meta.len() > 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NotReady {
                    command: self.command_line.clone(),
                    pidfile: self.pidfile.path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends one TPM command and returns its response, which must carry rc 0.
    pub fn transmit(&mut self, command: &[u8], name: &'static str) -> Result<Vec<u8>, DaemonError> {
        self.data
            .write_all(command)
            .map_err(io_err(format!("cannot send {name} to the TPM")))?;
        let response = read_response(&mut self.data, name, "data")?;
        match response_code(&response) {
            Some(0) => Ok(response),
            Some(rc) => Err(DaemonError::Tpm { command: name, rc }),
            None => Err(DaemonError::BadResponse { command: name }),
        }
    }

    /// CMD_GET_INFO with `flags`, as parsed JSON.
    pub fn info(&mut self, flags: u64) -> Result<serde_json::Value, DaemonError> {
        const NAME: &str = "CMD_GET_INFO";
        let mut text = Vec::new();
        loop {
            let mut body = flags.to_be_bytes().to_vec();
            body.extend_from_slice(&(text.len() as u32).to_be_bytes());
            body.extend_from_slice(&[0; 4]);
            let request = protocol::encode_request(CtrlCommand::GetInfo, &body);
            self.ctrl
                .write_all(&request)
                .map_err(io_err("cannot send CMD_GET_INFO to the TPM daemon"))?;
            let response = read_response(&mut self.ctrl, NAME, "control")?;
            let word = |at: usize| -> Option<u32> {
                Some(u32::from_be_bytes(
                    response.get(at..at + 4)?.try_into().ok()?,
                ))
            };
            let rc = word(0).ok_or(DaemonError::BadResponse { command: NAME })?;
            if rc != 0 {
                return Err(DaemonError::Control { command: NAME, rc });
            }
            let (Some(total), Some(length)) = (word(4), word(8)) else {
                return Err(DaemonError::BadResponse { command: NAME });
            };
            let chunk = response
                .get(12..12 + length as usize)
                .ok_or(DaemonError::BadResponse { command: NAME })?;
            text.extend_from_slice(chunk);
            if chunk.is_empty() || text.len() >= total as usize {
                break;
            }
        }
        let text = String::from_utf8_lossy(&text);
        serde_json::from_str(text.trim_end_matches('\0'))
            .map_err(|_| DaemonError::BadResponse { command: NAME })
    }

    /// CMD_SHUTDOWN, then waits for the daemon to exit (killing it if it lingers).
    pub fn shutdown(mut self) -> Result<(), DaemonError> {
        const NAME: &str = "CMD_SHUTDOWN";
        self.ctrl
            .write_all(&protocol::encode_request(CtrlCommand::Shutdown, &[]))
            .map_err(io_err("cannot send CMD_SHUTDOWN to the TPM daemon"))?;
        let response = read_response(&mut self.ctrl, NAME, "control")?;
        match response.get(..4) {
            Some([0, 0, 0, 0]) => {}
            Some(rc) => {
                return Err(DaemonError::Control {
                    command: NAME,
                    rc: u32::from_be_bytes(rc.try_into().unwrap_or_default()),
                });
            }
            None => return Err(DaemonError::BadResponse { command: NAME }),
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Drop kills it: its state was saved with each command already.
        Ok(())
    }
}

impl Drop for RunningTpm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One response: normally a single read (the daemon writes each response at once);
/// a TPM response that arrives in pieces is completed using its header's size.
fn read_response(
    stream: &mut UnixStream,
    name: &'static str,
    channel: &'static str,
) -> Result<Vec<u8>, DaemonError> {
    let mut buf = vec![0u8; MAX_RESPONSE];
    let n = read_some(stream, &mut buf, name)?;
    if n == 0 {
        return Err(DaemonError::Closed { channel });
    }
    buf.truncate(n);
    if channel == "data" {
        let want = crate::tpm::Header::parse(&buf)
            .map_or(0, |h| h.size as usize)
            .min(MAX_RESPONSE);
        while buf.len() < want {
            let mut more = vec![0u8; want - buf.len()];
            let n = read_some(stream, &mut more, name)?;
            if n == 0 {
                return Err(DaemonError::Closed { channel });
            }
            buf.extend_from_slice(&more[..n]);
        }
    }
    Ok(buf)
}

fn read_some(
    stream: &mut UnixStream,
    buf: &mut [u8],
    name: &'static str,
) -> Result<usize, DaemonError> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(io_err(format!("no response to {name} from the TPM daemon"))(err));
            }
        }
    }
}
