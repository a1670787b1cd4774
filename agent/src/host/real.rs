//! The machine itself: the `Host` implementation the agent runs with.
//!
//! Files are replaced by writing a candidate next to them (`.NAME.infra-tmp.XXXXXX`,
//! mode and owner set, fsynced) and renaming it over the live file, then fsyncing the
//! directory: whatever happens, the live file is the old one or the new one. Candidates
//! left behind by a killed run are removed the next time the same path is staged.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write as _};
use std::iter::Peekable;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::str::Chars;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::unistd::{Gid, Group, Uid, User};

use super::{Error, Host, Kind, Meta, staged_prefix};
use crate::facts::{Facts, OsFacts};
use crate::process::{Cmd, CmdOutput};

/// Permission bits a mode may carry: rwx for all, setuid, setgid, sticky.
const MODE_BITS: u32 = 0o7777;
/// How many candidate names to try before giving up (a clash needs a leftover with the
/// same random suffix; several in a row means something else is wrong).
const CANDIDATE_ATTEMPTS: usize = 32;

/// The real machine.
#[derive(Debug, Default)]
pub struct RealHost {
    /// Test hook: `commit_file` fails without renaming (see [`RealHost::fail_before_commit`]).
    fail_before_commit: bool,
    /// Facts are gathered once, when first asked: as the run starts. Gathering reads
    /// the whole dpkg database, and the loader, the engine and several resources ask.
    facts: std::sync::OnceLock<Facts>,
    /// Where `facts.packages` is kept between runs (see [`PackagesCache`]), and
    /// whether this run may write it.
    packages_cache: Option<(PathBuf, bool)>,
}

impl RealHost {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `facts.packages` in `state_dir` between runs: a run whose dpkg status file
    /// is the one the last run parsed reads the packages from there. `write` is false
    /// for a dry run, which only reads it.
    #[must_use]
    pub fn with_packages_cache(mut self, state_dir: &Path, write: bool) -> Self {
        self.packages_cache = Some((state_dir.join(PACKAGES_CACHE), write));
        self
    }

    /// Test hook: every `commit_file` returns [`Error::Fault`] without renaming, as if the
    /// agent had been killed between writing the candidate and renaming it. The live file
    /// stays as it was and the candidate stays behind.
    #[must_use]
    pub fn fail_before_commit(mut self) -> Self {
        self.fail_before_commit = true;
        self
    }
}

impl Host for RealHost {
    fn facts(&self) -> Result<Facts, Error> {
        if let Some(facts) = self.facts.get() {
            return Ok(facts.clone());
        }
        let cache = self
            .packages_cache
            .as_ref()
            .map(|(path, write)| PackagesCache {
                path,
                write: *write,
            });
        let facts = gather_facts_with(cache.as_ref())?;
        Ok(self.facts.get_or_init(|| facts).clone())
    }

