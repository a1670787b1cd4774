//! The compiled catalog of the last run, kept in `state_dir/catalog.cache` so that a
//! run whose inputs did not change skips loading and rendering the repository.
//!
//! Compiling a catalog is a pure function of four things: the agent that compiles it,
//! the host name, the machine's facts, and what the compile read from the repository.
//! The first three make the cache's key. The fourth is recorded while compiling: every
//! file read (with the SHA-256 of its bytes, or that it was absent) and every
//! directory listed (with the names found), through [`Recording`]. A later run uses the
//! cached catalog only when the key matches and replaying those observations against
//! its own source finds exactly the same: then a compile would read the same bytes
//! and build the same catalog. A file the compile never read cannot matter to it, and
//! a file added where it lists (a new role, say) changes a listing.
//!
//! The agent is named by its version and by the identity of its executable (device,
//! inode, size and modification time), so an upgrade or a rebuild starts afresh. Any
//! trouble with the cache (missing, damaged, another schema, unreadable) is a miss:
//! the run compiles as if there were none, and replaces it. A dry run reads the cache
//! but never writes it. The catalog holds 1Password references as placeholders only,
//! never resolved values (see `secrets`); the file is 0600 all the same.
//!
//! A cached catalog is the compiled one field for field, except that its template
//! context is `null` when no step has a `when` left for run time, the one reader of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::catalog::{Catalog, CatalogStep};
use crate::diag::Pos;
use crate::facts::Facts;
use crate::state_repo::role::When;
use crate::state_repo::{RepoSource, Selection};
use crate::step::StepKind;
use crate::when::Expr;

/// The cache file under `state_dir`.
pub const FILE: &str = "catalog.cache";
/// Bumped whenever what the file holds changes shape.
const SCHEMA: u32 = 1;

/// One thing the compile learned from the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Observation {
    /// `read(path)`: the SHA-256 of the text, or `None` when the file was absent.
    Read { path: String, sum: Option<String> },
    /// `read_bytes(path)`: the SHA-256 of the bytes.
    ReadBytes { path: String, sum: String },
    /// `list(dir)`: the regular files found.
    List { dir: String, names: Vec<String> },
    /// `list_dirs(dir)`: the directories found.
    ListDirs { dir: String, names: Vec<String> },
}

/// A source that records what is read through it (see the module documentation).
/// A read that fails spoils the recording: such a compile is not cached.
pub struct Recording<'a> {
    inner: &'a dyn RepoSource,
    log: Mutex<(Vec<Observation>, bool)>,
}

impl std::fmt::Debug for Recording<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("inner", &self.inner.describe())
            .finish_non_exhaustive()
    }
}

impl<'a> Recording<'a> {
    #[must_use]
    pub fn new(inner: &'a dyn RepoSource) -> Self {
        Self {
            inner,
            log: Mutex::new((Vec::new(), true)),
        }
    }

    fn note<T>(&self, result: &io::Result<T>, what: impl FnOnce(&T) -> Observation) {
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(value) => log.0.push(what(value)),
            Err(_) => log.1 = false,
        }
    }

    /// What was read, or `None` when a read failed.
    fn into_observations(self) -> Option<Vec<Observation>> {
        let (log, complete) = self
            .log
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        complete.then_some(log)
    }
}

