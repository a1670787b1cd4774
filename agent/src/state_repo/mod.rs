//! The state repository: loading every file into validated types, and selecting what
//! applies to one host.
//!
//! Invariant: raw serde types (`*Spec`) never leave this module; callers see
//! [`StateRepo`], [`inventory::Inventory`], [`role::Role`] and [`data::DataFile`].

pub mod data;
pub mod infra_toml;
pub mod inventory;
pub mod role;
pub mod source;
mod toml_file;

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Diagnostics, Pos, closest};
use crate::render::{Origin, Renderer};
pub use source::{DirSource, RepoSource};

/// A loaded, statically valid state repository.
#[derive(Debug)]
pub struct StateRepo {
    pub infra: infra_toml::InfraToml,
    pub inventories: Vec<inventory::Inventory>,
    pub roles: BTreeMap<String, role::Role>,
    pub group_data: BTreeMap<String, data::DataFile>,
    pub host_data: BTreeMap<String, data::DataFile>,
    /// Compiled templates: files under `templates/` (named `templates/<path>`) and the
    /// template strings of step fields.
    pub renderer: Renderer,
    /// Names of the files under `files/`, relative to it.
    pub static_files: Vec<String>,
}

impl std::fmt::Debug for dyn RepoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What one host runs: its name, environment, groups and roles.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Selection {
    pub name: String,
    pub env: String,
    pub inventory: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

fn io_error(path: &str, e: &std::io::Error) -> Diagnostic {
    Diagnostic::new(path, None, format!("cannot read {path}: {e}"))
        .hint("check the file's permissions")
}

fn read(source: &dyn RepoSource, path: &str) -> Result<Option<String>, Diagnostic> {
    source.read(path).map_err(|e| io_error(path, &e))
}

fn list(
    source: &dyn RepoSource,
    dir: &str,
    ext: &str,
) -> Result<Vec<(String, String)>, Diagnostic> {
    Ok(source
        .list(dir)
        .map_err(|e| io_error(dir, &e))?
        .into_iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(ext)?.to_owned();
            (!stem.starts_with('.')).then(|| (stem, format!("{dir}/{name}")))
        })
        .collect())
}

