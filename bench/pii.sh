#!/usr/bin/env bash
# `portcullis data` against Presidio on the same generated files; writes BENCHMARKS.md.
# Installs Presidio's analyzer (and phonenumbers for the generator) into target/pii-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
cargo build --release -p portcullis
venv=target/pii-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check presidio-analyzer phonenumbers pyarrow
"$venv/bin/python" bench/pii_gen.py --rows 20000 --out target/pii-eval
"$venv/bin/python" bench/pii.py --binary target/release/portcullis --set target/pii-eval "$@"
