//! The `connect` backend: a 1Password Connect server's REST API.
//!
//! A reference takes three requests: the vault by name (or id), the item by title (or
//! id), then the item, whose field is chosen by label or id (within a section chosen
//! by label or id). `http://` servers (Connect usually runs on the LAN or on the host)
//! are spoken to over a plain TCP connection; `https://` ones through `curl`, given
//! the URL and the token in a configuration read from its standard input, never on
//! its command line.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Backend, Error, Query, Reference, Secret, brief, read_token};
use crate::process::Cmd;

/// How long a connection may take to open, and a request to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(30);

/// A Connect server.
#[derive(Debug, Clone)]
pub struct Connect {
    /// `http://host:port` or `https://host`, without a trailing slash.
    host: String,
    token_file: PathBuf,
}

impl Connect {
    #[must_use]
    pub fn new(host: &str, token_file: &Path) -> Self {
        Self {
            host: host.trim_end_matches('/').to_owned(),
            token_file: token_file.to_owned(),
        }
    }

    /// GETs a path of the API and parses the JSON answer.
    fn get(&self, path: &str, token: &Secret, what: &str) -> Result<Value, Error> {
        let (status, body) = if let Some(rest) = self.host.strip_prefix("http://") {
            http_get(rest, path, token)
        } else if self.host.starts_with("https://") {
            curl_get(&format!("{}{path}", self.host), token)
        } else {
            Err(Error::Failed(format!(
                "connect_host `{}` is not an http:// or https:// URL\nhint: write connect_host = \"http://localhost:8080\" in agent.toml",
                self.host
            )))
        }?;
        let message = || {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| brief(&String::from_utf8_lossy(&body)))
        };
        match status {
            200 => serde_json::from_slice(&body).map_err(|e| {
                Error::Failed(format!(
                    "the Connect server's answer for {what} is not JSON: {e}"
                ))
            }),
            401 | 403 => Err(Error::Failed(format!(
                "the Connect server refused the token (HTTP {status}: {})\nhint: check connect_token_file and that the token may read this vault",
                message()
            ))),
            404 => Err(Error::NotFound(format!(
                "the Connect server has no {what} (HTTP 404: {})",
                message()
            ))),
            429 => Err(Error::RateLimited(format!(
                "the Connect server answered HTTP 429 for {what}"
            ))),
            _ => Err(Error::Failed(format!(
                "the Connect server answered HTTP {status} for {what}: {}",
                message()
            ))),
        }
    }

    /// The id of the one entry of `list` whose `key` is `name`, or `name` itself when it
    /// has the shape of a 1Password id and nothing has that name.
    fn pick(list: &Value, key: &str, name: &str) -> Option<String> {
        let found = list.as_array().and_then(|entries| {
            entries
                .iter()
                .find(|e| e.get(key).and_then(Value::as_str) == Some(name))
                .and_then(|e| e.get("id").and_then(Value::as_str))
                .map(str::to_owned)
        });
        found.or_else(|| looks_like_id(name).then(|| name.to_owned()))
    }
}

/// 1Password ids are 26 lowercase letters and digits.
fn looks_like_id(name: &str) -> bool {
    name.len() == 26
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl Backend for Connect {
    fn read(&self, r: &Reference) -> Result<Secret, Error> {
        let token = read_token(&self.token_file, "connect_token_file")?;
        let vaults = self.get(
            &format!(
                "/v1/vaults?filter={}",
                encode(&format!("name eq \"{}\"", r.vault))
            ),
            &token,
            &format!("vault `{}`", r.vault),
        )?;
        let vault = Self::pick(&vaults, "name", &r.vault).ok_or_else(|| {
            Error::NotFound(format!(
                "no vault `{}` is readable with this Connect token",
                r.vault
            ))
        })?;
        let items = self.get(
            &format!(
                "/v1/vaults/{}/items?filter={}",
                encode(&vault),
                encode(&format!("title eq \"{}\"", r.item))
            ),
            &token,
            &format!("item `{}` in vault `{}`", r.item, r.vault),
        )?;
        let item = Self::pick(&items, "title", &r.item).ok_or_else(|| {
            Error::NotFound(format!("vault `{}` has no item `{}`", r.vault, r.item))
        })?;
        let item = self.get(
            &format!("/v1/vaults/{}/items/{}", encode(&vault), encode(&item)),
            &token,
            &format!("item `{}` in vault `{}`", r.item, r.vault),
        )?;
        field_value(&item, r).map(Secret::new)
    }
}

/// The value a reference names in a full item document.
fn field_value(item: &Value, r: &Reference) -> Result<String, Error> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let section_id = match &r.section {
        None => None,
        Some(name) => {
            let sections = item.get("sections").and_then(Value::as_array);
            let found = sections.and_then(|s| {
                s.iter().find(|s| {
                    text(s, "label").as_deref() == Some(name)
                        || text(s, "id").as_deref() == Some(name)
                })
            });
            match found.and_then(|s| text(s, "id")) {
                Some(id) => Some(id),
                None => {
                    return Err(Error::NotFound(format!(
                        "item `{}` in vault `{}` has no section `{name}`",
                        r.item, r.vault
                    )));
                }
            }
        }
    };
    let fields = item
        .get("fields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let field = fields.iter().find(|f| {
        let named = text(f, "label").as_deref() == Some(r.field.as_str())
            || text(f, "id").as_deref() == Some(r.field.as_str());
        let in_section = match &section_id {
            None => true,
            Some(id) => {
                f.get("section").and_then(|s| text(s, "id")).as_deref() == Some(id.as_str())
            }
        };
        named && in_section
    });
    let Some(field) = field else {
        let place = r
            .section
            .as_ref()
            .map(|s| format!(" in section `{s}`"))
            .unwrap_or_default();
        return Err(Error::NotFound(format!(
            "item `{}` in vault `{}` has no field `{}`{place}",
            r.item, r.vault, r.field
        )));
    };
    match r.query {
        Some(Query::Otp) => text(field, "totp").ok_or_else(|| {
            Error::NotFound(format!(
                "field `{}` of item `{}` is not a one-time password field (?attribute=otp)",
                r.field, r.item
            ))
        }),
        Some(Query::SshOpenssh) => {
            let value = text(field, "value").unwrap_or_default();
            if value.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
                Ok(value)
            } else {
                Err(Error::Failed(format!(
                    "field `{}` of item `{}` is not an OpenSSH private key, and Connect does not convert keys (?ssh-format=openssh)\nhint: use secrets_backend = \"op\", which converts, or store the key in OpenSSH format",
                    r.field, r.item
                )))
            }
        }
        None => text(field, "value").ok_or_else(|| {
            Error::NotFound(format!(
                "field `{}` of item `{}` has no value",
                r.field, r.item
            ))
        }),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One GET over HTTP/1.1 on a new connection. `authority` is `host[:port]` and may be
