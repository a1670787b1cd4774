//! The flags of `infra-bootstrap`, and the `main` both binaries share.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::Failure;
use crate::bootstrap::Usage;

/// Turn a fresh server reachable over SSH into a host managed by infra-agent.
///
/// Run it from a checkout of the state repository (or pass --state-repo). See
/// docs/bootstrap.md for the phases and what it writes.
#[derive(Debug, Parser)]
#[command(name = "infra-bootstrap", version)]
pub struct Args {
    /// Target as user@host: root@host, or admin@host with --sudo.
    pub target: String,
    /// SSH port of the target.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Name the host is known by in the inventory (default: the target's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Repository URL the agent pulls from (default: [bootstrap] repository in infra.toml).
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch the agent applies (default: [bootstrap] branch in infra.toml, else main).
    #[arg(long)]
    pub branch: Option<String>,
    /// Private key of the admin user: proves the admin can log in after the first
    /// converge, and logs in on a re-run. Without it, the keys of the ssh-agent at
    /// `SSH_AUTH_SOCK` are used (the way to use a key with a passphrase).
    #[arg(short = 'i', value_name = "KEY")]
    pub identity: Option<PathBuf>,
    /// Log in as a sudo user (with its password, or with the admin key and
    /// passwordless sudo) instead of root.
    #[arg(long)]
    pub sudo: bool,
    /// Read the login password from the first line of FILE instead of prompting, or
    /// from 1Password with an `op://vault/item/field` reference (read with your `op`).
    #[arg(long, value_name = "FILE|op://...")]
    pub password_file: Option<PathBuf>,
    /// Accept only this host key (`SHA256:...`, as `ssh-keygen -lf` shows it).
    #[arg(long, value_name = "SHA256:...")]
    pub host_key: Option<String>,
    /// Accept and record a host key never seen before without asking (scripts).
    /// A key that differs from a recorded one is still refused.
    #[arg(long)]
    pub accept_new: bool,
    /// The operator's `known_hosts` file [default: `~/.ssh/known_hosts`].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// The deploy key (a private key) the agent pulls with; installed as
    /// /etc/infra-agent/deploy_key (0600). Needed for an SSH repository URL unless
    /// the host already has one. An `op://...?ssh-format=openssh` reference reads it
    /// from 1Password with your `op`.
    #[arg(long, value_name = "FILE|op://...")]
    pub deploy_key: Option<PathBuf>,
    /// `known_hosts` lines pinning the git server's host key; installed as
    /// /etc/infra-agent/known_hosts. Needed for an SSH repository URL unless the
    /// host already has one.
    #[arg(long, value_name = "FILE")]
    pub git_known_hosts: Option<PathBuf>,
    /// The infra-agent binary to install with the unit and install.sh (default: the
    /// one beside infra-bootstrap, when no newer package lies there). Its fetch
    /// helper infra-agent-fetch must lie beside it and is installed too.
    #[arg(long, value_name = "FILE", conflicts_with = "agent_deb")]
    pub agent_binary: Option<PathBuf>,
    /// The Debian package to install, built by packaging/build-deb.sh (default:
    /// `infra-agent_<version>_amd64.deb` beside infra-bootstrap, where build-deb.sh
    /// writes it).
    #[arg(long, value_name = "FILE")]
    pub agent_deb: Option<PathBuf>,
    /// The state repository checkout to read (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub state_repo: PathBuf,
    /// Seconds to wait for the host to answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub connect_timeout: u64,
}

/// The `main` of both binaries: parses `A` (a usage error exits 64, `--help` 0), runs
/// `run` and turns its outcome into the exit code: 0 when it returns `true`, 1 when
/// `false` or on a failure, 64 on a [`Usage`] error. A failure prints `error:` with its
/// message and its hint after `hint:`; any other error prints its chain of causes.
#[must_use]
pub fn main_with<A: clap::Parser>(run: impl FnOnce(&A) -> anyhow::Result<bool>) -> ExitCode {
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(64);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            let (code, failure) = if let Some(Usage(f)) = err.downcast_ref::<Usage>() {
                (64, Some(f))
            } else {
                (1, err.downcast_ref::<Failure>())
            };
            if let Some(f) = failure {
                eprintln!("error: {}", f.message);
                if let Some(hint) = f.hint.as_deref() {
                    for (i, line) in hint.lines().enumerate() {
                        let lead = if i == 0 { "hint: " } else { "      " };
                        eprintln!("{lead}{line}");
                    }
                }
            } else {
                eprintln!("error: {err}");
                for cause in err.chain().skip(1) {
                    eprintln!("Caused by: {cause}");
                }
            }
            ExitCode::from(code)
        }
    }
}
