#!/usr/bin/env python3
"""Clients for the budget part of bench/llm.sh (stdlib only, loopback only).

    python3 bench/llm_budget.py worst URL KEY MODEL
        Sends one chat completion with a key whose spend cap is a millionth of a dollar and
        prints the request's worst case in micro-dollars, read from the gateway's own refusal
        ("this request may use up to $X, more than the whole budget ..."), so the cap of the
        accuracy run is sized by the gateway's reckoning, not a copy of it.

    python3 bench/llm_budget.py overload URL,URL KEY MODEL COUNT WAVES
        Up to WAVES waves, one after the other: COUNT requests at once (one thread and one
        connection each, released together, alternating between the URLs). Stops after a wave
        in which nothing was served. Prints one JSON object: per wave served (200), refused
        (429 budget_exhausted) and other answers, and the totals.

    python3 bench/llm_budget.py report WORK ROUNDS DURATION CORES N WORST CAP DELAY_MS
        Prints the llm-budgets block of BENCHMARKS.md from what bench/llm.sh left in WORK, and
        exits 1 (after printing) when a check fails: a budgeted server whose store recorded
        fewer requests than wrk was served or no spend, a first wave that did not serve exactly
        N, any answer but 200 or 429 budget_exhausted, or a recorded spend not within one
        request below the cap.

The request is the one bench/llm.lua sends (max_tokens 16).
"""

from __future__ import annotations

import datetime
import http.client
import json
import pathlib
import re
import statistics
import sys
import threading
from urllib.parse import urlparse

TIMEOUT_S = 30


def body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello there"}],
                       "max_tokens": 16}, separators=(",", ":")).encode()


def post(url: str, key: str, model: str) -> tuple[int, str]:
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        connection.request("POST", parts.path, body=body(model),
                           headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        return response.status, response.read(65536).decode("utf-8", "replace")
    finally:
        connection.close()


def worst(url: str, key: str, model: str) -> None:
    status, text = post(url, key, model)
    found = re.search(r"may use up to \$([0-9.]+)", text)
    if status != 400 or not found:
        sys.exit(f"expected a 400 naming the worst case, got {status}: {text[:300]}")
    whole, _, fraction = found.group(1).partition(".")
    print(int(whole) * 1_000_000 + int((fraction + "000000")[:6]))


def wave(urls: list[str], key: str, model: str, count: int) -> dict:
    results: list[tuple[int, str] | None] = [None] * count
    start = threading.Barrier(count)

    def one(index: int) -> None:
        try:
            start.wait(timeout=TIMEOUT_S)
            results[index] = post(urls[index % len(urls)], key, model)
        except Exception as error:  # noqa: BLE001 - counted as "other", with its text
            results[index] = (0, repr(error))

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 2)
    counts = {"served": 0, "refused": 0, "other": 0}
    others: list[str] = []
    for result in results:
        status, text = result if result else (0, "no answer")
        if status == 200:
            counts["served"] += 1
        elif status == 429 and "budget_exhausted" in text:
            counts["refused"] += 1
        else:
            counts["other"] += 1
            others.append(f"{status}: {text[:200]}")
    counts["other_examples"] = sorted(set(others))[:3]
    return counts


def overload(urls: list[str], key: str, model: str, count: int, waves: int) -> None:
    done = []
    for _ in range(waves):
        done.append(wave(urls, key, model, count))
        if done[-1]["served"] == 0:
            break
    total = {field: sum(w[field] for w in done) for field in ("served", "refused", "other")}
    print(json.dumps({"waves": done, "total": total}))


def total(rows: list[dict], field: str) -> int:
    return sum(row[field] for row in rows)


