//! The bootstrap itself: the phases in order, each printed as one line with its
//! duration, and the summary.

use std::future::Future;
use std::io::BufRead as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use infra_agent::resource::download::sha256_hex;
use russh::keys::PublicKey;

use crate::cli::Args;
use crate::failure::{Failure, fail};
use crate::install::{self, Method};
use crate::keys::{AdminKey, OperatorKeys};
use crate::known_hosts::{self, Verdict, fingerprint};
use crate::remote::{self, Remote, Root, key_values};
use crate::scripts;
use crate::ssh::{ConnectError, PasswordOutcome, Session};
use crate::state::{self, HostPlan};
use crate::target::Target;

/// The unit and installer, built into the bootstrap so it needs no checkout of the
/// project beside it.
const UNIT: &str = include_str!("../../packaging/infra-agent.service");
const INSTALL_SH: &str = include_str!("../../packaging/install.sh");

/// How long the new session of the admin login check keeps trying to connect while
/// sshd settles after a reload by the first converge.
const SSHD_SETTLE: Duration = Duration::from_secs(15);

/// A usage error: `main` exits 64.
#[derive(Debug)]
pub struct Usage(pub Failure);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Usage {}

/// Runs `infra-bootstrap` with `args`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(bootstrap(args))
}

/// Prints one phase line: status, name, duration, detail.
fn line(status: &str, name: &str, took: Duration, detail: &str) {
    let secs = format!("{:.1}s", took.as_secs_f64());
    println!("{status:<7}{name:<20}{secs:>7}  {detail}");
}

/// Runs one phase and prints its line (`ok` with the detail it returns, or `FAILED`).
async fn phase<T>(
    name: &str,
    body: impl Future<Output = anyhow::Result<(T, String)>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    match body.await {
        Ok((value, detail)) => {
            line("ok", name, started.elapsed(), &detail);
            Ok(value)
        }
        Err(e) => {
            line("FAILED", name, started.elapsed(), "");
            Err(e)
        }
    }
}

/// Reads a file on this machine, or, for an `op://` reference, the secret it names
/// through the operator's 1Password CLI.
fn read_local(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    read_local_with(path, what, &crate::secret::op_program())
}

fn read_local_with(path: &Path, what: &str, op: &str) -> Result<Vec<u8>, Failure> {
    if crate::secret::is_reference(path) {
        let reference = path.to_str().expect("a reference is UTF-8, checked above");
        let mut value = crate::secret::read(op, reference, what)?;
        // `op read --no-newline` ends without one; a key file needs its last line ended.
        if value.last() != Some(&b'\n') {
            value.push(b'\n');
        }
        return Ok(value);
    }
    fs_err::read(path).map_err(|e| {
        Failure::new(format!("cannot read {what}: {e}"))
            .hint(format!("check the path {}", path.display()))
    })
}

fn password(args: &Args, target: &Target) -> Result<String, Failure> {
    if let Some(path) = &args.password_file {
        let text = String::from_utf8(read_local(path, "the password file")?)
            .map_err(|_| Failure::new(format!("{} is not UTF-8 text", path.display())))?;
        let first = text.lines().next().unwrap_or_default().to_owned();
        if first.is_empty() {
            return Err(
                Failure::new(format!("the password file {} is empty", path.display()))
                    .hint("put the password on its first line"),
            );
        }
        return Ok(first);
    }
    rpassword::prompt_password(format!("{target}'s password: ")).map_err(|e| {
        Failure::new(format!("cannot ask for the password of {target}: {e}"))
            .hint("run infra-bootstrap on a terminal, or pass --password-file FILE")
    })
}

