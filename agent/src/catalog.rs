//! The catalog: everything one host runs, rendered and validated before any step runs.
//!
//! Compiling a catalog selects the host's roles, merges its data, checks step ids and
//! their order (`requires` earlier, `notify` later, `changed()` earlier), expands
//! `for_each`, decides `when` where it can, and renders every field and template.
//! Invariant: a catalog with any error is never returned, so nothing of a commit that
//! fails to render can be applied.
//!
//! Secrets are never resolved here: a 1Password reference renders as a placeholder
//! (see `secrets`), allowed only in fields output never shows (file and template
//! content, command environment values). A step holding one is marked sensitive and
//! lists the references its plan must resolve.

use std::collections::{HashMap, HashSet};

use handlebars::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::diag::{Diagnostic, Diagnostics, Pos, closest};
use crate::facts::Facts;
use crate::render::describe;
use crate::secrets;
use crate::state_repo::role::{StepDef, When};
use crate::state_repo::{Selection, StateRepo, data};
use crate::step::{BuildCtx, FieldValue, Rendered, StepKind};

/// The rendered desired state of one host.
#[derive(Debug)]
pub struct Catalog {
    pub host: Selection,
    /// The template context (`data`, `facts`, `host`), for `when` left for run time.
    pub context: Value,
    pub steps: Vec<CatalogStep>,
}

/// One step (or one `for_each` instance of a step) of a catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogStep {
    /// The step's id as written.
    pub id: String,
    /// The `for_each` instance: an array index or a table key.
    pub instance: Option<String>,
    /// The instance's `item`, for `when` left for run time.
    #[serde(skip)]
    pub item: Option<Value>,
    pub role: String,
    pub file: String,
    pub line: usize,
    pub requires: Vec<String>,
    pub notify: Vec<String>,
    /// Whether the daemon watches the step's path for hand edits (`watch`).
    pub watch: bool,
    /// A condition left for run time: it reads `changed()` or facts, which earlier
    /// steps may change.
    #[serde(skip)]
    pub when: Option<When>,
    /// The rendered step, or `None` when it was skipped while compiling.
    pub desired: Option<StepKind>,
    /// Why the step was skipped while compiling.
    pub skipped: Option<String>,
    /// The 1Password references whose placeholders `desired` holds, each once: the
    /// engine resolves them right before planning the step.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

impl CatalogStep {
    /// `id`, or `id[instance]` for a `for_each` instance.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}[{i}]", self.id),
            None => self.id.clone(),
        }
    }
}

/// The `host` object of the template context.
fn host_json(sel: &Selection) -> Value {
    json!({
        "name": sel.name,
        "env": sel.env,
        "groups": sel.groups,
        "roles": sel.roles,
    })
}

/// The full template context of a host: `data`, `facts`, `host`. Data strings that
/// are 1Password references are placeholders in it.
#[must_use]
pub fn context(repo: &StateRepo, sel: &Selection, facts: &Facts) -> Value {
    let mut data = data::merge(repo.data_layers(sel)).to_json();
    secrets::placehold_data(&mut data);
    json!({
        "data": data,
        "facts": facts,
        "host": host_json(sel),
    })
}

