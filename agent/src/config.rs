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

/// The branch pulled when agent.toml does not name one.
pub const DEFAULT_BRANCH: &str = "main";
/// Seconds between two converges of the daemon, before splay.
pub const DEFAULT_INTERVAL: u64 = 900;
/// Up to this many seconds are added at random to every interval, so a fleet does not
/// poll the git server in step.
pub const DEFAULT_SPLAY: u64 = 60;
/// The textfile directory of `node_exporter` on Debian (package prometheus-node-exporter).
pub const DEFAULT_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
/// How many runs `status` keeps in its history.
pub const DEFAULT_HISTORY: usize = 20;
/// Seconds a run waits for another run's lock before it gives up (exit 1).
pub const DEFAULT_LOCK_TIMEOUT: u64 = 60;
/// The 1Password CLI the `op` secrets backend runs.
pub const DEFAULT_OP_PATH: &str = "op";
/// Where the `op` backend reads its service-account token.
pub const DEFAULT_OP_TOKEN_FILE: &str = "/etc/infra-agent/op-token";
/// The Connect server of the `connect` secrets backend (Connect's default port).
pub const DEFAULT_CONNECT_HOST: &str = "http://localhost:8080";
/// Where the `connect` backend reads its access token.
pub const DEFAULT_CONNECT_TOKEN_FILE: &str = "/etc/infra-agent/connect-token";

/// Every key agent.toml accepts (docs/agent-config.md documents each; a test checks).
pub const KEYS: &[&str] = &[
    "repository",
    "branch",
    "deploy_key",
    "known_hosts",
    "token_file",
    "allowed_signers",
    "hostname",
    "state_dir",
    "package_manager",
    "apt_lists_max_age",
    "apt_lock_timeout",
    "interval",
    "splay",
    "watch_drift",
    "textfile_dir",
    "history",
    "lock_timeout",
    "secrets_backend",
    "op_path",
    "op_token_file",
    "connect_host",
    "connect_token_file",
    "secrets_cache_ttl",
];

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

/// Where `op://` references are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretsBackend {
    /// None: a step that needs a secret fails and says which key to set.
    #[default]
    None,
    /// The 1Password CLI with a service-account token.
    Op,
    /// A 1Password Connect server.
    Connect,
}

