//! A git server container for the container tests: sshd, a `git` user whose shell is
//! `git-shell`, and one bare repository that agents on the same [`Network`] pull from
//! with a deploy key and a pinned host key.
//!
//! ```no_run
//! use integration_tests::{Network, TestHost, git_server::GitServer};
//!
//! let net = Network::create("pull");
//! let git = GitServer::start(&net);
//! let host = TestHost::options("media-01").network(&net).start();
//! git.write_client_files(&host, "/etc/infra-agent/deploy_key", "/etc/infra-agent/known_hosts");
//!
//! let work = git.work();
//! work.write("infra.toml", "format = 1\n");
//! let first = work.commit("first");
//! work.push();
//! assert_eq!(git.main_commit().as_deref(), Some(first.as_str()));
//! // the host pulls from git.url(), `ssh://git@git/srv/git/infra.git`
//! ```
//!
//! **Where things live.** The deploy key pair is made on this machine (`ssh-keygen` in
//! a temporary directory that is removed at once); its public half is the only line of
//! `/srv/git/.ssh/authorized_keys`, with `restrict`. The working clone the test edits
//! ([`Work`]) lives inside the git container at [`WORK_DIR`] and pushes to the bare
//! repository by path, as root, so pushing needs no ssh and works while sshd is
//! stopped. The commit signing keys are made inside the container too.
//!
//! **Host key.** The base image carries host keys made when it was built, shared by
//! every test container; the server replaces them at start with an ed25519 key of its
//! own and offers only that one (`HostKey` in `sshd_config.d`), so the line of
//! [`GitServer::known_hosts_line`] is the only key a client can be shown, whatever
//! host key algorithm its ssh library prefers.
//!
//! **Outages.** [`GitServer::stop`] stops sshd with `systemctl` (clients get
//! "connection refused" at once; the container, the repository and [`Work`] stay);
//! [`GitServer::pause`] freezes the whole container with `docker pause` (the kernel
//! still accepts the TCP connection, nobody answers: clients time out during the
//! banner exchange). Stopping the container instead would make the name `git` stop
//! resolving, which is a third failure, not one of these.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::docker::{self, Docker};
use crate::process::{self, Output};
use crate::{Network, TestHost};

/// The server's hostname on the network (a network alias): one git server per network.
pub const HOSTNAME: &str = "git";
/// The bare repository in the container.
pub const REPO_PATH: &str = "/srv/git/infra.git";
/// The non-bare working clone in the container that [`Work`] edits.
pub const WORK_DIR: &str = "/root/work";
/// Committer name and email of [`Work`]'s commits; the email is also the principal of
/// [`GitServer::allowed_signers_line`].
pub const COMMITTER: (&str, &str) = ("infra tests", "tests@git.infra-test.invalid");
/// The key [`Work::commit_signed`] signs with (in the container).
pub const SIGNING_KEY: &str = "/root/.ssh/signing_key";
/// A signing key no allowed signers line names (in the container).
pub const STRANGER_KEY: &str = "/root/.ssh/stranger_key";

/// Bound on waiting for sshd to listen after it was (re)started.
const SSHD_TIMEOUT: Duration = Duration::from_secs(20);

/// Numbers the temporary directories of deploy keys within this process.
static KEYS: AtomicUsize = AtomicUsize::new(0);

/// A running git server; dropping it removes its container (drop it before its
/// [`Network`]).
#[derive(Debug)]
pub struct GitServer {
    host: TestHost,
    container_id: String,
    deploy_private: String,
    deploy_public: String,
}

/// Sets the server up once systemd has booted (the paths are the constants above):
/// `$1` is the deploy key's public line, `$2` and `$3` the [`COMMITTER`].
const SETUP: &str = r#"set -eu
useradd --system --home-dir /srv/git --create-home --password '*' --shell /usr/bin/git-shell git
install -d -o git -g git -m 0700 /srv/git/.ssh
printf 'restrict %s\n' "$1" > /srv/git/.ssh/authorized_keys
chown git:git /srv/git/.ssh/authorized_keys
chmod 0600 /srv/git/.ssh/authorized_keys
runuser -u git -- git init -q --bare -b main /srv/git/infra.git
# Root pushes into the git user's repository from the working clone.
git config --system --add safe.directory /srv/git/infra.git
git config --global user.name "$2"
git config --global user.email "$3"
git init -q -b main /root/work
git -C /root/work remote add origin /srv/git/infra.git
install -d -m 0700 /root/.ssh
ssh-keygen -q -t ed25519 -N '' -C 'infra tests signing key' -f /root/.ssh/signing_key
ssh-keygen -q -t ed25519 -N '' -C 'a stranger' -f /root/.ssh/stranger_key
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\n' > /etc/ssh/sshd_config.d/git-server.conf
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C git -f /etc/ssh/ssh_host_ed25519_key
systemctl restart ssh.service
"#;

