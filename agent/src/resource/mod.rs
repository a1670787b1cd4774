//! Resources: what one step manages on the machine. `plan` observes and says what
//! differs; `apply` makes it so. Both go through `Host` only.
//!
//! Invariant: `plan` never mutates, and a failure to observe is an error, never
//! "nothing to do". After `apply` the engine plans again; anything still pending is a
//! failure of the step.

pub mod apt_repository;
pub mod authorized_keys;
pub mod command;
pub mod compose;
pub mod directory;
pub mod download;
pub mod file;
pub mod group;
pub mod lockout;
pub mod nala_fetch;
pub mod package;
pub mod service;
pub mod symlink;
pub mod user;

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::rc::Rc;

use serde::Serialize;

use crate::host::{self, Host, Meta};
use crate::originals::Originals;
use crate::step::{Attrs, StepKind};

/// A failure of a step's resource, in words for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] host::Error),
    #[error("{0}")]
    Refused(String),
}

/// What kind of difference a change repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Content,
    Mode,
    Owner,
    Group,
    Target,
    Remove,
    /// A command to run (`path` is the command line, environment values hidden).
    Run,
    /// A user's or group's numeric id (`path` is the name).
    Uid,
    Gid,
    /// A user's login shell, home directory, comment (GECOS) and supplementary groups.
    Shell,
    Home,
    Comment,
    Groups,
    /// A systemd unit (`path` is the unit): enabled at boot, disabled, started,
    /// stopped; `daemon-reload` when its unit file changed on disk.
    Enable,
    Disable,
    Start,
    Stop,
    DaemonReload,
    /// A compose project brought up (`path` is the project).
    Up,
}

/// One difference between the machine and the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// A unified diff of the content (or the redaction line for secret content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Something this machine cannot decide yet (a dry run does not create users or run
    /// validators): the change is pending on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What applying it printed (a command's output, trimmed and capped), for the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl Change {
    fn new(kind: ChangeKind, path: &Path) -> Self {
        Self {
            kind,
            path: path.display().to_string(),
            before: None,
            after: None,
            diff: None,
            note: None,
            output: None,
        }
    }

    fn before_after(mut self, before: impl Into<String>, after: impl Into<String>) -> Self {
        self.before = Some(before.into());
        self.after = Some(after.into());
        self
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ChangeKind::Create => "create",
            ChangeKind::Content => "content",
            ChangeKind::Mode => "mode",
            ChangeKind::Owner => "owner",
            ChangeKind::Group => "group",
            ChangeKind::Target => "target",
            ChangeKind::Remove => "remove",
            ChangeKind::Run => "run",
            ChangeKind::Uid => "uid",
            ChangeKind::Gid => "gid",
            ChangeKind::Shell => "shell",
            ChangeKind::Home => "home",
            ChangeKind::Comment => "comment",
            ChangeKind::Groups => "groups",
            ChangeKind::Enable => "enable",
            ChangeKind::Disable => "disable",
            ChangeKind::Start => "start",
            ChangeKind::Stop => "stop",
            ChangeKind::DaemonReload => "daemon-reload",
            ChangeKind::Up => "up",
        };
        write!(f, "{what} {}", self.path)?;
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => write!(f, ": {b} -> {a}")?,
            (None, Some(a)) => write!(f, ": {a}")?,
            _ => {}
        }
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// The result of planning a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Why nothing needs to change (when `changes` is empty).
    pub in_sync: String,
}

impl Plan {
    fn in_sync(reason: impl Into<String>) -> Self {
        Self {
            changes: Vec::new(),
            in_sync: reason.into(),
        }
    }

    #[must_use]
    pub fn is_in_sync(&self) -> bool {
        self.changes.is_empty()
    }

    fn has(&self, kind: ChangeKind) -> bool {
        self.changes.iter().any(|c| c.kind == kind)
    }
}

/// Host settings from agent.toml that resources need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `package_manager = "apt"` in agent.toml: use apt-get even where nala is installed.
    pub prefer_apt: bool,
    /// Refresh the package lists when they are older than this (agent.toml
    /// `apt_lists_max_age`, seconds).
    pub apt_lists_max_age: std::time::Duration,
    /// How long a package transaction waits for the dpkg lock another process holds
    /// (agent.toml `apt_lock_timeout`, seconds).
    pub apt_lock_timeout: std::time::Duration,
    /// The systemd units every `service` step of this run names, so their state is
    /// read in one `systemctl show` call.
    pub services: Vec<String>,
    /// The agent's state directory (agent.toml `state_dir`): where steps remember
    /// what happened once (`nala_fetch`) or what they wrote (`download` with `extract`).
    pub state_dir: std::path::PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefer_apt: false,
            apt_lists_max_age: std::time::Duration::from_secs(
                crate::config::DEFAULT_APT_LISTS_MAX_AGE,
            ),
            apt_lock_timeout: std::time::Duration::from_secs(
                crate::config::DEFAULT_APT_LOCK_TIMEOUT,
            ),
            services: Vec::new(),
            state_dir: std::path::PathBuf::from(crate::config::DEFAULT_STATE_DIR),
        }
    }
}

