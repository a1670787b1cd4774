//! The `op` backend: the 1Password CLI with a service-account token.
//!
//! Each reference is one `op read --no-newline REF`. The token is read from
//! `op_token_file` at that moment and reaches `op` in its environment
//! (`OP_SERVICE_ACCOUNT_TOKEN`), never on its command line, where any user could
//! read it in /proc.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Backend, Error, Reference, Secret, brief, read_token};
use crate::process::Cmd;

/// How long one `op read` may take.
const TIMEOUT: Duration = Duration::from_mins(1);

/// The 1Password CLI.
#[derive(Debug, Clone)]
pub struct OpCli {
    program: String,
    token_file: PathBuf,
}

impl OpCli {
    #[must_use]
    pub fn new(program: &str, token_file: &Path) -> Self {
        Self {
            program: program.to_owned(),
            token_file: token_file.to_owned(),
        }
    }
}

impl Backend for OpCli {
    fn read(&self, reference: &Reference) -> Result<Secret, Error> {
        let token = read_token(&self.token_file, "op_token_file")?;
        let cmd = Cmd::new(&self.program)
            .args(["read", "--no-newline", reference.as_str()])
            .env("OP_SERVICE_ACCOUNT_TOKEN", token.expose())
            .timeout(TIMEOUT);
        let out = crate::process::run(&cmd).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Failed(format!(
                    "the 1Password CLI `{}` is not installed\nhint: install it (https://developer.1password.com/docs/cli/get-started/) or set op_path in agent.toml",
                    self.program
                ))
            } else {
                Error::Failed(format!("cannot run the 1Password CLI `{}`: {e}", self.program))
            }
        })?;
        if out.timed_out {
            return Err(Error::Unreachable(format!(
                "`op read` did not answer within {}s and was killed (is 1Password reachable from this host?)",
                TIMEOUT.as_secs()
            )));
        }
        if out.success() {
            return String::from_utf8(out.stdout).map(Secret::new).map_err(|_| {
                Error::Failed(
                    "the value is not UTF-8 text; only text secrets are supported".to_owned(),
                )
            });
        }
        Err(classify(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// What `op` said on failure, as an [`Error`]. Its messages are about the request
/// (the reference, the vault), never a value.
fn classify(stderr: &str) -> Error {
    let message = format!("op: {}", brief(stderr));
    let lower = stderr.to_lowercase();
    if lower.contains("too many requests") || lower.contains("rate limit") {
        Error::RateLimited(message)
    } else if lower.contains("isn't a vault")
        || lower.contains("isn't an item")
        || lower.contains("isn't a field")
        || lower.contains("not found")
        || lower.contains("no item")
        || lower.contains("could not find")
        || lower.contains("does not have a field")
    {
        Error::NotFound(message)
    } else if lower.contains("connection")
        || lower.contains("no such host")
        || lower.contains("timeout")
        || lower.contains("network")
    {
        Error::Unreachable(message)
    } else {
        Error::Failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified() {
        assert!(matches!(
            classify("[ERROR] 2024/05/01 10:00:00 Too many requests"),
            Error::RateLimited(_)
        ));
        assert!(matches!(
            classify(
                "[ERROR] could not read secret 'op://v/i/f': \"i\" isn't an item in the \"v\" vault"
            ),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify("dial tcp: lookup my.1password.com: no such host"),
            Error::Unreachable(_)
        ));
        assert!(matches!(classify("invalid token"), Error::Failed(_)));
    }
}
