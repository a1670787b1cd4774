//! The git mirror against real repositories built in temporary directories: the remote
//! tip without fetching, fetches, ancestry after force pushes, commit trees read like
//! a checkout, and SSH signatures checked with the real ssh-keygen. Servers that never
//! answer are agent/fetch's tests: the agent itself has no network transports.

use std::path::{Path, PathBuf};

use infra_agent::catalog;
use infra_agent::facts::Facts;
use infra_agent::git::{self, Error, Mirror, Remote};
use infra_agent::process::{self, Cmd};
use infra_agent::state_repo::infra_toml::Version;
use infra_agent::state_repo::{self, DirSource, RepoSource};

/// Runs git in `dir` with no user or system configuration, and returns its output.
fn git(dir: &Path, args: &[&str]) -> String {
    let cmd = Cmd::new("git")
        .args(["-C", dir.to_str().expect("temporary paths are UTF-8")])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=Test Admin",
            "-c",
            "user.email=admin@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args.iter().copied())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    let out = process::run(&cmd).expect("git runs");
    assert!(out.success(), "{} failed: {}", cmd.display(), out.message());
    String::from_utf8(out.stdout)
        .expect("git prints UTF-8")
        .trim()
        .to_owned()
}

/// A working repository with one commit on `main`.
fn origin(root: &Path) -> PathBuf {
    let dir = root.join("origin");
    fs_err::create_dir_all(&dir).expect("the test directory is writable");
    git(&dir, &["init", "-q"]);
    commit(&dir, "infra.toml", "format = 1\n", "first");
    dir
}

