//! Pulling the state repository from git: a bare mirror the agent owns, the remote's
//! tip asked cheaply, fetches, ancestry and signature checks, and commit trees read
//! through [`RepoSource`](crate::state_repo::RepoSource).
//!
//! Nothing here runs until the orchestrator calls it: libgit2 is first touched by
//! [`Mirror::open`], so a `--repo DIR` run never loads it. Network operations run on a
//! worker thread with a deadline (see `transport.rs`), because git2 offers its
//! timeouts only through `unsafe` functions, which this workspace forbids.

pub mod fetcher;
pub mod known_hosts;
mod sha1;
mod signature;
mod transport;
mod tree;
mod url;

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::AgentConfig;

pub use fetcher::Fetcher;
pub use tree::TreeSource;

/// Seconds a network operation may take before the server shows any sign of life.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Seconds a network operation may go without progress once the server answered.
pub const STALL_TIMEOUT: Duration = Duration::from_mins(1);

/// Where to pull from and with which credentials (agent.toml's settings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Remote {
    pub url: String,
    pub branch: String,
    /// The SSH private key offered to the git server.
    pub deploy_key: Option<PathBuf>,
    /// The pinned host keys of the git server.
    pub known_hosts: Option<PathBuf>,
    /// A file holding the token for an HTTPS remote.
    pub token_file: Option<PathBuf>,
}

impl Remote {
    /// The branch `branch` at `url`, with no credentials (a local or public remote).
    #[must_use]
    pub fn new(url: &str, branch: &str) -> Remote {
        Remote {
            url: url.to_owned(),
            branch: branch.to_owned(),
            deploy_key: None,
            known_hosts: None,
            token_file: None,
        }
    }

    /// The remote at `url`, with agent.toml's branch and credentials.
    #[must_use]
    pub fn from_config(url: &str, config: &AgentConfig) -> Remote {
        Remote {
            url: url.to_owned(),
            branch: config.branch.clone(),
            deploy_key: config.deploy_key.clone(),
            known_hosts: config.known_hosts.clone(),
            token_file: config.token_file.clone(),
        }
    }
}

/// Whether `s` names a git repository to read commit trees from: a URL (`ssh://`,
/// `https://`, `http://`, `git://`, `file://`), an scp-like `user@host:path`, or a
/// plain path to a bare repository. Any other directory — a checkout with its `.git`
/// included — is read as it is, uncommitted edits included (DESIGN.md: `--repo DIR`);
/// `file:///path/to/checkout` reads a checkout's commits instead. Looks at the file
/// system only; libgit2 is not touched.
#[must_use]
pub fn is_git_location(s: &str) -> bool {
    match url::Location::parse(s) {
        Ok(Some(_)) | Err(_) => true,
        Ok(None) => {
            let path = Path::new(s);
            !path.join(".git").exists() && url::is_repository_dir(path)
        }
    }
}

/// A commit, as status and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full id, in hex.
    pub id: String,
    /// The first 12 hex digits.
    pub short: String,
    /// The first line of the message.
    pub summary: String,
    pub author: String,
    /// The commit time, in seconds since the Unix epoch.
    pub time: i64,
}

