//! The references cannot drift from the code: every step type's table in
//! docs/state-repo.md lists exactly the keys the loader accepts for that type, and
//! every agent.toml key has a row in docs/agent-config.md and a line in
//! packaging/agent.toml.example; every infra.toml key has a row in the reference's
//! infra.toml table; every exit code of `infra-agent` has a row in an exit code table;
//! every page the guide's index links exists; every message docs/troubleshooting.md
//! quotes is one the code prints.

use std::collections::BTreeSet;
use std::path::PathBuf;

use infra_agent::step::KINDS;

fn reference() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/state-repo.md");
    std::fs::read_to_string(path).expect("docs/state-repo.md exists")
}

/// The keys in the first column of the tables under the heading for step type `name`.
fn documented_keys(doc: &str, name: &str) -> Option<BTreeSet<String>> {
    let heading = format!("### `{name}`\n");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    Some(
        rest[..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(key, _)| key.to_owned()))
            .collect(),
    )
}

#[test]
fn every_step_type_is_documented_with_exactly_its_keys() {
    let doc = reference();
    for kind in KINDS {
        let documented = documented_keys(&doc, kind.name)
            .unwrap_or_else(|| panic!("docs/state-repo.md has no section ### `{}`", kind.name));
        let accepted: BTreeSet<String> = kind.keys.iter().map(|k| k.name.to_owned()).collect();
        assert_eq!(
            documented, accepted,
            "keys of step type `{}`: docs vs code",
            kind.name
        );
    }
}

#[test]
fn the_common_keys_are_documented() {
    let doc = reference();
    for key in infra_agent::step::COMMON_KEYS {
        assert!(
            doc.contains(&format!("`{key}`")),
            "common key `{key}` is not in docs/state-repo.md"
        );
    }
}

#[test]
fn every_agent_toml_key_is_documented() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/agent-config.md"))
        .expect("docs/agent-config.md exists");
    let example = std::fs::read_to_string(root.join("packaging/agent.toml.example"))
        .expect("packaging/agent.toml.example lists every key");
    for key in infra_agent::config::KEYS {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "agent.toml key `{key}` has no row in docs/agent-config.md"
        );
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
            "agent.toml key `{key}` is not in packaging/agent.toml.example"
        );
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first column of every table row in the section that starts at `heading`
/// (up to the next heading of the same or a higher level), backticks removed.
fn first_column(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        + heading.len()
        + 2;
    let level = heading.split(' ').next().expect("a heading has a level");
    let rest = &doc[start..];
    let end = rest
        .lines()
        .scan(0, |pos, line| {
            let here = *pos;
            *pos += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            let hashes = line.len() - line.trim_start_matches('#').len();
            hashes > 0 && hashes <= level.len() && line[hashes..].starts_with(' ')
        })
        .map_or(rest.len(), |(pos, _)| pos);
    rest[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split_once(" |").map(|(cell, _)| cell.replace('`', "")))
        .filter(|cell| !cell.starts_with("---"))
        .collect()
}

#[test]
fn every_infra_toml_key_is_in_the_reference_table() {
    let doc = reference();
    let documented: BTreeSet<String> = first_column(&doc, "## `infra.toml`")
        .into_iter()
        .filter(|cell| cell != "Key")
        // A table is written as its header: `[bootstrap]`.
        .map(|cell| {
            cell.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    let accepted: BTreeSet<String> = infra_agent::state_repo::infra_toml::KEYS
        .iter()
        .map(|&k| k.to_owned())
        .collect();
    assert_eq!(
        documented, accepted,
        "infra.toml keys: docs/state-repo.md's table vs the parser"
    );
}

/// `NAME = VALUE` of every constant of agent/src/cli.rs's `exit` module, read from the
/// source so that a new constant cannot be missed.
fn exit_codes() -> Vec<(String, u8)> {
    let src = std::fs::read_to_string(root().join("agent/src/cli.rs")).expect("agent/src/cli.rs");
    let start = src
        .find("pub mod exit {")
        .expect("cli.rs has `pub mod exit`");
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("the exit module ends")];
    let codes: Vec<(String, u8)> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("pub const NAME: u8 = N;");
            let value = rest
                .split_once('=')
                .expect("pub const NAME: u8 = N;")
                .1
                .trim()
                .trim_end_matches(';');
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("exit code {name} is not a number: {value}"));
            (name.trim().to_owned(), value)
        })
        .collect();
    assert!(codes.len() >= 4, "too few exit codes read: {codes:?}");
    codes
}

