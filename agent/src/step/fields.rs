//! Step fields: their declared shapes, the static check at load time, and typed access
//! to their rendered values when a step is compiled for a host.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diag::{Diagnostic, Pos};

/// What a key of a step accepts. Strings are Handlebars templates everywhere; any key may
/// also be written `{ data = "path" }` to take a data value whatever its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string.
    Str,
    /// An absolute path (a string).
    Path,
    /// A path relative to `files/` or `templates/` (a string).
    RelPath,
    /// An array of strings (argv, lists of names).
    Strings,
    /// A string or an array of strings (one value or several).
    OneOrMany,
    /// An octal mode string such as "0644".
    Mode,
    /// One of the given strings.
    Choice(&'static [&'static str]),
    /// true or false.
    Bool,
    /// A table of strings, each rendered (environment variables).
    StrMap,
    /// A duration string: "30s", "5m", "1h", or seconds ("90").
    Duration,
    /// A non-negative integer (ids, counts, seconds); a string that renders to one is
    /// accepted too, so it can come from a template.
    Int,
}

impl Shape {
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Shape::Str => "a string".to_owned(),
            Shape::Path => "an absolute path".to_owned(),
            Shape::RelPath => "a relative path".to_owned(),
            Shape::Strings => "an array of strings".to_owned(),
            Shape::OneOrMany => "a string or an array of strings".to_owned(),
            Shape::Mode => "an octal mode string such as \"0644\"".to_owned(),
            Shape::Choice(c) => format!("one of {}", quote_list(c)),
            Shape::Bool => "true or false".to_owned(),
            Shape::StrMap => "a table of strings".to_owned(),
            Shape::Duration => "a duration string such as \"30s\", \"5m\" or \"1h\"".to_owned(),
            Shape::Int => "a non-negative integer".to_owned(),
        }
    }
}

pub(crate) fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One key a step type accepts.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
    /// One line for the reference documentation.
    pub doc: &'static str,
}

/// A field value after the static check: strings are kept as template text (with the
/// name of their compiled template when they contain `{{`).
#[derive(Debug, Clone)]
pub enum FieldValue {
    Text {
        text: String,
        template: Option<String>,
    },
    List(Vec<FieldValue>),
    Data(String),
    Bool(bool),
}

/// A field of a step as written, after the static check.
#[derive(Debug, Clone)]
pub struct Field {
    pub key: &'static str,
    pub shape: Shape,
    pub pos: Pos,
    pub value: FieldValue,
}

/// Checks a raw TOML value against its shape. Templates are handed to `compile`, which
/// registers them for compiling (their syntax errors are reported when the repository
/// is loaded) and returns the name to render them by.
pub fn check_shape(
    key: &Key,
    value: &toml::Value,
    compile: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<FieldValue, (String, String)> {
    use toml::Value as T;
    if let T::Table(t) = value
        && let (1, Some(T::String(path))) = (t.len(), t.get("data"))
    {
        if path.is_empty() || path.starts_with("data.") {
            return Err((
                format!("`{}`: {{ data = {path:?} }} is not a data path", key.name),
                "write the path inside data without the `data.` prefix, e.g. { data = \"packages.base\" }".to_owned(),
            ));
        }
        return Ok(FieldValue::Data(path.clone()));
    }
    let text = |s: &str, compile: &mut dyn FnMut(&str) -> Option<String>| {
        Ok::<_, (String, String)>(FieldValue::Text {
            text: s.to_owned(),
            template: compile(s),
        })
    };
    let wrong = |found: &str| {
        let hint = match (key.shape, value) {
            (Shape::Mode, T::Integer(_)) => {
                "a mode is an octal string: write mode = \"0644\"".to_owned()
            }
            (Shape::Duration, T::Integer(i)) => format!(
                "a duration is a string with a unit: write {} = \"{i}s\" (or \"5m\", \"1h\")",
                key.name
            ),
            _ => format!(
                "write {} as {}, or {{ data = \"path\" }}",
                key.name,
                key.shape.describe()
            ),
        };
        Err((
            format!(
                "`{}` must be {}, found {found}",
                key.name,
                key.shape.describe()
            ),
            hint,
        ))
    };
    match (key.shape, value) {
        (Shape::Str | Shape::Path | Shape::RelPath | Shape::OneOrMany, T::String(s)) => {
            text(s, compile)
        }
        (Shape::Mode, T::String(s)) => {
            if !s.contains("{{") {
                crate::step::Mode::parse(s).map_err(|e| {
                    (
                        format!("`{}`: {e}", key.name),
                        "a mode is 3 or 4 octal digits in a string, e.g. \"0644\" or \"1777\""
                            .to_owned(),
                    )
                })?;
            }
            text(s, compile)
        }
        (Shape::Choice(choices), T::String(s)) => {
            if !s.contains("{{") && !choices.contains(&s.as_str()) {
                return Err((
                    format!(
                        "`{}` is {s:?}, which is not {}",
                        key.name,
                        key.shape.describe()
                    ),
                    format!("write one of {}", quote_list(choices)),
                ));
            }
            text(s, compile)
        }
        (Shape::Strings | Shape::OneOrMany, T::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    T::String(s) => out.push(text(s, compile)?),
                    other => return wrong(&format!("an array containing {}", type_name(other))),
                }
            }
            Ok(FieldValue::List(out))
        }
        (Shape::Bool, T::Boolean(b)) => Ok(FieldValue::Bool(*b)),
        (Shape::Duration, T::String(s)) => {
            if !s.contains("{{") {
                parse_duration(s).map_err(|e| {
                    (
                        format!("`{}`: {e}", key.name),
                        "write a number with a unit: \"30s\", \"5m\", \"1h\"".to_owned(),
                    )
                })?;
            }
            text(s, compile)
        }
        // A table is kept as a list of [key, value] pairs (keys are not templates), so
        // rendering needs no new kind of value; `Rendered::opt_str_map` reads it back.
        (Shape::StrMap, T::Table(table)) => {
            let mut out = Vec::with_capacity(table.len());
            for (name, item) in table {
                match item {
                    T::String(s) => out.push(FieldValue::List(vec![
                        FieldValue::Text {
                            text: name.clone(),
                            template: None,
                        },
                        text(s, compile)?,
                    ])),
                    other => {
                        return Err((
                            format!(
                                "`{}.{name}` must be a string, found {}",
                                key.name,
                                type_name(other)
                            ),
                            format!("quote the value: {name} = \"...\""),
                        ));
                    }
                }
            }
            Ok(FieldValue::List(out))
        }
        (Shape::Int, T::Integer(i)) if *i >= 0 => Ok(FieldValue::Text {
            text: i.to_string(),
            template: None,
        }),
        (Shape::Int, T::String(s)) if s.contains("{{") || s.parse::<u64>().is_ok() => {
            text(s, compile)
        }
        (_, other) => wrong(&type_name(other)),
    }
}

