use std::path::Path;

use super::*;
use crate::host::{FakeHost, Host as _};
use crate::pull::{Prepared, prepare};
use crate::state_repo::DirSource;

/// A repository with a step of every kind the cache must carry whole: a command with
/// an environment (one value a 1Password reference) and a timeout under a second's
/// precision, a download and a `nala_fetch` with timeouts, modes, a `for_each` with
/// its items, a `when` left for run time (it reads facts), a template and a `source`.
const ROLE: &str = r#"
[[step]]
id = "dir"
type = "directory"
path = "/srv/app"
mode = "0750"

[[step]]
id = "conf"
type = "template"
path = "/srv/app/app.conf"
source = "app.conf.hbs"
mode = "0640"
requires = ["dir"]
notify = ["run"]

[[step]]
id = "static"
type = "file"
path = "/srv/app/static.txt"
source = "static.txt"

[[step]]
id = "users"
type = "file"
for_each = "data.users"
path = "/srv/app/{{item.key}}"
content = "{{item.value.shell}}\n"
when = "facts.os.codename == 'bookworm'"

[[step]]
id = "secret"
type = "file"
path = "/srv/app/token"
content = { data = "token" }

[[step]]
id = "run"
type = "command"
argv = ["/bin/true"]
environment = { A = "1", TOKEN = "op://vault/item/token" }
timeout = "90s"
creates = "/srv/app/done"

[[step]]
id = "fetch"
type = "nala_fetch"

[[step]]
id = "tool"
type = "download"
url = "http://127.0.0.1:1/tool"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
path = "/usr/local/bin/tool"
mode = "0755"
timeout = "5m"

[[step]]
id = "svc"
type = "service"
name = "cron"
enabled = true
state = "running"

[[step]]
id = "pkgs"
type = "package"
names = ["zsh", "ripgrep"]
prune = true
"#;

fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "infra.toml", "format = 1\n");
    write(
        root,
        "inventory/production.toml",
        "[groups.all]\nroles = [\"app\"]\n\n[groups.web]\nhosts = [\"h1\", \"h2\"]\n",
    );
    write(
        root,
        "group_data/all.toml",
        "token = \"op://vault/item/token\"\nport = 8080\nratio = 0.25\n\n[users.alice]\nshell = \"/bin/zsh\"\n\n[users.bob]\nshell = \"/bin/bash\"\n",
    );
    write(root, "roles/app.toml", ROLE);
    write(
        root,
        "templates/app.conf.hbs",
        "port = {{data.port}}\n{{#each data.users}}user {{@key}} {{this.shell}}\n{{/each}}",
    );
    write(root, "files/static.txt", "static\n");
    dir
}

fn state() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path(), true);
    (dir, cache)
}

fn run(root: &Path, hostname: &str, host: &FakeHost, cache: &Cache) -> Prepared {
    prepare(&DirSource::new(root), hostname, host, cache).unwrap_or_else(|e| panic!("{e}"))
}

/// Every field of every step, the selection and the context, as the engine sees them:
/// the context only where a step reads it at run time (see the module documentation).
fn shape(prepared: &Prepared) -> String {
    let c = &prepared.catalog;
    let context = if c.steps.iter().any(|s| s.when.is_some()) {
        c.context.clone()
    } else {
        serde_json::Value::Null
    };
    format!("{:#?}\n{:#?}\n{context:#}", c.host, c.steps)
}

#[test]
fn the_context_is_kept_only_for_a_when_at_run_time() {
    let repo = repo();
    let (_dir, cache) = state();
    let host = FakeHost::new();
    let first = run(repo.path(), "h1", &host, &cache);
    let second = run(repo.path(), "h1", &host, &cache);
    assert!(second.cached);
    assert_eq!(second.catalog.context, first.catalog.context);
    assert_eq!(second.catalog.context["data"]["port"], 8080);

    // Without the one `when` that reads facts, nothing reads the context at run time.
    let role = std::fs::read_to_string(repo.path().join("roles/app.toml")).unwrap();
    let role = role.replace("when = \"facts.os.codename == 'bookworm'\"\n", "");
    write(repo.path(), "roles/app.toml", &role);
    let first = run(repo.path(), "h1", &host, &cache);
    assert!(first.catalog.steps.iter().all(|s| s.when.is_none()));
    let second = run(repo.path(), "h1", &host, &cache);
    assert!(second.cached);
    assert_eq!(second.catalog.context, serde_json::Value::Null);
    assert_eq!(shape(&second), shape(&first));
}