/// Compiles the catalog of a selected host.
pub fn compile(repo: &StateRepo, sel: &Selection, facts: &Facts) -> Result<Catalog, Diagnostics> {
    let mut errors = Diagnostics::default();
    check_references(repo, sel, &mut errors);
    let base = context(repo, sel, facts);
    // The context is built once per host and moved, not copied, into Handlebars.
    let mut base_ctx = Context::from(base);

    let defs: Vec<&StepDef> = sel
        .roles
        .iter()
        .filter_map(|r| repo.roles.get(r))
        .flat_map(|r| &r.steps)
        .collect();
    check_ids(&defs, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut steps = Vec::with_capacity(defs.len());
    let mut skipped_ids: HashSet<&str> = HashSet::new();
    for def in defs {
        let entry = |instance: Option<String>,
                     desired: Option<(StepKind, Vec<String>)>,
                     skipped: Option<String>,
                     when: Option<When>,
                     item: Option<Value>| CatalogStep {
            id: def.id.clone(),
            instance,
            item,
            role: def.role.clone(),
            file: def.file.clone(),
            line: def.pos.line,
            requires: def.requires.iter().map(|r| r.id.clone()).collect(),
            notify: def.notify.iter().map(|r| r.id.clone()).collect(),
            watch: def.watch,
            when,
            secrets: desired.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
            desired: desired.map(|(kind, _)| kind),
            skipped,
        };
        if let Some(r) = def
            .requires
            .iter()
            .find(|r| skipped_ids.contains(r.id.as_str()))
        {
            // Its fields may use data that exists only when the required step runs.
            skipped_ids.insert(&def.id);
            steps.push(entry(
                None,
                None,
                Some(format!("requires `{}`, which is skipped", r.id)),
                None,
                None,
            ));
            continue;
        }
        let instances = match instances(def, base_ctx.data()) {
            Ok(i) => i,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let total = instances.len();
        let mut skipped_here = 0;
        for (label, item) in instances {
            // `item` is set in the host's context for each instance rather than copying
            // the whole context (all of the host's data) per instance.
            set_item(&mut base_ctx, item.as_ref());
            let ctx = &base_ctx;
            let ctx_json = ctx.data();
            let mut when_left = None;
            if let Some(w) = &def.when {
                match decide(w, ctx_json) {
                    Ok(Some(false)) => {
                        skipped_here += 1;
                        steps.push(entry(
                            label,
                            None,
                            Some(format!("when `{}` is false", w.expr.source())),
                            None,
                            None,
                        ));
                        continue;
                    }
                    Ok(Some(true)) => {}
                    Ok(None) => when_left = Some(w.clone()),
                    Err(e) => {
                        errors.push(
                            Diagnostic::new(
                                &def.file,
                                Some(w.at(e.column)),
                                format!("`when` of step `{}`: {}", def.id, e.message),
                            )
                            .hint(e.hint.unwrap_or_else(|| {
                                "see the `when` grammar in docs/state-repo.md".to_owned()
                            })),
                        );
                        continue;
                    }
                }
            }
            match render_step(repo, def, ctx, ctx_json) {
                Ok(built) => steps.push(entry(label, Some(built), None, when_left, item.clone())),
                Err(mut d) => {
                    // A message may quote a rendered value: show placeholders as what they are.
                    d.message = secrets::show(&d.message);
                    errors.push(d);
                }
            }
        }
        set_item(&mut base_ctx, None);
        if total > 0 && skipped_here == total {
            skipped_ids.insert(&def.id);
        }
    }
    if errors.is_empty() {
        Ok(Catalog {
            host: sel.clone(),
            context: std::mem::take(base_ctx.data_mut()),
            steps,
        })
    } else {
        Err(errors)
    }
}

/// Sets (or removes) `item` in a context.
fn set_item(ctx: &mut Context, item: Option<&Value>) {
    if let Some(map) = ctx.data_mut().as_object_mut() {
        match item {
            Some(item) => {
                map.insert("item".to_owned(), item.clone());
            }
            None => {
                map.remove("item");
            }
        }
    }
}

/// Unique ids; `requires` and `changed()` name earlier steps, `notify` later ones.
fn check_ids(defs: &[&StepDef], errors: &mut Diagnostics) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, def) in defs.iter().enumerate() {
        if let Some(&first) = index.get(def.id.as_str()) {
            let f = defs[first];
            errors.push(
                Diagnostic::new(
                    &def.file,
                    Some(def.id_pos),
                    format!(
                        "step id `{}` is used twice: here and at {}:{}",
                        def.id, f.file, f.id_pos.line
                    ),
                )
                .hint("step ids must be unique across all roles a host runs; rename one of them"),
            );
        } else {
            index.insert(&def.id, i);
        }
    }
    let ids: Vec<&str> = defs.iter().map(|d| d.id.as_str()).collect();
    let place = |j: usize| format!("{}:{}", defs[j].file, defs[j].pos.line);
    let unknown = |def: &StepDef, what: &str, id: &str, pos: Pos| {
        let suggestion = closest(id, ids.iter().copied())
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        Diagnostic::new(
            &def.file,
            Some(pos),
            format!(
                "step `{}` {what} `{id}`, which no role of this host defines",
                def.id
            ),
        )
        .hint(format!("{suggestion}name a step of a role this host runs"))
    };
    for (i, def) in defs.iter().enumerate() {
        for r in &def.requires {
            match index.get(r.id.as_str()) {
                None => errors.push(unknown(def, "requires", &r.id, r.pos)),
                Some(&j) if j >= i => errors.push(
                    Diagnostic::new(
                        &def.file,
                        Some(r.pos),
                        format!(
                            "step `{}` requires `{}`, which does not run before it ({})",
                            def.id,
                            r.id,
                            place(j)
                        ),
                    )
                    .hint(format!(
                        "`requires` names earlier steps: move `{}` before `{}`, or use notify",
                        r.id, def.id
                    )),
                ),
                Some(_) => {}
            }
        }
        for n in &def.notify {
            match index.get(n.id.as_str()) {
                None => errors.push(unknown(def, "notifies", &n.id, n.pos)),
                Some(&j) if j <= i => errors.push(
                    Diagnostic::new(
                        &def.file,
                        Some(n.pos),
                        format!(
                            "step `{}` notifies `{}`, which does not run after it ({})",
                            def.id,
                            n.id,
                            place(j)
                        ),
                    )
                    .hint(format!(
                        "`notify` names later steps: move `{}` after `{}`",
                        n.id, def.id
                    )),
                ),
                Some(_) => {}
            }
        }
        if let Some(w) = &def.when {
            for (id, col) in w.expr.changed_ids() {
                match index.get(id.as_str()) {
                    None => errors.push(unknown(def, "asks changed() of", &id, w.at(col))),
                    Some(&j) if j >= i => errors.push(
                        Diagnostic::new(&def.file, Some(w.at(col)), format!("step `{}` asks changed('{id}'), but `{id}` does not run before it ({})", def.id, place(j)))
                            .hint("changed() can only ask about steps that ran earlier"),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}

/// The `for_each` instances of a step: `(label, item)`; one unlabelled instance without it.
/// A `for_each` instance: its label and its `item`.
type Instance = (Option<String>, Option<Value>);

fn instances(def: &StepDef, ctx: &Value) -> Result<Vec<Instance>, Diagnostic> {
    let Some(fe) = &def.for_each else {
        return Ok(vec![(None, None)]);
    };
    match data::lookup(ctx, &fe.path) {
        Some(Value::Array(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| (Some(i.to_string()), Some(v.clone())))
            .collect()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| (Some(k.clone()), Some(json!({"key": k, "value": v}))))
            .collect()),
        Some(other) => Err(Diagnostic::new(
            &def.file,
            Some(fe.pos),
            format!(
                "for_each of step `{}`: `{}` is {other}, not an array or a table",
                def.id, fe.path
            ),
        )
        .hint("point for_each at an array or a table")),
        None => Err(Diagnostic::new(
            &def.file,
            Some(fe.pos),
            format!(
                "for_each of step `{}`: `{}` is not defined for this host",
                def.id, fe.path
            ),
        )
        .hint("add it to group_data/ or host_data/ (an empty array runs the step for nothing)")),
    }
}

/// Evaluates `when` now when its answer cannot change before the step runs: it reads
/// only data, host and item. Facts (installed packages, say) and `changed()` can be
/// changed by earlier steps, so such a condition is left for run time.
fn decide(w: &When, ctx: &Value) -> Result<Option<bool>, crate::when::Error> {
    let uses_changed = !w.expr.changed_ids().is_empty();
    let uses_facts = w
        .expr
        .paths()
        .iter()
        .any(|(p, _)| p == "facts" || p.starts_with("facts."));
    let value = w.expr.eval(ctx, &|_| false)?;
    if uses_changed || uses_facts {
        // Evaluated only to catch errors; the answer is left for run time.
        return Ok(None);
    }
    Ok(Some(value))
}

/// Data strings that start with `op://` but are not valid references: an error at the
/// line that wrote them.
fn check_references(repo: &StateRepo, sel: &Selection, errors: &mut Diagnostics) {
    for (path, value, source) in data::merge(repo.data_layers(sel)).leaves() {
        for problem in secrets::malformed_in_json(&value) {
            errors.push(
                Diagnostic::new(
                    &source.file,
                    Some(Pos {
                        line: source.line,
                        column: 1,
                    }),
                    format!("`{path}` is not a valid 1Password reference: {problem}"),
                )
                .line_only()
                .hint("write op://vault/item/field or op://vault/item/section/field, optionally with ?attribute=otp or ?ssh-format=openssh (see docs/secrets.md)"),
            );
        }
    }
}

struct StepBuild<'a> {
    repo: &'a StateRepo,
    ctx: &'a Context,
    /// References met in rendered template files.
    secrets: std::cell::RefCell<Vec<String>>,
}

impl BuildCtx for StepBuild<'_> {
    fn static_file_exists(&self, path: &str) -> Result<bool, Diagnostic> {
        Ok(self
            .repo
            .static_files
            .binary_search_by(|f| f.as_str().cmp(path))
            .is_ok())
    }

    fn render_template_file(&self, path: &str) -> Result<String, Diagnostic> {
        let name = format!("templates/{path}");
        if !self.repo.renderer.has_template(&name) {
            return Err(Diagnostic::new("", None, format!("{name} does not exist"))
                .hint("create the template under templates/ or fix `source`"));
        }
        let text = self.repo.renderer.render(&name, self.ctx).map_err(|e| {
            let (message, hint, at) = describe(&e);
            Diagnostic::new(
                &name,
                at.map(|(line, column)| Pos { line, column }),
                message,
            )
            .hint(hint)
        })?;
        self.secrets
            .borrow_mut()
            .extend(secrets::placeholders(&text).into_iter().map(str::to_owned));
        Ok(text)
    }
}

/// Where a step type may hold a secret: fields whose value output never shows.
fn secret_allowed(kind: &str, key: &str) -> bool {
    matches!(
        (kind, key),
        ("file", "content") | ("command", "environment")
    )
}

/// Makes a command's `environment` values that are references into placeholders.
fn placehold_environment(value: &mut Value) -> Result<(), String> {
    let mut strings: Vec<&mut String> = Vec::new();
    match value {
        Value::Object(map) => strings.extend(map.values_mut().filter_map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })),
        Value::Array(pairs) => {
            for pair in pairs {
                if let Some(Value::String(s)) = pair.as_array_mut().and_then(|p| p.get_mut(1)) {
                    strings.push(s);
                }
            }
        }
        _ => {}
    }
    for s in strings {
        if secrets::looks_like_reference(s) {
            let r = secrets::Reference::parse(s)?;
            *s = secrets::placeholder(&r);
        }
    }
    Ok(())
}

