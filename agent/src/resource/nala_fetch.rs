//! The `nala_fetch` resource: `nala fetch --auto -y` once per host.
//!
//! A successful fetch is remembered in `state_dir/nala-fetch.done`, which holds the
//! command line it ran: the step is in sync while the marker holds the same command
//! line (other options fetch again). A fetch that fails (exit code, timeout, cannot
//! start) is a warning, not a failure: `apply` records the failure in the run's memo
//! and succeeds, the engine's re-plan answers "in sync" from that record, and the
//! step reports changed with the change's output starting `warning: nala fetch
//! failed ...; will try again next run`. No marker is written, so the next run tries
//! again. Without nala the step fails (a dry run says it is pending on nala).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::process::{Cmd, CmdOutput};
use crate::step::nala_fetch::NalaFetchStep;

/// nala's program; the step needs it installed.
pub const NALA: &str = super::package::NALA;
/// The marker's name under the state directory.
pub const MARKER: &str = "nala-fetch.done";
/// What nala fetch writes (its original is recorded before the first fetch).
pub const NALA_SOURCES: &str = "/etc/apt/sources.list.d/nala-sources.list";
const MEMO: &str = "nala-fetch";
const TAIL_LINES: usize = 20;

#[derive(Debug, Default)]
struct Attempt {
    /// Why the fetch of this run failed (the step's command line, and the message).
    failed: Option<(String, String)>,
    /// What the last apply printed, until `take_output` collects it.
    output: Option<String>,
}

fn attempt(ctx: &Ctx<'_>) -> Result<Rc<RefCell<Attempt>>, Error> {
    ctx.memo(MEMO, || Ok(RefCell::new(Attempt::default())))
}

fn marker(ctx: &Ctx<'_>) -> PathBuf {
    ctx.settings.state_dir.join(MARKER)
}

fn cmd(step: &NalaFetchStep) -> Cmd {
    Cmd::new("nala")
        .args(step.args())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(step.timeout)
}

/// The command line as shown and as remembered in the marker.
fn line(step: &NalaFetchStep) -> String {
    Cmd::new("nala").args(step.args()).display()
}

fn run_change(step: &NalaFetchStep, note: Option<String>) -> Plan {
    let mut change = Change::new(ChangeKind::Run, Path::new(&line(step)));
    change.note = note;
    Plan {
        changes: vec![change],
        in_sync: String::new(),
    }
}

pub fn plan(step: &NalaFetchStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let shown = line(step);
    if let Some((tried, why)) = &attempt(ctx)?.borrow().failed
        && *tried == shown
    {
        return Ok(Plan::in_sync(format!(
            "nala fetch failed: {why}; will try again next run"
        )));
    }
    let marker = marker(ctx);
    let mut note = None;
    if ctx.host.lstat(&marker)?.is_some() {
        let done = ctx.host.read_file(&marker)?;
        let done = String::from_utf8_lossy(&done);
        if done.trim() == shown {
            return Ok(Plan::in_sync(format!(
                "`{shown}` already ran on this host ({} remembers it)",
                marker.display()
            )));
        }
        note = Some(format!(
            "{} remembers another fetch: {}",
            marker.display(),
            done.trim()
        ));
    }
    if ctx.host.lstat(Path::new(NALA))?.is_none() {
        if ctx.dry_run {
            return Ok(run_change(
                step,
                Some("nala is not installed yet".to_owned()),
            ));
        }
        return Err(Error::Refused(format!(
            "nala is not installed ({NALA} does not exist): install nala first with a package step and make this step require it"
        )));
    }
    Ok(run_change(step, note))
}

/// Runs the fetch. A failure is recorded for the re-plan and the log, and is not an
/// error (see the module documentation).
pub fn apply(step: &NalaFetchStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    if plan.is_in_sync() {
        return Ok(());
    }
    let sources = Path::new(NALA_SOURCES);
    ctx.capture(sources, ctx.host.lstat(sources)?.as_ref())?;
    let shown = line(step);
    let failure = match ctx.host.run(&cmd(step)) {
        Err(e) => Some((format!("cannot run it: {e}"), String::new())),
        Ok(out) if out.success() => {
            let marker = marker(ctx);
            ensure_dir(ctx, &ctx.settings.state_dir)?;
            let staged =
                ctx.host
                    .stage_file(&marker, format!("{shown}\n").as_bytes(), 0o644, 0, 0)?;
            ctx.host.commit_file(&staged, &marker)?;
            // nala wrote new sources: the next package step refreshes the lists.
            super::package::sources_changed(ctx)?;
            let printed = tail(&out);
            attempt(ctx)?.borrow_mut().output = (!printed.is_empty()).then_some(printed);
            None
        }
        Ok(out) if out.timed_out => Some((
            format!(
                "it did not finish within {}s and was killed",
                step.timeout.as_secs()
            ),
            tail(&out),
        )),
        Ok(out) => Some((
            match out.code {
                Some(c) => format!("it exited with code {c}"),
                None => "it was killed by a signal".to_owned(),
            },
            tail(&out),
        )),
    };
    if let Some((why, printed)) = failure {
        let mut output = format!("warning: nala fetch failed: {why}; will try again next run");
        if !printed.is_empty() {
            output.push('\n');
            output.push_str(&printed);
        }
        let a = attempt(ctx)?;
        let mut a = a.borrow_mut();
        a.failed = Some((shown, why));
        a.output = Some(output);
    }
    Ok(())
}

/// What the last `apply` printed (with the warning when the fetch failed).
#[must_use]
pub fn take_output(ctx: &Ctx<'_>) -> Option<String> {
    attempt(ctx).ok()?.borrow_mut().output.take()
}

/// What a notification does: nothing (the fetch runs once per host).
pub fn refresh(
    _step: &NalaFetchStep,
    _plan: &Plan,
    _ctx: &Ctx<'_>,
) -> Result<Option<String>, Error> {
    Ok(None)
}

#[must_use]
pub fn describe(step: &NalaFetchStep) -> String {
    format!("nala_fetch {}", line(step))
}

/// Creates `dir` and its missing parents (0700, root: the state directory is private).
pub(crate) fn ensure_dir(ctx: &Ctx<'_>, dir: &Path) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut d = dir;
    while ctx.host.lstat(d)?.is_none() {
        missing.push(d.to_owned());
        match d.parent() {
            Some(parent) => d = parent,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        ctx.host.create_dir(d, 0o700, 0, 0)?;
    }
    Ok(())
}

/// The last lines of what a command printed (output, then errors), trimmed.
pub(crate) fn tail(out: &CmdOutput) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err.trim_end());
    }
    let lines: Vec<&str> = text.trim_matches('\n').lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}
