//! `FakeHost`: an in-memory machine for unit tests of resources and the engine.
//!
//! It keeps a small filesystem (files, directories, symbolic links with mode and
//! owner), users, groups and facts, answers the [`Host`] trait from them with the
//! errors a POSIX filesystem would give, and records every mutation as a readable
//! line (`"write /etc/motd"`, `"chmod /etc/motd 0640"`) and every command it was asked
//! to run. Commands are not run: their results are scripted (exit 0 with no output
//! unless told otherwise), or given by an effect that may change the fake (`useradd`
//! adding a line to /etc/passwd). Users and groups are those added with `with_user`
//! and `with_group`, then those of the fake's own /etc/passwd and /etc/group.
//! Faults can be injected per operation and path.
//!
//! Symbolic links are followed only by `read_file` (as `open` would); intermediate
//! path components are never resolved.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;

use super::{Error, Host, Kind, Meta, staged_prefix};
use crate::facts::Facts;
use crate::process::{Cmd, CmdOutput};

/// One filesystem object of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
}

impl Node {
    fn owner(&self) -> (u32, u32) {
        match self {
            Self::File { uid, gid, .. }
            | Self::Dir { uid, gid, .. }
            | Self::Symlink { uid, gid, .. } => (*uid, *gid),
        }
    }

    fn set_owner(&mut self, owner: Option<u32>, group: Option<u32>) {
        match self {
            Self::File { uid, gid, .. }
            | Self::Dir { uid, gid, .. }
            | Self::Symlink { uid, gid, .. } => {
                if let Some(u) = owner {
                    *uid = u;
                }
                if let Some(g) = group {
                    *gid = g;
                }
            }
        }
    }

    fn meta(&self) -> Meta {
        let (uid, gid) = self.owner();
        match self {
            Self::File { content, mode, .. } => Meta {
                kind: Kind::File,
                mode: *mode,
                uid,
                gid,
                size: content.len() as u64,
                stamp: None,
            },
            Self::Dir { mode, .. } => Meta {
                kind: Kind::Dir,
                mode: *mode,
                uid,
                gid,
                size: 4096,
                stamp: None,
            },
            Self::Symlink { target, .. } => Meta {
                kind: Kind::Symlink,
                mode: 0o777,
                uid,
                gid,
                size: target.as_os_str().len() as u64,
                stamp: None,
            },
        }
    }
}

/// `file 0644 0:0 12 bytes`, `dir 0755 0:0`, `symlink -> target 0:0`.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File {
                content,
                mode,
                uid,
                gid,
            } => write!(f, "file {mode:04o} {uid}:{gid} {} bytes", content.len()),
            Self::Dir { mode, uid, gid } => write!(f, "dir {mode:04o} {uid}:{gid}"),
            Self::Symlink { target, uid, gid } => {
                write!(f, "symlink -> {} {uid}:{gid}", target.display())
            }
        }
    }
}

/// A `Host` operation, for fault injection ([`FakeHost::fail_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lstat,
    /// `read_file`, `read_link` and `read_dir`.
    Read,
    Stage,
    Commit,
    Discard,
    SetMode,
    SetOwner,
    CreateDir,
    RemoveFile,
    RemoveDir,
    Symlink,
    /// `run`; the fault's path is compared with the program name.
    Run,
}

type Predicate = Box<dyn Fn(&Cmd) -> bool + Send + Sync>;
type Effect = std::sync::Arc<dyn Fn(&FakeHost, &Cmd) -> CmdOutput + Send + Sync>;

struct Script {
    what: String,
    matches: Predicate,
    output: CmdOutput,
    /// Acts on the fake (e.g. `useradd` adding a line to /etc/passwd) and gives the
    /// output; replaces `output` when set.
    effect: Option<Effect>,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("what", &self.what)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    facts: Facts,
    fs: BTreeMap<PathBuf, Node>,
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
    mutations: Vec<String>,
    commands: Vec<Cmd>,
    scripts: Vec<Script>,
    faults: Vec<(Op, PathBuf)>,
    next_tmp: u64,
    /// Modification times set with `with_mtime`/`set_mtime`; other paths report the epoch.
    mtimes: BTreeMap<PathBuf, std::time::SystemTime>,
    /// Stamps set with `set_stamp`; other paths have none (the caller reads them).
    stamps: BTreeMap<PathBuf, super::Stamp>,
}

