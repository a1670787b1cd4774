//! Secrets from 1Password: `op://` references, the placeholders that stand for them
//! while a repository is compiled, and their resolution when a step is planned.
//!
//! Compiling never resolves. A reference (a data string `op://vault/item/field`, a
//! command `environment` value, or `{{secret "op://..."}}` in a template) renders as a
//! *placeholder*: the reference between two private-use characters, which cannot
//! occur in normal text. The catalog marks the step that holds one as sensitive and
//! lists the references it needs. Just before such a step is planned, the engine asks
//! the run's [`Resolver`] for each reference (once per run; the daemon may keep values
//! for `secrets_cache_ttl` seconds) and replaces the placeholders in a copy of the
//! step that lives only in memory.
//!
//! Invariant: a resolved value is held in a [`Secret`], whose `Debug` and `Display`
//! print `<secret>`; it is only ever written into the in-memory copy of a step, the
//! environment of a command, or the content of a file. Error messages name the
//! reference, never the value. Placeholders may only sit in fields that output never
//! shows (file and template content, command environment values).

pub mod connect;
pub mod op;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{AgentConfig, SecretsBackend};
use crate::step::StepKind;
use crate::step::file::FileContent;

/// How a reference starts.
pub const SCHEME: &str = "op://";

/// Opens a placeholder: a private-use character, never in text a user writes.
const OPEN: char = '\u{E000}';
/// Closes a placeholder.
const CLOSE: char = '\u{E001}';

/// What `?query` asks of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `?attribute=otp`: the current one-time password of an OTP field.
    Otp,
    /// `?ssh-format=openssh`: an SSH private key in OpenSSH's format.
    SshOpenssh,
}

/// A parsed `op://vault/item[/section]/field[?query]` reference. Not secret: it is
/// what messages name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    text: String,
    pub vault: String,
    pub item: String,
    pub section: Option<String>,
    pub field: String,
    pub query: Option<Query>,
}

impl Reference {
    /// Parses a reference; the error says what is wrong, in words for the user.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix(SCHEME) else {
            return Err(format!("`{text}` does not start with {SCHEME}"));
        };
        if text.trim() != text {
            return Err(format!(
                "`{text}` has white space at its start or end: a reference is exactly op://vault/item/field"
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() || *c == OPEN || *c == CLOSE)
        {
            return Err(format!(
                "`{}` contains the character U+{:04X}, which a reference cannot hold",
                text.escape_debug(),
                u32::from(c)
            ));
        }
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let query = match query {
            None => None,
            Some("attribute=otp") => Some(Query::Otp),
            Some("ssh-format=openssh") => Some(Query::SshOpenssh),
            Some(other) => {
                return Err(format!(
                    "`{text}` asks `?{other}`, which is not supported: only ?attribute=otp and ?ssh-format=openssh are"
                ));
            }
        };
        let parts: Vec<&str> = path.split('/').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(format!(
                "`{text}` has {} part(s): a reference is op://vault/item/field or op://vault/item/section/field",
                parts.len()
            ));
        }
        if let Some(i) = parts.iter().position(|p| p.is_empty()) {
            let names = if parts.len() == 3 {
                ["vault", "item", "field", ""]
            } else {
                ["vault", "item", "section", "field"]
            };
            return Err(format!("`{text}` has an empty {} name", names[i]));
        }
        let own = |s: &str| s.to_owned();
        let (section, field) = if parts.len() == 4 {
            (Some(own(parts[2])), own(parts[3]))
        } else {
            (None, own(parts[2]))
        };
        Ok(Self {
            text: text.to_owned(),
            vault: own(parts[0]),
            item: own(parts[1]),
            section,
            field,
            query,
        })
    }

    /// The reference as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a string is meant as a reference (it starts with `op://`); it may still
/// be malformed, which [`Reference::parse`] says.
#[must_use]
pub fn looks_like_reference(text: &str) -> bool {
    text.starts_with(SCHEME)
}

