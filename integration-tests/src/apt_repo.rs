//! A local, signed apt repository built and served inside a [`TestHost`]: the stand-in
//! for a vendor's repository (TEST-HOSTS.md: nothing outside the machine but Debian's
//! mirror may be contacted).
//!
//! [`serve`] installs `gpg` and `busybox-static` from Debian's mirror, builds each
//! [`DebPackage`] with `dpkg-deb --build`, indexes them with `apt-ftparchive`, signs the
//! `Release` with a throwaway key and serves the tree with `busybox httpd` on
//! `127.0.0.1:PORT` (in a transient unit). The repository is
//! `http://127.0.0.1:PORT/debian`, suite `stable`, component `main`; its armored public
//! key is at `http://127.0.0.1:PORT/key.asc` and `/srv/apt/key.asc`.

use std::time::Duration;

use crate::TestHost;

/// A small `Architecture: all` package for a local repository.
#[derive(Debug, Clone)]
pub struct DebPackage {
    /// The package's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Files it installs: absolute path, content.
    pub files: Vec<(String, String)>,
    /// Maintainer scripts (`preinst`, `postinst`, ...): name, script text (mode 0755).
    pub scripts: Vec<(String, String)>,
}

impl DebPackage {
    /// A package `name` at `version` with no files and no scripts.
    #[must_use]
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            files: Vec::new(),
            scripts: Vec::new(),
        }
    }

    /// Adds a file the package installs.
    #[must_use]
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.to_owned(), content.to_owned()));
        self
    }

    /// Adds a maintainer script (`preinst`, `postinst`, ...).
    #[must_use]
    pub fn script(mut self, name: &str, text: &str) -> Self {
        self.scripts.push((name.to_owned(), text.to_owned()));
        self
    }

    /// Builds the package in the container under `/tmp/build`; returns the `.deb`'s path.
    fn build(&self, host: &TestHost) -> String {
        let root = format!("/tmp/build/{}", self.name);
        host.exec_ok(&["rm", "-rf", &root]);
        for (path, content) in &self.files {
            host.write_file(&format!("{root}{path}"), content);
        }
        host.write_file(
            &format!("{root}/DEBIAN/control"),
            format!(
                "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: home-infra tests <tests@localhost>\nDescription: test package of the container tests\n",
                self.name, self.version
            ),
        );
        for (name, text) in &self.scripts {
            let path = format!("{root}/DEBIAN/{name}");
            host.write_file(&path, text);
            host.exec_ok(&["chmod", "0755", &path]);
        }
        let deb = format!("/tmp/build/{}_{}_all.deb", self.name, self.version);
        host.exec_ok(&["dpkg-deb", "--root-owner-group", "--build", &root, &deb]);
        deb
    }
}

/// Builds, signs and serves a repository with `packages` at
/// `http://127.0.0.1:PORT/debian`; returns the armored public key.
#[track_caller]
#[must_use]
pub fn serve(host: &TestHost, port: u16, packages: &[DebPackage]) -> String {
    host.sh("apt-get update -q >/dev/null && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           gpg gpg-agent busybox-static >/dev/null");
    host.exec_ok(&["mkdir", "-p", "/srv/apt/debian/pool/main"]);
    for package in packages {
        let deb = package.build(host);
        host.exec_ok(&["cp", &deb, "/srv/apt/debian/pool/main/"]);
    }
    host.sh(&format!(
        r"set -e
        r=/srv/apt/debian
        mkdir -p $r/dists/stable/main/binary-amd64
        cd $r
        apt-ftparchive packages pool > dists/stable/main/binary-amd64/Packages
        gzip -kf dists/stable/main/binary-amd64/Packages
        apt-ftparchive -o APT::FTPArchive::Release::Suite=stable \
          -o APT::FTPArchive::Release::Codename=stable \
          -o APT::FTPArchive::Release::Components=main \
          -o APT::FTPArchive::Release::Architectures=amd64 \
          release dists/stable > /tmp/Release
        mv /tmp/Release dists/stable/Release
        gpg --batch --pinentry-mode loopback --passphrase '' \
          --quick-gen-key 'infra test repository <repo@infra-test.invalid>' default default never 2>/dev/null
        gpg --batch --yes --clearsign -o dists/stable/InRelease dists/stable/Release
        gpg --batch --armor --export repo@infra-test.invalid > /srv/apt/key.asc
        systemd-run --unit infra-test-httpd --quiet \
          busybox httpd -f -p 127.0.0.1:{port} -h /srv/apt
        ",
    ));
    // Bounded wait until it answers.
    let url = format!("http://127.0.0.1:{port}/key.asc");
    for _ in 0..50 {
        if host
            .exec(&["curl", "-sf", "-o", "/dev/null", &url])
            .success()
        {
            return host.read_file("/srv/apt/key.asc");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("busybox httpd does not answer on 127.0.0.1:{port}");
}
