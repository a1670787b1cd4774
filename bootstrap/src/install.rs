//! What the install phase puts on the host, and how that is chosen: the Debian
//! package `infra-agent` (packaging/build-deb.sh) when one is given or built, else
//! the bare binary and its fetch helper with the unit and install.sh.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use infra_agent::git::fetcher::HELPER;

use crate::failure::Failure;

/// The package's file name for this version: `infra-agent_<version>_amd64.deb`. The
/// workspace shares one version, so it is infra-bootstrap's own.
#[must_use]
pub fn deb_name() -> String {
    format!("infra-agent_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
}

/// How the agent gets onto the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `apt-get install` of this package file.
    Deb(PathBuf),
    /// install.sh with this binary, the fetch helper beside it ([`helper_beside`]),
    /// and the unit built into infra-bootstrap.
    Binary(PathBuf),
}

/// The fetch helper `infra-agent-fetch` beside the agent binary `binary`. The agent
/// runs it from its own directory to fetch its repository from a URL, so a bare
/// binary is installed with it.
pub fn helper_beside(binary: &Path) -> Result<PathBuf, Failure> {
    let helper = binary.with_file_name(HELPER);
    if helper.is_file() {
        return Ok(helper);
    }
    Err(Failure::new(format!(
        "no infra-agent-fetch beside the agent binary {}: the agent fetches its repository through it",
        binary.display()
    ))
    .hint("build it in a cargo command of its own, after the agent: cargo build --release -p infra-agent-fetch (it lands beside target/release/infra-agent)"))
}

/// A file found beside infra-bootstrap, with its modification time.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub modified: SystemTime,
}

impl Found {
    /// `path` when it is a file.
    #[must_use]
    pub fn at(path: PathBuf) -> Option<Self> {
        let meta = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)?;
        Some(Self {
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            path,
        })
    }
}

/// Decides between the package and the binary. A flag decides (clap lets only one
/// through); without one, the package beside infra-bootstrap wins, unless the binary
/// beside it is newer: then the package is stale (built before the last
/// `cargo build`), the binary is installed, and the returned note says so.
pub fn choose(
    deb_flag: Option<&Path>,
    binary_flag: Option<&Path>,
    deb_beside: Option<Found>,
    binary_beside: Option<Found>,
) -> Result<(Method, Option<String>), Failure> {
    if let Some(deb) = deb_flag {
        return Ok((Method::Deb(deb.to_owned()), None));
    }
    if let Some(binary) = binary_flag {
        return Ok((Method::Binary(binary.to_owned()), None));
    }
    match (deb_beside, binary_beside) {
        (Some(deb), Some(binary)) if binary.modified > deb.modified => Ok((
            Method::Binary(binary.path.clone()),
            Some(format!(
                "{} is older than {}, so the binary was installed; packaging/build-deb.sh rebuilds the package",
                deb.path.display(),
                binary.path.display()
            )),
        )),
        (Some(deb), _) => Ok((Method::Deb(deb.path), None)),
        (None, Some(binary)) => Ok((Method::Binary(binary.path), None)),
        (None, None) => Err(Failure::new(format!(
            "no {} and no infra-agent binary beside infra-bootstrap",
            deb_name()
        ))
        .hint("build them with three commands: cargo build --release -p infra-agent, cargo build --release -p infra-agent-fetch, packaging/build-deb.sh; or pass --agent-deb FILE or --agent-binary FILE")),
    }
}