/// The placeholder that stands for a reference while compiling.
#[must_use]
pub fn placeholder(reference: &Reference) -> String {
    format!("{OPEN}{}{CLOSE}", reference.as_str())
}

/// The references of the placeholders in `text`, in order, repeated as they occur.
#[must_use]
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    scan(text, |_, reference| found.push(reference));
    found
}

/// Calls `each(text before, reference)` for every whole placeholder of `text`, in
/// order, and returns what follows the last one (an unclosed opener included).
fn scan<'t>(text: &'t str, mut each: impl FnMut(&'t str, &'t str)) -> &'t str {
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        let after = &rest[open + OPEN.len_utf8()..];
        let Some(close) = after.find(CLOSE) else {
            break;
        };
        each(&rest[..open], &after[..close]);
        rest = &after[close + CLOSE.len_utf8()..];
    }
    rest
}

/// Whether `text` is exactly one placeholder.
#[must_use]
pub fn is_placeholder(text: &str) -> bool {
    text.starts_with(OPEN) && text.ends_with(CLOSE) && placeholders(text).len() == 1
}

/// Whether `text` holds a placeholder.
#[must_use]
pub fn has_placeholder(text: &str) -> bool {
    text.contains(OPEN)
}

/// Every placeholder reference anywhere in a JSON value.
pub fn placeholders_in_json<'v>(value: &'v serde_json::Value, out: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(s) => out.extend(placeholders(s)),
        serde_json::Value::Array(items) => {
            for item in items {
                placeholders_in_json(item, out);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values() {
                placeholders_in_json(item, out);
            }
        }
        _ => {}
    }
}

/// `text` with each placeholder shown as `<secret op://...>`, for messages.
#[must_use]
pub fn show(text: &str) -> String {
    replace(text, |r| format!("<secret {r}>"))
}

/// `text` with each placeholder replaced by its value. A placeholder without a value
/// (never the case after the engine resolved the step) is shown as in [`show`].
#[must_use]
pub fn substitute(text: &str, values: &Values) -> String {
    replace(text, |r| {
        values
            .get(r)
            .map_or_else(|| format!("<secret {r}>"), |v| v.expose().to_owned())
    })
}

fn replace(text: &str, with: impl Fn(&str) -> String) -> String {
    if !has_placeholder(text) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let rest = scan(text, |before, reference| {
        out.push_str(before);
        out.push_str(&with(reference));
    });
    out.push_str(rest);
    out
}

/// Replaces every data string that is a reference by its placeholder. Malformed
/// references are left as they are: the catalog reports them with their file and line.
pub fn placehold_data(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if looks_like_reference(s) => {
            if let Ok(r) = Reference::parse(s) {
                *s = placeholder(&r);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(placehold_data),
        serde_json::Value::Object(map) => map.values_mut().for_each(placehold_data),
        _ => {}
    }
}

/// The malformed references in a data value: `(what is wrong)` per string.
#[must_use]
pub fn malformed_in_json(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut walk = vec![value];
    while let Some(v) = walk.pop() {
        match v {
            serde_json::Value::String(s) if looks_like_reference(s) => {
                if let Err(e) = Reference::parse(s) {
                    out.push(e);
                }
            }
            serde_json::Value::Array(items) => walk.extend(items),
            serde_json::Value::Object(map) => walk.extend(map.values()),
            _ => {}
        }
    }
    out
}

/// Resolved values by reference, for one step.
pub type Values = std::collections::BTreeMap<String, Secret>;

/// A resolved secret value. It prints as `<secret>` however it is formatted; only
/// [`Secret::expose`] gives the value, to put it where it belongs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself: only for a file's content or a command's environment.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Why a reference could not be resolved. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "no secrets backend is configured on this host\nhint: set secrets_backend = \"op\" (and op_token_file) or \"connect\" (and connect_host, connect_token_file) in agent.toml; see docs/secrets.md"
    )]
    NoBackend,
    #[error(
        "1Password answered \"too many requests\" (rate limited): {0}\nhint: service accounts have an hourly read limit; set secrets_cache_ttl in agent.toml so the daemon reads each secret less often, and the next run tries again"
    )]
    RateLimited(String),
    /// The vault, item, section or field does not exist (or this token cannot see it).
    #[error("{0}")]
    NotFound(String),
    /// The backend could not be reached (a network error, a timeout).
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

