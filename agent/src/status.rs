//! The agent's records of its runs under `state_dir`: `status.json` (the host's
//! current standing), `history/` (one JSON file per run), `disabled.json` (converging
//! paused by `infra-agent disable`), and the `status`, `disable` and `enable` commands.
//!
//! Files are replaced atomically (a temporary file renamed over the old one), so a
//! reader never sees half a file. `status.json` and `disabled.json` are fsynced first;
//! a history entry is not, since losing the newest one to a power cut loses nothing
//! the next run does not write again (see [`Durability`]). A damaged or unreadable record never stops the
//! agent: it starts over from defaults and says so in a warning.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli::{Format, exit};
use crate::config::AgentConfig;
use crate::engine::{RunReport, Summary};

/// Version of `status.json` and of `infra-agent status --format json`.
pub const STATUS_SCHEMA: &str = "infra-agent/status/v1";

const STATUS_FILE: &str = "status.json";
const DISABLED_FILE: &str = "disabled.json";
const HISTORY_DIR: &str = "history";

/// A commit of the state repository, as status and history name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    /// The full object id (hex).
    pub id: String,
    /// The abbreviated id shown to people.
    pub short: String,
    /// The first line of the commit message.
    pub summary: String,
    /// The committer time, in seconds since the Unix epoch.
    pub time: i64,
}

impl CommitRef {
    /// A commit from its full id, message and committer time: `short` is the first 7
    /// characters of the id and `summary` the first line of the message.
    #[must_use]
    pub fn new(id: impl Into<String>, message: &str, time: i64) -> Self {
        let id = id.into();
        Self {
            short: id.chars().take(7).collect(),
            summary: message.lines().next().unwrap_or_default().trim().to_owned(),
            id,
            time,
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `infra-agent --once`.
    Once,
    /// The daemon's interval.
    Timer,
    /// SIGHUP to the daemon.
    Signal,
    /// A managed file was edited by hand.
    Drift,
    /// The daemon's first run after it started.
    Start,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Once => "once",
            Self::Timer => "timer",
            Self::Signal => "signal",
            Self::Drift => "drift",
            Self::Start => "start",
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step was already in the desired state.
    InSync,
    /// Steps changed the host and none failed.
    Changed,
    /// At least one step failed (others may have changed the host).
    Failed,
    /// Nothing could be applied: the fetch failed, the commit was rejected, another
    /// run held the lock, or converging is disabled.
    NotApplied,
}

impl Outcome {
    /// The outcome of a run that applied a catalog, from its step counts.
    #[must_use]
    pub fn of(summary: Summary) -> Self {
        if summary.failed > 0 {
            Self::Failed
        } else if summary.changed > 0 {
            Self::Changed
        } else {
            Self::InSync
        }
    }

    /// Whether the run left the host as the commit describes it.
    #[must_use]
    pub fn succeeded(self) -> bool {
        matches!(self, Self::InSync | Self::Changed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InSync => "in sync",
            Self::Changed => "changed",
            Self::Failed => "failed",
            Self::NotApplied => "not applied",
        })
    }
}

/// One run, as `status.json` (`last_run`) and `history/` keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// RFC 3339, UTC, milliseconds: `2026-11-30T15:10:00.123Z`.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub trigger: Trigger,
    /// The repository URL or directory the run read.
    pub source: String,
    /// The commit the run applied (or rejected); `None` for a directory read as it is
    /// or when the fetch failed.
    pub commit: Option<CommitRef>,
    pub outcome: Outcome,
    /// The exit code `--once` returns for this run.
    pub exit_code: u8,
    pub summary: Summary,
    /// How many changes repaired hand edits of managed files.
    pub drift: usize,
    /// Why nothing was applied, for [`Outcome::NotApplied`].
    pub error: Option<String>,
    /// The run as `--format json` prints it (`infra-agent/run/v1`), when steps ran.
    pub run: Option<RunJson>,
}

/// A run document kept as the JSON text it was written as. Status and history carry
/// it through without parsing it into a tree and writing it back: on a host with a
/// few hundred steps that tree is most of the cost of recording a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunJson(Box<serde_json::value::RawValue>);

impl RunJson {
    /// The document as a JSON value (parsed on demand).
    #[must_use]
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get())
            .expect("a RunJson holds valid JSON, checked when it was made")
    }

    /// The JSON text.
    #[must_use]
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RunJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// The run document (`infra-agent/run/v1`) of a report: the same value `--format json`
/// prints, built by [`crate::report::RunDocument`] so the two cannot drift apart.
#[must_use]
pub fn run_document(host: &str, env: &str, report: &RunReport) -> serde_json::Value {
    run_json(host, env, report).value()
}

