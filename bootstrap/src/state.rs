//! What the bootstrap reads from the state repository it runs in: where hosts pull
//! from, and the admin user and keys the `first_boot` role will install.
//!
//! The repository is read with the agent's own loader ([`infra_agent::state_repo`]),
//! so the bootstrap sees exactly the inventory and data the agent will apply.

use std::fmt::Write as _;
use std::path::Path;

use infra_agent::state_repo::{self, DirSource, StateRepo, data, infra_toml};
use russh::keys::PublicKey;
use serde_json::Value;

use crate::failure::Failure;

/// Where the agent keeps its configuration on the host.
pub const AGENT_TOML: &str = "/etc/infra-agent/agent.toml";
/// The deploy key on the host.
pub const DEPLOY_KEY: &str = "/etc/infra-agent/deploy_key";
/// The git server's pinned host key on the host.
pub const GIT_KNOWN_HOSTS: &str = "/etc/infra-agent/known_hosts";

/// Everything the bootstrap needs to know about one host, from the repository and
/// the flags.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// The host's name in the inventory.
    pub hostname: String,
    /// The inventory file that lists it.
    pub inventory: String,
    /// `data.admin.user`.
    pub admin_user: String,
    /// `data.admin.keys`, parsed.
    pub admin_keys: Vec<PublicKey>,
    /// The URL the agent pulls from.
    pub repository: String,
    /// The branch the agent applies.
    pub branch: String,
}

/// Loads the state repository in `dir` with the agent's loader.
pub fn load(dir: &Path) -> Result<StateRepo, Failure> {
    if !dir.join(infra_toml::FILE).is_file() {
        return Err(Failure::new(format!(
            "{} has no infra.toml: it is not a state repository",
            dir.display()
        ))
        .hint("run infra-bootstrap from a checkout of your state repository, or pass --state-repo DIR"));
    }
    state_repo::load(&DirSource::new(dir), infra_toml::Version::agent()).map_err(|diags| {
        Failure::new(format!(
            "the state repository in {} does not load:\n{diags}",
            dir.display()
        ))
        .hint("fix it first: `infra-agent check --repo DIR` shows the same errors")
    })
}

/// What `hostname` gets from `repo`, with `--repo` and `--branch` overriding
/// infra.toml. Fails when the host is in no inventory, when no repository URL is
/// known, or when the merged data has no admin user or no admin key: a host
/// bootstrapped without them would lock its owner out.
pub fn plan(
    repo: &StateRepo,
    hostname: &str,
    repository: Option<&str>,
    branch: Option<&str>,
) -> Result<HostPlan, Failure> {
    let sel = repo.select(hostname).map_err(|d| {
        Failure::new(format!(
            "host `{hostname}` is not in the state repository: {}",
            d.message
        ))
        .hint(d.hint.clone().unwrap_or_else(|| {
            "add the host to an inventory, or pass its inventory name with --hostname".into()
        }))
    })?;
    let data = data::merge(repo.data_layers(&sel)).to_json();
    let (admin_user, admin_keys) = admin(&data, &sel.name)?;
    let repository = repository
        .map(str::to_owned)
        .or_else(|| repo.infra.bootstrap.repository.clone())
        .ok_or_else(|| {
            Failure::new("no repository URL for the agent to pull from")
                .hint("set `repository` under [bootstrap] in infra.toml, or pass --repo URL")
        })?;
    let branch = branch.map_or_else(|| repo.infra.bootstrap.branch.clone(), str::to_owned);
    let branch = if branch.is_empty() {
        "main".to_owned()
    } else {
        branch
    };
    Ok(HostPlan {
        hostname: sel.name,
        inventory: sel.inventory,
        admin_user,
        admin_keys,
        repository,
        branch,
    })
}

