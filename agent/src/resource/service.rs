//! The `service` resource: a systemd unit, enabled or disabled, running or stopped,
//! restarted or reloaded when notified.
//!
//! Observation: the state of every unit the run names (`Settings::services`) is read in
//! one `systemctl show` call and shared through [`Ctx::memo`]; any `systemctl` command
//! this module runs forgets it, so the next observation reads systemd again. Units are
//! read again as well before a refresh (an earlier step may have changed a unit file
//! since they were read) and before a unit is declared missing (an earlier step may
//! have installed its package).

use std::path::Path;
use std::time::Duration;

use super::{Change, ChangeKind, Ctx, Error, Plan};
use crate::catalog::Catalog;
use crate::process::{Cmd, CmdOutput};
use crate::step::StepKind;
use crate::step::service::{RunState, ServiceStep};

/// The memo key of the units' state.
const MEMO: &str = "systemd-units";

/// The properties read; `systemctl show` prints them in its own order.
pub const PROPERTIES: &str = "Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload";

/// A backstop: systemd's own start and stop timeouts are what normally ends a job.
const TIMEOUT: Duration = Duration::from_mins(10);

/// What systemd says about one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `Id`: the unit's own name (an alias shows the unit it names).
    pub id: String,
    /// `LoadState`: `loaded`, `not-found`, `masked`, `error`, `bad-setting`.
    pub load_state: String,
    /// `ActiveState`: `active`, `inactive`, `failed`, `activating`, ...
    pub active_state: String,
    /// `SubState`: `running`, `dead`, `exited`, ...
    pub sub_state: String,
    /// `UnitFileState`: `enabled`, `disabled`, `static`, `masked`, ... (may be empty).
    pub unit_file_state: String,
    /// `NeedDaemonReload`: its unit file changed on disk since systemd read it.
    pub need_daemon_reload: bool,
}

impl UnitState {
    /// Whether systemd found a unit file (or a unit) of that name.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.load_state != "not-found"
    }

    /// Whether the unit is running or on its way there.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading"
        )
    }

    /// `active (running)`, for messages.
    #[must_use]
    pub fn activity(&self) -> String {
        if self.sub_state.is_empty() {
            self.active_state.clone()
        } else {
            format!("{} ({})", self.active_state, self.sub_state)
        }
    }
}

/// Parses the output of `systemctl show --property=... -- UNIT...`: one block of
/// `Key=value` lines per unit, in the order the units were named, blocks separated by
/// blank lines. Unknown keys are ignored; a missing key leaves its field empty.
#[must_use]
pub fn parse_show(text: &str) -> Vec<UnitState> {
    let mut units = Vec::new();
    let mut current: Option<UnitState> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            units.extend(current.take());
            continue;
        }
        let unit = current.get_or_insert_with(UnitState::default);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.to_owned();
        match key {
            "Id" => unit.id = value,
            "LoadState" => unit.load_state = value,
            "ActiveState" => unit.active_state = value,
            "SubState" => unit.sub_state = value,
            "UnitFileState" => unit.unit_file_state = value,
            "NeedDaemonReload" => unit.need_daemon_reload = value == "yes",
            _ => {}
        }
    }
    units.extend(current);
    units
}

/// The one command that reads the state of `units`.
#[must_use]
pub fn show_command(units: &[String]) -> Cmd {
    Cmd::new("systemctl")
        .arg("show")
        .arg(format!("--property={PROPERTIES}"))
        .arg("--")
        .args(units.iter().cloned())
        .timeout(TIMEOUT)
}

/// The units every `service` step of a catalog names, each once, in run order: what
/// `Settings::services` holds so that one `systemctl show` reads them all.
#[must_use]
pub fn units(catalog: &Catalog) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    for step in &catalog.steps {
        if let Some(StepKind::Service(s)) = &step.desired
            && !units.contains(&s.unit)
        {
            units.push(s.unit.clone());
        }
    }
    units
}

/// The units read by one `systemctl show`, in the order asked.
#[derive(Debug)]
struct Units {
    /// The unit whose step read them.
    read_for: String,
    states: Vec<(String, UnitState)>,
}

impl Units {
    fn get(&self, unit: &str) -> Option<&UnitState> {
        self.states.iter().find(|(u, _)| u == unit).map(|(_, s)| s)
    }
}

