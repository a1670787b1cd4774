//! The `download` and `nala_fetch` steps: small state repositories for host `h1` are
//! compiled and run by the engine against a fake host whose `curl`, `apt-helper`,
//! `tar` and `nala` are scripted (they write what the real ones would). Checked: the
//! keys and build errors, that nothing is downloaded or run when in sync, the argv of
//! each program, that a wrong hash writes nothing, extraction and its record, that
//! nala fetch runs once per host and that its failure is a warning, and that dry runs
//! change nothing.

mod support;

use std::path::Path;

use infra_agent::catalog::Catalog;
use infra_agent::engine::{RunReport, Status, StepReport};
use infra_agent::host::fake::Node;
use infra_agent::host::{FakeHost, Host};
use infra_agent::originals::Originals;
use infra_agent::process::{Cmd, CmdOutput};
use infra_agent::resource::download::{partial_path, record_path, sha256_hex};
use infra_agent::step::StepKind;

const STATE_DIR: &str = "/var/lib/infra-agent";
const URL: &str = "http://files.test/tool";
const TOOL: &[u8] = b"#!/bin/sh\necho tool 1.0\n";
const ARCHIVE: &[u8] = b"pretend this is a .tar.gz\n";
const MEMBER: &[u8] = b"\x7fELF the starship binary";

fn compile(steps: &str) -> Result<Catalog, String> {
    support::compile_h1(&[], steps)
}

fn catalog(steps: &str) -> Catalog {
    compile(steps).unwrap_or_else(|e| panic!("the steps compile:\n{e}\n{steps}"))
}

fn download(keys: &str) -> String {
    format!("[[step]]\nid = \"d\"\ntype = \"download\"\n{keys}\n")
}

fn plain(sha: &str) -> String {
    download(&format!(
        "url = \"{URL}\"\nsha256 = \"{sha}\"\npath = \"/usr/local/bin/tool\"\nmode = \"0755\""
    ))
}

fn extracting(sha: &str) -> String {
    download(&format!(
        "url = \"{URL}.tar.gz\"\nsha256 = \"{sha}\"\npath = \"/usr/local/bin/starship\"\nextract = \"starship\"\nmode = \"0755\""
    ))
}

