//! The `package` resource: Debian packages through nala or apt-get.
//!
//! `plan` reads the dpkg database (the status file, about 2 ms, once per run through
//! the run's memo) and runs no command for `present` and `absent`: a host where
//! nothing is missing never starts apt or nala. `latest` asks `apt-cache policy` for
//! candidate versions and a system `upgrade` simulates it (`apt-get -s`); both only
//! read. `apply` runs one transaction per step (preceded, when needed, by a repair of
//! an interrupted dpkg and a refresh of the package lists), then reads the database
//! again to check that it did what was asked: nala's exit code does not say.
//!
//! Under systemd every program that changes packages runs in its own transient unit
//! (`systemd-run --wait --collect`), so a restart of the agent's service — by
//! needrestart, or by an upgrade of the agent itself — never kills dpkg halfway. Its
//! output goes to `/run/infra-agent/packages.log` rather than through a pipe to the
//! agent (`--pipe`): a dpkg or maintainer script writing into a pipe whose reader was
//! killed would die of SIGPIPE, which is the failure the unit exists to prevent.

use std::cell::Cell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::dpkg::{self, Db};
use crate::facts::Facts;
use crate::process::{Cmd, CmdOutput};
use crate::step::package::{
    DebSource, PackageName, PackageState, PackageStep, UpdateLists, Upgrade,
};

/// nala is used where this exists (unless agent.toml prefers apt).
pub const NALA: &str = "/usr/bin/nala";
/// The package lists `apt-get update` maintains.
pub const LISTS: &str = "/var/lib/apt/lists";
/// Where apt downloads during `update`: its modification time moves on every update
/// that reached the mirrors, even when no index changed (`LISTS` itself moves only
/// when an index file is replaced).
pub const LISTS_PARTIAL: &str = "/var/lib/apt/lists/partial";
/// Touched after every successful update where `update-notifier-common` is installed
/// (Ubuntu): when present, also a sign of a recent refresh.
pub const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
/// How often nala, which does not wait for the dpkg lock, is tried again while
/// another process holds it.
const LOCK_RETRY: Duration = Duration::from_secs(2);
/// Where transactions under systemd write their output.
pub const TX_LOG: &str = "/run/infra-agent/packages.log";
const RUN_DIR: &str = "/run/infra-agent";
/// Where a `.deb` is put for the transaction that installs it (removed afterwards).
pub const DEB_DIR: &str = "/var/cache/infra-agent";
/// apt's own downloader: http and https, apt's proxy settings, hash checked.
pub const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// The run's memo of the dpkg database; forgotten after every transaction.
pub const DPKG_MEMO: &str = "dpkg";
const FACTS_MEMO: &str = "facts";
const APT_MEMO: &str = "apt-lists";

/// The change that stands for a refresh of the package lists.
pub const LISTS_CHANGE: &str = "apt package lists";
/// The change that stands for `dpkg --configure -a` after an interrupted dpkg.
pub const REPAIR_CHANGE: &str = "dpkg database";

/// Lines of output kept in a failure message.
const TAIL_LINES: usize = 20;
/// Characters kept of one line of output.
const LINE_CHARS: usize = 300;

/// What this run did to the package lists.
#[derive(Debug, Default)]
struct AptRun {
    /// The lists were refreshed in this run: no step refreshes them again.
    refreshed: Cell<bool>,
    /// An earlier step changed the apt sources: the next transaction refreshes first.
    sources_changed: Cell<bool>,
}

fn apt_run(ctx: &Ctx<'_>) -> Result<Rc<AptRun>, Error> {
    ctx.memo(APT_MEMO, || Ok(AptRun::default()))
}

/// Tells later `package` steps of this run that the apt sources changed (a repository
/// or its key was added): with `update_lists = "auto"` they refresh the lists before
/// their transaction, whatever the lists' age.
pub fn sources_changed(ctx: &Ctx<'_>) -> Result<(), Error> {
    let run = apt_run(ctx)?;
    run.sources_changed.set(true);
    run.refreshed.set(false);
    Ok(())
}

/// The installed packages, read once per run (see [`DPKG_MEMO`]).
pub fn installed(ctx: &Ctx<'_>) -> Result<Rc<Db>, Error> {
    ctx.memo(DPKG_MEMO, || read_db(ctx))
}

