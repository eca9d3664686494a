#!/usr/bin/env python3
"""`data scan` and `data protect` on data the project did not write (../shared/eval/pii/).

1. Free text: Presidio's labelled sentences (synth_dataset_v2.json) as JSON Lines, one field
   `text` per sentence; a finding counts when it overlaps a gold span of the same kind
   (character spans; our byte spans are converted). Kinds without an equivalent are left out.
2. Columns: FakeNameGenerator.com_3000.csv protected with the policy docs/data.md shows first
   (every kind pseudonymised, credentials dropped); then every original value of a column the
   scan classified is looked for in the output cell of the same row and column, independently of
   the tool's own report. Runs twice to check pseudonyms are stable.
3. No personal data: adult.raw.csv, Occupancy_Estimation.csv and CityTable.csv; every finding of
   a personal kind is listed (these sets hold none, but for quasi-identifiers in adult).

    python3 bench/pii_world.py --binary target/release/portcullis [--eval ../shared/eval/pii] [--json out.json]
"""

import argparse
import collections
import csv
import json
import os
import subprocess
import sys
import tempfile

# Presidio's labels → our kinds. DATE_TIME is any date or time (not a birth date), LOCATION and
# addresses are not a kind of ours: they are left out and said so.
KINDS = {
    "PERSON": "person_name",
    "PHONE_NUMBER": "phone",
    "EMAIL_ADDRESS": "email",
    "CREDIT_CARD": "payment_card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address",
    "US_SSN": "us_ssn",
}


def scan_findings(binary, path):
    output = subprocess.run([binary, "data", "scan", path, "--format", "findings"], capture_output=True, check=False)
    if output.returncode not in (0, 1):
        raise SystemExit(f"scan of {path} failed: {output.stderr.decode()}")
    return [json.loads(line)["finding"] for line in output.stdout.decode().splitlines() if line.strip()]


def char_span(text, start, end):
    """Byte offsets in the UTF-8 text → character offsets."""
    raw = text.encode("utf-8")
    return len(raw[:start].decode("utf-8", "replace")), len(raw[:end].decode("utf-8", "replace"))


def free_text(binary, eval_dir, work):
    records = json.load(open(os.path.join(eval_dir, "synth_dataset_v2.json")))
    path = os.path.join(work, "synth.jsonl")
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps({"text": record["full_text"]}) + "\n")
    found = collections.defaultdict(list)
    for finding in scan_findings(binary, path):
        index = finding["record"] - 1
        text = records[index]["full_text"]
        start, end = char_span(text, finding["start"], finding["end"])
        found[index].append((finding["kind"], start, end))
    counts = {kind: [0, 0, 0] for kind in KINDS.values()}
    misses = collections.defaultdict(list)
    false = collections.defaultdict(list)
    for index, record in enumerate(records):
        truth = [(KINDS[s["entity_type"]], s["start_position"], s["end_position"]) for s in record["spans"]
                 if s["entity_type"] in KINDS]
        for kind, start, end in found.get(index, []):
            if kind not in counts:
                continue
            match = next((t for t in truth if t[0] == kind and start < t[2] and t[1] < end), None)
            if match:
                counts[kind][0] += 1
                truth.remove(match)
            else:
                counts[kind][1] += 1
                false[kind].append(record["full_text"][start:end])
        for kind, start, end in truth:
            counts[kind][2] += 1
            misses[kind].append(record["full_text"][start:end])
    return counts, misses, false


