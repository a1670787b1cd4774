//! Roles: `roles/<name>.toml` parsed into step definitions, checked without any host.
//!
//! Serde's tagged enums lose positions, so a step is read as a table of spanned keys and
//! values, its `type` picks the step type, and each key is checked against that type's
//! declared shape. Errors name the file, line and column of the offending key or value.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, LineIndex, Pos, closest};
use crate::render::{Origin, Renderer};
use crate::step::{self, COMMON_KEYS, Field, KindSpec};
use crate::when;

/// A validated role file.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub file: String,
    pub description: Option<String>,
    pub steps: Vec<StepDef>,
}

/// A step as written, validated without reference to any host.
#[derive(Debug, Clone)]
pub struct StepDef {
    pub id: String,
    /// Position of the `[[step]]` header.
    pub pos: Pos,
    /// Position of the `id` value.
    pub id_pos: Pos,
    pub kind: &'static KindSpec,
    pub role: String,
    pub file: String,
    pub description: Option<String>,
    pub when: Option<When>,
    pub requires: Vec<IdRef>,
    pub notify: Vec<IdRef>,
    pub for_each: Option<ForEach>,
    /// `watch = false`: the daemon does not watch this step's path for hand edits.
    pub watch: bool,
    pub fields: Vec<Field>,
}

/// A parsed `when` expression and where its text starts in the file.
#[derive(Debug, Clone)]
pub struct When {
    pub expr: when::Expr,
    pub pos: Pos,
}

impl When {
    /// The file position of a column within the expression.
    #[must_use]
    pub fn at(&self, column: usize) -> Pos {
        Pos {
            line: self.pos.line,
            column: self.pos.column + column.saturating_sub(1),
        }
    }
}

/// A step id named by `requires` or `notify`.
#[derive(Debug, Clone)]
pub struct IdRef {
    pub id: String,
    pub pos: Pos,
}

/// `for_each = "data.path"`.
#[derive(Debug, Clone)]
pub struct ForEach {
    pub path: String,
    pub pos: Pos,
}

type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSpec {
    description: Option<String>,
    #[serde(default)]
    step: Vec<Spanned<RawTable>>,
}

/// Parses a role file. Templates in step fields are compiled into `renderer`.
pub fn parse(
    name: &str,
    file: &str,
    text: &str,
    renderer: &mut Renderer,
) -> Result<Role, Vec<Diagnostic>> {
    let spec: RoleSpec = super::toml_file::parse(file, text).map_err(|d| vec![d])?;
    let index = LineIndex::new(text);
    let mut steps = Vec::with_capacity(spec.step.len());
    let mut errors = Vec::new();
    for table in spec.step {
        let pos = index.pos(table.span().start);
        let mut reader = StepReader {
            file,
            index: &index,
            renderer,
            errors: Vec::new(),
        };
        match reader.step(name, pos, table.into_inner()) {
            Some(def) if reader.errors.is_empty() => steps.push(def),
            _ => errors.append(&mut reader.errors),
        }
    }
    if errors.is_empty() {
        Ok(Role {
            name: name.to_owned(),
            file: file.to_owned(),
            description: spec.description,
            steps,
        })
    } else {
        Err(errors)
    }
}

struct StepReader<'a> {
    file: &'a str,
    index: &'a LineIndex<'a>,
    renderer: &'a mut Renderer,
    errors: Vec<Diagnostic>,
}

/// Where the text of a string value starts: one character after its opening quote(s).
fn text_pos(index: &LineIndex<'_>, value: &Spanned<toml::Value>) -> Pos {
    let mut pos = index.pos(value.span().start);
    pos.column += 1;
    pos
}