/// Whether dpkg's journal has entries: a dpkg run was interrupted.
fn interrupted(ctx: &Ctx<'_>) -> Result<bool, Error> {
    match ctx.host.read_dir(Path::new(dpkg::UPDATES)) {
        Ok(entries) => Ok(!entries.is_empty()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn read_db(ctx: &Ctx<'_>) -> Result<Db, Error> {
    if interrupted(ctx)? {
        // The status file lacks what the journal records; dpkg-query merges both.
        let cmd = Cmd::new("dpkg-query").args(["-W", "-f", dpkg::QUERY_FORMAT]);
        let out = ctx.host.run(&cmd)?;
        if !out.success() {
            return Err(Error::Refused(format!(
                "cannot read the dpkg database: {} failed ({}):\n{}",
                cmd.display(),
                exit_text(&out),
                tail(&combined(&out))
            )));
        }
        return Ok(Db::from_query(&String::from_utf8_lossy(&out.stdout)));
    }
    match ctx.host.read_file(Path::new(dpkg::STATUS)) {
        Ok(bytes) => Ok(Db::from_status(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.is_not_found() => Err(Error::Refused(format!(
            "{} does not exist: package steps need a Debian or Ubuntu host",
            dpkg::STATUS
        ))),
        Err(e) => Err(e.into()),
    }
}

fn facts(ctx: &Ctx<'_>) -> Result<Rc<Facts>, Error> {
    ctx.memo(FACTS_MEMO, || ctx.host.facts().map_err(Error::from))
}

fn change(kind: ChangeKind, what: &str) -> Change {
    Change::new(kind, Path::new(what))
}

fn package_change(kind: ChangeKind, name: &PackageName) -> Change {
    change(kind, &format!("package {}", name.qualified()))
}

/// "a, b" or "a" with the verb agreeing: "zsh 5.9 is installed", "a, b are installed".
fn listing(items: &[String], singular: &str, plural: &str) -> String {
    let verb = if items.len() == 1 { singular } else { plural };
    format!("{} {verb}", items.join(", "))
}

/// What a step would do to its named packages, from the database (and candidates for
/// `latest`). `todo` are the names a transaction must act on.
struct Wanted {
    changes: Vec<Change>,
    todo: Vec<PackageName>,
    /// For the in-sync reason: "zsh 5.9-4+b2".
    fine: Vec<String>,
}

fn wanted(step: &PackageStep, db: &Db, candidates: Option<&[Policy]>) -> Wanted {
    let mut w = Wanted {
        changes: Vec::new(),
        todo: Vec::new(),
        fine: Vec::new(),
    };
    for name in &step.names {
        let have = db.version(&name.name, name.arch.as_deref());
        match step.state {
            PackageState::Absent => match have {
                Some(v) => {
                    let mut c = package_change(ChangeKind::Remove, name);
                    c.before = Some(v.to_owned());
                    w.changes.push(c);
                    w.todo.push(name.clone());
                }
                None => w.fine.push(name.qualified()),
            },
            PackageState::Present => match (have, name.version.as_deref()) {
                (Some(v), None) => w.fine.push(format!("{} {v}", name.qualified())),
                (Some(v), Some(want)) if v == want => {
                    w.fine.push(format!("{} {v}", name.qualified()));
                }
                (Some(v), Some(want)) => {
                    let mut c = package_change(ChangeKind::Content, name);
                    c.before = Some(v.to_owned());
                    c.after = Some(want.to_owned());
                    w.changes.push(c);
                    w.todo.push(name.clone());
                }
                (None, want) => {
                    let mut c = package_change(ChangeKind::Create, name);
                    c.after = want.map(str::to_owned);
                    if let Some(deb) = &step.deb {
                        c.note = Some(match deb {
                            DebSource::File(rel) => format!("from files/{rel}"),
                            DebSource::Url(url) => format!("from {url}"),
                        });
                    }
                    w.changes.push(c);
                    w.todo.push(name.clone());
                }
            },
            PackageState::Latest => {
                let candidate = candidates
                    .and_then(|c| c.iter().find(|p| p.name == name.qualified()))
                    .and_then(|p| p.candidate.as_deref());
                match (have, candidate) {
                    (Some(v), Some(c)) if v != c => {
                        let mut ch = package_change(ChangeKind::Content, name);
                        ch.before = Some(v.to_owned());
                        ch.after = Some(c.to_owned());
                        w.changes.push(ch);
                        w.todo.push(name.clone());
                    }
                    (Some(v), _) => w.fine.push(format!("{} {v}", name.qualified())),
                    (None, c) => {
                        let mut ch = package_change(ChangeKind::Create, name);
                        ch.after = c.map(str::to_owned);
                        if c.is_none() {
                            ch.note = Some("no candidate in the package lists yet".to_owned());
                        }
                        w.changes.push(ch);
                        w.todo.push(name.clone());
                    }
                }
            }
        }
    }
    w
}

/// One package of `apt-cache policy` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// As asked: `name` or `name:arch`.
    pub name: String,
    pub installed: Option<String>,
    pub candidate: Option<String>,
}

/// Parses `apt-cache policy NAME...` (in the C locale): a `name:` line at column 0,
/// then indented `Installed:` and `Candidate:` lines; `(none)` is no version.
#[must_use]
pub fn parse_policy(text: &str) -> Vec<Policy> {
    let mut out: Vec<Policy> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.trim_end().strip_suffix(':')
                && !name.is_empty()
            {
                out.push(Policy {
                    name: name.to_owned(),
                    installed: None,
                    candidate: None,
                });
            }
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let t = line.trim();
        let version = |v: &str| (v != "(none)" && !v.is_empty()).then(|| v.to_owned());
        if let Some(v) = t.strip_prefix("Installed:") {
            cur.installed = version(v.trim());
        } else if let Some(v) = t.strip_prefix("Candidate:") {
            cur.candidate = version(v.trim());
        }
    }
    out
}

fn policy(step: &PackageStep, ctx: &Ctx<'_>) -> Result<Vec<Policy>, Error> {
    let cmd = Cmd::new("apt-cache")
        .arg("policy")
        .args(step.names.iter().map(PackageName::qualified))
        .env("LC_ALL", "C");
    let out = ctx.host.run(&cmd)?;
    if !out.success() {
        return Err(Error::Refused(format!(
            "{} failed ({}):\n{}",
            cmd.display(),
            exit_text(&out),
            tail(&combined(&out))
        )));
    }
    Ok(parse_policy(&String::from_utf8_lossy(&out.stdout)))
}

/// One line of a simulated transaction (`apt-get -s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimLine {
    /// `Inst name [old] (new ...)`: `old` is `None` for a new package.
    Inst {
        name: String,
        old: Option<String>,
        new: String,
    },
    /// `Remv name [old]`.
    Remv { name: String, old: Option<String> },
}

/// Parses the `Inst` and `Remv` lines of `apt-get -s` output (C locale).
#[must_use]
pub fn parse_simulation(text: &str) -> Vec<SimLine> {
    let bracket = |rest: &str| -> (Option<String>, String) {
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('[')
            && let Some((v, after)) = r.split_once(']')
        {
            return (Some(v.to_owned()), after.trim_start().to_owned());
        }
        (None, rest.to_owned())
    };
    text.lines()
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix("Inst ") {
                let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let (old, rest) = bracket(rest);
                let new = rest
                    .strip_prefix('(')
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                Some(SimLine::Inst {
                    name: name.to_owned(),
                    old,
                    new,
                })
            } else if let Some(rest) = line.strip_prefix("Remv ") {
                let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let (old, _) = bracket(rest);
                Some(SimLine::Remv {
                    name: name.to_owned(),
                    old,
                })
            } else {
                None
            }
        })
        .collect()
}