impl GitServer {
    /// Boots the server as host [`HOSTNAME`] on `network` (without the agent), with an
    /// empty bare repository whose default branch is `main` and a fresh deploy key.
    #[must_use]
    pub fn start(network: &Network) -> Self {
        let (deploy_private, deploy_public) = deploy_key_pair();
        let host = TestHost::options(HOSTNAME)
            .network(network)
            .without_agent()
            .start();
        host.exec_ok(&[
            "sh",
            "-c",
            SETUP,
            "setup",
            &deploy_public,
            COMMITTER.0,
            COMMITTER.1,
        ]);
        let container_id = Docker::require()
            .run_ok(&["inspect", "--format", "{{.Id}}", host.name()])
            .trim()
            .to_owned();
        let server = Self {
            host,
            container_id,
            deploy_private,
            deploy_public,
        };
        server.wait_for_sshd();
        server
    }

    /// The repository as other containers on the network reach it:
    /// `ssh://git@git/srv/git/infra.git`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("ssh://git@{HOSTNAME}{REPO_PATH}")
    }

    /// The deploy key's private half (OpenSSH format, no passphrase), to write into a
    /// host with mode 0600 (see [`GitServer::write_client_files`]).
    #[must_use]
    pub fn deploy_key_private(&self) -> String {
        self.deploy_private.clone()
    }

    /// The deploy key's public line (`ssh-ed25519 AAAA... comment`).
    #[must_use]
    pub fn deploy_key_public(&self) -> String {
        self.deploy_public.clone()
    }

    /// The `known_hosts` line pinning the server's current host key:
    /// `git ssh-ed25519 AAAA...`. Read from the container on every call, so it follows
    /// [`GitServer::regenerate_host_key`].
    #[must_use]
    pub fn known_hosts_line(&self) -> String {
        let public = self.host.read_file("/etc/ssh/ssh_host_ed25519_key.pub");
        let mut fields = public.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some(kind @ "ssh-ed25519"), Some(key)) => format!("{HOSTNAME} {kind} {key}"),
            _ => panic!("unexpected host key in {}: {public:?}", self.host.name()),
        }
    }

    /// The allowed signers line for the key of [`Work::commit_signed`]:
    /// `tests@git.infra-test.invalid namespaces="git" ssh-ed25519 AAAA...`.
    #[must_use]
    pub fn allowed_signers_line(&self) -> String {
        let public = self.host.read_file(&format!("{SIGNING_KEY}.pub"));
        let mut fields = public.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some(kind), Some(key)) => format!("{} namespaces=\"git\" {kind} {key}", COMMITTER.1),
            _ => panic!("unexpected signing key in {}: {public:?}", self.host.name()),
        }
    }

    /// Writes the deploy key (mode 0600) and a `known_hosts` file holding
    /// [`GitServer::known_hosts_line`] into `client`, creating parent directories.
    pub fn write_client_files(&self, client: &TestHost, key_path: &str, known_hosts_path: &str) {
        client.write_file(key_path, &self.deploy_private);
        client.exec_ok(&["chmod", "0600", key_path]);
        client.write_file(known_hosts_path, format!("{}\n", self.known_hosts_line()));
    }

    /// The container.
    #[must_use]
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// A handle on the working clone at [`WORK_DIR`] (there is one clone per server;
    /// every handle edits the same one).
    #[must_use]
    pub fn work(&self) -> Work<'_> {
        Work { server: self }
    }

    /// The commit `main` points to in the bare repository; `None` before the first push.
    #[must_use]
    pub fn main_commit(&self) -> Option<String> {
        let out = self.host.exec(&[
            "git",
            "-C",
            REPO_PATH,
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/heads/main^{commit}",
        ]);
        out.success().then(|| out.stdout.trim().to_owned())
    }

    /// Stops sshd (`systemctl stop ssh`): clients get "connection refused" at once. The
    /// container, the repository and [`Work`] stay usable; sessions already open stay
    /// open.
    pub fn stop(&self) {
        self.host.exec_ok(&["systemctl", "stop", "ssh.service"]);
    }

    /// Starts sshd again after [`GitServer::stop`] and waits until it listens.
    pub fn start_again(&self) {
        self.host.exec_ok(&["systemctl", "start", "ssh.service"]);
        self.wait_for_sshd();
    }

    /// Freezes the whole container (`docker pause`): connections to port 22 are
    /// accepted by the kernel and never answered, so clients time out. Nothing can be
    /// run in the container ([`Work`] included) until [`GitServer::unpause`].
    pub fn pause(&self) {
        Docker::require().run_ok(&["pause", self.host.name()]);
    }

    /// Thaws the container after [`GitServer::pause`].
    pub fn unpause(&self) {
        Docker::require().run_ok(&["unpause", self.host.name()]);
    }

    /// Replaces the server's host key with a new ed25519 key and restarts sshd (which
    /// leaves it running even if it was stopped): clients pinning the old
    /// [`GitServer::known_hosts_line`] now see "host key changed".
    pub fn regenerate_host_key(&self) {
        self.host.sh("set -e
            rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub
            ssh-keygen -q -t ed25519 -N '' -C git -f /etc/ssh/ssh_host_ed25519_key
            systemctl restart ssh.service");
        self.wait_for_sshd();
    }

    /// CPU time used so far by every process of the container (sshd, git-upload-pack,
    /// systemd, and whatever `docker exec` runs there, [`Work`] included), in
    /// microseconds, read from the machine's cgroup files. Take the difference around
    /// the polls to measure, with nothing else running in the container meanwhile.
    ///
    /// Reads cgroup v1 `cpuacct.usage` or cgroup v2 `cpu.stat` (`usage_usec`) of the
    /// container under `/sys/fs/cgroup`, for Docker's `cgroupfs` and `systemd` cgroup
    /// drivers; the test must run on the machine whose dockerd runs the container.
    #[must_use]
    pub fn cpu_usage_usec(&self) -> u64 {
        let candidates = cgroup_cpu_files(&self.container_id);
        for (path, format) in &candidates {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            return parse_cpu_usage(&text, *format)
                .unwrap_or_else(|| panic!("unexpected content of {}: {text:?}", path.display()));
        }
        let tried: Vec<String> = candidates
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        panic!(
            "no cgroup CPU accounting file for container {} (tried {})\nhint: run the tests on the machine whose dockerd runs the containers, with /sys/fs/cgroup mounted",
            self.host.name(),
            tried.join(", ")
        );
    }

    /// Polls (bounded) until sshd listens on port 22 in the container.
    fn wait_for_sshd(&self) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < SSHD_TIMEOUT {
            let out = self.host.exec(&["ss", "-Hltn", "sport = :22"]);
            if out.success() && !out.stdout.trim().is_empty() {
                return;
            }
            last = Some(out);
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.host.exec(&["systemctl", "status", "ssh.service"]);
        panic!(
            "sshd in {} does not listen on port 22 after {SSHD_TIMEOUT:?}; last `ss`: {}\n--- systemctl status ssh:\n{}",
            self.host.name(),
            last.map_or_else(|| "none".to_owned(), |o| o.to_string()),
            status.stdout
        );
    }
}

