#!/usr/bin/env bash
# LLM gateway measurements on loopback, written into BENCHMARKS.md between markers: the same
# chat completion sent directly to a fast scripted OpenAI-compatible upstream
# (crates/gateway/examples/llm_upstream.rs, canned answers at once) and through Portcullis in
# front of it (key checked, body parsed and capped, answer cleaned, audit record written), and,
# when bench/peers/litellm.sh can start it, through the LiteLLM proxy with a virtual key.
#   - latency on one connection (wrk, closed loop): p50 and p99, and what the gateway adds;
#   - throughput on 8 connections;
#   - time to first token of a stream (bench/llm_ttft.py), p50 and p99.
# Then token and spend budgets (a second block, llm-budgets):
#   - the same request through Portcullis on a priced model with no budget, with budgets kept
#     in memory and with budgets kept in Redis (a key with tpm, a token quota and a spend cap
#     that never refuse here), ROUNDS rounds taking the three in turn, medians and ratios;
#   - a spend cap under overload: two nodes sharing Redis and one PostgreSQL store, a key whose
#     cap holds exactly CAP_N worst-case requests, 10 x CAP_N requests at once over both nodes in
#     waves (bench/llm_budget.py) until a wave is wholly refused; served, refused and the spend
#     the store recorded, against the cap.
# Needs wrk (apt-get install wrk), Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432
# (PG_URL; a database is created for the run and dropped after). Every run is bounded in time
# and count and targets 127.0.0.1 only. Any wrk run with a non-2xx answer stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
TTFT_N=${TTFT_N:-300}
ROUNDS=${ROUNDS:-3}
CAP_N=${CAP_N:-20}
UPSTREAM_DELAY_MS=${UPSTREAM_DELAY_MS:-500}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/release/portcullis
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
command -v psql >/dev/null || { echo "psql is needed (the two-node run creates its database)" >&2; exit 2; }
redis-cli -u "$REDIS_URL" ping >/dev/null || { echo "Redis is needed at $REDIS_URL" >&2; exit 2; }
cargo build --release -p portcullis >/dev/null
cargo build --release -p gateway --example llm_upstream >/dev/null
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0

work=$(mktemp -d)
pids=()
redis_prefix="ptcl-llm-bench-$$-$(date +%s):"
pg_db="portcullis_llm_bench_$$"
pg_made=0
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "${redis_prefix}*" | head -100000 | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null || true
  if [ "$pg_made" = 1 ]; then psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$target_dir/release/examples/llm_upstream" 0 >"$work/upstream.port" &
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
served() { awk '/requests in/ { print $1 }' "$1"; }
load() { # name url key model connections
  KEY=$3 MODEL=$4 wrk -t 1 -c "$5" -d "$DURATION" --latency -s bench/llm.lua "$2" >"$work/$1.wrk"
  # A configuration that refuses or fails requests it should serve is not measured: stop.
  if grep -Eq "Non-2xx or 3xx responses|Socket errors" "$work/$1.wrk" || ! grep -q "requests in" "$work/$1.wrk"; then
    echo "FAILED: $1 answered requests with errors; nothing is written:" >&2
    cat "$work/$1.wrk" >&2
    exit 1
  fi
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

# --- Budgets on and off -----------------------------------------------------------------------
# Three servers in front of the same upstream, a priced model, one key each: "off" with no
# budget, "memory" and "redis" with a budget that never refuses here. Measured one at a time,
# in rounds taking the three in turn (the idle ones wait on their sockets).
start_server() { # config log port
  "$bin" serve --config "$1" --log warn 2>"$2" &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$3/v2/health/ready" >/dev/null && return; sleep 0.1; done
  echo "FAILED: the server for $1 did not become ready:" >&2; cat "$2" >&2; exit 1
}
stop_server() { # pid: SIGTERM, then wait, so that its usage is flushed to the store
  kill -TERM "$1"; wait "$1" || true
}
write_budget_config() { # dir port admin upstream_port limits [store section]
  mkdir -p "$1"
  cat >"$1/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
${6:-}
[limits]
$5
[[llm]]
name = "chat"
api = "openai"
url = "http://127.0.0.1:$4/v1"
model = "stub-chat"
price = { input = "1", output = "2" }
TOML
}
create_key() { # config [flags...]: prints "key id"
  local config=$1; shift
  "$bin" keys create --config "$config" --name bench --models chat --json "$@" \
    | python3 -c 'import json,sys; k=json.load(sys.stdin); print(k["key"], k["id"])'
}
budget_flags=(--tpm 1000000000 --token-quota 1000000000/day --spend 1000000usd/day)
budget_setups=(off memory redis)
declare -A bport=( [off]=18282 [memory]=18283 [redis]=18284 )
declare -A bkey bkid bpid
for setup in "${budget_setups[@]}"; do
  limits=""; flags=()
  if [ "$setup" != off ]; then flags=("${budget_flags[@]}"); fi
  if [ "$setup" = redis ]; then limits="backend = \"$REDIS_URL\""$'\n'"redis_prefix = \"${redis_prefix}b:\""; fi
  write_budget_config "$work/b-$setup" "${bport[$setup]}" "$((bport[$setup] + 10))" "$up" "$limits"
  read -r "bkey[$setup]" "bkid[$setup]" < <(create_key "$work/b-$setup/portcullis.toml" "${flags[@]}")
  start_server "$work/b-$setup/portcullis.toml" "$work/b-$setup.stderr" "${bport[$setup]}"
  bpid[$setup]=${pids[-1]}
done
: >"$work/budgets.tsv"
for round in $(seq "$ROUNDS"); do
  for setup in "${budget_setups[@]}"; do
    u="http://127.0.0.1:${bport[$setup]}/v1/chat/completions"
    load "b-$setup-$round-1" "$u" "${bkey[$setup]}" chat 1
    load "b-$setup-$round-8" "$u" "${bkey[$setup]}" chat 8
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$setup" "$round" "$(percentile "$work/b-$setup-$round-1.wrk" 50)" \
      "$(percentile "$work/b-$setup-$round-1.wrk" 99)" "$(rps "$work/b-$setup-$round-8.wrk")" \
      "$(( $(served "$work/b-$setup-$round-1.wrk") + $(served "$work/b-$setup-$round-8.wrk") ))" >>"$work/budgets.tsv"
  done
done
# That the budgets were really applied: what each server's store recorded for its key.
for setup in "${budget_setups[@]}"; do
  stop_server "${bpid[$setup]}"
  "$bin" keys usage --config "$work/b-$setup/portcullis.toml" --json "${bkid[$setup]}" >"$work/b-$setup.usage.json"
done

# --- A spend cap under a 10x overload, two nodes --------------------------------------------
# A slow upstream (every answer waits UPSTREAM_DELAY_MS) so that the requests of a wave are in
# flight together; two nodes sharing Redis and one PostgreSQL database made for this run.
"$target_dir/release/examples/llm_upstream" 0 "$UPSTREAM_DELAY_MS" >"$work/slow.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/slow.port" ] && break; sleep 0.1; done
slow=$(head -1 "$work/slow.port")
psql -q "$PG_URL" -c "CREATE DATABASE $pg_db" >/dev/null
pg_made=1
store="[store]"$'\n'"url = \"${PG_URL%/*}/$pg_db\""$'\n'"pepper_file = \"$work/shared-pepper\""
cap_limits="backend = \"$REDIS_URL\""$'\n'"redis_prefix = \"${redis_prefix}cap:\""
for node in 0 1; do
  write_budget_config "$work/node$node" "$((18285 + node))" "$((18295 + node))" "$slow" "$cap_limits" "$store"
