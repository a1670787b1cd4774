//! A Debian bookworm container with systemd as PID 1, sshd, and the freshly built
//! `infra-agent` in `/usr/local/bin`, with `infra-agent-fetch`, which it fetches
//! through, beside it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::docker::{self, Docker};
use crate::process::{self, Output};

/// Numbers container and network names, unique within the process.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Bound on waiting for systemd to finish booting.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one command run in a container.
pub const EXEC_TIMEOUT: Duration = Duration::from_mins(10);

/// How to start a [`TestHost`]; see [`TestHost::options`].
#[derive(Debug, Clone)]
pub struct HostOptions {
    hostname: String,
    image: Option<String>,
    network: Option<String>,
    agent: bool,
}

impl HostOptions {
    /// Boot this image instead of [`crate::base_image`] (a `docker commit` of a
    /// converged host, say).
    #[must_use]
    pub fn image(mut self, tag: &str) -> Self {
        self.image = Some(tag.to_owned());
        self
    }

    /// Attach the container to this network, where other containers reach it by its
    /// hostname (a network alias) or its container name.
    #[must_use]
    pub fn network(mut self, network: &Network) -> Self {
        self.network = Some(network.name.clone());
        self
    }

    /// Leave `infra-agent` and its fetch helper out (a host that has not been
    /// bootstrapped yet).
    #[must_use]
    pub fn without_agent(mut self) -> Self {
        self.agent = false;
        self
    }

    /// Starts the container and waits until systemd has booted.
    #[must_use]
    pub fn start(self) -> TestHost {
        TestHost::start_with(self)
    }
}

/// A running test container; dropping it removes the container.
#[derive(Debug)]
pub struct TestHost {
    docker: Docker,
    name: String,
    hostname: String,
    ssh_port: u16,
}

impl TestHost {
    /// A bookworm host named `hostname` with `infra-agent` installed, booted.
    #[must_use]
    pub fn start(hostname: &str) -> Self {
        Self::options(hostname).start()
    }

    /// Options for a host named `hostname`, to change before [`HostOptions::start`].
    #[must_use]
    pub fn options(hostname: &str) -> HostOptions {
        HostOptions {
            hostname: hostname.to_owned(),
            image: None,
            network: None,
            agent: true,
        }
    }

