//! Fetching in another process: the agent's executable links no OpenSSL.
//!
//! libgit2's `ssh://` transport (libssh2) and `https://` transport both link the
//! system's libssl and libcrypto, and loading those two libraries was a fifth of a
//! no-op run's time, in every run, fetching or not. So the agent is built with a
//! libgit2 that has neither transport, and `infra-agent-fetch`, installed beside it,
//! is built with both. To bring the mirror up to date the agent runs the helper,
//! writes one [`Request`] (JSON) to its standard input and reads one [`Answer`] (JSON)
//! from its standard output; the helper does what [`Mirror::update`] does in process,
//! with the same deadlines, and its errors come back as the same [`Error`] values.
//!
//! A helper that hangs past its deadlines dies with its process instead of staying
//! behind as a thread, so `StillWaiting` only ever happens in process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::url::Scheme;
use super::{Error, Mirror, Remote};
use crate::process::{self, Cmd};

/// The helper's file name; it lives in the directory of the agent's executable.
pub const HELPER: &str = "infra-agent-fetch";

/// The helper the agent brings its mirror up to date through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetcher {
    helper: PathBuf,
}

impl Fetcher {
    /// The helper at `helper`.
    #[must_use]
    pub fn at(helper: impl Into<PathBuf>) -> Fetcher {
        Fetcher {
            helper: helper.into(),
        }
    }

    /// The helper in the directory of this process's executable: how the agent
    /// fetches. `/usr/bin/infra-agent` runs `/usr/bin/infra-agent-fetch`.
    #[must_use]
    pub fn beside_agent() -> Fetcher {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .unwrap_or_default();
        Fetcher::at(dir.join(HELPER))
    }

    /// The helper's path.
    #[must_use]
    pub fn helper(&self) -> &Path {
        &self.helper
    }

    /// Has the helper make sure the mirror holds the tip of `remote.branch`, and
    /// returns the tip (what [`Mirror::update`] does in process).
    pub fn update(&self, mirror: &Mirror, remote: &Remote) -> Result<String, Error> {
        ask(&self.helper, mirror, remote)
    }
}

/// What the agent asks of the helper.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// The agent's version; the helper refuses a request from another version, as
    /// during a half-finished upgrade.
    version: String,
    mirror: PathBuf,
    remote: Remote,
    connect_ms: u64,
    stall_ms: u64,
}

/// The helper's one answer.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    /// The mirror holds the branch's tip, this commit.
    Tip(String),
    Failed(Error),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ask(helper: &Path, mirror: &Mirror, remote: &Remote) -> Result<String, Error> {
    let (connect, stall) = mirror.timeouts();
    let request = Request {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mirror: mirror.dir().to_owned(),
        remote: remote.clone(),
        connect_ms: millis(connect),
        stall_ms: millis(stall),
    };
    let fail = |reason: String| Error::Helper {
        helper: helper.to_owned(),
        reason,
    };
    if !helper.is_file() {
        return Err(fail("it is missing".to_owned()));
    }
    let mut cmd = Cmd::new(helper.display().to_string());
    if !speaks_http(&remote.url) {
        // libgit2 starts OpenSSL in every process, and OpenSSL then parses the whole
        // CA bundle (about 50 ms of CPU) whether or not a TLS connection follows. Over
        // SSH or from a local repository none does, so the helper gets no bundle.
        cmd = cmd.env("SSL_CERT_FILE", "/dev/null");
    }
    cmd.stdin = Some(serde_json::to_vec(&request).expect("a request always serializes"));
    let out = process::run(&cmd).map_err(|e| fail(format!("it cannot be started: {e}")))?;
    match serde_json::from_slice::<Answer>(&out.stdout) {
        Ok(Answer::Tip(tip)) => Ok(tip),
        Ok(Answer::Failed(e)) => Err(e),
        Err(_) => {
            let how = out
                .code
                .map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"));
            let said = out.message();
            Err(fail(if said.is_empty() {
                format!("it {how} without an answer")
            } else {
                format!("it {how} without an answer: {said}")
            }))
        }
    }
}

