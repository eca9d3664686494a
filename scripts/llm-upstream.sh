#!/usr/bin/env bash
# Installs, once, a real OpenAI-compatible LLM server and a tiny model for the LLM tests, in a cache
# outside the clone: ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/llm/.
#
#   venv/                         cmake, ninja, gguf and numpy from PyPI (scripts/llm-upstream-requirements.txt)
#   llama-server-<v>/llama-server llama.cpp's server, built from the source vendored in the
#                                 llama-cpp-python==<v> sdist on PyPI; STAMP holds what it was built from
#   tiny-seed<N>.gguf             a random-weight llama model written by scripts/make_tiny_gguf.py
#
# Nothing is downloaded but PyPI packages (the sdist is checked against a pinned SHA-256). A
# finished binary or model is reused when its stamp matches; both are built in a temporary
# directory and renamed into place, so an interrupted run never leaves something that looks
# finished. A lock keeps two runs from building at once. The build takes about 7-16 minutes on 2
# cores (`nice -n 10`, `-j ${PORTCULLIS_LLM_JOBS:-2}`).
#
# Progress goes to stderr; stdout gets two shell-quoted assignments, so a caller can
#   eval "$(bash scripts/llm-upstream.sh)"   # sets LLAMA_SERVER and TINY_GGUF
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
MODEL_SEED=0

cache="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/llm"
jobs="${PORTCULLIS_LLM_JOBS:-2}"
requirements="$PWD/scripts/llm-upstream-requirements.txt"
model_script="$PWD/scripts/make_tiny_gguf.py"

say() { printf 'llm-upstream: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
  say "another run holds $cache/.lock; waiting"
  flock 9
fi
# Under the lock no build is running, so a build directory left here was interrupted.
rm -rf "$cache"/.build-*

# 1. The virtualenv with the build tools and the model writer's dependencies.
venv="$cache/venv"
venv_stamp="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$venv/STAMP" 2>/dev/null)" != "$venv_stamp" ]; then
  say "installing $(grep -c '==' "$requirements") pinned PyPI packages into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  printf '%s\n' "$venv_stamp" >"$venv/STAMP"
fi

# 2. llama-server. The flags follow the measured recipe: no web UI (the prebuilt one would be
# downloaded from a model hub), no curl/OpenSSL (the server never fetches models), a portable CPU
# baseline, static llama/ggml libraries so the binary needs only libstdc++ and libgomp.
cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
)
# GGML_NATIVE=OFF still assumes AVX2/FMA/F16C/BMI2 on x86-64; drop them on CPUs without AVX2.
if [ "$(uname -m)" = x86_64 ] && ! grep -qw avx2 /proc/cpuinfo; then
  cmake_flags+=(-DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF)
fi
server_dir="$cache/llama-server-$LLAMA_CPP_PYTHON_VERSION"
server="$server_dir/llama-server"
server_stamp="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sha256=$LLAMA_CPP_PYTHON_SHA256 $(uname -m) ${cmake_flags[*]}"
if [ "$(cat "$server_dir/STAMP" 2>/dev/null)" = "$server_stamp" ] && "$server" --version >/dev/null 2>&1; then
  say "reusing $server"
else
  tmp="$(mktemp -d "$cache/.build-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  say "downloading the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
  printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CPP_PYTHON_SHA256" >"$tmp/sdist.txt"
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    --require-hashes -r "$tmp/sdist.txt" -d "$tmp/dl"
  src="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  tar -xzf "$tmp/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$tmp" "$src"
  rm -rf "$tmp/dl"
  say "building llama-server with -j $jobs (about 7-16 minutes on 2 cores)"
  started=$SECONDS
  PATH="$venv/bin:$PATH" cmake -S "$tmp/$src" -B "$tmp/build" -G Ninja "${cmake_flags[@]}" \
    >"$tmp/configure.log" 2>&1 || { tail -n 40 "$tmp/configure.log" >&2; die "cmake configure failed"; }
  PATH="$venv/bin:$PATH" nice -n 10 cmake --build "$tmp/build" --target llama-server -j "$jobs" \
    >"$tmp/build.log" 2>&1 || { tail -n 40 "$tmp/build.log" >&2; die "llama-server build failed"; }
  say "built in $((SECONDS - started)) s"
  mkdir "$tmp/out"
  cp "$tmp/build/bin/llama-server" "$tmp/out/llama-server"
  "$tmp/out/llama-server" --version >"$tmp/out/VERSION" 2>&1 || die "the new llama-server does not run"
  printf '%s\n' "$server_stamp" >"$tmp/out/STAMP"
  rm -rf "$server_dir"
  mv "$tmp/out" "$server_dir"
  rm -rf "$tmp"
  trap - EXIT
fi

# 3. The tiny model: seeded random weights, so every run writes the same file.
model="$cache/tiny-seed$MODEL_SEED.gguf"
model_stamp="$(sha256sum "$model_script" | cut -d' ' -f1) $venv_stamp seed=$MODEL_SEED"
if [ -s "$model" ] && [ "$(cat "$model.STAMP" 2>/dev/null)" = "$model_stamp" ]; then
  say "reusing $model"
else
  "$venv/bin/python" "$model_script" --seed "$MODEL_SEED" --out "$model.tmp" >&2
  printf '%s\n' "$model_stamp" >"$model.STAMP.tmp"
  mv "$model.tmp" "$model"
  mv "$model.STAMP.tmp" "$model.STAMP"
fi

printf 'LLAMA_SERVER=%q\nTINY_GGUF=%q\n' "$server" "$model"
