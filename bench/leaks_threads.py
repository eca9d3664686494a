#!/usr/bin/env python3
"""`portcullis leaks scan` on one and more threads: throughput and the ratio to one thread.

Run by bench/leaks.sh after it has written the seeded corpus and the source tree; the shared
real apps are added when they are here. Each input is scanned with `--threads N` for every N,
`--runs` times in rounds (every thread count once per round, so a neighbour's load falls on all
of them alike), timed from outside around the whole process; medians are reported, with the
ratio of the one-thread median to each. Every run's JSON report (with secrets shown, so values
count too) must be byte for byte the one-thread report: the script fails otherwise.

Writes its table between the `<!-- leaks-threads:begin -->` and `<!-- leaks-threads:end -->`
markers of BENCHMARKS.md (the section is appended when missing).

    python3 bench/leaks_threads.py --binary target/release/portcullis \\
        --input corpus=target/leaks-bench/corpus --input apps=../shared/eval/apps [--threads 1 2] [--runs 5]
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time


def directory_bytes(root):
    """Files and bytes of the regular files under `root` (symbolic links not followed)."""
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files += 1
                size += os.path.getsize(path)
    return files, size


def scan(binary, root, threads):
    """Seconds, and the JSON report, of one run."""
    command = [binary, "leaks", "scan", "--format", "json", "--show-secrets", "--threads", str(threads), root]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.decode(errors='replace')}")
    return seconds, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/portcullis")
    parser.add_argument("--input", action="append", required=True, help="name=directory")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--command", default="python3 bench/leaks_threads.py")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    args = parser.parse_args()
    inputs = [item.split("=", 1) for item in args.input]
    counts = sorted(set(args.threads) | {1})

    times = {(name, threads): [] for name, _ in inputs for threads in counts}
    reference = {}
    for round_ in range(args.runs):
        for name, root in inputs:
            for threads in counts:
                seconds, report = scan(args.binary, root, threads)
                times[(name, threads)].append(seconds)
                if reference.setdefault(name, report) != report:
                    raise SystemExit(f"{name}: the report on {threads} threads differs from the one-thread report")
                print(f"round {round_ + 1}/{args.runs}: {name} on {threads} thread(s): {seconds:.3f} s", file=sys.stderr)

    header = "| input | files, MB | " + " | ".join(f"{threads} thread(s)" for threads in counts)
    header += " | " + " | ".join(f"1 ÷ {threads}" for threads in counts if threads != 1) + " |"
    rule = "|---|---:|" + "---:|" * (len(counts) + len(counts) - 1)
    rows = []
    for name, root in inputs:
        files, size = directory_bytes(root)
        mb = size / 1e6
        medians = {threads: statistics.median(times[(name, threads)]) for threads in counts}
        cells = [f"{mb / medians[threads]:.1f} MB/s ({medians[threads]:.3f} s)" for threads in counts]
        ratios = [f"{medians[1] / medians[threads]:.2f}x" for threads in counts if threads != 1]
        rows.append(f"| {name} | {files:,}, {mb:.1f} | " + " | ".join(cells + ratios) + " |")

    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    block = "\n".join(
        [
            f"Run on {datetime.date.today().isoformat()} (`{args.command}`); {cores} cores shared with other work "
            f"(load average {load:.1f} at the end), wall time of the whole process including start-up, "
            f"medians of {args.runs} runs taken in rounds (every thread count once per round). "
            "`--threads N` is N scanning threads beside the one that walks and decompresses; "
            "every report was byte for byte the one-thread report.",
            "",
            header,
            rule,
            *rows,
        ]
    )
    path = args.benchmarks
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    section = f"<!-- leaks-threads:begin -->\n{block}\n<!-- leaks-threads:end -->"
    if "<!-- leaks-threads:begin -->" in text:
        text = re.sub(r"<!-- leaks-threads:begin -->.*?<!-- leaks-threads:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n### leaks scan on one and two threads (`bash bench/leaks.sh`)\n\n" + section + "\n"
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    print(block)


if __name__ == "__main__":
    main()