/// Asks on the terminal whether to trust `key`.
fn ask_host_key(target: &Target, port: u16, key: &PublicKey) -> Result<bool, Failure> {
    let no_tty = |e: std::io::Error| {
        Failure::new(format!(
            "the host key of {} is not known and there is no terminal to ask on ({e})",
            known_hosts::entry_name(&target.host, port)
        ))
        .hint(format!(
            "check the fingerprint {} out of band, then pass --host-key {} (or --accept-new)",
            fingerprint(key),
            fingerprint(key)
        ))
    };
    let mut tty = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    write!(
        tty,
        "The host key of {} is not known.\n{} key fingerprint is {}.\nTrust it and record it? (yes/no) ",
        known_hosts::entry_name(&target.host, port),
        key.algorithm().as_str(),
        fingerprint(key)
    )
    .map_err(no_tty)?;
    let mut answer = String::new();
    std::io::BufReader::new(tty)
        .read_line(&mut answer)
        .map_err(no_tty)?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// Connects to the target, checking its host key against the operator's `known_hosts`
/// and the flags; records a newly accepted key. Returns the session and what was
/// decided about the key.
async fn connect_checked(
    args: &Args,
    target: &Target,
    known_hosts_file: &Path,
) -> anyhow::Result<(Session, String)> {
    let port = args.port;
    let recorded = known_hosts::recorded(known_hosts_file, &target.host, port)?;
    let timeout = Duration::from_secs(args.connect_timeout);
    let mut approved: Option<PublicKey> = None;
    loop {
        let rec = recorded.clone();
        let pin = args.host_key.clone();
        let accept_new = args.accept_new;
        let ok = approved.clone();
        let rule = Box::new(move |key: &PublicKey| {
            let pin_ok = pin.as_deref().is_none_or(|p| p == fingerprint(key));
            match known_hosts::verdict(&rec, key) {
                Verdict::Known => pin_ok,
                Verdict::Changed(_) => false,
                Verdict::Unknown => {
                    pin_ok
                        && (accept_new
                            || pin.is_some()
                            || ok.as_ref().is_some_and(|k| k.key_data() == key.key_data()))
                }
            }
        });
        match Session::connect(&target.host, port, timeout, rule).await {
            Ok(session) => {
                let key = session.host_key().clone();
                let how = if known_hosts::verdict(&recorded, &key) == Verdict::Known {
                    "known".to_owned()
                } else {
                    known_hosts::record(known_hosts_file, &target.host, port, &key)?;
                    format!("recorded in {}", known_hosts_file.display())
                };
                return Ok((session, format!("host key {} ({how})", fingerprint(&key))));
            }
            Err(ConnectError::Unreachable(why)) => {
                return fail(
                    format!("cannot reach {}:{port}: {why}", target.host),
                    "check the address, the port (--port) and that sshd runs on the host; --connect-timeout SECONDS waits longer",
                );
            }
            Err(ConnectError::HostKey(key)) => match known_hosts::verdict(&recorded, &key) {
                Verdict::Changed(old) => {
                    let old: Vec<String> = old.iter().map(fingerprint).collect();
                    return fail(
                        format!(
                            "the host key of {} CHANGED: it shows {}, but {} records {}. Someone may be in the middle; refusing to connect",
                            known_hosts::entry_name(&target.host, port),
                            fingerprint(&key),
                            known_hosts_file.display(),
                            old.join(", ")
                        ),
                        format!(
                            "if the host was reinstalled, check the new fingerprint out of band, then remove the old entry: ssh-keygen -R '{}' -f {}",
                            known_hosts::entry_name(&target.host, port),
                            known_hosts_file.display()
                        ),
                    );
                }
                _ if args.host_key.is_some() => {
                    return fail(
                        format!(
                            "the host key of {} is {}, not the pinned {}",
                            known_hosts::entry_name(&target.host, port),
                            fingerprint(&key),
                            args.host_key.as_deref().unwrap_or_default()
                        ),
                        "check the fingerprint out of band (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host's console)",
                    );
                }
                _ if approved.is_none() && ask_host_key(target, port, &key)? => {
                    approved = Some(key);
                }
                _ => {
                    return fail(
                        format!("the host key {} was not accepted", fingerprint(&key)),
                        "answer yes to trust it, or pin it with --host-key SHA256:...",
                    );
                }
            },
        }
    }
}

/// Logs in on the first session: the operator's keys first (the `-i` key, or a few
/// of the agent's), then the password.
async fn log_in(
    args: &Args,
    target: &Target,
    session: &mut Session,
    candidates: &[AdminKey],
) -> anyhow::Result<(Root, String)> {
    for key in candidates {
        if session.key(&target.user, key).await? {
            let root = if target.is_root() {
                Root::Direct
            } else if args.password_file.is_some() {
                Root::SudoPassword(password(args, target)?)
            } else {
                Root::SudoNoPassword
            };
            return Ok((root, format!("{target} with key {}", key.describe())));
        }
    }
    let tried: Vec<String> = candidates.iter().map(AdminKey::describe).collect();
    let tried = match tried.as_slice() {
        [one] => format!("the key {one} was"),
        many => format!("the keys {} were", many.join(", ")),
    };
    let refused_hint = if target.is_root() {
        format!(
            "if the image has a sudo user with a password, run infra-bootstrap USER@{} --sudo; on a host bootstrapped before, run infra-bootstrap ADMIN@{} --sudo -i KEY",
            target.host, target.host
        )
    } else {
        "check the user name and the password (--password-file FILE holds it on its first line)"
            .to_owned()
    };
    let not_offered = || {
        Failure::new(format!(
            "sshd on {} does not accept password login (PasswordAuthentication no), and {tried} refused for {}",
            target.host,
            target.user
        ))
        .hint(refused_hint.clone())
    };
    if !session.offers_password(&target.user).await? {
        return Err(not_offered().into());
    }
    let password = password(args, target)?;
    match session.password(&target.user, &password).await? {
        PasswordOutcome::Accepted => {
            let root = if target.is_root() {
                Root::Direct
            } else {
                Root::SudoPassword(password)
            };
            Ok((root, format!("{target} with a password")))
        }
        PasswordOutcome::NotOffered => Err(not_offered().into()),
        PasswordOutcome::Refused if target.is_root() => fail(
            format!(
                "the password for root@{} was refused: either it is wrong, or sshd does not let root log in with a password (PermitRootLogin prohibit-password, Debian's default)",
                target.host
            ),
            format!("check the password; {refused_hint}"),
        ),
        PasswordOutcome::Refused => fail(
            format!("the password for {target} was refused"),
            refused_hint,
        ),
    }
}

/// What the bootstrap reads on this machine before it touches the host.
struct Local {
    repo: infra_agent::state_repo::StateRepo,
    /// The plan and the admin key, when `--hostname` named the host.
    plan: Option<(HostPlan, AdminKey)>,
    keys: OperatorKeys,
    /// How the agent is installed, the file's content, and a note for the phase line.
    agent: (Method, Vec<u8>, Option<String>),
    /// The fetch helper installed beside a bare binary (the package holds its own).
    helper: Option<Vec<u8>>,
    deploy_key: Option<Vec<u8>>,
    git_known_hosts: Option<Vec<u8>>,
}

/// What the check phase found.
struct Found {
    kv: std::collections::BTreeMap<String, String>,
}

impl Found {
    fn get(&self, key: &str) -> &str {
        self.kv.get(key).map_or("", String::as_str)
    }
}

fn check_target(found: &Found) -> Result<String, Failure> {
    let id = found.get("id");
    let like = found.get("id_like");
    let pretty = found.get("pretty");
    let debian_like = matches!(id, "debian" | "ubuntu") || like.split(' ').any(|l| l == "debian");
    if !debian_like {
        return Err(Failure::new(format!(
            "unsupported operating system: /etc/os-release says {pretty} (ID={id}); infra-agent manages Debian and Ubuntu only"
        ))
        .hint("install Debian (12 or later) or Ubuntu (22.04 or later) on the host; nothing was changed on this one"));
    }
    let arch = found.get("arch");
    if arch != "x86_64" {
        let future = if matches!(arch, "aarch64" | "arm64") {
            " (arm64 is a future target, not supported yet)"
        } else {
            ""
        };
        return Err(Failure::new(format!(
            "unsupported architecture: `uname -m` says {arch}; infra-agent is built for x86_64 only{future}"
        ))
        .hint("bootstrap an x86_64 host; nothing was changed on this one"));
    }
    let pid1 = found.get("pid1");
    if pid1 != "systemd" {
        return Err(Failure::new(format!(
            "PID 1 on the host is `{pid1}`, not systemd; the agent runs as a systemd service"
        ))
        .hint("boot the host with systemd as init"));
    }
    if found.get("uid") != "0" {
        return Err(Failure::new("commands on the host do not run as root")
            .hint("log in as root, or as a user with sudo rights and --sudo"));
    }
    Ok(format!("{pretty}, {arch}, systemd"))
}

async fn bootstrap(args: &Args) -> anyhow::Result<()> {
    let target = Target::parse(&args.target).map_err(Usage)?;
    if !target.is_root() && !args.sudo {
        return Err(Usage(
            Failure::new(format!(
                "{target}: commands must run as root, and {} is not root",
                target.user
            ))
            .hint(format!(
                "pass --sudo to use {}'s sudo rights, or log in as root@{}",
                target.user, target.host
            )),
        )
        .into());
    }
    if let Some(pin) = &args.host_key
        && !pin.starts_with("SHA256:")
    {
        return Err(Usage(
            Failure::new(format!("--host-key {pin} is not a SHA256 fingerprint"))
                .hint("write it as ssh-keygen -lf shows it: SHA256:base64..."),
        )
        .into());
    }
    let agent_socket = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty());
    if args.identity.is_none() && agent_socket.is_none() {
        return Err(Usage(
            Failure::new("no admin key: no -i KEY, and no ssh-agent (SSH_AUTH_SOCK is not set); infra-bootstrap proves with the key that the admin can log in before it starts the daemon")
                .hint("pass -i KEY, the private half of a key listed in data.admin.keys, or add that key to your ssh-agent (ssh-add KEY)"),
        )
        .into());
    }

    // Local: the repository, the keys, the agent. Nothing is touched on the host
    // before every one of these is in hand.
    let local = phase("state repository", async {
        let repo = state::load(&args.state_repo)?;
        let keys = match (&args.identity, &agent_socket) {
            (Some(path), _) => OperatorKeys::from_file(path)?,
            (None, Some(socket)) => OperatorKeys::from_agent(socket).await?,
            (None, None) => unreachable!("checked above: -i or SSH_AUTH_SOCK"),
        };
        let plan = match &args.hostname {
            Some(h) => Some(plan_for(&repo, h, args, &keys)?),
            None => None,
        };
        let (method, note) =
            install::choose_beside_exe(args.agent_deb.as_deref(), args.agent_binary.as_deref())?;
        let (agent, helper) = match &method {
            Method::Deb(path) => (read_local(path, "the infra-agent package")?, None),
            Method::Binary(path) => {
                let helper = install::helper_beside(path)?;
                (
                    read_local(path, "the infra-agent binary")?,
                    Some(read_local(&helper, "the fetch helper")?),
                )
            }
        };
        let deploy_key = args
            .deploy_key
            .as_deref()
            .map(|p| read_local(p, "the deploy key"))
            .transpose()?;
        let git_known_hosts = args
            .git_known_hosts
            .as_deref()
            .map(|p| read_local(p, "the git server's known_hosts"))
            .transpose()?;
        let detail = match &plan {
            Some((p, admin)) => describe_plan(p, admin),
            None => format!(
                "{} (host chosen by its hostname); {} key{} from {}",
                args.state_repo.display(),
                keys.all().len(),
                if keys.all().len() == 1 { "" } else { "s" },
                if args.identity.is_some() {
                    "-i"
                } else {
                    "the ssh-agent"
                }
            ),
        };
        Ok((
            Local {
                repo,
                plan,
                keys,
                agent: (method, agent, note),
                helper,
                deploy_key,
                git_known_hosts,
            },
            detail,
        ))
    })
    .await?;

    let known_hosts_file = match &args.known_hosts {
        Some(path) => path.clone(),
        None => known_hosts::default_path()?,
    };
    let (session, root) = phase("connect", async {
        let (mut session, key_detail) = connect_checked(args, &target, &known_hosts_file).await?;
        let candidates = match &local.plan {
            Some((_, admin)) => std::slice::from_ref(admin),
            None => local.keys.login_candidates(),
        };
        let (root, how) = log_in(args, &target, &mut session, candidates).await?;
        Ok(((session, root), format!("{how}, {key_detail}")))
    })
    .await?;
    let host_key = session.host_key().clone();
    let remote = Remote {
        session: &session,
        root,
    };

    let (found, (plan, admin)) = phase("check target", async {
        let out = remote.root(scripts::CHECK, &[], remote::SHORT).await?;
        if !out.success() {
            let hint = match remote.root {
                Root::Direct => "check that sh works for the user".to_owned(),
                _ => format!("{} needs sudo rights (with its password, or NOPASSWD with -i)", target.user),
            };
            return fail(format!("cannot run commands as root on the host: {}", out.describe()), hint);
        }
        let found = Found {
            kv: key_values(&out.stdout()),
        };
        let what = check_target(&found)?;
        let (plan, admin) = match &local.plan {
            Some(chosen) => chosen.clone(),
            None => plan_for(&local.repo, found.get("hostname"), args, &local.keys)?,
        };
        if state::is_ssh_url(&plan.repository) {
            if local.deploy_key.is_none() && found.get("deploy_key") != "yes" {
                return fail(
                    format!("the agent pulls {} over SSH, and the host has no deploy key", plan.repository),
                    "pass --deploy-key FILE (a private key the git server accepts, read-only)",
                );
            }
            if local.git_known_hosts.is_none() && found.get("git_known_hosts") != "yes" {
                return fail(
                    format!("the agent pulls {} over SSH, and the host has no known_hosts for the git server", plan.repository),
                    "pass --git-known-hosts FILE (the git server's host key line, e.g. from ssh-keyscan, checked out of band)",
                );
            }
        }
        let disabled = found.get("disabled");
        if !disabled.is_empty() && !disabled.contains("\"infra-bootstrap:") {
            return fail(
                format!("infra-agent is disabled on the host by someone else: {disabled}"),
                "run `infra-agent enable` on the host when the reason no longer holds, then infra-bootstrap again",
            );
        }
        let detail = if local.plan.is_some() {
            what
        } else {
            format!("{what}; {}", describe_plan(&plan, &admin))
        };
        Ok(((found, (plan, admin)), detail))
    })
    .await?;

    let tmp = remote.temp_dir().await?;
    let result = converge(
        args, &target, &remote, &local, &found, &plan, &admin, &tmp, &host_key,
    )
    .await;
    remote.remove_dir(&tmp).await;
    drop(remote);
    session.close().await;
    let changed_nothing = result?;

    println!();
    println!(
        "{} is managed by infra-agent: it pulls {} ({}) and converges on its own from now on.",
        plan.hostname, plan.repository, plan.branch
    );
    let port = if args.port == 22 {
        String::new()
    } else {
        format!(" -p {}", args.port)
    };
    println!(
        "  log in:  ssh{} {}@{}{port}",
        admin.ssh_option(),
        plan.admin_user,
        target.host
    );
    println!("  status:  sudo infra-agent status   (on the host)");
    if changed_nothing {
        println!("  nothing changed: the host was already bootstrapped");
    }
    Ok(())
}