    fn lstat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // `NotADirectory`: a component of the path is a file, so the path cannot exist.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("inspect", path, e)),
        };
        let file_type = meta.file_type();
        let kind = if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        Ok(Some(Meta {
            kind,
            mode: meta.mode() & MODE_BITS,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            stamp: (kind == Kind::File).then(|| stamp_of(&meta)),
        }))
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Error> {
        std::fs::read(path).map_err(|e| Error::io("read", path, e))
    }

    fn modified(&self, path: &Path) -> Result<Option<SystemTime>, Error> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => meta
                .modified()
                .map(Some)
                .map_err(|e| Error::io("inspect", path, e)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(Error::io("inspect", path, e)),
        }
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, Error> {
        std::fs::read_link(path).map_err(|e| Error::io("read link", path, e))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io("read", path, e))? {
            let name = entry.map_err(|e| Error::io("read", path, e))?.file_name();
            // A lossy name would name a file that does not exist; better to say so.
            let name = name.into_string().map_err(|name| {
                let message = format!("entry {} is not valid UTF-8", name.to_string_lossy());
                Error::io(
                    "read",
                    path,
                    std::io::Error::new(ErrorKind::InvalidData, message),
                )
            })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    fn uid_of(&self, user: &str) -> Result<Option<u32>, Error> {
        let found = User::from_name(user).map_err(|e| lookup_error("user", user, e))?;
        Ok(found.map(|u| u.uid.as_raw()))
    }

    fn gid_of(&self, group: &str) -> Result<Option<u32>, Error> {
        let found = Group::from_name(group).map_err(|e| lookup_error("group", group, e))?;
        Ok(found.map(|g| g.gid.as_raw()))
    }

    fn user_name(&self, uid: u32) -> Result<Option<String>, Error> {
        let found = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup_error("uid", &uid.to_string(), e))?;
        Ok(found.map(|u| u.name))
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, Error> {
        let found = Group::from_gid(Gid::from_raw(gid))
            .map_err(|e| lookup_error("gid", &gid.to_string(), e))?;
        Ok(found.map(|g| g.name))
    }

    fn stage_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, Error> {
        let dir = parent_of(path)?;
        let prefix = staged_prefix(path);
        remove_stale_candidates(dir, &prefix)?;
        // O_CREAT|O_EXCL, 0600: nobody else can open it before its mode and owner are set.
        let (candidate, file) = create_candidate(dir, &prefix, |candidate| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(candidate)
        })?;
        if let Err(e) = fill_candidate(file, &candidate, content, mode, uid, gid) {
            let _ = std::fs::remove_file(&candidate);
            return Err(e);
        }
        Ok(candidate)
    }

    fn commit_file(&self, staged: &Path, path: &Path) -> Result<(), Error> {
        if self.fail_before_commit {
            return Err(Error::Fault("killed between write and rename"));
        }
        std::fs::rename(staged, path).map_err(|e| Error::io("rename over", path, e))?;
        fsync_dir(parent_of(path)?)
    }

    fn discard_staged(&self, staged: &Path) -> Result<(), Error> {
        match std::fs::remove_file(staged) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", staged, e)),
            _ => Ok(()),
        }
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        // chmod(2) follows symbolic links, and Linux has no lchmod: refuse links. (A link
        // swapped in between the check and the chmod is out of reach of this API; the
        // agent's paths live in directories only root can write.)
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("chmod", path, e))?;
        if meta.file_type().is_symlink() {
            return Err(Error::Other("refusing to chmod a symbolic link".to_owned()));
        }
        std::fs::set_permissions(path, Permissions::from_mode(mode & MODE_BITS))
            .map_err(|e| Error::io("chmod", path, e))
    }

    fn set_owner(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Error> {
        std::os::unix::fs::lchown(path, uid, gid).map_err(|e| Error::io("chown", path, e))
    }

    fn create_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
        // Created 0700 so it is private until owner and mode are set explicitly (so the
        // umask does not matter); if that fails, the new empty directory is removed.
        DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io("create", path, e))?;
        if let Err(e) = chown_chmod_new_dir(path, mode, uid, gid) {
            let _ = std::fs::remove_dir(path);
            return Err(e);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<(), Error> {
        std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Error> {
        std::fs::remove_dir(path).map_err(|e| Error::io("remove", path, e))
    }

    fn symlink(&self, target: &Path, path: &Path) -> Result<(), Error> {
        let dir = parent_of(path)?;
        let prefix = staged_prefix(path);
        remove_stale_candidates(dir, &prefix)?;
        let (candidate, ()) = create_candidate(dir, &prefix, |candidate| {
            std::os::unix::fs::symlink(target, candidate)
        })?;
        if let Err(e) = std::fs::rename(&candidate, path) {
            let _ = std::fs::remove_file(&candidate);
            return Err(Error::io("rename over", path, e));
        }
        fsync_dir(dir)
    }

    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, Error> {
        crate::process::run(cmd).map_err(|source| Error::Spawn {
            command: cmd.display(),
            source,
        })
    }
}

/// The [`super::Stamp`] of a regular file; `None` when absent or not a regular file.
fn file_stamp(path: &Path) -> Result<Option<super::Stamp>, Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    Ok(meta.file_type().is_file().then(|| stamp_of(&meta)))
}

