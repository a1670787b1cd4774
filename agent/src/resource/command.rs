//! The `command` resource: runs a program when its guards say it is needed.
//!
//! `plan` evaluates the guards (they run in dry runs too, so they must only read):
//! `creates` (in sync when the path exists), then `unless` (in sync when it exits 0),
//! then `onlyif` (in sync, "not needed", unless it exits 0). Without `creates` or
//! `unless` nothing observable says the command is done, so `apply` remembers in the
//! run's memo that it just ran this step, and the engine's re-plan right after it
//! takes that mark and answers "in sync": the command counts as converged once per run
//! (and reports changed every run). With `creates` or `unless`, the re-plan evaluates
//! them again: a command that did not do what its guard checks fails its step.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::host::Kind;
use crate::process::{Cmd, CmdOutput};
use crate::step::command::{CommandStep, Program};

/// The run's record of command steps (see the module documentation).
const MEMO: &str = "command-runs";
/// Lines of output kept for a failure message or the log.
const TAIL_LINES: usize = 20;
/// Characters kept of one line of output.
const LINE_CHARS: usize = 300;

#[derive(Debug, Default)]
struct Runs {
    /// The step `apply` ran last; the next plan of a command step (the engine's
    /// re-plan of the same step) takes it.
    just_ran: Option<CommandStep>,
    /// What the last successful run printed, until [`take_output`] collects it.
    output: Option<String>,
}

fn runs(ctx: &Ctx<'_>) -> Result<Rc<RefCell<Runs>>, Error> {
    ctx.memo(MEMO, || Ok(RefCell::new(Runs::default())))
}

/// The command as the user wrote it, with its environment and timeout (no `cwd` or
/// `user` wrapping): what messages show.
fn core(step: &CommandStep) -> Cmd {
    let cmd = match &step.run {
        Program::Argv(argv) => Cmd::new(&argv[0]).args(&argv[1..]),
        Program::Shell(script) => Cmd::new("/bin/sh").args(["-c", script.as_str()]),
    };
    with_context(step, cmd)
}

fn with_context(step: &CommandStep, mut cmd: Cmd) -> Cmd {
    cmd.env = step
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cmd.timeout(step.timeout)
}

/// `cmd` as it is started: in `cwd` (`env -C DIR --`) and as `user`
/// (`runuser -u USER --`), when the step says so.
fn wrapped(step: &CommandStep, cmd: Cmd) -> Cmd {
    let mut cmd = cmd;
    if let Some(dir) = &step.cwd {
        let inner = std::mem::take(&mut cmd.args);
        let program = std::mem::replace(&mut cmd.program, "env".to_owned());
        cmd.args = ["-C", dir.as_str(), "--", program.as_str()]
            .into_iter()
            .map(str::to_owned)
            .chain(inner)
            .collect();
    }
    if let Some(user) = &step.user {
        let inner = std::mem::take(&mut cmd.args);
        let program = std::mem::replace(&mut cmd.program, "runuser".to_owned());
        cmd.args = ["-u", user.as_str(), "--", program.as_str()]
            .into_iter()
            .map(str::to_owned)
            .chain(inner)
            .collect();
    }
    cmd
}

fn guard_cmd(step: &CommandStep, argv: &[String]) -> Cmd {
    wrapped(
        step,
        with_context(step, Cmd::new(&argv[0]).args(&argv[1..])),
    )
}

/// A guard's argv for messages.
fn shown(argv: &[String]) -> String {
    Cmd::new(&argv[0]).args(&argv[1..]).display()
}

fn run_change(step: &CommandStep, note: Option<String>) -> Plan {
    let mut change = Change::new(ChangeKind::Run, Path::new(&core(step).display()));
    change.note = note;
    Plan {
        changes: vec![change],
        in_sync: String::new(),
    }
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The last [`TAIL_LINES`] lines of what a command printed (standard output, then
/// standard error), trimmed; long lines are cut.
fn tail(out: &CmdOutput) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim_end();
    if !err.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err);
    }
    let text = text.trim_matches('\n');
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(TAIL_LINES);
    let mut kept = String::new();
    if skip > 0 {
        let _ = writeln!(kept, "… ({skip} earlier lines not shown)");
    }
    for line in &lines[skip..] {
        match line.char_indices().nth(LINE_CHARS) {
            Some((cut, _)) => {
                let _ = writeln!(kept, "{} …", &line[..cut]);
            }
            None => {
                let _ = writeln!(kept, "{line}");
            }
        }
    }
    kept.trim_end().to_owned()
}

/// Runs a guard; `Ok(true)` when it exited 0. A guard that cannot be started, is
/// killed or times out fails the step: the agent could not observe.
fn guard(
    step: &CommandStep,
    which: &str,
    argv: &[String],
    ctx: &Ctx<'_>,
) -> Result<CmdOutput, Error> {
    let out = ctx
        .host
        .run(&guard_cmd(step, argv))
        .map_err(|e| Error::Refused(format!("cannot run the `{which}` guard: {e}")))?;
    if out.timed_out {
        return Err(Error::Refused(format!(
            "the `{which}` guard `{}` did not finish within {} and was killed",
            shown(argv),
            duration(step.timeout)
        )));
    }
    if out.code.is_none() {
        return Err(Error::Refused(format!(
            "the `{which}` guard `{}` was killed by a signal",
            shown(argv)
        )));
    }
    Ok(out)
}