/// A failure to pull, check or read the state repository, in words for the user. It
/// serializes so that the fetch helper's failures reach the agent whole (`fetcher.rs`).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error(
        "cannot open the local mirror {path}: {reason}\nhint: the agent keeps a bare git repository there; if it is damaged, remove it and the next run fetches it again"
    )]
    Mirror { path: PathBuf, reason: String },
    #[error(
        "cannot fetch through the agent's helper {helper}: {reason}\nhint: infra-agent fetches from a URL with infra-agent-fetch, installed beside it; reinstall the infra-agent package, which ships both, or put the helper (cargo build --release -p infra-agent-fetch) beside the agent"
    )]
    Helper { helper: PathBuf, reason: String },
    #[error(
        "the repository location {url} is not usable: {reason}\nhint: set repository in agent.toml to ssh://user@host/path, user@host:path, https://host/path, file:///path or a directory"
    )]
    BadUrl { url: String, reason: String },
    #[error(
        "there is no git repository at {path}\nhint: set repository in agent.toml to the path of a git repository (bare or not), or to a URL"
    )]
    NoRepository { path: String },
    #[error(
        "the branch name `{branch}` is not a valid git branch name\nhint: set branch in agent.toml to a branch of the repository (default: main)"
    )]
    BadBranch { branch: String },
    #[error(
        "cannot reach the git server for {url}: no answer within {seconds} s\nhint: check the network, DNS and firewall between this host and the server, and the repository URL in agent.toml"
    )]
    Unreachable { url: String, seconds: u64 },
    #[error(
        "the git server for {url} stopped answering for {seconds} s in the middle of the transfer\nhint: check the network and the server's load; the next run tries again"
    )]
    Stalled { url: String, seconds: u64 },
    #[error(
        "an earlier attempt to reach {url} is still hanging, so no new one is started\nhint: the earlier attempt ends when the operating system gives up on its connection; check the network to the git server"
    )]
    StillWaiting { url: String },
    #[error(
        "cannot reach the git server for {url}: {message}\nhint: check the network, DNS and the repository URL in agent.toml"
    )]
    Network { url: String, message: String },
    #[error(
        "the TLS certificate of the git server for {url} is not trusted: {message}\nhint: the agent checks certificates against this host's CA store; install the server's CA (update-ca-certificates) or fix the server's certificate"
    )]
    Tls { url: String, message: String },
    #[error(
        "git failed on {url}: {message}\nhint: check the repository URL and branch in agent.toml; if the repository belongs to another user, git refuses it unless it is listed in safe.directory"
    )]
    Transfer { url: String, message: String },
    #[error(
        "the branch `{branch}` does not exist in {url} (branches there: {available})\nhint: set branch in agent.toml to one of them, or push the branch"
    )]
    BranchMissing {
        url: String,
        branch: String,
        available: String,
    },
    #[error(
        "the git server refused the deploy key {key}\nhint: add the key's public half ({key}.pub) as a deploy key of the repository, with read access"
    )]
    KeyRefused { key: PathBuf },
    #[error(
        "cannot use the deploy key {key}: {reason}\nhint: the key must be an unencrypted OpenSSH private key readable by the agent (mode 0600)"
    )]
    DeployKey { key: PathBuf, reason: String },
    #[error(
        "the git server for {url} asks for an SSH key, but agent.toml sets no deploy_key\nhint: set deploy_key in agent.toml to the private key the server accepts"
    )]
    NoDeployKey { url: String },
    #[error(
        "the git server refused the token in {path}\nhint: check that the token is current and may read the repository"
    )]
    TokenRefused { path: PathBuf },
    #[error(
        "cannot read the token file {path}: {reason}\nhint: token_file in agent.toml must name a readable file holding the token"
    )]
    TokenFile { path: PathBuf, reason: String },
    #[error(
        "the git server for {url} asks for a login, but agent.toml sets no token_file\nhint: put an access token in a file (mode 0600) and set token_file in agent.toml"
    )]
    NoToken { url: String },
    #[error(
        "the git server for {url} asks for a login over plain http, and the agent never sends its token unencrypted\nhint: use an https:// URL"
    )]
    PlainHttpLogin { url: String },
    #[error(
        "the git server for {url} asks for a kind of login the agent does not offer\nhint: use an SSH deploy key (deploy_key) or an HTTPS token (token_file)"
    )]
    UnsupportedLogin { url: String },
    #[error(
        "the git server {host} cannot be verified: agent.toml sets no known_hosts, and an SSH server is only trusted by a pinned host key; it presented the {key}\nhint: confirm this fingerprint with the server's administrator (`ssh-keygen -lf` on the server's host key), then put this line in a file and set known_hosts in agent.toml to it: {line}"
    )]
    NoKnownHosts {
        host: String,
        /// The presented key's type and fingerprint: `ssh-ed25519 key SHA256:...`.
        key: String,
        line: String,
    },
    #[error(
        "cannot read the known_hosts file {path}: {reason}\nhint: known_hosts in agent.toml must name a readable file with the git server's host key"
    )]
    KnownHostsRead { path: PathBuf, reason: String },
    #[error(
        "{path}:{line}: {reason}\nhint: known_hosts lines read `host keytype base64key`, as ssh-keyscan prints them"
    )]
    KnownHostsSyntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "the git server {host} is not pinned in {path}: it presented the {key}\nhint: confirm this fingerprint with the server's administrator (`ssh-keygen -lf` on the server's host key), then add this line to {path}: {line}"
    )]
    UnknownHost {
        host: String,
        path: PathBuf,
        key: String,
        line: String,
    },
    #[error(
        "host key changed: the git server {host} presented the {key}, but {path} pins {pinned}\nhint: if the server was reinstalled or its keys rotated, confirm the new fingerprint with its administrator and replace the line in {path}; otherwise someone may be intercepting the connection"
    )]
    HostKeyChanged {
        host: String,
        path: PathBuf,
        key: String,
        /// The pinned fingerprints of the same key type, with their lines.
        pinned: String,
    },
    #[error(
        "the git server {host} presented the {key}, but {path} pins only {pinned_types} keys for it\nhint: confirm the fingerprint with the server's administrator, then add this line to {path}: {line}"
    )]
    HostKeyTypeNotPinned {
        host: String,
        path: PathBuf,
        key: String,
        pinned_types: String,
        line: String,
    },
    #[error(
        "the git server {host} presented the {key}, which {path} marks @revoked\nhint: the server must get a new host key; pin it in {path} once its administrator confirms it"
    )]
    HostKeyRevoked {
        host: String,
        path: PathBuf,
        key: String,
    },
    #[error(
        "the git server {host} presented a host key the agent cannot read\nhint: the server needs an ed25519, ecdsa or rsa host key"
    )]
    HostKeyUnreadable { host: String },
    #[error("`{id}` is not a full commit id\nhint: commit ids are 40 hexadecimal digits")]
    BadCommitId { id: String },
    #[error(
        "commit {id} is not in the local mirror {mirror}\nhint: it is fetched again on the next successful fetch of the branch that holds it"
    )]
    CommitMissing { id: String, mirror: PathBuf },
    #[error("{what} failed in the local mirror {mirror}: {message}")]
    Local {
        what: std::borrow::Cow<'static, str>,
        mirror: PathBuf,
        message: String,
    },
    #[error(
        "commit {short} is not signed\nhint: allowed_signers in agent.toml requires every applied commit to be signed: commit with `git -c gpg.format=ssh -c user.signingkey=KEY commit -S`"
    )]
    Unsigned { short: String },
    #[error(
        "commit {short} has a GPG signature, which the agent does not verify\nhint: sign with SSH instead: `git config gpg.format ssh` and `git config user.signingkey ~/.ssh/id_ed25519.pub`"
    )]
    GpgSignature { short: String },
    #[error(
        "commit {short} has a signature of a kind the agent does not verify (only SSH signatures are)\nhint: sign with SSH: `git config gpg.format ssh`"
    )]
    UnsupportedSignature { short: String },
    #[error(
        "commit {short} is signed by a key that {allowed_signers} does not list ({fingerprint})\nhint: add the signer's public key to {allowed_signers} if it may change this host"
    )]
    UnknownSigner {
        short: String,
        fingerprint: String,
        allowed_signers: PathBuf,
    },
    #[error(
        "the signature of commit {short} does not verify: {message}\nhint: the commit or its signature was altered after signing; do not apply it, and check who pushed it"
    )]
    BadSignature { short: String, message: String },
    #[error(
        "cannot read the allowed signers file {path}: {reason}\nhint: allowed_signers in agent.toml must name a readable file in ssh-keygen's allowed signers format"
    )]
    AllowedSigners { path: PathBuf, reason: String },
    #[error(
        "cannot check the signature of commit {short}: {message}\nhint: signatures are checked with ssh-keygen (package openssh-client)"
    )]
    SshKeygen { short: String, message: String },
}

