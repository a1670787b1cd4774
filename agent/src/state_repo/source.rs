//! Where a state repository is read from: a plain directory now, a git commit tree later.

use std::io;
use std::path::{Path, PathBuf};

/// Read access to the files of a state repository.
///
/// Paths are relative to the repository root and use `/`. Symbolic links are not
/// followed when listing, so a link cannot pull files from outside the repository into it.
pub trait RepoSource {
    /// The file's text, or `None` when it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<String>>;
    /// The file's bytes (for `files/`, which may hold binary files).
    fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>>;
    /// Names of the regular files directly inside `dir`, sorted; empty when `dir` does not exist.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Names of the directories directly inside `dir`, sorted; empty when `dir` does not exist.
    fn list_dirs(&self, dir: &str) -> io::Result<Vec<String>>;
    /// How to name the repository in messages.
    fn describe(&self) -> String;
}

/// A state repository checked out (or being edited) in a directory.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(Path::new(path))
    }

    fn entries(&self, dir: &str, files: bool) -> io::Result<Vec<String>> {
        let entries = match fs_err::read_dir(self.full(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if (files && kind.is_file()) || (!files && kind.is_dir()) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

impl RepoSource for DirSource {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        match fs_err::read_to_string(self.full(path)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>> {
        fs_err::read(self.full(path))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.entries(dir, true)
    }

    fn list_dirs(&self, dir: &str) -> io::Result<Vec<String>> {
        self.entries(dir, false)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
