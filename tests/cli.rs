//! The command line as a user meets it: `check` on the shipped example and on broken rules (every error,
//! with file:line and the rule's name), `explain`, and `deliveries` / `replay` on a data directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn trackrelay(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trackrelay"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("TRACKRELAY_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("TRACKRELAY_WEBHOOK_TOKEN", "t"),
    ("TELEGRAM_BOT_TOKEN", "123:abc"),
    ("TELEGRAM_CHAT_ID", "42"),
    ("SMTP_HOST", "127.0.0.1"),
    ("OPS_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_example_config_and_rules_check_clean() {
    let out = trackrelay(&["check", "trackrelay.example.yaml"], repo(), EXAMPLE_ENV);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 channel(s), 9 rule(s) from 4 file(s)"),
        "{stdout}"
    );
    // Without public_url, the incident rule's messages carry no link: said, not an error.
    assert!(
        stdout.contains("warning: rules/10-theft.yaml:5: rule 'theft-alarm': incident messages carry no acknowledgement link"),
        "{stdout}"
    );
    // The built-in default config checks too.
    assert!(trackrelay(&["check"], repo(), &[]).status.success());
    // A missing variable is named, with its line.
    let out = trackrelay(
        &["check", "trackrelay.example.yaml"],
        repo(),
        &EXAMPLE_ENV[1..],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("trackrelay.example.yaml:17: environment variable `TRACKRELAY_WEBHOOK_TOKEN` is not set"), "{stderr}");
}

#[test]
fn check_reports_every_error_with_file_line_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("trackrelay.yaml"),
        "channels:\n  stdout: { type: log }\n  mail: { type: email, host: h, from: 'not an address' }\nrules: [rules/]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/a.yaml"),
        r#"rules:
  - name: fine
    notify: [{ channel: stdout }]
  - name: bad-channel
    notify: [{ channel: nope }]
  - name: bad-regex
    match: { where: { device.name: { regex: "(" } } }
    notify: [{ channel: stdout }]
  - name: bad-expr
    match: { expr: "(speed_kmh > 3" }
    notify: [{ channel: stdout }]
  - name: bad-field
    match: { where: { device.colour: red } }
    notify: [{ channel: stdout }]
  - name: bad-template
    notify: [{ channel: stdout, template: "{{ device.name " }]
  - name: fine
    notify: [{ channel: stdout }]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/b.yaml"),
        "rules:\n  - name: typo\n    mach: {}\n    notify: []\n",
    )
    .unwrap();
    let out = trackrelay(&["check", "trackrelay.yaml"], dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expect = [
        "trackrelay.yaml:3: channel 'mail': from: `not an address`",
        "rules/a.yaml:4: rule 'bad-channel': notify[0]: unknown channel 'nope' (configured: ",
        "rules/a.yaml:6: rule 'bad-regex': match: where `device.name`: invalid regex `(`: unclosed group\n",
        "rules/a.yaml:9: rule 'bad-expr': match: expr: cannot parse expression `(speed_kmh > 3`",
        "rules/a.yaml:12: rule 'bad-field': match: where: unknown field `device.colour`: device has no property `colour`; attributes are read with device.attributes.colour",
        "rules/a.yaml:15: rule 'bad-template': notify[0]: template: syntax error",
        "rules/a.yaml:17: rule 'fine': another rule has the same name",
        "rules/b.yaml:3: rules[0]: unknown field `mach`, expected one of `name`",
    ];
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert!(stderr.starts_with("8 configuration errors:"), "{stderr}");
}

