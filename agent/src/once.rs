//! `infra-agent --once [--dry-run]`: one converge of this machine.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::catalog;
use crate::cli::{Format, exit};
use crate::config::{AgentConfig, PackageManager};
use crate::diag::Diagnostics;
use crate::engine::{self, Options};
use crate::host::Host;
use crate::originals::Originals;
use crate::report;
use crate::resource::{Ctx, Settings};
use crate::state_repo::infra_toml::Version;
use crate::state_repo::{self, DirSource, RepoSource};

/// Everything a `--once` run needs to know.
#[derive(Debug)]
pub struct OnceArgs {
    pub repo: PathBuf,
    pub hostname: String,
    pub dry_run: bool,
    pub only: Vec<String>,
    pub format: Format,
}

/// Resolves where the repository is and which host this is: flags first, then agent.toml.
pub fn resolve(
    repo: Option<&PathBuf>,
    hostname: Option<&str>,
    config: &AgentConfig,
    host: &dyn Host,
) -> Result<(PathBuf, String)> {
    let repo = match (repo, &config.repository) {
        (Some(dir), _) => dir.clone(),
        (None, Some(r)) if !r.contains("://") && !r.contains('@') => PathBuf::from(r),
        (None, Some(r)) => anyhow::bail!(
            "agent.toml names the repository {r}, but pulling from git arrives in a later release\nhint: pass --repo DIR with a checkout of the repository"
        ),
        (None, None) => {
            anyhow::bail!("no state repository: pass --repo DIR, or set repository in agent.toml")
        }
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
    Ok((repo, hostname))
}

/// Runs once against `host` and prints the report. Returns the exit code.
pub fn once(
    args: &OnceArgs,
    host: &dyn Host,
    config: &AgentConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    let started = std::time::Instant::now();
    let programs_before = crate::process::programs_time();
    let source = DirSource::new(&args.repo);
    let repo = match state_repo::load(&source, Version::agent()) {
        Ok(repo) => repo,
        Err(errors) => return refuse(err, &errors),
    };
    let selection = match repo.select(&args.hostname) {
        Ok(sel) => sel,
        Err(d) => return refuse(err, &d.into()),
    };
    let facts = host.facts().context("cannot read this machine's facts")?;
    let catalog = match catalog::compile(&repo, &selection, &facts) {
        Ok(c) => c,
        Err(errors) => return refuse(err, &errors),
    };
    let files = |path: &str| -> Result<Vec<u8>, String> {
        source
            .read_bytes(&format!("files/{path}"))
            .map_err(|e| e.to_string())
    };
    let originals = Originals::new(&config.state_dir);
    let mut ctx = Ctx::new(
        host,
        args.dry_run,
        (!args.dry_run).then_some(&originals),
        &files,
    );
    ctx.settings = Settings {
        prefer_apt: config.package_manager == PackageManager::Apt,
        apt_lists_max_age: std::time::Duration::from_secs(config.apt_lists_max_age),
        apt_lock_timeout: std::time::Duration::from_secs(config.apt_lock_timeout),
        services: crate::resource::service::units(&catalog),
        state_dir: config.state_dir.clone(),
    };
    let options = Options {
        dry_run: args.dry_run,
        only: args.only.clone(),
    };
    let mut report = match engine::run(&catalog, &ctx, &options) {
        Ok(r) => r,
        Err(message) => {
            writeln!(err, "error: {message}")?;
            return Ok(exit::USAGE);
        }
    };
    report.timing = Some(engine::Timing::new(
        started.elapsed(),
        crate::process::programs_time().saturating_sub(programs_before),
    ));
    match args.format {
        Format::Json => report::json(out, &selection.name, &selection.env, &report)?,
        Format::Text => report::text(out, &selection.name, &selection.env, &report)?,
    }
    Ok(report.exit_code())
}

/// A repository that does not load or render: nothing is applied.
fn refuse(err: &mut dyn Write, errors: &Diagnostics) -> Result<u8> {
    writeln!(err, "{}", Diagnostics(errors.clone().into_sorted()))?;
    writeln!(
        err,
        "error: the repository is not valid for this host; nothing was applied"
    )?;
    Ok(exit::INVALID)
}
