//! Secrets from 1Password end to end, with the real binary as root against temporary
//! directories: a fake `op` (a shell script that records its calls) and a fake Connect
//! server (real HTTP on loopback, in this process). The secret values must reach the
//! rendered files and the command's environment, and nothing else: not the output,
//! not status.json, history, the .prom file or anything under the state directory.

#![allow(
    clippy::unwrap_used,
    reason = "the fixture's helpers fail only on a broken test machine, and the panic names the call"
)]

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use support::{AgentTest, Run, write};

/// The values 1Password holds; none may show anywhere but where they belong.
const TOKEN: &str = "S3cr3t-Value-AAA";
const DB_PASSWORD: &str = "S3cr3t-Value-BBB";
/// The service-account token; the fake `op` says only whether it got it.
const OP_TOKEN: &str = "ops_test_service_account";
const CONNECT_TOKEN: &str = "connect-test-token";

const FAKE_OP: &str = r#"#!/bin/sh
# A fake 1Password CLI: records its arguments and whether the token came in its
# environment, then answers from fixtures.
if [ "$OP_SERVICE_ACCOUNT_TOKEN" = "ops_test_service_account" ]; then tok=right; elif [ -n "$OP_SERVICE_ACCOUNT_TOKEN" ]; then tok=wrong; else tok=unset; fi
echo "$* token=$tok" >> "$(dirname "$0")/calls"
[ "$1 $2" = "read --no-newline" ] || { echo "[ERROR] unexpected arguments" >&2; exit 2; }
case "$3" in
  "op://homelab/app/token") printf '%s' 'S3cr3t-Value-AAA' ;;
  "op://homelab/db/prod/password") printf '%s' 'S3cr3t-Value-BBB' ;;
  "op://homelab/busy/token") echo '[ERROR] 2024/05/01 10:00:00 Too many requests' >&2; exit 1 ;;
  op://nosuchvault/*) echo "[ERROR] 2024/05/01 10:00:00 could not read secret '$3': \"nosuchvault\" isn't a vault in this account" >&2; exit 1 ;;
  *) echo "[ERROR] 2024/05/01 10:00:00 could not read secret '$3': isn't an item in the \"homelab\" vault" >&2; exit 1 ;;
esac
"#;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests write root-owned files: run the test suite as root (CI does)"
    );
}

/// A repository for host `h1`, the tree it manages, and the agent's directory
/// (agent.toml, the token files, the fake `op`, the state and textfile directories).
struct Fixture {
    repo: tempfile::TempDir,
    root: tempfile::TempDir,
    agent: tempfile::TempDir,
}

