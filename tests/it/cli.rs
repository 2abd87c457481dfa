//! The `vodbridge` binary as a user runs it: defaults, a real curl POST, metrics, SIGTERM, and
//! `check-config`.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vodbridge_core::Envelope;

use crate::helpers::metric;

const BIN: &str = env!("CARGO_BIN_EXE_vodbridge");

fn fixture_path(name: &str) -> String {
    format!(
        "{}/crates/vodbridge-tencent/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_on_defaults_answers_curl_and_prints_the_envelope() {
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // The JSON log line "Listening." names the bound address.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "exited before listening"
        );
        let log: serde_json::Value =
            serde_json::from_str(&line).expect("logs are JSON when not on a terminal");
        if log["message"] == "Listening." {
            break log["local_addr"].as_str().expect("addr").to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no Listening line"
        );
    };

    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", fixture_path("ProcedureStateChanged")),
        &format!("http://{addr}/callback/default"),
    ]);
    assert_eq!(status, "200");
    let metrics = curl(&[&format!("http://{addr}/metrics")]);
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_events_received_total{event_type="ProcedureStateChanged",ingress="push",source="default"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"vodbridge_published_total{sink="stdout"}"#),
        Some(1.0)
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout carries envelopes only: {stdout}");
    let envelope = Envelope::from_structured_json(lines[0].as_bytes()).expect("an envelope");
    assert_eq!(envelope.ty, "com.tencentcloud.vod.ProcedureStateChanged");
    assert_eq!(envelope.subject.as_deref(), Some("3704211140000000001"));
    assert_eq!(envelope.source, "/tencentcloud/vod/default");
}

#[test]
fn check_config_prints_effective_routes_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        r#"
[sources.app1]
mode = "push"
sub_app_id = 1500000001
[sources.app1.auth]
sign_key = "TopSecret42"
[sinks.events]
type = "file"
path = "/tmp/never-opened-by-check-config.jsonl"
[[routes]]
event_types = ["NewFileUpload"]
sinks = [{ sink = "events", destination = "vod.{event_type}" }]
"#,
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", &config.display().to_string()])
        .env("VODBRIDGE_SERVER__LISTEN", "127.0.0.1:9999")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("listen: 127.0.0.1:9999"),
        "environment overrides the file: {stdout}"
    );
    assert!(
        stdout.contains("NewFileUpload") && stdout.contains("events:vod.{event_type}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FileDeleted") && stdout.contains("NO ROUTE"),
        "unrouted types are flagged: {stdout}"
    );
    assert!(
        stdout.contains("sign_key=<redacted>") && !stdout.contains("TopSecret42"),
        "{stdout}"
    );
    assert!(
        !std::path::Path::new("/tmp/never-opened-by-check-config.jsonl").exists(),
        "starts nothing"
    );

    std::fs::write(&config, "[server]\nlisten = 5\n").expect("write");
    let out = Command::new(BIN)
        .args(["check-config", &config.display().to_string()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen"), "{stderr}");
    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent.toml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[test]
fn demo_pulls_from_the_built_in_emulator_and_prints_envelopes() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "400",
            "--events",
            "120",
        ])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("120 generated, 120 confirmed"), "{stderr}");
    // The emulator starts as VOD does (PUSH mode, switches off); the demo configures it.
    assert!(stderr.contains("Mode PUSH → PULL"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let envelopes: Vec<Envelope> = stdout
        .lines()
        .map(|l| Envelope::from_structured_json(l.as_bytes()).expect("an envelope per line"))
        .collect();
    assert!(envelopes.len() >= 120, "{} lines", envelopes.len());
    assert!(
        envelopes
            .iter()
            .all(|e| e.ingress == vodbridge_core::Ingress::Pull
                && e.sub_app_id == Some(1_500_000_001))
    );
    let types: std::collections::HashSet<&str> =
        envelopes.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.len() > 20, "a mix of event types: {types:?}");
}

#[test]
fn demo_generates_for_several_sub_apps_pulled_by_one_source() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "400",
            "--events",
            "200",
            "--sub-apps",
            "5",
        ])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("200 generated, 200 confirmed"), "{stderr}");
    for id in 1_500_000_001_u64..=1_500_000_005 {
        assert!(
            stderr.contains(&format!(
                "demo sub_app_id {id} (demo-{}): Mode PUSH → PULL",
                id - 1_500_000_000
            )),
            "{stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut by_sub_app = std::collections::BTreeMap::<u64, usize>::new();
    for line in stdout.lines() {
        let envelope = Envelope::from_structured_json(line.as_bytes()).expect("an envelope");
        let id = envelope.sub_app_id.expect("a sub-application");
        assert_eq!(envelope.source, format!("/tencentcloud/vod/{id}"));
        *by_sub_app.entry(id).or_default() += 1;
    }
    assert_eq!(by_sub_app.len(), 5, "{by_sub_app:?}");
    assert!(by_sub_app.values().all(|n| *n >= 40), "{by_sub_app:?}");
    let refused = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--sub-apps", "0"])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--sub-apps must be 1 to 500"));
}