/// An in-memory machine. See the module documentation.
#[derive(Debug)]
pub struct FakeHost {
    state: Mutex<State>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

fn errno(op: &'static str, path: &Path, e: Errno) -> Error {
    Error::io(op, path, std::io::Error::from_raw_os_error(e as i32))
}

fn injected() -> Error {
    Error::Other("injected failure".to_owned())
}

impl FakeHost {
    /// A machine with only `/` (0755, root), user and group `root` (0) and the
    /// placeholder facts of `test-host`.
    #[must_use]
    pub fn new() -> Self {
        let mut fs = BTreeMap::new();
        fs.insert(
            PathBuf::from("/"),
            Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        Self {
            state: Mutex::new(State {
                facts: Facts::placeholder("test-host"),
                fs,
                users: BTreeMap::from([("root".to_owned(), 0)]),
                groups: BTreeMap::from([("root".to_owned(), 0)]),
                mutations: Vec::new(),
                commands: Vec::new(),
                scripts: Vec::new(),
                faults: Vec::new(),
                next_tmp: 1,
                mtimes: BTreeMap::new(),
                stamps: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent enough state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- setup (builder style; not logged) ----

    /// Adds a root-owned regular file, creating missing parent directories (0755, root).
    #[must_use]
    pub fn with_file(
        mut self,
        path: impl AsRef<Path>,
        content: impl AsRef<[u8]>,
        mode: u32,
    ) -> Self {
        let node = Node::File {
            content: content.as_ref().to_vec(),
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        };
        self.state_mut().put_with_parents(path.as_ref(), node);
        self
    }

    /// Adds a root-owned directory, creating missing parents (0755, root). An existing
    /// directory gets the new mode.
    #[must_use]
    pub fn with_dir(mut self, path: impl AsRef<Path>, mode: u32) -> Self {
        self.state_mut().put_with_parents(
            path.as_ref(),
            Node::Dir {
                mode: mode & 0o7777,
                uid: 0,
                gid: 0,
            },
        );
        self
    }

    /// Adds a root-owned symbolic link `path -> target`, creating missing parents.
    #[must_use]
    pub fn with_symlink(mut self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        let node = Node::Symlink {
            target: target.as_ref().to_owned(),
            uid: 0,
            gid: 0,
        };
        self.state_mut().put_with_parents(path.as_ref(), node);
        self
    }

    /// Sets the owner of a path added before.
    #[must_use]
    pub fn with_owner(mut self, path: impl AsRef<Path>, uid: u32, gid: u32) -> Self {
        let path = path.as_ref();
        match self.state_mut().fs.get_mut(path) {
            Some(node) => node.set_owner(Some(uid), Some(gid)),
            None => panic!(
                "with_owner: {} was not added to the FakeHost",
                path.display()
            ),
        }
        self
    }

    #[must_use]
    pub fn with_user(mut self, name: &str, uid: u32) -> Self {
        self.state_mut().users.insert(name.to_owned(), uid);
        self
    }

    #[must_use]
    pub fn with_group(mut self, name: &str, gid: u32) -> Self {
        self.state_mut().groups.insert(name.to_owned(), gid);
        self
    }

    /// Sets the modification time `modified` reports for `path` (which must exist
    /// when asked; paths without one report the Unix epoch).
    #[must_use]
    pub fn with_mtime(self, path: impl AsRef<Path>, time: std::time::SystemTime) -> Self {
        self.set_mtime(path, time);
        self
    }

    #[must_use]
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.state_mut().facts = facts;
        self
    }

    /// The result of every command whose program is `program`. Scripts added later win.
    #[must_use]
    pub fn with_command(self, program: &str, output: CmdOutput) -> Self {
        let wanted = program.to_owned();
        self.with_command_fn(program, move |cmd| cmd.program == wanted, output)
    }

    /// The result of every command `matches` accepts (`what` names it in `Debug`).
    /// Scripts added later win.
    #[must_use]
    pub fn with_command_fn(
        mut self,
        what: &str,
        matches: impl Fn(&Cmd) -> bool + Send + Sync + 'static,
        output: CmdOutput,
    ) -> Self {
        self.state_mut().scripts.push(Script {
            what: what.to_owned(),
            matches: Box::new(matches),
            output,
            effect: None,
        });
        self
    }

    /// Every command whose program is `program` runs `effect`, which may change the
    /// fake (through [`FakeHost::set_node`] and the other methods usable during a
    /// test) and returns the command's output. Scripts added later win.
    #[must_use]
    pub fn with_command_effect(
        mut self,
        program: &str,
        effect: impl Fn(&FakeHost, &Cmd) -> CmdOutput + Send + Sync + 'static,
    ) -> Self {
        let wanted = program.to_owned();
        self.state_mut().scripts.push(Script {
            what: program.to_owned(),
            matches: Box::new(move |cmd| cmd.program == wanted),
            output: CmdOutput::default(),
            effect: Some(std::sync::Arc::new(effect)),
        });
        self
    }

    /// Makes `op` fail with `Error::Other("injected failure")` (changing nothing) for
    /// `path` and every path under it. For [`Op::Run`], `path` is a program name.
    #[must_use]
    pub fn fail_on(mut self, op: Op, path: impl AsRef<Path>) -> Self {
        self.state_mut().faults.push((op, path.as_ref().to_owned()));
        self
    }

    /// Makes `stage_file` for `path` (or a path under it) fail: `fail_on(Op::Stage, path)`.
    #[must_use]
    pub fn fail_writes_to(self, path: impl AsRef<Path>) -> Self {
        self.fail_on(Op::Stage, path)
    }

    // ---- during a test (not logged) ----

    /// Removes all injected faults, e.g. to run again after a failed run.
    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Puts a node at `path` (or removes it with `None`) without logging, to simulate
    /// drift or another actor between two runs. Parents are not created.
    pub fn set_node(&self, path: impl AsRef<Path>, node: Option<Node>) {
        let mut st = self.state();
        match node {
            Some(node) => st.fs.insert(path.as_ref().to_owned(), node),
            None => st.fs.remove(path.as_ref()),
        };
    }

    /// Gives the file at `path` a [`super::Stamp`], which [`Host::lstat`] reports while
    /// the path is a file; the fake never changes it by itself, so a test can play a
    /// file whose content changed behind an equal stamp.
    pub fn set_stamp(&self, path: impl AsRef<Path>, stamp: super::Stamp) {
        self.state().stamps.insert(path.as_ref().to_owned(), stamp);
    }

    /// Sets the modification time of `path` (see [`FakeHost::with_mtime`]), unlogged.
    pub fn set_mtime(&self, path: impl AsRef<Path>, time: std::time::SystemTime) {
        self.state().mtimes.insert(path.as_ref().to_owned(), time);
    }

    /// Forgets the mutation and command logs.
    pub fn clear_log(&self) {
        let mut st = self.state();
        st.mutations.clear();
        st.commands.clear();
    }

    // ---- inspection ----

    /// Content, mode, uid and gid of a regular file; `None` if absent or not a file.
    #[must_use]
    pub fn file(&self, path: impl AsRef<Path>) -> Option<(Vec<u8>, u32, u32, u32)> {
        match self.state().fs.get(path.as_ref()) {
            Some(Node::File {
                content,
                mode,
                uid,
                gid,
            }) => Some((content.clone(), *mode, *uid, *gid)),
            _ => None,
        }
    }

    /// The node at `path` (its `Display` is a one-line summary).
    #[must_use]
    pub fn node(&self, path: impl AsRef<Path>) -> Option<Node> {
        self.state().fs.get(path.as_ref()).cloned()
    }

    /// Every path that exists, sorted (`/` included).
    #[must_use]
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state().fs.keys().cloned().collect()
    }

    /// Every mutation since creation or [`clear_log`](Self::clear_log), in order.
    #[must_use]
    pub fn mutations(&self) -> Vec<String> {
        self.state().mutations.clone()
    }

    /// Every command run since creation or [`clear_log`](Self::clear_log), in order.
    #[must_use]
    pub fn commands(&self) -> Vec<Cmd> {
        self.state().commands.clone()
    }
}

impl State {
    fn put_with_parents(&mut self, path: &Path, node: Node) {
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            self.fs.entry(ancestor.to_owned()).or_insert(Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        self.fs.insert(path.to_owned(), node);
    }

    fn fault(&self, op: Op, path: &Path) -> Result<(), Error> {
        if self
            .faults
            .iter()
            .any(|(o, p)| *o == op && path.starts_with(p))
        {
            Err(injected())
        } else {
            Ok(())
        }
    }

    /// The parent of `path` must be an existing directory.
    fn check_parent(&self, op: &'static str, path: &Path) -> Result<(), Error> {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        match self.fs.get(parent) {
            Some(Node::Dir { .. }) => Ok(()),
            Some(_) => Err(errno(op, path, Errno::ENOTDIR)),
            None => Err(errno(op, path, Errno::ENOENT)),
        }
    }

    fn get(&self, op: &'static str, path: &Path) -> Result<&Node, Error> {
        self.fs
            .get(path)
            .ok_or_else(|| errno(op, path, Errno::ENOENT))
    }

    fn has_children(&self, dir: &Path) -> bool {
        self.fs.keys().any(|p| p.parent() == Some(dir) && p != dir)
    }

    fn log(&mut self, line: String) {
        self.mutations.push(line);
    }

    /// `(name, id)` of every entry of the fake's /etc/passwd or /etc/group, when it has
    /// one: users and groups come from these files too, as NSS `files` would give them.
    fn id_db(&self, path: &str) -> impl Iterator<Item = (String, u32)> + '_ {
        let text = match self.fs.get(Path::new(path)) {
            Some(Node::File { content, .. }) => std::str::from_utf8(content).unwrap_or(""),
            _ => "",
        };
        text.lines().filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
    }
}

impl Host for FakeHost {
    fn facts(&self) -> Result<Facts, Error> {
        Ok(self.state().facts.clone())
    }

    fn lstat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        let st = self.state();
        st.fault(Op::Lstat, path)?;
        Ok(st.fs.get(path).map(|node| {
            let mut meta = node.meta();
            if meta.kind == Kind::File {
                meta.stamp = st.stamps.get(path).copied();
            }
            meta
        }))
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let st = self.state();
        st.fault(Op::Read, path)?;
        let mut current = path.to_owned();
        for _ in 0..40 {
            match st.get("read", &current)? {
                Node::File { content, .. } => return Ok(content.clone()),
                Node::Dir { .. } => return Err(errno("read", path, Errno::EISDIR)),
                Node::Symlink { target, .. } => {
                    current = match current.parent() {
                        Some(parent) => parent.join(target),
                        None => target.clone(),
                    };
                }
            }
        }
        Err(errno("read", path, Errno::ELOOP))
    }

    fn modified(&self, path: &Path) -> Result<Option<std::time::SystemTime>, Error> {
        let st = self.state();
        st.fault(Op::Lstat, path)?;
        Ok(st.fs.contains_key(path).then(|| {
            st.mtimes
                .get(path)
                .copied()
                .unwrap_or(std::time::UNIX_EPOCH)
        }))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, Error> {
        let st = self.state();
        st.fault(Op::Read, path)?;
        match st.get("read link", path)? {
            Node::Symlink { target, .. } => Ok(target.clone()),
            _ => Err(errno("read link", path, Errno::EINVAL)),
        }
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, Error> {
        let st = self.state();
        st.fault(Op::Read, path)?;
        match st.get("list", path)? {
            Node::Dir { .. } => {}
            _ => return Err(errno("list", path, Errno::ENOTDIR)),
        }
        // BTreeMap order is path order; names of direct children sort the same way,
        // but sort explicitly to be independent of component-wise ordering.
        let mut names: Vec<String> = st
            .fs
            .keys()
            .filter(|p| p.parent() == Some(path) && p.as_path() != path)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn uid_of(&self, user: &str) -> Result<Option<u32>, Error> {
        let st = self.state();
        Ok(st.users.get(user).copied().or_else(|| {
            st.id_db("/etc/passwd")
                .find(|(n, _)| n == user)
                .map(|(_, id)| id)
        }))
    }

    fn gid_of(&self, group: &str) -> Result<Option<u32>, Error> {
        let st = self.state();
        Ok(st.groups.get(group).copied().or_else(|| {
            st.id_db("/etc/group")
                .find(|(n, _)| n == group)
                .map(|(_, id)| id)
        }))
    }

    fn user_name(&self, uid: u32) -> Result<Option<String>, Error> {
        let st = self.state();
        Ok(st
            .users
            .iter()
            .find(|(_, u)| **u == uid)
            .map(|(n, _)| n.clone())
            .or_else(|| {
                st.id_db("/etc/passwd")
                    .find(|(_, id)| *id == uid)
                    .map(|(n, _)| n)
            }))
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, Error> {
        let st = self.state();
        Ok(st
            .groups
            .iter()
            .find(|(_, g)| **g == gid)
            .map(|(n, _)| n.clone())
            .or_else(|| {
                st.id_db("/etc/group")
                    .find(|(_, id)| *id == gid)
                    .map(|(n, _)| n)
            }))
    }

    fn stage_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, Error> {
        let mut st = self.state();
        st.fault(Op::Stage, path)?;
        st.check_parent("stage", path)?;
        let dir = path.parent().unwrap_or_else(|| Path::new("/")).to_owned();
        let prefix = staged_prefix(path);
        let stale: Vec<PathBuf> = st
            .fs
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .cloned()
            .collect();
        for old in stale {
            st.fs.remove(&old);
            st.log(format!("rm {}", old.display()));
        }
        let staged = dir.join(format!("{prefix}{}", st.next_tmp));
        st.next_tmp += 1;
        st.fs.insert(
            staged.clone(),
            Node::File {
                content: content.to_vec(),
                mode: mode & 0o7777,
                uid,
                gid,
            },
        );
        st.log(format!("stage {}", staged.display()));
        Ok(staged)
    }

    fn commit_file(&self, staged: &Path, path: &Path) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::Commit, path)?;
        match st.get("commit", staged)? {
            Node::File { .. } => {}
            _ => return Err(errno("commit", staged, Errno::EINVAL)),
        }
        st.check_parent("commit", path)?;
        if let Some(Node::Dir { .. }) = st.fs.get(path) {
            return Err(errno("commit", path, Errno::EISDIR));
        }
        let node = st
            .fs
            .remove(staged)
            .expect("the staged file exists because it was just looked up");
        st.fs.insert(path.to_owned(), node);
        st.log(format!("write {}", path.display()));
        Ok(())
    }

    fn discard_staged(&self, staged: &Path) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::Discard, staged)?;
        match st.get("discard", staged)? {
            Node::Dir { .. } => return Err(errno("discard", staged, Errno::EISDIR)),
            Node::File { .. } | Node::Symlink { .. } => {}
        }
        st.fs.remove(staged);
        st.log(format!("discard {}", staged.display()));
        Ok(())
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::SetMode, path)?;
        let mode = mode & 0o7777;
        match st.fs.get_mut(path) {
            None => return Err(errno("chmod", path, Errno::ENOENT)),
            // As `RealHost`: Linux has no lchmod, and chmod would follow the link.
            Some(Node::Symlink { .. }) => {
                return Err(Error::Other("refusing to chmod a symbolic link".to_owned()));
            }
            Some(Node::File { mode: m, .. } | Node::Dir { mode: m, .. }) => *m = mode,
        }
        st.log(format!("chmod {} {mode:04o}", path.display()));
        Ok(())
    }

