#!/usr/bin/env python3
"""What the limits cost and how exactly they hold, on loopback, in one run.

1. Throughput through `portcullis serve` (demo model, JSON, one row) with no limiter, with the
   in-memory limiter, and with the Redis limiter, for a key whose limit is never reached (so
   every request pays for a decision and none is refused); each as a ratio to no limiter.
2. Accuracy: two nodes sharing Redis (and one SQLite store), a key limited to 100/s with a burst
   of 10 (a tenth of a second), offered 1000/s for 10 s across both nodes (500/s each, open
   loop): accepted requests against the 1010 the limit allows (rate x time + burst).
3. Revocation: two nodes caching keys for a minute; `portcullis keys revoke` on one; time until
   both nodes refuse the key, from the command's exit (median and worst of five keys).

Needs Redis on 127.0.0.1:6379 (or PORTCULLIS_TEST_REDIS_URL), and what bench/compare.sh
installs (oha, the release binary). Writes the table into BENCHMARKS.md between the limits
markers. Run: `bash bench/limits.sh`.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import BIN, BODY, CHECKS, MODEL, OHA, Server, measure, wait_ready, write_markdown  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
REDIS = os.environ.get("PORTCULLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def write_config(directory: Path, port: int, admin: int, limits: str, store: Path, cache: str = "5s") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "portcullis.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
[store]
sqlite = "{store}/portcullis.db"
pepper_file = "{store}/pepper"
key_cache_ttl = "{cache}"
[audit]
path = "{directory}/audit.log"
signing_key = "{store}/audit-signing.key"
[limits]
{limits}
[[models]]
name = "credit-risk"
path = "{MODEL}"
checks = "{CHECKS}"
""")
    return config


def create_key(config: Path, *limits: str) -> tuple[str, str]:
    output = subprocess.run([BIN, "keys", "create", "--config", config, "--name", "bench", "--models", "*",
                             "--json", *limits], capture_output=True, text=True, check=True)
    created = json.loads(output.stdout)
    return created["key"], created["id"]


def throughput(work: Path) -> dict:
    prefix = f"ptcl-bench-{os.getpid()}:"
    setups = {
        "no limiter": "",
        "in-memory limiter": "",
        "Redis limiter": f'backend = "{REDIS}"\nredis_prefix = "{prefix}"',
    }
    servers, keys = {}, {}
    try:
        for index, (name, limits) in enumerate(setups.items()):
            store = work / f"t{index}"
            store.mkdir(parents=True, exist_ok=True)
            config = write_config(store / "node", 18501 + index, 18511 + index, limits, store)
            flags = [] if name == "no limiter" else ["--rate", "1000000/s", "--burst", "1000000"]
            keys[name], _ = create_key(config, *flags)
            servers[name] = Server(name, [BIN, "serve", "--config", config, "--log", "warn"], work / f"t{index}.log")
            wait_ready(f"http://127.0.0.1:{18501 + index}/v2/health/ready", servers[name])
        urls = {name: f"http://127.0.0.1:{18501 + index}/v2/models/credit-risk/infer"
                for index, name in enumerate(setups)}
        runs: dict[str, list[dict]] = {}
        for _ in range(ROUNDS):
            for name in setups:
                runs.setdefault(name, []).append(measure(servers[name], urls[name], keys[name], None))
        return {name: {field: statistics.median(run[field] for run in values) for field in values[0]}
                for name, values in runs.items()}
    finally:
        for server in servers.values():
            server.stop()