/// Runs `apt-get -s ARGS` without taking the dpkg lock: it only reads.
fn simulate(ctx: &Ctx<'_>, args: &[String]) -> Result<Vec<SimLine>, Error> {
    let cmd = Cmd::new("apt-get")
        .args(["-s", "-q", "-o", "Debug::NoLocking=true"])
        .args(args.iter().cloned())
        .env("LC_ALL", "C");
    let out = ctx.host.run(&cmd)?;
    if !out.success() {
        return Err(Error::Refused(format!(
            "{} failed ({}):\n{}",
            cmd.display(),
            exit_text(&out),
            tail(&combined(&out))
        )));
    }
    Ok(parse_simulation(&String::from_utf8_lossy(&out.stdout)))
}

fn upgrade_verb(step: &PackageStep) -> &'static str {
    match step.upgrade {
        Upgrade::DistUpgrade => "dist-upgrade",
        _ => "upgrade",
    }
}

fn upgrade_changes(step: &PackageStep, ctx: &Ctx<'_>) -> Result<Vec<Change>, Error> {
    let mut args = vec![upgrade_verb(step).to_owned()];
    if step.no_recommends {
        args.push("--no-install-recommends".to_owned());
    }
    let lines = simulate(ctx, &args)?;
    Ok(lines
        .into_iter()
        .map(|line| match line {
            SimLine::Inst { name, old, new } => {
                let mut c = change(
                    if old.is_some() {
                        ChangeKind::Content
                    } else {
                        ChangeKind::Create
                    },
                    &format!("package {name}"),
                );
                c.before = old;
                c.after = Some(new);
                c
            }
            SimLine::Remv { name, old } => {
                let mut c = change(ChangeKind::Remove, &format!("package {name}"));
                c.before = old;
                c.note = Some(format!("{} removes it", upgrade_verb(step)));
                c
            }
        })
        .collect())
}

