#!/usr/bin/env bash
# Portcullis side by side with the tools teams would use instead (bench/compare.py says what and
# how): installs the peers, builds the release binary, runs, and writes the table into
# BENCHMARKS.md. Everything listens on 127.0.0.1; every load run is bounded in time.
#
#   bash bench/compare.sh            # ROUNDS=3 DURATION=10 CONNECTIONS=32 by default
#
# Peers: nginx (Debian package), FastAPI + uvicorn + onnxruntime (PyPI, bench/requirements.txt,
# in target/bench-venv), oha (crates.io, in target/bench-tools) as the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null; then
  echo "installing nginx (Debian package nginx-light)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
fi
if [ ! -x target/bench-tools/bin/oha ]; then
  echo "installing oha into target/bench-tools"
  cargo install oha --version 1.16.0 --locked --root target/bench-tools
fi
if [ ! -x target/bench-venv/bin/python ]; then
  python3 -m venv target/bench-venv
fi
target/bench-venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
cargo build --release -p portcullis
unset RUST_BACKTRACE
export RUST_LIB_BACKTRACE=0
exec python3 bench/compare.py