impl StepReader<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(self.file, Some(pos), message).hint(hint));
    }

    fn string(&mut self, key: &str, value: &Spanned<toml::Value>) -> Option<String> {
        if let toml::Value::String(s) = value.get_ref() {
            Some(s.clone())
        } else {
            let pos = self.index.pos(value.span().start);
            self.error(
                pos,
                format!("`{key}` must be a string"),
                format!("write {key} = \"...\""),
            );
            None
        }
    }

    fn ids(&mut self, key: &str, value: &Spanned<toml::Value>) -> Vec<IdRef> {
        let pos = self.index.pos(value.span().start);
        match value.get_ref() {
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(|i| i.as_str())
                .map(|id| IdRef {
                    id: id.to_owned(),
                    pos,
                })
                .collect(),
            _ => {
                self.error(
                    pos,
                    format!("`{key}` must be an array of step ids"),
                    format!("write {key} = [\"step-id\"]"),
                );
                Vec::new()
            }
        }
    }

    fn step(&mut self, role: &str, pos: Pos, table: RawTable) -> Option<StepDef> {
        let mut entries: Vec<(Spanned<String>, Spanned<toml::Value>)> = table.into_iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let get = |name: &str| entries.iter().find(|(k, _)| k.get_ref() == name);

        let Some((_, id_value)) = get("id") else {
            self.error(
                pos,
                "a step has no `id`",
                "add id = \"a-unique-name\" to this step",
            );
            return None;
        };
        let id_pos = self.index.pos(id_value.span().start);
        let id = self.string("id", id_value)?;
        if !valid_id(&id) {
            self.error(
                id_pos,
                format!("step id {id:?} is not allowed"),
                "ids start with a letter or digit and use letters, digits, `_`, `.` and `-`",
            );
            return None;
        }
        let Some((_, type_value)) = get("type") else {
            let kinds: Vec<&str> = step::KINDS.iter().map(|k| k.name).collect();
            self.error(
                pos,
                format!("step `{id}` has no `type`"),
                format!("add type = \"...\", one of: {}", kinds.join(", ")),
            );
            return None;
        };
        let type_name = self.string("type", type_value)?;
        let Some(kind) = step::kind(&type_name) else {
            let kinds: Vec<&str> = step::KINDS.iter().map(|k| k.name).collect();
            let suggestion = closest(&type_name, kinds.iter().copied())
                .map(|c| format!("did you mean \"{c}\"? "))
                .unwrap_or_default();
            let tpos = self.index.pos(type_value.span().start);
            self.error(
                tpos,
                format!("unknown step type {type_name:?} in step `{id}`"),
                format!("{suggestion}Step types: {}", kinds.join(", ")),
            );
            return None;
        };

        let mut def = StepDef {
            id,
            pos,
            id_pos,
            kind,
            role: role.to_owned(),
            file: self.file.to_owned(),
            description: None,
            when: None,
            requires: Vec::new(),
            notify: Vec::new(),
            for_each: None,
            watch: true,
            fields: Vec::new(),
        };
        for (key, value) in &entries {
            let key_pos = self.index.pos(key.span().start);
            match key.get_ref().as_str() {
                "id" | "type" => {}
                "description" => def.description = self.string("description", value),
                "requires" => def.requires = self.ids("requires", value),
                "notify" => def.notify = self.ids("notify", value),
                "watch" => {
                    if let toml::Value::Boolean(b) = value.get_ref() {
                        def.watch = *b;
                    } else {
                        let pos = self.index.pos(value.span().start);
                        self.error(
                            pos,
                            "`watch` must be true or false",
                            "write watch = false to stop the daemon reverting hand edits of this step's path at once",
                        );
                    }
                }
                "for_each" => {
                    if let Some(path) = self.string("for_each", value) {
                        let vpos = text_pos(self.index, value);
                        let root = path.split('.').next().unwrap_or_default();
                        if !["data", "facts", "host"].contains(&root)
                            || path.split('.').any(str::is_empty)
                        {
                            self.error(
                                vpos,
                                format!("for_each = {path:?} is not a path"),
                                "write a path such as for_each = \"data.users\"",
                            );
                        } else {
                            def.for_each = Some(ForEach { path, pos: vpos });
                        }
                    }
                }
                "when" => {
                    if let Some(text) = self.string("when", value) {
                        let vpos = text_pos(self.index, value);
                        match when::Expr::parse(&text) {
                            Ok(expr) => def.when = Some(When { expr, pos: vpos }),
                            Err(e) => {
                                let w = Pos {
                                    line: vpos.line,
                                    column: vpos.column + e.column.saturating_sub(1),
                                };
                                self.error(
                                    w,
                                    format!("`when` of step `{}`: {}", def.id, e.message),
                                    e.hint.clone().unwrap_or_else(|| {
                                        "see the `when` grammar in docs/state-repo.md".to_owned()
                                    }),
                                );
                            }
                        }
                    }
                }
                other => {
                    if let Some(spec) = kind.keys.iter().find(|k| k.name == other) {
                        let vpos = self.index.pos(value.span().start);
                        let file = self.file;
                        let renderer = &mut *self.renderer;
                        let mut n = 0;
                        let mut compile = |text: &str| -> Option<String> {
                            if !text.contains("{{") {
                                return None;
                            }
                            n += 1;
                            let name = format!("{file}:{}:{}#{n}", vpos.line, vpos.column);
                            // Compiled with all the others once every file is read; a
                            // syntax error is reported at this field then.
                            let origin = Origin {
                                file: file.to_owned(),
                                pos: Some(vpos),
                                key: Some(spec.name),
                            };
                            renderer.defer(&name, text, origin);
                            Some(name)
                        };
                        match step::fields::check_shape(spec, value.get_ref(), &mut compile) {
                            Ok(v) => def.fields.push(Field {
                                key: spec.name,
                                shape: spec.shape,
                                pos: vpos,
                                value: v,
                            }),
                            Err((message, hint)) => self.error(vpos, message, hint),
                        }
                    } else {
                        let allowed: Vec<&str> = COMMON_KEYS
                            .iter()
                            .copied()
                            .chain(kind.keys.iter().map(|k| k.name))
                            .collect();
                        let suggestion = closest(other, allowed.iter().copied())
                            .map(|c| format!("did you mean `{c}`? "))
                            .unwrap_or_default();
                        self.error(
                            key_pos,
                            format!("unknown key `{other}` in a {} step", kind.name),
                            format!(
                                "{suggestion}Keys of a {} step: {}",
                                kind.name,
                                allowed.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        for key in kind.keys.iter().filter(|k| k.required) {
            if get(key.name).is_none() {
                self.error(
                    pos,
                    format!("step `{}` has no `{}`", def.id, key.name),
                    format!(
                        "a {} step needs {} = ... ({})",
                        kind.name, key.name, key.doc
                    ),
                );
            }
        }
        if let (Some(w), None) = (&def.when, &def.for_each)
            && let Some((_, col)) = w
                .expr
                .paths()
                .into_iter()
                .find(|(p, _)| p == "item" || p.starts_with("item."))
        {
            let at = w.at(col);
            self.error(
                at,
                format!(
                    "`when` of step `{}` uses `item`, but the step has no for_each",
                    def.id
                ),
                "add for_each = \"data...\" or remove the `item` reference",
            );
        }
        Some(def)
    }
}

fn valid_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
