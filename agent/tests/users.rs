//! The `user`, `group` and `authorized_keys` steps and the lockout guard, against a
//! `FakeHost` whose /etc/passwd and /etc/group are fake files and whose `useradd`,
//! `usermod`, `userdel`, `groupadd`, `groupmod` and `groupdel` edit them (a small
//! model of the real tools, below). Tables of cases: what `plan` says, the exact argv
//! `apply` runs, and that a second plan is in sync; then engine runs of whole roles.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::slice::from_ref;

use infra_agent::catalog::{self, Catalog};
use infra_agent::engine::{self, Options, RunReport, Status};
use infra_agent::facts::Facts;
use infra_agent::host::fake::Node;
use infra_agent::host::{FakeHost, Host};
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::report;
use infra_agent::resource::lockout::{self, Proposal};
use infra_agent::resource::{self, ChangeKind, Ctx};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource, RepoSource};
use infra_agent::step::Presence;
use infra_agent::step::StepKind;
use infra_agent::step::authorized_keys::{AuthorizedKeysStep, parse_key};
use infra_agent::step::group::GroupStep;
use infra_agent::step::user::UserStep;

const STATE_DIR: &str = "/var/lib/infra-agent";

// ---- the machine ----

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/bin/bash
";

const GROUP: &str = "\
root:x:0:
adm:x:4:alice
sudo:x:27:alice
alice:x:1000:
bob:x:1001:
docker:x:999:
";

/// A test public key: an ed25519 key whose 32 key bytes are all `n`.
fn key(n: u8) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[n; 32]);
    format!("ssh-ed25519 {}", base64(&blob))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read(host: &FakeHost, path: &str) -> String {
    host.file(path)
        .map(|(bytes, ..)| String::from_utf8(bytes).expect("UTF-8"))
        .unwrap_or_default()
}

fn write_db(host: &FakeHost, path: &str, text: &str) {
    host.set_node(
        path,
        Some(Node::File {
            content: text.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }),
    );
}

fn ok() -> CmdOutput {
    CmdOutput {
        code: Some(0),
        ..CmdOutput::default()
    }
}

fn fail(code: i32, stderr: &str) -> CmdOutput {
    CmdOutput {
        code: Some(code),
        stderr: stderr.as_bytes().to_vec(),
        ..CmdOutput::default()
    }
}

/// `--flag value` options and the final positional name of an account command.
fn options(cmd: &Cmd) -> (BTreeMap<String, String>, String) {
    const WITH_VALUE: &[&str] = &[
        "--uid",
        "--gid",
        "--comment",
        "--home-dir",
        "--home",
        "--shell",
        "--groups",
    ];
    let mut opts = BTreeMap::new();
    let mut name = String::new();
    let mut args = cmd.args.iter();
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            opts.insert(a.clone(), args.next().cloned().unwrap_or_default());
        } else if a.starts_with("--") {
            opts.insert(a.clone(), String::new());
        } else {
            name.clone_from(a);
        }
    }
    (opts, name)
}