    fn set_owner(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::SetOwner, path)?;
        match st.fs.get_mut(path) {
            None => return Err(errno("chown", path, Errno::ENOENT)),
            Some(node) => node.set_owner(uid, gid),
        }
        let show = |id: Option<u32>| id.map_or_else(|| "-".to_owned(), |i| i.to_string());
        st.log(format!(
            "chown {} {}:{}",
            path.display(),
            show(uid),
            show(gid)
        ));
        Ok(())
    }

    fn create_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::CreateDir, path)?;
        if st.fs.contains_key(path) {
            return Err(errno("create directory", path, Errno::EEXIST));
        }
        st.check_parent("create directory", path)?;
        st.fs.insert(
            path.to_owned(),
            Node::Dir {
                mode: mode & 0o7777,
                uid,
                gid,
            },
        );
        st.log(format!("mkdir {}", path.display()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::RemoveFile, path)?;
        if let Node::Dir { .. } = st.get("remove", path)? {
            return Err(errno("remove", path, Errno::EISDIR));
        }
        st.fs.remove(path);
        st.log(format!("rm {}", path.display()));
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::RemoveDir, path)?;
        match st.get("remove directory", path)? {
            Node::Dir { .. } => {}
            _ => return Err(errno("remove directory", path, Errno::ENOTDIR)),
        }
        if st.has_children(path) {
            return Err(Error::Other(format!(
                "cannot remove directory {}: directory not empty",
                path.display()
            )));
        }
        if path.parent().is_none() {
            return Err(errno("remove directory", path, Errno::EBUSY));
        }
        st.fs.remove(path);
        st.log(format!("rmdir {}", path.display()));
        Ok(())
    }

    fn symlink(&self, target: &Path, path: &Path) -> Result<(), Error> {
        let mut st = self.state();
        st.fault(Op::Symlink, path)?;
        match st.fs.get(path) {
            None | Some(Node::Symlink { .. }) => {}
            Some(_) => return Err(errno("symlink", path, Errno::EEXIST)),
        }
        st.check_parent("symlink", path)?;
        st.fs.insert(
            path.to_owned(),
            Node::Symlink {
                target: target.to_owned(),
                uid: 0,
                gid: 0,
            },
        );
        st.log(format!(
            "symlink {} -> {}",
            path.display(),
            target.display()
        ));
        Ok(())
    }

    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, Error> {
        let mut st = self.state();
        st.fault(Op::Run, Path::new(&cmd.program))?;
        let script = st.scripts.iter().rev().find(|s| (s.matches)(cmd));
        let effect = script.and_then(|s| s.effect.clone());
        let output = script.map_or_else(
            || CmdOutput {
                code: Some(0),
                ..CmdOutput::default()
            },
            |s| s.output.clone(),
        );
        st.commands.push(cmd.clone());
        st.log(format!("run {}", cmd.display()));
        drop(st);
        // Outside the lock: the effect changes the fake through its public methods.
        Ok(match effect {
            Some(effect) => effect(self, cmd),
            None => output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn builder_creates_parents_and_inspection_reads_back() {
        let host = FakeHost::new()
            .with_file("/etc/ssh/sshd_config", b"Port 22\n", 0o644)
            .with_owner("/etc/ssh/sshd_config", 1000, 1000)
            .with_symlink("/etc/localtime", "/usr/share/zoneinfo/UTC")
            .with_user("alice", 1000)
            .with_group("staff", 50);
        assert_eq!(
            host.file("/etc/ssh/sshd_config"),
            Some((b"Port 22\n".to_vec(), 0o644, 1000, 1000))
        );
        assert_eq!(
            host.node("/etc/ssh").map(|n| n.to_string()),
            Some("dir 0755 0:0".to_owned())
        );
        assert_eq!(
            host.lstat(p("/etc/localtime")).unwrap().unwrap().kind,
            Kind::Symlink
        );
        assert_eq!(host.lstat(p("/nope")).unwrap(), None);
        assert_eq!(host.read_dir(p("/etc")).unwrap(), ["localtime", "ssh"]);
        assert_eq!(host.uid_of("alice").unwrap(), Some(1000));
        assert_eq!(host.group_name(50).unwrap().as_deref(), Some("staff"));
        assert_eq!(host.user_name(0).unwrap().as_deref(), Some("root"));
        assert_eq!(host.facts().unwrap().hostname, "test-host");
        assert!(host.mutations().is_empty());
    }

    #[test]
    fn stage_commit_and_discard() {
        let host = FakeHost::new().with_file("/etc/motd", b"old\n", 0o644);
        let staged = host
            .stage_file(p("/etc/motd"), b"new\n", 0o640, 0, 0)
            .unwrap();
        assert_eq!(staged, p("/etc/.motd.infra-tmp.1"));
        assert_eq!(
            host.read_dir(p("/etc")).unwrap(),
            [".motd.infra-tmp.1", "motd"]
        );
        host.commit_file(&staged, p("/etc/motd")).unwrap();
        assert_eq!(
            host.file("/etc/motd"),
            Some((b"new\n".to_vec(), 0o640, 0, 0))
        );
        assert_eq!(host.node(&staged), None);

        let staged = host.stage_file(p("/etc/motd"), b"x", 0o644, 0, 0).unwrap();
        host.discard_staged(&staged).unwrap();
        assert_eq!(host.read_dir(p("/etc")).unwrap(), ["motd"]);
        assert_eq!(
            host.mutations(),
            [
                "stage /etc/.motd.infra-tmp.1",
                "write /etc/motd",
                "stage /etc/.motd.infra-tmp.2",
                "discard /etc/.motd.infra-tmp.2"
            ]
        );

        let err = host
            .stage_file(p("/missing/f"), b"", 0o644, 0, 0)
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn stale_candidates_are_removed_before_staging() {
        let host = FakeHost::new().with_file("/etc/.motd.infra-tmp.abc", b"stale", 0o600);
        let staged = host
            .stage_file(p("/etc/motd"), b"new", 0o644, 0, 0)
            .unwrap();
        assert_eq!(
            host.read_dir(p("/etc")).unwrap(),
            [staged.file_name().unwrap().to_string_lossy()]
        );
        assert_eq!(host.mutations()[0], "rm /etc/.motd.infra-tmp.abc");
    }

    #[test]
    fn posix_errors() {
        let host = FakeHost::new()
            .with_file("/d/f", b"", 0o644)
            .with_symlink("/l", "t");
        assert!(
            host.create_dir(p("/x/y"), 0o755, 0, 0)
                .unwrap_err()
                .is_not_found()
        );
        assert!(host.create_dir(p("/d"), 0o755, 0, 0).is_err());
        assert!(
            matches!(host.remove_dir(p("/d")), Err(Error::Other(m)) if m.contains("directory not empty"))
        );
        assert!(host.remove_file(p("/d")).is_err());
        assert!(host.symlink(p("t"), p("/d/f")).is_err());
        assert!(host.set_mode(p("/l"), 0o644).is_err());
        assert!(host.read_link(p("/d/f")).is_err());
        assert!(host.read_dir(p("/d/f")).is_err());
        assert!(host.mutations().is_empty());

        host.symlink(p("u"), p("/l")).unwrap();
        assert_eq!(host.read_link(p("/l")).unwrap(), p("u"));
        host.remove_file(p("/d/f")).unwrap();
        host.remove_dir(p("/d")).unwrap();
        host.create_dir(p("/srv"), 0o750, 0, 0).unwrap();
        host.set_mode(p("/srv"), 0o2750).unwrap();
        host.set_owner(p("/srv"), Some(1000), None).unwrap();
        assert_eq!(
            host.mutations(),
            [
                "symlink /l -> u",
                "rm /d/f",
                "rmdir /d",
                "mkdir /srv",
                "chmod /srv 2750",
                "chown /srv 1000:-"
            ]
        );
        assert_eq!(
            host.node("/srv"),
            Some(Node::Dir {
                mode: 0o2750,
                uid: 1000,
                gid: 0
            })
        );
    }

    #[test]
    fn read_file_follows_symlinks() {
        let host = FakeHost::new()
            .with_file("/etc/real", b"hi", 0o644)
            .with_symlink("/etc/link", "real");
        assert_eq!(host.read_file(p("/etc/link")).unwrap(), b"hi");
        assert!(host.read_file(p("/etc")).is_err());
    }

    #[test]
    fn commands_are_scripted_and_recorded() {
        let fail = CmdOutput {
            code: Some(1),
            stderr: b"bad".to_vec(),
            ..CmdOutput::default()
        };
        let host = FakeHost::new().with_command("visudo", fail.clone());
        let cmd = Cmd::new("visudo").args(["-cf", "/etc/sudoers.d/.x.infra-tmp.1"]);
        assert_eq!(host.run(&cmd).unwrap(), fail);
        assert!(host.run(&Cmd::new("true")).unwrap().success());
        assert_eq!(host.commands(), [cmd, Cmd::new("true")]);
        assert_eq!(
            host.mutations(),
            ["run visudo -cf /etc/sudoers.d/.x.infra-tmp.1", "run true"]
        );
        host.clear_log();
        assert!(host.commands().is_empty() && host.mutations().is_empty());
    }

    #[test]
    fn injected_faults_fail_and_change_nothing() {
        let host = FakeHost::new()
            .with_dir("/etc", 0o755)
            .fail_writes_to("/etc/motd")
            .fail_on(Op::Run, "apt-get");
        assert!(
            matches!(host.stage_file(p("/etc/motd"), b"", 0o644, 0, 0), Err(Error::Other(m)) if m == "injected failure")
        );
        assert!(host.stage_file(p("/etc/issue"), b"", 0o644, 0, 0).is_ok());
        assert!(host.run(&Cmd::new("apt-get")).is_err());
        host.heal();
        assert!(host.stage_file(p("/etc/motd"), b"", 0o644, 0, 0).is_ok());
    }
}