    fn start_with(options: HostOptions) -> Self {
        let docker = Docker::require();
        let image = options.image.clone().unwrap_or_else(crate::base_image);
        let agent = options.agent.then(|| crate::binary("infra-agent"));
        let name = format!(
            "{}{}-{}-{}",
            docker::NAME_PREFIX,
            docker::run_id(),
            COUNT.fetch_add(1, Ordering::Relaxed),
            options.hostname
        );
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            options.hostname.clone(),
        ];
        args.extend(docker.labels());
        args.extend(
            [
                "--cap-add",
                "SYS_ADMIN",
                "--cap-add",
                "NET_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--tmpfs",
                "/tmp",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "-p",
                "127.0.0.1:0:22",
            ]
            .map(String::from),
        );
        if let Some(network) = &options.network {
            args.extend([
                "--network".to_owned(),
                network.clone(),
                "--network-alias".to_owned(),
                options.hostname.clone(),
            ]);
        }
        args.extend([image, "/sbin/init".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = docker.run(&args);
        let mut host = Self {
            docker,
            name,
            hostname: options.hostname,
            ssh_port: 0,
        };
        // From here on, a panic drops `host`, which removes the container.
        assert!(run.success(), "docker run {}: {run}", host.name);
        if let Some(agent) = agent {
            // The agent runs its fetch helper from its own directory.
            let helper = agent.with_file_name("infra-agent-fetch");
            for (program, name) in [(&agent, "infra-agent"), (&helper, "infra-agent-fetch")] {
                let program = program.to_str().expect("the target directory is UTF-8");
                let dest = format!("{}:/usr/local/bin/{name}", host.name);
                docker.run_ok(&["cp", program, &dest]);
            }
        }
        host.wait_for_boot();
        let port = docker.run_ok(&["port", &host.name, "22/tcp"]);
        host.ssh_port = port
            .lines()
            .find_map(|l| l.strip_prefix("127.0.0.1:")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published ssh port for {}: {port:?}", host.name));
        host
    }

    /// Polls `systemctl is-system-running` until it says `running` or `degraded`.
    fn wait_for_boot(&self) {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..2000 {
            let out = self.exec(&["systemctl", "is-system-running"]);
            match out.stdout.trim() {
                "running" | "degraded" => return,
                _ if start.elapsed() > BOOT_TIMEOUT => break,
                _ => {}
            }
            if out.stderr.contains("is not running") {
                break;
            }
            last = Some(out);
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = self.docker.run(&["logs", "--tail", "40", &self.name]);
        panic!(
            "{} did not boot within {BOOT_TIMEOUT:?}; last `systemctl is-system-running`: {}\n--- docker logs (tail):\n{}{}",
            self.name,
            last.map_or_else(|| "none".to_owned(), |o| o.to_string()),
            logs.stdout,
            logs.stderr
        );
    }

    /// The container's name (`hit-<run id>-<n>-<hostname>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hostname the container has.
    #[must_use]
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The port on 127.0.0.1 where the container's sshd listens.
    #[must_use]
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// Runs `argv` in the container as root (bounded by [`EXEC_TIMEOUT`]).
    #[must_use]
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.exec_with(&[], argv, None)
    }

    /// Runs `argv` in the container; panics unless it exits 0. Returns stdout.
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its check as often as for its output"
    )]
    #[track_caller]
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.success(),
            "{}: `{}` failed: {out}",
            self.name,
            argv.join(" ")
        );
        out.stdout
    }

    /// Runs a shell script with `sh -c`; panics unless it exits 0. Returns stdout.
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its check as often as for its output"
    )]
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        self.exec_ok(&["sh", "-c", script])
    }

    /// Runs `argv` with environment `env` (`NAME=value`) and `stdin`.
    #[must_use]
    pub fn exec_with(&self, env: &[&str], argv: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.docker.command();
        cmd.arg("exec");
        if stdin.is_some() {
            cmd.arg("-i");
        }
        for var in env {
            cmd.args(["-e", var]);
        }
        cmd.arg(&self.name).args(argv);
        process::run(&mut cmd, stdin, EXEC_TIMEOUT)
    }

    /// Writes `content` to `path` in the container (parents created, mode by umask).
    #[track_caller]
    pub fn write_file(&self, path: &str, content: impl AsRef<[u8]>) {
        let out = self.exec_with(
            &[],
            &[
                "sh",
                "-c",
                "mkdir -p \"$(dirname \"$1\")\" && cat >\"$1\"",
                "sh",
                path,
            ],
            Some(content.as_ref()),
        );
        assert!(out.success(), "{}: writing {path}: {out}", self.name);
    }

    /// The content of `path` in the container.
    #[track_caller]
    #[must_use]
    pub fn read_file(&self, path: &str) -> String {
        self.exec_ok(&["cat", path])
    }

    /// Copies the contents of the local directory `local` into `remote` (created if
    /// missing), owned by root.
    #[track_caller]
    pub fn copy_dir_in(&self, local: &Path, remote: &str) {
        self.exec_ok(&["mkdir", "-p", remote]);
        let src = format!("{}/.", local.display());
        let dest = format!("{}:{remote}", self.name);
        self.docker.run_ok(&["cp", &src, &dest]);
        self.exec_ok(&["chown", "-R", "root:root", remote]);
    }

    /// Runs `infra-agent ARGS` in the container (with `NO_COLOR=1`).
    #[must_use]
    pub fn agent(&self, args: &[&str]) -> Output {
        let mut command = vec!["infra-agent"];
        command.extend(args);
        self.exec_with(&["NO_COLOR=1"], &command, None)
    }

    /// For each path: kind, mode, owner, size, mtime and ctime (nanoseconds), and the
    /// sha256 of a regular file or the target of a link; `absent` when it does not
    /// exist. Equal snapshots before and after a run mean the run touched none of them.
    #[must_use]
    pub fn snapshot(&self, paths: &[&str]) -> BTreeMap<String, String> {
        const SCRIPT: &str = r#"for p in "$@"; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    s=$(stat -c '%F %a %U:%G %s %.9Y %.9Z' "$p")
    if [ -L "$p" ]; then s="$s -> $(readlink "$p")"
    elif [ -f "$p" ]; then s="$s $(sha256sum <"$p" | cut -d' ' -f1)"; fi
  else s=absent; fi
  printf '%s\t%s\n' "$p" "$s"
done"#;
        let mut argv = vec!["sh", "-c", SCRIPT, "sh"];
        argv.extend(paths);
        self.exec_ok(&argv)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .collect()
    }

    /// `docker commit`s the container as `tag` (an image for [`HostOptions::image`]).
    pub fn commit(&self, tag: &str) {
        self.docker.run_ok(&["commit", &self.name, tag]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let out = self.docker.run(&["rm", "-f", "-v", &self.name]);
        if !out.success() {
            eprintln!("removing {}: {out}", self.name);
        }
    }
}

/// A user-defined Docker network (`hit-<run id>-<n>-<name>`); containers on it reach each
/// other by hostname. Dropping it removes the network (drop its hosts first).
#[derive(Debug)]
pub struct Network {
    docker: Docker,
    name: String,
}

impl Network {
    /// Creates the network.
    #[must_use]
    pub fn create(name: &str) -> Self {
        let docker = Docker::require();
        let name = format!(
            "{}{}-{}-{name}",
            docker::NAME_PREFIX,
            docker::run_id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut args = vec!["network".to_owned(), "create".to_owned()];
        args.extend(docker.labels());
        args.push(name.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker.run_ok(&args);
        Self { docker, name }
    }

    /// The network's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let out = self.docker.run(&["network", "rm", &self.name]);
        if !out.success() {
            eprintln!("removing network {}: {out}", self.name);
        }
    }
}