/// `data.admin.user` and `data.admin.keys` of a host's merged data.
fn admin(data: &Value, host: &str) -> Result<(String, Vec<PublicKey>), Failure> {
    let hint = "add the admin to the repository's data (group_data/all.toml):\n[admin]\nuser = \"alice\"\nkeys = [\"ssh-ed25519 AAAA... alice@laptop\"]";
    let user = data::lookup(data, "admin.user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Failure::new(format!(
                "no admin user for host `{host}`: data.admin.user is not set; refusing to bootstrap a host nobody could log in to"
            ))
            .hint(hint)
        })?;
    let texts: Vec<&str> = match data::lookup(data, "admin.keys") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    let mut keys = Vec::new();
    for text in texts {
        let key = PublicKey::from_openssh(text.trim()).map_err(|e| {
            Failure::new(format!(
                "data.admin.keys of host `{host}` holds a line that is not an SSH public key ({e}): {text}"
            ))
            .hint("each entry is one line of an authorized_keys file: `ssh-ed25519 AAAA... comment`")
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(Failure::new(format!(
            "no admin key for host `{host}`: data.admin.keys is empty or missing; refusing to bootstrap, since the first converge would lock sshd down with nobody able to log in"
        ))
        .hint(hint));
    }
    Ok((user.to_owned(), keys))
}

/// Whether `key` is one of `keys` (the key material; comments do not count).
#[must_use]
pub fn key_listed(keys: &[PublicKey], key: &PublicKey) -> bool {
    keys.iter().any(|k| k.key_data() == key.key_data())
}

/// Whether the agent reaches `url` over SSH (and so needs a deploy key and `known_hosts`).
#[must_use]
pub fn is_ssh_url(url: &str) -> bool {
    if url.starts_with("ssh://") || url.starts_with("git+ssh://") {
        return true;
    }
    if url.contains("://") || url.starts_with('/') {
        return false;
    }
    // scp-like `user@host:path` or `host:path`
    url.split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

/// The agent.toml the bootstrap writes: where to pull from, with what, and the
/// host's inventory name.
#[must_use]
pub fn agent_toml(plan: &HostPlan) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut out = String::from(
        "# Written by infra-bootstrap. The host's own settings: docs/agent-config.md.\n",
    );
    let _ = writeln!(out, "repository = {}", quote(&plan.repository));
    let _ = writeln!(out, "branch = {}", quote(&plan.branch));
    if is_ssh_url(&plan.repository) {
        let _ = writeln!(out, "deploy_key = {}", quote(DEPLOY_KEY));
        let _ = writeln!(out, "known_hosts = {}", quote(GIT_KNOWN_HOSTS));
    }
    let _ = writeln!(out, "hostname = {}", quote(&plan.hostname));
    out
}

/// The agent.toml keys the bootstrap writes itself ([`agent_toml`]). Every other key
/// of a host's agent.toml is the host's own and survives a bootstrap.
pub const OWNED_KEYS: [&str; 5] = [
    "repository",
    "branch",
    "deploy_key",
    "known_hosts",
    "hostname",
];

/// The agent.toml to write on a host whose file is `existing` (empty when there is
/// none): [`agent_toml`], then the host's settings the bootstrap does not own (a
/// secrets backend set up before the bootstrap, so that the first converge can read
/// secrets; an interval), in the file's own words. `Err` says why `existing` does not
/// read.
pub fn merged_agent_toml(plan: &HostPlan, existing: &str) -> Result<String, String> {
    let mut out = agent_toml(plan);
    let table: toml::Table = toml::from_str(existing).map_err(|e| e.message().to_owned())?;
    let kept: toml::Table = table
        .into_iter()
        .filter(|(key, _)| !OWNED_KEYS.contains(&key.as_str()))
        .collect();
    if !kept.is_empty() {
        let text = toml::to_string(&kept).map_err(|e| e.to_string())?;
        out.push_str(
            "\n# Kept from the host's agent.toml: settings infra-bootstrap does not write.\n",
        );
        out.push_str(&text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs alice@laptop";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFub3RoZXIgZmFrZSBrZXkgZm9yIHRoZSBleGFtcGxl alice@phone";

    fn repo(all: &str, infra: &str) -> (tempfile::TempDir, StateRepo) {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("infra.toml", format!("format = 1\n{infra}")),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = []\n\n[groups.lab]\nhosts = [\"media-01\"]\n".to_owned(),
            ),
            ("group_data/all.toml", all.to_owned()),
        ];
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let loaded = load(dir.path()).unwrap();
        (dir, loaded)
    }

    #[test]
    fn reads_admin_and_repository_with_flags_winning() {
        let (_dir, r) = repo(
            &format!("[admin]\nuser = \"alice\"\nkeys = [\"{KEY}\"]\n"),
            "[bootstrap]\nrepository = \"git@git.lan:infra.git\"\nbranch = \"prod\"\n",
        );
        let p = plan(&r, "media-01.lan", None, None).unwrap();
        assert_eq!(p.hostname, "media-01");
        assert_eq!(p.admin_user, "alice");
        assert_eq!(p.admin_keys.len(), 1);
        assert_eq!(p.repository, "git@git.lan:infra.git");
        assert_eq!(p.branch, "prod");
        let p = plan(&r, "media-01", Some("ssh://git@x/y.git"), Some("main")).unwrap();
        assert_eq!(
            (p.repository.as_str(), p.branch.as_str()),
            ("ssh://git@x/y.git", "main")
        );
        let toml = agent_toml(&p);
        assert!(
            toml.contains("repository = \"ssh://git@x/y.git\"\n"),
            "{toml}"
        );
        assert!(toml.contains("deploy_key = \"/etc/infra-agent/deploy_key\"\n"));
        assert!(toml.contains("hostname = \"media-01\"\n"));
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["branch"].as_str(), Some("main"));
    }

    #[test]
    fn refuses_a_host_without_admin_key_or_repository() {
        let (_dir, r) = repo("[admin]\nuser = \"alice\"\nkeys = []\n", "");
        let err = plan(&r, "media-01", Some("file:///srv/x"), None).unwrap_err();
        assert!(err.message.contains("no admin key"), "{err:?}");
        let (_dir, r) = repo("timezone = \"UTC\"\n", "");
        let err = plan(&r, "media-01", Some("file:///srv/x"), None).unwrap_err();
        assert!(err.message.contains("no admin user"), "{err:?}");
        let (_dir, r) = repo(
            &format!("[admin]\nuser = \"alice\"\nkeys = [\"{KEY}\"]\n"),
            "",
        );
        let err = plan(&r, "media-01", None, None).unwrap_err();
        assert!(err.message.contains("no repository URL"), "{err:?}");
        let err = plan(&r, "nas-07", Some("file:///srv/x"), None).unwrap_err();
        assert!(
            err.message.contains("not in the state repository"),
            "{err:?}"
        );
        let (_dir, r) = repo(
            "[admin]\nuser = \"alice\"\nkeys = [\"ssh-ed25519 nope\"]\n",
            "",
        );
        let err = plan(&r, "media-01", Some("file:///srv/x"), None).unwrap_err();
        assert!(err.message.contains("not an SSH public key"), "{err:?}");
    }

    #[test]
    fn key_listed_compares_key_material_only() {
        let keys = vec![PublicKey::from_openssh(KEY).unwrap()];
        let same = PublicKey::from_openssh(&KEY.replace("alice@laptop", "other comment")).unwrap();
        assert!(key_listed(&keys, &same));
        assert!(!key_listed(&keys, &PublicKey::from_openssh(OTHER).unwrap()));
    }

    #[test]
    fn tells_ssh_urls_apart() {
        for url in [
            "ssh://git@git/srv/x.git",
            "git@git.lan:infra/state.git",
            "git.lan:x",
        ] {
            assert!(is_ssh_url(url), "{url}");
        }
        for url in ["https://git.lan/x.git", "file:///srv/x", "/srv/git/x.git"] {
            assert!(!is_ssh_url(url), "{url}");
        }
    }

    #[test]
    fn a_bootstrap_keeps_the_settings_it_does_not_write() {
        let (_dir, r) = repo(
            &format!("[admin]\nuser = \"alice\"\nkeys = [\"{KEY}\"]\n"),
            "",
        );
        let p = plan(&r, "media-01", Some("/srv/state"), None).unwrap();
        assert_eq!(merged_agent_toml(&p, "").unwrap(), agent_toml(&p));
        let existing = "repository = \"/old\"\nhostname = \"old\"\nsecrets_backend = \"op\"\nop_path = \"/usr/local/lib/op\"\ninterval = 60\n";
        let merged = merged_agent_toml(&p, existing).unwrap();
        let table: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(table["repository"].as_str(), Some("/srv/state"));
        assert_eq!(table["hostname"].as_str(), Some("media-01"));
        assert_eq!(table["secrets_backend"].as_str(), Some("op"));
        assert_eq!(table["op_path"].as_str(), Some("/usr/local/lib/op"));
        assert_eq!(table["interval"].as_integer(), Some(60));
        assert_eq!(merged.matches("repository =").count(), 1, "{merged}");
        // A second bootstrap reads what the first wrote and writes the same again.
        assert_eq!(merged_agent_toml(&p, &merged).unwrap(), merged);
        assert!(merged_agent_toml(&p, "secrets_backend = ").is_err());
    }
}
