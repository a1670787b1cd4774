//! Rollback: a revert restores the host, not just the repository.
//!
//! After every full, non-dry run the agent writes `state_dir/managed.json`
//! (`infra-agent/managed/v1`): each path a rendered step manages and what the agent
//! left there (its kind, a regular file's sha256, a link's target). The next run
//! compares that record with its own catalog. A path that no rendered step manages
//! any more has left the desired state (a `git revert`, a role taken off a group, a
//! `when` that is now false) and is put back as [`Originals`] says it was before the
//! agent first changed it: what the agent created is removed (a directory only when
//! empty), what it changed gets its content, mode and owner (or link target) back.
//! A path changed since the agent last wrote it is left as it is. Each rollback is a
//! step report with id `rollback`, so output, exit codes and dry runs work as for any
//! step.
//!
//! Packages, services and users are rolled back only where their step opts in with
//! `prune = true`: the record then also lists what such a step manages ([`Held`]) and
//! what rollback needs to undo it (whether the agent installed the package or created
//! the user, what the unit was before the agent changed it). When the step goes away,
//! the agent removes the packages it installed, puts the unit's `enabled` and running
//! state back, and removes the account it created (keeping its home), each through the
//! step type's own resource, so a removal is planned, guarded (the package
//! simulation, the lockout guard) and checked like a step's. Whatever a step of the
//! current catalog still names is never touched; a step whose `prune` turns false
//! stops being managed, and nothing is removed.
//!
//! Invariants: nothing is rolled back with `--only` (the run did not see the whole
//! catalog) or without a compiled catalog (the caller's duty: there is nothing to
//! compare with); a dry run changes nothing and writes no record; a record that cannot
//! be read rolls nothing back; groups and commands are never rolled back, nor packages,
//! services and users whose step did not opt in.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::resource::download::sha256_hex;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::diff;
use crate::engine::{Options, RunReport, Status, StepReport};
use crate::host::{self, Host, Kind, Stamp};
use crate::originals::{Originals, Record};
use crate::resource::lockout::{self, Proposal};
use crate::resource::{self, Change, ChangeKind, Ctx, service};
use crate::step::Presence;
use crate::step::StepKind;
use crate::step::file::FileContent;
use crate::step::package::{PackageName, PackageState, PackageStep, UpdateLists, Upgrade};
use crate::step::service::{OnNotify, RunState, ServiceStep};
use crate::step::user::UserStep;

/// Version of `managed.json`.
pub const SCHEMA: &str = "infra-agent/managed/v1";
/// The record's name under the state directory.
pub const FILE: &str = "managed.json";
/// The step id rollbacks are reported under (the instance is the path).
pub const ID: &str = "rollback";

/// `managed.json`: the paths the catalog of the last full run manages, and the
/// packages, units and users its steps with `prune = true` manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    pub schema: String,
    pub paths: BTreeMap<String, Entry>,
    /// Sorted by kind (services, users, packages: the order of their rollback), then
    /// name. Absent in records of agents before the opt-in: nothing held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Held>,
}

/// A package, unit or user a step with `prune = true` manages, and the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    #[serde(flatten)]
    pub what: Resource,
    /// The step: `tools`, or `users[alice]` for a `for_each` instance.
    pub step: String,
    /// Where the step is written: `roles/base.toml:12`.
    pub source: String,
}

/// What rollback may undo for one package, unit or user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A package as `names` gives it, without the version (`zsh`, `libc6:i386`).
    Package {
        name: String,
        /// The agent installed it (it was not installed when the step was first
        /// planned with `prune = true`, or in a later run): only then is it removed.
        installed_by_agent: bool,
    },
    /// A systemd unit, and what it was before the agent first changed it, for each of
    /// `enabled` and `state` the step sets (`None`: the step leaves it alone).
    Service {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enabled_before: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running_before: Option<bool>,
    },
    /// A user account.
    User {
        name: String,
        /// The agent created it: only then is it removed.
        created_by_agent: bool,
    },
}

impl Resource {
    /// The kind's place in the rollback order, and the name.
    fn key(&self) -> (u8, &str) {
        match self {
            Self::Service { name, .. } => (0, name),
            Self::User { name, .. } => (1, name),
            Self::Package { name, .. } => (2, name),
        }
    }
}

/// What the agent left at one path, and the step that manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub left: Left,
    /// The step: `motd`, or `users[alice]` for a `for_each` instance.
    pub step: String,
    /// Where the step is written: `roles/base.toml:12`.
    pub source: String,
    /// The step's content is secret: a rollback never shows it in a diff.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// The file's [`Stamp`] when its `sha256` was taken: the next run that finds the
    /// same stamp keeps the sum without reading the file again. Only a stamp of a file
    /// that had not changed for [`STAMP_MARGIN`] is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// How long a file must have been left alone before its stamp vouches for its content:
/// well over the coarsest clock tick file times are taken with.
pub const STAMP_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A path as the agent left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Left {
    File {
        sha256: String,
    },
    Directory,
    Symlink {
        target: String,
    },
    /// A step made sure the path does not exist (`state = "absent"`).
    Absent,
    /// A device, socket or FIFO: rollback never touches it.
    Other,
}

impl Left {
    fn noun(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Directory => "directory",
            Self::Symlink { .. } => "symlink",
            Self::Absent | Self::Other => "path",
        }
    }

    /// The kind as the originals record names it.
    fn record_kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Directory => "dir",
            Self::Symlink { .. } => "symlink",
            Self::Absent | Self::Other => "other",
        }
    }
}

/// The paths a rendered step manages, for rollback, each with whether the step's
/// content is secret. Only what the step alone determines: an `authorized_keys` step
/// without `path` (a file in the user's home) and `nala_fetch` (what nala writes) list
/// nothing, like the step types that manage no file.
#[must_use]
pub fn managed_paths(kind: &StepKind) -> Vec<(String, bool)> {
    let paths = match kind {
        StepKind::File(s) => return vec![(normal(&s.path), s.sensitive)],
        StepKind::Template(s) => return vec![(normal(&s.path), s.sensitive)],
        StepKind::Directory(s) => vec![s.path.clone()],
        StepKind::Symlink(s) => vec![s.path.clone()],
        StepKind::Download(s) => vec![s.path.clone()],
        StepKind::AuthorizedKeys(s) => s.path.iter().cloned().collect(),
        StepKind::AptRepository(s) => vec![
            s.sources_path(),
            s.keyring_path("asc"),
            s.keyring_path("gpg"),
        ],
        StepKind::Package(_)
        | StepKind::Service(_)
        | StepKind::Command(_)
        | StepKind::User(_)
        | StepKind::Group(_)
        | StepKind::NalaFetch(_)
        | StepKind::Compose(_) => Vec::new(),
    };
    paths.iter().map(|p| (normal(p), false)).collect()
}

/// `/etc//x/` and `/etc/x` are one path.
fn normal(path: &str) -> String {
    Path::new(path)
        .components()
        .collect::<PathBuf>()
        .to_string_lossy()
        .into_owned()
}

/// Where the record is kept.
#[must_use]
pub fn managed_file(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The sum of a file's content as the last full run left it, and the stamp that
/// vouches for it (see [`Entry::stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub stamp: Stamp,
    pub sha256: String,
}

/// The files of `managed.json` whose stamps vouch for their sums, by path: a file plan
/// that finds the same stamp, and the same sum for the content it wants, knows the
/// content is in place without reading the file (`resource/file.rs`). Read once per
/// run; a missing or unusable record vouches for nothing (the rollback reports it).
pub fn vouched_files(ctx: &Ctx<'_>) -> std::rc::Rc<HashMap<PathBuf, Vouched>> {
    let load_vouched = || -> Result<HashMap<PathBuf, Vouched>, resource::Error> {
        let file = managed_file(&ctx.settings.state_dir);
        let Ok(Previous::Read(doc)) = &*load_once(ctx, &file) else {
            return Ok(HashMap::new());
        };
        Ok(doc
            .paths
            .iter()
            .filter_map(|(path, entry)| match (&entry.left, entry.stamp) {
                (Left::File { sha256 }, Some(stamp)) => Some((
                    PathBuf::from(path),
                    Vouched {
                        stamp,
                        sha256: sha256.clone(),
                    },
                )),
                _ => None,
            })
            .collect())
    };
    ctx.memo(VOUCHED_MEMO, load_vouched)
        .unwrap_or_else(|_| std::rc::Rc::new(HashMap::new()))
}

/// The memo key of [`vouched_files`].
const VOUCHED_MEMO: &str = "vouched-files";
/// The memo key of [`load_once`].
const RECORD_MEMO: &str = "managed-record";

/// `managed.json` as the run found it, read once for the file plans and rollback.
/// Rollback writes the new record last, when nothing reads it again in the run.
fn load_once(ctx: &Ctx<'_>, file: &Path) -> std::rc::Rc<Result<Previous, String>> {
    ctx.memo(RECORD_MEMO, || {
        Ok(load(ctx.host, file).map_err(|e| e.to_string()))
    })
    .unwrap_or_else(|e| std::rc::Rc::new(Err(e.to_string())))
}

