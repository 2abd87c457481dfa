"""Renders and lints the vodbridge chart through Helm's own library (helm-python-sdk) for the
default values and every ci/*-values.yaml, validates every manifest with kubernetes-validate,
and writes each case's manifests and bridge config to OUTDIR for the Rust test to check.

A case listed in API_VERSIONS renders as on a cluster that serves those APIs (the chart gates
custom resources on them); its custom resources are not Kubernetes built-ins, so they go to
OUTDIR/{case}.custom.json for their own schema (helm/tests/validate-keda.mjs) instead.

Usage: python3 helm/tests/render.py OUTDIR
"""

import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES = "1.31.0"
CHART = pathlib.Path(__file__).resolve().parent.parent / "vodbridge"
# Extra APIs the cluster serves, per case.
API_VERSIONS = {"keda": ["keda.sh/v1alpha1"]}
# Values the chart must refuse to render (name: (values, api_versions, words of the error)).
REFUSED = {
    "keda-with-cpu-hpa": (
        {"keda": {"enabled": True, "serverAddress": "http://prometheus:9090"}, "autoscaling": {"enabled": True}},
        ["keda.sh/v1alpha1"],
        "both create a HorizontalPodAutoscaler",
    ),
    "keda-without-prometheus": ({"keda": {"enabled": True}}, ["keda.sh/v1alpha1"], "keda.serverAddress must name"),
    "keda-max-below-min": (
        {"keda": {"enabled": True, "serverAddress": "http://prometheus:9090", "minReplicaCount": 3, "maxReplicaCount": 2}},
        ["keda.sh/v1alpha1"],
        "is below keda.minReplicaCount",
    ),
}
# API groups of custom resources the chart may render.
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def render(chart, values, api_versions):
    """Renders offline; with api_versions, as if the cluster served them. helm-python-sdk's
    Chart.render does not expose the option its native helm_render takes, so that call is made
    directly."""
    if not api_versions:
        return chart.render(values, name="vodbridge", namespace="media", is_install=True)
    from helm_python import _native

    opts = {"name": "vodbridge", "namespace": "media", "is_install": True, "api_versions": api_versions}
    return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)))


def main(out: pathlib.Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cases = {"default": None}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        cases[path.name.removesuffix("-values.yaml")] = helm.values_from_yaml(path.read_text())
    failures = []
    for name, values in cases.items():
        report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBERNETES}")
        problems = report.get("errors") or [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if problems:
            failures.append(f"{name}: helm lint: {problems}")
        chart = helm.Chart.load(str(CHART))
        manifests = render(chart, values, API_VERSIONS.get(name))
        kinds = []
        documents = []
        custom = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                if doc["apiVersion"].startswith(CUSTOM_GROUPS):
                    custom.append(doc)
                else:
                    try:
                        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                    except Exception as error:  # noqa: BLE001 - report every invalid manifest
                        failures.append(f"{name}: {template}: {error}")
                kinds.append(doc["kind"])
                documents.append(doc)
                if doc["kind"] == "ConfigMap":
                    (out / f"{name}.toml").write_text(doc["data"]["vodbridge.toml"])
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(documents))
        (out / f"{name}.json").write_text(json.dumps(documents))
        (out / f"{name}.kinds").write_text("\n".join(sorted(kinds)) + "\n")
        (out / f"{name}.custom.json").write_text(json.dumps(custom))
        print(f"{name}: {len(documents)} manifests valid for Kubernetes {KUBERNETES}: {', '.join(sorted(kinds))}")
    for name, (values, api_versions, words) in REFUSED.items():
        try:
            render(helm.Chart.load(str(CHART)), values, api_versions)
            failures.append(f"{name}: rendered, but the chart must refuse it ({words})")
        except helm.HelmError as error:
            (out / f"{name}.refused").write_text(str(error))
            if words not in str(error):
                failures.append(f"{name}: refused for another reason: {error}")
            else:
                print(f"{name}: refused: {words}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
