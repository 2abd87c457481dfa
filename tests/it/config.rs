//! Configuration: the example file, embedded defaults, validation errors that name the key.

use vodbridge::config::{Config, Settings, SourceKind};

fn example_text() -> String {
    let path = format!(
        "{}/config/vodbridge.example.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).expect("example config")
}

fn error_of(toml: &str) -> String {
    match Config::from_toml(toml).and_then(Settings::from_config) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, value) in [
        ("app1-sign-key", "abcXYZ123\n"),
        ("app2-secret-id", "AKIDexample\n"),
        ("app2-secret-key", "k\n"),
        ("amqp-url", "amqp://guest:guest@localhost:5672/%2f\n"),
    ] {
        std::fs::write(dir.path().join(file), value).expect("write");
    }
    let text = example_text().replace(
        "/etc/vodbridge/secrets/",
        &format!("{}/", dir.path().display()),
    );
    let settings =
        Settings::from_config(Config::from_toml(&text).expect("parses")).expect("validates");
    assert_eq!(settings.sources.len(), 2);
    assert!(matches!(settings.sources["app2"].kind, SourceKind::Pull(_)));
    let SourceKind::Push(push) = &settings.sources["app1"].kind else {
        panic!("app1 is a push source")
    };
    assert!(push.auth.sign_key.is_some(), "the key file was read");
    assert!(
        push.hold.is_some(),
        "push sources hold failures for VOD by default"
    );
    assert_eq!(settings.sinks.len(), 6);
    assert_eq!(settings.routes.routes().len(), 3);
    assert!(settings.dead_letter.is_some());
    assert_eq!(settings.unroutable_retry.retries, 2);
    let described = settings.describe();
    assert!(
        described.contains("unroutable answers: tried 2 more time(s), first after 200 ms"),
        "{described}"
    );
    assert!(
        described.contains("vod.{sub_app_id}.{event_type}"),
        "{described}"
    );
    assert!(!described.contains("abcXYZ123"), "secrets never printed");
    assert!(
        !format!("{settings:?}").contains("abcXYZ123"),
        "secrets never in Debug"
    );
}

#[test]
fn empty_config_is_the_embedded_default() {
    let settings =
        Settings::from_config(Config::from_toml("").expect("parses")).expect("validates");
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(settings.sources.keys().collect::<Vec<_>>(), ["default"]);
    assert_eq!(settings.sinks.keys().collect::<Vec<_>>(), ["stdout"]);
    assert!(settings.routes.is_total());
    assert_eq!(settings.server.body_limit_bytes, 1024 * 1024);
    assert_eq!(settings.publish_timeout().as_millis(), 4000);
}

#[test]
fn errors_name_the_key() {
    assert!(error_of("[server]\nlisten = \"nope\"").contains("listen"));
    assert!(error_of("[server]\nlisen = \"0.0.0.0:1\"").contains("lisen"));
    assert!(error_of("[sinks.k]\ntype = \"carrier-pigeon\"").contains("carrier-pigeon"));
    assert!(error_of("[sinks.f]\ntype = \"file\"").contains("path"));
    assert!(error_of("[delivery]\nunroutable_retries = 11").contains("delivery.unroutable_retries"));
    let file = "[sinks.f]\ntype = \"file\"\npath = \"/tmp/x\"\n";
    assert!(error_of(&format!("{file}rotate_bytes = 100")).contains("sinks.f.rotate_bytes"));
    assert!(error_of(&format!("{file}rotate_bytes = 9999\nkeep_files = 0")).contains("keep_files"));
    assert!(error_of(&format!("{file}keep_files = 2")).contains("needs rotate_bytes"));
    assert!(error_of("[delivery]\nunroutable_backoff_ms = 0").contains("unroutable_backoff_ms"));
    let e = error_of("[sinks.a]\ntype = \"stdout\"\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{ sink = \"b\" }]");
    assert!(
        e.contains("routes[0].sinks[0]") && e.contains("\"b\""),
        "{e}"
    );
    let e = error_of("[sinks.a]\ntype = \"stdout\"\n[[routes]]\nevent_types = [\"a*b\"]\nsinks = [{ sink = \"a\" }]");
    assert!(e.contains("routes[0].event_types"), "{e}");
    let e = error_of("[sinks.a]\ntype = \"stdout\"\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{ sink = \"a\", destination = \"{nope}\" }]");
    assert!(e.contains("{nope}"), "{e}");
    assert!(
        error_of("[sinks.a]\ntype = \"stdout\"\n[sinks.b]\ntype = \"stdout\"").contains("routes")
    );
    assert!(
        error_of("[sources.x]\nmode = \"push\"\n[sources.x.auth]\nsign_key = \"has spaces\"")
            .contains("sign_key")
    );
    let e = error_of(
        "[sources.x]\nmode = \"push\"\n[sources.x.auth]\nsign_key_file = \"/nonexistent/key\"",
    );
    assert!(
        e.contains("sign_key_file") && e.contains("/nonexistent/key"),
        "{e}"
    );
    assert!(error_of("[sources.Bad]\nmode = \"push\"").contains("sources.Bad"));
    assert!(error_of("[sources.x]\nmode = \"carrier\"").contains("carrier"));
    assert!(error_of("[dead_letter]\nsink = \"missing\"").contains("dead_letter"));
}