/// Rolls back what left the catalog since the last full run, appends a report per
/// path to `report`, and (unless a dry run) writes the new record. Runs after
/// `engine::run` with the same catalog, context and options. Returns warnings for
/// the user (a damaged record, a path that could not be observed).
pub fn run(
    catalog: &Catalog,
    ctx: &Ctx<'_>,
    options: &Options,
    report: &mut RunReport,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !options.only.is_empty() {
        return warnings;
    }
    let dry_run = options.dry_run;
    let state_dir = ctx.settings.state_dir.clone();
    let file = managed_file(&state_dir);
    let (previous, damaged) = match &*load_once(ctx, &file) {
        Ok(Previous::Missing) => (None, None),
        Ok(Previous::Read(doc)) => (Some(doc.clone()), None),
        Ok(Previous::Damaged { bytes, why }) => {
            let kept = if dry_run {
                "a real run keeps it"
            } else {
                "it is kept"
            };
            warnings.push(format!(
                "{} cannot be used ({why}): nothing is rolled back this run, and the paths it named are no longer managed; {kept} as {}.damaged",
                file.display(),
                file.display()
            ));
            (None, Some(bytes.clone()))
        }
        Err(e) => {
            warnings.push(format!(
                "cannot read {}: {e}; nothing is rolled back this run and the record is left as it is",
                file.display()
            ));
            return warnings;
        }
    };
    let ran = &report.steps;
    if ran.len() != catalog.steps.len()
        || ran
            .iter()
            .zip(&catalog.steps)
            .any(|(r, s)| r.id != s.id || r.instance != s.instance)
    {
        warnings.push(
            "internal: the run's report does not match its catalog; nothing is rolled back and the managed record is left as it is".to_owned(),
        );
        return warnings;
    }
    let empty = BTreeMap::new();
    let before = previous.as_ref().map_or(&empty, |doc| &doc.paths);
    let held_before: &[Held] = previous.as_ref().map_or(&[], |doc| &doc.resources);
    let (mut next, current) = record_catalog(catalog, ran, ctx, before, &mut warnings);
    let mut held_next = record_resources(catalog, ran, held_before);
    let candidates = candidates(before, &current);
    let held_gone = resources_gone(held_before, catalog);
    if report.stopped {
        // The agent is stopping: rollback waits for the next run.
        for (path, entry) in candidates {
            next.insert(path.clone(), entry.clone());
        }
        held_next.extend(held_gone.into_iter().cloned());
    } else {
        let mut rollback = Rollback {
            ctx,
            catalog,
            originals: Originals::new(&state_dir),
            dry_run,
            source: file.display().to_string(),
            gone: HashSet::new(),
            warnings: Vec::new(),
        };
        // A unit is stopped before the files it reads go, and accounts and packages
        // go after both.
        let (services, others): (Vec<&Held>, Vec<&Held>) = held_gone
            .into_iter()
            .partition(|h| matches!(h.what, Resource::Service { .. }));
        for held in services {
            let (item, keep) = rollback.service(held);
            if keep {
                held_next.push(held.clone());
            }
            report.steps.push(item);
        }
        for (path, entry) in candidates {
            let (item, keep) = rollback.one(path, entry);
            if keep {
                next.insert(path.clone(), entry.clone());
            }
            report.steps.push(item);
        }
        let (users, packages): (Vec<&Held>, Vec<&Held>) = others
            .into_iter()
            .partition(|h| matches!(h.what, Resource::User { .. }));
        for held in users {
            let (item, keep) = rollback.user(held);
            if keep {
                held_next.push(held.clone());
            }
            report.steps.push(item);
        }
        for group in by_step(&packages) {
            let (item, keep) = rollback.packages(&group);
            if keep {
                held_next.extend(group.iter().map(|h| (*h).clone()));
            }
            report.steps.push(item);
        }
        warnings.append(&mut rollback.warnings);
    }
    held_next.sort_by(|a, b| a.what.key().cmp(&b.what.key()));
    if dry_run {
        return warnings;
    }
    if let Some(bytes) = &damaged {
        let aside = PathBuf::from(format!("{}.damaged", file.display()));
        if let Err(e) = write_file(ctx, &aside, bytes) {
            warnings.push(format!(
                "cannot keep the unusable record as {}: {e}",
                aside.display()
            ));
        }
    }
    let must_write = match &previous {
        Some(doc) => doc.paths != next || doc.resources != held_next,
        None => damaged.is_some() || !next.is_empty() || !held_next.is_empty(),
    };
    if must_write {
        let doc = Managed {
            schema: SCHEMA.to_owned(),
            paths: next,
            resources: held_next,
        };
        let json = serde_json::to_vec_pretty(&doc).expect("the record always serializes");
        if let Err(e) = write_file(ctx, &file, &json) {
            report.steps.push(record_failure(&file, &state_dir, &e));
        }
    }
    warnings
}

/// The previous record.
#[derive(Clone)]
enum Previous {
    Missing,
    Read(Managed),
    /// Not a record of this version: its bytes, and why.
    Damaged {
        bytes: Vec<u8>,
        why: String,
    },
}

fn load(host: &dyn Host, file: &Path) -> Result<Previous, host::Error> {
    if host.lstat(file)?.is_none() {
        return Ok(Previous::Missing);
    }
    let bytes = host.read_file(file)?;
    Ok(match serde_json::from_slice::<Managed>(&bytes) {
        Ok(doc) if doc.schema == SCHEMA => Previous::Read(doc),
        Ok(doc) => Previous::Damaged {
            bytes,
            why: format!(
                "its schema is {:?}, not {SCHEMA:?}: another version of the agent wrote it",
                doc.schema
            ),
        },
        Err(e) => Previous::Damaged {
            bytes,
            why: format!("it is not a valid record: {e}"),
        },
    })
}

/// Writes a file of the state directory atomically (0600, root), creating the
/// directory when missing.
fn write_file(ctx: &Ctx<'_>, file: &Path, bytes: &[u8]) -> Result<(), resource::Error> {
    if let Some(dir) = file.parent() {
        resource::nala_fetch::ensure_dir(ctx, dir)?;
    }
    let staged = ctx.host.stage_file(file, bytes, 0o600, 0, 0)?;
    ctx.host.commit_file(&staged, file)?;
    Ok(())
}

fn record_failure(file: &Path, state_dir: &Path, e: &resource::Error) -> StepReport {
    let mut item = blank(&file.display().to_string(), file.display().to_string());
    item.resource = format!("record {}", file.display());
    item.status = Status::Failed;
    item.error = Some(format!(
        "cannot write the managed record {}: {e}\nhint: make {} writable by root; until then rollback does not know what this run manages",
        file.display(),
        state_dir.display()
    ));
    item
}

/// The new record of the paths the catalog manages, and the set of those paths. A
/// step that ended in sync or changed records what it left; one that failed or was
/// skipped keeps its path's previous entry (the path is still managed).
fn record_catalog(
    catalog: &Catalog,
    ran: &[StepReport],
    ctx: &Ctx<'_>,
    previous: &BTreeMap<String, Entry>,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, Entry>, BTreeSet<String>) {
    let host = ctx.host;
    let mut next = BTreeMap::new();
    let mut current = BTreeSet::new();
    let now = std::time::SystemTime::now();
    for (step, done) in catalog.steps.iter().zip(ran) {
        let Some(desired) = &step.desired else {
            continue;
        };
        let settled = matches!(done.status, Status::InSync | Status::Changed);
        for (path, sensitive) in managed_paths(desired) {
            current.insert(path.clone());
            let observed = if settled {
                let vouched = ctx.was_vouched(Path::new(&path));
                match observe_for_record(host, Path::new(&path), previous.get(&path), now, vouched)
                {
                    Ok(left) => Some(left),
                    Err(e) => {
                        warnings.push(format!(
                            "cannot read {path} to record what step `{}` left there: {e}; its previous record is kept",
                            step.name()
                        ));
                        None
                    }
                }
            } else {
                None
            };
            match observed {
                Some((left, stamp)) => {
                    let entry = Entry {
                        left,
                        step: step.name(),
                        source: format!("{}:{}", step.file, step.line),
                        sensitive,
                        stamp,
                    };
                    next.insert(path, entry);
                }
                None => {
                    if let Some(entry) = previous.get(&path) {
                        next.entry(path).or_insert_with(|| entry.clone());
                    }
                }
            }
        }
    }
    (next, current)
}

/// The paths of the previous record that the catalog no longer manages, in the order
/// they are rolled back: files and links first, then directories deepest first, so a
/// directory the agent created is looked at once what it held is gone.
fn candidates<'p>(
    previous: &'p BTreeMap<String, Entry>,
    current: &BTreeSet<String>,
) -> Vec<(&'p String, &'p Entry)> {
    let mut list: Vec<(&String, &Entry)> = previous
        .iter()
        .filter(|(path, _)| !current.contains(*path))
        .collect();
    list.sort_by_key(|(path, entry)| {
        let dir = entry.left == Left::Directory;
        let depth = if dir {
            Path::new(path.as_str()).components().count()
        } else {
            0
        };
        (dir, Reverse(depth), path.as_str())
    });
    list
}