/// Why the package lists need a refresh before this step's transaction, or `None`.
fn lists_reason(step: &PackageStep, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    let run = apt_run(ctx)?;
    if run.refreshed.get() {
        return Ok(None);
    }
    match step.update_lists {
        UpdateLists::Never => return Ok(None),
        UpdateLists::Always => return Ok(Some("update_lists = \"always\"".to_owned())),
        UpdateLists::Auto => {}
    }
    if run.sources_changed.get() {
        return Ok(Some("the apt sources changed in this run".to_owned()));
    }
    let entries = match ctx.host.read_dir(Path::new(LISTS)) {
        Ok(entries) => entries,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if !entries.iter().any(|e| e.contains("_Packages")) {
        return Ok(Some("there are no package lists".to_owned()));
    }
    let mut newest: Option<SystemTime> = None;
    for path in [LISTS, LISTS_PARTIAL, UPDATE_STAMP] {
        if let Some(t) = ctx.host.modified(Path::new(path))? {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    let age = newest
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    let max = ctx.settings.apt_lists_max_age;
    Ok((age > max).then(|| {
        format!(
            "last refreshed {} ago (apt_lists_max_age {})",
            human(age),
            human(max)
        )
    }))
}

/// "45 s", "12 min", "5 h", "3 days".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 48 * 3600 {
        format!("{} h", s / 3600)
    } else {
        format!("{} days", s / 86400)
    }
}

fn lists_change(reason: String) -> Change {
    let mut c = change(ChangeKind::Content, LISTS_CHANGE);
    c.before = Some(reason);
    c.after = Some("refreshed".to_owned());
    c
}

fn repair_change() -> Change {
    let mut c = change(ChangeKind::Content, REPAIR_CHANGE);
    c.before = Some("a dpkg run was interrupted".to_owned());
    c.after = Some("repaired (dpkg --configure -a)".to_owned());
    c
}

pub fn plan(step: &PackageStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    if step.upgrade != Upgrade::None {
        let mut changes = Vec::new();
        let broken = interrupted(ctx)?;
        if broken {
            changes.push(repair_change());
        }
        if let Some(reason) = lists_reason(step, ctx)? {
            changes.push(lists_change(reason));
        }
        // An interrupted dpkg makes apt refuse even to simulate; the repair comes first.
        if !broken {
            changes.extend(upgrade_changes(step, ctx)?);
        }
        return Ok(Plan {
            in_sync: if changes.is_empty() {
                format!("nothing to {}", upgrade_verb(step))
            } else {
                String::new()
            },
            changes,
        });
    }
    let db = installed(ctx)?;
    let candidates = match step.state {
        PackageState::Latest => Some(policy(step, ctx)?),
        _ => None,
    };
    let w = wanted(step, &db, candidates.as_deref());
    let mut changes = Vec::new();
    // `latest` depends on fresh lists even when nothing looks outdated; the others
    // refresh only for a transaction that happens anyway. Removal needs no lists.
    let needs_lists = match step.state {
        PackageState::Latest => true,
        PackageState::Present => !w.changes.is_empty(),
        PackageState::Absent => false,
    };
    if !w.changes.is_empty() && interrupted(ctx)? {
        changes.push(repair_change());
    }
    if needs_lists && let Some(reason) = lists_reason(step, ctx)? {
        changes.push(lists_change(reason));
    }
    changes.extend(w.changes);
    if !changes.is_empty() {
        return Ok(Plan {
            changes,
            in_sync: String::new(),
        });
    }
    let reason = match step.state {
        PackageState::Absent => listing(&w.fine, "is not installed", "are not installed"),
        PackageState::Present => listing(&w.fine, "is installed", "are installed"),
        PackageState::Latest => listing(
            &w.fine,
            "is installed at its candidate version",
            "are installed at their candidate versions",
        ),
    };
    Ok(Plan::in_sync(reason))
}

/// The package manager of this run and how its transactions are started.
struct Tx<'c, 'a> {
    ctx: &'c Ctx<'a>,
    nala: bool,
    systemd: bool,
}

/// Why one try of a transaction did not succeed.
enum TxError {
    /// Another process holds this lock.
    LockHeld(String),
    Failed(Error),
}
use TxError::{Failed, LockHeld};

impl From<crate::host::Error> for TxError {
    fn from(e: crate::host::Error) -> Self {
        Failed(e.into())
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        Failed(e)
    }
}

impl<'c, 'a> Tx<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Result<Self, Error> {
        let nala = !ctx.settings.prefer_apt && ctx.host.lstat(Path::new(NALA))?.is_some();
        let systemd = facts(ctx)?.systemd;
        Ok(Self { ctx, nala, systemd })
    }

    fn manager(&self) -> &'static str {
        if self.nala { "nala" } else { "apt-get" }
    }

    /// `-o DPkg::Lock::Timeout=N`: apt-get waits for the lock a bounded time (nala
    /// accepts the option but does not wait: `run` tries it again instead).
    fn lock_opts(&self) -> [String; 2] {
        [
            "-o".to_owned(),
            format!(
                "DPkg::Lock::Timeout={}",
                self.ctx.settings.apt_lock_timeout.as_secs()
            ),
        ]
    }

    /// Conffile questions get their default answer, or keep the local file.
    fn conffile_opts() -> [&'static str; 4] {
        [
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ]
    }

    fn update_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = if self.nala {
            vec!["nala".into(), "update".into()]
        } else {
            vec!["apt-get".into(), "update".into(), "-q".into()]
        };
        argv.extend(self.lock_opts());
        argv
    }

    /// Install (or change the version of) `targets`: names, `name=version`, or the
    /// path of a `.deb`. apt-get refuses any removal (`--no-remove`); nala has no such
    /// switch, so [`verify`] checks afterwards that nothing else went.
    fn install_argv(&self, no_recommends: bool, pinned: bool, targets: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = if self.nala {
            vec![
                "nala".into(),
                "install".into(),
                "-y".into(),
                "--no-autoremove".into(),
            ]
        } else {
            vec![
                "apt-get".into(),
                "install".into(),
                "-y".into(),
                "-q".into(),
                "--no-remove".into(),
                "-o".into(),
                "APT::Get::AutomaticRemove=false".into(),
            ]
        };
        if no_recommends {
            argv.push("--no-install-recommends".into());
        }
        if pinned && !self.nala {
            argv.push("--allow-downgrades".into());
        }
        argv.extend(self.lock_opts());
        argv.extend(Self::conffile_opts().map(str::to_owned));
        argv.extend(targets.iter().cloned());
        argv
    }

    /// `apt-get install --reinstall`, whichever manager installs otherwise.
    fn reinstall_argv(&self, targets: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = [
            "apt-get",
            "install",
            "--reinstall",
            "-y",
            "-q",
            "--no-remove",
            "-o",
            "APT::Get::AutomaticRemove=false",
        ]
        .map(str::to_owned)
        .to_vec();
        argv.extend(self.lock_opts());
        argv.extend(Self::conffile_opts().map(str::to_owned));
        argv.extend(targets.iter().cloned());
        argv
    }

    fn remove_argv(&self, targets: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = if self.nala {
            vec![
                "nala".into(),
                "remove".into(),
                "-y".into(),
                "--no-autoremove".into(),
            ]
        } else {
            vec![
                "apt-get".into(),
                "remove".into(),
                "-y".into(),
                "-q".into(),
                "-o".into(),
                "APT::Get::AutomaticRemove=false".into(),
            ]
        };
        argv.extend(self.lock_opts());
        argv.extend(targets.iter().cloned());
        argv
    }

    fn upgrade_argv(&self, step: &PackageStep) -> Vec<String> {
        let mut argv: Vec<String> = if self.nala {
            vec![
                "nala".into(),
                "upgrade".into(),
                "-y".into(),
                "--no-autoremove".into(),
                "--no-update".into(),
                if step.upgrade == Upgrade::DistUpgrade {
                    "--full"
                } else {
                    "--no-full"
                }
                .into(),
            ]
        } else {
            vec![
                "apt-get".into(),
                upgrade_verb(step).into(),
                "-y".into(),
                "-q".into(),
                "-o".into(),
                "APT::Get::AutomaticRemove=false".into(),
            ]
        };
        if step.no_recommends {
            argv.push("--no-install-recommends".into());
        }
        argv.extend(self.lock_opts());
        argv.extend(Self::conffile_opts().map(str::to_owned));
        argv
    }

    fn repair_argv() -> Vec<String> {
        [
            "dpkg",
            "--force-confdef",
            "--force-confold",
            "--configure",
            "-a",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs one program that changes packages: in its own transient unit under
    /// systemd, directly otherwise; `DEBIAN_FRONTEND=noninteractive` either way.
    /// Returns what it printed; a failure (or a dpkg lock it could not get, which nala
    /// reports with exit code 0) is a refusal with the end of that output.
    fn run(&self, argv: &[String]) -> Result<String, Error> {
        let timeout = self.ctx.settings.apt_lock_timeout;
        let started = std::time::Instant::now();
        loop {
            match self.run_once(argv) {
                // apt-get waited for the lock itself; nala gives up at once, so it is
                // tried again until the same bound.
                Err(LockHeld(_)) if self.nala && started.elapsed() + LOCK_RETRY <= timeout => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(LockHeld(lock)) => {
                    return Err(Error::Refused(format!(
                        "{}: {lock}; gave up after waiting up to {} s for it (the step runs again on the next converge; agent.toml apt_lock_timeout sets the wait)",
                        argv.join(" "),
                        timeout.as_secs()
                    )));
                }
                Err(Failed(e)) => return Err(e),
                Ok(printed) => return Ok(printed),
            }
        }
    }

    fn run_once(&self, argv: &[String]) -> Result<String, TxError> {
        let shown = argv.join(" ");
        let (cmd, offset) = if self.systemd {
            self.ensure_run_dir()?;
            let offset = self
                .ctx
                .host
                .lstat(Path::new(TX_LOG))?
                .map_or(0, |m| m.size);
            (Self::wrap(argv), Some(offset))
        } else {
            (
                Cmd::new(&argv[0])
                    .args(&argv[1..])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                None,
            )
        };
        let out = self.ctx.host.run(&cmd)?;
        let mut printed = combined(&out);
        if let Some(offset) = offset {
            // The unit's output, appended to the log after `offset`.
            match self.ctx.host.read_file(Path::new(TX_LOG)) {
                Ok(bytes) => {
                    let start = usize::try_from(offset)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let logged = String::from_utf8_lossy(&bytes[start..]).into_owned();
                    printed = if printed.trim().is_empty() {
                        logged
                    } else {
                        format!("{logged}\n{printed}")
                    };
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(lock) = lock_held(&printed) {
            return Err(LockHeld(lock));
        }
        if !out.success() {
            return Err(Failed(Error::Refused(format!(
                "{shown} failed ({}):\n{}",
                exit_text(&out),
                tail(&printed)
            ))));
        }
        Ok(printed)
    }

    /// `systemd-run --wait --collect ... -- ARGV`.
    fn wrap(argv: &[String]) -> Cmd {
        Cmd::new("systemd-run")
            .args([
                "--wait",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--description=infra-agent package transaction",
                &format!("--property=StandardOutput=append:{TX_LOG}"),
                "--property=StandardError=inherit",
                "--setenv=DEBIAN_FRONTEND=noninteractive",
                "--",
            ])
            .args(argv.iter().cloned())
    }

    fn ensure_run_dir(&self) -> Result<(), Error> {
        if self.ctx.host.lstat(Path::new(RUN_DIR))?.is_none() {
            self.ctx.host.create_dir(Path::new(RUN_DIR), 0o700, 0, 0)?;
        }
        Ok(())
    }

    /// Refreshes the package lists, once per run.
    fn update(&self) -> Result<(), Error> {
        self.run(&self.update_argv())?;
        let run = apt_run(self.ctx)?;
        run.refreshed.set(true);
        run.sources_changed.set(false);
        Ok(())
    }
}

/// "held by process 4242 (unattended-upgr)" from apt's or nala's lock message.
fn lock_held(printed: &str) -> Option<String> {
    let line = printed.lines().find(|l| {
        l.contains("Could not get lock")
            || l.contains("Unable to acquire the dpkg frontend lock")
            || l.contains("Unable to lock the administration directory")
            || l.contains("Unable to lock directory")
    })?;
    let path = line
        .split_whitespace()
        .find(|w| w.starts_with("/var/") || w.starts_with("(/var/"))
        .map_or("/var/lib/dpkg/lock-frontend", |w| {
            w.trim_matches(|c: char| c == '(' || c == ')' || c == '.' || c == ',')
        });
    let holder = printed
        .lines()
        .find_map(|l| l.split_once("held by process ").map(|(_, r)| r))
        .map(|r| r.trim_end_matches(|c: char| c == '.' || c.is_whitespace()));
    // apt-get update takes the lists' lock, which it does not wait for.
    let which = if path.contains("/dpkg/") {
        "dpkg lock"
    } else {
        "apt lock"
    };
    Some(match holder {
        Some(h) => format!("the {which} {path} is held by process {h}"),
        None => format!("the {which} {path} is held by another process"),
    })
}

pub(crate) fn combined(out: &CmdOutput) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match (stdout.trim().is_empty(), stderr.trim().is_empty()) {
        (_, true) => stdout.into_owned(),
        (true, false) => stderr.into_owned(),
        (false, false) => format!("{stdout}\n{stderr}"),
    }
}

pub(crate) fn exit_text(out: &CmdOutput) -> String {
    match (out.code, out.timed_out) {
        (_, true) => "timed out".to_owned(),
        (Some(code), _) => format!("exit code {code}"),
        (None, _) => "killed by a signal".to_owned(),
    }
}

/// The last [`TAIL_LINES`] non-empty lines, each cut to [`LINE_CHARS`] characters.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "(no output)".to_owned();
    }
    let start = lines.len().saturating_sub(TAIL_LINES);
    let mut out = String::new();
    for line in &lines[start..] {
        let cut: String = line.chars().take(LINE_CHARS).collect();
        let _ = writeln!(out, "  {cut}");
    }
    out.trim_end().to_owned()
}

pub fn apply(step: &PackageStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    let tx = Tx::new(ctx)?;
    let planned = |what: &str| plan.changes.iter().any(|c| c.path == what);
    if planned(REPAIR_CHANGE) && interrupted(ctx)? {
        let result = tx.run(&Tx::repair_argv());
        ctx.forget(DPKG_MEMO);
        result?;
    }
    if planned(LISTS_CHANGE) {
        tx.update()?;
    }
    if step.upgrade != Upgrade::None {
        // Whatever the refreshed lists offer now: the re-plan after apply checks it.
        let pending = upgrade_changes(step, ctx)?;
        let allowed: Vec<&str> = pending
            .iter()
            .filter(|c| c.kind == ChangeKind::Remove)
            .map(|c| c.path.as_str())
            .collect();
        if !pending.is_empty() {
            let before = installed(ctx)?;
            let result = tx.run(&tx.upgrade_argv(step));
            ctx.forget(DPKG_MEMO);
            ctx.forget_ids();
            let printed = result?;
            let after = installed(ctx)?;
            let gone = removed_between(&before, &after, |name| {
                allowed.iter().any(|a| *a == format!("package {name}"))
            });
            if !gone.is_empty() {
                return Err(Error::Refused(format!(
                    "{} removed {}, which the simulation did not show:\n{}",
                    tx.manager(),
                    gone.join(", "),
                    tail(&printed)
                )));
            }
        }
        return Ok(());
    }

    let db = installed(ctx)?;
    let candidates = match step.state {
        // The lists may have just changed: ask again.
        PackageState::Latest => Some(policy(step, ctx)?),
        _ => None,
    };
    let w = wanted(step, &db, candidates.as_deref());
    if w.todo.is_empty() {
        return Ok(());
    }
    // A package dpkg was killed while unpacking (half-installed, reinstreq) is
    // repaired only by reinstalling it; apt and nala both think there is nothing to do,
    // and nala cannot reinstall, so apt-get does it.
    let broken: Vec<String> = w
        .todo
        .iter()
        .filter(|n| step.state != PackageState::Absent && db.needs_reinstall(&n.name))
        .map(ToString::to_string)
        .collect();
    if !broken.is_empty() {
        let result = tx.run(&tx.reinstall_argv(&broken));
        ctx.forget(DPKG_MEMO);
        result?;
    }
    let result = match step.state {
        PackageState::Absent => remove(&tx, ctx, &w.todo),
        _ => {
            if let Some(source) = &step.deb {
                install_deb(&tx, ctx, step, source, &w.todo[0])
            } else {
                let targets: Vec<String> = w
                    .todo
                    .iter()
                    .map(ToString::to_string)
                    .filter(|n| !broken.contains(n))
                    .collect();
                let pinned = w.todo.iter().any(|n| n.version.is_some());
                if targets.is_empty() {
                    // All of them were reinstalled above.
                    Ok(String::new())
                } else {
                    tx.run(&tx.install_argv(step.no_recommends, pinned, &targets))
                }
            }
        }
    };
    ctx.forget(DPKG_MEMO);
    // Maintainer scripts create system users and groups (docker.io adds `docker`):
    // later steps of the run must look them up again.
    ctx.forget_ids();
    let printed = result?;
    verify(step, &tx, ctx, &db, &w.todo, &printed)
}

/// Installed in `before`, not in `after`, and not `allowed`: `name` or `name:arch`.
fn removed_between(before: &Db, after: &Db, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    before
        .versions()
        .into_keys()
        .filter(|key| {
            let (name, arch) = match key.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (key.as_str(), None),
            };
            after.version(name, arch).is_none() && !allowed(key)
        })
        .collect()
}

