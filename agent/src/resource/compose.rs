//! The `compose` resource: a Docker Compose project whose services all run.
//!
//! **Which compose.** `docker compose` (v2, the CLI plugin) when `docker compose
//! version` exits 0, else `/usr/bin/docker-compose` (v1, what Debian bookworm ships).
//! Found once per run and shared through [`Ctx::memo`]; not found is not remembered,
//! so a package step earlier in the run can install it.
//!
//! **Observation** uses only what both v1 (1.29) and v2 understand, and only reads:
//! `config --services` (every service of the project; this also checks the file)
//! and `ps --services --filter status=running` (those with a running container).
//! In sync when every service runs; otherwise one change, `up PROJECT`, naming the
//! services that are down. With `state = "stopped"`, in sync when none runs.
//!
//! **Apply**: `up -d --remove-orphans` with the pull policy: v2 passes
//! `--pull POLICY`; v1 has no `--pull`, so "always" runs `pull` first and "never"
//! adds `--no-build` (and pulls nothing itself). **Refresh** (notify):
//! `up -d --force-recreate --remove-orphans` once, not when this run just brought
//! the project up. A dry run runs only `version`, `config` and `ps`.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::process::{Cmd, CmdOutput};
use crate::step::compose::{ComposeStep, ProjectState, PullPolicy};

/// Where Debian's docker-compose (v1) lives.
pub const V1_PATH: &str = "/usr/bin/docker-compose";
/// The memo key of the compose program found.
const TOOL_MEMO: &str = "compose-tool";
/// The memo key of the project this run's last `apply` brought up.
const UP_MEMO: &str = "compose-up";
/// Bound on reading commands (`version`, `config`, `ps`).
const READ_TIMEOUT: Duration = Duration::from_mins(2);
/// Bound on `up` and `pull` (image pulls can be slow).
const UP_TIMEOUT: Duration = Duration::from_mins(30);

/// Which Docker Compose runs the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `docker compose`, the CLI plugin.
    V2,
    /// `/usr/bin/docker-compose`, the Python program.
    V1,
}

impl Tool {
    fn base(self) -> Cmd {
        match self {
            Self::V2 => Cmd::new("docker").arg("compose"),
            Self::V1 => Cmd::new(V1_PATH),
        }
    }
}

/// The compose program of this host, found once per run; `None` when neither is there.
fn tool(ctx: &Ctx<'_>) -> Result<Option<Tool>, Error> {
    let found = ctx.memo(TOOL_MEMO, || {
        let version = Cmd::new("docker")
            .args(["compose", "version"])
            .timeout(READ_TIMEOUT);
        // `docker` itself may be missing: that is "no v2", not a failure.
        if ctx.host.run(&version).is_ok_and(|out| out.success()) {
            return Ok(Some(Tool::V2));
        }
        Ok(ctx.host.lstat(Path::new(V1_PATH))?.map(|_| Tool::V1))
    })?;
    if found.is_none() {
        ctx.forget(TOOL_MEMO);
    }
    Ok(*found)
}

/// `COMPOSE -p PROJECT -f FILE --project-directory DIR ARGS...`
fn compose(tool: Tool, step: &ComposeStep, args: &[&str]) -> Cmd {
    tool.base()
        .args([
            "-p",
            step.project.as_str(),
            "-f",
            step.file.as_str(),
            "--project-directory",
            step.directory.as_str(),
        ])
        .args(args.iter().copied())
}

fn failed(cmd: &Cmd, out: &CmdOutput) -> Error {
    let why = if out.timed_out {
        "it timed out".to_owned()
    } else {
        match (out.code, out.message()) {
            (Some(code), m) if m.is_empty() => format!("exit code {code}"),
            (Some(code), m) => format!("exit code {code}: {m}"),
            (None, _) => "killed by a signal".to_owned(),
        }
    };
    Error::Refused(format!("`{}` failed: {why}", cmd.display()))
}

fn run_ok(ctx: &Ctx<'_>, cmd: &Cmd) -> Result<CmdOutput, Error> {
    let out = ctx.host.run(cmd)?;
    if out.success() {
        Ok(out)
    } else {
        Err(failed(cmd, &out))
    }
}