/// Lines of a database, each split on `:`.
fn rows(host: &FakeHost, path: &str) -> Vec<Vec<String>> {
    read(host, path)
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

fn save(host: &FakeHost, path: &str, rows: &[Vec<String>]) {
    let text: String = rows
        .iter()
        .flat_map(|r| [r.join(":"), "\n".to_owned()])
        .collect();
    write_db(host, path, &text);
}

/// Sets the supplementary groups of `user` to `groups` (when `exclusive`) or adds them.
fn set_members(groups: &mut [Vec<String>], user: &str, wanted: &[&str], exclusive: bool) {
    for g in groups.iter_mut() {
        let mut members: Vec<String> = g[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        let listed = wanted.contains(&g[0].as_str());
        if exclusive || listed {
            members.retain(|m| m != user);
        }
        if listed {
            members.push(user.to_owned());
        }
        g[3] = members.join(",");
    }
}

fn useradd(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (o, name) = options(cmd);
    let mut users = rows(host, "/etc/passwd");
    let mut groups = rows(host, "/etc/group");
    if users.iter().any(|u| u[0] == name) {
        return fail(9, &format!("useradd: user '{name}' already exists"));
    }
    let system = o.contains_key("--system");
    let uid: u32 = o.get("--uid").map_or_else(
        || {
            let ids = users.iter().filter_map(|u| u[2].parse::<u32>().ok());
            if system {
                999 - ids.filter(|i| (100..1000).contains(i)).count() as u32
            } else {
                ids.filter(|i| *i >= 1000 && *i < 60000)
                    .max()
                    .map_or(1000, |m| m + 1)
            }
        },
        |u| u.parse().expect("a numeric uid"),
    );
    let gid = if let Some(g) = o.get("--gid") {
        groups
            .iter()
            .find(|r| &r[0] == g)
            .map(|r| r[2].clone())
            .expect("--gid names an existing group")
    } else {
        if groups.iter().any(|r| r[0] == name) {
            return fail(
                9,
                &format!(
                    "useradd: group {name} exists - if you want to add this user to that group, use -g."
                ),
            );
        }
        groups.push(vec![
            name.clone(),
            "x".into(),
            uid.to_string(),
            String::new(),
        ]);
        uid.to_string()
    };
    let home = o
        .get("--home-dir")
        .cloned()
        .unwrap_or_else(|| format!("/home/{name}"));
    let shell = o
        .get("--shell")
        .cloned()
        .unwrap_or_else(|| "/bin/sh".into());
    users.push(vec![
        name.clone(),
        "x".into(),
        uid.to_string(),
        gid.clone(),
        o.get("--comment").cloned().unwrap_or_default(),
        home.clone(),
        shell,
    ]);
    if let Some(list) = o.get("--groups") {
        let wanted: Vec<&str> = list.split(',').collect();
        set_members(&mut groups, &name, &wanted, false);
    }
    if o.contains_key("--create-home") {
        host.set_node(
            &home,
            Some(Node::Dir {
                mode: 0o700,
                uid,
                gid: gid.parse().expect("numeric gid"),
            }),
        );
    }
    save(host, "/etc/passwd", &users);
    save(host, "/etc/group", &groups);
    ok()
}

fn usermod(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (o, name) = options(cmd);
    let mut users = rows(host, "/etc/passwd");
    let mut groups = rows(host, "/etc/group");
    let Some(user) = users.iter_mut().find(|u| u[0] == name) else {
        return fail(6, &format!("usermod: user '{name}' does not exist"));
    };
    for (flag, field) in [
        ("--uid", 2),
        ("--comment", 4),
        ("--home", 5),
        ("--shell", 6),
    ] {
        if let Some(v) = o.get(flag) {
            user[field].clone_from(v);
        }
    }
    if let Some(list) = o.get("--groups") {
        let wanted: Vec<&str> = list.split(',').filter(|g| !g.is_empty()).collect();
        if let Some(missing) = wanted.iter().find(|w| !groups.iter().any(|g| g[0] == **w)) {
            return fail(6, &format!("usermod: group '{missing}' does not exist"));
        }
        set_members(&mut groups, &name, &wanted, !o.contains_key("--append"));
    }
    save(host, "/etc/passwd", &users);
    save(host, "/etc/group", &groups);
    ok()
}

fn userdel(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (o, name) = options(cmd);
    let mut users = rows(host, "/etc/passwd");
    let mut groups = rows(host, "/etc/group");
    let Some(at) = users.iter().position(|u| u[0] == name) else {
        return fail(6, &format!("userdel: user '{name}' does not exist"));
    };
    let removed = users.remove(at);
    set_members(&mut groups, &name, &[], true);
    groups.retain(|g| g[0] != name);
    if o.contains_key("--remove") {
        for p in host.paths() {
            if p.starts_with(&removed[5]) {
                host.set_node(p, None);
            }
        }
    }
    save(host, "/etc/passwd", &users);
    save(host, "/etc/group", &groups);
    ok()
}

fn groupadd(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (o, name) = options(cmd);
    let mut groups = rows(host, "/etc/group");
    let gid = o.get("--gid").cloned().unwrap_or_else(|| "1500".into());
    groups.push(vec![name, "x".into(), gid, String::new()]);
    save(host, "/etc/group", &groups);
    ok()
}

fn groupmod(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (o, name) = options(cmd);
    let mut groups = rows(host, "/etc/group");
    for g in groups.iter_mut().filter(|g| g[0] == name) {
        g[2].clone_from(&o["--gid"]);
    }
    save(host, "/etc/group", &groups);
    ok()
}

fn groupdel(host: &FakeHost, cmd: &Cmd) -> CmdOutput {
    let (_, name) = options(cmd);
    let mut groups = rows(host, "/etc/group");
    groups.retain(|g| g[0] != name);
    save(host, "/etc/group", &groups);
    ok()
}

/// The base machine: the databases above, homes, and the account tools.
fn machine() -> FakeHost {
    FakeHost::new()
        .with_file("/etc/passwd", PASSWD, 0o644)
        .with_file("/etc/group", GROUP, 0o644)
        .with_dir("/root", 0o700)
        .with_dir("/home/alice", 0o750)
        .with_owner("/home/alice", 1000, 1000)
        .with_dir("/home/bob", 0o750)
        .with_owner("/home/bob", 1001, 1001)
        .with_command_effect("useradd", useradd)
        .with_command_effect("usermod", usermod)
        .with_command_effect("userdel", userdel)
        .with_command_effect("groupadd", groupadd)
        .with_command_effect("groupmod", groupmod)
        .with_command_effect("groupdel", groupdel)
}

/// `user`'s keys file with these lines (0600, `.ssh` 0700, owned by the user).
fn with_keys(host: FakeHost, user: &str, uid: u32, lines: &[String]) -> FakeHost {
    let home = if user == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{user}")
    };
    let text: String = lines.iter().flat_map(|l| [l.as_str(), "\n"]).collect();
    host.with_dir(format!("{home}/.ssh"), 0o700)
        .with_owner(format!("{home}/.ssh"), uid, uid)
        .with_file(format!("{home}/.ssh/authorized_keys"), text, 0o600)
        .with_owner(format!("{home}/.ssh/authorized_keys"), uid, uid)
}

/// sshd installed, with this effective configuration (`sshd -T`).
fn with_sshd(host: FakeHost, password: bool, root_login: &str) -> FakeHost {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let conf = format!(
        "port 22\nusepam yes\npasswordauthentication {}\nkbdinteractiveauthentication no\npubkeyauthentication yes\npermitrootlogin {root_login}\nstrictmodes yes\nauthorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\nauthorizedkeyscommand none\n",
        yes(password)
    );
    host.with_file(lockout::SSHD, "", 0o755).with_command(
        lockout::SSHD,
        CmdOutput {
            code: Some(0),
            stdout: conf.into_bytes(),
            ..CmdOutput::default()
        },
    )
}

/// Password login off, alice (sudo) has key 1.
fn locked_down() -> FakeHost {
    with_sshd(with_keys(machine(), "alice", 1000, &[key(1)]), false, "no")
}

// ---- steps ----

fn user(name: &str) -> UserStep {
    UserStep {
        name: name.to_owned(),
        state: Presence::Present,
        uid: None,
        system: false,
        shell: None,
        home: None,
        create_home: true,
        groups: None,
        groups_exclusive: false,
        comment: None,
        remove_home: false,
        prune: false,
    }
}

fn groups(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn group(name: &str) -> GroupStep {
    GroupStep {
        name: name.to_owned(),
        state: Presence::Present,
        gid: None,
        system: false,
    }
}

fn keys(user: &str, lines: &[String], exclusive: bool) -> AuthorizedKeysStep {
    AuthorizedKeysStep {
        user: user.to_owned(),
        keys: lines
            .iter()
            .map(|l| parse_key(l).expect("a test key"))
            .collect(),
        exclusive,
        path: None,
    }
}

// ---- checking ----

/// One expected change: kind, path, exact before and after, and a substring of the
/// note or diff ("" for neither).
type Want = (
    ChangeKind,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

#[derive(Debug)]
enum Expect {
    InSync(&'static str),
    Changes(Vec<Want>),
    Error(&'static str),
}

struct Case {
    what: &'static str,
    host: FakeHost,
    step: StepKind,
    dry_run: bool,
    expect: Expect,
    /// The commands apply runs (sshd -T left out); only for `Changes` in a real run.
    argv: Vec<&'static str>,
}

fn case(what: &'static str, host: FakeHost, step: StepKind, expect: Expect) -> Case {
    Case {
        what,
        host,
        step,
        dry_run: false,
        expect,
        argv: Vec::new(),
    }
}

impl Case {
    fn argv(mut self, argv: &[&'static str]) -> Self {
        self.argv = argv.to_vec();
        self
    }

    fn dry(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

fn no_files(path: &str) -> Result<Vec<u8>, String> {
    Err(format!("{path}: no files in this test"))
}

/// The commands the host ran, as argv, without the guard's `sshd -T`.
fn account_commands(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .filter(|c| c.program != lockout::SSHD)
        .map(|c| {
            std::iter::once(c.program.clone())
                .chain(c.args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Plans; compares with the case; for changes in a real run, applies, compares the
/// commands and plans again (in sync). Returns the host.
#[track_caller]
fn run_case(c: Case) -> FakeHost {
    let Case {
        what,
        host,
        step,
        dry_run,
        expect,
        argv,
    } = c;
    let reader = no_files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let ctx = Ctx::new(&host, dry_run, (!dry_run).then_some(&originals), &reader);
    let result = resource::plan(&step, &ctx);
    let mutations: Vec<String> = host
        .mutations()
        .into_iter()
        .filter(|m| !m.starts_with(&format!("run {}", lockout::SSHD)))
        .collect();
    assert_eq!(
        mutations,
        Vec::<String>::new(),
        "{what}: plan mutated the host"
    );
    let plan = match (&expect, result) {
        (Expect::Error(wanted), Err(e)) => {
            assert!(
                e.to_string().contains(wanted),
                "{what}: error {e} lacks {wanted:?}"
            );
            return host;
        }
        (_, Err(e)) => panic!("{what}: expected {expect:?}, got the error {e}"),
        (Expect::Error(wanted), Ok(plan)) => {
            panic!("{what}: expected an error with {wanted:?}, got {plan:#?}")
        }
        (Expect::InSync(wanted), Ok(plan)) => {
            assert!(plan.is_in_sync(), "{what}: {:#?}", plan.changes);
            assert!(
                plan.in_sync.contains(wanted),
                "{what}: {:?} lacks {wanted:?}",
                plan.in_sync
            );
            return host;
        }
        (Expect::Changes(wanted), Ok(plan)) => {
            assert_eq!(
                plan.changes.len(),
                wanted.len(),
                "{what}: {:#?}",
                plan.changes
            );
            for (change, (kind, path, before, after, text)) in plan.changes.iter().zip(wanted) {
                assert_eq!(change.kind, *kind, "{what}: {change:#?}");
                assert_eq!(change.path, *path, "{what}: {change:#?}");
                assert_eq!(change.before.as_deref(), *before, "{what}: {change:#?}");
                assert_eq!(change.after.as_deref(), *after, "{what}: {change:#?}");
                let shown = format!(
                    "{}{}",
                    change.diff.as_deref().unwrap_or_default(),
                    change.note.as_deref().unwrap_or_default()
                );
                if text.is_empty() {
                    assert_eq!(change.note, None, "{what}: {change:#?}");
                } else {
                    assert!(shown.contains(text), "{what}: {shown:?} lacks {text:?}");
                }
            }
            plan
        }
    };
    if dry_run {
        return host;
    }
    resource::apply(&step, &plan, &ctx).unwrap_or_else(|e| panic!("{what}: apply: {e}"));
    assert_eq!(account_commands(&host), argv, "{what}: commands");
    let again = resource::plan(&step, &ctx).unwrap_or_else(|e| panic!("{what}: re-plan: {e}"));
    assert!(
        again.is_in_sync(),
        "{what}: still pending: {:#?}",
        again.changes
    );
    host
}

// ---------------------------------------------------------------------------------
// user

#[test]
fn user_plans_and_commands() {
    let zsh = |mut s: UserStep| {
        s.shell = Some("/usr/bin/zsh".to_owned());
        s
    };
    let u = |s: UserStep| StepKind::User(s);
    let cases = vec![
        case(
            "existing user, nothing asked beyond what it has",
            machine(),
            u(UserStep {
                shell: Some("/bin/bash".into()),
                groups: Some(groups(&["sudo"])),
                comment: Some("Alice".into()),
                ..user("alice")
            }),
            Expect::InSync("user alice exists: uid 1000, home /home/alice, shell /bin/bash, groups adm, sudo"),
        ),
        case(
            "new user with shell and a group",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo"])),
                ..zsh(user("carol"))
            }),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "carol",
                None,
                Some("shell /usr/bin/zsh, home /home/carol (created), groups sudo"),
                "",
            )]),
        )
        .argv(&["useradd --create-home --shell /usr/bin/zsh --groups sudo carol"]),
        case(
            "new system user",
            machine(),
            u(UserStep {
                system: true,
                uid: Some(990),
                home: Some("/var/lib/svc".into()),
                create_home: false,
                shell: Some("/usr/sbin/nologin".into()),
                comment: Some("a service".into()),
                ..user("svc")
            }),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "svc",
                None,
                Some("system user, uid 990, shell /usr/sbin/nologin, home /var/lib/svc (not created)"),
                "",
            )]),
        )
        .argv(&["useradd --system --uid 990 --comment a service --home-dir /var/lib/svc --no-create-home --shell /usr/sbin/nologin svc"]),
        case(
            "new user whose group already exists joins it as primary group",
            machine(),
            u(user("docker")),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "docker",
                None,
                Some("home /home/docker (created)"),
                "",
            )]),
        )
        .argv(&["useradd --gid docker --create-home docker"]),
        case(
            "new user in a group that does not exist",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo", "media"])),
                ..user("carol")
            }),
            Expect::Error("group media does not exist on this machine; create it in an earlier step"),
        ),
        case(
            "the same in a dry run: pending, with a note",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo", "media"])),
                ..user("carol")
            }),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "carol",
                None,
                Some("home /home/carol (created), groups sudo, media"),
                "group media does not exist on this machine yet",
            )]),
        )
        .dry(),
        case(
            "shell, comment and home change",
            machine(),
            u(UserStep {
                comment: Some("Alice Liddell".into()),
                home: Some("/srv/alice".into()),
                ..zsh(user("alice"))
            }),
            Expect::Changes(vec![
                (ChangeKind::Comment, "alice", Some("Alice"), Some("Alice Liddell"), ""),
                (ChangeKind::Home, "alice", Some("/home/alice"), Some("/srv/alice"), ""),
                (ChangeKind::Shell, "alice", Some("/bin/bash"), Some("/usr/bin/zsh"), ""),
            ]),
        )
        .argv(&["usermod --comment Alice Liddell --home /srv/alice --shell /usr/bin/zsh alice"]),
        case(
            "uid change",
            machine(),
            u(UserStep {
                uid: Some(1005),
                ..user("bob")
            }),
            Expect::Changes(vec![(ChangeKind::Uid, "bob", Some("1001"), Some("1005"), "")]),
        )
        .argv(&["usermod --uid 1005 bob"]),
        case(
            "a uid that another user has",
            machine(),
            u(UserStep {
                uid: Some(1000),
                ..user("bob")
            }),
            Expect::Error("uid 1000 already belongs to user alice"),
        ),
        case(
            "groups are added, others kept",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo", "docker"])),
                ..user("alice")
            }),
            Expect::Changes(vec![(
                ChangeKind::Groups,
                "alice",
                Some("adm, sudo"),
                Some("adm, sudo, docker"),
                "",
            )]),
        )
        .argv(&["usermod --append --groups docker alice"]),
        case(
            "groups_exclusive leaves the others",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo", "docker"])),
                groups_exclusive: true,
                ..user("alice")
            }),
            Expect::Changes(vec![(
                ChangeKind::Groups,
                "alice",
                Some("adm, sudo"),
                Some("sudo, docker"),
                "",
            )]),
        )
        .argv(&["usermod --groups sudo,docker alice"]),
        case(
            "groups_exclusive with the same groups is in sync",
            machine(),
            u(UserStep {
                groups: Some(groups(&["sudo", "adm"])),
                groups_exclusive: true,
                ..user("alice")
            }),
            Expect::InSync("groups adm, sudo"),
        ),
        case(
            "groups_exclusive with no groups leaves all",
            machine(),
            u(UserStep {
                groups: Some(groups(&[])),
                groups_exclusive: true,
                ..user("alice")
            }),
            Expect::Changes(vec![(
                ChangeKind::Groups,
                "alice",
                Some("adm, sudo"),
                Some("(none)"),
                "",
            )]),
        )
        .argv(&["usermod --groups  alice"]),
        case(
            "absent: removed, home kept",
            machine(),
            u(UserStep {
                state: Presence::Absent,
                ..user("bob")
            }),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "bob",
                Some("uid 1001, home /home/bob"),
                Some("removed; its home /home/bob is kept"),
                "",
            )]),
        )
        .argv(&["userdel bob"]),
        case(
            "absent with remove_home",
            machine(),
            u(UserStep {
                state: Presence::Absent,
                remove_home: true,
                ..user("bob")
            }),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "bob",
                Some("uid 1001, home /home/bob"),
                Some("removed with its home /home/bob"),
                "",
            )]),
        )
        .argv(&["userdel --remove bob"]),
        case(
            "absent and already gone",
            machine(),
            u(UserStep {
                state: Presence::Absent,
                ..user("carol")
            }),
            Expect::InSync("user carol does not exist"),
        ),
    ];
    for c in cases {
        run_case(c);
    }
}

