//! `infra-agent --once [--dry-run]`: one converge of this machine, printed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cli::Format;
use crate::config::AgentConfig;
use crate::host::Host;
use crate::pull::{CycleOptions, Origin, Runner, Trigger};
use crate::report;

/// Everything a `--once` run needs to know.
#[derive(Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "they mirror command-line flags one to one"
)]
pub struct OnceArgs {
    pub origin: Origin,
    pub hostname: String,
    pub dry_run: bool,
    pub only: Vec<String>,
    pub allow_rewind: bool,
    pub format: Format,
    /// A converge the daemon started, and why (see [`crate::cli::Cli::daemon_cycle`]).
    pub daemon_cycle: Option<Trigger>,
    /// Ask the git server for its tip (false: re-apply the applied commit).
    pub fetch: bool,
    /// Exchange cached secrets with the daemon over stdin and stdout.
    pub secrets_cache: bool,
}

/// Where a converge the daemon started records the paths to watch for hand edits.
pub const WATCHED_FILE: &str = "watched.json";
/// The file the daemon creates to make the converge it started stop between steps.
pub const STOP_FILE: &str = "stop";

/// Resolves where the repository is and which host this is: flags first, then agent.toml.
pub fn resolve(
    repo: Option<&PathBuf>,
    hostname: Option<&str>,
    config: &AgentConfig,
    host: &dyn Host,
) -> Result<(Origin, String)> {
    let origin = match (repo, &config.repository) {
        (Some(location), _) => Origin::parse(&location.to_string_lossy(), config),
        (None, Some(location)) => Origin::parse(location, config),
        (None, None) => anyhow::bail!(
            "no state repository: pass --repo DIR|URL, or set repository in agent.toml"
        ),
    };
    let hostname = match (hostname, &config.hostname) {
        (Some(h), _) => h.to_owned(),
        (None, Some(h)) => h.clone(),
        (None, None) => {
            host.facts()
                .context("cannot read this machine's facts")?
                .hostname
        }
    };
    Ok((origin, hostname))
}

/// Runs once against `host` and prints the report. Returns the exit code.
pub fn once(
    args: &OnceArgs,
    host: &dyn Host,
    config: &AgentConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    let mut runner = Runner::new(config.clone(), args.origin.clone(), args.hostname.clone());
    let mut options = CycleOptions::new(args.daemon_cycle.unwrap_or(Trigger::Once));
    options.dry_run = args.dry_run;
    options.only.clone_from(&args.only);
    options.allow_rewind = args.allow_rewind;
    options.fetch = args.fetch;
    if args.daemon_cycle.is_some() {
        crate::journal::init(false);
        options.stop_file = Some(config.state_dir.join(STOP_FILE));
        if args.secrets_cache {
            runner.secrets.configure(config);
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .context("cannot read the daemon's cached secrets")?;
            let kept: Vec<crate::secrets::Kept> = serde_json::from_slice(&input)
                .context("the daemon's cached secrets are not valid JSON")?;
            runner.secrets.import(kept);
        }
        let cycle = runner.cycle(host, &options);
        if args.secrets_cache {
            serde_json::to_writer(&mut *out, &runner.secrets.export())?;
        }
        crate::daemon::log_cycle(&cycle);
        record_watched(&config.state_dir, &cycle.watched);
        return Ok(cycle.exit_code);
    }
    let cycle = runner.cycle(host, &options);
    for warning in &cycle.warnings {
        writeln!(err, "warning: {warning}")?;
    }
    for error in &cycle.errors {
        // Diagnostics already carry their `error:` prefix.
        if error.starts_with("error") {
            writeln!(err, "{error}")?;
        } else {
            writeln!(err, "error: {error}")?;
        }
    }
    if let Some((report, name, env)) = &cycle.report {
        match args.format {
            Format::Json => {
                let mut doc = report::RunDocument::new(name, env, report);
                doc.commit = cycle.commit.as_ref();
                report::json_doc(out, &doc)?;
            }
            Format::Text => {
                if let Some(commit) = &cycle.commit {
                    writeln!(out, "commit {} {}", commit.short, commit.summary)?;
                }
                report::text(out, name, env, report)?;
            }
        }
    }
    Ok(cycle.exit_code)
}

/// Writes the paths the daemon watches for hand edits (a converge the daemon started
/// runs in a process of its own; this is how the daemon learns them).
fn record_watched(state_dir: &std::path::Path, watched: &[PathBuf]) {
    let json = serde_json::to_vec(watched).expect("paths serialize");
    let file = state_dir.join(WATCHED_FILE);
    let tmp = state_dir.join(format!(".{WATCHED_FILE}.infra-tmp"));
    let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        log::warn!(
            "cannot record the watched paths in {}: {e}; hand edits are repaired at the next timed run",
            file.display()
        );
    }
}
