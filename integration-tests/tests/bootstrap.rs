//! `infra-bootstrap root@host` against containers that behave like a fresh provider
//! image (a root password, `PermitRootLogin yes`, `PasswordAuthentication yes`): the
//! proofs of the bootstrap issue.
//!
//! One test, one network, one git server and two hosts booted side by side (container
//! boots cost seconds), walking through the situations in order:
//! - on `lab-01`: a wrong password, a changed host key and a repository without admin
//!   key are refused with the host untouched; then the full bootstrap (agent active,
//!   root password login refused, admin key login works); a second run as the admin
//!   with `--sudo` changes nothing;
//! - on `lab-02`, whose `first_boot` installs a key that is not the operator's: the
//!   admin login fails, sshd is restored, the agent disabled, and the message says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::git_server::GitServer;
use integration_tests::process::{self, Output};
use integration_tests::{Network, TestHost, binary, write_tree};

const ROOT_PASSWORD: &str = "provider-root-pw";
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

/// An ed25519 key pair made with ssh-keygen in `dir`: (private key path, public line).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
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

/// The first_boot-like role: the admin with `keys_expr` as its authorized keys, sudo
/// without password, and the sshd lockdown.
fn first_boot(keys_expr: &str) -> String {
    format!(
        r#"
[[step]]
id = "admin-user"
type = "user"
name = "{{{{data.admin.user}}}}"
shell = "/bin/bash"
groups = ["sudo"]

[[step]]
id = "admin-keys"
type = "authorized_keys"
user = "{{{{data.admin.user}}}}"
keys = {keys_expr}
requires = ["admin-user"]

[[step]]
id = "sudoers"
type = "file"
path = "/etc/sudoers.d/90-infra-admin"
content = "{{{{data.admin.user}}}} ALL=(ALL:ALL) NOPASSWD: ALL\n"
mode = "0440"
validate = ["visudo", "-cf", "{{path}}"]
requires = ["admin-user"]

[[step]]
id = "sshd-dropin"
type = "file"
path = "/etc/ssh/sshd_config.d/00-infra.conf"
content = "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
mode = "0644"
validate = ["sshd", "-t", "-f", "{{path}}"]
requires = ["admin-keys", "sudoers"]
notify = ["sshd"]

[[step]]
id = "sshd"
type = "service"
name = "ssh"
state = "running"
on_notify = "reload"
"#
    )
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
                &first_boot("{ data = \"admin.keys\" }"),
            ),
            (
                "roles/first_boot_wrong.toml",
                &first_boot(&format!("[\"{wrong_key}\"]")),
            ),
        ],
    );
}

/// Local files of the operator: keys, password, `known_hosts`.
struct Operator {
    _dir: tempfile::TempDir,
    key: PathBuf,
    password: PathBuf,
    known_hosts: PathBuf,
    deploy_key: PathBuf,
    git_known_hosts: PathBuf,
}

fn bootstrap(repo: &Path, target: &str, port: u16, extra: &[&str], op: &Operator) -> Output {
    let mut cmd = process::command(binary("infra-bootstrap"));
    cmd.current_dir(repo)
        .arg(target)
        .args(["--port", &port.to_string(), "-i"])
        .arg(&op.key)
        .arg("--known-hosts")
        .arg(&op.known_hosts)
        .arg("--deploy-key")
        .arg(&op.deploy_key)
        .arg("--git-known-hosts")
        .arg(&op.git_known_hosts)
        .args(extra);
    let out = process::run(&mut cmd, None, RUN_TIMEOUT);
    eprintln!("--- infra-bootstrap {target} {extra:?}\n{out}");
    out
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
    let (_, stranger) = key_pair(dir.path(), "stranger");
    let op = Operator {
        key,
        password: dir.path().join("password"),
        known_hosts: dir.path().join("known_hosts"),
        deploy_key: dir.path().join("deploy_key"),
        git_known_hosts: dir.path().join("git_known_hosts"),
        _dir: dir,
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

    // No admin key in the repository: refused before connecting.
    let keyless = tempfile::tempdir().expect("a temporary directory");
    state_repo(keyless.path(), &git.url(), &[], &stranger);
    let run = bootstrap(keyless.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("no admin key"), "{run}");
    assert!(absent(&one));

    // The full bootstrap.
    let run = bootstrap(repo.path(), root, port, &first_run, &op);
    assert_eq!(run.code, 0, "{run}");
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
}
