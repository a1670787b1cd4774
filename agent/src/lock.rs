//! The run lock: one run at a time per host. A run holds an exclusive `flock(2)` on
//! `state_dir/lock` from before the fetch until its records are written. The kernel
//! drops the lock when the holder exits, however it exits, so a crashed run never
//! leaves a stale lock behind; the pid written into the file only names the holder
//! in messages.
//!
//! The file is opened close-on-exec (Rust's default), so programs a run starts do not
//! inherit the lock and cannot keep it after the run ends.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name under the state directory.
pub const LOCK_FILE: &str = "lock";

/// How often a waiting run tries the lock again.
const POLL: Duration = Duration::from_millis(100);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another infra-agent run{} holds {}; waited {}\nhint: let that run finish and try again (`infra-agent status` shows the last runs, `journalctl -u infra-agent` what it is doing); lock_timeout in agent.toml sets how long a run waits",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display(),
        seconds(*waited)
    )]
    Held {
        path: PathBuf,
        /// The holder's pid, when it had written it.
        pid: Option<u32>,
        waited: Duration,
    },
    #[error(
        "cannot use the lock file {}: {source}\nhint: the state directory (state_dir in agent.toml) must be writable by the agent, which runs as root",
        path.display()
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// The run lock, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    file: Flock<File>,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `state_dir/lock`, creating the directory (0755) and the file
    /// (0644) when missing. While another process holds it, tries again every 100 ms
    /// until `timeout` has passed; a zero timeout tries once.
    pub fn acquire(state_dir: &Path, timeout: Duration) -> Result<RunLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        crate::status::ensure_dir(state_dir).map_err(io)?;
        let started = Instant::now();
        loop {
            // No truncation on open: the holder's pid must survive for the message.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(io)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut file) => {
                    write_pid(&mut file).map_err(io)?;
                    return Ok(RunLock { file, path });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let waited = started.elapsed();
                    if waited >= timeout {
                        return Err(LockError::Held {
                            pid: read_pid(&mut file),
                            path,
                            waited,
                        });
                    }
                    std::thread::sleep(POLL.min(timeout.saturating_sub(waited)));
                }
                Err((_, Errno::EINTR)) => {}
                Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
            }
        }
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Forget the pid before unlocking (the field's own drop), so a run that fails
        // to get the lock later never names a process that has let it go.
        let _ = self.file.set_len(0);
    }
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // flock(2) locks belong to an open file description, so two acquires in one
    // process contend just as two processes do.

    #[test]
    fn a_second_run_waits_then_fails_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = RunLock::acquire(&state, Duration::ZERO).unwrap();
        assert_eq!(held.path(), state.join("lock"));
        let contents = std::fs::read_to_string(state.join("lock")).unwrap();
        assert_eq!(contents, format!("{}\n", std::process::id()));

        let started = Instant::now();
        let err = RunLock::acquire(&state, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        match &err {
            LockError::Held { pid, waited, path } => {
                assert_eq!(*pid, Some(std::process::id()));
                assert!(*waited >= Duration::from_millis(300));
                assert_eq!(path, &state.join("lock"));
            }
            other @ LockError::Io { .. } => panic!("expected Held, got {other:?}"),
        }
        let message = err.to_string();
        let (first, hint) = message.split_once('\n').unwrap();
        assert!(
            first.starts_with(&format!(
                "another infra-agent run (pid {}) holds {}; waited ",
                std::process::id(),
                state.join("lock").display()
            )),
            "{message}"
        );
        assert!(first.ends_with(" ms"), "{message}");
        assert!(hint.starts_with("hint: "), "{message}");
    }

    #[test]
    fn dropping_the_lock_releases_it_and_forgets_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path(), Duration::ZERO).unwrap();
        drop(held);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lock")).unwrap(),
            ""
        );
        let again = RunLock::acquire(dir.path(), Duration::ZERO).unwrap();
        drop(again);
    }

    #[test]
    fn a_waiting_run_gets_the_lock_once_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(250));
            drop(held);
        });
        let started = Instant::now();
        let lock = RunLock::acquire(dir.path(), Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        releaser.join().unwrap();
        drop(lock);
    }

    #[test]
    fn an_unusable_state_dir_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let err = RunLock::acquire(&not_a_dir, Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&not_a_dir.join("lock").display().to_string())
        );
    }

    #[test]
    fn waited_reads_in_seconds() {
        assert_eq!(seconds(Duration::from_mins(1)), "60 s");
        assert_eq!(seconds(Duration::from_millis(60_400)), "60 s");
        assert_eq!(seconds(Duration::from_millis(250)), "250 ms");
    }
}
