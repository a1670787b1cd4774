//! The systemd notification protocol (`sd_notify(3)`), without a library: one
//! datagram of `KEY=value` lines to the socket named by `NOTIFY_SOCKET`.
//!
//! The unit is `Type=notify`: systemd waits for `READY=1` before it calls the agent
//! started, shows `STATUS=` in `systemctl status`, and restarts the agent when
//! `WATCHDOG=1` stops arriving for `WatchdogSec=`. The watchdog is pinged from a
//! thread of its own ([`spawn_watchdog`]) that shares no lock with converge work, so a
//! package transaction running for minutes never starves it; it detects a process
//! that no longer runs at all (stopped, wedged in the kernel, out of threads).
//!
//! Outside systemd `NOTIFY_SOCKET` is unset and a [`Notifier`] does nothing, so the
//! same code runs under `--once`, in tests and in containers without systemd.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

/// The environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog timeout in microseconds, set by systemd when `WatchdogSec=` is.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog settings are meant for (absent: the main process).
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A notification that could not be sent, or a socket address that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot notify systemd through {address}: {source}\n\
         hint: systemd may have stopped listening; check `systemctl status infra-agent`"
    )]
    Send {
        address: String,
        source: std::io::Error,
    },
    #[error(
        "NOTIFY_SOCKET={value} is not a socket the agent can use: {reason}\n\
         hint: systemd sets NOTIFY_SOCKET to a path (`/run/...`) or an abstract name \
         (`@...`); unset it to run the agent outside systemd"
    )]
    Address { value: String, reason: String },
}

