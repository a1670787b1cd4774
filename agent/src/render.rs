//! Handlebars as the state repository uses it: strict, no HTML escaping, strict block
//! helpers, and the helpers `default`, `has`, `join`, `eq`, `ne` and `secret` (which
//! renders a placeholder for a 1Password reference, see `secrets`).

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender, Output, RenderContext,
    RenderError, RenderErrorReason, Renderable, ScopedJson,
};
use serde_json::Value;

/// A registry of compiled templates: template files and the template strings of step fields.
#[derive(Debug)]
pub struct Renderer {
    hb: Handlebars<'static>,
    /// Templates that are only text and `{{path}}` substitutions, the shape of nearly
    /// every step field (`/home/{{data.admin.user}}/.zshrc`). Handlebars' parser costs
    /// far more than rendering them, and an agent run compiles every field of the
    /// repository, so these are rendered here with the same strict rules and output.
    simple: std::collections::HashMap<String, Vec<Piece>>,
    /// Templates handed to [`Renderer::defer`], compiled together by
    /// [`Renderer::compile_pending`].
    pending: Vec<(String, String, Origin)>,
}

/// Where a deferred template was written, to report its syntax errors there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// The position of a step field's value; `None` for a file under `templates/`.
    pub pos: Option<crate::diag::Pos>,
    /// The step field's key.
    pub key: Option<&'static str>,
}

/// A part of a simple template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A dotted path from a context root, with its 1-based line and column.
    Var {
        path: String,
        line: usize,
        column: usize,
    },
}

/// Splits `text` into pieces when it is a simple template: text and `{{ root.a.b }}`
/// with `root` one of the context roots and names made of letters, digits, `_` and `-`.
/// Anything else (blocks, helpers, escapes, `this`, `../`, numeric segments) is `None`
/// and goes to Handlebars.
fn simple_pieces(text: &str) -> Option<Vec<Piece>> {
    if text.contains("\\{{") || text.contains("{{{") {
        return None;
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let path = after[..close].trim();
        let mut segments = path.split('.');
        let root = segments.next()?;
        if !["data", "facts", "host", "item"].contains(&root)
            || !path.split('.').all(|seg| {
                seg.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        {
            return None;
        }
        let offset = consumed + open;
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        pieces.push(Piece::Var {
            path: path.to_owned(),
            line,
            column,
        });
        let used = open + 2 + close + 2;
        consumed += used;
        rest = &rest[used..];
    }
    if rest.contains("}}") {
        return None;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Some(pieces)
}

fn render_simple(pieces: &[Piece], ctx: &Context) -> Result<String, Box<RenderError>> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var { path, line, column } => {
                let value = path.split('.').try_fold(ctx.data(), |v, seg| v.get(seg));
                let Some(v) = value else {
                    let mut e: RenderError =
                        RenderErrorReason::MissingVariable(Some(path.clone())).into();
                    e.line_no = Some(*line);
                    e.column_no = Some(*column);
                    return Err(Box::new(e));
                };
                out.push_str(&v.render());
            }
        }
    }
    Ok(out)
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    #[must_use]
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("if", Box::new(StrictBlock { positive: true }));
        hb.register_helper("unless", Box::new(StrictBlock { positive: false }));
        hb.register_helper("default", Box::new(ValueHelper(default_helper)));
        hb.register_helper("has", Box::new(ValueHelper(has_helper)));
        hb.register_helper("join", Box::new(ValueHelper(join_helper)));
        hb.register_helper("eq", Box::new(ValueHelper(eq_helper)));
        hb.register_helper("ne", Box::new(ValueHelper(ne_helper)));
        hb.register_helper("secret", Box::new(ValueHelper(secret_helper)));
        Self {
            hb,
            simple: std::collections::HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Registers a template to be compiled by [`Renderer::compile_pending`]. Simple
    /// templates need no compiling and are ready at once.
    pub fn defer(&mut self, name: &str, text: &str, origin: Origin) {
        if let Some(pieces) = simple_pieces(text) {
            self.simple.insert(name.to_owned(), pieces);
        } else {
            self.pending
                .push((name.to_owned(), text.to_owned(), origin));
        }
    }

    /// Compiles the deferred templates, on every processor: Handlebars' parser is the
    /// largest cost of loading a repository. Returns the templates that do not compile.
    pub fn compile_pending(&mut self) -> Vec<(Origin, Box<handlebars::TemplateError>)> {
        type Compiled = (
            String,
            Origin,
            Result<handlebars::Template, handlebars::TemplateError>,
        );
        let pending = std::mem::take(&mut self.pending);
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        let chunk = pending.len().div_ceil(threads).max(4);
        let compile = |part: &[(String, String, Origin)]| -> Vec<Compiled> {
            part.iter()
                .map(|(name, text, origin)| {
                    let template = handlebars::Template::compile_with_name(text, name.clone());
                    (name.clone(), origin.clone(), template)
                })
                .collect()
        };
        let compiled: Vec<Compiled> = if pending.len() <= chunk {
            compile(&pending)
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = pending
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || compile(part)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("compiling a template does not panic"))
                    .collect()
            })
        };
        let mut errors = Vec::new();
        for (name, origin, template) in compiled {
            match template {
                Ok(t) => self.hb.register_template(&name, t),
                Err(e) => errors.push((origin, Box::new(e))),
            }
        }
        errors
    }

    /// Renders a registered template.
    pub fn render(&self, name: &str, ctx: &Context) -> Result<String, Box<RenderError>> {
        if let Some(pieces) = self.simple.get(name) {
            return render_simple(pieces, ctx);
        }
        self.hb.render_with_context(name, ctx).map_err(Box::new)
    }

    #[must_use]
    pub fn has_template(&self, name: &str) -> bool {
        self.simple.contains_key(name) || self.hb.has_template(name)
    }
}

