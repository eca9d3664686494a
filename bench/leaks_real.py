#!/usr/bin/env python3
"""`leaks scan` on real app binaries the project did not build (../shared/eval/apps/).

Each app listed in the set's `truth.json` is scanned alone with
`portcullis leaks scan --format json --show-secrets` (the values are needed to score; they are
never printed: findings are shown by rule, place and length, truth secrets by their id).

Scoring, per app:

- a truth secret is found when some finding's secret equals it, or one contains the other and
  the shorter is at least eight characters and half of the longer (a password found inside a URL,
  a pair reported as one finding);
- a finding is a false positive when it matches no truth secret and no ambiguous value of the
  same app (ambiguous values count neither way); public identifiers are findings like any other;
- apps with no truth secret are negative controls: any false positive there is listed apart.

Recall is printed over all secrets and over the secrets whose name is in the binary
(`named_in_binary`), which name-context rules can be expected to find.

    python3 bench/leaks_real.py [--binary target/debug/portcullis] [--apps ../shared/eval/apps] [--json out.json]
        [--write BENCHMARKS.md --command "bash bench/leaks.sh"]

With `--write`, the table (per app and in all, ids and counts only) goes between the
`<!-- leaks-real:begin -->` and `<!-- leaks-real:end -->` markers of that file (the section is
appended when missing).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time


def matches(found, value):
    """Whether a reported secret stands for a truth value."""
    if found == value:
        return True
    shorter, longer = sorted((found, value), key=len)
    return len(shorter) >= 8 and 2 * len(shorter) >= len(longer) and shorter in longer


def scan(binary, path):
    result = subprocess.run(
        [binary, "leaks", "scan", "--format", "json", "--show-secrets", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise SystemExit(f"leaks scan {path} exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(target, "debug", "portcullis"))
    parser.add_argument("--apps", default=os.path.join(root, "..", "shared", "eval", "apps"))
    parser.add_argument("--json", help="also write the figures (ids only, no values) here")
    parser.add_argument("--write", help="write the table between the leaks-real markers of this file")
    parser.add_argument("--command", default="python3 bench/leaks_real.py", help="the command line shown")
    args = parser.parse_args()

    truth_path = os.path.join(args.apps, "truth.json")
    if not os.path.exists(truth_path):
        raise SystemExit(f"no {truth_path}: the shared app set is not here")
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)

    totals = {"secrets": 0, "found": 0, "named": 0, "named_found": 0, "findings": 0, "true": 0, "ambiguous": 0}
    negatives = []
    per_app = {}
    for app, entry in sorted(truth["apps"].items()):
        started = time.perf_counter()
        report = scan(args.binary, os.path.join(args.apps, entry["file"]))
        seconds = time.perf_counter() - started
        secrets = entry.get("secrets", [])
        ambiguous = [item["value"] for item in entry.get("ambiguous", [])]
        # Each distinct (rule, secret) once per app: the same value in seven ABIs is one finding.
        findings = {}
        for item in report["findings"]:
            findings.setdefault((item["rule"], item["secret"]), item)
        found_ids, missed_ids, false_positives = [], [], []
        for secret in secrets:
            hit = any(matches(value, secret["value"]) for _, value in findings)
            (found_ids if hit else missed_ids).append(secret["id"])
            totals["secrets"] += 1
            totals["found"] += hit
            if secret.get("named_in_binary"):
                totals["named"] += 1
                totals["named_found"] += hit
        for (rule, value), item in findings.items():
            totals["findings"] += 1
            if any(matches(value, secret["value"]) for secret in secrets):
                totals["true"] += 1
            elif any(matches(value, other) for other in ambiguous):
                totals["ambiguous"] += 1
            else:
                place = "!".join([entry["file"], *item.get("members", [])])
                within = f"#{item['within']}" if item.get("within") else ""
                shown = f"{rule} at {place}{within} ({len(value)} chars)"
                false_positives.append(shown)
                if not secrets:
                    negatives.append(f"{app}: {shown}")
        per_app[app] = {
            "found": found_ids,
            "missed": missed_ids,
            "false_positives": false_positives,
            "named": sum(bool(secret.get("named_in_binary")) for secret in secrets),
            "named_found": sum(
                bool(secret.get("named_in_binary")) and secret["id"] in found_ids for secret in secrets
            ),
            "seconds": seconds,
            "bytes": os.path.getsize(os.path.join(args.apps, entry["file"])),
        }
        control = " (negative control)" if not secrets else ""
        print(f"{app}{control}: found {len(found_ids)}/{len(secrets)}")
        for secret_id in found_ids:
            print(f"  found   {secret_id}")
        for secret_id in missed_ids:
            print(f"  missed  {secret_id}")
        for shown in false_positives:
            print(f"  false   {shown}")

    def ratio(part, whole):
        return part / whole if whole else float("nan")

    judged = totals["findings"] - totals["ambiguous"]
    figures = {
        "recall": ratio(totals["found"], totals["secrets"]),
        "recall_named": ratio(totals["named_found"], totals["named"]),
        "precision": ratio(totals["true"], judged),
        "negative_control_findings": len(negatives),
        **totals,
    }
    print()
    print(
        f"recall {figures['recall']:.2f} ({totals['found']}/{totals['secrets']}), "
        f"named {figures['recall_named']:.2f} ({totals['named_found']}/{totals['named']}); "
        f"precision {figures['precision']:.2f} ({totals['true']}/{judged}, "
        f"{totals['ambiguous']} ambiguous not counted); "
        f"negative-control findings {len(negatives)}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"figures": figures, "apps": per_app}, handle, indent=1)
    if args.write:
        write_table(args, truth, figures, per_app, judged)
    return 0


def write_table(args, truth, figures, per_app, judged):
    """The real-app table (ids and counts only, never a value) between the leaks-real markers."""

    def fraction(part, whole):
        return f"{part / whole:.2f} ({part}/{whole})" if whole else "-"

    controls = sum(not entry.get("secrets") for entry in truth["apps"].values())
    lines = [
        f"Run on {datetime.date.today()} (`{args.command}`, step 4: `bench/leaks_real.py`) over the "
        f"{len(truth['apps'])} shared real APK/IPA files (`../shared/eval/apps/`, ground truth in its `truth.json`: "
        f"{figures['secrets']} secrets, {figures['named']} of them named in the binary; {controls} negative controls). "
        "A secret is found when a finding's value equals it or holds it (or is held by it, with at least eight characters "
        "and half of the longer); precision counts each distinct (rule, value) of an app once, values the truth marks "
        "ambiguous counted neither way. Time is the whole `leaks scan` process on one app.",
        "",
        "| app | size | time | found | named found | false positives | missed (truth ids) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for app, item in per_app.items():
        secrets = len(item["found"]) + len(item["missed"])
        found = f"{len(item['found'])}/{secrets}" if secrets else "negative control"
        named = f"{item['named_found']}/{item['named']}" if item["named"] else "-"
        missed = ", ".join(f"`{secret_id}`" for secret_id in item["missed"]) or "-"
        lines.append(
            f"| {app} | {item['bytes'] / 1e6:.1f} MB | {item['seconds']:.2f} s | {found} | {named} "
            f"| {len(item['false_positives'])} | {missed} |"
        )
    lines += [
        "",
        f"In all: recall of the named secrets **{fraction(figures['named_found'], figures['named'])}**, of all secrets "
        f"{fraction(figures['found'], figures['secrets'])}; precision **{fraction(figures['true'], judged)}** "
        f"({figures['ambiguous']} ambiguous not counted); findings in the negative controls: "
        f"**{figures['negative_control_findings']}**.",
    ]
    block = "\n".join(lines)
    text = open(args.write, encoding="utf-8").read()
    section = f"<!-- leaks-real:begin -->\n{block}\n<!-- leaks-real:end -->"
    if "<!-- leaks-real:begin -->" in text:
        text = re.sub(r"<!-- leaks-real:begin -->.*?<!-- leaks-real:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n### leaks scan on real apps written by others\n\n" + section + "\n"
    open(args.write, "w", encoding="utf-8").write(text)


if __name__ == "__main__":
    sys.exit(main())
