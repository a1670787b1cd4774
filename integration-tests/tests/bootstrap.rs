//! `infra-bootstrap root@host` against containers that behave like a fresh provider
//! image (a root password, `PermitRootLogin yes`, `PasswordAuthentication yes`): the
//! proofs of the bootstrap issue.
//!
//! One test with containers: one network, one git server and two hosts booted side by
//! side (container boots cost seconds), walking through the situations in order:
//! - on `lab-01`: a wrong password, a changed host key, a repository without admin
//!   key, a wrong `--host-key` pin, an OS that is not Debian (with the right pin) and
//!   an aarch64 `uname` (with the host-key question answered on a terminal) are
//!   refused with the host untouched; then the full bootstrap with the admin key in
//!   an ssh-agent (agent active, root password login refused, admin key login works);
//!   a second run as the admin with `--sudo -i KEY` changes nothing;
//! - on `lab-02`, whose `first_boot` installs a key that is not the operator's: the
//!   admin login fails, sshd is restored, the agent disabled, and the message says why;
//!   then, made like an image with a sudo user (`debian`, a password, no root login)
//!   and with the role fixed, `debian@host --sudo --password-file F -i KEY` bootstraps it.
//!
//! One test without containers: what is refused before connecting (an encrypted `-i`
//! key, no key at all, an ssh-agent with no admin key) and unreachable hosts (a closed
//! port, a server that never speaks) within the connect timeout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::git_server::GitServer;
use integration_tests::process::{self, Output};
use integration_tests::stage_support::key_pair;
use integration_tests::{Network, TestHost, binary, first_boot_role, write_tree};

const ROOT_PASSWORD: &str = "provider-root-pw";
/// The password of the image's sudo user `debian` (lab-02's second life).
const SUDO_PASSWORD: &str = "provider-debian-pw";
const ADMIN: &str = "alice";
/// A bootstrap installs packages at most; bounded anyway.
const RUN_TIMEOUT: Duration = Duration::from_mins(15);

/// Makes a host behave like a fresh provider image: root logs in with a password.
fn provider_image(host: &TestHost) {
    let set = host.exec_with(
        &[],
        &["chpasswd"],
        Some(format!("root:{ROOT_PASSWORD}\n").as_bytes()),
    );
    assert!(set.success(), "chpasswd: {set}");
    host.write_file(
        "/etc/ssh/sshd_config.d/50-provider.conf",
        "PermitRootLogin yes\nPasswordAuthentication yes\n",
    );
    host.exec_ok(&["systemctl", "reload", "ssh.service"]);
}

/// The state repository: lab-01 gets the right `first_boot`, lab-02 one that installs
/// `wrong_key` instead of data.admin.keys.
fn state_repo(dir: &Path, url: &str, admin_keys: &[&str], wrong_key: &str) {
    let keys: Vec<String> = admin_keys.iter().map(|k| format!("\"{k}\"")).collect();
    write_tree(
        dir,
        &[
            (
                "infra.toml",
                &format!("format = 1\n\n[bootstrap]\nrepository = \"{url}\"\nbranch = \"main\"\n"),
            ),
            (
                "inventory/production.toml",
                "[groups.good]\nhosts = [\"lab-01\"]\nroles = [\"first_boot\"]\n\n[groups.bad]\nhosts = [\"lab-02\"]\nroles = [\"first_boot_wrong\"]\n",
            ),
            (
                "group_data/all.toml",
                &format!(
                    "[admin]\nuser = \"{ADMIN}\"\nkeys = [{}]\n",
                    keys.join(", ")
                ),
            ),
            (
                "roles/first_boot.toml",
                &first_boot_role("{ data = \"admin.keys\" }"),
            ),
            (
                "roles/first_boot_wrong.toml",
                &first_boot_role(&format!("[\"{wrong_key}\"]")),
            ),
        ],
    );
}

/// Local files of the operator: keys, password, `known_hosts`; with `agent`, the
/// admin key comes from the ssh-agent on that socket instead of `-i key`.
#[derive(Clone)]
struct Operator {
    key: PathBuf,
    agent: Option<PathBuf>,
    password: PathBuf,
    known_hosts: PathBuf,
    deploy_key: PathBuf,
    git_known_hosts: PathBuf,
}