/// The error for a secret in a field that output shows.
fn secret_not_allowed(def: &StepDef, key: &str, reference: &str, pos: Pos) -> Diagnostic {
    let hint = match (def.kind.name, key) {
        ("command", "argv" | "shell" | "unless" | "onlyif" | "creates" | "cwd" | "user") => {
            "a command line is shown in output and visible to every user in /proc: pass the secret in `environment` (environment = { TOKEN = \"op://...\" }) and use $TOKEN from `shell`, or write it to a file with a `file` step (mode 0600) and let the program read that file".to_owned()
        }
        _ => "secrets may only be in the `content` of a file step, the text of a template (`{{secret \"op://...\"}}` or data), and the `environment` of a command step: those are never shown".to_owned(),
    };
    Diagnostic::new(
        &def.file,
        Some(pos),
        format!(
            "`{key}` of step `{}` uses the secret {reference}, but `{key}` of a {} step is shown in output",
            def.id, def.kind.name
        ),
    )
    .hint(hint)
}

/// Renders and builds a step; also returns the references it holds placeholders of.
fn render_step(
    repo: &StateRepo,
    def: &StepDef,
    ctx: &Context,
    ctx_json: &Value,
) -> Result<(StepKind, Vec<String>), Diagnostic> {
    let mut values = std::collections::BTreeMap::new();
    let mut references: Vec<String> = Vec::new();
    for field in &def.fields {
        let value =
            render_value(repo, &field.value, ctx, ctx_json).map_err(|(message, hint, at)| {
                let pos = match at {
                    Some((1, col)) => Pos {
                        line: field.pos.line,
                        column: field.pos.column + col,
                    },
                    Some((line, col)) => Pos {
                        line: field.pos.line + line - 1,
                        column: col,
                    },
                    None => field.pos,
                };
                Diagnostic::new(
                    &def.file,
                    Some(pos),
                    format!("`{}` of step `{}`: {message}", field.key, def.id),
                )
                .hint(hint)
            })?;
        let mut value = value;
        if def.kind.name == "command" && field.key == "environment" {
            placehold_environment(&mut value).map_err(|e| {
                Diagnostic::new(
                    &def.file,
                    Some(field.pos),
                    format!("`environment` of step `{}`: {e}", def.id),
                )
                .hint("write op://vault/item/field or op://vault/item/section/field (see docs/secrets.md)")
            })?;
        }
        let mut used = Vec::new();
        secrets::placeholders_in_json(&value, &mut used);
        if let Some(reference) = used.first() {
            if !secret_allowed(def.kind.name, field.key) {
                return Err(secret_not_allowed(def, field.key, reference, field.pos));
            }
            references.extend(used.iter().map(|r| (*r).to_owned()));
        }
        values.insert(field.key, (value, field.pos));
    }
    let rendered = Rendered {
        file: &def.file,
        step_pos: def.pos,
        values,
    };
    let build = StepBuild {
        repo,
        ctx,
        secrets: std::cell::RefCell::default(),
    };
    let mut kind = (def.kind.build)(&rendered, &build)?;
    references.extend(build.secrets.into_inner());
    if references.is_empty() {
        return Ok((kind, references));
    }
    match &mut kind {
        StepKind::File(step) => mark_sensitive(&mut step.sensitive, &mut step.attrs),
        StepKind::Template(step) => mark_sensitive(&mut step.sensitive, &mut step.attrs),
        _ => {}
    }
    references.sort();
    references.dedup();
    Ok((kind, references))
}