/// Writes a file, commits everything, returns the new commit's id.
fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
    fs_err::write(dir.join(file), content).expect("the test directory is writable");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn remote(url: &str) -> Remote {
    Remote::new(url, "main")
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Regular files under the mirror's `objects/`: loose objects and packs.
fn object_files(mirror: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![mirror.join("objects")];
    while let Some(dir) = pending.pop() {
        for entry in fs_err::read_dir(&dir).expect("the mirror has objects/") {
            let entry = entry.expect("a directory entry");
            if entry.file_type().expect("a file type").is_dir() {
                pending.push(entry.path());
            } else {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn remote_tip_lists_without_fetching_then_fetch_brings_the_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let second = commit(&origin, "a.toml", "a = 1\n", "second");
    let mirror = Mirror::open(&tmp.path().join("state/repo.git")).unwrap();
    let remote = remote(&file_url(&origin));

    let tip = mirror.remote_tip(&remote).unwrap();
    assert_eq!(tip, second);
    assert!(!mirror.has_commit(&tip));
    assert_eq!(object_files(mirror.dir()), 0, "remote_tip must not fetch");

    assert_eq!(mirror.fetch(&remote).unwrap(), second);
    assert!(mirror.has_commit(&second));
    assert!(object_files(mirror.dir()) > 0);
    assert_eq!(git(mirror.dir(), &["rev-parse", "refs/infra/main"]), second);
    let info = mirror.commit_info(&second).unwrap();
    assert_eq!(info.id, second);
    assert_eq!(info.short, &second[..12]);
    assert_eq!(info.summary, "second");
    assert_eq!(info.author, "Test Admin");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        info.time.unsigned_abs().abs_diff(now) < 600,
        "{}",
        info.time
    );

    // A new commit: the tip moves, and the mirror lacks it until the next fetch.
    let third = commit(&origin, "a.toml", "a = 2\n", "third");
    assert_eq!(mirror.remote_tip(&remote).unwrap(), third);
    assert!(!mirror.has_commit(&third));
    assert_eq!(mirror.fetch(&remote).unwrap(), third);
    assert!(mirror.has_commit(&third));
}

#[test]
fn plain_paths_to_repositories_are_remotes_too() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let tip = git(&origin, &["rev-parse", "HEAD"]);
    let bare = tmp.path().join("bare.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            origin.to_str().unwrap(),
            "bare.git",
        ],
    );
    let plain = tmp.path().join("plain");
    fs_err::create_dir(&plain).unwrap();
    // A checkout named by its path is read as a directory (edits included); its
    // commits are read through file:// or by a Remote made from the path.
    assert!(!git::is_git_location(origin.to_str().unwrap()));
    assert!(git::is_git_location(&file_url(&origin)));
    assert!(git::is_git_location(bare.to_str().unwrap()));
    assert!(!git::is_git_location(plain.to_str().unwrap()));

    let mirror = Mirror::open(&tmp.path().join("repo.git")).unwrap();
    for location in [&origin, &bare] {
        let remote = remote(location.to_str().unwrap());
        assert_eq!(mirror.remote_tip(&remote).unwrap(), tip);
        assert_eq!(mirror.fetch(&remote).unwrap(), tip);
    }
    let nowhere = tmp.path().join("nowhere");
    for location in [nowhere.display().to_string(), file_url(&nowhere)] {
        let err = mirror.remote_tip(&remote(&location)).unwrap_err();
        assert!(matches!(err, Error::NoRepository { .. }), "{err:?}");
        assert!(err.to_string().contains("nowhere"), "{err}");
    }
    // A plain directory is not a repository either.
    let err = mirror.fetch(&remote(plain.to_str().unwrap())).unwrap_err();
    assert!(matches!(err, Error::NoRepository { .. }), "{err:?}");
}

#[test]
fn descends_from_follows_force_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let a = git(&origin, &["rev-parse", "HEAD"]);
    let b = commit(&origin, "b.toml", "b = 1\n", "b");
    let mirror = Mirror::open(&tmp.path().join("repo.git")).unwrap();
    let remote = remote(&file_url(&origin));
    assert_eq!(mirror.fetch(&remote).unwrap(), b);
    assert!(mirror.descends_from(&b, &a).unwrap());
    assert!(mirror.descends_from(&b, &b).unwrap());
    assert!(!mirror.descends_from(&a, &b).unwrap());

    // An older commit force-pushed: already in the mirror, so no fetch is needed, and
    // it does not descend from the applied one.
    git(&origin, &["reset", "-q", "--hard", &a]);
    let tip = mirror.remote_tip(&remote).unwrap();
    assert_eq!(tip, a);
    assert!(mirror.has_commit(&tip));
    assert!(!mirror.descends_from(&tip, &b).unwrap());

    // A diverged history force-pushed: fetched, and not a descendant of b.
    let c = commit(&origin, "c.toml", "c = 1\n", "c");
    assert_eq!(mirror.fetch(&remote).unwrap(), c);
    assert!(!mirror.descends_from(&c, &b).unwrap());
    assert!(mirror.descends_from(&c, &a).unwrap());

    let missing = "0123456789".repeat(4);
    assert!(matches!(
        mirror.descends_from(&c, &missing),
        Err(Error::CommitMissing { .. })
    ));
    assert!(matches!(
        mirror.descends_from(&c, "abc"),
        Err(Error::BadCommitId { .. })
    ));
    assert!(!mirror.has_commit(&missing));
    assert!(!mirror.has_commit("abc"));
}

#[test]
fn a_missing_branch_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    git(&origin, &["branch", "staging"]);
    let mirror = Mirror::open(&tmp.path().join("repo.git")).unwrap();
    let mut remote = remote(&file_url(&origin));
    remote.branch = "production".to_owned();
    for err in [
        mirror.remote_tip(&remote).unwrap_err(),
        mirror.fetch(&remote).unwrap_err(),
    ] {
        let Error::BranchMissing {
            branch, available, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(branch, "production");
        assert_eq!(available, "main, staging");
        let message = err.to_string();
        assert!(message.contains("`production`"), "{message}");
        assert!(message.contains("hint:"), "{message}");
    }
    remote.branch = "bad..name".to_owned();
    assert!(matches!(
        mirror.remote_tip(&remote),
        Err(Error::BadBranch { .. })
    ));
}

