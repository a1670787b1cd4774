//! An SSH session to the target, in-process with russh: connect with a bounded
//! timeout and a host-key rule, authenticate, run commands with stdin.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect, MethodKind};

use crate::failure::Failure;
use crate::keys::{AGENT_TIMEOUT, AdminKey, Signer};
use crate::known_hosts::fingerprint;

/// Which host keys a connection accepts.
pub type HostKeyRule = Box<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// The russh handler: checks the host key against the rule and remembers it.
struct Client {
    accept: HostKeyRule,
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates are not trusted by this client: there is no CA to check them with.
            return Ok(false);
        };
        let accepted = (self.accept)(key);
        *self
            .seen
            .lock()
            .expect("the lock is never held across a panic") = Some(key.clone());
        Ok(accepted)
    }
}

/// Why a connection did not come up.
#[derive(Debug)]
pub enum ConnectError {
    /// The server showed this key and the rule refused it.
    HostKey(PublicKey),
    /// Nothing answered in time, the connection was refused, the name does not resolve.
    Unreachable(String),
}

/// What a remote command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The exit status; `None` when the command was killed by a signal.
    pub code: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    #[must_use]
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    #[must_use]
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[must_use]
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `exit status N` (or `killed by a signal`), then stderr (and stdout) trimmed:
    /// for error messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let status = self.code.map_or_else(
            || "killed by a signal".to_owned(),
            |c| format!("exit status {c}"),
        );
        let mut out = status;
        for text in [self.stderr(), self.stdout()] {
            let text = text.trim();
            if !text.is_empty() {
                out.push_str(":\n");
                out.push_str(text);
            }
        }
        out
    }
}

/// What a password attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordOutcome {
    Accepted,
    /// The server does not offer password authentication at all.
    NotOffered,
    /// The password was refused (wrong, or the user may not log in with one).
    Refused,
}

/// An authenticated (or about to be) SSH connection.
pub struct Session {
    handle: client::Handle<Client>,
    host_key: PublicKey,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_key", &fingerprint(&self.host_key))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to `host`:`port` within `timeout` (TCP, banner and key exchange),
    /// accepting the host key only when `accept` says so.
    pub async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        accept: HostKeyRule,
    ) -> Result<Self, ConnectError> {
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            ..client::Config::default()
        });
        let seen = Arc::new(Mutex::new(None));
        let handler = Client {
            accept,
            seen: Arc::clone(&seen),
        };
        let attempt = tokio::time::timeout(timeout, client::connect(config, (host, port), handler));
        let result = attempt.await;
        let seen_key = seen
            .lock()
            .expect("the lock is never held across a panic")
            .clone();
        match result {
            Ok(Ok(handle)) => Ok(Self {
                handle,
                host_key: seen_key.expect("russh checks the host key before it connects"),
            }),
            Ok(Err(e)) => match (e, seen_key) {
                (russh::Error::UnknownKey, Some(key)) => Err(ConnectError::HostKey(key)),
                (e, _) => Err(ConnectError::Unreachable(e.to_string())),
            },
            Err(_) => Err(ConnectError::Unreachable(format!(
                "no SSH server answered within {}s",
                timeout.as_secs()
            ))),
        }
    }

    /// The key the server showed.
    #[must_use]
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// Tries `password` for `user`.
    pub async fn password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<PasswordOutcome, Failure> {
        let result = self
            .handle
            .authenticate_password(user, password)
            .await
            .map_err(|e| Failure::new(format!("SSH password authentication broke off: {e}")))?;
        Ok(match result {
            russh::client::AuthResult::Success => PasswordOutcome::Accepted,
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } if !remaining_methods.contains(&MethodKind::Password) => PasswordOutcome::NotOffered,
            russh::client::AuthResult::Failure { .. } => PasswordOutcome::Refused,
        })
    }

    /// Whether the server offers password authentication to `user` (asked with the
    /// `none` method, which no server accepts for a real account).
    pub async fn offers_password(&mut self, user: &str) -> Result<bool, Failure> {
        let result = self
            .handle
            .authenticate_none(user)
            .await
            .map_err(|e| Failure::new(format!("SSH authentication broke off: {e}")))?;
        Ok(match result {
            russh::client::AuthResult::Success => true,
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => remaining_methods.contains(&MethodKind::Password),
        })
    }

    /// Tries `key` for `user` (signed with its file's private key, or by the
    /// ssh-agent); `true` when it logged in.
    pub async fn key(&mut self, user: &str, key: &AdminKey) -> Result<bool, Failure> {
        let broke = |e: &dyn std::fmt::Display| {
            Failure::new(format!("SSH key authentication broke off: {e}"))
        };
        let hash = if key.public.algorithm().is_rsa() {
            self.handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| broke(&e))?
                .flatten()
        } else {
            None
        };
        let result = match &key.signer {
            Signer::File { key: private, .. } => self
                .handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(private), hash))
                .await
                .map_err(|e| broke(&e))?,
            Signer::Agent { socket } => {
                let agent_failed = |e: &dyn std::fmt::Display| {
                    Failure::new(format!(
                        "the ssh-agent at {} did not sign with the key {}: {e}",
                        socket.display(),
                        fingerprint(&key.public)
                    ))
                    .hint("check that the agent still holds the key (ssh-add -l) and that you confirmed its use, or pass -i KEY")
                };
                let attempt = async {
                    let mut agent = AgentClient::connect_uds(socket)
                        .await
                        .map_err(|e| agent_failed(&e))?;
                    self.handle
                        .authenticate_publickey_with(user, key.public.clone(), hash, &mut agent)
                        .await
                        .map_err(|e| agent_failed(&e))
                };
                tokio::time::timeout(AGENT_TIMEOUT, attempt)
                    .await
                    .map_err(|_| {
                        agent_failed(&format!("no answer within {}s", AGENT_TIMEOUT.as_secs()))
                    })??
            }
        };
        Ok(result.success())
    }

    /// Runs `command` (a shell command line) with `stdin`, within `timeout`.
    pub async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, Failure> {
        let run = async {
            let mut channel = self.handle.channel_open_session().await?;
            channel.exec(true, command).await?;
            if !stdin.is_empty() {
                channel.data(stdin).await?;
            }
            channel.eof().await?;
            let mut out = Output::default();
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.code = Some(exit_status),
                    _ => {}
                }
            }
            Ok::<_, russh::Error>(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Failure::new(format!(
                "the SSH session broke while running a command: {e}"
            ))
            .hint("check that the host is still reachable, then run infra-bootstrap again")),
            Err(_) => Err(Failure::new(format!(
                "a command on the host did not finish within {}s",
                timeout.as_secs()
            ))),
        }
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}