/// The infra-bootstrap command line for a run as `op`. `SSH_AUTH_SOCK` is set only
/// for a run through the agent, so the caller's own agent never plays a part.
fn bootstrap_command(
    repo: &Path,
    target: &str,
    port: u16,
    extra: &[&str],
    op: &Operator,
) -> Command {
    let mut cmd = process::command(binary("infra-bootstrap"));
    cmd.current_dir(repo)
        .arg(target)
        .args(["--port", &port.to_string()]);
    match &op.agent {
        Some(socket) => cmd.env("SSH_AUTH_SOCK", socket),
        None => cmd.env_remove("SSH_AUTH_SOCK").arg("-i").arg(&op.key),
    };
    cmd.arg("--known-hosts")
        .arg(&op.known_hosts)
        .arg("--deploy-key")
        .arg(&op.deploy_key)
        .arg("--git-known-hosts")
        .arg(&op.git_known_hosts)
        .args(extra);
    cmd
}

fn bootstrap(repo: &Path, target: &str, port: u16, extra: &[&str], op: &Operator) -> Output {
    let out = process::run(
        &mut bootstrap_command(repo, target, port, extra, op),
        None,
        RUN_TIMEOUT,
    );
    eprintln!("--- infra-bootstrap {target} {extra:?}\n{out}");
    out
}

/// Runs infra-bootstrap on a terminal (a pty made by util-linux `script`), typing
/// `answer` there: what the host-key question reads from /dev/tty. stdout and stderr
/// both arrive in `stdout`.
fn bootstrap_on_a_terminal(
    repo: &Path,
    target: &str,
    port: u16,
    extra: &[&str],
    op: &Operator,
    answer: &str,
) -> Output {
    let inner = bootstrap_command(repo, target, port, extra, op);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = quote(inner.get_program());
    for arg in inner.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let mut cmd = process::command("script");
    cmd.args(["-qec", &line, "/dev/null"]).current_dir(repo);
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    let out = process::run(&mut cmd, Some(answer.as_bytes()), RUN_TIMEOUT);
    eprintln!("--- infra-bootstrap {target} {extra:?} on a terminal, answering {answer:?}\n{out}");
    out
}

/// An ssh-agent of the test's own (`ssh-agent -D`), stopped when dropped.
struct SshAgent {
    child: Child,
    socket: PathBuf,
}