/// Reads `files/<path>` of the repository being applied.
pub type FileReader<'a> = dyn Fn(&str) -> Result<Vec<u8>, String> + 'a;

/// What resources need besides the step: the host, the mode of the run, the record
/// of originals, and the repository's static files.
pub struct Ctx<'a> {
    pub host: &'a dyn Host,
    pub dry_run: bool,
    /// Where originals are captured before a change; `None` only in dry runs.
    pub originals: Option<&'a Originals>,
    pub files: &'a FileReader<'a>,
    pub settings: Settings,
    /// Resolves the 1Password references of the run's steps (none configured: every
    /// reference fails with the agent.toml key to set).
    pub secrets: crate::secrets::Resolver,
    users: RefCell<HashMap<String, Option<u32>>>,
    groups: RefCell<HashMap<String, Option<u32>>>,
    memo: RefCell<HashMap<&'static str, Rc<dyn Any>>>,
    /// Files whose content a plan took as in place on the word of their stamp
    /// (`file.rs`), so rollback's record keeps their entries without looking again.
    vouched: RefCell<std::collections::HashSet<std::path::PathBuf>>,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    #[must_use]
    pub fn new(
        host: &'a dyn Host,
        dry_run: bool,
        originals: Option<&'a Originals>,
        files: &'a FileReader<'a>,
    ) -> Self {
        Self {
            host,
            dry_run,
            originals,
            files,
            settings: Settings::default(),
            secrets: crate::secrets::Resolver::default(),
            users: RefCell::default(),
            groups: RefCell::default(),
            memo: RefCell::default(),
            vouched: RefCell::default(),
        }
    }

    /// A value observed once per run and shared by the steps that need it (the dpkg
    /// database, the state of all systemd units), loaded on first use. A step that
    /// changes what it describes calls [`Ctx::forget`] so the next step sees the change.
    pub fn memo<T: 'static>(
        &self,
        key: &'static str,
        load: impl FnOnce() -> Result<T, Error>,
    ) -> Result<Rc<T>, Error> {
        if let Some(v) = self.memo.borrow().get(key) {
            return Rc::clone(v)
                .downcast::<T>()
                .map_err(|_| Error::Refused(format!("internal: memo `{key}` holds another type")));
        }
        let value = Rc::new(load()?);
        self.memo
            .borrow_mut()
            .insert(key, Rc::clone(&value) as Rc<dyn Any>);
        Ok(value)
    }

    /// Notes that a plan took `path`'s content as in place on the word of its stamp.
    pub(crate) fn note_vouched(&self, path: &std::path::Path) {
        self.vouched.borrow_mut().insert(path.to_owned());
    }

    /// Whether a plan of this run took `path`'s content as in place on the word of
    /// its stamp (see [`Ctx::note_vouched`]).
    #[must_use]
    pub fn was_vouched(&self, path: &std::path::Path) -> bool {
        self.vouched.borrow().contains(path)
    }

    /// Drops a memoized observation (see [`Ctx::memo`]).
    pub fn forget(&self, key: &'static str) {
        self.memo.borrow_mut().remove(key);
    }

    /// Forgets looked-up users and groups (a step may just have created one).
    pub fn forget_ids(&self) {
        self.users.borrow_mut().clear();
        self.groups.borrow_mut().clear();
        self.forget("uid-labels");
        self.forget("gid-labels");
        self.forget(user::PASSWD_MEMO);
        self.forget(user::GROUP_MEMO);
    }

    fn uid(&self, name: &str) -> Result<Option<u32>, Error> {
        if let Some(id) = self.users.borrow().get(name) {
            return Ok(*id);
        }
        let id = self.host.uid_of(name)?;
        self.users.borrow_mut().insert(name.to_owned(), id);
        Ok(id)
    }

    fn gid(&self, name: &str) -> Result<Option<u32>, Error> {
        if let Some(id) = self.groups.borrow().get(name) {
            return Ok(*id);
        }
        let id = self.host.gid_of(name)?;
        self.groups.borrow_mut().insert(name.to_owned(), id);
        Ok(id)
    }

    /// The name of a uid for messages (the number when it has none). Cached per run:
    /// every in-sync file says who owns it, and each lookup reads the user database.
    fn user_label(&self, uid: u32) -> String {
        let labels = self.memo("uid-labels", || {
            Ok(RefCell::new(HashMap::<u32, String>::new()))
        });
        let Ok(labels) = labels else {
            return uid.to_string();
        };
        labels
            .borrow_mut()
            .entry(uid)
            .or_insert_with(|| match self.host.user_name(uid) {
                Ok(Some(name)) => name,
                _ => uid.to_string(),
            })
            .clone()
    }

    /// The name of a gid for messages; cached like [`Ctx::user_label`].
    fn group_label(&self, gid: u32) -> String {
        let labels = self.memo("gid-labels", || {
            Ok(RefCell::new(HashMap::<u32, String>::new()))
        });
        let Ok(labels) = labels else {
            return gid.to_string();
        };
        labels
            .borrow_mut()
            .entry(gid)
            .or_insert_with(|| match self.host.group_name(gid) {
                Ok(Some(name)) => name,
                _ => gid.to_string(),
            })
            .clone()
    }

    /// Captures the original state of `path` before the first change.
    fn capture(&self, path: &Path, meta: Option<&Meta>) -> Result<(), Error> {
        if let Some(originals) = self.originals {
            originals.capture(self.host, path, meta)?;
        }
        Ok(())
    }
}

