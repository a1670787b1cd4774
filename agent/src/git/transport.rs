//! Talking to the git server: credentials, host key pinning, and deadlines.
//!
//! libgit2 has no timeouts by default, and git2 sets them only through `unsafe`
//! functions, which this workspace forbids. So every network operation runs on a worker
//! thread while the caller waits with a deadline: the server must show a sign of life
//! (a host key or TLS certificate to check, a login request, progress) within the
//! connect timeout, and then keep making progress. A worker that misses its deadline
//! cannot be stopped; it is left to end when the operating system gives up on the
//! connection, and no second attempt at the same URL starts while it hangs, so a dead
//! server cannot pile up threads.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use git2::{CertificateCheckStatus, Cred, CredentialType};

use super::url::{Location, Scheme};
use super::{Error, Remote, known_hosts};

/// How many logins the server may refuse before the agent stops offering them. libgit2
/// asks again after every refusal; without a bound it would loop.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 3;

/// URLs whose abandoned worker is still blocked in the network.
static HANGING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// When the server last showed a sign of life, measured from the operation's start.
struct Life {
    start: Instant,
    /// Milliseconds since `start`; 0 while the server has not answered at all.
    last_ms: AtomicU64,
}

impl Life {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn last(&self) -> Option<Duration> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// What the waiter and the worker both know of the worker.
#[derive(Default)]
struct WorkerState {
    finished: bool,
    abandoned: bool,
}

/// Marks the worker finished when it ends, even by a panic, so an abandoned URL is
/// never left blocked for good.
struct Finished {
    state: Arc<Mutex<WorkerState>>,
    url: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.finished = true;
        if state.abandoned {
            hanging().retain(|u| *u != self.url);
        }
    }
}

/// The tip of `remote.branch`, from the remote's ref list; no objects are fetched.
pub(super) fn remote_tip(
    remote: &Remote,
    connect: Duration,
    stall: Duration,
) -> Result<String, Error> {
    let location = location(remote)?;
    let network = location.is_network();
    let url = remote.url.clone();
    let remote = remote.clone();
    run(&url, network, connect, stall, move |life| {
        let session = Session::new(&remote, &location, life);
        let mut git_remote =
            git2::Remote::create_detached(remote.url.as_str()).map_err(|e| session.error(&e))?;
        let heads = {
            let connection = git_remote
                .connect_auth(git2::Direction::Fetch, Some(session.callbacks()), None)
                .map_err(|e| session.error(&e))?;
            heads(connection.list().map_err(|e| session.error(&e))?)
        };
        tip_of(&heads, &remote).map(|oid| oid.to_string())
    })
}

/// Fetches `remote.branch` into the mirror at `dir` (`refs/infra/<branch>`) and returns
/// its tip.
pub(super) fn fetch(
    dir: &Path,
    remote: &Remote,
    connect: Duration,
    stall: Duration,
) -> Result<String, Error> {
    let location = location(remote)?;
    let network = location.is_network();
    let url = remote.url.clone();
    let remote = remote.clone();
    let dir = dir.to_owned();
    run(&url, network, connect, stall, move |life| {
        fetch_in(&dir, &remote, &location, life)
    })
}