impl Fixture {
    fn new(steps: &str, templates: &[(&str, &str)]) -> Self {
        require_root();
        let f = Self {
            repo: tempfile::tempdir().unwrap(),
            root: tempfile::tempdir().unwrap(),
            agent: tempfile::tempdir().unwrap(),
        };
        let repo = f.repo.path();
        write(repo, "infra.toml", "format = 1\n");
        write(
            repo,
            "inventory/production.toml",
            "[groups.all]\nroles = [\"app\"]\n\n[groups.apps]\nhosts = [\"h1\"]\n",
        );
        write(
            repo,
            "group_data/all.toml",
            &format!(
                "root = \"{}\"\n\n[app]\ntoken = \"op://homelab/app/token\"\nuser = \"admin\"\n",
                f.root.path().display()
            ),
        );
        write(repo, "roles/app.toml", steps);
        for (name, text) in templates {
            write(repo, &format!("templates/{name}"), text);
        }
        write(f.agent.path(), "op", FAKE_OP);
        std::fs::set_permissions(
            f.agent.path().join("op"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write(f.agent.path(), "op-token", &format!("{OP_TOKEN}\n"));
        write(f.agent.path(), "connect-token", CONNECT_TOKEN);
        for token in ["op-token", "connect-token"] {
            std::fs::set_permissions(
                f.agent.path().join(token),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        std::fs::create_dir_all(f.textfile_dir()).unwrap();
        f.configure("secrets_backend = \"op\"\n");
        f
    }

    /// Writes agent.toml: the state and textfile directories, the fake `op`, the token
    /// files, and `extra`.
    fn configure(&self, extra: &str) {
        let a = self.agent.path();
        write(
            a,
            "agent.toml",
            &format!(
                "state_dir = \"{}\"\ntextfile_dir = \"{}\"\nop_path = \"{}\"\nop_token_file = \"{}\"\nconnect_token_file = \"{}\"\n{extra}",
                self.state_dir().display(),
                self.textfile_dir().display(),
                a.join("op").display(),
                a.join("op-token").display(),
                a.join("connect-token").display(),
            ),
        );
    }

    fn state_dir(&self) -> PathBuf {
        self.agent.path().join("state")
    }

    fn textfile_dir(&self) -> PathBuf {
        self.agent.path().join("textfile")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn run(&self, extra: &[&str]) -> Run {
        let config = self.agent.path().join("agent.toml");
        AgentTest::new()
            .args(["--once", "--repo", self.repo.path().to_str().unwrap()])
            .args(["--hostname", "h1", "--config", config.to_str().unwrap()])
            .args(extra)
            .run()
    }

    /// The fake op's calls, one line each.
    fn op_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.agent.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear_op_calls(&self) {
        let _ = std::fs::remove_file(self.agent.path().join("calls"));
    }

    /// Every file under the state and textfile directories that holds a secret value.
    fn leaks(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in [self.state_dir(), self.textfile_dir()] {
            files_under(&dir, &mut found);
        }
        found.retain(|path| {
            let bytes = std::fs::read(path).unwrap();
            [TOKEN, DB_PASSWORD]
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
        });
        found
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

#[track_caller]
fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[track_caller]
fn assert_no_secret(run: &Run) {
    for secret in [TOKEN, DB_PASSWORD, OP_TOKEN, CONNECT_TOKEN] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} shows:\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
}

const STEPS: &str = r#"
[[step]]
id = "etc"
type = "directory"
path = "{{data.root}}/etc"

[[step]]
id = "conf"
type = "template"
path = "{{data.root}}/etc/app.conf"
source = "app.conf.hbs"
requires = ["etc"]

[[step]]
id = "key"
type = "file"
path = "{{data.root}}/etc/app.key"
content = { data = "app.token" }
requires = ["etc"]

[[step]]
id = "login"
type = "command"
shell = "printf '%s' \"$APP_TOKEN\" > {{data.root}}/seen-token; echo \"logged in with $APP_TOKEN\""
creates = "{{data.root}}/seen-token"
environment = { APP_TOKEN = "op://homelab/app/token" }
requires = ["conf"]

[[step]]
id = "motd"
type = "file"
path = "{{data.root}}/etc/motd"
content = "hello\n"
requires = ["etc"]
"#;

const TEMPLATE: &str = "user = {{data.app.user}}\ntoken = {{data.app.token}}\ndb = {{secret \"op://homelab/db/prod/password\"}}\n";

#[test]
fn secrets_reach_files_and_environments_and_nothing_else() {
    let f = Fixture::new(STEPS, &[("app.conf.hbs", TEMPLATE)]);

    let dry = f.run(&["--dry-run", "--format", "json"]);
    assert_code(&dry, 2);
    assert_no_secret(&dry);
    assert!(dry.stdout.contains("(secret, not shown)"), "{}", dry.stdout);
    assert!(!f.path("etc").exists(), "a dry run changes nothing");
    // Two references, each read once, with the token in op's environment only.
    let calls = f.op_calls();
    assert_eq!(
        calls,
        [
            "read --no-newline op://homelab/app/token token=right",
            "read --no-newline op://homelab/db/prod/password token=right"
        ]
    );
    f.clear_op_calls();

    let applied = f.run(&[]);
    assert_code(&applied, 2);
    assert_no_secret(&applied);
    assert!(
        applied.stdout.contains("logged in with <secret>"),
        "{}",
        applied.stdout
    );
    assert_eq!(
        std::fs::read_to_string(f.path("etc/app.conf")).unwrap(),
        format!("user = admin\ntoken = {TOKEN}\ndb = {DB_PASSWORD}\n")
    );
    assert_eq!(
        std::fs::read_to_string(f.path("etc/app.key")).unwrap(),
        TOKEN
    );
    assert_eq!(
        std::fs::read_to_string(f.path("seen-token")).unwrap(),
        TOKEN
    );
    for secret_file in ["etc/app.conf", "etc/app.key"] {
        let mode = std::fs::metadata(f.path(secret_file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600, "{secret_file}");
    }
    let motd = std::fs::metadata(f.path("etc/motd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        motd & 0o7777,
        0o644,
        "files without secrets keep the usual mode"
    );
    assert_eq!(f.op_calls().len(), 2, "{:?}", f.op_calls());
    f.clear_op_calls();

    let again = f.run(&[]);
    assert_code(&again, 0);
    assert_no_secret(&again);
    assert_eq!(f.op_calls().len(), 2, "each run reads each reference once");

    let status = AgentTest::new()
        .args([
            "status",
            "--config",
            f.agent.path().join("agent.toml").to_str().unwrap(),
        ])
        .run();
    assert_no_secret(&status);
    assert!(f.state_dir().join("status.json").is_file());
    assert!(f.textfile_dir().join("infra_agent.prom").is_file());
    assert!(f.state_dir().join("history").is_dir());
    assert_eq!(
        f.leaks(),
        Vec::<PathBuf>::new(),
        "secret values under the state or textfile directory"
    );
}

const FAILING: &str = r#"
[[step]]
id = "etc"
type = "directory"
path = "{{data.root}}/etc"

[[step]]
id = "ghost"
type = "file"
path = "{{data.root}}/etc/ghost"
content = "{{secret \"op://homelab/ghost/token\"}}"
requires = ["etc"]

[[step]]
id = "after-ghost"
type = "file"
path = "{{data.root}}/etc/after-ghost"
content = "x\n"
requires = ["ghost"]

[[step]]
id = "vault"
type = "file"
path = "{{data.root}}/etc/vault"
content = "{{secret \"op://nosuchvault/app/token\"}}"
requires = ["etc"]

[[step]]
id = "busy"
type = "command"
argv = ["true"]
environment = { T = "op://homelab/busy/token" }

[[step]]
id = "good"
type = "file"
path = "{{data.root}}/etc/good"
content = "{{data.app.token}}"
requires = ["etc"]

[[step]]
id = "motd"
type = "file"
path = "{{data.root}}/etc/motd"
content = "hello\n"
requires = ["etc"]
"#;

/// The report line of a step and what follows it, up to the next step.
fn step_text<'a>(stdout: &'a str, id: &str) -> &'a str {
    let start = [format!("\n{id} ("), format!("\n{id}: ")]
        .iter()
        .find_map(|p| stdout.find(p.as_str()))
        .unwrap_or_else(|| panic!("step {id} in:\n{stdout}"));
    let text = &stdout[start + 1..];
    let end = text[1..].find('\n').map_or(text.len(), |i| i + 1);
    // The step's line and its indented lines below.
    let more = text[end..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(str::len)
        .map(|n| n + 1)
        .sum::<usize>();
    &text[..(end + more).min(text.len())]
}

#[test]
fn unresolvable_secrets_fail_their_steps_and_name_the_reference() {
    let f = Fixture::new(FAILING, &[]);
    let run = f.run(&[]);
    assert_code(&run, 6);
    assert_no_secret(&run);
    let out = &run.stdout;
    for (id, reference, cause) in [
        ("ghost", "op://homelab/ghost/token", "isn't an item"),
        ("vault", "op://nosuchvault/app/token", "isn't a vault"),
        ("busy", "op://homelab/busy/token", "too many requests"),
    ] {
        let text = step_text(out, id);
        assert!(
            text.contains(&format!("secret {reference} cannot be resolved"))
                && text.contains(cause),
            "{id}:\n{out}"
        );
    }
    assert!(
        step_text(out, "after-ghost").contains("requires `ghost`, which failed"),
        "{out}"
    );
    assert!(!f.path("etc/ghost").exists() && !f.path("etc/after-ghost").exists());
    assert_eq!(std::fs::read_to_string(f.path("etc/good")).unwrap(), TOKEN);
    assert_eq!(
        std::fs::read_to_string(f.path("etc/motd")).unwrap(),
        "hello\n"
    );
    let status = std::fs::read_to_string(f.state_dir().join("status.json")).unwrap();
    assert!(
        status.contains("too many requests"),
        "rate limits show in status: {status}"
    );
    assert_eq!(f.leaks(), Vec::<PathBuf>::new());

    // Without a backend, the error says which agent.toml key to set.
    f.configure("");
    let none = f.run(&[]);
    assert_code(&none, 4);
    assert!(
        step_text(&none.stdout, "good")
            .contains("secret op://homelab/app/token cannot be resolved: no secrets backend"),
        "{}",
        none.stdout
    );
    assert!(
        none.stdout.contains("secrets_backend = \"op\""),
        "{}",
        none.stdout
    );

    // An op that is not installed.
    f.configure("secrets_backend = \"op\"\n");
    std::fs::remove_file(f.agent.path().join("op")).unwrap();
    let missing = f.run(&[]);
    assert_code(&missing, 4);
    let op = f.agent.path().join("op");
    assert!(
        missing
            .stdout
            .contains(&format!("`{}` is not installed", op.display())),
        "{}",
        missing.stdout
    );
}

#[test]
fn a_token_file_readable_by_others_is_refused() {
    let f = Fixture::new(FAILING, &[]);
    std::fs::set_permissions(
        f.agent.path().join("op-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let run = f.run(&["--dry-run"]);
    assert_code(&run, 6);
    assert!(
        run.stdout.contains("readable by root only"),
        "{}",
        run.stdout
    );
    assert!(f.op_calls().is_empty(), "op never ran");
}

#[test]
fn malformed_references_block_the_commit_with_file_and_line() {
    let f = Fixture::new(STEPS, &[("app.conf.hbs", TEMPLATE)]);
    write(
        f.repo.path(),
        "group_data/apps.toml",
        "[app]\nuser = \"admin\"\ntoken = \"op://homelab//token\"\n",
    );
    let check = AgentTest::new()
        .args(["check", "--repo", f.repo.path().to_str().unwrap()])
        .run();
    assert_code(&check, 1);
    assert!(
        check
            .stderr
            .contains("`app.token` is not a valid 1Password reference"),
        "{}",
        check.stderr
    );
    assert!(
        check.stderr.contains("group_data/apps.toml:3"),
        "{}",
        check.stderr
    );
    let run = f.run(&[]);
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("group_data/apps.toml:3"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        !f.path("etc").exists(),
        "nothing of an invalid commit is applied"
    );
    assert!(f.op_calls().is_empty());
}

/// A fake Connect server on loopback: vault `homelab` (by name), item `app` with a
/// field `token`, item `busy` answering 429. Records the request lines and whether the
/// token came right.
fn connect_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut authorized = false;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if header.trim_end() == format!("Authorization: Bearer {CONNECT_TOKEN}") {
                    authorized = true;
                }
            }
            seen.lock()
                .unwrap()
                .push(format!("{path} auth={authorized}"));
            let vault = "vvvvvvvvvvvvvvvvvvvvvvvvv1";
            let (status, body) = if !authorized {
                (
                    401,
                    r#"{"status":401,"message":"Invalid token signature"}"#.to_owned(),
                )
            } else if path == "/v1/vaults?filter=name%20eq%20%22homelab%22" {
                (200, format!(r#"[{{"id":"{vault}","name":"homelab"}}]"#))
            } else if path.starts_with("/v1/vaults?") {
                (200, "[]".to_owned())
            } else if path == format!("/v1/vaults/{vault}/items?filter=title%20eq%20%22app%22") {
                (200, r#"[{"id":"item1","title":"app"}]"#.to_owned())
            } else if path == format!("/v1/vaults/{vault}/items?filter=title%20eq%20%22busy%22") {
                (
                    429,
                    r#"{"status":429,"message":"Too many requests"}"#.to_owned(),
                )
            } else if path.starts_with(&format!("/v1/vaults/{vault}/items?")) {
                (200, "[]".to_owned())
            } else if path == format!("/v1/vaults/{vault}/items/item1") {
                (
                    200,
                    format!(
                        r#"{{"id":"item1","title":"app","fields":[{{"id":"username","label":"username","value":"app"}},{{"id":"f9","label":"token","value":"{TOKEN}"}}]}}"#
                    ),
                )
            } else {
                (404, r#"{"status":404,"message":"not found"}"#.to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, log)
}

const CONNECT_STEPS: &str = r#"
[[step]]
id = "etc"
type = "directory"
path = "{{data.root}}/etc"

[[step]]
id = "key"
type = "file"
path = "{{data.root}}/etc/app.key"
content = { data = "app.token" }
mode = "0640"
requires = ["etc"]

[[step]]
id = "vault"
type = "file"
path = "{{data.root}}/etc/vault"
content = "{{secret \"op://nosuchvault/app/token\"}}"
requires = ["etc"]

[[step]]
id = "busy"
type = "file"
path = "{{data.root}}/etc/busy"
content = "{{secret \"op://homelab/busy/token\"}}"
requires = ["etc"]

[[step]]
id = "field"
type = "file"
path = "{{data.root}}/etc/field"
content = "{{secret \"op://homelab/app/nofield\"}}"
requires = ["etc"]
"#;

#[test]
fn the_connect_backend_resolves_through_the_rest_api() {
    let (url, log) = connect_server();
    let f = Fixture::new(CONNECT_STEPS, &[]);
    f.configure(&format!(
        "secrets_backend = \"connect\"\nconnect_host = \"{url}\"\n"
    ));
    let run = f.run(&[]);
    assert_code(&run, 6);
    assert_no_secret(&run);
    assert_eq!(
        std::fs::read_to_string(f.path("etc/app.key")).unwrap(),
        TOKEN
    );
    let mode = std::fs::metadata(f.path("etc/app.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640, "the step's own mode wins");
    let out = &run.stdout;
    assert!(
        step_text(out, "vault").contains(
            "secret op://nosuchvault/app/token cannot be resolved: no vault `nosuchvault`"
        ),
        "{out}"
    );
    assert!(
        step_text(out, "busy").contains("too many requests"),
        "{out}"
    );
    assert!(
        step_text(out, "field").contains("has no field `nofield`"),
        "{out}"
    );
    let requests = log.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.ends_with("auth=true")),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.ends_with("/items/item1 auth=true"))
            .count(),
        2,
        "app/token and app/nofield read the item once each: {requests:?}"
    );
    assert_eq!(f.leaks(), Vec::<PathBuf>::new());

    // An unreachable server: a clear error naming the reference and the server.
    f.configure("secrets_backend = \"connect\"\nconnect_host = \"http://127.0.0.1:9\"\n");
    let down = f.run(&[]);
    assert_code(&down, 4);
    assert!(
        step_text(&down.stdout, "key").contains("secret op://homelab/app/token cannot be resolved: cannot reach the Connect server at http://127.0.0.1:9"),
        "{}",
        down.stdout
    );
}