#[test]
fn the_exit_codes_are_read_from_the_source() {
    use infra_agent::cli::exit;
    let codes = exit_codes();
    for (name, value) in [
        ("OK", exit::OK),
        ("INVALID", exit::INVALID),
        ("CHANGED", exit::CHANGED),
        ("FAILED", exit::FAILED),
        ("USAGE", exit::USAGE),
    ] {
        assert!(
            codes.contains(&(name.to_owned(), value)),
            "{name} = {value} not read from cli.rs: {codes:?}"
        );
    }
}

#[test]
fn every_exit_code_is_in_an_exit_code_table() {
    let mut documented = BTreeSet::new();
    for (page, heading) in [
        ("docs/running.md", "## Exit codes of `--once`"),
        (
            "docs/state-repo.md",
            "## Validation and `infra-agent check`",
        ),
        (
            "docs/state-repo.md",
            "## Running steps: `infra-agent --once`",
        ),
    ] {
        let doc = std::fs::read_to_string(root().join(page)).expect("the page exists");
        documented.extend(first_column(&doc, heading));
    }
    for (name, value) in exit_codes() {
        assert!(
            documented.contains(&value.to_string()),
            "exit code {name} = {value} has no row in the exit code tables of \
             docs/running.md or docs/state-repo.md (found: {documented:?})"
        );
    }
}

#[test]
fn the_guide_index_links_only_pages_that_exist() {
    let dir = root().join("docs");
    let index = std::fs::read_to_string(dir.join("README.md")).expect("docs/README.md exists");
    let mut links = 0;
    for target in index
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
    {
        let file = target.0.split('#').next().expect("split yields one part");
        if file.is_empty() || file.contains("://") {
            continue;
        }
        links += 1;
        assert!(
            dir.join(file).exists(),
            "docs/README.md links {file}, which does not exist"
        );
    }
    assert!(links >= 8, "docs/README.md links only {links} pages");
}

// docs/troubleshooting.md quotes the programs' messages so that a user can search
// the page for what they see. Every line of a ```text block there is such a quote;
// `{...}` in it stands for what the program fills in (a path, a host, a number), and
// the fixed text between placeholders must occur, in order, in one source file of
// the workspace, each piece at most `MAX_GAP` characters after the one before (the
// size of a format placeholder or two, so the pieces belong to one message).
//
// A quote may start with frames: text that one place of the code prints around
// messages that come from elsewhere (`error: ` from main.rs, `{step}: FAILED: ` from
// the run report). Frames are checked once, in the file that prints them, and
// stripped before the rest of the line is looked for.

/// How far apart two fixed pieces of one quote may be in the source.
const MAX_GAP: usize = 120;

/// Frames a quoted line may start with (as the page writes them), and the file that
/// prints each.
const FRAMES: &[(&str, &str)] = &[
    ("error: ", "agent/src/main.rs"),
    ("warning: ", "agent/src/once.rs"),
    ("hint: ", "bootstrap/src/cli.rs"),
    ("{step}: FAILED: ", "agent/src/report.rs"),
    ("{step}: skipped: ", "agent/src/report.rs"),
    ("fetch failed: ", "agent/src/pull.rs"),
    (
        "commit {commit} ({summary}) was not applied: ",
        "agent/src/pull.rs",
    ),
    ("its signature is not accepted: ", "agent/src/pull.rs"),
    (
        "secret {reference} cannot be resolved: ",
        "agent/src/secrets/mod.rs",
    ),
];

/// Where messages come from: the sources of the agent and the bootstrap, and the
/// scripts infra-bootstrap and infra-stage embed and run.
const SOURCE_DIRS: &[&str] = &["agent/src", "bootstrap/src"];
const EMBEDDED_SCRIPTS: &[&str] = &["packaging/stage/bookworm.sh", "packaging/install.sh"];

/// Source text as the program prints it: string escapes resolved and `\`-newline
/// continuations joined, so `\"too many requests\"` reads `"too many requests"` and a
/// `\nhint: ` starts a line of its own.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\n') => while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {},
            Some(other @ ('"' | '\\' | '\'')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Every source file's text (unit tests cut off: a message that only a test's
/// expectation still holds must not count), by path relative to the workspace.
fn workspace_sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source directory is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        walk(&root.join(dir), &mut files);
    }
    files.extend(EMBEDDED_SCRIPTS.iter().map(|f| root.join(f)));
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file is UTF-8 text");
            let code = match text.find("\n#[cfg(test)]\n") {
                Some(at) => &text[..at],
                None => &text,
            };
            let name = path
                .strip_prefix(&root)
                .expect("under the workspace")
                .display()
                .to_string();
            (name, unescape(code))
        })
        .collect()
}