#[test]
fn creating_a_user_makes_its_home_and_removing_keeps_it_unless_asked() {
    let host = run_case(
        case(
            "create",
            machine(),
            StepKind::User(user("carol")),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "carol",
                None,
                Some("home /home/carol (created)"),
                "",
            )]),
        )
        .argv(&["useradd --create-home carol"]),
    );
    assert_eq!(host.uid_of("carol").unwrap(), Some(1002));
    assert_eq!(
        host.node("/home/carol").unwrap().to_string(),
        "dir 0700 1002:1002"
    );
    let host = run_case(
        case(
            "remove",
            machine(),
            StepKind::User(UserStep {
                state: Presence::Absent,
                ..user("bob")
            }),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "bob",
                Some("uid 1001, home /home/bob"),
                Some("removed; its home /home/bob is kept"),
                "",
            )]),
        )
        .argv(&["userdel bob"]),
    );
    assert!(host.node("/home/bob").is_some());
    assert_eq!(host.uid_of("bob").unwrap(), None);
}

#[test]
fn a_failing_account_command_fails_the_step_with_its_message() {
    let host = machine().with_command("useradd", fail(4, "useradd: UID 990 is not unique"));
    let reader = no_files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let step = StepKind::User(user("carol"));
    let plan = resource::plan(&step, &ctx).unwrap();
    let err = resource::apply(&step, &plan, &ctx).unwrap_err().to_string();
    assert_eq!(
        err,
        "`useradd --create-home carol` failed (exit 4): useradd: UID 990 is not unique"
    );
}

