//! Pinning the git server's SSH host key against a `known_hosts` file.
//!
//! The agent trusts an SSH server only when agent.toml's `known_hosts` file holds the
//! exact key the server presents. Lines are OpenSSH's: `host[,host2] type base64 [comment]`,
//! `[host]:port` for ports other than 22, `*`/`?` wildcards and `!negation`, hashed
//! names (`|1|salt|hash`, what `ssh-keygen -H` writes) and `@revoked` markers.
//! `@cert-authority` lines are skipped: libssh2 does not present host certificates, so
//! only plain key pins can match.

use std::path::Path;

use sha2::Digest as _;

use super::Error;
use super::sha1::hmac_sha1;

/// The name a host is looked up by: `host` on port 22, `[host]:port` elsewhere
/// (lowercase, as OpenSSH does).
#[must_use]
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// OpenSSH's fingerprint of a public key blob: `SHA256:` and the unpadded base64 of its
/// SHA-256 digest.
#[must_use]
pub fn fingerprint(key: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64_encode(&sha2::Sha256::digest(key), false)
    )
}

/// The key type a public key blob names in its first field (`ssh-ed25519`, ...).
#[must_use]
pub fn key_type(key: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4 + len)?;
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic())).then(|| name.to_owned())
}

/// The key blob of a public key in OpenSSH's one-line form (`type base64 [comment]`,
/// as in a `.pub` file or `ssh-keyscan` output without the host); `None` when the
/// line is not one or its type field disagrees with the blob.
#[must_use]
pub fn public_key_blob(line: &str) -> Option<Vec<u8>> {
    let mut fields = line.split_ascii_whitespace();
    let (named, encoded) = (fields.next()?, fields.next()?);
    let blob = base64_decode(encoded)?;
    (key_type(&blob)? == named).then_some(blob)
}

/// A key as messages name it: `ssh-ed25519 key SHA256:...`.
#[must_use]
pub fn describe(key: &[u8]) -> String {
    format!(
        "{} key {}",
        key_type(key).unwrap_or_else(|| "unknown".to_owned()),
        fingerprint(key)
    )
}

/// The `known_hosts` line that pins `key` for `host`.
#[must_use]
pub fn line_for(host: &str, port: u16, key: &[u8]) -> String {
    format!(
        "{} {} {}",
        lookup_name(host, port),
        key_type(key).unwrap_or_else(|| "unknown".to_owned()),
        base64_encode(key, true)
    )
}

