#!/usr/bin/env bash
# `portcullis leaks scan` on the shared real apps (when ../shared/eval/apps is here), then side by
# side with detect-secrets (PyPI) and secretlint (npm, with its
# recommended preset): throughput on the seeded app corpus and on a source tree (TREE_MB), recall
# per key kind and per storage place, precision; throughput on one and two threads
# (bench/leaks_threads.py); writes BENCHMARKS.md (bench/leaks_eval.py says how).
#
#   bash bench/leaks.sh              # RUNS=3 COPIES=20 by default
#
# Most of the time is detect-secrets on the tree (about 0.1 MB/s here, so ~3 minutes a run on
# the default 16 MB tree; TREE_MB sets its size).
#
# Everything lives under the cargo target directory (target/, or $CARGO_TARGET_DIR when set): the
# corpus and the tree in leaks-bench, detect-secrets in the virtualenv leaks-venv, secretlint in
# leaks-node, the binary in release/. Extra arguments go to bench/leaks_eval.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
RUNS=${RUNS:-3}
COPIES=${COPIES:-20}
TREE_MB=${TREE_MB:-16}
DETECT_SECRETS_VERSION=1.5.0
SECRETLINT_VERSION=12.0.0
target=${CARGO_TARGET_DIR:-target}
binary=$target/release/portcullis
bench=$target/leaks-bench
mkdir -p "$bench"

# 1. The binary and the seeded corpus (regenerated every time: it is deterministic and quick).
#    truth.json is moved out of the scanned directory: it lists every planted secret in clear.
cargo build --release -p portcullis
rm -rf "$bench/corpus"
cargo run --release -p leaks --features corpus --example leaks_corpus -- "$bench/corpus" 7 "$COPIES"
mv "$bench/corpus/truth.json" "$bench/truth.json"

# 2. The peers, pinned, installed once.
venv=$target/leaks-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "detect-secrets==$DETECT_SECRETS_VERSION"
if ! command -v node >/dev/null || ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
  echo "secretlint $SECRETLINT_VERSION needs Node.js 20 or later (and npm) on the PATH" >&2
  exit 2
fi
node_prefix=$target/leaks-node
installed=$(node -p "require(require('path').resolve('$node_prefix/node_modules/secretlint/package.json')).version" 2>/dev/null || true)
preset=$(node -p "require(require('path').resolve('$node_prefix/node_modules/@secretlint/secretlint-rule-preset-recommend/package.json')).version" 2>/dev/null || true)
if [ "$installed" != "$SECRETLINT_VERSION" ] || [ "$preset" != "$SECRETLINT_VERSION" ]; then
  mkdir -p "$node_prefix"
  npm install --prefix "$node_prefix" --no-audit --no-fund --save-exact --loglevel=error \
    "secretlint@$SECRETLINT_VERSION" "@secretlint/secretlint-rule-preset-recommend@$SECRETLINT_VERSION"
fi
# Passed with --secretlintrc, so nothing is added to the scanned directories.
cat >"$bench/secretlintrc.json" <<'EOF'
{ "rules": [{ "id": "@secretlint/secretlint-rule-preset-recommend" }] }
EOF

# 3. A large source tree, copied once: the first crate directories of the cargo registry's
#    sources in sorted order until TREE_MB megabytes, regular files only, none over 1 MB.
if [ "$(cat "$bench/tree.done" 2>/dev/null)" != "$TREE_MB" ]; then
  rm -rf "$bench/tree"
  python3 - "$bench/tree" "$TREE_MB" <<'EOF'
import glob, os, shutil, sys

target, limit, largest = sys.argv[1], int(sys.argv[2]) << 20, 1 << 20
sources = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/index.crates.io-*")))
if not sources:
    raise SystemExit("no cargo registry sources under ~/.cargo/registry/src/index.crates.io-*")
root, total, crates = sources[0], 0, 0
for crate in sorted(os.listdir(root)):
    if total >= limit:
        break
    top = os.path.join(root, crate)
    if os.path.islink(top) or not os.path.isdir(top):
        continue
    for directory, subdirectories, files in os.walk(top):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            if size > largest:
                continue
            copy = os.path.join(target, os.path.relpath(path, root))
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copyfile(path, copy)
            total += size
    crates += 1
print(f"tree: {crates} crates, {total / 1e6:.1f} MB from {root}")
EOF
  echo "$TREE_MB" >"$bench/tree.done"
fi

# 4. The real apps others collected, when they are here: recall, precision, negative controls
#    (bench/leaks_real.py; ids only, never a value).
if [ -f ../shared/eval/apps/truth.json ]; then
  python3 bench/leaks_real.py --binary "$binary" --apps ../shared/eval/apps --write BENCHMARKS.md \
    --command "RUNS=$RUNS COPIES=$COPIES TREE_MB=$TREE_MB bash bench/leaks.sh"
fi

# 4b. One and two scanning threads (THREADS to change) on the corpus, the tree and the real apps:
#     throughput, the ratio to one thread, and a check that every report is the one-thread report.
thread_inputs=(--input "seeded corpus=$bench/corpus" --input "source tree=$bench/tree")
if [ -f ../shared/eval/apps/truth.json ]; then
  thread_inputs+=(--input "real apps=../shared/eval/apps")
fi
# shellcheck disable=SC2086
python3 bench/leaks_threads.py --binary "$binary" "${thread_inputs[@]}" \
  --threads ${THREADS:-1 2} --runs "$((RUNS > 5 ? RUNS : 5))" \
  --command "RUNS=$RUNS COPIES=$COPIES TREE_MB=$TREE_MB bash bench/leaks.sh"

# 5-7. Run, score, write the table.
exec "$venv/bin/python" bench/leaks_eval.py \
  --binary "$binary" \
  --corpus "$bench/corpus" --truth "$bench/truth.json" --tree "$bench/tree" \
  --venv "$venv" --node "$node_prefix" --secretlintrc "$bench/secretlintrc.json" \
  --runs "$RUNS" --command "RUNS=$RUNS COPIES=$COPIES TREE_MB=$TREE_MB bash bench/leaks.sh" "$@"
