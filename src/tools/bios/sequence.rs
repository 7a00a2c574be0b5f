//! The commands swtpm_bios sends for a [`Plan`], in order (cli.md §13). Pure: the
//! random platform password comes in as an argument.

use std::time::Duration;

use super::args::{Plan, Startup};
use super::commands::{self, PLATFORM_AUTH_LEN, PP_CMD_ENABLE, PP_LOCK, PP_NOTPRESENT, PP_PRESENT};
use crate::tpm::{StartupType, TpmVersion};

/// How long a TPM may take to answer an ordinary command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// TPM_ContinueSelfTest may test everything that was not tested yet.
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// One command and what to do with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The command's name in error messages, e.g. `TPM_Startup(0x01)`.
    pub label: String,
    pub command: Vec<u8>,
    pub timeout: Duration,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Only the response code matters.
    Plain,
    /// `-ea`: the answer tells whether the TPM is deactivated.
    ReadPermanentFlags,
    /// `-ea`: after this step a TPM that was deactivated needs a reset to become active.
    Activate,
}

fn step(label: &str, command: Vec<u8>) -> Step {
    Step {
        label: label.to_owned(),
        command,
        timeout: COMMAND_TIMEOUT,
        role: Role::Plain,
    }
}

/// The steps for `plan`; `platform_auth` is the new platform password of TPM 2 `-u`.
pub fn steps(plan: &Plan, platform_auth: &[u8; PLATFORM_AUTH_LEN]) -> Vec<Step> {
    if plan.tpm2 {
        tpm2_steps(plan, platform_auth)
    } else {
        tpm12_steps(plan)
    }
}

fn startup_type(startup: Startup) -> Option<(StartupType, u16)> {
    match startup {
        Startup::Clear => Some((StartupType::Clear, 1)),
        Startup::State => Some((StartupType::State, 2)),
        Startup::Deactivated => Some((StartupType::Deactivated, 3)),
        Startup::None => None,
    }
}

fn tpm12_steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some((kind, code)) = startup_type(plan.startup) {
        if let Some(command) = commands::startup(TpmVersion::V1_2, kind) {
            steps.push(step(&format!("TPM_Startup(0x{code:02x})"), command));
        }
    }
    if plan.more {
        steps.push(step(
            "TSC_PhysicalPresence(CMD_ENABLE)",
            commands::tsc_physical_presence(PP_CMD_ENABLE),
        ));
        steps.push(step(
            "TSC_PhysicalPresence(PRESENT)",
            commands::tsc_physical_presence(PP_PRESENT),
        ));
        if plan.ensure_activated {
            steps.push(Step {
                role: Role::ReadPermanentFlags,
                ..step("TPM_GetCapability()", commands::tpm_get_permanent_flags())
            });
        }
        steps.push(step("TPM_PhysicalEnable", commands::tpm_physical_enable()));
        steps.push(Step {
            role: if plan.ensure_activated {
                Role::Activate
            } else {
                Role::Plain
            },
            ..step(
                "TPM_PhysicalSetDeactivated",
                commands::tpm_physical_set_deactivated(false),
            )
        });
    }
    if plan.self_test {
        steps.push(Step {
            timeout: SELF_TEST_TIMEOUT,
            ..step("TPM_ContinueSelfTest", commands::tpm_continue_self_test())
        });
    }
    if plan.unassert_pp {
        steps.push(step(
            "TSC_PhysicalPresence(CMD_ENABLE)",
            commands::tsc_physical_presence(PP_CMD_ENABLE),
        ));
        steps.push(step(
            "TSC_PhysicalPresence(NOT_PRESENT|LOCK)",
            commands::tsc_physical_presence(PP_NOTPRESENT | PP_LOCK),
        ));
    }
    steps
}

