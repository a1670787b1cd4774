//! The command line: exit codes, usage errors, and `check`/`data` on the bundled example.

mod support;

use std::path::PathBuf;

use support::{AgentTest, repo};

fn example() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example");
    dir.to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn check_passes_on_the_example_repository() {
    let run = AgentTest::new().args(["check", "--repo", &example()]).run();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for host in ["media-01", "ha-01"] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(host)),
            "{host} missing:\n{}",
            run.stdout
        );
    }
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn check_json_reports_every_host_with_a_schema() {
    let run = AgentTest::new()
        .args(["check", "--repo", &example(), "--format", "json"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["schema"], "infra-agent/check/v1");
    assert_eq!(v["valid"], true);
    let media = v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == "media-01")
        .expect("media-01 is checked");
    assert_eq!(media["env"], "production");
    assert_eq!(media["groups"][0], "all");
    assert!(media["steps"].as_u64().expect("a step count") > 0);
    // Regression: the host's name was written twice in each host object.
    assert_eq!(
        run.stdout.matches("\"name\": \"media-01\"").count(),
        1,
        "{}",
        run.stdout
    );
}

#[test]
fn check_defaults_to_the_current_directory() {
    let dir = repo(&[]);
    let run = AgentTest::new().arg("check").current_dir(dir.path()).run();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let run = AgentTest::new()
        .arg("check")
        .current_dir(elsewhere.path())
        .run();
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("has no infra.toml"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
}

#[test]
fn data_shows_merged_values_with_their_sources() {
    let dir = repo(&[("host_data/web-01.toml", "[site]\nport = 9090\n")]);
    let run = AgentTest::new()
        .args(["data", "--hostname", "WEB-01.example.net", "--repo"])
        .arg(dir.path().to_str().expect("UTF-8"))
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = |prefix: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{}", run.stdout))
            .to_owned()
    };
    assert!(line("site.port = 9090").ends_with("# host_data/web-01.toml:2"));
    assert!(line("site.names = ").ends_with("# group_data/web.toml:3"));
    assert!(line("admin.user = \"alice\"").ends_with("# group_data/all.toml:2"));
    assert!(
        run.stdout
            .starts_with("# host web-01 (env production; groups: all, web)"),
        "{}",
        run.stdout
    );
}

#[test]
fn data_of_the_example_host_media_01_names_sources() {
    let run = AgentTest::new()
        .args(["data", "--hostname", "media-01", "--repo", &example()])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("# group_data/all.toml:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("# host_data/media-01.toml:"),
        "{}",
        run.stdout
    );
    let json = AgentTest::new()
        .args([
            "data",
            "--hostname",
            "media-01",
            "--format",
            "json",
            "--repo",
            &example(),
        ])
        .run();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["schema"], "infra-agent/data/v1");
    assert!(
        v["sources"]
            .as_object()
            .expect("sources")
            .values()
            .all(|s| s.as_str().is_some_and(|s| s.contains(".toml:")))
    );
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        vec!["--dry-run"],
        vec!["check", "--no-such-flag"],
        vec!["check", "--format", "yaml"],
        vec!["frobnicate"],
    ] {
        let run = AgentTest::new().args(&args).run();
        assert_eq!(run.code, 64, "{args:?}: {}", run.stderr);
    }
    assert_eq!(AgentTest::new().arg("--help").run().code, 0);
    assert_eq!(AgentTest::new().arg("--version").run().code, 0);
}

#[test]
fn disable_pauses_runs_until_enable_and_status_says_why() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\ntextfile_dir = \"\"\n",
            state.path().join("state").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let agent = |args: &[&str]| {
        AgentTest::new()
            .args(["--config", config.as_str()])
            .args(args)
            .run()
    };
    let shown = agent(&["status"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("no run recorded yet"),
        "{}",
        shown.stdout
    );

    assert_eq!(agent(&["disable", "--reason", "disk swap"]).code, 0);
    let shown = agent(&["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(doc["disabled"]["reason"], "disk swap", "{doc:#}");
    let example = example();
    let once = [
        "--once",
        "--hostname",
        "media-01",
        "--repo",
        example.as_str(),
    ];
    let run = agent(&once);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("disk swap"), "{}", run.stderr);
    // A dry run changes nothing, so it still shows the plan.
    let mut dry = once.to_vec();
    dry.push("--dry-run");
    assert_eq!(agent(&dry).code, 2);

    assert_eq!(agent(&["enable"]).code, 0);
    let shown = agent(&["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert!(doc["disabled"].is_null(), "{doc:#}");
}

#[test]
fn only_without_once_is_a_usage_error() {
    let run = AgentTest::new().args(["--only", "motd"]).run();
    assert_eq!(run.code, 64, "{}", run.stderr);
}

#[test]
fn a_run_reports_where_its_time_went() {
    let run = AgentTest::new()
        .args([
            "--once",
            "--dry-run",
            "--format",
            "json",
            "--hostname",
            "media-01",
            "--repo",
            &example(),
        ])
        .run();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let t = &v["timing"];
    let (total, programs, agent) = (
        t["total_ms"].as_f64().expect("total_ms"),
        t["programs_ms"].as_f64().expect("programs_ms"),
        t["agent_ms"].as_f64().expect("agent_ms"),
    );
    assert!(total > 0.0 && programs >= 0.0 && programs <= total, "{t}");
    assert!((agent - (total - programs)).abs() < 0.2, "{t}");
    let text = AgentTest::new()
        .args([
            "--once",
            "--dry-run",
            "--hostname",
            "media-01",
            "--repo",
            &example(),
        ])
        .run();
    let last = text.stdout.lines().last().expect("a summary line");
    assert!(last.contains(" ms in programs it ran)"), "{last}");
}

/// `--repo DIR` reads the directory as it is and never touches git: no mirror is made,
/// the run records the directory as its source and no commit as applied.
#[test]
fn a_directory_run_never_touches_git() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("motd");
    let role = format!(
        "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"{}\"\ncontent = \"hello\\n\"\n",
        target.display()
    );
    let dir = repo(&[("roles/base.toml", &role)]);
    let state = out.path().join("state");
    let config = out.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"{}\"\ntextfile_dir = \"\"\n", state.display()),
    )
    .unwrap();
    let run = AgentTest::new()
        .args(["--once", "--hostname", "web-01", "--config"])
        .arg(config.to_str().unwrap())
        .arg("--repo")
        .arg(dir.path().to_str().unwrap())
        .run();
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello\n");
    assert!(
        !state.join("repo.git").exists(),
        "a directory run made a git mirror"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).unwrap()).unwrap();
    assert!(status["applied"].is_null(), "{status:#}");
    assert!(status["last_run"]["commit"].is_null(), "{status:#}");
    assert_eq!(
        status["last_run"]["source"],
        dir.path().to_str().unwrap(),
        "{status:#}"
    );
}
