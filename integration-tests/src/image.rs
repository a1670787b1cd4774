//! The Debian bookworm base image, built from Debian's packages (no registry, no
//! pulls) by `integration-tests/images/bookworm.sh` and cached under a tag that names
//! a hash of that recipe.

use std::fs::{File, TryLockError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::docker::Docker;
use crate::process;

/// The recipe; its text decides the tag.
pub const RECIPE: &str = include_str!("../images/bookworm.sh");
/// The lock that keeps concurrent test processes from building the image twice.
pub const LOCK_FILE: &str = "/tmp/home-infra-test-image.lock";
/// Bound on one build (2 to 4 minutes here).
pub const BUILD_TIMEOUT: Duration = Duration::from_mins(20);

/// `home-infra-test/bookworm:<hash of the recipe>`.
#[must_use]
pub fn base_tag() -> String {
    format!("home-infra-test/bookworm:{:016x}", fnv1a(RECIPE.as_bytes()))
}

/// The base image's tag, built first if it is missing. Built at most once on the
/// machine at a time: threads of one process wait for the first, other processes for
/// the holder of [`LOCK_FILE`] (an advisory lock the kernel drops when its holder dies).
#[must_use]
pub fn base_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let docker = Docker::require();
        let tag = base_tag();
        if docker.image_exists(&tag) {
            return tag;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        let start = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < BUILD_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(TryLockError::WouldBlock) => panic!(
                    "another process held {LOCK_FILE} for {BUILD_TIMEOUT:?} while building {tag}"
                ),
                Err(TryLockError::Error(e)) => panic!("cannot lock {LOCK_FILE}: {e}"),
            }
        }
        if !docker.image_exists(&tag) {
            build(&tag);
        }
        drop(lock);
        tag
    })
    .clone()
}

fn build(tag: &str) {
    eprintln!("building the test base image {tag} from Debian's packages (a few minutes, once)");
    let start = Instant::now();
    let out = process::run(
        docker_env(process::command("bash").args(["-c", RECIPE, "bookworm.sh", tag])),
        None,
        BUILD_TIMEOUT,
    );
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        out.success(),
        "building {tag} failed (exit {}); see integration-tests/images/bookworm.sh\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
        out.code,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    eprintln!("built {tag} in {:.0?}", start.elapsed());
}

fn docker_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("DOCKER_API_VERSION", crate::docker::api_version())
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
