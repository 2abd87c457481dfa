#!/usr/bin/env bash
# Instructions per pulled event (pull → file, fsync = "never") under callgrind: the release
# binary pulls and confirms N events from the emulator (its own process, not measured); a run of
# 200 events (start-up, shutdown, the first idle long polls) is subtracted. Instruction counts do
# not depend on the machine's load, unlike times.
#   cargo build --release -p vodbridge -p vod-emulator --bins
#   bash scripts/pull-instructions.sh [N] [BINARY] [EMULATOR]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
n="${1:-2000}"
bin="${2:-target/release/vodbridge}"
emulator="${3:-target/release/vod-emulator}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
bridge_port=18090
emulator_port=18091
app=1500000101
cat >"$dir/bridge.toml" <<TOML
[server]
listen = "127.0.0.1:$bridge_port"
# At least the handle lifetime below (the drain must outlast a batch in flight).
drain_timeout_secs = 600
[telemetry]
log_level = "warn"
[sources.pull]
mode = "pull"
endpoint = "http://127.0.0.1:$emulator_port"
sub_app_id = $app
secret_id = "AKIDINSTRUCTIONS"
secret_key = "instructions-key"
loops = 1
# Valgrind runs the bridge ~50x slower: handles must outlive that.
handle_lifetime_ms = 600000
[sinks.out]
type = "file"
path = "$dir/events.jsonl"
fsync = "never"
[[routes]]
event_types = ["*"]
sinks = [{ sink = "out", destination = "vod.{event_type}" }]
TOML
run() {
  "$emulator" --listen "127.0.0.1:$emulator_port" --secret-id AKIDINSTRUCTIONS \
    --secret-key instructions-key --visibility-secs 600 --long-poll-ms 200 --generate "$1" \
    --sub-app-id "$app" --no-limits >"$dir/emulator.log" 2>&1 &
  local emu=$!
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" run --config "$dir/bridge.toml" \
    >"$dir/log" 2>&1 &
  local pid=$!
  python3 - "$emulator_port" "$1" "$pid" "$dir/log" <<'PY'
import json, os, sys, time, urllib.request
port, n, pid, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.time() + 1800
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the bridge stopped:\n" + open(log).read()[-2000:])
    try:
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/emulator/stats", timeout=5))
        if stats["confirmed"] >= n:
            assert stats["redeliveries"] == 0, stats
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("not all confirmed in 30 minutes")
PY
  kill -TERM "$pid"; wait "$pid" || true
  kill -TERM "$emu"; wait "$emu" || true
  grep Collected "$dir/log" | awk '{print $4}'
}
base="$(run 200)"
total="$(run "$((n + 200))")"
echo "instructions per pulled event: $(( (total - base) / n ))  ($n events; $total - $base)"