/// Accepts `key` (the raw public key blob the server presented) only if the `known_hosts`
/// text pins exactly that key for `host` on `port`. `file` names the text in messages.
pub fn check_host_key(
    known_hosts: &str,
    file: &Path,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), Error> {
    let name = lookup_name(host, port);
    let presented_type =
        key_type(key).ok_or_else(|| Error::HostKeyUnreadable { host: name.clone() })?;
    let mut matched = false;
    let mut same_type = Vec::new();
    let mut other_types: Vec<String> = Vec::new();
    for (index, line) in known_hosts.lines().enumerate() {
        let line_no = index + 1;
        let Some(entry) = Entry::parse(line) else {
            continue;
        };
        if entry.marker == Marker::CertAuthority || !entry.matches(&name) {
            continue;
        }
        let syntax = |reason: &str| Error::KnownHostsSyntax {
            path: file.to_owned(),
            line: line_no,
            reason: reason.to_owned(),
        };
        let (Some(field_type), Some(encoded)) = (entry.key_type, entry.key) else {
            return Err(syntax(
                "the line names this host but has no key type and key after it",
            ));
        };
        let blob = base64_decode(encoded).ok_or_else(|| syntax("the key is not valid base64"))?;
        let pinned_type = key_type(&blob).unwrap_or_else(|| field_type.to_owned());
        if entry.marker == Marker::Revoked {
            if blob == key {
                return Err(Error::HostKeyRevoked {
                    host: name,
                    path: file.to_owned(),
                    key: describe(key),
                });
            }
        } else if blob == key {
            // Keep reading: a later @revoked line for the same key must still win.
            matched = true;
        } else if pinned_type == presented_type {
            same_type.push(format!("{} (line {line_no})", fingerprint(&blob)));
        } else if !other_types.contains(&pinned_type) {
            other_types.push(pinned_type);
        }
    }
    if matched {
        return Ok(());
    }
    if !same_type.is_empty() {
        return Err(Error::HostKeyChanged {
            host: name,
            path: file.to_owned(),
            key: describe(key),
            pinned: same_type.join(", "),
        });
    }
    let line = line_for(host, port, key);
    if !other_types.is_empty() {
        return Err(Error::HostKeyTypeNotPinned {
            host: name,
            path: file.to_owned(),
            key: describe(key),
            pinned_types: other_types.join(", "),
            line,
        });
    }
    Err(Error::UnknownHost {
        host: name,
        path: file.to_owned(),
        key: describe(key),
        line,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One `known_hosts` line, split into its fields; the key is decoded only when the line
/// names the host.
#[derive(Debug)]
struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    key_type: Option<&'a str>,
    key: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// `None` for blank lines, comments and unknown markers.
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_ascii_whitespace();
        let mut first = fields.next()?;
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => return None,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next()?;
        }
        Some(Self {
            marker,
            hosts: first,
            key_type: fields.next(),
            key: fields.next(),
        })
    }

    /// Whether the host field names `name` (already in lookup form, lowercase).
    fn matches(&self, name: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            let Some((salt, hash)) = hashed.split_once('|') else {
                return false;
            };
            let (Some(salt), Some(hash)) = (base64_decode(salt), base64_decode(hash)) else {
                return false;
            };
            return hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice();
        }
        let mut positive = false;
        for pattern in self.hosts.split(',') {
            let pattern = pattern.to_ascii_lowercase();
            if let Some(negated) = pattern.strip_prefix('!') {
                if glob(negated.as_bytes(), name.as_bytes()) {
                    return false;
                }
            } else if glob(pattern.as_bytes(), name.as_bytes()) {
                positive = true;
            }
        }
        positive
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648), with or without `=` padding.
pub(crate) fn base64_encode(bytes: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional. `None` for anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ed25519 public key (`ssh-keygen -t ed25519`), and its fingerprint as
    /// `ssh-keygen -lf` prints it.
    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIErr2UwRbPQMmFRY8Xrauh0PgwduK0MPncBfJyHeNWLQ";
    const ED25519_FP: &str = "SHA256:QS1FFFkeVTmmYO6Su1DssWrVV1xwxY541IZsInpxen4";
    /// A second ed25519 key, for "changed" cases.
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIFwip9glwutt4XyyWKKvwdvOLp22Ym7Znrm5pn8++Q7";

    fn key(b64: &str) -> Vec<u8> {
        base64_decode(b64).unwrap()
    }

    fn check(text: &str, host: &str, port: u16, key_b64: &str) -> Result<(), Error> {
        check_host_key(text, Path::new("/etc/kh"), host, port, &key(key_b64))
    }

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i: u8| i.wrapping_mul(37) ^ 0x0b).collect();
            let padded = base64_encode(&bytes, true);
            assert_eq!(padded.len() % 4, 0);
            assert_eq!(base64_decode(&padded).unwrap(), bytes);
            let bare = base64_encode(&bytes, false);
            assert!(!bare.contains('='));
            assert_eq!(base64_decode(&bare).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"foobar", true), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo", true), "Zm8=");
        assert_eq!(base64_decode("Zg=="), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Z!=="), None);
        assert_eq!(base64_decode("Zm9vY"), None);
    }

    #[test]
    fn fingerprint_and_type_match_openssh() {
        assert_eq!(fingerprint(&key(ED25519)), ED25519_FP);
        assert_eq!(key_type(&key(ED25519)).as_deref(), Some("ssh-ed25519"));
        assert_eq!(key_type(b"\0\0"), None);
        assert_eq!(key_type(b"\0\0\0\x09ssh"), None);
    }

    #[test]
    fn plain_entry_accepts_its_key_only() {
        let text = format!("# pinned\n\ngit.example.com,10.0.0.5 ssh-ed25519 {ED25519} ci\n");
        check(&text, "git.example.com", 22, ED25519).unwrap();
        check(&text, "GIT.example.COM", 22, ED25519).unwrap();
        check(&text, "10.0.0.5", 22, ED25519).unwrap();
        let err = check(&text, "git.example.com", 22, OTHER).unwrap_err();
        let Error::HostKeyChanged {
            key: shown, pinned, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(shown, &describe(&key(OTHER)));
        assert!(pinned.contains(ED25519_FP), "{pinned}");
        assert!(pinned.contains("line 3"), "{pinned}");
        let message = err.to_string();
        assert!(message.contains("host key changed"), "{message}");
        assert!(message.contains(ED25519_FP), "{message}");
    }

    #[test]
    fn unknown_host_shows_fingerprint_and_line() {
        let text = format!("other.example.com ssh-ed25519 {ED25519}\n");
        let err = check(&text, "git.example.com", 22, ED25519).unwrap_err();
        assert!(matches!(err, Error::UnknownHost { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(ED25519_FP), "{message}");
        assert!(
            message.contains(&format!("git.example.com ssh-ed25519 {ED25519}")),
            "{message}"
        );
        assert!(message.contains("/etc/kh"), "{message}");
        // Nothing at all is pinned: same answer.
        let err = check("", "git.example.com", 22, ED25519).unwrap_err();
        assert!(matches!(err, Error::UnknownHost { .. }), "{err:?}");
    }

    #[test]
    fn ports_other_than_22_use_brackets() {
        let text = format!("[git.example.com]:2222 ssh-ed25519 {ED25519}\n");
        check(&text, "git.example.com", 2222, ED25519).unwrap();
        // The bracketed entry does not pin port 22, nor a plain entry port 2222.
        assert!(matches!(
            check(&text, "git.example.com", 22, ED25519),
            Err(Error::UnknownHost { .. })
        ));
        let plain = format!("git.example.com ssh-ed25519 {ED25519}\n");
        let err = check(&plain, "git.example.com", 2222, ED25519).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("[git.example.com]:2222 ssh-ed25519 {ED25519}")),
            "{err}"
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let text = format!("*.example.com,!evil.example.com ssh-ed25519 {ED25519}\n");
        check(&text, "git.example.com", 22, ED25519).unwrap();
        assert!(check(&text, "evil.example.com", 22, ED25519).is_err());
        assert!(check(&text, "example.org", 22, ED25519).is_err());
        let text = format!("git?.example.com ssh-ed25519 {ED25519}\n");
        check(&text, "git1.example.com", 22, ED25519).unwrap();
        assert!(check(&text, "git12.example.com", 22, ED25519).is_err());
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a*b", b"axxc"));
    }

    #[test]
    fn hashed_entries_match_by_hmac() {
        // HMAC-SHA1 of the name under a chosen salt, as `ssh-keygen -H` writes it.
        let salt = b"0123456789abcdefghij";
        let hash = hmac_sha1(salt, b"git.example.com");
        let text = format!(
            "|1|{}|{} ssh-ed25519 {ED25519}\n",
            base64_encode(salt, true),
            base64_encode(&hash, true)
        );
        check(&text, "git.example.com", 22, ED25519).unwrap();
        assert!(matches!(
            check(&text, "other.example.com", 22, ED25519),
            Err(Error::UnknownHost { .. })
        ));
        assert!(matches!(
            check(&text, "git.example.com", 22, OTHER),
            Err(Error::HostKeyChanged { .. })
        ));
    }

    #[test]
    fn revoked_key_is_refused_even_when_pinned() {
        let text =
            format!("git.example.com ssh-ed25519 {ED25519}\n@revoked * ssh-ed25519 {ED25519}\n");
        assert!(matches!(
            check(&text, "git.example.com", 22, ED25519),
            Err(Error::HostKeyRevoked { .. })
        ));
    }

    #[test]
    fn other_key_type_pinned_is_named() {
        let rsa_like = base64_encode(b"\0\0\0\x07ssh-rsa\0\0\0\x01\x23", true);
        let text = format!("git.example.com ssh-rsa {rsa_like}\n");
        let err = check(&text, "git.example.com", 22, ED25519).unwrap_err();
        assert!(
            matches!(&err, Error::HostKeyTypeNotPinned { pinned_types, .. } if pinned_types == "ssh-rsa"),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_line_for_the_host_is_an_error_naming_it() {
        let text = "junk line for nobody\ngit.example.com ssh-ed25519 not*base64\n";
        let err = check(text, "git.example.com", 22, ED25519).unwrap_err();
        assert!(
            matches!(&err, Error::KnownHostsSyntax { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/etc/kh:2"), "{err}");
        let err = check("git.example.com\n", "git.example.com", 22, ED25519).unwrap_err();
        assert!(
            matches!(err, Error::KnownHostsSyntax { line: 1, .. }),
            "{err:?}"
        );
    }
}