/// A render error in words a user can act on, and where in the template it happened.
#[must_use]
pub fn describe(e: &RenderError) -> (String, String, Option<(usize, usize)>) {
    let at = e.line_no.zip(e.column_no);
    let (message, hint) = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => (
            format!("`{path}` is not defined for this host"),
            format!(
                "add it to group_data/ or host_data/, or write {{{{default {path} \"...\"}}}} or {{{{#if (has ...)}}}} for optional data (`infra-agent data --hostname H` shows what is defined)"
            ),
        ),
        RenderErrorReason::MissingVariable(None) => (
            "a variable is not defined for this host".to_owned(),
            "check the names used at this position against `infra-agent data --hostname H`".to_owned(),
        ),
        RenderErrorReason::ParamNotFoundForIndex(helper, i) => (
            format!("helper `{helper}` is missing its argument {}", i + 1),
            format!("see the helpers in docs/state-repo.md for how to call `{helper}`"),
        ),
        RenderErrorReason::HelperNotFound(name) => (
            format!("`{name}` is not a helper or a defined value"),
            "helpers are default, has, join, eq, ne, secret and the Handlebars built-ins; values start with data., facts., host. or item.".to_owned(),
        ),
        other => (other.to_string(), "see the Templates section of docs/state-repo.md".to_owned()),
    };
    (message, hint, at)
}

/// A helper that computes a value from its parameters.
struct ValueHelper(fn(&Helper<'_>) -> Result<Value, RenderError>);

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }
}

fn missing(h: &Helper<'_>, index: usize) -> RenderError {
    match h.param(index) {
        Some(p) => match p.relative_path() {
            Some(path) => RenderErrorReason::MissingVariable(Some(path.clone())).into(),
            None => RenderErrorReason::MissingVariable(None).into(),
        },
        None => RenderErrorReason::ParamNotFoundForIndex(static_name(h.name()), index).into(),
    }
}

fn static_name(name: &str) -> &'static str {
    [
        "if", "unless", "default", "has", "join", "eq", "ne", "secret",
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap_or("helper")
}