/// What the steps with `prune = true` of this run manage. A step that ended in sync
/// or changed records it, from its report (its plan read the dpkg database, the unit
/// or the account before any change); one that failed or was skipped keeps the
/// previous entry (and one that failed after installing a package or creating an
/// account records that). What the agent installed or created, and what a unit was before,
/// is what the first record says, so a later run never makes the agent forget that it
/// installed a package.
fn record_resources(catalog: &Catalog, ran: &[StepReport], previous: &[Held]) -> Vec<Held> {
    let mut next: BTreeMap<(u8, String), Held> = BTreeMap::new();
    let find = |kind: u8, name: &str| previous.iter().find(|h| h.what.key() == (kind, name));
    for (step, done) in catalog.steps.iter().zip(ran) {
        let Some(desired) = &step.desired else {
            continue;
        };
        let settled = matches!(done.status, Status::InSync | Status::Changed);
        // A step that failed after changing the machine (a transaction that installed
        // a package, then failed its check) did what its changes say as far as the
        // record is concerned: the agent installed or created it.
        let changed = |kind: ChangeKind, path: &str| {
            (done.status == Status::Changed || done.modified)
                && done
                    .changes
                    .iter()
                    .any(|c| c.kind == kind && c.path == path)
        };
        let held = |what: Resource| Held {
            what,
            step: step.name(),
            source: format!("{}:{}", step.file, step.line),
        };
        let mut found: Vec<Held> = Vec::new();
        match desired {
            StepKind::Package(p) if p.prune => {
                for name in &p.names {
                    let name = name.qualified();
                    let before = find(2, &name);
                    let had = matches!(
                        before.map(|h| &h.what),
                        Some(Resource::Package {
                            installed_by_agent: true,
                            ..
                        })
                    );
                    let installed_now = changed(ChangeKind::Create, &format!("package {name}"));
                    if settled || installed_now {
                        found.push(held(Resource::Package {
                            name,
                            installed_by_agent: had || installed_now,
                        }));
                    } else {
                        found.extend(before.cloned());
                    }
                }
            }
            StepKind::Service(svc) if svc.prune => {
                let before = find(0, &svc.unit);
                if settled {
                    let (had_enabled, had_running) = match before.map(|h| &h.what) {
                        Some(Resource::Service {
                            enabled_before,
                            running_before,
                            ..
                        }) => (*enabled_before, *running_before),
                        _ => (None, None),
                    };
                    // A change says what the unit was; no change: it already was as
                    // the step wants.
                    let enabled_before = svc.enabled.map(|want| {
                        had_enabled.unwrap_or(if changed(ChangeKind::Enable, &svc.unit) {
                            false
                        } else if changed(ChangeKind::Disable, &svc.unit) {
                            true
                        } else {
                            want
                        })
                    });
                    let running_before = svc.state.map(|want| {
                        had_running.unwrap_or(if changed(ChangeKind::Start, &svc.unit) {
                            false
                        } else if changed(ChangeKind::Stop, &svc.unit) {
                            true
                        } else {
                            want == RunState::Running
                        })
                    });
                    found.push(held(Resource::Service {
                        name: svc.unit.clone(),
                        enabled_before,
                        running_before,
                    }));
                } else {
                    found.extend(before.cloned());
                }
            }
            StepKind::User(u) if u.prune => {
                let before = find(1, &u.name);
                let had = matches!(
                    before.map(|h| &h.what),
                    Some(Resource::User {
                        created_by_agent: true,
                        ..
                    })
                );
                let created_now = changed(ChangeKind::Create, &u.name);
                if settled || created_now {
                    found.push(held(Resource::User {
                        name: u.name.clone(),
                        created_by_agent: had || created_now,
                    }));
                } else {
                    found.extend(before.cloned());
                }
            }
            _ => {}
        }
        for h in found {
            let (kind, name) = h.what.key();
            let key = (kind, name.to_owned());
            match next.get_mut(&key) {
                // Two steps name the same package: the first keeps it, and the agent
                // installed it if either says so.
                Some(Held {
                    what:
                        Resource::Package {
                            installed_by_agent, ..
                        },
                    ..
                }) => {
                    if let Resource::Package {
                        installed_by_agent: also,
                        ..
                    } = h.what
                    {
                        *installed_by_agent |= also;
                    }
                }
                Some(_) => {}
                None => {
                    next.insert(key, h);
                }
            }
        }
    }
    next.into_values().collect()
}

/// The entries of the previous record that no rendered step of the catalog names any
/// more (a step of the same type, with or without `prune`): their steps went away. An
/// entry still named by a step without `prune` is simply no longer held.
fn resources_gone<'p>(previous: &'p [Held], catalog: &Catalog) -> Vec<&'p Held> {
    let mut packages = BTreeSet::new();
    let mut units = BTreeSet::new();
    let mut users = BTreeSet::new();
    for step in &catalog.steps {
        match &step.desired {
            Some(StepKind::Package(p)) => {
                packages.extend(p.names.iter().map(PackageName::qualified));
            }
            Some(StepKind::Service(s)) => {
                units.insert(s.unit.clone());
            }
            Some(StepKind::User(u)) => {
                users.insert(u.name.clone());
            }
            _ => {}
        }
    }
    previous
        .iter()
        .filter(|h| match &h.what {
            Resource::Package { name, .. } => !packages.contains(name),
            Resource::Service { name, .. } => !units.contains(name),
            Resource::User { name, .. } => !users.contains(name),
        })
        .collect()
}

/// Packages grouped by the step that managed them (one transaction per step), in the
/// order of the record.
fn by_step<'p>(packages: &[&'p Held]) -> Vec<Vec<&'p Held>> {
    let mut groups: Vec<Vec<&Held>> = Vec::new();
    for held in packages {
        match groups
            .iter_mut()
            .find(|g| g[0].step == held.step && g[0].source == held.source)
        {
            Some(group) => group.push(held),
            None => groups.push(vec![held]),
        }
    }
    groups
}

/// Whether `text` names `user` as a word (a sudoers rule, a group line).
fn mentions(text: &str, user: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_-.$".contains(c)))
        .any(|word| word == user)
}

/// A path's current state for the record, with the stamp to keep beside it. A file
/// whose stamp equals the one recorded with its previous entry keeps that entry's sum
/// unread: on a converged host that is every file, so a run does not read and hash
/// again the files it has just compared.
fn observe_for_record(
    host: &dyn Host,
    path: &Path,
    previous: Option<&Entry>,
    now: std::time::SystemTime,
    planned_in_place: bool,
) -> Result<(Left, Option<Stamp>), host::Error> {
    // The step's plan found the recorded stamp on the file this run: the recorded
    // pair of stamp and sum still belong together, whatever happened to the file
    // since (anything that changed it moved its stamp, so the next run reads it).
    if planned_in_place
        && let Some(prev) = previous
        && prev.stamp.is_some()
        && matches!(prev.left, Left::File { .. })
    {
        return Ok((prev.left.clone(), prev.stamp));
    }
    // One lstat: its stamp is taken before the read below.
    let meta = host.lstat(path)?;
    let Some(stamp) = meta.and_then(|m| m.stamp) else {
        return Ok((observe_meta(host, path, meta)?, None));
    };
    if let Some(prev) = previous
        && prev.stamp == Some(stamp)
        && matches!(prev.left, Left::File { .. })
    {
        return Ok((prev.left.clone(), Some(stamp)));
    }
    // The stamp is taken before the read: a write in between moves the change time
    // past it, and the next run reads the file again.
    let left = observe_meta(host, path, meta)?;
    let vouches = matches!(left, Left::File { .. }) && stamp.changed_before(now, STAMP_MARGIN);
    Ok((left, vouches.then_some(stamp)))
}

/// A path's current state, in the terms of the record.
fn observe(host: &dyn Host, path: &Path) -> Result<Left, host::Error> {
    observe_meta(host, path, host.lstat(path)?)
}

/// A path's current state, given its `lstat`.
fn observe_meta(
    host: &dyn Host,
    path: &Path,
    meta: Option<crate::host::Meta>,
) -> Result<Left, host::Error> {
    Ok(match meta {
        None => Left::Absent,
        Some(meta) => match meta.kind {
            Kind::File => Left::File {
                sha256: sha256_hex(&host.read_file(path)?),
            },
            Kind::Dir => Left::Directory,
            Kind::Symlink => Left::Symlink {
                target: host.read_link(path)?.to_string_lossy().into_owned(),
            },
            Kind::Other => Left::Other,
        },
    })
}

/// What to do with one path that left the catalog.
enum Verdict {
    /// Nothing to do on the machine; the path is forgotten (with its originals record,
    /// unless `keep_record`).
    Forget { reason: String, keep_record: bool },
    /// Leave the path as it is (reported as skipped, with why) and forget it.
    Leave { reason: String },
    /// Put the path back.
    Act {
        changes: Vec<Change>,
        action: Action,
    },
}

enum Action {
    RemoveFile,
    RemoveDir,
    /// Replace the content (atomically, with the original mode and owner).
    Write {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Set owner and group (when `owner`), then the mode (when `mode`).
    Attrs {
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    },
    /// Point a link at `target` again (when set), then give it its owner back.
    Link {
        target: Option<PathBuf>,
        uid: u32,
        gid: u32,
    },
}

struct Rollback<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// The current catalog: what it still names is never removed.
    catalog: &'c Catalog,
    originals: Originals,
    dry_run: bool,
    /// The record the paths come from, as each report's `source`.
    source: String,
    /// Paths removed by this rollback (in a dry run: that would be): a directory that
    /// holds only those counts as empty.
    gone: HashSet<PathBuf>,
    warnings: Vec<String>,
}

/// A report for `path` with nothing decided yet.
fn blank(path: &str, source: String) -> StepReport {
    StepReport {
        id: ID.to_owned(),
        instance: Some(path.to_owned()),
        role: "-".to_owned(),
        source,
        resource: String::new(),
        status: Status::InSync,
        reason: None,
        changes: Vec::new(),
        error: None,
        notified_by: Vec::new(),
        modified: false,
        refreshed: None,
    }
}

fn change(kind: ChangeKind, path: &Path) -> Change {
    Change {
        kind,
        path: path.display().to_string(),
        before: None,
        after: None,
        diff: None,
        note: None,
        output: None,
    }
}

fn mode_str(mode: u32) -> String {
    format!("{mode:04o}")
}

