//! The agent's run records through their public API on a temporary state directory:
//! status.json, history, disable/enable, the run lock (also against another process)
//! and the Prometheus textfile.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use infra_agent::cli::Format;
use infra_agent::config::AgentConfig;
use infra_agent::engine::{RunReport, Summary};
use infra_agent::lock::{LockError, RunLock};
use infra_agent::status::{
    CommitRef, Outcome, RunRecord, RunStart, STATUS_SCHEMA, StateFiles, Status, Trigger,
};

fn empty_report() -> RunReport {
    RunReport {
        dry_run: false,
        steps: Vec::new(),
        stopped: false,
        timing: None,
    }
}

/// A run that started at `2026-11-30T15:MM:00.000Z`.
fn run_at(minute: u32, changed: usize) -> RunRecord {
    let mut record = RunStart::now(Trigger::Timer, "ssh://git@git.home/infra").applied(
        Some(CommitRef::new(
            format!("{minute:02}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "a commit",
            1_796_000_000,
        )),
        "web-01",
        "prod",
        &empty_report(),
    );
    record.started_at = format!("2026-11-30T15:{minute:02}:00.000Z");
    record.finished_at = format!("2026-11-30T15:{minute:02}:01.000Z");
    record.duration_ms = 1000;
    record.summary = Summary {
        changed,
        ..Summary::default()
    };
    record.outcome = Outcome::of(record.summary);
    record
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the directory is readable")
        .map(|e| {
            e.expect("the directory is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

fn config(state_dir: &Path, textfile_dir: Option<PathBuf>) -> AgentConfig {
    AgentConfig {
        state_dir: state_dir.to_owned(),
        textfile_dir,
        history: 3,
        hostname: Some("web-01".into()),
        ..AgentConfig::default()
    }
}

#[test]
fn status_round_trips_through_status_json() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path().join("state"));
    let (empty, warning) = files.load_status();
    assert_eq!(warning, None);
    assert_eq!(empty, Status::default());

    let mut status = Status {
        host: "web-01".into(),
        reboot_required: true,
        ..Status::default()
    };
    status.record_run(&run_at(10, 2));
    status.record_rejected(
        CommitRef::new("bbbbbbbbbbbb", "Break", 1),
        "roles/web.toml:3:1: unknown key",
    );
    status.record_fetch_failure("connection refused");
    files.save_status(&status).unwrap();

    let (loaded, warning) = files.load_status();
    assert_eq!(warning, None);
    assert!(!loaded.updated_at.is_empty(), "save stamps updated_at");
    assert_eq!(
        Status {
            updated_at: String::new(),
            ..loaded.clone()
        },
        status
    );
    assert_eq!(loaded.schema, STATUS_SCHEMA);

    // The state directory was created 0755 and the file is 0644 whatever the umask.
    assert_eq!(mode(files.dir()), 0o755);
    assert_eq!(mode(&files.status_path()), 0o644);
}

#[test]
fn a_damaged_status_gives_the_default_and_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    std::fs::write(
        files.status_path(),
        "{\"schema\": \"infra-agent/status/v1\", \"runs_total\": ",
    )
    .unwrap();
    let (status, warning) = files.load_status();
    assert_eq!(status, Status::default());
    let warning = warning.expect("a warning about the damaged file");
    assert!(
        warning.contains(&files.status_path().display().to_string()),
        "{warning}"
    );
    assert!(warning.contains("damaged"), "{warning}");

    // Another schema is not read as this one.
    std::fs::write(
        files.status_path(),
        "{\"schema\": \"infra-agent/status/v9\", \"runs_total\": 5}",
    )
    .unwrap();
    let (status, warning) = files.load_status();
    assert_eq!(status.runs_total, 0);
    assert!(warning.unwrap().contains("infra-agent/status/v9"));

    // `status` still prints, and says it could not read the record.
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = infra_agent::status::status_command(
        &config(dir.path(), None),
        Format::Json,
        &mut out,
        &mut err,
    )
    .unwrap();
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["schema"], STATUS_SCHEMA);
    assert!(String::from_utf8(err).unwrap().starts_with("warning: "));
}

#[test]
fn history_keeps_the_newest_runs_and_lists_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    // Appended out of order: names sort by start time, not by when they were written.
    for minute in [3, 1, 4, 5, 2, 6] {
        files
            .append_history(&run_at(minute, minute as usize), 4)
            .unwrap();
    }
    let listed = names(&files.history_dir());
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|n| Path::new(n).extension().is_some_and(|e| e == "json")
                && n.starts_with("20261130T15"))
    );

    let (runs, warnings) = files.history(10).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let minutes: Vec<&str> = runs.iter().map(|r| &r.started_at[14..16]).collect();
    assert_eq!(minutes, ["06", "05", "04", "03"]);
    assert_eq!(runs[0], run_at(6, 6));

    let (two, _) = files.history(2).unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].started_at, "2026-11-30T15:06:00.000Z");

    // A damaged record is left out with a warning; the others still list.
    std::fs::write(files.history_dir().join(&listed[3]), "{").unwrap();
    let (runs, warnings) = files.history(10).unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains(&listed[3]), "{warnings:?}");
}