/// The value of parameter `index`, failing when it is absent or names a missing value.
fn param<'a>(h: &'a Helper<'_>, index: usize) -> Result<&'a Value, RenderError> {
    match h.param(index) {
        Some(p) if !p.is_value_missing() => Ok(p.value()),
        _ => Err(missing(h, index)),
    }
}

fn truthy(v: &Value, include_zero: bool) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => include_zero || n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// `if` (positive) and `unless`: like the built-ins, but a missing value is an error.
struct StrictBlock {
    positive: bool,
}

impl HelperDef for StrictBlock {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = param(h, 0)?;
        let include_zero = h
            .hash_get("includeZero")
            .is_some_and(|v| v.value().as_bool() == Some(true));
        let branch = if truthy(value, include_zero) == self.positive {
            h.template()
        } else {
            h.inverse()
        };
        match branch {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `{{default value "fallback"}}`: the value, or the fallback when it is missing or null.
fn default_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let fallback = param(h, 1)?;
    let value = match h.param(0) {
        Some(p) if !p.is_value_missing() && !p.value().is_null() => p.value().clone(),
        Some(_) => fallback.clone(),
        None => return Err(missing(h, 0)),
    };
    Ok(value)
}

/// `{{has object "key.path"}}`: whether the object has that (dotted) key.
fn has_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let object = param(h, 0)?;
    let key = param(h, 1)?;
    let Some(key) = key.as_str() else {
        return Err(RenderErrorReason::InvalidParamType("has: the key must be a string").into());
    };
    Ok(Value::Bool(
        crate::state_repo::data::lookup(object, key).is_some(),
    ))
}

/// `{{join list ", "}}`: the elements of an array joined by a separator.
fn join_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let list = param(h, 0)?;
    let sep = param(h, 1)?;
    let (Value::Array(items), Some(sep)) = (list, sep.as_str()) else {
        return Err(
            RenderErrorReason::InvalidParamType("join: an array and a separator string").into(),
        );
    };
    let parts: Vec<String> = items.iter().map(JsonRender::render).collect();
    Ok(Value::String(parts.join(sep)))
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn eq_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    Ok(Value::Bool(json_eq(param(h, 0)?, param(h, 1)?)))
}

fn ne_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    Ok(Value::Bool(!json_eq(param(h, 0)?, param(h, 1)?)))
}