#[test]
fn a_cached_catalog_is_the_compiled_one_field_for_field() {
    let repo = repo();
    let (dir, cache) = state();
    let host = FakeHost::new();
    let first = run(repo.path(), "h1", &host, &cache);
    assert!(!first.cached);
    assert!(dir.path().join(FILE).exists(), "the compile was kept");
    let second = run(repo.path(), "h1", &host, &cache);
    assert!(second.cached, "nothing changed: the cache answers");
    assert_eq!(shape(&second), shape(&first));
    // The parts the report's JSON leaves out came back too.
    let users = second
        .catalog
        .steps
        .iter()
        .find(|s| s.id == "users")
        .unwrap();
    assert!(users.when.is_some() && users.item.is_some());
    let run_step = second.catalog.steps.iter().find(|s| s.id == "run").unwrap();
    assert_eq!(run_step.secrets, ["op://vault/item/token"]);
    let Some(StepKind::Command(command)) = &run_step.desired else {
        panic!("{run_step:?}")
    };
    assert_eq!(
        command.environment.len(),
        2,
        "the whole environment, not its names"
    );
    assert_eq!(command.timeout, std::time::Duration::from_secs(90));
}

#[test]
fn the_bundled_example_round_trips_for_every_host() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example");
    for hostname in ["media-01", "ha-01", "stage-media-01", "stage-ha-01"] {
        let (_dir, cache) = state();
        let host = FakeHost::new();
        let first = run(&example, hostname, &host, &cache);
        let second = run(&example, hostname, &host, &cache);
        assert!(second.cached, "{hostname}");
        assert_eq!(shape(&second), shape(&first), "{hostname}");
    }
}

#[test]
fn the_report_keeps_its_own_shape() {
    // The cache's encoding must not leak into what people read: modes as octal text,
    // timeouts in seconds, an environment as its names.
    let repo = repo();
    let (_dir, cache) = state();
    let prepared = run(repo.path(), "h1", &FakeHost::new(), &cache);
    let json = serde_json::to_value(&prepared.catalog.steps).unwrap();
    let step = |id: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["desired"]
            .clone()
    };
    assert_eq!(step("dir")["attrs"]["mode"], "0750");
    assert_eq!(step("tool")["mode"], "0755", "flattened attributes");
    assert_eq!(step("run")["timeout"], 90);
    assert_eq!(
        step("run")["environment"],
        serde_json::json!(["A", "TOKEN"])
    );
    assert_eq!(step("tool")["timeout"], 300);
}

#[test]
fn any_input_that_changed_compiles_again() {
    let repo = repo();
    let root = repo.path();
    let (_dir, cache) = state();
    let host = FakeHost::new();
    run(root, "h1", &host, &cache);

    // A template the compile read.
    write(
        root,
        "templates/app.conf.hbs",
        "port = {{data.port}} changed\n",
    );
    let p = run(root, "h1", &host, &cache);
    assert!(!p.cached);
    let conf = p.catalog.steps.iter().find(|s| s.id == "conf").unwrap();
    assert!(
        format!("{:?}", conf.desired).contains("changed"),
        "{conf:?}"
    );
    assert!(run(root, "h1", &host, &cache).cached);

    // A new file where the loader lists: a role nobody runs yet.
    write(root, "roles/other.toml", "");
    assert!(!run(root, "h1", &host, &cache).cached);
    assert!(run(root, "h1", &host, &cache).cached);

    // Data.
    write(root, "host_data/h1.toml", "port = 9090\n");
    let p = run(root, "h1", &host, &cache);
    assert!(!p.cached);
    assert!(shape(&p).contains("9090"));

    // Another host name, then back: one entry is kept, for the last compile.
    assert!(!run(root, "h2", &host, &cache).cached);
    assert!(!run(root, "h1", &host, &cache).cached);

    // The facts.
    let mut facts = host.facts().unwrap();
    facts.os.codename = "trixie".to_owned();
    let trixie = FakeHost::new().with_facts(facts.clone());
    assert!(!run(root, "h1", &trixie, &cache).cached);
    assert!(run(root, "h1", &trixie, &cache).cached);
    facts.packages.insert("zsh".to_owned(), "5.9-4".to_owned());
    let zsh = FakeHost::new().with_facts(facts);
    assert!(!run(root, "h1", &zsh, &cache).cached);
}

