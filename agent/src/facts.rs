//! Facts: what the agent knows about the machine, available to templates as `facts.*`.
//!
//! Names here are a contract: later releases add facts but never rename these.

use serde::Serialize;

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
    /// own name and a Debian 12 `x86_64` systemd machine for the rest.
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
        }
    }
}
