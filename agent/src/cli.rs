//! Command-line flags and the dispatch from a parsed command line to the command that runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes (Puppet's convention for `--once`; see docs/state-repo.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// `check`: the repository is invalid. Elsewhere: could not run.
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 64;
    /// `--once`: changes applied (or pending, with `--dry-run`).
    pub const CHANGED: u8 = 2;
    /// `--once`: some steps failed.
    pub const FAILED: u8 = 4;
}

/// Pull-based configuration agent: converges this host to the state in a git repository.
#[derive(Debug, Parser)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "command-line flags are booleans by nature"
)]
#[command(name = "infra-agent", version, about, disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Converge once and exit instead of running as a daemon.
    #[arg(long)]
    pub once: bool,
    /// With --once: show what would change, change nothing (a git repository is still
    /// fetched into the local mirror).
    #[arg(long, requires = "once")]
    pub dry_run: bool,
    /// Run only these steps and what they require.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub only: Vec<String>,
    /// With --once from git: apply the branch tip even though it does not descend from
    /// the commit applied last (after a force-push). Applies to this run only.
    #[arg(long, requires = "once")]
    pub allow_rewind: bool,
    /// Internal: this `--once` is a converge the daemon started (what started it). It
    /// logs to the journal instead of printing a report, stops between steps when the
    /// daemon asks, and records the paths to watch for hand edits.
    #[arg(long, requires = "once", hide = true, value_enum)]
    pub daemon_cycle: Option<CycleTrigger>,
    /// Internal, with --daemon-cycle: re-apply the applied commit without asking the
    /// git server (a drift repair).
    #[arg(long, requires = "daemon_cycle", hide = true)]
    pub no_fetch: bool,
    /// Internal, with --daemon-cycle: read the daemon's cached secrets as JSON on
    /// standard input, and write what is cached after the run on standard output.
    #[arg(long, requires = "daemon_cycle", hide = true)]
    pub secrets_cache: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Flags every command accepts.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Agent configuration file [default: /etc/infra-agent/agent.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State repository: a directory (read as it is, uncommitted edits included) or a
    /// git URL or repository (commit trees only) [default: agent.toml's repository].
    #[arg(long, global = true, value_name = "DIR|URL")]
    pub repo: Option<PathBuf>,
    /// Host name to select in the inventory (default: this machine's short hostname).
    #[arg(long, global = true, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// What started a converge the daemon runs (`--daemon-cycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CycleTrigger {
    Start,
    Timer,
    Signal,
    Drift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and render the repository offline: every host of every inventory by default.
    Check,
    /// Print one host's merged data with the file and line each value came from.
    Data,
    /// Show the applied commit, the last runs and anything that needs attention.
    Status,
    /// Pause converging (the daemon and --once) until `enable`; status shows why.
    Disable {
        /// Why converging is paused; shown by `status`.
        #[arg(long)]
        reason: String,
    },
    /// Resume converging.
    Enable,
}

/// Parses the command line; usage errors exit 64 (clap's own code would be 2, which
/// `--once` uses for "changes applied").
#[must_use]
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(i32::from(exit::USAGE));
        }
    }
}
