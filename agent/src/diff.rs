//! Unified diffs of file content, as plans show them.
//!
//! Text is diffed line by line with three lines of context, in the format of
//! `diff -u` (including `\ No newline at end of file`). Content that is not UTF-8 or
//! contains NUL bytes is summarised in one line instead. Every string returned here
//! is whole lines, each ending in `\n`.

use std::fmt::Write as _;
use std::time::Duration;

use similar::TextDiff;

/// Lines of a diff shown before the rest is summarised as `… N more lines`.
pub const MAX_LINES: usize = 400;

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// After this long the diff algorithm settles for a correct but less minimal diff.
const DEADLINE: Duration = Duration::from_secs(2);

/// A unified diff between old and new content of `path`, with `--- path` / `+++ path`
/// headers and 3 lines of context; `None` when equal.
#[must_use]
pub fn unified(path: &str, old: &[u8], new: &[u8]) -> Option<String> {
    (old != new).then(|| render(path, path, old, new))
}

/// A diff creating `path` with content `new`: `--- /dev/null` / `+++ path` and one hunk
/// adding every line (just the headers for an empty file).
#[must_use]
pub fn created(path: &str, new: &[u8]) -> String {
    if new.is_empty() {
        return format!("--- /dev/null\n+++ {path}\n");
    }
    render("/dev/null", path, b"", new)
}

/// The line shown instead of a diff when the content is sensitive.
#[must_use]
pub fn redacted(path: &str) -> String {
    format!("content of {path} changed (secret, not shown)\n")
}

fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn render(old_name: &str, new_name: &str, old: &[u8], new: &[u8]) -> String {
    let (Some(old_text), Some(new_text)) = (as_text(old), as_text(new)) else {
        return format!(
            "binary content differs: {} bytes -> {} bytes\n",
            old.len(),
            new.len()
        );
    };
    let diff = TextDiff::configure()
        .timeout(DEADLINE)
        .diff_lines(old_text, new_text);
    let text = diff
        .unified_diff()
        .context_radius(CONTEXT)
        .header(old_name, new_name)
        .to_string();
    cap(&text)
}

/// Keeps the first [`MAX_LINES`] lines and counts the rest.
fn cap(text: &str) -> String {
    // `split_inclusive` rather than `lines`, which would eat a `\r` belonging to content.
    let total = text.split_inclusive('\n').count();
    if total <= MAX_LINES {
        return text.to_owned();
    }
    let mut out: String = text.split_inclusive('\n').take(MAX_LINES).collect();
    let more = total - MAX_LINES;
    let noun = if more == 1 { "line" } else { "lines" };
    writeln!(out, "… {more} more {noun}")
        .expect("writing to a String cannot fail, because it only allocates");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name, old content, new content, expected diff of `/f`.
    type Case = (
        &'static str,
        &'static [u8],
        &'static [u8],
        Option<&'static str>,
    );

    /// `n` lines `PREFIX0` … `PREFIXn-1`.
    fn numbered(n: usize, prefix: &str) -> String {
        let mut out = String::new();
        for i in 0..n {
            writeln!(out, "{prefix}{i}").unwrap();
        }
        out
    }

    #[test]
    fn table() {
        let cases: &[Case] = &[
            ("identical", b"a\nb\n", b"a\nb\n", None),
            ("both empty", b"", b"", None),
            (
                "one line changed",
                b"a\nb\nc\n",
                b"a\nB\nc\n",
                Some("--- /f\n+++ /f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"),
            ),
            (
                "context is three lines",
                b"1\n2\n3\n4\n5\n6\n7\n8\n9\n",
                b"1\n2\n3\n4\nX\n6\n7\n8\n9\n",
                Some("--- /f\n+++ /f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+X\n 6\n 7\n 8\n"),
            ),
            (
                "newline added at end",
                b"a\nb",
                b"a\nb\n",
                Some("--- /f\n+++ /f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"),
            ),
            (
                "new side lacks final newline",
                b"a\n",
                b"a\nb",
                Some("--- /f\n+++ /f\n@@ -1 +1,2 @@\n a\n+b\n\\ No newline at end of file\n"),
            ),
            (
                "to empty",
                b"a\n",
                b"",
                Some("--- /f\n+++ /f\n@@ -1 +0,0 @@\n-a\n"),
            ),
            (
                "binary: NUL",
                b"a\0b",
                b"a\0c",
                Some("binary content differs: 3 bytes -> 3 bytes\n"),
            ),
            (
                "binary: not UTF-8",
                b"text\n",
                b"\xff\xfe",
                Some("binary content differs: 5 bytes -> 2 bytes\n"),
            ),
            (
                "CRLF kept",
                b"a\r\n",
                b"b\r\n",
                Some("--- /f\n+++ /f\n@@ -1 +1 @@\n-a\r\n+b\r\n"),
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(unified("/f", old, new).as_deref(), *want, "case {name}");
        }
    }

    #[test]
    fn creation() {
        assert_eq!(
            created("/etc/motd", b"hi\nthere\n"),
            "--- /dev/null\n+++ /etc/motd\n@@ -0,0 +1,2 @@\n+hi\n+there\n"
        );
        assert_eq!(
            created("/etc/motd", b"hi"),
            "--- /dev/null\n+++ /etc/motd\n@@ -0,0 +1 @@\n+hi\n\\ No newline at end of file\n"
        );
        assert_eq!(created("/e", b""), "--- /dev/null\n+++ /e\n");
        assert_eq!(
            created("/e", b"\0"),
            "binary content differs: 0 bytes -> 1 bytes\n"
        );
    }

    #[test]
    fn long_diffs_are_capped() {
        let new = numbered(1000, "line ");
        let out = created("/big", new.as_bytes());
        // 2 header lines + 1 hunk header + 1000 added lines.
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[MAX_LINES - 1], "+line 396");
        assert_eq!(lines[MAX_LINES], "… 603 more lines");

        let just_over = numbered(398, "");
        assert!(created("/f", just_over.as_bytes()).ends_with("… 1 more line\n"));
        let at_cap = numbered(397, "");
        assert!(!created("/f", at_cap.as_bytes()).contains('…'));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redacted("/etc/secret"),
            "content of /etc/secret changed (secret, not shown)\n"
        );
    }
}