def report(work: pathlib.Path, rounds: str, duration: str, cores: str, n: int, worst: int, cap: int,
           delay: str) -> None:
    runs: dict[str, dict] = {}
    for line in (work / "budgets.tsv").read_text().splitlines():
        setup, _, p50, p99, rps, count = line.split("\t")
        run = runs.setdefault(setup, {"p50": [], "p99": [], "rps": [], "count": 0})
        run["p50"].append(float(p50))
        run["p99"].append(float(p99))
        run["rps"].append(float(rps))
        run["count"] += int(count)
    med = {setup: {field: statistics.median(run[field]) for field in ("p50", "p99", "rps")}
           for setup, run in runs.items()}
    usage = {setup: json.loads((work / f"b-{setup}.usage.json").read_text()) for setup in runs}
    failures = []
    for setup in ("memory", "redis"):
        recorded, spent = total(usage[setup], "requests"), total(usage[setup], "spend_micros")
        if recorded < runs[setup]["count"] or spent == 0:
            failures.append(f"budgets {setup}: the store recorded {recorded} requests and {spent} micro-dollars "
                            f"for {runs[setup]['count']} served")
    names = {"off": "no budget", "memory": "budgets in memory", "redis": "budgets in Redis"}
    print(f"Run on {datetime.date.today().isoformat()} (`bash bench/llm.sh`) on {cores} shared cores: wrk, "
          f"Portcullis, the upstream and Redis on the same two cores. {rounds} rounds taking the three "
          f"configurations in turn, wrk -t1 for {duration} each, medians over rounds. The model is priced "
          "(`price = { input = \"1\", output = \"2\" }`); the budgeted keys have `--tpm 1000000000 "
          "--token-quota 1000000000/day --spend 1000000usd/day`, never reached, so every request reserves and "
          "settles and none is refused (a non-2xx answer stops the script).")
    print()
    print("| budgets | req/s (8 conn) | ratio to off | p50 ms (1 conn) | p99 ms (1 conn) | p99 ratio to off "
          "| requests recorded in the store |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    off = med["off"]
    for setup in ("off", "memory", "redis"):
        m = med[setup]
        print(f"| {names[setup]} | {m['rps']:,.0f} | {m['rps'] / off['rps']:.2f} | {m['p50']:.3f} | "
              f"{m['p99']:.3f} | {m['p99'] / off['p99']:.2f} | "
              f"{total(usage[setup], 'requests'):,} of {runs[setup]['count']:,} served |")
    cost = 1 - med["redis"]["rps"] / off["rps"]
    memory_cost = 1 - med["memory"]["rps"] / off["rps"]
    print()
    print(f"Redis budgets cost **{cost:.0%} of throughput** (goal: under 20%: "
          f"{'met' if cost < 0.20 else '**not met**'}); budgets in memory {memory_cost:.0%}. p99 on one "
          f"connection: {off['p99']:.3f} ms off, {med['memory']['p99']:.3f} ms in memory, "
          f"{med['redis']['p99']:.3f} ms in Redis.")

    over = json.loads((work / "overload.json").read_text())
    cap_usage = json.loads((work / "cap.usage.json").read_text())
    spent, recorded = total(cap_usage, "spend_micros"), total(cap_usage, "requests")
    everything, first = over["total"], over["waves"][0]
    within = 0 <= cap - spent < worst
    print()
    print(f"Cap accuracy: two `portcullis serve` nodes sharing Redis and one PostgreSQL store, a key whose spend "
          f"cap (${cap / 1e6:.6f}/day) holds exactly {n} worst-case requests (${worst / 1e6:.6f} each, as the "
          f"gateway reckons it: the prompt's estimated tokens plus max_tokens 16, priced), the upstream answering "
          f"after {delay} ms so that a wave's requests are in flight together. Waves of {10 * n} requests at "
          "once, split over both nodes, until a wave is wholly refused:")
    print()
    print("| wave | served | refused (429 budget_exhausted) | other |")
    print("|---|---:|---:|---:|")
    for index, one in enumerate(over["waves"], 1):
        print(f"| {index} | {one['served']} | {one['refused']} | {one['other']} |")
    print(f"| all | {everything['served']} | {everything['refused']} | {everything['other']} |")
    print()
    print(f"First wave (a 10x overload): **{first['served']} served of the {n} that fit**. Each answer is "
          "settled to its real usage, smaller than its worst case, so later waves use what was given back. "
          f"Spend the store recorded (`keys usage`): **${spent / 1e6:.6f}** over {recorded} requests against the "
          f"cap of ${cap / 1e6:.6f}: {cap - spent} micro-dollars left, less than one worst-case request "
          f"({worst}), " + ("never over the cap" if within else "**NOT within one request of the cap**")
          + " (goal: within one request).")
    if recorded != everything["served"]:
        failures.append(f"cap run: {everything['served']} served but the store recorded {recorded}")
    if first["served"] != n or everything["other"] or not within:
        failures.append(f"cap run: the first wave served {first['served']} (expected {n}), "
                        f"{everything['other']} other answers {[one['other_examples'] for one in over['waves']]}, "
                        f"spend {spent} against the cap {cap}")
    print()
    print(redaction_line(work / "redact.txt"))
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)


def redaction_line(path: pathlib.Path) -> str:
    """The criterion medians of `cargo bench -p gateway --bench redact`, as one sentence."""
    import re

    text = path.read_text() if path.exists() else ""
    medians = {}
    for name, value, unit in re.findall(r"(\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", text):
        medians[name] = float(value) * {"ns": 0.001, "µs": 1.0, "us": 1.0, "ms": 1000.0}.get(unit, 1.0)
    with_data = medians.get("redact_chat_1kb/with_personal_data")
    without = medians.get("redact_chat_1kb/without_personal_data")
    estimate = medians.get("tokens_1kb/prompt_tokens_estimate")
    if with_data is None or without is None:
        return "Prompt redaction cost per 1 KB of prompt: *not measured* (`cargo bench -p gateway --bench redact` failed)."
    return (f"Prompt redaction cost per 1 KB of chat prompt (`cargo bench -p gateway --bench redact`, criterion "
            f"medians, same machine): **{with_data:.0f} µs** with personal data in it (found, replaced, "
            f"restorable), **{without:.0f} µs** without; counting a 1 KB prompt's tokens for the reservation: "
            f"{estimate:.1f} µs.")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "worst":
        worst(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 7 and sys.argv[1] == "overload":
        overload(sys.argv[2].split(","), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) == 10 and sys.argv[1] == "report":
        work, rounds, duration, cores, n, most, cap, delay = sys.argv[2:]
        report(pathlib.Path(work), rounds, duration, cores, int(n), int(most), int(cap), delay)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