/// Removes `todo` after checking with a simulation that nothing else would go with
/// them (apt removes what depends on a removed package).
fn remove(tx: &Tx<'_, '_>, ctx: &Ctx<'_>, todo: &[PackageName]) -> Result<String, Error> {
    let targets: Vec<String> = todo.iter().map(PackageName::qualified).collect();
    let mut args = vec!["remove".to_owned()];
    args.extend(targets.iter().cloned());
    let extra: Vec<String> = simulate(ctx, &args)?
        .into_iter()
        .filter_map(|line| match line {
            SimLine::Remv { name, .. } => Some(name),
            SimLine::Inst { .. } => None,
        })
        .filter(|removed| {
            !todo
                .iter()
                .any(|n| &n.name == removed || &n.qualified() == removed)
        })
        .collect();
    if !extra.is_empty() {
        return Err(Error::Refused(format!(
            "removing {} would also remove {}, which this step does not name; nothing was removed",
            targets.join(", "),
            extra.join(", ")
        )));
    }
    tx.run(&tx.remove_argv(&targets))
}

/// Puts the `.deb` in [`DEB_DIR`], checks its hash and what it contains, installs it
/// in one transaction and removes it again.
fn install_deb(
    tx: &Tx<'_, '_>,
    ctx: &Ctx<'_>,
    step: &PackageStep,
    source: &DebSource,
    name: &PackageName,
) -> Result<String, Error> {
    let dir = Path::new(DEB_DIR);
    if ctx.host.lstat(dir)?.is_none() {
        ctx.host.create_dir(dir, 0o755, 0, 0)?;
    }
    let path = dir.join(format!("{}.deb", name.name));
    let result = fetch_and_install(tx, ctx, step, source, name, &path);
    if ctx.host.lstat(&path)?.is_some() {
        ctx.host.remove_file(&path)?;
    }
    result
}

