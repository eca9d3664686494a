#!/usr/bin/env python3
"""Write the tokenizer the gateway's token-counting tests load: a Hugging Face `tokenizer.json`
made here, not downloaded.

    python3 scripts/make_tokenizer_fixture.py [--out crates/gateway/tests/fixtures/tokenizer.json]

It is a WordLevel model behind the Whitespace pre-tokenizer, which splits text into runs of word
characters and runs of other non-space characters (`\\w+|[^\\w\\s]+`). Every piece is one token:
a word of the small vocabulary below is its own id, any other piece is `[UNK]`. So a test knows
the exact count of any text: its words plus its runs of punctuation ("Hello, world!" is 4).
Standard library only; the output is deterministic (sorted keys, fixed ids).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WORDS = """
the a an and or of to in on for with is are was be it this that you i we they my your
hello world model token tokens prompt answer chat message system user assistant tool
what how why when where who please write summarise translate explain code function
"""

PUNCTUATION = [".", ",", "!", "?", ":", ";", "(", ")", "{", "}", "[", "]", '"', "'", "-"]


def tokenizer() -> dict:
    vocabulary = {"[UNK]": 0}
    for piece in WORDS.split() + PUNCTUATION:
        vocabulary.setdefault(piece, len(vocabulary))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": 0,
                "content": "[UNK]",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocabulary, "unk_token": "[UNK]"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "crates/gateway/tests/fixtures/tokenizer.json"
    parser.add_argument("--out", type=Path, default=default)
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tokenizer(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