// ---------------------------------------------------------------------------------
// group

#[test]
fn group_plans_and_commands() {
    let g = |s: GroupStep| StepKind::Group(s);
    let cases = vec![
        case(
            "existing group",
            machine(),
            g(group("docker")),
            Expect::InSync("group docker exists with gid 999"),
        ),
        case(
            "new system group with a gid",
            machine(),
            g(GroupStep {
                gid: Some(950),
                system: true,
                ..group("media")
            }),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "media",
                None,
                Some("system group, gid 950"),
                "",
            )]),
        )
        .argv(&["groupadd --system --gid 950 media"]),
        case(
            "new group",
            machine(),
            g(group("media")),
            Expect::Changes(vec![(ChangeKind::Create, "media", None, None, "")]),
        )
        .argv(&["groupadd media"]),
        case(
            "gid change",
            machine(),
            g(GroupStep {
                gid: Some(998),
                ..group("docker")
            }),
            Expect::Changes(vec![(
                ChangeKind::Gid,
                "docker",
                Some("999"),
                Some("998"),
                "",
            )]),
        )
        .argv(&["groupmod --gid 998 docker"]),
        case(
            "a gid another group has",
            machine(),
            g(GroupStep {
                gid: Some(27),
                ..group("docker")
            }),
            Expect::Error("gid 27 already belongs to group sudo"),
        ),
        case(
            "absent",
            machine(),
            g(GroupStep {
                state: Presence::Absent,
                ..group("docker")
            }),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "docker",
                Some("gid 999, members (none)"),
                None,
                "",
            )]),
        )
        .argv(&["groupdel docker"]),
        case(
            "absent, but a user's primary group",
            machine(),
            g(GroupStep {
                state: Presence::Absent,
                ..group("bob")
            }),
            Expect::Error("group bob is the primary group of user bob"),
        ),
        case(
            "absent and already gone",
            machine(),
            g(GroupStep {
                state: Presence::Absent,
                ..group("media")
            }),
            Expect::InSync("group media does not exist"),
        ),
    ];
    for c in cases {
        run_case(c);
    }
}

// ---------------------------------------------------------------------------------
// authorized_keys

const AK: &str = "/home/alice/.ssh/authorized_keys";

