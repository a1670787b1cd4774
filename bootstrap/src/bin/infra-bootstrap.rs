//! `infra-bootstrap`: turns a fresh server into a managed host (not implemented yet).

use clap::Parser;

/// Turn a fresh server reachable over SSH into a host managed by infra-agent.
#[derive(Debug, Parser)]
#[command(name = "infra-bootstrap", version)]
struct Args {
    /// Target as user@host (root@host, or admin@host with --sudo).
    target: String,
    /// SSH port of the target.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// Name the host is known by in the inventory (default: the target's hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// Repository URL the agent pulls from (default: from infra.toml).
    #[arg(long)]
    repo: Option<String>,
    /// Private key of the admin user.
    #[arg(short = 'i')]
    identity: Option<std::path::PathBuf>,
    /// Log in as a sudo user with a password instead of root.
    #[arg(long)]
    sudo: bool,
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
    let command = format!("infra-bootstrap {}", args.target);
    eprint!(
        "{}",
        infra_bootstrap::not_yet(
            &command,
            "first boot over SSH arrives with the bootstrap issue",
            infra_bootstrap::BOOTSTRAP_PHASES
        )
    );
    std::process::ExitCode::from(1)
}