fn fetch_and_install(
    tx: &Tx<'_, '_>,
    ctx: &Ctx<'_>,
    step: &PackageStep,
    source: &DebSource,
    name: &PackageName,
    path: &Path,
) -> Result<String, Error> {
    let shown = path.display().to_string();
    if ctx.host.lstat(path)?.is_some() {
        ctx.host.remove_file(path)?;
    }
    match source {
        DebSource::File(rel) => {
            let bytes = (ctx.files)(rel)
                .map_err(|e| Error::Refused(format!("cannot read files/{rel}: {e}")))?;
            let staged = ctx.host.stage_file(path, &bytes, 0o644, 0, 0)?;
            ctx.host.commit_file(&staged, path)?;
            if let Some(want) = &step.sha256 {
                let cmd = Cmd::new("sha256sum").args(["--", shown.as_str()]);
                let out = ctx.host.run(&cmd)?;
                let text = String::from_utf8_lossy(&out.stdout);
                let got = text.split_whitespace().next().unwrap_or_default();
                if !out.success() || got.len() != 64 {
                    return Err(Error::Refused(format!(
                        "cannot compute the sha256 of {shown}: {} ({})",
                        tail(&combined(&out)),
                        exit_text(&out)
                    )));
                }
                if !got.eq_ignore_ascii_case(want) {
                    return Err(Error::Refused(format!(
                        "files/{rel} has sha256 {got}, but the step says {want}; nothing was installed"
                    )));
                }
            }
        }
        DebSource::Url(url) => {
            let want = step
                .sha256
                .as_deref()
                .expect("a URL has a sha256, because build requires it");
            let cmd = Cmd::new(APT_HELPER).args([
                "download-file",
                url.as_str(),
                shown.as_str(),
                &format!("SHA256:{want}"),
            ]);
            let out = ctx.host.run(&cmd)?;
            if !out.success() {
                let printed = combined(&out);
                let why = if printed.contains("Hash Sum mismatch") {
                    format!("its sha256 is not {want}")
                } else {
                    exit_text(&out)
                };
                return Err(Error::Refused(format!(
                    "downloading {url} failed: {why}; nothing was installed:\n{}",
                    tail(&printed)
                )));
            }
        }
    }
    // What the file contains must be what `names` says.
    let cmd = Cmd::new("dpkg-deb").args(["--field", shown.as_str(), "Package", "Version"]);
    let out = ctx.host.run(&cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |f: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(f).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
    };
    let (Some(package), Some(version)) = (field("Package"), field("Version")) else {
        return Err(Error::Refused(format!(
            "{shown} is not a readable .deb ({}): {}",
            exit_text(&out),
            tail(&combined(&out))
        )));
    };
    if package != name.name {
        return Err(Error::Refused(format!(
            "the .deb contains package {package} {version}, but `names` says {}; nothing was installed",
            name.name
        )));
    }
    if let Some(want) = &name.version
        && want != version
    {
        return Err(Error::Refused(format!(
            "the .deb contains {package} {version}, but `names` asks for version {want}; nothing was installed"
        )));
    }
    tx.run(&tx.install_argv(step.no_recommends, name.version.is_some(), &[shown]))
}