/// How a cgroup CPU accounting file counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuFormat {
    /// cgroup v1 `cpuacct.usage`: one number, nanoseconds.
    Nanoseconds,
    /// cgroup v2 `cpu.stat`: `usage_usec N` among other lines.
    CpuStat,
}

/// Where the container's CPU accounting may be, most likely first.
fn cgroup_cpu_files(id: &str) -> Vec<(PathBuf, CpuFormat)> {
    let root = Path::new("/sys/fs/cgroup");
    let mut files = Vec::new();
    for group in [
        format!("docker/{id}"),
        format!("system.slice/docker-{id}.scope"),
    ] {
        for controller in ["cpuacct", "cpu,cpuacct"] {
            files.push((
                root.join(controller).join(&group).join("cpuacct.usage"),
                CpuFormat::Nanoseconds,
            ));
        }
        files.push((root.join(&group).join("cpu.stat"), CpuFormat::CpuStat));
    }
    files
}

fn parse_cpu_usage(text: &str, format: CpuFormat) -> Option<u64> {
    match format {
        CpuFormat::Nanoseconds => text.trim().parse::<u64>().ok().map(|ns| ns / 1000),
        CpuFormat::CpuStat => text.lines().find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == "usage_usec").then(|| value.trim().parse().ok())?
        }),
    }
}

