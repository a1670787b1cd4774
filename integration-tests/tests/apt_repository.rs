//! `apt_repository` on a real Debian bookworm host, against a local apt repository the
//! test builds and serves inside the container: a package `infra-test-hello` made with
//! `dpkg-deb --build`, indexed with `apt-ftparchive`, its `Release` signed with a
//! throwaway `gpg` key, served by `busybox httpd` on 127.0.0.1. Only Debian's mirror is
//! contacted (for gpg and busybox-static).

use integration_tests::{DebPackage, Output, TestHost, apt_repo, write_tree};

const REPO: &str = "/srv/state";
const PORT: &str = "8099";
const SOURCES: &str = "/etc/apt/sources.list.d/local.sources";
const KEYRING: &str = "/etc/apt/keyrings/local.asc";
const HELLO: &str = "/usr/share/infra-test/hello";

/// Builds, signs and serves the repository at `http://127.0.0.1:8099/debian`; returns the
/// armored public key.
fn serve_local_repository(host: &TestHost) -> String {
    let hello =
        DebPackage::new("infra-test-hello", "1.0").file(HELLO, "hello from the local repository\n");
    apt_repo::serve(host, PORT.parse().expect("a port"), &[hello])
}

fn role(key: &str) -> String {
    format!(
        "[[step]]\nid = \"repo\"\ntype = \"apt_repository\"\nname = \"local\"\nuris = \"http://127.0.0.1:{PORT}/debian\"\nsuites = \"stable\"\ncomponents = [\"main\"]\n{key}\n\n[[step]]\nid = \"hello\"\ntype = \"package\"\nnames = [\"infra-test-hello\"]\nrequires = [\"repo\"]\n"
    )
}

fn install_repo(host: &TestHost, role: &str, key: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inventory = format!(
        "[groups.all]\nroles = [\"main\"]\n\n[groups.lab]\nhosts = [\"{}\"]\n",
        host.hostname()
    );
    write_tree(
        dir.path(),
        &[
            ("infra.toml", "format = 1\n"),
            ("inventory/production.toml", &inventory),
            ("roles/main.toml", role),
            ("files/keys/local.asc", key),
        ],
    );
    host.exec_ok(&["rm", "-rf", REPO]);
    host.copy_dir_in(dir.path(), REPO);
}

fn once(host: &TestHost) -> Output {
    let run = host.agent(&["--once", "--repo", REPO]);
    eprintln!("infra-agent --once -> exit {}\n{}", run.code, run.stdout);
    run
}

fn exists(host: &TestHost, path: &str) -> bool {
    host.exec(&["test", "-e", path]).success()
}

#[test]
fn a_local_repository_with_its_key_installs_its_package_and_stays_in_sync() {
    let host = TestHost::start("apt-01");
    let key = serve_local_repository(&host);
    assert!(
        key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{key}"
    );
    let key_sha = host.exec_ok(&["sha256sum", "/srv/apt/key.asc"]);
    let key_sha = key_sha.split_whitespace().next().expect("a hash");

    // A wrong key_sha256: the step fails clearly, writes nothing, the package is skipped.
    let wrong = "0".repeat(64);
    install_repo(
        &host,
        &role(&format!(
            "key_url = \"http://127.0.0.1:{PORT}/key.asc\"\nkey_sha256 = \"{wrong}\""
        )),
        &key,
    );
    let run = once(&host);
    assert_eq!(run.code, 4, "{run}");
    assert!(
        run.stdout.contains(&format!(
            "does not have key_sha256 {wrong}; nothing was written"
        )),
        "{run}"
    );
    for path in [SOURCES, KEYRING, "/etc/apt/keyrings/local.gpg"] {
        assert!(!exists(&host, path), "{path} was written");
    }
    assert!(!exists(&host, HELLO));

    // The key from files/: the entry, then the package from the local repository.
    install_repo(&host, &role("key_source = \"keys/local.asc\""), &key);
    let run = once(&host);
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(
        host.read_file(SOURCES),
        format!(
            "# Managed by infra-agent (apt_repository local): local changes are overwritten.\nTypes: deb\nURIs: http://127.0.0.1:{PORT}/debian\nSuites: stable\nComponents: main\nSigned-By: {KEYRING}\n"
        )
    );
    assert_eq!(host.read_file(KEYRING), key);
    assert_eq!(
        host.exec_ok(&["stat", "-c", "%a %U:%G", SOURCES, KEYRING]),
        "644 root:root\n644 root:root\n"
    );
    assert_eq!(host.read_file(HELLO), "hello from the local repository\n");
    let policy = host.exec_ok(&["apt-cache", "policy", "infra-test-hello"]);
    assert!(
        policy.contains(&format!("http://127.0.0.1:{PORT}/debian stable/main")),
        "{policy}"
    );

    // Converged: nothing to do.
    let run = once(&host);
    assert_eq!(run.code, 0, "{run}");

    // The same key from a URL with the right hash: in sync, nothing downloaded.
    install_repo(
        &host,
        &role(&format!(
            "key_url = \"http://127.0.0.1:{PORT}/key.asc\"\nkey_sha256 = \"{key_sha}\""
        )),
        &key,
    );
    let run = once(&host);
    assert_eq!(run.code, 0, "{run}");
}
