//! Commands on the target through the first session: as the login user, or as root
//! (directly, or through sudo), and uploads through a private temporary directory.
//!
//! Everything runs as `sh -c SCRIPT sh ARG...` with every argument quoted, so no
//! value the bootstrap sends is ever read as shell syntax.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::failure::Failure;
use crate::ssh::{Output, Session};

/// Bound on an ordinary command (checks, installs, systemctl).
pub const SHORT: Duration = Duration::from_mins(2);
/// Bound on uploads and on the first converge (which may install packages).
pub const LONG: Duration = Duration::from_mins(30);

/// How commands become root on the target.
#[derive(Debug, Clone)]
pub enum Root {
    /// The session is root.
    Direct,
    /// `sudo -S` with this password on stdin.
    SudoPassword(String),
    /// `sudo -n`: the user needs no password (NOPASSWD).
    SudoNoPassword,
}

/// The first session, and how it becomes root.
#[derive(Debug)]
pub struct Remote<'a> {
    pub session: &'a Session,
    pub root: Root,
}

/// Quotes `s` for a POSIX shell.
#[must_use]
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `sh -c SCRIPT sh ARG...`, quoted.
#[must_use]
pub fn command_line(script: &str, args: &[&str]) -> String {
    let mut line = format!("sh -c {} sh", quote(script));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// `key=value` lines (as the check script prints them) as a map.
#[must_use]
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

impl Remote<'_> {
    /// Runs `script` as the login user.
    pub async fn user(
        &self,
        script: &str,
        args: &[&str],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, Failure> {
        self.session
            .exec(&command_line(script, args), stdin, timeout)
            .await
    }

    /// Runs `script` as root. Its stdin is empty (under `sudo -S` it carries the
    /// password), so whatever a root command reads is uploaded first.
    pub async fn root(
        &self,
        script: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, Failure> {
        let line = command_line(script, args);
        match &self.root {
            Root::Direct => self.session.exec(&line, b"", timeout).await,
            Root::SudoPassword(password) => {
                let stdin = format!("{password}\n");
                self.session
                    .exec(
                        &format!("sudo -S -p '' -- {line}"),
                        stdin.as_bytes(),
                        timeout,
                    )
                    .await
            }
            Root::SudoNoPassword => {
                self.session
                    .exec(&format!("sudo -n -- {line}"), b"", timeout)
                    .await
            }
        }
    }

    /// Like [`Remote::root`], failing with `what` and the command's output unless it
    /// exits 0. Returns stdout.
    pub async fn root_ok(
        &self,
        what: &str,
        script: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, Failure> {
        let out = self.root(script, args, timeout).await?;
        if out.success() {
            Ok(out.stdout())
        } else {
            Err(Failure::new(format!(
                "{what} failed on the host: {}",
                out.describe()
            )))
        }
    }

    /// Makes a private (0700) temporary directory owned by the login user.
    pub async fn temp_dir(&self) -> Result<String, Failure> {
        let out = self
            .user("mktemp -d /tmp/infra-bootstrap.XXXXXX", &[], b"", SHORT)
            .await?;
        let dir = out.stdout().trim().to_owned();
        if !out.success() || dir.is_empty() {
            return Err(Failure::new(format!(
                "cannot create a temporary directory under /tmp on the host: {}",
                out.describe()
            ))
            .hint("check that /tmp exists and is writable on the host"));
        }
        Ok(dir)
    }

    /// Writes `content` to `path` as the login user (mode 0600).
    pub async fn upload(&self, path: &str, content: &[u8]) -> Result<(), Failure> {
        let out = self
            .user("umask 077 && cat > \"$1\"", &[path], content, LONG)
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "uploading {path} to the host failed: {}",
                out.describe()
            ))
            .hint("check the free space under /tmp on the host"))
        }
    }

    /// Removes a directory made by [`Remote::temp_dir`] (best effort).
    pub async fn remove_dir(&self, dir: &str) {
        let _ = self.user("rm -rf -- \"$1\"", &[dir], b"", SHORT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_argument() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(
            command_line("echo \"$1\"", &["a b", "$(x)"]),
            r#"sh -c 'echo "$1"' sh 'a b' '$(x)'"#
        );
    }

    #[test]
    fn reads_key_value_lines() {
        let kv = key_values("id=debian\npretty=Debian GNU/Linux 12 (bookworm)\nnoise\n");
        assert_eq!(kv["id"], "debian");
        assert_eq!(kv["pretty"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(kv.len(), 2);
    }
}
