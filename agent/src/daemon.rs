//! The daemon: what the systemd unit starts (`infra-agent` with no command).
//!
//! The daemon decides *when* to converge; each converge runs in a process of its own,
//! `infra-agent --once --daemon-cycle TRIGGER` (the same code as `--once`), whose
//! output goes to the daemon's journal stream. So the daemon itself never loads git,
//! OpenSSL or a repository: it stays small and flat however many cycles it runs, and
//! nothing a converge leaves behind in memory outlives it (see ARCHITECTURE.md).
//!
//! One thread runs tokio (current-thread runtime) for signals, timers and the drift
//! watch; the child is waited for on a blocking thread so signals are handled while it
//! works; the watchdog is pinged from a thread of its own (see `sdnotify`), so no
//! converge, however long apt takes, can starve it.
//!
//! Converges: at start, then every `interval` plus a random part of `splay`; at once on
//! SIGHUP (after re-reading agent.toml); and, with `watch_drift`, a couple of seconds
//! after a watched file was edited by hand. SIGTERM or SIGINT: the daemon creates
//! `state_dir/stop`, the converge finishes the step it is in and skips the others
//! (they wait for the next start), and the daemon exits 0.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, AgentConfig};
use crate::once::{STOP_FILE, WATCHED_FILE};
use crate::pull::{Cycle, Origin, Trigger};
use crate::sdnotify::{self, Notifier};
use crate::status::StateFiles;

/// How long the drift watch waits for a burst of edits to end before converging.
const DRIFT_QUIET: Duration = Duration::from_secs(2);
/// The longest a burst may delay the converge.
const DRIFT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Flags that override agent.toml for the daemon.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub repo: Option<String>,
    pub hostname: Option<String>,
}

/// What the daemon knows between converges: agent.toml, read at start and on SIGHUP,
/// and the secrets converges read, kept for `secrets_cache_ttl` seconds (in memory
/// only; they reach the next converge through a pipe).
#[derive(Debug)]
struct Daemon {
    config: AgentConfig,
    origin: Origin,
    hostname: String,
    secrets: Arc<crate::secrets::Cache>,
}

/// Runs the daemon until SIGTERM. Returns the exit code.
pub fn run(overrides: &Overrides) -> Result<u8> {
    crate::journal::init(false);
    let daemon = load(overrides)?;
    let notifier = Notifier::from_env();
    let _watchdog = sdnotify::spawn_watchdog(&notifier);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the daemon's event loop")?;
    runtime.block_on(main_loop(daemon, overrides.clone(), notifier))
}

/// Reads agent.toml and resolves the origin and the host name, so a daemon that
/// cannot run says why at once rather than at every cycle.
fn load(overrides: &Overrides) -> Result<Daemon> {
    let (config, warnings) = config::load(overrides.config.as_deref())?;
    for w in warnings {
        log::warn!("{w}");
    }
    let location = match (&overrides.repo, &config.repository) {
        (Some(r), _) | (None, Some(r)) => r.clone(),
        (None, None) => anyhow::bail!(
            "agent.toml names no repository\nhint: set repository = \"ssh://...\" in {}",
            overrides
                .config
                .as_deref()
                .unwrap_or(Path::new(config::DEFAULT_PATH))
                .display()
        ),
    };
    let origin = Origin::parse(&location, &config);
    let hostname = match (&overrides.hostname, &config.hostname) {
        (Some(h), _) | (None, Some(h)) => h.clone(),
        (None, None) => crate::this_hostname()?,
    };
    let secrets = Arc::new(crate::secrets::Cache::default());
    secrets.configure(&config);
    Ok(Daemon {
        config,
        origin,
        hostname,
        secrets,
    })
}

