//! The `when = "expression"` language: a step runs only if its expression is true.
//!
//! An expression is parsed once ([`Expr::parse`]) and evaluated against a context
//! object shaped like `{"data": {...}, "facts": {...}, "host": {...}, "item": ...}`
//! ([`Expr::eval`]). Parsing and evaluation errors carry a 1-based character column
//! into the source text and, where a common mistake is recognised, a hint.
//!
//! ```text
//! expr    := or
//! or      := and ( '||' and )*
//! and     := unary ( '&&' unary )*
//! unary   := '!' unary | compare
//! compare := operand ( ('==' | '!=' | '<' | '<=' | '>' | '>=') operand
//!                    | 'in' operand | 'not' 'in' operand )?
//! operand := literal | path | list | '(' expr ')' | 'changed' '(' string ')' | 'defined' '(' path ')'
//! literal := string | number | 'true' | 'false'
//! string  := '...' or "..." with escapes \\ \' \" \n \t
//! number  := -?digits ( '.' digits )?
//! list    := '[' ( operand ( ',' operand )* ','? )? ']'
//! path    := root ( '.' segment )*      root: data, facts, host or item
//! ```
//!
//! Evaluation is strict: a path that does not resolve is an error (test optional
//! values with `defined(path)`), and `&&`, `||`, `!` and the whole expression need
//! booleans. `&&` and `||` short-circuit.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

/// The roots a path may start with.
const ROOTS: [&str; 4] = ["data", "facts", "host", "item"];

const ROOTS_HINT_PREFIX: &str = "paths start with data., facts., host. or item.";

/// A parsed `when` expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

/// A parse or evaluation error, located by a 1-based character column in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based character (not byte) column within the expression source.
    pub column: usize,
    /// What went wrong.
    pub message: String,
    /// How to fix it, when a likely fix is known.
    pub hint: Option<String>,
}

impl Error {
    fn new(column: usize, message: impl Into<String>) -> Self {
        Error {
            column,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Expr {
    /// Parses an expression. Columns are 1-based character (not byte) columns within `src`.
    pub fn parse(src: &str) -> Result<Expr, Error> {
        let tokens = lex(src);
        let mut parser = Parser { tokens, pos: 0 };
        let root = parser.parse_top()?;
        Ok(Expr {
            source: src.to_owned(),
            root,
        })
    }

    /// Every context path referenced (e.g. `data.docker.enable`, `facts.os.codename`,
    /// `item.name`), with its column, in source order. Paths inside `defined(...)` are
    /// included too.
    #[must_use]
    pub fn paths(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.root.walk(&mut |node| {
            if let Node::Path(path) | Node::Defined { path, .. } = node {
                out.push((path.text.clone(), path.col));
            }
        });
        out.sort_by_key(|(_, col)| *col);
        out
    }

    /// Every step id named by `changed('id')`, with the column of the id string, in
    /// source order.
    #[must_use]
    pub fn changed_ids(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.root.walk(&mut |node| {
            if let Node::Changed { id, id_col, .. } = node {
                out.push((id.clone(), *id_col));
            }
        });
        out.sort_by_key(|(_, col)| *col);
        out
    }

    /// Evaluates against a context object shaped like
    /// `{"data": {...}, "facts": {...}, "host": {...}, "item": ...}`.
    /// `changed(id)` answers whether that step changed (or would change).
    pub fn eval(&self, ctx: &Value, changed: &dyn Fn(&str) -> bool) -> Result<bool, Error> {
        let ev = Evaluator { ctx, changed };
        ev.truth(&self.root)
    }

    /// The source text it was parsed from.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }
}

// ---------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::NotIn => "not in",
        }
    }
}

#[derive(Debug, Clone)]
struct Path {
    /// The path as written, e.g. `data.docker.enable`.
    text: String,
    /// Column of the first character of the root.
    col: usize,
}

impl Path {
    fn segments(&self) -> impl Iterator<Item = &str> {
        self.text.split('.')
    }
}