/// `{{secret "op://vault/item/field"}}`: the placeholder of a 1Password reference,
/// replaced by the value only when the step is planned on the host. A data value that
/// is a reference is a placeholder already and passes through.
fn secret_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0)?;
    let Some(text) = value.as_str() else {
        return Err(RenderErrorReason::Other(
            "`secret` takes a reference string such as \"op://vault/item/field\"".to_owned(),
        )
        .into());
    };
    if crate::secrets::is_placeholder(text) {
        return Ok(Value::String(text.to_owned()));
    }
    crate::secrets::Reference::parse(text)
        .map(|r| Value::String(crate::secrets::placeholder(&r)))
        .map_err(|e| RenderErrorReason::Other(format!("`secret`: {e}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A renderer holding `text` as template "t", registered the way the loader does.
    fn with_template(text: &str) -> Result<Renderer, String> {
        let mut r = Renderer::new();
        let origin = Origin {
            file: "t".to_owned(),
            pos: None,
            key: None,
        };
        r.defer("t", text, origin);
        match r.compile_pending().pop() {
            Some((_, e)) => Err(e.to_string()),
            None => Ok(r),
        }
    }

    fn render(template: &str) -> Result<String, String> {
        let r = with_template(template)?;
        let ctx = Context::wraps(json!({
            "data": {"a": "x=y&<b>", "list": ["one", "two"], "n": 0, "nested": {"k": {"v": 1}}, "nothing": null},
        }))
        .unwrap();
        r.render("t", &ctx).map_err(|e| describe(&e).0)
    }

    /// The fast path for simple templates renders exactly what Handlebars renders, and
    /// fails where Handlebars fails, at the same place with the same message.
    #[test]
    fn simple_templates_match_handlebars() {
        let ctx = Context::wraps(json!({
            "data": {"a": "x=y&<b>", "n": 8080, "f": 1.5, "t": true, "z": null, "list": [1, "two"],
                     "obj": {"k": "v"}, "dash-key": "d", "u_s": "u"},
            "item": {"name": "alice"},
        }))
        .unwrap();
        let templates = [
            "plain text",
            "/home/{{data.a}}/x",
            "{{ data.n }}:{{data.f}} {{data.t}} [{{data.z}}]",
            "{{data.list}} {{data.obj}}",
            "{{data.dash-key}}{{data.u_s}}",
            "line1\n{{item.name}}\nline3 {{data.missing}}",
            "a {{data.obj.nope}}",
        ];
        for t in templates {
            assert!(simple_pieces(t).is_some(), "{t} should take the fast path");
            let fast = with_template(t).unwrap();
            let mut slow = Renderer::new();
            slow.hb.register_template_string("t", t).unwrap();
            let (a, b) = (fast.render("t", &ctx), slow.render("t", &ctx));
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{t}"),
                (Err(a), Err(b)) => assert_eq!(describe(&a), describe(&b), "{t}"),
                (a, b) => panic!("{t}: fast {a:?} vs handlebars {b:?}"),
            }
        }
        for t in [
            "{{#if data.a}}x{{/if}}",
            "{{default data.a \"b\"}}",
            "\\{{data.a}}",
            "{{this}}",
            "{{data.list.0}}",
            "{{../data}}",
            "a }} b",
            "{{{data.a}}}",
        ] {
            assert!(simple_pieces(t).is_none(), "{t} must go to Handlebars");
        }
    }

    #[test]
    fn helpers_and_strictness() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("{{data.a}}", Ok("x=y&<b>")),
            ("{{data.missing}}", Err("`data.missing` is not defined")),
            (
                "{{#if data.missing}}y{{/if}}",
                Err("`data.missing` is not defined"),
            ),
            (
                "{{#unless data.missing}}y{{/unless}}",
                Err("`data.missing` is not defined"),
            ),
            (
                "{{#each data.missing}}y{{/each}}",
                Err("`data.missing` is not defined"),
            ),
            (
                "{{#with data.missing}}y{{/with}}",
                Err("`data.missing` is not defined"),
            ),
            ("{{#if data.a}}y{{else}}n{{/if}}", Ok("y")),
            ("{{#if data.n}}y{{else}}n{{/if}}", Ok("n")),
            ("{{#if data.n includeZero=true}}y{{else}}n{{/if}}", Ok("y")),
            ("{{#unless data.n}}u{{/unless}}", Ok("u")),
            ("{{#if data.n}}a{{else if data.a}}b{{/if}}", Ok("b")),
            ("{{default data.missing \"fb\"}}", Ok("fb")),
            ("{{default data.nothing \"fb\"}}", Ok("fb")),
            ("{{default data.a \"fb\"}}", Ok("x=y&<b>")),
            (
                "{{#if (has data \"nested.k.v\")}}y{{else}}n{{/if}}",
                Ok("y"),
            ),
            ("{{#if (has data \"nested.x\")}}y{{else}}n{{/if}}", Ok("n")),
            ("{{join data.list \", \"}}", Ok("one, two")),
            (
                "{{join data.missing \", \"}}",
                Err("`data.missing` is not defined"),
            ),
            ("{{#if (eq data.a \"x=y&<b>\")}}y{{/if}}", Ok("y")),
            ("{{#if (ne data.n 0)}}y{{else}}n{{/if}}", Ok("n")),
            (
                "{{#if (eq data.missing 1)}}y{{/if}}",
                Err("`data.missing` is not defined"),
            ),
            ("{{#each data.list}}{{this}};{{/each}}", Ok("one;two;")),
        ];
        for (template, want) in cases {
            let got = render(template);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{template}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{template}: {g}"),
                _ => panic!("{template}: want {want:?}, got {got:?}"),
            }
        }
    }
}