/// A bare repository the agent owns, mirroring the branch it pulls.
pub struct Mirror {
    dir: PathBuf,
    repo: git2::Repository,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Opens the mirror at `dir`, creating it (mode 0700) when missing.
    pub fn open(dir: &Path) -> Result<Mirror, Error> {
        let fail = |reason: String| Error::Mirror {
            path: dir.to_owned(),
            reason,
        };
        let empty = fs_err::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
        let repo = if empty {
            // An empty directory (made ahead by an installer, say) becomes the mirror.
            git2::Repository::init_bare(dir).map_err(|e| fail(e.message().to_owned()))?
        } else if dir.exists() {
            git2::Repository::open_bare(dir).map_err(|e| fail(e.message().to_owned()))?
        } else {
            if let Some(parent) = dir.parent() {
                fs_err::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create the directory: {e}")))?;
            // The mode is set again in case the umask took bits away from DirBuilder's.
            fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| fail(e.to_string()))?;
            git2::Repository::init_bare(dir).map_err(|e| fail(e.message().to_owned()))?
        };
        Ok(Mirror {
            dir: dir.to_owned(),
            repo,
            connect_timeout: CONNECT_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
        })
    }

    /// The mirror's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the network deadlines: how long until the server first answers, and how
    /// long a transfer may go without progress (defaults [`CONNECT_TIMEOUT`] and
    /// [`STALL_TIMEOUT`]).
    pub fn set_timeouts(&mut self, connect: Duration, stall: Duration) {
        self.connect_timeout = connect;
        self.stall_timeout = stall;
    }

