//! One run of the agent from start to report: lock, fetch, verify, load, apply, record.
//!
//! `--once` and every cycle of the daemon go through [`Runner::cycle`]. The order is
//! DESIGN.md's: lock → fetch → verify (descends from the applied commit; signed, when
//! agent.toml asks) → load, validate, render → apply → record (status.json, history,
//! the Prometheus textfile, the journal).
//!
//! Invariant: a commit is applied only after it loaded and rendered completely for this
//! host. A commit that does not is *rejected*: the host goes on enforcing the last
//! commit it applied, and status names the rejected one and why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::catalog::{self, Catalog};
use crate::catalog_cache::{Cache, Recording};
use crate::cli::exit;
use crate::config::{AgentConfig, PackageManager};
use crate::diag::Diagnostics;
use crate::engine::{self, RunReport};
use crate::git::{self, Fetcher, Mirror, Remote};
use crate::host::Host;
use crate::lock::RunLock;
use crate::originals::Originals;
use crate::resource::{Ctx, Settings};
use crate::secrets;
use crate::state_repo::infra_toml::Version;
use crate::state_repo::{self, DirSource, RepoSource, Selection};
pub use crate::status::Trigger;
use crate::status::{self, CommitRef, RunStart, StateFiles};
use crate::step::StepKind;

/// Where the desired state comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A directory read as it is, uncommitted edits included (`--repo DIR`). It never
    /// moves the applied commit.
    Dir(PathBuf),
    /// A git repository: commit trees only.
    Git(Remote),
}

impl Origin {
    /// The origin a `--repo` value or agent.toml's `repository` names.
    #[must_use]
    pub fn parse(location: &str, config: &AgentConfig) -> Self {
        if git::is_git_location(location) {
            Self::Git(Remote::from_config(location, config))
        } else {
            Self::Dir(PathBuf::from(location))
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Dir(dir) => dir.display().to_string(),
            Self::Git(remote) => format!("{} ({})", remote.url, remote.branch),
        }
    }
}

/// How to run one cycle.
#[derive(Debug, Clone)]
pub struct CycleOptions {
    pub trigger: Trigger,
    pub dry_run: bool,
    pub only: Vec<String>,
    /// Apply a tip that does not descend from the applied commit (once).
    pub allow_rewind: bool,
    /// Ask the remote for its tip; `false` re-applies the applied commit (drift repair).
    pub fetch: bool,
    /// A file whose existence means the agent must stop: the engine finishes the
    /// current step, then stops (the daemon's converge runs in a child process).
    pub stop_file: Option<PathBuf>,
}

impl CycleOptions {
    #[must_use]
    pub fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            dry_run: false,
            only: Vec::new(),
            allow_rewind: false,
            fetch: true,
            stop_file: None,
        }
    }
}

/// The outcome of one cycle, for the caller to print or log.
#[derive(Debug)]
pub struct Cycle {
    pub exit_code: u8,
    /// The run, when steps ran: with the host's name and environment.
    pub report: Option<(RunReport, String, String)>,
    /// Problems that did not stop the run (a fetch failure with the applied commit
    /// enforced; a rejected commit) or that did (the error of a run that could not run).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The commit that was applied, if the origin is git.
    pub commit: Option<CommitRef>,
    /// Paths of the steps that watch for hand edits (the daemon's drift watch).
    pub watched: Vec<PathBuf>,
}

impl Cycle {
    fn not_run(error: String) -> Self {
        Self {
            exit_code: exit::INVALID,
            report: None,
            errors: vec![error],
            warnings: Vec::new(),
            commit: None,
            watched: Vec::new(),
        }
    }
}

/// A repository loaded and rendered for this host: safe to apply.
#[derive(Debug)]
pub struct Prepared {
    pub catalog: Catalog,
    /// The catalog came from the cache of an earlier run's compile.
    pub cached: bool,
}

impl Prepared {
    fn selection(&self) -> &Selection {
        &self.catalog.host
    }
}

