#!/usr/bin/env bash
# Start the LiteLLM proxy as a benchmark peer for Portcullis, with virtual keys on, backed by
# PostgreSQL, in front of an OpenAI-compatible upstream.
#
#   litellm.sh UPSTREAM LISTEN_PORT     start; UPSTREAM is a port on 127.0.0.1 (the stub's) or a
#                                       base URL such as http://127.0.0.1:8080/v1
#   litellm.sh stop LISTEN_PORT         stop the proxy started for LISTEN_PORT (and its engine)
#   litellm.sh dropdb                   drop the benchmark database
#
# On success stdout carries exactly:
#   LITELLM_URL=http://127.0.0.1:PORT
#   LITELLM_KEY=sk-...            (a virtual key limited to models ["chat"]; master key in master-key mode)
#   LITELLM_MASTER_KEY=sk-...
#   LITELLM_PIDFILE=/path/litellm.pid
# and the proxy keeps running in the background (own process group; pid in LITELLM_PIDFILE).
# Everything else goes to stderr and to $STATE_DIR/litellm.{out,err}.
#
# Models served: `chat` and `chat-other`, both -> openai/stub-chat at UPSTREAM.
#
# Why a shim: LiteLLM's virtual keys go through prisma-client-py, which runs Prisma's native
# query-engine binary downloaded from binaries.prisma.sh at `prisma generate` time. That host is not
# reachable here. prisma-qe-shim/ is a stand-in for that binary built only from npm packages: Prisma's
# own query engine for the same engine commit compiled to WebAssembly (@prisma/query-engine-wasm
# 5.17.0-31.393aa359...) over the `pg` driver (@prisma/adapter-pg 5.17.0), behind the binary's HTTP
# API, translating prisma-client-py's GraphQL protocol to the JSON protocol the Wasm engine takes.
# The schema engine is not needed: the schema is applied from litellm-proxy-extras' SQL migrations.
#
# Environment (all optional):
#   LITELLM_MODE=virtual-keys|master-key   master-key: no database, only the master key (NOT "virtual keys on")
#   LITELLM_PG=postgresql://postgres@127.0.0.1:5432   server; LITELLM_DB=litellm_bench   database
#   LITELLM_DB_RESET=1          drop and re-create the database first
#   LITELLM_MASTER_KEY=sk-...   LITELLM_NUM_WORKERS=1   LITELLM_READY_TIMEOUT=180
#   PORTCULLIS_CACHE            cache root (venv, shim, prisma CLI) = ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/bench
#   STATE_DIR                   run files (default ${TMPDIR:-/tmp}/portcullis-bench/litellm-PORT)
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
CACHE=${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/bench
VENV=$CACHE/litellm-venv
SHIM=$CACHE/prisma-shim
PRISMA_CACHE=$CACHE/prisma-cache
PG=${LITELLM_PG:-postgresql://postgres@127.0.0.1:5432}
DB=${LITELLM_DB:-litellm_bench}
MODE=${LITELLM_MODE:-virtual-keys}
MASTER=${LITELLM_MASTER_KEY:-sk-bench-master-0123456789}
LITELLM_VERSION=1.108.7
PRISMA_PY_VERSION=0.15.0

log() { echo "[litellm.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

state_dir() { echo "${STATE_DIR:-${TMPDIR:-/tmp}/portcullis-bench/litellm-$1}"; }

stop_proxy() {
  local dir pid
  dir=$(state_dir "$1")
  [ -f "$dir/litellm.pid" ] || { log "no pid file in $dir"; return 0; }
  pid=$(cat "$dir/litellm.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$dir/litellm.pid"
  log "stopped LiteLLM (pgid $pid)"
}

py() { "$VENV/bin/python" "$@"; }

drop_db() {
  py - "$PG" "$DB" <<'EOF'
import sys, psycopg
pg, db = sys.argv[1], sys.argv[2]
with psycopg.connect(pg + "/postgres", autocommit=True) as c:
    c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
print(f"dropped {db}", file=sys.stderr)
EOF
}

case "${1:-}" in
  stop) stop_proxy "${2:?usage: litellm.sh stop LISTEN_PORT}"; exit 0;;
  dropdb) drop_db; exit 0;;
  ""|-h|--help) sed -n 2,12p "$0" >&2; exit 2;;
esac

UPSTREAM=${1:?usage: litellm.sh UPSTREAM_PORT_OR_URL LISTEN_PORT}
PORT=${2:?usage: litellm.sh UPSTREAM_PORT_OR_URL LISTEN_PORT}
if [[ $UPSTREAM =~ ^[0-9]+$ ]]; then API_BASE=http://127.0.0.1:$UPSTREAM/v1; else API_BASE=${UPSTREAM%/}; fi
STATE=$(state_dir "$PORT")
mkdir -p "$STATE" "$CACHE"

# 1. venv (cached): litellm[proxy] plus the prisma client LiteLLM's extra-proxy asks for.
if ! "$VENV/bin/python" -c "import litellm, prisma, psycopg" 2>/dev/null \
   || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  log "creating venv $VENV (litellm $LITELLM_VERSION) ..."
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  if [ -f "$HERE/litellm-requirements.lock" ]; then
    "$VENV/bin/pip" install -q -r "$HERE/litellm-requirements.lock" >&2
  else
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" "prisma==$PRISMA_PY_VERSION" >&2
  fi
fi

LITELLM_ENV=(
  PATH="$VENV/bin:$PATH"
  LITELLM_TELEMETRY=False
  LITELLM_LOCAL_MODEL_COST_MAP=True   # no fetch of the cost map from GitHub (unreachable)
  LITELLM_LOG=${LITELLM_LOG:-ERROR}
  DISABLE_SCHEMA_UPDATE=true          # the schema comes from the SQL migrations below
)

if [ "$MODE" = virtual-keys ]; then
  command -v node >/dev/null || die "node (>=18) is needed for the Prisma CLI and the query-engine shim"
  # 2. query-engine shim (cached copy of $HERE/prisma-qe-shim with its npm dependencies).
  mkdir -p "$SHIM"
  for f in package.json package-lock.json query-engine.mjs query-engine schema-engine; do
    cmp -s "$HERE/prisma-qe-shim/$f" "$SHIM/$f" || cp "$HERE/prisma-qe-shim/$f" "$SHIM/$f"
  done
  chmod +x "$SHIM/query-engine" "$SHIM/schema-engine"
  if [ ! -d "$SHIM/node_modules/@prisma/query-engine-wasm" ] || [ "$SHIM/package-lock.json" -nt "$SHIM/node_modules/.package-lock.json" ]; then
    log "installing the query-engine shim's npm packages ..."
    (cd "$SHIM" && npm ci --no-audit --no-fund >&2)
  fi
  LITELLM_ENV+=(
    PRISMA_BINARY_CACHE_DIR="$PRISMA_CACHE"
    PRISMA_QUERY_ENGINE_BINARY="$SHIM/query-engine"
    PRISMA_SCHEMA_ENGINE_BINARY="$SHIM/schema-engine"
    PRISMA_HIDE_UPDATE_MESSAGE=true
  )
  # 3. prisma generate (the Prisma CLI 5.17.0 comes from npm; the engines from the shim).
  SCHEMA=$(py -c 'import litellm_proxy_extras, os; print(os.path.join(os.path.dirname(litellm_proxy_extras.__file__), "schema.prisma"))')
  SP=$(py -c 'import prisma, os; print(os.path.dirname(prisma.__file__))')
  if [ ! -f "$SP/models.py" ] || ! grep -q "LiteLLM_VerificationToken" "$SP/models.py" || [ "$SCHEMA" -nt "$SP/models.py" ]; then
    log "prisma generate ..."
    env "${LITELLM_ENV[@]}" prisma generate --schema "$SCHEMA" >&2
  fi
  # 4. database: create and apply litellm-proxy-extras' migrations in order.
  [ "${LITELLM_DB_RESET:-0}" = 1 ] && drop_db
  # psql runs each statement on its own (some migrations use CREATE INDEX CONCURRENTLY).
  command -v psql >/dev/null || die "psql is needed to apply the migrations (apt-get install postgresql-client)"
  if [ "$(psql "$PG/postgres" -Atc "SELECT 1 FROM pg_database WHERE datname='$DB'")" != 1 ]; then
    psql -q "$PG/postgres" -c "CREATE DATABASE \"$DB\"" >&2
    log "created database $DB"
  fi
  psql -q "$PG/$DB" -c 'CREATE TABLE IF NOT EXISTS "_bench_applied_migrations" (name text PRIMARY KEY, at timestamptz DEFAULT now())' >&2
  MIG=$(dirname "$SCHEMA")/migrations
  APPLIED=$(psql "$PG/$DB" -Atc 'SELECT name FROM "_bench_applied_migrations"')
  n=0; t0=$(date +%s)
  while IFS= read -r -d '' d; do
    name=$(basename "$d")
    [ -f "$d/migration.sql" ] || continue
    grep -qxF -- "$name" <<<"$APPLIED" && continue
    psql -q "$PG/$DB" -v ON_ERROR_STOP=1 -f "$d/migration.sql" >"$STATE/migrate.log" 2>&1 \
      || { cat "$STATE/migrate.log" >&2; die "migration $name failed"; }
    psql -q "$PG/$DB" -c "INSERT INTO \"_bench_applied_migrations\"(name) VALUES ('${name//\'/\'\'}')" >&2
    n=$((n+1))
  done < <(find "$MIG" -mindepth 1 -maxdepth 1 -type d -print0 | sort -z)
  [ "$n" -gt 0 ] && log "applied $n migrations in $(( $(date +%s)-t0 ))s"
  DB_URL="$PG/$DB"
fi

# 5. config and start.
CFG=$STATE/config.yaml
{
  echo "model_list:"
  for name in chat chat-other; do
    cat <<EOF
  - model_name: $name
    litellm_params:
      model: openai/stub-chat
      api_base: $API_BASE
      api_key: sk-upstream-anything
EOF
  done
  echo "general_settings:"
  echo "  master_key: $MASTER"
  if [ "$MODE" = virtual-keys ]; then
    echo "  database_url: $DB_URL"
    echo "  disable_prisma_schema_update: true"
  fi
} > "$CFG"

stop_proxy "$PORT" 2>/dev/null || true
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is already in use"; fi
log "starting LiteLLM $LITELLM_VERSION on 127.0.0.1:$PORT ($MODE) -> $API_BASE"
START=$(date +%s.%N)
# setsid: own process group, so `stop` also ends the query-engine shim it spawns.
env "${LITELLM_ENV[@]}" setsid "$VENV/bin/litellm" --config "$CFG" --host 127.0.0.1 --port "$PORT" \
  --num_workers "${LITELLM_NUM_WORKERS:-1}" >"$STATE/litellm.out" 2>"$STATE/litellm.err" </dev/null &
PID=$!
echo "$PID" > "$STATE/litellm.pid"

URL=http://127.0.0.1:$PORT
deadline=$(( $(date +%s) + ${LITELLM_READY_TIMEOUT:-180} ))
until curl -sf "$URL/health/readiness" -o "$STATE/readiness.json"; do
  kill -0 "$PID" 2>/dev/null || { tail -30 "$STATE/litellm.err" >&2; die "LiteLLM exited during startup (logs in $STATE)"; }
  [ "$(date +%s)" -lt "$deadline" ] || { stop_proxy "$PORT"; die "LiteLLM not ready in time (logs in $STATE)"; }
  sleep 0.5
done
log "ready after $(python3 -c "import time;print(round(time.time()-$START,1))")s: $(cat "$STATE/readiness.json")"

KEY=$MASTER
if [ "$MODE" = virtual-keys ]; then
  grep -q '"db":"connected"' "$STATE/readiness.json" || { stop_proxy "$PORT"; die "database not connected: $(cat "$STATE/readiness.json")"; }
  RESP=$(curl -sS -X POST "$URL/key/generate" -H "Authorization: Bearer $MASTER" \
    -H 'content-type: application/json' -d '{"models":["chat"],"key_alias":null}')
  KEY=$(printf '%s' "$RESP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') \
    || { stop_proxy "$PORT"; die "/key/generate failed: $RESP"; }
fi

echo "LITELLM_URL=$URL"
echo "LITELLM_KEY=$KEY"
echo "LITELLM_MASTER_KEY=$MASTER"
echo "LITELLM_PIDFILE=$STATE/litellm.pid"