#[test]
fn two_runs_in_the_same_millisecond_keep_both_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    let mut first = run_at(7, 1);
    first.source = "first".into();
    let mut second = run_at(7, 2);
    second.source = "second".into();
    files.append_history(&first, 10).unwrap();
    files.append_history(&second, 10).unwrap();
    let (runs, _) = files.history(10).unwrap();
    let sources: Vec<&str> = runs.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["second", "first"]);
}

#[test]
fn disable_and_enable_round_trip_and_show_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path().join("state"));
    assert_eq!(files.disabled(), None);
    assert!(!files.enable().unwrap(), "was not disabled");

    // A run holds the lock and has written its status: disabling still works.
    let lock = RunLock::acquire(files.dir(), Duration::ZERO).unwrap();
    files.save_status(&Status::default()).unwrap();
    let disabled = files.disable("  disk replacement  ").unwrap();
    assert_eq!(disabled.reason, "disk replacement");
    let (status, _) = files.load_status();
    assert_eq!(status.disabled.as_ref(), Some(&disabled));

    // Disabling again replaces the reason and keeps since.
    std::thread::sleep(Duration::from_millis(5));
    let again = files.disable("still waiting for the disk").unwrap();
    assert_eq!(again.since, disabled.since);
    assert_eq!(
        files.disabled().unwrap().reason,
        "still waiting for the disk"
    );

    // A run finishing meanwhile writes status.json; disabled.json is still the truth.
    files.save_status(&Status::default()).unwrap();
    assert!(files.load_status().0.disabled.is_some());

    assert!(files.enable().unwrap());
    assert_eq!(files.disabled(), None);
    assert_eq!(files.load_status().0.disabled, None);
    drop(lock);

    assert!(files.disable("   ").is_err(), "a reason is required");
}

#[test]
fn a_damaged_disabled_file_still_disables() {
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    std::fs::write(files.disabled_path(), "not json").unwrap();
    let d = files.disabled().expect("fails closed");
    assert!(d.reason.contains("damaged"), "{d:?}");
    assert!(
        d.since.starts_with("20"),
        "since comes from the file's time: {d:?}"
    );
    assert!(files.enable().unwrap());
    assert_eq!(files.disabled(), None);
}