/// A file whose content holds a secret: never shown, and readable by its owner only
/// unless the step says otherwise.
fn mark_sensitive(sensitive: &mut bool, attrs: &mut crate::step::Attrs) {
    *sensitive = true;
    if attrs.mode.is_none() {
        attrs.mode = Some(crate::step::Mode(SECRET_FILE_MODE));
    }
}

/// The mode of a file holding a secret when its step gives none.
pub const SECRET_FILE_MODE: u32 = 0o600;

type RenderFailure = (String, String, Option<(usize, usize)>);

fn render_value(
    repo: &StateRepo,
    value: &FieldValue,
    ctx: &Context,
    ctx_json: &Value,
) -> Result<Value, RenderFailure> {
    Ok(match value {
        FieldValue::Text { text, template: None } => Value::String(text.clone()),
        FieldValue::Text { template: Some(name), .. } => {
            Value::String(repo.renderer.render(name, ctx).map_err(|e| describe(&e))?)
        }
        FieldValue::List(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(repo, i, ctx, ctx_json))
                .collect::<Result<_, _>>()?,
        ),
        FieldValue::Data(path) => data::lookup(&ctx_json["data"], path).cloned().ok_or_else(|| {
            (
                format!("`data.{path}` is not defined for this host"),
                "add it to group_data/ or host_data/ (`infra-agent data --hostname H` shows what is defined)".to_owned(),
                None,
            )
        })?,
        FieldValue::Bool(b) => Value::Bool(*b),
    })
}
