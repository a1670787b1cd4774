//! `infra-stage up|apply|down [HOST...]`: the hosts of `inventory/staging.toml` as
//! Docker containers that converge the working tree of the state repository,
//! uncommitted edits included (docs/staging.md).
//!
//! `up` starts one container per host (systemd and sshd, from a base image built
//! locally by `packaging/stage/bookworm.sh`), copies the working tree to
//! `/srv/state`, gives the container the stand-ins of the repository's `staging/`
//! directory ([`crate::stage_standins`]: a stand-in `op`, a local apt repository) and
//! bootstraps the host by running `infra-bootstrap` over SSH on the container's
//! published port, with `--repo /srv/state`: the agent reads that directory as it is.
//! `apply` copies the tree and the stand-ins in again and runs `infra-agent --once`.
//! `down` removes the containers. Containers start one after another; bootstraps
//! and converges run four at a time. Each host ends with one summary line.
//!
//! Docker, tar, git and infra-bootstrap run through [`infra_agent::process`], the one
//! place processes are started.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use infra_agent::process::{self, Cmd, CmdOutput};
use infra_agent::state_repo::StateRepo;
use infra_agent::status::{RunRecord, Trigger};

use crate::bootstrap::Usage;
use crate::failure::Failure;
use crate::{stage_standins, state};

/// The image recipe, built into infra-stage; its text decides the image's tag.
pub const RECIPE: &str = include_str!("../../packaging/stage/bookworm.sh");
/// The user-defined network every staging container joins (they reach each other by
/// host name).
pub const NETWORK: &str = "infra-stage";
/// Label naming the state repository (its absolute path) a container stages.
pub const REPO_LABEL: &str = "home-infra.stage.repo";
/// Label naming the inventory host a container plays.
pub const HOST_LABEL: &str = "home-infra.stage.host";
/// Where the working tree is copied in each container; agent.toml's `repository`.
pub const REMOTE_TREE: &str = "/srv/state";
/// The directory under the state repository where infra-stage keeps its files
/// (`known_hosts`, the containers' root password); git-ignored by its own `.gitignore`.
pub const LOCAL_DIR: &str = ".infra-stage";
/// The inventory environment staged.
pub const ENV: &str = "staging";

/// How many hosts are bootstrapped or converged at once.
const PARALLEL: usize = 4;
/// Bound on building the base image (debootstrap: a few minutes).
const BUILD_TIMEOUT: Duration = Duration::from_mins(30);
/// Bound on one bootstrap or converge (package installs included).
const CONVERGE_TIMEOUT: Duration = Duration::from_mins(30);
/// Bound on a `docker` command that is not given its own.
const DOCKER_TIMEOUT: Duration = Duration::from_mins(2);
/// How long a container may take to boot systemd.
const BOOT_TIMEOUT: Duration = Duration::from_mins(1);

/// Try a state repository on Docker containers before pushing it.
///
/// Run it from a checkout of the state repository (or pass --state-repo). The hosts of
/// inventory/staging.toml become containers named infra-stage-HOST that converge the
/// working tree, uncommitted edits included. See docs/staging.md.
#[derive(Debug, Parser)]
#[command(name = "infra-stage", version)]
pub struct Args {
    /// up: start and bootstrap the containers (converge those already up);
    /// apply: converge the working tree again; down: remove the containers.
    pub action: Action,
    /// Hosts of inventory/staging.toml (default: all of them; for `down`, every
    /// container of this repository's stage).
    pub hosts: Vec<String>,
    /// The admin's private key (unencrypted), whose public half is in the staging
    /// hosts' `data.admin.keys`; handed to infra-bootstrap. Without it, the keys of the
    /// ssh-agent at `SSH_AUTH_SOCK` are used.
    #[arg(short = 'i', value_name = "KEY")]
    pub identity: Option<PathBuf>,
    /// The state repository checkout to stage (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub state_repo: PathBuf,
    /// A local Docker image to start the containers from (systemd as /sbin/init,
    /// openssh-server), instead of the one infra-stage builds.
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
    /// The infra-agent binary to install, with infra-agent-fetch beside it (default:
    /// the one beside infra-stage).
    #[arg(long, value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,
}

/// What to do with the staging containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    Up,
    Apply,
    Down,
}

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResult {
    pub host: String,
    pub ok: bool,
    /// Changes and failures of the host's converge, when one ran.
    pub counts: Option<(usize, usize)>,
    pub took: Duration,
    pub detail: String,
}

impl HostResult {
    /// The summary line: status, host, counts, duration, detail.
    #[must_use]
    pub fn line(&self, width: usize) -> String {
        let status = if self.ok { "ok" } else { "FAILED" };
        let counts = self.counts.map_or_else(String::new, |(changed, failed)| {
            format!("{changed} changed, {failed} failed, ")
        });
        format!(
            "{status:<7}{:<width$}  {counts}{:.1}s  {}",
            self.host,
            self.took.as_secs_f64(),
            self.detail
        )
    }
}

