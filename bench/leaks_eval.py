#!/usr/bin/env python3
"""`portcullis leaks scan` side by side with detect-secrets and secretlint.

Run by bench/leaks.sh (which builds the release binary, writes the seeded corpus and its
`truth.json`, installs the peers and copies the source tree). Each tool scans the corpus and the
tree `--runs` times, in rounds (every tool once per round), timed from outside with
`time.perf_counter` around the whole process (start-up included); medians are reported.
Throughput is the bytes of the files in the scanned directory over the median time.

Scoring against `truth.json` (file names relative to the corpus directory):

- a planted key is found by a tool when the tool reports, in the same top-level file, a secret
  equal to it (Portcullis: `secret`; detect-secrets: `hashed_secret` is the SHA-1 of it, or of
  a prefix of it with the key on the reported line, as some of its plugins hash only a capture
  group; secretlint: the text its range covers contains the key or is contained in it, with at
  least 8 characters in common);
- precision counts each reported (file, secret) once; a finding is true when it is some planted
  key, anywhere in the corpus. A Portcullis finding marked `public` is true only when it is a
  planted public identifier;
- on the tree there is no truth: distinct (file, line, secret) reported are counted.

Writes the tables between the `<!-- leaks:begin -->` and `<!-- leaks:end -->` markers of
BENCHMARKS.md (the section is appended when missing). `--skip-portcullis` leaves Portcullis out,
to check the peers' parts without the binary.
"""

import argparse
import collections
import datetime
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time

Finding = collections.namedtuple("Finding", "file key public rule line")


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


def relative(path, root, cwd):
    """A reported path as a path relative to the scanned directory."""
    absolute = path if os.path.isabs(path) else os.path.join(cwd, path)
    return os.path.relpath(os.path.normpath(absolute), os.path.abspath(root)).replace(os.sep, "/")


def sha1(text):
    return hashlib.sha1(text.encode()).hexdigest()


def overlaps(text, secret):
    return min(len(text), len(secret)) >= 8 and (secret in text or text in secret)


