//! The `template` step: a file rendered from `templates/<source>` with the host's context.

use super::{Attrs, BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateStep {
    pub path: String,
    /// Path relative to `templates/`.
    pub source: String,
    /// The rendered content.
    pub content: String,
    pub attrs: Attrs,
    pub validate: Option<Vec<String>>,
    /// The content came from a secret: it is never shown, in a diff or anywhere else.
    pub sensitive: bool,
}

pub const KIND: KindSpec = KindSpec {
    name: "template",
    doc: "a file rendered from a Handlebars template under templates/",
    keys: &[
        Key {
            name: "path",
            shape: Shape::Path,
            required: true,
            doc: "absolute path of the file",
        },
        Key {
            name: "source",
            shape: Shape::RelPath,
            required: true,
            doc: "path under templates/ of the template",
        },
        super::OWNER,
        super::GROUP,
        Key {
            name: "mode",
            shape: Shape::Mode,
            required: false,
            doc: "octal mode; default: unchanged, \"0644\" when created",
        },
        super::VALIDATE,
    ],
    build,
};

fn build(f: &Rendered<'_>, ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let path = f.path("path")?;
    let source = f.rel_path("source", "templates")?;
    let content = ctx.render_template_file(&source).map_err(|mut d| {
        if d.file.is_empty() {
            f.file.clone_into(&mut d.file);
            d.line = Some(f.values["source"].1.line);
            d.column = Some(f.values["source"].1.column);
        }
        d
    })?;
    Ok(StepKind::Template(TemplateStep {
        path,
        source,
        content,
        attrs: Attrs::read(f)?,
        validate: f.opt_strings("validate")?,
        sensitive: false,
    }))
}
