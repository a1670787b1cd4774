//! The dpkg database as the agent reads it: which packages are installed, at which
//! version and architecture.
//!
//! The source is `/var/lib/dpkg/status` (about 2 ms to read and parse on a small
//! server), or `dpkg-query -W` output while `/var/lib/dpkg/updates/` holds journal
//! entries of an interrupted dpkg run, which the status file does not include yet.

use std::collections::BTreeMap;

/// dpkg's status file.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// dpkg's journal directory: entries here mean a dpkg run was interrupted and the
/// status file is not the whole truth.
pub const UPDATES: &str = "/var/lib/dpkg/updates";
/// The `dpkg-query -W -f` format [`parse_query`] reads (dpkg-query expands `\t`, `\n`).
pub const QUERY_FORMAT: &str = "${Package}\\t${Architecture}\\t${Status}\\t${Version}\\n";

/// One package of the database, as dpkg records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// `amd64`, `all`, ...; empty when the record has none.
    pub arch: String,
    pub version: String,
    /// The three words of `Status:`: want, error flag, state (`install ok installed`).
    pub status: String,
}

impl Entry {
    /// Whether dpkg left the package broken in a way only reinstalling repairs: the
    /// `reinstreq` flag, or the `half-installed` state (dpkg was killed while
    /// unpacking it). `dpkg --configure -a` does not touch these, and apt and nala
    /// think there is nothing to do for them.
    #[must_use]
    pub fn needs_reinstall(&self) -> bool {
        let mut words = self.status.split_whitespace();
        let (_want, flag, state) = (words.next(), words.next(), words.next());
        flag == Some("reinstreq") || state == Some("half-installed")
    }

    /// Installed means dpkg's state word is `installed` (want `install`, `hold` or
    /// `deinstall` alike): unpacked, half-configured, config-files and the rest are not.
    #[must_use]
    pub fn is_installed(&self) -> bool {
        let mut words = self.status.split_whitespace();
        matches!(
            (words.next(), words.next(), words.next(), words.next()),
            (Some(_), Some("ok"), Some("installed"), None)
        )
    }
}

/// Parses the stanzas of `/var/lib/dpkg/status` (deb822: `Field: value` lines,
/// continuation lines starting with a blank, stanzas separated by empty lines). Only
/// `Package`, `Architecture`, `Version` and `Status` are read; a stanza without a
/// `Package` field is skipped.
#[must_use]
pub fn parse_status(text: &str) -> Vec<Entry> {
    // A converged host's run reads this whole file (2 MB on a desktop), so the scan
    // borrows: a stanza's four fields are slices of `text` until the stanza ends, and
    // the many other lines (descriptions, conffiles, dependencies) are passed over on
    // their first byte.
    #[derive(Default)]
    struct Stanza<'a> {
        name: &'a str,
        arch: &'a str,
        version: &'a str,
        status: &'a str,
    }
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    let mut flush = |cur: &mut Stanza<'_>| {
        if !cur.name.is_empty() {
            out.push(Entry {
                name: cur.name.to_owned(),
                arch: cur.arch.to_owned(),
                version: cur.version.to_owned(),
                status: cur.status.to_owned(),
            });
        }
        *cur = Stanza::default();
    };
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    for end in ends {
        // `\n` is ASCII, so both ends are character boundaries.
        let line = &text[start..end];
        start = end + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        match line.as_bytes().first() {
            // An empty line, or one of blanks only, ends the stanza; other lines that
            // start with a blank continue the field before them.
            None => flush(&mut cur),
            Some(b' ' | b'\t') => {
                if line.trim_start().is_empty() {
                    flush(&mut cur);
                }
            }
            Some(b'P' | b'A' | b'V' | b'S') => {
                let Some((field, value)) = line.split_once(':') else {
                    continue;
                };
                let slot = match field {
                    "Package" => &mut cur.name,
                    "Architecture" => &mut cur.arch,
                    "Version" => &mut cur.version,
                    "Status" => &mut cur.status,
                    _ => continue,
                };
                *slot = value.trim();
            }
            Some(_) => {}
        }
    }
    flush(&mut cur);
    out
}

/// Parses `dpkg-query -W -f` output in [`QUERY_FORMAT`]; malformed lines are skipped.
#[must_use]
pub fn parse_query(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, arch, status, version) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (!name.is_empty()).then(|| Entry {
                name: name.to_owned(),
                arch: arch.to_owned(),
                version: version.to_owned(),
                status: status.to_owned(),
            })
        })
        .collect()
}

