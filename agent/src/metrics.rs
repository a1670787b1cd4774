//! The Prometheus textfile (`infra_agent.prom`) that `node_exporter`'s textfile
//! collector serves: the last run, the applied and rejected commits, fetch failures,
//! disabled, drift and reboot-required, all prefixed `infra_agent_`.
//!
//! Metrics of the last run and of the applied commit are left out until there is
//! one, so an alert on their absence fires on a host that never converged, rather
//! than a timestamp of 1970.

use std::fmt::Write as _;
use std::path::Path;

use crate::status::{Status, parse_rfc3339};

/// The file name `node_exporter` reads (it reads `*.prom`).
pub const TEXTFILE_NAME: &str = "infra_agent.prom";

/// Writes `dir/infra_agent.prom` atomically (mode 0644; the temporary file is named
/// `.infra_agent.prom.infra-tmp.XXXXXXXX` so the collector never reads half a file).
/// A missing `dir` is an error of kind `NotFound` whose message says what to do: the
/// caller logs it as a warning. The directory belongs to `node_exporter` and is never
/// created here.
pub fn write_textfile(dir: &Path, status: &Status) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "cannot write the Prometheus textfile: {} is not a directory\nhint: install prometheus-node-exporter (it creates that directory), point textfile_dir in agent.toml at its --collector.textfile.directory, or set textfile_dir = \"\" to turn the textfile off",
                dir.display()
            ),
        ));
    }
    let path = dir.join(TEXTFILE_NAME);
    crate::status::write_atomic(&path, render(status).as_bytes(), crate::status::Durability::Replaced).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot write the Prometheus textfile {}: {e}\nhint: the agent must be able to write to textfile_dir (agent.toml)",
                path.display()
            ),
        )
    })
}

/// The text exposition format of `status`.
#[must_use]
pub fn render(status: &Status) -> String {
    let mut m = Metrics::default();
    if let Some(run) = &status.last_run {
        if let Some(secs) = parse_rfc3339(&run.finished_at) {
            m.gauge(
                "last_run_timestamp_seconds",
                "When the last run finished, in seconds since the Unix epoch.",
                &[],
                secs,
            );
        }
        m.gauge(
            "last_run_success",
            "1 when the last run left the host as its commit describes (in sync or changed), 0 when steps failed or nothing could be applied.",
            &[],
            flag(run.outcome.succeeded()),
        );
        #[allow(
            clippy::cast_precision_loss,
            reason = "milliseconds of one run fit in 53 bits"
        )]
        m.gauge(
            "last_run_duration_seconds",
            "How long the last run took.",
            &[],
            run.duration_ms as f64 / 1000.0,
        );
        m.gauge(
            "last_run_changes",
            "Steps the last run changed.",
            &[],
            count(run.summary.changed as u64),
        );
        m.gauge(
            "last_run_failures",
            "Steps that failed in the last run.",
            &[],
            count(run.summary.failed as u64),
        );
    }
    m.counter(
        "runs_total",
        "Runs recorded, including those that could apply nothing.",
        count(status.runs_total),
    );
    if let Some(c) = &status.applied {
        m.gauge(
            "applied_commit_info",
            "The commit of the state repository the host enforces.",
            &[("commit", &c.id), ("short", &c.short)],
            1.0,
        );
        #[allow(clippy::cast_precision_loss, reason = "commit times fit in 53 bits")]
        m.gauge(
            "applied_commit_timestamp_seconds",
            "Committer time of the applied commit, in seconds since the Unix epoch.",
            &[],
            c.time as f64,
        );
    }
    m.gauge(
        "rejected_commit",
        "1 when a fetched commit was rejected (invalid or unverified) and is not applied.",
        &[],
        flag(status.rejected.is_some()),
    );
    if let Some(r) = &status.rejected {
        m.gauge(
            "rejected_commit_info",
            "The commit that was rejected.",
            &[("commit", &r.commit.id), ("short", &r.commit.short)],
            1.0,
        );
    }
    m.counter(
        "fetch_failures_total",
        "Fetches from the repository that failed.",
        count(status.fetch.total_failures),
    );
    m.gauge(
        "fetch_consecutive_failures",
        "Fetches that failed since the last one that succeeded.",
        &[],
        count(status.fetch.consecutive_failures),
    );
    m.gauge(
        "disabled",
        "1 while converging is paused by `infra-agent disable`.",
        &[],
        flag(status.disabled.is_some()),
    );
    m.counter(
        "drift_events_total",
        "Changes that repaired hand edits of managed files.",
        count(status.drift_events),
    );
    m.gauge(
        "reboot_required",
        "1 when the host needs a reboot (/run/reboot-required).",
        &[],
        flag(status.reboot_required),
    );
    m.text
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts of runs and steps are far below 2^53"
)]
fn count(n: u64) -> f64 {
    n as f64
}