/// Makes an ed25519 key pair with `ssh-keygen` on this machine; returns (private,
/// public line).
fn deploy_key_pair() -> (String, String) {
    let dir = std::env::temp_dir().join(format!(
        "{}{}-deploy-key-{}",
        docker::NAME_PREFIX,
        docker::run_id(),
        KEYS.fetch_add(1, Ordering::Relaxed)
    ));
    // A directory left by a killed run with the same id would make ssh-keygen ask.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let key = dir.join("deploy_key");
    let out = process::run(
        process::command("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "infra tests deploy key",
                "-f",
            ])
            .arg(&key),
        None,
        Duration::from_secs(30),
    );
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let pair = out
        .success()
        .then(|| (read(&key), read(&key.with_extension("pub"))));
    let _ = std::fs::remove_dir_all(&dir);
    let Some((private, public)) = pair else {
        panic!(
            "ssh-keygen failed to make the deploy key in {}: {out}\nhint: install openssh-client on this machine",
            dir.display()
        );
    };
    (private, public.trim().to_owned())
}

/// The working clone inside the git container ([`WORK_DIR`]), pushing to the bare
/// repository by path. Commits are made by [`COMMITTER`]; nothing is pushed until
/// [`Work::push`] or [`Work::force_push`].
#[derive(Debug, Clone)]
pub struct Work<'a> {
    server: &'a GitServer,
}

impl Work<'_> {
    /// Writes `text` to `path` (relative to the working tree), creating directories.
    #[track_caller]
    pub fn write(&self, path: &str, text: &str) {
        self.server.host.write_file(&work_path(path), text);
    }

    /// Removes `path` (a file or a whole directory) from the working tree.
    #[track_caller]
    pub fn remove(&self, path: &str) {
        self.server.host.exec_ok(&["rm", "-rf", &work_path(path)]);
    }

    /// Replaces the whole working tree with the content of the local directory `local`
    /// (a state repository made with [`crate::write_tree`], say).
    #[track_caller]
    pub fn copy_tree_in(&self, local: &Path) {
        self.server.host.exec_ok(&[
            "find",
            WORK_DIR,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "!",
            "-name",
            ".git",
            "-exec",
            "rm",
            "-rf",
            "{}",
            "+",
        ]);
        self.server.host.copy_dir_in(local, WORK_DIR);
    }

    /// Commits everything in the working tree (additions, changes and removals; an
    /// empty commit when nothing changed) and returns the commit id.
    #[track_caller]
    #[allow(
        clippy::must_use_candidate,
        reason = "a test may commit without needing the id"
    )]
    pub fn commit(&self, message: &str) -> String {
        self.commit_with(None, message)
    }

    /// Like [`Work::commit`], signed with the key of
    /// [`GitServer::allowed_signers_line`] (`gpg.format=ssh`).
    #[track_caller]
    #[allow(
        clippy::must_use_candidate,
        reason = "a test may commit without needing the id"
    )]
    pub fn commit_signed(&self, message: &str) -> String {
        self.commit_with(Some(SIGNING_KEY), message)
    }

    /// Like [`Work::commit_signed`], but signed with a key no allowed signers line
    /// names: a signature that must not verify.
    #[track_caller]
    #[allow(
        clippy::must_use_candidate,
        reason = "a test may commit without needing the id"
    )]
    pub fn commit_signed_by_stranger(&self, message: &str) -> String {
        self.commit_with(Some(STRANGER_KEY), message)
    }

    #[track_caller]
    fn commit_with(&self, signing_key: Option<&str>, message: &str) -> String {
        let key_option = signing_key.map(|key| format!("user.signingkey={key}"));
        let mut args = Vec::new();
        if let Some(option) = &key_option {
            args.extend(["-c", "gpg.format=ssh", "-c", option]);
        }
        args.extend(["commit", "-q", "--allow-empty", "-m", message]);
        if key_option.is_some() {
            args.push("-S");
        }
        self.git_then_head(true, &args)
    }

    /// Pushes `HEAD` to `main` (a fast-forward; panics when the server refuses it).
    #[track_caller]
    pub fn push(&self) {
        let out = self.try_push();
        assert!(
            out.success(),
            "{}: pushing {WORK_DIR} to main failed: {out}",
            self.server.host.name()
        );
    }

    /// Pushes `HEAD` to `main` without force and returns what `git push` said: fails
    /// when `main` has commits `HEAD` does not descend from.
    #[must_use]
    pub fn try_push(&self) -> Output {
        self.server.host.exec(&[
            "git",
            "-C",
            WORK_DIR,
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/main",
        ])
    }

    /// Commits a revert of `HEAD` (not pushed) and returns its id.
    #[track_caller]
    #[allow(
        clippy::must_use_candidate,
        reason = "a test may commit without needing the id"
    )]
    pub fn revert_head(&self) -> String {
        self.git_then_head(false, &["revert", "--no-edit", "HEAD"])
    }

    /// Points the server's `main` at `commit` whatever it was (`+commit:main`): an older
    /// commit, or one of another history. The clone keeps its `HEAD`, so when `commit`
    /// is an ancestor of it, a later [`Work::push`] is a fast-forward again.
    #[track_caller]
    pub fn force_push(&self, commit: &str) {
        self.git(&[
            "push",
            "-q",
            "origin",
            &format!("+{commit}:refs/heads/main"),
        ]);
    }

    /// Moves the clone's `main` and working tree to `commit` (`git reset --hard`), to
    /// build a history that does not descend from what the server has.
    #[track_caller]
    pub fn reset_hard(&self, commit: &str) {
        self.git(&["reset", "-q", "--hard", commit]);
    }

    /// The clone's `HEAD` commit id.
    #[must_use]
    #[track_caller]
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// The allowed signers line of [`Work::commit_signed`]'s key (the same as
    /// [`GitServer::allowed_signers_line`]).
    #[must_use]
    pub fn allowed_signers_line(&self) -> String {
        self.server.allowed_signers_line()
    }

    /// Runs `git ARGS` in the clone (after `git add -A` when `add_all`) and returns the
    /// new `HEAD`, in one `docker exec`: these add up over a test.
    #[track_caller]
    fn git_then_head(&self, add_all: bool, args: &[&str]) -> String {
        let add = if add_all { "git add -A; " } else { "" };
        let script =
            format!("set -e; cd {WORK_DIR}; {add}git \"$@\" >/dev/null; git rev-parse HEAD");
        let mut command = vec!["sh", "-c", &script, "sh"];
        command.extend(args);
        self.server.host.exec_ok(&command).trim().to_owned()
    }

    #[track_caller]
    fn git(&self, args: &[&str]) -> String {
        let mut command = vec!["git", "-C", WORK_DIR];
        command.extend(args);
        self.server.host.exec_ok(&command)
    }
}