/// Owner and group as the machine should have them: resolved ids, or a note when the
/// name does not exist on this machine (yet).
struct Ownership {
    uid: Option<u32>,
    gid: Option<u32>,
    /// Names that do not exist here.
    missing: Vec<String>,
}

fn resolve_owner(
    ctx: &Ctx<'_>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<Ownership, Error> {
    let mut missing = Vec::new();
    let uid = match owner {
        None => None,
        Some(name) => {
            let id = ctx.uid(name)?;
            if id.is_none() {
                missing.push(format!("user {name}"));
            }
            id
        }
    };
    let gid = match group {
        None => None,
        Some(name) => {
            let id = ctx.gid(name)?;
            if id.is_none() {
                missing.push(format!("group {name}"));
            }
            id
        }
    };
    if !missing.is_empty() && !ctx.dry_run {
        return Err(Error::Refused(format!(
            "{} does not exist on this machine; create it in an earlier step",
            missing.join(" and ")
        )));
    }
    Ok(Ownership { uid, gid, missing })
}

/// Mode, owner and group differences of an existing path; a name that does not exist
/// on the machine (possible only in a dry run) gives a change with a note.
fn attr_changes(
    ctx: &Ctx<'_>,
    path: &Path,
    meta: &Meta,
    attrs: &Attrs,
    own: &Ownership,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(mode) = attrs.mode
        && meta.mode != mode.0
    {
        changes.push(
            Change::new(ChangeKind::Mode, path).before_after(mode_str(meta.mode), mode.to_string()),
        );
    }
    if let Some(name) = attrs.owner.as_deref()
        && own.uid != Some(meta.uid)
    {
        let mut c =
            Change::new(ChangeKind::Owner, path).before_after(ctx.user_label(meta.uid), name);
        if own.uid.is_none() {
            c.note = Some(format!("user {name} does not exist on this machine yet"));
        }
        changes.push(c);
    }
    if let Some(name) = attrs.group.as_deref()
        && own.gid != Some(meta.gid)
    {
        let mut c =
            Change::new(ChangeKind::Group, path).before_after(ctx.group_label(meta.gid), name);
        if own.gid.is_none() {
            c.note = Some(format!("group {name} does not exist on this machine yet"));
        }
        changes.push(c);
    }
    changes
}

/// What the step just applied printed, for the log under its change: a command's
/// output, or what `nala fetch` printed (with the warning when it failed).
#[must_use]
pub fn take_output(ctx: &Ctx<'_>) -> Option<String> {
    command::take_output(ctx).or_else(|| nala_fetch::take_output(ctx))
}

/// Plans a step's resource.
pub fn plan(kind: &StepKind, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    match kind {
        StepKind::File(step) => file::plan_file(step, ctx),
        StepKind::Template(step) => file::plan_template(step, ctx),
        StepKind::Directory(step) => directory::plan(step, ctx),
        StepKind::Symlink(step) => symlink::plan(step, ctx),
        StepKind::Package(step) => package::plan(step, ctx),
        StepKind::Service(step) => service::plan(step, ctx),
        StepKind::Command(step) => command::plan(step, ctx),
        StepKind::User(step) => user::plan(step, ctx),
        StepKind::Group(step) => group::plan(step, ctx),
        StepKind::AuthorizedKeys(step) => authorized_keys::plan(step, ctx),
        StepKind::NalaFetch(step) => nala_fetch::plan(step, ctx),
        StepKind::Download(step) => download::plan(step, ctx),
        StepKind::AptRepository(step) => apt_repository::plan(step, ctx),
        StepKind::Compose(step) => compose::plan(step, ctx),
    }
}

