#!/usr/bin/env python3
"""Portcullis side by side with what teams would use instead, on loopback, in one run.

(a) Hosting: `portcullis serve` with the demo model (key checks and audit log on) against a
    FastAPI + onnxruntime service with an API-key dependency (bench/peers/fastapi_app.py), each
    with as many workers as cores.
(b) Fronting: an upstream OIP server called directly, through nginx with a static key map, and
    through `portcullis serve` with an upstream model (key checks, audit log on). The upstream is
    `portcullis serve` hosting the demo model as a public model without audit: a fast OIP
    server, so that what the proxies add is not hidden behind a slow one.

Each configuration is measured by oha in two ways: closed loop (as fast as it answers, the peak)
and open loop at a constant rate with latency correction (no coordinated omission), at the rates
named in the table. Every configuration runs once per round, rounds alternate, and the table
gives medians over rounds. CPU (cores busy) and memory (RSS) are read from /proc for the
server's process tree during each run. The load generator shares the machine's cores with the
servers: absolute figures are low, ratios are what the table is for.

Run through bench/compare.sh, which installs the peers. Writes the table into BENCHMARKS.md
between the compare markers and the raw runs into target/bench-results/compare.json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/portcullis"
OHA = os.environ.get("OHA", str(ROOT / "target/bench-tools/bin/oha"))
PYTHON = ROOT / "target/bench-venv/bin/python"
MODEL = ROOT / "models/credit-risk/model.onnx"
CHECKS = ROOT / "models/credit-risk/checks.json"
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
CORES = os.cpu_count() or 2
BODY = json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32",
                               "data": [[35, 52000, 0.3, 4, 0, 15000, 6, 0.35]]}]})
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


class Server:
    """A server process (tree) with its CPU time and memory."""

    def __init__(self, name: str, command: list, log: Path, env: dict | None = None, cwd: Path = ROOT):
        self.name = name
        self.log = open(log, "wb")
        self.process = subprocess.Popen([str(part) for part in command], stdout=self.log, stderr=self.log,
                                        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)

    def cpu_seconds(self) -> float:
        total = 0
        for pid in children(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total / CLK_TCK

    def rss_mib(self) -> float:
        total = 0
        for pid in children(self.process.pid):
            try:
                match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def wait_ready(url: str, server: Server, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.process.poll() is not None:
            server.log.flush()
            tail = Path(server.log.name).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not become ready at {url}")


def oha(url: str, key: str | None, rate: float | None, duration: int = DURATION) -> dict:
    command = [OHA, "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(CONNECTIONS),
               "-m", "POST", "-H", "content-type: application/json", "-d", BODY]
    if key:
        command += ["-H", f"authorization: Bearer {key}"]
    if rate:
        command += ["-q", str(rate), "--latency-correction"]
    output = subprocess.run(command + [url], capture_output=True, text=True, timeout=duration + 60)
    if output.returncode != 0:
        raise RuntimeError(f"oha failed: {output.stderr}")
    report = json.loads(output.stdout)
    codes = report.get("statusCodeDistribution", {})
    total = sum(codes.values())
    ok = codes.get("200", 0)
    if total == 0 or ok / total < 0.999:
        raise RuntimeError(f"{url}: status codes {codes}, errors {report.get('errorDistribution')}")
    percentiles = report["latencyPercentiles"]
    return {"rps": ok / report["summary"]["total"], "p50_ms": percentiles["p50"] * 1000, "p99_ms": percentiles["p99"] * 1000}


def measure(server: Server | list[Server], url: str, key: str | None, rate: float | None) -> dict:
    servers = server if isinstance(server, list) else [server]
    before = [s.cpu_seconds() for s in servers]
    started = time.time()
    result = oha(url, key, rate)
    elapsed = time.time() - started
    result["cpu_cores"] = sum(s.cpu_seconds() - b for s, b in zip(servers, before)) / elapsed
    result["rss_mib"] = sum(s.rss_mib() for s in servers)
    return result


def create_key(config: Path) -> str:
    output = subprocess.run([BIN, "keys", "create", "--config", config, "--name", "bench", "--models", "*",
                             "--output", "raw", "--widen-output", "--json"], capture_output=True, text=True, check=True)
    return json.loads(output.stdout)["key"]


def portcullis_config(directory: Path, port: int, admin: int, models: str, audit: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "portcullis.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
[inference]
threads = {CORES}
[audit]
enabled = {"true" if audit else "false"}
{models}
""")
    return config