fn stamp_of(meta: &std::fs::Metadata) -> super::Stamp {
    let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    super::Stamp {
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

/// The facts of this machine.
pub fn gather_facts() -> Result<Facts, Error> {
    gather_facts_with(None)
}

fn gather_facts_with(cache: Option<&PackagesCache<'_>>) -> Result<Facts, Error> {
    let uts =
        nix::sys::utsname::uname().map_err(|e| Error::Other(format!("cannot read uname: {e}")))?;
    // The nodename is what /proc/sys/kernel/hostname shows (both are the UTS namespace's).
    let hostname = crate::state_repo::short_name(uts.nodename().to_string_lossy().trim());
    if hostname.is_empty() {
        return Err(Error::Other("this machine has no hostname".to_owned()));
    }
    Ok(Facts {
        hostname,
        os: os_facts(&parse_os_release(&read_os_release()?)),
        arch: uts.machine().to_string_lossy().into_owned(),
        systemd: systemd_is_pid1(),
        packages: installed_packages(cache)?,
        memory_mb: memory_mb()?,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        reboot_required: std::fs::symlink_metadata(crate::facts::REBOOT_REQUIRED).is_ok(),
    })
}

/// `facts.packages` from dpkg's status file; empty where there is no dpkg (not a
/// Debian-like system). While an interrupted dpkg run left journal entries, the status
/// file may miss its last changes: good enough for facts, which are a snapshot taken
/// before any step runs (the `package` step reads the journal-aware state itself).
fn installed_packages(
    cache: Option<&PackagesCache<'_>>,
) -> Result<BTreeMap<String, String>, Error> {
    installed_packages_at(Path::new(crate::dpkg::STATUS), cache, SystemTime::now())
}

fn installed_packages_at(
    path: &Path,
    cache: Option<&PackagesCache<'_>>,
    now: SystemTime,
) -> Result<BTreeMap<String, String>, Error> {
    // The stamp is taken before the read: a dpkg run in between gives the file a new
    // stamp, so what is cached below is never newer than its stamp says.
    let stamp = file_stamp(path).ok().flatten();
    if let (Some(cache), Some(stamp)) = (cache, stamp)
        && let Some(packages) = cache.load(stamp)
    {
        return Ok(packages);
    }
    let packages = match std::fs::read(path) {
        Ok(bytes) => {
            // dpkg writes UTF-8; only a damaged file needs the copying conversion.
            let text = match std::str::from_utf8(&bytes) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(&bytes),
            };
            crate::dpkg::Db::from_status(&text).versions()
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    if let (Some(cache), Some(stamp)) = (cache, stamp) {
        cache.store(stamp, &packages, now);
    }
    Ok(packages)
}

/// `facts.packages` under `state_dir`, beside the [`super::Stamp`] of the dpkg status
/// file it was parsed from. dpkg replaces that file (a new inode) whenever it records a
/// change, so an equal stamp means the same database. Only a file left alone for
/// [`crate::prune::STAMP_MARGIN`] is cached. A missing, damaged or stale cache is
/// parsed again; failing to write it is not an error.
pub const PACKAGES_CACHE: &str = "packages.cache";

struct PackagesCache<'a> {
    path: &'a Path,
    write: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedPackages {
    stamp: super::Stamp,
    packages: BTreeMap<String, String>,
}

impl PackagesCache<'_> {
    fn load(&self, stamp: super::Stamp) -> Option<BTreeMap<String, String>> {
        let bytes = std::fs::read(self.path).ok()?;
        let cached: CachedPackages = rmp_serde::from_slice(&bytes).ok()?;
        (cached.stamp == stamp).then_some(cached.packages)
    }

    fn store(&self, stamp: super::Stamp, packages: &BTreeMap<String, String>, now: SystemTime) {
        if !self.write
            || !stamp.changed_before(now, crate::prune::STAMP_MARGIN)
            || !self.path.parent().is_some_and(Path::is_dir)
        {
            return;
        }
        let cached = CachedPackages {
            stamp,
            packages: packages.clone(),
        };
        if let Ok(bytes) = rmp_serde::to_vec_named(&cached) {
            let _ =
                crate::status::write_atomic(self.path, &bytes, crate::status::Durability::Replaced);
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn memory_mb() -> Result<u64, Error> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    parse_meminfo_total_mb(&text)
        .ok_or_else(|| Error::Other(format!("{} has no MemTotal line", path.display())))
}

/// The `MemTotal:  16318480 kB` line of `/proc/meminfo`, in MiB.
#[must_use]
pub fn parse_meminfo_total_mb(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value / 1024),
        _ => None,
    }
}

/// Whether systemd is PID 1.
///
/// This is `sd_booted(3)`'s own test, and the one Debian maintainer scripts use
/// (`[ -d /run/systemd/system ]`): systemd creates the directory on the tmpfs `/run`
/// early at boot and no other init does. Reading `/proc/1/comm` instead depends on
/// `/proc` showing PID 1 (`hidepid`, PID namespaces) and on the name PID 1 gave itself.
fn systemd_is_pid1() -> bool {
    std::fs::symlink_metadata("/run/systemd/system").is_ok_and(|m| m.is_dir())
}

/// `/etc/os-release`, or `/usr/lib/os-release` when it is absent (`os-release(5)`).
fn read_os_release() -> Result<String, Error> {
    let etc = Path::new("/etc/os-release");
    let usr = Path::new("/usr/lib/os-release");
    let bytes = match std::fs::read(etc) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::read(usr).map_err(|e| Error::io("read", usr, e))?
        }
        other => other.map_err(|e| Error::io("read", etc, e))?,
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `facts.os` from parsed os-release variables; missing keys are empty (Debian testing
/// and sid have no `VERSION_ID`).
#[must_use]
pub fn os_facts(vars: &BTreeMap<String, String>) -> OsFacts {
    let get = |key: &str| vars.get(key).cloned().unwrap_or_default();
    OsFacts {
        id: get("ID"),
        version_id: get("VERSION_ID"),
        codename: get("VERSION_CODENAME"),
    }
}

/// Parses os-release's shell-compatible `KEY=value` assignments (`os-release(5)`): values
/// unquoted, in single quotes (literal) or double quotes (backslash escapes `$`, `` ` ``,
/// `"`, `\` and newlines), possibly concatenated; `#` comments and blank lines; text
/// after an unquoted blank is ignored. Lines that are not assignments are skipped; a
/// later assignment wins.
#[must_use]
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek()
            && (c.is_ascii_alphanumeric() || c == '_')
        {
            key.push(c);
            chars.next();
        }
        let is_assignment = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && chars.next_if_eq(&'=').is_some();
        if is_assignment {
            let value = shell_word(&mut chars);
            vars.insert(key, value);
        }
        // The rest of the line: a newline after the value, a trailing comment, or junk.
        for c in chars.by_ref() {
            if c == '\n' {
                break;
            }
        }
    }
    vars
}

/// One shell word, up to an unquoted blank or newline (left unconsumed).
fn shell_word(chars: &mut Peekable<Chars<'_>>) -> String {
    let mut out = String::new();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => break,
            '\\' => {
                chars.next();
                match chars.next() {
                    Some('\n') | None => {}
                    Some(escaped) => out.push(escaped),
                }
            }
            '\'' => {
                chars.next();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&escaped @ ('$' | '`' | '"' | '\\')) => {
                                out.push(escaped);
                                chars.next();
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => out.push('\\'),
                        },
                        _ => out.push(c),
                    }
                }
            }
            _ => {
                out.push(c);
                chars.next();
            }
        }
    }
    out
}

