//! `agent.toml`: the host's own settings. Local to the host; the repository cannot
//! change them. Unknown keys are warnings, so an older agent still starts with a
//! newer file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default location.
pub const DEFAULT_PATH: &str = "/etc/infra-agent/agent.toml";
/// Where the agent keeps its records when agent.toml does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/infra-agent";

/// Package lists older than this many seconds are refreshed before installing.
pub const DEFAULT_APT_LISTS_MAX_AGE: u64 = 3600;

/// How many seconds a package transaction waits for a dpkg lock held by another process.
pub const DEFAULT_APT_LOCK_TIMEOUT: u64 = 120;

/// Which program installs packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageManager {
    /// nala where it is installed, apt-get elsewhere.
    #[default]
    Nala,
    /// apt-get even where nala is installed.
    Apt,
}

/// Validated agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The state repository: a directory (a git URL in the git release).
    pub repository: Option<String>,
    /// The name to select in the inventory instead of the machine's hostname.
    pub hostname: Option<String>,
    pub state_dir: PathBuf,
    pub package_manager: PackageManager,
    pub apt_lists_max_age: u64,
    pub apt_lock_timeout: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            repository: None,
            hostname: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            package_manager: PackageManager::default(),
            apt_lists_max_age: DEFAULT_APT_LISTS_MAX_AGE,
            apt_lock_timeout: DEFAULT_APT_LOCK_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ConfigSpec {
    repository: Option<String>,
    hostname: Option<String>,
    state_dir: Option<PathBuf>,
    package_manager: Option<PackageManager>,
    apt_lists_max_age: Option<u64>,
    apt_lock_timeout: Option<u64>,
    #[serde(flatten)]
    unknown: toml::Table,
}

/// Reads agent.toml. A missing file at the default path means defaults; a missing file
/// named explicitly is an error. Returns the configuration and warnings.
pub fn load(path: Option<&Path>) -> anyhow::Result<(AgentConfig, Vec<String>)> {
    let (path, explicit) = match path {
        Some(p) => (p.to_owned(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match fs_err::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok((AgentConfig::default(), Vec::new()));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read the agent configuration")),
    };
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses the text of agent.toml.
pub fn parse(text: &str) -> Result<(AgentConfig, Vec<String>), String> {
    let spec: ConfigSpec = toml::from_str(text).map_err(|e| e.to_string())?;
    let warnings = spec
        .unknown
        .keys()
        .map(|k| format!("agent.toml: unknown key `{k}` ignored (a newer agent may know it)"))
        .collect();
    Ok((
        AgentConfig {
            repository: spec.repository,
            hostname: spec.hostname,
            state_dir: spec
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            package_manager: spec.package_manager.unwrap_or_default(),
            apt_lists_max_age: spec.apt_lists_max_age.unwrap_or(DEFAULT_APT_LISTS_MAX_AGE),
            apt_lock_timeout: spec.apt_lock_timeout.unwrap_or(DEFAULT_APT_LOCK_TIMEOUT),
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_warnings() {
        let (config, warnings) = parse("hostname = \"media-01\"\nsplay = 30\n").unwrap();
        assert_eq!(config.hostname.as_deref(), Some("media-01"));
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`splay`"));
    }

    #[test]
    fn type_errors_are_errors() {
        assert!(parse("hostname = 3\n").is_err());
    }
}
