#!/usr/bin/env python3
"""A labelled evaluation set for `portcullis data` (seeded, deterministic).

Writes CSV and JSON Lines files of realistic customer-support rows, and beside each a labels
file (JSON Lines, one line per personal-data span: record, column, kind, start, end) that is the
ground truth. Hard negatives are planted on purpose: order numbers that pass Luhn, version
strings shaped like IP addresses, timestamps, product codes, amounts, ticket ids.

Values are made valid by construction (Luhn, mod 97, numbering plans via the `phonenumbers`
package when installed), independently of Portcullis's own validators.

    python3 bench/pii_gen.py --rows 20000 --out target/pii-eval
    python3 bench/pii_gen.py --rows 20000 --out DIR --format csv --no-labels   # throughput files
"""

import argparse
import json
import os
import random

GIVEN = ["James", "Mary", "Olivia", "Noah", "Sophia", "Liam", "Emma", "Lucas", "Mia", "Amelia", "Wei", "Priya",
         "Mohammed", "Fatima", "Jose", "Maria", "Anna", "Hans", "Pierre", "Camille", "Arjun", "Yuki", "Carlos", "Ana"]
FAMILY = ["Smith", "Johnson", "Garcia", "Martinez", "Brown", "Silva", "Santos", "Muller", "Schmidt", "Dubois",
          "Martin", "Patel", "Sharma", "Kumar", "Wang", "Li", "Nguyen", "Kim", "Rossi", "Lopez", "Taylor", "Wilson"]
DOMAINS = ["example.com", "mail.example.org", "example.co.uk", "example.de", "example.fr", "example.com.br",
           "example.in", "corp.example.net"]
WORDS = ["please", "update", "my", "account", "the", "delivery", "was", "late", "thanks", "refund", "issue",
         "with", "order", "again", "today", "support", "ticket", "closed", "reopened", "customer", "asked"]

# Phone numbers in formats people write, per region (valid by the numbering plans).
PHONE_TEMPLATES = {
    "US": ["+1 {a} {b} {c}", "({a}) {b}-{c}", "+1-{a}-{b}-{c}"],
    "GB": ["+44 20 {x4} {y4}", "020 {x4} {y4}", "+44 7{x3} {y6}"],
    "DE": ["+49 30 {x6}", "030 {x6} {y2}", "+49 151 {x8}"],
    "FR": ["+33 1 {p} {q} {r} {s}", "01 {p} {q} {r} {s}", "+33 6 {p} {q} {r} {s}"],
    "IN": ["+91 9{x4} {y5}", "098{x3} {y5}"],
    "BR": ["+55 11 9{x4}-{y4}", "(11) 9{x4}-{y4}"],
}

IBAN_FORMATS = {"DE": (18, "n"), "GB": (18, "GB"), "FR": (23, "n"), "NL": (14, "NL"), "ES": (20, "n")}


def luhn_complete(prefix, length, rng):
    digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for index, ch in enumerate(reversed(digits)):
        d = int(ch)
        if index % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def card(rng):
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    digits = luhn_complete(prefix, length, rng)
    if length == 16 and rng.random() < 0.6:
        sep = rng.choice([" ", "-"])
        return sep.join(digits[i:i + 4] for i in range(0, 16, 4))
    return digits


def iban(rng):
    country = rng.choice(list(IBAN_FORMATS))
    length, kind = IBAN_FORMATS[country]
    if kind == "GB":
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + "".join(str(rng.randrange(10)) for _ in range(14))
    elif kind == "NL":
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + "".join(str(rng.randrange(10)) for _ in range(10))
    else:
        bban = "".join(str(rng.randrange(10)) for _ in range(length))
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    check = 98 - number % 97
    code = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(code[i:i + 4] for i in range(0, len(code), 4))
    return code


def ssn(rng):
    while True:
        area = rng.randrange(1, 900)
        if area == 666:
            continue
        group, serial = rng.randrange(1, 100), rng.randrange(1, 10000)
        return f"{area:03d}-{group:02d}-{serial:04d}"