def oha_codes(url: str, key: str, rate: int, seconds: int, results: dict, name: str) -> None:
    command = [OHA, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", "16", "-q", str(rate),
               "--latency-correction", "-m", "POST", "-H", "content-type: application/json",
               "-H", f"authorization: Bearer {key}", "-d", BODY, url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    results[name] = json.loads(output.stdout).get("statusCodeDistribution", {})


def two_nodes(work: Path, cache: str):
    store = work / "shared"
    store.mkdir(parents=True, exist_ok=True)
    prefix = f"ptcl-bench-{os.getpid()}-{time.time_ns()}:"
    limits = f'backend = "{REDIS}"\nredis_prefix = "{prefix}"'
    configs = [write_config(store / f"node{i}", 18601 + i, 18611 + i, limits, store, cache) for i in range(2)]
    # One after the other: the first creates the shared pepper and signing key.
    nodes = []
    try:
        for i in range(2):
            node = Server(f"node{i}", [BIN, "serve", "--config", configs[i], "--log", "warn"],
                          work / f"node{i}-{cache}.log")
            nodes.append(node)
            wait_ready(f"http://127.0.0.1:{18601 + i}/v2/health/ready", node)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return configs, nodes


def accuracy(work: Path) -> dict:
    configs, nodes = two_nodes(work / "accuracy", "5s")
    try:
        key, _ = create_key(configs[0], "--rate", "100/s", "--burst", "10")
        results: dict[str, dict] = {}
        threads = [
            threading.Thread(target=oha_codes, args=(
                f"http://127.0.0.1:{18601 + i}/v2/models/credit-risk/infer", key, 500, 10, results, f"node{i}"))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = sum(codes.get("200", 0) for codes in results.values())
        refused = sum(codes.get("429", 0) for codes in results.values())
        other = sum(n for codes in results.values() for code, n in codes.items() if code not in ("200", "429"))
        return {"accepted": accepted, "refused": refused, "other": other, "allowed": 100 * 10 + 10}
    finally:
        for node in nodes:
            node.stop()


def status(port: int, key: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/v2/models/credit-risk", headers={"authorization": f"Bearer {key}"})
    code = connection.getresponse().status
    connection.close()
    return code


def revocation(work: Path) -> dict:
    configs, nodes = two_nodes(work / "revocation", "60s")
    try:
        delays = []
        for _ in range(5):
            key, kid = create_key(configs[0])
            assert status(18601, key) == 200 and status(18602, key) == 200  # cached on both
            subprocess.run([BIN, "keys", "revoke", kid, "--config", configs[1]], capture_output=True, check=True)
            revoked = time.perf_counter()
            while status(18601, key) != 401 or status(18602, key) != 401:
                if time.perf_counter() - revoked > 10:
                    raise RuntimeError("a node still accepts a revoked key after 10 s")
            delays.append((time.perf_counter() - revoked) * 1000)
        return {"median_ms": statistics.median(delays), "max_ms": max(delays)}
    finally:
        for node in nodes:
            node.stop()


def table(speed: dict, exact: dict, revoke: dict) -> str:
    base = speed["no limiter"]["rps"]
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}: {ROUNDS} rounds per configuration, medians; oha closed loop, 32 "
        "connections, same machine.",
        "",
        "| limiter | requests/s | ratio to none | p50 ms | p99 ms | CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in speed.items():
        lines.append(f"| {name} | {result['rps']:,.0f} | {result['rps'] / base:.2f} | {result['p50_ms']:.2f} | "
                     f"{result['p99_ms']:.2f} | {result['cpu_cores']:.2f} |")
    cost = 1 - speed["Redis limiter"]["rps"] / base
    error = exact["accepted"] / exact["allowed"] - 1
    lines += [
        "",
        f"Redis limiter cost: **{cost:.0%} of throughput** (goal: under 20%). In-memory limiter cost: "
        f"{1 - speed['in-memory limiter']['rps'] / base:.0%}.",
        "",
        f"Accuracy, two nodes sharing Redis, a key limited to 100/s (burst 10), offered 1000/s for 10 s: "
        f"**{exact['accepted']} accepted** of {exact['allowed']} allowed ({error:+.1%}; goal: within 5%), "
        f"{exact['refused']} refused with 429, {exact['other']} other.",
        "",
        f"Revocation on one node seen by both (keys cached for 60 s): median **{revoke['median_ms']:.1f} ms**, "
        f"worst {revoke['max_ms']:.1f} ms after `keys revoke` returned (goal: within 1 s).",
    ]
    return "\n".join(lines)


def main() -> int:
    for needed in (BIN, Path(OHA)):
        if not Path(needed).exists():
            print(f"missing {needed}: run bench/compare.sh first (it installs oha and builds)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="portcullis-limits-") as directory:
        work = Path(directory)
        speed = throughput(work)
        exact = accuracy(work)
        revoke = revocation(work)
    text = table(speed, exact, revoke)
    print(text)
    write_markdown(text, "limits", "## Limits (`bash bench/limits.sh`)\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