#[test]
fn authorized_keys_plans() {
    let ak = |s: AuthorizedKeysStep| StepKind::AuthorizedKeys(s);
    let k1 = key(1);
    let k2 = format!("{} alice@phone", key(2));
    let cases = vec![
        case(
            "no ~/.ssh yet",
            machine(),
            ak(keys("alice", &[format!("{k1} alice@laptop")], true)),
            Expect::Changes(vec![
                (
                    ChangeKind::Create,
                    "/home/alice/.ssh",
                    None,
                    Some("mode 0700, owner alice:alice"),
                    "",
                ),
                (
                    ChangeKind::Create,
                    AK,
                    None,
                    Some(
                        "adds ssh-ed25519 …AQEBAQEBAQEB alice@laptop (1 key), mode 0600, owner alice:alice",
                    ),
                    "+ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQ",
                ),
            ]),
        ),
        case(
            "in sync",
            with_keys(machine(), "alice", 1000, from_ref(&k1)),
            ak(keys("alice", from_ref(&k1), true)),
            Expect::InSync(
                "/home/alice/.ssh/authorized_keys holds 1 key, mode 0600, owner alice:alice",
            ),
        ),
        case(
            "exclusive: one added, one removed",
            with_keys(machine(), "alice", 1000, &[k1.clone(), key(3)]),
            ak(keys("alice", &[k1.clone(), k2.clone()], true)),
            Expect::Changes(vec![(
                ChangeKind::Content,
                AK,
                None,
                Some(
                    "adds ssh-ed25519 …AgICAgICAgIC alice@phone; removes ssh-ed25519 …AwMDAwMDAwMD (2 keys)",
                ),
                "+ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAg",
            )]),
        ),
        case(
            "additive: nothing to add",
            with_keys(
                machine(),
                "alice",
                1000,
                &["# mine".to_owned(), key(3), k1.clone()],
            ),
            ak(keys("alice", from_ref(&k1), false)),
            Expect::InSync("holds 2 keys"),
        ),
        case(
            "only the mode and owner are wrong",
            with_keys(machine(), "alice", 1000, from_ref(&k1)).with_file(
                AK,
                format!("{k1}\n"),
                0o644,
            ),
            ak(keys("alice", from_ref(&k1), true)),
            Expect::Changes(vec![
                (ChangeKind::Mode, AK, Some("0644"), Some("0600"), ""),
                (ChangeKind::Owner, AK, Some("root"), Some("alice"), ""),
                (ChangeKind::Group, AK, Some("root"), Some("alice"), ""),
            ]),
        ),
        case(
            "~/.ssh with a wrong mode",
            with_keys(machine(), "alice", 1000, from_ref(&k1)).with_dir("/home/alice/.ssh", 0o755),
            ak(keys("alice", from_ref(&k1), true)),
            Expect::Changes(vec![
                (
                    ChangeKind::Mode,
                    "/home/alice/.ssh",
                    Some("0755"),
                    Some("0700"),
                    "",
                ),
                (
                    ChangeKind::Owner,
                    "/home/alice/.ssh",
                    Some("root"),
                    Some("alice"),
                    "",
                ),
                (
                    ChangeKind::Group,
                    "/home/alice/.ssh",
                    Some("root"),
                    Some("alice"),
                    "",
                ),
            ]),
        ),
        case(
            "~/.ssh is a symbolic link",
            machine().with_symlink("/home/alice/.ssh", "/tmp/x"),
            ak(keys("alice", from_ref(&k1), true)),
            Expect::Error("/home/alice/.ssh is a symbolic link, not a directory"),
        ),
        case(
            "the user does not exist",
            machine(),
            ak(keys("carol", from_ref(&k1), true)),
            Expect::Error(
                "user carol does not exist on this machine; create it in an earlier step",
            ),
        ),
        case(
            "the user does not exist, in a dry run",
            machine(),
            ak(keys("carol", from_ref(&k1), true)),
            Expect::Changes(vec![(
                ChangeKind::Create,
                "/home/carol/.ssh/authorized_keys",
                None,
                Some("1 key, mode 0600, owner carol"),
                "user carol does not exist on this machine yet",
            )]),
        )
        .dry(),
        case(
            "no home directory",
            machine().with_file(
                "/etc/passwd",
                format!("{PASSWD}carol:x:1002:1002::/home/carol:/bin/sh\n"),
                0o644,
            ),
            ak(keys("carol", from_ref(&k1), true)),
            Expect::Error("the home directory /home/carol of user carol does not exist"),
        ),
    ];
    for c in cases {
        run_case(c);
    }
}

/// Applies an `authorized_keys` step on `host` and returns the file's content.
#[track_caller]
fn converge_keys(host: &FakeHost, step: AuthorizedKeysStep) -> String {
    let step = StepKind::AuthorizedKeys(step);
    let reader = no_files;
    let originals = Originals::new(Path::new(STATE_DIR));
    let ctx = Ctx::new(host, false, Some(&originals), &reader);
    let plan = resource::plan(&step, &ctx).expect("plan");
    resource::apply(&step, &plan, &ctx).expect("apply");
    let again = resource::plan(&step, &ctx).expect("re-plan");
    assert!(again.is_in_sync(), "{:#?}", again.changes);
    let (content, mode, uid, gid) = host.file(AK).expect("the file exists");
    assert_eq!((mode, uid, gid), (0o600, 1000, 1000));
    assert_eq!(
        host.node("/home/alice/.ssh")
            .expect("~/.ssh exists")
            .to_string(),
        "dir 0700 1000:1000"
    );
    String::from_utf8(content).expect("UTF-8")
}