fn run_json(host: &str, env: &str, report: &RunReport) -> RunJson {
    let doc = crate::report::RunDocument::new(host, env, report);
    RunJson(serde_json::value::to_raw_value(&doc).expect("a run document serializes, because it holds only strings, numbers and maps with string keys"))
}

/// The start of a run: what triggered it, what it reads, and when it began. Take one
/// as the run begins and finish it with [`RunStart::applied`] or
/// [`RunStart::not_applied`]; times and the duration are filled in for you.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub trigger: Trigger,
    pub source: String,
    started: SystemTime,
    clock: Instant,
}

impl RunStart {
    #[must_use]
    pub fn now(trigger: Trigger, source: impl Into<String>) -> Self {
        Self {
            trigger,
            source: source.into(),
            started: SystemTime::now(),
            clock: Instant::now(),
        }
    }

    /// A run that applied a commit's catalog (whatever its steps did): the outcome,
    /// exit code and summary come from the report, and `run` holds its run document.
    /// `commit` is `None` when a directory was read as it is. Set `drift` on the
    /// result when changes repaired hand edits.
    #[must_use]
    pub fn applied(
        &self,
        commit: Option<CommitRef>,
        host: &str,
        env: &str,
        report: &RunReport,
    ) -> RunRecord {
        let summary = report.summary();
        RunRecord {
            outcome: Outcome::of(summary),
            exit_code: report.exit_code(),
            summary,
            commit,
            error: None,
            run: Some(run_json(host, env, report)),
            ..self.finished()
        }
    }

    /// A run that could apply nothing (exit code 1): the fetch failed, the commit was
    /// rejected (pass it as `commit`), the lock was held, or converging is disabled.
    #[must_use]
    pub fn not_applied(&self, commit: Option<CommitRef>, error: impl Into<String>) -> RunRecord {
        RunRecord {
            commit,
            error: Some(error.into()),
            ..self.finished()
        }
    }

    fn finished(&self) -> RunRecord {
        let elapsed = self.clock.elapsed();
        RunRecord {
            started_at: rfc3339(self.started),
            finished_at: rfc3339(self.started + elapsed),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            trigger: self.trigger,
            source: self.source.clone(),
            commit: None,
            outcome: Outcome::NotApplied,
            exit_code: exit::INVALID,
            summary: Summary::default(),
            drift: 0,
            error: None,
            run: None,
        }
    }
}

/// A commit that was fetched but not applied (it failed validation or verification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub commit: CommitRef,
    pub error: String,
    /// When it was rejected (RFC 3339).
    pub at: String,
}

/// How fetching from the repository has gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchState {
    /// Failures since the last successful fetch.
    pub consecutive_failures: u64,
    pub total_failures: u64,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

/// Converging paused by `infra-agent disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    /// When it was disabled (RFC 3339).
    pub since: String,
}

/// What `status.json` holds: the host's standing after its last run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub schema: String,
    pub host: String,
    /// When this record was last written (RFC 3339); set by [`StateFiles::save_status`].
    pub updated_at: String,
    pub last_run: Option<RunRecord>,
    /// The last commit applied: what the host enforces.
    pub applied: Option<CommitRef>,
    /// A commit that was not applied; cleared when a newer commit applies.
    pub rejected: Option<Rejected>,
    pub fetch: FetchState,
    /// Read from `disabled.json` by [`StateFiles::load_status`], which is the truth;
    /// the copy in `status.json` is only what held when it was written.
    pub disabled: Option<Disabled>,
    /// Changes that repaired hand edits, over all runs.
    pub drift_events: u64,
    pub reboot_required: bool,
    pub runs_total: u64,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            schema: STATUS_SCHEMA.to_owned(),
            host: String::new(),
            updated_at: String::new(),
            last_run: None,
            applied: None,
            rejected: None,
            fetch: FetchState::default(),
            disabled: None,
            drift_events: 0,
            reboot_required: false,
            runs_total: 0,
        }
    }
}

