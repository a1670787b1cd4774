//! infra-bootstrap and infra-stage.
//!
//! `infra-bootstrap` turns a fresh server reachable over SSH into a host managed by
//! infra-agent ([`bootstrap::run`]; docs/bootstrap.md). `infra-stage` is not
//! implemented yet: it parses its documented flags and says so ([`not_yet`]).

pub mod bootstrap;
pub mod cli;
pub mod failure;
pub mod keys;
pub mod known_hosts;
pub mod remote;
pub mod scripts;
pub mod ssh;
pub mod state;
pub mod target;

use std::fmt::Write as _;

pub use failure::Failure;

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
        let phases = ["start a container", "remove it"];
        let text = not_yet("infra-stage up", "staging", &phases);
        assert!(text.starts_with("error: `infra-stage up` is not implemented yet"));
        for phase in phases {
            assert!(text.contains(phase), "missing phase {phase}");
        }
        assert!(text.contains("hint:"));
    }
}