fn fetch_in(
    dir: &Path,
    remote: &Remote,
    location: &Location,
    life: &Life,
) -> Result<String, Error> {
    let local = |what: &'static str, e: &git2::Error| Error::Local {
        what: what.into(),
        mirror: dir.to_owned(),
        message: e.message().to_owned(),
    };
    let repo = git2::Repository::open_bare(dir).map_err(|e| local("opening the repository", &e))?;
    let session = Session::new(remote, location, life);
    let mut git_remote = repo
        .remote_anonymous(&remote.url)
        .map_err(|e| session.error(&e))?;
    let local_ref = format!("refs/infra/{}", remote.branch);
    let refspec = format!("+refs/heads/{}:{local_ref}", remote.branch);
    let mut options = git2::FetchOptions::new();
    options
        .remote_callbacks(session.callbacks())
        .download_tags(git2::AutotagOption::None)
        .update_fetchhead(false);
    let fetched = git_remote.fetch(
        &[refspec.as_str()],
        Some(&mut options),
        Some("infra-agent: fetch"),
    );
    // The ref list stays readable after the fetch disconnected; it tells a missing
    // branch apart from other failures.
    let listed = git_remote.list().map(heads);
    if let Err(e) = fetched {
        if let Some(failure) = session.take_failure() {
            return Err(failure);
        }
        if let Ok(heads) = &listed {
            tip_of(heads, remote)?;
        }
        return Err(session.error(&e));
    }
    let heads = listed.map_err(|e| session.error(&e))?;
    let oid = tip_of(&heads, remote)?;
    repo.find_commit(oid).map_err(|e| Error::Transfer {
        url: remote.url.clone(),
        message: format!(
            "the fetch ended without commit {oid}, the tip of {}: {}",
            remote.branch,
            e.message()
        ),
    })?;
    repo.reference(&local_ref, oid, true, "infra-agent: fetch")
        .map_err(|e| local("updating the branch's ref", &e))?;
    Ok(oid.to_string())
}

fn location(remote: &Remote) -> Result<Location, Error> {
    let bad = |reason: String| Error::BadUrl {
        url: remote.url.clone(),
        reason,
    };
    let location = Location::parse_any(&remote.url).map_err(bad)?;
    if let Scheme::Unsupported(scheme) = &location.scheme {
        return Err(bad(format!("git does not speak `{scheme}://`")));
    }
    if location.scheme == Scheme::Local {
        let path = remote.url.strip_prefix("file://").unwrap_or(&remote.url);
        if !super::url::is_repository_dir(Path::new(path)) {
            return Err(Error::NoRepository {
                path: path.to_owned(),
            });
        }
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/{}", remote.branch)) {
        return Err(Error::BadBranch {
            branch: remote.branch.clone(),
        });
    }
    Ok(location)
}

fn heads(list: &[git2::RemoteHead<'_>]) -> Vec<(String, git2::Oid)> {
    list.iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect()
}

fn tip_of(heads: &[(String, git2::Oid)], remote: &Remote) -> Result<git2::Oid, Error> {
    let wanted = format!("refs/heads/{}", remote.branch);
    if let Some((_, oid)) = heads.iter().find(|(name, _)| *name == wanted) {
        return Ok(*oid);
    }
    let branches: Vec<&str> = heads
        .iter()
        .filter_map(|(name, _)| name.strip_prefix("refs/heads/"))
        .collect();
    Err(Error::BranchMissing {
        url: remote.url.clone(),
        branch: remote.branch.clone(),
        available: if branches.is_empty() {
            "none".to_owned()
        } else {
            branches.join(", ")
        },
    })
}

/// Runs `op` on a worker thread; for network locations, gives up when the server
/// does not answer within `connect` or stops making progress for `stall`.
fn run<T: Send + 'static>(
    url: &str,
    network: bool,
    connect: Duration,
    stall: Duration,
    op: impl FnOnce(&Life) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if network && hanging().iter().any(|u| u == url) {
        return Err(Error::StillWaiting {
            url: url.to_owned(),
        });
    }
    let life = Arc::new(Life::new());
    let state = Arc::new(Mutex::new(WorkerState::default()));
    let (tx, rx) = mpsc::channel();
    let worker_life = Arc::clone(&life);
    let finished = Finished {
        state: Arc::clone(&state),
        url: url.to_owned(),
    };
    std::thread::Builder::new()
        .name("infra-agent-git".to_owned())
        .spawn(move || {
            let result = op(&worker_life);
            drop(finished);
            // The waiter may have given up and gone; then nobody wants the answer.
            let _ = tx.send(result);
        })
        .map_err(|e| Error::Transfer {
            url: url.to_owned(),
            message: format!("cannot start a thread for git: {e}"),
        })?;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Transfer {
                    url: url.to_owned(),
                    message: "the git worker thread ended without an answer".to_owned(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !network {
            continue;
        }
        let elapsed = life.start.elapsed();
        let expired = match life.last() {
            None if elapsed >= connect => Some(Error::Unreachable {
                url: url.to_owned(),
                seconds: connect.as_secs(),
            }),
            Some(last) if elapsed.saturating_sub(last) >= stall => Some(Error::Stalled {
                url: url.to_owned(),
                seconds: stall.as_secs(),
            }),
            _ => None,
        };
        if let Some(error) = expired {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.finished {
                // The answer is already on its way.
                continue;
            }
            state.abandoned = true;
            hanging().push(url.to_owned());
            return Err(error);
        }
    }
}

fn hanging() -> std::sync::MutexGuard<'static, Vec<String>> {
    HANGING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection's callbacks and what they learned. A callback's own error is kept
/// here because libgit2 replaces the message of some (the host key check's) with its own.
struct Session<'a> {
    remote: &'a Remote,
    location: &'a Location,
    life: &'a Life,
    failure: RefCell<Option<Error>>,
    attempts: Cell<u32>,
    /// Whether the deploy key was handed to libssh2, which reads the file itself.
    offered_key: Cell<bool>,
}