fn read_units(ctx: &Ctx<'_>, names: &[String], read_for: &str) -> Result<Units, Error> {
    if !ctx.host.facts()?.systemd {
        return Err(Error::Refused(
            "systemd is not running on this machine (PID 1 is not systemd), and service steps need it; in a container, boot it with systemd as PID 1".to_owned(),
        ));
    }
    let cmd = show_command(names);
    let out = ctx.host.run(&cmd)?;
    if !out.success() {
        return Err(failed("systemctl show", &out));
    }
    let states = parse_show(&String::from_utf8_lossy(&out.stdout));
    if states.len() != names.len() {
        return Err(Error::Refused(format!(
            "systemctl show described {} units for the {} it was asked about ({})",
            states.len(),
            names.len(),
            names.join(" ")
        )));
    }
    Ok(Units {
        read_for: read_for.to_owned(),
        states: names.iter().cloned().zip(states).collect(),
    })
}

/// How current an observation must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The run's shared observation, read on first use.
    Shared,
    /// Read now.
    Again,
    /// The shared observation if this unit's step read it (its plan, which the engine
    /// runs right before a refresh); else read now, since steps between may have
    /// changed a unit file.
    Recent,
}

/// The state of `unit`. Returns whether systemd was asked just now.
fn observe(ctx: &Ctx<'_>, unit: &str, read: Read) -> Result<(UnitState, bool), Error> {
    if read == Read::Again {
        ctx.forget(MEMO);
    }
    let mut read_now = false;
    let units = ctx.memo(MEMO, || {
        read_now = true;
        let mut names = ctx.settings.services.clone();
        if !names.iter().any(|n| n == unit) {
            names.push(unit.to_owned());
        }
        read_units(ctx, &names, unit)
    })?;
    if read == Read::Recent && !read_now && units.read_for != unit {
        return observe(ctx, unit, Read::Again);
    }
    if let Some(state) = units.get(unit) {
        return Ok((state.clone(), read_now));
    }
    // Not among the run's units (the settings did not name it): read them all again
    // with it, so the memo keeps serving every step.
    let mut names: Vec<String> = units.states.iter().map(|(n, _)| n.clone()).collect();
    names.push(unit.to_owned());
    ctx.forget(MEMO);
    let units = ctx.memo(MEMO, || read_units(ctx, &names, unit))?;
    let state = units
        .get(unit)
        .cloned()
        .ok_or_else(|| Error::Refused(format!("systemctl show did not describe {unit}")))?;
    Ok((state, true))
}

/// The state of `unit` as systemd says it now (for rollback, which looks at units no
/// step of the run names). Reads only.
pub fn unit_state(ctx: &Ctx<'_>, unit: &str) -> Result<UnitState, Error> {
    Ok(observe(ctx, unit, Read::Again)?.0)
}

/// The state of `unit` for planning: read again before calling it missing in a real run.
fn observe_for_plan(ctx: &Ctx<'_>, unit: &str) -> Result<UnitState, Error> {
    let (state, read_now) = observe(ctx, unit, Read::Shared)?;
    if state.exists() || ctx.dry_run || read_now {
        return Ok(state);
    }
    // Read before an earlier step of this run installed its package, perhaps.
    Ok(observe(ctx, unit, Read::Again)?.0)
}

fn not_found(unit: &str) -> Error {
    Error::Refused(format!(
        "unit {unit} does not exist: install its package in an earlier step (and `requires` it)"
    ))
}

fn failed(what: &str, out: &CmdOutput) -> Error {
    let why = if out.timed_out {
        "timed out".to_owned()
    } else {
        match (out.code, out.message()) {
            (Some(code), m) if m.is_empty() => format!("exit code {code}"),
            (_, m) if !m.is_empty() => m,
            _ => "killed by a signal".to_owned(),
        }
    };
    Error::Refused(format!("{what} failed: {why}"))
}

/// Runs `systemctl ARGS...`; the observation of units is forgotten whatever happens.
fn systemctl(ctx: &Ctx<'_>, args: &[&str]) -> Result<(), Error> {
    let cmd = Cmd::new("systemctl")
        .args(args.iter().copied())
        .timeout(TIMEOUT);
    let result = ctx.host.run(&cmd);
    ctx.forget(MEMO);
    let out = result?;
    if out.success() {
        Ok(())
    } else {
        Err(failed(&cmd.display(), &out))
    }
}

