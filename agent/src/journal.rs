//! Logging through the `log` facade: to the systemd journal, with the fields
//! `INFRA_COMMIT` and `INFRA_STEP`, when the agent's stderr is connected to it; to
//! stderr as plain lines everywhere else.
//!
//! The journal backend is `systemd-journal-logger`, which turns every key-value pair
//! of a record into a journal field (keys upper-cased, invalid characters replaced
//! by `_`). The helpers here attach the commit and step as such pairs, so
//! `journalctl -u infra-agent INFRA_STEP=nginx-conf` finds every line about a step.
//! Code using the `log` macros directly gets the same fields by naming the keys as
//! the journal does: `log::info!(INFRA_STEP = id; "...")` (a key `step` would become
//! a field `STEP`).
//! Callers never log secret values: a message is written as given.

use std::fmt;
use std::io::Write as _;
use std::panic::Location;
use std::sync::Once;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The syslog identifier of the agent's journal entries (`journalctl -t infra-agent`).
pub const SYSLOG_IDENTIFIER: &str = "infra-agent";
/// Journal field holding the commit a run applies.
pub const FIELD_COMMIT: &str = "INFRA_COMMIT";
/// Journal field holding the id of the step a line is about.
pub const FIELD_STEP: &str = "INFRA_STEP";
/// The target of records logged through this module's helpers.
const TARGET: &str = "infra_agent";

static INIT: Once = Once::new();

/// Installs the agent's logger: the journal when stderr is connected to it (the
/// agent runs under systemd), stderr otherwise. `verbose` adds info and debug lines
/// on stderr and debug lines in the journal. Only the first call does anything, so
/// every entry point may call it.
pub fn init(verbose: bool) {
    INIT.call_once(|| {
        if systemd_journal_logger::connected_to_journal() {
            let level = max_level(true, verbose);
            match systemd_journal_logger::JournalLog::new() {
                Ok(logger) => {
                    let logger = logger.with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned());
                    if logger.install().is_ok() {
                        log::set_max_level(level);
                    }
                    return;
                }
                Err(e) => {
                    // stderr is the journal stream, so this line still reaches the journal.
                    eprintln!(
                        "infra-agent: warning: cannot open the journal socket ({e}); \
                         logging to stderr without journal fields\n\
                         hint: check that systemd-journald is running"
                    );
                }
            }
        }
        // The journal gets info lines by default; a terminal only warnings, as the
        // report on stdout already says what happened.
        let level = max_level(false, verbose);
        if log::set_boxed_logger(Box::new(StderrLog { level })).is_ok() {
            log::set_max_level(level);
        }
    });
}

/// The most detailed level logged.
fn max_level(journal: bool, verbose: bool) -> LevelFilter {
    match (journal, verbose) {
        (_, true) => LevelFilter::Debug,
        (true, false) => LevelFilter::Info,
        (false, false) => LevelFilter::Warn,
    }
}

/// Logs `message` with the journal fields `INFRA_COMMIT` and `INFRA_STEP` for the
/// values given. The source location recorded is the caller's.
#[track_caller]
pub fn log_with(level: Level, commit: Option<&str>, step: Option<&str>, message: &str) {
    if level <= log::max_level() {
        emit(
            log::logger(),
            level,
            commit,
            step,
            format_args!("{message}"),
            Location::caller(),
        );
    }
}

/// A run ended: its one-line summary, at info level.
#[track_caller]
pub fn run_finished(commit: Option<&str>, summary_line: &str) {
    log_with(Level::Info, commit, None, summary_line);
}

/// A step changed the machine (`text` says how), at info level.
#[track_caller]
pub fn step_changed(commit: Option<&str>, step_id: &str, text: &str) {
    log_with(
        Level::Info,
        commit,
        Some(step_id),
        &format!("{step_id}: {text}"),
    );
}

/// A step failed (`text` says why), at error level.
#[track_caller]
pub fn step_failed(commit: Option<&str>, step_id: &str, text: &str) {
    log_with(
        Level::Error,
        commit,
        Some(step_id),
        &format!("{step_id}: {text}"),
    );
}

/// Builds the record with its key-value pairs and hands it to `logger`.
fn emit(
    logger: &dyn Log,
    level: Level,
    commit: Option<&str>,
    step: Option<&str>,
    args: fmt::Arguments<'_>,
    location: &'static Location<'static>,
) {
    let fields: Vec<(&str, &str)> = [(FIELD_COMMIT, commit), (FIELD_STEP, step)]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect();
    let metadata = Metadata::builder().level(level).target(TARGET).build();
    if !logger.enabled(&metadata) {
        return;
    }
    logger.log(
        &Record::builder()
            .metadata(metadata)
            .args(args)
            .key_values(&fields.as_slice())
            .file_static(Some(location.file()))
            .line(Some(location.line()))
            .build(),
    );
}