/// Runs one converge; with a secrets cache, hands it the values still fresh and keeps
/// what it read.
fn run_cycle(
    cmd: crate::process::Cmd,
    cache: &crate::secrets::Cache,
    keep_secrets: bool,
) -> std::io::Result<Option<i32>> {
    if !keep_secrets {
        return crate::process::run_inheriting_output(&cmd);
    }
    let kept = serde_json::to_vec(&cache.export()).expect("cached values serialize");
    let mut cmd = cmd.arg("--secrets-cache");
    cmd.stdin = Some(kept);
    let (code, out) = crate::process::run_with_pipes(&cmd)?;
    match serde_json::from_slice(&out) {
        Ok(kept) => cache.import(kept),
        // A converge that stopped early says nothing: keep what the cache had.
        Err(_) if out.is_empty() => {}
        Err(e) => log::warn!("the converge's cached secrets could not be read back: {e}"),
    }
    Ok(code)
}

/// The program to run converges with: the path this process was started as (after a
/// package upgrade that is the new agent, which the upgrade restarts the daemon into
/// anyway), else the running executable.
fn agent_program() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::current_exe().ok())
        .map_or_else(|| "infra-agent".to_owned(), |p| p.display().to_string())
}

/// The command line of one converge.
fn cycle_command(overrides: &Overrides, trigger: Trigger) -> crate::process::Cmd {
    let mut cmd = crate::process::Cmd::new(agent_program())
        .arg("--once")
        .arg("--daemon-cycle");
    cmd = cmd.arg(match trigger {
        Trigger::Start | Trigger::Once => "start",
        Trigger::Timer => "timer",
        Trigger::Signal => "signal",
        Trigger::Drift => "drift",
    });
    if trigger == Trigger::Drift {
        cmd = cmd.arg("--no-fetch");
    }
    if let Some(config) = &overrides.config {
        cmd = cmd.arg("--config").arg(config.display().to_string());
    }
    if let Some(repo) = &overrides.repo {
        cmd = cmd.arg("--repo").arg(repo.clone());
    }
    if let Some(hostname) = &overrides.hostname {
        cmd = cmd.arg("--hostname").arg(hostname.clone());
    }
    cmd
}

async fn main_loop(mut daemon: Daemon, overrides: Overrides, notifier: Notifier) -> Result<u8> {
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // A stop file left by a daemon killed while stopping must not stop the first cycle.
    let _ = std::fs::remove_file(daemon.config.state_dir.join(STOP_FILE));
    if let Err(e) = notifier.ready() {
        log::warn!("cannot tell systemd the agent is ready: {e}");
    }
    log::info!(
        "started: {} for host {}, every {} s (+ up to {} s)",
        describe(&daemon.origin),
        daemon.hostname,
        daemon.config.interval,
        daemon.config.splay
    );
    let mut trigger = Trigger::Start;
    loop {
        notifier.status(&format!("converging ({trigger})")).ok();
        let stop_file = daemon.config.state_dir.join(STOP_FILE);
        let cmd = cycle_command(&overrides, trigger);
        let cache = Arc::clone(&daemon.secrets);
        let keep_secrets = daemon.config.secrets_cache_ttl > 0;
        let work = tokio::task::spawn_blocking(move || run_cycle(cmd, &cache, keep_secrets));
        tokio::pin!(work);
        let mut again = false;
        let mut stopping = false;
        let exit = loop {
            tokio::select! {
                done = &mut work => break done.context("waiting for a converge failed")?,
                _ = term.recv() => stopping = request_stop(&stop_file),
                _ = int.recv() => stopping = request_stop(&stop_file),
                _ = hup.recv() => again = true,
            }
        };
        let _ = std::fs::remove_file(&stop_file);
        match exit {
            Ok(Some(0 | 2)) => {}
            Ok(Some(code)) => log::warn!("the converge exited with code {code}"),
            Ok(None) => log::error!("the converge was killed by a signal"),
            Err(e) => log::error!("cannot run a converge ({}): {e}", agent_program()),
        }
        notifier.status(&status_line(&daemon.config)).ok();
        if stopping {
            notifier.stopping().ok();
            log::info!("stopping (SIGTERM)");
            return Ok(0);
        }
        if again {
            // SIGHUP while converging: re-read agent.toml and converge again at once.
            reload(&mut daemon, &overrides);
            trigger = Trigger::Signal;
            continue;
        }
        let delay = Duration::from_secs(daemon.config.interval) + splay(daemon.config.splay);
        let (drift_tx, mut drift_rx) = mpsc::unbounded_channel();
        let _watch = if daemon.config.watch_drift {
            DriftWatch::start(&watched(&daemon.config), drift_tx)
        } else {
            None
        };
        trigger = tokio::select! {
            () = tokio::time::sleep(delay) => Trigger::Timer,
            _ = hup.recv() => {
                reload(&mut daemon, &overrides);
                Trigger::Signal
            }
            _ = term.recv() => { notifier.stopping().ok(); return Ok(0) }
            _ = int.recv() => { notifier.stopping().ok(); return Ok(0) }
            Some(path) = drift_rx.recv() => {
                log::info!("{} was changed on this host; converging", path.display());
                debounce(&mut drift_rx).await;
                Trigger::Drift
            }
        };
    }
}

