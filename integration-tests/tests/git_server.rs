//! The git server of the container tests ([`integration_tests::git_server`]) as a
//! client host on the same network sees it: `git ls-remote` over ssh with the deploy key
//! and the pinned host key follows pushes, force-pushes and reverts; signed commits
//! verify against the allowed signers line; outages and a changed host key fail the
//! way they would with a real server.
//!
//! One test, two containers: every step reuses them (a container boot costs seconds).
//! Needs a running Docker daemon (`.ci/run` starts one).

use integration_tests::git_server::GitServer;
use integration_tests::{Network, Output, TestHost, write_tree};

const KEY: &str = "/root/deploy_key";
const KNOWN_HOSTS: &str = "/root/known_hosts";
const ALLOWED_SIGNERS: &str = "/root/allowed_signers";
const CLONE: &str = "/root/clone";

/// ssh as an agent would run it: only the deploy key, only the pinned host key, no
/// prompts, and a short connect timeout so the paused server fails fast.
fn ssh_env(known_hosts: &str) -> String {
    format!(
        "GIT_SSH_COMMAND=ssh -i {KEY} -o IdentitiesOnly=yes -o UserKnownHostsFile={known_hosts} \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=2"
    )
}

fn ls_remote_with(client: &TestHost, url: &str, known_hosts: &str) -> Output {
    client.exec_with(&[&ssh_env(known_hosts)], &["git", "ls-remote", url], None)
}

/// `git ls-remote` from the client; panics unless it succeeds.
#[track_caller]
fn ls_remote(client: &TestHost, url: &str) -> String {
    let out = ls_remote_with(client, url, KNOWN_HOSTS);
    assert!(out.success(), "git ls-remote {url} failed: {out}");
    out.stdout
}

/// The commit `refs/heads/main` points to, as `ls-remote` shows it.
#[track_caller]
fn remote_main(client: &TestHost, url: &str) -> Option<String> {
    ls_remote(client, url).lines().find_map(|line| {
        let (id, name) = line.split_once('\t')?;
        (name == "refs/heads/main").then(|| id.to_owned())
    })
}

/// Fetches `main` into the client's clone.
#[track_caller]
fn fetch(client: &TestHost) {
    let out = client.exec_with(
        &[&ssh_env(KNOWN_HOSTS)],
        &["git", "-C", CLONE, "fetch", "-q", "origin", "main"],
        None,
    );
    assert!(out.success(), "git fetch failed: {out}");
}

fn verify_commit(client: &TestHost, commit: &str) -> Output {
    let allowed = format!("gpg.ssh.allowedSignersFile={ALLOWED_SIGNERS}");
    client.exec(&["git", "-C", CLONE, "-c", &allowed, "verify-commit", commit])
}