impl<'a> Session<'a> {
    fn new(remote: &'a Remote, location: &'a Location, life: &'a Life) -> Self {
        Self {
            remote,
            location,
            life,
            failure: RefCell::new(None),
            attempts: Cell::new(0),
            offered_key: Cell::new(false),
        }
    }

    fn callbacks(&self) -> git2::RemoteCallbacks<'_> {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks
            .credentials(|_url, user, allowed| {
                self.life.touch();
                self.credentials(user, allowed)
            })
            .certificate_check(|cert, host| {
                self.life.touch();
                self.certificate(cert, host)
            })
            .transfer_progress(|_| {
                self.life.touch();
                true
            })
            .sideband_progress(|_| {
                self.life.touch();
                true
            })
            .update_tips(|_, _, _| {
                self.life.touch();
                true
            });
        callbacks
    }

    fn take_failure(&self) -> Option<Error> {
        self.failure.borrow_mut().take()
    }

    /// The error for a failed git2 call: what a callback refused, else git's own words.
    fn error(&self, e: &git2::Error) -> Error {
        if let Some(failure) = self.take_failure() {
            return failure;
        }
        let url = self.remote.url.clone();
        let message = e.message().to_owned();
        if e.code() == git2::ErrorCode::Certificate || e.class() == git2::ErrorClass::Ssl {
            return Error::Tls { url, message };
        }
        if !self.location.is_network() {
            return Error::Transfer { url, message };
        }
        // libssh2 could not use the key file (encrypted, or a format it cannot read):
        // libgit2 reports that as an SSH failure "to authenticate", not as a refusal.
        if let Some(key) = &self.remote.deploy_key
            && self.offered_key.get()
            && e.class() == git2::ErrorClass::Ssh
            && e.code() != git2::ErrorCode::Auth
            && message.contains("authenticate")
        {
            return Error::DeployKey {
                key: key.clone(),
                reason: message,
            };
        }
        match e.class() {
            git2::ErrorClass::Net
            | git2::ErrorClass::Ssh
            | git2::ErrorClass::Http
            | git2::ErrorClass::Os => Error::Network { url, message },
            _ => Error::Transfer { url, message },
        }
    }

    fn fail<T>(&self, error: Error) -> Result<T, git2::Error> {
        let message = error.to_string();
        *self.failure.borrow_mut() = Some(error);
        Err(git2::Error::from_str(&message))
    }

    fn credentials(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = user_from_url
            .map(str::to_owned)
            .or_else(|| self.location.user.clone());
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user.as_deref().unwrap_or("git"));
        }
        let attempt = self.attempts.get() + 1;
        self.attempts.set(attempt);
        let url = || self.remote.url.clone();
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = &self.remote.deploy_key else {
                return self.fail(Error::NoDeployKey { url: url() });
            };
            if attempt > MAX_CREDENTIAL_ATTEMPTS {
                return self.fail(Error::KeyRefused { key: key.clone() });
            }
            if let Err(e) = std::fs::File::open(key) {
                return self.fail(Error::DeployKey {
                    key: key.clone(),
                    reason: e.to_string(),
                });
            }
            self.offered_key.set(true);
            return Cred::ssh_key(user.as_deref().unwrap_or("git"), None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && matches!(self.location.scheme, Scheme::Https | Scheme::Http)
        {
            if self.location.scheme == Scheme::Http {
                return self.fail(Error::PlainHttpLogin { url: url() });
            }
            let Some(path) = &self.remote.token_file else {
                return self.fail(Error::NoToken { url: url() });
            };
            if attempt > MAX_CREDENTIAL_ATTEMPTS {
                return self.fail(Error::TokenRefused { path: path.clone() });
            }
            let token = match std::fs::read_to_string(path) {
                Ok(text) => text.trim().to_owned(),
                Err(e) => {
                    return self.fail(Error::TokenFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            if token.is_empty() {
                return self.fail(Error::TokenFile {
                    path: path.clone(),
                    reason: "the file is empty".to_owned(),
                });
            }
            return Cred::userpass_plaintext(user.as_deref().unwrap_or("x-access-token"), &token);
        }
        if self.location.scheme == Scheme::Ssh {
            // The server offers only passwords or keyboard-interactive logins.
            return self.fail(Error::NoDeployKey { url: url() });
        }
        self.fail(Error::UnsupportedLogin { url: url() })
    }

    fn certificate(
        &self,
        cert: &git2::cert::Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            // A TLS certificate: libgit2's own verification against the CA store decides.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let host = if host.is_empty() {
            self.location.host.as_str()
        } else {
            host
        };
        match self.host_key(host, hostkey.hostkey()) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => self.fail(e),
        }
    }

    /// Accepts the SSH server's raw host key only when `known_hosts` pins it.
    fn host_key(&self, host: &str, key: Option<&[u8]>) -> Result<(), Error> {
        let port = self.location.port_or_default();
        let name = known_hosts::lookup_name(host, port);
        let Some(key) = key else {
            return Err(Error::HostKeyUnreadable { host: name });
        };
        let Some(path) = &self.remote.known_hosts else {
            return Err(Error::NoKnownHosts {
                host: name,
                key: known_hosts::describe(key),
                line: known_hosts::line_for(host, port, key),
            });
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::KnownHostsRead {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        known_hosts::check_host_key(&text, path, host, port, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIErr2UwRbPQMmFRY8Xrauh0PgwduK0MPncBfJyHeNWLQ";

    fn remote(url: &str) -> Remote {
        Remote::new(url, "main")
    }

    fn with_session<R>(remote: &Remote, f: impl FnOnce(&Session<'_>) -> R) -> R {
        let location = Location::parse_any(&remote.url).unwrap();
        let life = Life::new();
        let session = Session::new(remote, &location, &life);
        f(&session)
    }

    #[test]
    fn the_deploy_key_is_offered_three_times_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("deploy_key");
        fs_err::write(&key, "not parsed here").unwrap();
        let mut remote = remote("ssh://deploy@git.example.com/state.git");
        remote.deploy_key = Some(key.clone());
        with_session(&remote, |session| {
            let user = session.credentials(None, CredentialType::USERNAME).unwrap();
            assert!(user.has_username());
            for _ in 0..MAX_CREDENTIAL_ATTEMPTS {
                let cred = session
                    .credentials(Some("deploy"), CredentialType::SSH_KEY)
                    .unwrap();
                assert!(cred.has_username());
            }
            assert!(
                session
                    .credentials(Some("deploy"), CredentialType::SSH_KEY)
                    .is_err()
            );
            let failure = session.take_failure().unwrap();
            assert!(
                matches!(&failure, Error::KeyRefused { key: k } if *k == key),
                "{failure:?}"
            );
            assert!(
                failure
                    .to_string()
                    .contains("the git server refused the deploy key"),
                "{failure}"
            );
        });
    }

    #[test]
    fn ssh_logins_without_a_usable_key_are_refused_at_once() {
        let remote_without_key = remote("git@git.example.com:state.git");
        with_session(&remote_without_key, |session| {
            assert!(
                session
                    .credentials(Some("git"), CredentialType::SSH_KEY)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::NoDeployKey { .. })
            ));
            // A server offering only passwords gets no password.
            assert!(
                session
                    .credentials(Some("git"), CredentialType::USER_PASS_PLAINTEXT)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::NoDeployKey { .. })
            ));
        });
        let mut missing = remote("git@git.example.com:state.git");
        missing.deploy_key = Some("/nonexistent/deploy_key".into());
        with_session(&missing, |session| {
            assert!(
                session
                    .credentials(Some("git"), CredentialType::SSH_KEY)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::DeployKey { .. })
            ));
        });
    }

    #[test]
    fn https_tokens_are_read_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        fs_err::write(&token, "  s3cret\n").unwrap();
        let mut https = remote("https://git.example.com/state.git");
        with_session(&https, |session| {
            assert!(
                session
                    .credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::NoToken { .. })
            ));
        });
        https.token_file = Some(token.clone());
        with_session(&https, |session| {
            for _ in 0..MAX_CREDENTIAL_ATTEMPTS {
                session
                    .credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                    .unwrap();
            }
            assert!(
                session
                    .credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::TokenRefused { .. })
            ));
        });
        fs_err::write(&token, "\n").unwrap();
        with_session(&https, |session| {
            assert!(
                session
                    .credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                    .is_err()
            );
            let failure = session.take_failure().unwrap();
            assert!(failure.to_string().contains("empty"), "{failure}");
        });
        let mut http = remote("http://git.example.com/state.git");
        http.token_file = Some(token);
        with_session(&http, |session| {
            assert!(
                session
                    .credentials(None, CredentialType::USER_PASS_PLAINTEXT)
                    .is_err()
            );
            assert!(matches!(
                session.take_failure(),
                Some(Error::PlainHttpLogin { .. })
            ));
        });
    }

    #[test]
    fn host_keys_need_a_known_hosts_file_that_pins_them() {
        let key = known_hosts::base64_decode(KEY).unwrap();
        let fingerprint = known_hosts::fingerprint(&key);
        let mut remote = remote("ssh://git@git.example.com:2222/state.git");
        with_session(&remote, |session| {
            let err = session.host_key("git.example.com", Some(&key)).unwrap_err();
            assert!(matches!(err, Error::NoKnownHosts { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&fingerprint), "{message}");
            assert!(message.contains("known_hosts in agent.toml"), "{message}");
            assert!(
                message.contains(&format!("[git.example.com]:2222 ssh-ed25519 {KEY}")),
                "{message}"
            );
            assert!(matches!(
                session.host_key("git.example.com", None),
                Err(Error::HostKeyUnreadable { .. })
            ));
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        remote.known_hosts = Some(file.clone());
        with_session(&remote, |session| {
            assert!(matches!(
                session.host_key("git.example.com", Some(&key)),
                Err(Error::KnownHostsRead { .. })
            ));
            fs_err::write(&file, format!("[git.example.com]:2222 ssh-ed25519 {KEY}\n")).unwrap();
            session.host_key("git.example.com", Some(&key)).unwrap();
            assert!(matches!(
                session.host_key("other.example.com", Some(&key)),
                Err(Error::UnknownHost { .. })
            ));
        });
    }
}
