//! The operator's keys: the private key of `-i KEY`, or the keys held by the
//! operator's ssh-agent (`SSH_AUTH_SOCK`) when there is no `-i`. One of them must be
//! among the host's `data.admin.keys`: it proves the admin login after the first
//! converge ([`AdminKey`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PublicKey};

use crate::failure::Failure;
use crate::known_hosts::fingerprint;
use crate::state;

/// Bound on one exchange with the ssh-agent (it answers from memory, or asks the
/// operator to confirm a key).
pub const AGENT_TIMEOUT: Duration = Duration::from_mins(1);

/// How many of the agent's keys the first login tries before the password: sshd
/// counts each refused key against `MaxAuthTries` (6 by default).
pub const MAX_LOGIN_KEYS: usize = 3;

/// What signs for a key.
#[derive(Clone)]
pub enum Signer {
    /// A private key read from a file (`-i`).
    File { path: PathBuf, key: Arc<PrivateKey> },
    /// The ssh-agent listening on this socket.
    Agent { socket: PathBuf },
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, .. } => f.debug_struct("File").field("path", path).finish(),
            Self::Agent { socket } => f.debug_struct("Agent").field("socket", socket).finish(),
        }
    }
}

/// One key the bootstrap logs in with: its public half and what signs with it.
#[derive(Debug, Clone)]
pub struct AdminKey {
    pub public: PublicKey,
    /// The agent's comment for the key (usually the file it was added from).
    pub comment: String,
    pub signer: Signer,
}

impl AdminKey {
    /// `SHA256:...`, and where the key is: `(ssh-agent: comment)` for an agent key.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.signer {
            Signer::File { .. } => fingerprint(&self.public),
            Signer::Agent { .. } if self.comment.is_empty() => {
                format!("{} (ssh-agent)", fingerprint(&self.public))
            }
            Signer::Agent { .. } => {
                format!(
                    "{} (ssh-agent: {})",
                    fingerprint(&self.public),
                    self.comment
                )
            }
        }
    }

    /// How the operator names the key: the file of `-i`, or its fingerprint in the agent.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.signer {
            Signer::File { path, .. } => path.display().to_string(),
            Signer::Agent { .. } => format!("the ssh-agent key {}", fingerprint(&self.public)),
        }
    }

    /// The `ssh` command line part that selects the key: `-i FILE`, or nothing for
    /// an agent key (ssh uses the agent on its own).
    #[must_use]
    pub fn ssh_option(&self) -> String {
        match &self.signer {
            Signer::File { path, .. } => format!(" -i {}", path.display()),
            Signer::Agent { .. } => String::new(),
        }
    }
}

/// The keys the operator holds: one private key file, or an ssh-agent's keys.
#[derive(Debug, Clone)]
pub struct OperatorKeys {
    keys: Vec<AdminKey>,
    /// `-i FILE` or `the ssh-agent at SOCKET`, for messages.
    source: String,
    agent: bool,
}