/// What, the file's lines before, the step's keys, exclusive, the file after.
type ContentCase = (&'static str, Vec<String>, Vec<String>, bool, String);

#[test]
fn authorized_keys_content_exclusive_and_additive() {
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let opts = format!("from=\"10.0.0.0/8\",no-pty {k2} restricted");
    let cases: Vec<ContentCase> = vec![
        (
            "exclusive from nothing",
            vec![],
            vec![format!("{k1} a"), k2.clone()],
            true,
            format!("{k1} a\n{k2}\n"),
        ),
        (
            "exclusive: other keys and comment lines go; a bare key keeps the file's comment",
            vec!["# old".into(), format!("{k3} old"), format!("{k1} laptop")],
            vec![k1.clone(), k2.clone()],
            true,
            format!("{k1} laptop\n{k2}\n"),
        ),
        (
            "exclusive: the step's options and comment win",
            vec![format!("{k2} phone")],
            vec![opts.clone()],
            true,
            format!("{opts}\n"),
        ),
        (
            "additive: others kept in place, missing appended",
            vec![
                "# mine".into(),
                format!("{k3} other"),
                format!("{k1} laptop"),
            ],
            vec![k1.clone(), k2.clone()],
            false,
            format!("# mine\n{k3} other\n{k1} laptop\n{k2}\n"),
        ),
        (
            "additive: a key with new options is replaced in place",
            vec![format!("{k2} phone"), k3.clone()],
            vec![opts.clone()],
            false,
            format!("{opts}\n{k3}\n"),
        ),
    ];
    for (what, before, wanted, exclusive, expected) in cases {
        let mut host = machine().with_command_effect("nothing", |_, _| ok());
        if !before.is_empty() {
            host = with_keys(host, "alice", 1000, &before);
        }
        let content = converge_keys(&host, keys("alice", &wanted, exclusive));
        assert_eq!(content, expected, "{what}");
    }
}

#[test]
fn writing_keys_records_the_original_and_writes_atomically() {
    let host = with_keys(machine(), "alice", 1000, &[key(3)]);
    converge_keys(&host, keys("alice", &[key(1)], true));
    let writes: Vec<String> = host
        .mutations()
        .into_iter()
        .filter(|m| m.contains(" /home/"))
        .collect();
    assert_eq!(
        writes,
        [
            "stage /home/alice/.ssh/.authorized_keys.infra-tmp.3",
            "write /home/alice/.ssh/authorized_keys"
        ],
        "{:#?}",
        host.mutations()
    );
    let record = Originals::new(Path::new(STATE_DIR))
        .get(&host, Path::new(AK))
        .unwrap()
        .expect("the original was recorded");
    assert!(record.existed);
}

#[test]
fn an_explicit_path_manages_only_the_file() {
    let host = machine().with_dir("/etc/ssh/keys", 0o755);
    let mut step = keys("alice", &[key(1)], true);
    step.path = Some("/etc/ssh/keys/alice".into());
    run_case(case(
        "explicit path",
        host,
        StepKind::AuthorizedKeys(step),
        Expect::Changes(vec![(
            ChangeKind::Create,
            "/etc/ssh/keys/alice",
            None,
            Some("adds ssh-ed25519 …AQEBAQEBAQEB (1 key), mode 0600, owner alice:alice"),
            "",
        )]),
    ));
}

// ---------------------------------------------------------------------------------
// The lockout guard

const REFUSED: &str =
    "refusing: after this step no sudo user could log in with a key while password login is off";

#[test]
fn lockout_guard() {
    let (k1, k2) = (key(1), key(2));
    let ak = |lines: &[String]| StepKind::AuthorizedKeys(keys("alice", lines, true));
    let absent = |name: &str| {
        StepKind::User(UserStep {
            state: Presence::Absent,
            ..user(name)
        })
    };
    let cases = vec![
        case(
            "the admin's last key removed",
            locked_down(),
            ak(&[]),
            Expect::Error(REFUSED),
        ),
        case(
            "the message says who can log in today",
            locked_down(),
            ak(&[]),
            Expect::Error("today alice can. Add a key for alice that this step keeps first"),
        ),
        case(
            "refused in a dry run too",
            locked_down(),
            ak(&[]),
            Expect::Error(REFUSED),
        )
        .dry(),
        case(
            "a key replaced by another: still a way in",
            locked_down(),
            ak(from_ref(&k2)),
            Expect::Changes(vec![(
                ChangeKind::Content,
                AK,
                None,
                Some("adds ssh-ed25519 …AgICAgICAgIC; removes ssh-ed25519 …AQEBAQEBAQEB (1 key)"),
                "-ssh-ed25519",
            )]),
        ),
        case(
            "password login on: no guard",
            with_sshd(
                with_keys(machine(), "alice", 1000, from_ref(&k1)),
                true,
                "no",
            ),
            ak(&[]),
            Expect::Changes(vec![(
                ChangeKind::Content,
                AK,
                None,
                Some("removes ssh-ed25519 …AQEBAQEBAQEB (0 keys)"),
                "-ssh-ed25519",
            )]),
        ),
        case(
            "no sshd on the machine: no guard",
            with_keys(machine(), "alice", 1000, from_ref(&k1)),
            ak(&[]),
            Expect::Changes(vec![(
                ChangeKind::Content,
                AK,
                None,
                Some("removes ssh-ed25519 …AQEBAQEBAQEB (0 keys)"),
                "-ssh-ed25519",
            )]),
        ),
        case(
            "root has a key and may log in with it",
            with_keys(locked_down(), "root", 0, from_ref(&k2))
                .with_command(lockout::SSHD, sshd_t(false, "prohibit-password")),
            ak(&[]),
            Expect::Changes(vec![(
                ChangeKind::Content,
                AK,
                None,
                Some("removes ssh-ed25519 …AQEBAQEBAQEB (0 keys)"),
                "",
            )]),
        ),
        case(
            "root has a key but PermitRootLogin no",
            with_keys(locked_down(), "root", 0, from_ref(&k2)),
            ak(&[]),
            Expect::Error(REFUSED),
        ),
        case(
            "bob has a key but is not in sudo",
            with_keys(locked_down(), "bob", 1001, from_ref(&k2)),
            ak(&[]),
            Expect::Error(REFUSED),
        ),
        case(
            "alice's key file is writable by others: it never worked, nothing to lose",
            with_keys(locked_down(), "alice", 1000, from_ref(&k1))
                .with_file(AK, format!("{k1}\n"), 0o666)
                .with_owner(AK, 1000, 1000),
            ak(&[]),
            Expect::Changes(vec![
                (
                    ChangeKind::Content,
                    AK,
                    None,
                    Some("removes ssh-ed25519 …AQEBAQEBAQEB (0 keys)"),
                    "",
                ),
                (ChangeKind::Mode, AK, Some("0666"), Some("0600"), ""),
            ]),
        ),
        case(
            "removing the admin",
            locked_down(),
            absent("alice"),
            Expect::Error(REFUSED),
        ),
        case(
            "removing another user",
            locked_down(),
            absent("bob"),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "bob",
                Some("uid 1001, home /home/bob"),
                Some("removed; its home /home/bob is kept"),
                "",
            )]),
        )
        .argv(&["userdel bob"]),
        case(
            "the admin leaves sudo",
            locked_down(),
            StepKind::User(UserStep {
                groups: Some(groups(&["adm"])),
                groups_exclusive: true,
                ..user("alice")
            }),
            Expect::Error(REFUSED),
        ),
        case(
            "the admin's shell becomes nologin",
            locked_down(),
            StepKind::User(UserStep {
                shell: Some("/usr/sbin/nologin".into()),
                ..user("alice")
            }),
            Expect::Error(REFUSED),
        ),
        case(
            "the admin's home moves away from the keys",
            locked_down(),
            StepKind::User(UserStep {
                home: Some("/srv/alice".into()),
                ..user("alice")
            }),
            Expect::Error(REFUSED),
        ),
        case(
            "the sudo group removed",
            locked_down(),
            StepKind::Group(GroupStep {
                state: Presence::Absent,
                ..group("sudo")
            }),
            Expect::Error(REFUSED),
        ),
    ];
    for c in cases {
        run_case(c);
    }
}