/// Every file below the root (name and bytes) and every directory, as a source lists
/// them; `skip` is left out at the top.
fn walk(source: &dyn RepoSource, skip: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let join = |name: &str| {
            if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            }
        };
        for name in source.list(&dir).expect("the source lists") {
            let path = join(&name);
            let bytes = source.read_bytes(&path).expect("a listed file reads");
            out.push((path, Some(bytes)));
        }
        for name in source.list_dirs(&dir).expect("the source lists") {
            if dir.is_empty() && name == skip {
                continue;
            }
            out.push((join(&name), None));
            pending.push(join(&name));
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("the test directory is writable");
    for entry in fs_err::read_dir(from).expect("the example repository reads") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).expect("the example file copies");
        }
    }
}

#[test]
fn tree_source_reads_a_commit_like_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example"),
        &work,
    );
    // A symbolic link is neither a file nor a directory to either source.
    std::os::unix::fs::symlink("README.md", work.join("README.link")).unwrap();
    std::os::unix::fs::symlink("roles", work.join("roles.link")).unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "example"]);
    let tip = git(&work, &["rev-parse", "HEAD"]);
    let checkout = tmp.path().join("checkout");
    git(
        tmp.path(),
        &["clone", "-q", work.to_str().unwrap(), "checkout"],
    );

    let mirror = Mirror::open(&tmp.path().join("repo.git")).unwrap();
    assert_eq!(mirror.fetch(&remote(&file_url(&work))).unwrap(), tip);
    let tree = mirror.tree_source(&tip).unwrap();
    assert_eq!(tree.describe(), format!("commit {}", &tip[..12]));
    let dir = DirSource::new(&checkout);

    let from_tree = walk(&tree, ".git");
    assert_eq!(from_tree, walk(&dir, ".git"));
    assert!(from_tree.iter().any(|(p, _)| p == "roles/common.toml"));
    assert!(!from_tree.iter().any(|(p, _)| {
        std::path::Path::new(p)
            .extension()
            .is_some_and(|e| e == "link")
    }));

    // Loaded and compiled for every host, both give the same result.
    let from_tree = state_repo::load(&tree, Version::agent()).unwrap();
    let from_dir = state_repo::load(&dir, Version::agent()).unwrap();
    assert_eq!(from_tree.hosts(), from_dir.hosts());
    assert!(!from_tree.hosts().is_empty());
    assert_eq!(from_tree.static_files, from_dir.static_files);
    assert_eq!(
        format!("{:?}", from_tree.roles),
        format!("{:?}", from_dir.roles)
    );
    for host in from_tree.hosts() {
        let compile = |repo: &state_repo::StateRepo| {
            let selection = repo.select(&host).unwrap();
            let catalog =
                catalog::compile(repo, &selection, &Facts::placeholder(&selection.name)).unwrap();
            format!("{:?}", catalog.steps)
        };
        assert_eq!(compile(&from_tree), compile(&from_dir), "host {host}");
    }

    // The source outlives the mirror and moves between threads.
    drop(mirror);
    let handle = std::thread::spawn(move || tree.read("infra.toml").unwrap());
    assert!(handle.join().unwrap().unwrap().contains("format = 1"));
}

// --- Signatures -------------------------------------------------------------------

struct Signing {
    _tmp: tempfile::TempDir,
    origin: PathBuf,
    mirror: Mirror,
    remote: Remote,
    allowed_signers: PathBuf,
    admin_key: PathBuf,
    stranger_key: PathBuf,
}

fn keygen(path: &Path, comment: &str) {
    let out = process::run(&Cmd::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        path.to_str().expect("temporary paths are UTF-8"),
    ]))
    .expect("ssh-keygen runs");
    assert!(out.success(), "{}", out.message());
}