fn change(kind: ChangeKind, unit: &str) -> Change {
    Change::new(kind, Path::new(unit))
}

/// What `enabled` can say about a `UnitFileState`.
enum Enablement {
    /// Enabled at boot, or not (`disabled`, `linked`, `enabled-runtime`: not for good).
    Is(bool),
    Masked,
    /// `static`, `indirect`, `generated`, `transient`, `alias`: started by other units
    /// or generated; there is nothing to enable or disable.
    Fixed,
    /// Empty or `bad`.
    Unknown,
}

fn enablement(unit_file_state: &str) -> Enablement {
    match unit_file_state {
        "enabled" => Enablement::Is(true),
        "disabled" | "linked" | "linked-runtime" | "enabled-runtime" => Enablement::Is(false),
        "masked" | "masked-runtime" => Enablement::Masked,
        "static" | "indirect" | "generated" | "transient" | "alias" => Enablement::Fixed,
        _ => Enablement::Unknown,
    }
}

/// The changes that bring a unit that exists to the step's desired state.
fn changes_for(step: &ServiceStep, state: &UnitState) -> Result<Vec<Change>, Error> {
    let unit = step.unit.as_str();
    let masked = || {
        Error::Refused(format!(
            "unit {unit} is masked, so it cannot be enabled or started: unmask it (systemctl unmask {unit}) or remove `enabled`/`state` from the step"
        ))
    };
    match state.load_state.as_str() {
        "loaded" => {}
        "masked" => {
            if step.enabled == Some(true) || step.state == Some(RunState::Running) {
                return Err(masked());
            }
        }
        other => {
            return Err(Error::Refused(format!(
                "unit {unit} did not load (LoadState={other}); `systemctl status {unit}` says why"
            )));
        }
    }
    let mut changes = Vec::new();
    if let Some(want) = step.enabled {
        let file_state = state.unit_file_state.as_str();
        match enablement(file_state) {
            Enablement::Is(is) if is == want => {}
            Enablement::Is(_) => {
                let (kind, after) = if want {
                    (ChangeKind::Enable, "enabled")
                } else {
                    (ChangeKind::Disable, "disabled")
                };
                changes.push(change(kind, unit).before_after(file_state, after));
            }
            Enablement::Masked if want => return Err(masked()),
            Enablement::Masked => {}
            Enablement::Fixed if want => {}
            Enablement::Fixed => {
                return Err(Error::Refused(format!(
                    "unit {unit} is {file_state}: it has no [Install] section to disable; remove `enabled`, or mask the unit"
                )));
            }
            Enablement::Unknown => {
                return Err(Error::Refused(format!(
                    "systemd reports no usable unit file state for {unit} (UnitFileState={file_state:?}), so `enabled` cannot be checked"
                )));
            }
        }
    }
    let run_change = match (step.state, state.is_running()) {
        (Some(RunState::Running), false) => Some((ChangeKind::Start, "active")),
        (Some(RunState::Stopped), true) => Some((ChangeKind::Stop, "inactive")),
        _ => None,
    };
    if let Some((kind, after)) = run_change {
        changes.push(change(kind, unit).before_after(state.activity(), after));
    }
    Ok(changes)
}

/// Plans a dry run for a unit that does not exist (yet): what would be done once an
/// earlier step installed it, each change with a note.
fn plan_missing(step: &ServiceStep, before: &str, note: &str) -> Plan {
    let unit = step.unit.as_str();
    let note = note.to_owned();
    let enable = step.enabled.map(|on| {
        if on {
            (ChangeKind::Enable, "enabled")
        } else {
            (ChangeKind::Disable, "disabled")
        }
    });
    let run = step.state.map(|state| match state {
        RunState::Running => (ChangeKind::Start, "active"),
        RunState::Stopped => (ChangeKind::Stop, "inactive"),
    });
    let changes: Vec<Change> = [enable, run]
        .into_iter()
        .flatten()
        .map(|(kind, after)| {
            let mut c = change(kind, unit).before_after(before, after);
            c.note = Some(note.clone());
            c
        })
        .collect();
    if changes.is_empty() {
        return Plan::in_sync(note);
    }
    Plan {
        changes,
        in_sync: String::new(),
    }
}

