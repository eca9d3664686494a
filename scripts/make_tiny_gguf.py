#!/usr/bin/env python3
# Copied from the project's shared tooling (tools/make_tiny_gguf.py), body unchanged, so tests need nothing outside the clone.
"""Write a tiny, randomly initialised llama-architecture GGUF model.

Nothing is downloaded: the weights are seeded random numbers and the
tokenizer is a byte-level BPE ("gpt2" model in GGUF terms) whose merges are
learned here from a few built-in sentences.  The output is gibberish, but the
file is a real model that llama.cpp (and so `llama_cpp.server`) loads and runs,
so every code path of an OpenAI-compatible server (tokenising, prompt
templating, sampling, streaming, usage counting, embeddings) is exercised.

Needs only `gguf` and `numpy` from PyPI:

    pip install gguf numpy
    python make_tiny_gguf.py --out tiny.gguf

Defaults: 2 layers, hidden 64, 4 heads (2 KV heads, so GQA is exercised),
FFN 128, context 2048, about 400 tokens, F32 weights -> about 0.5 MB.
The chat template is ChatML, stored in `tokenizer.chat_template`.
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import gguf

CORPUS = """
The quick brown fox jumps over the lazy dog. Hello world! How are you today?
I am a tiny language model with random weights, so what I say means nothing.
This model exists to test a gateway in front of an OpenAI compatible server.
Streaming responses arrive as server sent events, one chunk at a time.
The usage block counts prompt tokens, completion tokens and total tokens.
def main(): return 0  # code, numbers 0123456789 and punctuation ,.;:!?'"()[]{}
"""

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def train_bpe(text: str, n_merges: int) -> tuple[list[str], list[str]]:
    """Learn up to n_merges byte-level BPE merges; return (tokens, merges)."""
    b2u = bytes_to_unicode()
    base = [b2u[b] for b in range(256)]
    # pre-split roughly like GPT-2: words keep their leading space
    words: Counter[tuple[str, ...]] = Counter()
    for i, w in enumerate(text.split()):
        piece = (" " + w) if i else w
        words[tuple(b2u[b] for b in piece.encode("utf-8"))] += 1
    tokens = list(base)
    seen = set(tokens)
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        new = a + b
        if new not in seen:
            tokens.append(new)
            seen.add(new)
        merged: Counter[tuple[str, ...]] = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return tokens, merges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tiny.gguf")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--merges", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tiny-random-llama")
    ap.add_argument("--pooling", choices=["none", "mean", "cls", "last"], default="mean",
                    help="pooling used when the server runs in embedding mode (none = one vector per token)")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    tokens, merges = train_bpe(CORPUS, args.merges)
    n_normal = len(tokens)
    tokens += SPECIALS
    types = [gguf.TokenType.NORMAL] * n_normal + [gguf.TokenType.CONTROL] * len(SPECIALS)
    n_vocab = len(tokens)
    tid = {t: i for i, t in enumerate(tokens)}

    d, h, kvh, ff = args.hidden, args.heads, args.kv_heads, args.ff
    assert d % h == 0 and h % kvh == 0
    hd = d // h

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(args.name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(n_vocab)
    w.add_context_length(args.ctx)
    w.add_embedding_length(d)
    w.add_block_count(args.layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(h)
    w.add_head_count_kv(kvh)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if args.pooling != "none":
        w.add_pooling_type(gguf.PoolingType[args.pooling.upper()])

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tid["<|endoftext|>"])
    w.add_eos_token_id(tid["<|im_end|>"])
    w.add_eot_token_id(tid["<|im_end|>"])
    w.add_pad_token_id(tid["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)

    def rnd(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    ones = lambda n: np.ones(n, dtype=np.float32)  # noqa: E731

    # numpy shape is (out_features, in_features); gguf stores it reversed.
    w.add_tensor("token_embd.weight", rnd(n_vocab, d, scale=1.0))
    for i in range(args.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(d))
        w.add_tensor(p + "attn_q.weight", rnd(h * hd, d))
        w.add_tensor(p + "attn_k.weight", rnd(kvh * hd, d))
        w.add_tensor(p + "attn_v.weight", rnd(kvh * hd, d))
        w.add_tensor(p + "attn_output.weight", rnd(d, h * hd))
        w.add_tensor(p + "ffn_norm.weight", ones(d))
        w.add_tensor(p + "ffn_gate.weight", rnd(ff, d))
        w.add_tensor(p + "ffn_up.weight", rnd(ff, d))
        w.add_tensor(p + "ffn_down.weight", rnd(d, ff))
    w.add_tensor("output_norm.weight", ones(d))
    w.add_tensor("output.weight", rnd(n_vocab, d, scale=0.5))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: vocab={n_vocab} merges={len(merges)} layers={args.layers} hidden={d} "
          f"heads={h}/{kvh} ff={ff} ctx={args.ctx} "
          f"bos={tid['<|endoftext|>']} eos={tid['<|im_end|>']}")


if __name__ == "__main__":
    main()