impl Rollback<'_, '_> {
    /// Rolls back one path: its report, and whether the record keeps the path (a
    /// failure is tried again on the next run).
    fn one(&mut self, path: &str, entry: &Entry) -> (StepReport, bool) {
        let mut item = blank(path, self.source.clone());
        item.resource = format!("{} {path}", entry.left.noun());
        let was = format!("step `{}` ({})", entry.step, entry.source);
        let p = Path::new(path);
        let verdict = match self.decide(p, entry) {
            Ok(v) => v,
            Err(e) => {
                item.status = Status::Failed;
                item.error = Some(failure(path, &was, &e));
                return (item, true);
            }
        };
        match verdict {
            Verdict::Forget {
                reason,
                keep_record,
            } => {
                item.reason = Some(format!("{reason}; {was} no longer manages it"));
                if !keep_record {
                    self.forget(p);
                }
                (item, false)
            }
            Verdict::Leave { reason } => {
                item.status = Status::Skipped;
                item.reason = Some(format!(
                    "{reason}; left as it is, and no longer managed ({was} is gone)"
                ));
                self.forget(p);
                (item, false)
            }
            Verdict::Act { changes, action } => {
                item.changes = changes;
                item.reason = Some(format!("{was} no longer manages it"));
                let removal = matches!(action, Action::RemoveFile | Action::RemoveDir);
                if removal {
                    self.gone.insert(p.to_owned());
                }
                if self.dry_run {
                    item.status = Status::Pending;
                    return (item, true);
                }
                let mut modified = false;
                match self.apply(p, &action, &mut modified) {
                    Ok(()) => {
                        item.status = Status::Changed;
                        item.modified = true;
                        self.forget(p);
                        (item, false)
                    }
                    Err(e) => {
                        if removal {
                            self.gone.remove(p);
                        }
                        item.status = Status::Failed;
                        item.modified = modified;
                        item.error = Some(failure(path, &was, &e));
                        (item, true)
                    }
                }
            }
        }
    }

    /// Deletes the originals record of a path rollback is done with (not in a dry run).
    fn forget(&mut self, path: &Path) {
        if self.dry_run {
            return;
        }
        if let Err(e) = self.originals.forget(self.ctx.host, path) {
            self.warnings.push(format!(
                "cannot delete the originals record of {} under {}: {e}; delete it by hand, or a later step managing the path will not record its state of that time",
                path.display(),
                self.originals.dir().display()
            ));
        }
    }

    /// Reads only.
    fn decide(&self, path: &Path, entry: &Entry) -> Result<Verdict, resource::Error> {
        let host = self.ctx.host;
        match entry.left {
            Left::Absent => {
                return Ok(Verdict::Forget {
                    reason: "a step removed it, and rollback does not bring back what a step removed (its original stays recorded)".to_owned(),
                    keep_record: true,
                });
            }
            Left::Other => {
                return Ok(Verdict::Forget {
                    reason: "not a file, directory or link, which rollback never touches"
                        .to_owned(),
                    keep_record: true,
                });
            }
            Left::File { .. } | Left::Directory | Left::Symlink { .. } => {}
        }
        let Some(record) = self.originals.get(host, path)? else {
            return Ok(Verdict::Forget {
                reason: "the agent never changed it (it already was as the step wanted), so there is nothing to restore".to_owned(),
                keep_record: false,
            });
        };
        let now = observe(host, path)?;
        if now != entry.left {
            return Ok(match (&now, record.existed) {
                (Left::Absent, false) => Verdict::Forget {
                    reason: "already absent".to_owned(),
                    keep_record: false,
                },
                (Left::Absent, true) => Verdict::Leave {
                    reason:
                        "removed since the agent last wrote it, so its original is not restored"
                            .to_owned(),
                },
                _ => Verdict::Leave {
                    reason: "changed since the agent last wrote it".to_owned(),
                },
            });
        }
        if record.existed {
            self.restore(path, &now, &record, entry.sensitive)
        } else {
            self.remove(path, &now)
        }
    }

    /// A path the agent created.
    fn remove(&self, path: &Path, now: &Left) -> Result<Verdict, resource::Error> {
        if *now != Left::Directory {
            return Ok(Verdict::Act {
                changes: vec![change(ChangeKind::Remove, path)],
                action: Action::RemoveFile,
            });
        }
        let held: Vec<String> = self
            .ctx
            .host
            .read_dir(path)?
            .into_iter()
            .filter(|name| !self.gone.contains(&path.join(name)))
            .collect();
        if let Some(first) = held.first() {
            return Ok(Verdict::Leave {
                reason: format!(
                    "the agent created this directory, but it is not empty ({} {}, e.g. {first})",
                    held.len(),
                    if held.len() == 1 { "entry" } else { "entries" }
                ),
            });
        }
        Ok(Verdict::Act {
            changes: vec![change(ChangeKind::Remove, path)],
            action: Action::RemoveDir,
        })
    }

    /// A path the agent changed: the differences from its original, and how to undo them.
    fn restore(
        &self,
        path: &Path,
        now: &Left,
        record: &Record,
        sensitive: bool,
    ) -> Result<Verdict, resource::Error> {
        let host = self.ctx.host;
        let was_kind = record.kind.as_deref().unwrap_or("unknown");
        if was_kind != now.record_kind() {
            return Ok(Verdict::Leave {
                reason: format!(
                    "it was a {was_kind} before the agent changed it and is a {} now, which rollback does not undo",
                    now.noun()
                ),
            });
        }
        let (Some(mode), Some(uid), Some(gid)) = (record.mode, record.uid, record.gid) else {
            return Err(resource::Error::Refused(format!(
                "the originals record of {} is incomplete (no mode or owner)",
                path.display()
            )));
        };
        let Some(meta) = host.lstat(path)? else {
            return Err(resource::Error::Refused(format!(
                "{} disappeared while it was being rolled back",
                path.display()
            )));
        };
        let mut changes = Vec::new();
        let mut new_content = None;
        let mut new_target = None;
        match now {
            Left::File { .. } => {
                let original = self.originals.content(host, record)?;
                let current = host.read_file(path)?;
                if original != current {
                    let shown = path.display().to_string();
                    let mut c = change(ChangeKind::Content, path);
                    c.diff = if sensitive {
                        Some(diff::redacted(&shown))
                    } else {
                        diff::unified(&shown, &current, &original)
                    };
                    changes.push(c);
                    new_content = Some(original);
                }
            }
            Left::Symlink { target } => {
                let Some(original) = &record.target else {
                    return Err(resource::Error::Refused(format!(
                        "the originals record of the link {} has no target",
                        path.display()
                    )));
                };
                if original != target {
                    let mut c = change(ChangeKind::Target, path);
                    c.before = Some(target.clone());
                    c.after = Some(original.clone());
                    changes.push(c);
                    new_target = Some(PathBuf::from(original));
                }
            }
            Left::Directory | Left::Absent | Left::Other => {}
        }
        // A link has no mode of its own.
        let is_link = matches!(now, Left::Symlink { .. });
        if !is_link && mode != meta.mode {
            let mut c = change(ChangeKind::Mode, path);
            c.before = Some(mode_str(meta.mode));
            c.after = Some(mode_str(mode));
            changes.push(c);
        }
        if uid != meta.uid {
            let mut c = change(ChangeKind::Owner, path);
            c.before = Some(self.user_label(meta.uid));
            c.after = Some(self.user_label(uid));
            changes.push(c);
        }
        if gid != meta.gid {
            let mut c = change(ChangeKind::Group, path);
            c.before = Some(self.group_label(meta.gid));
            c.after = Some(self.group_label(gid));
            changes.push(c);
        }
        if changes.is_empty() {
            return Ok(Verdict::Forget {
                reason: "already as it was before the agent first changed it".to_owned(),
                keep_record: false,
            });
        }
        let owner_differs = uid != meta.uid || gid != meta.gid;
        let action = if is_link {
            Action::Link {
                target: new_target,
                uid,
                gid,
            }
        } else if let Some(content) = new_content {
            Action::Write {
                content,
                mode,
                uid,
                gid,
            }
        } else {
            Action::Attrs {
                // chown clears setuid and setgid bits: the mode is set again after it.
                mode: (mode != meta.mode || owner_differs).then_some(mode),
                owner: owner_differs.then_some((uid, gid)),
            }
        };
        Ok(Verdict::Act { changes, action })
    }

    fn apply(
        &self,
        path: &Path,
        action: &Action,
        modified: &mut bool,
    ) -> Result<(), resource::Error> {
        let host = self.ctx.host;
        self.guard(path, action)?;
        match action {
            Action::RemoveFile => host.remove_file(path)?,
            Action::RemoveDir => host.remove_dir(path)?,
            Action::Write {
                content,
                mode,
                uid,
                gid,
            } => {
                let staged = host.stage_file(path, content, *mode, *uid, *gid)?;
                if let Err(e) = host.commit_file(&staged, path) {
                    let _ = host.discard_staged(&staged);
                    return Err(e.into());
                }
            }
            Action::Attrs { mode, owner } => {
                if let Some((uid, gid)) = owner {
                    host.set_owner(path, Some(*uid), Some(*gid))?;
                    *modified = true;
                }
                if let Some(mode) = mode {
                    host.set_mode(path, *mode)?;
                }
            }
            Action::Link { target, uid, gid } => {
                if let Some(target) = target {
                    host.symlink(target, path)?;
                    *modified = true;
                }
                // A new link belongs to the agent: give it its original owner back.
                if let Some(meta) = host.lstat(path)?
                    && (meta.uid != *uid || meta.gid != *gid)
                {
                    host.set_owner(path, Some(*uid), Some(*gid))?;
                }
            }
        }
        *modified = true;
        Ok(())
    }

