//! The `authorized_keys` step: the SSH public keys a user may log in with, and the
//! parser of `authorized_keys` lines (shared with the lockout guard).

use super::{BuildCtx, Key, KindSpec, Rendered, Shape, StepKind};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthorizedKeysStep {
    pub user: String,
    /// The keys, parsed, in the order written.
    pub keys: Vec<PublicKey>,
    /// The file holds exactly these keys (otherwise: add the missing ones, keep the rest).
    pub exclusive: bool,
    /// `None`: `~USER/.ssh/authorized_keys`, with `~/.ssh` managed too.
    pub path: Option<String>,
}

/// One line of an `authorized_keys` file that holds a key:
/// `[options] type base64 [comment]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicKey {
    /// The line as written, without surrounding whitespace.
    pub line: String,
    pub options: Option<String>,
    pub kind: String,
    pub base64: String,
    pub comment: Option<String>,
}

impl PublicKey {
    /// What identifies the key: its type and key data (not its options or comment).
    #[must_use]
    pub fn identity(&self) -> (&str, &str) {
        (&self.kind, &self.base64)
    }

    /// `ssh-ed25519 …Y6IG5vdCByZWFs alice@laptop`: enough to recognise a key in output.
    #[must_use]
    pub fn short(&self) -> String {
        let tail: String = {
            let chars: Vec<char> = self.base64.chars().collect();
            chars[chars.len().saturating_sub(12)..].iter().collect()
        };
        match &self.comment {
            Some(c) => format!("{} …{tail} {c}", self.kind),
            None => format!("{} …{tail}", self.kind),
        }
    }
}

/// Key types sshd accepts in `authorized_keys`.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Parses one `authorized_keys` line holding a key. The error says what is wrong,
/// without repeating the line.
pub fn parse_key(line: &str) -> Result<PublicKey, String> {
    let line = line.trim();
    if line.contains("PRIVATE KEY") {
        return Err("this looks like a private key: only public keys (`.pub` files) belong here, and private keys never belong in the repository".to_owned());
    }
    if line.contains('\n') {
        return Err("it holds several lines: give one key per element".to_owned());
    }
    if line.is_empty() {
        return Err("it is empty".to_owned());
    }
    let (options, rest) = match split_token(line) {
        (first, _) if KEY_TYPES.contains(&first) => (None, line),
        (first, rest) => (Some(first.to_owned()), rest.trim_start()),
    };
    let (kind, rest) = split_token(rest);
    let (base64, comment) = split_token(rest.trim_start());
    if !KEY_TYPES.contains(&kind) {
        return Err(if options.is_some() && kind.is_empty() {
            format!(
                "it does not start with a key type ({})",
                KEY_TYPES[..3].join(", ")
            )
        } else {
            format!(
                "{kind:?} is not an SSH key type (expected one of {})",
                KEY_TYPES.join(", ")
            )
        });
    }
    if base64.is_empty() {
        return Err("the key data (base64) is missing after the key type".to_owned());
    }
    let blob = decode_base64(base64).ok_or("the key data is not valid base64")?;
    // The key data starts with its own type, as a length-prefixed string.
    let declared = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if declared != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data is not a {kind} key (truncated, or the type does not match)"
        ));
    }
    let comment = comment.trim();
    Ok(PublicKey {
        line: line.to_owned(),
        options,
        kind: kind.to_owned(),
        base64: base64.to_owned(),
        comment: (!comment.is_empty()).then(|| comment.to_owned()),
    })
}

/// The first whitespace-separated token (double quotes protect whitespace, as in
/// `command="a b"`) and the rest.
fn split_token(s: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    };
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in body.as_bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub const KIND: KindSpec = KindSpec {
    name: "authorized_keys",
    doc: "the SSH public keys a user may log in with",
    keys: &[
        Key {
            name: "user",
            shape: Shape::Str,
            required: true,
            doc: "the user whose keys these are; the file is owned by this user",
        },
        Key {
            name: "keys",
            shape: Shape::Strings,
            required: true,
            doc: "public key lines: `[options] type base64 [comment]`",
        },
        Key {
            name: "exclusive",
            shape: Shape::Bool,
            required: false,
            doc: "the file holds exactly these keys; default true (false: add the missing keys, keep the others)",
        },
        Key {
            name: "path",
            shape: Shape::Path,
            required: false,
            doc: "the file; default: ~USER/.ssh/authorized_keys (and ~/.ssh is managed too)",
        },
    ],
    build,
};

fn build(f: &Rendered<'_>, _ctx: &dyn BuildCtx) -> Result<StepKind, Diagnostic> {
    let user = super::user::name_field(f, "user", "user")?;
    let lines = f
        .opt_strings("keys")?
        .ok_or_else(|| Diagnostic::new(f.file, Some(f.step_pos), "missing key `keys`"))?;
    let pos = f.values["keys"].1;
    let mut keys: Vec<PublicKey> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let key = parse_key(line).map_err(|why| {
            let shown = if why.contains("private key") {
                String::new()
            } else {
                format!(" {:?}", ellipsize(line.trim(), 80))
            };
            Diagnostic::new(
                f.file,
                Some(pos),
                format!("`keys`: key {n}{shown} is not an SSH public key: {why}"),
            )
            .hint("give public key lines as in a .pub file or authorized_keys: `[options] type base64 [comment]`, e.g. \"ssh-ed25519 AAAAC3Nza... alice@laptop\"")
        })?;
        if let Some(j) = keys.iter().position(|k| k.identity() == key.identity()) {
            return Err(Diagnostic::new(
                f.file,
                Some(pos),
                format!(
                    "`keys`: key {n} ({}) is the same key as key {}",
                    key.short(),
                    j + 1
                ),
            )
            .hint("list each key once"));
        }
        keys.push(key);
    }
    Ok(StepKind::AuthorizedKeys(AuthorizedKeysStep {
        user,
        keys,
        exclusive: f.opt_bool("exclusive")?.unwrap_or(true),
        path: f.opt_path("path")?,
    }))
}

fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs";

    #[test]
    fn parses_keys_with_options_and_comments() {
        let k = parse_key(&format!("  {ED} alice@laptop  ")).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.options, None);
        assert_eq!(k.comment.as_deref(), Some("alice@laptop"));
        assert_eq!(k.line, format!("{ED} alice@laptop"));

        let k = parse_key(&format!(
            "from=\"10.0.0.0/8\",command=\"echo a b\",no-pty {ED} my key"
        ))
        .unwrap();
        assert_eq!(
            k.options.as_deref(),
            Some("from=\"10.0.0.0/8\",command=\"echo a b\",no-pty")
        );
        assert_eq!(k.comment.as_deref(), Some("my key"));
        assert_eq!(k.short(), "ssh-ed25519 …IG5vdCByZWFs my key");
    }

    #[test]
    fn rejects_what_is_not_a_public_key() {
        for (line, why) in [
            ("", "empty"),
            ("hello world", "not an SSH key type"),
            ("ssh-ed25519", "missing"),
            ("ssh-ed25519 not*base64", "not valid base64"),
            (
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs",
                "not a ssh-rsa key",
            ),
            ("ssh-ed25519 AAAA", "not a ssh-ed25519 key"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ] {
            let err = parse_key(line).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGV5").unwrap(), b"hey");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("aGk").is_none());
        assert!(decode_base64("a===").is_none());
    }
}