fn code(out: &CmdOutput) -> String {
    out.code.map_or_else(|| "?".to_owned(), |c| c.to_string())
}

/// Why the command cannot run here (yet): its `user` or `cwd` does not exist.
fn missing(step: &CommandStep, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    if let Some(user) = &step.user
        && ctx.uid(user)?.is_none()
    {
        return Ok(Some(format!("user {user} does not exist on this machine")));
    }
    if let Some(dir) = &step.cwd {
        match ctx.host.lstat(Path::new(dir))? {
            None => return Ok(Some(format!("cwd {dir} does not exist on this machine"))),
            Some(meta) if !matches!(meta.kind, Kind::Dir | Kind::Symlink) => {
                return Err(Error::Refused(format!("cwd {dir} is not a directory")));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

pub fn plan(step: &CommandStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let just_ran = runs(ctx)?
        .borrow_mut()
        .just_ran
        .take()
        .is_some_and(|ran| ran == *step);
    let done_guard = step.creates.is_some() || step.unless.is_some();
    if just_ran && !done_guard {
        return Ok(Plan::in_sync(format!(
            "{} ran in this run",
            core(step).display()
        )));
    }
    if let Some(path) = &step.creates
        && ctx.host.lstat(Path::new(path))?.is_some()
    {
        return Ok(Plan::in_sync(format!("{path} exists")));
    }
    if let Some(why) = missing(step, ctx)? {
        if ctx.dry_run {
            let guards = step.unless.is_some() || step.onlyif.is_some();
            let note = if guards {
                format!("{why} yet; its guards are not run")
            } else {
                format!("{why} yet")
            };
            return Ok(run_change(step, Some(note)));
        }
        return Err(Error::Refused(format!(
            "{why}; create it in an earlier step"
        )));
    }
    if let Some(argv) = &step.unless
        && guard(step, "unless", argv, ctx)?.success()
    {
        return Ok(Plan::in_sync(format!("unless `{}` exited 0", shown(argv))));
    }
    if let Some(argv) = &step.onlyif {
        let out = guard(step, "onlyif", argv, ctx)?;
        if !out.success() {
            return Ok(Plan::in_sync(format!(
                "onlyif `{}` exited {}: not needed",
                shown(argv),
                code(&out)
            )));
        }
    }
    let note = just_ran.then(|| match (&step.creates, &step.unless) {
        (Some(path), None) => format!("it ran, but {path} still does not exist"),
        (None, Some(argv)) => format!("it ran, but unless `{}` still fails", shown(argv)),
        _ => "it ran, but its guards still say it is needed".to_owned(),
    });
    Ok(run_change(step, note))
}

/// Runs the command; its output (trimmed, the last lines) on success, a refusal with
/// the exit code and the last lines of output otherwise.
fn execute(step: &CommandStep, ctx: &Ctx<'_>) -> Result<String, Error> {
    let shown = core(step).display();
    let out = ctx.host.run(&wrapped(step, core(step)))?;
    let printed = tail(&out);
    let what = if out.timed_out {
        format!(
            "`{shown}` did not finish within {} and was killed",
            duration(step.timeout)
        )
    } else {
        match out.code {
            Some(0) => return Ok(printed),
            Some(c) => format!("`{shown}` exited with code {c}"),
            None => format!("`{shown}` was killed by a signal"),
        }
    };
    Err(Error::Refused(if printed.is_empty() {
        format!("{what} (no output)")
    } else {
        format!("{what}; its output ends with:\n{printed}")
    }))
}

pub fn apply(step: &CommandStep, _plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    let printed = execute(step, ctx)?;
    let runs = runs(ctx)?;
    let mut runs = runs.borrow_mut();
    runs.just_ran = Some(step.clone());
    runs.output = (!printed.is_empty()).then_some(printed);
    Ok(())
}

/// What the last successful `apply` of a command printed (trimmed, its last lines), for
/// the change's `output`; `None` when it printed nothing. Taking it clears it.
#[must_use]
pub fn take_output(ctx: &Ctx<'_>) -> Option<String> {
    runs(ctx).ok()?.borrow_mut().output.take()
}

/// A notification runs the command even when `creates` or `unless` say it is done —
/// not when this run already ran it (`plan` has the run), and not when `onlyif` says
/// it does not apply. A dry run says what it would do.
pub fn refresh(step: &CommandStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    if !plan.changes.is_empty() {
        return Ok(Some(
            if ctx.dry_run {
                "runs once (above), not again for the notification"
            } else {
                "already ran in this run, not run again"
            }
            .to_owned(),
        ));
    }
    let line = core(step).display();
    if let Some(why) = missing(step, ctx)? {
        if ctx.dry_run {
            return Ok(Some(format!("would run {line} ({why} yet)")));
        }
        return Err(Error::Refused(format!(
            "{why}; create it in an earlier step"
        )));
    }
    if let Some(argv) = &step.onlyif {
        let out = guard(step, "onlyif", argv, ctx)?;
        if !out.success() {
            return Ok(Some(format!(
                "not run: onlyif `{}` exited {}",
                shown(argv),
                code(&out)
            )));
        }
    }
    if ctx.dry_run {
        return Ok(Some(format!("would run {line}")));
    }
    execute(step, ctx)?;
    Ok(Some(format!("ran {line}")))
}

#[must_use]
pub fn describe(step: &CommandStep) -> String {
    format!("command {}", core(step).display())
}
