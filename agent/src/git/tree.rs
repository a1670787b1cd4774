//! One commit's tree, read through [`RepoSource`]: what the loader sees of a commit.

use std::io;
use std::path::Path;

use crate::state_repo::RepoSource;

/// Git's mode bits for the kind of a tree entry.
const MODE_KIND: i32 = 0o170_000;
const MODE_FILE: i32 = 0o100_000;
const MODE_SYMLINK: i32 = 0o120_000;

/// The files of one commit. Regular files (mode 644 or 755) are files; a symbolic link
/// or a submodule is neither a file nor a directory, as a symbolic link is to
/// [`DirSource`](crate::state_repo::DirSource)'s listings.
pub struct TreeSource {
    repo: git2::Repository,
    tree: git2::Oid,
    short: String,
}

impl std::fmt::Debug for TreeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeSource")
            .field("commit", &self.short)
            .field("tree", &self.tree)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Submodule,
}

impl TreeSource {
    pub(super) fn new(repo: git2::Repository, tree: git2::Oid, commit: &git2::Oid) -> Self {
        let mut short = commit.to_string();
        short.truncate(12);
        Self { repo, tree, short }
    }

    fn root(&self) -> io::Result<git2::Tree<'_>> {
        self.repo
            .find_tree(self.tree)
            .map_err(|e| self.git_error(&e))
    }

    fn git_error(&self, e: &git2::Error) -> io::Error {
        io::Error::other(format!(
            "cannot read commit {} in the local mirror: {}",
            self.short,
            e.message()
        ))
    }

    /// The entry at `path`: its kind and object id; `None` when there is none.
    fn entry(&self, path: &str) -> io::Result<Option<(Kind, git2::Oid)>> {
        let path = normalize(path);
        if path.is_empty() {
            return Ok(Some((Kind::Dir, self.tree)));
        }
        let root = self.root()?;
        match root.get_path(Path::new(path)) {
            Ok(entry) => Ok(kind(&entry).map(|k| (k, entry.id()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.git_error(&e)),
        }
    }

    fn blob(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.entry(path)? {
            None => Ok(None),
            Some((Kind::File, oid)) => {
                let blob = self.repo.find_blob(oid).map_err(|e| self.git_error(&e))?;
                Ok(Some(blob.content().to_vec()))
            }
            Some((Kind::Dir, _)) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("it is a directory in commit {}", self.short),
            )),
            Some((Kind::Symlink, _)) => Err(io::Error::other(format!(
                "it is a symbolic link in commit {}; the agent reads only regular files from git",
                self.short
            ))),
            Some((Kind::Submodule, _)) => Err(io::Error::other(format!(
                "it is a submodule in commit {}; the agent does not read submodules",
                self.short
            ))),
        }
    }

    fn names(&self, dir: &str, wanted: Kind) -> io::Result<Vec<String>> {
        let oid = match self.entry(dir)? {
            None => return Ok(Vec::new()),
            Some((Kind::Dir, oid)) => oid,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("it is not a directory in commit {}", self.short),
                ));
            }
        };
        let tree = self.repo.find_tree(oid).map_err(|e| self.git_error(&e))?;
        let mut names: Vec<String> = tree
            .iter()
            .filter(|entry| kind(entry) == Some(wanted))
            .map(|entry| String::from_utf8_lossy(entry.name_bytes()).into_owned())
            .collect();
        // Git orders a tree's entries as if directory names ended in `/`; the loader
        // expects plain byte order, as DirSource gives.
        names.sort();
        Ok(names)
    }
}

/// Paths are relative with `/`; `""`, `.` and `./x` name the root and `x`.
fn normalize(path: &str) -> &str {
    let mut path = path.trim_matches('/');
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    if path == "." { "" } else { path }
}

fn kind(entry: &git2::TreeEntry<'_>) -> Option<Kind> {
    match entry.kind()? {
        git2::ObjectType::Tree => Some(Kind::Dir),
        git2::ObjectType::Commit => Some(Kind::Submodule),
        git2::ObjectType::Blob => match entry.filemode() & MODE_KIND {
            MODE_FILE => Some(Kind::File),
            MODE_SYMLINK => Some(Kind::Symlink),
            _ => None,
        },
        _ => None,
    }
}

