"""Renders the plain Kubernetes manifests deploy/kubernetes/vodbridge.yaml from the Helm chart
(helm/vodbridge) with deploy/kubernetes/values.yaml, through Helm's own library
(helm-python-sdk), without Helm-only labels, and validates every manifest with
kubernetes-validate.

Usage: python3 deploy/kubernetes/generate.py           # (re)write vodbridge.yaml
       python3 deploy/kubernetes/generate.py --check   # fail if vodbridge.yaml is stale
"""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES = "1.31.0"
HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE.parent.parent / "helm" / "vodbridge"
OUTPUT = HERE / "vodbridge.yaml"
NAMESPACE = "vodbridge"
HEADER = f"""# vodbridge as plain Kubernetes manifests, for clusters without Helm:
#   kubectl create namespace {NAMESPACE}
#   kubectl -n {NAMESPACE} create secret generic vodbridge-secrets --from-file=...
#   kubectl -n {NAMESPACE} apply -f deploy/kubernetes/vodbridge.yaml
# Generated from helm/vodbridge with deploy/kubernetes/values.yaml by
# deploy/kubernetes/generate.py: edit those and regenerate, not this file.
"""
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def strip_helm_labels(node):
    """Drops labels that only make sense for a Helm release, everywhere in a manifest."""
    if isinstance(node, dict):
        labels = node.get("labels")
        if isinstance(labels, dict):
            for key in HELM_ONLY_LABELS:
                labels.pop(key, None)
        for value in node.values():
            strip_helm_labels(value)
    elif isinstance(node, list):
        for value in node:
            strip_helm_labels(value)


def render() -> str:
    values = helm.values_from_yaml((HERE / "values.yaml").read_text())
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name="vodbridge", namespace=NAMESPACE, is_install=True)
    documents = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            strip_helm_labels(doc)
            doc.setdefault("metadata", {})["namespace"] = NAMESPACE
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            documents.append(doc)
    return HEADER + yaml.safe_dump_all(documents, sort_keys=True)


def main(args) -> int:
    rendered = render()
    if "--check" in args:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != rendered:
            print(f"{OUTPUT} is stale: run python3 deploy/kubernetes/generate.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.name}: up to date, every manifest valid for Kubernetes {KUBERNETES}")
        return 0
    OUTPUT.write_text(rendered)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
