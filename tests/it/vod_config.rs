//! VOD's side of each source against the emulator with VOD's event-configuration semantics
//! (`EventConfigPolicy::Enforced`: a sub-application starts in PUSH mode without a URL, every
//! event switch off): the startup check and `/readyz`, `vodbridge vod status` on every kind of
//! mismatch, `vod configure --dry-run` changing nothing, and after `vod configure` a generated
//! upload arriving through the configured mode, pulled and pushed.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use serde_json::json;
use vod_emulator::{Emitted, EventConfigPolicy, RunningEmulator};
use vodbridge_core::Envelope;
use vodbridge_tencent::event_config::{EventSwitch, Mode, ModifyEventConfig, Switch};

use crate::helpers::{metric, wait_for, TestApp};

const ID: &str = "AKIDVODCONFIG";
const KEY: &str = "vod-config-secret";
const PULL_APP: u64 = 1_500_000_301;
const PUSH_APP: u64 = 1_500_000_302;

async fn enforced_emulator() -> RunningEmulator {
    let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
    config.long_poll = Duration::from_millis(200);
    config.event_config = EventConfigPolicy::Enforced;
    vod_emulator::Emulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves")
}

/// A pull source on `PULL_APP` and a push source with credentials on `PUSH_APP`, both checked
/// every second, a file sink, and the bridge's public URL.
fn config(emu: &RunningEmulator, public: &str, file: &Path, port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_base_url = "{public}"
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {PULL_APP}
secret_id = "{ID}"
secret_key = "{KEY}"
handle_lifetime_ms = 5000
confirm_margin_ms = 1000
vod_check_interval_secs = 1
[sources.hook]
mode = "push"
sub_app_id = {PUSH_APP}
vod_check_interval_secs = 1
[sources.hook.auth]
token = "hook-token"
[sources.hook.vod]
endpoint = "{endpoint}"
secret_id = "{ID}"
secret_key = "{KEY}"
[sinks.file]
type = "file"
path = {file:?}
"#,
        endpoint = emu.endpoint(),
        file = file.display().to_string(),
    )
}

fn cli(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("vodbridge runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn subjects(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Envelope::from_structured_json(l.as_bytes()).ok())
        .filter_map(|e| e.subject)
        .collect()
}

fn upload(file_id: &str) -> serde_json::Value {
    json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id,
        "MediaBasicInfo": {"Name": "v", "CreateTime": "2025-03-01T08:00:00Z"}}})
}

/// The emulator follows VOD: in PUSH mode without a URL and with the upload switch off, an
/// upload goes nowhere; in PULL mode with the switch on it is queued; in PUSH mode with a URL
/// it is pushed, never queued; an empty NotificationUrl clears it.
#[tokio::test]
async fn the_emulator_delivers_as_the_event_configuration_says() {
    let emu = enforced_emulator().await;
    let vod = &emu.emulator;
    assert_eq!(
        vod.event_config(PULL_APP).mode,
        Some(Mode::Push),
        "VOD's start"
    );
    assert!(matches!(
        vod.emit(PULL_APP, &upload("1")),
        Emitted::Dropped(_)
    ));
    vod.modify_event_config(PULL_APP, &{
        let mut c = ModifyEventConfig {
            mode: Some(Mode::Pull),
            ..ModifyEventConfig::default()
        };
        c.set_switch(EventSwitch::UploadMediaComplete, Switch::On);
        c
    });
    assert!(matches!(
        vod.emit(PULL_APP, &upload("2")),
        Emitted::Queued(_)
    ));
    vod.modify_event_config(PUSH_APP, &{
        let mut c = ModifyEventConfig {
            notification_url: Some("http://127.0.0.1:9/callback/x".into()),
            ..ModifyEventConfig::default()
        };
        c.set_switch(EventSwitch::UploadMediaComplete, Switch::On);
        c
    });
    let pushed = vod.emit(PUSH_APP, &upload("3"));
    assert!(matches!(pushed, Emitted::Pushed(_)), "{pushed:?}");
    let queued = vod.ledger().iter().filter(|e| e.mode == "pull").count();
    assert_eq!(queued, 1, "only the PULL-mode upload is queued");
    vod.modify_event_config(
        PUSH_APP,
        &ModifyEventConfig {
            notification_url: Some(String::new()),
            ..ModifyEventConfig::default()
        },
    );
    assert_eq!(vod.event_config(PUSH_APP).notification_url(), Some(""));
    assert!(matches!(
        vod.emit(PUSH_APP, &upload("4")),
        Emitted::Dropped(_)
    ));
    assert_eq!(vod.stats().dropped_by_config, 2);
}