/// Runs `infra-stage`. Returns whether every host ended well (exit 0; else 1). A
/// usage error is a [`Usage`] inside the error (exit 64).
pub fn run(args: &Args) -> anyhow::Result<bool> {
    let dir = std::path::absolute(&args.state_repo)
        .map_err(|e| Failure::new(format!("cannot resolve {}: {e}", args.state_repo.display())))?;
    let dir = fs_err::canonicalize(&dir).map_err(|e| {
        Usage(Failure::new(format!("{e}")).hint(
            "run infra-stage from a checkout of the state repository, or pass --state-repo DIR",
        ))
    })?;
    let repo = state::load(&dir)?;
    let staged = staging_hosts(&repo)?;
    let hosts = chosen(&staged, &args.hosts, args.action)?;
    if args.action == Action::Up
        && args.identity.is_none()
        && std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty())
    {
        return Err(Usage(
            Failure::new("no admin key: no -i KEY, and no ssh-agent (SSH_AUTH_SOCK is not set); the bootstrap proves with it that the admin can log in")
                .hint("pass -i KEY, the private half of a key listed in the staging hosts' data.admin.keys"),
        )
        .into());
    }
    let docker = Docker::connect()?;
    let stage = Stage { docker, dir, args };
    let results = match args.action {
        Action::Up => stage.up(&hosts)?,
        Action::Apply => in_parallel(&hosts, |h| stage.apply(h)),
        Action::Down => stage.down(&hosts)?,
    };
    println!();
    let width = results.iter().map(|r| r.host.len()).max().unwrap_or(0);
    for result in &results {
        println!("{}", result.line(width));
    }
    Ok(results.iter().all(|r| r.ok))
}