impl Status {
    /// Counts a finished run and makes it the last one. A run that applied a commit
    /// makes it the applied commit; a newly applied commit clears `rejected` (the
    /// rejected one is older, since a host only moves forward). A run without a commit
    /// (a directory read as it is) leaves `applied` alone.
    pub fn record_run(&mut self, record: &RunRecord) {
        self.runs_total += 1;
        self.drift_events += record.drift as u64;
        if record.outcome != Outcome::NotApplied
            && let Some(commit) = &record.commit
        {
            let newly_applied = self.applied.as_ref().is_none_or(|a| a.id != commit.id);
            if newly_applied {
                self.rejected = None;
                self.applied = Some(commit.clone());
            }
        }
        self.last_run = Some(record.clone());
    }

    /// A fetched commit that will not be applied; the host keeps enforcing `applied`.
    pub fn record_rejected(&mut self, commit: CommitRef, error: impl Into<String>) {
        self.rejected = Some(Rejected {
            commit,
            error: error.into(),
            at: rfc3339(SystemTime::now()),
        });
    }

    pub fn record_fetch_failure(&mut self, error: impl Into<String>) {
        self.fetch.consecutive_failures += 1;
        self.fetch.total_failures += 1;
        self.fetch.last_error = Some(error.into());
    }

    /// A fetch (or a cheap poll that found the tip unchanged) succeeded.
    pub fn record_fetch_success(&mut self) {
        self.fetch.consecutive_failures = 0;
        self.fetch.last_success_at = Some(rfc3339(SystemTime::now()));
    }
}

/// Failures to write the agent's records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot write {}: {source}\nhint: the agent keeps its records in the state directory (state_dir in agent.toml); it must be writable by the agent, which runs as root",
        path.display()
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read {}: {source}\nhint: the agent keeps its records in the state directory (state_dir in agent.toml); check that it is readable",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot disable converging without a reason\nhint: say why, for whoever runs `infra-agent status` next: --reason 'disk replacement, back Friday'"
    )]
    NoReason,
}

/// The files under the state directory (default `/var/lib/infra-agent`).
#[derive(Debug, Clone)]
pub struct StateFiles {
    dir: PathBuf,
}

