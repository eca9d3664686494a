#!/usr/bin/env bash
# Runs the whole test suite: the README's test command, and what .ci/run calls.
#
# The tests need the ONNX Runtime shared library (for tree-ensemble models). It comes from the
# `onnxruntime` wheel on PyPI, installed on first use into target/test-venv; nothing else is
# downloaded. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.32.0
venv=target/test-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION')" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "onnxruntime==$ORT_VERSION"
fi
lib=$(ls "$PWD/$venv"/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)
if [ -z "$lib" ]; then
  echo "error: libonnxruntime.so not found in $venv after installing onnxruntime==$ORT_VERSION" >&2
  exit 2
fi
export ORT_DYLIB_PATH="$lib"
export PORTCULLIS_REQUIRE_ORT=1
# Benchmarks and load tests unset it too: backtraces make error paths slow, and tests that
# exercise thousands of refusals should measure behaviour, not backtrace capture.
export RUST_LIB_BACKTRACE=0

exec cargo test --workspace "$@"
