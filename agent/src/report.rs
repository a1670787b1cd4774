//! Printing a run: text for people (one line per change, diffs, a summary) and JSON
//! for programs (`infra-agent/run/v1`, the schema status.json shares).

use std::io::Write;

use serde::Serialize;

use crate::engine::{RunReport, Status, Summary};

/// Version of the JSON document of a run.
pub const RUN_SCHEMA: &str = "infra-agent/run/v1";

/// A run with what it ran on, as printed by `--format json`.
#[derive(Debug, Serialize)]
pub struct RunDocument<'a> {
    pub schema: &'static str,
    pub host: &'a str,
    pub env: &'a str,
    pub dry_run: bool,
    pub summary: Summary,
    pub exit_code: u8,
    pub steps: &'a [crate::engine::StepReport],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<crate::engine::Timing>,
    /// The commit the run applied, when the repository is read from git.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<&'a crate::status::CommitRef>,
}

impl<'a> RunDocument<'a> {
    /// The document of `report`, run on `host` of environment `env`.
    #[must_use]
    pub fn new(host: &'a str, env: &'a str, report: &'a RunReport) -> Self {
        Self {
            schema: RUN_SCHEMA,
            host,
            env,
            dry_run: report.dry_run,
            summary: report.summary(),
            exit_code: report.exit_code(),
            steps: &report.steps,
            timing: report.timing,
            commit: None,
        }
    }
}

pub fn json(out: &mut dyn Write, host: &str, env: &str, report: &RunReport) -> std::io::Result<()> {
    json_doc(out, &RunDocument::new(host, env, report))
}

/// Prints a run document as pretty JSON.
pub fn json_doc(out: &mut dyn Write, doc: &RunDocument<'_>) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, doc)?;
    writeln!(out)
}

/// Text: a header, one line per change (with diffs indented below), failures and
/// skips with their reason, then the summary. Steps in sync are only counted.
pub fn text(out: &mut dyn Write, host: &str, env: &str, report: &RunReport) -> std::io::Result<()> {
    if report.dry_run {
        writeln!(
            out,
            "dry run on {host} ({env}): nothing is changed; later steps are planned against the host as it is now, so they may differ once earlier steps apply"
        )?;
    } else {
        writeln!(out, "converging {host} ({env})")?;
    }
    for step in &report.steps {
        let name = step.name();
        match step.status {
            Status::InSync if !step.notified_by.is_empty() => {
                writeln!(out, "{name} ({}): in sync", step.resource)?;
            }
            Status::InSync => {}
            Status::Changed | Status::Pending => {
                let verb = if step.status == Status::Pending {
                    "would change"
                } else {
                    "changed"
                };
                writeln!(out, "{name} ({}): {verb}", step.resource)?;
                for change in &step.changes {
                    writeln!(out, "  ~ {change}")?;
                    if let Some(diff) = &change.diff {
                        for line in diff.lines() {
                            writeln!(out, "    {line}")?;
                        }
                    }
                    if let Some(output) = &change.output {
                        for line in output.lines() {
                            writeln!(out, "    | {line}")?;
                        }
                    }
                }
            }
            Status::Failed => {
                let what = if step.resource.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", step.resource)
                };
                let mut lines = step.error.as_deref().unwrap_or("failed").lines();
                writeln!(
                    out,
                    "{name}{what}: FAILED: {}",
                    lines.next().unwrap_or_default()
                )?;
                for line in lines {
                    writeln!(out, "    {line}")?;
                }
                for change in &step.changes {
                    writeln!(out, "  ~ {change} (attempted)")?;
                }
            }
            Status::Skipped => {
                writeln!(
                    out,
                    "{name}: skipped: {}",
                    step.reason.as_deref().unwrap_or("skipped")
                )?;
            }
        }
        if !step.notified_by.is_empty() && step.status != Status::Skipped {
            let by = step.notified_by.join(", ");
            match &step.refreshed {
                Some(done) => writeln!(out, "  notified by {by}: {done}")?,
                None => writeln!(out, "  notified by {by}")?,
            }
        }
    }
    let s = report.summary();
    let changed = if report.dry_run {
        "to change"
    } else {
        "changed"
    };
    write!(
        out,
        "{} {changed}, {} in sync, {} failed, {} skipped",
        s.changed, s.in_sync, s.failed, s.skipped
    )?;
    match report.timing {
        Some(t) => writeln!(
            out,
            " in {:.0} ms ({:.0} ms in programs it ran)",
            t.total_ms, t.programs_ms
        ),
        None => writeln!(out),
    }
}