#[test]
fn a_repository_that_no_longer_compiles_is_never_answered_from_the_cache() {
    let repo = repo();
    let root = repo.path();
    let (_dir, cache) = state();
    let host = FakeHost::new();
    run(root, "h1", &host, &cache);

    // A `source` file the catalog names is gone: the compile fails, as it must.
    std::fs::remove_file(root.join("files/static.txt")).unwrap();
    let err = prepare(&DirSource::new(root), "h1", &host, &cache).unwrap_err();
    assert!(err.to_string().contains("static.txt"), "{err}");
    write(root, "files/static.txt", "static\n");
    assert!(
        run(root, "h1", &host, &cache).cached,
        "the last good compile still holds"
    );

    // A template that no longer renders.
    write(root, "templates/app.conf.hbs", "{{#each data.users}}\n");
    assert!(prepare(&DirSource::new(root), "h1", &host, &cache).is_err());
}

#[test]
fn a_damaged_cache_is_a_miss_and_is_replaced() {
    let repo = repo();
    let (dir, cache) = state();
    let host = FakeHost::new();
    let first = run(repo.path(), "h1", &host, &cache);
    let file = dir.path().join(FILE);
    for junk in [&b""[..], b"\x93\x01\x02", b"not msgpack at all"] {
        std::fs::write(&file, junk).unwrap();
        let p = run(repo.path(), "h1", &host, &cache);
        assert!(!p.cached);
        assert_eq!(shape(&p), shape(&first));
        assert!(run(repo.path(), "h1", &host, &cache).cached, "rewritten");
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_dry_run_reads_the_cache_but_never_writes_it() {
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let dry = Cache::new(dir.path(), false);
    assert!(!run(repo.path(), "h1", &host, &dry).cached);
    assert!(!dir.path().join(FILE).exists());
    let real = Cache::new(dir.path(), true);
    run(repo.path(), "h1", &host, &real);
    assert!(run(repo.path(), "h1", &host, &dry).cached);
    // A state directory that does not exist is not created for the cache.
    let missing = Cache::new(&dir.path().join("missing"), true);
    run(repo.path(), "h1", &host, &missing);
    assert!(!dir.path().join("missing").exists());
    assert!(!run(repo.path(), "h1", &host, &Cache::none()).cached);
}

#[test]
fn a_failed_read_is_not_cached() {
    struct Flaky<'a>(&'a DirSource);
    impl RepoSource for Flaky<'_> {
        fn read(&self, path: &str) -> io::Result<Option<String>> {
            self.0.read(path)
        }
        fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>> {
            self.0.read_bytes(path)
        }
        fn list(&self, dir: &str) -> io::Result<Vec<String>> {
            if dir == "group_data" {
                return Err(io::Error::other("injected"));
            }
            self.0.list(dir)
        }
        fn list_dirs(&self, dir: &str) -> io::Result<Vec<String>> {
            self.0.list_dirs(dir)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
    let repo = repo();
    let source = DirSource::new(repo.path());
    let flaky = Flaky(&source);
    let recording = Recording::new(&flaky);
    let _ = recording.list("group_data");
    let _ = recording.read("infra.toml");
    assert_eq!(recording.into_observations(), None);
    let recording = Recording::new(&source);
    let _ = recording.read("infra.toml");
    let _ = recording.read("no/such/file");
    let seen = recording.into_observations().unwrap();
    assert!(
        matches!(&seen[1], Observation::Read { sum: None, .. }),
        "{seen:?}"
    );
    assert!(seen.iter().all(|o| o.holds(&source)));
    write(repo.path(), "no/such/file", "now it exists\n");
    assert!(!seen[1].holds(&source));
}