impl SshAgent {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = process::command("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        let agent = Self { child, socket };
        let started = Instant::now();
        while !agent.socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ssh-agent made no socket at {} within 10s",
                agent.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// `ssh-add KEY` into this agent.
    fn add(&self, key: &Path) {
        let out = process::run(
            process::command("ssh-add")
                .env("SSH_AUTH_SOCK", &self.socket)
                .arg(key),
            None,
            Duration::from_secs(30),
        );
        assert!(out.success(), "ssh-add {}: {out}", key.display());
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SHA256 fingerprint of the first key in `file` (a public key or `known_hosts`),
/// as `ssh-keygen -lf` shows it.
fn fingerprint_of(file: &Path) -> String {
    let out = process::run(
        process::command("ssh-keygen").arg("-lf").arg(file),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "ssh-keygen -lf {}: {out}", file.display());
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {out}"))
        .to_owned()
}

#[test]
fn bootstrap_a_fresh_host_refuse_what_it_must_and_restore_sshd_when_the_admin_key_fails() {
    let net = Network::create("bootstrap");
    let (git, one, two) = std::thread::scope(|s| {
        let git = s.spawn(|| GitServer::start(&net));
        let one = s.spawn(|| {
            TestHost::options("lab-01")
                .network(&net)
                .without_agent()
                .start()
        });
        let two = s.spawn(|| {
            TestHost::options("lab-02")
                .network(&net)
                .without_agent()
                .start()
        });
        (
            git.join().expect("the git server starts"),
            one.join().expect("lab-01 starts"),
            two.join().expect("lab-02 starts"),
        )
    });
    provider_image(&one);
    provider_image(&two);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let (key, public) = key_pair(dir.path(), "operator");
    let (stranger_private, stranger) = key_pair(dir.path(), "stranger");
    let op = Operator {
        key: key.clone(),
        agent: None,
        password: dir.path().join("password"),
        known_hosts: dir.path().join("known_hosts"),
        deploy_key: dir.path().join("deploy_key"),
        git_known_hosts: dir.path().join("git_known_hosts"),
    };
    std::fs::write(&op.password, format!("{ROOT_PASSWORD}\n")).unwrap();
    std::fs::write(&op.deploy_key, git.deploy_key_private()).unwrap();
    std::fs::write(&op.git_known_hosts, format!("{}\n", git.known_hosts_line())).unwrap();

    let repo = tempfile::tempdir().expect("a temporary directory");
    state_repo(repo.path(), &git.url(), &[&public], &stranger);
    let work = git.work();
    work.copy_tree_in(repo.path());
    work.commit("first boot");
    work.push();

    let untouched = [
        "/usr/bin/infra-agent",
        "/etc/infra-agent",
        "/etc/ssh/sshd_config.d/00-infra.conf",
    ];
    let absent = |host: &TestHost| host.snapshot(&untouched).values().all(|s| s == "absent");
    let port = one.ssh_port();
    let root = "root@127.0.0.1";
    let password = op.password.to_str().unwrap().to_owned();
    let first_run = ["--password-file", password.as_str(), "--accept-new"];

    // A wrong password: refused, explained, nothing touched.
    let wrong = op.password.with_file_name("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let run = bootstrap(
        repo.path(),
        root,
        port,
        &["--password-file", wrong.to_str().unwrap(), "--accept-new"],
        &op,
    );
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("password for root@127.0.0.1 was refused"),
        "{run}"
    );
    assert!(run.stderr.contains("--sudo"), "{run}");
    assert!(absent(&one));

    // A changed host key: refused, both fingerprints shown.
    let recorded = std::fs::read_to_string(&op.known_hosts).expect("the key was recorded");
    assert!(
        recorded
            .trim_start()
            .starts_with(&format!("[127.0.0.1]:{port} ssh-")),
        "{recorded}"
    );
    let stranger_key: Vec<&str> = stranger.split_whitespace().take(2).collect();
    std::fs::write(
        &op.known_hosts,
        format!("[127.0.0.1]:{port} {}\n", stranger_key.join(" ")),
    )
    .unwrap();
    let run = bootstrap(repo.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("CHANGED"), "{run}");
    assert_eq!(run.stderr.matches("SHA256:").count(), 2, "{run}");
    assert!(absent(&one));
    std::fs::write(&op.known_hosts, recorded).unwrap();

    // No admin key in the repository: refused by the read-only check, nothing changed.
    let keyless = tempfile::tempdir().expect("a temporary directory");
    state_repo(keyless.path(), &git.url(), &[], &stranger);
    let run = bootstrap(keyless.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("no admin key"), "{run}");
    assert!(absent(&one));

    // A wrong --host-key pin: refused, nothing recorded, nothing touched.
    let host_fp = fingerprint_of(&op.known_hosts);
    let wrong_pin = fingerprint_of(&stranger_private.with_extension("pub"));
    let pinned = Operator {
        known_hosts: op.known_hosts.with_file_name("pinned_known_hosts"),
        ..op.clone()
    };
    let run = bootstrap(
        repo.path(),
        root,
        port,
        &["--password-file", &password, "--host-key", &wrong_pin],
        &pinned,
    );
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains(&format!("is {host_fp}, not the pinned {wrong_pin}")),
        "{run}"
    );
    assert!(!pinned.known_hosts.exists(), "a refused key was recorded");
    assert!(absent(&one));

    // The right pin passes (and records the key); an OS that is not Debian or Ubuntu
    // is refused by name before anything is changed.
    one.sh("mv /etc/os-release /etc/os-release.real && printf 'ID=fedora\nPRETTY_NAME=\"Fedora Linux 40\"\n' >/etc/os-release");
    let run = bootstrap(
        repo.path(),
        root,
        port,
        &["--password-file", &password, "--host-key", &host_fp],
        &pinned,
    );
    one.sh("rm /etc/os-release && mv /etc/os-release.real /etc/os-release");
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("connect") && l.contains(&host_fp)),
        "{run}"
    );
    assert!(
        run.stderr.contains(
            "unsupported operating system: /etc/os-release says Fedora Linux 40 (ID=fedora)"
        ),
        "{run}"
    );
    assert_eq!(fingerprint_of(&pinned.known_hosts), host_fp);
    assert!(absent(&one));

    // An arm64 host (uname shadowed in /usr/local/bin, first on root's PATH) is
    // refused as a future target. The host key is unknown and neither pinned nor
    // --accept-new: the question on the terminal decides. "no" stops there.
    one.write_file(
        "/usr/local/bin/uname",
        "#!/bin/sh\nif [ \"$1\" = -m ]; then echo aarch64; else exec /usr/bin/uname \"$@\"; fi\n",
    );
    one.exec_ok(&["chmod", "755", "/usr/local/bin/uname"]);
    let asked = Operator {
        known_hosts: op.known_hosts.with_file_name("asked_known_hosts"),
        ..op.clone()
    };
    let by_password = ["--password-file", password.as_str()];
    let run = bootstrap_on_a_terminal(repo.path(), root, port, &by_password, &asked, "no\n");
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains(&format!("fingerprint is {host_fp}")),
        "{run}"
    );
    assert!(
        run.stdout.contains("Trust it and record it? (yes/no)"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("the host key {host_fp} was not accepted")),
        "{run}"
    );
    assert!(!asked.known_hosts.exists(), "a refused key was recorded");
    let run = bootstrap_on_a_terminal(repo.path(), root, port, &by_password, &asked, "yes\n");
    one.exec_ok(&["rm", "/usr/local/bin/uname"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("Trust it and record it? (yes/no)"),
        "{run}"
    );
    assert!(run.stdout.contains("uname -m` says aarch64"), "{run}");
    assert!(run.stdout.contains("arm64 is a future target"), "{run}");
    assert_eq!(fingerprint_of(&asked.known_hosts), host_fp);
    assert!(absent(&one));

    // The full bootstrap, with the admin key in an ssh-agent (no -i) that holds a
    // key which is not an admin key first: the admin key is chosen and proves the
    // admin login in the verify phase.
    let agent_dir = tempfile::tempdir().expect("a temporary directory");
    let agent = SshAgent::start(agent_dir.path());
    agent.add(&stranger_private);
    agent.add(&key);
    let via_agent = Operator {
        agent: Some(agent.socket.clone()),
        key: PathBuf::from("/nonexistent: no -i through the agent"),
        ..op.clone()
    };
    let run = bootstrap(repo.path(), root, port, &first_run, &via_agent);
    drop(agent);
    assert_eq!(run.code, 0, "{run}");
    let admin_fp = fingerprint_of(&key.with_extension("pub"));
    assert!(
        run.stdout.lines().any(|l| l.starts_with("ok")
            && l.contains("check target")
            && l.contains(&format!("proven with {admin_fp} (ssh-agent: "))),
        "the agent's admin key is named as the one used: {run}"
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("ok")
            && l.contains("verify admin login")
            && l.contains(&format!(
                "{ADMIN}@127.0.0.1 with key {admin_fp} (ssh-agent: "
            ))),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("log in:  ssh {ADMIN}@127.0.0.1 -p {port}")),
        "{run}"
    );
    for phase in [
        "state repository",
        "connect",
        "check target",
        "install agent",
        "configure agent",
        "first converge",
        "verify admin login",
        "start daemon",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(phase)),
            "no ok line for {phase}: {run}"
        );
    }
    assert_eq!(one.sh("systemctl is-active infra-agent").trim(), "active");
    assert_eq!(one.sh("systemctl is-enabled infra-agent").trim(), "enabled");
    assert_eq!(
        one.sh("stat -c %a /etc/infra-agent/agent.toml /etc/infra-agent/deploy_key"),
        "600\n600\n"
    );
    assert!(
        one.read_file("/etc/infra-agent/agent.toml")
            .contains(&git.url())
    );
    assert_eq!(
        one.sh(&format!(
            "su -s /bin/sh -c 'cat ~/.ssh/authorized_keys' {ADMIN}"
        ))
        .trim(),
        public
    );

    // Root password login is refused now, and the message says why.
    let run = bootstrap(repo.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("does not accept password login"),
        "{run}"
    );

    // A second run, as the admin with the key: changes nothing.
    let watched = [
        "/usr/bin/infra-agent",
        "/lib/systemd/system/infra-agent.service",
        "/etc/infra-agent/agent.toml",
        "/etc/infra-agent/deploy_key",
        "/etc/infra-agent/known_hosts",
        "/etc/ssh/sshd_config.d/00-infra.conf",
        "/etc/sudoers.d/90-infra-admin",
    ];
    let before = one.snapshot(&watched);
    let pid = one.sh("systemctl show -p MainPID --value infra-agent");
    let admin = format!("{ADMIN}@127.0.0.1");
    let run = bootstrap(repo.path(), &admin, port, &["--sudo"], &op);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("already installed"), "{run}");
    assert!(run.stdout.contains("unchanged"), "{run}");
    assert!(run.stdout.contains("0 changed"), "{run}");
    assert!(run.stdout.contains("nothing changed"), "{run}");
    assert_eq!(one.snapshot(&watched), before);
    assert_eq!(one.sh("systemctl show -p MainPID --value infra-agent"), pid);

    // lab-02: its first_boot installs another key; the admin login fails, sshd comes back.
    let port = two.ssh_port();
    let run = bootstrap(repo.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("cannot log in"), "{run}");
    assert!(run.stderr.contains("restored"), "{run}");
    assert!(run.stderr.contains("disabled"), "{run}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("FAILED") && l.contains("verify admin login")),
        "{run}"
    );
    assert_eq!(
        two.snapshot(&["/etc/ssh/sshd_config.d/00-infra.conf"])["/etc/ssh/sshd_config.d/00-infra.conf"],
        "absent"
    );
    let effective = two.sh("sshd -T | grep -E '^(permitrootlogin|passwordauthentication) '");
    assert!(effective.contains("permitrootlogin yes"), "{effective}");
    assert!(
        effective.contains("passwordauthentication yes"),
        "{effective}"
    );
    let status = two.exec(&["infra-agent", "status"]);
    assert!(
        status
            .stdout
            .contains("infra-bootstrap: admin alice could not log in"),
        "{status}"
    );
    assert_ne!(
        two.exec(&["systemctl", "is-active", "infra-agent"])
            .stdout
            .trim(),
        "active"
    );

    // lab-02 as an image with a sudo user: `debian` with a password, no root login.
    // With its first_boot fixed and pushed, `debian@host --sudo` bootstraps it (and
    // re-enables the agent the failed bootstrap disabled).
    two.exec_ok(&["useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "debian"]);
    let set = two.exec_with(
        &[],
        &["chpasswd"],
        Some(format!("debian:{SUDO_PASSWORD}\n").as_bytes()),
    );
    assert!(set.success(), "chpasswd: {set}");
    two.write_file(
        "/etc/ssh/sshd_config.d/50-provider.conf",
        "PermitRootLogin no\nPasswordAuthentication yes\n",
    );
    two.exec_ok(&["systemctl", "reload", "ssh.service"]);
    write_tree(
        repo.path(),
        &[(
            "inventory/production.toml",
            "[groups.good]\nhosts = [\"lab-01\", \"lab-02\"]\nroles = [\"first_boot\"]\n",
        )],
    );
    work.copy_tree_in(repo.path());
    work.commit("lab-02 gets the first_boot that installs the admin keys");
    work.push();
    let sudo_password = op.password.with_file_name("sudo-password");
    std::fs::write(&sudo_password, format!("{SUDO_PASSWORD}\n")).unwrap();
    let run = bootstrap(
        repo.path(),
        "debian@127.0.0.1",
        port,
        &["--sudo", "--password-file", sudo_password.to_str().unwrap()],
        &op,
    );
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("ok")
            && l.contains("connect")
            && l.contains("debian@127.0.0.1 with a password")),
        "{run}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("verify admin login")),
        "{run}"
    );
    assert_eq!(two.sh("systemctl is-active infra-agent").trim(), "active");
    assert_eq!(two.sh("systemctl is-enabled infra-agent").trim(), "enabled");
    assert_eq!(
        two.snapshot(&["/var/lib/infra-agent/disabled.json"])["/var/lib/infra-agent/disabled.json"],
        "absent",
        "the agent is still disabled"
    );
    assert_eq!(
        two.sh(&format!(
            "su -s /bin/sh -c 'cat ~/.ssh/authorized_keys' {ADMIN}"
        ))
        .trim(),
        public
    );
    let effective = two.sh("sshd -T | grep -E '^passwordauthentication '");
    assert!(
        effective.contains("passwordauthentication no"),
        "{effective}"
    );
}