impl StateFiles {
    #[must_use]
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: state_dir.into(),
        }
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[must_use]
    pub fn status_path(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    #[must_use]
    pub fn disabled_path(&self) -> PathBuf {
        self.dir.join(DISABLED_FILE)
    }

    #[must_use]
    pub fn history_dir(&self) -> PathBuf {
        self.dir.join(HISTORY_DIR)
    }

    /// The status, with `disabled` read from `disabled.json`. No `status.json` yet
    /// means the default (nothing ran). A damaged or unreadable one also gives the
    /// default, with a warning that says so; it is never an error, so a bad record
    /// cannot stop the agent from converging.
    #[must_use]
    pub fn load_status(&self) -> (Status, Option<String>) {
        let path = self.status_path();
        let (mut status, warning) = match std::fs::read(&path) {
            Ok(bytes) => match parse_status(&bytes) {
                Ok(status) => (status, None),
                Err(why) => (
                    Status::default(),
                    Some(format!(
                        "{} is damaged ({why}); starting from an empty status (run counters restart at 0)",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Status::default(), None),
            Err(e) => (
                Status::default(),
                Some(format!(
                    "cannot read {}: {e}; starting from an empty status",
                    path.display()
                )),
            ),
        };
        status.disabled = self.disabled();
        (status, warning)
    }

    /// Writes `status.json` atomically, stamping `updated_at` with the current time.
    /// Creates the state directory (mode 0755) when it is missing.
    pub fn save_status(&self, status: &Status) -> Result<(), Error> {
        let mut status = status.clone();
        STATUS_SCHEMA.clone_into(&mut status.schema);
        status.updated_at = rfc3339(SystemTime::now());
        create_dir(&self.dir)?;
        let path = self.status_path();
        write_atomic(&path, &to_json(&status), Durability::Synced)
            .map_err(|source| Error::Write { path, source })
    }

    /// Adds a run to `history/` (one file per run, named by its start time so names
    /// sort by time) and removes all but the newest `keep`.
    pub fn append_history(&self, record: &RunRecord, keep: usize) -> Result<(), Error> {
        let dir = self.history_dir();
        create_dir(&self.dir)?;
        create_dir(&dir)?;
        let stem = format!("{}-{}", file_time(&record.started_at), std::process::id());
        let bytes = to_json(record);
        let mut n = 0;
        loop {
            // A second run recorded in the same millisecond by the same process gets
            // `_1`, which sorts after the first (`_` comes after `.`).
            let name = if n == 0 {
                format!("{stem}.json")
            } else {
                format!("{stem}_{n}.json")
            };
            let path = dir.join(name);
            if !path.exists() {
                write_atomic(&path, &bytes, Durability::Replaced).map_err(|source| {
                    Error::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                break;
            }
            n += 1;
        }
        let names = self.history_names()?;
        for name in names.iter().take(names.len().saturating_sub(keep)) {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Write { path, source }),
            }
        }
        Ok(())
    }

    /// Up to `limit` runs, newest first, and a warning for each damaged record skipped.
    pub fn history(&self, limit: usize) -> Result<(Vec<RunRecord>, Vec<String>), Error> {
        let dir = self.history_dir();
        let mut runs = Vec::new();
        let mut warnings = Vec::new();
        for name in self.history_names()?.iter().rev() {
            if runs.len() == limit {
                break;
            }
            let path = dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Pruned by a run finishing meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(Error::Read { path, source }),
            };
            match serde_json::from_slice(&bytes) {
                Ok(record) => runs.push(record),
                Err(e) => warnings.push(format!(
                    "{} is damaged ({e}); that run is left out",
                    path.display()
                )),
            }
        }
        Ok((runs, warnings))
    }

    /// The history file names, oldest first.
    fn history_names(&self) -> Result<Vec<String>, Error> {
        let dir = self.history_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Read { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
                && Path::new(name).extension().is_some_and(|e| e == "json")
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Pauses converging: writes `disabled.json`, which runs check after taking the
    /// lock. A run in progress finishes; the next ones apply nothing until
    /// [`StateFiles::enable`]. Disabling again replaces the reason and keeps `since`.
    /// Never touches `status.json` or the lock, so it works while a run holds it.
    pub fn disable(&self, reason: &str) -> Result<Disabled, Error> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::NoReason);
        }
        let since = self
            .disabled()
            .map_or_else(|| rfc3339(SystemTime::now()), |d| d.since);
        let disabled = Disabled {
            reason: reason.to_owned(),
            since,
        };
        create_dir(&self.dir)?;
        let path = self.disabled_path();
        write_atomic(&path, &to_json(&disabled), Durability::Synced)
            .map_err(|source| Error::Write { path, source })?;
        Ok(disabled)
    }

    /// Resumes converging; returns whether it was disabled.
    pub fn enable(&self) -> Result<bool, Error> {
        let path = self.disabled_path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir).map_err(|source| Error::Write {
                    path: self.dir.clone(),
                    source,
                })?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Write { path, source }),
        }
    }

    /// Whether converging is paused. Fails closed: a `disabled.json` that exists but
    /// cannot be read or parsed still disables, with a reason that says what is wrong
    /// (someone meant to pause the host; `infra-agent enable` removes the file).
    #[must_use]
    pub fn disabled(&self) -> Option<Disabled> {
        let path = self.disabled_path();
        let problem = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Disabled>(&bytes) {
                Ok(d) => return Some(d),
                Err(e) => format!("{} is damaged: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => format!("cannot read {}: {e}", path.display()),
        };
        let since = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .map(rfc3339)
            .unwrap_or_default();
        Some(Disabled {
            reason: format!("(no reason readable: {problem})"),
            since,
        })
    }

    /// Records a finished run everywhere: counts it in `status`, appends it to the
    /// history (keeping `config.history` runs), saves `status.json` and writes the
    /// Prometheus textfile when `config.textfile_dir` is set. Returns warnings to log:
    /// a record that cannot be written must not fail the run that already happened.
    pub fn finish_run(
        &self,
        status: &mut Status,
        record: &RunRecord,
        config: &AgentConfig,
    ) -> Vec<String> {
        status.record_run(record);
        status.disabled = self.disabled();
        let mut warnings = Vec::new();
        if let Err(e) = self.append_history(record, config.history) {
            warnings.push(e.to_string());
        }
        if let Err(e) = self.save_status(status) {
            warnings.push(e.to_string());
        }
        // node_exporter's directory exists only where node_exporter is installed: a
        // host without it gets no textfile and no warning (docs/agent-config.md).
        if let Some(dir) = &config.textfile_dir
            && dir.is_dir()
            && let Err(e) = crate::metrics::write_textfile(dir, status)
        {
            warnings.push(e.to_string());
        }
        warnings
    }
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    ensure_dir(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Creates `dir` (and its parents) with mode 0755 whatever the umask, when missing.
/// An existing directory keeps the mode it has.
pub(crate) fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

fn parse_status(bytes: &[u8]) -> Result<Status, String> {
    let status: Status = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if status.schema != STATUS_SCHEMA {
        return Err(format!(
            "schema is `{}`, this agent reads `{STATUS_SCHEMA}`",
            status.schema
        ));
    }
    Ok(status)
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect(
        "records serialize, because they hold only strings, numbers and maps with string keys",
    );
    bytes.push(b'\n');
    bytes
}

/// `2026-11-30T15:10:00.123Z` as a file name part: `20261130T151000.123Z`. A time not
/// in that form (written by hand) falls back to now, so the name still sorts.
fn file_time(rfc3339_time: &str) -> String {
    let compact: String = rfc3339_time
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let b = compact.as_bytes();
    let well_formed = parse_rfc3339(rfc3339_time).is_some()
        && rfc3339_time.ends_with('Z')
        && b.len() >= 16
        && b[8] == b'T'
        && compact
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'T' | '.' | 'Z'));
    if well_formed {
        compact
    } else {
        file_time(&rfc3339(SystemTime::now()))
    }
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How far a replaced record must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk before the call returns (the file and its directory are fsynced):
    /// `status.json`, which names the applied commit, and `disabled.json`.
    Synced,
    /// Replaced in one rename but left to the kernel's writeback: records the next run
    /// writes again (a history entry, the metrics textfile). After a power loss the
    /// newest one may be missing or empty; readers skip such a file.
    Replaced,
}