#[test]
fn writes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let textfiles = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    let config = config(dir.path(), Some(textfiles.path().to_owned()));
    let mut status = Status::default();
    for minute in 0..5 {
        let warnings = files.finish_run(&mut status, &run_at(minute, 0), &config);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
    files.disable("x").unwrap();
    files.enable().unwrap();
    assert_eq!(names(dir.path()), ["history", "status.json"]);
    assert_eq!(names(&files.history_dir()).len(), 3, "config.history is 3");
    assert!(
        names(&files.history_dir())
            .iter()
            .all(|n| !n.starts_with('.'))
    );
    assert_eq!(names(textfiles.path()), ["infra_agent.prom"]);
    assert_eq!(mode(&textfiles.path().join("infra_agent.prom")), 0o644);
    for name in names(&files.history_dir()) {
        assert_eq!(mode(&files.history_dir().join(name)), 0o644);
    }
}

#[test]
fn finish_run_counts_the_run_and_writes_the_textfile() {
    let dir = tempfile::tempdir().unwrap();
    let textfiles = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    let config = config(dir.path(), Some(textfiles.path().to_owned()));
    let (mut status, _) = files.load_status();
    status.host = "web-01".into();
    let mut first = run_at(1, 2);
    first.drift = 2;
    assert!(files.finish_run(&mut status, &first, &config).is_empty());
    files.disable("maintenance").unwrap();
    let failed = RunStart::now(Trigger::Timer, "ssh://git@git.home/infra")
        .not_applied(None, "converging is disabled: maintenance");
    assert!(files.finish_run(&mut status, &failed, &config).is_empty());

    let (loaded, _) = files.load_status();
    assert_eq!(loaded.runs_total, 2);
    assert_eq!(loaded.drift_events, 2);
    assert_eq!(
        loaded.last_run.as_ref().map(|r| r.outcome),
        Some(Outcome::NotApplied)
    );
    assert_eq!(
        loaded.applied.as_ref().map(|c| c.short.as_str()),
        Some("01aaaaa")
    );

    let prom = std::fs::read_to_string(textfiles.path().join("infra_agent.prom")).unwrap();
    for expected in [
        "infra_agent_runs_total 2\n",
        "infra_agent_last_run_success 0\n",
        "infra_agent_disabled 1\n",
        "infra_agent_drift_events_total 2\n",
        "infra_agent_applied_commit_info{commit=\"01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",short=\"01aaaaa\"} 1\n",
        "# TYPE infra_agent_runs_total counter\n",
    ] {
        assert!(prom.contains(expected), "{expected} missing from\n{prom}");
    }

    // Enabling rewrites the textfile at once.
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = infra_agent::status::enable_command(&config, &mut out, &mut err).unwrap();
    assert_eq!(code, 0);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    let prom = std::fs::read_to_string(textfiles.path().join("infra_agent.prom")).unwrap();
    assert!(prom.contains("infra_agent_disabled 0\n"), "{prom}");
}

#[test]
fn a_missing_textfile_directory_means_no_textfile_and_no_warning() {
    // node_exporter's directory exists only where node_exporter is installed.
    let dir = tempfile::tempdir().unwrap();
    let files = StateFiles::new(dir.path());
    let missing = dir.path().join("no-node-exporter");
    let config = config(dir.path(), Some(missing.clone()));
    let mut status = Status::default();
    let warnings = files.finish_run(&mut status, &run_at(1, 0), &config);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        !missing.exists(),
        "the agent does not create node_exporter's directory"
    );
    assert_eq!(
        files.load_status().0.runs_total,
        1,
        "the status is still saved"
    );
}

