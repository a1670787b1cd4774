//! The `Host` boundary: every observation and mutation of the machine goes through it.
//!
//! `RealHost` talks to the machine; `FakeHost` answers from memory and records what
//! would be done, for unit tests. Resources and the engine see only `dyn Host`.
//! Invariant: nothing outside `host/` touches the machine's filesystem or starts a
//! process on behalf of a step.

pub mod fake;
pub mod real;

use std::path::{Path, PathBuf};

use crate::facts::Facts;
use crate::process::{Cmd, CmdOutput};

pub use fake::FakeHost;
pub use real::RealHost;

/// A failure to observe or change the machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    /// A fault injected by a test (see `RealHost::fail_before_commit`).
    #[error("injected fault: {0}")]
    Fault(&'static str),
}

impl Error {
    #[must_use]
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the error means the path does not exist.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What kind of filesystem object a path is (not following symbolic links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of a path, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// A regular file's [`Stamp`], taken with the rest; `None` for other kinds, and
    /// when the host cannot tell (callers then read the file).
    pub stamp: Option<Stamp>,
}

/// What identifies a regular file's content without reading it: inode, size, and the
/// modification and change times in nanoseconds. The change time moves with every
/// write, rename onto the path, chmod or chown, and no program can set it back, so
/// while a stamp stays equal the content has not changed, except for a write within
/// the same clock tick as the stamp was taken (see [`Stamp::changed_before`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    /// Whether the file last changed at least `margin` before `now`. Only such a stamp
    /// vouches for the content later: a file changed within a clock tick of being
    /// stamped may change again with the same times.
    #[must_use]
    pub fn changed_before(&self, now: std::time::SystemTime, margin: std::time::Duration) -> bool {
        let now_ns = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let margin_ns = i128::try_from(margin.as_nanos()).unwrap_or(i128::MAX);
        self.ctime_ns.saturating_add(margin_ns) <= now_ns
    }
}

/// The machine, as the engine and resources see it.
pub trait Host {
    /// Facts about the machine (`facts.*`), as they were when the run started: gathered
    /// once per run (a resource that needs the current state observes it itself).
    fn facts(&self) -> Result<Facts, Error>;

    /// Metadata of `path` without following a final symbolic link; `None` if absent.
    fn lstat(&self, path: &Path) -> Result<Option<Meta>, Error>;
    /// Content of a regular file.
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Error>;
    /// Modification time of `path` (not following a final symbolic link); `None` if
    /// absent. The default says this host cannot tell.
    fn modified(&self, path: &Path) -> Result<Option<std::time::SystemTime>, Error> {
        Err(Error::Other(format!(
            "cannot read the modification time of {}: not supported by this host",
            path.display()
        )))
    }
    /// Target of a symbolic link.
    fn read_link(&self, path: &Path) -> Result<PathBuf, Error>;
    /// Names of the entries of a directory, sorted.
    fn read_dir(&self, path: &Path) -> Result<Vec<String>, Error>;

    /// The uid of a user name; `None` if no such user.
    fn uid_of(&self, user: &str) -> Result<Option<u32>, Error>;
    /// The gid of a group name; `None` if no such group.
    fn gid_of(&self, group: &str) -> Result<Option<u32>, Error>;
    /// The name of a uid, if it has one.
    fn user_name(&self, uid: u32) -> Result<Option<String>, Error>;
    /// The name of a gid, if it has one.
    fn group_name(&self, gid: u32) -> Result<Option<String>, Error>;

    /// Writes a candidate for `path` next to it, named `.NAME.infra-tmp.XXXXXX` so that
    /// no include glob (`*.conf`) picks it up, with the given mode and owner, and
    /// fsyncs it. Stale candidates for the same `path` left by a killed run are removed
    /// first. Returns the candidate's path.
    fn stage_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, Error>;
    /// Renames a staged candidate over `path` and fsyncs the directory: the live file is
    /// either the old or the new one, never a mix, whatever happens.
    fn commit_file(&self, staged: &Path, path: &Path) -> Result<(), Error>;
    /// Removes a staged candidate that will not be used.
    fn discard_staged(&self, staged: &Path) -> Result<(), Error>;

    /// Sets permission bits (`0o7777`); never follows a final symbolic link.
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error>;
    /// Sets owner and/or group; never follows a final symbolic link.
    fn set_owner(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Error>;
    /// Creates one directory (the parent must exist) with this mode and owner.
    fn create_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Error>;
    /// Removes a file or a symbolic link.
    fn remove_file(&self, path: &Path) -> Result<(), Error>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> Result<(), Error>;
    /// Makes `path` a symbolic link to `target`, atomically replacing a link already there.
    fn symlink(&self, target: &Path, path: &Path) -> Result<(), Error>;

    /// Runs a command to completion.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, Error>;
}

/// The name used for a candidate of `path`: `.NAME.infra-tmp.` followed by a suffix.
#[must_use]
pub fn staged_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.infra-tmp.")
}