/// [`choose`] with what lies beside the running infra-bootstrap.
pub fn choose_beside_exe(
    deb_flag: Option<&Path>,
    binary_flag: Option<&Path>,
) -> Result<(Method, Option<String>), Failure> {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned));
    let (deb, binary) = match &dir {
        Some(dir) if deb_flag.is_none() && binary_flag.is_none() => (
            Found::at(dir.join(deb_name())),
            Found::at(dir.join("infra-agent")),
        ),
        _ => (None, None),
    };
    choose(deb_flag, binary_flag, deb, binary)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A file at `path` last changed `secs` after the epoch.
    #[allow(clippy::unnecessary_wraps, reason = "what `choose` takes")]
    fn found(path: &str, secs: u64) -> Option<Found> {
        Some(Found {
            path: PathBuf::from(path),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        })
    }

    #[test]
    fn a_flag_decides() {
        let deb = Path::new("/x/agent.deb");
        let bin = Path::new("/x/infra-agent");
        let (method, note) = choose(Some(deb), None, None, found("/b/infra-agent", 9)).unwrap();
        assert_eq!(method, Method::Deb(deb.to_owned()));
        assert_eq!(note, None);
        let (method, _) = choose(None, Some(bin), found("/b/p.deb", 9), None).unwrap();
        assert_eq!(method, Method::Binary(bin.to_owned()));
    }

    #[test]
    fn the_package_beside_wins_unless_the_binary_is_newer() {
        let (method, note) = choose(
            None,
            None,
            found("/b/infra-agent_1_amd64.deb", 20),
            found("/b/infra-agent", 10),
        )
        .unwrap();
        assert_eq!(
            method,
            Method::Deb(PathBuf::from("/b/infra-agent_1_amd64.deb"))
        );
        assert_eq!(note, None);

        let (method, note) = choose(
            None,
            None,
            found("/b/infra-agent_1_amd64.deb", 10),
            found("/b/infra-agent", 20),
        )
        .unwrap();
        assert_eq!(method, Method::Binary(PathBuf::from("/b/infra-agent")));
        let note = note.expect("a stale package is mentioned");
        assert!(
            note.contains("/b/infra-agent_1_amd64.deb is older than /b/infra-agent"),
            "{note}"
        );
        assert!(note.contains("build-deb.sh"), "{note}");

        let (method, _) = choose(None, None, found("/b/p.deb", 1), None).unwrap();
        assert_eq!(method, Method::Deb(PathBuf::from("/b/p.deb")));
        let (method, _) = choose(None, None, None, found("/b/infra-agent", 1)).unwrap();
        assert_eq!(method, Method::Binary(PathBuf::from("/b/infra-agent")));
    }

    #[test]
    fn nothing_to_install_says_how_to_build_it() {
        let err = choose(None, None, None, None).unwrap_err();
        assert!(err.message.contains(&deb_name()), "{err:?}");
        let hint = err.hint.expect("a hint");
        assert!(hint.contains("build-deb.sh"), "{hint}");
        assert!(
            hint.contains(
                "cargo build --release -p infra-agent, cargo build --release -p infra-agent-fetch,"
            ),
            "the agent and its helper are built by separate commands: {hint}"
        );
        assert!(hint.contains("--agent-deb"), "{hint}");
    }

    #[test]
    fn the_fetch_helper_is_found_beside_the_binary_or_named_with_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("infra-agent");
        std::fs::write(&binary, "agent").unwrap();
        let err = helper_beside(&binary).unwrap_err();
        assert!(
            err.message.contains("no infra-agent-fetch beside"),
            "{err:?}"
        );
        assert!(err.message.contains(&*binary.to_string_lossy()), "{err:?}");
        let hint = err.hint.expect("a hint");
        assert!(
            hint.contains("cargo build --release -p infra-agent-fetch"),
            "{hint}"
        );

        std::fs::create_dir(dir.path().join("infra-agent-fetch")).unwrap();
        assert!(helper_beside(&binary).is_err(), "a directory is no helper");
        std::fs::remove_dir(dir.path().join("infra-agent-fetch")).unwrap();
        std::fs::write(dir.path().join("infra-agent-fetch"), "helper").unwrap();
        assert_eq!(
            helper_beside(&binary).unwrap(),
            dir.path().join("infra-agent-fetch")
        );
    }

    #[test]
    fn the_package_name_carries_this_version() {
        assert_eq!(
            deb_name(),
            format!("infra-agent_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn finds_what_lies_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Found::at(dir.path().join(deb_name())).is_none());
        std::fs::write(dir.path().join(deb_name()), "!<arch>\n").unwrap();
        let deb = Found::at(dir.path().join(deb_name())).expect("the file is found");
        assert_eq!(deb.path, dir.path().join(deb_name()));
        assert!(
            Found::at(dir.path().to_owned()).is_none(),
            "a directory is no package"
        );
    }
}
