//! What the `infra-stage` tests share: a state repository directory whose name lets a
//! later run find the containers of a dead one, an admin key pair, running the real
//! `infra-stage` against the harness's base image, and reading its summary lines.
//!
//! The containers start from the harness's base image (`--image`), which the other
//! container tests share, rather than from infra-stage's own recipe
//! (packaging/stage/bookworm.sh), which would cost a second debootstrap in CI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{self, Output};
use crate::{Docker, base_image, binary, docker};

/// Bound on one `infra-stage` command (a first `up` installs packages).
pub const RUN_TIMEOUT: Duration = Duration::from_mins(15);
/// Prefix of the state repositories' temporary directories, followed by the owning
/// test process's id and `-` (the repository label of a container then names the
/// process, for [`remove_dead_runs`]).
pub const TEMP_PREFIX: &str = "home-infra-stage-";
/// The label infra-stage puts the staged repository's path in.
const REPO_LABEL: &str = "home-infra.stage.repo";

/// Removes the staging containers of the repository at `repo` when dropped, however
/// the test ends (found by infra-stage's repository label, so containers of another
/// live test are never touched).
#[derive(Debug)]
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = Docker::require();
        let path = std::fs::canonicalize(&self.0).unwrap_or_else(|_| self.0.clone());
        let filter = format!("label={REPO_LABEL}={}", path.display());
        let list = docker.run(&["ps", "-aq", "--filter", &filter]);
        for id in list.stdout.split_whitespace() {
            let _ = docker.run(&["rm", "-f", "-v", id]);
        }
    }
}

/// Removes the staging containers of earlier test runs whose process is gone.
pub fn remove_dead_runs(docker: Docker) {
    let format = "{{.Names}}\t{{.Label \"home-infra.stage.repo\"}}";
    let list = docker.run_ok(&[
        "ps",
        "-a",
        "--filter",
        "label=home-infra.stage.repo",
        "--format",
        format,
    ]);
    for line in list.lines() {
        let Some((name, repo)) = line.split_once('\t') else {
            continue;
        };
        let pid = repo
            .split('/')
            .find_map(|part| part.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("removing {name}, left by a dead test run");
            let _ = docker.run(&["rm", "-f", "-v", name]);
        }
    }
}

/// An unencrypted ed25519 key pair `dir/name` (commented `name`): the private key's
/// path and the public key's line.
#[must_use]
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = process::run(
        process::command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "ssh-keygen: {out}");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
    (key, public.trim().to_owned())
}

/// Runs `infra-stage ARGS -i KEY --image <base image>` in `repo`, printing its output
/// and how long it took.
#[must_use]
pub fn stage(repo: &Path, key: &Path, args: &[&str]) -> Output {
    let started = Instant::now();
    let mut cmd = process::command(binary("infra-stage"));
    cmd.current_dir(repo)
        .env("DOCKER_API_VERSION", docker::api_version())
        .env_remove("SSH_AUTH_SOCK")
        .args(args)
        .arg("-i")
        .arg(key)
        .args(["--image", &base_image()]);
    let out = process::run(&mut cmd, None, RUN_TIMEOUT);
    eprintln!(
        "--- infra-stage {args:?} ({:.1?})\n{out}",
        started.elapsed()
    );
    out
}

/// The summary line of `host` (the last line starting with a status and the host).
#[must_use]
pub fn summary_line<'a>(out: &'a Output, host: &str) -> &'a str {
    out.stdout
        .lines()
        .rev()
        .find(|l| {
            let mut words = l.split_whitespace();
            matches!(words.next(), Some("ok" | "FAILED")) && words.next() == Some(host)
        })
        .unwrap_or_else(|| panic!("no summary line for {host}:\n{out}"))
}

/// Copies the directory tree `from` to `to` (files and directories; `to` exists).
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}
