//! The `download` step: a file fetched from an http(s) URL, checked against its
//! sha256, and written to `path` with a mode and owner; or one member of a `.tar.gz`
//! archive so fetched (`extract`).

use std::time::Duration;

use super::{Attrs, BuildCtx, GROUP, Key, KindSpec, OWNER, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// How long a download may take when the step sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_mins(10);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadStep {
    pub url: String,
    /// Lower-case hex SHA-256 of what `url` serves (the archive, with `extract`).
    pub sha256: String,
    pub path: String,
    /// The member of the `.tar.gz` archive written to `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
    #[serde(flatten)]
    pub attrs: Attrs,
    #[serde(with = "super::timeout_serde")]
    pub timeout: Duration,
}

pub const KIND: KindSpec = KindSpec {
    name: "download",
    doc: "a file downloaded from an http(s) URL and checked against its sha256, or one member of a .tar.gz so downloaded",
    keys: &[
        Key {
            name: "url",
            shape: Shape::Str,
            required: true,
            doc: "http:// or https:// URL of the file (of the archive, with `extract`)",
        },
        Key {
            name: "sha256",
            shape: Shape::Str,
            required: true,
            doc: "SHA-256 of what the URL serves: 64 hex digits (`sha256sum FILE`)",
        },
        Key {
            name: "path",
            shape: Shape::Path,
            required: true,
            doc: "absolute path the file is written to",
        },
        Key {
            name: "extract",
            shape: Shape::Str,
            required: false,
            doc: "the URL is a .tar.gz: write this member of it (as `tar -tzf` lists it) to `path`",
        },
        Key {
            name: "mode",
            shape: Shape::Mode,
            required: false,
            doc: "octal mode string; default: unchanged, 0644 when created",
        },
        OWNER,
        GROUP,
        Key {
            name: "timeout",
            shape: Shape::Duration,
            required: false,
            doc: "give up a download (and fail the step) after this long; default \"10m\"",
        },
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let at = |key: &str| f.values.get(key).map_or(f.step_pos, |(_, pos)| *pos);
    let err = |key: &str, message: String, hint: &str| {
        Diagnostic::new(f.file, Some(at(key)), message).hint(hint)
    };
    let url = f.str("url")?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || url.contains(char::is_whitespace)
    {
        return Err(err(
            "url",
            format!("`url` is {url:?}: only http:// and https:// URLs are supported"),
            "write the full URL, e.g. url = \"https://example.org/tool.tar.gz\"",
        ));
    }
    let sha256 = f.str("sha256")?.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err(
            "sha256",
            format!("`sha256` is {sha256:?}, which is not 64 hexadecimal digits"),
            "write the first field of `sha256sum FILE` for the file the URL serves",
        ));
    }
    let path = f.path("path")?;
    if path.ends_with('/') {
        return Err(err(
            "path",
            format!("`path` is {path:?}, a directory; a download writes a file"),
            "write the file's full path, e.g. path = \"/usr/local/bin/starship\"",
        ));
    }
    let extract = f.opt_str("extract")?;
    if let Some(member) = &extract
        && (member.is_empty()
            || member.starts_with('-')
            || member.ends_with('/')
            || member.split('/').any(|c| c == ".."))
    {
        return Err(err(
            "extract",
            format!("`extract` is {member:?}, which is not a file inside the archive"),
            "write the member's path as `tar -tzf ARCHIVE` lists it, e.g. extract = \"starship\"",
        ));
    }
    Ok(StepKind::Download(DownloadStep {
        url,
        sha256,
        path,
        extract,
        attrs: Attrs::read(f)?,
        timeout: f.opt_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
    }))
}
