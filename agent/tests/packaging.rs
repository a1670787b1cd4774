//! The files under packaging/ agree with the agent and with each other: the unit
//! starts what install.sh installs, the way the daemon expects (notify, watchdog,
//! stop behaviour); systemd accepts the unit; install.sh lays out the tree with the
//! right modes; agent.toml.example states the real defaults; build-deb.sh builds the
//! package its comments describe, with maintainer scripts that never wait for the agent.
//! Both ship the fetch helper beside the agent, and the packaged agent links no OpenSSL.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use infra_agent::config::{self, AgentConfig};
use infra_agent::process::{Cmd, CmdOutput, run};

mod support;

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A systemd unit file, read the simple way: sections of `Key=value` lines, in order,
/// plus the text of its comment lines.
#[derive(Debug)]
struct Unit {
    entries: Vec<(String, String, String)>,
    comments: String,
}

impl Unit {
    fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        let mut comments = String::new();
        let mut section = String::new();
        let mut pending = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                comments.push_str(line.trim_start_matches(['#', ';']).trim());
                comments.push('\n');
                continue;
            }
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            let logical = std::mem::take(&mut pending) + line;
            if logical.is_empty() {
                continue;
            }
            if let Some(name) = logical.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                name.clone_into(&mut section);
                continue;
            }
            let (key, value) = logical
                .split_once('=')
                .unwrap_or_else(|| panic!("line {}: not `Key=value`: {logical}", n + 1));
            assert!(
                !section.is_empty(),
                "line {}: a key before any section",
                n + 1
            );
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        assert!(pending.is_empty(), "the unit ends in a continuation line");
        Self { entries, comments }
    }

    /// The value of `key` in `section`; a key set twice is a mistake here.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        let mut values = self
            .entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str());
        let first = values.next();
        assert!(
            values.next().is_none(),
            "[{section}] {key}= is set more than once"
        );
        first
    }

    fn require(&self, section: &str, key: &str) -> &str {
        self.get(section, key)
            .unwrap_or_else(|| panic!("infra-agent.service has no [{section}] {key}="))
    }
}

fn unit() -> Unit {
    Unit::parse(&read(&packaging().join("infra-agent.service")))
}

/// A systemd time span as used in this unit: seconds, or a number with `s`/`min`.
fn time_span(value: &str) -> Duration {
    let value = value.trim();
    if let Some(n) = value.strip_suffix("min") {
        Duration::from_secs(n.trim().parse::<u64>().expect("minutes") * 60)
    } else {
        let n = value.strip_suffix('s').unwrap_or(value);
        Duration::from_secs(n.trim().parse().expect("seconds"))
    }
}

fn sh(args: &[&str]) -> CmdOutput {
    let out = run(&Cmd::new("sh")
        .args(args.iter().copied())
        .timeout(Duration::from_mins(1)))
    .expect("sh runs");
    assert!(!out.timed_out, "install.sh hung");
    out
}

fn install(binary: &Path, destdir: &Path) -> CmdOutput {
    let script = packaging().join("install.sh");
    sh(&[
        &script.to_string_lossy(),
        &binary.to_string_lossy(),
        &destdir.to_string_lossy(),
    ])
}

/// The agent and its fetch helper as the package ships them: built by two cargo
/// commands, `-p infra-agent` and then `-p infra-agent-fetch`, as build-deb.sh builds
/// them (built together, or under `cargo test --workspace`, the agent would link the
/// helper's OpenSSL). Once per test process; the helper lands beside the agent.
struct Shipped {
    agent: PathBuf,
    fetch: PathBuf,
}

fn shipped() -> &'static Shipped {
    static BUILT: OnceLock<Shipped> = OnceLock::new();
    BUILT.get_or_init(|| {
        let agent = support::cargo_build("infra-agent", "infra-agent");
        let fetch = support::fetch_helper().to_owned();
        assert_eq!(
            agent.parent(),
            fetch.parent(),
            "the helper is beside the agent"
        );
        Shipped { agent, fetch }
    })
}