def protect_check(binary, eval_dir, work, policy):
    source = os.path.join(eval_dir, "FakeNameGenerator.com_3000.csv")
    policy_path = os.path.join(work, "policy.toml")
    with open(policy_path, "w") as handle:
        handle.write(policy)
    outputs = []
    for run in (1, 2):
        out = os.path.join(work, f"protected-{run}.csv")
        result = subprocess.run([binary, "data", "protect", source, "--policy", policy_path, "--out", out],
                                capture_output=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"protect failed ({result.returncode}): {result.stderr.decode()}")
        outputs.append(out)
    manifest = json.load(open(outputs[0] + ".manifest.json"))

    def rows(path):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))

    original, protected, again = rows(source), rows(outputs[0]), rows(outputs[1])
    # The columns the scan says hold personal data (the tool's classification), each checked
    # against the output independently of what the manifest says was done.
    report = subprocess.run([binary, "data", "scan", source, "--format", "json"], capture_output=True, check=False)
    scanned = json.loads(report.stdout.decode())
    columns = sorted({column["column"] for file in scanned.get("files", []) for column in file.get("columns", [])
                      if column.get("classified") or column.get("header_kind")})
    left = {}
    for column in columns:
        kept = 0
        for before, after in zip(original, protected):
            value = (before.get(column) or "").strip()
            if value and column in after and value in (after.get(column) or ""):
                kept += 1
        left[column] = kept
    stable = protected == again
    return {
        "rows_in": len(original),
        "rows_out": len(protected),
        "protected_columns": columns,
        "originals_left": left,
        "stable": stable,
        "manifest_columns": sorted(manifest.get("columns", {}) if isinstance(manifest.get("columns"), dict) else []),
    }


def negatives(binary, eval_dir):
    result = {}
    for name in ["adult.raw.csv", "Occupancy_Estimation.csv", "CityTable.csv"]:
        findings = scan_findings(binary, os.path.join(eval_dir, name))
        result[name] = collections.Counter(f"{f['column']}:{f['kind']}" for f in findings)
    return result


# The policy docs/data.md shows first ([keys] and [kinds]), which the issue measured against.
POLICY = """\
[keys]
main = { env = "PORTCULLIS_DATA_KEY" }

[kinds]
email = { action = "pseudonymise", key = "main" }
phone = { action = "mask", keep = 4 }
person_name = { action = "pseudonymise", key = "main" }
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/portcullis")
    parser.add_argument("--eval", default=os.path.join(os.path.dirname(__file__), "../../shared/eval/pii"))
    parser.add_argument("--policy", help="a policy file for the protect check (default: every kind pseudonymised)")
    parser.add_argument("--examples", type=int, default=8, help="misses and false findings shown per kind")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    policy = open(args.policy).read() if args.policy else POLICY
    os.environ.setdefault("PORTCULLIS_DATA_KEY", "00" * 32)
    with tempfile.TemporaryDirectory() as work:
        counts, misses, false = free_text(args.binary, args.eval, work)
        print("## Free text (synth_dataset_v2.json, 1,500 sentences)\n")
        print("| kind | precision | recall | TP | FP | FN |\n|---|---:|---:|---:|---:|---:|")
        for kind, (tp, fp, fn) in sorted(counts.items()):
            precision = tp / (tp + fp) if tp + fp else float("nan")
            recall = tp / (tp + fn) if tp + fn else float("nan")
            print(f"| {kind} | {precision:.3f} | {recall:.3f} | {tp} | {fp} | {fn} |")
        for kind in sorted(counts):
            if misses[kind][: args.examples]:
                print(f"\nmissed {kind}: {misses[kind][: args.examples]}", file=sys.stderr)
            if false[kind][: args.examples]:
                print(f"false {kind}: {false[kind][: args.examples]}", file=sys.stderr)
        try:
            protected = protect_check(args.binary, args.eval, work, policy)
        except SystemExit as error:
            protected = {"error": str(error)}
        print("\n## Protect (FakeNameGenerator.com_3000.csv)\n")
        print(json.dumps(protected, indent=1))
        clean = negatives(args.binary, args.eval)
        print("\n## Sets without personal data\n")
        for name, found in clean.items():
            print(f"- {name}: {dict(found) if found else 'nothing found'}")
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"free_text": counts, "protect": protected, "negatives": {k: dict(v) for k, v in clean.items()}},
                          handle, indent=1)


if __name__ == "__main__":
    main()
