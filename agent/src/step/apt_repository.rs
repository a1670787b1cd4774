//! The `apt_repository` step: an apt repository as a deb822 `.sources` entry under
//! `/etc/apt/sources.list.d/` and the keyring that signs it under `/etc/apt/keyrings/`.

use super::{BuildCtx, Key, KindSpec, Presence, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

/// The desired state of an `apt_repository` step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AptRepositoryStep {
    /// File stem of `/etc/apt/sources.list.d/NAME.sources` and the keyring.
    pub name: String,
    pub state: Presence,
    /// Empty when absent.
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    /// Empty when every suite is an exact path (ends with `/`).
    pub components: Vec<String>,
    /// Empty: every architecture apt is configured for.
    pub architectures: Vec<String>,
    /// Where the keyring comes from; `None` only when absent.
    pub key: Option<KeySource>,
}

/// Where a repository's keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// A path relative to `files/`.
    File(String),
    /// An `http(s)://` URL and the lower-case hex SHA-256 of what it serves.
    Url { url: String, sha256: String },
    /// No key: a local repository (`file:` URIs only) apt reads without checking
    /// signatures (`trusted = true`; the entry says `Trusted: yes`).
    Trusted,
}

/// Where `.sources` entries live.
pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
/// Where keyrings live (Debian's documented place for local keyrings).
pub const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

impl AptRepositoryStep {
    /// `/etc/apt/sources.list.d/NAME.sources`.
    #[must_use]
    pub fn sources_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.sources", self.name)
    }

    /// `/etc/apt/keyrings/NAME.EXT`; `ext` is `asc` (armored) or `gpg` (binary).
    #[must_use]
    pub fn keyring_path(&self, ext: &str) -> String {
        format!("{KEYRINGS_DIR}/{}.{ext}", self.name)
    }

    /// The deb822 entry, signed by the keyring at `keyring`; without one, trusted as
    /// it is (`Trusted: yes`).
    #[must_use]
    pub fn deb822(&self, keyring: Option<&str>) -> String {
        let mut text = format!(
            "# Managed by infra-agent (apt_repository {}): local changes are overwritten.\n\
             Types: deb\nURIs: {}\nSuites: {}\n",
            self.name,
            self.uris.join(" "),
            self.suites.join(" ")
        );
        let mut line = |field: &str, values: &[String]| {
            if !values.is_empty() {
                text.push_str(field);
                text.push_str(": ");
                text.push_str(&values.join(" "));
                text.push('\n');
            }
        };
        line("Components", &self.components);
        line("Architectures", &self.architectures);
        match keyring {
            Some(keyring) => line("Signed-By", &[keyring.to_owned()]),
            None => line("Trusted", &["yes".to_owned()]),
        }
        text
    }
}

pub const KIND: KindSpec = KindSpec {
    name: "apt_repository",
    doc: "an apt repository: a deb822 .sources entry and the keyring that signs it",
    keys: &[
        Key {
            name: "name",
            shape: Shape::Str,
            required: true,
            doc: "file stem: /etc/apt/sources.list.d/NAME.sources and /etc/apt/keyrings/NAME.asc (or .gpg)",
        },
        Key {
            name: "uris",
            shape: Shape::OneOrMany,
            required: false,
            doc: "the repository's URI, or several (required unless absent)",
        },
        Key {
            name: "suites",
            shape: Shape::OneOrMany,
            required: false,
            doc: "suites (\"bookworm\"), or an exact path ending in / (required unless absent)",
        },
        Key {
            name: "components",
            shape: Shape::OneOrMany,
            required: false,
            doc: "components (\"main\"); required unless the suite is an exact path",
        },
        Key {
            name: "architectures",
            shape: Shape::OneOrMany,
            required: false,
            doc: "restrict to these architectures; default: all apt is configured for",
        },
        Key {
            name: "key_source",
            shape: Shape::RelPath,
            required: false,
            doc: "the keyring under files/ (armored or binary; exactly one of key_source and key_url)",
        },
        Key {
            name: "key_url",
            shape: Shape::Str,
            required: false,
            doc: "an http(s) URL of the keyring (needs key_sha256)",
        },
        Key {
            name: "key_sha256",
            shape: Shape::Str,
            required: false,
            doc: "SHA-256 of what key_url serves",
        },
        Key {
            name: "trusted",
            shape: Shape::Bool,
            required: false,
            doc: "no key: apt reads this local repository (file: URIs only) without checking signatures",
        },
        super::STATE,
    ],
    build,
};

fn err(f: &Rendered<'_>, key: &str, message: String, hint: impl Into<String>) -> Diagnostic {
    let pos = f.values.get(key).map_or(f.step_pos, |(_, p)| *p);
    Diagnostic::new(f.file, Some(pos), message).hint(hint)
}

/// A list of words: none empty, none containing white space.
fn words(f: &Rendered<'_>, key: &str, example: &str) -> Result<Vec<String>, Diagnostic> {
    let list = f.opt_one_or_many(key)?.unwrap_or_default();
    for w in &list {
        if w.is_empty() || w.chars().any(char::is_whitespace) {
            return Err(err(
                f,
                key,
                format!("`{key}` contains {w:?}, which is empty or contains white space"),
                format!("list one value per element: {key} = {example}"),
            ));
        }
    }
    Ok(list)
}