/// Asks the running converge to stop after its current step.
fn request_stop(stop_file: &Path) -> bool {
    if let Err(e) = std::fs::write(stop_file, b"") {
        log::error!(
            "cannot create {} to stop the converge between steps: {e}; waiting for it to end",
            stop_file.display()
        );
    }
    true
}

/// The paths the last converge said to watch for hand edits.
fn watched(config: &AgentConfig) -> Vec<PathBuf> {
    std::fs::read(config.state_dir.join(WATCHED_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Re-reads agent.toml (SIGHUP); a file that no longer loads keeps the old settings.
fn reload(daemon: &mut Daemon, overrides: &Overrides) {
    match load(overrides) {
        Ok(mut fresh) => {
            log::info!("SIGHUP: agent.toml read again");
            // Cached secrets survive a reload unless the backend settings changed.
            daemon.secrets.configure(&fresh.config);
            fresh.secrets = Arc::clone(&daemon.secrets);
            *daemon = fresh;
        }
        Err(e) => log::error!("SIGHUP: agent.toml not reloaded, keeping the old settings: {e:#}"),
    }
}

/// Waits until no edit came for [`DRIFT_QUIET`] (at most [`DRIFT_MAX_DELAY`]).
async fn debounce(rx: &mut mpsc::UnboundedReceiver<PathBuf>) {
    let deadline = tokio::time::Instant::now() + DRIFT_MAX_DELAY;
    loop {
        let quiet = tokio::time::sleep(DRIFT_QUIET);
        tokio::select! {
            () = quiet => return,
            () = tokio::time::sleep_until(deadline) => return,
            more = rx.recv() => if more.is_none() { return },
        }
    }
}

fn describe(origin: &Origin) -> String {
    match origin {
        Origin::Dir(dir) => format!("directory {}", dir.display()),
        Origin::Git(remote) => format!("{} branch {}", remote.url, remote.branch),
    }
}

/// A random duration below `splay` seconds (std's hasher keys are random per process).
fn splay(splay: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    if splay == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    Duration::from_millis(h.finish() % (splay * 1000))
}

/// The daemon's one-line status for systemd, from the record the converge wrote.
fn status_line(config: &AgentConfig) -> String {
    let (status, _) = StateFiles::new(&config.state_dir).load_status();
    match status.last_run {
        Some(run) => {
            let commit = run
                .commit
                .as_ref()
                .map_or_else(String::new, |c| format!(" at {}", c.short));
            match run.error {
                Some(e) if run.outcome == crate::status::Outcome::NotApplied => format!(
                    "last run did not apply: {}",
                    e.lines().next().unwrap_or_default()
                ),
                _ => format!(
                    "last run{commit}: {} changed, {} in sync, {} failed, {} skipped",
                    run.summary.changed,
                    run.summary.in_sync,
                    run.summary.failed,
                    run.summary.skipped
                ),
            }
        }
        None => "no run recorded yet".to_owned(),
    }
}

/// The summary line of a cycle, for the journal.
fn cycle_line(cycle: &Cycle) -> String {
    let commit = cycle
        .commit
        .as_ref()
        .map_or_else(String::new, |c| format!(" at {}", c.short));
    match &cycle.report {
        Some((report, _, _)) => {
            let s = report.summary();
            format!(
                "run{commit}: {} changed, {} in sync, {} failed, {} skipped",
                s.changed, s.in_sync, s.failed, s.skipped
            )
        }
        None => format!("run did not apply: {}", first_line(&cycle.errors)),
    }
}

fn first_line(errors: &[String]) -> &str {
    errors
        .first()
        .and_then(|e| e.lines().next())
        .unwrap_or("unknown error")
}

/// One line per change and failure, then the summary, to the journal (a converge the
/// daemon started logs this way instead of printing a report).
pub fn log_cycle(cycle: &Cycle) {
    let commit = cycle.commit.as_ref().map(|c| c.id.as_str());
    for w in &cycle.warnings {
        log::warn!("{w}");
    }
    for e in &cycle.errors {
        crate::journal::log_with(log::Level::Error, commit, None, e);
    }
    if let Some((report, _, _)) = &cycle.report {
        for step in &report.steps {
            let name = step.name();
            match step.status {
                crate::engine::Status::Changed => {
                    for change in &step.changes {
                        crate::journal::step_changed(commit, &name, &format!("{name}: {change}"));
                    }
                }
                crate::engine::Status::Failed => crate::journal::step_failed(
                    commit,
                    &name,
                    &format!(
                        "{name} failed: {}",
                        step.error.as_deref().unwrap_or("unknown error")
                    ),
                ),
                _ => {}
            }
        }
    }
    crate::journal::run_finished(commit, &cycle_line(cycle));
}

/// Watches the parent directories of managed paths; sends a path when one of them
/// changes. Dropped (and so deaf) while the agent converges, so its own writes are
/// never taken for hand edits.
struct DriftWatch {
    _watcher: notify::RecommendedWatcher,
}

impl DriftWatch {
    fn start(paths: &[PathBuf], tx: mpsc::UnboundedSender<PathBuf>) -> Option<Self> {
        use notify::{EventKind, RecursiveMode, Watcher as _};
        if paths.is_empty() {
            return None;
        }
        let watched: HashSet<PathBuf> = paths.iter().cloned().collect();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if let Some(path) = event.paths.iter().find(|p| watched.contains(*p)) {
                let _ = tx.send(path.clone());
            }
        };
        let mut inotify = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("cannot watch managed files for hand edits: {e}");
                return None;
            }
        };
        let dirs: HashSet<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
        for dir in dirs {
            if let Err(e) = inotify.watch(dir, RecursiveMode::NonRecursive) {
                log::warn!("cannot watch {} for hand edits: {e}", dir.display());
            }
        }
        Some(Self { _watcher: inotify })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_stays_below_its_bound_and_varies() {
        assert_eq!(splay(0), Duration::ZERO);
        let values: HashSet<Duration> = (0..50).map(|_| splay(60)).collect();
        assert!(values.iter().all(|d| *d < Duration::from_mins(1)));
        assert!(values.len() > 40, "splay is not random: {values:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn debounce_waits_for_quiet_but_not_forever() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // No further edit: it returns after the quiet time.
        let start = tokio::time::Instant::now();
        debounce(&mut rx).await;
        assert_eq!(start.elapsed(), DRIFT_QUIET);
        // Edits every second keep it waiting, up to the maximum delay.
        let sender = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(PathBuf::from("/etc/x")).is_err() {
                    break;
                }
            }
        });
        let start = tokio::time::Instant::now();
        debounce(&mut rx).await;
        assert_eq!(start.elapsed(), DRIFT_MAX_DELAY);
        sender.abort();
    }

    #[test]
    fn the_drift_watch_reports_watched_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("watched.conf");
        std::fs::write(&watched, "a").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = DriftWatch::start(std::slice::from_ref(&watched), tx).expect("inotify works");
        std::fs::write(dir.path().join("other.conf"), "b").unwrap();
        std::fs::write(&watched, "edited").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let seen = loop {
            if let Ok(path) = rx.try_recv() {
                break path;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no event for the edit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(seen, watched);
        drop(watch);
    }
}