/// A pull source whose sub-application is in PUSH mode is unready with that reason and the
/// mismatch metric set; `vod status` exits non-zero on the mode, the URL and each switch;
/// `vod configure --dry-run` changes nothing; after `vod configure` the bridge is ready,
/// `vod status` exits 0, and an upload arrives through each configured mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_sub_application_is_reported_then_configured() {
    let emu = enforced_emulator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    let port = vodbridge_testkit::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let toml = config(&emu, &public, &file, port);
    let path = dir.path().join("vodbridge.toml");
    std::fs::write(&path, &toml).expect("config written");
    // On the port the public URL names (the helper's `settings` would pick another).
    let on_port = vodbridge::config::Settings::from_config(
        vodbridge::config::Config::from_toml(&toml).expect("parses"),
    )
    .expect("valid");
    let app = TestApp::start(on_port, vec![]).await;

    // 0. check-config shows what each source expects of VOD, the token redacted.
    let described = Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("runs");
    let described = text(&described);
    assert!(
        described.contains("mode PULL")
            && described.contains(&format!(
                "NotificationUrl {public}/callback/hook?token=<redacted>"
            )),
        "{described}"
    );
    assert!(!described.contains("hook-token"), "{described}");

    // 1. Unready, with the reason, and the metric.
    let started = std::time::Instant::now();
    let (code, reason) = loop {
        let (code, body) = app.get("/readyz").await;
        // Both sources' first checks are in.
        if body.contains("mode is") && body.contains("notification_url") {
            break (code, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no mode mismatch on /readyz: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 503, "{reason}");
    assert!(
        reason.contains("source app") && reason.contains("mode is PUSH (expected PULL)"),
        "{reason}"
    );
    assert!(
        reason.contains("notification_url"),
        "the push source's URL: {reason}"
    );
    assert!(
        !reason.contains("hook-token"),
        "the token never shows: {reason}"
    );
    let (_, metrics) = app.get("/metrics").await;
    for (source, what) in [
        ("app", "mode"),
        ("app", "upload_media_complete"),
        ("app", "delete_media_complete"),
        ("hook", "notification_url"),
        ("hook", "upload_media_complete"),
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!(r#"vodbridge_vod_config_mismatch{{source="{source}",what="{what}"}}"#)
            ),
            Some(1.0),
            "{source} {what}: {metrics}"
        );
    }

    // 2. `vod status` on every kind of mismatch, one at a time.
    let status = cli(&["vod", "status"], &path);
    assert!(!status.status.success(), "{}", text(&status));
    let report = text(&status);
    assert!(report.contains("MISMATCH, expected PULL"), "{report}");
    assert!(!report.contains("hook-token"), "{report}");
    let fix =
        |app_id: u64, change: ModifyEventConfig| emu.emulator.modify_event_config(app_id, &change);
    let switches_on = |c: &mut ModifyEventConfig| {
        c.set_switch(EventSwitch::UploadMediaComplete, Switch::On);
        c.set_switch(EventSwitch::DeleteMediaComplete, Switch::On);
    };
    let good_url = format!("{public}/callback/hook?token=hook-token");
    let mut pull_ok = ModifyEventConfig {
        mode: Some(Mode::Pull),
        ..ModifyEventConfig::default()
    };
    switches_on(&mut pull_ok);
    let mut push_ok = ModifyEventConfig {
        mode: Some(Mode::Push),
        notification_url: Some(good_url.clone()),
        ..ModifyEventConfig::default()
    };
    switches_on(&mut push_ok);
    let mismatches: [(&str, u64, ModifyEventConfig); 4] = [
        (
            "mode",
            PULL_APP,
            ModifyEventConfig {
                mode: Some(Mode::Push),
                ..ModifyEventConfig::default()
            },
        ),
        (
            "notification_url",
            PUSH_APP,
            ModifyEventConfig {
                notification_url: Some("http://elsewhere.example/cb".into()),
                ..ModifyEventConfig::default()
            },
        ),
        ("upload_media_complete", PULL_APP, {
            let mut c = ModifyEventConfig::default();
            c.set_switch(EventSwitch::UploadMediaComplete, Switch::Off);
            c
        }),
        ("delete_media_complete", PUSH_APP, {
            let mut c = ModifyEventConfig::default();
            c.set_switch(EventSwitch::DeleteMediaComplete, Switch::Off);
            c
        }),
    ];
    for (what, app_id, breaks) in mismatches {
        fix(PULL_APP, pull_ok.clone());
        fix(PUSH_APP, push_ok.clone());
        let clean = cli(&["vod", "status"], &path);
        assert!(clean.status.success(), "all set: {}", text(&clean));
        fix(app_id, breaks);
        let status = cli(&["vod", "status"], &path);
        assert!(!status.status.success(), "{what}: {}", text(&status));
        assert!(
            text(&status).contains("MISMATCH"),
            "{what}: {}",
            text(&status)
        );
    }
    // Back to VOD's start for the configure steps.
    for app_id in [PULL_APP, PUSH_APP] {
        let mut reset = ModifyEventConfig {
            mode: Some(Mode::Push),
            notification_url: Some(String::new()),
            ..ModifyEventConfig::default()
        };
        for s in EventSwitch::ALL {
            reset.set_switch(s, Switch::Off);
        }
        fix(app_id, reset);
    }

    // 3. A dry run prints the changes and changes nothing.
    let before = (
        emu.emulator.event_config(PULL_APP),
        emu.emulator.event_config(PUSH_APP),
    );
    let dry = cli(&["vod", "configure", "--dry-run"], &path);
    assert!(dry.status.success(), "{}", text(&dry));
    let printed = text(&dry);
    assert!(printed.contains("Mode PUSH → PULL"), "{printed}");
    assert!(
        printed.contains("UploadMediaCompleteEventSwitch OFF → ON"),
        "{printed}"
    );
    assert!(printed.contains("token=<redacted>"), "{printed}");
    assert!(!printed.contains("hook-token"), "{printed}");
    assert_eq!(
        (
            emu.emulator.event_config(PULL_APP),
            emu.emulator.event_config(PUSH_APP)
        ),
        before,
        "--dry-run changed nothing"
    );

    // 4. Configure: ready again, status clean, an upload through each mode.
    let done = cli(&["vod", "configure"], &path);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(
        emu.emulator.event_config(PUSH_APP).notification_url,
        Some(good_url)
    );
    app.wait_ready(Duration::from_secs(10)).await;
    let status = cli(&["vod", "status"], &path);
    assert!(status.status.success(), "{}", text(&status));
    let pulled = emu.emulator.emit(PULL_APP, &upload("7100000001"));
    assert!(matches!(pulled, Emitted::Queued(_)), "{pulled:?}");
    let pushed = emu.emulator.emit(PUSH_APP, &upload("7100000002"));
    assert!(matches!(pushed, Emitted::Pushed(_)), "{pushed:?}");
    wait_for("both uploads in the file", Duration::from_secs(15), || {
        let got = subjects(&file);
        got.contains(&"7100000001".to_owned()) && got.contains(&"7100000002".to_owned())
    })
    .await;
    wait_for(
        "the pushed upload answered 200",
        Duration::from_secs(10),
        || {
            emu.emulator
                .ledger()
                .iter()
                .any(|e| e.key == pushed.key() && e.answer_status == Some(200))
        },
    )
    .await;
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_vod_config_mismatch{source="app",what="mode"}"#
        ),
        Some(0.0)
    );
    app.stop().await.expect("clean stop");
}