/// Parses a duration: digits with an optional unit `s`, `m` or `h` (no unit: seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration (a number with the unit s, m or h)");
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!(
            "{text:?} is not a duration: it must be more than 0"
        ));
    }
    n.checked_mul(factor)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

fn type_name(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(_) => "a date".to_owned(),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// The fields of one step rendered for one host, with typed accessors.
#[derive(Debug)]
pub struct Rendered<'a> {
    pub file: &'a str,
    pub step_pos: Pos,
    pub values: BTreeMap<&'static str, (Value, Pos)>,
}

impl Rendered<'_> {
    fn err(&self, pos: Pos, message: String, hint: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.file, Some(pos), message).hint(hint)
    }

    fn missing(&self, key: &str) -> Diagnostic {
        Diagnostic::new(
            self.file,
            Some(self.step_pos),
            format!("missing key `{key}`"),
        )
        .hint(format!("add {key} = ... to this step"))
    }

    #[must_use]
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, Diagnostic> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::String(s), _)) => Ok(Some(s.clone())),
            Some((other, pos)) => Err(self.err(
                *pos,
                format!("`{key}` must be a string, but its data value is {other}"),
                "point { data = ... } at a string value",
            )),
        }
    }

    pub fn str(&self, key: &str) -> Result<String, Diagnostic> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional absolute path without `.` or `..` components.
    pub fn opt_path(&self, key: &str) -> Result<Option<String>, Diagnostic> {
        let Some(p) = self.opt_str(key)? else {
            return Ok(None);
        };
        let pos = self.values[key].1;
        if !p.starts_with('/') {
            return Err(self.err(
                pos,
                format!("`{key}` must be an absolute path, but renders to {p:?}"),
                "start the path with /",
            ));
        }
        if p.split('/').any(|c| c == "." || c == "..") {
            return Err(self.err(
                pos,
                format!("`{key}` renders to {p:?}, which contains . or .."),
                "write the path without . and .. components",
            ));
        }
        Ok(Some(p))
    }

    pub fn path(&self, key: &str) -> Result<String, Diagnostic> {
        self.opt_path(key)?.ok_or_else(|| self.missing(key))
    }

    /// A path relative to `files/` or `templates/`, which must stay inside it.
    pub fn rel_path(&self, key: &str, dir: &str) -> Result<String, Diagnostic> {
        let p = self.str(key)?;
        let pos = self.values[key].1;
        if p.is_empty()
            || p.starts_with('/')
            || p.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(self.err(
                pos,
                format!("`{key}` renders to {p:?}, which is not a path inside {dir}/"),
                format!("write it relative to {dir}/, e.g. {key} = \"motd\""),
            ));
        }
        Ok(p)
    }

    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>, Diagnostic> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::Array(items), pos)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        *pos,
                        format!("`{key}` must be an array of strings, but contains {other}"),
                        "point { data = ... } at an array of strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some((other, pos)) => Err(self.err(
                *pos,
                format!("`{key}` must be an array of strings, but its data value is {other}"),
                "point { data = ... } at an array of strings",
            )),
        }
    }

    /// An optional string or array of strings, as a list.
    pub fn opt_one_or_many(&self, key: &str) -> Result<Option<Vec<String>>, Diagnostic> {
        match self.values.get(key) {
            Some((Value::String(s), _)) => Ok(Some(vec![s.clone()])),
            Some((Value::Array(_), _)) | None => self.opt_strings(key),
            Some((other, pos)) => Err(self.err(
                *pos,
                format!(
                    "`{key}` must be a string or an array of strings, but its data value is {other}"
                ),
                "point { data = ... } at a string or an array of strings",
            )),
        }
    }

    pub fn opt_mode(&self, key: &str) -> Result<Option<crate::step::Mode>, Diagnostic> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::String(s), pos)) => crate::step::Mode::parse(s).map(Some).map_err(|e| {
                self.err(
                    *pos,
                    format!("`{key}`: {e}"),
                    "a mode is 3 or 4 octal digits in a string, e.g. \"0644\"",
                )
            }),
            Some((other, pos)) => Err(self.err(
                *pos,
                format!("`{key}` must be an octal mode string, but its data value is {other}"),
                "a mode is an octal string: write \"0644\" in the data",
            )),
        }
    }

    /// One of the allowed strings, or `default` when absent.
    pub fn choice(
        &self,
        key: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, Diagnostic> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(default);
        };
        choices.iter().copied().find(|c| *c == s).ok_or_else(|| {
            self.err(
                self.values[key].1,
                format!(
                    "`{key}` is {s:?}, which is not one of {}",
                    quote_list(choices)
                ),
                format!("write one of {}", quote_list(choices)),
            )
        })
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Diagnostic> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::Bool(b), _)) => Ok(Some(*b)),
            Some((other, pos)) => Err(self.err(
                *pos,
                format!("`{key}` must be true or false, but its data value is {other}"),
                "point { data = ... } at a boolean",
            )),
        }
    }

    /// An optional non-negative integer that fits in a `u32` (uids, gids): written as
    /// a TOML integer, a string that renders to digits, or a data number.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, Diagnostic> {
        let Some((value, pos)) = self.values.get(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::String(s) => s.trim().parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.err(
                *pos,
                format!("`{key}` must be an integer from 0 to 4294967295, but is {value}"),
                format!("write {key} = 1001"),
            )
        })
    }

    /// An optional table of strings: as written in the step (pairs, see `check_shape`)
    /// or a data table whose values are all strings. Sorted by key.
    pub fn opt_str_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, Diagnostic> {
        let Some((value, pos)) = self.values.get(key) else {
            return Ok(None);
        };
        let bad = |what: String| {
            self.err(
                *pos,
                format!("`{key}` must be a table of strings, but {what}"),
                "point { data = ... } at a table whose values are strings",
            )
        };
        let mut map = BTreeMap::new();
        match value {
            Value::Object(table) => {
                for (name, v) in table {
                    let Value::String(s) = v else {
                        return Err(bad(format!("`{name}` is {v}")));
                    };
                    map.insert(name.clone(), s.clone());
                }
            }
            Value::Array(pairs) => {
                for pair in pairs {
                    let Some([Value::String(k), Value::String(v)]) =
                        pair.as_array().map(Vec::as_slice)
                    else {
                        return Err(bad(format!("its data value is {value}")));
                    };
                    map.insert(k.clone(), v.clone());
                }
            }
            other => return Err(bad(format!("its data value is {other}"))),
        }
        Ok(Some(map))
    }

    /// An optional duration ("30s", "5m", "1h", "90").
    pub fn opt_duration(&self, key: &str) -> Result<Option<std::time::Duration>, Diagnostic> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        parse_duration(&s).map(Some).map_err(|e| {
            self.err(
                self.values[key].1,
                format!("`{key}`: {e}"),
                "write a number with a unit: \"30s\", \"5m\", \"1h\"",
            )
        })
    }

    /// Fails when a key is present that only makes sense in another state.
    pub fn forbid(&self, keys: &[&str], why: &str) -> Result<(), Diagnostic> {
        for key in keys {
            if let Some((_, pos)) = self.values.get(key) {
                return Err(self.err(
                    *pos,
                    format!("`{key}` is not allowed {why}"),
                    format!("remove `{key}`"),
                ));
            }
        }
        Ok(())
    }
}
