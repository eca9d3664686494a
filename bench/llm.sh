#!/usr/bin/env bash
# LLM gateway measurements on loopback, written into BENCHMARKS.md between markers: the same
# chat completion sent directly to a fast scripted OpenAI-compatible upstream
# (crates/gateway/examples/llm_upstream.rs, canned answers at once) and through Portcullis in
# front of it (key checked, body parsed and capped, answer cleaned, audit record written), and,
# when bench/peers/litellm.sh can start it, through the LiteLLM proxy with a virtual key.
#   - latency on one connection (wrk, closed loop): p50 and p99, and what the gateway adds;
#   - throughput on 8 connections;
#   - time to first token of a stream (bench/llm_ttft.py), p50 and p99.
# Needs wrk (apt-get install wrk). Every run is bounded in time and targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
TTFT_N=${TTFT_N:-300}
bin=target/release/portcullis
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release -p portcullis >/dev/null
cargo build --release -p gateway --example llm_upstream >/dev/null
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/llm_upstream 0 >"$work/upstream.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
up=$(head -1 "$work/upstream.port")

port=18281
cat >"$work/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:18291"
[[llm]]
name = "chat"
api = "openai"
url = "http://127.0.0.1:$up/v1"
model = "stub-chat"
TOML
key=$("$bin" keys create --config "$work/portcullis.toml" --name bench --models chat --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
"$bin" serve --config "$work/portcullis.toml" --log warn 2>"$work/stderr" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done

# wrk's --latency table: the p50 and p99 lines, in ms.
percentile() { # file pct
  awk -v p="$2%" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 } printf "%.3f", v }' "$1"
}
rps() { awk '/Requests\/sec/ { printf "%.0f", $2 }' "$1"; }
load() { # name url key model connections
  KEY=$3 MODEL=$4 wrk -t 1 -c "$5" -d "$DURATION" --latency -s bench/llm.lua "$2" >"$work/$1.wrk"
}

declare -A url=( [direct]="http://127.0.0.1:$up/v1/chat/completions" [portcullis]="http://127.0.0.1:$port/v1/chat/completions" )
declare -A auth=( [direct]="" [portcullis]="$key" )
declare -A model=( [direct]="stub-chat" [portcullis]="chat" )
peers=(direct portcullis)
# LiteLLM with virtual keys in PostgreSQL (bench/peers/litellm/litellm.sh: PyPI and npm only).
litellm_port=18301
if [ "${LITELLM:-1}" = 1 ] && eval "$(bash bench/peers/litellm/litellm.sh "$up" "$litellm_port" 2>"$work/litellm.log")"; then
  url[litellm]="$LITELLM_URL/v1/chat/completions"; auth[litellm]="$LITELLM_KEY"; model[litellm]="chat"
  peers+=(litellm)
  trap 'bash bench/peers/litellm/litellm.sh stop "$litellm_port" >/dev/null 2>&1 || true; cleanup' EXIT
else
  echo "LiteLLM did not start (see bench/peers/litellm/litellm.sh); measuring without it" >&2
fi

for peer in "${peers[@]}"; do
  load "$peer-1" "${url[$peer]}" "${auth[$peer]}" "${model[$peer]}" 1
  load "$peer-8" "${url[$peer]}" "${auth[$peer]}" "${model[$peer]}" 8
  python3 bench/llm_ttft.py "${url[$peer]}" "${model[$peer]}" "${auth[$peer]:--}" "$TTFT_N" >"$work/$peer.ttft"
done

table="$work/table.md"
{
  echo "| path | p50 ms (1 conn) | p99 ms (1 conn) | req/s (8 conn) | TTFT p50 ms | TTFT p99 ms |"
  echo "|---|---|---|---|---|---|"
  for peer in "${peers[@]}"; do
    read -r t50 t99 <"$work/$peer.ttft"
    echo "| $peer | $(percentile "$work/$peer-1.wrk" 50) | $(percentile "$work/$peer-1.wrk" 99) | $(rps "$work/$peer-8.wrk") | $t50 | $t99 |"
  done
  d50=$(percentile "$work/direct-1.wrk" 50); d99=$(percentile "$work/direct-1.wrk" 99)
  p50=$(percentile "$work/portcullis-1.wrk" 50); p99=$(percentile "$work/portcullis-1.wrk" 99)
  read -r dt50 _ <"$work/direct.ttft"; read -r pt50 _ <"$work/portcullis.ttft"
  echo
  echo "Portcullis adds $(python3 -c "print(f'{$p50-$d50:.3f}')") ms at p50 and $(python3 -c "print(f'{$p99-$d99:.3f}')") ms at p99 on one connection, and $(python3 -c "print(f'{$pt50-$dt50:.3f}')") ms to the first token (p50); it serves $(python3 -c "print(f'{$(rps "$work/portcullis-8.wrk")/$(rps "$work/direct-8.wrk"):.2f}')")x the direct request rate on 8 connections."
  if [[ " ${peers[*]} " == *" litellm "* ]]; then
    echo "Against LiteLLM with a virtual key: $(python3 -c "print(f'{$(rps "$work/portcullis-8.wrk")/$(rps "$work/litellm-8.wrk"):.1f}')")x its request rate."
  fi
} >"$table"
cat "$table"

python3 - "$table" <<'PY'
import pathlib, sys
table = pathlib.Path(sys.argv[1]).read_text()
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text()
begin, end = "<!-- llm:begin -->", "<!-- llm:end -->"
block = f"{begin}\n{table}{end}"
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n## LLM gateway (bench/llm.sh)\n\n" + block + "\n"
path.write_text(text)
PY