/// A source with `sub_app_ids = "all"`: `vod status` gives one line per sub-application (its
/// mode and what differs) and says which are not pulled and why; `vod configure --dry-run`
/// lists each change and makes none; `--sub-app-id` sets only the chosen one; all of it paced
/// within VOD's 20 calls/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sub_application_of_a_source_is_reported_and_configured() {
    let emu = enforced_emulator().await;
    for (id, name) in [
        (401, "news"),
        (402, "sports"),
        (403, "kids"),
        (404, "archived"),
        (405, "internal"),
    ] {
        emu.emulator.add_sub_app(vod_emulator::sub_app(id, name));
    }
    emu.emulator
        .set_sub_app_status(404, vod_emulator::SubAppStatus::Off);
    emu.emulator.modify_event_config(
        401,
        &ModifyEventConfig {
            mode: Some(Mode::Pull),
            upload_media_complete_event_switch: Some(Switch::On),
            delete_media_complete_event_switch: Some(Switch::On),
            ..ModifyEventConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vodbridge.toml");
    std::fs::write(
        &path,
        format!(
            "[sources.tenants]\nmode = \"pull\"\nendpoint = \"{}\"\nsecret_id = \"{ID}\"\n\
             secret_key = \"{KEY}\"\nsub_app_ids = \"all\"\nexclude_sub_app_ids = [405]\n",
            emu.endpoint()
        ),
    )
    .expect("config written");

    let status = cli(&["vod", "status"], &path);
    let report = text(&status);
    assert!(!status.status.success(), "{report}");
    for line in [
        "tenants (pull, sub_app_ids \"all\", ",
        "): 3 pulled, 1 excluded, 1 not On",
        "401 (news)                  mode PULL  ok",
        "402 (sports)                mode PUSH  MISMATCH: mode PUSH (expected PULL); upload_media_complete OFF (expected ON); delete_media_complete OFF (expected ON)",
        "403 (kids)                  mode PUSH  MISMATCH: mode PUSH (expected PULL)",
        "404 (archived)              not pulled: status Off",
        "405 (internal)              not pulled: excluded by the configuration",
        "6 difference(s) between VOD and the bridge",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }

    let dry = cli(&["vod", "configure", "--dry-run"], &path);
    let report = text(&dry);
    assert!(dry.status.success(), "{report}");
    for line in [
        "tenants sub_app_id 401 (news): as expected, nothing to change",
        "tenants sub_app_id 402 (sports): Mode PUSH → PULL; UploadMediaCompleteEventSwitch OFF → ON; DeleteMediaCompleteEventSwitch OFF → ON",
        "tenants sub_app_id 403 (kids): Mode PUSH → PULL",
        "(dry run: nothing was changed)",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    assert!(
        !report.contains("404"),
        "Off sub-applications are left alone:\n{report}"
    );
    assert_eq!(emu.emulator.event_config(402).mode, Some(Mode::Push));

    let unknown = cli(
        &[
            "vod",
            "configure",
            "--source",
            "tenants",
            "--sub-app-id",
            "404",
        ],
        &path,
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("--sub-app-id 404 is not a sub-application source tenants pulls (it pulls 401, 402, 403)"),
        "{}",
        text(&unknown)
    );
    let chosen = cli(
        &[
            "vod",
            "configure",
            "--source",
            "tenants",
            "--sub-app-id",
            "402",
        ],
        &path,
    );
    let report = text(&chosen);
    assert!(chosen.status.success(), "{report}");
    assert!(
        report.contains("tenants sub_app_id 402 (sports): Mode PUSH → PULL"),
        "{report}"
    );
    assert!(!report.contains("403"), "{report}");
    assert_eq!(emu.emulator.event_config(402).mode, Some(Mode::Pull));
    assert_eq!(emu.emulator.event_config(403).mode, Some(Mode::Push));

    let after = text(&cli(&["vod", "status"], &path));
    assert!(
        after.contains("402 (sports)                mode PULL  ok"),
        "{after}"
    );
    assert_eq!(
        emu.emulator.stats().throttled,
        0,
        "paced under VOD's 20 calls/s"
    );
}