/// The plan for `hostname` and the operator's key that proves the admin login,
/// refusing when none of the operator's keys is an admin key.
fn plan_for(
    repo: &infra_agent::state_repo::StateRepo,
    hostname: &str,
    args: &Args,
    keys: &OperatorKeys,
) -> Result<(HostPlan, AdminKey), Failure> {
    let plan = state::plan(repo, hostname, args.repo.as_deref(), args.branch.as_deref())?;
    let admin = keys.choose(&plan.admin_keys, &plan.hostname)?;
    Ok((plan, admin))
}

fn describe_plan(plan: &HostPlan, admin: &AdminKey) -> String {
    let keys = plan.admin_keys.len();
    format!(
        "{} ({}): admin {}, {keys} key{}, proven with {}; pulls {} ({})",
        plan.hostname,
        plan.inventory,
        plan.admin_user,
        if keys == 1 { "" } else { "s" },
        admin.describe(),
        plan.repository,
        plan.branch
    )
}

/// The phases that change the host: install, configure, converge, verify, start.
/// Returns whether nothing at all changed.
#[allow(clippy::too_many_arguments)]
async fn converge(
    args: &Args,
    target: &Target,
    remote: &Remote<'_>,
    local: &Local,
    found: &Found,
    plan: &HostPlan,
    admin: &AdminKey,
    tmp: &str,
    host_key: &PublicKey,
) -> anyhow::Result<bool> {
    let mut changed = false;
    let installed = phase("install agent", install_agent(remote, local, found, tmp)).await?;
    changed |= installed;

    let config_changed = phase("configure agent", async {
        // Settings the host has that the bootstrap does not write (a secrets backend
        // set up beforehand, which the first converge may need) are kept.
        let existing = remote
            .root_ok(
                "reading the host's agent.toml",
                scripts::READ_AGENT_TOML,
                &[state::AGENT_TOML],
                remote::SHORT,
            )
            .await?;
        let toml = state::merged_agent_toml(plan, &existing).map_err(|why| {
            Failure::new(format!(
                "the host's {} does not read as TOML: {why}",
                state::AGENT_TOML
            ))
            .hint("fix or remove it on the host (the bootstrap keeps the settings it does not write itself), then run infra-bootstrap again")
        })?;
        let mut files: Vec<(&str, &[u8], &str)> =
            vec![("agent.toml", toml.as_bytes(), state::AGENT_TOML)];
        if let Some(key) = &local.deploy_key {
            files.push(("deploy_key", key, state::DEPLOY_KEY));
        }
        if let Some(lines) = &local.git_known_hosts {
            files.push(("known_hosts", lines, state::GIT_KNOWN_HOSTS));
        }
        let mut pairs = Vec::new();
        for (name, content, dest) in &files {
            let src = format!("{tmp}/{name}");
            remote.upload(&src, content).await?;
            pairs.push(src);
            pairs.push((*dest).to_owned());
        }
        let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let out = remote
            .root_ok(
                "writing the agent's configuration",
                scripts::CONFIGURE,
                &pairs,
                remote::SHORT,
            )
            .await?;
        let wrote: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("wrote "))
            .collect();
        let detail = if wrote.is_empty() {
            "agent.toml, deploy key and known_hosts unchanged".to_owned()
        } else {
            format!("wrote {} (0600)", wrote.join(", "))
        };
        Ok((!wrote.is_empty(), detail))
    })
    .await?;
    changed |= config_changed;

    let converged = phase("first converge", async {
        remote
            .root_ok(
                "saving /etc/ssh",
                scripts::BEFORE_CONVERGE,
                &[scripts::SSH_BACKUP],
                remote::SHORT,
            )
            .await?;
        let out = remote.root(scripts::CONVERGE, &[], remote::LONG).await?;
        let text = out.stdout();
        let summary = text
            .lines()
            .rev()
            .find(|l| l.contains(" in sync, "))
            .unwrap_or("no summary")
            .to_owned();
        match out.code {
            Some(0 | 2) => Ok((
                (out.code == Some(2), None),
                format!("infra-agent --once: {summary}"),
            )),
            _ => Ok((
                (true, Some(text)),
                format!("infra-agent --once FAILED: {summary}"),
            )),
        }
    })
    .await?;
    let (converge_changed, converge_failure) = converged;
    changed |= converge_changed;

    phase("verify admin login", async {
        match verify_admin(args, target, plan, admin, host_key).await {
            Ok(detail) => Ok(((), detail)),
            Err(why) => {
                let reason = format!(
                    "infra-bootstrap: admin {} could not log in with key {} after the first converge; sshd restored",
                    plan.admin_user,
                    fingerprint(&admin.public)
                );
                let restored = remote
                    .root(
                        scripts::RESTORE,
                        &[scripts::SSH_BACKUP, scripts::SSH_FAILED, &reason],
                        remote::SHORT,
                    )
                    .await;
                let restore_note = match restored {
                    Ok(out) if out.success() => format!(
                        "The sshd configuration from before the converge was restored (the one that failed is in {} on the host) and the agent was disabled, so {} can log in as before.",
                        scripts::SSH_FAILED,
                        target.user
                    ),
                    Ok(out) => format!(
                        "Restoring sshd FAILED too ({}); keep this session's host reachable and check /etc/ssh by hand (the saved copy is {}).",
                        out.describe(),
                        scripts::SSH_BACKUP
                    ),
                    Err(e) => format!(
                        "Restoring sshd FAILED too ({e}); check /etc/ssh by hand (the saved copy is {}).",
                        scripts::SSH_BACKUP
                    ),
                };
                fail(
                    format!(
                        "admin {} cannot log in to {} with the key {} after the first converge: {why}. {restore_note}",
                        plan.admin_user,
                        target.host,
                        admin.describe()
                    ),
                    format!(
                        "make the first_boot role install the public half of {} for {} (`infra-agent data --hostname {}` shows data.admin), push, then run infra-bootstrap again",
                        admin.name(),
                        plan.admin_user,
                        plan.hostname
                    ),
                )
            }
        }
    })
    .await?;

    if let Some(output) = converge_failure {
        return fail(
            format!(
                "the first converge failed, so the daemon was not started:\n{}",
                output.trim_end()
            ),
            "fix the failing steps in the state repository, push, and run infra-bootstrap again",
        );
    }

    let started = phase("start daemon", async {
        let mode = if config_changed { "reload" } else { "keep" };
        let out = remote
            .root_ok(
                "enabling and starting infra-agent",
                scripts::START,
                &[mode],
                remote::SHORT,
            )
            .await?;
        let last = out.lines().last().unwrap_or_default().trim().to_owned();
        match last.as_str() {
            "unchanged" => Ok((false, "infra-agent already enabled and active".to_owned())),
            "reloaded" => Ok((
                true,
                "infra-agent active, reloaded for its new agent.toml".to_owned(),
            )),
            "active" => Ok((true, "infra-agent enabled and active".to_owned())),
            other => fail(
                format!("infra-agent did not start: systemctl says `{other}`"),
                "see `journalctl -u infra-agent` on the host",
            ),
        }
    })
    .await?;
    changed |= started;
    Ok(!changed)
}