/// Reads the database again after a transaction: everything asked for is done, and
/// nothing else was removed.
fn verify(
    step: &PackageStep,
    tx: &Tx<'_, '_>,
    ctx: &Ctx<'_>,
    before: &Db,
    todo: &[PackageName],
    printed: &str,
) -> Result<(), Error> {
    let after = installed(ctx)?;
    let not_done: Vec<String> = todo
        .iter()
        .filter(|n| {
            let have = after.version(&n.name, n.arch.as_deref());
            match step.state {
                PackageState::Absent => have.is_some(),
                _ => match (&n.version, have) {
                    (_, None) => true,
                    (Some(want), Some(v)) => want != v,
                    (None, Some(_)) => false,
                },
            }
        })
        .map(ToString::to_string)
        .collect();
    if !not_done.is_empty() {
        let what = if step.state == PackageState::Absent {
            listing(&not_done, "is still installed", "are still installed")
        } else {
            listing(
                &not_done,
                "is still not installed",
                "are still not installed",
            )
        };
        return Err(Error::Refused(format!(
            "{} finished, but {what}; it printed:\n{}",
            tx.manager(),
            tail(printed)
        )));
    }
    let gone = removed_between(before, &after, |key| {
        step.state == PackageState::Absent
            && todo.iter().any(|n| n.qualified() == key || n.name == key)
    });
    if !gone.is_empty() {
        return Err(Error::Refused(format!(
            "{} removed {}, which this step did not ask for; it printed:\n{}",
            tx.manager(),
            gone.join(", "),
            tail(printed)
        )));
    }
    Ok(())
}