/// Writes a stand-in for a built program, mode 0600: install.sh makes it 0755.
fn fake_program(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("the walk stays under root");
                files.insert(relative.to_owned());
            }
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `ExecStart=` without leading prefixes (`-`, `@`, `+`, ...) and arguments.
fn exec_start_program(unit: &Unit) -> String {
    let value = unit.require("Service", "ExecStart");
    value
        .trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .next()
        .expect("ExecStart names a program")
        .to_owned()
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog() {
    let unit = unit();
    assert_eq!(unit.require("Service", "Type"), "notify");
    assert_eq!(unit.require("Service", "NotifyAccess"), "main");
    assert_eq!(exec_start_program(&unit), "/usr/bin/infra-agent");
    assert_eq!(
        unit.require("Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    let watchdog = time_span(unit.require("Service", "WatchdogSec"));
    assert!(
        watchdog >= Duration::from_secs(10),
        "WatchdogSec={watchdog:?} leaves the pinger thread no slack"
    );
    assert_eq!(unit.require("Service", "Restart"), "on-failure");
    assert_eq!(
        unit.require("Unit", "ConditionPathExists"),
        config::DEFAULT_PATH
    );
    assert_eq!(unit.require("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn stopping_lets_the_current_step_finish() {
    let unit = unit();
    // SIGTERM only to the agent, so a command it runs is not interrupted; SIGKILL to
    // whatever is left, so nothing outlives the unit.
    assert_eq!(unit.require("Service", "KillMode"), "mixed");
    let stop = time_span(unit.require("Service", "TimeoutStopSec"));
    assert!(
        stop >= Duration::from_mins(10),
        "TimeoutStopSec={stop:?} may cut a long step"
    );
}

#[test]
fn the_unit_waits_for_the_network() {
    let unit = unit();
    assert!(
        unit.require("Unit", "Wants")
            .contains("network-online.target")
    );
    assert!(
        unit.require("Unit", "After")
            .contains("network-online.target")
    );
}

#[test]
fn every_sandboxing_directive_is_decided_in_a_comment() {
    let unit = unit();
    // Directives that would stop the agent doing its job (writing /etc, installing
    // packages, setuid helpers, mounts, the hostname it selects by).
    let forbidden = [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectHostname",
        "ProtectKernelTunables",
        "RestrictSUIDSGID",
        "PrivateDevices",
        "PrivateNetwork",
        "ProtectClock",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "SystemCallFilter",
        "CapabilityBoundingSet",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "User",
        "DynamicUser",
    ];
    for name in forbidden {
        assert!(
            unit.get("Service", name).is_none(),
            "{name}= would stop the agent managing the host"
        );
        assert!(
            unit.comments.contains(name),
            "the comment does not say why {name}= is not used"
        );
    }
    for name in ["LockPersonality", "RestrictRealtime"] {
        assert_eq!(unit.get("Service", name), Some("yes"), "{name}");
        assert!(
            unit.comments.contains(&format!("- {name}=yes:")),
            "the comment does not say why {name}= is used"
        );
    }
}

/// Looks a program up in PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify` on the unit as install.sh installs it, with `ExecStart`
/// pointing at the installed binary (the real /usr/bin/infra-agent need not exist).
/// systemd-analyze is not on every CI machine: without it this test checks only
/// that install.sh installs the unit unchanged, and says so.
#[test]
fn systemd_accepts_the_installed_unit() {
    let dir = tempfile::tempdir().unwrap();
    let destdir = dir.path().join("root");
    let out = install(&shipped().agent, &destdir);
    assert!(out.success(), "install.sh failed: {}", out.message());
    let installed = destdir.join("lib/systemd/system/infra-agent.service");
    let text = read(&installed);
    assert_eq!(text, read(&packaging().join("infra-agent.service")));

    let program = exec_start_program(&Unit::parse(&text));
    let binary = destdir.join(program.trim_start_matches('/'));
    assert!(
        binary.is_file(),
        "ExecStart={program} is not what install.sh installs"
    );

    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("note: systemd-analyze is not installed; the unit was only parsed");
        return;
    };
    let check_dir = dir.path().join("units");
    std::fs::create_dir(&check_dir).unwrap();
    let copy = check_dir.join("infra-agent.service");
    let rewritten: String = text
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={}\n", binary.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&copy, rewritten).unwrap();
    let out = run(&Cmd::new(analyze.to_string_lossy())
        .args(["verify", "--man=no", &copy.to_string_lossy()])
        .timeout(Duration::from_mins(1)))
    .expect("systemd-analyze runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on an unknown key or a bad value and only prints a warning
    // naming the file, so those lines fail the test too.
    let about_unit: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("infra-agent.service"))
        .collect();
    assert!(
        out.success() && about_unit.is_empty(),
        "systemd-analyze verify rejects the unit:\n{printed}"
    );
}

#[test]
fn install_sh_lays_out_the_tree_with_its_modes() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("built-agent");
    fake_program(&binary, "#!/bin/sh\necho agent\n");
    fake_program(
        &dir.path().join("infra-agent-fetch"),
        "#!/bin/sh\necho fetch\n",
    );
    let destdir = dir.path().join("root");

    let out = install(&binary, &destdir);
    assert!(out.success(), "install.sh failed: {}", out.message());
    let installed = destdir.join("usr/bin/infra-agent");
    assert_eq!(read(&installed), "#!/bin/sh\necho agent\n");
    assert_eq!(mode(&installed), 0o755);
    let helper = destdir.join("usr/bin/infra-agent-fetch");
    assert_eq!(read(&helper), "#!/bin/sh\necho fetch\n");
    assert_eq!(mode(&helper), 0o755);
    let unit = destdir.join("lib/systemd/system/infra-agent.service");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(mode(&destdir.join("etc/infra-agent")), 0o700);
    assert_eq!(mode(&destdir.join("var/lib/infra-agent")), 0o700);
    // Nothing else: no enabled-unit symlink, no configuration, no leftovers.
    assert_eq!(
        files_under(&destdir),
        BTreeSet::from([
            PathBuf::from("usr/bin/infra-agent"),
            PathBuf::from("usr/bin/infra-agent-fetch"),
            PathBuf::from("lib/systemd/system/infra-agent.service"),
        ])
    );
}

#[test]
fn install_sh_takes_the_helper_from_fetch_binary_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("infra-agent");
    fake_program(&binary, "agent");
    fake_program(&dir.path().join("infra-agent-fetch"), "the one beside");
    let elsewhere = dir.path().join("elsewhere-fetch");
    fake_program(&elsewhere, "the one named");
    let destdir = dir.path().join("root");

    let script = packaging().join("install.sh");
    let out = run(&Cmd::new("sh")
        .args([
            &*script.to_string_lossy(),
            &*binary.to_string_lossy(),
            &*destdir.to_string_lossy(),
        ])
        .env("FETCH_BINARY", elsewhere.to_string_lossy())
        .timeout(Duration::from_mins(1)))
    .expect("sh runs");
    assert!(out.success(), "install.sh failed: {}", out.message());
    assert_eq!(
        read(&destdir.join("usr/bin/infra-agent-fetch")),
        "the one named"
    );
}

#[test]
fn install_sh_again_upgrades_and_keeps_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let destdir = dir.path().join("root");
    let old_dir = dir.path().join("old");
    std::fs::create_dir(&old_dir).unwrap();
    let old = old_dir.join("infra-agent");
    std::fs::write(&old, "old").unwrap();
    std::fs::write(old_dir.join("infra-agent-fetch"), "old fetch").unwrap();
    assert!(install(&old, &destdir).success());
    let etc = destdir.join("etc/infra-agent");
    std::fs::write(etc.join("agent.toml"), "repository = \"x\"\n").unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();

    let new_dir = dir.path().join("new");
    std::fs::create_dir(&new_dir).unwrap();
    let new = new_dir.join("infra-agent");
    std::fs::write(&new, "new").unwrap();
    std::fs::write(new_dir.join("infra-agent-fetch"), "new fetch").unwrap();
    let out = install(&new, &destdir);
    assert!(out.success(), "install.sh failed: {}", out.message());
    assert_eq!(read(&destdir.join("usr/bin/infra-agent")), "new");
    assert_eq!(
        read(&destdir.join("usr/bin/infra-agent-fetch")),
        "new fetch"
    );
    assert_eq!(read(&etc.join("agent.toml")), "repository = \"x\"\n");
    assert_eq!(
        mode(&etc),
        0o700,
        "the configuration directory is root's only"
    );
}

#[test]
fn install_sh_refuses_bad_arguments_with_a_hint() {
    let script = packaging().join("install.sh");
    let script = script.to_string_lossy();
    let out = sh(&[&script]);
    assert_eq!(out.code, Some(64));
    assert!(out.message().contains("usage: install.sh BINARY [DESTDIR]"));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("target/release/infra-agent");
    let destdir = dir.path().join("root");
    let out = install(&missing, &destdir);
    assert_eq!(out.code, Some(1));
    let message = out.message();
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(message.contains("hint: build the agent first"), "{message}");
    assert!(!destdir.exists(), "nothing is installed after an error");

    // An agent without its fetch helper beside it could not fetch from a URL.
    let agent = dir.path().join("infra-agent");
    std::fs::write(&agent, "agent").unwrap();
    let out = install(&agent, &destdir);
    assert_eq!(out.code, Some(1));
    let message = out.message();
    let helper = dir.path().join("infra-agent-fetch");
    assert!(message.contains(&*helper.to_string_lossy()), "{message}");
    assert!(
        message.contains("hint: build it beside the agent, in a cargo command of its own: cargo build --release -p infra-agent-fetch"),
        "{message}"
    );
    assert!(!destdir.exists(), "nothing is installed after an error");
}

#[test]
fn install_sh_is_executable() {
    assert_eq!(mode(&packaging().join("install.sh")) & 0o111, 0o111);
}

/// The `key = value` lines of agent.toml.example, uncommented.
fn example_settings() -> String {
    read(&packaging().join("agent.toml.example"))
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .flat_map(|l| [l, "\n"])
        .collect()
}

#[test]
fn agent_toml_example_lists_every_key_once() {
    let text = example_settings();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(keys.len(), unique.len(), "a key appears twice: {keys:?}");
    assert_eq!(
        unique,
        config::KEYS.iter().copied().collect::<BTreeSet<_>>()
    );
}

#[test]
fn agent_toml_example_states_the_real_defaults() {
    let (parsed, warnings) = config::parse(&example_settings()).expect("the example parses");
    assert!(warnings.is_empty(), "{warnings:?}");
    // Keys without a default carry an example; every other value must be the default.
    let expected = AgentConfig {
        repository: parsed.repository.clone(),
        deploy_key: parsed.deploy_key.clone(),
        known_hosts: parsed.known_hosts.clone(),
        token_file: parsed.token_file.clone(),
        allowed_signers: parsed.allowed_signers.clone(),
        hostname: parsed.hostname.clone(),
        ..AgentConfig::default()
    };
    assert_eq!(parsed, expected);
    assert!(parsed.repository.is_some() && parsed.hostname.is_some());
}

/// `dpkg-deb ARGS` on this machine; its stdout.
fn dpkg_deb(args: &[&str]) -> String {
    let out = run(&Cmd::new("dpkg-deb")
        .args(args.iter().copied())
        .timeout(Duration::from_mins(1)))
    .expect("dpkg-deb runs (apt-get install dpkg-dev)");
    assert!(out.success(), "dpkg-deb {args:?}: {}", out.message());
    String::from_utf8(out.stdout).expect("dpkg-deb prints text")
}

/// `build-deb.sh BINARY OUTDIR`, with `env` added to its environment.
fn build_deb_sh(binary: &Path, outdir: &Path, env: &[(&str, &Path)]) -> CmdOutput {
    let script = packaging().join("build-deb.sh");
    let mut cmd = Cmd::new("sh")
        .args([
            &*script.to_string_lossy(),
            &*binary.to_string_lossy(),
            &*outdir.to_string_lossy(),
        ])
        .timeout(Duration::from_mins(10));
    for (key, value) in env {
        cmd = cmd.env(*key, value.to_string_lossy());
    }
    run(&cmd).expect("sh runs")
}

/// build-deb.sh on the agent and helper built as the package builds them; the path
/// of the package in `outdir`.
fn build_deb(outdir: &Path) -> PathBuf {
    let out = build_deb_sh(&shipped().agent, outdir, &[]);
    assert!(out.success(), "build-deb.sh failed: {}", out.message());
    let deb = outdir.join(format!(
        "infra-agent_{}_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(&*deb.to_string_lossy()),
        "the last line is the package"
    );
    deb
}

/// build-deb.sh on the agent built as the package builds it, and the helper beside
/// it: the control file names the version the binary reports and a dependency for
/// every library the two link, the tree holds what README.md promises with its modes,
/// and the maintainer scripts are there. integration-tests/tests/debian_package.rs
/// installs such a package on a container.
#[test]
fn build_deb_sh_builds_the_package_it_documents() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let deb = deb.to_string_lossy();

    let field = |name: &str| dpkg_deb(&["-f", &deb, name]).trim().to_owned();
    assert_eq!(field("Package"), "infra-agent");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "amd64");
    assert!(field("Maintainer").contains('<'), "Name <address>");
    let depends = field("Depends");
    let depends: Vec<&str> = depends.split(", ").collect();
    assert!(depends[0].starts_with("libc6 (>= 2."), "{depends:?}");
    // The fetch helper links the system's OpenSSL (git2's HTTPS and libssh2), under
    // either name.
    assert!(
        depends.contains(&"libssl3 (>= 3.0.0) | libssl3t64 (>= 3.0.0)"),
        "{depends:?}"
    );
    assert!(depends.contains(&"systemd"), "{depends:?}");

    let listing = dpkg_deb(&["-c", &deb]);
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[0], *fields.last().unwrap())
        })
        .collect();
    for (path, perms) in [
        ("./usr/bin/infra-agent", "-rwxr-xr-x"),
        ("./usr/bin/infra-agent-fetch", "-rwxr-xr-x"),
        ("./lib/systemd/system/infra-agent.service", "-rw-r--r--"),
        (
            "./usr/share/doc/infra-agent/agent.toml.example",
            "-rw-r--r--",
        ),
        ("./usr/share/doc/infra-agent/copyright", "-rw-r--r--"),
        ("./usr/share/doc/infra-agent/changelog.gz", "-rw-r--r--"),
    ] {
        assert!(
            entries.contains(&(perms, path)),
            "{path} {perms} missing:\n{listing}"
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "everything is root's:\n{listing}"
    );
    // No configuration and no state directory: dpkg must not own what the host keeps.
    assert!(!listing.contains("./etc/"), "{listing}");
    assert!(!listing.contains("./var/"), "{listing}");

    let control = dir.path().join("control");
    dpkg_deb(&["-e", &deb, &control.to_string_lossy()]);
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        assert_eq!(mode(&path), 0o755, "{script}");
        assert_eq!(read(&path), read(&packaging().join("debian").join(script)));
    }
}