def nginx_config(directory: Path, port: int, upstream: int, key: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(f"""
worker_processes {CORES};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    # The static key map: the usual way to put a key check in front of a model server.
    map_hash_bucket_size 128;
    map $http_authorization $key_ok {{
        "Bearer {key}" 1;
        default 0;
    }}
    upstream model {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /v2/ {{
            if ($key_ok = 0) {{ return 401; }}
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }}
    }}
}}
""")
    return config


def median(runs: list[dict], field: str) -> float:
    return statistics.median(run[field] for run in runs)


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    return {name: {field: median(values, field) for field in values[0]} for name, values in runs.items()}


def hosting(work: Path) -> dict:
    """(a) Portcullis hosting the demo model against FastAPI + onnxruntime."""
    config = portcullis_config(work / "a-portcullis", 18201, 18211, f"""
[[models]]
name = "credit-risk"
path = "{MODEL}"
checks = "{CHECKS}"
""")
    key = create_key(config)
    portcullis = Server("portcullis", [BIN, "serve", "--config", config], work / "a-portcullis.log")
    (work / "keys.txt").write_text(key + "\n")
    fastapi = Server("fastapi", [PYTHON, "-m", "uvicorn", "bench.peers.fastapi_app:app", "--workers", CORES,
                                 "--host", "127.0.0.1", "--port", 18202, "--loop", "uvloop", "--http", "httptools",
                                 "--log-level", "warning", "--no-access-log"],
                     work / "a-fastapi.log", env={"BENCH_MODEL": str(MODEL), "BENCH_KEYS_FILE": str(work / "keys.txt")})
    try:
        wait_ready("http://127.0.0.1:18201/v2/health/ready", portcullis)
        wait_ready("http://127.0.0.1:18202/v2/health/ready", fastapi)
        urls = {"portcullis": "http://127.0.0.1:18201/v2/models/credit-risk/infer",
                "fastapi": "http://127.0.0.1:18202/v2/models/credit-risk/infer"}
        servers = {"portcullis": portcullis, "fastapi": fastapi}
        for name in urls:  # warm up: connections, caches, the workers' first requests
            oha(urls[name], key, None, duration=2)
        runs: dict[str, list[dict]] = {}
        for _ in range(ROUNDS):
            for name in urls:
                runs.setdefault(f"{name} peak", []).append(measure(servers[name], urls[name], key, None))
        peak = summarise(runs)
        # The same offered load for both: 80% of the slower one's peak; and Portcullis at half its own.
        common = round(0.8 * min(peak["portcullis peak"]["rps"], peak["fastapi peak"]["rps"]))
        half = round(0.5 * peak["portcullis peak"]["rps"])
        for _ in range(ROUNDS):
            for name in urls:
                runs.setdefault(f"{name} @ {common}/s", []).append(measure(servers[name], urls[name], key, common))
            runs.setdefault(f"portcullis @ {half}/s", []).append(measure(portcullis, urls["portcullis"], key, half))
        return {"runs": runs, "summary": summarise(runs), "common_rate": common, "half_rate": half}
    finally:
        portcullis.stop()
        fastapi.stop()


def fronting(work: Path) -> dict:
    """(b) An upstream directly, through nginx, and through Portcullis."""
    upstream_config = portcullis_config(work / "b-upstream", 18301, 18311, f"""
[[models]]
name = "credit-risk"
path = "{MODEL}"
checks = "{CHECKS}"
public = true
""", audit=False)
    upstream = Server("upstream", [BIN, "serve", "--config", upstream_config, "--log", "warn"], work / "b-upstream.log")
    front_config = portcullis_config(work / "b-portcullis", 18302, 18312, """
[[models]]
name = "credit-risk"
[models.upstream]
url = "http://127.0.0.1:18301"
max_connections = 64
""")
    key = create_key(front_config)
    front = Server("portcullis", [BIN, "serve", "--config", front_config], work / "b-portcullis.log")
    nginx_dir = work / "b-nginx"
    nginx = Server("nginx", ["nginx", "-c", nginx_config(nginx_dir, 18303, 18301, key), "-g", "daemon off;"],
                   work / "b-nginx.log")
    try:
        wait_ready("http://127.0.0.1:18301/v2/health/ready", upstream)
        wait_ready("http://127.0.0.1:18302/v2/health/ready", front)
        time.sleep(0.5)
        if nginx.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(work / 'b-nginx.log').read_text()}")
        urls = {"direct": "http://127.0.0.1:18301/v2/models/credit-risk/infer",
                "nginx": "http://127.0.0.1:18303/v2/models/credit-risk/infer",
                "portcullis": "http://127.0.0.1:18302/v2/models/credit-risk/infer"}
        # The proxy's own process only; the upstream's CPU is the same work in every case.
        servers = {"direct": upstream, "nginx": nginx, "portcullis": front}
        # The upstream's model is public: direct calls carry no key (an unknown one would be refused).
        keys = {"direct": None, "nginx": key, "portcullis": key}
        for name in urls:
            oha(urls[name], keys[name], None, duration=2)
        runs: dict[str, list[dict]] = {}
        for _ in range(ROUNDS):
            for name in urls:
                runs.setdefault(f"{name} peak", []).append(measure(servers[name], urls[name], keys[name], None))
        peak = summarise(runs)
        # Half of the upstream's own peak (strict), and half of Portcullis's peak in front of it.
        half = round(0.5 * peak["direct peak"]["rps"])
        half_front = round(0.5 * peak["portcullis peak"]["rps"])
        for _ in range(ROUNDS):
            for rate in dict.fromkeys((half, half_front)):
                for name in urls:
                    runs.setdefault(f"{name} @ {rate}/s", []).append(
                        measure(servers[name], urls[name], keys[name], rate))
        return {"runs": runs, "summary": summarise(runs), "half_rate": half, "half_front_rate": half_front}
    finally:
        for server in (front, nginx, upstream):
            server.stop()