#[test]
fn status_disable_and_enable_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("state"), None);
    let run = |f: &dyn Fn(&mut Vec<u8>, &mut Vec<u8>) -> u8| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = f(&mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let status = |format| {
        run(&|out, err| infra_agent::status::status_command(&config, format, out, err).unwrap())
    };

    // Nothing ran yet: still exit 0.
    let (code, text, err) = status(Format::Text);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(text.starts_with("host: web-01\n"), "{text}");
    assert!(text.contains("no run recorded yet"), "{text}");

    let (code, _, err) =
        run(&|out, err| infra_agent::status::disable_command(&config, "", out, err).unwrap());
    assert_eq!(code, 64);
    assert!(err.contains("reason"), "{err}");

    let (code, out, _) = run(&|out, err| {
        infra_agent::status::disable_command(&config, "kernel upgrade by hand", out, err).unwrap()
    });
    assert_eq!(code, 0);
    assert!(out.contains("kernel upgrade by hand"), "{out}");

    let files = StateFiles::new(&config.state_dir);
    let mut s = files.load_status().0;
    files.finish_run(&mut s, &run_at(9, 3), &config);
    let (code, text, _) = status(Format::Text);
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("DISABLED since "), "{text}");
    assert!(lines[1].ends_with(": kernel upgrade by hand"), "{text}");
    assert!(text.contains("applied: 09aaaaa a commit"), "{text}");
    assert!(
        text.contains(
            "2026-11-30 15:09:00 UTC  timer   09aaaaa  changed      3 changed / 0 failed"
        ),
        "{text}"
    );

    let (code, json, _) = status(Format::Json);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["schema"], STATUS_SCHEMA);
    assert_eq!(doc["disabled"]["reason"], "kernel upgrade by hand");
    assert_eq!(doc["history"][0]["outcome"], "changed");
    assert_eq!(doc["last_run"]["run"]["schema"], "infra-agent/run/v1");

    let (code, out, _) =
        run(&|out, err| infra_agent::status::enable_command(&config, out, err).unwrap());
    assert_eq!(code, 0);
    assert!(out.contains("enabled"), "{out}");
    let (_, text, _) = status(Format::Text);
    assert!(!text.contains("DISABLED"), "{text}");
}

#[test]
fn the_run_document_is_the_one_format_json_prints() {
    let report = empty_report();
    let mut printed = Vec::new();
    infra_agent::report::json(&mut printed, "web-01", "prod", &report).unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&printed).unwrap();
    assert_eq!(
        infra_agent::status::run_document("web-01", "prod", &report),
        printed
    );
    let record =
        RunStart::now(Trigger::Once, "/srv/infra").applied(None, "web-01", "prod", &report);
    assert_eq!(record.run.map(|r| r.value()), Some(printed));
    assert_eq!(record.outcome, Outcome::InSync);
    assert_eq!(record.exit_code, 0);
}

#[test]
fn a_second_lock_times_out_naming_the_holder_and_a_dropped_lock_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let held = RunLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    match RunLock::acquire(dir.path(), Duration::from_millis(200)) {
        Err(LockError::Held { pid, waited, .. }) => {
            assert_eq!(pid, Some(std::process::id()));
            assert!(waited >= Duration::from_millis(200));
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    drop(held);
    RunLock::acquire(dir.path(), Duration::ZERO).expect("free once dropped");
}

/// Another process takes the lock with flock(1) (util-linux) and keeps it in a
/// `sleep` that holds the descriptor; killing that process frees the lock without
/// anyone unlocking it.
#[test]
fn the_lock_of_a_killed_process_is_released_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join(infra_agent::lock::LOCK_FILE);
    // Tests may start processes directly; the ban on Command::new protects the agent.
    #[allow(clippy::disallowed_methods)]
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 9<>\"$1\" && flock 9 && echo $$ >&9 && exec sleep 60")
        .arg("sh")
        .arg(&lock_path)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("sh starts");
    let child_pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock_path)
        .unwrap_or_default()
        .trim()
        != child_pid.to_string()
    {
        assert!(Instant::now() < deadline, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }

    let err = RunLock::acquire(dir.path(), Duration::from_millis(300)).unwrap_err();
    match &err {
        LockError::Held { pid, .. } => assert_eq!(*pid, Some(child_pid)),
        other @ LockError::Io { .. } => panic!("expected Held, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("(pid {child_pid})")),
        "{err}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let lock =
        RunLock::acquire(dir.path(), Duration::from_secs(2)).expect("released by the kernel");
    assert_eq!(
        std::fs::read_to_string(&lock_path).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(lock);
}
