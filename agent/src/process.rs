//! The one module that starts processes. Commands are typed (program, argv,
//! environment, stdin): nothing here goes through a shell unless a step asks for one
//! explicitly, and environment values can be marked sensitive so they are never shown.

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

/// A command to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the agent's environment. Values may be secrets: they are passed to the
    /// child and never printed (see [`Cmd::display`]).
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Killed after this long; `None` waits forever.
    pub timeout: Option<Duration>,
}

impl Cmd {
    #[must_use]
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command line for messages: program and arguments, shell-quoted where needed;
    /// environment names without their values.
    #[must_use]
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=…")).collect();
        parts.push(quote(&self.program));
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What a finished command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit code; `None` when a signal ended it (or the timeout killed it).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

impl CmdOutput {
    #[must_use]
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard error (or output, when error is empty) as text, trimmed, for messages.
    #[must_use]
    pub fn message(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr).trim().to_owned();
        if err.is_empty() {
            String::from_utf8_lossy(&self.stdout).trim().to_owned()
        } else {
            err
        }
    }
}

/// Wall time spent waiting for programs this process ran, in microseconds.
static PROGRAMS_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long this process has waited for the programs it ran (apt, systemctl, ...), so
/// a run can tell its own time from theirs.
#[must_use]
pub fn programs_time() -> Duration {
    Duration::from_micros(PROGRAMS_MICROS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &Cmd) -> std::io::Result<CmdOutput> {
    let started = std::time::Instant::now();
    let result = run_inner(cmd);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    PROGRAMS_MICROS.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    result
}

/// Runs a command to completion with this process's standard output and error, and
/// returns its exit code (`None` when a signal ended it). The daemon runs each converge
/// this way: the child's lines reach the journal stream the daemon writes to.
pub fn run_inheriting_output(cmd: &Cmd) -> std::io::Result<Option<i32>> {
    let mut command = command(cmd);
    command.stdin(Stdio::null());
    Ok(command.status()?.code())
}

/// Runs a command with `cmd.stdin` on its standard input, its standard output
/// captured and its standard error shared with this process; returns its exit code and
/// what it wrote on standard output. The daemon hands cached secrets to a converge and
/// takes them back this way: through pipes only.
pub fn run_with_pipes(cmd: &Cmd) -> std::io::Result<(Option<i32>, Vec<u8>)> {
    let mut command = command(cmd);
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        let input = cmd.stdin.clone().unwrap_or_default();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let output = child.wait_with_output()?;
    Ok((output.status.code(), output.stdout))
}

/// The program, its arguments and environment, as every process the agent starts gets
/// them.
fn command(cmd: &Cmd) -> std::process::Command {
    #[allow(clippy::disallowed_methods, reason = "this is the process module")]
    let mut command = std::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        // The daemon's systemd notification socket and watchdog are its own: a program
        // it runs must not ping or signal readiness in its name.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(cmd.env.iter().map(|(k, v)| (k, v)));
    command
}

fn run_inner(cmd: &Cmd) -> std::io::Result<CmdOutput> {
    let mut command = command(cmd);
    command
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    if let (Some(input), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
        let input = input.clone();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let mut stdout = child
        .stdout
        .take()
        .expect("stdout is piped, because we set it");
    let mut stderr = child
        .stderr
        .take()
        .expect("stderr is piped, because we set it");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    // A thread waits for the child, so the agent learns of its exit at once rather
    // than at the next poll; the timeout is a bounded wait on that thread's answer.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match cmd.timeout {
        None => rx.recv(),
        Some(limit) => match rx.recv_timeout(limit) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                kill(pid);
                rx.recv()
            }
            Ok(status) => Ok(status),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(std::sync::mpsc::RecvError),
        },
    }
    .map_err(|_| {
        std::io::Error::other("the thread waiting for the command ended without an answer")
    })??;
    Ok(CmdOutput {
        code: status.code(),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
        timed_out,
    })
}

/// Kills a child that ran out of time. Its waiter has not answered, so it was not
/// reaped before the timeout; should it exit and be reaped in the instant before the
/// signal, the pid is not reused that fast.
fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_args_env_and_stdin() {
        let mut cmd = Cmd::new("sh")
            .args(["-c", "read x; echo \"$x $GREETING $0\"", "argv0"])
            .env("GREETING", "hi");
        cmd.stdin = Some(b"from-stdin\n".to_vec());
        let out = run(&cmd).unwrap();
        assert!(out.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "from-stdin hi argv0\n"
        );
    }

    #[test]
    fn reports_exit_code_and_stderr() {
        let out = run(&Cmd::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.message(), "oops");
    }

    #[test]
    fn timeout_kills() {
        let out = run(&Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100)))
        .unwrap();
        assert!(out.timed_out);
        assert!(!out.success());
    }

    #[test]
    fn display_hides_env_values_and_quotes() {
        let cmd = Cmd::new("tailscale")
            .args(["up", "--hostname=a b"])
            .env("TOKEN", "s3cret");
        assert_eq!(cmd.display(), "TOKEN=… tailscale up '--hostname=a b'");
        assert!(!cmd.display().contains("s3cret"));
    }
}
