//! The `file` step: a file with inline content or a copy of `files/<source>`.

use super::{Attrs, BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStep {
    pub path: String,
    pub state: Presence,
    pub content: Option<FileContent>,
    pub attrs: Attrs,
    pub validate: Option<Vec<String>>,
    /// The content came from a secret: it is never shown, in a diff or anywhere else.
    pub sensitive: bool,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileContent {
    Inline(String),
    /// A path relative to `files/`.
    Source(String),
}

pub const KIND: KindSpec = KindSpec {
    name: "file",
    doc: "a file with inline content or a copy of a file under files/",
    keys: &[
        Key {
            name: "path",
            shape: Shape::Path,
            required: true,
            doc: "absolute path of the file",
        },
        Key {
            name: "content",
            shape: Shape::Str,
            required: false,
            doc: "the file's content (exactly one of content and source)",
        },
        Key {
            name: "source",
            shape: Shape::RelPath,
            required: false,
            doc: "path under files/ to copy (exactly one of content and source)",
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
        super::STATE,
    ],
    build,
};

fn build(f: &Rendered<'_>, ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let path = f.path("path")?;
    let state = super::presence(f)?;
    if state == Presence::Absent {
        f.forbid(
            &["content", "source", "owner", "group", "mode", "validate"],
            "with state = \"absent\"",
        )?;
        return Ok(StepKind::File(FileStep {
            path,
            state,
            content: None,
            attrs: Attrs::default(),
            validate: None,
            sensitive: false,
        }));
    }
    let content = match (f.has("content"), f.has("source")) {
        (true, false) => FileContent::Inline(f.str("content")?),
        (false, true) => {
            let source = f.rel_path("source", "files")?;
            if !ctx.static_file_exists(&source)? {
                return Err(Diagnostic::new(
                    f.file,
                    Some(f.values["source"].1),
                    format!("files/{source} does not exist"),
                )
                .hint("add the file under files/ or fix `source`"));
            }
            FileContent::Source(source)
        }
        _ => {
            return Err(Diagnostic::new(
                f.file,
                Some(f.step_pos),
                "a file step needs exactly one of `content` and `source`",
            )
            .hint("write content = \"...\" for inline text, or source = \"name\" for files/name"));
        }
    };
    Ok(StepKind::File(FileStep {
        path,
        state,
        content: Some(content),
        attrs: Attrs::read(f)?,
        validate: f.opt_strings("validate")?,
        sensitive: false,
    }))
}