/// Replaces `path` with `bytes` (mode 0644): writes `.NAME.infra-tmp.XXXXXXXX` in the
/// same directory, renames it over `path` and, for [`Durability::Synced`], fsyncs the
/// file before and the directory after the rename. The temporary name never ends like
/// the real one, so readers globbing `*.json` or `*.prom` never pick it up. On failure
/// the temporary file is removed.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644, durability)
}

/// [`write_atomic`] with another mode than 0644 (0600 for what only root may read).
pub(crate) fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path has no file name"))?
        .to_string_lossy();
    let (tmp, mut file) = loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let suffix = (u64::from(std::process::id()) << 40) ^ (n << 30) ^ u64::from(nanos);
        let tmp = dir.join(format!(".{name}.infra-tmp.{:08x}", suffix & 0xffff_ffff));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Synced {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A time as RFC 3339 in UTC with milliseconds: `2026-11-30T15:10:00.123Z`. Times
/// before 1970 (a broken clock) are written as the epoch.
#[must_use]
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Seconds since the Unix epoch of an RFC 3339 time (`Z` or a `±HH:MM` offset,
/// optional fraction); `None` when it is not one.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds since 1970 fit in 53 bits"
    )]
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (the era-based algorithm: 400-year eras of 146 097 days, years starting in March).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `status --format json`: the status with the history beside it.
#[derive(Serialize)]
struct StatusDocument<'a> {
    #[serde(flatten)]
    status: &'a Status,
    history: &'a [RunRecord],
}

/// Prints the status and the last runs (newest first) for `infra-agent status`.
pub fn print(
    out: &mut dyn Write,
    status: &Status,
    history: &[RunRecord],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let mut status = status.clone();
            STATUS_SCHEMA.clone_into(&mut status.schema);
            let doc = StatusDocument {
                status: &status,
                history,
            };
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)
        }
        Format::Text => print_text(out, status, history),
    }
}