/// Every file below `dir`, relative to it, sorted.
fn walk(source: &dyn RepoSource, dir: &str) -> Result<Vec<String>, Diagnostic> {
    let mut out = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(sub) = pending.pop() {
        let full = if sub.is_empty() {
            dir.to_owned()
        } else {
            format!("{dir}/{sub}")
        };
        for name in source.list(&full).map_err(|e| io_error(&full, &e))? {
            out.push(if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            });
        }
        for name in source.list_dirs(&full).map_err(|e| io_error(&full, &e))? {
            pending.push(if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and statically validates a state repository: every file is read and checked,
/// every template compiled. Errors from all files are returned together.
pub fn load(source: &dyn RepoSource, agent: infra_toml::Version) -> Result<StateRepo, Diagnostics> {
    let mut errors = Diagnostics::default();
    let mut renderer = Renderer::new();

    let infra = match read(source, infra_toml::FILE) {
        Ok(Some(text)) => infra_toml::parse(&text, agent)
            .map_err(|d| errors.push(d))
            .ok(),
        Ok(None) => {
            errors.push(
                Diagnostic::new(infra_toml::FILE, None, format!("{} is not a state repository: it has no infra.toml", source.describe()))
                    .hint("run in the repository's top directory, pass --repo DIR, or create infra.toml with format = 1"),
            );
            None
        }
        Err(d) => {
            errors.push(d);
            None
        }
    };
    // A repository for a newer agent may use keys this one does not know: stop here
    // rather than bury the "upgrade" message under follow-on errors.
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut inventories = Vec::new();
    match list(source, "inventory", ".toml") {
        Ok(files) if files.is_empty() => errors.push(
            Diagnostic::new("inventory", None, "there is no inventory file")
                .hint("create inventory/production.toml with [groups.<name>] tables listing hosts"),
        ),
        Ok(files) => {
            for (env, file) in files {
                match read(source, &file) {
                    Ok(Some(text)) => match inventory::parse(&env, &file, &text) {
                        Ok(inv) => inventories.push(inv),
                        Err(d) => errors.push(d),
                    },
                    Ok(None) => {}
                    Err(d) => errors.push(d),
                }
            }
        }
        Err(d) => errors.push(d),
    }

    // Template files first: steps compiled next refer to them by name only at render time,
    // but a template's own syntax error belongs to the template file.
    match walk(source, "templates") {
        Ok(paths) => {
            for path in paths {
                let file = format!("templates/{path}");
                match read(source, &file) {
                    Ok(Some(text)) => {
                        let origin = Origin {
                            file: file.clone(),
                            pos: None,
                            key: None,
                        };
                        renderer.defer(&file, &text, origin);
                    }
                    Ok(None) => {}
                    Err(d) => errors.push(d),
                }
            }
        }
        Err(d) => errors.push(d),
    }

    let mut roles = BTreeMap::new();
    match list(source, "roles", ".toml") {
        Ok(files) => {
            for (name, file) in files {
                match read(source, &file) {
                    Ok(Some(text)) => match role::parse(&name, &file, &text, &mut renderer) {
                        Ok(role) => {
                            roles.insert(name, role);
                        }
                        Err(ds) => ds.into_iter().for_each(|d| errors.push(d)),
                    },
                    Ok(None) => {}
                    Err(d) => errors.push(d),
                }
            }
        }
        Err(d) => errors.push(d),
    }

    for (origin, e) in renderer.compile_pending() {
        let hint = "see the Templates section of docs/state-repo.md; write \\{{ for a literal {{";
        let d = if let Some(key) = origin.key {
            // A step field: the error is at the field's value.
            Diagnostic::new(
                &origin.file,
                origin.pos,
                format!("`{key}` is not a valid template: {e}"),
            )
        } else {
            // A file under templates/: Handlebars knows the line and column.
            let pos = e.pos().map(|(line, column)| Pos { line, column });
            Diagnostic::new(
                &origin.file,
                pos,
                format!("template syntax error: {}", e.reason()),
            )
        };
        errors.push(d.hint(hint));
    }

    for inv in &inventories {
        for group in &inv.groups {
            for r in &group.roles {
                if !roles.contains_key(&r.name)
                    && !errors
                        .0
                        .iter()
                        .any(|d| d.file == format!("roles/{}.toml", r.name))
                {
                    let suggestion = closest(&r.name, roles.keys().map(String::as_str))
                        .map(|c| format!("did you mean \"{c}\"? "))
                        .unwrap_or_default();
                    errors.push(
                        Diagnostic::new(
                            &inv.file,
                            Some(r.pos),
                            format!(
                                "group `{}` names role `{}`, but roles/{}.toml does not exist",
                                group.name, r.name, r.name
                            ),
                        )
                        .hint(format!(
                            "{suggestion}create roles/{}.toml or fix the name",
                            r.name
                        )),
                    );
                }
            }
        }
    }

    let mut load_data = |dir: &str| -> BTreeMap<String, data::DataFile> {
        let mut out = BTreeMap::new();
        match list(source, dir, ".toml") {
            Ok(files) => {
                for (name, file) in files {
                    match read(source, &file) {
                        Ok(Some(text)) => match data::parse(&file, &text) {
                            Ok(d) => {
                                out.insert(name.to_lowercase(), d);
                            }
                            Err(d) => errors.push(d),
                        },
                        Ok(None) => {}
                        Err(d) => errors.push(d),
                    }
                }
            }
            Err(d) => errors.push(d),
        }
        out
    };
    let group_data = load_data("group_data");
    let host_data = load_data("host_data");

    let static_files = match walk(source, "files") {
        Ok(files) => files,
        Err(d) => {
            errors.push(d);
            Vec::new()
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(StateRepo {
        infra: infra.expect("infra.toml parsed, because errors would have returned above"),
        inventories,
        roles,
        group_data,
        host_data,
        renderer,
        static_files,
    })
}

/// The short, lower-case form of a host name: up to the first dot.
#[must_use]
pub fn short_name(hostname: &str) -> String {
    hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

impl StateRepo {
    /// What `hostname` runs: exactly one inventory file must list it.
    pub fn select(&self, hostname: &str) -> Result<Selection, Diagnostic> {
        let name = short_name(hostname);
        let matches: Vec<(&inventory::Inventory, Vec<&inventory::Group>)> = self
            .inventories
            .iter()
            .filter_map(|inv| inv.groups_of(&name).map(|g| (inv, g)))
            .collect();
        match matches.as_slice() {
            [] => {
                let files: Vec<&str> = self.inventories.iter().map(|i| i.file.as_str()).collect();
                Err(Diagnostic::new("inventory", None, format!("host `{name}` is in no inventory file (looked in {})", files.join(", ")))
                    .hint(format!("add \"{name}\" (or a glob matching it) to the hosts of a group, or pass the host's inventory name with --hostname")))
            }
            [(inv, groups)] => {
                let mut roles: Vec<String> = Vec::new();
                for group in groups {
                    for r in &group.roles {
                        if !roles.contains(&r.name) {
                            roles.push(r.name.clone());
                        }
                    }
                }
                Ok(Selection {
                    name,
                    env: inv.env.clone(),
                    inventory: inv.file.clone(),
                    groups: groups.iter().map(|g| g.name.clone()).collect(),
                    roles,
                })
            }
            [(first, g1), (second, g2), ..] => {
                let at = |groups: &[&inventory::Group]| {
                    groups
                        .iter()
                        .skip(1)
                        .flat_map(|g| &g.hosts)
                        .find(|p| p.matches(&name))
                        .map(|p| p.pos)
                };
                let second_at = at(g2).map_or_else(
                    || second.file.clone(),
                    |p| format!("{}:{}", second.file, p.line),
                );
                Err(Diagnostic::new(&first.file, at(g1), format!("host `{name}` is listed by two inventory files: {} and {second_at}", first.file))
                    .line_only()
                    .hint("a host belongs to one environment: remove it (or narrow the glob) in one of the files"))
            }
        }
    }

    /// The host names `check` covers by default: every exact name of every inventory, in
    /// file order. Hosts matched only by globs are checked with `--hostname`.
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for inv in &self.inventories {
            for p in inv.exact_hosts() {
                let name = p.pattern.to_lowercase();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// The data layers of a selection, in merge order.
    #[must_use]
    pub fn data_layers(&self, sel: &Selection) -> Vec<&data::DataFile> {
        let mut layers: Vec<&data::DataFile> = Vec::new();
        for g in &sel.groups {
            if let Some(d) = self.group_data.get(g) {
                layers.push(d);
            }
        }
        if let Some(d) = self.host_data.get(&sel.name) {
            layers.push(d);
        }
        layers
    }
}