impl OperatorKeys {
    /// Loads the private key of `-i`. An encrypted key is refused with a pointer to
    /// the ssh-agent: infra-bootstrap does not ask for key passphrases.
    pub fn from_file(path: &Path) -> Result<Self, Failure> {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| match e {
            russh::keys::Error::KeyIsEncrypted => Failure::new(format!(
                "the private key {} is encrypted with a passphrase, and infra-bootstrap does not ask for key passphrases",
                path.display()
            ))
            .hint(format!(
                "add it to your ssh-agent (ssh-add {}) and run infra-bootstrap without -i: it then uses the agent",
                path.display()
            )),
            e => Failure::new(format!("cannot load the private key {}: {e}", path.display())).hint(
                "pass -i with an OpenSSH private key; an encrypted one goes into your ssh-agent (ssh-add KEY), and infra-bootstrap without -i uses the agent",
            ),
        })?;
        Ok(Self {
            keys: vec![AdminKey {
                public: key.public_key().clone(),
                comment: String::new(),
                signer: Signer::File {
                    path: path.to_owned(),
                    key: Arc::new(key),
                },
            }],
            source: format!("-i {}", path.display()),
            agent: false,
        })
    }

    /// The keys of the ssh-agent at `socket` (the value of `SSH_AUTH_SOCK`), in the
    /// agent's order. Certificates are left out: the admin keys are plain keys.
    pub async fn from_agent(socket: &OsString) -> Result<Self, Failure> {
        let socket = PathBuf::from(socket);
        let hint =
            "start one and add the admin key (eval \"$(ssh-agent)\"; ssh-add KEY), or pass -i KEY";
        let identities = tokio::time::timeout(AGENT_TIMEOUT, async {
            let mut client = AgentClient::connect_uds(&socket).await?;
            client.request_identities().await
        })
        .await
        .map_err(|_| {
            Failure::new(format!(
                "the ssh-agent at {} did not answer within {}s",
                socket.display(),
                AGENT_TIMEOUT.as_secs()
            ))
            .hint(hint)
        })?
        .map_err(|e| {
            Failure::new(format!(
                "cannot reach the ssh-agent at {} (SSH_AUTH_SOCK): {e}",
                socket.display()
            ))
            .hint(hint)
        })?;
        let keys: Vec<AdminKey> = identities
            .into_iter()
            .filter_map(|identity| match identity {
                AgentIdentity::PublicKey { key, comment } => Some(AdminKey {
                    public: key,
                    comment,
                    signer: Signer::Agent {
                        socket: socket.clone(),
                    },
                }),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect();
        if keys.is_empty() {
            return Err(Failure::new(format!(
                "the ssh-agent at {} (SSH_AUTH_SOCK) holds no keys, and there is no -i KEY",
                socket.display()
            ))
            .hint("add the private half of a key listed in data.admin.keys (ssh-add KEY), or pass -i KEY"));
        }
        Ok(Self {
            keys,
            source: format!("the ssh-agent at {}", socket.display()),
            agent: true,
        })
    }

    /// Every key, in order.
    #[must_use]
    pub fn all(&self) -> &[AdminKey] {
        &self.keys
    }

    /// The keys the first login tries before a password: the `-i` key, or the
    /// agent's first [`MAX_LOGIN_KEYS`].
    #[must_use]
    pub fn login_candidates(&self) -> &[AdminKey] {
        &self.keys[..self.keys.len().min(MAX_LOGIN_KEYS)]
    }

    /// The first key that is one of `admin_keys`, or a refusal naming the keys held
    /// and the host: after the first converge nobody could prove the admin login.
    pub fn choose(&self, admin_keys: &[PublicKey], hostname: &str) -> Result<AdminKey, Failure> {
        if let Some(key) = self
            .keys
            .iter()
            .find(|k| state::key_listed(admin_keys, &k.public))
        {
            return Ok(key.clone());
        }
        let held: Vec<String> = self.keys.iter().map(AdminKey::describe).collect();
        if self.agent {
            Err(Failure::new(format!(
                "none of the keys in {} ({}) is among the admin keys of `{hostname}` (data.admin.keys); after the first converge nobody could prove the admin login with them",
                self.source,
                held.join(", ")
            ))
            .hint("add the admin key to the agent (ssh-add KEY), pass -i with it, or add the public half of one of these keys to data.admin.keys and push"))
        } else {
            Err(Failure::new(format!(
                "the key {} ({}) is not among the admin keys of `{hostname}` (data.admin.keys); after the first converge nobody could log in with it",
                held.join(", "),
                self.source
            ))
            .hint("add its public half to data.admin.keys and push, or pass -i with a key that is listed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvbWUtaW5mcmEgZXhhbXBsZSBrZXk6IG5vdCByZWFs";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFub3RoZXIgZmFrZSBrZXkgZm9yIHRoZSBleGFtcGxl";

    fn agent_keys(lines: &[&str]) -> OperatorKeys {
        OperatorKeys {
            keys: lines
                .iter()
                .enumerate()
                .map(|(i, l)| AdminKey {
                    public: PublicKey::from_openssh(l).unwrap(),
                    comment: format!("key{i}"),
                    signer: Signer::Agent {
                        socket: PathBuf::from("/run/agent.sock"),
                    },
                })
                .collect(),
            source: "the ssh-agent at /run/agent.sock".to_owned(),
            agent: true,
        }
    }

    #[test]
    fn chooses_the_first_agent_key_that_is_an_admin_key() {
        let keys = agent_keys(&[B, A]);
        let admin = vec![PublicKey::from_openssh(A).unwrap()];
        let chosen = keys.choose(&admin, "lab-01").unwrap();
        assert_eq!(chosen.comment, "key1");
        assert!(chosen.describe().ends_with("(ssh-agent: key1)"));
        assert_eq!(chosen.ssh_option(), "");
    }

    #[test]
    fn refuses_when_no_held_key_is_an_admin_key() {
        let keys = agent_keys(&[B]);
        let admin = vec![PublicKey::from_openssh(A).unwrap()];
        let err = keys.choose(&admin, "lab-01").unwrap_err();
        assert!(
            err.message.contains("none of the keys in the ssh-agent"),
            "{err:?}"
        );
        assert!(err.message.contains("`lab-01`"), "{err:?}");
        assert!(err.message.contains(&fingerprint(&keys.all()[0].public)));
        assert!(err.hint.unwrap().contains("ssh-add"));
    }

    #[test]
    fn the_first_login_tries_a_bounded_number_of_agent_keys() {
        let keys = agent_keys(&[A, B, A, B, A]);
        assert_eq!(keys.login_candidates().len(), MAX_LOGIN_KEYS);
        assert_eq!(agent_keys(&[A]).login_candidates().len(), 1);
    }

    #[test]
    fn a_missing_key_file_is_explained() {
        let err = OperatorKeys::from_file(Path::new("/nonexistent/id_ed25519")).unwrap_err();
        assert!(err.message.contains("/nonexistent/id_ed25519"), "{err:?}");
        assert!(err.hint.unwrap().contains("ssh-agent"));
    }

    #[tokio::test]
    async fn an_absent_agent_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let socket = OsString::from(dir.path().join("no-agent.sock"));
        let err = OperatorKeys::from_agent(&socket).await.unwrap_err();
        assert!(
            err.message.contains("cannot reach the ssh-agent"),
            "{err:?}"
        );
        assert!(err.hint.unwrap().contains("-i KEY"));
    }
}