fn sshd_t(password: bool, root_login: &str) -> CmdOutput {
    let host = with_sshd(FakeHost::new(), password, root_login);
    host.run(&Cmd::new(lockout::SSHD).arg("-T"))
        .expect("scripted")
}

#[test]
fn lockout_guard_with_a_second_admin_allows_removing_the_first() {
    let host = with_keys(locked_down(), "bob", 1001, &[key(2)]).with_file(
        "/etc/group",
        GROUP.replace("sudo:x:27:alice", "sudo:x:27:alice,bob"),
        0o644,
    );
    run_case(
        case(
            "alice removed, bob remains",
            host,
            StepKind::User(UserStep {
                state: Presence::Absent,
                ..user("alice")
            }),
            Expect::Changes(vec![(
                ChangeKind::Remove,
                "alice",
                Some("uid 1000, home /home/alice"),
                Some("removed; its home /home/alice is kept"),
                "",
            )]),
        )
        .argv(&["userdel alice"]),
    );
}

#[test]
fn lockout_guard_for_turning_password_login_off() {
    let reader = no_files;
    // Password on, and alice has no key: turning password login off is refused.
    let host = with_sshd(machine(), true, "no");
    let ctx = Ctx::new(&host, false, None, &reader);
    let err = lockout::check(&ctx, &Proposal::PasswordLoginOff).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "refusing: this step turns password login off, but no sudo user can log in with a key"
        ),
        "{err}"
    );
    // With her key it is fine.
    let host = with_sshd(with_keys(machine(), "alice", 1000, &[key(1)]), true, "no");
    let ctx = Ctx::new(&host, false, None, &reader);
    lockout::check(&ctx, &Proposal::PasswordLoginOff).unwrap();
    // sshd -T failing (no host keys, say): password login is assumed off.
    let host = with_keys(machine(), "alice", 1000, &[key(1)])
        .with_file(lockout::SSHD, "", 0o755)
        .with_command(
            lockout::SSHD,
            fail(1, "sshd: no hostkeys available -- exiting."),
        );
    let ctx = Ctx::new(&host, false, None, &reader);
    let err = lockout::check(
        &ctx,
        &Proposal::KeysFile {
            path: Path::new(AK),
            content: "",
        },
    )
    .unwrap_err();
    assert!(err.to_string().starts_with(REFUSED), "{err}");
}

#[test]
fn lockout_guard_lets_pass_what_does_not_make_things_worse() {
    // Password login off and no sudo user with a key already: removing bob's key is
    // not what locks anyone out.
    let host = with_sshd(with_keys(machine(), "bob", 1001, &[key(1)]), false, "no");
    let mut step = keys("bob", &[], true);
    step.path = None;
    let reader = no_files;
    let ctx = Ctx::new(&host, false, None, &reader);
    let plan = resource::plan(&StepKind::AuthorizedKeys(step), &ctx).unwrap();
    assert_eq!(plan.changes.len(), 1);
}

// ---------------------------------------------------------------------------------
// Steps from a repository, through the engine

fn compile(steps: &str, data: &str) -> Result<(tempfile::TempDir, Catalog), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, text) in [
        ("infra.toml", "format = 1\n"),
        (
            "inventory/production.toml",
            "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
        ),
        ("roles/r.toml", steps),
        ("group_data/all.toml", data),
    ] {
        support::write(dir.path(), path, text);
    }
    let source = DirSource::new(dir.path());
    let repo = state_repo::load(&source, Version::agent()).map_err(|e| e.to_string())?;
    let sel = repo.select("h1").map_err(|e| e.to_string())?;
    let catalog =
        catalog::compile(&repo, &sel, &Facts::placeholder("h1")).map_err(|e| e.to_string())?;
    Ok((dir, catalog))
}

fn run(dir: &Path, catalog: &Catalog, host: &dyn Host, dry_run: bool) -> RunReport {
    let source = DirSource::new(dir);
    let files = |p: &str| {
        source
            .read_bytes(&format!("files/{p}"))
            .map_err(|e| e.to_string())
    };
    let originals = Originals::new(Path::new(STATE_DIR));
    let ctx = Ctx::new(host, dry_run, Some(&originals), &files);
    engine::run(
        catalog,
        &ctx,
        &Options {
            dry_run,
            only: Vec::new(),
            ..Default::default()
        },
    )
    .expect("the run starts")
}

fn text(report: &RunReport) -> String {
    let mut out = Vec::new();
    report::text(&mut out, "h1", "production", report).expect("writing to a Vec succeeds");
    String::from_utf8(out).expect("the report is UTF-8")
}

/// What the `first_boot` role should look like with these steps (the sudoers and sshd
/// templates left out).
const FIRST_BOOT: &str = r##"
[[step]]
id = "admin-user"
type = "user"
name = "{{data.admin.user}}"
shell = "/bin/bash"
groups = ["sudo"]

[[step]]
id = "admin-authorized-keys"
type = "authorized_keys"
user = "{{data.admin.user}}"
keys = { data = "admin.keys" }
requires = ["admin-user"]

[[step]]
id = "admin-profile"
type = "file"
path = "/home/{{data.admin.user}}/.profile"
content = "# managed\n"
owner = "{{data.admin.user}}"
group = "{{data.admin.user}}"
mode = "0644"
requires = ["admin-user"]
"##;

fn first_boot_data() -> String {
    format!(
        "[admin]\nuser = \"carol\"\nkeys = [\"{} carol@laptop\", \"{} carol@phone\"]\n",
        key(7),
        key(8)
    )
}