/// The install phase: the package with apt-get, or the binary with install.sh.
/// Skipped when the host already has what would be installed. Returns whether it
/// changed the host, and the phase line's detail.
async fn install_agent(
    remote: &Remote<'_>,
    local: &Local,
    found: &Found,
    tmp: &str,
) -> anyhow::Result<(bool, String)> {
    let (method, bytes, note) = &local.agent;
    let sha = sha256_hex(bytes);
    let short = &sha[..12];
    let with_note = |detail: String| match note {
        Some(note) => format!("{detail} ({note})"),
        None => detail,
    };
    // `ii 0.1.0` when the package is installed and configured.
    let deb_installed = found.get("deb_status").strip_prefix("ii").map(str::trim);
    let (script, args, what) = match method {
        Method::Deb(path) => {
            if deb_installed.is_some() && found.get("deb_sha256") == sha {
                return Ok((
                    false,
                    format!("already installed (package sha256 {short}...)"),
                ));
            }
            let name = path
                .file_name()
                .map_or_else(install::deb_name, |n| n.to_string_lossy().into_owned());
            let file = format!("{tmp}/{name}");
            remote.upload(&file, bytes).await?;
            let what = format!("{name} (sha256 {short}... checked), installed with apt-get");
            (
                scripts::INSTALL_DEB,
                vec![file, sha.clone(), scripts::DEB_RECORD.to_owned()],
                what,
            )
        }
        Method::Binary(_) => {
            if let Some(version) = deb_installed {
                // Replacing the package's files behind dpkg's back would leave it
                // believing in files that are no longer there as it installed them.
                return Ok((
                    false,
                    format!(
                        "infra-agent {version} is installed from its Debian package; left as it is (--agent-deb FILE replaces it)"
                    ),
                ));
            }
            let helper = local
                .helper
                .as_deref()
                .expect("a bare binary is read with its helper, in the state repository phase");
            let helper_sha = sha256_hex(helper);
            if found.get("agent_sha256") == sha
                && found.get("fetch_sha256") == helper_sha
                && found.get("unit_sha256") == sha256_hex(UNIT.as_bytes())
            {
                return Ok((
                    false,
                    with_note(format!("already installed (sha256 {short}...)")),
                ));
            }
            remote.upload(&format!("{tmp}/infra-agent"), bytes).await?;
            remote
                .upload(&format!("{tmp}/infra-agent-fetch"), helper)
                .await?;
            remote
                .upload(&format!("{tmp}/infra-agent.service"), UNIT.as_bytes())
                .await?;
            remote
                .upload(&format!("{tmp}/install.sh"), INSTALL_SH.as_bytes())
                .await?;
            let what = format!(
                "/usr/bin/infra-agent (sha256 {short}... checked), infra-agent-fetch and infra-agent.service"
            );
            (
                scripts::INSTALL,
                vec![tmp.to_owned(), sha.clone(), helper_sha],
                what,
            )
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = remote.root(script, &args, remote::LONG).await?;
    if out.code == Some(3) {
        return fail(
            format!(
                "an upload does not match its checksum: {}",
                out.stderr().trim()
            ),
            "the upload was damaged on the way; run infra-bootstrap again",
        );
    }
    if !out.success() {
        let hint = match method {
            Method::Deb(_) => {
                "see apt-get's message above; `dpkg --audit` on the host shows a half-installed package"
            }
            Method::Binary(_) => {
                "see packaging/install.sh; the host is as it was before the install"
            }
        };
        return fail(
            format!("installing the agent failed: {}", out.describe()),
            hint,
        );
    }
    Ok((true, with_note(what)))
}

/// Logs in as the admin in a new session (same host key) and checks who it is.
async fn verify_admin(
    args: &Args,
    target: &Target,
    plan: &HostPlan,
    admin: &AdminKey,
    host_key: &PublicKey,
) -> Result<String, String> {
    let timeout = Duration::from_secs(args.connect_timeout);
    let started = Instant::now();
    let mut session = loop {
        let expected = host_key.clone();
        let rule = Box::new(move |k: &PublicKey| k.key_data() == expected.key_data());
        match Session::connect(&target.host, args.port, timeout, rule).await {
            Ok(s) => break s,
            Err(ConnectError::HostKey(k)) => {
                return Err(format!(
                    "the host showed another host key ({})",
                    fingerprint(&k)
                ));
            }
            // The converge may have just reloaded sshd, which re-executes itself: for
            // a moment nothing accepts (or a forwarding proxy accepts and hangs up).
            Err(ConnectError::Unreachable(_)) if started.elapsed() < SSHD_SETTLE => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(ConnectError::Unreachable(why)) => {
                return Err(format!("cannot connect again: {why}"));
            }
        }
    };
    let result = async {
        match session.key(&plan.admin_user, admin).await {
            Ok(true) => {}
            Ok(false) => return Err("sshd refused the key".to_owned()),
            Err(e) => return Err(e.message),
        }
        let out = session
            .exec("id -un", b"", remote::SHORT)
            .await
            .map_err(|e| e.message)?;
        if out.stdout().trim() == plan.admin_user {
            Ok(format!(
                "{}@{} with key {} in a new session",
                plan.admin_user,
                target.host,
                admin.describe()
            ))
        } else {
            Err(format!("logged in, but `id -un` says {}", out.describe()))
        }
    }
    .await;
    session.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_reference_is_read_with_op_and_a_path_from_disk() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let op = dir.path().join("op");
        std::fs::write(&op, "#!/bin/sh\nprintf 'key-material'\n").unwrap();
        std::fs::set_permissions(&op, std::fs::Permissions::from_mode(0o755)).unwrap();
        let op = op.display().to_string();
        let from_op = read_local_with(Path::new("op://lab/deploy/key"), "the deploy key", &op);
        assert_eq!(from_op.unwrap(), b"key-material\n");
        let file = dir.path().join("key");
        std::fs::write(&file, b"from disk").unwrap();
        assert_eq!(
            read_local_with(&file, "the deploy key", &op).unwrap(),
            b"from disk"
        );
    }

    fn found(pairs: &[(&str, &str)]) -> Found {
        let mut kv: std::collections::BTreeMap<String, String> = [
            ("id", "debian"),
            ("pretty", "Debian GNU/Linux 12 (bookworm)"),
            ("arch", "x86_64"),
            ("pid1", "systemd"),
            ("uid", "0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            kv.insert((*k).to_owned(), (*v).to_owned());
        }
        Found { kv }
    }

    #[test]
    fn accepts_debian_and_its_derivatives_on_x86_64() {
        assert_eq!(
            check_target(&found(&[])).unwrap(),
            "Debian GNU/Linux 12 (bookworm), x86_64, systemd"
        );
        assert!(check_target(&found(&[("id", "ubuntu")])).is_ok());
        assert!(check_target(&found(&[("id", "pop"), ("id_like", "ubuntu debian")])).is_ok());
    }

    #[test]
    fn names_what_it_found_on_an_unsupported_host() {
        let err =
            check_target(&found(&[("id", "fedora"), ("pretty", "Fedora Linux 40")])).unwrap_err();
        assert!(
            err.message.contains("Fedora Linux 40 (ID=fedora)"),
            "{err:?}"
        );
        assert!(err.message.contains("Debian and Ubuntu only"), "{err:?}");

        let err = check_target(&found(&[("arch", "aarch64")])).unwrap_err();
        assert!(err.message.contains("says aarch64"), "{err:?}");
        assert!(err.message.contains("arm64 is a future target"), "{err:?}");
        let err = check_target(&found(&[("arch", "riscv64")])).unwrap_err();
        assert!(err.message.contains("riscv64"), "{err:?}");
        assert!(!err.message.contains("arm64"), "{err:?}");

        let err = check_target(&found(&[("pid1", "init")])).unwrap_err();
        assert!(err.message.contains("`init`, not systemd"), "{err:?}");
        let err = check_target(&found(&[("uid", "1000")])).unwrap_err();
        assert!(err.message.contains("do not run as root"), "{err:?}");
    }
}