pub fn plan(step: &ServiceStep, ctx: &Ctx<'_>) -> Result<Plan, Error> {
    let unit = step.unit.as_str();
    if ctx.dry_run && !ctx.host.facts()?.systemd {
        // A dry run on a machine without systemd (a laptop, a build container) still
        // shows what the step asks for; the real run fails here, as the note says.
        return Ok(plan_missing(
            step,
            "unknown",
            "systemd is not running on this machine, so a real run of this step fails here",
        ));
    }
    let state = observe_for_plan(ctx, unit)?;
    if !state.exists() {
        if ctx.dry_run {
            return Ok(plan_missing(
                step,
                "not-found",
                &format!(
                    "unit {unit} does not exist yet; a package step before this one may install it"
                ),
            ));
        }
        return Err(not_found(unit));
    }
    let mut changes = Vec::new();
    if state.need_daemon_reload {
        changes.push(change(ChangeKind::DaemonReload, unit));
    }
    match changes_for(step, &state) {
        Ok(more) => changes.extend(more),
        // What systemd says about the old unit file does not count: `apply` judges
        // again after the reload.
        Err(_) if state.need_daemon_reload => {}
        Err(e) => return Err(e),
    }
    if changes.is_empty() {
        let enabled = if state.unit_file_state.is_empty() {
            String::new()
        } else {
            format!("{}, ", state.unit_file_state)
        };
        return Ok(Plan::in_sync(format!(
            "{unit} is {enabled}{}",
            state.activity()
        )));
    }
    Ok(Plan {
        changes,
        in_sync: String::new(),
    })
}

pub fn apply(step: &ServiceStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<(), Error> {
    let unit = step.unit.as_str();
    let fresh;
    let plan = if plan.has(ChangeKind::DaemonReload) {
        systemctl(ctx, &["daemon-reload"])?;
        // The plan judged the unit as systemd knew it before the reload.
        let (state, _) = observe(ctx, unit, Read::Again)?;
        if !state.exists() {
            return Err(not_found(unit));
        }
        fresh = Plan {
            changes: changes_for(step, &state)?,
            in_sync: String::new(),
        };
        &fresh
    } else {
        plan
    };
    for (kind, verb) in [
        (ChangeKind::Enable, "enable"),
        (ChangeKind::Disable, "disable"),
        (ChangeKind::Start, "start"),
        (ChangeKind::Stop, "stop"),
    ] {
        if plan.has(kind) {
            systemctl(ctx, &[verb, unit])?;
        }
    }
    Ok(())
}

/// What a notification does: restart (or reload, per `on_notify`) a running service
/// once; nothing to a service this run just started or one meant to be stopped.
pub fn refresh(step: &ServiceStep, plan: &Plan, ctx: &Ctx<'_>) -> Result<Option<String>, Error> {
    let unit = step.unit.as_str();
    let verb = step.on_notify.verb();
    let done = match verb {
        "reload" => "reloaded",
        "restart" => "restarted",
        _ => "reloaded or restarted",
    };
    if step.state == Some(RunState::Stopped) {
        return Ok(Some(format!("not {done}: {unit} is meant to be stopped")));
    }
    if plan.has(ChangeKind::Start) {
        return Ok(Some(if ctx.dry_run {
            format!("would start {unit} in this run, so no {verb}")
        } else {
            "already started in this run".to_owned()
        }));
    }
    // An earlier step may have changed the unit file since the units were read (not
    // in a dry run, which changes nothing).
    let read = if ctx.dry_run {
        Read::Shared
    } else {
        Read::Recent
    };
    let (state, _) = observe(ctx, unit, read)?;
    if !state.exists() {
        if ctx.dry_run {
            return Ok(Some(format!("would {verb} {unit}")));
        }
        return Err(not_found(unit));
    }
    if !state.is_running() {
        return Ok(Some(format!(
            "not {done}: {unit} is not running ({})",
            state.activity()
        )));
    }
    if ctx.dry_run {
        let reload = if state.need_daemon_reload {
            "daemon-reload and "
        } else {
            ""
        };
        return Ok(Some(format!("would {reload}{verb} {unit}")));
    }
    if state.need_daemon_reload {
        systemctl(ctx, &["daemon-reload"])?;
        systemctl(ctx, &[verb, unit])?;
        return Ok(Some(format!("{done} {unit} after daemon-reload")));
    }
    systemctl(ctx, &[verb, unit])?;
    Ok(Some(format!("{done} {unit}")))
}

#[must_use]
pub fn describe(step: &ServiceStep) -> String {
    format!("service {}", step.unit)
}