fn tpm2_steps(plan: &Plan, platform_auth: &[u8; PLATFORM_AUTH_LEN]) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some((kind, _)) = startup_type(plan.startup) {
        // TPM 2 has no deactivated start-up: `-d` sends none.
        if let Some(command) = commands::startup(TpmVersion::V2, kind) {
            steps.push(step("TPM2_Startup", command));
        }
    }
    if plan.self_test {
        steps.push(step(
            "TPM2_IncrementalSelfTest",
            commands::tpm2_incremental_self_test(),
        ));
    }
    if plan.unassert_pp {
        steps.push(step(
            "TPM2_HierarchyChangeAuth",
            commands::tpm2_platform_change_auth(platform_auth),
        ));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::target::Target;

    fn plan() -> Plan {
        Plan {
            target: Target::Unix("/s".into()),
            tpm2: false,
            startup: Startup::Clear,
            more: true,
            self_test: false,
            ensure_activated: false,
            unassert_pp: false,
        }
    }

    fn labels(plan: &Plan) -> Vec<String> {
        steps(plan, &[0; PLATFORM_AUTH_LEN])
            .into_iter()
            .map(|s| s.label)
            .collect()
    }

    #[test]
    fn tpm12_everything() {
        let all = Plan {
            self_test: true,
            ensure_activated: true,
            unassert_pp: true,
            ..plan()
        };
        assert_eq!(
            labels(&all),
            [
                "TPM_Startup(0x01)",
                "TSC_PhysicalPresence(CMD_ENABLE)",
                "TSC_PhysicalPresence(PRESENT)",
                "TPM_GetCapability()",
                "TPM_PhysicalEnable",
                "TPM_PhysicalSetDeactivated",
                "TPM_ContinueSelfTest",
                "TSC_PhysicalPresence(CMD_ENABLE)",
                "TSC_PhysicalPresence(NOT_PRESENT|LOCK)",
            ]
        );
        let all = steps(&all, &[0; PLATFORM_AUTH_LEN]);
        assert_eq!(all[3].role, Role::ReadPermanentFlags);
        assert_eq!(all[5].role, Role::Activate);
        assert_eq!(all[6].timeout, SELF_TEST_TIMEOUT);
    }

    #[test]
    fn tpm12_deactivated_and_startup_only() {
        let deactivated = Plan {
            startup: Startup::Deactivated,
            more: false,
            self_test: true,
            unassert_pp: true,
            ensure_activated: true,
            ..plan()
        };
        assert_eq!(
            labels(&deactivated),
            [
                "TPM_Startup(0x03)",
                "TPM_ContinueSelfTest",
                "TSC_PhysicalPresence(CMD_ENABLE)",
                "TSC_PhysicalPresence(NOT_PRESENT|LOCK)",
            ]
        );
        let nothing = Plan {
            startup: Startup::None,
            more: false,
            ..plan()
        };
        assert!(labels(&nothing).is_empty());
        let state = Plan {
            startup: Startup::State,
            more: false,
            ..plan()
        };
        assert_eq!(labels(&state), ["TPM_Startup(0x02)"]);
        let plain = steps(&plan(), &[0; PLATFORM_AUTH_LEN]);
        assert_eq!(plain[4].role, Role::Plain);
    }

    #[test]
    fn tpm2() {
        let tpm2 = Plan {
            tpm2: true,
            self_test: true,
            unassert_pp: true,
            ensure_activated: true,
            ..plan()
        };
        assert_eq!(
            labels(&tpm2),
            [
                "TPM2_Startup",
                "TPM2_IncrementalSelfTest",
                "TPM2_HierarchyChangeAuth"
            ]
        );
        let auth = [7; PLATFORM_AUTH_LEN];
        let last = steps(&tpm2, &auth).pop().unwrap();
        assert!(last.command.ends_with(&auth));
        for startup in [Startup::Deactivated, Startup::None] {
            let none = Plan {
                startup,
                ..tpm2.clone()
            };
            assert_eq!(labels(&none)[0], "TPM2_IncrementalSelfTest");
        }
    }
}
