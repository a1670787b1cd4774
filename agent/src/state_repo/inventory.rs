//! Inventories: which hosts exist, their groups and roles. One file per environment.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, LineIndex, Pos};

/// Validated `inventory/<env>.toml`.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The file stem.
    pub env: String,
    /// `inventory/<env>.toml`.
    pub file: String,
    /// Groups in file order; `all` first.
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub pos: Pos,
    pub hosts: Vec<HostPattern>,
    pub roles: Vec<RoleRef>,
}

/// A role named by a group, with where it was named (to report a missing role file there).
#[derive(Debug, Clone)]
pub struct RoleRef {
    pub name: String,
    pub pos: Pos,
}

/// An exact host name or a glob (`*`, `?`, `[a-z]`, `[!a]`), matched case-insensitively.
#[derive(Debug, Clone)]
pub struct HostPattern {
    pub pattern: String,
    pub pos: Pos,
    /// The pattern lower-cased, as characters: matching runs for every host of a fleet.
    chars: Vec<char>,
}

impl HostPattern {
    #[must_use]
    pub fn new(pattern: String, pos: Pos) -> Self {
        let chars = pattern.to_lowercase().chars().collect();
        Self {
            pattern,
            pos,
            chars,
        }
    }

    /// Whether `host` (a lower-case short name, see `state_repo::short_name`) matches.
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        let h: Vec<char> = host.chars().collect();
        glob_match(&self.chars, &h)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventorySpec {
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, GroupSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    hosts: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
}

/// Parses `inventory/<env>.toml`. Checks names and glob syntax; whether roles exist is
/// checked by the loader, which knows the roles.
pub fn parse(env: &str, file: &str, text: &str) -> Result<Inventory, Diagnostic> {
    let spec: InventorySpec = super::toml_file::parse(file, text)?;
    let index = LineIndex::new(text);
    let mut groups: Vec<(Spanned<String>, GroupSpec)> = spec.groups.into_iter().collect();
    groups.sort_by_key(|(name, _)| name.span().start);
    let mut out = Vec::with_capacity(groups.len() + 1);
    let mut all = Group {
        name: "all".to_owned(),
        pos: Pos::default(),
        hosts: Vec::new(),
        roles: Vec::new(),
    };
    for (name, group) in groups {
        let pos = index.pos(name.span().start);
        let name = name.into_inner();
        if !is_name(&name) {
            return Err(Diagnostic::new(
                file,
                Some(pos),
                format!("group name {name:?} is not allowed"),
            )
            .hint("group names use letters, digits, `_` and `-`"));
        }
        let roles = group
            .roles
            .into_iter()
            .map(|r| RoleRef {
                pos: index.pos(r.span().start),
                name: r.into_inner(),
            })
            .collect();
        if name == "all" {
            if let Some(hosts) = group.hosts {
                let pos = hosts.first().map_or(pos, |h| index.pos(h.span().start));
                return Err(
                    Diagnostic::new(file, Some(pos), "group `all` cannot list hosts").hint(
                        "`all` holds every host of this file already; list hosts in another group",
                    ),
                );
            }
            all = Group {
                name,
                pos,
                hosts: Vec::new(),
                roles,
            };
            continue;
        }
        let mut hosts = Vec::new();
        for h in group.hosts.unwrap_or_default() {
            let hpos = index.pos(h.span().start);
            let pattern = h.into_inner();
            if let Err(why) = check_pattern(&pattern) {
                return Err(Diagnostic::new(
                    file,
                    Some(hpos),
                    format!("host pattern {pattern:?} is not valid: {why}"),
                )
                .hint("use host names, `*`, `?` and classes like `[0-9]`"));
            }
            hosts.push(HostPattern::new(pattern, hpos));
        }
        out.push(Group {
            name,
            pos,
            hosts,
            roles,
        });
    }
    out.insert(0, all);
    Ok(Inventory {
        env: env.to_owned(),
        file: file.to_owned(),
        groups: out,
    })
}

impl Inventory {
    /// The groups of `host` in this file (`all` first), or `None` when no group lists it.
    #[must_use]
    pub fn groups_of(&self, host: &str) -> Option<Vec<&Group>> {
        let listed: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| g.hosts.iter().any(|p| p.matches(host)))
            .collect();
        if listed.is_empty() {
            return None;
        }
        let mut groups = vec![&self.groups[0]];
        groups.extend(listed);
        Some(groups)
    }