/// A place secrets are read from.
pub trait Backend: Send + Sync {
    /// Reads one reference.
    fn read(&self, reference: &Reference) -> Result<Secret, Error>;
}

/// The backend agent.toml configures, `None` when it configures none.
#[must_use]
pub fn backend(config: &AgentConfig) -> Option<Arc<dyn Backend>> {
    match config.secrets_backend {
        SecretsBackend::None => None,
        SecretsBackend::Op => Some(Arc::new(op::OpCli::new(
            &config.op_path,
            &config.op_token_file,
        ))),
        SecretsBackend::Connect => Some(Arc::new(connect::Connect::new(
            &config.connect_host,
            &config.connect_token_file,
        ))),
    }
}

/// Values kept between runs (the daemon's `secrets_cache_ttl`). With a time to live of
/// zero it keeps nothing: every run reads each reference it needs once.
#[derive(Debug, Default)]
pub struct Cache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    ttl: Duration,
    /// The backend settings the values came from: other settings empty the cache.
    source: String,
    values: HashMap<String, (Secret, Instant)>,
}

impl Cache {
    /// Sets the time to live and the backend's settings for the next run; values read
    /// with other settings are dropped, and so are expired ones.
    pub fn configure(&self, config: &AgentConfig) {
        let source = format!(
            "{:?} {} {} {} {}",
            config.secrets_backend,
            config.op_path,
            config.op_token_file.display(),
            config.connect_host,
            config.connect_token_file.display()
        );
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.ttl = Duration::from_secs(config.secrets_cache_ttl);
        if state.source != source || state.ttl.is_zero() {
            state.values.clear();
            state.source = source;
        }
        let ttl = state.ttl;
        state.values.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    /// The values still fresh, with their age, for the daemon to keep while a converge
    /// it started ends (the converge runs in a child process; see daemon.rs). The only
    /// way a value leaves this type: through a pipe between the two, never to disk.
    #[must_use]
    pub fn export(&self) -> Vec<Kept> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .values
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < state.ttl)
            .map(|(reference, (value, at))| Kept {
                reference: reference.clone(),
                value: value.expose().to_owned(),
                age_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Takes values a previous converge read (see [`Cache::export`]); call after
    /// [`Cache::configure`], whose time to live decides what is still fresh.
    pub fn import(&self, kept: Vec<Kept>) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ttl = state.ttl;
        let now = Instant::now();
        for k in kept {
            let age = Duration::from_millis(k.age_ms);
            if age < ttl
                && let Some(at) = now.checked_sub(age)
            {
                state.values.insert(k.reference, (Secret::new(k.value), at));
            }
        }
    }

    fn get(&self, reference: &str) -> Option<Secret> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .values
            .get(reference)
            .filter(|(_, at)| at.elapsed() < state.ttl)
            .map(|(v, _)| v.clone())
    }

    fn put(&self, reference: &str, value: &Secret) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.ttl.is_zero() {
            state
                .values
                .insert(reference.to_owned(), (value.clone(), Instant::now()));
        }
    }
}

/// A cached value on its way between the daemon and the converge it starts.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Kept {
    pub reference: String,
    pub value: String,
    pub age_ms: u64,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("reference", &self.reference)
            .field("value", &"<secret>")
            .field("age_ms", &self.age_ms)
            .finish()
    }
}

