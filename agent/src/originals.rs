//! The record of what the agent changed: for every path it touches, the state that path
//! had before the agent's first change (content, mode, owner — or that it did not exist).
//!
//! Rollback (`prune.rs`) reads this record to restore what a reverted commit changed,
//! and deletes a path's record once it is done with the path.
//! Invariant: a record is written once per path (the first change wins, so the original
//! is never overwritten by the agent's own later state), always before the change it
//! describes, and never in a dry run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{Error, Host, Kind, Meta};

/// The `originals/` directory under the agent's state directory.
#[derive(Debug, Clone)]
pub struct Originals {
    dir: PathBuf,
}

/// What a path was before the agent first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    pub existed: bool,
    pub kind: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A symbolic link's target.
    pub target: Option<String>,
    /// The file holding a regular file's original content, beside the record.
    pub content: Option<String>,
}

impl Originals {
    /// The record kept under `state_dir/originals`.
    #[must_use]
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("originals"),
        }
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file name for `path`: the path with `%` and `/` escaped, so names are unique,
    /// readable and flat.
    fn key(path: &Path) -> String {
        let mut out = String::new();
        for c in path.to_string_lossy().chars() {
            match c {
                '%' => out.push_str("%25"),
                '/' => out.push_str("%2F"),
                c => out.push(c),
            }
        }
        out
    }

    fn record_path(&self, path: &Path) -> PathBuf {
        self.dir.join(format!("{}.json", Self::key(path)))
    }

    /// Reads the record of `path`, if one was captured.
    pub fn get(&self, host: &dyn Host, path: &Path) -> Result<Option<Record>, Error> {
        let file = self.record_path(path);
        if host.lstat(&file)?.is_none() {
            return Ok(None);
        }
        let bytes = host.read_file(&file)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Other(format!("the record {} is damaged: {e}", file.display())))
    }

    /// Captures the current state of `path` (whose metadata is `meta`) unless a record
    /// exists already.
    pub fn capture(&self, host: &dyn Host, path: &Path, meta: Option<&Meta>) -> Result<(), Error> {
        let file = self.record_path(path);
        if host.lstat(&file)?.is_some() {
            return Ok(());
        }
        self.ensure_dir(host)?;
        let mut record = Record {
            path: path.to_string_lossy().into_owned(),
            existed: meta.is_some(),
            kind: None,
            mode: None,
            uid: None,
            gid: None,
            target: None,
            content: None,
        };
        if let Some(meta) = meta {
            record.kind = Some(format!("{:?}", meta.kind).to_lowercase());
            record.mode = Some(meta.mode);
            record.uid = Some(meta.uid);
            record.gid = Some(meta.gid);
            match meta.kind {
                Kind::File => {
                    let name = format!("{}.content", Self::key(path));
                    let content = host.read_file(path)?;
                    let target = self.dir.join(&name);
                    let staged = host.stage_file(&target, &content, 0o600, 0, 0)?;
                    host.commit_file(&staged, &target)?;
                    record.content = Some(name);
                }
                Kind::Symlink => {
                    record.target = Some(host.read_link(path)?.to_string_lossy().into_owned());
                }
                Kind::Dir | Kind::Other => {}
            }
        }
        let json = serde_json::to_vec_pretty(&record).expect("a record always serializes");
        // The record is written last: a record that exists is complete.
        let staged = host.stage_file(&file, &json, 0o600, 0, 0)?;
        host.commit_file(&staged, &file)
    }

    /// Reads the original content of a regular file, kept beside its record.
    pub fn content(&self, host: &dyn Host, record: &Record) -> Result<Vec<u8>, Error> {
        let Some(name) = &record.content else {
            return Err(Error::Other(format!(
                "the record of {} has no original content although the file existed",
                record.path
            )));
        };
        host.read_file(&self.dir.join(name))
    }

    /// Deletes the record of `path` and its content, once rollback has put the path
    /// back (or given it up): a later change to the path records the state of that time.
    /// The record goes first, so a record that exists is still complete.
    pub fn forget(&self, host: &dyn Host, path: &Path) -> Result<(), Error> {
        let file = self.record_path(path);
        if host.lstat(&file)?.is_some() {
            host.remove_file(&file)?;
        }
        let content = self.dir.join(format!("{}.content", Self::key(path)));
        if host.lstat(&content)?.is_some() {
            host.remove_file(&content)?;
        }
        Ok(())
    }

    fn ensure_dir(&self, host: &dyn Host) -> Result<(), Error> {
        let mut missing = Vec::new();
        let mut dir = self.dir.as_path();
        while host.lstat(dir)?.is_none() {
            missing.push(dir.to_owned());
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        for dir in missing.iter().rev() {
            host.create_dir(dir, 0o700, 0, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    #[test]
    fn first_capture_wins_and_keeps_content() {
        let host = FakeHost::new().with_file("/etc/motd", b"original\n", 0o644);
        let originals = Originals::new(Path::new("/var/lib/infra-agent"));
        let meta = host.lstat(Path::new("/etc/motd")).unwrap();
        originals
            .capture(&host, Path::new("/etc/motd"), meta.as_ref())
            .unwrap();
        // The agent changes the file, then captures again: the record still holds the original.
        let staged = host
            .stage_file(Path::new("/etc/motd"), b"managed\n", 0o600, 0, 0)
            .unwrap();
        host.commit_file(&staged, Path::new("/etc/motd")).unwrap();
        let meta = host.lstat(Path::new("/etc/motd")).unwrap();
        originals
            .capture(&host, Path::new("/etc/motd"), meta.as_ref())
            .unwrap();

        let record = originals
            .get(&host, Path::new("/etc/motd"))
            .unwrap()
            .unwrap();
        assert!(record.existed);
        assert_eq!(record.mode, Some(0o644));
        let content = host
            .read_file(&originals.dir().join(record.content.unwrap()))
            .unwrap();
        assert_eq!(content, b"original\n");
    }

    #[test]
    fn a_path_that_did_not_exist_is_recorded_as_such() {
        let host = FakeHost::new();
        let originals = Originals::new(Path::new("/var/lib/infra-agent"));
        originals
            .capture(&host, Path::new("/srv/new"), None)
            .unwrap();
        let record = originals
            .get(&host, Path::new("/srv/new"))
            .unwrap()
            .unwrap();
        assert!(!record.existed);
        assert_eq!(Originals::key(Path::new("/a/b%c")), "%2Fa%2Fb%25c");
    }
}