/// The service names a read command printed, one a line, sorted.
fn services(out: &CmdOutput) -> Vec<String> {
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn pending(step: &ComposeStep, kind: ChangeKind, note: String) -> Plan {
    let mut change = Change::new(kind, Path::new(&step.project));
    change.note = Some(note);
    Plan {
        changes: vec![change],
        in_sync: String::new(),
    }
}

fn want(step: &ComposeStep) -> ChangeKind {
    match step.state {
        ProjectState::Running => ChangeKind::Up,
        ProjectState::Stopped => ChangeKind::Stop,
    }
}

/// The tool, or why the step cannot run: a pending plan in a dry run, an error
/// otherwise.
fn require_tool(step: &ComposeStep, ctx: &Ctx<'_>) -> Result<Result<Tool, Plan>, Error> {
    if let Some(tool) = tool(ctx)? {
        return Ok(Ok(tool));
    }
    let why = format!(
        "Docker Compose is not installed: `docker compose version` failed and {V1_PATH} does not exist"
    );
    if ctx.dry_run {
        return Ok(Err(pending(
            step,
            want(step),
            format!("{why} yet; a package step before this one may install it"),
        )));
    }
    Err(Error::Refused(format!(
        "{why}; install docker.io and docker-compose (or docker-compose-plugin) with a package step before this one"
    )))
}

pub fn plan(step: &ComposeStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let just_up = ctx
        .memo(UP_MEMO, || Ok(RefCell::new(None::<ComposeStep>)))?
        .borrow_mut()
        .take()
        .is_some_and(|s| s == *step);
    if ctx.host.lstat(Path::new(&step.file))?.is_none() {
        let why = format!("the compose file {} does not exist", step.file);
        if ctx.dry_run && step.state == ProjectState::Running {
            return Ok(pending(
                step,
                ChangeKind::Up,
                format!("{why} yet; a template or file step before this one may write it"),
            ));
        }
        if step.state == ProjectState::Stopped {
            // Nothing describes the project's services; no container can be known.
            return Err(Error::Refused(format!(
                "{why}: the project's services cannot be read"
            )));
        }
        return Err(Error::Refused(format!(
            "{why}: write it with a template or file step before this one (and let that step notify this one)"
        )));
    }
    let tool = match require_tool(step, ctx)? {
        Ok(tool) => tool,
        Err(plan) => return Ok(plan),
    };
    let all = services(&run_ok(
        ctx,
        &compose(tool, step, &["config", "--services"]).timeout(READ_TIMEOUT),
    )?);
    let running = services(&run_ok(
        ctx,
        &compose(
            tool,
            step,
            &["ps", "--services", "--filter", "status=running"],
        )
        .timeout(READ_TIMEOUT),
    )?);
    let project = &step.project;
    match step.state {
        ProjectState::Running => {
            let down: Vec<&String> = all.iter().filter(|s| !running.contains(s)).collect();
            if down.is_empty() {
                return Ok(Plan::in_sync(format!(
                    "project {project}: every service runs ({})",
                    all.join(", ")
                )));
            }
            let down = down
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut change = Change::new(ChangeKind::Up, Path::new(project))
                .before_after(format!("down: {down}"), "running");
            if just_up {
                change.note = Some(format!("it was brought up, but {down} still do not run"));
            }
            Ok(Plan {
                changes: vec![change],
                in_sync: String::new(),
            })
        }
        ProjectState::Stopped => {
            if running.is_empty() {
                return Ok(Plan::in_sync(format!("project {project}: no service runs")));
            }
            Ok(Plan {
                changes: vec![
                    Change::new(ChangeKind::Stop, Path::new(project))
                        .before_after(format!("running: {}", running.join(", ")), "stopped"),
                ],
                in_sync: String::new(),
            })
        }
    }
}

/// The commands that bring the project up (`extra`: `--force-recreate` for a refresh).
fn up_commands(tool: Tool, step: &ComposeStep, extra: &[&str]) -> Vec<Cmd> {
    let mut up = vec!["up", "-d", "--remove-orphans"];
    up.extend(extra);
    let mut cmds = Vec::new();
    match (tool, step.pull_policy) {
        (Tool::V2, policy) => {
            up.extend(["--pull", policy.as_str()]);
        }
        (Tool::V1, PullPolicy::Always) => cmds.push(compose(tool, step, &["pull"])),
        (Tool::V1, PullPolicy::Never) => up.push("--no-build"),
        (Tool::V1, PullPolicy::Missing) => {}
    }
    cmds.push(compose(tool, step, &up));
    cmds.into_iter().map(|c| c.timeout(UP_TIMEOUT)).collect()
}

pub fn apply(step: &ComposeStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    let tool =
        tool(ctx)?.ok_or_else(|| Error::Refused("Docker Compose is not installed".to_owned()))?;
    if plan.has(ChangeKind::Stop) {
        run_ok(ctx, &compose(tool, step, &["stop"]).timeout(UP_TIMEOUT))?;
        return Ok(());
    }
    for cmd in up_commands(tool, step, &[]) {
        run_ok(ctx, &cmd)?;
    }
    *ctx.memo(UP_MEMO, || Ok(RefCell::new(None::<ComposeStep>)))?
        .borrow_mut() = Some(step.clone());
    Ok(())
}

/// A notification recreates the project's containers once (`up -d --force-recreate`),
/// not when this run just brought it up, and not when it is meant to be stopped.
pub fn refresh(step: &ComposeStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    let project = &step.project;
    if step.state == ProjectState::Stopped {
        return Ok(Some(format!(
            "not recreated: project {project} is meant to be stopped"
        )));
    }
    if plan.has(ChangeKind::Up) {
        return Ok(Some(if ctx.dry_run {
            format!("would bring project {project} up in this run, so no recreate")
        } else {
            "already brought up in this run".to_owned()
        }));
    }
    if ctx.dry_run {
        return Ok(Some(format!("would recreate project {project}")));
    }
    let tool =
        tool(ctx)?.ok_or_else(|| Error::Refused("Docker Compose is not installed".to_owned()))?;
    for cmd in up_commands(tool, step, &["--force-recreate"]) {
        run_ok(ctx, &cmd)?;
    }
    Ok(Some(format!("recreated project {project}")))
}

#[must_use]
pub fn describe(step: &ComposeStep) -> String {
    format!("compose {} ({})", step.project, step.file)
}
