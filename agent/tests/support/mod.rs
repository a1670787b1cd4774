//! Test support: a builder that runs the real `infra-agent` binary, and small state
//! repositories written into temporary directories.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support module"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// Runs `infra-agent` with arguments and captures what it printed.
pub struct AgentTest {
    args: Vec<String>,
    dir: Option<PathBuf>,
}

/// What a run of `infra-agent` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl AgentTest {
    pub fn new() -> Self {
        Self {
            args: Vec::new(),
            dir: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    pub fn run(self) -> Run {
        // Tests drive the real binary; the ban on Command::new protects the agent's code.
        #[allow(clippy::disallowed_methods)]
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_infra-agent"));
        cmd.args(&self.args).env("NO_COLOR", "1");
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().expect("infra-agent runs");
        Run {
            code: status
                .code()
                .expect("infra-agent exits rather than being killed"),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }
}

// ---- workspace binaries built beside the agent ----

/// Builds the binary `bin` of the workspace package `package` with cargo, in a cargo
/// command of its own, into the target directory and profile of the `infra-agent`
/// these tests run; returns its path, beside that `infra-agent`.
///
/// One command per package on purpose: cargo unifies the features of everything one
/// command builds, and `-p infra-agent -p infra-agent-fetch` together would give the
/// agent the helper's OpenSSL (packaging/build-deb.sh builds them the same way).
pub fn cargo_build(package: &str, bin: &str) -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_infra-agent"));
    let profile_dir = agent.parent().expect("the agent lives in TARGET/PROFILE/");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory lives in the target directory");
    // target/debug holds the dev profile; every other profile has its own name.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("{}: no profile directory", agent.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // Tests drive cargo like a user; the ban on Command::new protects the agent's code.
    #[allow(clippy::disallowed_methods)]
    let out = std::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap_or_else(|e| panic!("{cargo} runs: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = profile_dir.join(bin);
    assert!(
        built.is_file(),
        "cargo build -p {package} left no {}",
        built.display()
    );
    built
}

/// `infra-agent-fetch` beside the `infra-agent` these tests run, built once per test
/// process. The agent runs it from its own directory to fetch from a URL (file://,
/// ssh://, https://); tests that fetch call this first.
pub fn fetch_helper() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build("infra-agent-fetch", "infra-agent-fetch"))
}

/// A small valid state repository; `files` replace or add files to it.
pub fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base: &[(&str, &str)] = &[
        ("infra.toml", "format = 1\nmin_agent_version = \"0.1.0\"\n"),
        (
            "inventory/production.toml",
            "[groups.all]\nroles = [\"base\"]\n\n[groups.web]\nhosts = [\"web-01\", \"web-*\"]\nroles = [\"web\"]\n",
        ),
        (
            "group_data/all.toml",
            "[admin]\nuser = \"alice\"\nkeys = [\"ssh-ed25519 AAAA alice@laptop\"]\n",
        ),
        (
            "group_data/web.toml",
            "[site]\nport = 8080\nnames = [\"a.example.net\", \"b.example.net\"]\n",
        ),
        (
            "roles/base.toml",
            "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"hello {{host.name}}\\n\"\nmode = \"0644\"\n",
        ),
        (
            "roles/web.toml",
            "[[step]]\nid = \"site-dir\"\ntype = \"directory\"\npath = \"/srv/site\"\n\n[[step]]\nid = \"site-conf\"\ntype = \"template\"\npath = \"/srv/site/site.conf\"\nsource = \"site.conf.hbs\"\nrequires = [\"site-dir\"]\n",
        ),
        (
            "templates/site.conf.hbs",
            "# managed by infra-agent\nuser = {{data.admin.user}}\nport = {{data.site.port}}\n",
        ),
        ("files/banner", "welcome\n"),
    ];
    for (path, text) in base.iter().chain(files) {
        write(dir.path(), path, text);
    }
    dir
}

pub fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("files live in a directory")).expect("mkdir");
    std::fs::write(full, text).expect("write a fixture file");
}

