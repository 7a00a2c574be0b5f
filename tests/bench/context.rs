//! What every section needs: the plan (how much to measure), the scratch directory, CPU
//! pinning, the prepared starting state, the report, and a running TPM ("session").

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::ctrl::{self, CtrlClient};
use crate::common::tpm2::{self, StartupType};
use crate::daemon::{Daemon, Flavor, Launch, Transport};
use crate::machine::Pinning;
use crate::report::Report;
use crate::tools::Tool;
use crate::wire::DataConn;

/// File name of a TPM 2's permanent state in a state directory.
pub const PERMALL: &str = "tpm2-00.permall";
/// Generous: a daemon under valgrind starts in about a second.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much each section measures: `--smoke` runs every path briefly.
pub struct Plan {
    pub startup_rounds: usize,
    pub small_rounds: usize,
    pub small_batch: usize,
    pub small_warmup: usize,
    /// How long the daemons' CPU time is watched while idle.
    pub idle_time: Duration,
    pub nv_rounds: usize,
    pub nv_batch: usize,
    pub primary_rounds: usize,
    pub migration_rounds: usize,
    pub density_sizes: Vec<usize>,
    pub density_rounds: usize,
    /// Commands per run under callgrind (runs with N and 2N are compared).
    pub callgrind_n: usize,
    pub strace_n: usize,
    /// Count instructions and system calls for every small command, or GetRandom only.
    pub count_all_commands: bool,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            startup_rounds: 40,
            small_rounds: 20,
            small_batch: 1000,
            small_warmup: 200,
            idle_time: Duration::from_secs(1),
            nv_rounds: 20,
            nv_batch: 25,
            primary_rounds: 20,
            migration_rounds: 30,
            density_sizes: vec![50, 200],
            density_rounds: 3,
            callgrind_n: 1000,
            strace_n: 200,
            count_all_commands: true,
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            startup_rounds: 2,
            small_rounds: 2,
            small_batch: 50,
            small_warmup: 10,
            idle_time: Duration::from_millis(200),
            nv_rounds: 2,
            nv_batch: 3,
            primary_rounds: 1,
            migration_rounds: 1,
            density_sizes: vec![5],
            density_rounds: 1,
            callgrind_n: 20,
            strace_n: 10,
            count_all_commands: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartState {
    /// An empty state directory: INIT manufactures a TPM.
    Empty,
    /// A copy of the state prepared once at the beginning (same seeds for both daemons).
    Prepared,
}

pub struct Bench {
    pub plan: Plan,
    pub pinning: Pinning,
    pub report: Report,
    root: tempfile::TempDir,
    next_dir: Cell<usize>,
}

impl Bench {
    /// A scratch directory under `VTPM_BENCH_DIR` (default `/tmp`): the state
    /// directories, and so the filesystem the state writes are measured on.
    pub fn new(plan: Plan, pinning: Pinning) -> Bench {
        let parent =
            std::env::var_os("VTPM_BENCH_DIR").map_or_else(|| "/tmp".into(), PathBuf::from);
        let root = tempfile::Builder::new()
            .prefix("vtpm-bench-")
            .tempdir_in(&parent)
            .unwrap_or_else(|err| panic!("create a directory in {}: {err}", parent.display()));
        let bench = Bench {
            plan,
            pinning,
            report: Report::default(),
            root,
            next_dir: Cell::new(0),
        };
        bench.prepare_state();
        bench
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    fn prepared_dir(&self) -> PathBuf {
        self.root().join("prepared")
    }

    /// A new state directory and run directory (sockets, stderr) for one daemon.
    pub fn dirs(&self, tag: &str, start: StartState) -> (PathBuf, PathBuf) {
        let n = self.next_dir.get();
        self.next_dir.set(n + 1);
        let base = self.root().join(format!("{n}-{tag}"));
        let (state, run) = (base.join("state"), base.join("run"));
        for dir in [&state, &run] {
            std::fs::create_dir_all(dir).expect("create a daemon directory");
        }
        if start == StartState::Prepared {
            std::fs::copy(self.prepared_dir().join(PERMALL), state.join(PERMALL))
                .expect("copy the prepared state");
        }
        (state, run)
    }

    /// Manufactures the shared starting state once, with Debian's swtpm (as swtpm_setup
    /// would): INIT on an empty directory, TPM2_Startup, TPM2_Shutdown, CMD_SHUTDOWN.
    fn prepare_state(&self) {
        let mut session = Session::start(
            self,
            Flavor::Swtpm,
            StartState::Empty,
            Transport::Unix,
            Tool::Plain,
        );
        session
            .data
            .expect_ok(&tpm2::shutdown(StartupType::Clear), "TPM2_Shutdown");
        let state = session.state_dir.clone();
        session.finish();
        std::fs::create_dir_all(self.prepared_dir()).expect("create the prepared directory");
        std::fs::copy(state.join(PERMALL), self.prepared_dir().join(PERMALL))
            .expect("keep the prepared state");
    }
}

/// A daemon with a running TPM: INIT done, data channel connected, TPM2_Startup sent.
pub struct Session {
    pub daemon: Daemon,
    pub ctrl: CtrlClient,
    pub data: DataConn,
    pub state_dir: PathBuf,
}

impl Session {
    pub fn start(
        bench: &Bench,
        flavor: Flavor,
        start: StartState,
        transport: Transport,
        tool: Tool,
    ) -> Session {
        Launched::new(bench, flavor, start, transport, tool).run_tpm()
    }

    /// CMD_SHUTDOWN and a clean exit.
    pub fn finish(mut self) {
        self.daemon.shut_down(&mut self.ctrl, EXIT_TIMEOUT);
    }
}

/// A daemon whose control channel answers, before CMD_INIT.
pub struct Launched {
    pub daemon: Daemon,
    pub ctrl: CtrlClient,
    pub state_dir: PathBuf,
}

impl Launched {
    pub fn new(
        bench: &Bench,
        flavor: Flavor,
        start: StartState,
        transport: Transport,
        tool: Tool,
    ) -> Launched {
        let (state_dir, run_dir) = bench.dirs(flavor.name(), start);
        let mut daemon = Daemon::start(
            &Launch {
                flavor,
                state_dir: &state_dir,
                run_dir: &run_dir,
                transport,
                tool,
            },
            &bench.pinning,
        );
        let (ctrl, _) = daemon.wait_control(START_TIMEOUT);
        Launched {
            daemon,
            ctrl,
            state_dir,
        }
    }

    /// CMD_INIT, then TPM2_Startup(CLEAR) on a new data connection.
    pub fn run_tpm(mut self) -> Session {
        init(&mut self.ctrl, 0);
        let mut data = DataConn::connect(&self.daemon.data);
        data.expect_ok(&tpm2::startup(StartupType::Clear), "TPM2_Startup");
        Session {
            daemon: self.daemon,
            ctrl: self.ctrl,
            data,
            state_dir: self.state_dir,
        }
    }
}

/// CMD_INIT with `flags`; panics unless it succeeds.
pub fn init(ctrl: &mut CtrlClient, flags: u32) {
    let reply = ctrl.request(ctrl::INIT, &flags.to_be_bytes());
    assert_eq!(reply.rc, 0, "CMD_INIT({flags}) answered {:#x}", reply.rc);
}