    /// The lockout guard, as for any step: removing or rewriting a file must not take
    /// away the last way an administrator logs in over SSH.
    fn guard(&self, path: &Path, action: &Action) -> Result<(), resource::Error> {
        let content: &[u8] = match action {
            Action::RemoveFile => &[],
            Action::Write { content, .. } => content,
            Action::RemoveDir | Action::Attrs { .. } | Action::Link { .. } => return Ok(()),
        };
        let text = String::from_utf8_lossy(content);
        lockout::check(
            self.ctx,
            &Proposal::KeysFile {
                path,
                content: &text,
            },
        )?;
        if turns_password_login_off(path, &text) {
            lockout::check(self.ctx, &Proposal::PasswordLoginOff)?;
        }
        Ok(())
    }

    fn user_label(&self, uid: u32) -> String {
        match self.ctx.host.user_name(uid) {
            Ok(Some(name)) => name,
            _ => uid.to_string(),
        }
    }

    fn group_label(&self, gid: u32) -> String {
        match self.ctx.host.group_name(gid) {
            Ok(Some(name)) => name,
            _ => gid.to_string(),
        }
    }
}

/// Rollback of packages, units and users (steps with `prune = true`).
impl Rollback<'_, '_> {
    /// A report for a package, unit or user, with nothing decided yet.
    fn held_report(&self, kind: &StepKind) -> StepReport {
        let what = resource::describe(kind);
        let mut item = blank(&what, self.source.clone());
        item.resource = what;
        item
    }

    /// Puts a unit's `enabled` and running state back as they were before the agent
    /// first changed them.
    fn service(&mut self, held: &Held) -> (StepReport, bool) {
        let Resource::Service {
            name,
            enabled_before,
            running_before,
        } = &held.what
        else {
            unreachable!("only services are passed here, because run() partitions them");
        };
        let undo = StepKind::Service(ServiceStep {
            unit: name.clone(),
            enabled: *enabled_before,
            state: running_before.map(|running| {
                if running {
                    RunState::Running
                } else {
                    RunState::Stopped
                }
            }),
            on_notify: OnNotify::Restart,
            prune: false,
        });
        let mut item = self.held_report(&undo);
        let was = was(held);
        if enabled_before.is_none() && running_before.is_none() {
            item.reason = Some(format!(
                "the step set neither `enabled` nor `state`, so there is nothing to put back; {was} no longer manages it"
            ));
            return (item, false);
        }
        match service::unit_state(self.ctx, name) {
            Ok(state) if !state.exists() => {
                item.reason = Some(format!(
                    "unit {name} does not exist any more; {was} no longer manages it"
                ));
                return (item, false);
            }
            Ok(_) => {}
            Err(e) => return failed(item, name, &was, &e),
        }
        self.undo(item, &undo, &was)
    }

    /// Removes an account the agent created, unless the catalog still uses it.
    fn user(&mut self, held: &Held) -> (StepReport, bool) {
        let Resource::User {
            name,
            created_by_agent,
        } = &held.what
        else {
            unreachable!("only users are passed here, because run() partitions them");
        };
        let undo = StepKind::User(UserStep {
            name: name.clone(),
            state: Presence::Absent,
            uid: None,
            system: false,
            shell: None,
            home: None,
            create_home: false,
            groups: None,
            groups_exclusive: false,
            comment: None,
            remove_home: false,
            prune: false,
        });
        let mut item = self.held_report(&undo);
        let was = was(held);
        if !created_by_agent {
            item.reason = Some(format!(
                "user {name} existed before the agent ran the step, so it is left in place; {was} no longer manages it"
            ));
            return (item, false);
        }
        if let Some(user) = self.user_used_by(name) {
            item.status = Status::Skipped;
            item.reason = Some(format!(
                "user {name} is still used by {user}; left as it is, and no longer managed ({was} is gone)"
            ));
            return (item, false);
        }
        self.undo(item, &undo, &was)
    }

    /// Removes, in one transaction, the packages of one step that the agent installed.
    fn packages(&mut self, group: &[&Held]) -> (StepReport, bool) {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for held in group {
            if let Resource::Package {
                name,
                installed_by_agent,
            } = &held.what
            {
                if *installed_by_agent {
                    ours.push(name.clone());
                } else {
                    theirs.push(name.clone());
                }
            }
        }
        let step = |names: &[String]| -> Result<StepKind, String> {
            Ok(StepKind::Package(PackageStep {
                names: names
                    .iter()
                    .map(|n| PackageName::parse(n))
                    .collect::<Result<_, _>>()?,
                state: PackageState::Absent,
                no_recommends: false,
                update_lists: UpdateLists::Never,
                upgrade: Upgrade::None,
                deb: None,
                sha256: None,
                prune: false,
            }))
        };
        let all: Vec<String> = group.iter().map(|h| h.what.key().1.to_owned()).collect();
        let was = was(group[0]);
        let (undo, shown) = match (step(&ours), step(&all)) {
            (Ok(undo), Ok(shown)) => (undo, shown),
            (Err(e), _) | (_, Err(e)) => {
                let what = format!("package {}", all.join(", "));
                let mut item = blank(&what, self.source.clone());
                item.resource = what;
                item.status = Status::Skipped;
                item.reason = Some(format!(
                    "the record names something that is not a package ({e}); left as it is, and no longer managed ({was} is gone)"
                ));
                return (item, false);
            }
        };
        let mut item = self.held_report(&shown);
        let left = (!theirs.is_empty()).then(|| {
            format!(
                "{} {} installed before the agent ran the step, so {} left installed",
                theirs.join(", "),
                if theirs.len() == 1 { "was" } else { "were" },
                if theirs.len() == 1 {
                    "it is"
                } else {
                    "they are"
                },
            )
        });
        if ours.is_empty() {
            item.reason = Some(format!(
                "{}; {was} no longer manages them",
                left.unwrap_or_default()
            ));
            return (item, false);
        }
        let (mut item, keep) = self.undo(item, &undo, &was);
        if let (Some(left), Some(reason)) = (left, item.reason.as_mut()) {
            reason.push_str("; ");
            reason.push_str(&left);
        }
        (item, keep)
    }

    /// Plans `undo` (the state that puts back what a step that went away did) and,
    /// unless a dry run, applies it and plans again, like the engine does for a step.
    /// Returns the report and whether the record keeps the entry (not done yet).
    fn undo(&mut self, mut item: StepReport, undo: &StepKind, was: &str) -> (StepReport, bool) {
        let what = item.resource.clone();
        let plan = match resource::plan(undo, self.ctx) {
            Ok(plan) => plan,
            Err(e) => return failed(item, &what, was, &e),
        };
        if plan.is_in_sync() {
            item.reason = Some(format!("{}; {was} no longer manages it", plan.in_sync));
            return (item, false);
        }
        item.changes.clone_from(&plan.changes);
        item.reason = Some(format!("{was} no longer manages it"));
        if self.dry_run {
            item.status = Status::Pending;
            return (item, true);
        }
        if let Err(e) = resource::apply(undo, &plan, self.ctx) {
            item.modified =
                resource::plan(undo, self.ctx).map_or(true, |p| p.changes != plan.changes);
            return failed(item, &what, was, &e);
        }
        item.modified = true;
        match resource::plan(undo, self.ctx) {
            Ok(after) if after.is_in_sync() => {
                item.status = Status::Changed;
                (item, false)
            }
            Ok(after) => {
                let pending: Vec<String> = after.changes.iter().map(ToString::to_string).collect();
                let e = resource::Error::Refused(format!(
                    "it finished, but this is still to do: {}",
                    pending.join("; ")
                ));
                failed(item, &what, was, &e)
            }
            Err(e) => failed(item, &what, was, &e),
        }
    }

    /// The first step of the current catalog that still uses account `name` other than
    /// a `user` step (which keeps the entry out of rollback altogether): owns a path,
    /// holds its keys, runs a command as it, or names it in a sudoers file.
    fn user_used_by(&self, name: &str) -> Option<String> {
        for step in &self.catalog.steps {
            let Some(desired) = &step.desired else {
                continue;
            };
            let owner = |attrs: &crate::step::Attrs| attrs.owner.as_deref() == Some(name);
            let sudoers =
                |path: &str| path == "/etc/sudoers" || path.starts_with("/etc/sudoers.d/");
            let uses = match desired {
                StepKind::File(f) => {
                    owner(&f.attrs)
                        || (sudoers(&f.path)
                            && match &f.content {
                                Some(FileContent::Inline(text)) => mentions(text, name),
                                // Unreadable counts as naming it: never remove on a guess.
                                Some(FileContent::Source(rel)) => (self.ctx.files)(rel)
                                    .map_or(true, |b| mentions(&String::from_utf8_lossy(&b), name)),
                                None => false,
                            })
                }
                StepKind::Template(t) => {
                    owner(&t.attrs) || (sudoers(&t.path) && mentions(&t.content, name))
                }
                StepKind::Directory(d) => owner(&d.attrs),
                StepKind::Download(d) => owner(&d.attrs),
                StepKind::AuthorizedKeys(k) => k.user == name,
                StepKind::Command(c) => c.user.as_deref() == Some(name),
                _ => false,
            };
            if uses {
                return Some(format!(
                    "step `{}` ({}:{})",
                    step.name(),
                    step.file,
                    step.line
                ));
            }
        }
        None
    }
}

/// `step `tools` (roles/base.toml:3)`.
fn was(held: &Held) -> String {
    format!("step `{}` ({})", held.step, held.source)
}

/// A failed rollback of a package, unit or user: kept in the record, tried again.
fn failed(mut item: StepReport, what: &str, was: &str, e: &resource::Error) -> (StepReport, bool) {
    item.status = Status::Failed;
    item.error = Some(format!(
        "cannot roll back {what}, which {was} managed with prune = true: {e}\nhint: the next run tries again; fix what the message says, or name it in a step without `prune` to keep it as it is (it is then no longer rolled back)"
    ));
    (item, true)
}

