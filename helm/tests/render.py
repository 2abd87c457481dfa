"""Renders and lints the vodbridge chart through Helm's own library (helm-python-sdk) for the
default values and every ci/*-values.yaml, validates every manifest with kubernetes-validate,
and writes each case's manifests and bridge config to OUTDIR for the Rust test to check.

Usage: python3 helm/tests/render.py OUTDIR
"""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES = "1.31.0"
CHART = pathlib.Path(__file__).resolve().parent.parent / "vodbridge"


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
        manifests = chart.render(values, name="vodbridge", namespace="media", is_install=True)
        kinds = []
        documents = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                try:
                    kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                except Exception as error:  # noqa: BLE001 - report every invalid manifest
                    failures.append(f"{name}: {template}: {error}")
                kinds.append(doc["kind"])
                documents.append(doc)
                if doc["kind"] == "ConfigMap":
                    (out / f"{name}.toml").write_text(doc["data"]["vodbridge.toml"])
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(documents))
        (out / f"{name}.kinds").write_text("\n".join(sorted(kinds)) + "\n")
        print(f"{name}: {len(documents)} manifests valid for Kubernetes {KUBERNETES}: {', '.join(sorted(kinds))}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