/// The exact host names of `inventory/staging.toml`, in file order.
pub fn staging_hosts(repo: &StateRepo) -> Result<Vec<String>, Failure> {
    let inventory = repo
        .inventories
        .iter()
        .find(|i| i.env == ENV)
        .ok_or_else(|| {
            Failure::new("the state repository has no inventory/staging.toml")
                .hint("list the staging hosts there (their own names, e.g. stage-media-01), in the same groups as production; see docs/staging.md")
        })?;
    let mut hosts: Vec<String> = Vec::new();
    for pattern in inventory.exact_hosts() {
        let name = pattern.pattern.to_lowercase();
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    if hosts.is_empty() {
        return Err(Failure::new(format!(
            "{} names no host (globs match hosts, they do not create them)",
            inventory.file
        ))
        .hint("list the staging hosts by name in a group's `hosts`"));
    }
    Ok(hosts)
}

/// The hosts the command works on: all of `staged`, or those named (in the order
/// given, each once). A name that is not a staging host is a usage error; `down`
/// with no names also removes containers of hosts no longer in the inventory (found
/// by label, later).
pub fn chosen(staged: &[String], named: &[String], action: Action) -> Result<Vec<String>, Usage> {
    if named.is_empty() {
        return Ok(if action == Action::Down {
            Vec::new()
        } else {
            staged.to_vec()
        });
    }
    let mut out: Vec<String> = Vec::new();
    for name in named {
        let lower = name.to_lowercase();
        if !staged.contains(&lower) {
            return Err(Usage(
                Failure::new(format!("`{name}` is not a host of inventory/staging.toml"))
                    .hint(format!("the staging hosts are: {}", staged.join(", "))),
            ));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// The container of a staging host.
#[must_use]
pub fn container_name(host: &str) -> String {
    format!("infra-stage-{host}")
}

/// The base image's tag: `infra-stage/bookworm:<hash of the recipe>`.
#[must_use]
pub fn image_tag() -> String {
    format!("infra-stage/bookworm:{:016x}", fnv1a(RECIPE.as_bytes()))
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `known_hosts` text without the entries of `127.0.0.1:port` (a new container on a
/// port an old one had: its host key is new, and it is ours).
#[must_use]
pub fn forget_port(known_hosts: &str, port: u16) -> String {
    let prefix = format!("[127.0.0.1]:{port} ");
    known_hosts
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// The newest `--once` run of an `infra-agent status --format json` document: its
/// outcome decides the host's line (the daemon's own runs are left out).
pub fn last_once(status_json: &[u8]) -> Result<RunRecord, String> {
    let doc: serde_json::Value = serde_json::from_slice(status_json)
        .map_err(|e| format!("`infra-agent status --format json` printed no JSON: {e}"))?;
    let history: Vec<RunRecord> = serde_json::from_value(doc["history"].clone())
        .map_err(|e| format!("the status document's history does not read: {e}"))?;
    history
        .into_iter()
        .find(|r| r.trigger == Trigger::Once)
        .ok_or_else(|| "the host's history has no `infra-agent --once` run".to_owned())
}

/// The files of the working tree to copy, relative to `dir`, sorted: with git, what
/// `git ls-files` lists as tracked or untracked-and-not-ignored (and still present);
/// without git, every file. `.git` and [`LOCAL_DIR`] are never copied.
pub fn tree_files(dir: &Path) -> Result<Vec<String>, Failure> {
    let mut files = if dir.join(".git").exists() {
        let cmd = Cmd::new("git")
            .arg("-C")
            .arg(dir.to_string_lossy())
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .timeout(DOCKER_TIMEOUT);
        let out = run_ok(&cmd, "listing the working tree's files")?;
        String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty() && dir.join(p).symlink_metadata().is_ok())
            .map(str::to_owned)
            .collect()
    } else {
        let mut found = Vec::new();
        walk(dir, "", &mut found)?;
        found
    };
    files.retain(|p| {
        let top = p.split('/').next().unwrap_or_default();
        top != ".git" && top != LOCAL_DIR
    });
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), Failure> {
    let here = dir.join(rel);
    let entries = fs_err::read_dir(&here).map_err(|e| {
        Failure::new(format!("cannot list the working tree: {e}"))
            .hint("check the permissions of the state repository")
    })?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Failure::new(format!("cannot list {}: {e}", here.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if rel.is_empty() && (name == ".git" || name == LOCAL_DIR) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| Failure::new(format!("cannot stat {path}: {e}")))?;
        if kind.is_dir() {
            walk(dir, &path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn run_ok(cmd: &Cmd, what: &str) -> Result<CmdOutput, Failure> {
    let out = process::run(cmd).map_err(|e| {
        Failure::new(format!("{what}: cannot run {}: {e}", cmd.program))
            .hint(format!("install {} or put it on PATH", cmd.program))
    })?;
    if out.timed_out {
        return Err(Failure::new(format!(
            "{what}: `{}` did not finish in time",
            cmd.display()
        )));
    }
    if !out.success() {
        return Err(Failure::new(format!(
            "{what}: `{}` failed: {}",
            cmd.display(),
            out.message()
        )));
    }
    Ok(out)
}

/// The Docker engine, spoken to at the daemon's API version (the client may be newer
/// than the daemon).
#[derive(Debug, Clone)]
struct Docker {
    api_version: String,
}

impl Docker {
    fn connect() -> Result<Self, Failure> {
        let probe = Cmd::new("docker")
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .timeout(Duration::from_secs(30));
        let out = process::run(&probe).map_err(|e| {
            Failure::new(format!("cannot run docker: {e}"))
                .hint("install Docker (apt-get install docker.io) and start it")
        })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let from_env = std::env::var("DOCKER_API_VERSION")
            .ok()
            .filter(|v| !v.is_empty());
        match from_env {
            Some(v) => Ok(Self { api_version: v }),
            None if !version.is_empty() => Ok(Self {
                api_version: version,
            }),
            None => Err(Failure::new(format!(
                "the Docker daemon does not answer: {}",
                out.message()
            ))
            .hint("start it (systemctl start docker, or dockerd &) and check that you may use it")),
        }
    }

    fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(&self, args: I) -> Cmd {
        Cmd::new("docker")
            .args(args)
            .env("DOCKER_API_VERSION", &self.api_version)
            .timeout(DOCKER_TIMEOUT)
    }

    fn run<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        args: I,
    ) -> Result<CmdOutput, Failure> {
        let cmd = self.cmd(args);
        process::run(&cmd).map_err(|e| Failure::new(format!("cannot run docker: {e}")))
    }

    fn run_ok<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        what: &str,
        args: I,
    ) -> Result<String, Failure> {
        let out = run_ok(&self.cmd(args), what)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn exec(
        &self,
        name: &str,
        argv: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<CmdOutput, Failure> {
        let mut words = vec!["exec"];
        if stdin.is_some() {
            words.push("-i");
        }
        words.push(name);
        words.extend(argv);
        let mut cmd = self.cmd(words).timeout(timeout);
        cmd.stdin = stdin;
        process::run(&cmd).map_err(|e| Failure::new(format!("cannot run docker exec: {e}")))
    }

    /// The staging containers of `repo`: (name, host label, running).
    fn containers(&self, repo: &Path) -> Result<Vec<(String, String, bool)>, Failure> {
        let filter = format!("label={REPO_LABEL}={}", repo.display());
        let format = format!("{{{{.Names}}}}\t{{{{.Label \"{HOST_LABEL}\"}}}}\t{{{{.State}}}}");
        let text = self.run_ok(
            "listing the staging containers",
            [
                "ps",
                "-a",
                "--filter",
                filter.as_str(),
                "--format",
                format.as_str(),
            ],
        )?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (name, host, state) = (f.next()?, f.next()?, f.next()?);
                Some((name.to_owned(), host.to_owned(), state == "running"))
            })
            .collect())
    }

    /// The label `REPO_LABEL` of container `name`, or `None` when there is no such
    /// container.
    fn owner(&self, name: &str) -> Result<Option<String>, Failure> {
        let format = format!("{{{{index .Config.Labels \"{REPO_LABEL}\"}}}}");
        let out = self.run([
            "inspect",
            "--type",
            "container",
            "--format",
            format.as_str(),
            name,
        ])?;
        if !out.success() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    fn ssh_port(&self, name: &str) -> Result<u16, Failure> {
        let text = self.run_ok("finding the published SSH port", ["port", name, "22/tcp"])?;
        text.lines()
            .find_map(|l| l.strip_prefix("127.0.0.1:")?.trim().parse().ok())
            .ok_or_else(|| {
                Failure::new(format!(
                    "{name} publishes no SSH port on 127.0.0.1: {text:?}"
                ))
            })
    }
}

/// What `up` still has to do for a host once its container is there.
enum Job {
    /// Already up: converge it as `apply` does.
    Apply,
    /// Started now: bootstrap it over SSH on `port`.
    Bootstrap { port: u16, started: Instant },
    /// Nothing: it ended already.
    Done(HostResult),
}

/// One invocation's context.
struct Stage<'a> {
    docker: Docker,
    dir: PathBuf,
    args: &'a Args,
}

impl Stage<'_> {
    fn local_dir(&self) -> PathBuf {
        self.dir.join(LOCAL_DIR)
    }

    fn known_hosts(&self) -> PathBuf {
        self.local_dir().join("known_hosts")
    }

    /// `.infra-stage/` (0700, git-ignored by its own `.gitignore`) and the containers'
    /// root password in it, made once.
    fn prepare_local(&self) -> Result<(PathBuf, String), Failure> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.local_dir();
        let failed = |e: std::io::Error| {
            Failure::new(format!("cannot prepare {}: {e}", dir.display()))
                .hint("infra-stage keeps its known_hosts and the containers' root password there; check that the state repository is writable")
        };
        fs_err::create_dir_all(&dir).map_err(failed)?;
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            fs_err::write(
                &ignore,
                "# infra-stage's own files: never commit them.\n*\n",
            )
            .map_err(failed)?;
        }
        let path = dir.join("root-password");
        let password = match fs_err::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => {
                let mut bytes = [0u8; 16];
                std::io::Read::read_exact(
                    &mut fs_err::File::open("/dev/urandom").map_err(failed)?,
                    &mut bytes,
                )
                .map_err(failed)?;
                let password = bytes.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                fs_err::write(&path, format!("{password}\n")).map_err(failed)?;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(failed)?;
                password
            }
        };
        Ok((path, password))
    }

    /// The image to start containers from: `--image`, or infra-stage's own, built when
    /// missing.
    fn image(&self) -> Result<String, Failure> {
        if let Some(tag) = &self.args.image {
            let out = self
                .docker
                .run(["image", "inspect", "--format", "{{.Id}}", tag.as_str()])?;
            if !out.success() {
                return fail_f(
                    format!("--image {tag}: there is no such local image"),
                    "build or import it first (`docker images` lists them); infra-stage never pulls",
                );
            }
            return Ok(tag.clone());
        }
        let tag = image_tag();
        if self
            .docker
            .run(["image", "inspect", "--format", "{{.Id}}", tag.as_str()])?
            .success()
        {
            return Ok(tag);
        }
        println!("building the staging image {tag} from Debian's packages (a few minutes, once)");
        let started = Instant::now();
        let cmd = Cmd::new("bash")
            .args(["-c", RECIPE, "bookworm.sh", tag.as_str()])
            .env("DOCKER_API_VERSION", &self.docker.api_version)
            .timeout(BUILD_TIMEOUT);
        let out = process::run(&cmd).map_err(|e| Failure::new(format!("cannot run bash: {e}")))?;
        if !out.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            return Err(Failure::new(format!(
                "building the staging image {tag} failed ({}):\n{}",
                out.message().lines().next().unwrap_or_default(),
                lines[lines.len().saturating_sub(20)..].join("\n")
            ))
            .hint("the recipe is packaging/stage/bookworm.sh: it needs root, debootstrap and the Debian mirror of /etc/apt/sources.list.d/debian.sources (or INFRA_STAGE_MIRROR); or pass --image TAG"));
        }
        println!("built {tag} in {:.0?}", started.elapsed());
        Ok(tag)
    }

    fn ensure_network(&self) -> Result<(), Failure> {
        if self.docker.run(["network", "inspect", NETWORK])?.success() {
            return Ok(());
        }
        self.docker.run_ok(
            "creating the staging network",
            [
                "network",
                "create",
                "--label",
                "home-infra.stage=1",
                NETWORK,
            ],
        )?;
        Ok(())
    }

    /// Starts the containers of `hosts` one after another (each gets its port, and the
    /// `known_hosts` entries of that port are dropped, before any bootstrap appends to
    /// that file), then bootstraps them, or converges those already up, in parallel.
    fn up(&self, hosts: &[String]) -> anyhow::Result<Vec<HostResult>> {
        // infra-bootstrap installs the fetch helper found beside the binary: a missing
        // one stops here, before any container starts, not in every host's bootstrap.
        if let Some(agent) = &self.args.agent_binary {
            crate::install::helper_beside(agent)?;
        }
        let (password_file, password) = self.prepare_local()?;
        let mut image = None;
        let mut jobs = Vec::new();
        for host in hosts {
            let name = container_name(host);
            let started = Instant::now();
            let job = match self.docker.owner(&name)? {
                Some(owner) if owner == self.dir.to_string_lossy() => {
                    println!("== {host}: already up ({name}); converging the working tree");
                    Job::Apply
                }
                Some(owner) => Job::Done(HostResult {
                    host: host.clone(),
                    ok: false,
                    counts: None,
                    took: started.elapsed(),
                    detail: format!(
                        "a container {name} exists and is not this repository's (it stages {}); remove it (`infra-stage down` there, or docker rm -f {name})",
                        if owner.is_empty() {
                            "nothing of infra-stage's"
                        } else {
                            owner.as_str()
                        }
                    ),
                }),
                None => {
                    if image.is_none() {
                        image = Some(self.image()?);
                        self.ensure_network()?;
                    }
                    let image = image.as_deref().expect("set just above");
                    match self.start(host, &name, image, &password) {
                        Ok(port) => Job::Bootstrap { port, started },
                        Err(e) => Job::Done(HostResult {
                            host: host.clone(),
                            ok: false,
                            counts: None,
                            took: started.elapsed(),
                            detail: failure_text(&e),
                        }),
                    }
                }
            };
            jobs.push((host, job));
        }
        Ok(in_parallel(&jobs, |(host, job)| match job {
            Job::Apply => self.apply(host),
            Job::Bootstrap { port, started } => {
                self.bootstrap(host, &container_name(host), *port, &password_file, *started)
            }
            Job::Done(result) => result.clone(),
        }))
    }

    /// Starts the container of `host`, waits for systemd, gives it its own SSH host
    /// keys and a root password sshd accepts (like a provider's fresh image), and
    /// copies the working tree in. Returns the published SSH port.
    fn start(&self, host: &str, name: &str, image: &str, password: &str) -> Result<u16, Failure> {
        println!("== {host}: starting {name}");
        let repo_label = format!("{REPO_LABEL}={}", self.dir.display());
        let host_label = format!("{HOST_LABEL}={host}");
        self.docker.run_ok(
            &format!("starting the container {name}"),
            [
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                host,
                "--label",
                &repo_label,
                "--label",
                &host_label,
                "--network",
                NETWORK,
                "--network-alias",
                host,
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
                image,
                "/sbin/init",
            ],
        )?;
        self.wait_for_boot(name)?;
        let script = "set -e
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null
printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' >/etc/ssh/sshd_config.d/50-infra-stage.conf
chpasswd
# An image without host keys (infra-stage's own) failed to start sshd at boot.
systemctl reset-failed ssh.service || true
systemctl restart ssh.service";
        let out = self.docker.exec(
            name,
            &["sh", "-c", script],
            Some(format!("root:{password}\n").into_bytes()),
            DOCKER_TIMEOUT,
        )?;
        if !out.success() {
            return fail_f(
                format!("preparing sshd in {name} failed: {}", out.message()),
                "the image needs openssh-server and systemd; see packaging/stage/bookworm.sh",
            );
        }
        let port = self.docker.ssh_port(name)?;
        // A new container may get the port of an old one: its key is new, and ours.
        let known_hosts = self.known_hosts();
        if let Ok(text) = fs_err::read_to_string(&known_hosts) {
            fs_err::write(&known_hosts, forget_port(&text, port)).map_err(|e| {
                Failure::new(format!("cannot update {}: {e}", known_hosts.display()))
            })?;
        }
        self.copy_tree(name)?;
        self.provide_standins(name)?;
        Ok(port)
    }

    fn wait_for_boot(&self, name: &str) -> Result<(), Failure> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < BOOT_TIMEOUT {
            let out = self.docker.exec(
                name,
                &["systemctl", "is-system-running"],
                None,
                Duration::from_secs(10),
            )?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if matches!(state.as_str(), "running" | "degraded") {
                return Ok(());
            }
            last = format!("{state} {}", String::from_utf8_lossy(&out.stderr).trim());
            std::thread::sleep(Duration::from_millis(200));
        }
        fail_f(
            format!("{name} did not boot systemd within {BOOT_TIMEOUT:?} (last state: {last})"),
            format!("see `docker logs {name}`; the image must start /sbin/init (systemd)"),
        )
    }

    /// Copies the working tree to [`REMOTE_TREE`] in the container, replacing what was
    /// there in one rename so a daemon run never reads half a tree.
    fn copy_tree(&self, name: &str) -> Result<usize, Failure> {
        let files = tree_files(&self.dir)?;
        let mut list = Vec::new();
        for file in &files {
            list.extend_from_slice(file.as_bytes());
            list.push(0);
        }
        let mut tar = Cmd::new("tar")
            .arg("-C")
            .arg(self.dir.to_string_lossy())
            .args(["-c", "-f", "-", "--null", "--no-recursion", "-T", "-"])
            .timeout(DOCKER_TIMEOUT);
        tar.stdin = Some(list);
        let archive = run_ok(&tar, "packing the working tree")?.stdout;
        let script = format!(
            "set -e
rm -rf {REMOTE_TREE}.new {REMOTE_TREE}.old
mkdir -p {REMOTE_TREE}.new
tar -x -C {REMOTE_TREE}.new --no-same-owner
chmod 0755 {REMOTE_TREE}.new
if [ -e {REMOTE_TREE} ]; then mv {REMOTE_TREE} {REMOTE_TREE}.old; fi
mv {REMOTE_TREE}.new {REMOTE_TREE}
rm -rf {REMOTE_TREE}.old"
        );
        let out = self
            .docker
            .exec(name, &["sh", "-c", &script], Some(archive), DOCKER_TIMEOUT)?;
        if !out.success() {
            return fail_f(
                format!(
                    "copying the working tree into {name}:{REMOTE_TREE} failed: {}",
                    out.message()
                ),
                format!("is the container running? `docker ps -a --filter name={name}`"),
            );
        }
        Ok(files.len())
    }

    /// Gives the container the stand-ins of the repository's `staging/` directory
    /// (see [`stage_standins`]): with `staging/apt/`, the stand-in apt repository;
    /// with `staging/secrets.toml`, the stand-in `op`, its map and token, and the
    /// agent.toml settings that use them (a running daemon is reloaded when they
    /// change).
    fn provide_standins(&self, name: &str) -> Result<(), Failure> {
        if self.dir.join(stage_standins::APT_DIR).is_dir() {
            let src = format!("{REMOTE_TREE}/{}", stage_standins::APT_DIR);
            let out = self.docker.exec(
                name,
                &[
                    "sh",
                    "-c",
                    stage_standins::BUILD_APT,
                    "sh",
                    &src,
                    stage_standins::APT_REPO,
                ],
                None,
                DOCKER_TIMEOUT,
            )?;
            if !out.success() {
                return fail_f(
                    format!(
                        "building the stand-in apt repository {name}:{} failed: {}",
                        stage_standins::APT_REPO,
                        out.message()
                    ),
                    format!(
                        "each directory of {} is a package tree: DEBIAN/control and the files, laid out as installed",
                        stage_standins::APT_DIR
                    ),
                );
            }
        }
        let Some(secrets) = stage_standins::Secrets::read(&self.dir)? else {
            return Ok(());
        };
        self.put(
            name,
            stage_standins::OP_PROGRAM,
            "0755",
            stage_standins::OP_SCRIPT.as_bytes(),
        )?;
        self.put(
            name,
            stage_standins::OP_TOKEN,
            "0600",
            b"infra-stage: the stand-in op needs no token\n",
        )?;
        self.put(
            name,
            stage_standins::SECRETS_MAP,
            "0600",
            secrets.map_file().as_bytes(),
        )?;
        let read = self.docker.exec(
            name,
            &[
                "sh",
                "-c",
                crate::scripts::READ_AGENT_TOML,
                "sh",
                state::AGENT_TOML,
            ],
            None,
            DOCKER_TIMEOUT,
        )?;
        if !read.success() {
            return fail_f(
                format!(
                    "reading {name}:{} failed: {}",
                    state::AGENT_TOML,
                    read.message()
                ),
                format!("is the container running? `docker ps -a --filter name={name}`"),
            );
        }
        let existing = String::from_utf8_lossy(&read.stdout);
        match stage_standins::with_agent_settings(&existing) {
            Ok(None) => Ok(()),
            Ok(Some(text)) => {
                self.put(name, state::AGENT_TOML, "0600", text.as_bytes())?;
                let _ = self.docker.exec(
                    name,
                    &["sh", "-c", "if systemctl is-active -q infra-agent; then systemctl reload infra-agent; fi"],
                    None,
                    DOCKER_TIMEOUT,
                )?;
                Ok(())
            }
            Err(why) => fail_f(
                format!("{name}:{} does not read as TOML: {why}", state::AGENT_TOML),
                format!(
                    "fix it (`docker exec -it {name} bash`), or `infra-stage down` and `up` again"
                ),
            ),
        }
    }

    /// Writes `content` to `path` in the container (root, `mode`), through a
    /// temporary file renamed over it; a missing directory is made 0700 under /etc and
    /// 0755 elsewhere.
    fn put(&self, name: &str, path: &str, mode: &str, content: &[u8]) -> Result<(), Failure> {
        let script = r#"set -eu
dir=$(dirname "$1")
if [ ! -d "$dir" ]; then
  case $dir in /etc/*) mkdir -p -m 0700 "$dir" ;; *) mkdir -p -m 0755 "$dir" ;; esac
fi
cat >"$1.infra-stage-tmp"
chmod "$2" "$1.infra-stage-tmp"
mv -f "$1.infra-stage-tmp" "$1""#;
        let out = self.docker.exec(
            name,
            &["sh", "-c", script, "sh", path, mode],
            Some(content.to_vec()),
            DOCKER_TIMEOUT,
        )?;
        if !out.success() {
            return fail_f(
                format!("writing {name}:{path} failed: {}", out.message()),
                format!("is the container running? `docker ps -a --filter name={name}`"),
            );
        }
        Ok(())
    }

    /// Runs infra-bootstrap against the container and reports its first converge.
    fn bootstrap(
        &self,
        host: &str,
        name: &str,
        port: u16,
        password_file: &Path,
        started: Instant,
    ) -> HostResult {
        let mut cmd = Cmd::new(beside("infra-bootstrap").to_string_lossy())
            .args([
                "root@127.0.0.1".to_owned(),
                "--port".to_owned(),
                port.to_string(),
                "--hostname".to_owned(),
                host.to_owned(),
                "--repo".to_owned(),
                REMOTE_TREE.to_owned(),
                "--accept-new".to_owned(),
                "--known-hosts".to_owned(),
                self.known_hosts().to_string_lossy().into_owned(),
                "--password-file".to_owned(),
                password_file.to_string_lossy().into_owned(),
                "--state-repo".to_owned(),
                self.dir.to_string_lossy().into_owned(),
            ])
            .timeout(CONVERGE_TIMEOUT);
        if let Some(key) = &self.args.identity {
            cmd = cmd.arg("-i").arg(key.to_string_lossy());
        }
        if let Some(agent) = &self.args.agent_binary {
            cmd = cmd.arg("--agent-binary").arg(agent.to_string_lossy());
        }
        println!("== {host}: infra-bootstrap over SSH on 127.0.0.1:{port}");
        let out = match process::run(&cmd) {
            Ok(out) => out,
            Err(e) => {
                return HostResult {
                    host: host.to_owned(),
                    ok: false,
                    counts: None,
                    took: started.elapsed(),
                    detail: format!(
                        "cannot run {}: {e}; build it (cargo build -p infra-bootstrap) beside infra-stage",
                        cmd.program
                    ),
                };
            }
        };
        print_output(host, "infra-bootstrap", &out);
        if !out.success() {
            return HostResult {
                host: host.to_owned(),
                ok: false,
                counts: None,
                took: started.elapsed(),
                detail: format!(
                    "infra-bootstrap failed ({}); its output is above; the container stays for a look: docker exec -it {name} bash",
                    exit_text(&out)
                ),
            };
        }
        self.report(
            host,
            name,
            started,
            &format!("bootstrapped, sshd on 127.0.0.1:{port}"),
        )
    }

    /// Copies the working tree in again and runs `infra-agent --once`.
    fn apply(&self, host: &str) -> HostResult {
        let started = Instant::now();
        let name = container_name(host);
        let failed = |detail: String| HostResult {
            host: host.to_owned(),
            ok: false,
            counts: None,
            took: started.elapsed(),
            detail,
        };
        match self.docker.containers(&self.dir) {
            Ok(list) => match list.iter().find(|(n, _, _)| *n == name) {
                Some((_, _, true)) => {}
                Some((_, _, false)) => {
                    return failed(format!(
                        "{name} is not running; `docker start {name}`, or `infra-stage down {host}` and `up {host}`"
                    ));
                }
                None => return failed(format!("{name} is not up; run `infra-stage up {host}`")),
            },
            Err(e) => return failed(failure_text(&e)),
        }
        println!("== {host}: copying the working tree and running infra-agent --once");
        if let Err(e) = self
            .copy_tree(&name)
            .and_then(|_| self.provide_standins(&name))
        {
            return failed(failure_text(&e));
        }
        let out = match self.docker.exec(
            &name,
            &["infra-agent", "--once", "--config", state::AGENT_TOML],
            None,
            CONVERGE_TIMEOUT,
        ) {
            Ok(out) => out,
            Err(e) => return failed(failure_text(&e)),
        };
        print_output(host, "infra-agent --once", &out);
        if !matches!(out.code, Some(0 | 2 | 4 | 6)) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map_or_else(String::new, |e| format!(": {e}"));
            return failed(format!(
                "infra-agent --once could not converge ({}){why}; its output is above",
                exit_text(&out)
            ));
        }
        self.report(host, &name, started, "converged")
    }

    /// The host's line from its newest `--once` run in the agent's status.
    fn report(&self, host: &str, name: &str, started: Instant, what: &str) -> HostResult {
        let status = self.docker.exec(
            name,
            &[
                "infra-agent",
                "status",
                "--format",
                "json",
                "--config",
                state::AGENT_TOML,
            ],
            None,
            DOCKER_TIMEOUT,
        );
        let record = match status {
            Ok(out) => last_once(&out.stdout),
            Err(e) => Err(failure_text(&e)),
        };
        match record {
            Ok(run) => {
                let ok = run.outcome.succeeded() && run.summary.failed == 0;
                let detail = match (&run.error, ok) {
                    (Some(error), _) => format!("{what}; {}: {error}", run.outcome),
                    (None, true) => what.to_owned(),
                    (None, false) => format!("{what}; {}", run.outcome),
                };
                HostResult {
                    host: host.to_owned(),
                    ok,
                    counts: Some((run.summary.changed, run.summary.failed)),
                    took: started.elapsed(),
                    detail,
                }
            }
            Err(why) => HostResult {
                host: host.to_owned(),
                ok: false,
                counts: None,
                took: started.elapsed(),
                detail: format!("{what}, but the result is unknown: {why}"),
            },
        }
    }

    /// Removes the containers of `hosts` (none named: every container of this
    /// repository's stage), their `known_hosts` entries, and the network when no
    /// container is left on it.
    fn down(&self, hosts: &[String]) -> anyhow::Result<Vec<HostResult>> {
        let ours = self.docker.containers(&self.dir)?;
        let targets: Vec<(String, String)> = if hosts.is_empty() {
            ours.iter()
                .map(|(n, h, _)| (n.clone(), h.clone()))
                .collect()
        } else {
            hosts
                .iter()
                .map(|h| (container_name(h), h.clone()))
                .collect()
        };
        if targets.is_empty() {
            println!("no staging container of {} is up", self.dir.display());
        }
        // Ports first (a removed container has none), then the removals in parallel,
        // then the known_hosts entries, one rewrite after another.
        let targets: Vec<(String, String, Option<u16>)> = targets
            .into_iter()
            .map(|(name, host)| {
                let port = ours
                    .iter()
                    .any(|(n, _, _)| *n == name)
                    .then(|| self.docker.ssh_port(&name).ok())
                    .flatten();
                (name, host, port)
            })
            .collect();
        let results = in_parallel(&targets, |(name, host, _)| {
            let started = Instant::now();
            if !ours.iter().any(|(n, _, _)| n == name) {
                return HostResult {
                    host: host.clone(),
                    ok: true,
                    counts: None,
                    took: started.elapsed(),
                    detail: "not up".to_owned(),
                };
            }
            let removed = self.docker.run_ok(
                &format!("removing {name}"),
                ["rm", "-f", "-v", name.as_str()],
            );
            HostResult {
                host: host.clone(),
                ok: removed.is_ok(),
                counts: None,
                took: started.elapsed(),
                detail: removed.map_or_else(|e| failure_text(&e), |_| format!("removed {name}")),
            }
        });
        for ((_, _, port), result) in targets.iter().zip(&results) {
            if let (true, Some(port)) = (result.ok, port) {
                let known_hosts = self.known_hosts();
                if let Ok(text) = fs_err::read_to_string(&known_hosts) {
                    let _ = fs_err::write(&known_hosts, forget_port(&text, *port));
                }
            }
        }
        let attached = self.docker.run([
            "network",
            "inspect",
            "--format",
            "{{len .Containers}}",
            NETWORK,
        ])?;
        if attached.success() && String::from_utf8_lossy(&attached.stdout).trim() == "0" {
            let _ = self.docker.run(["network", "rm", NETWORK])?;
        }
        Ok(results)
    }
}

/// A program beside this one (the workspace's binaries are built side by side).
fn beside(program: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(program)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Prints what a host's program printed as one block (one `print!`, so the blocks of
/// hosts that run at the same time never mix), under a line naming the host.
fn print_output(host: &str, what: &str, out: &CmdOutput) {
    let mut block = format!("== {host}: output of {what}\n");
    for bytes in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(bytes).lines() {
            block.push_str("   | ");
            block.push_str(line);
            block.push('\n');
        }
    }
    print!("{block}");
}

/// Runs `work` on every item, [`PARALLEL`] at a time; the results in the items' order.
fn in_parallel<T: Sync>(items: &[T], work: impl Fn(&T) -> HostResult + Sync) -> Vec<HostResult> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<HostResult>>> = Mutex::new(vec![None; items.len()]);
    std::thread::scope(|scope| {
        for _ in 0..items.len().min(PARALLEL) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = work(item);
                    done.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(result);
                }
            });
        }
    });
    done.into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|r| r.expect("every item ran: the workers took each index once"))
        .collect()
}

fn exit_text(out: &CmdOutput) -> String {
    if out.timed_out {
        "timed out".to_owned()
    } else {
        out.code
            .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"))
    }
}

fn failure_text(f: &Failure) -> String {
    match &f.hint {
        Some(hint) => format!("{}; {hint}", f.message),
        None => f.message.clone(),
    }
}

fn fail_f<T>(message: impl Into<String>, hint: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::new(message).hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> (tempfile::TempDir, StateRepo) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let loaded = state::load(dir.path()).unwrap();
        (dir, loaded)
    }

    #[test]
    fn staging_hosts_are_the_exact_names_of_the_staging_inventory() {
        let (_dir, loaded) = repo(&[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.media]\nhosts = [\"media-01\"]\n",
            ),
            (
                "inventory/staging.toml",
                "[groups.media]\nhosts = [\"stage-media-01\"]\n\n[groups.home_automation]\nhosts = [\"Stage-HA-01\", \"stage-media-01\"]\n\n[groups.staging]\nhosts = [\"stage-*\"]\n",
            ),
        ]);
        assert_eq!(
            staging_hosts(&loaded).unwrap(),
            ["stage-media-01", "stage-ha-01"]
        );
    }

    #[test]
    fn a_repository_without_staging_inventory_is_refused_with_a_hint() {
        let (_dir, loaded) = repo(&[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.media]\nhosts = [\"media-01\"]\n",
            ),
        ]);
        let err = staging_hosts(&loaded).unwrap_err();
        assert!(err.message.contains("inventory/staging.toml"), "{err}");
        assert!(err.hint.is_some());
    }

    #[test]
    fn unknown_names_are_a_usage_error_listing_the_staging_hosts() {
        let staged = vec!["stage-media-01".to_owned(), "stage-ha-01".to_owned()];
        let err = chosen(&staged, &["media-01".to_owned()], Action::Up).unwrap_err();
        assert!(err.0.message.contains("`media-01`"), "{}", err.0);
        assert_eq!(
            err.0.hint.as_deref(),
            Some("the staging hosts are: stage-media-01, stage-ha-01")
        );
        assert_eq!(chosen(&staged, &[], Action::Apply).unwrap(), staged);
        assert!(chosen(&staged, &[], Action::Down).unwrap().is_empty());
        let named = ["STAGE-HA-01".to_owned(), "stage-ha-01".to_owned()];
        assert_eq!(
            chosen(&staged, &named, Action::Up).unwrap(),
            ["stage-ha-01"]
        );
    }

    #[test]
    fn forgetting_a_port_keeps_every_other_entry() {
        let text = "[127.0.0.1]:32771 ssh-ed25519 AAAA1\n[127.0.0.1]:3277 ssh-ed25519 AAAA2\n[127.0.0.1]:32771 ssh-rsa AAAA3\nhost ssh-ed25519 AAAA4\n";
        assert_eq!(
            forget_port(text, 32771),
            "[127.0.0.1]:3277 ssh-ed25519 AAAA2\nhost ssh-ed25519 AAAA4\n"
        );
    }

    #[test]
    fn the_newest_once_run_decides_and_daemon_runs_are_skipped() {
        let run = |trigger: &str, changed: usize, failed: usize, outcome: &str| {
            serde_json::json!({
                "started_at": "2026-01-01T00:00:00.000Z",
                "finished_at": "2026-01-01T00:00:01.000Z",
                "duration_ms": 1000,
                "trigger": trigger,
                "source": "/srv/state",
                "commit": null,
                "outcome": outcome,
                "exit_code": 0,
                "summary": {"changed": changed, "in_sync": 3, "failed": failed, "skipped": 0},
                "drift": 0,
                "error": null,
                "run": null
            })
        };
        let doc = serde_json::json!({
            "schema": "infra-agent/status/v1",
            "history": [run("start", 0, 0, "in_sync"), run("once", 4, 1, "failed"), run("once", 9, 0, "changed")]
        });
        let record = last_once(doc.to_string().as_bytes()).unwrap();
        assert_eq!((record.summary.changed, record.summary.failed), (4, 1));
        assert!(!record.outcome.succeeded());
        let none = serde_json::json!({"history": [run("timer", 0, 0, "in_sync")]});
        assert!(
            last_once(none.to_string().as_bytes())
                .unwrap_err()
                .contains("no `infra-agent --once`")
        );
        assert!(last_once(b"not json").is_err());
    }

    #[test]
    fn the_tree_without_git_is_every_file_but_the_stage_directory() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "infra.toml",
            "roles/a.toml",
            ".infra-stage/known_hosts",
            "templates/x/y.hbs",
        ] {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, "x").unwrap();
        }
        assert_eq!(
            tree_files(dir.path()).unwrap(),
            ["infra.toml", "roles/a.toml", "templates/x/y.hbs"]
        );
    }

    #[test]
    fn the_tree_of_a_git_checkout_is_what_git_would_commit() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str| {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, "x").unwrap();
        };
        let git = |args: &[&str]| {
            let cmd = Cmd::new("git")
                .arg("-C")
                .arg(dir.path().to_string_lossy())
                .args(args.iter().copied());
            assert!(process::run(&cmd).unwrap().success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        for path in [".gitignore", "infra.toml", "roles/gone.toml", "secret.key"] {
            write(path);
        }
        std::fs::write(dir.path().join(".gitignore"), "*.key\n").unwrap();
        git(&["add", ".gitignore", "infra.toml", "roles/gone.toml"]);
        std::fs::remove_file(dir.path().join("roles/gone.toml")).unwrap();
        // Untracked and not ignored: copied, as a commit of `git add -A` would hold it.
        write("roles/new.toml");
        write(".infra-stage/known_hosts");
        assert_eq!(
            tree_files(dir.path()).unwrap(),
            [".gitignore", "infra.toml", "roles/new.toml"]
        );
    }

    #[test]
    fn summary_lines_read_well() {
        let ok = HostResult {
            host: "stage-media-01".into(),
            ok: true,
            counts: Some((5, 0)),
            took: Duration::from_millis(12_345),
            detail: "converged".into(),
        };
        assert_eq!(
            ok.line(14),
            "ok     stage-media-01  5 changed, 0 failed, 12.3s  converged"
        );
        let down = HostResult {
            host: "ha".into(),
            ok: false,
            counts: None,
            took: Duration::from_millis(100),
            detail: "gone".into(),
        };
        assert_eq!(down.line(4), "FAILED ha    0.1s  gone");
    }

    #[test]
    fn hosts_run_in_parallel_up_to_the_limit_and_results_keep_their_order() {
        let hosts: Vec<String> = (0..7).map(|i| format!("h{i}")).collect();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let results = in_parallel(&hosts, |h| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            running.fetch_sub(1, Ordering::SeqCst);
            HostResult {
                host: h.clone(),
                ok: true,
                counts: None,
                took: Duration::ZERO,
                detail: String::new(),
            }
        });
        let names: Vec<&str> = results.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(names, ["h0", "h1", "h2", "h3", "h4", "h5", "h6"]);
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= PARALLEL, "{most} at once");
    }

    #[test]
    fn the_image_tag_names_the_recipe() {
        assert!(image_tag().starts_with("infra-stage/bookworm:"));
        assert_eq!(image_tag().len(), "infra-stage/bookworm:".len() + 16);
        assert!(RECIPE.contains("debootstrap"));
    }
}
