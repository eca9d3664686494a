#!/usr/bin/env bash
# The limiter's cost and accuracy, and revocation fan-out across nodes (bench/limits.py says
# how). Needs Redis on 127.0.0.1:6379 (started here if it is down) and oha (bench/compare.sh
# installs it). Everything listens on 127.0.0.1; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if [ ! -x target/bench-tools/bin/oha ]; then
  cargo install oha --version 1.16.0 --locked --root target/bench-tools
fi
cargo build --release -p portcullis
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0
exec python3 bench/limits.py