/// The fixed pieces of a quote, between its `{...}` placeholders.
fn fixed_pieces(quote: &str) -> Result<Vec<&str>, String> {
    let mut pieces = Vec::new();
    let mut rest = quote;
    while let Some(open) = rest.find('{') {
        pieces.push(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("a `{{` without `}}` in {quote:?}"))?;
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("a `}}` without `{{` in {quote:?}"));
    }
    pieces.push(rest);
    pieces.retain(|p| !p.is_empty());
    Ok(pieces)
}

/// Whether `pieces` occur in `text` in order, each within `MAX_GAP` of the previous.
fn found_in_order(text: &str, pieces: &[&str]) -> bool {
    fn follows(text: &str, from: usize, pieces: &[&str]) -> bool {
        let Some((next, rest)) = pieces.split_first() else {
            return true;
        };
        let mut end = (from + MAX_GAP + next.len()).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[from..end]
            .match_indices(next)
            .any(|(at, _)| follows(text, from + at + next.len(), rest))
    }
    let Some((first, rest)) = pieces.split_first() else {
        return false;
    };
    text.match_indices(first)
        .any(|(at, _)| follows(text, at + first.len(), rest))
}

/// Every line of the fenced blocks of a page whose info string is `text`, trimmed, with
/// its line number.
fn quoted_lines(page: &str) -> Vec<(usize, String)> {
    let mut quotes = Vec::new();
    let mut fence: Option<bool> = None;
    for (i, line) in page.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim() == "text"),
                Some(_) => None,
            };
            continue;
        }
        if fence == Some(true) && !trimmed.is_empty() {
            quotes.push((i + 1, trimmed.to_owned()));
        }
    }
    quotes
}

/// Why a quoted line does not match the sources, or `None` when it does.
fn unmatched(quote: &str, sources: &[(String, String)]) -> Option<String> {
    let mut rest = quote;
    let mut framed = false;
    while let Some((frame, _)) = FRAMES.iter().find(|(f, _)| rest.starts_with(f)) {
        rest = &rest[frame.len()..];
        // `error: {message}` quotes nothing; `error: fetch failed: {reason}` does.
        framed |= !["error: ", "warning: ", "hint: "].contains(frame);
    }
    let pieces = match fixed_pieces(rest) {
        Ok(pieces) => pieces,
        Err(e) => return Some(e),
    };
    if pieces.is_empty() {
        return (!framed).then(|| "it has no fixed text to look for".to_owned());
    }
    if sources
        .iter()
        .any(|(_, text)| found_in_order(text, &pieces))
    {
        None
    } else {
        Some(format!("not in the sources: {pieces:?}"))
    }
}

#[test]
fn the_frames_of_quoted_messages_are_printed_where_the_list_says() {
    let sources = workspace_sources();
    for (frame, file) in FRAMES {
        let (_, text) = sources
            .iter()
            .find(|(name, _)| name == file)
            .unwrap_or_else(|| panic!("{file} is not among the sources"));
        let pieces = fixed_pieces(frame).expect("a frame is a well-formed quote");
        assert!(
            found_in_order(text, &pieces),
            "the frame {frame:?} is not printed by {file}"
        );
    }
}

#[test]
fn every_message_the_troubleshooting_page_quotes_is_in_the_code() {
    let page = std::fs::read_to_string(root().join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md exists");
    let quotes = quoted_lines(&page);
    assert!(
        quotes.len() >= 60,
        "only {} quoted lines found in docs/troubleshooting.md",
        quotes.len()
    );
    let sources = workspace_sources();
    let wrong: Vec<String> = quotes
        .iter()
        .filter_map(|(line, quote)| {
            unmatched(quote, &sources)
                .map(|why| format!("docs/troubleshooting.md:{line}: {quote}\n    {why}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "quoted messages that the code does not print (fix the quote, or the code):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_quote_matches_only_the_message_it_quotes() {
    let source = unescape(
        r#"format!("cannot reach {} for {url}: no answer within {} s\nhint: check the \"network\"")"#,
    );
    let sources = vec![("x.rs".to_owned(), source)];
    for good in [
        "error: cannot reach {host} for {url}: no answer within {n} s",
        "hint: check the \"network\"",
        "cannot reach {...}",
    ] {
        assert_eq!(unmatched(good, &sources), None, "{good}");
    }
    for bad in [
        "cannot reach {host} for {url}: no reply within {n} s",
        "no answer within {n} s{...}cannot reach",
        "error: {message}",
        "cannot reach {host",
    ] {
        assert!(unmatched(bad, &sources).is_some(), "{bad}");
    }
}