#[derive(Debug, Clone)]
enum Node {
    Lit {
        value: Value,
        col: usize,
    },
    Path(Path),
    List {
        items: Vec<Node>,
        col: usize,
    },
    Changed {
        id: String,
        /// Column of the `changed` keyword.
        col: usize,
        /// Column of the quoted id.
        id_col: usize,
    },
    Defined {
        path: Path,
        col: usize,
    },
    Not {
        inner: Box<Node>,
        col: usize,
    },
    And {
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Or {
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Compare {
        op: Op,
        lhs: Box<Node>,
        rhs: Box<Node>,
        op_col: usize,
    },
}

impl Node {
    /// Column where the node's source text starts.
    fn col(&self) -> usize {
        match self {
            Node::Lit { col, .. }
            | Node::List { col, .. }
            | Node::Changed { col, .. }
            | Node::Defined { col, .. }
            | Node::Not { col, .. } => *col,
            Node::Path(path) => path.col,
            Node::And { lhs, .. } | Node::Or { lhs, .. } | Node::Compare { lhs, .. } => lhs.col(),
        }
    }

    /// Visits this node and its children, left to right.
    fn walk(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        match self {
            Node::Lit { .. } | Node::Path(_) | Node::Changed { .. } | Node::Defined { .. } => {}
            Node::List { items, .. } => {
                for item in items {
                    item.walk(f);
                }
            }
            Node::Not { inner, .. } => inner.walk(f),
            Node::And { lhs, rhs } | Node::Or { lhs, rhs } | Node::Compare { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Kind {
    Str(String),
    Num(Number),
    /// An identifier, possibly dotted (`data.docker.enable`); validated by the lexer.
    Word(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Bang,
    AndAnd,
    OrOr,
    Cmp(Op),
    End,
    /// A lexical error; always the last token.
    Bad(Error),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    col: usize,
    /// The source text of the token, for messages.
    text: String,
}

impl Token {
    fn describe(&self) -> String {
        match self.kind {
            Kind::End => "the end of the expression".to_owned(),
            _ => format!("`{}`", self.text),
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(&self.kind, Kind::Word(w) if w == word)
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Splits `src` into tokens. The list always ends with exactly one `End` or `Bad`
/// token; lexing stops at the first bad character so that the parser reports the
/// leftmost problem.
fn lex(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match lex_one(&chars, i) {
            Ok((kind, end)) => {
                tokens.push(Token {
                    kind,
                    col: i + 1,
                    text: chars[i..end].iter().collect(),
                });
                i = end;
            }
            Err(err) => {
                tokens.push(Token {
                    col: err.column,
                    kind: Kind::Bad(err),
                    text: String::new(),
                });
                return tokens;
            }
        }
    }
    tokens.push(Token {
        kind: Kind::End,
        col: chars.len() + 1,
        text: String::new(),
    });
    tokens
}

/// Lexes the token starting at `chars[i]` (not whitespace); returns it and the index
/// just past it.
fn lex_one(chars: &[char], i: usize) -> Result<(Kind, usize), Error> {
    let col = i + 1;
    let c = chars[i];
    let next = chars.get(i + 1).copied();
    let simple = |kind: Kind, len: usize| Ok((kind, i + len));
    match c {
        '(' => simple(Kind::LParen, 1),
        ')' => simple(Kind::RParen, 1),
        '[' => simple(Kind::LBracket, 1),
        ']' => simple(Kind::RBracket, 1),
        ',' => simple(Kind::Comma, 1),
        '!' if next == Some('=') => simple(Kind::Cmp(Op::Ne), 2),
        '!' => simple(Kind::Bang, 1),
        '=' if next == Some('=') => simple(Kind::Cmp(Op::Eq), 2),
        '=' => Err(Error::new(col, "`=` is not an operator")
            .hint("use `==` to compare, e.g. data.x == 'value'")),
        '<' if next == Some('=') => simple(Kind::Cmp(Op::Le), 2),
        '<' => simple(Kind::Cmp(Op::Lt), 1),
        '>' if next == Some('=') => simple(Kind::Cmp(Op::Ge), 2),
        '>' => simple(Kind::Cmp(Op::Gt), 1),
        '&' if next == Some('&') => simple(Kind::AndAnd, 2),
        '&' => Err(Error::new(col, "`&` is not an operator").hint("use `&&`")),
        '|' if next == Some('|') => simple(Kind::OrOr, 2),
        '|' => Err(Error::new(col, "`|` is not an operator").hint("use `||`")),
        '\'' | '"' => lex_string(chars, i),
        '-' | '0'..='9' => lex_number(chars, i),
        c if is_name_start(c) => lex_word(chars, i),
        '.' => Err(Error::new(col, "unexpected `.`")
            .hint("paths are written without spaces, e.g. data.docker.enable")),
        other => Err(Error::new(col, format!("unexpected character `{other}`"))),
    }
}

fn lex_string(chars: &[char], start: usize) -> Result<(Kind, usize), Error> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(Error::new(start + 1, "unterminated string")
                .hint(format!("close the string with {quote}")));
        };
        match c {
            c if c == quote => return Ok((Kind::Str(out), i + 1)),
            '\\' => {
                let escaped = match chars.get(i + 1) {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(other) => {
                        return Err(Error::new(i + 1, format!("unknown escape `\\{other}`"))
                            .hint(r#"the escapes are \\ \' \" \n and \t"#));
                    }
                    None => {
                        return Err(Error::new(start + 1, "unterminated string")
                            .hint(format!("close the string with {quote}")));
                    }
                };
                out.push(escaped);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

fn lex_number(chars: &[char], start: usize) -> Result<(Kind, usize), Error> {
    let digits_from = |mut i: usize| {
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = start;
    if chars[i] == '-' {
        i += 1;
        if !chars.get(i).is_some_and(char::is_ascii_digit) {
            return Err(Error::new(start + 1, "unexpected `-`")
                .hint("numbers are written like -1 or 2.5; there is no subtraction"));
        }
    }
    i = digits_from(i);
    let mut is_float = false;
    if chars.get(i) == Some(&'.') {
        let frac_end = digits_from(i + 1);
        if frac_end == i + 1 {
            let text: String = chars[start..=i].iter().collect();
            return Err(
                Error::new(start + 1, format!("expected digits after `.` in `{text}`"))
                    .hint("numbers are written like 2 or 2.5"),
            );
        }
        is_float = true;
        i = frac_end;
    }
    let text: String = chars[start..i].iter().collect();
    let number = if is_float {
        None
    } else if let Ok(n) = text.parse::<i64>() {
        Some(Number::from(n))
    } else if let Ok(n) = text.parse::<u64>() {
        Some(Number::from(n))
    } else {
        None
    };
    let number = match number {
        Some(n) => n,
        None => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .ok_or_else(|| Error::new(start + 1, format!("number `{text}` is out of range")))?,
    };
    Ok((Kind::Num(number), i))
}

/// Lexes an identifier and any `.segment`s directly following it.
fn lex_word(chars: &[char], start: usize) -> Result<(Kind, usize), Error> {
    let mut i = start + 1;
    while chars.get(i).copied().is_some_and(is_name_char) {
        i += 1;
    }
    while chars.get(i) == Some(&'.') {
        let seg_start = i + 1;
        let mut end = seg_start;
        while chars.get(end).copied().is_some_and(is_name_char) {
            end += 1;
        }
        let so_far: String = chars[start..end].iter().collect();
        let segment = &chars[seg_start..end];
        if segment.is_empty() {
            return Err(Error::new(
                seg_start + 1,
                format!("expected a name after `.` in `{so_far}`"),
            )
            .hint("paths are written like data.docker.enable or item.0"));
        }
        let all_digits = segment.iter().all(char::is_ascii_digit);
        if !all_digits && !is_name_start(segment[0]) {
            let seg: String = segment.iter().collect();
            return Err(Error::new(
                seg_start + 1,
                format!("`{seg}` is not a valid name in `{so_far}`"),
            )
            .hint("names start with a letter or `_`; list indexes are plain digits"));
        }
        i = end;
    }
    Ok((Kind::Word(chars[start..i].iter().collect()), i))
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    /// The current token; a lexical error surfaces here.
    fn peek(&self) -> Result<&Token, Error> {
        let tok = self
            .tokens
            .get(self.pos)
            .expect("the parser never moves past End or Bad because advance stops there");
        match &tok.kind {
            Kind::Bad(err) => Err(err.clone()),
            _ => Ok(tok),
        }
    }

    /// Consumes and returns the current token.
    fn advance(&mut self) -> Result<Token, Error> {
        let tok = self.peek()?.clone();
        if !matches!(tok.kind, Kind::End) {
            self.pos += 1;
        }
        Ok(tok)
    }

    fn parse_top(&mut self) -> Result<Node, Error> {
        if matches!(self.peek()?.kind, Kind::End) {
            return Err(Error::new(1, "empty expression")
                .hint("write a condition, e.g. data.docker.enable == true"));
        }
        let node = self.parse_or()?;
        let tok = self.peek()?;
        if matches!(tok.kind, Kind::End) {
            return Ok(node);
        }
        Err(misplaced(tok).unwrap_or_else(|| {
            let hint = match tok.kind {
                Kind::RParen => "remove it, or add the matching `(`",
                Kind::RBracket => "remove it, or add the matching `[`",
                _ => "join conditions with && or ||",
            };
            Error::new(
                tok.col,
                format!(
                    "unexpected {} after the end of the expression",
                    tok.describe()
                ),
            )
            .hint(hint)
        }))
    }

    fn parse_or(&mut self) -> Result<Node, Error> {
        let mut lhs = self.parse_and()?;
        while matches!(self.peek()?.kind, Kind::OrOr) {
            self.advance()?;
            let rhs = self.parse_and()?;
            lhs = Node::Or {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn parse_and(&mut self) -> Result<Node, Error> {
        let mut lhs = self.parse_unary()?;
        while matches!(self.peek()?.kind, Kind::AndAnd) {
            self.advance()?;
            let rhs = self.parse_unary()?;
            lhs = Node::And {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> Result<Node, Error> {
        if matches!(self.peek()?.kind, Kind::Bang) {
            let col = self.advance()?.col;
            let inner = self.parse_unary()?;
            return Ok(Node::Not {
                inner: Box::new(inner),
                col,
            });
        }
        self.parse_compare()
    }

    /// The comparison operator at the current position, if any, and how many tokens
    /// it spans. `not` not followed by `in` is an error.
    fn peek_op(&self) -> Result<Option<(Op, usize, usize)>, Error> {
        let tok = self.peek()?;
        let op = match &tok.kind {
            Kind::Cmp(op) => Some((*op, tok.col, 1)),
            Kind::Word(w) if w == "in" => Some((Op::In, tok.col, 1)),
            Kind::Word(w) if w == "not" => {
                let next = self.tokens.get(self.pos + 1);
                if next.is_some_and(|t| t.is_word("in")) {
                    Some((Op::NotIn, tok.col, 2))
                } else {
                    return Err(Error::new(tok.col, "`not` is only an operator in `not in`")
                        .hint("use `!` to negate, e.g. !data.x, or `not in` to test membership"));
                }
            }
            _ => None,
        };
        Ok(op)
    }

    fn parse_compare(&mut self) -> Result<Node, Error> {
        let lhs = self.parse_operand()?;
        let Some((op, op_col, len)) = self.peek_op()? else {
            return Ok(lhs);
        };
        for _ in 0..len {
            self.advance()?;
        }
        let rhs = self.parse_operand()?;
        if let Some((next, next_col, _)) = self.peek_op()? {
            return Err(
                Error::new(next_col, "comparisons cannot be chained").hint(format!(
                    "join them with &&, e.g. a {} b && b {} c",
                    op.symbol(),
                    next.symbol()
                )),
            );
        }
        Ok(Node::Compare {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            op_col,
        })
    }

    fn parse_operand(&mut self) -> Result<Node, Error> {
        let tok = self.advance()?;
        let col = tok.col;
        match tok.kind {
            Kind::Str(s) => Ok(Node::Lit {
                value: Value::String(s),
                col,
            }),
            Kind::Num(n) => Ok(Node::Lit {
                value: Value::Number(n),
                col,
            }),
            Kind::Word(word) => self.parse_word(word, col),
            Kind::LParen => {
                let inner = self.parse_or()?;
                self.expect_close(&tok, &Kind::RParen)?;
                Ok(inner)
            }
            Kind::LBracket => self.parse_list(&tok),
            Kind::End => {
                let after = self
                    .pos
                    .checked_sub(1)
                    .and_then(|p| self.tokens.get(p))
                    .map_or(String::new(), |prev| format!(" after `{}`", prev.text));
                Err(Error::new(
                    col,
                    format!("expected a value{after}, found the end of the expression"),
                ))
            }
            Kind::Bang => Err(Error::new(col, "expected a value, found `!`")
                .hint("wrap the negation in parentheses, e.g. (!data.x)")),
            _ => Err(Error::new(
                col,
                format!("expected a value, found {}", tok.describe()),
            )),
        }
    }

    fn parse_word(&mut self, word: String, col: usize) -> Result<Node, Error> {
        match word.as_str() {
            "true" | "false" => Ok(Node::Lit {
                value: Value::Bool(word == "true"),
                col,
            }),
            "changed" => self.parse_changed(col),
            "defined" => self.parse_defined(col),
            _ => Ok(Node::Path(self.word_to_path(word, col)?)),
        }
    }

    /// Checks that a word is a path with a known root.
    fn word_to_path(&self, word: String, col: usize) -> Result<Path, Error> {
        let root = word.split('.').next().unwrap_or_default();
        if ROOTS.contains(&root) {
            return Ok(Path { text: word, col });
        }
        let err = match root {
            "and" => Error::new(col, "`and` is not an operator").hint("use `&&`"),
            "or" => Error::new(col, "`or` is not an operator").hint("use `||`"),
            "not" => Error::new(col, "`not` is not an operator here")
                .hint("use `!` to negate, e.g. !data.x"),
            "in" => Error::new(col, "expected a value, found `in`"),
            "True" | "TRUE" | "False" | "FALSE" => {
                Error::new(col, format!("unknown name `{word}`"))
                    .hint(format!("booleans are written `{}`", root.to_lowercase()))
            }
            _ if self.peek().is_ok_and(|t| matches!(t.kind, Kind::LParen)) => {
                Error::new(col, format!("unknown function `{word}`"))
                    .hint("the functions are changed('step-id') and defined(path)")
            }
            _ => Error::new(col, format!("unknown name `{word}`"))
                .hint(format!("{ROOTS_HINT_PREFIX}, e.g. data.{word}")),
        };
        Err(err)
    }

    fn parse_changed(&mut self, col: usize) -> Result<Node, Error> {
        let open = self.advance()?;
        if !matches!(open.kind, Kind::LParen) {
            return Err(Error::new(
                open.col,
                format!("expected `(` after `changed`, found {}", open.describe()),
            )
            .hint("write changed('step-id')"));
        }
        let arg = self.advance()?;
        let Kind::Str(id) = arg.kind else {
            let hint = match &arg.kind {
                Kind::Word(w) => format!("put the step id in quotes: changed('{w}')"),
                _ => "write changed('step-id')".to_owned(),
            };
            return Err(Error::new(arg.col, "changed() takes a step id in quotes").hint(hint));
        };
        self.expect_close(&open, &Kind::RParen)?;
        Ok(Node::Changed {
            id,
            col,
            id_col: arg.col,
        })
    }

    fn parse_defined(&mut self, col: usize) -> Result<Node, Error> {
        let open = self.advance()?;
        if !matches!(open.kind, Kind::LParen) {
            return Err(Error::new(
                open.col,
                format!("expected `(` after `defined`, found {}", open.describe()),
            )
            .hint("write defined(data.x)"));
        }
        let arg = self.advance()?;
        let path = match arg.kind {
            Kind::Word(w) => self.word_to_path(w, arg.col)?,
            Kind::Str(s) => {
                return Err(Error::new(arg.col, "defined() takes a path, not a string")
                    .hint(format!("remove the quotes: defined({s})")));
            }
            _ => {
                return Err(Error::new(
                    arg.col,
                    format!("defined() takes a path, found {}", arg.describe()),
                )
                .hint("write defined(data.x)"));
            }
        };
        let close = self.peek()?;
        if !matches!(close.kind, Kind::RParen | Kind::End) {
            return Err(Error::new(
                close.col,
                format!("defined() takes one path, found {}", close.describe()),
            )
            .hint(format!(
                "test the value separately, e.g. defined({0}) && {0} == 'value'",
                path.text
            )));
        }
        self.expect_close(&open, &Kind::RParen)?;
        Ok(Node::Defined { path, col })
    }

    fn parse_list(&mut self, open: &Token) -> Result<Node, Error> {
        let mut items = Vec::new();
        loop {
            if matches!(self.peek()?.kind, Kind::RBracket) {
                self.advance()?;
                break;
            }
            items.push(self.parse_operand()?);
            let tok = self.peek()?;
            match tok.kind {
                Kind::Comma => {
                    self.advance()?;
                }
                Kind::RBracket => {}
                Kind::End => return Err(unclosed(open, ']')),
                _ => {
                    return Err(misplaced(tok).unwrap_or_else(|| {
                        Error::new(
                            tok.col,
                            format!("expected `,` or `]` in the list, found {}", tok.describe()),
                        )
                        .hint("separate list items with commas, e.g. ['a', 'b']")
                    }));
                }
            }
        }
        Ok(Node::List {
            items,
            col: open.col,
        })
    }

    /// Consumes the closer matching `open`, or explains why it is missing.
    fn expect_close(&mut self, open: &Token, closer: &Kind) -> Result<(), Error> {
        let close_char = if matches!(closer, Kind::RParen) {
            ')'
        } else {
            ']'
        };
        let tok = self.peek()?;
        if std::mem::discriminant(&tok.kind) == std::mem::discriminant(closer) {
            self.advance()?;
            return Ok(());
        }
        if matches!(tok.kind, Kind::End) {
            return Err(unclosed(open, close_char));
        }
        Err(misplaced(tok).unwrap_or_else(|| {
            Error::new(
                tok.col,
                format!(
                    "expected `{close_char}` to close the `{}` at column {}, found {}",
                    open.text,
                    open.col,
                    tok.describe()
                ),
            )
        }))
    }
}

fn unclosed(open: &Token, close_char: char) -> Error {
    Error::new(open.col, format!("unclosed `{}`", open.text))
        .hint(format!("add a matching `{close_char}`"))
}

/// A targeted error for a token that appears where an operator or the end was
/// expected, if it is a recognisable mistake.
fn misplaced(tok: &Token) -> Option<Error> {
    let Kind::Word(w) = &tok.kind else {
        return None;
    };
    match w.as_str() {
        "and" => Some(Error::new(tok.col, "`and` is not an operator").hint("use `&&`")),
        "or" => Some(Error::new(tok.col, "`or` is not an operator").hint("use `||`")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

struct Evaluator<'c> {
    ctx: &'c Value,
    changed: &'c dyn Fn(&str) -> bool,
}

impl fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<'c> Evaluator<'c> {
    /// Evaluates a node that must produce a boolean.
    fn truth(&self, node: &Node) -> Result<bool, Error> {
        match node {
            Node::Not { inner, .. } => Ok(!self.truth(inner)?),
            Node::And { lhs, rhs } => Ok(self.truth(lhs)? && self.truth(rhs)?),
            Node::Or { lhs, rhs } => Ok(self.truth(lhs)? || self.truth(rhs)?),
            Node::Compare {
                op,
                lhs,
                rhs,
                op_col,
            } => self.compare(*op, lhs, rhs, *op_col),
            Node::Changed { id, .. } => Ok((self.changed)(id)),
            Node::Defined { path, .. } => Ok(lookup(self.ctx, path).is_some()),
            Node::Lit { .. } | Node::Path(_) | Node::List { .. } => {
                let value = self.value(node)?;
                if let Value::Bool(b) = *value {
                    return Ok(b);
                }
                let example = match node {
                    Node::Path(path) => path.text.as_str(),
                    _ => "data.x",
                };
                Err(Error::new(
                    node.col(),
                    format!("expected true or false, found {}", describe(&value)),
                )
                .hint(format!("compare it, e.g. {example} == 'value'")))
            }
        }
    }

    /// Evaluates a node to a JSON value.
    fn value<'n>(&self, node: &'n Node) -> Result<Cow<'n, Value>, Error>
    where
        'c: 'n,
    {
        match node {
            Node::Lit { value, .. } => Ok(Cow::Borrowed(value)),
            Node::Path(path) => lookup(self.ctx, path).map(Cow::Borrowed).ok_or_else(|| {
                let hint = if path.text.starts_with("data.") || path.text == "data" {
                    format!(
                        "use defined({}) to test for an optional value, or add it to group_data/ or host_data/",
                        path.text
                    )
                } else {
                    format!("use defined({}) to test for an optional value", path.text)
                };
                Error::new(path.col, format!("`{}` is not defined", path.text)).hint(hint)
            }),
            Node::List { items, .. } => {
                let values = items
                    .iter()
                    .map(|item| self.value(item).map(Cow::into_owned))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Cow::Owned(Value::Array(values)))
            }
            _ => Ok(Cow::Owned(Value::Bool(self.truth(node)?))),
        }
    }

    fn compare(&self, op: Op, lhs: &Node, rhs: &Node, op_col: usize) -> Result<bool, Error> {
        let left = self.value(lhs)?;
        let right = self.value(rhs)?;
        match op {
            Op::Eq => Ok(json_eq(&left, &right)),
            Op::Ne => Ok(!json_eq(&left, &right)),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let ordering = match (&*left, &*right) {
                    (Value::Number(a), Value::Number(b)) => num_cmp(a, b),
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                let Some(ordering) = ordering else {
                    return Err(Error::new(
                        op_col,
                        format!(
                            "cannot compare {} with {}",
                            type_name(&left),
                            type_name(&right)
                        ),
                    )
                    .hint(format!(
                        "`{}` needs two numbers or two strings; here the left side is {} and the right side is {}",
                        op.symbol(),
                        describe(&left),
                        describe(&right)
                    )));
                };
                Ok(match op {
                    Op::Lt => ordering == Ordering::Less,
                    Op::Le => ordering != Ordering::Greater,
                    Op::Gt => ordering == Ordering::Greater,
                    _ => ordering != Ordering::Less,
                })
            }
            Op::In | Op::NotIn => {
                let found = contains(&left, lhs, &right, rhs, op)?;
                Ok(found == (op == Op::In))
            }
        }
    }
}

/// `left in right`.
fn contains(left: &Value, lhs: &Node, right: &Value, rhs: &Node, op: Op) -> Result<bool, Error> {
    let needs_string = |what: &str| {
        Error::new(
            lhs.col(),
            format!(
                "`{}` with {what} on the right needs a string on the left, found {}",
                op.symbol(),
                describe(left)
            ),
        )
    };
    match right {
        Value::Array(items) => Ok(items.iter().any(|item| json_eq(left, item))),
        Value::String(haystack) => match left {
            Value::String(needle) => Ok(haystack.contains(needle.as_str())),
            _ => Err(needs_string("a string").hint("`in` on a string tests for a substring")),
        },
        Value::Object(map) => match left {
            Value::String(key) => Ok(map.contains_key(key)),
            _ => Err(needs_string("an object").hint("`in` on an object tests for a key")),
        },
        _ => Err(Error::new(
            rhs.col(),
            format!(
                "`{}` needs a list, string or object on the right, found {}",
                op.symbol(),
                describe(right)
            ),
        )
        .hint("e.g. data.x in ['a', 'b']")),
    }
}

/// Resolves a path against the context; `None` if any step is missing.
fn lookup<'v>(ctx: &'v Value, path: &Path) -> Option<&'v Value> {
    let mut current = ctx;
    for segment in path.segments() {
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Deep JSON equality where numbers compare numerically (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Numeric ordering: exact for integers, otherwise as `f64`.
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// A short description of a value for messages, e.g. `string "x"` or `number 3`.
fn describe(value: &Value) -> String {
    const MAX: usize = 40;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        _ => {
            let text = value.to_string();
            let text = if text.chars().count() > MAX {
                let mut cut: String = text.chars().take(MAX).collect();
                cut.push('…');
                cut
            } else {
                text
            };
            format!("{} {text}", type_name(value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "data": {
                "docker": { "enable": true, "version": "27.1", "port": 2375, "ratio": 0.5 },
                "users": ["alice", "bob"],
                "ports": [22, 80, 443],
                "nothing": null,
                "off": false,
                "name": "café",
                "env": { "prod": 1 },
                "nested": { "list": [ { "name": "first" } ] },
                "with-dash": 1
            },
            "facts": { "os": { "codename": "bookworm", "version": 12 } },
            "host": { "name": "web1" },
            "item": { "name": "nginx", "ports": [80] }
        })
    }

    #[test]
    fn evaluates() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("true", &[], true),
            ("false", &[], false),
            ("data.docker.enable", &[], true),
            ("!data.docker.enable", &[], false),
            ("!!data.docker.enable", &[], true),
            ("data.off", &[], false),
            ("data.docker.version == '27.1'", &[], true),
            ("data.docker.version == \"27.1\"", &[], true),
            ("data.docker.version != '27.1'", &[], false),
            ("data.docker.port == 2375", &[], true),
            ("data.docker.port == 2375.0", &[], true),
            ("data.docker.ratio == 0.5", &[], true),
            ("data.docker.port == '2375'", &[], false),
            ("data.docker.port != '2375'", &[], true),
            ("data.nothing == data.nothing", &[], true),
            ("data.users == ['alice', 'bob']", &[], true),
            ("data.users == ['bob', 'alice']", &[], false),
            ("data.env == data.env", &[], true),
            ("data.ports == [22, 80.0, 443,]", &[], true),
            ("data.docker.port < 3000", &[], true),
            ("data.docker.port <= 2375", &[], true),
            ("data.docker.port > 2375", &[], false),
            ("data.docker.port >= 2375", &[], true),
            ("-1 < 0", &[], true),
            ("-1.5 < -1", &[], true),
            ("data.docker.ratio > 0.25", &[], true),
            ("facts.os.version >= 12", &[], true),
            ("'abc' < 'abd'", &[], true),
            ("'b' > 'abc'", &[], true),
            ("facts.os.codename == 'bookworm'", &[], true),
            ("host.name == 'web1'", &[], true),
            ("item.name == 'nginx'", &[], true),
            ("data.nested.list.0.name == 'first'", &[], true),
            ("data.ports.2 == 443", &[], true),
            ("data.with-dash == 1", &[], true),
            // in: list, string, object
            ("'bob' in data.users", &[], true),
            ("'carol' in data.users", &[], false),
            ("80 in data.ports", &[], true),
            ("80.0 in [80]", &[], true),
            ("'bob' not in data.users", &[], false),
            ("'carol' not in data.users", &[], true),
            ("'ook' in facts.os.codename", &[], true),
            ("'xyz' in facts.os.codename", &[], false),
            ("'xyz' not in facts.os.codename", &[], true),
            ("'prod' in data.env", &[], true),
            ("'dev' in data.env", &[], false),
            ("'dev' not in data.env", &[], true),
            ("host.name in ['web1', 'web2']", &[], true),
            ("[] == []", &[], true),
            ("1 in []", &[], false),
            // precedence: ! binds tightest, then &&, then ||
            ("!data.off && data.docker.enable || false", &[], true),
            ("!data.docker.enable && true || true", &[], true),
            ("!data.docker.enable && (true || true)", &[], false),
            ("false && false || true", &[], true),
            ("true || false && false", &[], true),
            ("(true || false) && false", &[], false),
            ("((true))", &[], true),
            ("!(data.docker.port == 1 || (data.off || !true))", &[], true),
            ("!data.docker.port == 1", &[], true),
            // short-circuit: the right side is not evaluated
            ("false && data.missing.path", &[], false),
            ("true || data.missing.path", &[], true),
            ("data.off && data.missing == 1", &[], false),
            // defined
            ("defined(data.docker.enable)", &[], true),
            ("defined(data.nothing)", &[], true),
            ("defined(data.off)", &[], true),
            ("defined(data.missing)", &[], false),
            ("defined(data.docker.enable.deeper)", &[], false),
            ("defined(data.users.1)", &[], true),
            ("defined(data.users.5)", &[], false),
            ("!defined(data.missing) || data.missing", &[], true),
            ("defined(data.missing) && data.missing", &[], false),
            // changed
            ("changed('install')", &["install"], true),
            ("changed('install')", &[], false),
            ("changed(\"a\") || changed('b')", &["b"], true),
            ("!changed('a') && changed('b')", &["a", "b"], false),
            // unicode
            ("data.name == 'café'", &[], true),
            ("'é' in data.name", &[], true),
            ("'✓' == '✓'", &[], true),
            // escapes
            (r#"'it\'s' == "it's""#, &[], true),
            (r"'a\nb' == 'a\nb'", &[], true),
            (r#"'a\tb' != "a\\tb""#, &[], true),
            (r#"'say "hi"' == "say \"hi\"""#, &[], true),
            // whitespace
            ("  data.docker.enable\n&&\ttrue  ", &[], true),
        ];
        let ctx = ctx();
        for (src, changed, expected) in cases {
            let expr = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            let changed = |id: &str| changed.contains(&id);
            let got = expr
                .eval(&ctx, &changed)
                .unwrap_or_else(|e| panic!("{src}: {e:?}"));
            assert_eq!(got, *expected, "{src}");
            assert_eq!(expr.source(), *src);
        }
    }

    #[test]
    fn parse_errors() {
        // (expr, column, message fragment, hint fragment)
        let cases: &[(&str, usize, &str, &str)] = &[
            ("", 1, "empty expression", "write a condition"),
            ("   ", 1, "empty expression", "write a condition"),
            ("data.x = 1", 8, "`=` is not an operator", "use `==`"),
            ("data.x & data.y", 8, "`&` is not an operator", "`&&`"),
            ("data.x | data.y", 8, "`|` is not an operator", "`||`"),
            ("data.x and data.y", 8, "`and` is not an operator", "`&&`"),
            ("data.x or data.y", 8, "`or` is not an operator", "`||`"),
            ("not data.x", 1, "`not` is not an operator", "use `!`"),
            (
                "data.x not data.y",
                8,
                "only an operator in `not in`",
                "`!`",
            ),
            ("(data.x and data.y)", 9, "`and` is not an operator", "`&&`"),
            ("[1 and 2]", 4, "`and` is not an operator", "`&&`"),
            (
                "docker.enable",
                1,
                "unknown name `docker.enable`",
                "paths start with data., facts., host. or item., e.g. data.docker.enable",
            ),
            (
                "data.x == yes",
                11,
                "unknown name `yes`",
                "paths start with",
            ),
            ("True", 1, "unknown name `True`", "`true`"),
            (
                "exists(data.x)",
                1,
                "unknown function `exists`",
                "changed('step-id')",
            ),
            ("'abc", 1, "unterminated string", "close the string"),
            (
                "data.x == \"abc",
                11,
                "unterminated string",
                "close the string",
            ),
            (r"'abc\", 1, "unterminated string", "close the string"),
            (r"'a\qb' == data.x", 3, "unknown escape", r"\n"),
            ("(data.x == 1", 1, "unclosed `(`", "`)`"),
            ("((data.x == 1)", 1, "unclosed `(`", "`)`"),
            (
                "(data.x == 1 data.y)",
                14,
                "expected `)` to close the `(` at column 1",
                "",
            ),
            (
                "data.x == 1)",
                12,
                "unexpected `)` after the end of the expression",
                "`(`",
            ),
            ("[1, 2", 1, "unclosed `[`", "`]`"),
            ("[1 2]", 4, "expected `,` or `]`", "commas"),
            (
                "data.x in [1, 2]]",
                17,
                "unexpected `]` after the end",
                "`[`",
            ),
            (
                "data.x == 1 x",
                13,
                "unexpected `x` after the end of the expression",
                "&&",
            ),
            ("true true", 6, "unexpected `true` after the end", ""),
            (
                "changed(install)",
                9,
                "changed() takes a step id in quotes",
                "changed('install')",
            ),
            (
                "changed(1)",
                9,
                "changed() takes a step id in quotes",
                "changed('step-id')",
            ),
            (
                "changed 'x'",
                9,
                "expected `(` after `changed`",
                "changed('step-id')",
            ),
            ("changed('x'", 8, "unclosed `(`", ""),
            (
                "defined('data.x')",
                9,
                "defined() takes a path",
                "defined(data.x)",
            ),
            (
                "defined(docker.x)",
                9,
                "unknown name `docker.x`",
                "data.docker.x",
            ),
            (
                "defined(data.x == 1)",
                16,
                "defined() takes one path",
                "defined(data.x) &&",
            ),
            ("defined data.x", 9, "expected `(` after `defined`", ""),
            (
                "data.x ==",
                10,
                "expected a value after `==`, found the end",
                "",
            ),
            ("data.x == )", 11, "expected a value, found `)`", ""),
            (
                "data.x == !data.y",
                11,
                "expected a value, found `!`",
                "parentheses",
            ),
            ("data.x &&", 10, "expected a value after `&&`", ""),
            ("!", 2, "expected a value after `!`", ""),
            ("1 < 2 < 3", 7, "comparisons cannot be chained", "&&"),
            (
                "'a' in data.x in data.y",
                15,
                "comparisons cannot be chained",
                "",
            ),
            ("data.", 6, "expected a name after `.` in `data.`", ""),
            ("data..x", 6, "expected a name after `.`", ""),
            ("data.1x", 6, "`1x` is not a valid name", "list indexes"),
            ("data . x", 6, "unexpected `.`", "without spaces"),
            ("1. == 1", 1, "expected digits after `.`", ""),
            ("- 1 == -1", 1, "unexpected `-`", ""),
            ("data.x == $", 11, "unexpected character `$`", ""),
            // columns count characters, not bytes
            ("'é' == ü", 8, "unexpected character `ü`", ""),
            ("'日本' == 1 x", 11, "unexpected `x` after the end", ""),
            // the leftmost problem wins, even when it is found by the parser
            ("data.x == ) = 1", 11, "expected a value, found `)`", ""),
        ];
        for (src, column, message, hint) in cases {
            let err = Expr::parse(src).expect_err(src);
            assert_eq!(err.column, *column, "{src}: {err:?}");
            assert!(err.message.contains(message), "{src}: {err:?}");
            if !hint.is_empty() {
                let got = err.hint.as_deref().unwrap_or_default();
                assert!(got.contains(hint), "{src}: {err:?}");
            }
            assert_eq!(err.to_string(), err.message);
        }
    }

    #[test]
    fn eval_errors() {
        // (expr, column, message fragment, hint fragment)
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "data.x.y",
                1,
                "`data.x.y` is not defined",
                "use defined(data.x.y) to test for an optional value, or add it to group_data/ or host_data/",
            ),
            (
                "true && data.missing",
                9,
                "`data.missing` is not defined",
                "defined(data.missing)",
            ),
            (
                "facts.nope == 1",
                1,
                "`facts.nope` is not defined",
                "defined(facts.nope)",
            ),
            ("data.docker.enable.x", 1, "is not defined", ""),
            (
                "data.users.9 == 'x'",
                1,
                "`data.users.9` is not defined",
                "",
            ),
            ("data.users.first == 'x'", 1, "is not defined", ""),
            ("'x' == data.nope", 8, "`data.nope` is not defined", ""),
            ("'é' == data.nope", 8, "`data.nope` is not defined", ""),
            (
                "'日本語' != data.nope",
                10,
                "`data.nope` is not defined",
                "",
            ),
            ("[1, data.nope]", 5, "`data.nope` is not defined", ""),
            (
                "data.docker.version",
                1,
                "expected true or false, found string \"27.1\"",
                "compare it, e.g. data.docker.version == 'value'",
            ),
            (
                "'x'",
                1,
                "expected true or false, found string \"x\"",
                "compare it, e.g. data.x == 'value'",
            ),
            ("1", 1, "expected true or false, found number 1", ""),
            ("data.nothing", 1, "expected true or false, found null", ""),
            ("data.users", 1, "found list [\"alice\",\"bob\"]", ""),
            ("data.env", 1, "found object {\"prod\":1}", ""),
            ("true && 'x'", 9, "expected true or false, found string", ""),
            ("data.docker.port || true", 1, "found number 2375", ""),
            ("!data.docker.version", 2, "found string", ""),
            ("true && (false || 3)", 19, "found number 3", ""),
            ("[true]", 1, "found list", ""),
            (
                "data.docker.version < 3",
                21,
                "cannot compare string with number",
                "`<` needs two numbers or two strings",
            ),
            ("1 >= 'a'", 3, "cannot compare number with string", ""),
            ("true > false", 6, "cannot compare boolean with boolean", ""),
            ("data.users <= [1]", 12, "cannot compare list with list", ""),
            ("'é' > 1", 5, "cannot compare string with number", ""),
            (
                "'a' in 3",
                8,
                "`in` needs a list, string or object on the right, found number 3",
                "",
            ),
            (
                "'a' not in data.nothing",
                12,
                "`not in` needs a list, string or object",
                "",
            ),
            (
                "1 in 'abc'",
                1,
                "`in` with a string on the right needs a string on the left",
                "substring",
            ),
            (
                "1 in data.env",
                1,
                "`in` with an object on the right needs a string on the left",
                "key",
            ),
            (
                "data.nope in data.users",
                1,
                "`data.nope` is not defined",
                "",
            ),
            ("'a' in data.nope", 8, "`data.nope` is not defined", ""),
            (
                "false || item.missing",
                10,
                "`item.missing` is not defined",
                "defined(item.missing)",
            ),
        ];
        let ctx = ctx();
        for (src, column, message, hint) in cases {
            let expr = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            let err = expr.eval(&ctx, &|_| false).expect_err(src);
            assert_eq!(err.column, *column, "{src}: {err:?}");
            assert!(err.message.contains(message), "{src}: {err:?}");
            if !hint.is_empty() {
                let got = err.hint.as_deref().unwrap_or_default();
                assert!(got.contains(hint), "{src}: {err:?}");
            }
        }
    }

    #[test]
    fn item_missing_from_context_is_an_error() {
        let expr = Expr::parse("item == 'x'").unwrap();
        let err = expr.eval(&json!({"data": {}}), &|_| false).unwrap_err();
        assert_eq!(err.message, "`item` is not defined");
        assert!(expr.eval(&json!({"item": "x"}), &|_| false).unwrap());
    }

    #[test]
    fn lists_paths_and_changed_ids() {
        let expr = Expr::parse(
            "'é' == data.a.b && (defined(facts.os.codename) || changed('x')) \
             && host.name in [item.name, changed(\"y\")]",
        )
        .unwrap();
        assert_eq!(
            expr.paths(),
            vec![
                ("data.a.b".to_owned(), 8),
                ("facts.os.codename".to_owned(), 29),
                ("host.name".to_owned(), 68),
                ("item.name".to_owned(), 82),
            ]
        );
        assert_eq!(
            expr.changed_ids(),
            vec![("x".to_owned(), 59), ("y".to_owned(), 101)]
        );
        let none = Expr::parse("true").unwrap();
        assert!(none.paths().is_empty());
        assert!(none.changed_ids().is_empty());
    }

    #[test]
    fn big_and_mixed_numbers() {
        let ctx = json!({"data": {"big": u64::MAX, "neg": -5, "f": 1e300}});
        let cases = [
            ("data.big == 18446744073709551615", true),
            ("data.big > 1", true),
            ("data.neg < data.big", true),
            ("data.f > data.big", true),
            ("-0 == 0", true),
            ("0.1 < 0.2", true),
        ];
        for (src, expected) in cases {
            let expr = Expr::parse(src).unwrap();
            assert_eq!(expr.eval(&ctx, &|_| false).unwrap(), expected, "{src}");
        }
    }
}