impl RepoSource for Recording<'_> {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        let result = self.inner.read(path);
        self.note(&result, |text| Observation::Read {
            path: path.to_owned(),
            sum: text.as_deref().map(|t| sum(t.as_bytes())),
        });
        result
    }

    fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>> {
        let result = self.inner.read_bytes(path);
        self.note(&result, |bytes| Observation::ReadBytes {
            path: path.to_owned(),
            sum: sum(bytes),
        });
        result
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let result = self.inner.list(dir);
        self.note(&result, |names| Observation::List {
            dir: dir.to_owned(),
            names: names.clone(),
        });
        result
    }

    fn list_dirs(&self, dir: &str) -> io::Result<Vec<String>> {
        let result = self.inner.list_dirs(dir);
        self.note(&result, |names| Observation::ListDirs {
            dir: dir.to_owned(),
            names: names.clone(),
        });
        result
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl Observation {
    /// Whether `source` still shows what was observed.
    fn holds(&self, source: &dyn RepoSource) -> bool {
        match self {
            Self::Read { path, sum: want } => source
                .read(path)
                .is_ok_and(|text| text.as_deref().map(|t| sum(t.as_bytes())) == *want),
            Self::ReadBytes { path, sum: want } => {
                source.read_bytes(path).is_ok_and(|b| sum(&b) == *want)
            }
            Self::List { dir, names } => source.list(dir).is_ok_and(|n| n == *names),
            Self::ListDirs { dir, names } => source.list_dirs(dir).is_ok_and(|n| n == *names),
        }
    }
}

fn sum(bytes: &[u8]) -> String {
    crate::resource::download::sha256_hex(bytes)
}

/// A catalog step with everything the engine uses; the report's serialization of
/// [`CatalogStep`] leaves some of it out.
#[derive(Serialize, Deserialize)]
struct CachedStep {
    id: String,
    instance: Option<String>,
    item: Option<serde_json::Value>,
    role: String,
    file: String,
    line: usize,
    requires: Vec<String>,
    notify: Vec<String>,
    watch: bool,
    /// A `when` left for run time: its source and where it is written (parsed again).
    when: Option<(String, usize, usize)>,
    desired: Option<StepKind>,
    skipped: Option<String>,
    secrets: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CachedSelection {
    name: String,
    env: String,
    inventory: String,
    groups: Vec<String>,
    roles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    schema: u32,
    key: String,
    observations: Vec<Observation>,
    host: CachedSelection,
    /// The template context, which only a `when` left for run time reads: kept only
    /// when a step has one (it holds all data and facts, the largest part to decode).
    context: Option<serde_json::Value>,
    steps: Vec<CachedStep>,
}

impl CachedStep {
    fn from_step(s: &CatalogStep) -> Self {
        Self {
            id: s.id.clone(),
            instance: s.instance.clone(),
            item: s.item.clone(),
            role: s.role.clone(),
            file: s.file.clone(),
            line: s.line,
            requires: s.requires.clone(),
            notify: s.notify.clone(),
            watch: s.watch,
            when: s
                .when
                .as_ref()
                .map(|w| (w.expr.source().to_owned(), w.pos.line, w.pos.column)),
            desired: s.desired.clone(),
            skipped: s.skipped.clone(),
            secrets: s.secrets.clone(),
        }
    }

    fn into_step(self) -> Option<CatalogStep> {
        let when = match self.when {
            Some((source, line, column)) => Some(When {
                expr: Expr::parse(&source).ok()?,
                pos: Pos { line, column },
            }),
            None => None,
        };
        Some(CatalogStep {
            id: self.id,
            instance: self.instance,
            item: self.item,
            role: self.role,
            file: self.file,
            line: self.line,
            requires: self.requires,
            notify: self.notify,
            watch: self.watch,
            when,
            desired: self.desired,
            skipped: self.skipped,
            secrets: self.secrets,
        })
    }
}

/// The cache of one state directory. `write` is false for a dry run.
#[derive(Debug, Clone)]
pub struct Cache {
    path: Option<PathBuf>,
    write: bool,
}

impl Cache {
    #[must_use]
    pub fn new(state_dir: &Path, write: bool) -> Self {
        Self {
            path: Some(state_dir.join(FILE)),
            write,
        }
    }

    /// No cache: every run compiles.
    #[must_use]
    pub fn none() -> Self {
        Self {
            path: None,
            write: false,
        }
    }

    /// The cached catalog, when it was compiled by this agent for `hostname` and
    /// `facts` from what `source` still holds.
    #[must_use]
    pub fn lookup(
        &self,
        source: &dyn RepoSource,
        hostname: &str,
        facts: &Facts,
    ) -> Option<Catalog> {
        let path = self.path.as_ref()?;
        let bytes = std::fs::read(path).ok()?;
        let file: CacheFile = rmp_serde::from_slice(&bytes).ok()?;
        if file.schema != SCHEMA || file.key != key(hostname, facts)? {
            return None;
        }
        if !file.observations.iter().all(|o| o.holds(source)) {
            return None;
        }
        let context = file.context.unwrap_or(serde_json::Value::Null);
        let steps = file
            .steps
            .into_iter()
            .map(CachedStep::into_step)
            .collect::<Option<Vec<_>>>()?;
        let h = file.host;
        Some(Catalog {
            host: Selection {
                name: h.name,
                env: h.env,
                inventory: h.inventory,
                groups: h.groups,
                roles: h.roles,
            },
            context,
            steps,
        })
    }

    /// Keeps `catalog`, compiled through `recording`, for the next run. Failing to
    /// write is not an error: the next run compiles again.
    pub fn store(
        &self,
        recording: Recording<'_>,
        hostname: &str,
        facts: &Facts,
        catalog: &Catalog,
    ) {
        let Some(path) = self.path.as_ref().filter(|_| self.write) else {
            return;
        };
        let (Some(observations), Some(key)) = (recording.into_observations(), key(hostname, facts))
        else {
            return;
        };
        let h = &catalog.host;
        let file = CacheFile {
            schema: SCHEMA,
            key,
            observations,
            host: CachedSelection {
                name: h.name.clone(),
                env: h.env.clone(),
                inventory: h.inventory.clone(),
                groups: h.groups.clone(),
                roles: h.roles.clone(),
            },
            context: catalog
                .steps
                .iter()
                .any(|s| s.when.is_some())
                .then(|| catalog.context.clone()),
            steps: catalog.steps.iter().map(CachedStep::from_step).collect(),
        };
        let Ok(bytes) = rmp_serde::to_vec_named(&file) else {
            return;
        };
        if path.parent().is_some_and(Path::is_dir) {
            // Not fsynced: a cache lost to a power cut is compiled again.
            let _ = crate::status::write_atomic_mode(
                path,
                &bytes,
                0o600,
                crate::status::Durability::Replaced,
            );
        }
    }
}

/// The key: this agent, `hostname` and `facts`. `None` when the agent cannot name its
/// own executable (then nothing is cached).
fn key(hostname: &str, facts: &Facts) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
    let mut h = Sha256::new();
    let fields: BTreeMap<&str, String> = BTreeMap::from([
        ("agent", env!("CARGO_PKG_VERSION").to_owned()),
        (
            "exe",
            format!(
                "{}:{}:{}:{}.{}",
                exe.dev(),
                exe.ino(),
                exe.size(),
                exe.mtime(),
                exe.mtime_nsec()
            ),
        ),
        ("hostname", hostname.to_owned()),
        ("facts", serde_json::to_string(facts).ok()?),
    ]);
    for (name, value) in fields {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_le_bytes());
        h.update(value.as_bytes());
    }
    Some(
        h.finalize()
            .iter()
            .fold(String::with_capacity(64), |mut out, b| {
                write!(out, "{b:02x}").expect("writing to a String cannot fail");
                out
            }),
    )
}

#[cfg(test)]
mod tests;