/// Applies a plan made by [`plan`] for the same step.
pub fn apply(kind: &StepKind, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    match kind {
        StepKind::File(step) => file::apply_file(step, plan, ctx),
        StepKind::Template(step) => file::apply_template(step, plan, ctx),
        StepKind::Directory(step) => directory::apply(step, plan, ctx),
        StepKind::Symlink(step) => symlink::apply(step, plan, ctx),
        StepKind::Package(step) => package::apply(step, plan, ctx),
        StepKind::Service(step) => service::apply(step, plan, ctx),
        StepKind::Command(step) => command::apply(step, plan, ctx),
        StepKind::User(step) => user::apply(step, plan, ctx),
        StepKind::Group(step) => group::apply(step, plan, ctx),
        StepKind::AuthorizedKeys(step) => authorized_keys::apply(step, plan, ctx),
        StepKind::NalaFetch(step) => nala_fetch::apply(step, plan, ctx),
        StepKind::Download(step) => download::apply(step, plan, ctx),
        StepKind::AptRepository(step) => apt_repository::apply(step, plan, ctx),
        StepKind::Compose(step) => compose::apply(step, plan, ctx),
    }
}

/// What a notified step does when the engine reaches it (service: restart or reload;
/// command: run even if its guard says it is done). `plan` is the step's plan in this
/// run, so a service that was just started is not restarted again. In a dry run it
/// says what it would do and does nothing. `None`: this kind has nothing to refresh
/// (file-like resources converge the same way whether notified or not).
pub fn refresh(kind: &StepKind, plan: &Plan, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    match kind {
        StepKind::File(_)
        | StepKind::Template(_)
        | StepKind::Directory(_)
        | StepKind::Symlink(_) => Ok(None),
        StepKind::Package(step) => package::refresh(step, plan, ctx),
        StepKind::Service(step) => service::refresh(step, plan, ctx),
        StepKind::Command(step) => command::refresh(step, plan, ctx),
        StepKind::User(step) => user::refresh(step, plan, ctx),
        StepKind::Group(step) => group::refresh(step, plan, ctx),
        StepKind::AuthorizedKeys(step) => authorized_keys::refresh(step, plan, ctx),
        StepKind::NalaFetch(step) => nala_fetch::refresh(step, plan, ctx),
        StepKind::Download(step) => download::refresh(step, plan, ctx),
        StepKind::AptRepository(step) => apt_repository::refresh(step, plan, ctx),
        StepKind::Compose(step) => compose::refresh(step, plan, ctx),
    }
}

/// A short description of what a step manages, for output: `file /etc/motd`.
#[must_use]
pub fn describe(kind: &StepKind) -> String {
    match kind {
        StepKind::File(s) => format!("file {}", s.path),
        StepKind::Template(s) => format!("template {}", s.path),
        StepKind::Directory(s) => format!("directory {}", s.path),
        StepKind::Symlink(s) => format!("symlink {}", s.path),
        StepKind::Package(s) => package::describe(s),
        StepKind::Service(s) => service::describe(s),
        StepKind::Command(s) => command::describe(s),
        StepKind::User(s) => user::describe(s),
        StepKind::Group(s) => group::describe(s),
        StepKind::AuthorizedKeys(s) => authorized_keys::describe(s),
        StepKind::NalaFetch(s) => nala_fetch::describe(s),
        StepKind::Download(s) => download::describe(s),
        StepKind::AptRepository(s) => apt_repository::describe(s),
        StepKind::Compose(s) => compose::describe(s),
    }
}

fn kind_name(meta: &Meta) -> &'static str {
    match meta.kind {
        host::Kind::File => "a regular file",
        host::Kind::Dir => "a directory",
        host::Kind::Symlink => "a symbolic link",
        host::Kind::Other => "a special file",
    }
}

fn mode_str(mode: u32) -> String {
    format!("{mode:04o}")
}

/// "user alice does not exist on this machine yet", or "... do not exist ..." for two.
fn missing_names(missing: &[String]) -> String {
    let verb = if missing.len() > 1 { "do" } else { "does" };
    format!(
        "{} {verb} not exist on this machine yet",
        missing.join(" and ")
    )
}