/// Resolves references for one run: each at most once (a failure too), from the
/// cache when it still holds the value.
pub struct Resolver {
    backend: Option<Arc<dyn Backend>>,
    cache: Arc<Cache>,
    run: RefCell<HashMap<String, Result<Secret, Error>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("backend", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new(None, Arc::default())
    }
}

impl Resolver {
    #[must_use]
    pub fn new(backend: Option<Arc<dyn Backend>>, cache: Arc<Cache>) -> Self {
        Self {
            backend,
            cache,
            run: RefCell::default(),
        }
    }

    /// The value of a reference (as written in a placeholder).
    pub fn resolve(&self, reference: &str) -> Result<Secret, Error> {
        if let Some(done) = self.run.borrow().get(reference) {
            return done.clone();
        }
        let result = match self.cache.get(reference) {
            Some(value) => Ok(value),
            None => self.read(reference),
        };
        if let Ok(value) = &result {
            self.cache.put(reference, value);
        }
        self.run
            .borrow_mut()
            .insert(reference.to_owned(), result.clone());
        result
    }

    fn read(&self, reference: &str) -> Result<Secret, Error> {
        let parsed = Reference::parse(reference).map_err(Error::Failed)?;
        match &self.backend {
            None => Err(Error::NoBackend),
            Some(backend) => backend.read(&parsed),
        }
    }

    /// Resolves every reference a step needs; the first failure names its reference.
    pub fn resolve_all(&self, references: &[String]) -> Result<Values, String> {
        let mut values = Values::new();
        for reference in references {
            match self.resolve(reference) {
                Ok(v) => {
                    values.insert(reference.clone(), v);
                }
                Err(e) => return Err(format!("secret {reference} cannot be resolved: {e}")),
            }
        }
        Ok(values)
    }
}

/// A copy of a compiled step with its placeholders replaced by their values. Only
/// the fields the catalog lets hold placeholders are looked at.
#[must_use]
pub fn resolve_step(kind: &StepKind, values: &Values) -> StepKind {
    let mut kind = kind.clone();
    match &mut kind {
        StepKind::File(step) => {
            if let Some(FileContent::Inline(text)) = &mut step.content {
                *text = substitute(text, values);
            }
        }
        StepKind::Template(step) => step.content = substitute(&step.content, values),
        StepKind::Command(step) => {
            for value in step.environment.values_mut() {
                *value = substitute(value, values);
            }
        }
        _ => {}
    }
    kind
}

/// `text` with every resolved value replaced by `<secret>`: for what a step that used
/// secrets reports (a command may print its environment, a validator its input).
#[must_use]
pub fn scrub(text: &str, values: &Values) -> String {
    let mut out = text.to_owned();
    for value in values.values() {
        if !value.expose().is_empty() && out.contains(value.expose()) {
            out = out.replace(value.expose(), "<secret>");
        }
    }
    out
}

/// Reads a token file: it must be a regular file owned by the agent's user and
/// readable by nobody else. `key` is the agent.toml key that names it.
pub(crate) fn read_token(path: &Path, key: &str) -> Result<Secret, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Failed(format!(
            "cannot read {key} {}: {e}\nhint: put the token in that file (mode 0600, owned by root) or set {key} in agent.toml",
            path.display()
        ))
    })?;
    if meta.mode() & 0o077 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::Failed(format!(
            "{key} {} is mode {:04o} owned by uid {}: a token file must be readable by root only\nhint: chown root:root {} && chmod 600 {}",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            path.display(),
            path.display()
        )));
    }
    let text = fs_err::read_to_string(path).map_err(|e| {
        Error::Failed(format!(
            "cannot read {key}: {e}\nhint: the file must hold the token as text"
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Failed(format!(
            "{key} {} is empty\nhint: write the token into it",
            path.display()
        )));
    }
    Ok(Secret::new(token.to_owned()))
}

/// The first lines of a backend's message, capped, for an error.
pub(crate) fn brief(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().take(3).collect();
    let joined = lines.join(" / ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{} …", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests;