#[test]
fn passwords_in_broker_urls_are_never_printed() {
    let toml = r#"
[sinks.nats]
type = "nats"
url = "nats://bridge:hunter2@nats-1:4222,nats://bridge:hunter2@nats-2:4222"
stream = "VOD"
[sinks.rabbit]
type = "amqp"
url = "amqp://bridge:hunter3@rabbitmq:5672/%2f"
exchange = "vod"
[[routes]]
event_types = ["*"]
sinks = [{ sink = "nats" }, { sink = "rabbit" }]
"#;
    let settings =
        Settings::from_config(Config::from_toml(toml).expect("parses")).expect("validates");
    let described = settings.describe();
    let debug = format!("{settings:?}");
    for text in [&described, &debug] {
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
    assert!(
        described.contains("nats://bridge:***@nats-1:4222,nats://bridge:***@nats-2:4222"),
        "{described}"
    );
}

#[test]
fn otlp_export_is_validated_and_described() {
    let parse = |otlp: &str| Settings::from_config(Config::from_toml(otlp).expect("parses"));
    let settings = parse(
        "[telemetry.otlp]\nendpoint = \"http://user:secret@collector:4318/\"\nsample_ratio = 0.25\n",
    )
    .expect("validates");
    let otlp = settings.telemetry.otlp.as_ref().expect("otlp");
    assert_eq!(otlp.service_name, "vodbridge");
    assert_eq!(otlp.timeout_ms, 10_000);
    let described = settings.describe();
    assert!(
        described.contains("traces: OTLP/HTTP to http://user:***@collector:4318/v1/traces")
            && described.contains("25 % of traces"),
        "{described}"
    );
    assert!(!described.contains("secret"), "credentials never printed");
    assert!(!format!("{settings:?}").contains("secret"), "nor in Debug");
    let off = parse("").expect("validates").describe();
    assert!(off.contains("traces: not exported"), "{off}");
    for (bad, words) in [
        ("endpoint = \"collector:4318\"", "must be an http(s) URL"),
        (
            "endpoint = \"http://c:4318\"\nsample_ratio = 1.5",
            "between 0.0 and 1.0",
        ),
        (
            "endpoint = \"http://c:4318\"\ntimeout_ms = 0",
            "timeout_ms must be above 0",
        ),
    ] {
        let error = parse(&format!("[telemetry.otlp]\n{bad}\n")).expect_err(bad);
        assert!(error.to_string().contains(words), "{bad}: {error}");
    }
    assert!(
        Config::from_toml("[telemetry.otlp]\nendpoint = \"http://c\"\nprotocol = \"grpc\"\n")
            .is_err(),
        "unknown keys are refused"
    );
}

/// The README's managed-Kafka examples (CKafka, Confluent Cloud with PLAIN and with OIDC) are
/// valid as written: librdkafka as built knows every property and value they use.
#[test]
fn readme_managed_kafka_examples_are_valid() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("### Managed Kafka")
        .expect("the README's managed Kafka section");
    let section = &readme[start..];
    let section = &section[..section[4..]
        .find("\n### ")
        .map_or(section.len(), |end| end + 4)];
    let secret = tempfile::NamedTempFile::new().expect("a secret file");
    std::fs::write(secret.path(), "secret").expect("write");
    let mut toml = String::new();
    let mut sinks = Vec::new();
    for block in section.split("```toml\n").skip(1) {
        let block = &block[..block.find("```").expect("a closed block")];
        for line in block.lines() {
            if let Some(name) = line
                .strip_prefix("[sinks.")
                .and_then(|l| l.strip_suffix(']'))
            {
                sinks.push(format!(r#"{{ sink = "{name}" }}"#));
            }
        }
        // The secret files as mounted in production do not exist here.
        let mut rest = block;
        while let Some(at) = rest.find("\"/etc/vodbridge/secrets/") {
            toml.push_str(&rest[..at]);
            toml.push_str(&format!("{:?}", secret.path().display().to_string()));
            rest = &rest[at + 1..];
            rest = &rest[rest.find('"').expect("a closed string") + 1..];
        }
        toml.push_str(rest);
    }
    assert!(sinks.len() >= 3, "CKafka and Confluent examples: {sinks:?}");
    toml.push_str(&format!(
        "[[routes]]\nevent_types = [\"*\"]\nsinks = [{}]\n",
        sinks.join(", ")
    ));
    let config = Config::from_toml(&toml).expect("the examples parse");
    Settings::from_config(config)
        .unwrap_or_else(|e| panic!("the README's Kafka examples: {e}\n{toml}"));
}

/// A source's VOD access and check keys are declared once and flattened into pull and push
/// sources; a key no setting takes is still refused, by name.
#[test]
fn source_keys_are_flattened_and_unknown_ones_refused() {
    let parse = |text: &str| Settings::from_config(Config::from_toml(text)?);
    let pull = "[sources.app]\nmode = \"pull\"\nsub_app_id = 1\nsecret_id = \"AKIDFLAT\"\nsecret_key = \"k\"\nendpoint = \"http://127.0.0.1:9\"\nevent_switches = [\"persistence_complete\"]\nvod_check_interval_secs = 7\n";
    let settings = parse(pull).expect("flattened keys are read");
    let described = settings.describe();
    assert!(
        described.contains("pull from http://127.0.0.1:9")
            && described.contains("secret_id=AKIDFL"),
        "{described}"
    );
    assert!(
        described.contains("checked every 7 s") && described.contains("persistence_complete"),
        "{described}"
    );
    for (table, extra) in [
        (pull, "secret_idd = \"typo\"\n"),
        ("[sources.cb]\nmode = \"push\"\n", "vod_check_every = 5\n"),
    ] {
        let error = parse(&format!("{table}{extra}")).expect_err("an unknown key");
        let key = extra.split(' ').next().unwrap_or_default();
        assert!(
            error.to_string().contains(&format!("unknown key `{key}`")),
            "{extra}: {error}"
        );
    }
}