def row(name: str, result: dict) -> str:
    return (f"| {name} | {result['rps']:,.0f} | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} | "
            f"{result['cpu_cores']:.2f} | {result['rss_mib']:.0f} |")


def table(a: dict, b: dict) -> str:
    sa, sb = a["summary"], b["summary"]
    header = "| configuration | requests/s | p50 ms | p99 ms | CPU (cores) | RSS MiB |\n|---|---:|---:|---:|---:|---:|"
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}: {ROUNDS} rounds of {DURATION} s per configuration, {CONNECTIONS} "
        f"connections, medians over rounds; {CORES} cores shared by the load generator (oha) and the servers.",
        "",
        "**(a) Hosting the demo model**: Portcullis (key check, audit log, JSON access log) against FastAPI + "
        f"onnxruntime with an API-key dependency (uvicorn, {CORES} workers, uvloop + httptools, access log off).",
        "",
        header,
    ]
    lines += [row(name, result) for name, result in sa.items()]
    rps_ratio = sa["portcullis peak"]["rps"] / sa["fastapi peak"]["rps"]
    common = a["common_rate"]
    p99_p, p99_f = sa[f"portcullis @ {common}/s"]["p99_ms"], sa[f"fastapi @ {common}/s"]["p99_ms"]
    lines += [
        "",
        f"Peak requests/s, Portcullis / FastAPI: **{rps_ratio:.1f}x** (goal: at least 5x). "
        f"p99 at the same offered load ({common}/s): Portcullis {p99_p:.2f} ms, FastAPI {p99_f:.2f} ms "
        f"(**{p99_f / p99_p:.1f}x lower**; goal: lower).",
        "",
        "**(b) Fronting an upstream OIP server** (the upstream is `portcullis serve` hosting the model as a "
        "public model without audit; CPU and RSS are the proxy's own, the upstream's for *direct*).",
        "",
        header,
    ]
    lines += [row(name, result) for name, result in sb.items()]
    throughput = sb["portcullis peak"]["rps"] / sb["nginx peak"]["rps"]

    def overhead(proxy: str, rate: int) -> float:
        return sb[f"{proxy} @ {rate}/s"]["p99_ms"] - sb[f"direct @ {rate}/s"]["p99_ms"]

    half, half_front = b["half_rate"], b["half_front_rate"]
    lines += [
        "",
        f"Peak requests/s, Portcullis / nginx: **{throughput:.2f}** (goal: at least 0.90). "
        f"p99 overhead over direct calls at half of the upstream's peak ({half}/s): Portcullis "
        f"**{overhead('portcullis', half):+.2f} ms**, nginx {overhead('nginx', half):+.2f} ms; "
        f"at half of Portcullis's own peak ({half_front}/s): Portcullis "
        f"**{overhead('portcullis', half_front):+.2f} ms**, nginx {overhead('nginx', half_front):+.2f} ms "
        "(goal: under 1 ms).",
    ]
    return "\n".join(lines)


def write_markdown(text: str, name: str = "compare", heading: str = "") -> None:
    """Replaces what is between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in BENCHMARKS.md
    (appending the markers, under `heading`, the first time)."""
    path = ROOT / "BENCHMARKS.md"
    content = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in content:
        content += f"\n{heading}{begin}\n{end}\n"
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> int:
    for needed in (BIN, Path(OHA), PYTHON):
        if not Path(needed).exists():
            print(f"missing {needed}: run bench/compare.sh, which installs the peers", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="portcullis-compare-") as directory:
        work = Path(directory)
        a = hosting(work)
        b = fronting(work)
    text = table(a, b)
    print(text)
    results = ROOT / "target/bench-results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "compare.json").write_text(json.dumps({"hosting": a, "fronting": b}, indent=2))
    write_markdown(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