#[test]
fn bootstrap_refuses_before_connecting_and_gives_up_on_an_unreachable_host_in_time() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (key, public) = key_pair(dir.path(), "operator");
    let (stranger_private, stranger) = key_pair(dir.path(), "stranger");
    let op = Operator {
        key: key.clone(),
        agent: None,
        password: dir.path().join("password"),
        known_hosts: dir.path().join("known_hosts"),
        deploy_key: dir.path().join("deploy_key"),
        git_known_hosts: dir.path().join("git_known_hosts"),
    };
    std::fs::write(&op.password, "any\n").unwrap();
    std::fs::write(&op.deploy_key, "not used: nothing gets that far\n").unwrap();
    std::fs::write(&op.git_known_hosts, "not used\n").unwrap();
    let repo = tempfile::tempdir().expect("a temporary directory");
    state_repo(
        repo.path(),
        "ssh://git@git.invalid/srv/git/infra.git",
        &[&public],
        &stranger,
    );
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = "root@127.0.0.1";
    let first_run = [
        "--password-file",
        op.password.to_str().unwrap(),
        "--accept-new",
    ];
    let not_connected = |run: &Output| !run.stdout.contains("connect") && !op.known_hosts.exists();

    // An encrypted -i key: refused with a pointer to the ssh-agent.
    let encrypted = dir.path().join("encrypted");
    let out = process::run(
        process::command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
            .arg(&encrypted),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "ssh-keygen: {out}");
    let with_encrypted = Operator {
        key: encrypted.clone(),
        ..op.clone()
    };
    let run = bootstrap(repo.path(), target, closed, &first_run, &with_encrypted);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("is encrypted with a passphrase"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&format!("ssh-add {}", encrypted.display())),
        "{run}"
    );
    assert!(not_connected(&run), "{run}");

    // No -i and no ssh-agent: a usage error that names both.
    let agent_dir = tempfile::tempdir().expect("a temporary directory");
    let agent = SshAgent::start(agent_dir.path());
    let via_agent = Operator {
        agent: Some(agent.socket.clone()),
        ..op.clone()
    };
    let mut cmd = bootstrap_command(repo.path(), target, closed, &first_run, &via_agent);
    cmd.env_remove("SSH_AUTH_SOCK");
    let run = process::run(&mut cmd, None, RUN_TIMEOUT);
    assert_eq!(run.code, 64, "{run}");
    assert!(run.stderr.contains("no -i KEY, and no ssh-agent"), "{run}");

    // An ssh-agent without keys, then one whose only key is not an admin key: refused
    // before connecting, naming the agent's key.
    let run = bootstrap(repo.path(), target, closed, &first_run, &via_agent);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("holds no keys"), "{run}");
    assert!(not_connected(&run), "{run}");
    agent.add(&stranger_private);
    let with_host = [&first_run[..], &["--hostname", "lab-01"]].concat();
    let run = bootstrap(repo.path(), target, closed, &with_host, &via_agent);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("none of the keys in the ssh-agent"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&fingerprint_of(&stranger_private.with_extension("pub"))),
        "{run}"
    );
    assert!(not_connected(&run), "{run}");
    drop(agent);

    // A closed port: refused at once, with the cause.
    let started = Instant::now();
    let run = bootstrap(repo.path(), target, closed, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach 127.0.0.1:{closed}")),
        "{run}"
    );
    assert!(run.stderr.contains("refused"), "{run}");
    assert!(run.stderr.contains("--connect-timeout"), "{run}");
    assert!(started.elapsed() < Duration::from_secs(20), "{run}");

    // A server that accepts the connection and never speaks: given up after
    // --connect-timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = silent.local_addr().expect("its address").port();
    let started = Instant::now();
    let run = bootstrap(
        repo.path(),
        target,
        port,
        &[&first_run[..], &["--connect-timeout", "2"]].concat(),
        &op,
    );
    let took = started.elapsed();
    drop(silent);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "cannot reach 127.0.0.1:{port}: no SSH server answered within 2s"
        )),
        "{run}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "gave up after {took:?}: {run}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}: {run}");
}