/// Loads, validates and renders `source` for `hostname`. Errors are the diagnostics
/// that block the commit (or the facts that could not be read).
///
/// With a `cache`, a catalog compiled by an earlier run from the same inputs is used
/// instead of compiling (see `catalog_cache`), and a new compile is kept for the next.
pub fn prepare(
    source: &dyn RepoSource,
    hostname: &str,
    host: &dyn Host,
    cache: &Cache,
) -> Result<Prepared, Diagnostics> {
    let facts = host.facts().map_err(|e| {
        Diagnostics::from(crate::diag::Diagnostic::new(
            "facts",
            None,
            format!("cannot read this machine's facts: {e}"),
        ))
    })?;
    if let Some(catalog) = cache.lookup(source, hostname, &facts) {
        return Ok(Prepared {
            catalog,
            cached: true,
        });
    }
    let recording = Recording::new(source);
    let repo = state_repo::load(&recording, Version::agent())?;
    let selection = repo.select(hostname).map_err(Diagnostics::from)?;
    let catalog = catalog::compile(&repo, &selection, &facts)?;
    cache.store(recording, hostname, &facts, &catalog);
    Ok(Prepared {
        catalog,
        cached: false,
    })
}

/// Applies a prepared catalog (or plans it, in a dry run). Errors only when the run
/// cannot start (an unknown `--only` id). `secrets` keeps resolved values between
/// runs for agent.toml's `secrets_cache_ttl` (nothing, by default).
pub fn apply(
    prepared: &Prepared,
    source: &dyn RepoSource,
    host: &dyn Host,
    config: &AgentConfig,
    options: &CycleOptions,
    secrets: &Arc<secrets::Cache>,
) -> Result<(RunReport, Vec<String>), String> {
    let started = Instant::now();
    let programs_before = crate::process::programs_time();
    let files = |path: &str| -> Result<Vec<u8>, String> {
        source
            .read_bytes(&format!("files/{path}"))
            .map_err(|e| e.to_string())
    };
    let originals = Originals::new(&config.state_dir);
    let mut ctx = Ctx::new(
        host,
        options.dry_run,
        (!options.dry_run).then_some(&originals),
        &files,
    );
    ctx.settings = Settings {
        prefer_apt: config.package_manager == PackageManager::Apt,
        apt_lists_max_age: std::time::Duration::from_secs(config.apt_lists_max_age),
        apt_lock_timeout: std::time::Duration::from_secs(config.apt_lock_timeout),
        services: crate::resource::service::units(&prepared.catalog),
        state_dir: config.state_dir.clone(),
    };
    secrets.configure(config);
    ctx.secrets = secrets::Resolver::new(secrets::backend(config), Arc::clone(secrets));
    let engine_options = engine::Options {
        dry_run: options.dry_run,
        only: options.only.clone(),
        stop_file: options.stop_file.clone(),
    };
    let mut report = engine::run(&prepared.catalog, &ctx, &engine_options)?;
    // Rollback of what left the catalog (never with --only; see prune.rs).
    let warnings = crate::prune::run(&prepared.catalog, &ctx, &engine_options, &mut report);
    report.timing = Some(engine::Timing::new(
        started.elapsed(),
        crate::process::programs_time().saturating_sub(programs_before),
    ));
    Ok((report, warnings))
}

/// What [`prepare`] needs besides the source, for the cycle's several candidates (the
/// fetched tip, else the applied commit).
struct Preparer<'a> {
    hostname: &'a str,
    host: &'a dyn Host,
    cache: &'a Cache,
}

impl Preparer<'_> {
    fn prepare(&self, source: &dyn RepoSource) -> Result<Prepared, Diagnostics> {
        prepare(source, self.hostname, self.host, self.cache)
    }
}

/// The paths of file-like steps that watch for hand edits.
#[must_use]
pub fn watched_paths(catalog: &Catalog) -> Vec<PathBuf> {
    catalog
        .steps
        .iter()
        .filter(|s| s.watch)
        .filter_map(|s| match s.desired.as_ref()? {
            StepKind::File(f) => Some(PathBuf::from(&f.path)),
            StepKind::Template(t) => Some(PathBuf::from(&t.path)),
            StepKind::Symlink(l) => Some(PathBuf::from(&l.path)),
            StepKind::Directory(d) => Some(PathBuf::from(&d.path)),
            _ => None,
        })
        .collect()
}

