//! The stand-ins `infra-stage` gives its containers, so that staging exercises the
//! paths that reach outside without reaching outside (docs/staging.md, "Stand-ins").
//!
//! They come from the optional `staging/` directory of the state repository, which is
//! copied into every container with the rest of the working tree:
//!
//! - `staging/secrets.toml` maps `op://` references to stand-in values. infra-stage
//!   installs a stand-in 1Password CLI ([`OP_PROGRAM`]) that answers `op read` from
//!   that map, and points the agent's `op` backend at it in agent.toml, before the
//!   bootstrap (which keeps those settings) and before each `apply`.
//! - `staging/apt/<name>/` are package trees (`DEBIAN/control` and the files).
//!   infra-stage builds them with `dpkg-deb --build`, inside each container, into a
//!   flat apt repository at [`APT_REPO`], which the staging data names as an
//!   `apt_repository` with `uris = "file:/srv/infra-stage/apt"`, `suites = "./"` and
//!   `trusted = true`: stand-ins for packages of vendor repositories.
//!
//! Nothing here starts a process: the stage module writes what this module renders.

use std::collections::BTreeMap;
use std::path::Path;

use infra_agent::secrets::Reference;

use crate::failure::Failure;

/// The stand-in values of `op://` references, relative to the state repository.
pub const SECRETS_FILE: &str = "staging/secrets.toml";
/// The package trees of the stand-in apt repository, relative to the state repository.
pub const APT_DIR: &str = "staging/apt";
/// The stand-in apt repository in each container (flat: `Packages` and the `.deb`s).
pub const APT_REPO: &str = "/srv/infra-stage/apt";