#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.metric(name, help, "gauge", labels, value);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.metric(name, help, "counter", &[], value);
    }

    fn metric(&mut self, name: &str, help: &str, kind: &str, labels: &[(&str, &str)], value: f64) {
        let t = &mut self.text;
        // Writing to a String cannot fail.
        let _ = writeln!(t, "# HELP infra_agent_{name} {}", escape_help(help));
        let _ = writeln!(t, "# TYPE infra_agent_{name} {kind}");
        let _ = write!(t, "infra_agent_{name}");
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(t, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(t, " {value}");
    }
}

/// A label value in the text format: backslash, double quote and line feed escaped.
#[must_use]
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the values compared are small integers and halves, exact in f64"
)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::Summary;
    use crate::status::{CommitRef, Disabled, FetchState, Outcome, Rejected, RunRecord, Trigger};

    /// Parses the text format as a scraper would: every sample must follow its own
    /// HELP and TYPE lines. Returns `name{labels}` -> (value, type).
    fn parse(text: &str) -> BTreeMap<String, (f64, String)> {
        let mut samples = BTreeMap::new();
        let mut help: Option<String> = None;
        let mut kind: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').expect("HELP has a name and a text");
                assert!(!text.is_empty(), "{line}");
                help = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE has a name and a type");
                assert_eq!(help.as_deref(), Some(name), "TYPE without its HELP: {line}");
                assert!(t == "gauge" || t == "counter", "{line}");
                kind = Some((name.to_owned(), t.to_owned()));
            } else {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let name = series.split('{').next().unwrap();
                let (declared, t) = kind.clone().expect("a sample after its TYPE");
                assert_eq!(name, declared, "sample under another metric's TYPE: {line}");
                assert!(name.starts_with("infra_agent_"), "{line}");
                if t == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                let value: f64 = value.parse().expect("the value is a number");
                assert!(
                    samples.insert(series.to_owned(), (value, t)).is_none(),
                    "duplicate series: {line}"
                );
            }
        }
        samples
    }

    fn full_status() -> Status {
        Status {
            host: "web-01".into(),
            last_run: Some(RunRecord {
                started_at: "2026-11-30T15:09:58.000Z".into(),
                finished_at: "2026-11-30T15:10:00.500Z".into(),
                duration_ms: 2_500,
                trigger: Trigger::Timer,
                source: "ssh://git@git/infra".into(),
                commit: None,
                outcome: Outcome::Failed,
                exit_code: 6,
                summary: Summary {
                    changed: 3,
                    in_sync: 40,
                    failed: 2,
                    skipped: 1,
                },
                drift: 1,
                error: None,
                run: None,
            }),
            applied: Some(CommitRef::new("a1b2c3d4e5f6", "Add nginx", 1_796_000_000)),
            rejected: Some(Rejected {
                commit: CommitRef::new("ffeeddccbbaa", "Break it", 1_796_000_100),
                error: "bad".into(),
                at: "2026-11-30T15:10:00.000Z".into(),
            }),
            fetch: FetchState {
                consecutive_failures: 2,
                total_failures: 7,
                last_error: Some("timed out".into()),
                last_success_at: None,
            },
            disabled: Some(Disabled {
                reason: "disks".into(),
                since: "2026-11-30T15:00:00.000Z".into(),
            }),
            drift_events: 5,
            reboot_required: true,
            runs_total: 42,
            ..Status::default()
        }
    }

    #[test]
    fn every_metric_matches_the_status() {
        let status = full_status();
        let samples = parse(&render(&status));
        let finished = 20_787.0 * 86_400.0 + 15.0 * 3600.0 + 600.5;
        let expected: &[(&str, f64, &str)] = &[
            ("infra_agent_last_run_timestamp_seconds", finished, "gauge"),
            ("infra_agent_last_run_success", 0.0, "gauge"),
            ("infra_agent_last_run_duration_seconds", 2.5, "gauge"),
            ("infra_agent_last_run_changes", 3.0, "gauge"),
            ("infra_agent_last_run_failures", 2.0, "gauge"),
            ("infra_agent_runs_total", 42.0, "counter"),
            (
                "infra_agent_applied_commit_info{commit=\"a1b2c3d4e5f6\",short=\"a1b2c3d\"}",
                1.0,
                "gauge",
            ),
            (
                "infra_agent_applied_commit_timestamp_seconds",
                1_796_000_000.0,
                "gauge",
            ),
            ("infra_agent_rejected_commit", 1.0, "gauge"),
            (
                "infra_agent_rejected_commit_info{commit=\"ffeeddccbbaa\",short=\"ffeeddc\"}",
                1.0,
                "gauge",
            ),
            ("infra_agent_fetch_failures_total", 7.0, "counter"),
            ("infra_agent_fetch_consecutive_failures", 2.0, "gauge"),
            ("infra_agent_disabled", 1.0, "gauge"),
            ("infra_agent_drift_events_total", 5.0, "counter"),
            ("infra_agent_reboot_required", 1.0, "gauge"),
        ];
        for (series, value, kind) in expected {
            let got = samples
                .get(*series)
                .unwrap_or_else(|| panic!("{series} is missing"));
            assert_eq!(got, &(*value, (*kind).to_owned()), "{series}");
        }
        assert_eq!(samples.len(), expected.len(), "{samples:?}");
    }

    #[test]
    fn a_host_that_never_ran_has_no_last_run_metrics() {
        let samples = parse(&render(&Status::default()));
        assert!(
            samples
                .keys()
                .all(|k| !k.contains("last_run") && !k.contains("applied")),
            "{samples:?}"
        );
        assert_eq!(samples["infra_agent_runs_total"].0, 0.0);
        assert_eq!(samples["infra_agent_disabled"].0, 0.0);
        assert_eq!(samples["infra_agent_rejected_commit"].0, 0.0);
        assert!(!samples.contains_key("infra_agent_rejected_commit_info"));
    }

    #[test]
    fn success_follows_the_outcome() {
        let mut status = full_status();
        for (outcome, success) in [
            (Outcome::InSync, 1.0),
            (Outcome::Changed, 1.0),
            (Outcome::Failed, 0.0),
            (Outcome::NotApplied, 0.0),
        ] {
            status.last_run.as_mut().unwrap().outcome = outcome;
            let samples = parse(&render(&status));
            assert_eq!(
                samples["infra_agent_last_run_success"].0, success,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("one\ntwo"), "one\\ntwo");
        assert_eq!(escape_label("plain-ünïcode"), "plain-ünïcode");
        let status = Status {
            applied: Some(CommitRef {
                id: "x\"y\\z\nw".into(),
                short: "x".into(),
                summary: String::new(),
                time: 0,
            }),
            ..Status::default()
        };
        let text = render(&status);
        assert!(
            text.contains(
                "infra_agent_applied_commit_info{commit=\"x\\\"y\\\\z\\nw\",short=\"x\"} 1\n"
            ),
            "{text}"
        );
        // Still one sample per line.
        parse(&text);
    }

    #[test]
    fn missing_directory_is_a_clear_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("node-exporter");
        let e = write_textfile(&missing, &Status::default()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("hint:"), "{e}");
        assert!(
            !missing.exists(),
            "the collector's directory is not ours to create"
        );
    }

    #[test]
    fn writes_the_file_with_mode_0644_and_no_temporary_left() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        write_textfile(dir.path(), &full_status()).unwrap();
        write_textfile(dir.path(), &Status::default()).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [TEXTFILE_NAME]);
        let path = dir.path().join(TEXTFILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            render(&Status::default())
        );
    }
}