    /// The network deadlines: until the server first answers, and without progress.
    #[must_use]
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.stall_timeout)
    }

    /// Makes sure the mirror holds the tip of `remote.branch`, in this process, and
    /// returns the tip: asks the tip (a ref listing, cheap) and fetches only when the
    /// mirror lacks that commit. The agent does this through [`Fetcher`].
    pub fn update(&self, remote: &Remote) -> Result<String, Error> {
        let tip = self.remote_tip(remote)?;
        if self.has_commit(&tip) {
            Ok(tip)
        } else {
            self.fetch(remote)
        }
    }

    /// The commit id (hex) the remote's branch points at, without fetching objects
    /// (connect and list refs only). A missing branch is an error naming it.
    pub fn remote_tip(&self, remote: &Remote) -> Result<String, Error> {
        transport::remote_tip(remote, self.connect_timeout, self.stall_timeout)
    }

    /// Fetches the branch (its objects, and the local ref `refs/infra/<branch>`) and
    /// returns its tip. A force-pushed branch is fetched too: whether its tip may be
    /// applied is the ancestry check's decision.
    pub fn fetch(&self, remote: &Remote) -> Result<String, Error> {
        transport::fetch(&self.dir, remote, self.connect_timeout, self.stall_timeout)
    }

    /// Whether the mirror holds commit `id`.
    #[must_use]
    pub fn has_commit(&self, id: &str) -> bool {
        parse_id(id).is_ok_and(|oid| self.repo.find_commit(oid).is_ok())
    }

    /// Whether `new` equals `old` or descends from it.
    pub fn descends_from(&self, new: &str, old: &str) -> Result<bool, Error> {
        let new = self.commit(new)?.id();
        let old = self.commit(old)?.id();
        if new == old {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(new, old)
            .map_err(|e| self.local("checking the history", &e))
    }

    /// The commit's id, summary, author and time.
    pub fn commit_info(&self, id: &str) -> Result<CommitInfo, Error> {
        let commit = self.commit(id)?;
        let id = commit.id().to_string();
        Ok(CommitInfo {
            short: id[..12].to_owned(),
            id,
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                .into_owned(),
            author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
            time: commit.time().seconds(),
        })
    }

    /// The files of commit `id`, for the loader.
    pub fn tree_source(&self, id: &str) -> Result<TreeSource, Error> {
        let commit = self.commit(id)?;
        // The source owns its own handle, so it can move to another thread and outlive
        // this mirror.
        let repo = git2::Repository::open_bare(&self.dir)
            .map_err(|e| self.local("opening the repository", &e))?;
        Ok(TreeSource::new(repo, commit.tree_id(), &commit.id()))
    }

    /// Verifies the commit's SSH signature against an allowed signers file (ssh-keygen's
    /// format) and returns the signer's principal.
    pub fn verify_signature(&self, id: &str, allowed_signers: &Path) -> Result<String, Error> {
        let commit = self.commit(id)?;
        signature::verify(&self.repo, &self.dir, commit.id(), allowed_signers)
    }

    fn commit(&self, id: &str) -> Result<git2::Commit<'_>, Error> {
        let oid = parse_id(id)?;
        self.repo.find_commit(oid).map_err(|e| {
            if e.code() == git2::ErrorCode::NotFound {
                Error::CommitMissing {
                    id: id.to_owned(),
                    mirror: self.dir.clone(),
                }
            } else {
                self.local("reading a commit", &e)
            }
        })
    }

    fn local(&self, what: &'static str, e: &git2::Error) -> Error {
        Error::Local {
            what: what.into(),
            mirror: self.dir.clone(),
            message: e.message().to_owned(),
        }
    }
}