#[test]
fn check_config_shows_pull_sources_with_the_key_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pull.toml");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "SuperSecretKey123\n").expect("write");
    std::fs::write(
        &config,
        format!(
            r#"
[sources.app1]
mode = "pull"
endpoint = "https://vod.intl.tencentcloudapi.com"
sub_app_id = 1500000001
secret_id = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
secret_key_file = {:?}
loops = 3
"#,
            key_file.display().to_string()
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", &config.display().to_string()])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "app1: pull from https://vod.intl.tencentcloudapi.com sub_app_id=1500000001 loops=3"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("secret_key=<redacted>"), "{stdout}");
    assert!(
        !stdout.contains("SuperSecretKey123")
            && !stdout.contains("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"),
        "{stdout}"
    );

    std::fs::write(
        &config,
        "[sources.app1]\nmode = \"pull\"\nsecret_id = \"x\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", &config.display().to_string()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sources.app1.secret_key"),
        "a missing key is named"
    );
}

/// `check-config` refuses exactly what `run` refuses: the same invalid files fail both, with
/// the same key named, and `run` fails before it listens.
#[test]
fn check_config_and_run_refuse_the_same_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[sinks.rabbit]\ntype = \"amqp\"\nurl = \"http://rabbit:5672/\"\nexchange = \"vod\"\n",
            "sinks.rabbit: invalid AMQP sink configuration: url",
        ),
        (
            "[sinks.rabbit]\ntype = \"amqp\"\nurl = \"amqp://rabbit:5672/%2f\"\nexchange = \"vod\"\nchannels = 0\n",
            "channels must be 1 to 256",
        ),
        (
            "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"\"\n",
            "sinks.kafka: invalid Kafka sink configuration: brokers is empty",
        ),
        (
            "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"k:9092\"\nproperties = { \"linger.ms\" = \"soon\" }\n",
            "linger.ms",
        ),
        (
            "[sinks.nats]\ntype = \"nats\"\nurl = \"nats://nats:4222\"\nstream = \"bad stream.name*\"\n",
            "sinks.nats: invalid NATS sink configuration: stream name",
        ),
        (
            "[sinks.nats]\ntype = \"nats\"\nurl = \"nats://nats:4222\"\nstream = \"VOD\"\ntoken_file = \"/nonexistent/token\"\n",
            "/nonexistent/token",
        ),
        (
            "[sources.app]\nmode = \"pull\"\nsecret_id = \"x\"\nsecret_key = \"y\"\nmax_backoff_ms = 5\n",
            "sources.app.max_backoff_ms must be at least 100",
        ),
        (
            "[sources.app]\nmode = \"push\"\nhold_ms = 1000\n",
            "sources.app.hold_ms must be 6000 to 120000",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let path = path.display().to_string();
        let check = Command::new(BIN)
            .args(["check-config", &path])
            .output()
            .expect("runs");
        let run = Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--config", &path])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("runs");
        let (check_err, run_err) = (
            String::from_utf8_lossy(&check.stderr),
            String::from_utf8_lossy(&run.stderr),
        );
        assert!(!check.status.success(), "check-config accepted {text}");
        assert!(!run.status.success(), "run accepted {text}");
        assert!(
            check_err.contains(needle),
            "check-config on {text}: {check_err}"
        );
        assert!(run_err.contains(needle), "run on {text}: {run_err}");
        assert!(
            !run_err.contains("Listening."),
            "run refused before listening: {run_err}"
        );
    }
}

/// A sink that cannot be opened stops the start with one line that names the sink, the file and
/// the OS's reason, each once (the library errors carry their sources; `main` prints the chain
/// without repeating a cause the line already says).
#[test]
fn a_file_sink_that_cannot_be_opened_is_named_once_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vodbridge.toml");
    // The sink's directory cannot be created: a regular file is in the way.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("write");
    let path = blocker.join("events.jsonl");
    std::fs::write(
        &config,
        format!(
            "[sinks.events]\ntype = \"file\"\npath = {:?}\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"events\" }}]\n",
            path.display().to_string()
        ),
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("vodbridge started with a sink it cannot open");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    let path = path.display().to_string();
    assert!(line.contains("sink events: cannot open"), "{line}");
    assert_eq!(line.matches(path.as_str()).count(), 1, "{line}");
    assert_eq!(line.matches("(os error").count(), 1, "{line}");
}

#[test]
fn check_config_reaches_the_shared_record_and_keeps_its_password_out() {
    let redis = vodbridge_testkit::RedisServer::start_with_password("Hunter2secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bridge.toml");
    let write = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "[delivery]\nshared_record = {url:?}\n[sinks.events]\ntype = \"file\"\npath = \"/tmp/never-opened-by-check-config.jsonl\"\n"
            ),
        )
        .expect("write");
    };
    write(&redis.url());
    let out = Command::new(BIN)
        .args(["check-config", &config.display().to_string()])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("shared through redis redis://:***@127.0.0.1")
            && stdout.contains("shared delivery record: redis://:***@127.0.0.1")
            && stdout.contains("reachable"),
        "{stdout}"
    );
    assert!(!stdout.contains("Hunter2secret"), "{stdout}");

    // A wrong password and a store that is not there fail the check, naming the store.
    for url in [
        format!("redis://:wrong-password@127.0.0.1:{}", redis.port),
        format!("redis://127.0.0.1:{}", vodbridge_testkit::free_port()),
    ] {
        write(&url);
        let out = Command::new(BIN)
            .args(["check-config", &config.display().to_string()])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains("is not reachable") && stderr.contains("127.0.0.1"),
            "{stderr}"
        );
        assert!(!stderr.contains("wrong-password"), "{stderr}");
    }
}