fn fingerprint_by_ssh_keygen(public: &Path) -> String {
    let out = process::run(
        &Cmd::new("ssh-keygen").args(["-lf", public.to_str().expect("temporary paths are UTF-8")]),
    )
    .expect("ssh-keygen runs");
    assert!(out.success(), "{}", out.message());
    String::from_utf8(out.stdout)
        .expect("ssh-keygen prints UTF-8")
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints bits, fingerprint, comment")
        .to_owned()
}

fn signing() -> Signing {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let origin = origin(tmp.path());
    let admin_key = tmp.path().join("admin_key");
    let stranger_key = tmp.path().join("stranger_key");
    keygen(&admin_key, "admin");
    keygen(&stranger_key, "stranger");
    let public = fs_err::read_to_string(admin_key.with_extension("pub"))
        .expect("ssh-keygen wrote the public key");
    let allowed_signers = tmp.path().join("allowed_signers");
    fs_err::write(
        &allowed_signers,
        format!("# who may change the fleet\nadmin@example.com namespaces=\"git\" {public}"),
    )
    .expect("the test directory is writable");
    let mirror = Mirror::open(&tmp.path().join("repo.git")).expect("the mirror opens");
    let remote = remote(&file_url(&origin));
    Signing {
        _tmp: tmp,
        origin,
        mirror,
        remote,
        allowed_signers,
        admin_key,
        stranger_key,
    }
}

impl Signing {
    /// Commits signed with `key` and fetches the commit into the mirror.
    fn signed_commit(&self, key: &Path, message: &str) -> String {
        fs_err::write(self.origin.join("signed.toml"), message).expect("the origin is writable");
        git(&self.origin, &["add", "-A"]);
        git(
            &self.origin,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit",
                "-q",
                "-S",
                "-m",
                message,
            ],
        );
        let id = git(&self.origin, &["rev-parse", "HEAD"]);
        assert_eq!(
            self.mirror
                .fetch(&self.remote)
                .expect("the signed commit fetches"),
            id
        );
        id
    }

    /// A commit object with the given payload and signature, written into the mirror.
    fn forged(&self, payload: &str, signature: &str) -> String {
        let repo = git2::Repository::open_bare(self.mirror.dir()).expect("the mirror opens");
        repo.commit_signed(payload, signature, None)
            .expect("git2 writes the forged commit")
            .to_string()
    }

    fn payload_and_signature(&self, id: &str) -> (String, String) {
        let repo = git2::Repository::open_bare(self.mirror.dir()).expect("the mirror opens");
        let (signature, payload) = repo
            .extract_signature(&git2::Oid::from_str(id).expect("a commit id"), None)
            .expect("the commit is signed");
        (
            payload.as_str().expect("the payload is UTF-8").to_owned(),
            signature
                .as_str()
                .expect("the signature is UTF-8")
                .to_owned(),
        )
    }
}

