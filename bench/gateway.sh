#!/usr/bin/env bash
# Gateway measurements on loopback, written into BENCHMARKS.md between markers:
#   - idle memory (RSS) of `portcullis demo` with its model loaded;
#   - throughput and latency with the audit log on (fsync every 10 ms) and off, same model,
#     same load, alternating runs; the ratio is the audit log's cost.
# Needs wrk (apt-get install wrk). Every load run is bounded in time and targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-8}
bin=target/release/portcullis
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release -p portcullis >/dev/null
# Backtrace capture slows error paths; benchmarks run without it.
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# --- idle memory -------------------------------------------------------------------------
"$bin" demo --data-dir "$work/demo" --port 0 --admin-port 0 >"$work/demo.out" 2>/dev/null &
pids+=($!)
demo=$!
for _ in $(seq 100); do grep -q "Press Ctrl-C" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
idle_kib=$(awk '/VmRSS/ {print $2}' "/proc/$demo/status")
kill "$demo"; wait "$demo" 2>/dev/null || true

# --- audit on / off ----------------------------------------------------------------------
start_server() { # mode port admin_port
  local dir="$work/$1"
  mkdir -p "$dir"
  local enabled=true; [ "$1" = off ] && enabled=false
  cat >"$dir/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
[audit]
enabled = $enabled
fsync = "${AUDIT_FSYNC:-10ms}"
[[models]]
name = "credit-risk"
path = "$PWD/models/credit-risk/model.onnx"
checks = "$PWD/models/credit-risk/checks.json"
TOML
  "$bin" keys create --config "$dir/portcullis.toml" --name bench --models credit-risk --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' >"$dir/key"
  "$bin" serve --config "$dir/portcullis.toml" --log warn 2>"$dir/stderr" &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/v2/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server $1 did not start" >&2; cat "$dir/stderr" >&2; exit 2
}
start_server on 18181 18191
start_server off 18182 18192

results="$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    port=18182; [ "$mode" = on ] && port=18181
    PORTCULLIS_KEY=$(cat "$work/$mode/key") wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
      -s bench/infer.lua "http://127.0.0.1:$port/v2/models/credit-risk/infer" >"$work/wrk-$mode-$round.txt"
    if grep -q "Non-2xx" "$work/wrk-$mode-$round.txt"; then
      echo "errors in the $mode run:" >&2; cat "$work/wrk-$mode-$round.txt" >&2; exit 2
    fi
    python3 - "$mode" "$work/wrk-$mode-$round.txt" >>"$results" <<'PY'
import re, sys
text = open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(label):
    value, unit = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
print(f"{sys.argv[1]}\t{rps}\t{ms('50%')}\t{ms('99%')}")
PY
  done
done
records=$(grep -c '"event":"request"' "$work/on/audit.log" || true)

table=$(python3 - "$results" "$idle_kib" "$records" "$ROUNDS" "$DURATION" "$CONNECTIONS" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
def median(mode, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == mode)
off, on = median("off", 1), median("on", 1)
print(f"Idle memory of `portcullis demo` (RSS, model loaded): **{int(sys.argv[2]) / 1024:.1f} MiB** (goal: under 50 MB).")
print()
print(f"Audit log cost, credit-risk model, wrk -t1 -c{sys.argv[6]} -d{sys.argv[5]}, median of {sys.argv[4]} alternating runs each:")
print()
print("| audit log | requests/s | p50 ms | p99 ms |")
print("|---|---|---|---|")
print(f"| off | {off:.0f} | {median('off', 2):.2f} | {median('off', 3):.2f} |")
print(f"| on (fsync every 10 ms) | {on:.0f} | {median('on', 2):.2f} | {median('on', 3):.2f} |")
print()
print(f"Throughput with the audit log on: **{on / off:.3f}x** of off ({(1 - on / off) * 100:.1f}% cost; goal: at most 5%). "
      f"The audited server wrote {sys.argv[3]} request records.")
PY
)
echo "$table"
python3 - "$table" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- gateway.sh:start -->", "<!-- gateway.sh:end -->"
block = f"{start}\n{sys.argv[1]}\n{end}"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S) if start in text else text + "\n" + block + "\n"
open(path, "w").write(text)
PY