def phone(rng, validate):
    for _ in range(50):
        region = rng.choice(list(PHONE_TEMPLATES))
        template = rng.choice(PHONE_TEMPLATES[region])
        fill = {
            "a": str(rng.randrange(201, 990)), "b": str(rng.randrange(200, 1000)), "c": f"{rng.randrange(10000):04d}",
            "x3": f"{rng.randrange(1000):03d}", "x4": f"{rng.randrange(1000, 10000)}", "x6": f"{rng.randrange(100000, 1000000)}",
            "x8": f"{rng.randrange(10**7, 10**8)}", "y2": f"{rng.randrange(10, 100)}", "y4": f"{rng.randrange(10000):04d}",
            "y5": f"{rng.randrange(10000, 100000)}", "y6": f"{rng.randrange(10**5, 10**6)}",
            "p": f"{rng.randrange(10, 100)}", "q": f"{rng.randrange(10, 100)}", "r": f"{rng.randrange(10, 100)}", "s": f"{rng.randrange(10, 100)}",
        }
        number = template.format(**fill)
        if validate is None or validate(number, region):
            return number
    return "+44 20 7946 0958"


def make_validator():
    try:
        import phonenumbers
    except ImportError:
        return None

    def valid(number, region):
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
        except phonenumbers.NumberParseException:
            return False
    return valid


def mac(rng):
    sep = rng.choice([":", "-"])
    return sep.join(f"{rng.randrange(256):02x}" for _ in range(6))


def nhs(rng):
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            text = "".join(map(str, digits + [check]))
            return f"{text[:3]} {text[3:6]} {text[6:]}"


def nino(rng):
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
        first, second = "A", "B"
    return f"{first}{second}{rng.randrange(10**6):06d}{rng.choice('ABCD')}"


BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def wallet(rng):
    import hashlib
    payload = bytes([0]) + bytes(rng.randrange(256) for _ in range(20))
    checksum = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(payload + checksum, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = BASE58[digit] + text
    return "1" * (len(payload + checksum) - len((payload + checksum).lstrip(b"\0"))) + text


def imei(rng):
    return luhn_complete(f"{rng.randrange(10, 100)}", 15, rng)


def coordinates(rng):
    return f"{rng.uniform(-60, 70):.5f}, {rng.uniform(-170, 170):.5f}"


def aws_key(rng):
    return "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))


def ipv4(rng):
    return f"{rng.choice([10, 172, 192, 81, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def dob(rng):
    return f"{rng.randrange(1940, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"


def hard_negative(rng):
    """Text that looks like personal data and is not."""
    choice = rng.randrange(6)
    if choice == 0:
        return f"order {luhn_complete('4', 16, rng)}"  # passes Luhn, an order number
    if choice == 1:
        return f"version {rng.randrange(1, 20)}.{rng.randrange(10)}.{rng.randrange(10)}.{rng.randrange(100)}"
    if choice == 2:
        return f"at 2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
    if choice == 3:
        return f"SKU-{rng.randrange(10**5, 10**6)}-{rng.choice('ABCDEF')}"
    if choice == 4:
        return f"ticket #{rng.randrange(10**7, 10**8)}"
    return f"total {rng.randrange(1, 999)}.{rng.randrange(100):02d} EUR"


def row(rng, validate, index):
    """One row: its fields and the labelled spans in each."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    name = f"{given} {family}"
    local = rng.choice([f"{given}.{family}", f"{given[0]}{family}", f"{given}{rng.randrange(100)}"]).lower()
    email = f"{local}@{rng.choice(DOMAINS)}"
    fields, labels = {}, []

    def put(column, value, kind=None):
        fields[column] = value
        if kind:
            labels.append((column, kind, 0, len(value)))

    put("ticket_id", f"T{index:08d}")
    put("customer_name", name, "person_name")
    put("email", email, "email")
    put("phone", phone(rng, validate), "phone")
    put("card_number", card(rng), "payment_card")
    put("iban", iban(rng), "iban")
    put("ip", ipv4(rng), "ip_address")
    put("ssn", ssn(rng), "us_ssn")
    put("date_of_birth", dob(rng), "date_of_birth")
    put("zip", f"{rng.randrange(10000, 99999)}", "postcode")
    put("device_mac", mac(rng), "mac_address")
    put("nhs_number", nhs(rng), "uk_nhs")
    put("ni_number", nino(rng), "uk_nino")
    put("btc_wallet", wallet(rng), "crypto_wallet")
    put("imei", imei(rng), "imei")
    put("location", coordinates(rng), "coordinates")
    put("api_key", aws_key(rng), "credential")
    put("passport", f"{rng.choice('CKLM')}{rng.randrange(10**7, 10**8)}", "passport")
    put("product_code", f"PRD-{rng.randrange(10**4, 10**5)}")
    put("created_at", f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00")
    # Free text: words, one or two planted values, and a hard negative.
    parts, spans = [], []
    position = 0

    def add(text, kind=None):
        nonlocal position
        if parts:
            position += 1
        if kind:
            spans.append((kind, position, position + len(text)))
        parts.append(text)
        position += len(text)

    for _ in range(rng.randrange(3, 8)):
        add(rng.choice(WORDS))
    planted = rng.choice(["email", "phone", "card", "ip", "none"])
    if planted == "email":
        add("mail")
        add(f"{rng.choice(GIVEN).lower()}@{rng.choice(DOMAINS)}", "email")
    elif planted == "phone":
        add("call")
        add(phone(rng, validate), "phone")
    elif planted == "card":
        add("card")
        add(card(rng), "payment_card")
    elif planted == "ip":
        add("from")
        add(ipv4(rng), "ip_address")
    add(hard_negative(rng))
    for _ in range(rng.randrange(1, 4)):
        add(rng.choice(WORDS))
    fields["notes"] = " ".join(parts)
    labels.extend(("notes", kind, start, end) for kind, start, end in spans)
    return fields, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", choices=["csv", "jsonl", "parquet", "both", "all"], default="all",
                        help="both = csv and jsonl; all = csv, jsonl and parquet (parquet needs pyarrow)")
    parser.add_argument("--no-labels", action="store_true")
    parser.add_argument("--anonymous-headers", action="store_true",
                        help="name the columns c01, c02, ... so that only the values can tell what they hold")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    validate = make_validator()
    if validate is None:
        print("note: the phonenumbers package is not installed; phone numbers are not checked against numbering plans")
    import csv
    formats = {"both": ["csv", "jsonl"], "all": ["csv", "jsonl", "parquet"]}.get(args.format, [args.format])
    parquet_rows = [] if "parquet" in formats else None
    outputs = {fmt: open(os.path.join(args.out, f"eval.{fmt}"), "w", newline="") for fmt in formats if fmt != "parquet"}
    labels_out = None if args.no_labels else open(os.path.join(args.out, "labels.jsonl"), "w")
    writer = None
    for index in range(1, args.rows + 1):
        fields, labels = row(rng, validate, index)
        if args.anonymous_headers:
            names = {name: f"c{position:02d}" for position, name in enumerate(fields, start=1)}
            fields = {names[name]: value for name, value in fields.items()}
            labels = [(names[column], kind, start, end) for column, kind, start, end in labels]
        if "csv" in outputs:
            if writer is None:
                writer = csv.DictWriter(outputs["csv"], fieldnames=list(fields))
                writer.writeheader()
            writer.writerow(fields)
        if "jsonl" in outputs:
            outputs["jsonl"].write(json.dumps(fields) + "\n")
        if parquet_rows is not None:
            parquet_rows.append(fields)
        if labels_out:
            for column, kind, start, end in labels:
                labels_out.write(json.dumps({"record": index, "column": column, "kind": kind, "start": start, "end": end}) + "\n")
    for handle in outputs.values():
        handle.close()
    if parquet_rows:
        try:
            import pyarrow
            import pyarrow.parquet
        except ImportError:
            print("note: pyarrow is not installed; no Parquet file written")
        else:
            table = pyarrow.Table.from_pylist(parquet_rows)
            pyarrow.parquet.write_table(table, os.path.join(args.out, "eval.parquet"), row_group_size=5000)
    if labels_out:
        labels_out.close()


if __name__ == "__main__":
    main()