/// Whether reaching `url` may involve HTTP, and so TLS after a redirect; an unparsable
/// URL counts as one, so that it keeps the CA bundle.
fn speaks_http(url: &str) -> bool {
    super::url::Location::parse_any(url).map_or(true, |l| {
        matches!(
            l.scheme,
            Scheme::Https | Scheme::Http | Scheme::Unsupported(_)
        )
    })
}

/// The helper's `main`: one request from standard input, one answer to standard
/// output. Exits 0 when it answered (a failed fetch is an answer), 1 when it could not.
#[must_use]
pub fn serve() -> std::process::ExitCode {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match serve_io(stdin, stdout) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The agent quotes this line in its own message, which carries the hint.
            eprintln!("{HELPER}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve_io(mut input: impl Read, mut output: impl Write) -> Result<(), String> {
    let mut text = Vec::new();
    input
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let request: Request = serde_json::from_slice(&text)
        .map_err(|e| {
            format!(
                "the request on standard input is not one ({e}); infra-agent runs this program and writes the request itself"
            )
        })?;
    let mine = env!("CARGO_PKG_VERSION");
    if request.version != mine {
        return Err(format!(
            "infra-agent {} asked, but this helper is version {mine}",
            request.version
        ));
    }
    let answer = match Mirror::open(&request.mirror) {
        Ok(mut mirror) => {
            mirror.set_timeouts(
                Duration::from_millis(request.connect_ms),
                Duration::from_millis(request.stall_ms),
            );
            match mirror.update(&request.remote) {
                Ok(tip) => Answer::Tip(tip),
                Err(e) => Answer::Failed(e),
            }
        }
        Err(e) => Answer::Failed(e),
    };
    serde_json::to_writer(&mut output, &answer)
        .map_err(|e| format!("cannot write the answer: {e}"))?;
    output
        .flush()
        .map_err(|e| format!("cannot write the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = process::run(
            &Cmd::new("git")
                .args(["-C", &dir.display().to_string()])
                .args(args.iter().copied())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com"),
        )
        .unwrap();
        assert!(out.success(), "git {args:?}: {}", out.message());
    }

    fn origin(root: &Path) -> (PathBuf, String) {
        let dir = root.join("origin");
        fs_err::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        fs_err::write(dir.join("infra.toml"), "format = 1\n").unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-q", "-m", "first"]);
        let head = process::run(&Cmd::new("git").args([
            "-C",
            &dir.display().to_string(),
            "rev-parse",
            "HEAD",
        ]))
        .unwrap();
        (dir, String::from_utf8_lossy(&head.stdout).trim().to_owned())
    }

    fn request(mirror: &Path, url: &str, branch: &str) -> Vec<u8> {
        serde_json::to_vec(&Request {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mirror: mirror.to_owned(),
            remote: Remote {
                branch: branch.to_owned(),
                ..remote(url)
            },
            connect_ms: 5000,
            stall_ms: 5000,
        })
        .unwrap()
    }

    fn remote(url: &str) -> Remote {
        Remote::new(url, "main")
    }

    /// Writes an executable shell script standing in for the helper.
    fn write_script(path: &Path, text: &str) {
        fs_err::write(path, text).unwrap();
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn serve_bytes(input: &[u8]) -> Result<Answer, String> {
        let mut out = Vec::new();
        serve_io(input, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("the answer is JSON"))
    }

    #[test]
    fn the_helper_fetches_into_the_mirror_and_answers_the_tip() {
        let root = tempfile::tempdir().unwrap();
        let (origin, head) = origin(root.path());
        let mirror = root.path().join("state/repo.git");
        let url = format!("file://{}", origin.display());
        let answer = serve_bytes(&request(&mirror, &url, "main")).unwrap();
        let Answer::Tip(tip) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(tip, head);
        assert!(Mirror::open(&mirror).unwrap().has_commit(&head));
    }

    #[test]
    fn a_failure_comes_back_as_the_same_error() {
        let root = tempfile::tempdir().unwrap();
        let (origin, _) = origin(root.path());
        let mirror = root.path().join("repo.git");
        let url = format!("file://{}", origin.display());
        let answer = serve_bytes(&request(&mirror, &url, "prod")).unwrap();
        let Answer::Failed(e) = answer else {
            panic!("{answer:?}")
        };
        let in_process = Mirror::open(&mirror)
            .unwrap()
            .update(&Remote {
                branch: "prod".to_owned(),
                ..remote(&url)
            })
            .unwrap_err();
        assert!(matches!(e, Error::BranchMissing { .. }), "{e:?}");
        assert_eq!(e.to_string(), in_process.to_string());
    }

    #[test]
    fn every_error_survives_the_pipe() {
        let local = Error::Local {
            what: "fetching".into(),
            mirror: PathBuf::from("/var/lib/infra-agent/repo.git"),
            message: "disk full".to_owned(),
        };
        let text = serde_json::to_vec(&Answer::Failed(local)).unwrap();
        let Answer::Failed(back) = serde_json::from_slice(&text).unwrap() else {
            panic!("not a failure")
        };
        assert_eq!(
            back.to_string(),
            "fetching failed in the local mirror /var/lib/infra-agent/repo.git: disk full"
        );
    }

    #[test]
    fn a_request_from_another_version_or_not_json_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut text = request(&root.path().join("m"), "file:///x", "main");
        let old = String::from_utf8(text.clone())
            .unwrap()
            .replace(env!("CARGO_PKG_VERSION"), "0.0.0-old");
        let err = serve_bytes(old.as_bytes()).unwrap_err();
        assert!(err.contains("infra-agent 0.0.0-old asked"), "{err}");
        text.truncate(5);
        let err = serve_bytes(&text).unwrap_err();
        assert!(err.contains("not one"), "{err}");
        assert!(
            !root.path().join("m").exists(),
            "nothing is touched for a refused request"
        );
    }

    #[test]
    fn a_missing_helper_is_named_with_what_to_do() {
        let root = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(&root.path().join("repo.git")).unwrap();
        let helper = root.path().join(HELPER);
        let remote = remote("ssh://git@example.com/state.git");
        let err = Fetcher::at(helper.clone())
            .update(&mirror, &remote)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&helper.display().to_string()), "{text}");
        assert!(text.contains("missing"), "{text}");
        assert!(text.contains("hint:"), "{text}");
    }

    #[test]
    fn a_helper_that_dies_without_answering_is_reported_with_what_it_said() {
        let root = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(&root.path().join("repo.git")).unwrap();
        let helper = root.path().join(HELPER);
        write_script(&helper, "#!/bin/sh\necho 'segfault, say' >&2\nexit 139\n");
        let remote = remote("ssh://git@example.com/state.git");
        let err = Fetcher::at(helper)
            .update(&mirror, &remote)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited 139 without an answer"), "{err}");
        assert!(err.contains("segfault, say"), "{err}");
    }

    #[test]
    fn only_http_remotes_keep_the_ca_bundle() {
        let root = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(&root.path().join("repo.git")).unwrap();
        let helper = root.path().join(HELPER);
        write_script(
            &helper,
            "#!/bin/sh\necho \"bundle=${SSL_CERT_FILE-unset}\" >&2\nexit 3\n",
        );
        let said = |url: &str| {
            Fetcher::at(helper.clone())
                .update(&mirror, &remote(url))
                .unwrap_err()
                .to_string()
        };
        for url in [
            "ssh://git@git.lan/state.git",
            "git@git.lan:state.git",
            "file:///srv/git/state.git",
            "/srv/git/state.git",
        ] {
            assert!(
                said(url).contains("bundle=/dev/null"),
                "{url}: {}",
                said(url)
            );
        }
        for url in ["https://git.lan/state.git", "http://git.lan/state.git"] {
            assert!(
                !said(url).contains("bundle=/dev/null"),
                "{url}: {}",
                said(url)
            );
        }
    }

    #[test]
    fn the_helper_is_looked_for_beside_the_running_executable() {
        let fetcher = Fetcher::beside_agent();
        let path = fetcher.helper();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(path.parent(), exe.parent());
        assert_eq!(path.file_name().unwrap(), HELPER);
    }
}