/// Runs cycles against one origin; the daemon keeps one for its whole life (the git
/// mirror stays open between cycles).
#[derive(Debug)]
pub struct Runner {
    pub config: AgentConfig,
    pub origin: Origin,
    pub hostname: String,
    mirror: Option<Mirror>,
    /// Secrets kept between cycles (agent.toml `secrets_cache_ttl`), in memory only.
    pub secrets: Arc<secrets::Cache>,
}

/// What a cycle decided to apply, loaded: a commit, or a directory as it is.
struct Target {
    commit: Option<CommitRef>,
    source: Box<dyn RepoSource>,
    prepared: Prepared,
}

impl Runner {
    #[must_use]
    pub fn new(config: AgentConfig, origin: Origin, hostname: String) -> Self {
        Self {
            config,
            origin,
            hostname,
            mirror: None,
            secrets: Arc::default(),
        }
    }

    fn mirror(&mut self) -> Result<&Mirror, git::Error> {
        if self.mirror.is_none() {
            self.mirror = Some(Mirror::open(&self.config.state_dir.join("repo.git"))?);
        }
        Ok(self.mirror.as_ref().expect("opened just above"))
    }

    /// One run: see the module documentation. `host` is read fresh by the caller for
    /// every cycle (facts such as installed packages change between cycles).
    pub fn cycle(&mut self, host: &dyn Host, options: &CycleOptions) -> Cycle {
        let start = RunStart::now(options.trigger, self.origin.describe());
        // A dry run changes nothing and records nothing, so it needs no lock; a real run
        // never interleaves with another.
        let _lock = if options.dry_run {
            None
        } else {
            match RunLock::acquire(
                &self.config.state_dir,
                std::time::Duration::from_secs(self.config.lock_timeout),
            ) {
                Ok(lock) => Some(lock),
                Err(e) => return Cycle::not_run(e.to_string()),
            }
        };
        let files = StateFiles::new(&self.config.state_dir);
        let (mut status, warning) = files.load_status();
        let mut warnings: Vec<String> = warning.into_iter().collect();
        status.host.clone_from(&self.hostname);
        if !options.dry_run
            && let Some(disabled) = files.disabled()
        {
            return Cycle::not_run(format!(
                "converging is disabled since {}: {}\nhint: `infra-agent enable` resumes it",
                disabled.since, disabled.reason
            ));
        }
        let mut errors = Vec::new();
        // A tip that was fetched but not applied: the run did not do what the operator
        // asked, even when the host is enforcing the last good commit.
        let mut rejected = false;
        let previous = status.applied.clone();
        let cache = Cache::new(&self.config.state_dir, !options.dry_run);
        let hostname = self.hostname.clone();
        let prep = Preparer {
            hostname: &hostname,
            host,
            cache: &cache,
        };
        let target = match self.origin.clone() {
            Origin::Dir(dir) => {
                let source = DirSource::new(&dir);
                prep.prepare(&source)
                    .map(|prepared| Target {
                        commit: None,
                        source: Box::new(source),
                        prepared,
                    })
                    .map_err(|d| {
                        format!(
                            "{}\nerror: the repository is not valid for this host; nothing was applied",
                            Diagnostics(d.into_sorted())
                        )
                    })
            }
            Origin::Git(remote) => self.git_target(
                &prep,
                &remote,
                options,
                &mut status,
                &mut errors,
                &mut rejected,
            ),
        };
        let target = match target {
            Ok(t) => t,
            Err(error) => {
                errors.push(error);
                if !options.dry_run {
                    let record = start.not_applied(None, errors.join("\n"));
                    warnings.extend(files.finish_run(&mut status, &record, &self.config));
                }
                return Cycle {
                    exit_code: exit::INVALID,
                    report: None,
                    errors,
                    warnings,
                    commit: None,
                    watched: Vec::new(),
                };
            }
        };
        let (report, prune_warnings) = match apply(
            &target.prepared,
            target.source.as_ref(),
            host,
            &self.config,
            options,
            &self.secrets,
        ) {
            Ok(done) => done,
            Err(message) => {
                return Cycle {
                    exit_code: exit::USAGE,
                    report: None,
                    errors: vec![message],
                    warnings,
                    commit: target.commit,
                    watched: Vec::new(),
                };
            }
        };
        warnings.extend(prune_warnings);
        let summary = report.summary();
        // Changes made while enforcing the commit that was applied already repaired
        // something on the host: drift.
        let same_commit = match (&target.commit, &previous) {
            (Some(c), Some(p)) => c.id == p.id,
            (None, _) => options.trigger == Trigger::Drift,
            (Some(_), None) => false,
        };
        let drift = if same_commit { summary.changed } else { 0 };
        let mut exit_code = report.exit_code();
        if rejected {
            exit_code = exit::INVALID;
        }
        let selection = target.prepared.selection();
        let (name, env) = (selection.name.clone(), selection.env.clone());
        let watched = watched_paths(&target.prepared.catalog);
        if !options.dry_run {
            // A run of some steps (--only) does not apply the commit: the next full run
            // does, and compares against the commit applied before.
            let commit = if options.only.is_empty() {
                target.commit.clone()
            } else {
                None
            };
            let mut record = start.applied(commit, &name, &env, &report);
            record.drift = drift;
            record.exit_code = exit_code;
            if !errors.is_empty() {
                record.error = Some(errors.join("\n"));
            }
            // As the run leaves the machine: a package this run upgraded may have asked
            // for a reboot since the facts were gathered.
            status.reboot_required = host
                .lstat(std::path::Path::new(crate::facts::REBOOT_REQUIRED))
                .is_ok_and(|meta| meta.is_some());
            warnings.extend(files.finish_run(&mut status, &record, &self.config));
        }
        Cycle {
            exit_code,
            report: Some((report, name, env)),
            errors,
            warnings,
            commit: target.commit,
            watched,
        }
    }

