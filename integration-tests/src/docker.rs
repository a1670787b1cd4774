//! The Docker engine: the client, the daemon's API version, and the removal of what
//! killed test runs left behind.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{self, Output};

/// Prefix of every container and network name the harness creates.
pub const NAME_PREFIX: &str = "hit-";
/// Label naming the test process that owns a container or network (see [`owner`]).
pub const OWNER_LABEL: &str = "home-infra-test.owner";
/// Label with the Unix time a container or network was created.
pub const CREATED_LABEL: &str = "home-infra-test.created";
/// Leftovers older than this are removed even when their owner seems alive.
pub const MAX_AGE: Duration = Duration::from_hours(2);
/// Bound on one `docker` command that is not given its own.
pub const TIMEOUT: Duration = Duration::from_mins(5);

const HINT: &str = "Docker is not running: run `.ci/run` or start dockerd; see TEST-HOSTS.md";

/// A Docker daemon that answered `docker info`. Obtain it with [`Docker::require`].
#[derive(Debug, Clone, Copy)]
pub struct Docker {
    _private: (),
}

impl Docker {
    /// The daemon, checked once per test process; panics with a hint when it does not
    /// answer (tests never skip). The first call also removes leftovers of earlier runs
    /// ([`Docker::remove_leftovers`]).
    #[must_use]
    pub fn require() -> Self {
        static READY: OnceLock<Result<(), String>> = OnceLock::new();
        let ready = READY.get_or_init(|| {
            let info = process::run(
                docker_command().args(["info", "--format", "{{.ServerVersion}}"]),
                None,
                Duration::from_secs(30),
            );
            if !info.success() {
                return Err(format!("{HINT}\n`docker info` said:\n{info}"));
            }
            let docker = Self { _private: () };
            docker.remove_leftovers();
            Ok(())
        });
        match ready {
            Ok(()) => Self { _private: () },
            Err(message) => panic!("{message}"),
        }
    }

    /// A `docker` command talking the daemon's API version.
    #[must_use]
    pub fn command(self) -> Command {
        docker_command()
    }

    /// Runs `docker ARGS` (bounded by [`TIMEOUT`]).
    #[must_use]
    pub fn run(self, args: &[&str]) -> Output {
        process::run(self.command().args(args), None, TIMEOUT)
    }

    /// Runs `docker ARGS`; panics unless it exits 0. Returns stdout.
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its check as often as for its output"
    )]
    #[track_caller]
    pub fn run_ok(self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "docker {}: {out}", args.join(" "));
        out.stdout
    }

    /// Whether the image `tag` exists locally.
    #[must_use]
    pub fn image_exists(self, tag: &str) -> bool {
        self.run(&["image", "inspect", "--format", "{{.Id}}", tag])
            .success()
    }

    /// The `--label` arguments every container and network of this process carries.
    #[must_use]
    pub fn labels(self) -> Vec<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        vec![
            "--label".to_owned(),
            format!("{OWNER_LABEL}={}", owner()),
            "--label".to_owned(),
            format!("{CREATED_LABEL}={now}"),
        ]
    }

    /// Removes containers and networks that test processes left behind: those whose
    /// owning process (the [`OWNER_LABEL`]) is no longer alive, and any older than
    /// [`MAX_AGE`]. Containers of live test processes — other test binaries or
    /// other `cargo test` runs on this machine — are left alone.
    pub fn remove_leftovers(self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stale = |owner_label: &str, created: &str| {
            let old = created
                .parse::<u64>()
                .is_ok_and(|t| now.saturating_sub(t) > MAX_AGE.as_secs());
            old || !owner_alive(owner_label)
        };
        let format = format!(
            "{{{{.Names}}}}\t{{{{.Label \"{OWNER_LABEL}\"}}}}\t{{{{.Label \"{CREATED_LABEL}\"}}}}"
        );
        let filter = format!("label={OWNER_LABEL}");
        let containers = self.run_ok(&["ps", "-a", "--filter", &filter, "--format", &format]);
        let dead: Vec<&str> = containers
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (name, owner, created) = (f.next()?, f.next()?, f.next().unwrap_or(""));
                (name.starts_with(NAME_PREFIX) && stale(owner, created)).then_some(name)
            })
            .collect();
        if !dead.is_empty() {
            eprintln!("removing leftover test containers: {}", dead.join(" "));
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(&dead);
            let _ = self.run(&args);
        }
        let format = format!(
            "{{{{.Name}}}}\t{{{{.Label \"{OWNER_LABEL}\"}}}}\t{{{{.Label \"{CREATED_LABEL}\"}}}}"
        );
        let networks = self.run_ok(&["network", "ls", "--filter", &filter, "--format", &format]);
        for line in networks.lines() {
            let mut f = line.split('\t');
            if let (Some(name), Some(owner), created) = (f.next(), f.next(), f.next())
                && name.starts_with(NAME_PREFIX)
                && stale(owner, created.unwrap_or(""))
            {
                let _ = self.run(&["network", "rm", name]);
            }
        }
    }
}

/// This process as an owner label value: `PID:STARTTIME:PIDNS`, the process id, its
/// start time (clock ticks after boot, so a reused pid is told apart) and its pid
/// namespace (liveness can only be judged within one).
#[must_use]
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "{pid}:{}:{}",
            start_time(pid).unwrap_or_default(),
            pid_namespace()
        )
    })
}

/// The per-process run id in container names: `hit-<run id>-<n>-<hostname>`.
#[must_use]
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "{pid:x}{:x}",
            start_time(pid).unwrap_or_default() % 0x1_0000
        )
    })
}

/// Whether the process named by an owner label value is alive. A process in another
/// pid namespace cannot be judged: it counts as alive (the age rule still applies).
fn owner_alive(label: &str) -> bool {
    let mut parts = label.splitn(3, ':');
    let (Some(pid), Some(start), Some(ns)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if ns != pid_namespace() {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).is_some_and(|t| t.to_string() == start)
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks after boot;
/// `None` when there is no such process or it is a zombie (it died; nobody reaped it).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The daemon's API version: `DOCKER_API_VERSION` when set, else what the daemon says,
/// else 1.41 (Debian 12's engine). The machine's client may be newer than the daemon.
#[must_use]
pub fn api_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        if let Some(v) = std::env::var("DOCKER_API_VERSION")
            .ok()
            .filter(|v| !v.is_empty())
        {
            return v;
        }
        let out = process::run(
            process::command("docker").args(["version", "--format", "{{.Server.APIVersion}}"]),
            None,
            Duration::from_secs(30),
        );
        let v = out.stdout.trim();
        if out.success() && !v.is_empty() {
            v.to_owned()
        } else {
            "1.41".to_owned()
        }
    })
}

/// `docker`, talking the daemon's API version.
fn docker_command() -> Command {
    let mut cmd = process::command("docker");
    cmd.env("DOCKER_API_VERSION", api_version());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        assert!(owner_alive(owner()));
        let ns = pid_namespace();
        // Above the kernel's largest pid (2^22).
        assert!(!owner_alive(&format!("4194305:1:{ns}")));
        // Our pid with another start time: a reused pid.
        assert!(!owner_alive(&format!("{}:1:{ns}", std::process::id())));
        assert!(owner_alive("1:1:pid:[another namespace]"));
        assert!(!owner_alive("garbage"));
    }
}