fn build(f: &Rendered<'_>, ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let name = f.str("name")?;
    let valid_name = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid_name {
        return Err(err(
            f,
            "name",
            format!("`name` is {name:?}, which apt would not read as a file name"),
            "use letters, digits, _, - and . (apt ignores other files in sources.list.d), e.g. name = \"docker\"",
        ));
    }
    let state = super::presence(f)?;
    if state == Presence::Absent {
        f.forbid(
            &[
                "uris",
                "suites",
                "components",
                "architectures",
                "key_source",
                "key_url",
                "key_sha256",
                "trusted",
            ],
            "with state = \"absent\" (the step removes the .sources entry and the keyring)",
        )?;
        return Ok(StepKind::AptRepository(AptRepositoryStep {
            name,
            state,
            uris: Vec::new(),
            suites: Vec::new(),
            components: Vec::new(),
            architectures: Vec::new(),
            key: None,
        }));
    }

    let uris = words(f, "uris", "[\"http://deb.example.org/debian\"]")?;
    if uris.is_empty() {
        return Err(err(
            f,
            "uris",
            "an apt_repository step needs `uris`".to_owned(),
            "write uris = \"https://download.example.com/linux/debian\"",
        ));
    }
    if let Some(bad) = uris.iter().find(|u| !u.contains(':')) {
        return Err(err(
            f,
            "uris",
            format!("`uris`: {bad:?} is not a URI"),
            "write the scheme too: \"https://download.example.com/debian\"",
        ));
    }
    let suites = words(f, "suites", "[\"bookworm\"]")?;
    if suites.is_empty() {
        return Err(err(
            f,
            "suites",
            "an apt_repository step needs `suites`".to_owned(),
            "write suites = \"bookworm\", or an exact path ending in /",
        ));
    }
    let components = words(f, "components", "[\"main\"]")?;
    let exact = suites.iter().filter(|s| s.ends_with('/')).count();
    if exact > 0 && exact < suites.len() {
        return Err(err(
            f,
            "suites",
            "`suites` mixes exact paths (ending in /) and suite names".to_owned(),
            "use one step per kind of suite",
        ));
    }
    if exact > 0 && !components.is_empty() {
        return Err(err(
            f,
            "components",
            "`components` is not allowed when the suite is an exact path (ending in /)".to_owned(),
            "remove `components`, or name a suite without the trailing /",
        ));
    }
    if exact == 0 && components.is_empty() {
        return Err(err(
            f,
            "components",
            "an apt_repository step needs `components`".to_owned(),
            "write components = [\"main\"]",
        ));
    }
    let architectures = words(f, "architectures", "[\"amd64\"]")?;
    if let Some(bad) = architectures.iter().find(|a| {
        !a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }) {
        return Err(err(
            f,
            "architectures",
            format!("`architectures`: {bad:?} is not an architecture"),
            "write Debian architecture names: amd64, arm64, i386",
        ));
    }

    let key = if f.opt_bool("trusted")? == Some(true) {
        if let Some(bad) = uris.iter().find(|u| !u.starts_with("file:")) {
            return Err(err(
                f,
                "trusted",
                format!("`trusted = true` is only allowed for file: URIs, and {bad:?} is not one"),
                "give a remote repository its signing key (key_source or key_url); trusted = true is for a directory on the host, e.g. uris = \"file:/srv/apt\"",
            ));
        }
        f.forbid(
            &["key_source", "key_url", "key_sha256"],
            "with trusted = true (apt reads the repository without checking signatures)",
        )?;
        KeySource::Trusted
    } else {
        signing_key(f, ctx)?
    };

    Ok(StepKind::AptRepository(AptRepositoryStep {
        name,
        state,
        uris,
        suites,
        components,
        architectures,
        key: Some(key),
    }))
}

/// The keyring of a signed repository: `key_source` (under `files/`) or `key_url` with
/// `key_sha256`, exactly one of them.
fn signing_key(f: &Rendered<'_>, ctx: &dyn BuildCtx) -> Result<KeySource, Diagnostic> {
    let sha256 = match f.opt_str("key_sha256")? {
        None => None,
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    f,
                    "key_sha256",
                    format!("`key_sha256` is {s:?}, which is not 64 hexadecimal digits"),
                    "write the first field of `sha256sum KEYFILE` (the file as the URL serves it)",
                ));
            }
            Some(s)
        }
    };
    let key = match (f.has("key_source"), f.opt_str("key_url")?) {
        (true, None) => {
            if sha256.is_some() {
                return Err(err(
                    f,
                    "key_sha256",
                    "`key_sha256` is only allowed with `key_url`".to_owned(),
                    "remove `key_sha256` (a key under files/ is part of the repository already)",
                ));
            }
            let rel = f.rel_path("key_source", "files")?;
            if !ctx.static_file_exists(&rel)? {
                return Err(err(
                    f,
                    "key_source",
                    format!("files/{rel} does not exist"),
                    "add the key under files/ (e.g. `gpg --export --armor KEYID > files/NAME.asc`) or fix `key_source`",
                ));
            }
            KeySource::File(rel)
        }
        (false, Some(url)) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(err(
                    f,
                    "key_url",
                    format!("`key_url` is {url:?}: only http:// and https:// URLs are supported"),
                    "use an http(s) URL, or put the key under files/ and use key_source",
                ));
            }
            let Some(sha256) = sha256 else {
                return Err(err(
                    f,
                    "key_url",
                    "a key from a URL needs `key_sha256`".to_owned(),
                    "add key_sha256 = \"...\" (the first field of `sha256sum KEYFILE`)",
                ));
            };
            KeySource::Url { url, sha256 }
        }
        (true, Some(_)) => {
            return Err(err(
                f,
                "key_url",
                "an apt_repository step takes one of `key_source` and `key_url`, not both"
                    .to_owned(),
                "keep one of them",
            ));
        }
        (false, None) => {
            return Err(err(
                f,
                "name",
                "an apt_repository step needs its signing key: `key_source` or `key_url`"
                    .to_owned(),
                "write key_source = \"keys/NAME.asc\" (under files/), or key_url = \"https://...\" with key_sha256 (or trusted = true for a local file: repository)",
            ));
        }
    };
    Ok(key)
}
