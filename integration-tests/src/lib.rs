//! Harness for tests that drive the workspace's real binaries.
//!
//! Tests here run `infra-agent`, `infra-bootstrap` and `infra-stage` as a user would.
//! The Debian-container harness (systemd, sshd, a git server) joins this crate with
//! the Debian-hosts release.

use std::path::PathBuf;
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
/// so the harness builds them itself.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = process::command(&cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "infra-agent",
                "-p",
                "infra-bootstrap",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the workspace binaries failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("debug").join(name)
}

/// The one place this crate starts processes.
pub mod process {
    /// A command for `program`.
    #[must_use]
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        #[allow(
            clippy::disallowed_methods,
            reason = "this is the harness's process module"
        )]
        std::process::Command::new(program)
    }
}