/// `path` inside the working clone; panics on paths that would leave it.
#[track_caller]
fn work_path(path: &str) -> String {
    assert!(
        !path.is_empty()
            && !path.starts_with('/')
            && !path.split('/').any(|c| c == ".." || c == ".git"),
        "{path:?} is not a path inside the working tree (relative, no `..`, not `.git`)"
    );
    format!("{WORK_DIR}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_is_read_in_microseconds_from_either_cgroup_version() {
        assert_eq!(
            parse_cpu_usage("1234567890\n", CpuFormat::Nanoseconds),
            Some(1_234_567)
        );
        let stat = "usage_usec 42\nuser_usec 40\nsystem_usec 2\n";
        assert_eq!(parse_cpu_usage(stat, CpuFormat::CpuStat), Some(42));
        assert_eq!(parse_cpu_usage("user_usec 40\n", CpuFormat::CpuStat), None);
        assert_eq!(parse_cpu_usage("", CpuFormat::Nanoseconds), None);
    }

    #[test]
    fn work_paths_stay_inside_the_clone() {
        assert_eq!(work_path("roles/base.toml"), "/root/work/roles/base.toml");
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".git/config"] {
            assert!(
                std::panic::catch_unwind(|| work_path(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn cgroup_candidates_name_the_container() {
        let files = cgroup_cpu_files("abc");
        assert!(
            files
                .iter()
                .all(|(p, _)| p.to_string_lossy().contains("abc"))
        );
        assert!(files.contains(&(
            PathBuf::from("/sys/fs/cgroup/cpuacct/docker/abc/cpuacct.usage"),
            CpuFormat::Nanoseconds
        )));
        assert!(files.contains(&(
            PathBuf::from("/sys/fs/cgroup/system.slice/docker-abc.scope/cpu.stat"),
            CpuFormat::CpuStat
        )));
    }
}