/// followed by a path prefix.
fn http_get(authority: &str, path: &str, token: &Secret) -> Result<(u16, Vec<u8>), Error> {
    let (authority, prefix) = match authority.find('/') {
        Some(i) => (&authority[..i], authority[i..].trim_end_matches('/')),
        None => (authority, ""),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Unreachable(format!(
            "cannot reach the Connect server at http://{authority}: {e}\nhint: check connect_host in agent.toml and that the server runs"
        ))
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| unreachable(&e))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(unreachable(&e)),
        (None, None) => return Err(unreachable(&"the name has no address")),
    };
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| unreachable(&e))?;
    let request = format!(
        "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nUser-Agent: infra-agent\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(&e))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| unreachable(&e))?;
    parse_response(&raw).map_err(|e| {
        Error::Failed(format!(
            "the Connect server at http://{authority} answered something that is not HTTP: {e}"
        ))
    })
}

/// Status and body of a whole HTTP/1.1 response (plain or chunked body).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the headers do not end")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no status line")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
    }
    if chunked {
        return dechunk(body).map(|b| (status, b));
    }
    Ok(match length {
        Some(n) if n <= body.len() => (status, body[..n].to_vec()),
        Some(_) => return Err("the body is shorter than its Content-Length".to_owned()),
        None => (status, body.to_vec()),
    })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line does not end")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("`{size_text}` is not a chunk size"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a chunk is cut short".to_owned());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// One GET through curl for an https:// server: the URL and the token go in a curl
/// configuration on standard input; the status code is the last line of the output.
fn curl_get(url: &str, token: &Secret) -> Result<(u16, Vec<u8>), Error> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let config = format!(
        "url = \"{}\"\nheader = \"Authorization: Bearer {}\"\nheader = \"Accept: application/json\"\n",
        quote(url),
        quote(token.expose())
    );
    let mut cmd = Cmd::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--config",
            "-",
            "--write-out",
            "\n%{http_code}",
        ])
        .timeout(TIMEOUT + Duration::from_secs(5));
    cmd.stdin = Some(config.into_bytes());
    let out = crate::process::run(&cmd).map_err(|e| {
        Error::Failed(format!(
            "cannot run curl for the https:// Connect server: {e}\nhint: install curl, or reach Connect over http:// on the LAN"
        ))
    })?;
    if !out.success() {
        return Err(Error::Unreachable(format!(
            "cannot reach the Connect server {url}: curl: {}",
            brief(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    let text = out.stdout;
    let split = text.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&text[split..])
        .trim()
        .parse::<u16>()
        .map_err(|_| Error::Failed("curl printed no HTTP status".to_owned()))?;
    Ok((status, text[..split].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item() -> Value {
        json!({
            "id": "abc", "title": "db",
            "sections": [{"id": "s1", "label": "prod"}],
            "fields": [
                {"id": "password", "label": "password", "value": "top"},
                {"id": "f2", "label": "password", "value": "prod-pw", "section": {"id": "s1"}},
                {"id": "f3", "label": "one-time", "type": "OTP", "value": "otpauth://x", "totp": "123456"}
            ]
        })
    }

    #[test]
    fn fields_by_label_id_section_and_otp() {
        let get = |r: &str| field_value(&item(), &Reference::parse(r).unwrap());
        assert_eq!(get("op://v/db/password").unwrap(), "top");
        assert_eq!(get("op://v/db/prod/password").unwrap(), "prod-pw");
        assert_eq!(get("op://v/db/s1/f2").unwrap(), "prod-pw");
        assert_eq!(get("op://v/db/one-time?attribute=otp").unwrap(), "123456");
        let missing = get("op://v/db/nope").unwrap_err().to_string();
        assert!(missing.contains("no field `nope`"), "{missing}");
        let section = get("op://v/db/dev/password").unwrap_err().to_string();
        assert!(section.contains("no section `dev`"), "{section}");
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain).unwrap(), (200, b"[]".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode("name eq \"home lab\""),
            "name%20eq%20%22home%20lab%22"
        );
        assert!(looks_like_id("abcdefghijklmnopqrstuvwxyz"));
        assert!(!looks_like_id("homelab"));
    }
}
