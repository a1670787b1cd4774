//! The network transports, which only this package's libgit2 has: deadlines against
//! servers that never answer, refused connections and logins, both in process and
//! through the real `infra-agent-fetch` as the agent runs it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infra_agent::git::{Error, Fetcher, Mirror, Remote};

fn remote(url: &str) -> Remote {
    Remote::new(url, "main")
}

/// The helper as cargo built it for these tests, run the way the agent runs it.
fn helper() -> Fetcher {
    Fetcher::at(env!("CARGO_BIN_EXE_infra-agent-fetch"))
}

/// A TCP server that accepts connections and never says a word, until `release`.
struct Silent {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener
            .local_addr()
            .expect("the listener has an address")
            .port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted
                    .lock()
                    .expect("the list of held connections")
                    .push(stream);
            }
        });
        Self { port, held }
    }

    /// How many connections it accepted and holds.
    fn held(&self) -> usize {
        self.held
            .lock()
            .expect("the list of held connections")
            .len()
    }

    /// Whether the client closed every held connection: each reads to end of file
    /// within 2 s.
    fn all_closed_by_the_client(&self) -> bool {
        let held = self.held.lock().expect("the list of held connections");
        held.iter().all(|mut stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("a read timeout");
            // The client may have said hello (SSH sends its banner first); then EOF.
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
    }

    /// Closes every held connection, so whatever waits on them fails at once.
    fn release(&self) {
        for stream in self
            .held
            .lock()
            .expect("the list of held connections")
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn quick_mirror(dir: &Path) -> Mirror {
    let mut mirror = Mirror::open(dir).expect("the mirror opens");
    mirror.set_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    mirror
}

#[test]
fn a_silent_ssh_server_fails_within_the_deadline_and_is_not_retried_while_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let server = Silent::start();
    let remote = remote(&format!("ssh://git@127.0.0.1:{}/state.git", server.port));

    let started = Instant::now();
    let err = mirror.remote_tip(&remote).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the git server"),
        "{err}"
    );

    // The first attempt still hangs: no second one starts.
    let err = mirror.fetch(&remote).unwrap_err();
    assert!(matches!(err, Error::StillWaiting { .. }), "{err:?}");

    // Once the connection drops, the stuck attempt ends and a new one may start.
    server.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match mirror.remote_tip(&remote) {
            Err(Error::StillWaiting { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other.unwrap_err(),
        }
    };
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    server.release();
}

#[test]
fn a_silent_http_server_fails_within_the_deadline() {
    unreachable_through_the_helper("http");
}

/// A silent server at `scheme://127.0.0.1:PORT/` is unreachable through the helper,
/// within its 1 s deadline.
fn unreachable_through_the_helper(scheme: &str) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let server = Silent::start();
    let remote = remote(&format!("{scheme}://127.0.0.1:{}/state.git", server.port));
    let started = Instant::now();
    let err = helper()
        .update(&mirror, &remote)
        .expect_err("a silent server cannot answer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, Error::Unreachable { .. }),
        "{scheme}: {err:?}"
    );
    server.release();
}

#[test]
fn a_refused_connection_is_a_network_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let err = helper()
        .update(
            &mirror,
            &remote(&format!("ssh://git@127.0.0.1:{port}/state.git")),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the git server"),
        "{err}"
    );
}

#[test]
fn a_login_over_plain_http_is_refused() {
    // A server that asks every request for a login.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let mut remote = remote(&format!("http://127.0.0.1:{port}/state.git"));
    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    remote.token_file = Some(token);
    let err = helper().update(&mirror, &remote).unwrap_err();
    assert!(matches!(err, Error::PlainHttpLogin { .. }), "{err:?}");
    assert!(err.to_string().contains("https://"), "{err}");
}

#[test]
fn through_the_helper_a_hung_attempt_ends_with_its_process() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let server = Silent::start();
    let remote = remote(&format!("ssh://git@127.0.0.1:{}/state.git", server.port));
    for attempt in 1..=2 {
        let started = Instant::now();
        let err = helper().update(&mirror, &remote).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Never StillWaiting: the stuck connection went with the helper that made it.
        assert!(
            matches!(err, Error::Unreachable { .. }),
            "attempt {attempt}: {err:?}"
        );
        assert!(err.to_string().contains("within 1 s"), "{err}");
    }
    assert_eq!(server.held(), 2, "each helper connected once");
    assert!(
        server.all_closed_by_the_client(),
        "a helper that gave up left its connection open"
    );
    server.release();
}

#[test]
fn the_helper_has_https() {
    // A silent server on https:// is unreachable, not an unsupported protocol: TLS is
    // built into the helper, as ssh is in the test above.
    unreachable_through_the_helper("https");
}

#[test]
fn the_helper_fetches_a_file_url_into_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let git = |args: &[&str]| {
        let out = infra_agent::process::run(
            &infra_agent::process::Cmd::new("git")
                .args(["-C", origin.to_str().expect("UTF-8 paths")])
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args.iter().copied())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null"),
        )
        .expect("git runs");
        assert!(out.success(), "git {args:?}: {}", out.message());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    std::fs::create_dir(&origin).unwrap();
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(origin.join("infra.toml"), "format = 1\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    let head = git(&["rev-parse", "HEAD"]);
    let mirror = quick_mirror(&tmp.path().join("repo.git"));
    let remote = remote(&format!("file://{}", origin.display()));
    assert_eq!(helper().update(&mirror, &remote).unwrap(), head);
    assert!(
        mirror.has_commit(&head),
        "the helper fetched into the mirror"
    );
}
