#!/usr/bin/env python3
"""Precision and recall per kind on the labelled evaluation set (bench/pii_gen.py).

Runs `portcullis data scan --format findings` on the set's CSV and JSON Lines files and, with
--presidio, Presidio's analyzer (pattern recognizers, a blank spaCy pipeline: no NER model can
be downloaded here) on the same cells, and scores both against the labels. A finding counts as
a true positive when record, column and kind match a label and the spans overlap.

    python3 bench/pii_eval.py --binary target/release/portcullis --set target/pii-eval [--presidio]
"""

import argparse
import collections
import json
import os
import subprocess
import time

# Presidio's entity names for our kinds.
PRESIDIO_KINDS = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "payment_card", "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address", "US_SSN": "us_ssn", "DATE_TIME": "date_of_birth", "PERSON": "person_name",
    "UK_NHS": "uk_nhs", "CRYPTO": "crypto_wallet", "MAC_ADDRESS": "mac_address",
}


def load_labels(path):
    labels = collections.defaultdict(list)
    for line in open(path):
        label = json.loads(line)
        labels[(label["record"], label["column"])].append((label["kind"], label["start"], label["end"]))
    return labels


def score(findings, labels, kinds):
    """findings: {(record, column): [(kind, start, end)]} → {kind: (tp, fp, fn)}."""
    counts = {kind: [0, 0, 0] for kind in kinds}
    for key in set(findings) | set(labels):
        truth = list(labels.get(key, []))
        for kind, start, end in findings.get(key, []):
            match = next((t for t in truth if t[0] == kind and start < t[2] and t[1] < end), None)
            counts.setdefault(kind, [0, 0, 0])
            if match:
                counts[kind][0] += 1
                truth.remove(match)
            else:
                counts[kind][1] += 1
        for kind, _, _ in truth:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
    return counts


def portcullis_findings(binary, path):
    started = time.perf_counter()
    output = subprocess.run([binary, "data", "scan", path, "--format", "findings"], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if output.returncode not in (0, 1):
        raise SystemExit(output.stderr.decode())
    findings = collections.defaultdict(list)
    for line in output.stdout.decode().splitlines():
        finding = json.loads(line)["finding"]
        findings[(finding["record"], finding["column"])].append((finding["kind"], finding["start"], finding["end"]))
    return findings, elapsed


def presidio_findings(path, limit):
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    import spacy

    class BlankEngine(SpacyNlpEngine):
        """spaCy's blank English pipeline: tokens and lemmas, no model download."""
        def load(self):
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    import csv
    findings = collections.defaultdict(list)
    started = time.perf_counter()
    cells = 0
    with open(path, newline="") as handle:
        for record, row in enumerate(csv.DictReader(handle), start=1):
            if limit and record > limit:
                break
            for column, value in row.items():
                cells += 1
                for result in analyzer.analyze(text=value, language="en", context=[column]):
                    kind = PRESIDIO_KINDS.get(result.entity_type, result.entity_type.lower())
                    findings[(record, column)].append((kind, result.start, result.end))
    return findings, time.perf_counter() - started, cells


def table(title, counts):
    lines = [f"{title}", "| kind | precision | recall | TP | FP | FN |", "|---|---:|---:|---:|---:|---:|"]
    for kind in sorted(counts):
        tp, fp, fn = counts[kind]
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        lines.append(f"| {kind} | {precision:.3f} | {recall:.3f} | {tp} | {fp} | {fn} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/portcullis")
    parser.add_argument("--set", default="target/pii-eval")
    parser.add_argument("--presidio", action="store_true")
    parser.add_argument("--presidio-rows", type=int, default=2000, help="rows Presidio scores (it is slow)")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args()
    labels = load_labels(os.path.join(args.set, "labels.jsonl"))
    kinds = sorted({kind for spans in labels.values() for kind, _, _ in spans})
    results = {}
    for name in ["eval.csv", "eval.jsonl", "eval.parquet"]:
        if not os.path.exists(os.path.join(args.set, name)):
            continue
        findings, elapsed = portcullis_findings(args.binary, os.path.join(args.set, name))
        counts = score(findings, labels, kinds)
        results[f"portcullis {name}"] = counts
        print(table(f"portcullis on {name} ({elapsed:.2f} s)", counts))
        print()
    if args.presidio:
        findings, elapsed, cells = presidio_findings(os.path.join(args.set, "eval.csv"), args.presidio_rows)
        subset = {key: value for key, value in labels.items() if key[0] <= args.presidio_rows}
        counts = score(findings, subset, kinds)
        results["presidio eval.csv"] = counts
        print(table(f"presidio on the first {args.presidio_rows} rows of eval.csv ({cells} cells, {elapsed:.1f} s)", counts))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