done
# The worst case of one request as the gateway reckons it: its refusal of a key whose cap is
# smaller than one request names it.
read -r probe_key _ < <(create_key "$work/node0/portcullis.toml" --spend 0.000001usd/day)
node_pids=()
for node in 0 1; do
  start_server "$work/node$node/portcullis.toml" "$work/node$node.stderr" "$((18285 + node))"
  node_pids+=("${pids[-1]}")
done
worst=$(python3 bench/llm_budget.py worst "http://127.0.0.1:18285/v1/chat/completions" "$probe_key" chat)
cap=$((CAP_N * worst))
read -r cap_key cap_kid < <(create_key "$work/node0/portcullis.toml" \
  --spend "$(printf '%d.%06d' $((cap / 1000000)) $((cap % 1000000)))usd/day")
python3 bench/llm_budget.py overload \
  "http://127.0.0.1:18285/v1/chat/completions,http://127.0.0.1:18286/v1/chat/completions" \
  "$cap_key" chat "$((10 * CAP_N))" 8 >"$work/overload.json"
for pid in "${node_pids[@]}"; do stop_server "$pid"; done
"$bin" keys usage --config "$work/node0/portcullis.toml" --json "$cap_kid" >"$work/cap.usage.json"

# Prompt redaction (and the token count a reservation makes) per 1 KB of prompt: criterion.
cargo bench -q -p gateway --bench redact -- --warm-up-time 1 --measurement-time 3 >"$work/redact.txt" 2>&1 || true

budget_table="$work/budgets.md"
if ! python3 bench/llm_budget.py report "$work" "$ROUNDS" "$DURATION" "$(nproc)" "$CAP_N" "$worst" "$cap" \
  "$UPSTREAM_DELAY_MS" >"$budget_table"; then
  cat "$budget_table"; echo "FAILED: see above; BENCHMARKS.md is not written" >&2; exit 1
fi
cat "$budget_table"

# Both blocks are written only now, when every run above has passed its checks.
python3 - "$table" "$budget_table" <<'PY'
import pathlib, sys
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text()


def put(text: str, name: str, body: str, after: str, heading: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    if after in text:
        head, rest = text.split(after, 1)
        return head + after + "\n\n" + heading + block + rest
    return text.rstrip() + "\n\n" + heading + block + "\n"


text = put(text, "llm", pathlib.Path(sys.argv[1]).read_text(), "\0", "## LLM gateway (bench/llm.sh)\n\n")
text = put(text, "llm-budgets", pathlib.Path(sys.argv[2]).read_text(), "<!-- llm:end -->",
           "### Token and spend budgets (bench/llm.sh)\n\n")
path.write_text(text)
PY
