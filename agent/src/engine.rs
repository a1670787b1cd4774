//! The converge engine: runs a host's catalog step by step.
//!
//! Per step: skip if a required step failed or was skipped; evaluate a `when` left for
//! run time; plan right before applying (so a step sees what earlier steps did);
//! apply; plan again and fail the step if anything is still pending. A failed step
//! never stops unrelated steps. `notify` is delivered when the engine reaches the
//! notified step, once, whatever the number of notifiers. A step holding secret
//! placeholders has them resolved right before its plan (a failure fails the step,
//! naming the reference) and its report scrubbed of their values.
//! Invariant: in a dry run nothing is applied and no record is written; `changed()`
//! then means "would change".

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::catalog::{Catalog, CatalogStep};
use crate::resource::{self, Change, Ctx};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Run only these step ids and what they require (transitively).
    pub only: Vec<String>,
    /// Created by the daemon on SIGTERM while a converge it started runs (checked
    /// before each step): the step running finishes, the rest are skipped.
    pub stop_file: Option<std::path::PathBuf>,
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InSync,
    Changed,
    /// Dry run: would change.
    Pending,
    Failed,
    Skipped,
}

/// The outcome of one step (or one `for_each` instance).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub role: String,
    /// Where the step is written: `roles/x.toml:12`.
    pub source: String,
    /// What it manages: `file /etc/motd`; empty when skipped before rendering.
    pub resource: String,
    pub status: Status,
    /// Why it is in sync, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The changes made (or pending, in a dry run, or attempted, when it failed).
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Steps that changed and notify this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notified_by: Vec<String>,
    /// Whether the step changed the machine, even if it then failed.
    pub modified: bool,
    /// What a notification made the step do (`restarted nginx.service`), or would make
    /// it do in a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<String>,
}

impl StepReport {
    /// `id` or `id[instance]`.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}[{i}]", self.id),
            None => self.id.clone(),
        }
    }
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub changed: usize,
    pub in_sync: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub dry_run: bool,
    pub steps: Vec<StepReport>,
    /// The agent was asked to stop: the steps after the one running then were skipped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// How long the run took, set by the command that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// Where a run's time went: the whole run, the programs it waited for (apt, dpkg,
/// systemctl, commands), and the agent itself (the difference).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub total_ms: f64,
    pub programs_ms: f64,
    pub agent_ms: f64,
}

impl Timing {
    /// From the run's wall time and the time spent in programs.
    #[must_use]
    pub fn new(total: std::time::Duration, programs: std::time::Duration) -> Self {
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        Self {
            total_ms: ms(total),
            programs_ms: ms(programs),
            agent_ms: ms(total.saturating_sub(programs)),
        }
    }
}

impl RunReport {
    #[must_use]
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.status {
                Status::Changed | Status::Pending => s.changed += 1,
                Status::InSync => s.in_sync += 1,
                Status::Failed => s.failed += 1,
                Status::Skipped => s.skipped += 1,
            }
        }
        s
    }

    /// Puppet's convention: 0 in sync, 2 changes (applied or pending), 4 failures, 6 both.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        let s = self.summary();
        (if s.changed > 0 { 2 } else { 0 }) | (if s.failed > 0 { 4 } else { 0 })
    }
}

/// What the engine knows about a step id (all its instances) during a run.
#[derive(Debug, Default, Clone, Copy)]
struct IdState {
    instances: usize,
    changed: bool,
    failed: bool,
    skipped: usize,
}

impl IdState {
    fn blocks_dependents(self) -> Option<&'static str> {
        if self.failed {
            Some("failed")
        } else if self.instances > 0 && self.skipped == self.instances {
            Some("was skipped")
        } else {
            None
        }
    }
}

