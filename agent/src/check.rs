//! `infra-agent check` and `infra-agent data`: validate and render a repository offline,
//! and show one host's merged data with sources.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::catalog;
use crate::cli::{Format, exit};
use crate::diag::{Diagnostic, Diagnostics};
use crate::facts::Facts;
use crate::state_repo::infra_toml::Version;
use crate::state_repo::{self, DirSource, Selection, StateRepo, data};

/// Version of the JSON documents printed by `check --format json`.
pub const CHECK_SCHEMA: &str = "infra-agent/check/v1";
/// Version of the JSON documents printed by `data --format json`.
pub const DATA_SCHEMA: &str = "infra-agent/data/v1";

/// The result of checking one host.
#[derive(Debug, Serialize)]
pub struct HostReport {
    pub name: String,
    /// What the host runs; absent when it could not be selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    #[serde(skip)]
    pub selection: Option<Selection>,
    pub steps: usize,
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
}

/// The result of checking a repository.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub schema: &'static str,
    pub valid: bool,
    /// Errors not tied to one host (files that do not load).
    pub errors: Vec<Diagnostic>,
    pub hosts: Vec<HostReport>,
}

/// Loads the repository and compiles the catalog of every host (or of `hostname`).
#[must_use]
pub fn check_repo(dir: &Path, hostname: Option<&str>) -> CheckReport {
    let repo = match state_repo::load(&DirSource::new(dir), Version::agent()) {
        Ok(repo) => repo,
        Err(errors) => {
            return CheckReport {
                schema: CHECK_SCHEMA,
                valid: false,
                errors: errors.into_sorted(),
                hosts: Vec::new(),
            };
        }
    };
    let names = match hostname {
        Some(h) => vec![state_repo::short_name(h)],
        None => repo.hosts(),
    };
    let hosts: Vec<HostReport> = names.iter().map(|name| check_host(&repo, name)).collect();
    let mut report = CheckReport {
        schema: CHECK_SCHEMA,
        valid: hosts.iter().all(|h| h.valid),
        errors: Vec::new(),
        hosts,
    };
    if report.hosts.is_empty() {
        report.valid = false;
        report.errors.push(
            Diagnostic::new(
                "inventory",
                None,
                "no inventory file lists a host by its exact name",
            )
            .hint("list hosts in a group, or check a host matched by a glob with --hostname NAME"),
        );
    }
    report
}

impl HostReport {
    fn new(
        name: &str,
        selection: Option<Selection>,
        steps: usize,
        errors: Vec<Diagnostic>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            env: selection.as_ref().map(|s| s.env.clone()),
            inventory: selection.as_ref().map(|s| s.inventory.clone()),
            groups: selection
                .as_ref()
                .map(|s| s.groups.clone())
                .unwrap_or_default(),
            roles: selection
                .as_ref()
                .map(|s| s.roles.clone())
                .unwrap_or_default(),
            selection,
            steps,
            valid: errors.is_empty(),
            errors,
        }
    }
}

fn check_host(repo: &StateRepo, name: &str) -> HostReport {
    let selection = match repo.select(name) {
        Ok(sel) => sel,
        Err(d) => return HostReport::new(name, None, 0, vec![d]),
    };
    let facts = Facts::placeholder(&selection.name);
    match catalog::compile(repo, &selection, &facts) {
        Ok(cat) => HostReport::new(name, Some(selection), cat.steps.len(), Vec::new()),
        Err(errors) => HostReport::new(name, Some(selection), 0, errors.into_sorted()),
    }
}

/// `infra-agent check`: prints the report and returns 0 when valid, 1 when not.
pub fn check(
    dir: &Path,
    hostname: Option<&str>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    let report = check_repo(dir, hostname);
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        Format::Text => {
            // The same error often shows for every host that runs a role: print it once.
            let mut all = Diagnostics(report.errors.clone());
            for host in &report.hosts {
                all.0.extend(host.errors.iter().cloned());
            }
            for d in all.into_sorted() {
                writeln!(err, "{d}\n")?;
            }
            for host in &report.hosts {
                let status = if host.valid { "ok     " } else { "invalid" };
                match &host.selection {
                    Some(sel) => writeln!(
                        out,
                        "{status} {:<20} {:<12} {} steps (groups: {}; roles: {})",
                        host.name,
                        sel.env,
                        host.steps,
                        sel.groups.join(", "),
                        sel.roles.join(", ")
                    )?,
                    None => writeln!(out, "{status} {}", host.name)?,
                }
            }
            let invalid = report.hosts.iter().filter(|h| !h.valid).count();
            if report.valid {
                writeln!(out, "valid: {} hosts checked", report.hosts.len())?;
            } else if report.hosts.is_empty() {
                writeln!(out, "invalid: the repository does not load")?;
            } else {
                writeln!(
                    out,
                    "invalid: {invalid} of {} hosts do not render",
                    report.hosts.len()
                )?;
            }
        }
    }
    Ok(if report.valid {
        exit::OK
    } else {
        exit::INVALID
    })
}

/// `infra-agent data`: the merged data of one host with the source of every value.
pub fn data(
    dir: &Path,
    hostname: &str,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    let repo = match state_repo::load(&DirSource::new(dir), Version::agent()) {
        Ok(repo) => repo,
        Err(errors) => {
            writeln!(err, "{}", Diagnostics(errors.into_sorted()))?;
            return Ok(exit::INVALID);
        }
    };
    let sel = match repo.select(hostname) {
        Ok(sel) => sel,
        Err(d) => {
            writeln!(err, "{d}")?;
            return Ok(exit::INVALID);
        }
    };
    let merged = data::merge(repo.data_layers(&sel));
    let leaves = merged.leaves();
    match format {
        Format::Json => {
            let sources: serde_json::Map<String, serde_json::Value> = leaves
                .iter()
                .map(|(path, _, src)| (path.clone(), json!(src.to_string())))
                .collect();
            let doc = json!({
                "schema": DATA_SCHEMA,
                "host": sel,
                "data": merged.to_json(),
                "sources": sources,
            });
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
        Format::Text => {
            writeln!(
                out,
                "# host {} (env {}; groups: {})",
                sel.name,
                sel.env,
                sel.groups.join(", ")
            )?;
            let layers: Vec<&str> = repo
                .data_layers(&sel)
                .iter()
                .map(|l| l.file.as_str())
                .collect();
            writeln!(
                out,
                "# layers, later wins: {}",
                if layers.is_empty() {
                    "(none)".to_owned()
                } else {
                    layers.join(" -> ")
                }
            )?;
            let rendered: Vec<(String, String)> = leaves
                .iter()
                .map(|(path, value, src)| (format!("{path} = {value}"), src.to_string()))
                .collect();
            let width = rendered
                .iter()
                .map(|(l, _)| l.chars().count())
                .max()
                .unwrap_or(0)
                .min(60);
            for (line, src) in rendered {
                writeln!(out, "{line:<width$}  # {src}")?;
            }
        }
    }
    Ok(exit::OK)
}
