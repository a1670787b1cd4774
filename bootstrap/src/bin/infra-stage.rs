//! `infra-stage`: applies the working tree to Docker containers (not implemented yet).

use clap::{Parser, ValueEnum};

/// Try a state repository on Docker containers before pushing it.
#[derive(Debug, Parser)]
#[command(name = "infra-stage", version)]
struct Args {
    /// What to do with the staging containers.
    action: Action,
    /// Hosts of inventory/staging.toml (default: all of them).
    hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    Up,
    Apply,
    Down,
}

fn main() -> std::process::ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let _ = err.print();
            return std::process::ExitCode::from(64);
        }
    };
    let action = format!("{:?}", args.action).to_lowercase();
    eprint!(
        "{}",
        infra_bootstrap::not_yet(
            &format!("infra-stage {action}"),
            "staging in Docker containers arrives with the example and staging issue",
            &[
                "start a container for each host of inventory/staging.toml",
                "bootstrap it with infra-bootstrap over SSH",
                "converge the working tree, uncommitted changes included",
                "print a per-host summary; `down` removes the containers",
            ]
        )
    );
    std::process::ExitCode::from(1)
}
