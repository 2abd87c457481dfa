//! The chart runs the image: the chart rendered as the suite renders it (`helm/tests/render.py`),
//! and its workload's container started in the built image as Kubernetes would start it: the
//! image's entrypoint with the rendered `args` and `env`, the ConfigMap's config where the chart
//! mounts it (read-only), the security context (user, read-only root, no capabilities), the
//! spool's volume claim as a volume owned by the pod's `fsGroup`. Then its probes answer.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{image, run, text, ROOT, TAG};

/// The first rendered manifest of `kind` (`Deployment` or `StatefulSet` for the workload).
fn manifest<'a>(documents: &'a [Value], kinds: &[&str]) -> &'a Value {
    documents
        .iter()
        .find(|d| kinds.iter().any(|k| d["kind"] == *k))
        .unwrap_or_else(|| panic!("no {kinds:?} rendered"))
}

/// A container started from the rendered pod spec; removed on drop.
struct Pod {
    name: String,
    address: String,
}

impl Pod {
    /// `docker run` of the chart's container for `case`, with its config written to `dir`.
    fn start(case: &str, documents: &[Value], dir: &Path) -> Self {
        let workload = manifest(documents, &["Deployment", "StatefulSet"]);
        let pod = &workload["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let config = manifest(documents, &["ConfigMap"])["data"]["vodbridge.toml"]
            .as_str()
            .expect("the ConfigMap's vodbridge.toml");
        let config_file = dir.join("vodbridge.toml");
        std::fs::write(&config_file, config).expect("config file");

        let name = format!("vodbridge-chart-{case}");
        let _ = run("docker", &["rm", "--force", &name]);
        let user = format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
        );
        let group = pod["securityContext"]["fsGroup"].to_string();
        let mut args: Vec<String> = ["run", "--detach", "--name", &name, "--user", &user]
            .map(str::to_owned)
            .to_vec();
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{security}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{security}");
        args.extend(
            [
                "--read-only",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
            ]
            .map(str::to_owned),
        );
        for env in container["env"].as_array().into_iter().flatten() {
            let value = env["value"].as_str().expect("a literal env value");
            args.extend([
                "--env".to_owned(),
                format!("{}={value}", env["name"].as_str().expect("a name")),
            ]);
        }
        for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
            let target = mount["mountPath"].as_str().expect("mountPath");
            match mount["name"].as_str() {
                Some("config") => {
                    assert_eq!(mount["subPath"], "vodbridge.toml");
                    args.extend([
                        "--volume".to_owned(),
                        format!("{}:{target}:ro", config_file.display()),
                    ]);
                }
                // The claim: a fresh volume the pod's fsGroup can write.
                Some("spool") => args.extend([
                    "--tmpfs".to_owned(),
                    format!(
                        "{target}:uid={},gid={group},mode=0770",
                        pod["securityContext"]["runAsUser"]
                    ),
                ]),
                other => panic!("a mount this test does not know: {other:?}"),
            }
        }
        args.push(TAG.to_owned());
        assert!(
            container["command"].is_null(),
            "the chart relies on the image's entrypoint"
        );
        args.extend(
            container["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("an argument").to_owned()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = run("docker", &args);
        assert!(
            started.status.success(),
            "{case}: docker run: {}",
            text(&started)
        );
        let inspect = run(
            "docker",
            &[
                "inspect",
                "--format",
                "{{.NetworkSettings.IPAddress}}",
                &name,
            ],
        );
        let port = container["ports"][0]["containerPort"]
            .as_u64()
            .expect("a port");
        let address = format!("{}:{port}", String::from_utf8_lossy(&inspect.stdout).trim());
        Self { name, address }
    }

    fn logs(&self) -> String {
        text(&run("docker", &["logs", &self.name]))
    }

    /// GETs the probe path; (status, body).
    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("http://{}{path}", self.address)).await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// Waits until `path` answers at all (the process is up), then returns the answer.
    async fn probe(&self, path: &str) -> (u16, String) {
        let started = Instant::now();
        loop {
            let answer = self.get(path).await;
            if answer.0 != 0 {
                return answer;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{path} never answered: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> u16 {
        reqwest::Client::new()
            .post(format!("http://{}{path}", self.address))
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = run("docker", &["rm", "--force", &self.name]);
    }
}

/// The probe paths of the rendered container: (liveness, readiness).
fn probes(documents: &[Value]) -> (String, String) {
    let container = &manifest(documents, &["Deployment", "StatefulSet"])["spec"]["template"]
        ["spec"]["containers"][0];
    let path = |probe: &str| {
        container[probe]["httpGet"]["path"]
            .as_str()
            .expect("an httpGet probe")
            .to_owned()
    };
    (path("livenessProbe"), path("readinessProbe"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard runs this binary's tests one at a time, each on its own runtime: held on purpose.
#[allow(clippy::await_holding_lock)]
async fn the_chart_runs_the_built_image() {
    let _one = image();
    let out = tempfile::tempdir().expect("a render directory");
    let rendered = run(
        "python3",
        &["helm/tests/render.py", &out.path().display().to_string()],
    );
    assert!(rendered.status.success(), "render: {}", text(&rendered));
    let load = |case: &str| -> Vec<Value> {
        serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{case}.json"))).expect("rendered"),
        )
        .expect("JSON manifests")
    };
    let fixture = std::fs::read(format!(
        "{ROOT}/crates/vodbridge-tencent/tests/fixtures/NewFileUpload.json"
    ))
    .expect("a fixture");

    // Default values: push in, stdout out, ready with no broker.
    let documents = load("default");
    let (live, ready) = probes(&documents);
    let dir = tempfile::tempdir().expect("a config directory");
    let pod = Pod::start("default", &documents, dir.path());
    assert_eq!(pod.probe(&live).await.0, 200, "{live}: {}", pod.logs());
    let started = Instant::now();
    while pod.get(&ready).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{ready}: {:?} {}",
            pod.get(&ready).await,
            pod.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pod.post("/callback/default", fixture.clone()).await, 200);
    let started = Instant::now();
    while !pod.logs().contains("\"specversion\":\"1.0\"") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the envelope on stdout: {}",
            pod.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(pod);

    // The spool values: a StatefulSet whose env turns the spool on at the claim's mount. Its
    // NATS is not there: not ready, naming it, and a callback is answered once spooled.
    let documents = load("spool");
    let (live, ready) = probes(&documents);
    let dir = tempfile::tempdir().expect("a config directory");
    let pod = Pod::start("spool", &documents, dir.path());
    assert_eq!(pod.probe(&live).await.0, 200, "{live}: {}", pod.logs());
    let (status, reason) = pod.probe(&ready).await;
    assert_eq!(status, 503, "{ready}: {reason}");
    assert!(reason.contains("nats"), "{ready} names the sink: {reason}");
    assert_eq!(
        pod.post("/callback/callbacks", fixture).await,
        200,
        "spooled on the volume: {}",
        pod.logs()
    );
    let (_, metrics) = pod.get("/metrics").await;
    let spooled = metrics
        .lines()
        .find(|l| l.starts_with("vodbridge_spool_events"))
        .unwrap_or_default()
        .to_owned();
    assert!(spooled.ends_with(" 1"), "one event in the spool: {spooled}");
    eprintln!(
        "CHART {}",
        serde_json::json!({
            "default": {"ready": 200, "callback": 200},
            "spool": {"ready": status, "reason": reason.trim(), "callback": 200, "spooled": spooled},
        })
    );
}
