//! How a daemon is run: plainly for now.

use std::process::Command;

use crate::daemon::Flavor;

pub enum Tool {
    Plain,
}

impl Tool {
    /// The command that runs `flavor` with `args` under this tool. Without cargo's
    /// `LD_LIBRARY_PATH` (the toolchain's and target directories, which `cargo bench`
    /// sets): the dynamic loader would search them first, as no deployment does.
    pub fn command(&self, flavor: Flavor, args: &[String]) -> Command {
        let mut command = self.bare_command(flavor, args);
        command.env_remove("LD_LIBRARY_PATH");
        command
    }

    fn bare_command(&self, flavor: Flavor, args: &[String]) -> Command {
        match self {
            Tool::Plain => {
                let mut command = Command::new(flavor.program());
                command.args(args);
                command
            }
        }
    }
}
