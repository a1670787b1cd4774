//! Bad input: every kind of mistake a user can make in a state repository gives an
//! `error:` naming the file and line (and column where there is one) and a `hint:`,
//! exits 1, and applies nothing.

mod support;

use serde_json::Value;
use support::{AgentTest, repo};

struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    hostname: Option<&'static str>,
    file: &'static str,
    line: Option<u64>,
    column: Option<u64>,
    message: &'static str,
    hint: &'static str,
}

/// A web role whose second step is `step`, starting on line 6.
macro_rules! web_role {
    ($step:expr) => {
        concat!(
            "[[step]]\nid = \"site-dir\"\ntype = \"directory\"\npath = \"/srv/site\"\n\n",
            $step
        )
    };
}

const CASES: &[Case] = &[
    Case {
        name: "malformed TOML",
        files: &[(
            "roles/web.toml",
            "[[step]]\nid = \"a\"\ntype = \"file\"\npath = [\"/x\",\n",
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(4),
        column: Some(14),
        message: "unclosed array",
        hint: "not valid TOML",
    },
    Case {
        name: "unknown key",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"template\"\npath = \"/srv/site/a.conf\"\nsource = \"site.conf.hbs\"\nmdoe = \"0644\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(11),
        column: Some(1),
        message: "unknown key `mdoe` in a template step",
        hint: "did you mean `mode`?",
    },
    Case {
        name: "unknown step type",
        files: &[(
            "roles/web.toml",
            web_role!("[[step]]\nid = \"conf\"\ntype = \"fiel\"\npath = \"/srv/site/a.conf\"\n"),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(8),
        column: Some(8),
        message: "unknown step type \"fiel\" in step `conf`",
        hint: "did you mean \"file\"?",
    },
    Case {
        name: "integer mode",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"file\"\npath = \"/srv/site/a.conf\"\ncontent = \"x\"\nmode = 644\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(11),
        column: Some(8),
        message: "`mode` must be an octal mode string such as \"0644\", found the integer 644",
        hint: "write mode = \"0644\"",
    },
    Case {
        name: "missing template file",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"template\"\npath = \"/srv/site/a.conf\"\nsource = \"nope.hbs\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(10),
        message: "templates/nope.hbs does not exist",
        hint: "create the template under templates/",
    },
    Case {
        name: "missing template variable",
        files: &[(
            "templates/site.conf.hbs",
            "# managed\nuser = {{data.admin.name}}\n",
        )],
        hostname: None,
        file: "templates/site.conf.hbs",
        line: Some(2),
        column: Some(8),
        message: "`data.admin.name` is not defined for this host",
        hint: "add it to group_data/ or host_data/",
    },
    Case {
        name: "missing variable in a step field",
        files: &[(
            "roles/base.toml",
            "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"hello {{data.greeting}}\"\n",
        )],
        hostname: None,
        file: "roles/base.toml",
        line: Some(5),
        column: Some(18),
        message: "`content` of step `motd`: `data.greeting` is not defined for this host",
        hint: "add it to group_data/ or host_data/",
    },
    Case {
        name: "if on a missing key",
        files: &[(
            "templates/site.conf.hbs",
            "# managed\n{{#if data.site.tls}}\ntls = on\n{{/if}}\n",
        )],
        hostname: None,
        file: "templates/site.conf.hbs",
        line: Some(2),
        column: Some(1),
        message: "`data.site.tls` is not defined for this host",
        hint: "{{#if (has ...)}}",
    },
    Case {
        name: "duplicate step id",
        files: &[(
            "roles/web.toml",
            web_role!("[[step]]\nid = \"motd\"\ntype = \"directory\"\npath = \"/srv/x\"\n"),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(7),
        column: Some(6),
        message: "step id `motd` is used twice: here and at roles/base.toml:2",
        hint: "rename one of them",
    },
    Case {
        name: "requires a later step",
        files: &[(
            "roles/base.toml",
            "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"x\"\nrequires = [\"site-dir\"]\n",
        )],
        hostname: None,
        file: "roles/base.toml",
        line: Some(6),
        column: Some(12),
        message: "step `motd` requires `site-dir`, which does not run before it (roles/web.toml:1)",
        hint: "move `site-dir` before `motd`",
    },
    Case {
        name: "requires an unknown step",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/x\"\nrequires = [\"site-dri\"]\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(12),
        message: "step `conf` requires `site-dri`, which no role of this host defines",
        hint: "did you mean `site-dir`?",
    },
    Case {
        name: "notify an earlier step",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/x\"\nnotify = [\"motd\"]\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(10),
        message: "step `conf` notifies `motd`, which does not run after it (roles/base.toml:1)",
        hint: "`notify` names later steps",
    },
    Case {
        name: "notify an unknown step",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/x\"\nnotify = [\"reload-site\"]\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(10),
        message: "step `conf` notifies `reload-site`, which no role of this host defines",
        hint: "name a step of a role this host runs",
    },
    Case {
        name: "bad when expression",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/x\"\nwhen = \"data.site.port = 80\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(24),
        message: "`when` of step `conf`:",
        hint: "==",
    },
    Case {
        name: "when reads data the host does not have",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/x\"\nwhen = \"data.site.tls == true\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(9),
        message: "`data.site.tls` is not defined",
        hint: "defined(data.site.tls)",
    },
    Case {
        name: "host in no inventory",
        files: &[],
        hostname: Some("ghost"),
        file: "inventory",
        line: None,
        column: None,
        message: "host `ghost` is in no inventory file (looked in inventory/production.toml)",
        hint: "add \"ghost\"",
    },
    Case {
        name: "host in two inventory files",
        files: &[(
            "inventory/staging.toml",
            "[groups.all]\nroles = [\"base\"]\n\n[groups.web]\nhosts = [\"web-01\"]\n",
        )],
        hostname: Some("web-01"),
        file: "inventory/production.toml",
        line: Some(5),
        column: None,
        message: "host `web-01` is listed by two inventory files: inventory/production.toml and inventory/staging.toml:5",
        hint: "a host belongs to one environment",
    },
    Case {
        name: "min_agent_version above this agent",
        files: &[("infra.toml", "format = 1\nmin_agent_version = \"99.0.0\"\n")],
        hostname: None,
        file: "infra.toml",
        line: Some(2),
        column: Some(21),
        message: "this repository needs infra-agent 99.0.0 or newer",
        hint: "upgrade infra-agent",
    },
    Case {
        name: "a data reference to missing data",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = { data = \"site.dir\" }\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(9),
        column: Some(8),
        message: "`data.site.dir` is not defined for this host",
        hint: "add it to group_data/ or host_data/",
    },
    Case {
        name: "for_each over a scalar",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"/srv/{{item}}\"\nfor_each = \"data.site.port\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(10),
        column: Some(13),
        message: "for_each of step `conf`: `data.site.port` is 8080, not an array or a table",
        hint: "point for_each at an array or a table",
    },
    Case {
        name: "a relative path",
        files: &[(
            "roles/web.toml",
            web_role!(
                "[[step]]\nid = \"conf\"\ntype = \"directory\"\npath = \"srv/{{host.name}}\"\n"
            ),
        )],
        hostname: None,
        file: "roles/web.toml",
        line: Some(9),
        column: Some(8),
        message: "`path` must be an absolute path, but renders to \"srv/web-01\"",
        hint: "start the path with /",
    },
    Case {
        name: "a role that does not exist",
        files: &[(
            "inventory/production.toml",
            "[groups.all]\nroles = [\"base\", \"wbe\"]\n\n[groups.web]\nhosts = [\"web-01\"]\n",
        )],
        hostname: None,
        file: "inventory/production.toml",
        line: Some(2),
        column: Some(18),
        message: "group `all` names role `wbe`, but roles/wbe.toml does not exist",
        hint: "did you mean \"web\"?",
    },
    Case {
        name: "a template syntax error in a step field",
        files: &[(
            "roles/base.toml",
            "[[step]]\nid = \"motd\"\ntype = \"file\"\npath = \"/etc/motd\"\ncontent = \"{{#if data.admin}}x\"\n",
        )],
        hostname: None,
        file: "roles/base.toml",
        line: Some(5),
        column: Some(11),
        message: "`content` is not a valid template",
        hint: "Templates section",
    },
    Case {
        name: "a template syntax error",
        files: &[(
            "templates/site.conf.hbs",
            "# managed\nuser = {{data.admin.user\n",
        )],
        hostname: None,
        file: "templates/site.conf.hbs",
        // Handlebars notices the unclosed `{{` at the end of the file.
        line: Some(3),
        column: Some(1),
        message: "template syntax error",
        hint: "Templates section",
    },
];

fn find<'a>(errors: &'a [Value], case: &Case) -> Option<&'a Value> {
    errors.iter().find(|e| {
        e["file"] == case.file
            && e["line"].as_u64() == case.line
            && (case.column.is_none() || e["column"].as_u64() == case.column)
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains(case.message))
            && e["hint"].as_str().is_some_and(|h| h.contains(case.hint))
    })
}

#[test]
fn every_bad_input_names_file_line_and_a_hint() {
    let mut failures = Vec::new();
    for case in CASES {
        let dir = repo(case.files);
        let base = |format: &str| {
            let mut t = AgentTest::new()
                .args(["check", "--repo"])
                .arg(dir.path().to_str().expect("UTF-8 temp path"))
                .args(["--format", format]);
            if let Some(h) = case.hostname {
                t = t.args(["--hostname", h]);
            }
            t.run()
        };
        let json = base("json");
        let text = base("text");
        let report: Value = serde_json::from_str(&json.stdout).expect("check prints JSON");
        let mut errors: Vec<Value> = report["errors"].as_array().cloned().unwrap_or_default();
        for host in report["hosts"].as_array().into_iter().flatten() {
            errors.extend(host["errors"].as_array().cloned().unwrap_or_default());
        }
        let location = match (case.line, case.column) {
            (Some(l), Some(c)) => format!("  --> {}:{l}:{c}", case.file),
            (Some(l), None) => format!("  --> {}:{l}", case.file),
            _ => format!("  --> {}", case.file),
        };
        let ok = json.code == 1
            && text.code == 1
            && report["valid"] == false
            && find(&errors, case).is_some()
            && text.stderr.contains("error: ")
            && text.stderr.lines().any(|l| l.starts_with(&location))
            && text.stderr.contains("\nhint: ");
        if !ok {
            failures.push(format!(
                "{}: exit {} / {}\nexpected {location}: {} / hint {}\nJSON errors: {}\ntext stderr:\n{}",
                case.name,
                json.code,
                text.code,
                case.message,
                case.hint,
                serde_json::to_string_pretty(&errors).expect("JSON"),
                text.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_fixture_itself_is_valid() {
    let dir = repo(&[]);
    let run = AgentTest::new()
        .args(["check", "--repo"])
        .arg(dir.path().to_str().expect("UTF-8"))
        .run();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok      web-01"), "{}", run.stdout);
    assert!(
        run.stdout.contains("valid: 1 hosts checked"),
        "{}",
        run.stdout
    );
}
