//! Parsing one TOML file of the state repository into serde types, with errors that name file, line and column.

use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, LineIndex};

/// Deserializes `text` (the content of `file`) and turns a failure into a diagnostic.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    toml::from_str(text).map_err(|e| toml_error(file, text, &e))
}

/// A TOML or serde error as a diagnostic: the position of its span, the first line of
/// its message, and a hint derived from the message.
#[must_use]
pub fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Diagnostic {
    let pos = e.span().map(|s| LineIndex::new(text).pos(s.start));
    let message = e.message().trim().to_owned();
    let (message, hint) = explain(&message);
    let d = Diagnostic::new(file, pos, message);
    match hint {
        Some(h) => d.hint(h),
        None => d,
    }
}

/// Rewrites serde's wording into ours and adds a hint where we know one.
fn explain(message: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`" or "..., expected `a`"
        let (name, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(" one of")
            .trim()
            .replace('`', "");
        let name = name.trim_matches('`');
        // serde lists one, two ("`a` or `b`") or more ("`a`, `b`, `c`") keys.
        let keys: Vec<&str> = expected
            .split(", ")
            .flat_map(|k| k.split(" or "))
            .filter(|k| !k.is_empty())
            .collect();
        let suggestion = crate::diag::closest(name, keys.iter().copied())
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        return (
            format!("unknown key `{name}`"),
            Some(format!(
                "{suggestion}Allowed keys here: {}",
                keys.join(", ")
            )),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return (
            format!("missing key {rest}"),
            Some(format!(
                "add {} = ... to this table",
                rest.trim_matches('`')
            )),
        );
    }
    if message.starts_with("invalid type") {
        return (
            message.to_owned(),
            Some("check the value's type against docs/state-repo.md".to_owned()),
        );
    }
    (
        message.to_owned(),
        Some("this is not valid TOML: fix the syntax at this position".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        mode: Option<String>,
        path: Option<String>,
    }

    #[test]
    fn unknown_key_names_the_key_and_suggests() {
        let d = parse::<T>("x.toml", "path = \"a\"\nmdoe = \"1\"\n").unwrap_err();
        assert_eq!(d.message, "unknown key `mdoe`");
        assert_eq!((d.line, d.column), (Some(2), Some(1)));
        assert!(d.hint.unwrap().contains("did you mean `mode`?"));
    }

    #[test]
    fn syntax_error_points_at_the_line() {
        let d = parse::<T>("x.toml", "path = \"a\"\nmode = [1,\n").unwrap_err();
        assert_eq!(d.line, Some(2));
        assert!(d.hint.unwrap().contains("not valid TOML"));
    }
}