    /// Exact (glob-free) host names this file lists, for `check` of every host.
    pub fn exact_hosts(&self) -> impl Iterator<Item = &HostPattern> {
        self.groups
            .iter()
            .flat_map(|g| &g.hosts)
            .filter(|p| !p.pattern.contains(['*', '?', '[']))
    }
}

pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("it is empty");
    }
    if pattern.contains('.') {
        return Err("hosts are matched by their short name, without a domain");
    }
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                if !chars.by_ref().any(|c| c == ']') {
                    return Err("`[` has no closing `]`");
                }
            }
            ']' => return Err("`]` has no opening `[`"),
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?') => {}
            _ => return Err("host names use letters, digits, `-` and `_`"),
        }
    }
    Ok(())
}

fn glob_match(p: &[char], h: &[char]) -> bool {
    match p.first() {
        None => h.is_empty(),
        Some('*') => (0..=h.len()).any(|i| glob_match(&p[1..], &h[i..])),
        Some('?') => !h.is_empty() && glob_match(&p[1..], &h[1..]),
        Some('[') => {
            let Some(end) = p.iter().position(|&c| c == ']') else {
                return false;
            };
            let Some(&c) = h.first() else { return false };
            let (negate, class) = match p[1..end].split_first() {
                Some(('!', rest)) => (true, rest),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&p[end + 1..], &h[1..])
        }
        Some(&c) => h.first() == Some(&c) && glob_match(&p[1..], &h[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> HostPattern {
        HostPattern::new(p.to_owned(), Pos::default())
    }

    #[test]
    fn globs() {
        let cases = [
            ("media-01", "media-01", true),
            ("MEDIA-01", "media-01", true),
            ("media-*", "media-02", true),
            ("media-*", "media-", true),
            ("media-*", "ha-01", false),
            ("*-01", "ha-01", true),
            ("ha-0?", "ha-01", true),
            ("ha-0?", "ha-010", false),
            ("ha-[0-2]1", "ha-11", true),
            ("ha-[0-2]1", "ha-31", false),
            ("ha-[!0]1", "ha-01", false),
            ("ha-[!0]1", "ha-11", true),
            ("n[ab]s", "nbs", true),
            ("*", "anything", true),
        ];
        for (p, h, want) in cases {
            assert_eq!(pat(p).matches(h), want, "{p} vs {h}");
        }
    }

    #[test]
    fn groups_in_file_order_with_all_first() {
        let inv = parse(
            "production",
            "inventory/production.toml",
            "[groups.zeta]\nhosts = [\"a-*\"]\n[groups.all]\nroles = [\"common\"]\n[groups.alpha]\nhosts = [\"a-1\"]\n",
        )
        .unwrap();
        let names: Vec<_> = inv
            .groups_of("a-1")
            .unwrap()
            .iter()
            .map(|g| g.name.clone())
            .collect();
        assert_eq!(names, ["all", "zeta", "alpha"]);
        assert!(inv.groups_of("b-1").is_none());
    }

    #[test]
    fn all_with_hosts_is_an_error() {
        let d = parse("p", "inventory/p.toml", "[groups.all]\nhosts = [\"x\"]\n").unwrap_err();
        assert_eq!(d.line, Some(2));
        assert!(d.message.contains("cannot list hosts"));
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let d = parse("p", "inventory/p.toml", "[groups.g]\nhosts = [\"a[0\"]\n").unwrap_err();
        assert!(d.message.contains("not valid"));
        assert_eq!(d.line, Some(2));
    }
}