/// The logger used when there is no journal: one plain line per record on stderr.
#[derive(Debug)]
struct StderrLog {
    level: LevelFilter,
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // A failed write to stderr has nowhere to be reported.
            let _ = std::io::stderr()
                .lock()
                .write_all(format_line(record.level(), *record.args()).as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `infra-agent: <level>: <message>` and a newline; no timestamp (a terminal or a
/// supervisor adds its own).
fn format_line(level: Level, args: fmt::Arguments<'_>) -> String {
    let level = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!("{SYSLOG_IDENTIFIER}: {level}: {args}\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use log::kv::{self, VisitSource};

    use super::*;

    /// What a logger received: level, message, fields, file and line.
    #[derive(Debug, Default)]
    struct Capture {
        records: Mutex<Vec<Captured>>,
    }

    #[derive(Debug)]
    struct Captured {
        level: Level,
        message: String,
        fields: BTreeMap<String, String>,
        file: Option<String>,
        line: Option<u32>,
    }

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl<'kvs> VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(
            &mut self,
            key: kv::Key<'kvs>,
            value: kv::Value<'kvs>,
        ) -> Result<(), kv::Error> {
            self.0.insert(key.as_str().to_owned(), value.to_string());
            Ok(())
        }
    }

    impl Log for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.level() <= Level::Info
        }

        fn log(&self, record: &Record<'_>) {
            let mut fields = BTreeMap::new();
            record.key_values().visit(&mut Fields(&mut fields)).unwrap();
            self.records.lock().unwrap().push(Captured {
                level: record.level(),
                message: record.args().to_string(),
                fields,
                file: record.file().map(str::to_owned),
                line: record.line(),
            });
        }

        fn flush(&self) {}
    }

    fn emit_here(capture: &Capture, level: Level, commit: Option<&str>, step: Option<&str>) {
        emit(
            capture,
            level,
            commit,
            step,
            format_args!("nginx-conf: changed"),
            Location::caller(),
        );
    }

    #[test]
    fn stderr_lines_name_the_agent_and_the_level_without_a_timestamp() {
        assert_eq!(
            format_line(Level::Warn, format_args!("lock held by pid {}", 42)),
            "infra-agent: warning: lock held by pid 42\n"
        );
        assert_eq!(
            format_line(Level::Error, format_args!("fetch failed")),
            "infra-agent: error: fetch failed\n"
        );
        assert_eq!(
            format_line(Level::Debug, format_args!("x")),
            "infra-agent: debug: x\n"
        );
    }

    #[test]
    fn stderr_logger_shows_warnings_and_above_unless_verbose() {
        let quiet = StderrLog {
            level: max_level(false, false),
        };
        let verbose = StderrLog {
            level: max_level(false, true),
        };
        let at = |level| Metadata::builder().level(level).target(TARGET).build();
        assert!(quiet.enabled(&at(Level::Error)));
        assert!(quiet.enabled(&at(Level::Warn)));
        assert!(!quiet.enabled(&at(Level::Info)));
        assert!(verbose.enabled(&at(Level::Info)));
        assert!(verbose.enabled(&at(Level::Debug)));
        assert!(!verbose.enabled(&at(Level::Trace)));
    }

    #[test]
    fn the_journal_gets_info_lines_by_default() {
        assert_eq!(max_level(true, false), LevelFilter::Info);
        assert_eq!(max_level(true, true), LevelFilter::Debug);
    }

    #[test]
    fn commit_and_step_are_passed_as_journal_fields() {
        let capture = Capture::default();
        emit_here(&capture, Level::Info, Some("0a1b2c3"), Some("nginx-conf"));
        let records = capture.records.lock().unwrap();
        let [record] = records.as_slice() else {
            panic!("one record expected, got {records:?}");
        };
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.message, "nginx-conf: changed");
        assert_eq!(
            record.fields,
            BTreeMap::from([
                ("INFRA_COMMIT".to_owned(), "0a1b2c3".to_owned()),
                ("INFRA_STEP".to_owned(), "nginx-conf".to_owned()),
            ])
        );
        assert_eq!(record.file.as_deref(), Some(file!()));
        assert!(record.line.is_some());
    }

    #[test]
    fn absent_values_are_left_out_rather_than_logged_empty() {
        let capture = Capture::default();
        emit_here(&capture, Level::Info, Some("0a1b2c3"), None);
        emit_here(&capture, Level::Error, None, None);
        let records = capture.records.lock().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].fields.keys().collect::<Vec<_>>(),
            ["INFRA_COMMIT"]
        );
        assert!(records[1].fields.is_empty());
    }

    #[test]
    fn records_the_logger_does_not_want_are_not_built() {
        let capture = Capture::default();
        emit_here(&capture, Level::Debug, Some("0a1b2c3"), Some("x"));
        assert!(capture.records.lock().unwrap().is_empty());
    }

    #[test]
    fn journal_field_names_are_valid_as_written() {
        // systemd-journal-logger escapes invalid keys; ours must need no escaping so
        // `journalctl INFRA_STEP=...` matches what the code says.
        for name in [FIELD_COMMIT, FIELD_STEP] {
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn init_twice_keeps_the_first_logger_and_level() {
        init(false);
        let first = log::max_level();
        assert_ne!(first, LevelFilter::Off, "init installs a logger");
        init(true);
        assert_eq!(log::max_level(), first);
    }
}
