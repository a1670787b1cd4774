//! infra-agent: loads a state repository, renders it for one host and converges that host.
//!
//! `main.rs` parses flags and calls [`run`]; everything else lives in the library so
//! tests drive the same code.

pub mod catalog;
pub mod catalog_cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod diff;
pub mod dpkg;
pub mod engine;
pub mod facts;
pub mod git;
pub mod host;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod once;
pub mod originals;
pub mod process;
pub mod prune;
pub mod pull;
pub mod render;
pub mod report;
pub mod resource;
pub mod sdnotify;
pub mod secrets;
pub mod state_repo;
pub mod status;
pub mod step;
pub mod when;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use cli::{Cli, Command, exit};

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: &Cli) -> Result<u8> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let repo_dir = || -> Result<PathBuf> {
        match &cli.common.repo {
            Some(dir) => Ok(dir.clone()),
            None => std::env::current_dir().context("cannot read the current directory"),
        }
    };
    let code = match &cli.command {
        Some(Command::Check) => check::check(
            &repo_dir()?,
            cli.common.hostname.as_deref(),
            cli.common.format,
            &mut out,
            &mut err,
        )?,
        Some(Command::Data) => {
            let hostname = match &cli.common.hostname {
                Some(h) => h.clone(),
                None => this_hostname()?,
            };
            check::data(
                &repo_dir()?,
                &hostname,
                cli.common.format,
                &mut out,
                &mut err,
            )?
        }
        Some(Command::Status) => {
            let config = load_config(cli, &mut err)?;
            status::status_command(&config, cli.common.format, &mut out, &mut err)?
        }
        Some(Command::Disable { reason }) => {
            let config = load_config(cli, &mut err)?;
            status::disable_command(&config, reason, &mut out, &mut err)?
        }
        Some(Command::Enable) => {
            let config = load_config(cli, &mut err)?;
            status::enable_command(&config, &mut out, &mut err)?
        }
        None if cli.once => {
            let config = load_config(cli, &mut err)?;
            let host = host::RealHost::new().with_packages_cache(&config.state_dir, !cli.dry_run);
            let (origin, hostname) = once::resolve(
                cli.common.repo.as_ref(),
                cli.common.hostname.as_deref(),
                &config,
                &host,
            )?;
            let args = once::OnceArgs {
                origin,
                hostname,
                dry_run: cli.dry_run,
                only: cli.only.clone(),
                allow_rewind: cli.allow_rewind,
                format: cli.common.format,
                daemon_cycle: cli.daemon_cycle.map(|t| match t {
                    cli::CycleTrigger::Start => status::Trigger::Start,
                    cli::CycleTrigger::Timer => status::Trigger::Timer,
                    cli::CycleTrigger::Signal => status::Trigger::Signal,
                    cli::CycleTrigger::Drift => status::Trigger::Drift,
                }),
                fetch: !cli.no_fetch,
                secrets_cache: cli.secrets_cache,
            };
            once::once(&args, &host, &config, &mut out, &mut err)?
        }
        None => {
            if !cli.only.is_empty() {
                writeln!(err, "error: --only needs --once")?;
                return Ok(exit::USAGE);
            }
            drop(err);
            daemon::run(&daemon::Overrides {
                config: cli.common.config.clone(),
                repo: cli
                    .common
                    .repo
                    .as_ref()
                    .map(|r| r.to_string_lossy().into_owned()),
                hostname: cli.common.hostname.clone(),
            })?
        }
    };
    out.flush().context("cannot write to standard output")?;
    Ok(code)
}

/// agent.toml (or `--config`), with its warnings printed.
fn load_config(cli: &Cli, err: &mut dyn std::io::Write) -> Result<config::AgentConfig> {
    let (config, warnings) = config::load(cli.common.config.as_deref())?;
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    Ok(config)
}

/// This machine's host name, as the kernel reports it.
pub fn this_hostname() -> Result<String> {
    let name = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read this machine's hostname; pass --hostname")?;
    Ok(state_repo::short_name(name.trim()))
}
