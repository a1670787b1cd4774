//! infra-bootstrap and infra-stage: what exists today, and what each command will do.
//!
//! Neither command is implemented yet. Both parse their documented flags so that
//! scripts and documentation can be written against them, and then say plainly
//! which part of the product is missing, exiting with status 1.

use std::fmt::Write as _;

/// The phases `infra-bootstrap` will run, in order (see DESIGN.md).
pub const BOOTSTRAP_PHASES: &[&str] = &[
    "connect over SSH with the root password and check the host key",
    "check the target: Debian/Ubuntu, x86_64, systemd",
    "upload and install the agent with a checksum check",
    "write agent.toml, the deploy key and the git server's known_hosts entry",
    "run `infra-agent --once` (first_boot role: admin user, keys, sshd lockdown)",
    "verify admin key login in a new SSH session, restoring sshd if it fails",
    "enable and start the agent daemon",
];

/// The message printed by a command that does not exist yet.
#[must_use]
pub fn not_yet(command: &str, what: &str, phases: &[&str]) -> String {
    let mut out = format!("error: `{command}` is not implemented yet: {what}\n");
    if !phases.is_empty() {
        out.push_str("It will:\n");
        for (i, phase) in phases.iter().enumerate() {
            let _ = writeln!(out, "  {}. {phase}", i + 1);
        }
    }
    out.push_str(
        "hint: until then, converge a host by copying the state repository to it and running\n      `infra-agent check --repo DIR` there (see README.md).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_command_and_every_phase() {
        let text = not_yet(
            "infra-bootstrap root@host",
            "first boot over SSH",
            BOOTSTRAP_PHASES,
        );
        assert!(text.starts_with("error: `infra-bootstrap root@host` is not implemented yet"));
        for phase in BOOTSTRAP_PHASES {
            assert!(text.contains(phase), "missing phase {phase}");
        }
        assert!(text.contains("hint:"));
    }
}
