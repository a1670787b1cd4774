//! `infra-bootstrap`: turns a fresh server into a host managed by infra-agent.

use infra_bootstrap::cli::{Args, main_with};

fn main() -> std::process::ExitCode {
    main_with(|args: &Args| infra_bootstrap::bootstrap::run(args).map(|()| true))
}