fn print_text(out: &mut dyn Write, status: &Status, history: &[RunRecord]) -> std::io::Result<()> {
    let host = if status.host.is_empty() {
        "(unknown)"
    } else {
        &status.host
    };
    writeln!(out, "host: {host}")?;
    if let Some(d) = &status.disabled {
        writeln!(
            out,
            "DISABLED since {}: {}",
            display_time(&d.since),
            d.reason
        )?;
        writeln!(
            out,
            "  converging is paused; `infra-agent enable` resumes it"
        )?;
    }
    match &status.applied {
        Some(c) => writeln!(
            out,
            "applied: {} {} (committed {})",
            c.short,
            c.summary,
            display_epoch(c.time)
        )?,
        None => writeln!(out, "applied: no commit applied yet")?,
    }
    if let Some(r) = &status.rejected {
        writeln!(
            out,
            "REJECTED: {} {} (at {}), not applied; the host keeps enforcing the applied commit",
            r.commit.short,
            r.commit.summary,
            display_time(&r.at)
        )?;
        for line in r.error.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    let f = &status.fetch;
    if f.consecutive_failures > 0 {
        let last_ok = f
            .last_success_at
            .as_deref()
            .map_or_else(|| "never".to_owned(), display_time);
        writeln!(
            out,
            "FETCH FAILING: {} failures in a row ({} in all); last success: {last_ok}",
            f.consecutive_failures, f.total_failures
        )?;
        if let Some(e) = &f.last_error {
            for line in e.lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    if status.reboot_required {
        writeln!(out, "REBOOT REQUIRED")?;
    }
    if history.is_empty() {
        match &status.last_run {
            Some(run) => {
                writeln!(out, "last run:")?;
                writeln!(out, "  {}", run_line(run))?;
            }
            None => writeln!(out, "no run recorded yet")?,
        }
    } else {
        writeln!(out, "last runs, newest first:")?;
        for run in history {
            writeln!(out, "  {}", run_line(run))?;
        }
    }
    Ok(())
}

/// One run on one line: time, trigger, commit, outcome, counts, duration, and the
/// first line of the error of a run that applied nothing.
fn run_line(run: &RunRecord) -> String {
    let commit = run.commit.as_ref().map_or("-", |c| c.short.as_str());
    let mut line = format!(
        "{}  {:<6}  {:<7}  {:<11}  {} changed / {} failed  {}",
        display_time(&run.started_at),
        run.trigger.to_string(),
        commit,
        run.outcome.to_string(),
        run.summary.changed,
        run.summary.failed,
        display_duration(run.duration_ms)
    );
    if let Some(e) = &run.error {
        line.push_str(": ");
        line.push_str(e.lines().next().unwrap_or_default());
    }
    line
}

/// `2026-11-30T15:10:00.123Z` as `2026-11-30 15:10:00 UTC`; anything else as it is.
fn display_time(s: &str) -> String {
    match parse_rfc3339(s) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "whole seconds of a parsed time"
        )]
        Some(secs) => display_epoch(secs.floor() as i64),
        None => s.to_owned(),
    }
}