#[test]
fn explain_names_matches_failures_and_messages() {
    let p = repo().join("tests/payloads/alarm_vibration.json");
    let out = trackrelay(
        &[
            "explain",
            "--event",
            p.to_str().unwrap(),
            "trackrelay.example.yaml",
        ],
        repo(),
        EXAMPLE_ENV,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("MATCH     theft-alarm (rules/10-theft.yaml:5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no match  sos (rules/10-theft.yaml:44): failed `alarm in [sos]`"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "incident  theft-alarm (key theft-12): opens an incident; next: repeat 1 at "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("no match  low-battery (rules/30-ops.yaml:17): failed `batteryLevel < 20`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--- rule 'theft-alarm' -> channel 'phone' -> 42"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"subject\": \"Theft alarm: Lena's Gazelle (vibration)\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn deliveries_and_replay_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ hook: {{ type: webhook, url: \"http://127.0.0.1:9/closed\" }} }}\n\
         delivery: {{ retry: {{ max_attempts: 1 }} }}\nrules: [{{ name: a, notify: [{{ channel: hook }}] }}]\n",
        dir.path().join("data").display()
    );
    let relay = common::Relay::start(common::config_in(dir.path(), &yaml)).await;
    relay.post(common::payload("alarm_sos.json"), &[]).await;
    let store = relay.running.as_ref().unwrap().store.clone();
    for _ in 0..200 {
        if store.counts().await.unwrap() == vec![(trackrelay::store::Status::Dead, 1)] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    relay.stop().await;

    let out = trackrelay(
        &[
            "deliveries",
            "--config",
            "trackrelay.yaml",
            "--status",
            "dead",
            "--json",
        ],
        dir.path(),
        &[],
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["event_id"], 1934577);
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 1 attempt: webhook: connection failed"),
        "{rows}"
    );
    let table = trackrelay(
        &["deliveries", "--config", "trackrelay.yaml"],
        dir.path(),
        &[],
    );
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("dead"),
        "{table:?}"
    );

    let id = rows[0]["id"].to_string();
    let out = trackrelay(
        &["replay", "--config", "trackrelay.yaml", &id],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 delivery is due again"
    );
    let out = trackrelay(
        &[
            "deliveries",
            "--config",
            "trackrelay.yaml",
            "--status",
            "pending",
            "--json",
        ],
        dir.path(),
        &[],
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    // Replaying what is not dead or done is an error (exit 1), --all-dead finds nothing left.
    assert_eq!(
        trackrelay(
            &["replay", "--config", "trackrelay.yaml", &id],
            dir.path(),
            &[]
        )
        .status
        .code(),
        Some(1)
    );
    let out = trackrelay(
        &["replay", "--config", "trackrelay.yaml", "--all-dead"],
        dir.path(),
        &[],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 deliveries are due again"
    );
}

#[tokio::test]
async fn silences_and_suppressed_deliveries_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let run = |args: &[&str]| trackrelay(args, dir.path(), &[("TRACKRELAY_DATA_DIR", d)]);
    let out = run(&[
        "silence",
        "add",
        "--device",
        "Lena*",
        "--rule",
        "theft*",
        "--for",
        "2h",
        "--author",
        "lena",
        "--comment",
        "bike at the shop",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with("silence #1 (device=Lena* rule=theft*) until "),
        "{stdout}"
    );
    // Bad input: no matcher, no end, a past end: a clear error and exit 1.
    for (args, msg) in [
        (
            vec!["silence", "add", "--for", "1h"],
            "at least one matcher",
        ),
        (
            vec!["silence", "add", "--device", "1"],
            "give --for DURATION or --until TIME",
        ),
        (
            vec![
                "silence",
                "add",
                "--device",
                "1",
                "--until",
                "2001-01-01T00:00:00Z",
            ],
            "in the past",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{out:?}"
        );
    }
    let list = run(&["silence", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("active") && listed.contains("bike at the shop"),
        "{listed}"
    );

    // A running relay on the same data directory applies it: the example theft rule's alarm for
    // "Lena's Gazelle" is recorded as suppressed, and `deliveries` shows why.
    let yaml = format!(
        "storage: {{ data_dir: \"{d}\" }}\nchannels: {{ out: {{ type: log }} }}\n\
         rules: [{{ name: theft-alarm, match: {{ type: alarm }}, notify: [{{ channel: out }}] }}]\n"
    );
    let relay = common::Relay::start(common::config_in(dir.path(), &yaml)).await;
    assert_eq!(
        relay
            .post(common::payload("alarm_vibration.json"), &[])
            .await
            .0,
        200
    );
    relay.stop().await;
    let table = run(&["deliveries", "--status", "suppressed"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("suppressed")
            && table.contains("silenced by silence #1 (device=Lena* rule=theft*)"),
        "{table}"
    );

    // explain reads the silences and the state of the data directory.
    let p = repo().join("tests/payloads/alarm_vibration.json");
    let out = run(&["explain", "--event", p.to_str().unwrap(), "trackrelay.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(suppress: silenced by silence #1"),
        "{stdout}"
    );

    let out = run(&["silence", "expire", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&run(&["silence", "list"]).stdout)
            .lines()
            .count()
            == 1
    );
    let all = run(&["silence", "list", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(v[0]["state"], "expired");
    let out = run(&["silence", "expire", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("silence #7 not found"),
        "{out:?}"
    );
}