#[test]
fn a_new_user_is_resolved_by_later_steps_of_the_same_run() {
    let (dir, catalog) = compile(FIRST_BOOT, &first_boot_data()).unwrap_or_else(|e| panic!("{e}"));
    let host = with_sshd(machine(), true, "yes");

    // Dry run first: the user does not exist, so later steps are pending with a note.
    let report = run(dir.path(), &catalog, &host, true);
    let statuses: Vec<(String, Status)> =
        report.steps.iter().map(|s| (s.name(), s.status)).collect();
    assert_eq!(
        statuses,
        [
            ("admin-user".to_owned(), Status::Pending),
            ("admin-authorized-keys".to_owned(), Status::Pending),
            ("admin-profile".to_owned(), Status::Pending),
        ],
        "{:#?}",
        report.steps
    );
    assert!(account_commands(&host).is_empty());

    let report = run(dir.path(), &catalog, &host, false);
    let shown = text(&report);
    assert_eq!(report.exit_code(), 2, "{shown}");
    assert!(
        shown.contains("admin-user (user carol): changed\n  ~ create carol: shell /bin/bash, home /home/carol (created), groups sudo\n"),
        "{shown}"
    );
    assert!(
        shown.contains("admin-authorized-keys (authorized_keys of carol): changed\n  ~ create /home/carol/.ssh: mode 0700, owner carol:carol\n  ~ create /home/carol/.ssh/authorized_keys: adds ssh-ed25519 …BwcHBwcHBwcH carol@laptop, ssh-ed25519 …CAgICAgICAgI carol@phone (2 keys), mode 0600, owner carol:carol\n"),
        "{shown}"
    );
    assert_eq!(
        account_commands(&host),
        ["useradd --create-home --shell /bin/bash --groups sudo carol"]
    );
    let (_, mode, uid, gid) = host.file("/home/carol/.profile").expect("written");
    assert_eq!((mode, uid, gid), (0o644, 1002, 1002));
    let (keys, mode, uid, _) = host
        .file("/home/carol/.ssh/authorized_keys")
        .expect("written");
    assert_eq!((mode, uid), (0o600, 1002));
    assert_eq!(
        String::from_utf8(keys).unwrap(),
        format!("{} carol@laptop\n{} carol@phone\n", key(7), key(8))
    );

    // The second run changes nothing and runs no command.
    host.clear_log();
    let report = run(dir.path(), &catalog, &host, false);
    assert_eq!(report.exit_code(), 0, "{}", text(&report));
    assert!(account_commands(&host).is_empty());
}

#[test]
fn the_lockout_guard_fails_the_step_in_a_run() {
    let steps = r#"
[[step]]
id = "alice-keys"
type = "authorized_keys"
user = "alice"
keys = []

[[step]]
id = "after"
type = "file"
path = "/etc/motd"
content = "hi\n"
requires = ["alice-keys"]
"#;
    let (dir, catalog) = compile(steps, "").unwrap_or_else(|e| panic!("{e}"));
    let host = locked_down();
    let report = run(dir.path(), &catalog, &host, false);
    let shown = text(&report);
    assert_eq!(report.exit_code(), 4, "{shown}");
    assert!(
        shown.contains(&format!(
            "alice-keys (authorized_keys of alice): FAILED: {REFUSED}"
        )),
        "{shown}"
    );
    assert!(
        shown.contains("after: skipped: requires `alice-keys`, which failed"),
        "{shown}"
    );
    assert_eq!(read(&host, AK), format!("{}\n", key(1)));
}

#[test]
fn repository_errors() {
    let bad = |step: &str| {
        compile(&format!("[[step]]\nid = \"s\"\n{step}\n"), "")
            .err()
            .unwrap_or_else(|| panic!("{step}: expected an error"))
    };
    let cases: &[(&str, &str)] = &[
        (
            "type = \"authorized_keys\"\nuser = \"alice\"\nkeys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs a\", \"ssh-ed25519 AAAA-broken b\"]",
            "`keys`: key 2 \"ssh-ed25519 AAAA-broken b\" is not an SSH public key: the key data is not valid base64",
        ),
        (
            "type = \"authorized_keys\"\nuser = \"alice\"\nkeys = [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]",
            "`keys`: key 1 is not an SSH public key: this looks like a private key",
        ),
        (
            "type = \"authorized_keys\"\nuser = \"alice\"\nkeys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs a\", \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs b\"]",
            "is the same key as key 1",
        ),
        (
            "type = \"user\"\nname = \"Alice\"",
            "`name` renders to \"Alice\", which is not a valid user name",
        ),
        (
            "type = \"user\"\nname = \"a\"\nuid = -1",
            "`uid` must be a non-negative integer",
        ),
        (
            "type = \"user\"\nname = \"a\"\nuid = \"x\"",
            "`uid` must be a non-negative integer",
        ),
        (
            "type = \"user\"\nname = \"a\"\nstate = \"absent\"\nshell = \"/bin/sh\"",
            "`shell` is not allowed with state = \"absent\"",
        ),
        (
            "type = \"user\"\nname = \"a\"\nremove_home = true",
            "`remove_home` is not allowed unless state = \"absent\"",
        ),
        (
            "type = \"user\"\nname = \"a\"\ngroups_exclusive = true",
            "`groups_exclusive` needs `groups`",
        ),
        (
            "type = \"user\"\nname = \"a\"\ngroups = [\"Sudo\"]",
            "`groups` contains \"Sudo\"",
        ),
        (
            "type = \"user\"\nname = \"a\"\ncomment = \"x:y\"",
            "contains `:`",
        ),
        (
            "type = \"user\"\nname = \"a\"\nshell = \"zsh\"",
            "`shell` must be an absolute path",
        ),
        (
            "type = \"group\"\nname = \"g\"\nstate = \"absent\"\ngid = 5",
            "`gid` is not allowed with state = \"absent\"",
        ),
    ];
    for (step, wanted) in cases {
        let err = bad(step);
        assert!(err.contains(wanted), "{step}:\n{err}\nlacks {wanted:?}");
    }
    // A uid from data, as a number or a string.
    let (_, catalog) = compile(
        "[[step]]\nid = \"u\"\ntype = \"user\"\nname = \"a\"\nuid = { data = \"uid\" }\n\n[[step]]\nid = \"v\"\ntype = \"user\"\nname = \"b\"\nuid = \"{{data.uid}}\"\n",
        "uid = 1234\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for s in &catalog.steps {
        match &s.desired {
            Some(StepKind::User(u)) => assert_eq!(u.uid, Some(1234)),
            other => panic!("{other:?}"),
        }
    }
}
