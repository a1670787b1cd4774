//! The `user@host` argument.

use crate::failure::Failure;

/// Where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
}

impl Target {
    /// Parses `user@host` (`[v6]` brackets allowed around the host); a bare host
    /// means `root@host`.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let (user, host) = match text.rsplit_once('@') {
            Some((user, host)) => (user, host),
            None => ("root", text),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let valid_user = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_user || host.is_empty() || host.contains(char::is_whitespace) {
            return Err(Failure::new(format!("`{text}` is not a target")).hint(
                "write the target as USER@HOST: root@203.0.113.7, or admin@host.lan with --sudo",
            ));
        }
        Ok(Self {
            user: user.to_owned(),
            host: host.to_owned(),
        })
    }

    /// Whether commands run as root without sudo.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.user == "root"
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_host() {
        let t = Target::parse("root@203.0.113.7").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str()), ("root", "203.0.113.7"));
        assert!(t.is_root());
        let t = Target::parse("alice@[2001:db8::1]").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str()), ("alice", "2001:db8::1"));
        assert!(!t.is_root());
        assert_eq!(Target::parse("media-01.lan").unwrap().user, "root");
    }

    #[test]
    fn refuses_what_is_not_a_target() {
        for bad in ["@host", "root@", "bad user@host", "a@b c"] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.message.contains("is not a target"), "{bad}: {err:?}");
            assert!(err.hint.is_some());
        }
    }
}
