//! Facts: what the agent knows about the machine, available to templates as `facts.*`.
//!
//! Names here are a contract: later releases add facts but never rename these.

use std::collections::BTreeMap;

use serde::Serialize;

/// The file a package creates when it needs the machine rebooted (Debian's
/// `update-notifier-common` convention, also written by kernel and libc packages).
pub const REBOOT_REQUIRED: &str = "/run/reboot-required";

/// The facts of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// Short host name.
    pub hostname: String,
    pub os: OsFacts,
    /// Machine architecture as `uname -m` prints it, e.g. `x86_64`.
    pub arch: String,
    /// Whether systemd is PID 1.
    pub systemd: bool,
    /// Installed packages (dpkg state `installed`): name → version, as the run starts.
    /// An instance of a foreign architecture is keyed `name:arch` (`libc6:i386`).
    pub packages: BTreeMap<String, String>,
    /// Total memory in MiB (`MemTotal` of `/proc/meminfo`).
    pub memory_mb: u64,
    /// CPUs this agent may use (affinity and cgroup quota included).
    pub cpus: u64,
    /// Whether `/run/reboot-required` exists (a package asked for a reboot).
    pub reboot_required: bool,
}

/// From `/etc/os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsFacts {
    /// `ID`, e.g. `debian` or `ubuntu`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: String,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub codename: String,
}

impl Facts {
    /// The facts `check` renders with, since it runs offline on any machine: the host's
    /// own name and a Debian 12 `x86_64` systemd machine for the rest: 1 CPU, 1024 MiB,
    /// no packages, no reboot required.
    #[must_use]
    pub fn placeholder(hostname: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            os: OsFacts {
                id: "debian".to_owned(),
                version_id: "12".to_owned(),
                codename: "bookworm".to_owned(),
            },
            arch: "x86_64".to_owned(),
            systemd: true,
            packages: BTreeMap::new(),
            memory_mb: 1024,
            cpus: 1,
            reboot_required: false,
        }
    }
}
