//! What a repository location names: its transport, and for network transports the
//! user, host and port (for credentials and host key pinning).

use std::path::Path;

/// How a location is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `ssh://` and scp-like `user@host:path`.
    Ssh,
    Https,
    /// Plain HTTP: no token is ever sent over it.
    Http,
    /// `git://`: unauthenticated, read-only.
    Git,
    /// `file://` or a plain path to a repository.
    Local,
    /// A `scheme://` libgit2 does not speak; the name is kept for the message.
    Unsupported(String),
}

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Location {
    /// Parses a URL or scp-like location; `None` for a plain path.
    pub(crate) fn parse(s: &str) -> Result<Option<Self>, String> {
        if let Some((scheme, rest)) = s.split_once("://")
            && !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "ssh" | "git+ssh" | "ssh+git" => Scheme::Ssh,
                "https" => Scheme::Https,
                "http" => Scheme::Http,
                "git" => Scheme::Git,
                "file" => Scheme::Local,
                other => Scheme::Unsupported(other.to_owned()),
            };
            if matches!(scheme, Scheme::Local | Scheme::Unsupported(_)) {
                return Ok(Some(Self::local(scheme)));
            }
            let authority = rest.split('/').next().unwrap_or_default();
            let (user, hostport) = match authority.rsplit_once('@') {
                Some((userinfo, hostport)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    ((!user.is_empty()).then(|| user.to_owned()), hostport)
                }
                None => (None, authority),
            };
            let (host, port) = split_host_port(hostport)?;
            return Ok(Some(Self {
                scheme,
                user,
                host,
                port,
            }));
        }
        // scp-like: `[user@]host:path`, with no `/` before the first `:` (git's rule).
        if let Some((before, _path)) = s.split_once(':')
            && !before.is_empty()
            && !before.contains('/')
        {
            let (user, host) = match before.rsplit_once('@') {
                Some((user, host)) => ((!user.is_empty()).then(|| user.to_owned()), host),
                None => (None, before),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err("the host name is empty".to_owned());
            }
            return Ok(Some(Self {
                scheme: Scheme::Ssh,
                user,
                host: host.to_owned(),
                port: None,
            }));
        }
        Ok(None)
    }

    fn local(scheme: Scheme) -> Self {
        Self {
            scheme,
            user: None,
            host: String::new(),
            port: None,
        }
    }

    /// Parses any location: a plain path is a local repository.
    pub(crate) fn parse_any(s: &str) -> Result<Self, String> {
        Ok(Self::parse(s)?.unwrap_or_else(|| Self::local(Scheme::Local)))
    }

    /// Whether reaching it goes over the network (and so needs a deadline).
    pub(crate) fn is_network(&self) -> bool {
        matches!(
            self.scheme,
            Scheme::Ssh | Scheme::Https | Scheme::Http | Scheme::Git
        )
    }

    /// The port, or the scheme's default.
    pub(crate) fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
            Scheme::Git => 9418,
            _ => 22,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address in [brackets] is not closed".to_owned())?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the host name is empty".to_owned());
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("the port `{p}` is not a number from 1 to 65535"))?,
        ),
    };
    Ok((host.to_owned(), port))
}

/// Whether a plain path is a git repository: a work tree with `.git` (a directory, or
/// a file as in worktrees), or a bare repository (`HEAD`, `objects/`, `refs/`).
/// Reads the file system only; libgit2 is not touched.
pub(crate) fn is_repository_dir(path: &Path) -> bool {
    path.join(".git").exists()
        || (path.join("HEAD").is_file()
            && path.join("objects").is_dir()
            && path.join("refs").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Location {
        Location::parse(s).unwrap().unwrap()
    }

    #[test]
    fn ssh_urls() {
        let l = parse("ssh://deploy@git.example.com:2222/infra/state.git");
        assert_eq!(l.scheme, Scheme::Ssh);
        assert_eq!(l.user.as_deref(), Some("deploy"));
        assert_eq!(l.host, "git.example.com");
        assert_eq!(l.port, Some(2222));
        let l = parse("ssh://git.example.com/state.git");
        assert_eq!((l.user.as_deref(), l.port_or_default()), (None, 22));
        let l = parse("ssh://git@[fd00::1]:22/x");
        assert_eq!((l.host.as_str(), l.port), ("fd00::1", Some(22)));
    }

    #[test]
    fn scp_like() {
        let l = parse("git@github.com:example/state.git");
        assert_eq!(l.scheme, Scheme::Ssh);
        assert_eq!(l.user.as_deref(), Some("git"));
        assert_eq!(l.host, "github.com");
        assert_eq!(l.port, None);
        let l = parse("gitserver:state.git");
        assert_eq!((l.user.as_deref(), l.host.as_str()), (None, "gitserver"));
    }

    #[test]
    fn https_and_others() {
        let l = parse("https://bot:secret@git.example.com/state.git");
        assert_eq!(l.scheme, Scheme::Https);
        assert_eq!(l.user.as_deref(), Some("bot"));
        assert_eq!(l.port_or_default(), 443);
        assert_eq!(parse("http://h/x").scheme, Scheme::Http);
        assert_eq!(parse("git://h/x").scheme, Scheme::Git);
        assert_eq!(parse("file:///srv/state.git").scheme, Scheme::Local);
        assert_eq!(
            parse("ftp://h/x").scheme,
            Scheme::Unsupported("ftp".to_owned())
        );
        assert!(Location::parse("ssh://h:99999/x").is_err());
        assert!(Location::parse("https:///x").is_err());
    }

    #[test]
    fn plain_paths() {
        assert_eq!(Location::parse("/srv/state").unwrap(), None);
        assert_eq!(Location::parse("./state").unwrap(), None);
        assert_eq!(Location::parse("../a:b").unwrap(), None);
        assert_eq!(Location::parse("state").unwrap(), None);
        assert!(!parse_any_is_network("/srv/state"));
    }

    fn parse_any_is_network(s: &str) -> bool {
        Location::parse_any(s).unwrap().is_network()
    }
}