/// The ids `--only` selects: those named and everything they require, transitively.
fn selection(catalog: &Catalog, only: &[String]) -> Result<Option<HashSet<String>>, String> {
    if only.is_empty() {
        return Ok(None);
    }
    let requires: HashMap<&str, &[String]> = catalog
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.requires.as_slice()))
        .collect();
    let mut selected = HashSet::new();
    let mut pending: Vec<&str> = Vec::new();
    for id in only {
        if !requires.contains_key(id.as_str()) {
            return Err(format!("--only {id}: this host has no step with that id"));
        }
        pending.push(id);
    }
    while let Some(id) = pending.pop() {
        if selected.insert(id.to_owned()) {
            pending.extend(requires[id].iter().map(String::as_str));
        }
    }
    Ok(Some(selected))
}

/// Runs a catalog. Returns an error only when the run cannot start (an unknown `--only` id).
pub fn run(catalog: &Catalog, ctx: &Ctx<'_>, options: &Options) -> Result<RunReport, String> {
    let selected = selection(catalog, &options.only)?;
    let mut state: HashMap<String, IdState> = HashMap::new();
    let mut reports = Vec::new();
    let mut stopped = false;
    for step in &catalog.steps {
        if selected.as_ref().is_some_and(|s| !s.contains(&step.id)) {
            continue;
        }
        stopped = stopped || options.stop_file.as_ref().is_some_and(|f| f.exists());
        let report = if stopped {
            skipped(
                step,
                "the agent is stopping; the next run converges this step",
            )
        } else {
            run_step(catalog, step, ctx, options.dry_run, &state)
        };
        let entry = state.entry(step.id.clone()).or_default();
        entry.instances += 1;
        match report.status {
            Status::Changed | Status::Pending => entry.changed = true,
            Status::Failed => {
                entry.failed = true;
                // A step that failed half-way may have changed something; one that
                // failed before touching the machine has not.
                entry.changed |= report.modified;
            }
            Status::Skipped => entry.skipped += 1,
            Status::InSync => {}
        }
        reports.push(report);
    }
    Ok(RunReport {
        dry_run: options.dry_run,
        steps: reports,
        stopped,
        timing: None,
    })
}

/// The report of a step that did not run, with why.
fn skipped(step: &CatalogStep, reason: &str) -> StepReport {
    StepReport {
        id: step.id.clone(),
        instance: step.instance.clone(),
        role: step.role.clone(),
        source: format!("{}:{}", step.file, step.line),
        resource: step
            .desired
            .as_ref()
            .map(resource::describe)
            .unwrap_or_default(),
        status: Status::Skipped,
        reason: Some(reason.to_owned()),
        changes: Vec::new(),
        error: None,
        notified_by: Vec::new(),
        modified: false,
        refreshed: None,
    }
}

fn run_step(
    catalog: &Catalog,
    step: &CatalogStep,
    ctx: &Ctx<'_>,
    dry_run: bool,
    state: &HashMap<String, IdState>,
) -> StepReport {
    let mut report = skipped(step, "skipped");
    report.reason = None;
    let Some(desired) = &step.desired else {
        report.reason = step.skipped.clone().or_else(|| Some("skipped".to_owned()));
        return report;
    };
    for required in &step.requires {
        if let Some(why) = state.get(required).and_then(|s| s.blocks_dependents()) {
            report.reason = Some(format!("requires `{required}`, which {why}"));
            return report;
        }
    }
    if let Some(when) = &step.when {
        let mut context = catalog.context.clone();
        if let Some(item) = &step.item {
            context["item"] = item.clone();
        }
        let changed = |id: &str| state.get(id).is_some_and(|s| s.changed);
        match when.expr.eval(&context, &changed) {
            Ok(true) => {}
            Ok(false) => {
                report.reason = Some(format!("when `{}` is false", when.expr.source()));
                return report;
            }
            Err(e) => {
                report.status = Status::Failed;
                report.error = Some(format!(
                    "`when` `{}`: {} (column {})",
                    when.expr.source(),
                    e.message,
                    e.column
                ));
                return report;
            }
        }
    }
    report.notified_by = catalog
        .steps
        .iter()
        .filter(|s| s.notify.contains(&step.id) && state.get(&s.id).is_some_and(|st| st.changed))
        .map(|s| s.id.clone())
        .collect::<Vec<_>>();
    report.notified_by.dedup();
    // Secrets are resolved now, right before the plan, into a copy of the step that
    // lives only in memory; a reference that cannot be resolved fails the step.
    let resolved;
    let (desired, values) = if step.secrets.is_empty() {
        (desired, None)
    } else {
        match ctx.secrets.resolve_all(&step.secrets) {
            Ok(values) => {
                resolved = crate::secrets::resolve_step(desired, &values);
                (&resolved, Some(values))
            }
            Err(e) => {
                report.status = Status::Failed;
                report.error = Some(e);
                return report;
            }
        }
    };
    let report = run_resolved(report, desired, ctx, dry_run);
    match values {
        Some(values) => scrubbed(report, &values),
        None => report,
    }
}

