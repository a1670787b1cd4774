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
pub struct OnceArgs {
    pub origin: Origin,
    pub hostname: String,
    pub dry_run: bool,
    pub only: Vec<String>,
    pub allow_rewind: bool,
    pub format: Format,
}

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
    let mut options = CycleOptions::new(Trigger::Once);
    options.dry_run = args.dry_run;
    options.only.clone_from(&args.only);
    options.allow_rewind = args.allow_rewind;
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