/// Validated agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The state repository: a git URL (`ssh://`, `user@host:path`, `https://`,
    /// `file://`) or a plain path (a directory or a bare repository).
    pub repository: Option<String>,
    /// The branch pulled from a git repository.
    pub branch: String,
    /// The SSH private key the agent authenticates to the git server with.
    pub deploy_key: Option<PathBuf>,
    /// The pinned SSH host keys of the git server (`known_hosts` format).
    pub known_hosts: Option<PathBuf>,
    /// A file holding the token for an HTTPS remote.
    pub token_file: Option<PathBuf>,
    /// When set, only commits signed by a key in this file (ssh-keygen's allowed
    /// signers format) are applied.
    pub allowed_signers: Option<PathBuf>,
    /// The name to select in the inventory instead of the machine's hostname.
    pub hostname: Option<String>,
    pub state_dir: PathBuf,
    pub package_manager: PackageManager,
    pub apt_lists_max_age: u64,
    pub apt_lock_timeout: u64,
    /// Seconds between the daemon's converges (plus up to `splay`).
    pub interval: u64,
    pub splay: u64,
    /// Whether the daemon watches managed files and reverts hand edits soon after.
    pub watch_drift: bool,
    /// Where the Prometheus textfile `infra_agent.prom` is written; `None` turns it off.
    pub textfile_dir: Option<PathBuf>,
    /// How many runs the history keeps.
    pub history: usize,
    /// Seconds a run waits for another run's lock.
    pub lock_timeout: u64,
    /// Where `op://` references are resolved.
    pub secrets_backend: SecretsBackend,
    /// The 1Password CLI (`op` backend).
    pub op_path: String,
    /// The file holding the service-account token (`op` backend).
    pub op_token_file: PathBuf,
    /// The Connect server's URL (`connect` backend).
    pub connect_host: String,
    /// The file holding the Connect access token (`connect` backend).
    pub connect_token_file: PathBuf,
    /// Seconds the daemon keeps a resolved secret in memory; 0: every run reads it.
    pub secrets_cache_ttl: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            repository: None,
            branch: DEFAULT_BRANCH.to_owned(),
            deploy_key: None,
            known_hosts: None,
            token_file: None,
            allowed_signers: None,
            hostname: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            package_manager: PackageManager::default(),
            apt_lists_max_age: DEFAULT_APT_LISTS_MAX_AGE,
            apt_lock_timeout: DEFAULT_APT_LOCK_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            splay: DEFAULT_SPLAY,
            watch_drift: true,
            textfile_dir: Some(PathBuf::from(DEFAULT_TEXTFILE_DIR)),
            history: DEFAULT_HISTORY,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            secrets_backend: SecretsBackend::None,
            op_path: DEFAULT_OP_PATH.to_owned(),
            op_token_file: PathBuf::from(DEFAULT_OP_TOKEN_FILE),
            connect_host: DEFAULT_CONNECT_HOST.to_owned(),
            connect_token_file: PathBuf::from(DEFAULT_CONNECT_TOKEN_FILE),
            secrets_cache_ttl: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ConfigSpec {
    repository: Option<String>,
    branch: Option<String>,
    deploy_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    token_file: Option<PathBuf>,
    allowed_signers: Option<PathBuf>,
    interval: Option<u64>,
    splay: Option<u64>,
    watch_drift: Option<bool>,
    textfile_dir: Option<PathBuf>,
    history: Option<usize>,
    lock_timeout: Option<u64>,
    hostname: Option<String>,
    state_dir: Option<PathBuf>,
    package_manager: Option<PackageManager>,
    apt_lists_max_age: Option<u64>,
    apt_lock_timeout: Option<u64>,
    secrets_backend: Option<SecretsBackend>,
    op_path: Option<String>,
    op_token_file: Option<PathBuf>,
    connect_host: Option<String>,
    connect_token_file: Option<PathBuf>,
    secrets_cache_ttl: Option<u64>,
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
    let d = AgentConfig::default();
    if spec.interval == Some(0) {
        return Err("interval must be at least 1 second".to_owned());
    }
    if spec.history == Some(0) {
        return Err("history must keep at least 1 run".to_owned());
    }
    if let Some(host) = &spec.connect_host
        && !(host.starts_with("http://") || host.starts_with("https://"))
    {
        return Err(format!(
            "connect_host {host:?} must be an http:// or https:// URL, such as \"http://localhost:8080\""
        ));
    }
    Ok((
        AgentConfig {
            repository: spec.repository,
            branch: spec.branch.unwrap_or(d.branch),
            deploy_key: spec.deploy_key,
            known_hosts: spec.known_hosts,
            token_file: spec.token_file,
            allowed_signers: spec.allowed_signers,
            interval: spec.interval.unwrap_or(d.interval),
            splay: spec.splay.unwrap_or(d.splay),
            watch_drift: spec.watch_drift.unwrap_or(d.watch_drift),
            // `textfile_dir = ""` turns the textfile off.
            textfile_dir: match spec.textfile_dir {
                Some(p) if p.as_os_str().is_empty() => None,
                Some(p) => Some(p),
                None => d.textfile_dir,
            },
            history: spec.history.unwrap_or(d.history),
            lock_timeout: spec.lock_timeout.unwrap_or(d.lock_timeout),
            hostname: spec.hostname,
            state_dir: spec
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            package_manager: spec.package_manager.unwrap_or_default(),
            apt_lists_max_age: spec.apt_lists_max_age.unwrap_or(DEFAULT_APT_LISTS_MAX_AGE),
            apt_lock_timeout: spec.apt_lock_timeout.unwrap_or(DEFAULT_APT_LOCK_TIMEOUT),
            secrets_backend: spec.secrets_backend.unwrap_or_default(),
            op_path: spec.op_path.unwrap_or(d.op_path),
            op_token_file: spec.op_token_file.unwrap_or(d.op_token_file),
            connect_host: spec.connect_host.unwrap_or(d.connect_host),
            connect_token_file: spec.connect_token_file.unwrap_or(d.connect_token_file),
            secrets_cache_ttl: spec.secrets_cache_ttl.unwrap_or(d.secrets_cache_ttl),
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_warnings() {
        let (config, warnings) = parse("hostname = \"media-01\"\ncolour = 30\n").unwrap();
        assert_eq!(config.hostname.as_deref(), Some("media-01"));
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`colour`"));
    }

    #[test]
    fn every_listed_key_is_known() {
        for key in KEYS {
            let value = match *key {
                "watch_drift" => "true",
                "interval" | "splay" | "history" | "lock_timeout" | "apt_lists_max_age"
                | "apt_lock_timeout" | "secrets_cache_ttl" => "5",
                "package_manager" => "\"apt\"",
                "secrets_backend" => "\"op\"",
                "connect_host" => "\"http://x\"",
                _ => "\"x\"",
            };
            let (_, warnings) = parse(&format!("{key} = {value}\n")).unwrap();
            assert!(warnings.is_empty(), "{key}: {warnings:?}");
        }
        // And nothing else is: a key the struct reads but KEYS lacks would be undocumented.
        let spec_keys = include_str!("config.rs")
            .split("struct ConfigSpec {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().split_once(": Option<").map(|(k, _)| k.to_owned()))
            .collect::<Vec<_>>();
        let mut listed: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
        let mut read = spec_keys;
        listed.sort();
        read.sort();
        assert_eq!(listed, read);
    }

    #[test]
    fn type_errors_are_errors() {
        assert!(parse("hostname = 3\n").is_err());
    }

    #[test]
    fn secrets_settings() {
        let (config, _) = parse("secrets_backend = \"connect\"\nconnect_host = \"http://10.0.0.5:8080\"\nsecrets_cache_ttl = 600\n").unwrap();
        assert_eq!(config.secrets_backend, SecretsBackend::Connect);
        assert_eq!(config.connect_host, "http://10.0.0.5:8080");
        assert_eq!(config.secrets_cache_ttl, 600);
        assert_eq!(config.op_path, DEFAULT_OP_PATH);
        assert!(parse("secrets_backend = \"vault\"\n").is_err());
        let e = parse("connect_host = \"10.0.0.5:8080\"\n").unwrap_err();
        assert!(e.contains("http://"), "{e}");
        assert_eq!(AgentConfig::default().secrets_backend, SecretsBackend::None);
    }
}
