//! Unit tests of references, placeholders and the resolver.

use super::*;

#[test]
fn references_parse() {
    let r = Reference::parse("op://homelab/tailscale/auth-key").unwrap();
    assert_eq!(
        (
            r.vault.as_str(),
            r.item.as_str(),
            r.section.as_deref(),
            r.field.as_str()
        ),
        ("homelab", "tailscale", None, "auth-key")
    );
    let r = Reference::parse("op://Home Lab/db/prod/pass word?attribute=otp").unwrap();
    assert_eq!(r.section.as_deref(), Some("prod"));
    assert_eq!(r.field, "pass word");
    assert_eq!(r.query, Some(Query::Otp));
    let r = Reference::parse("op://v/ssh/private key?ssh-format=openssh").unwrap();
    assert_eq!(r.query, Some(Query::SshOpenssh));
    assert_eq!(r.to_string(), "op://v/ssh/private key?ssh-format=openssh");
}

#[test]
fn malformed_references_say_why() {
    let cases = [
        ("op://vault/item", "2 part(s)"),
        ("op://a/b/c/d/e", "5 part(s)"),
        ("op://vault//field", "empty item name"),
        ("op:///item/field", "empty vault name"),
        ("op://v/i/s/", "empty field name"),
        ("op://v/i/f?attribute=totp", "?attribute=totp"),
        ("op://v/i/f ", "white space"),
        ("op://v/i/f\n", "white space"),
        ("op://v/i/f\u{7}x", "U+0007"),
    ];
    for (text, want) in cases {
        let e = Reference::parse(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn placeholders_round_trip() {
    let r = Reference::parse("op://v/i/f").unwrap();
    let p = placeholder(&r);
    assert!(is_placeholder(&p));
    let text = format!(
        "key = {p}\nother = {p} and {}\n",
        placeholder(&Reference::parse("op://v/j/g").unwrap())
    );
    assert_eq!(
        placeholders(&text),
        ["op://v/i/f", "op://v/i/f", "op://v/j/g"]
    );
    assert_eq!(
        show(&text),
        "key = <secret op://v/i/f>\nother = <secret op://v/i/f> and <secret op://v/j/g>\n"
    );
    let mut values = Values::new();
    values.insert("op://v/i/f".to_owned(), Secret::new("s3cr3t".to_owned()));
    values.insert("op://v/j/g".to_owned(), Secret::new("two".to_owned()));
    assert_eq!(
        substitute(&text, &values),
        "key = s3cr3t\nother = s3cr3t and two\n"
    );
    assert_eq!(
        scrub("printed s3cr3t twice: s3cr3t", &values),
        "printed <secret> twice: <secret>"
    );
    assert!(!is_placeholder("plain"));
    assert!(!is_placeholder(&format!("x{p}")));
}

#[test]
fn data_references_become_placeholders() {
    let mut data = serde_json::json!({
        "a": "op://v/i/f", "b": ["op://v/i/g", 3], "c": {"d": "not op://v/i/f"}, "bad": "op://v"
    });
    placehold_data(&mut data);
    assert!(is_placeholder(data["a"].as_str().unwrap()));
    assert!(is_placeholder(data["b"][0].as_str().unwrap()));
    assert_eq!(data["c"]["d"], "not op://v/i/f");
    assert_eq!(data["bad"], "op://v");
    assert_eq!(malformed_in_json(&data).len(), 1);
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("hunter2".to_owned());
    assert_eq!(
        format!("{s} {s:?} {:?}", Some(&s)),
        "<secret> <secret> Some(<secret>)"
    );
}

/// A backend answering from a table and counting its reads.
struct Table {
    values: HashMap<&'static str, Result<&'static str, Error>>,
    reads: Mutex<Vec<String>>,
}

impl Backend for Table {
    fn read(&self, reference: &Reference) -> Result<Secret, Error> {
        self.reads.lock().unwrap().push(reference.to_string());
        match self.values.get(reference.as_str()) {
            Some(Ok(v)) => Ok(Secret::new((*v).to_owned())),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::NotFound(format!("no item `{}`", reference.item))),
        }
    }
}

fn table() -> Arc<Table> {
    let mut values = HashMap::new();
    values.insert("op://v/i/f", Ok("value-1"));
    values.insert(
        "op://v/busy/f",
        Err(Error::RateLimited("op: Too many requests".to_owned())),
    );
    Arc::new(Table {
        values,
        reads: Mutex::default(),
    })
}

#[test]
fn a_run_reads_each_reference_once_failures_too() {
    let backend = table();
    let resolver = Resolver::new(Some(backend.clone()), Arc::default());
    for _ in 0..3 {
        assert_eq!(resolver.resolve("op://v/i/f").unwrap().expose(), "value-1");
        assert!(matches!(
            resolver.resolve("op://v/missing/f"),
            Err(Error::NotFound(_))
        ));
    }
    let e = resolver
        .resolve_all(&["op://v/i/f".to_owned(), "op://v/busy/f".to_owned()])
        .unwrap_err();
    assert!(e.contains("secret op://v/busy/f cannot be resolved"), "{e}");
    assert!(e.contains("too many requests"), "{e}");
    assert_eq!(
        *backend.reads.lock().unwrap(),
        ["op://v/i/f", "op://v/missing/f", "op://v/busy/f"]
    );
    // Without a cache time, the next run reads again.
    let next = Resolver::new(Some(backend.clone()), Arc::default());
    next.resolve("op://v/i/f").unwrap();
    assert_eq!(backend.reads.lock().unwrap().len(), 4);
}

#[test]
fn the_cache_keeps_values_between_runs_for_its_time() {
    let backend = table();
    let cache = Arc::new(Cache::default());
    let config = AgentConfig {
        secrets_cache_ttl: 3600,
        ..AgentConfig::default()
    };
    cache.configure(&config);
    for _ in 0..2 {
        let run = Resolver::new(Some(backend.clone()), Arc::clone(&cache));
        run.resolve("op://v/i/f").unwrap();
        let _ = run.resolve("op://v/missing/f");
    }
    // The value came once; the failure is asked again in the second run.
    assert_eq!(
        *backend.reads.lock().unwrap(),
        ["op://v/i/f", "op://v/missing/f", "op://v/missing/f"]
    );
    // Other backend settings drop what was kept.
    cache.configure(&AgentConfig {
        op_path: "/opt/op".to_owned(),
        ..config
    });
    Resolver::new(Some(backend.clone()), Arc::clone(&cache))
        .resolve("op://v/i/f")
        .unwrap();
    assert_eq!(backend.reads.lock().unwrap().len(), 4);
}

#[test]
fn cached_values_cross_to_the_next_process_and_expire() {
    let backend = table();
    let config = AgentConfig {
        secrets_cache_ttl: 60,
        ..AgentConfig::default()
    };
    // One converge (a process of its own) reads the value...
    let first = Arc::new(Cache::default());
    first.configure(&config);
    Resolver::new(Some(backend.clone()), Arc::clone(&first))
        .resolve("op://v/i/f")
        .unwrap();
    let kept = first.export();
    assert_eq!(kept.len(), 1);
    assert!(!format!("{kept:?}").contains(&kept[0].value), "{kept:?}");
    // ...the daemon keeps it and hands it to the next, which reads nothing.
    let daemon = Cache::default();
    daemon.configure(&config);
    daemon.import(kept);
    let next = Arc::new(Cache::default());
    next.configure(&config);
    next.import(daemon.export());
    Resolver::new(Some(backend.clone()), Arc::clone(&next))
        .resolve("op://v/i/f")
        .unwrap();
    assert_eq!(backend.reads.lock().unwrap().len(), 1);
    // A value older than the time to live is not taken; with no time to live nothing
    // is exported at all.
    let stale = Cache::default();
    stale.configure(&config);
    stale.import(vec![Kept {
        reference: "op://v/i/f".to_owned(),
        value: "x".to_owned(),
        age_ms: 61_000,
    }]);
    assert!(stale.export().is_empty());
    let off = Cache::default();
    off.configure(&AgentConfig::default());
    off.import(next.export());
    assert!(off.export().is_empty());
}

#[test]
fn no_backend_names_the_key_to_set() {
    let e = Resolver::default()
        .resolve_all(&["op://v/i/f".to_owned()])
        .unwrap_err();
    assert!(
        e.starts_with("secret op://v/i/f cannot be resolved: no secrets backend"),
        "{e}"
    );
    assert!(e.contains("secrets_backend"), "{e}");
}

// ---- compiling and running steps that use secrets, on the fake host ----

mod engine_run {
    use super::*;
    use crate::catalog::{self, Catalog};
    use crate::diag::Diagnostics;
    use crate::engine::{self, Options, RunReport, Status};
    use crate::facts::Facts;
    use crate::host::FakeHost;
    use crate::process::CmdOutput;
    use crate::resource::Ctx;
    use crate::state_repo::infra_toml::Version;
    use crate::state_repo::{self, DirSource};

    const DATA: &str = "[app]\ntoken = \"op://v/i/f\"\nmissing = \"op://v/nope/f\"\n";

    fn compile(steps: &str, files: &[(&str, &str)]) -> Result<Catalog, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let base: &[(&str, &str)] = &[
            ("infra.toml", "format = 1\n"),
            (
                "inventory/production.toml",
                "[groups.all]\nroles = [\"r\"]\n\n[groups.g]\nhosts = [\"h1\"]\n",
            ),
            ("group_data/all.toml", DATA),
            ("roles/r.toml", steps),
        ];
        for (path, text) in base.iter().chain(files) {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let repo = state_repo::load(&DirSource::new(dir.path()), Version::agent())?;
        let sel = repo.select("h1").map_err(Diagnostics::from)?;
        catalog::compile(&repo, &sel, &Facts::placeholder("h1"))
    }

    fn run(catalog: &Catalog, host: &FakeHost, backend: &Arc<Table>, dry_run: bool) -> RunReport {
        let files = |_: &str| -> Result<Vec<u8>, String> { Err("no files".to_owned()) };
        let mut ctx = Ctx::new(host, dry_run, None, &files);
        let backend: Arc<dyn Backend> = backend.clone();
        ctx.secrets = Resolver::new(Some(backend), Arc::default());
        let options = Options {
            dry_run,
            ..Options::default()
        };
        engine::run(catalog, &ctx, &options).unwrap()
    }

    const STEPS: &str = r#"
[[step]]
id = "conf"
type = "template"
path = "/etc/app.conf"
source = "app.conf.hbs"

[[step]]
id = "key"
type = "file"
path = "/etc/app.key"
content = { data = "app.token" }
mode = "0640"

[[step]]
id = "up"
type = "command"
argv = ["app", "up"]
environment = { APP_TOKEN = "op://v/i/f", PLAIN = "x" }
requires = ["conf"]

[[step]]
id = "plain"
type = "file"
path = "/etc/plain"
content = "hello\n"
"#;

    const TEMPLATE: &str =
        "user = admin\ntoken = {{data.app.token}}\ninline = {{secret \"op://v/j/g\"}}\n";

    fn backend() -> Arc<Table> {
        let mut values = HashMap::new();
        values.insert("op://v/i/f", Ok("value-1"));
        values.insert("op://v/j/g", Ok("value-2"));
        Arc::new(Table {
            values,
            reads: Mutex::default(),
        })
    }

    #[test]
    fn secrets_are_placeholders_until_the_plan_and_never_shown() {
        let catalog = compile(STEPS, &[("templates/app.conf.hbs", TEMPLATE)]).unwrap();
        let conf = &catalog.steps[0];
        assert_eq!(conf.secrets, ["op://v/i/f", "op://v/j/g"]);
        let Some(StepKind::Template(t)) = &conf.desired else {
            panic!("a template step")
        };
        assert!(t.sensitive);
        assert_eq!(
            t.attrs.mode,
            Some(crate::step::Mode(0o600)),
            "0600 by default"
        );
        assert!(!t.content.contains("value-"), "compiling never resolves");
        let Some(StepKind::File(f)) = &catalog.steps[1].desired else {
            panic!("a file step")
        };
        assert!(f.sensitive);
        assert_eq!(
            f.attrs.mode,
            Some(crate::step::Mode(0o640)),
            "a given mode stays"
        );
        assert_eq!(catalog.steps[2].secrets, ["op://v/i/f"]);
        assert!(catalog.steps[3].secrets.is_empty());

        let host = FakeHost::new().with_dir("/etc", 0o755).with_command(
            "app",
            CmdOutput {
                code: Some(0),
                stdout: b"logged in with value-1\n".to_vec(),
                ..CmdOutput::default()
            },
        );
        let backend = backend();
        let dry = run(&catalog, &host, &backend, true);
        let shown = serde_json::to_string(&dry).unwrap();
        assert!(!shown.contains("value-"), "{shown}");
        assert!(shown.contains("(secret, not shown)"), "{shown}");
        assert!(
            host.file("/etc/app.conf").is_none(),
            "a dry run writes nothing"
        );

        let report = run(&catalog, &host, &backend, false);
        let statuses: Vec<Status> = report.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Status::Changed; 4], "{:#?}", report.steps);
        let (content, mode, ..) = host.file("/etc/app.conf").unwrap();
        assert_eq!(
            String::from_utf8(content).unwrap(),
            "user = admin\ntoken = value-1\ninline = value-2\n"
        );
        assert_eq!(mode, 0o600);
        assert_eq!(host.file("/etc/app.key").unwrap().0, b"value-1");
        let cmd = host
            .commands()
            .into_iter()
            .find(|c| c.program == "app")
            .unwrap();
        assert!(
            cmd.env
                .contains(&("APP_TOKEN".to_owned(), "value-1".to_owned()))
        );
        assert!(!cmd.args.iter().any(|a| a.contains("value-")));
        let shown = serde_json::to_string(&report).unwrap();
        assert!(!shown.contains("value-"), "{shown}");
        assert!(
            shown.contains("logged in with <secret>"),
            "the command's output is scrubbed"
        );
        // Each reference once per run: two runs, two references.
        assert_eq!(backend.reads.lock().unwrap().len(), 4);

        // Converged: the next run is in sync (the plan compares resolved content).
        let again = run(&catalog, &host, &backend, false);
        assert_eq!(again.steps[0].status, Status::InSync, "{:#?}", again.steps);
        assert_eq!(again.steps[1].status, Status::InSync);
    }

    #[test]
    fn a_secret_that_cannot_be_resolved_fails_its_step_and_dependents_only() {
        let steps = STEPS.replace(
            "content = { data = \"app.token\" }",
            "content = { data = \"app.missing\" }",
        );
        let template = "token = {{secret \"op://v/busy/f\"}}\n";
        let catalog = compile(&steps, &[("templates/app.conf.hbs", template)]).unwrap();
        let host = FakeHost::new().with_dir("/etc", 0o755).with_command(
            "app",
            CmdOutput {
                code: Some(0),
                ..CmdOutput::default()
            },
        );
        let mut values = HashMap::new();
        values.insert("op://v/i/f", Ok("value-1"));
        values.insert(
            "op://v/busy/f",
            Err(Error::RateLimited("op: Too many requests".to_owned())),
        );
        let backend = Arc::new(Table {
            values,
            reads: Mutex::default(),
        });
        let report = run(&catalog, &host, &backend, false);
        let got: Vec<(String, Status)> = report
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect();
        assert_eq!(
            got,
            [
                ("conf".to_owned(), Status::Failed),
                ("key".to_owned(), Status::Failed),
                ("up".to_owned(), Status::Skipped),
                ("plain".to_owned(), Status::Changed),
            ]
        );
        let conf = report.steps[0].error.as_deref().unwrap();
        assert!(
            conf.starts_with(
                "secret op://v/busy/f cannot be resolved: 1Password answered \"too many requests\""
            ),
            "{conf}"
        );
        let key = report.steps[1].error.as_deref().unwrap();
        assert!(
            key.contains("secret op://v/nope/f cannot be resolved: no item `nope`"),
            "{key}"
        );
        assert!(host.file("/etc/app.conf").is_none());
        assert_eq!(host.file("/etc/plain").unwrap().0, b"hello\n");
    }

    #[test]
    fn secrets_only_where_output_never_shows_them() {
        let argv = "[[step]]\nid = \"c\"\ntype = \"command\"\nargv = [\"app\", \"--token={{data.app.token}}\"]\n";
        let e = compile(argv, &[]).unwrap_err().to_string();
        assert!(
            e.contains("`argv` of step `c` uses the secret op://v/i/f"),
            "{e}"
        );
        assert!(e.contains("pass the secret in `environment`"), "{e}");
        assert!(e.contains("roles/r.toml:4"), "{e}");
        let path = "[[step]]\nid = \"f\"\ntype = \"file\"\npath = \"/etc/{{data.app.token}}\"\ncontent = \"x\"\n";
        let e = compile(path, &[]).unwrap_err().to_string();
        assert!(
            e.contains("`path` of step `f` uses the secret op://v/i/f"),
            "{e}"
        );
        assert!(
            !e.contains('\u{E000}'),
            "no raw placeholder in messages: {e}"
        );
    }

    #[test]
    fn malformed_references_are_errors_with_file_and_line() {
        let steps = "[[step]]\nid = \"f\"\ntype = \"file\"\npath = \"/etc/x\"\ncontent = \"x\"\n";
        let dir_data = [(
            "group_data/g.toml",
            "[db]\nuser = \"app\"\npass = \"op://v/item\"\n",
        )];
        let e = compile(steps, &dir_data).unwrap_err().to_string();
        assert!(
            e.contains("`db.pass` is not a valid 1Password reference"),
            "{e}"
        );
        assert!(e.contains("group_data/g.toml:3"), "{e}");

        let env = "[[step]]\nid = \"c\"\ntype = \"command\"\nargv = [\"app\"]\nenvironment = { T = \"op://v/i/f?attribute=bogus\" }\n";
        let e = compile(env, &[]).unwrap_err().to_string();
        assert!(e.contains("`environment` of step `c`"), "{e}");
        assert!(e.contains("?attribute=bogus"), "{e}");

        let helper =
            "[[step]]\nid = \"t\"\ntype = \"template\"\npath = \"/etc/t\"\nsource = \"t.hbs\"\n";
        let e = compile(
            helper,
            &[("templates/t.hbs", "a\nb = {{secret \"op://v//f\"}}\n")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("templates/t.hbs:2"), "{e}");
        assert!(e.contains("empty item name"), "{e}");
    }
}