#[test]
fn a_client_on_the_network_pulls_what_the_test_pushes_and_sees_the_servers_outages() {
    let net = Network::create("gitsrv");
    let (git, client) = std::thread::scope(|s| {
        let git = s.spawn(|| GitServer::start(&net));
        let client = s.spawn(|| {
            TestHost::options("client")
                .network(&net)
                .without_agent()
                .start()
        });
        (
            git.join().expect("the git server starts"),
            client.join().expect("the client host starts"),
        )
    });
    let url = git.url();
    assert_eq!(url, "ssh://git@git/srv/git/infra.git");
    git.write_client_files(&client, KEY, KNOWN_HOSTS);
    assert_eq!(client.exec_ok(&["stat", "-c", "%a", KEY]), "600\n");
    client.write_file(ALLOWED_SIGNERS, format!("{}\n", git.allowed_signers_line()));

    // An empty repository: reachable, no main yet.
    assert_eq!(git.main_commit(), None);
    assert_eq!(remote_main(&client, &url), None);

    // A state repository written locally becomes the first commit.
    let work = git.work();
    let local = tempfile::tempdir().expect("a temporary directory");
    write_tree(
        local.path(),
        &[
            ("infra.toml", "format = 1\n"),
            ("roles/base.toml", "# base role\n"),
            ("notes.txt", "to be removed\n"),
        ],
    );
    work.copy_tree_in(local.path());
    let first = work.commit("first state");
    work.push();
    assert_eq!(git.main_commit().as_deref(), Some(first.as_str()));
    assert_eq!(remote_main(&client, &url).as_deref(), Some(first.as_str()));

    let cloned = client.exec_with(
        &[&ssh_env(KNOWN_HOSTS)],
        &["git", "clone", "-q", &url, CLONE],
        None,
    );
    assert!(cloned.success(), "git clone failed: {cloned}");
    assert_eq!(
        client.read_file(&format!("{CLONE}/roles/base.toml")),
        "# base role\n"
    );

    // A second commit moves main; removals and nested writes are committed.
    work.write("roles/web.toml", "# web role\n");
    work.remove("notes.txt");
    let second = work.commit("second state");
    assert_ne!(second, first);
    assert_eq!(
        git.main_commit().as_deref(),
        Some(first.as_str()),
        "not pushed yet"
    );
    work.push();
    assert_eq!(remote_main(&client, &url).as_deref(), Some(second.as_str()));
    fetch(&client);
    let files = client.exec_ok(&["git", "-C", CLONE, "ls-tree", "-r", "--name-only", &second]);
    assert_eq!(files, "infra.toml\nroles/base.toml\nroles/web.toml\n");

    // Replacing the tree drops what the new content lacks.
    let replacement = tempfile::tempdir().expect("a temporary directory");
    write_tree(replacement.path(), &[("infra.toml", "format = 1\n")]);
    work.copy_tree_in(replacement.path());
    let third = work.commit("only infra.toml");
    work.push();
    fetch(&client);
    let files = client.exec_ok(&["git", "-C", CLONE, "ls-tree", "-r", "--name-only", &third]);
    assert_eq!(files, "infra.toml\n");

    // Signatures: the server's signing key verifies, no signature and a stranger's
    // signature do not.
    work.write("signed.txt", "signed by the test\n");
    let signed = work.commit_signed("signed");
    work.write("signed.txt", "changed by a stranger\n");
    let stranger = work.commit_signed_by_stranger("signed by a stranger");
    work.push();
    fetch(&client);
    let verified = verify_commit(&client, &signed);
    assert!(
        verified.success(),
        "the signed commit does not verify: {verified}"
    );
    assert!(
        verified.stderr.contains("Good \"git\" signature"),
        "{verified}"
    );
    let unsigned = verify_commit(&client, &third);
    assert!(
        !unsigned.success(),
        "an unsigned commit verified: {unsigned}"
    );
    let strange = verify_commit(&client, &stranger);
    assert!(
        !strange.success(),
        "a stranger's signature verified: {strange}"
    );

    // A revert is a new commit whose tree is its grandparent's.
    let reverted = work.revert_head();
    assert_eq!(work.head(), reverted);
    work.push();
    assert_eq!(
        remote_main(&client, &url).as_deref(),
        Some(reverted.as_str())
    );
    fetch(&client);
    let tree = |commit: &str| {
        client.exec_ok(&[
            "git",
            "-C",
            CLONE,
            "rev-parse",
            &format!("{commit}^{{tree}}"),
        ])
    };
    assert_eq!(tree(&reverted), tree(&signed));
    assert_ne!(tree(&reverted), tree(&stranger));

    // A force-push puts main back on an older commit; the next push fast-forwards.
    work.force_push(&first);
    assert_eq!(remote_main(&client, &url).as_deref(), Some(first.as_str()));
    assert_eq!(work.head(), reverted, "the clone keeps its HEAD");
    work.push();
    assert_eq!(
        remote_main(&client, &url).as_deref(),
        Some(reverted.as_str())
    );

    // A diverged history only goes in by force.
    work.reset_hard(&second);
    let diverged = work.commit("another history");
    let out = work.try_push();
    assert!(
        !out.success(),
        "a non-fast-forward push was accepted: {out}"
    );
    work.force_push(&diverged);
    assert_eq!(
        remote_main(&client, &url).as_deref(),
        Some(diverged.as_str())
    );

    // The server's CPU time grows with what clients ask of it.
    let before = git.cpu_usage_usec();
    for _ in 0..3 {
        ls_remote(&client, &url);
    }
    let after = git.cpu_usage_usec();
    assert!(
        after > before,
        "CPU usage did not grow: {before} -> {after}"
    );
    eprintln!("git server CPU for 3 ls-remote: {} us", after - before);

    // sshd stopped: refused at once; started again: served again, repository intact.
    git.stop();
    let refused = ls_remote_with(&client, &url, KNOWN_HOSTS);
    assert!(
        !refused.success(),
        "ls-remote worked with sshd stopped: {refused}"
    );
    assert!(refused.stderr.contains("Connection refused"), "{refused}");
    work.write("while-down.txt", "pushing needs no sshd\n");
    let while_down = work.commit("while sshd is down");
    work.push();
    git.start_again();
    assert_eq!(
        remote_main(&client, &url).as_deref(),
        Some(while_down.as_str())
    );

    // The container frozen: the connection is accepted and never answered.
    git.pause();
    let frozen = ls_remote_with(&client, &url, KNOWN_HOSTS);
    git.unpause();
    assert!(
        !frozen.success(),
        "ls-remote worked with the server paused: {frozen}"
    );
    assert!(frozen.stderr.contains("timed out"), "{frozen}");
    assert_eq!(
        remote_main(&client, &url).as_deref(),
        Some(while_down.as_str())
    );

    // A new host key: the pinned one no longer matches, the new line does.
    let old_line = git.known_hosts_line();
    assert!(old_line.starts_with("git ssh-ed25519 AAAA"), "{old_line}");
    git.regenerate_host_key();
    let new_line = git.known_hosts_line();
    assert_ne!(new_line, old_line);
    let changed = ls_remote_with(&client, &url, KNOWN_HOSTS);
    assert!(
        !changed.success(),
        "ls-remote accepted a changed host key: {changed}"
    );
    assert!(
        changed
            .stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{changed}"
    );
    client.write_file("/root/known_hosts.new", format!("{new_line}\n"));
    let renewed = ls_remote_with(&client, &url, "/root/known_hosts.new");
    assert!(renewed.success(), "the new host key is refused: {renewed}");
    assert!(renewed.stdout.contains(&while_down), "{renewed}");

    drop(client);
    drop(git);
}