/// The shared libraries `program` needs, by file name, as `ldd` (libc-bin, on every
/// Debian machine) resolves them: what loading the program loads.
fn libraries(program: &Path) -> Vec<String> {
    let out = run(&Cmd::new("ldd")
        .arg(program.to_string_lossy())
        .timeout(Duration::from_mins(1)))
    .expect("ldd runs");
    assert!(
        out.success(),
        "ldd {}: {}",
        program.display(),
        out.message()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| Path::new(name).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// The point of the fetch helper: the packaged agent, which runs every few minutes,
/// loads no OpenSSL; the helper beside it, which fetches, does.
#[test]
fn the_packaged_agent_loads_no_openssl_and_its_fetch_helper_does() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(&dir.path().join("out"));
    let tree = dir.path().join("tree");
    dpkg_deb(&["-x", &deb.to_string_lossy(), &tree.to_string_lossy()]);

    let agent = libraries(&tree.join("usr/bin/infra-agent"));
    assert!(agent.iter().any(|l| l == "libc.so.6"), "{agent:?}");
    let openssl: Vec<&String> = agent
        .iter()
        .filter(|l| l.starts_with("libssl.") || l.starts_with("libcrypto."))
        .collect();
    assert!(
        openssl.is_empty(),
        "the packaged infra-agent loads {openssl:?}: {agent:?}"
    );

    let helper = libraries(&tree.join("usr/bin/infra-agent-fetch"));
    assert!(
        helper.iter().any(|l| l.starts_with("libssl.so")),
        "infra-agent-fetch does not load libssl: {helper:?}"
    );
}

/// build-deb.sh refuses an agent that links OpenSSL (built in one cargo command with
/// the helper), and an agent with no helper beside it.
#[test]
fn build_deb_sh_refuses_an_agent_with_openssl_or_without_its_helper() {
    let dir = tempfile::tempdir().unwrap();
    // The helper links OpenSSL: given as the agent, it stands for an agent built
    // together with it.
    let fetch = &shipped().fetch;
    let out = build_deb_sh(fetch, dir.path(), &[("FETCH_BINARY", fetch)]);
    assert_eq!(out.code, Some(1), "{}", out.message());
    let message = out.message();
    assert!(message.contains("links libssl.so"), "{message}");
    assert!(
        message.contains("hint: build the two with separate commands: cargo build --release -p infra-agent, then cargo build --release -p infra-agent-fetch"),
        "{message}"
    );

    let lonely = dir.path().join("alone/infra-agent");
    std::fs::create_dir(lonely.parent().unwrap()).unwrap();
    std::fs::write(&lonely, "an agent").unwrap();
    let out = build_deb_sh(&lonely, dir.path(), &[]);
    assert_eq!(out.code, Some(1), "{}", out.message());
    let message = out.message();
    let missing = dir.path().join("alone/infra-agent-fetch");
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(
        message.contains("cargo build --release -p infra-agent-fetch"),
        "{message}"
    );
    let debs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name();
            name.to_string_lossy().ends_with(".deb").then_some(name)
        })
        .collect();
    assert!(debs.is_empty(), "no package after an error: {debs:?}");
}