class Tool:
    """A scanner: how to run it on a directory, how to read its report, how to match a key."""

    name = ""
    ok_codes = (0, 1)

    def command(self, root):
        raise NotImplementedError

    def cwd(self, root):
        return None

    def run(self, root):
        """(seconds, completed process) of one run."""
        started = time.perf_counter()
        result = subprocess.run(self.command(root), cwd=self.cwd(root), capture_output=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode not in self.ok_codes:
            raise SystemExit(
                f"{self.name} on {root} exited {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}"
            )
        return seconds, result

    def findings(self, root, result):
        raise NotImplementedError

    def index(self, secrets, root):
        """A function from a finding to the planted secrets it matches."""
        by_key = collections.defaultdict(list)
        for secret in secrets:
            by_key[self.planted_key(secret)].append(secret)
        return lambda finding: by_key.get(finding.key, [])

    def planted_key(self, secret):
        return secret


class Portcullis(Tool):
    name = "portcullis"

    def __init__(self, binary):
        self.binary = os.path.abspath(binary)

    def version(self):
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
            return out.strip().split()[-1] if out.strip() else "?"
        except OSError:
            return "?"

    def command(self, root):
        return [self.binary, "leaks", "scan", root, "--format", "json", "--show-secrets"]

    def findings(self, root, result):
        report = json.loads(result.stdout)
        # Kept for the corpus only: the files inside archives that Portcullis opened.
        if os.path.basename(os.path.normpath(root)) == "corpus":
            self.scanned = report.get("scanned", {})
            self.warnings = report.get("warnings", [])
        return [
            Finding(
                relative(item["file"], root, os.getcwd()),
                item["secret"],
                bool(item.get("public")),
                item.get("rule"),
                item.get("line"),
            )
            for item in report["findings"]
        ]


class DetectSecrets(Tool):
    name = "detect-secrets"
    ok_codes = (0,)

    def __init__(self, venv):
        self.executable = os.path.abspath(os.path.join(venv, "bin", "detect-secrets"))

    def version(self):
        return subprocess.run([self.executable, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    def command(self, root):
        # Run from inside the directory: given a path outside its working directory,
        # detect-secrets 1.5 silently scans nothing.
        return [self.executable, "scan", "--all-files", "."]

    def cwd(self, root):
        return root

    def findings(self, root, result):
        report = json.loads(result.stdout)
        return [
            Finding(
                relative(name, root, os.path.abspath(root)),
                item["hashed_secret"],
                False,
                item.get("type"),
                item.get("line_number"),
            )
            for name, items in report["results"].items()
            for item in items
        ]

    def planted_key(self, secret):
        return sha1(secret)

    def index(self, secrets, root):
        """`hashed_secret` is the SHA-1 of what the plugin's regex captured: the whole match for
        most plugins, but only a capture group for some (1.5.0's GitHub plugin hashes just
        `ghp`). A hash of a prefix of a planted key counts when the reported line holds the key."""
        exact, prefixes = collections.defaultdict(list), collections.defaultdict(set)
        for secret in secrets:
            exact[sha1(secret)].append(secret)
            for end in range(3, len(secret)):
                prefixes[sha1(secret[:end])].add(secret)
        lines = {}

        def line_text(finding):
            if finding.file not in lines:
                try:
                    with open(os.path.join(root, finding.file), encoding="utf-8", errors="replace") as handle:
                        lines[finding.file] = handle.read().split("\n")
                except OSError:
                    lines[finding.file] = []
            text = lines[finding.file]
            return text[finding.line - 1] if finding.line and finding.line <= len(text) else ""

        def lookup(finding):
            if finding.key in exact:
                return exact[finding.key]
            candidates = prefixes.get(finding.key)
            if not candidates:
                return []
            text = line_text(finding)
            return sorted(secret for secret in candidates if secret in text)

        return lookup


class Secretlint(Tool):
    name = "secretlint"

    def __init__(self, node, rc):
        self.executable = os.path.abspath(os.path.join(node, "node_modules", ".bin", "secretlint"))
        self.rc = os.path.abspath(rc)
        # Written to a file: piped, its stdout is cut off at 64 KiB when the process exits.
        self.reports = os.path.dirname(self.rc)

    def report(self, root):
        name = os.path.basename(os.path.normpath(root))
        return os.path.abspath(os.path.join(self.reports, f"secretlint-report-{name}.json"))

    def version(self):
        return subprocess.run([self.executable, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    def command(self, root):
        return [
            self.executable, "**/*", "--format", "json", "--no-color", "--no-maskSecrets",
            "--secretlintrc", self.rc, "--output", self.report(root),
        ]

    def cwd(self, root):
        return root

    def findings(self, root, result):
        with open(self.report(root), encoding="utf-8") as handle:
            report = json.load(handle)
        found = []
        for item in report:
            messages = item.get("messages") or []
            if not messages:
                continue
            name = relative(item["filePath"], root, os.path.abspath(root))
            text = item.get("sourceContent")
            if text is None:
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            # `range` counts UTF-16 code units (JavaScript string indices).
            units = text.encode("utf-16-le", errors="surrogatepass")
            for message in messages:
                start, end = message["range"]
                piece = units[2 * start : 2 * end].decode("utf-16-le", errors="replace")
                line = (message.get("loc") or {}).get("start", {}).get("line")
                found.append(Finding(name, piece, False, message.get("ruleId"), line))
        return found

    def index(self, secrets, root):
        secrets = list(secrets)
        return lambda finding: [secret for secret in secrets if overlaps(finding.key, secret)]


def score(tool, root, findings, truth):
    """(found per planted key, true findings, findings): findings are counted once per (file,
    secret), the secret being the planted key(s) a finding matches, else what it reported. A
    secret reported both as public and not counts as public only if every report says so."""
    planted = truth["planted"]
    public_secrets = {item["secret"] for item in planted if item["public"]}
    lookup = tool.index({item["secret"] for item in planted}, root)
    distinct = {}  # (file, secret) -> (planted keys matched, public)
    for finding in findings:
        hits = tuple(sorted(set(lookup(finding))))
        key = (finding.file, hits or finding.key)
        public = finding.public and distinct.get(key, (hits, True))[1]
        distinct[key] = (hits, public)
    found_in = collections.defaultdict(set)  # file -> planted keys matched there
    true = 0
    for (file, _), (hits, public) in distinct.items():
        found_in[file].update(hits)
        if public:
            true += any(secret in public_secrets for secret in hits)
        else:
            true += bool(hits)
    found = [item["secret"] in found_in.get(item["file"], ()) for item in planted]
    return found, true, len(distinct)


def decoys_reported(tool, root, findings, truth):
    """Per decoy of the truth, whether the tool reported it: a finding in the decoy's file (or
    under its directory, for the source trees) that matches the decoy as a planted key would be
    matched, or whose value holds it or is held by it (at least eight characters in common)."""
    decoys = truth.get("decoys", [])
    lookup = tool.index({item["value"] for item in decoys}, root)
    by_file = collections.defaultdict(list)
    for finding in findings:
        by_file[finding.file].append(finding)
    reported = []
    for decoy in decoys:
        candidates = [
            finding
            for file, found in by_file.items()
            if file == decoy["file"] or file.startswith(decoy["file"] + "/")
            for finding in found
        ]
        reported.append(
            any(decoy["value"] in lookup(finding) or overlaps(finding.key, decoy["value"]) for finding in candidates)
        )
    return reported


def kind(item):
    if item["rule"] == "portcullis-secret-key":
        return "ptcl"
    return "public" if item["public"] else "other"


def fraction(numerator, denominator, digits=3):
    return f"{numerator / denominator:.{digits}f} ({numerator}/{denominator})" if denominator else "-"


def rate(mb, seconds):
    return f"{mb / seconds:.2f} MB/s ({seconds:.2f} s)" if seconds else "-"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/portcullis")
    parser.add_argument("--corpus", default="target/leaks-bench/corpus")
    parser.add_argument("--truth", default="target/leaks-bench/truth.json")
    parser.add_argument("--tree", default="target/leaks-bench/tree")
    parser.add_argument("--venv", default="target/leaks-venv")
    parser.add_argument("--node", default="target/leaks-node")
    parser.add_argument("--secretlintrc", default="target/leaks-bench/secretlintrc.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--command", default="bash bench/leaks.sh", help="the command line shown in the table")
    parser.add_argument("--write", default="BENCHMARKS.md", help="the file to write the section into ('' for none)")
    parser.add_argument("--skip-portcullis", action="store_true", help="leave Portcullis out (testing the peers' parts)")
    args = parser.parse_args()

    tools = [] if args.skip_portcullis else [Portcullis(args.binary)]
    tools += [DetectSecrets(args.venv), Secretlint(args.node, args.secretlintrc)]
    if not args.skip_portcullis and not os.access(tools[0].binary, os.X_OK):
        raise SystemExit(f"{args.binary} is missing: build it (cargo build --release -p portcullis) or pass --skip-portcullis")
    versions = {tool.name: tool.version() for tool in tools}
    truth = json.load(open(args.truth))
    planted = truth["planted"]
    inputs = {"corpus": args.corpus, "tree": args.tree}
    sizes = {name: directory_bytes(root) for name, root in inputs.items()}

    times = {(tool.name, name): [] for tool in tools for name in inputs}
    last = {}
    for round_ in range(args.runs):
        for name, root in inputs.items():
            for tool in tools:
                seconds, result = tool.run(root)
                times[tool.name, name].append(seconds)
                last[tool.name, name] = result
                print(f"round {round_ + 1}/{args.runs}: {tool.name} on {name}: {seconds:.2f} s", file=sys.stderr)
    median = {key: statistics.median(values) for key, values in times.items()}

    results = {}
    for tool in tools:
        corpus_findings = tool.findings(args.corpus, last[tool.name, "corpus"])
        found, true, reported = score(tool, args.corpus, corpus_findings, truth)
        # No truth on the tree: distinct (file, line, secret) as reported.
        tree_findings = {(f.file, f.line, f.key): f for f in tool.findings(args.tree, last[tool.name, "tree"])}
        results[tool.name] = {
            "found": found,
            "true": true,
            "reported": reported,
            "tree": len(tree_findings),
            "decoys": decoys_reported(tool, args.corpus, corpus_findings, truth),
        }
        if isinstance(tool, Portcullis):
            results[tool.name]["tree_public"] = sum(f.public for f in tree_findings.values())

    kinds = [kind(item) for item in planted]
    totals = collections.Counter(kinds)
    ours = "portcullis"
    mb = {name: size / 1e6 for name, (_, size) in sizes.items()}

    def recall(name, wanted):
        hits = sum(found for found, which in zip(results[name]["found"], kinds) if which == wanted)
        return hits, totals[wanted]

    def ratio(name, where):
        if ours not in results or name == ours:
            return "-"
        return f"{median[name, where] / median[ours, where]:.1f}x"

    in_archives = sum(bool(item["members"]) for item in planted)
    lines = [
        f"Run on {datetime.date.today()} (`{args.command}`); 2 shared cores, each tool with its defaults "
        f"(detect-secrets starts a process per core), wall time of the whole process including start-up, "
        f"medians of {args.runs} runs taken in rounds (every tool once per round), so ratios compare runs made side by side.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items())
        + " (secretlint with `@secretlint/secretlint-rule-preset-recommend`).",
        f"Corpus: `leaks_corpus` seed 7, {sizes['corpus'][0]:,} files, {mb['corpus']:.1f} MB (APK-like archives: plain, React Native with Hermes, .NET MAUI, "
        f"Flutter, Unity IL2CPP; AAB-like; IPA-like: plain, Flutter; and source trees), {len(planted)} planted keys ({in_archives} inside archives; {totals['ptcl']} `ptcl_`, "
        f"{totals['other']} other secrets, {totals['public']} public identifiers) and {len(truth.get('decoys', []))} decoys. "
        f"Tree: {sizes['tree'][0]:,} files, {mb['tree']:.1f} MB of crate sources from the cargo registry (no truth: findings are counted).",
        "",
        "| tool | corpus | portcullis ÷ tool | tree | portcullis ÷ tool | recall `ptcl_` | recall other secrets "
        "| recall public ids | precision | findings on tree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in tools:
        name, result = tool.name, results[tool.name]
        tree = f"{result['tree']:,}"
        if "tree_public" in result:
            tree += f" ({result['tree_public']:,} public)"
        lines.append(
            f"| {name} | {rate(mb['corpus'], median[name, 'corpus'])} | {ratio(name, 'corpus')} "
            f"| {rate(mb['tree'], median[name, 'tree'])} | {ratio(name, 'tree')} "
            f"| {fraction(*recall(name, 'ptcl'))} | {fraction(*recall(name, 'other'))} | {fraction(*recall(name, 'public'))} "
            f"| {fraction(result['true'], result['reported'])} | {tree} |"
        )
    lines.append("")
    if ours in results:
        peers = [tool.name for tool in tools if tool.name != ours]
        speedups = [median[peer, where] / median[ours, where] for peer in peers for where in inputs]
        ptcl, other = recall(ours, "ptcl"), recall(ours, "other")
        precision = results[ours]["true"] / results[ours]["reported"] if results[ours]["reported"] else 0.0

        def verdict(met):
            return "met" if met else "not met"

        lines.append(
            f"Goals: 10x the throughput of both peers on both inputs: **{verdict(min(speedups) >= 10)}** "
            f"(lowest {min(speedups):.1f}x); recall 1.0 on `ptcl_` keys: **{verdict(ptcl[0] == ptcl[1])}**; "
            f"recall 0.95 on other secrets: **{verdict(other[1] and other[0] / other[1] >= 0.95)}**; "
            f"precision 0.9: **{verdict(precision >= 0.9)}** ({precision:.3f})."
        )
        scanned = getattr(tools[0], "scanned", {})
        warnings = getattr(tools[0], "warnings", [])
        if scanned:
            lines.append(
                f"Portcullis's own count on the corpus (`scanned`, archive members included): {scanned.get('files', 0):,} files, "
                f"{scanned.get('bytes', 0) / 1e6:.1f} MB; {len(warnings)} warning(s)."
            )
        lines.append("")
    lines.append(
        "detect-secrets reports SHA-1 hashes, not secrets; its GitHub plugin (1.5.0) hashes only the `ghp` prefix, so "
        "such a finding counts when the key is on the line it reports. secretlint skips files it reads as binary "
        "(archives included). Findings on the tree are distinct (file, line, secret) reported; crate sources hold test "
        "keys and high-entropy strings, so these are mostly noise, not leaks."
    )
    lines.append("")
    decoys = truth.get("decoys", [])
    places = list(dict.fromkeys([item["place"] for item in planted] + [item["place"] for item in decoys]))
    lines += [
        "Recall per storage place (found/planted), where the text scanners' blind spots show (compressed archive members, DEX, "
        "ARSC, binary XML, Mach-O, Hermes bytecode, .NET assemblies, Dart AOT snapshots, IL2CPP metadata), and the decoys "
        "of each place reported (reported/decoys; `source` holds the source trees' decoys):",
        "",
        "| place | " + " | ".join(tool.name for tool in tools) + " | " + " | ".join(f"decoys: {tool.name}" for tool in tools) + " |",
        "|---|" + "---:|" * (2 * len(tools)),
    ]
    for place in places:
        indices = [index for index, item in enumerate(planted) if item["place"] == place]
        decoy_indices = [index for index, item in enumerate(decoys) if item["place"] == place]
        cells = [
            f"{sum(results[tool.name]['found'][index] for index in indices)}/{len(indices)}" if indices else "-"
            for tool in tools
        ]
        cells += [
            f"{sum(results[tool.name]['decoys'][index] for index in decoy_indices)}/{len(decoy_indices)}"
            if decoy_indices
            else "-"
            for tool in tools
        ]
        lines.append(f"| {place} | " + " | ".join(cells) + " |")
    block = "\n".join(lines)
    print(block)
    if not args.write:
        return
    text = open(args.write).read()
    section = f"<!-- leaks:begin -->\n{block}\n<!-- leaks:end -->"
    if "<!-- leaks:begin -->" in text:
        text = re.sub(r"<!-- leaks:begin -->.*?<!-- leaks:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## leaks scan (`bash bench/leaks.sh`)\n\n" + section + "\n"
    open(args.write, "w").write(text)


if __name__ == "__main__":
    main()