fn display_epoch(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn display_duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// `infra-agent status`. Exit 0 when the status could be read (also when nothing ran
/// yet: status reports, it does not judge the last run; that is `--once`'s exit code
/// and the `last_run` in the output); 1 when `status.json` or the history cannot be
/// read, after printing what could be.
pub fn status_command(
    config: &AgentConfig,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let files = StateFiles::new(&config.state_dir);
    let (mut status, warning) = files.load_status();
    let mut code = exit::OK;
    if let Some(w) = warning {
        writeln!(err, "warning: {w}")?;
        code = exit::INVALID;
    }
    if status.host.is_empty() {
        status.host = config
            .hostname
            .clone()
            .or_else(|| crate::this_hostname().ok())
            .unwrap_or_default();
    }
    let history = match files.history(config.history) {
        Ok((runs, warnings)) => {
            for w in warnings {
                writeln!(err, "warning: {w}")?;
            }
            runs
        }
        Err(e) => {
            writeln!(err, "warning: {e}")?;
            code = exit::INVALID;
            Vec::new()
        }
    };
    print(out, &status, &history, format)?;
    Ok(code)
}

/// `infra-agent disable --reason TEXT`: 0 when disabled (also when it already was:
/// the reason is replaced), 64 without a reason. Works while a run holds the lock.
pub fn disable_command(
    config: &AgentConfig,
    reason: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let files = StateFiles::new(&config.state_dir);
    let was = files.disabled();
    let disabled = match files.disable(reason) {
        Ok(d) => d,
        Err(e @ Error::NoReason) => {
            writeln!(err, "error: {e}")?;
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    match was {
        Some(_) => writeln!(
            out,
            "converging was already disabled since {}; the reason is now: {}",
            display_time(&disabled.since),
            disabled.reason
        )?,
        None => writeln!(
            out,
            "converging disabled: {}\na run in progress finishes; `infra-agent enable` resumes converging",
            disabled.reason
        )?,
    }
    refresh_textfile(config, &files, err)?;
    Ok(exit::OK)
}

/// `infra-agent enable`: 0 whether or not converging was disabled.
pub fn enable_command(
    config: &AgentConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let files = StateFiles::new(&config.state_dir);
    if files.enable()? {
        writeln!(
            out,
            "converging enabled: the daemon applies the repository again at its next run"
        )?;
    } else {
        writeln!(out, "converging was not disabled; nothing to do")?;
    }
    refresh_textfile(config, &files, err)?;
    Ok(exit::OK)
}

/// Rewrites the textfile so `infra_agent_disabled` follows disable/enable at once
/// rather than at the next run. A failure is only a warning: the switch itself worked.
fn refresh_textfile(
    config: &AgentConfig,
    files: &StateFiles,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(dir) = config.textfile_dir.as_ref().filter(|d| d.is_dir()) else {
        return Ok(());
    };
    let (status, _) = files.load_status();
    if let Err(e) = crate::metrics::write_textfile(dir, &status) {
        writeln!(err, "warning: {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // 2026-11-30T15:10:00.123Z, computed by hand: 20 787 days after the epoch.
        assert_eq!(
            rfc3339(at(20_787 * 86_400 + 15 * 3600 + 10 * 60, 123)),
            "2026-11-30T15:10:00.123Z"
        );
        // A leap day and the last second of a leap year.
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_735_689_599, 999)), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for secs in [0, 951_782_400, 1_735_689_599, 4_102_444_800, 1_796_000_123] {
            let s = rfc3339(at(secs, 250));
            #[allow(clippy::cast_precision_loss)]
            let expected = secs as f64 + 0.25;
            assert_eq!(parse_rfc3339(&s), Some(expected), "{s}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00-00:30"), Some(1800.0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-30T15:10:00",
            "2026-11-30T15:10:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn history_file_names_sort_by_time() {
        assert_eq!(
            file_time("2026-11-30T15:10:00.123Z"),
            "20261130T151000.123Z"
        );
        let fallback = file_time("last tuesday");
        assert!(
            fallback.ends_with('Z') && fallback.len() == 20,
            "{fallback}"
        );
        let mut names = vec![
            format!("{}-9.json", file_time(&rfc3339(at(1_000_000_000, 5)))),
            format!("{}-1.json", file_time(&rfc3339(at(999_999_999, 999)))),
            format!("{}-1_1.json", file_time(&rfc3339(at(999_999_999, 999)))),
        ];
        names.sort();
        assert!(names[0].ends_with("-1.json"), "{names:?}");
        assert!(names[1].ends_with("-1_1.json"), "{names:?}");
        assert!(names[2].ends_with("-9.json"), "{names:?}");
    }

    fn commit(id: &str) -> CommitRef {
        CommitRef::new(id, &format!("commit {id}\n\nbody"), 1_700_000_000)
    }

    #[test]
    fn commit_ref_shortens_id_and_message() {
        let c = CommitRef::new("0123456789abcdef", "Add nginx role\n\nbecause", 5);
        assert_eq!(c.short, "0123456");
        assert_eq!(c.summary, "Add nginx role");
    }

    #[test]
    fn a_newly_applied_commit_clears_the_rejected_one() {
        let start = RunStart::now(Trigger::Timer, "ssh://git/infra");
        let report = RunReport {
            dry_run: false,
            steps: Vec::new(),
            stopped: false,
            timing: None,
        };
        let mut status = Status::default();
        status.record_run(&start.applied(Some(commit("aaaaaaaaaa")), "h", "prod", &report));
        status.record_rejected(commit("bbbbbbbbbb"), "roles/web.toml:3: unknown key");
        // The host keeps enforcing A: the rejection stays.
        status.record_run(&start.applied(Some(commit("aaaaaaaaaa")), "h", "prod", &report));
        assert_eq!(
            status.rejected.as_ref().map(|r| r.commit.id.as_str()),
            Some("bbbbbbbbbb")
        );
        // A run that applied nothing moves nothing.
        status.record_run(&start.not_applied(Some(commit("bbbbbbbbbb")), "bad commit"));
        assert_eq!(
            status.applied.as_ref().map(|c| c.id.as_str()),
            Some("aaaaaaaaaa")
        );
        assert!(status.rejected.is_some());
        // A directory read as it is does not move the applied commit either.
        status.record_run(&start.applied(None, "h", "prod", &report));
        assert_eq!(
            status.applied.as_ref().map(|c| c.id.as_str()),
            Some("aaaaaaaaaa")
        );
        // C, the fix, applies.
        status.record_run(&start.applied(Some(commit("cccccccccc")), "h", "prod", &report));
        assert_eq!(
            status.applied.as_ref().map(|c| c.id.as_str()),
            Some("cccccccccc")
        );
        assert_eq!(status.rejected, None);
        assert_eq!(status.runs_total, 5);
    }

    #[test]
    fn fetch_failures_count_until_a_success() {
        let mut status = Status::default();
        status.record_fetch_failure("connection refused");
        status.record_fetch_failure("connection timed out");
        assert_eq!(status.fetch.consecutive_failures, 2);
        assert_eq!(
            status.fetch.last_error.as_deref(),
            Some("connection timed out")
        );
        status.record_fetch_success();
        status.record_fetch_failure("x");
        assert_eq!(status.fetch.consecutive_failures, 1);
        assert_eq!(status.fetch.total_failures, 3);
        assert!(status.fetch.last_success_at.is_some());
    }

    #[test]
    fn records_of_runs() {
        let start = RunStart::now(Trigger::Drift, "/srv/infra");
        let failed = start.not_applied(None, "another infra-agent run holds the lock");
        assert_eq!(failed.outcome, Outcome::NotApplied);
        assert_eq!(failed.exit_code, 1);
        assert_eq!(failed.trigger, Trigger::Drift);
        assert!(parse_rfc3339(&failed.started_at).is_some());
        assert!(failed.finished_at >= failed.started_at);
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["outcome"], "not_applied");
        assert_eq!(json["trigger"], "drift");
        let back: RunRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, failed);
    }

    #[test]
    fn outcome_follows_the_summary() {
        let s = |changed, failed| Summary {
            changed,
            failed,
            in_sync: 3,
            skipped: 0,
        };
        assert_eq!(Outcome::of(s(0, 0)), Outcome::InSync);
        assert_eq!(Outcome::of(s(2, 0)), Outcome::Changed);
        assert_eq!(Outcome::of(s(2, 1)), Outcome::Failed);
        assert!(!Outcome::Failed.succeeded() && Outcome::Changed.succeeded());
    }

    #[test]
    fn text_puts_disabled_first_and_lists_runs() {
        let mut status = Status {
            host: "web-01".into(),
            disabled: Some(Disabled {
                reason: "disk swap".into(),
                since: "2026-11-30T15:10:00.123Z".into(),
            }),
            applied: Some(commit("aaaaaaaaaa")),
            reboot_required: true,
            ..Status::default()
        };
        status.record_rejected(
            commit("bbbbbbbbbb"),
            "roles/web.toml:3:1: unknown key `sorce`",
        );
        status.record_fetch_failure("timed out");
        let mut run =
            RunStart::now(Trigger::Timer, "x").not_applied(None, "fetch failed: timed out\nmore");
        run.started_at = "2026-11-30T15:10:00.123Z".into();
        run.duration_ms = 1500;
        let mut out = Vec::new();
        print(&mut out, &status, &[run], Format::Text).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "host: web-01");
        assert_eq!(
            lines[1],
            "DISABLED since 2026-11-30 15:10:00 UTC: disk swap"
        );
        assert!(
            text.contains("applied: aaaaaaa commit aaaaaaaaaa"),
            "{text}"
        );
        assert!(text.contains("REJECTED: bbbbbbb"), "{text}");
        assert!(
            text.contains("  roles/web.toml:3:1: unknown key `sorce`"),
            "{text}"
        );
        assert!(
            text.contains("FETCH FAILING: 1 failures in a row"),
            "{text}"
        );
        assert!(text.contains("REBOOT REQUIRED"), "{text}");
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("  2026-11-30 15:10:00 UTC  timer"),
            "{last}"
        );
        assert!(last.contains("not applied"), "{last}");
        assert!(
            last.contains("0 changed / 0 failed  1.5 s: fetch failed: timed out"),
            "{last}"
        );
        assert!(!last.contains("more"), "{last}");
    }

    #[test]
    fn json_has_the_schema_and_the_history() {
        let status = Status {
            host: "web-01".into(),
            ..Status::default()
        };
        let run = RunStart::now(Trigger::Once, "x").not_applied(None, "disabled");
        let mut out = Vec::new();
        print(&mut out, &status, &[run], Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], STATUS_SCHEMA);
        assert_eq!(v["host"], "web-01");
        assert_eq!(v["history"][0]["error"], "disabled");
        assert_eq!(v["history"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(display_duration(350), "350 ms");
        assert_eq!(display_duration(1_234), "1.2 s");
        assert_eq!(display_duration(125_000), "2 min 5 s");
    }
}