/// Where readiness, status and watchdog pings go; no-op when there is no socket.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The socket and the form it was given in (for messages); `None` outside systemd.
    target: Option<(SocketAddr, String)>,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`. Unset or empty: a
    /// notifier that does nothing. A value the agent cannot use is logged as a
    /// warning and also gives one that does nothing (systemd then reports the start
    /// as timed out, and the warning says why). Call it after [`crate::journal::init`],
    /// so the warning has somewhere to go.
    #[must_use]
    pub fn from_env() -> Self {
        match Self::from_value(std::env::var_os(NOTIFY_SOCKET).as_deref()) {
            Ok(notifier) => notifier,
            Err(e) => {
                log::warn!("{e}");
                Self::disabled()
            }
        }
    }

    /// The notifier for a value of `NOTIFY_SOCKET`: an absolute path, or `@name` for
    /// a Linux abstract socket. `None` or empty: a notifier that does nothing.
    pub fn from_value(value: Option<&OsStr>) -> Result<Self, Error> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self::disabled());
        };
        let shown = value.to_string_lossy().into_owned();
        let bad = |reason: &str| Error::Address {
            value: shown.clone(),
            reason: reason.to_owned(),
        };
        match value.as_bytes() {
            [b'/', ..] => Self::to_path(Path::new(value)),
            [b'@', name @ ..] => Self::to_abstract(name),
            _ if value.as_bytes().starts_with(b"vsock:") => Err(bad(
                "AF_VSOCK notification (a virtual machine's host) is not supported",
            )),
            _ => Err(bad("neither an absolute path nor an abstract name")),
        }
    }

    /// A notifier that does nothing (no systemd to tell).
    #[must_use]
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// A notifier sending to the socket at `path`.
    pub fn to_path(path: &Path) -> Result<Self, Error> {
        let address = SocketAddr::from_pathname(path).map_err(|e| Error::Address {
            value: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            target: Some((address, path.display().to_string())),
        })
    }

    /// A notifier sending to the Linux abstract socket `name` (`@name`, without the `@`).
    #[cfg(target_os = "linux")]
    pub fn to_abstract(name: &[u8]) -> Result<Self, Error> {
        use std::os::linux::net::SocketAddrExt as _;
        let shown = format!("@{}", String::from_utf8_lossy(name));
        let address = SocketAddr::from_abstract_name(name).map_err(|e| Error::Address {
            value: shown.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            target: Some((address, shown)),
        })
    }

    /// Abstract sockets exist on Linux only.
    #[cfg(not(target_os = "linux"))]
    pub fn to_abstract(name: &[u8]) -> Result<Self, Error> {
        Err(Error::Address {
            value: format!("@{}", String::from_utf8_lossy(name)),
            reason: "abstract sockets exist on Linux only".to_owned(),
        })
    }

    /// Whether notifications go anywhere.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up is done: systemd considers the unit started.
    pub fn ready(&self) -> Result<(), Error> {
        self.send("READY=1")
    }

    /// A one-line status for `systemctl status` (line breaks become spaces: the
    /// protocol is one assignment per line).
    pub fn status(&self, text: &str) -> Result<(), Error> {
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }

    /// The agent is shutting down (after SIGTERM, while it finishes its step).
    pub fn stopping(&self) -> Result<(), Error> {
        self.send("STOPPING=1")
    }

    /// The agent is reloading; send [`Notifier::ready`] when done. `MONOTONIC_USEC`
    /// is left out: only `Type=notify-reload` units need it, and this unit is
    /// `Type=notify` with `ExecReload=` sending SIGHUP.
    pub fn reloading(&self) -> Result<(), Error> {
        self.send("RELOADING=1")
    }

    /// The agent is alive ([`spawn_watchdog`] calls this).
    pub fn watchdog(&self) -> Result<(), Error> {
        self.send("WATCHDOG=1")
    }

    /// Sends `state` (one or more `KEY=value` lines) as one datagram.
    pub fn send(&self, state: &str) -> Result<(), Error> {
        let Some((address, shown)) = &self.target else {
            return Ok(());
        };
        let error = |source| Error::Send {
            address: shown.clone(),
            source,
        };
        // A socket per message: notifications are rare, and a clone of the notifier
        // (the watchdog thread's) then shares nothing with the others.
        let socket = UnixDatagram::unbound().map_err(error)?;
        socket
            .send_to_addr(state.as_bytes(), address)
            .map_err(error)?;
        Ok(())
    }
}

/// The watchdog timeout systemd expects pings within (`WATCHDOG_USEC`), when it is
/// meant for this process (`WATCHDOG_PID` unset or our pid).
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC).ok();
    let pid = std::env::var(WATCHDOG_PID).ok();
    interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    match usec?.trim().parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(usec) => Some(Duration::from_micros(usec)),
    }
}

/// Starts a thread that pings the watchdog every half of [`watchdog_interval`], as
/// `sd_watchdog_enabled(3)` advises. `None` when systemd asked for no watchdog or
/// nothing is listening.
#[must_use]
pub fn spawn_watchdog(notifier: &Notifier) -> Option<JoinHandle<()>> {
    if !notifier.is_enabled() {
        return None;
    }
    let interval = watchdog_interval()?;
    spawn_pinger(notifier.clone(), interval / 2)
}

/// Pings `notifier` every `period` from a new thread. The thread ends when the
/// socket is gone (nobody is listening any more); other send errors are logged and
/// the next ping tries again.
fn spawn_pinger(notifier: Notifier, period: Duration) -> Option<JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name("sd-watchdog".to_owned())
        .spawn(move || {
            loop {
                match notifier.watchdog() {
                    Ok(()) => {}
                    Err(Error::Send { source, .. })
                        if matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        log::warn!(
                            "the systemd notification socket is gone ({source}); \
                             the watchdog stops pinging"
                        );
                        return;
                    }
                    Err(e) => log::warn!("{e}"),
                }
                std::thread::sleep(period);
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            log::error!(
                "cannot start the watchdog thread: {e}\n\
                 hint: systemd will restart the agent when WatchdogSec= passes"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::time::Instant;

    use super::*;

    /// A socket standing in for systemd, bound in a temporary directory.
    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, path, socket)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification arrives");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn each_notification_is_one_datagram_of_assignments() {
        let (_dir, path, socket) = listener();
        let notifier = Notifier::to_path(&path).unwrap();
        assert!(notifier.is_enabled());
        notifier.ready().unwrap();
        notifier.status("converging 0a1b2c3\nstep 3 of 9").unwrap();
        notifier.watchdog().unwrap();
        notifier.reloading().unwrap();
        notifier.stopping().unwrap();
        assert_eq!(receive(&socket), "READY=1");
        assert_eq!(receive(&socket), "STATUS=converging 0a1b2c3 step 3 of 9");
        assert_eq!(receive(&socket), "WATCHDOG=1");
        assert_eq!(receive(&socket), "RELOADING=1");
        assert_eq!(receive(&socket), "STOPPING=1");
    }

    #[test]
    fn an_abstract_name_reaches_a_socket_bound_to_it() {
        use std::os::linux::net::SocketAddrExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("infra-agent-test-{}-{nanos}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let value = OsString::from(format!("@{name}"));
        let notifier = Notifier::from_value(Some(&value)).unwrap();
        notifier.ready().unwrap();
        assert_eq!(receive(&socket), "READY=1");
    }

    #[test]
    fn a_path_value_reaches_the_socket() {
        let (_dir, path, socket) = listener();
        let notifier = Notifier::from_value(Some(path.as_os_str())).unwrap();
        notifier.status("idle").unwrap();
        assert_eq!(receive(&socket), "STATUS=idle");
    }

    #[test]
    fn without_a_socket_notifications_do_nothing() {
        for value in [None, Some(OsStr::new(""))] {
            let notifier = Notifier::from_value(value).unwrap();
            assert!(!notifier.is_enabled());
            notifier.ready().unwrap();
            notifier.watchdog().unwrap();
            assert!(spawn_watchdog(&notifier).is_none());
        }
    }

    #[test]
    fn unusable_values_are_errors_that_name_them() {
        for value in ["run/systemd/notify", "vsock:2:1234"] {
            let e = Notifier::from_value(Some(OsStr::new(value))).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(value), "{text}");
            assert!(text.contains("hint:"), "{text}");
        }
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let e = Notifier::to_path(&path).unwrap().ready().unwrap_err();
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }

    #[test]
    fn watchdog_interval_comes_from_usec_for_our_pid_only() {
        let us = 4242;
        assert_eq!(
            interval_from(Some("90000000"), None, us),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            interval_from(Some("90000000"), Some("4242"), us),
            Some(Duration::from_secs(90))
        );
        assert_eq!(interval_from(Some("90000000"), Some("1"), us), None);
        assert_eq!(interval_from(Some("90000000"), Some("x"), us), None);
        assert_eq!(interval_from(None, Some("4242"), us), None);
        assert_eq!(interval_from(Some("0"), None, us), None);
        assert_eq!(interval_from(Some("2m"), None, us), None);
    }

    #[test]
    fn the_pinger_pings_repeatedly_and_ends_when_the_socket_is_gone() {
        let (dir, path, socket) = listener();
        let pinger = spawn_pinger(Notifier::to_path(&path).unwrap(), Duration::from_millis(20))
            .expect("the thread starts");
        for _ in 0..3 {
            assert_eq!(receive(&socket), "WATCHDOG=1");
        }
        drop(socket);
        drop(dir);
        let started = Instant::now();
        while !pinger.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the pinger still runs with its socket gone"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pinger.join().expect("the pinger does not panic");
    }
}