/// Whether `text` is sshd configuration that switches password login off.
fn turns_password_login_off(path: &Path, text: &str) -> bool {
    let sshd_config =
        path == Path::new("/etc/ssh/sshd_config") || path.starts_with("/etc/ssh/sshd_config.d");
    sshd_config
        && text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("PasswordAuthentication"))
                && words.next().is_some_and(|v| v.eq_ignore_ascii_case("no"))
        })
}

fn failure(path: &str, was: &str, e: &resource::Error) -> String {
    format!(
        "cannot roll back {path}, which {was} managed: {e}\nhint: the next run tries again; fix what the message says, or put {path} the way you want it by hand (rollback then leaves it alone)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;
    use crate::facts::Facts;
    use crate::host::FakeHost;
    use crate::host::fake::Node;
    use crate::state_repo::{self, DirSource, infra_toml::Version};

    const STATE: &str = "/var/lib/infra-agent";

    /// The catalog of host `h1` whose one role holds `steps`.
    fn catalog(steps: &str) -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
            ),
            ("roles/r.toml", steps),
        ];
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())
            .unwrap_or_else(|e| panic!("{e}"));
        let sel = repo.select("h1").unwrap_or_else(|e| panic!("{e}"));
        crate::catalog::compile(&repo, &sel, &Facts::placeholder("h1"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn file(id: &str, path: &str, content: &str) -> String {
        format!(
            "[[step]]\nid = \"{id}\"\ntype = \"file\"\npath = \"{path}\"\ncontent = \"{content}\"\n\n"
        )
    }

    /// A run as `--once` does it: the engine, then rollback.
    fn converge_with(host: &FakeHost, catalog: &Catalog, options: &Options) -> RunReport {
        let files = |p: &str| -> Result<Vec<u8>, String> { Err(format!("{p}: no files here")) };
        let originals = Originals::new(Path::new(STATE));
        let mut ctx = Ctx::new(
            host,
            options.dry_run,
            (!options.dry_run).then_some(&originals),
            &files,
        );
        ctx.settings.state_dir = PathBuf::from(STATE);
        let mut report = engine::run(catalog, &ctx, options).expect("the run starts");
        let warnings = run(catalog, &ctx, options, &mut report);
        assert!(warnings.is_empty(), "{warnings:?}");
        report
    }

    fn converge(host: &FakeHost, catalog: &Catalog) -> RunReport {
        converge_with(host, catalog, &Options::default())
    }

    fn dry_run(host: &FakeHost, catalog: &Catalog) -> RunReport {
        let options = Options {
            dry_run: true,
            ..Options::default()
        };
        converge_with(host, catalog, &options)
    }

    fn rollbacks(report: &RunReport) -> Vec<&StepReport> {
        report.steps.iter().filter(|s| s.id == ID).collect()
    }

    fn names(report: &RunReport) -> Vec<String> {
        rollbacks(report).iter().map(|s| s.name()).collect()
    }

    fn kinds(step: &StepReport) -> Vec<ChangeKind> {
        step.changes.iter().map(|c| c.kind).collect()
    }

    fn managed(host: &FakeHost) -> BTreeMap<String, Entry> {
        let bytes = host.read_file(&managed_file(Path::new(STATE))).unwrap();
        let doc: Managed = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc.schema, SCHEMA);
        doc.paths
    }

    fn has_record(host: &FakeHost, path: &str) -> bool {
        Originals::new(Path::new(STATE))
            .get(host, Path::new(path))
            .unwrap()
            .is_some()
    }

    fn text(report: &RunReport) -> String {
        let mut out = Vec::new();
        crate::report::text(&mut out, "h1", "production", report).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn hand_edit(host: &FakeHost, path: &str, content: &str) {
        host.set_node(
            path,
            Some(Node::File {
                content: content.as_bytes().to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }),
        );
    }

    #[test]
    fn a_created_file_is_removed_when_its_step_goes_away() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let a = catalog(&format!("{}{keep}", file("new", "/srv/new", "created\\n")));
        let b = catalog(&keep);

        assert_eq!(converge(&host, &a).exit_code(), 2);
        assert!(matches!(managed(&host)["/srv/new"].left, Left::File { .. }));
        assert!(has_record(&host, "/srv/new"));

        let report = converge(&host, &b);
        assert_eq!(names(&report), ["rollback[/srv/new]"]);
        let item = rollbacks(&report)[0];
        assert_eq!(item.status, Status::Changed);
        assert_eq!(item.resource, "file /srv/new");
        assert_eq!(kinds(item), [ChangeKind::Remove]);
        assert_eq!(report.exit_code(), 2);
        assert!(host.node("/srv/new").is_none());
        assert!(!has_record(&host, "/srv/new"));
        assert!(has_record(&host, "/srv/keep"));
        assert_eq!(
            managed(&host).keys().collect::<Vec<_>>(),
            ["/srv/keep"],
            "the path is no longer managed"
        );
        let out = text(&report);
        assert!(
            out.contains("rollback[/srv/new] (file /srv/new): changed\n  ~ remove /srv/new\n"),
            "{out}"
        );

        let again = converge(&host, &b);
        assert!(rollbacks(&again).is_empty(), "{:#?}", again.steps);
        assert_eq!(again.exit_code(), 0);
    }

    fn stamp(ctime_ns: i128) -> Stamp {
        Stamp {
            ino: 7,
            size: 5,
            mtime_ns: ctime_ns,
            ctime_ns,
        }
    }

    fn entry(left: Left, stamp: Option<Stamp>) -> Entry {
        Entry {
            left,
            step: "keep".to_owned(),
            source: "roles/r.toml:1".to_owned(),
            sensitive: false,
            stamp,
        }
    }

    #[test]
    fn an_unchanged_stamp_keeps_the_recorded_sum_unread() {
        let path = Path::new("/srv/keep");
        let host = FakeHost::new().with_file(path, "now\n", 0o644);
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let old = stamp(500_000 * 1_000_000_000);
        let recorded = Left::File {
            sha256: "sum recorded before".to_owned(),
        };
        let actual = Left::File {
            sha256: sha256_hex(b"now\n"),
        };

        // No stamp from the host: the file is read, and no stamp is kept.
        let prev = entry(recorded.clone(), Some(old));
        let got = observe_for_record(&host, path, Some(&prev), now, false).unwrap();
        assert_eq!(got, (actual.clone(), None));

        // The same stamp as recorded: the recorded sum stands (the file was not read,
        // or the sum would be the content's).
        host.set_stamp(path, old);
        let got = observe_for_record(&host, path, Some(&prev), now, false).unwrap();
        assert_eq!(got, (recorded.clone(), Some(old)));

        // A record without a stamp, or with another one: read, and the old stamp is kept.
        for prev in [
            entry(recorded.clone(), None),
            entry(recorded.clone(), Some(stamp(1))),
        ] {
            let got = observe_for_record(&host, path, Some(&prev), now, false).unwrap();
            assert_eq!(got, (actual.clone(), Some(old)));
        }
        let got = observe_for_record(&host, path, None, now, false).unwrap();
        assert_eq!(got, (actual.clone(), Some(old)));

        // A file changed within the margin is read, and its stamp is not kept: it may
        // change again within the same clock tick.
        let fresh = stamp(1_000_000 * 1_000_000_000 - 1_000_000);
        host.set_stamp(path, fresh);
        let prev = entry(recorded.clone(), Some(old));
        let got = observe_for_record(&host, path, Some(&prev), now, false).unwrap();
        assert_eq!(got, (actual, None));
    }

    #[test]
    fn the_record_keeps_stamps_and_a_second_run_uses_them() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = catalog(&file("keep", "/srv/keep", "kept\\n"));
        converge(&host, &keep);
        assert_eq!(
            managed(&host)["/srv/keep"].stamp,
            None,
            "the fake has no stamp yet"
        );

        let old = stamp(1);
        host.set_stamp("/srv/keep", old);
        converge(&host, &keep);
        let first = managed(&host)["/srv/keep"].clone();
        assert_eq!(first.stamp, Some(old));
        assert_eq!(
            first.left,
            Left::File {
                sha256: sha256_hex(b"kept\n")
            }
        );
        let bytes = host.read_file(&managed_file(Path::new(STATE))).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"ctime_ns\": 1"));

        // In sync again with the same stamp: the same entry.
        assert_eq!(converge(&host, &keep).exit_code(), 0);
        assert_eq!(managed(&host)["/srv/keep"], first);
    }

    #[test]
    fn a_file_plan_trusts_a_vouching_stamp_and_reads_otherwise() {
        // The fake never moves a stamp by itself: each step below sets the one a real
        // file would have.
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = catalog(&file("keep", "/srv/keep", "kept\\n"));
        converge(&host, &keep);
        host.set_stamp("/srv/keep", stamp(1));
        converge(&host, &keep);
        assert_eq!(managed(&host)["/srv/keep"].stamp, Some(stamp(1)));

        // Content changed behind the same stamp (which a real file cannot do): the plan
        // believes the stamp, so it did not read the file.
        hand_edit(&host, "/srv/keep", "behind the stamp\n");
        let report = converge(&host, &keep);
        assert_eq!(report.exit_code(), 0, "{}", text(&report));
        assert_eq!(host.file("/srv/keep").unwrap().0, b"behind the stamp\n");

        // Another desired content: the sums differ, so the file is read and rewritten.
        let other = catalog(&file("keep", "/srv/keep", "other\\n"));
        let report = converge(&host, &other);
        assert_eq!(report.exit_code(), 2, "{}", text(&report));
        assert_eq!(host.file("/srv/keep").unwrap().0, b"other\n");
        host.set_stamp("/srv/keep", stamp(2));
        assert_eq!(converge(&host, &other).exit_code(), 0);
        assert_eq!(managed(&host)["/srv/keep"].stamp, Some(stamp(2)));

        // A hand edit moves the stamp: the file is read, and the edit undone.
        hand_edit(&host, "/srv/keep", "edited\n");
        host.set_stamp("/srv/keep", stamp(3));
        let report = converge(&host, &other);
        assert_eq!(report.exit_code(), 2, "{}", text(&report));
        assert_eq!(host.file("/srv/keep").unwrap().0, b"other\n");
    }

    /// A host's stamps, as `lstat` reports them.
    struct Stamps<'a>(&'a dyn Host);

    impl Stamps<'_> {
        fn stamp(&self, path: &Path) -> Result<Option<Stamp>, host::Error> {
            Ok(self.0.lstat(path)?.and_then(|m| m.stamp))
        }
    }

    #[test]
    fn a_real_files_stamp_moves_when_it_is_replaced_or_grows() {
        use crate::host::RealHost;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let real = RealHost::new();
        let host = Stamps(&real);
        assert_eq!(host.stamp(&path).unwrap(), None, "absent");
        std::fs::write(&path, "one\n").unwrap();
        let first = host
            .stamp(&path)
            .unwrap()
            .expect("a regular file has a stamp");
        assert_eq!(first.size, 4);
        assert_eq!(host.stamp(&path).unwrap(), Some(first), "nothing changed");

        std::fs::write(&path, "one more\n").unwrap();
        assert_ne!(host.stamp(&path).unwrap(), Some(first), "written in place");

        let before = host.stamp(&path).unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "one mor!\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(
            host.stamp(&path).unwrap(),
            before,
            "renamed over: another inode"
        );

        assert_eq!(
            host.stamp(dir.path()).unwrap(),
            None,
            "a directory has none"
        );
        let now = std::time::SystemTime::now();
        assert!(!first.changed_before(now, STAMP_MARGIN), "just written");
        assert!(first.changed_before(now + STAMP_MARGIN * 2, STAMP_MARGIN));
    }

    #[test]
    fn a_created_file_edited_by_hand_is_left_in_place_with_a_note() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let a = catalog(&format!("{}{keep}", file("new", "/srv/new", "created\\n")));
        let b = catalog(&keep);
        converge(&host, &a);
        hand_edit(&host, "/srv/new", "edited by hand\n");

        let report = converge(&host, &b);
        let item = rollbacks(&report)[0];
        assert_eq!(item.status, Status::Skipped);
        let reason = item.reason.as_deref().unwrap();
        assert!(
            reason.contains("changed since the agent last wrote it; left as it is"),
            "{reason}"
        );
        assert!(reason.contains("step `new` (roles/r.toml:"), "{reason}");
        // A note, not a failure: the run is in sync.
        assert_eq!(report.exit_code(), 0);
        assert!(
            text(&report).contains("rollback[/srv/new]: skipped: changed since"),
            "{}",
            text(&report)
        );
        assert_eq!(host.file("/srv/new").unwrap().0, b"edited by hand\n");
        assert!(!has_record(&host, "/srv/new"));
        assert!(!managed(&host).contains_key("/srv/new"));

        // Reported once: the path is the user's now.
        assert!(rollbacks(&converge(&host, &b)).is_empty());
        assert_eq!(host.file("/srv/new").unwrap().0, b"edited by hand\n");
    }

    #[test]
    fn a_changed_file_gets_its_content_mode_and_owner_back() {
        let host = FakeHost::new()
            .with_user("alice", 1000)
            .with_group("staff", 50)
            .with_file("/etc/app.conf", "original\n", 0o600)
            .with_owner("/etc/app.conf", 1000, 50);
        let keep = file("keep", "/etc/keep", "kept\\n");
        let a = catalog(&format!(
            "[[step]]\nid = \"app\"\ntype = \"file\"\npath = \"/etc/app.conf\"\ncontent = \"managed\\n\"\nmode = \"0644\"\nowner = \"root\"\ngroup = \"root\"\n\n{keep}"
        ));
        let b = catalog(&keep);
        converge(&host, &a);
        assert_eq!(
            host.file("/etc/app.conf").unwrap(),
            (b"managed\n".to_vec(), 0o644, 0, 0)
        );

        let report = converge(&host, &b);
        let item = rollbacks(&report)[0];
        assert_eq!(item.name(), "rollback[/etc/app.conf]");
        assert_eq!(item.status, Status::Changed);
        assert_eq!(
            kinds(item),
            [
                ChangeKind::Content,
                ChangeKind::Mode,
                ChangeKind::Owner,
                ChangeKind::Group
            ]
        );
        let diff = item.changes[0].diff.as_deref().unwrap();
        assert!(diff.contains("-managed\n+original\n"), "{diff}");
        assert_eq!(
            item.changes[1].to_string(),
            "mode /etc/app.conf: 0644 -> 0600"
        );
        assert_eq!(
            item.changes[2].to_string(),
            "owner /etc/app.conf: root -> alice"
        );
        assert_eq!(
            item.changes[3].to_string(),
            "group /etc/app.conf: root -> staff"
        );
        assert_eq!(
            host.file("/etc/app.conf").unwrap(),
            (b"original\n".to_vec(), 0o600, 1000, 50)
        );
        assert!(!has_record(&host, "/etc/app.conf"));
        assert!(rollbacks(&converge(&host, &b)).is_empty());
    }

    #[test]
    fn a_file_whose_mode_alone_changed_gets_its_mode_back_without_a_rewrite() {
        let host = FakeHost::new().with_file("/etc/app.conf", "same\n", 0o600);
        let keep = file("keep", "/etc/keep", "kept\\n");
        let a = catalog(&format!(
            "[[step]]\nid = \"app\"\ntype = \"file\"\npath = \"/etc/app.conf\"\ncontent = \"same\\n\"\nmode = \"0644\"\n\n{keep}"
        ));
        converge(&host, &a);
        host.clear_log();
        let report = converge(&host, &catalog(&keep));
        assert_eq!(kinds(rollbacks(&report)[0]), [ChangeKind::Mode]);
        assert_eq!(host.mutations()[0], "chmod /etc/app.conf 0600");
        assert!(
            !host
                .mutations()
                .iter()
                .any(|m| m.starts_with("write /etc/app.conf"))
        );
        assert_eq!(host.file("/etc/app.conf").unwrap().1, 0o600);
    }

    #[test]
    fn a_symlink_gets_its_target_back() {
        let host = FakeHost::new().with_symlink("/srv/current", "/srv/v1");
        let keep = file("keep", "/srv/keep", "kept\\n");
        let a = catalog(&format!(
            "[[step]]\nid = \"current\"\ntype = \"symlink\"\npath = \"/srv/current\"\ntarget = \"/srv/v2\"\n\n{keep}"
        ));
        converge(&host, &a);
        assert_eq!(
            host.read_link(Path::new("/srv/current")).unwrap(),
            Path::new("/srv/v2")
        );

        let report = converge(&host, &catalog(&keep));
        let item = rollbacks(&report)[0];
        assert_eq!(item.resource, "symlink /srv/current");
        assert_eq!(item.status, Status::Changed);
        assert_eq!(
            item.changes[0].to_string(),
            "target /srv/current: /srv/v2 -> /srv/v1"
        );
        assert_eq!(
            host.read_link(Path::new("/srv/current")).unwrap(),
            Path::new("/srv/v1")
        );
        assert!(!has_record(&host, "/srv/current"));
    }

    const TREE: &str = "[[step]]\nid = \"app\"\ntype = \"directory\"\npath = \"/srv/app\"\n\n[[step]]\nid = \"conf\"\ntype = \"file\"\npath = \"/srv/app/conf\"\ncontent = \"x\\n\"\nrequires = [\"app\"]\n\n[[step]]\nid = \"data\"\ntype = \"directory\"\npath = \"/srv/data\"\n\n";

    #[test]
    fn a_created_directory_is_removed_only_when_empty() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = file("keep", "/srv/keep", "kept\\n");
        converge(&host, &catalog(&format!("{TREE}{keep}")));
        hand_edit(&host, "/srv/data/notes", "mine\n");

        let report = converge(&host, &catalog(&keep));
        // The file first, then the directories, deepest first.
        assert_eq!(
            names(&report),
            [
                "rollback[/srv/app/conf]",
                "rollback[/srv/app]",
                "rollback[/srv/data]"
            ]
        );
        let items = rollbacks(&report);
        assert_eq!(items[0].status, Status::Changed);
        assert_eq!(items[1].status, Status::Changed);
        assert_eq!(kinds(items[1]), [ChangeKind::Remove]);
        assert_eq!(items[1].resource, "directory /srv/app");
        assert_eq!(items[2].status, Status::Skipped);
        let reason = items[2].reason.as_deref().unwrap();
        assert!(
            reason.contains("not empty (1 entry, e.g. notes); left as it is"),
            "{reason}"
        );
        assert!(host.node("/srv/app").is_none());
        assert!(host.node("/srv/data").is_some());
        assert_eq!(host.file("/srv/data/notes").unwrap().0, b"mine\n");
    }

    #[test]
    fn a_dry_run_changes_nothing_and_reports_what_rollback_would_do() {
        let host =
            FakeHost::new()
                .with_dir("/srv", 0o755)
                .with_file("/etc/app.conf", "original\n", 0o600);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let app = file("app-conf", "/etc/app.conf", "managed\\n");
        converge(&host, &catalog(&format!("{TREE}{app}{keep}")));
        let b = catalog(&keep);
        host.clear_log();
        let paths = host.paths();
        let record = host.read_file(&managed_file(Path::new(STATE))).unwrap();

        let report = dry_run(&host, &b);
        assert_eq!(
            names(&report),
            [
                "rollback[/etc/app.conf]",
                "rollback[/srv/app/conf]",
                "rollback[/srv/app]",
                "rollback[/srv/data]"
            ]
        );
        // The directory holds only what would be removed before it: it would go too.
        for item in rollbacks(&report) {
            assert_eq!(item.status, Status::Pending, "{item:#?}");
        }
        let out = text(&report);
        assert!(
            out.contains("rollback[/etc/app.conf] (file /etc/app.conf): would change\n  ~ content /etc/app.conf\n"),
            "{out}"
        );
        assert!(out.contains("-managed\n    +original\n"), "{out}");
        assert_eq!(report.exit_code(), 2);
        assert_eq!(host.mutations(), Vec::<String>::new());
        assert_eq!(host.paths(), paths);
        assert_eq!(
            host.read_file(&managed_file(Path::new(STATE))).unwrap(),
            record
        );
        assert!(has_record(&host, "/etc/app.conf"));

        // The real run does what the dry run said.
        let report = converge(&host, &b);
        for item in rollbacks(&report) {
            assert_eq!(item.status, Status::Changed, "{item:#?}");
        }
        assert_eq!(names(&report).len(), 4);
        assert!(host.node("/srv/app").is_none());
        assert!(host.node("/srv/data").is_none());
        assert_eq!(host.file("/etc/app.conf").unwrap().0, b"original\n");
    }

    #[test]
    fn a_step_still_in_the_catalog_is_not_touched() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let a = catalog(&format!(
            "{}{}",
            file("one", "/srv/one", "1\\n"),
            file("two", "/srv/two", "2\\n")
        ));
        converge(&host, &a);
        // `two` stays, with new content: an ordinary change, not a rollback.
        let b = catalog(&file("two", "/srv/two", "2 again\\n"));
        let report = converge(&host, &b);
        assert_eq!(names(&report), ["rollback[/srv/one]"]);
        assert_eq!(host.file("/srv/two").unwrap().0, b"2 again\n");
        assert!(has_record(&host, "/srv/two"));
        let entry = &managed(&host)["/srv/two"];
        assert_eq!(
            entry.left,
            Left::File {
                sha256: sha256_hex(b"2 again\n")
            }
        );
        assert_eq!(entry.step, "two");
        assert_eq!(entry.source, "roles/r.toml:1");
    }

    #[test]
    fn a_step_that_failed_this_run_keeps_its_entry() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = file("keep", "/srv/keep", "kept\\n");
        converge(
            &host,
            &catalog(&format!("{}{keep}", file("a", "/srv/a", "one\\n"))),
        );
        let entry = managed(&host)["/srv/a"].clone();
        assert_eq!(
            entry.left,
            Left::File {
                sha256: sha256_hex(b"one\n")
            }
        );

        // Something put a directory where the file was: the step fails.
        host.set_node(
            "/srv/a",
            Some(Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            }),
        );
        let report = converge(
            &host,
            &catalog(&format!("{}{keep}", file("a", "/srv/a", "two\\n"))),
        );
        assert_eq!(report.steps[0].status, Status::Failed);
        assert!(rollbacks(&report).is_empty());
        assert_eq!(managed(&host)["/srv/a"], entry);

        // The file is back as the agent left it, and the step goes away: rolled back.
        hand_edit(&host, "/srv/a", "one\n");
        let report = converge(&host, &catalog(&keep));
        assert_eq!(rollbacks(&report)[0].status, Status::Changed);
        assert!(host.node("/srv/a").is_none());
    }

    #[test]
    fn a_path_the_agent_never_changed_is_only_forgotten() {
        let host = FakeHost::new().with_file("/srv/same", "same\n", 0o644);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let a = catalog(&format!("{}{keep}", file("same", "/srv/same", "same\\n")));
        converge(&host, &a);
        assert!(managed(&host).contains_key("/srv/same"));
        assert!(!has_record(&host, "/srv/same"));

        let report = converge(&host, &catalog(&keep));
        let item = rollbacks(&report)[0];
        assert_eq!(item.status, Status::InSync);
        assert!(
            item.reason.as_deref().unwrap().contains("never changed it"),
            "{item:#?}"
        );
        assert_eq!(report.exit_code(), 0);
        assert_eq!(host.file("/srv/same").unwrap().0, b"same\n");
        assert!(!managed(&host).contains_key("/srv/same"));
    }

    #[test]
    fn a_path_a_step_removed_is_not_brought_back() {
        let host = FakeHost::new().with_file("/srv/old", "old\n", 0o644);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let a = catalog(&format!(
            "[[step]]\nid = \"old\"\ntype = \"file\"\npath = \"/srv/old\"\nstate = \"absent\"\n\n{keep}"
        ));
        converge(&host, &a);
        assert_eq!(managed(&host)["/srv/old"].left, Left::Absent);

        let report = converge(&host, &catalog(&keep));
        assert_eq!(rollbacks(&report)[0].status, Status::InSync);
        assert!(host.node("/srv/old").is_none());
        // The original stays recorded, should someone want it back by hand.
        assert!(has_record(&host, "/srv/old"));
        assert!(!managed(&host).contains_key("/srv/old"));
    }

    #[test]
    fn nothing_is_rolled_back_with_only() {
        let host = FakeHost::new().with_dir("/srv", 0o755);
        let keep = file("keep", "/srv/keep", "kept\\n");
        converge(
            &host,
            &catalog(&format!("{}{keep}", file("new", "/srv/new", "x\\n"))),
        );
        let record = host.read_file(&managed_file(Path::new(STATE))).unwrap();
        let options = Options {
            only: vec!["keep".to_owned()],
            ..Options::default()
        };
        let report = converge_with(&host, &catalog(&keep), &options);
        assert!(rollbacks(&report).is_empty());
        assert!(host.node("/srv/new").is_some());
        assert_eq!(
            host.read_file(&managed_file(Path::new(STATE))).unwrap(),
            record
        );
    }

    #[test]
    fn a_damaged_record_rolls_nothing_back_and_is_kept_aside() {
        let host = FakeHost::new()
            .with_dir("/srv", 0o755)
            .with_file("/srv/new", "x\n", 0o644)
            .with_file(format!("{STATE}/managed.json"), "{\"schema\": 1", 0o600);
        let keep = file("keep", "/srv/keep", "kept\\n");
        let files = |p: &str| -> Result<Vec<u8>, String> { Err(p.to_owned()) };
        let originals = Originals::new(Path::new(STATE));
        let ctx = Ctx::new(&host, false, Some(&originals), &files);
        let b = catalog(&keep);
        let options = Options::default();
        let mut report = engine::run(&b, &ctx, &options).unwrap();
        let warnings = run(&b, &ctx, &options, &mut report);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("managed.json cannot be used (it is not a valid record"),
            "{}",
            warnings[0]
        );
        assert!(rollbacks(&report).is_empty());
        assert!(host.node("/srv/new").is_some());
        assert_eq!(
            host.file(format!("{STATE}/managed.json.damaged"))
                .unwrap()
                .0,
            b"{\"schema\": 1"
        );
        assert_eq!(managed(&host).keys().collect::<Vec<_>>(), ["/srv/keep"]);
    }

    #[test]
    fn a_record_without_resources_reads_and_held_entries_have_a_kind() {
        // Written by an agent before the opt-in: nothing is held.
        let old: Managed =
            serde_json::from_str("{\"schema\": \"infra-agent/managed/v1\", \"paths\": {}}")
                .unwrap();
        assert!(old.resources.is_empty());
        let held = Held {
            what: Resource::Package {
                name: "zsh".to_owned(),
                installed_by_agent: true,
            },
            step: "tools".to_owned(),
            source: "roles/r.toml:1".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(&held).unwrap(),
            serde_json::json!({
                "kind": "package",
                "name": "zsh",
                "installed_by_agent": true,
                "step": "tools",
                "source": "roles/r.toml:1"
            })
        );
        let unit: Held = serde_json::from_value(serde_json::json!({
            "kind": "service",
            "name": "nginx.service",
            "enabled_before": false,
            "step": "nginx",
            "source": "roles/r.toml:9"
        }))
        .unwrap();
        assert_eq!(
            unit.what,
            Resource::Service {
                name: "nginx.service".to_owned(),
                enabled_before: Some(false),
                running_before: None
            }
        );
        // Without prune, nothing is held.
        let host = FakeHost::new().with_dir("/srv", 0o755).with_file(
            "/var/lib/dpkg/status",
            "Package: zsh\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.9\n",
            0o644,
        );
        converge(
            &host,
            &catalog(&format!(
                "[[step]]\nid = \"p\"\ntype = \"package\"\nnames = [\"zsh\"]\n\n{}",
                file("keep", "/srv/keep", "kept\\n")
            )),
        );
        let bytes = host.read_file(&managed_file(Path::new(STATE))).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("resources"));
    }

    #[test]
    fn paths_are_normalised_and_only_file_like_steps_manage_paths() {
        let c = catalog(
            "[[step]]\nid = \"f\"\ntype = \"file\"\npath = \"/etc//x/\"\ncontent = \"\"\n\n[[step]]\nid = \"p\"\ntype = \"package\"\nnames = [\"zsh\"]\n",
        );
        let paths: Vec<Vec<(String, bool)>> = c
            .steps
            .iter()
            .map(|s| managed_paths(s.desired.as_ref().unwrap()))
            .collect();
        assert_eq!(paths, [vec![("/etc/x".to_owned(), false)], vec![]]);
    }
}