// ---- snapshots of the filesystem, to prove a run changed nothing ----

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Kind, mode, owner, content hash (or link target), mtime and ctime of `path`;
/// `"absent"` when it does not exist. A directory's mtime changes when an entry is
/// created or removed in it, a stray candidate included.
pub fn describe(path: &Path) -> String {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return "absent".to_owned();
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        format!(
            "link -> {}",
            std::fs::read_link(path).expect("a link reads").display()
        )
    } else if kind.is_dir() {
        "dir".to_owned()
    } else if kind.is_file() {
        format!(
            "file {:016x}",
            fnv1a(&std::fs::read(path).expect("a file reads"))
        )
    } else {
        "special".to_owned()
    };
    format!(
        "{what} mode {:o} {}:{} mtime {}.{} ctime {}.{}",
        meta.permissions().mode(),
        meta.uid(),
        meta.gid(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// `path` and, if it is a directory, everything under it.
pub fn walk(path: &Path, out: &mut BTreeMap<PathBuf, String>) {
    out.insert(path.to_owned(), describe(path));
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(path).expect("a directory lists") {
            walk(&entry.expect("an entry").path(), out);
        }
    }
}

/// Every path under `dir` (and `dir` itself), described.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

// ---- one host, one role: a repository compiled and run by the library ----

/// Loads a repository for host `h1` (groups `all` and `g`, one role `r` holding
/// `steps`) plus `extra` files (data, templates), and compiles `h1`'s catalog: the
/// catalog, or every error as text.
pub fn compile_h1(
    extra: &[(&str, &str)],
    steps: &str,
) -> Result<infra_agent::catalog::Catalog, String> {
    use infra_agent::state_repo::{self, DirSource, infra_toml::Version};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = [
        ("infra.toml", "format = 1\n"),
        (
            "inventory/production.toml",
            "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
        ),
        ("roles/r.toml", steps),
    ];
    for (path, text) in base.iter().chain(extra) {
        write(dir.path(), path, text);
    }
    let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())
        .map_err(|e| e.to_string())?;
    let sel = repo.select("h1").map_err(|e| e.to_string())?;
    infra_agent::catalog::compile(&repo, &sel, &infra_agent::facts::Facts::placeholder("h1"))
        .map_err(|e| e.to_string())
}

/// Runs a catalog on `host` as `--once` does: originals recorded under
/// /var/lib/infra-agent, except in a dry run; no `files/`.
pub fn run_catalog(
    catalog: &infra_agent::catalog::Catalog,
    host: &dyn infra_agent::host::Host,
    dry_run: bool,
) -> infra_agent::engine::RunReport {
    let files = |p: &str| Err(format!("{p}: no files in this repository"));
    let originals = infra_agent::originals::Originals::new(Path::new("/var/lib/infra-agent"));
    let ctx =
        infra_agent::resource::Ctx::new(host, dry_run, (!dry_run).then_some(&originals), &files);
    let options = infra_agent::engine::Options {
        dry_run,
        only: Vec::new(),
        ..Default::default()
    };
    infra_agent::engine::run(catalog, &ctx, &options).expect("the run starts")
}

/// The report of step `id`.
pub fn step_report<'a>(
    report: &'a infra_agent::engine::RunReport,
    id: &str,
) -> &'a infra_agent::engine::StepReport {
    report
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("step {id} is reported: {:#?}", report.steps))
}

/// The text report of a run on `h1`.
pub fn text_report(report: &infra_agent::engine::RunReport) -> String {
    let mut out = Vec::new();
    infra_agent::report::text(&mut out, "h1", "production", report)
        .expect("writing to a Vec succeeds");
    String::from_utf8(out).expect("UTF-8")
}

/// The JSON report of a run on `h1`.
pub fn json_report(report: &infra_agent::engine::RunReport) -> String {
    let mut out = Vec::new();
    infra_agent::report::json(&mut out, "h1", "production", report)
        .expect("writing to a Vec succeeds");
    String::from_utf8(out).expect("UTF-8")
}