impl RepoSource for TreeSource {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        match self.blob(path)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                )
            }),
        }
    }

    fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>> {
        self.blob(path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} does not exist in commit {}", self.short),
            )
        })
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.names(dir, Kind::File)
    }

    fn list_dirs(&self, dir: &str) -> io::Result<Vec<String>> {
        self.names(dir, Kind::Dir)
    }

    fn describe(&self) -> String {
        format!("commit {}", self.short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("."), "");
        assert_eq!(normalize("/"), "");
        assert_eq!(normalize("./roles"), "roles");
        assert_eq!(normalize("roles/"), "roles");
        assert_eq!(normalize("files/etc/motd"), "files/etc/motd");
    }

    /// Builds a commit with git2 alone: a file, an executable, a symlink, a submodule
    /// entry, a directory, and names whose git order differs from byte order.
    fn fixture() -> (tempfile::TempDir, TreeSource) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let tree = build(&repo);
        let commit = git2::Oid::from_str(&"ab".repeat(20)).unwrap();
        let source = TreeSource::new(repo, tree, &commit);
        (dir, source)
    }

    fn build(repo: &git2::Repository) -> git2::Oid {
        let blob = |text: &[u8]| repo.blob(text).unwrap();
        let mut sub = repo.treebuilder(None).unwrap();
        sub.insert("b.toml", blob(b"b"), 0o100_644).unwrap();
        let sub = sub.write().unwrap();
        let mut inner = repo.treebuilder(None).unwrap();
        inner.insert("x", blob(b"x"), 0o100_644).unwrap();
        let inner = inner.write().unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert("infra.toml", blob(b"format = 1\n"), 0o100_644)
            .unwrap();
        root.insert("run.sh", blob(b"#!/bin/sh\n"), 0o100_755)
            .unwrap();
        root.insert("link", blob(b"infra.toml"), 0o120_000).unwrap();
        root.insert("bin", blob(b"\xff\xfe"), 0o100_644).unwrap();
        root.insert("roles", sub, 0o040_000).unwrap();
        // `a.b` sorts before `a` + `/` in git's order but after `a` in byte order.
        root.insert("a", inner, 0o040_000).unwrap();
        root.insert("a.b", blob(b"ab"), 0o100_644).unwrap();
        root.insert("a-dir.d", inner, 0o040_000).unwrap();
        root.insert(
            "vendor",
            git2::Oid::from_str(&"1".repeat(40)).unwrap(),
            0o160_000,
        )
        .unwrap();
        root.write().unwrap()
    }

    #[test]
    fn reads_files_and_refuses_links() {
        let (_dir, source) = fixture();
        assert_eq!(source.describe(), "commit abababababab");
        assert_eq!(
            source.read("infra.toml").unwrap().as_deref(),
            Some("format = 1\n")
        );
        assert_eq!(source.read("./roles/b.toml").unwrap().as_deref(), Some("b"));
        assert_eq!(source.read("missing.toml").unwrap(), None);
        assert_eq!(source.read("roles/missing/x").unwrap(), None);
        assert_eq!(source.read_bytes("bin").unwrap(), b"\xff\xfe");
        assert_eq!(
            source.read("bin").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            source.read_bytes("missing").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let err = source.read("link").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = source.read("vendor").unwrap_err();
        assert!(err.to_string().contains("submodule"), "{err}");
        assert_eq!(
            source.read("roles").unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
    }

    #[test]
    fn lists_are_sorted_by_bytes_and_exclude_links() {
        let (_dir, source) = fixture();
        assert_eq!(
            source.list("").unwrap(),
            ["a.b", "bin", "infra.toml", "run.sh"]
        );
        assert_eq!(source.list_dirs("").unwrap(), ["a", "a-dir.d", "roles"]);
        assert_eq!(source.list(".").unwrap(), source.list("").unwrap());
        assert_eq!(source.list("roles").unwrap(), ["b.toml"]);
        assert!(source.list_dirs("roles").unwrap().is_empty());
        assert!(source.list("nowhere").unwrap().is_empty());
        assert!(source.list_dirs("nowhere/deeper").unwrap().is_empty());
        assert_eq!(
            source.list("infra.toml").unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<TreeSource>();
    }
}
