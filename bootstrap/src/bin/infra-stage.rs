//! `infra-stage`: the hosts of `inventory/staging.toml` as Docker containers that
//! converge the working tree of the state repository.

use infra_bootstrap::cli::main_with;
use infra_bootstrap::stage::{self, Args};

fn main() -> std::process::ExitCode {
    main_with(|args: &Args| stage::run(args))
}