/// Builds the stand-in apt repository `$2` from the package trees under `$1` (the
/// copied `staging/apt`), inside the container, with only what every Debian and
/// Ubuntu host has (dpkg-deb, coreutils). Fixed timestamps make the same trees give
/// the same packages, so an unchanged repository is left alone (prints `unchanged`),
/// and a changed one replaces the old in one rename (prints `built N`).
pub const BUILD_APT: &str = r#"set -eu
src=$1
repo=$2
top=$(dirname "$repo")
mkdir -p -m 0755 "$top"
work=$(mktemp -d "$top/.apt-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -m 0755 "$work/repo" "$work/src"
export SOURCE_DATE_EPOCH=1700000000
found=0
for dir in "$src"/*/; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  if [ ! -f "$dir/DEBIAN/control" ]; then
    echo "staging/apt/$name has no DEBIAN/control: each directory of staging/apt is a package tree" >&2
    exit 1
  fi
  cp -R "$dir" "$work/src/$name"
  chmod -R u=rwX,go=rX "$work/src/$name"
  if ! dpkg-deb --root-owner-group -Zgzip --build "$work/src/$name" "$work/repo/" >"$work/log" 2>&1; then
    echo "dpkg-deb could not build staging/apt/$name:" >&2
    cat "$work/log" >&2
    exit 1
  fi
  found=$((found + 1))
done
(
  cd "$work/repo"
  for deb in *.deb; do
    [ -f "$deb" ] || continue
    dpkg-deb -f "$deb"
    printf 'Filename: ./%s
Size: %s
SHA256: %s

' "$deb" "$(stat -c %s "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)"
  done
) >"$work/repo/Packages"
chmod 0644 "$work/repo"/*
if [ -f "$repo/Packages" ] && cmp -s "$repo/Packages" "$work/repo/Packages"; then
  echo unchanged
  exit 0
fi
rm -rf "$repo.old"
if [ -e "$repo" ]; then mv "$repo" "$repo.old"; fi
mv "$work/repo" "$repo"
rm -rf "$repo.old"
echo "built $found"
"#;

/// The stand-in `op` in each container (agent.toml `op_path`).
pub const OP_PROGRAM: &str = "/usr/local/lib/infra-stage/op";
/// The token the agent's `op` backend insists on (agent.toml `op_token_file`); the
/// stand-in ignores it.
pub const OP_TOKEN: &str = "/etc/infra-stage/op-token";
/// The map the stand-in `op` reads: one line per reference, `REF<TAB>BASE64(VALUE)`.
pub const SECRETS_MAP: &str = "/etc/infra-stage/secrets";

/// The stand-in 1Password CLI. It reads nothing from the network: `op read
/// [--no-newline] REF` prints the value [`SECRETS_MAP`] gives REF, and fails with
/// 1Password's own "isn't an item" wording (which the agent reports as "not found")
/// for any other reference.
pub const OP_SCRIPT: &str = r#"#!/bin/sh
# infra-stage's stand-in for the 1Password CLI (docs/staging.md): `op read
# [--no-newline] REF` prints the stand-in value that the state repository's
# staging/secrets.toml gives REF. It never contacts 1Password.
set -u
map=/etc/infra-stage/secrets
if [ "${1-}" != read ]; then
  echo "[ERROR] infra-stage's stand-in op only reads: op read --no-newline REF" >&2
  exit 1
fi
shift
newline=yes
if [ "${1-}" = --no-newline ]; then
  newline=
  shift
fi
ref=${1-}
encoded=$(awk -F '\t' -v ref="$ref" '$1 == ref { print $2; found = 1; exit } END { exit !found }' "$map" 2>/dev/null) || {
  echo "[ERROR] \"$ref\" isn't an item with a stand-in value: add it to staging/secrets.toml" >&2
  exit 1
}
printf '%s' "$encoded" | base64 -d
if [ -n "$newline" ]; then echo; fi
"#;

/// The agent.toml settings that point the agent at the stand-in `op`.
pub const AGENT_SETTINGS: [(&str, &str); 3] = [
    ("secrets_backend", "op"),
    ("op_path", OP_PROGRAM),
    ("op_token_file", OP_TOKEN),
];

/// The stand-in values of `staging/secrets.toml`, by reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub values: BTreeMap<String, String>,
}

impl Secrets {
    /// Reads `staging/secrets.toml` of the state repository `dir`; `None` when there
    /// is no such file (the containers then get no secrets backend from infra-stage).
    pub fn read(dir: &Path) -> Result<Option<Self>, Failure> {
        let path = dir.join(SECRETS_FILE);
        let text = match fs_err::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Failure::new(format!("cannot read {SECRETS_FILE}: {e}"))
                    .hint("check the file's permissions"));
            }
        };
        Self::parse(&text).map(Some)
    }

    /// Parses the text of `staging/secrets.toml`: a table of `"op://..." = "value"`.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let hint = "write one line per reference: \"op://vault/item/field\" = \"stand-in value\"";
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            Failure::new(format!("{SECRETS_FILE} is not valid TOML: {}", e.message())).hint(hint)
        })?;
        let mut values = BTreeMap::new();
        for (reference, value) in table {
            Reference::parse(&reference).map_err(|e| {
                Failure::new(format!("{SECRETS_FILE}: `{reference}`: {e}")).hint(hint)
            })?;
            let toml::Value::String(value) = value else {
                return Err(Failure::new(format!(
                    "{SECRETS_FILE}: the stand-in value of {reference} is not a string"
                ))
                .hint(hint));
            };
            values.insert(reference, value);
        }
        Ok(Self { values })
    }

    /// The text of [`SECRETS_MAP`].
    #[must_use]
    pub fn map_file(&self) -> String {
        self.values
            .iter()
            .fold(String::new(), |mut out, (reference, value)| {
                out.push_str(reference);
                out.push('\t');
                out.push_str(&base64(value.as_bytes()));
                out.push('\n');
                out
            })
    }
}

/// `existing` agent.toml text with [`AGENT_SETTINGS`] set; `None` when it already has
/// them. Other lines are kept as they are. `Err` says why `existing` does not read.
pub fn with_agent_settings(existing: &str) -> Result<Option<String>, String> {
    let table: toml::Table = toml::from_str(existing).map_err(|e| e.message().to_owned())?;
    if AGENT_SETTINGS
        .iter()
        .all(|(key, value)| table.get(*key).and_then(toml::Value::as_str) == Some(*value))
    {
        return Ok(None);
    }
    // agent.toml is flat (no tables), so a setting is one `key = value` line.
    let ours = |line: &str| {
        let line = line.trim_start();
        AGENT_SETTINGS.iter().any(|(key, _)| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let mut out: String =
        existing
            .lines()
            .filter(|l| !ours(l))
            .fold(String::new(), |mut out, l| {
                out.push_str(l);
                out.push('\n');
                out
            });
    out.push_str(
        "# infra-stage: op:// references are answered by its stand-in op (staging/secrets.toml).\n",
    );
    for (key, value) in AGENT_SETTINGS {
        out.push_str(key);
        out.push_str(" = ");
        out.push_str(&toml::Value::String(value.to_owned()).to_string());
        out.push('\n');
    }
    Ok(Some(out))
}

/// Standard base64 with padding (what `base64 -d` reads).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn secrets_map_references_to_values_one_line_each() {
        let secrets = Secrets::parse(
            "\"op://homelab/tailscale/auth-key-staging\" = \"tskey-stand-in\"\n\"op://lab/db/password\" = \"two\\nlines\"\n",
        )
        .unwrap();
        assert_eq!(
            secrets.map_file(),
            "op://homelab/tailscale/auth-key-staging\tdHNrZXktc3RhbmQtaW4=\nop://lab/db/password\tdHdvCmxpbmVz\n"
        );
    }

    #[test]
    fn bad_secrets_files_name_the_file_and_the_reference() {
        let err = Secrets::parse("\"vault/item/field\" = \"x\"\n").unwrap_err();
        assert!(err.message.contains(SECRETS_FILE), "{err}");
        assert!(err.message.contains("`vault/item/field`"), "{err}");
        assert!(err.hint.is_some());
        let err = Secrets::parse("\"op://v/i/f\" = 3\n").unwrap_err();
        assert!(err.message.contains("not a string"), "{err}");
        assert!(Secrets::parse("\"op://v/i/f\" = \n").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Secrets::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn agent_settings_are_added_once_and_replace_other_values() {
        let written = "# Written by infra-bootstrap.\nrepository = \"/srv/state\"\nhostname = \"stage-ha-01\"\n";
        let with = with_agent_settings(written).unwrap().unwrap();
        assert!(with.starts_with(written), "{with}");
        let table: toml::Table = toml::from_str(&with).unwrap();
        assert_eq!(table["secrets_backend"].as_str(), Some("op"));
        assert_eq!(table["op_path"].as_str(), Some(OP_PROGRAM));
        assert_eq!(table["op_token_file"].as_str(), Some(OP_TOKEN));
        assert_eq!(with_agent_settings(&with).unwrap(), None);
        let other = format!("{written}secrets_backend = \"connect\"\nop_path=\"op\"\n");
        let replaced = with_agent_settings(&other).unwrap().unwrap();
        let table: toml::Table = toml::from_str(&replaced).unwrap();
        assert_eq!(table["secrets_backend"].as_str(), Some("op"));
        assert_eq!(table["op_path"].as_str(), Some(OP_PROGRAM));
        assert!(with_agent_settings("").unwrap().is_some());
        assert!(with_agent_settings("x = ").is_err());
    }
}