#[test]
fn a_commit_signed_by_an_allowed_key_verifies() {
    let s = signing();
    let id = s.signed_commit(&s.admin_key, "signed by admin");
    assert_eq!(
        s.mirror.verify_signature(&id, &s.allowed_signers).unwrap(),
        "admin@example.com"
    );
    // No scratch files are left in the mirror.
    let leftovers: Vec<_> = fs_err::read_dir(s.mirror.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("infra-verify"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_unsigned_commit_is_refused() {
    let s = signing();
    let id = commit(&s.origin, "x.toml", "x = 1\n", "unsigned");
    s.mirror.fetch(&s.remote).unwrap();
    let err = s
        .mirror
        .verify_signature(&id, &s.allowed_signers)
        .unwrap_err();
    assert!(matches!(err, Error::Unsigned { .. }), "{err:?}");
    assert!(err.to_string().contains("not signed"), "{err}");
}

#[test]
fn a_commit_signed_by_an_unlisted_key_is_refused_with_its_fingerprint() {
    let s = signing();
    let id = s.signed_commit(&s.stranger_key, "signed by a stranger");
    let err = s
        .mirror
        .verify_signature(&id, &s.allowed_signers)
        .unwrap_err();
    let Error::UnknownSigner { fingerprint, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        fingerprint,
        &fingerprint_by_ssh_keygen(&s.stranger_key.with_extension("pub"))
    );
    assert!(
        err.to_string()
            .contains(&s.allowed_signers.display().to_string()),
        "{err}"
    );
}

#[test]
fn an_altered_signed_commit_is_refused_as_a_bad_signature() {
    let s = signing();
    let id = s.signed_commit(&s.admin_key, "signed by admin");
    let (payload, signature) = s.payload_and_signature(&id);
    let altered = payload.replace("signed by admin", "altered after signing");
    assert_ne!(altered, payload);
    let forged = s.forged(&altered, &signature);
    let err = s
        .mirror
        .verify_signature(&forged, &s.allowed_signers)
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    // The same forgery signed by an unlisted key is still a bad signature, not an
    // unknown signer: it does not verify at all.
    let stranger = s.signed_commit(&s.stranger_key, "signed by a stranger");
    let (payload, signature) = s.payload_and_signature(&stranger);
    let forged = s.forged(
        &payload.replace("signed by a stranger", "altered"),
        &signature,
    );
    let err = s
        .mirror
        .verify_signature(&forged, &s.allowed_signers)
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
}

#[test]
fn gpg_signatures_are_not_supported_and_say_so() {
    let s = signing();
    let id = s.signed_commit(&s.admin_key, "signed by admin");
    let (payload, _) = s.payload_and_signature(&id);
    let forged = s.forged(
        &payload,
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n",
    );
    let err = s
        .mirror
        .verify_signature(&forged, &s.allowed_signers)
        .unwrap_err();
    assert!(matches!(err, Error::GpgSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("SSH"), "{err}");
}

#[test]
fn a_missing_allowed_signers_file_is_named() {
    let s = signing();
    let id = s.signed_commit(&s.admin_key, "signed by admin");
    let missing = s.allowed_signers.with_extension("missing");
    let err = s.mirror.verify_signature(&id, &missing).unwrap_err();
    assert!(matches!(err, Error::AllowedSigners { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

// --- known_hosts against OpenSSH's own tools ---------------------------------------

#[test]
fn fingerprints_and_hashed_known_hosts_agree_with_ssh_keygen() {
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("host_key");
    keygen(&key_path, "host");
    let public = fs_err::read_to_string(key_path.with_extension("pub")).unwrap();
    let blob = git::known_hosts::public_key_blob(&public).unwrap();
    let expected = fingerprint_by_ssh_keygen(&key_path.with_extension("pub"));
    assert_eq!(git::known_hosts::fingerprint(&blob), expected);

    // `ssh-keygen -H` hashes the names the way OpenSSH looks them up.
    let known_hosts = tmp.path().join("known_hosts");
    let key = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    fs_err::write(
        &known_hosts,
        format!("git.example.com,[git.example.com]:2222 {key}\n"),
    )
    .unwrap();
    let out =
        process::run(&Cmd::new("ssh-keygen").args(["-H", "-f", known_hosts.to_str().unwrap()]))
            .unwrap();
    assert!(out.success(), "{}", out.message());
    let hashed = fs_err::read_to_string(&known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert!(!hashed.contains("example.com"), "{hashed}");

    let check = |host: &str, port: u16| {
        git::known_hosts::check_host_key(&hashed, &known_hosts, host, port, &blob)
    };
    check("git.example.com", 22).unwrap();
    check("git.example.com", 2222).unwrap();
    let err = check("git.example.com", 2200).unwrap_err();
    assert!(matches!(err, Error::UnknownHost { .. }), "{err:?}");
    assert!(err.to_string().contains(&expected), "{err}");
    let err = check("other.example.com", 22).unwrap_err();
    assert!(matches!(err, Error::UnknownHost { .. }), "{err:?}");
}