    /// Fetches and verifies the tip; returns the commit to apply: the tip when it is
    /// good, else the applied commit (an error when there is none). Problems go to
    /// `errors` and into `status`; `rejected` is set when the tip was fetched but
    /// refused.
    fn git_target(
        &mut self,
        prep: &Preparer<'_>,
        remote: &Remote,
        options: &CycleOptions,
        status: &mut status::Status,
        errors: &mut Vec<String>,
        rejected: &mut bool,
    ) -> Result<Target, String> {
        let allowed_signers = self.config.allowed_signers.clone();
        let mirror = self.mirror().map_err(|e| e.to_string())?;
        let applied = status.applied.clone();
        let tip = if options.fetch {
            // Looked up here, not per runner: a run that does not fetch needs no helper.
            match Fetcher::beside_agent().update(mirror, remote) {
                Ok(tip) => {
                    status.record_fetch_success();
                    Some(tip)
                }
                Err(e) => {
                    status.record_fetch_failure(e.to_string());
                    errors.push(format!("fetch failed: {e}"));
                    None
                }
            }
        } else {
            None
        };
        if let Some(tip) = tip
            && applied.as_ref().is_none_or(|a| a.id != tip)
        {
            match verify_and_prepare(
                mirror,
                &tip,
                applied.as_ref(),
                allowed_signers.as_deref(),
                options.allow_rewind,
                prep,
            ) {
                Ok(target) => return Ok(target),
                Err(error) => {
                    let commit = mirror
                        .commit_info(&tip)
                        .map_or_else(|_| CommitRef::new(tip.as_str(), "", 0), |c| commit_ref(&c));
                    errors.push(format!(
                        "commit {} ({}) was not applied: {error}",
                        commit.short, commit.summary
                    ));
                    status.record_rejected(commit, error);
                    *rejected = true;
                }
            }
        }
        let Some(applied) = applied else {
            return Err(match errors.last() {
                Some(_) => {
                    "nothing was applied: no commit has been applied on this host yet".to_owned()
                }
                None => format!(
                    "nothing was applied: the branch {} has no commit yet",
                    remote.branch
                ),
            });
        };
        let source = mirror.tree_source(&applied.id).map_err(|e| {
            format!(
                "the applied commit {} is missing from the local mirror: {e}",
                applied.short
            )
        })?;
        let prepared = prep.prepare(&source).map_err(|d| {
            format!(
                "the applied commit {} no longer renders for this host:\n{}",
                applied.short,
                Diagnostics(d.into_sorted())
            )
        })?;
        Ok(Target {
            commit: Some(applied),
            source: Box::new(source),
            prepared,
        })
    }
}

