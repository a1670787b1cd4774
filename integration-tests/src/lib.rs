//! Harness for tests that drive the workspace's real binaries, on this machine and in
//! real Debian containers.
//!
//! Tests here run `infra-agent`, `infra-bootstrap` and `infra-stage` as a user would:
//! [`binary`] builds them once per test process, with `infra-agent-fetch` beside them.
//!
//! # Debian containers
//!
//! [`TestHost`] is a Debian bookworm container booted with systemd as PID 1 and sshd
//! running, the recipe of `/work/shared/TEST-HOSTS.md`:
//!
//! ```no_run
//! use integration_tests::{TestHost, write_tree};
//!
//! let repo = tempfile::tempdir().unwrap();
//! write_tree(repo.path(), &[
//!     ("infra.toml", "format = 1\n"),
//!     ("inventory/production.toml", "[groups.all]\nroles = [\"motd\"]\n\n[groups.media]\nhosts = [\"media-01\"]\n"),
//!     ("roles/motd.toml", "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\nmode = \"0600\"\n"),
//! ]);
//! let host = TestHost::start("media-01"); // booted; infra-agent in /usr/local/bin
//! host.copy_dir_in(repo.path(), "/srv/state");
//! let run = host.agent(&["--once", "--repo", "/srv/state"]);
//! assert_eq!(run.code, 2, "{run}");
//! assert_eq!(host.exec_ok(&["stat", "-c", "%a", "/etc/motd"]), "600\n");
//! // dropping `host` removes the container
//! ```
//!
//! - [`Docker::require`] checks once per process that the daemon answers and panics
//!   with a hint when it does not: container tests never skip. Every `docker` command
//!   carries `DOCKER_API_VERSION` (the machine's client may be newer than Debian's
//!   daemon; see [`docker::api_version`]).
//! - [`base_image`] returns the tag of the base image,
//!   `home-infra-test/bookworm:<hash of integration-tests/images/bookworm.sh>`,
//!   building it with debootstrap from the machine's Debian mirror when the tag is
//!   missing (2 to 4 minutes, once per recipe). A file lock
//!   ([`image::LOCK_FILE`]) keeps concurrent test processes from building it twice.
//! - [`TestHost::start`] (or [`TestHost::options`] for another image, a [`Network`],
//!   or no agent) runs the container, copies the freshly built `infra-agent` and its
//!   fetch helper `infra-agent-fetch` into `/usr/local/bin`, and waits (bounded)
//!   until `systemctl is-system-running` says `running` or `degraded`. Then:
//!   [`TestHost::exec`], [`TestHost::exec_ok`], [`TestHost::sh`],
//!   [`TestHost::write_file`], [`TestHost::read_file`],
//!   [`TestHost::copy_dir_in`], [`TestHost::agent`], [`TestHost::snapshot`] (stat and
//!   sha256 of paths, to prove a run changed nothing), [`TestHost::ssh_port`] (sshd,
//!   published on 127.0.0.1), [`TestHost::commit`].
//! - Every process wait is bounded ([`process::run`]); so is the boot.
//! - [`stage_support`]: running the real `infra-stage` against the base image, its
//!   summary lines, and removing the staging containers of dead test runs.
//! - [`apt_repo::serve`] builds a signed apt repository with test packages
//!   ([`DebPackage`]) inside a host and serves it on 127.0.0.1.
//!
//! **Names and leftovers.** Containers are named `hit-<run id>-<n>-<hostname>`, the run
//! id being this test process's (pid and start time), and carry two labels: the owning
//! process (`pid:start time:pid namespace`) and the creation time. A killed test run
//! leaves its containers behind; the first [`Docker::require`] of every test process
//! removes `hit-*` containers and networks whose owning process is gone, and any older
//! than two hours. Containers of live processes are never touched, so test binaries
//! and `cargo test` runs may run side by side on one machine.
//!
//! **Network.** Containers reach only Debian's package mirror (the machine's own,
//! from `/etc/apt/sources.list.d/debian.sources`, which the image copies) and each
//! other; the harness pulls no images.

pub mod apt_repo;
pub mod docker;
pub mod git_server;
pub mod image;
pub mod process;
pub mod stage_support;
pub mod test_host;

pub use apt_repo::DebPackage;
pub use docker::Docker;
pub use image::base_image;
pub use process::Output;
pub use test_host::{HostOptions, Network, TestHost};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace's top directory.
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_owned()
}

/// Path of a workspace binary, built once per test process with the same profile.
///
/// Cargo builds only the test crate's own dependencies, not other packages' binaries,
/// so the harness builds them itself, as they ship: `infra-agent` and
/// `infra-bootstrap` in one cargo command, then `infra-agent-fetch` in a second one.
/// Built in the same command, cargo would give the agent the helper's git2 features,
/// and `infra-agent` would link OpenSSL, which the shipped agent does not.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let builds: [&[&str]; 2] = [
            &["-p", "infra-agent", "-p", "infra-bootstrap"],
            &["-p", "infra-agent-fetch"],
        ];
        for packages in builds {
            let status = process::command(&cargo)
                .args(["build", "--quiet", "--bins"])
                .args(packages)
                .current_dir(workspace_root())
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "building the workspace binaries failed: cargo build {}",
                packages.join(" ")
            );
        }
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("debug").join(name)
}

/// Writes `files` (path relative to `root`, text) under `root`, creating directories:
/// a state repository for a test, say.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let full = root.join(path);
        let dir = full.parent().expect("a file lives in a directory");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::write(&full, text).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }
}

/// A `first_boot`-like role for the bootstrap and staging tests: the admin user
/// (`data.admin.user`) with `keys_expr` as its authorized keys (a TOML value, e.g.
/// `{ data = "admin.keys" }`), sudo without a password, and the sshd lockdown drop-in
/// (validated, reloading ssh).
#[must_use]
pub fn first_boot_role(keys_expr: &str) -> String {
    format!(
        r#"
[[step]]
id = "admin-user"
type = "user"
name = "{{{{data.admin.user}}}}"
shell = "/bin/bash"
groups = ["sudo"]

[[step]]
id = "admin-keys"
type = "authorized_keys"
user = "{{{{data.admin.user}}}}"
keys = {keys_expr}
requires = ["admin-user"]

[[step]]
id = "sudoers"
type = "file"
path = "/etc/sudoers.d/90-infra-admin"
content = "{{{{data.admin.user}}}} ALL=(ALL:ALL) NOPASSWD: ALL\n"
mode = "0440"
validate = ["visudo", "-cf", "{{path}}"]
requires = ["admin-user"]

[[step]]
id = "sshd-dropin"
type = "file"
path = "/etc/ssh/sshd_config.d/00-infra.conf"
content = "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
mode = "0644"
validate = ["sshd", "-t", "-f", "{{path}}"]
requires = ["admin-keys", "sudoers"]
notify = ["sshd"]

[[step]]
id = "sshd"
type = "service"
name = "ssh"
state = "running"
on_notify = "reload"
"#
    )
}