/// What a notification does: nothing (a package step converges the same way).
pub fn refresh(_step: &PackageStep, _plan: &Plan, _ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    Ok(None)
}

/// `package zsh, ripgrep`, `package upgrade`, `package dist-upgrade`.
#[must_use]
pub fn describe(step: &PackageStep) -> String {
    if step.upgrade != Upgrade::None {
        return format!("package {}", upgrade_verb(step));
    }
    let names: Vec<String> = step.names.iter().map(PackageName::qualified).collect();
    format!("package {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_output() {
        let text = "\
zsh:
  Installed: (none)
  Candidate: 5.9-4+b15
  Version table:
     5.9-4+b15 500
        500 http://mirror.example/debian bookworm/main amd64 Packages
hostname:
  Installed: 3.23+nmu1
  Candidate: 3.23+nmu1
  Version table:
 *** 3.23+nmu1 500
        100 /var/lib/dpkg/status
libc6:i386:
  Installed: (none)
  Candidate: (none)
";
        assert_eq!(
            parse_policy(text),
            [
                Policy {
                    name: "zsh".into(),
                    installed: None,
                    candidate: Some("5.9-4+b15".into())
                },
                Policy {
                    name: "hostname".into(),
                    installed: Some("3.23+nmu1".into()),
                    candidate: Some("3.23+nmu1".into())
                },
                Policy {
                    name: "libc6:i386".into(),
                    installed: None,
                    candidate: None
                },
            ]
        );
    }

    #[test]
    fn simulation_output() {
        let text = "\
Reading package lists...
The following packages will be upgraded:
  base-files bash
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst linux-image-6.1.0-40-amd64 (6.1.153-1 Debian-Security:12/oldstable-security [amd64])
Remv infra-c [1.0]
Remv orphan
";
        assert_eq!(
            parse_simulation(text),
            [
                SimLine::Inst {
                    name: "base-files".into(),
                    old: Some("12.4+deb12u11".into()),
                    new: "12.4+deb12u15".into()
                },
                SimLine::Inst {
                    name: "linux-image-6.1.0-40-amd64".into(),
                    old: None,
                    new: "6.1.153-1".into()
                },
                SimLine::Remv {
                    name: "infra-c".into(),
                    old: Some("1.0".into())
                },
                SimLine::Remv {
                    name: "orphan".into(),
                    old: None
                },
            ]
        );
    }

    #[test]
    fn lock_messages() {
        let apt = "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 32458 (python3)...\n\
                   E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?";
        assert_eq!(
            lock_held(apt).as_deref(),
            Some("the dpkg lock /var/lib/dpkg/lock-frontend is held by process 32458 (python3)")
        );
        let nala = "Error: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend)\n\
                    Error: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 7 (apt-get)\n\
                    Finished Successfully";
        assert!(lock_held(nala).unwrap().contains("process 7 (apt-get)"));
        assert_eq!(lock_held("Setting up zsh (5.9-4+b2) ..."), None);
        let update =
            "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 9 (apt-get)";
        assert_eq!(
            lock_held(update).as_deref(),
            Some("the apt lock /var/lib/apt/lists/lock is held by process 9 (apt-get)")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human(Duration::from_secs(59)), "59 s");
        assert_eq!(human(Duration::from_hours(1)), "60 min");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 5)), "3 h");
        assert_eq!(human(Duration::from_hours(5 * 24)), "5 days");
    }
}