#[test]
fn the_maintainer_scripts_are_posix_sh_guarded_for_a_host_without_systemd() {
    let mut expected_changes = 2;
    for script in ["postinst", "prerm", "postrm"] {
        let path = packaging().join("debian").join(script);
        let out = sh(&["-n", &path.to_string_lossy()]);
        assert!(out.success(), "{script}: {}", out.message());
        let text = read(&path);
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        assert!(text.contains("\nset -e\n"), "{script}");
        // A start, stop or restart never waits for the agent (see the postinst), and
        // happens only where a systemd manager runs.
        let changes: Vec<&str> = text
            .lines()
            .map(str::trim_start)
            .filter(|l| {
                l.starts_with("systemctl")
                    && [" start ", " stop ", " restart ", " try-restart "]
                        .iter()
                        .any(|v| l.contains(v))
            })
            .collect();
        for line in &changes {
            assert!(line.contains("--no-block"), "{script}: {line}");
        }
        if !changes.is_empty() {
            assert!(text.contains("[ -d /run/systemd/system ]"), "{script}");
        }
        expected_changes -= usize::from(!changes.is_empty());
    }
    assert_eq!(
        expected_changes, 0,
        "the postinst starts and the prerm stops"
    );
    assert_eq!(mode(&packaging().join("build-deb.sh")) & 0o111, 0o111);
}
