#!/usr/bin/env python3
"""`portcullis data` side by side with Presidio: throughput, memory, precision and recall.

Run by bench/pii.sh (which builds the release binary and the virtualenv). Writes the table
between the `<!-- pii:begin -->` and `<!-- pii:end -->` markers of BENCHMARKS.md.
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import pii_eval  # noqa: E402


def timed(command, runs):
    """Median wall time and the largest peak RSS (KiB) over `runs` runs."""
    times, peaks = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M"] + command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if result.returncode not in (0, 1):
            raise SystemExit(f"{command} failed: {result.stderr.decode()[-2000:]}")
        peaks.append(int(result.stderr.decode().strip().splitlines()[-1]))
    return statistics.median(times), max(peaks)


def big_file(source, target, size):
    if os.path.exists(target) and os.path.getsize(target) >= size:
        return
    header, body = open(source).read().split("\n", 1)
    with open(target, "w") as handle:
        handle.write(header + "\n")
        written = 0
        while written < size:
            handle.write(body)
            written += len(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/portcullis")
    parser.add_argument("--set", default="target/pii-eval")
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--presidio-rows", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", default="BENCHMARKS.md")
    args = parser.parse_args()
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    os.environ.update(env)
    small = os.path.join(args.set, "eval.csv")
    big = os.path.join(args.set, "big.csv")
    big_file(small, big, args.big_mb << 20)
    small_mb = os.path.getsize(small) / 1e6
    big_mb = os.path.getsize(big) / 1e6

    scan_small, _ = timed([args.binary, "data", "scan", small, "--format", "json"], args.runs)
    scan_big, scan_rss = timed([args.binary, "data", "scan", big, "--format", "json"], 1)
    policy = os.path.join(args.set, "policy.toml")
    with open(policy, "w") as handle:
        handle.write('[keys]\nmain = { env = "BENCH_DATA_KEY" }\n[kinds]\nemail = { action = "pseudonymise", key = "main" }\n'
                     'person_name = { action = "pseudonymise", key = "main" }\nphone = { action = "mask", keep = 4 }\n')
    os.environ["BENCH_DATA_KEY"] = "ab" * 32
    out_small = os.path.join(args.set, "protected.csv")
    protect_small, _ = timed([args.binary, "data", "protect", small, "--policy", policy, "--out", out_small], args.runs)
    out_big = os.path.join(args.set, "protected-big.csv")
    protect_big, protect_rss = timed([args.binary, "data", "protect", big, "--policy", policy, "--out", out_big], 1)
    os.remove(out_big)

    labels = pii_eval.load_labels(os.path.join(args.set, "labels.jsonl"))
    kinds = sorted({kind for spans in labels.values() for kind, _, _ in spans})
    ours, _ = pii_eval.portcullis_findings(args.binary, small)
    ours_scores = pii_eval.score(ours, labels, kinds)
    presidio, presidio_seconds, cells = pii_eval.presidio_findings(small, args.presidio_rows)
    subset = {key: value for key, value in labels.items() if key[0] <= args.presidio_rows}
    presidio_scores = pii_eval.score(presidio, subset, kinds)
    presidio_bytes = sum(len(line) for _, line in zip(range(args.presidio_rows + 1), open(small)))
    presidio_rate = presidio_bytes / 1e6 / presidio_seconds

    def pr(counts, kind):
        tp, fp, fn = counts.get(kind, [0, 0, 0])
        precision = f"{tp / (tp + fp):.3f}" if tp + fp else "-"
        recall = f"{tp / (tp + fn):.3f}" if tp + fn else "-"
        return precision, recall

    lines = [
        f"Run on {datetime.date.today()} (`bash bench/pii.sh`); one core, medians of {args.runs} runs for the small file.",
        f"Files from `bench/pii_gen.py` (seed 7): a {small_mb:.1f} MB CSV of 20,000 rows and a {big_mb:.0f} MB one (its rows repeated).",
        "",
        "| | Portcullis | Presidio 2.2 (pattern recognizers, blank spaCy) | ratio |",
        "|---|---:|---:|---:|",
        f"| `data scan`, {small_mb:.1f} MB CSV | {small_mb / scan_small:.1f} MB/s ({scan_small:.2f} s) | "
        f"{presidio_rate:.3f} MB/s ({args.presidio_rows} rows in {presidio_seconds:.1f} s) | {small_mb / scan_small / presidio_rate:,.0f}x |",
        f"| `data scan`, {big_mb:.0f} MB CSV | {big_mb / scan_big:.1f} MB/s, peak RSS {scan_rss / 1024:.0f} MiB | "
        f"(not run: {big_mb / presidio_rate / 3600:.0f} h at its rate) | {big_mb / scan_big / presidio_rate:,.0f}x |",
        f"| `data protect`, {small_mb:.1f} MB CSV | {small_mb / protect_small:.1f} MB/s | | |",
        f"| `data protect`, {big_mb:.0f} MB CSV | {big_mb / protect_big:.1f} MB/s, peak RSS {protect_rss / 1024:.0f} MiB | | |",
        "",
        f"Goals: `scan` 100 MB/s on one core: **{'met' if big_mb / scan_big >= 100 else 'not met'}** "
        f"({big_mb / scan_big:.0f} MB/s); 1000x Presidio: **{'met' if big_mb / scan_big / presidio_rate >= 1000 else 'not met'}** "
        f"on the large file ({small_mb / scan_small / presidio_rate:,.0f}x on the small one, where start-up, loading the "
        "numbering plans and compiling the rules, is most of the time); `protect` 50 MB/s: "
        f"**{'met' if big_mb / protect_big >= 50 else 'not met'}** ({big_mb / protect_big:.0f} MB/s, which includes "
        f"hashing input and output for the manifest); memory under 256 MB on the large file: "
        f"**{'met' if max(scan_rss, protect_rss) < 256 * 1024 else 'not met'}**.",
        "",
        "Precision and recall per kind on the labelled set (Portcullis: all 20,000 rows; Presidio: the first "
        f"{args.presidio_rows}, as it is slow):",
        "",
        "| kind | Portcullis precision | Portcullis recall | Presidio precision | Presidio recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        (p1, r1), (p2, r2) = pr(ours_scores, kind), pr(presidio_scores, kind)
        lines.append(f"| {kind} | {p1} | {r1} | {p2} | {r2} |")
    extra = sorted(set(presidio_scores) - set(kinds))
    if extra:
        false = sum(presidio_scores[kind][1] for kind in extra)
        lines.append("")
        lines.append(f"Presidio also reported {false} findings of kinds not in the set ({', '.join(extra)}): all false positives.")
    block = "\n".join(lines)
    print(block)
    text = open(args.write).read()
    section = f"<!-- pii:begin -->\n{block}\n<!-- pii:end -->"
    if "<!-- pii:begin -->" in text:
        text = re.sub(r"<!-- pii:begin -->.*?<!-- pii:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Personal data (`bash bench/pii.sh`)\n\n" + section + "\n"
    open(args.write, "w").write(text)


if __name__ == "__main__":
    main()
