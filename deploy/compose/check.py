"""Checks docker-compose.yml: valid against the Compose specification (pip compose-spec),
every depends_on names a service, every bind-mounted file and the Dockerfile exist.

Usage: python3 deploy/compose/check.py docker-compose.yml
"""

import pathlib
import sys

import compose_spec
import yaml

path = pathlib.Path(sys.argv[1]).resolve()
text = path.read_text(encoding="utf-8")
compose = compose_spec.PyCompose.from_yaml(text)
compose.validate()

problems = []
services = yaml.safe_load(text)["services"]
for name, service in services.items():
    for dependency in service.get("depends_on", []):
        if dependency not in services:
            problems.append(f"{name}: depends_on unknown service {dependency}")
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith(".") and not (path.parent / source).exists():
            problems.append(f"{name}: mounts missing {source}")
    build = service.get("build")
    if build and not (path.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).exists():
        problems.append(f"{name}: missing Dockerfile")

for problem in problems:
    print("FAIL", problem, file=sys.stderr)
print("valid:", ", ".join(sorted(compose.service_names())))
sys.exit(1 if problems else 0)
