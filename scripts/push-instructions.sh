#!/usr/bin/env bash
# Instructions per push callback (push → file, fsync = "never") under callgrind: the release
# binary takes N callbacks on one keep-alive connection; the run with 0 (start-up, shutdown) is
# subtracted. Instruction counts do not depend on the machine's load, unlike times.
#   cargo build --release --bin vodbridge && bash scripts/push-instructions.sh [N] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
bin="${2:-target/release/vodbridge}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
port=18089
cat >"$dir/bridge.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[telemetry]
log_level = "warn"
[sources.push]
mode = "push"
sub_app_id = 1500000001
[sinks.out]
type = "file"
path = "$dir/events.jsonl"
fsync = "never"
[[routes]]
event_types = ["*"]
sinks = [{ sink = "out", destination = "vod.{event_type}" }]
TOML
# The ProcedureStateChanged fixture, compacted, a new FileId per callback.
python3 - "$dir" <<'PY'
import json, sys
d = json.load(open("crates/vodbridge-tencent/tests/fixtures/ProcedureStateChanged.json"))
d["ProcedureStateChangeEvent"]["FileId"] = "__FILEID__"
d["ProcedureStateChangeEvent"]["SessionContext"] = "x" * 600
open(sys.argv[1] + "/body.json", "w").write(json.dumps(d, separators=(",", ":")))
PY
cat >"$dir/post.py" <<'PY'
import http.client, sys, time
port, n, body = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read()
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/readyz"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError: pass
    time.sleep(0.2)
for i in range(n):
    c.request("POST", "/callback/push", body=body.replace("__FILEID__", "52857%015d" % i),
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
run() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" run --config "$dir/bridge.toml" \
    >"$dir/log" 2>&1 &
  local pid=$!
  python3 "$dir/post.py" "$port" "$1" "$dir/body.json"
  kill -TERM "$pid"; wait "$pid" || true
  grep Collected "$dir/log" | awk '{print $4}'
}
base="$(run 0)"
total="$(run "$n")"
echo "instructions per callback: $(( (total - base) / n ))  ($n callbacks; $total - $base)"