/// The installed packages, with lookups the way apt names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Db {
    /// name → (architecture, version) of each installed instance.
    installed: BTreeMap<String, Vec<(String, String)>>,
    /// dpkg's native architecture: the architecture of the `dpkg` package itself.
    native: Option<String>,
    /// Packages dpkg left broken so that only a reinstall repairs them.
    reinstall: std::collections::BTreeSet<String>,
}

impl Db {
    /// The installed packages among `entries`.
    #[must_use]
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut db = Self::default();
        for e in entries {
            if e.needs_reinstall() {
                db.reinstall.insert(e.name.clone());
            }
            if !e.is_installed() {
                continue;
            }
            if e.name == "dpkg" && !e.arch.is_empty() {
                db.native = Some(e.arch.clone());
            }
            db.installed
                .entry(e.name)
                .or_default()
                .push((e.arch, e.version));
        }
        db
    }

    #[must_use]
    pub fn from_status(text: &str) -> Self {
        Self::new(parse_status(text))
    }

    #[must_use]
    pub fn from_query(text: &str) -> Self {
        Self::new(parse_query(text))
    }

    /// Whether dpkg left `name` broken so that only a reinstall repairs it.
    #[must_use]
    pub fn needs_reinstall(&self, name: &str) -> bool {
        self.reinstall.contains(name)
    }

    /// dpkg's native architecture, when the `dpkg` package is installed.
    #[must_use]
    pub fn native_arch(&self) -> Option<&str> {
        self.native.as_deref()
    }

    /// How many package instances are installed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.installed.values().map(Vec::len).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// The installed version of `name`, as apt resolves a name: without `arch`, the
    /// instance of the native architecture or `all` (any instance when the native
    /// architecture is unknown); with `arch`, exactly that one.
    #[must_use]
    pub fn version(&self, name: &str, arch: Option<&str>) -> Option<&str> {
        let instances = self.installed.get(name)?;
        let found = match (arch, self.native.as_deref()) {
            (Some(want), _) => instances.iter().find(|(a, _)| a == want),
            (None, Some(native)) => instances
                .iter()
                .find(|(a, _)| a == native || a == "all" || a.is_empty()),
            (None, None) => instances.first(),
        };
        found.map(|(_, v)| v.as_str())
    }

    /// `facts.packages`: name → version; instances of a foreign architecture are keyed
    /// `name:arch` (`libc6:i386`), as `dpkg -l` shows them.
    #[must_use]
    pub fn versions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, instances) in &self.installed {
            for (arch, version) in instances {
                let foreign = match self.native.as_deref() {
                    Some(native) => arch != native && arch != "all" && !arch.is_empty(),
                    None => false,
                };
                let key = if foreign {
                    format!("{name}:{arch}")
                } else {
                    name.clone()
                };
                out.entry(key).or_insert_with(|| version.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod reinstall_tests {
    use super::*;

    #[test]
    fn half_installed_and_reinstreq_need_a_reinstall() {
        let db = Db::from_status(
            "Package: a\nStatus: install reinstreq half-installed\nVersion: 1\n\n\
             Package: b\nStatus: install ok half-configured\nVersion: 1\n\n\
             Package: c\nStatus: install ok installed\nVersion: 1\n",
        );
        assert!(db.needs_reinstall("a"));
        assert!(
            !db.needs_reinstall("b"),
            "dpkg --configure -a repairs half-configured"
        );
        assert!(!db.needs_reinstall("c"));
        assert_eq!(db.version("a", None), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpts of a real bookworm status file, with the states dpkg writes.
    const STATUS_TEXT: &str = "\
Package: dpkg
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 1.21.22
Description: Debian package management system
 This package provides the low-level infrastructure for handling the
 installation and removal of Debian software packages.
 .
 Package: not-a-field

Package: zsh
Status: install ok installed
Architecture: amd64
Version: 5.9-4+b2
Depends: zsh-common (= 5.9-4)

Package: zsh-common
Status: hold ok installed
Architecture: all
Version: 5.9-4

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: nano
Status: deinstall ok config-files
Architecture: amd64
Version: 7.2-1

Package: ripgrep
Status: install ok half-configured
Architecture: amd64
Version: 13.0.0-4

Package: fzf
Status: install reinstreq installed
Architecture: amd64
Version: 0.38.0-1

Package: vim-tiny
Status: deinstall ok installed
Architecture: amd64
Version: 2:9.0.1378-2
";

    #[test]
    fn parses_status_stanzas() {
        let entries = parse_status(STATUS_TEXT);
        assert_eq!(entries.len(), 9);
        assert_eq!(
            entries[0],
            Entry {
                name: "dpkg".into(),
                arch: "amd64".into(),
                version: "1.21.22".into(),
                status: "install ok installed".into(),
            }
        );
        let installed: Vec<&str> = entries
            .iter()
            .filter(|e| e.is_installed())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            installed,
            ["dpkg", "zsh", "zsh-common", "libc6", "libc6", "vim-tiny"]
        );
    }

    #[test]
    fn lookups_follow_apt_naming() {
        let db = Db::from_status(STATUS_TEXT);
        assert_eq!(db.native_arch(), Some("amd64"));
        assert_eq!(db.len(), 6);
        assert_eq!(db.version("zsh", None), Some("5.9-4+b2"));
        assert_eq!(db.version("zsh-common", None), Some("5.9-4"));
        assert_eq!(db.version("zsh", Some("i386")), None);
        assert_eq!(db.version("libc6", Some("i386")), Some("2.36-9+deb12u4"));
        assert_eq!(db.version("nano", None), None);
        assert_eq!(db.version("ripgrep", None), None);
        assert_eq!(db.version("fzf", None), None);
        assert_eq!(db.version("vim-tiny", None), Some("2:9.0.1378-2"));
        let facts = db.versions();
        assert_eq!(
            facts.keys().collect::<Vec<_>>(),
            [
                "dpkg",
                "libc6",
                "libc6:i386",
                "vim-tiny",
                "zsh",
                "zsh-common"
            ]
        );
    }

    #[test]
    fn only_a_foreign_instance_is_not_the_native_package() {
        let db = Db::from_status(
            "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n\n\
             Package: libfoo\nStatus: install ok installed\nArchitecture: i386\nVersion: 1\n",
        );
        assert_eq!(db.version("libfoo", None), None);
        assert_eq!(db.version("libfoo", Some("i386")), Some("1"));
        assert_eq!(
            db.versions().get("libfoo:i386").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn empty_and_odd_input() {
        assert!(Db::from_status("").is_empty());
        assert!(parse_status("\n\n   \nGarbage line\n").is_empty());
        // CRLF and trailing blanks are tolerated; a record without Package is dropped.
        let entries = parse_status(
            "Status: install ok installed\n\nPackage: a1\r\nStatus: install ok installed  \r\nVersion: 1\r\n",
        );
        assert_eq!(entries.len(), 1);
        assert!(entries[0].is_installed());
        assert_eq!(entries[0].version, "1");
    }

    /// The parser as first written: every line trimmed and split, every field copied.
    /// The borrowing scan must read exactly what it reads.
    fn parse_status_simply(text: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut cur = (String::new(), String::new(), String::new(), String::new());
        let mut flush = |cur: &mut (String, String, String, String)| {
            if !cur.0.is_empty() {
                out.push(Entry {
                    name: cur.0.clone(),
                    arch: cur.1.clone(),
                    version: cur.2.clone(),
                    status: cur.3.clone(),
                });
            }
            *cur = Default::default();
        };
        for line in text.lines() {
            if line.trim().is_empty() {
                flush(&mut cur);
                continue;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let slot = match field {
                "Package" => &mut cur.0,
                "Architecture" => &mut cur.1,
                "Version" => &mut cur.2,
                "Status" => &mut cur.3,
                _ => continue,
            };
            value.trim().clone_into(slot);
        }
        flush(&mut cur);
        out
    }

    #[test]
    fn the_scan_reads_what_a_simple_parser_reads() {
        let mut texts = vec![
            STATUS_TEXT.to_owned(),
            STATUS_TEXT.replace('\n', "\r\n"),
            "Package: a\n \t \nPackage: b\nStatus: install ok installed\n\t.\n Version: x\nVersion: 2\n"
                .to_owned(),
            "Package:tight\nVersion:1 \nStatus:install ok installed\nSource: other\nPackages: no\n"
                .to_owned(),
        ];
        // The build machine's own database, when it has one: thousands of real stanzas.
        if let Ok(text) = std::fs::read_to_string(STATUS) {
            texts.push(text);
        }
        for text in &texts {
            assert_eq!(parse_status(text), parse_status_simply(text), "{text:.200}");
        }
    }

    #[test]
    fn parses_dpkg_query_output() {
        let text = "dpkg\tamd64\tinstall ok installed\t1.21.22\n\
                    zsh\tamd64\tinstall ok unpacked\t5.9-4+b2\n\
                    ripgrep\tamd64\tinstall ok installed\t13.0.0-4\n\
                    broken line\n";
        let db = Db::from_query(text);
        assert_eq!(db.version("ripgrep", None), Some("13.0.0-4"));
        assert_eq!(db.version("zsh", None), None);
        assert_eq!(db.len(), 2);
    }
}