fn commit_ref(info: &git::CommitInfo) -> CommitRef {
    CommitRef {
        id: info.id.clone(),
        short: info.short.clone(),
        summary: info.summary.clone(),
        time: info.time,
    }
}

/// Checks a new tip (history, signature) and renders it for this host.
fn verify_and_prepare(
    mirror: &Mirror,
    tip: &str,
    applied: Option<&CommitRef>,
    allowed_signers: Option<&std::path::Path>,
    allow_rewind: bool,
    prep: &Preparer<'_>,
) -> Result<Target, String> {
    let info = mirror.commit_info(tip).map_err(|e| e.to_string())?;
    if let Some(applied) = applied
        && !allow_rewind
    {
        let descends = mirror
            .descends_from(tip, &applied.id)
            .map_err(|e| e.to_string())?;
        if !descends {
            return Err(format!(
                "it does not descend from the applied commit {} (history was rewritten or an older commit was pushed)\nhint: to apply it anyway, run `infra-agent --once --allow-rewind` once",
                applied.short
            ));
        }
    }
    if let Some(signers) = allowed_signers {
        mirror
            .verify_signature(tip, signers)
            .map_err(|e| format!("its signature is not accepted: {e}"))?;
    }
    let source = mirror.tree_source(tip).map_err(|e| e.to_string())?;
    let prepared = prep.prepare(&source).map_err(|d| {
        format!(
            "it does not load or render for this host:\n{}",
            Diagnostics(d.into_sorted())
        )
    })?;
    Ok(Target {
        commit: Some(commit_ref(&info)),
        source: Box::new(source),
        prepared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;
    use crate::status::Trigger;

    fn write(root: &std::path::Path, path: &str, text: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    #[test]
    fn status_says_reboot_required_as_the_run_leaves_the_machine() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        write(repo.path(), "infra.toml", "format = 1\n");
        write(
            repo.path(),
            "inventory/production.toml",
            "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
        );
        // A step plays a kernel upgrade that asks for a reboot.
        write(
            repo.path(),
            "roles/r.toml",
            "[[step]]\nid = \"upgrade\"\ntype = \"file\"\npath = \"/run/reboot-required\"\ncontent = \"*** System restart required ***\\n\"\n",
        );
        let host = FakeHost::new().with_dir("/run", 0o755);
        assert!(
            !host.facts().unwrap().reboot_required,
            "not as the run starts"
        );
        let config = AgentConfig {
            state_dir: state.path().to_owned(),
            ..AgentConfig::default()
        };
        let mut runner = Runner::new(config, Origin::Dir(repo.path().to_owned()), "h1".to_owned());
        let cycle = runner.cycle(&host, &CycleOptions::new(Trigger::Once));
        assert_eq!(cycle.exit_code, 2, "{:?}", cycle.errors);
        let (status, _) = StateFiles::new(state.path()).load_status();
        assert!(status.reboot_required);

        // The second run answers from the catalog cache and still records it.
        assert!(state.path().join(crate::catalog_cache::FILE).exists());
        let cycle = runner.cycle(&host, &CycleOptions::new(Trigger::Once));
        assert_eq!(cycle.exit_code, 0, "{:?}", cycle.errors);
        let (status, _) = StateFiles::new(state.path()).load_status();
        assert!(status.reboot_required);

        // The step goes: rollback removes the file it created, and status follows.
        write(repo.path(), "roles/r.toml", "");
        let cycle = runner.cycle(&host, &CycleOptions::new(Trigger::Once));
        assert_eq!(cycle.exit_code, 2, "{:?}", cycle.errors);
        assert!(host.node("/run/reboot-required").is_none());
        let (status, _) = StateFiles::new(state.path()).load_status();
        assert!(!status.reboot_required, "the file is gone");
    }
}