/// A full hex commit id. Abbreviations are refused: git2 would pad them with zeros.
fn parse_id(id: &str) -> Result<git2::Oid, Error> {
    let bad = || Error::BadCommitId { id: id.to_owned() };
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    git2::Oid::from_str(id).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_locations() {
        assert!(is_git_location("ssh://git@example.com/state.git"));
        assert!(is_git_location("git@example.com:state.git"));
        assert!(is_git_location("https://example.com/state.git"));
        assert!(is_git_location("http://example.com/state.git"));
        assert!(is_git_location("file:///srv/state.git"));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs_err::create_dir(&plain).unwrap();
        assert!(!is_git_location(plain.to_str().unwrap()));
        assert!(!is_git_location(
            dir.path().join("missing").to_str().unwrap()
        ));
        // A checkout is a directory like any other: read as it is, edits included.
        let work = dir.path().join("work");
        fs_err::create_dir_all(work.join(".git")).unwrap();
        assert!(!is_git_location(work.to_str().unwrap()));
        let file_url = format!("file://{}", work.display());
        assert!(is_git_location(&file_url));
        let bare = dir.path().join("bare.git");
        fs_err::create_dir_all(bare.join("objects")).unwrap();
        fs_err::create_dir_all(bare.join("refs")).unwrap();
        fs_err::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert!(is_git_location(bare.to_str().unwrap()));
    }

    #[test]
    fn from_config_copies_the_settings() {
        let config = AgentConfig {
            branch: "prod".to_owned(),
            deploy_key: Some(PathBuf::from("/etc/infra-agent/deploy_key")),
            known_hosts: Some(PathBuf::from("/etc/infra-agent/known_hosts")),
            ..AgentConfig::default()
        };
        let remote = Remote::from_config("git@h:x.git", &config);
        assert_eq!(remote.url, "git@h:x.git");
        assert_eq!(remote.branch, "prod");
        assert_eq!(remote.deploy_key, config.deploy_key);
        assert_eq!(remote.known_hosts, config.known_hosts);
        assert_eq!(remote.token_file, None);
    }

    #[test]
    fn commit_ids_must_be_full() {
        assert!(parse_id("abc123").is_err());
        assert!(parse_id(&"g".repeat(40)).is_err());
        assert!(parse_id(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn mirror_is_created_private_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/repo.git");
        let mirror = Mirror::open(&path).unwrap();
        assert!(mirror.repo.is_bare());
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        drop(mirror);
        Mirror::open(&path).unwrap();
        let empty = dir.path().join("empty");
        fs_err::create_dir(&empty).unwrap();
        assert!(Mirror::open(&empty).unwrap().repo.is_bare());
        let not_repo = dir.path().join("junk");
        fs_err::create_dir(&not_repo).unwrap();
        fs_err::write(not_repo.join("notes.txt"), "not git").unwrap();
        let err = Mirror::open(&not_repo).unwrap_err();
        assert!(matches!(err, Error::Mirror { .. }), "{err:?}");
        assert!(err.to_string().contains("hint:"), "{err}");
    }
}