fn lookup_error(what: &str, name: &str, e: nix::errno::Errno) -> Error {
    Error::Other(format!("cannot look up {what} {name}: {}", e.desc()))
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_of(path: &Path) -> Result<&Path, Error> {
    match path.parent() {
        _ if path.file_name().is_none() => Err(Error::Other(format!(
            "{} does not name a file",
            path.display()
        ))),
        Some(parent) if parent.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(parent) => Ok(parent),
        None => Err(Error::Other(format!(
            "{} has no parent directory",
            path.display()
        ))),
    }
}

/// Removes candidates named `prefix*` in `dir`, left there by a run that was killed.
fn remove_stale_candidates(dir: &Path, prefix: &str) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            let stale = entry.path();
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(Error::io("remove", &stale, e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Creates `dir/prefixXXXXXX` with `create`, which must fail with `AlreadyExists` when
/// the name is taken; tries other suffixes then.
fn create_candidate<T>(
    dir: &Path,
    prefix: &str,
    mut create: impl FnMut(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, T), Error> {
    for _ in 0..CANDIDATE_ATTEMPTS {
        let candidate = dir.join(format!("{prefix}{}", candidate_suffix()));
        match create(&candidate) {
            Ok(made) => return Ok((candidate, made)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &candidate, e)),
        }
    }
    Err(Error::Other(format!(
        "cannot create a candidate {prefix}XXXXXX in {}: every name tried exists",
        dir.display()
    )))
}

/// Six characters from `[A-Za-z0-9]`, different on every call within a process and
/// unlikely to repeat across processes (pid, clock and a counter, mixed).
fn candidate_suffix() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x =
        (u64::from(std::process::id()) << 32) ^ nanos ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finalizer, so that neighbouring inputs give unrelated suffixes.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (0..6)
        .map(|_| {
            let c = ALPHABET[(x % 62) as usize];
            x /= 62;
            char::from(c)
        })
        .collect()
}

/// Writes the content, then owner, then mode (chown clears setuid and setgid, so the
/// mode comes last), then fsyncs.
fn fill_candidate(
    mut file: File,
    candidate: &Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), Error> {
    file.write_all(content)
        .map_err(|e| Error::io("write", candidate, e))?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown", candidate, e))?;
    file.set_permissions(Permissions::from_mode(mode & MODE_BITS))
        .map_err(|e| Error::io("chmod", candidate, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync", candidate, e))
}

/// Owner then mode of a directory just created, through a descriptor opened without
/// following links, so nothing swapped in at `path` gets them.
fn chown_chmod_new_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown", path, e))?;
    dir.set_permissions(Permissions::from_mode(mode & MODE_BITS))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Makes a rename in `dir` durable.
fn fsync_dir(dir: &Path) -> Result<(), Error> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(|e| Error::io("open", dir, e))?;
    handle.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owner to give files in tests: uid/gid 1 as root (so chown really changes
    /// something), our own ids otherwise.
    fn test_owner() -> (u32, u32) {
        if nix::unistd::geteuid().is_root() {
            (1, 1)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    fn write_with_mode(path: &Path, content: &str, mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        RealHost::new().read_dir(dir).unwrap()
    }

    #[test]
    fn stage_and_commit_replace_content_mode_and_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.conf");
        write_with_mode(&path, "old\n", 0o644);
        let host = RealHost::new();
        let (uid, gid) = test_owner();

        let staged = host.stage_file(&path, b"new\n", 0o4755, uid, gid).unwrap();
        assert_eq!(staged.parent(), Some(tmp.path()));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old\n",
            "not live before commit"
        );
        let candidate = host.lstat(&staged).unwrap().unwrap();
        assert_eq!(
            (candidate.kind, candidate.mode, candidate.uid, candidate.gid),
            (Kind::File, 0o4755, uid, gid)
        );

        host.commit_file(&staged, &path).unwrap();
        assert_eq!(host.read_file(&path).unwrap(), b"new\n");
        let meta = host.lstat(&path).unwrap().unwrap();
        assert_eq!(
            meta,
            Meta {
                kind: Kind::File,
                mode: 0o4755,
                uid,
                gid,
                size: 4,
                stamp: meta.stamp,
            },
            "setuid survives because chmod comes after chown"
        );
        assert_eq!(names(tmp.path()), ["app.conf"]);
    }

    #[test]
    fn stage_creates_a_missing_file_and_discard_removes_the_candidate() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new.conf");
        let host = RealHost::new();
        let (uid, gid) = test_owner();
        let staged = host.stage_file(&path, b"x", 0o640, uid, gid).unwrap();
        host.discard_staged(&staged).unwrap();
        host.discard_staged(&staged).unwrap();
        assert!(names(tmp.path()).is_empty());
        let staged = host.stage_file(&path, b"x", 0o640, uid, gid).unwrap();
        host.commit_file(&staged, &path).unwrap();
        assert_eq!(host.lstat(&path).unwrap().unwrap().mode, 0o640);
    }

    #[test]
    fn killed_between_write_and_rename_leaves_old_file_and_next_run_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("app.conf");
        write_with_mode(&path, "old\n", 0o640);
        // Unrelated neighbours, including another path's candidate, must survive.
        std::fs::write(dir.join("other.conf"), "o").unwrap();
        std::fs::write(dir.join(".other.conf.infra-tmp.abcdef"), "o").unwrap();
        std::fs::write(dir.join("app.conf.bak"), "b").unwrap();
        let (uid, gid) = test_owner();

        let killed = RealHost::new().fail_before_commit();
        let staged = killed.stage_file(&path, b"new\n", 0o600, uid, gid).unwrap();
        let err = killed.commit_file(&staged, &path).unwrap_err();
        assert!(
            matches!(err, Error::Fault("killed between write and rename")),
            "{err:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(killed.lstat(&path).unwrap().unwrap().mode, 0o640);
        let leftover = staged.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(leftover.starts_with(".app.conf.infra-tmp."), "{leftover}");
        assert!(names(dir).contains(&leftover));

        let host = RealHost::new();
        let staged = host.stage_file(&path, b"new\n", 0o600, uid, gid).unwrap();
        host.commit_file(&staged, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(host.lstat(&path).unwrap().unwrap().mode, 0o600);
        assert_eq!(
            names(dir),
            [
                ".other.conf.infra-tmp.abcdef",
                "app.conf",
                "app.conf.bak",
                "other.conf"
            ]
        );
    }

    #[test]
    fn candidate_names_escape_include_globs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("50-site.conf");
        let host = RealHost::new();
        let (uid, gid) = test_owner();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let staged = host.stage_file(&path, b"x", 0o644, uid, gid).unwrap();
            let name = staged.file_name().unwrap().to_str().unwrap().to_owned();
            let suffix = name.strip_prefix(".50-site.conf.infra-tmp.").unwrap();
            assert_eq!(suffix.len(), 6, "{name}");
            assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert!(
                name.starts_with('.')
                    && !staged
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("conf")),
                "a `*.conf` glob would match {name}"
            );
            seen.insert(name);
            // Only the latest candidate exists: staging removed the previous one.
            assert_eq!(names(tmp.path()).len(), 1);
        }
        assert_eq!(seen.len(), 20, "suffixes repeat: {seen:?}");
    }

    #[test]
    fn symlink_replaces_an_existing_link() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("current");
        let host = RealHost::new();
        host.symlink(Path::new("/srv/one"), &link).unwrap();
        assert_eq!(host.read_link(&link).unwrap(), Path::new("/srv/one"));
        host.symlink(Path::new("/srv/two"), &link).unwrap();
        assert_eq!(host.read_link(&link).unwrap(), Path::new("/srv/two"));
        assert_eq!(host.lstat(&link).unwrap().unwrap().kind, Kind::Symlink);
        assert_eq!(names(tmp.path()), ["current"]);
    }

    #[test]
    fn set_mode_refuses_a_symlink_and_leaves_its_target_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        write_with_mode(&target, "t", 0o644);
        let link = tmp.path().join("link");
        let host = RealHost::new();
        host.symlink(&target, &link).unwrap();
        let err = host.set_mode(&link, 0o777).unwrap_err();
        assert!(
            matches!(&err, Error::Other(m) if m == "refusing to chmod a symbolic link"),
            "{err:?}"
        );
        assert_eq!(host.lstat(&target).unwrap().unwrap().mode, 0o644);
        host.set_mode(&target, 0o600).unwrap();
        assert_eq!(host.lstat(&target).unwrap().unwrap().mode, 0o600);
        assert!(
            host.set_mode(&tmp.path().join("missing"), 0o600)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn lstat_of_missing_paths_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "f").unwrap();
        let host = RealHost::new();
        assert_eq!(host.lstat(&tmp.path().join("missing")).unwrap(), None);
        assert_eq!(
            host.lstat(&file.join("child")).unwrap(),
            None,
            "a component is a file"
        );
        assert_eq!(host.lstat(tmp.path()).unwrap().unwrap().kind, Kind::Dir);
        assert!(
            host.read_file(&tmp.path().join("missing"))
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn directories_get_exact_mode_and_owner_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let host = RealHost::new();
        let (uid, gid) = test_owner();
        host.create_dir(&dir, 0o2775, uid, gid).unwrap();
        let meta = host.lstat(&dir).unwrap().unwrap();
        assert_eq!(
            (meta.kind, meta.mode, meta.uid, meta.gid),
            (Kind::Dir, 0o2775, uid, gid)
        );
        assert!(
            host.create_dir(&dir, 0o755, uid, gid).is_err(),
            "already exists"
        );

        std::fs::write(dir.join("b"), "").unwrap();
        std::fs::write(dir.join("a"), "").unwrap();
        assert_eq!(host.read_dir(&dir).unwrap(), ["a", "b"]);
        assert!(host.remove_dir(&dir).is_err(), "not empty");
        host.remove_file(&dir.join("a")).unwrap();
        host.remove_file(&dir.join("b")).unwrap();
        host.remove_dir(&dir).unwrap();
        assert_eq!(host.lstat(&dir).unwrap(), None);
    }

    #[test]
    fn set_owner_does_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, "t").unwrap();
        let link = tmp.path().join("link");
        let host = RealHost::new();
        host.symlink(&target, &link).unwrap();
        let before = host.lstat(&target).unwrap().unwrap();
        let (uid, gid) = test_owner();
        host.set_owner(&link, Some(uid), Some(gid)).unwrap();
        let after = host.lstat(&link).unwrap().unwrap();
        assert_eq!((after.uid, after.gid), (uid, gid));
        assert_eq!(host.lstat(&target).unwrap().unwrap(), before);
    }

    #[test]
    fn users_and_groups_resolve_through_nss() {
        let host = RealHost::new();
        assert_eq!(host.uid_of("root").unwrap(), Some(0));
        assert_eq!(host.gid_of("root").unwrap(), Some(0));
        assert_eq!(host.user_name(0).unwrap().as_deref(), Some("root"));
        assert_eq!(host.group_name(0).unwrap().as_deref(), Some("root"));
        assert_eq!(host.uid_of("no-such-user-infra").unwrap(), None);
        assert_eq!(host.gid_of("no\0such").unwrap(), None);
        assert_eq!(host.user_name(3_999_999_999).unwrap(), None);
    }

    #[test]
    fn run_spawns_through_the_process_module() {
        let host = RealHost::new();
        let out = host.run(&Cmd::new("sh").args(["-c", "echo hi"])).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, b"hi\n");
        let err = host
            .run(&Cmd::new("/nonexistent/program").arg("x"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Spawn { command, .. } if command == "/nonexistent/program x"),
            "{err:?}"
        );
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total_mb(text), Some(15936));
        assert_eq!(parse_meminfo_total_mb("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_mb("MemTotal: lots\n"), None);
    }

    #[test]
    fn modification_times() {
        let dir = tempfile::tempdir().unwrap();
        let host = RealHost::new();
        let t = host.modified(dir.path()).unwrap().unwrap();
        assert!(t <= SystemTime::now());
        assert_eq!(host.modified(&dir.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn the_packages_cache_answers_only_for_the_same_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        let stanza = |name: &str| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n"
            )
        };
        std::fs::write(&status, stanza("zsh")).unwrap();
        let file = dir.path().join(PACKAGES_CACHE);
        let cache = PackagesCache {
            path: &file,
            write: true,
        };
        let later = SystemTime::now() + crate::prune::STAMP_MARGIN * 2;
        let names = |p: &BTreeMap<String, String>| p.keys().cloned().collect::<Vec<_>>();

        // Just written: parsed, and not cached (it may change again within the tick).
        let p = installed_packages_at(&status, Some(&cache), SystemTime::now()).unwrap();
        assert_eq!(names(&p), ["zsh"]);
        assert!(!file.exists());
        // Left alone long enough: cached.
        installed_packages_at(&status, Some(&cache), later).unwrap();
        assert!(file.exists());

        // The cache answers while the stamp holds: give it a package dpkg never had,
        // under the same stamp, and that is what comes back (the file was not parsed).
        let stamp = file_stamp(&status).unwrap().unwrap();
        let planted = CachedPackages {
            stamp,
            packages: BTreeMap::from([("planted".to_owned(), "9".to_owned())]),
        };
        std::fs::write(&file, rmp_serde::to_vec_named(&planted).unwrap()).unwrap();
        let p = installed_packages_at(&status, Some(&cache), later).unwrap();
        assert_eq!(names(&p), ["planted"]);

        // dpkg replaces its status file: another stamp, parsed again (and cached again).
        let next = dir.path().join("status-new");
        std::fs::write(&next, stanza("fzf")).unwrap();
        std::fs::rename(&next, &status).unwrap();
        let p = installed_packages_at(&status, Some(&cache), later).unwrap();
        assert_eq!(names(&p), ["fzf"]);
        let again = installed_packages_at(&status, Some(&cache), later).unwrap();
        assert_eq!(names(&again), ["fzf"]);

        // A damaged cache is parsed past; a dry run's cache is never written.
        std::fs::write(&file, b"junk").unwrap();
        let p = installed_packages_at(&status, Some(&cache), later).unwrap();
        assert_eq!(names(&p), ["fzf"]);
        std::fs::remove_file(&file).unwrap();
        let dry = PackagesCache {
            path: &file,
            write: false,
        };
        installed_packages_at(&status, Some(&dry), later).unwrap();
        assert!(!file.exists());

        // No status file: no packages, as before.
        std::fs::remove_file(&status).unwrap();
        assert!(
            installed_packages_at(&status, Some(&cache), later)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn facts_of_this_machine() {
        let facts = RealHost::new().facts().unwrap();
        assert!(facts.cpus >= 1, "{facts:?}");
        assert!(facts.memory_mb > 0, "{facts:?}");
        if Path::new(crate::dpkg::STATUS).exists() {
            assert!(facts.packages.contains_key("dpkg"), "{:?}", facts.packages);
        }
        assert!(!facts.hostname.is_empty());
        assert!(!facts.hostname.contains('.'));
        assert_eq!(facts.hostname, facts.hostname.to_lowercase());
        assert!(!facts.os.id.is_empty(), "{facts:?}");
        // `uname -m` and Rust agree on these; 32-bit ARM (`armv7l` vs `arm`) and x86 do not.
        if matches!(std::env::consts::ARCH, "x86_64" | "aarch64" | "riscv64") {
            assert_eq!(facts.arch, std::env::consts::ARCH);
        } else {
            assert!(!facts.arch.is_empty());
        }
    }

    #[test]
    fn os_release_values() {
        let cases: &[(&str, &str)] = &[
            ("ID=debian", "debian"),
            ("ID=\"debian\"", "debian"),
            ("ID='debian'", "debian"),
            ("ID=", ""),
            ("ID=\"\"", ""),
            ("  ID=debian  ", "debian"),
            ("ID=debian\r", "debian"),
            ("ID=debian # trailing comment", "debian"),
            ("ID=a#b", "a#b"),
            ("ID=\"Debian GNU/Linux\"", "Debian GNU/Linux"),
            ("ID='single \"double\" \\n'", "single \"double\" \\n"),
            (
                r#"ID="say \"hi\" \$HOME \`x\` \\ \n""#,
                r#"say "hi" $HOME `x` \ \n"#,
            ),
            (r"ID='it'\''s'", "it's"),
            (r"ID=a\ b", "a b"),
            ("ID=con\"cat\"'en'ated", "concatenated"),
            ("ID=\"two\\\nlines\"", "twolines"),
            ("ID=\"multi\nline\"", "multi\nline"),
            ("ID=\"unterminated", "unterminated"),
            ("ID=first\nID=second", "second"),
            ("ID=ünï", "ünï"),
        ];
        for (text, want) in cases {
            let vars = parse_os_release(text);
            assert_eq!(
                vars.get("ID").map(String::as_str),
                Some(*want),
                "{text:?} gave {vars:?}"
            );
        }
    }

    #[test]
    fn os_release_skips_comments_blank_lines_and_junk() {
        let text = "\n# ID=commented\n   # indented comment\n\nnot an assignment\n=value\n1ID=digit\n\
                    ID-X=dash\nexport ID=exported\nNAME=\"Debian GNU/Linux\"\n\n";
        let vars = parse_os_release(text);
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            [("NAME".to_owned(), "Debian GNU/Linux".to_owned())]
        );
    }

    #[test]
    fn os_facts_from_real_files() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                        VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(
            os_facts(&parse_os_release(bookworm)),
            OsFacts {
                id: "debian".into(),
                version_id: "12".into(),
                codename: "bookworm".into()
            }
        );
        let sid = "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nNAME=\"Debian GNU/Linux\"\n\
                   VERSION_CODENAME=trixie\nID=debian\n";
        assert_eq!(
            os_facts(&parse_os_release(sid)),
            OsFacts {
                id: "debian".into(),
                version_id: String::new(),
                codename: "trixie".into()
            }
        );
        let ubuntu = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=noble\n\
                      VERSION_CODENAME=noble\n";
        assert_eq!(
            os_facts(&parse_os_release(ubuntu)),
            OsFacts {
                id: "ubuntu".into(),
                version_id: "24.04".into(),
                codename: "noble".into()
            }
        );
        assert_eq!(
            os_facts(&BTreeMap::new()),
            OsFacts {
                id: String::new(),
                version_id: String::new(),
                codename: String::new()
            }
        );
    }
}