/// Converges a step whose secrets are resolved, then delivers its notification.
fn run_resolved(
    report: StepReport,
    desired: &crate::step::StepKind,
    ctx: &Ctx<'_>,
    dry_run: bool,
) -> StepReport {
    let mut report = converge(report, desired, ctx, dry_run);
    if !report.notified_by.is_empty() && report.status != Status::Failed {
        // The plan tells a service step whether it was just started (no restart then).
        let plan = resource::Plan {
            changes: report.changes.clone(),
            in_sync: String::new(),
        };
        match resource::refresh(desired, &plan, ctx) {
            Ok(done) => report.refreshed = done,
            Err(e) => {
                report.status = Status::Failed;
                report.error = Some(format!(
                    "notified by {}, but the refresh failed: {e}",
                    report.notified_by.join(", ")
                ));
            }
        }
    }
    report
}

/// A report of a step that used secrets, with any value it quotes (a command that
/// printed its environment, a validator that printed its input) replaced by `<secret>`.
/// Diffs of secret content are redacted already; this catches what programs print.
fn scrubbed(mut report: StepReport, values: &crate::secrets::Values) -> StepReport {
    let clean = |text: &mut String| *text = crate::secrets::scrub(text, values);
    for text in [&mut report.reason, &mut report.error, &mut report.refreshed]
        .into_iter()
        .flatten()
    {
        clean(text);
    }
    for change in &mut report.changes {
        clean(&mut change.path);
        for text in [
            &mut change.before,
            &mut change.after,
            &mut change.diff,
            &mut change.note,
            &mut change.output,
        ]
        .into_iter()
        .flatten()
        {
            clean(text);
        }
    }
    report
}

/// Plan, apply, re-plan one rendered step.
fn converge(
    mut report: StepReport,
    desired: &crate::step::StepKind,
    ctx: &Ctx<'_>,
    dry_run: bool,
) -> StepReport {
    let plan = match resource::plan(desired, ctx) {
        Ok(plan) => plan,
        Err(e) => {
            report.status = Status::Failed;
            report.error = Some(e.to_string());
            return report;
        }
    };
    if plan.is_in_sync() {
        report.status = Status::InSync;
        report.reason = Some(plan.in_sync);
        return report;
    }
    report.changes.clone_from(&plan.changes);
    if dry_run {
        report.status = Status::Pending;
        return report;
    }
    if let Err(e) = resource::apply(desired, &plan, ctx) {
        report.status = Status::Failed;
        report.error = Some(e.to_string());
        // Did anything apply before the failure? Whatever differs less than it did.
        report.modified =
            resource::plan(desired, ctx).map_or(true, |after| after.changes != plan.changes);
        return report;
    }
    report.modified = true;
    // What the step printed (a command's output) belongs in the log, under its change.
    if let (Some(output), Some(change)) = (resource::take_output(ctx), report.changes.last_mut()) {
        change.output = Some(output);
    }
    match resource::plan(desired, ctx) {
        Ok(after) if after.is_in_sync() => report.status = Status::Changed,
        Ok(after) => {
            report.status = Status::Failed;
            let left: Vec<String> = after.changes.iter().map(ToString::to_string).collect();
            report.error = Some(format!(
                "still differs after it was applied: {}",
                left.join("; ")
            ));
        }
        Err(e) => {
            report.status = Status::Failed;
            report.error = Some(format!("cannot confirm the change: {e}"));
        }
    }
    report
}
