//! What users deploy, run: the container image as users build it (`deploy/Dockerfile`,
//! unchanged, on local stand-ins of its base images: `scripts/image-stand-ins.sh`; no registry is
//! reachable here, and the runtime stand-in holds exactly distroless cc-debian12's packages, so
//! a shared library the real image lacks is missing here too), run the way the chart runs it;
//! the compose stack end to end (`compose.rs`); the chart's rendered container (`chart.rs`).
//!
//! Prints `IMAGE`, `COMPOSE` and `CHART` lines with the figures. Needs Docker (the script
//! installs `docker.io` and starts `dockerd` when none answers); it never skips. The tests share
//! one build and run one at a time.

mod chart;
mod compose;

use std::{
    path::Path,
    process::{Command, Output},
    sync::{Mutex, MutexGuard, OnceLock},
    time::Instant,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TAG: &str = "vodbridge:image-test";

/// Seconds the one `docker build` took.
static BUILD_SECONDS: OnceLock<u64> = OnceLock::new();

/// The image, built once for every test of this binary (the stand-ins first); holding the
/// guard runs the tests one at a time, as the machine has room for one stack.
fn image() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    BUILD_SECONDS.get_or_init(|| {
        let stand_ins = run("bash", &["scripts/image-stand-ins.sh"]);
        assert!(
            stand_ins.status.success(),
            "the base image stand-ins: {}",
            text(&stand_ins)
        );
        let started = Instant::now();
        let build = run(
            "docker",
            &[
                "build",
                "--network",
                "host",
                "--file",
                "deploy/Dockerfile",
                "--tag",
                TAG,
                ".",
            ],
        );
        assert!(build.status.success(), "docker build: {}", text(&build));
        // The build stage stays behind as a dangling image (2.7 GB): not one per run.
        let _ = run("docker", &["image", "prune", "--force"]);
        started.elapsed().as_secs()
    });
    guard
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not start: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker run` of the built image as the chart runs it, with `mounts` (`host:container`,
/// read-only) and `args` after the image.
fn in_image(mounts: &[(&Path, &str)], args: &[&str]) -> Output {
    let volumes: Vec<String> = mounts
        .iter()
        .map(|(host, target)| format!("{}:{target}:ro", host.display()))
        .collect();
    let mut all = vec![
        "run",
        "--rm",
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "none",
    ];
    for volume in &volumes {
        all.extend(["--volume", volume.as_str()]);
    }
    all.push(TAG);
    all.extend(args);
    run("docker", &all)
}

#[test]
fn the_dockerfile_builds_and_the_image_runs_read_only_as_nonroot() {
    let _one = image();
    let size = run(
        "docker",
        &["image", "inspect", "--format", "{{.Size}}", TAG],
    );
    let size_bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .expect("the image size");

    // The binaries start: every shared library they need is in the runtime image.
    let version = in_image(&[], &["--version"]);
    assert!(version.status.success(), "--version: {}", text(&version));
    assert!(
        text(&version).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&version)
    );
    let emulator = run(
        "docker",
        &[
            "run",
            "--rm",
            "--read-only",
            "--user",
            "65532:65532",
            "--network",
            "none",
            "--entrypoint",
            "/usr/local/bin/vod-emulator",
            TAG,
            "--help",
        ],
    );
    assert!(
        emulator.status.success(),
        "vod-emulator --help: {}",
        text(&emulator)
    );

    // The shipped configurations pass check-config inside the image: the compose stack's, and
    // the documented example with its secret files mounted as a Kubernetes Secret would be.
    let compose = Path::new(ROOT).join("deploy/compose/vodbridge.toml");
    let checked = in_image(
        &[(&compose, "/etc/vodbridge/vodbridge.toml")],
        // Offline: the stack's Valkey is not there (the container has no network).
        &["check-config", "--offline", "/etc/vodbridge/vodbridge.toml"],
    );
    assert!(
        checked.status.success(),
        "compose config: {}",
        text(&checked)
    );
    let secrets = tempfile::tempdir().expect("secrets dir");
    for (name, value) in [
        ("app1-sign-key", "abcXYZ123"),
        ("app2-secret-id", "AKIDEXAMPLE"),
        ("app2-secret-key", "example-key"),
        ("amqp-url", "amqp://bridge:secret@rabbitmq:5672/%2f"),
    ] {
        std::fs::write(secrets.path().join(name), value).expect("secret");
    }
    let example = Path::new(ROOT).join("config/vodbridge.example.toml");
    let checked = in_image(
        &[
            (&example, "/etc/vodbridge/vodbridge.toml"),
            (secrets.path(), "/etc/vodbridge/secrets"),
        ],
        &["check-config", "/etc/vodbridge/vodbridge.toml"],
    );
    assert!(
        checked.status.success(),
        "example config: {}",
        text(&checked)
    );
    assert!(
        !text(&checked).contains("secret@") && !text(&checked).contains("example-key"),
        "no secret in check-config's output"
    );

    // Managed Kafka's settings are accepted by the default image: TLS, SCRAM and OAUTHBEARER
    // with OIDC (librdkafka refuses a value its build cannot serve, e.g. SASL_SSL without TLS).
    let kafka = secrets.path().join("kafka.toml");
    std::fs::write(
        &kafka,
        r#"
[sinks.scram]
type = "kafka"
brokers = "b-1.msk.example:9096"
properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "SCRAM-SHA-512", "sasl.username" = "vodbridge" }
secret_property_files = { "sasl.password" = "/etc/vodbridge/secrets/app2-secret-key" }
[sinks.oidc]
type = "kafka"
brokers = "pkc-1.confluent.example:9092"
properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "OAUTHBEARER", "sasl.oauthbearer.method" = "oidc", "sasl.oauthbearer.client.id" = "vodbridge", "sasl.oauthbearer.token.endpoint.url" = "https://idp.example/oauth2/token" }
secret_property_files = { "sasl.oauthbearer.client.secret" = "/etc/vodbridge/secrets/app2-secret-key" }
[[routes]]
event_types = ["*"]
sinks = [{ sink = "scram" }, { sink = "oidc" }]
"#,
    )
    .expect("kafka config");
    let checked = in_image(
        &[(secrets.path(), "/etc/vodbridge/secrets")],
        &["check-config", "/etc/vodbridge/secrets/kafka.toml"],
    );
    assert!(
        checked.status.success(),
        "SASL_SSL Kafka sinks in the default image: {}",
        text(&checked)
    );

    // The demo: the built-in emulator, the bridge pulling from it, envelopes on stdout.
    let demo = in_image(&[], &["demo", "--events", "50", "--rate", "200"]);
    assert!(demo.status.success(), "demo: {}", text(&demo));
    let envelopes = String::from_utf8_lossy(&demo.stdout)
        .lines()
        .filter(|l| l.contains("\"specversion\":\"1.0\""))
        .count();
    assert!(envelopes >= 50, "demo printed {envelopes} envelopes");

    assert!(
        size_bytes < 80 * 1024 * 1024,
        "the image stays small: {size_bytes} bytes"
    );
    eprintln!(
        "IMAGE {}",
        serde_json::json!({
            "build_seconds": BUILD_SECONDS.get(),
            "size_bytes": size_bytes,
            "size_mib": (size_bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0,
            "demo_envelopes": envelopes,
        })
    );
}