fn run(catalog: &Catalog, host: &dyn Host, dry_run: bool) -> RunReport {
    support::run_catalog(catalog, host, dry_run)
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepReport {
    support::step_report(report, id)
}

fn text(report: &RunReport) -> String {
    support::text_report(report)
}

fn started(host: &FakeHost) -> Vec<String> {
    host.commands()
        .iter()
        .map(|c| {
            std::iter::once(c.program.as_str())
                .chain(c.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn ok(stdout: &[u8]) -> CmdOutput {
    CmdOutput {
        code: Some(0),
        stdout: stdout.to_vec(),
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

/// Writes `content` where a downloader was told to (`-o FILE`, or apt-helper's
/// second argument).
fn serve(host: &FakeHost, cmd: &Cmd, content: &[u8]) -> CmdOutput {
    let target = match cmd.args.iter().position(|a| a == "-o") {
        Some(i) => cmd.args[i + 1].clone(),
        None => cmd.args[2].clone(),
    };
    host.set_node(
        &target,
        Some(Node::File {
            content: content.to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }),
    );
    ok(b"")
}

/// A machine with curl that serves `content` for every URL, and `tar` printing MEMBER.
fn host_serving(content: &'static [u8]) -> FakeHost {
    FakeHost::new()
        .with_dir("/usr/local/bin", 0o755)
        .with_dir("/var/cache", 0o755)
        .with_dir(STATE_DIR, 0o700)
        .with_file("/usr/bin/curl", b"", 0o755)
        .with_command_effect("/usr/bin/curl", move |h, cmd| serve(h, cmd, content))
        .with_command("tar", ok(MEMBER))
}

fn no_partial_left(host: &FakeHost) {
    let left: Vec<_> = host
        .paths()
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().ends_with(".part") || p.to_string_lossy().contains("infra-tmp")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---- keys ----

#[test]
fn build_errors_name_the_key_with_a_hint() {
    let good = sha256_hex(TOOL);
    for (keys, wanted) in [
        (
            format!("url = \"{URL}\"\npath = \"/usr/local/bin/tool\""),
            "has no `sha256`",
        ),
        (
            format!("url = \"{URL}\"\nsha256 = \"abc\"\npath = \"/usr/local/bin/tool\""),
            "not 64 hexadecimal digits",
        ),
        (
            format!(
                "url = \"{URL}\"\nsha256 = \"{}\"\npath = \"/usr/local/bin/tool\"",
                "g".repeat(64)
            ),
            "not 64 hexadecimal digits",
        ),
        (
            format!("url = \"{URL}\"\nsha256 = \"{good}\"\npath = \"usr/local/bin/tool\""),
            "must be an absolute path",
        ),
        (
            format!("url = \"ftp://x/y\"\nsha256 = \"{good}\"\npath = \"/usr/local/bin/tool\""),
            "only http:// and https:// URLs",
        ),
        (
            format!(
                "url = \"{URL}\"\nsha256 = \"{good}\"\npath = \"/usr/local/bin/tool\"\nextract = \"../x\""
            ),
            "not a file inside the archive",
        ),
        (
            format!("sha256 = \"{good}\"\npath = \"/usr/local/bin/tool\""),
            "has no `url`",
        ),
    ] {
        let err = compile(&download(&keys)).expect_err(&keys);
        assert!(err.contains(wanted), "{keys}\n--- says ---\n{err}");
        assert!(err.contains("hint"), "{err}");
    }
    for (keys, wanted) in [
        ("country = \"Germany\"", "two-letter country code"),
        ("fetches = 0", "1 to 10"),
        ("timeout = 30", "a duration is a string"),
    ] {
        let err = compile(&format!(
            "[[step]]\nid = \"n\"\ntype = \"nala_fetch\"\n{keys}\n"
        ))
        .expect_err(keys);
        assert!(err.contains(wanted), "{keys}\n--- says ---\n{err}");
    }
}

#[test]
fn keys_as_written() {
    let sha = sha256_hex(TOOL).to_ascii_uppercase();
    let c = catalog(&download(&format!(
        "url = \"{URL}\"\nsha256 = \"{sha}\"\npath = \"/usr/local/bin/tool\"\nmode = \"0755\"\nowner = \"root\"\ntimeout = \"1m\""
    )));
    let StepKind::Download(d) = c.steps[0].desired.as_ref().unwrap() else {
        panic!("a download step: {:?}", c.steps[0].desired)
    };
    assert_eq!(d.sha256, sha256_hex(TOOL), "lower-cased");
    assert_eq!(d.timeout.as_secs(), 60);
    assert_eq!(d.extract, None);
    let c = catalog(
        "[[step]]\nid = \"n\"\ntype = \"nala_fetch\"\ncountry = \"de\"\nfetches = 2\nhttps_only = true\n",
    );
    let StepKind::NalaFetch(n) = c.steps[0].desired.as_ref().unwrap() else {
        panic!("a nala_fetch step")
    };
    assert_eq!(
        n.args(),
        [
            "fetch",
            "--auto",
            "-y",
            "--country",
            "DE",
            "--fetches",
            "2",
            "--https-only"
        ]
    );
}

// ---- download ----

#[test]
fn in_sync_downloads_nothing_and_runs_nothing() {
    let host = host_serving(TOOL).with_file("/usr/local/bin/tool", TOOL, 0o755);
    let report = run(&catalog(&plain(&sha256_hex(TOOL))), &host, false);
    let s = step(&report, "d");
    assert_eq!(s.status, Status::InSync, "{s:#?}");
    assert!(s.reason.as_deref().unwrap().contains(URL), "{s:#?}");
    assert!(host.commands().is_empty(), "{:?}", started(&host));
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
}

#[test]
fn a_download_is_fetched_checked_and_written_atomically() {
    let sha = sha256_hex(TOOL);
    let c = catalog(&plain(&sha));
    let host = host_serving(TOOL);
    let report = run(&c, &host, false);
    let s = step(&report, "d");
    assert_eq!(s.status, Status::Changed, "{s:#?}");
    let part = format!("/var/cache/infra-agent/download-{}.part", &sha[..16]);
    assert_eq!(
        started(&host),
        [format!(
            "/usr/bin/curl -fsSL --max-time 600 -o {part} {URL}"
        )]
    );
    let (content, mode, uid, gid) = host.file("/usr/local/bin/tool").expect("written");
    assert_eq!((content.as_slice(), mode, uid, gid), (TOOL, 0o755, 0, 0));
    assert!(
        host.mutations()
            .iter()
            .any(|m| m.starts_with("stage /usr/local/bin/tool")
                || m.contains("/usr/local/bin/.tool.infra-tmp")),
        "written through a candidate: {:?}",
        host.mutations()
    );
    no_partial_left(&host);
    assert_eq!(report.exit_code(), 2);

    // Second run: in sync, nothing downloaded.
    host.clear_log();
    let again = run(&c, &host, false);
    assert_eq!(step(&again, "d").status, Status::InSync);
    assert!(host.commands().is_empty(), "{:?}", started(&host));
    assert_eq!(again.exit_code(), 0);

    // A mode changed by hand is repaired without a download.
    host.set_node(
        "/usr/local/bin/tool",
        Some(Node::File {
            content: TOOL.to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
        }),
    );
    host.clear_log();
    let repaired = run(&c, &host, false);
    assert_eq!(step(&repaired, "d").status, Status::Changed);
    assert!(host.commands().is_empty(), "{:?}", started(&host));
    assert_eq!(host.file("/usr/local/bin/tool").unwrap().1, 0o755);
}

#[test]
fn a_wrong_sha256_fails_and_writes_nothing() {
    let wrong = sha256_hex(b"something else");
    let host = host_serving(TOOL);
    let report = run(&catalog(&plain(&wrong)), &host, false);
    let s = step(&report, "d");
    assert_eq!(s.status, Status::Failed, "{s:#?}");
    let err = s.error.as_deref().unwrap();
    assert!(
        err.contains(&format!(
            "{URL} has sha256 {}, but the step says {wrong}; nothing was written",
            sha256_hex(TOOL)
        )),
        "{err}"
    );
    assert!(host.node("/usr/local/bin/tool").is_none());
    no_partial_left(&host);
    assert!(!s.modified);
    assert_eq!(report.exit_code(), 4);
    assert!(text(&report).contains("FAILED"), "{}", text(&report));
}

#[test]
fn a_failed_download_says_so_and_writes_nothing() {
    let host = host_serving(TOOL).with_command(
        "/usr/bin/curl",
        fail(22, "curl: (22) The requested URL returned error: 404"),
    );
    let report = run(&catalog(&plain(&sha256_hex(TOOL))), &host, false);
    let err = step(&report, "d").error.clone().unwrap();
    assert!(
        err.contains("curl failed (exit code 22); nothing was written"),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
    assert!(host.node("/usr/local/bin/tool").is_none());
    no_partial_left(&host);
}

#[test]
fn without_curl_apt_helper_downloads_with_the_hash() {
    let sha = sha256_hex(TOOL);
    let host = FakeHost::new()
        .with_dir("/usr/local/bin", 0o755)
        .with_dir("/var/cache", 0o755)
        .with_command_effect("/usr/lib/apt/apt-helper", |h, cmd| serve(h, cmd, TOOL));
    let report = run(&catalog(&plain(&sha)), &host, false);
    assert_eq!(step(&report, "d").status, Status::Changed, "{report:#?}");
    let part = format!("/var/cache/infra-agent/download-{}.part", &sha[..16]);
    assert_eq!(
        started(&host),
        [format!(
            "/usr/lib/apt/apt-helper download-file {URL} {part} SHA256:{sha}"
        )]
    );
    assert_eq!(host.file("/usr/local/bin/tool").unwrap().0, TOOL);
    no_partial_left(&host);
}

#[test]
fn a_member_is_extracted_recorded_and_then_in_sync() {
    let sha = sha256_hex(ARCHIVE);
    let c = catalog(&extracting(&sha));
    let host = host_serving(ARCHIVE);
    let report = run(&c, &host, false);
    assert_eq!(step(&report, "d").status, Status::Changed, "{report:#?}");
    let StepKind::Download(d) = c.steps[0].desired.as_ref().unwrap() else {
        unreachable!()
    };
    let part = partial_path(d).display().to_string();
    assert_eq!(
        started(&host),
        [
            format!("/usr/bin/curl -fsSL --max-time 600 -o {part} {URL}.tar.gz"),
            format!("tar -xzf {part} -O starship"),
        ]
    );
    let (content, mode, ..) = host.file("/usr/local/bin/starship").unwrap();
    assert_eq!((content.as_slice(), mode), (MEMBER, 0o755));
    let record = record_path(Path::new(STATE_DIR), Path::new("/usr/local/bin/starship"));
    let record = String::from_utf8(host.file(&record).expect("a record").0).unwrap();
    assert!(
        record.contains(&sha) && record.contains(&sha256_hex(MEMBER)),
        "{record}"
    );
    no_partial_left(&host);

    host.clear_log();
    let again = run(&c, &host, false);
    assert_eq!(step(&again, "d").status, Status::InSync, "{again:#?}");
    assert!(host.commands().is_empty());

    // Changed by hand: downloaded and extracted again.
    host.set_node(
        "/usr/local/bin/starship",
        Some(Node::File {
            content: b"other".to_vec(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }),
    );
    host.clear_log();
    let drifted = run(&c, &host, false);
    assert_eq!(step(&drifted, "d").status, Status::Changed);
    assert_eq!(host.commands().len(), 2);
    assert_eq!(host.file("/usr/local/bin/starship").unwrap().0, MEMBER);

    // Without a record (written by something else), it is not trusted.
    let fresh = host_serving(ARCHIVE).with_file("/usr/local/bin/starship", MEMBER, 0o755);
    let plan = run(&c, &fresh, true);
    let s = step(&plan, "d");
    assert_eq!(s.status, Status::Pending);
    assert!(
        s.changes[0]
            .note
            .as_deref()
            .unwrap()
            .contains("nothing records it"),
        "{s:#?}"
    );
}

#[test]
fn a_missing_member_fails_and_writes_nothing() {
    let host = host_serving(ARCHIVE).with_command(
        "tar",
        fail(
            2,
            "tar: starship: Not found in archive\ntar: Exiting with failure status",
        ),
    );
    let report = run(&catalog(&extracting(&sha256_hex(ARCHIVE))), &host, false);
    let err = step(&report, "d").error.clone().unwrap();
    assert!(err.contains("has no member \"starship\""), "{err}");
    assert!(host.node("/usr/local/bin/starship").is_none());
    no_partial_left(&host);
}

#[test]
fn a_dry_run_downloads_nothing() {
    let host = host_serving(TOOL);
    let report = run(&catalog(&plain(&sha256_hex(TOOL))), &host, true);
    let s = step(&report, "d");
    assert_eq!(s.status, Status::Pending);
    let out = text(&report);
    assert!(
        out.contains(&format!("create /usr/local/bin/tool: download {URL}")),
        "{out}"
    );
    assert!(host.commands().is_empty());
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
}

#[test]
fn the_original_is_recorded_before_it_is_replaced() {
    let host = host_serving(TOOL).with_file("/usr/local/bin/tool", b"old\n", 0o755);
    run(&catalog(&plain(&sha256_hex(TOOL))), &host, false);
    let originals = Originals::new(Path::new(STATE_DIR));
    let record = originals
        .get(&host, Path::new("/usr/local/bin/tool"))
        .unwrap()
        .expect("recorded");
    assert!(record.existed);
    let content = host
        .file(originals.dir().join(record.content.unwrap()))
        .unwrap()
        .0;
    assert_eq!(content, b"old\n");
}

// ---- nala_fetch ----

const FETCH: &str = "[[step]]\nid = \"n\"\ntype = \"nala_fetch\"\n";
const MARKER: &str = "/var/lib/infra-agent/nala-fetch.done";

fn with_nala(output: CmdOutput) -> FakeHost {
    FakeHost::new()
        .with_dir(STATE_DIR, 0o700)
        .with_dir("/etc/apt/sources.list.d", 0o755)
        .with_file("/usr/bin/nala", b"", 0o755)
        .with_command("nala", output)
}

#[test]
fn nala_fetch_runs_once_per_host() {
    let c = catalog(FETCH);
    let host = with_nala(ok(b"Fetching mirrors...\nsaved nala-sources.list\n"));
    let report = run(&c, &host, false);
    let s = step(&report, "n");
    assert_eq!(s.status, Status::Changed, "{s:#?}");
    assert_eq!(started(&host), ["nala fetch --auto -y"]);
    assert_eq!(
        host.commands()[0].env,
        [("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())]
    );
    assert_eq!(host.file(MARKER).unwrap().0, b"nala fetch --auto -y\n");
    assert!(
        s.changes[0]
            .output
            .as_deref()
            .unwrap()
            .contains("saved nala-sources.list")
    );

    host.clear_log();
    let again = run(&c, &host, false);
    let s = step(&again, "n");
    assert_eq!(s.status, Status::InSync, "{s:#?}");
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("already ran on this host")
    );
    assert!(host.commands().is_empty());

    // Other options fetch again.
    host.clear_log();
    let other = run(
        &catalog(&format!("{FETCH}country = \"DE\"\n")),
        &host,
        false,
    );
    assert_eq!(step(&other, "n").status, Status::Changed);
    assert_eq!(started(&host), ["nala fetch --auto -y --country DE"]);
}

#[test]
fn a_failed_fetch_is_a_warning_and_is_tried_again() {
    let c = catalog(&format!(
        "{FETCH}\n[[step]]\nid = \"after\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\nrequires = [\"n\"]\n"
    ));
    let host = with_nala(fail(1, "Error: no mirrors answered"));
    let report = run(&c, &host, false);
    let s = step(&report, "n");
    assert_eq!(
        s.status,
        Status::Changed,
        "a warning, not a failure: {s:#?}"
    );
    let output = s.changes[0].output.as_deref().unwrap();
    assert!(
        output.starts_with(
            "warning: nala fetch failed: it exited with code 1; will try again next run"
        ),
        "{output}"
    );
    assert!(output.contains("no mirrors answered"), "{output}");
    assert_eq!(
        step(&report, "after").status,
        Status::Changed,
        "dependents run"
    );
    assert_eq!(report.exit_code(), 2);
    assert!(
        text(&report).contains("warning: nala fetch failed"),
        "{}",
        text(&report)
    );
    assert!(host.node(MARKER).is_none(), "no marker after a failure");

    host.clear_log();
    let again = run(&c, &host, false);
    assert_eq!(started(&host), ["nala fetch --auto -y"], "tried again");
    assert_eq!(step(&again, "n").status, Status::Changed);
}

#[test]
fn without_nala_the_step_fails_clearly_and_a_dry_run_says_so() {
    let c = catalog(FETCH);
    let host = FakeHost::new().with_dir(STATE_DIR, 0o700);
    let report = run(&c, &host, false);
    let s = step(&report, "n");
    assert_eq!(s.status, Status::Failed);
    assert!(
        s.error.as_deref().unwrap().contains("install nala first"),
        "{s:#?}"
    );
    let dry = run(&c, &host, true);
    let s = step(&dry, "n");
    assert_eq!(s.status, Status::Pending);
    assert!(
        text(&dry).contains("run nala fetch --auto -y (nala is not installed yet)"),
        "{}",
        text(&dry)
    );
    assert!(host.commands().is_empty());
}

#[test]
fn a_dry_run_fetches_nothing() {
    let host = with_nala(ok(b""));
    let report = run(&catalog(FETCH), &host, true);
    assert_eq!(step(&report, "n").status, Status::Pending);
    assert!(
        text(&report).contains("~ run nala fetch --auto -y"),
        "{}",
        text(&report)
    );
    assert!(host.commands().is_empty());
    assert!(host.mutations().is_empty());
}
