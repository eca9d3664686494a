#!/usr/bin/env python3
"""The official `openai` and `ollama` Python clients against the real `portcullis` binary,
fronting a real OpenAI-compatible server (llama.cpp's `llama-server` with a tiny random-weight
model) and the project's scripted Ollama upstream. Everything binds 127.0.0.1.

    python scripts/llm_gateway_check.py PORTCULLIS LLAMA_SERVER MODEL.gguf

`scripts/llm-upstream.sh` builds LLAMA_SERVER and writes MODEL.gguf (once, cached outside the
clone); `.ci/run` runs this with the clients pinned in scripts/llm-requirements.txt. The gateway
is started with `portcullis demo --openai-upstream ... --ollama-upstream ...`, so the demo's own
discovery and configuration are what is tested. Exit status 0 when every check passes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import ollama
import openai

HERE = Path(__file__).resolve().parent
PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str, condition: bool, detail: object = "") -> None:
    (PASSED if condition else FAILED).append(name)
    print(f"{'ok  ' if condition else 'FAIL'} {name}{'' if condition else f': {detail}'}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            time.sleep(0.1)


def start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def openai_checks(base: str, key: str, limited_key: str) -> None:
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    check("chat: answered under our model name", chat.model == "tiny", chat.model)
    check("chat: usage counted", chat.usage is not None and chat.usage.completion_tokens <= 8, chat.usage)
    check("chat: no system_fingerprint", getattr(chat, "system_fingerprint", None) is None, chat.system_fingerprint)

    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    leaked = [name for name in raw.headers if name.lower() in ("server", "x-ratelimit-limit-requests", "openai-organization")]
    check("chat: no upstream header", not leaked and "llama" not in raw.text.lower(), leaked)

    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [chunk for chunk in chunks if chunk.choices]
    check("stream: chunks arrive", len(deltas) >= 2, len(deltas))
    check("stream: the last chunk carries usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6, chunks[-1])
    check("stream: every chunk names our model", all(chunk.model == "tiny" for chunk in chunks))

    completion = client.completions.create(model="tiny", prompt="Once upon", max_tokens=5)
    check("completions: answered", completion.choices and completion.usage.completion_tokens <= 5, completion)
    streamed = list(client.completions.create(model="tiny", prompt="Once", max_tokens=3, stream=True))
    check("completions: streamed", len(streamed) >= 1)

    async def asynchronous() -> None:
        async_client = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        answer = await async_client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        check("async chat: answered", answer.model == "tiny", answer)
        stream = await async_client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4, stream=True
        )
        count = 0
        async for _ in stream:
            count += 1
        check("async stream: chunks arrive", count >= 2, count)
        await async_client.close()

    asyncio.run(asynchronous())

    embedding = client.embeddings.create(model="tiny-embed", input=["hello", "world"])
    check(
        "embeddings: one vector per input (base64, the SDK's default)",
        len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0,
        embedding,
    )
    floats = client.embeddings.create(model="tiny-embed", input="hello", encoding_format="float")
    check("embeddings: as floats", len(floats.data[0].embedding) > 0)

    response = client.responses.create(model="tiny", input="Hello", max_output_tokens=16)
    check("responses: answered under our model name", response.model == "tiny", response.model)

    try:
        openai.OpenAI(base_url=base, api_key="ptcl_sk_wrong", max_retries=0).models.list()
        check("no valid key: AuthenticationError", False, "no error")
    except openai.AuthenticationError as error:
        check("no valid key: AuthenticationError", error.status_code == 401)

    try:
        openai.OpenAI(base_url=base, api_key=key, max_retries=0).chat.completions.create(
            model="stub-chat:latest", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        check("a model outside the key's list: NotFoundError", False, "no error")
    except openai.NotFoundError as error:
        check("a model outside the key's list: NotFoundError", error.status_code == 404)

    for spelling in ["Tiny", "tiny ", " tiny", "t\u0131ny"]:
        try:
            client.chat.completions.create(model=spelling, messages=[{"role": "user", "content": "x"}], max_tokens=2)
            check(f"model spelled {spelling!r}: refused", False, "answered")
        except openai.NotFoundError:
            check(f"model spelled {spelling!r}: refused", True)

    try:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, logprobs=True, top_logprobs=3
        )
        check("logprobs refused for this model", False, "answered")
    except openai.BadRequestError as error:
        check("logprobs refused for this model", error.status_code == 400)

    listed = [model.id for model in client.models.list()]
    check("/v1/models lists the key's models only", sorted(listed) == ["tiny", "tiny-embed"], listed)

    # The limited key: 1 request per second. The second at once is refused with Retry-After; a
    # client that retries (the SDK's default) waits as told and gets through.
    limited = openai.OpenAI(base_url=base, api_key=limited_key, max_retries=0)
    limited.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    try:
        limited.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        check("over its rate: RateLimitError", False, "answered")
    except openai.RateLimitError as error:
        retry_after = error.response.headers.get("retry-after")
        check("over its rate: RateLimitError with Retry-After", retry_after is not None and retry_after.isdigit(), retry_after)
    started = time.monotonic()
    patient = openai.OpenAI(base_url=base, api_key=limited_key, max_retries=3)
    answer = patient.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    check("a retrying client waits out Retry-After and is served", answer.model == "tiny", time.monotonic() - started)


def budget_checks(base: str, portcullis: str, config: str, key: str, kid: str) -> None:
    """A key with a token budget of 300 a day: the SDK gets its answers while the budget has
    room, then RateLimitError (budget_exhausted, Retry-After); a request that could never fit is a
    BadRequestError; `keys usage` shows the tokens the upstream reported."""
    import json

    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=400)
        check("budget: a request larger than the whole budget is BadRequestError", False, "answered")
    except openai.BadRequestError as error:
        check("budget: a request larger than the whole budget is BadRequestError", "whole budget" in str(error), error)
    served, refused = 0, None
    for _ in range(20):
        try:
            stream = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=60, stream=True
            )
            chunks = list(stream)
            if any(chunk.usage is not None for chunk in chunks):
                check("budget: a stream that did not ask for usage gets none", False, chunks[-1])
                return
            served += 1
        except openai.RateLimitError as error:
            refused = error
            break
    check("budget: served while it had room", served >= 2, served)
    check(
        "budget: then RateLimitError budget_exhausted with Retry-After",
        refused is not None
        and refused.code == "budget_exhausted"
        and (refused.response.headers.get("retry-after") or "").isdigit(),
        refused,
    )
    rows = key_usage(
        portcullis, config, kid, lambda rows: sum(r["requests"] for r in rows if r["tokens_out"] > 0) >= served
    )
    rows = [row for row in rows if row["model"] == "tiny" and row["tokens_out"] > 0]
    charged = sum(row["requests"] for row in rows)
    tokens = sum(row["tokens_in"] + row["tokens_out"] for row in rows)
    check("budget: keys usage shows the streams' tokens", charged >= served and 0 < tokens <= 300, rows)


def key_usage(portcullis: str, config: str, kid: str, done) -> list[dict]:
    """`keys usage KID --json`, asked again (servers write usage every second) until `done(rows)`
    or ten seconds have passed."""
    import json

    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(
            subprocess.run(
                [portcullis, "keys", "usage", kid, "--config", config, "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


PERSONAL = {
    "email": "jane.doe@example.co.uk",
    "phone": "+44 20 7946 0958",
    "payment_card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ip_address": "192.168.1.20",
}


def redaction_checks(portcullis: str, chat_port: int, stub_port: int, folder: Path) -> None:
    """`portcullis serve` with prompt redaction and a price, in front of llama-server and the
    stub's `echo` model (it answers with the prompt it received): the SDK's prompt reaches the
    upstream with placeholders only, the same caller gets its text back, whole and streamed,
    and the spend is counted."""
    import json

    port, admin = free_port(), free_port()
    config = folder / "redact.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[[llm]]
name = "tiny-private"
api = "openai"
url = "http://127.0.0.1:{chat_port}/v1"
model = "tiny"
redact_prompts = true
restore_redacted = true
price = {{ input = "0.5", output = "1.5" }}

[[llm]]
name = "echo"
api = "openai"
url = "http://127.0.0.1:{stub_port}/v1"
redact_prompts = true
restore_redacted = true
price = {{ input = "0", output = "0" }}
"""
    )
    created = json.loads(
        subprocess.run(
            [portcullis, "keys", "create", "--config", str(config), "--name", "sdk", "--json",
             "--models", "tiny-private,echo", "--spend", "1usd/day"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    server = start([portcullis, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=created["key"], max_retries=0)
        prompt = "Note: " + "; ".join(f"{kind} {value}" for kind, value in PERSONAL.items())
        whole = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": prompt}])
        check("redaction: the same caller gets its text back", whole.choices[0].message.content == prompt, whole)
        pieces = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": prompt}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
        check("redaction: ... and streamed, placeholders cut across chunks", text == prompt, text)
        with urllib.request.urlopen(f"http://127.0.0.1:{stub_port}/__requests", timeout=5) as reply:
            sent = [r["body"] or "" for r in json.load(reply) if r["route"] == "openai.chat"][-2:]
        leaked = [kind for kind, value in PERSONAL.items() if any(value in body for body in sent)]
        check("redaction: the upstream got placeholders only", not leaked and all("<EMAIL_1>" in b for b in sent), leaked or sent)
        stream = client.chat.completions.create(
            model="tiny-private", messages=[{"role": "user", "content": f"Mail {PERSONAL['email']}"}],
            max_tokens=8, stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
        check("redaction: a real server streams through it, with usage", chunks and chunks[-1].usage is not None, chunks[-1:])
        def spent(rows: list[dict]) -> int:
            return sum(row["spend_micros"] for row in rows if row["model"] == "tiny-private")

        rows = key_usage(portcullis, str(config), created["id"], lambda rows: spent(rows) > 0)
        check("spend: counted at the model's price", spent(rows) > 0, rows)
    finally:
        stop(server)


def ollama_checks(host: str, key: str) -> None:
    client = ollama.Client(host=host, headers={"Authorization": f"Bearer {key}"})
    names = [model.model for model in client.list().models]
    check("ollama list: the key's models only", names == ["stub-chat:latest"], names)
    answer = client.chat(model="stub-chat:latest", messages=[{"role": "user", "content": "hello there"}], stream=False)
    check("ollama chat", answer.message.content and answer.model == "stub-chat:latest", answer)
    parts = list(client.chat(model="stub-chat:latest", messages=[{"role": "user", "content": "hi"}], stream=True))
    check("ollama chat streamed", len(parts) >= 2 and parts[-1].done, len(parts))
    generated = client.generate(model="stub-chat:latest", prompt="hello", stream=False)
    check("ollama generate", bool(generated.response), generated)
    shown = client.show("stub-chat:latest")
    check("ollama show: no modelfile", not shown.modelfile, shown.modelfile)
    try:
        client.pull("stub-chat:latest", stream=False)
        check("ollama pull: refused", False, "answered")
    except ollama.ResponseError as error:
        check("ollama pull: refused", error.status_code == 403, error)
    try:
        client.delete("stub-chat:latest")
        check("ollama delete: refused", False, "answered")
    except ollama.ResponseError as error:
        check("ollama delete: refused", error.status_code == 403, error)
    anonymous = ollama.Client(host=host)
    try:
        anonymous.list()
        check("ollama without a key: refused", False, "answered")
    except ollama.ResponseError as error:
        check("ollama without a key: refused", error.status_code == 401, error)


def main() -> int:
    portcullis, llama_server, gguf = sys.argv[1:4]
    processes: list[subprocess.Popen] = []
    work = tempfile.TemporaryDirectory(prefix="portcullis-llm-check-")
    try:
        chat_port, embed_port, stub_port = free_port(), free_port(), free_port()
        common = ["-m", gguf, "--host", "127.0.0.1", "-c", "2048", "-t", "1", "-n", "64"]
        processes.append(start([llama_server, *common, "--port", str(chat_port), "-a", "tiny", "-np", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        processes.append(start([llama_server, *common, "--port", str(embed_port), "-a", "tiny-embed", "--embeddings"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        processes.append(start([sys.executable, str(HERE / "llm_upstream_stub.py"), "--port", str(stub_port), "--models", "stub-chat"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{chat_port}/health")
        wait_http(f"http://127.0.0.1:{embed_port}/health")
        wait_http(f"http://127.0.0.1:{stub_port}/api/tags")
        data = Path(work.name) / "demo"
        demo = start(
            [
                portcullis, "demo", "--port", "0", "--admin-port", "0", "--data-dir", str(data),
                "--openai-upstream", f"http://127.0.0.1:{chat_port}/v1",
                "--openai-upstream", f"http://127.0.0.1:{embed_port}/v1",
                "--ollama-upstream", f"http://127.0.0.1:{stub_port}",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        processes.append(demo)
        printed = ""
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in printed:
            line = demo.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not start:\n{printed}")
            printed += line
        base = re.search(r'base_url="(http://127\.0\.0\.1:\d+/v1)"', printed).group(1)
        key = re.search(r"ptcl_sk_\w+", printed).group(0)
        check("demo: the key may use the first upstream model only", "the key may use 'tiny'" in printed, printed)
        config = str(data / "portcullis.toml")

        def create_key(*extra: str) -> str:
            return create_key_and_id(*extra)[0]

        def create_key_and_id(*extra: str) -> tuple[str, str]:
            import json

            out = subprocess.run(
                [portcullis, "keys", "create", "--config", config, "--name", "check", "--json", *extra],
                check=True, capture_output=True, text=True,
            ).stdout
            created = json.loads(out)
            return created["key"], created["id"]

        all_key = create_key("--models", "tiny,tiny-embed")
        limited_key = create_key("--models", "tiny", "--rate", "1/s", "--burst", "1")
        ollama_key = create_key("--models", "stub-chat:latest")
        budget_key, budget_kid = create_key_and_id("--models", "tiny", "--token-quota", "300/day")
        openai_checks(base, all_key, limited_key)
        budget_checks(base, portcullis, config, budget_key, budget_kid)
        redaction_checks(portcullis, chat_port, stub_port, Path(work.name))
        ollama_checks(base.removesuffix("/v1"), ollama_key)
        # The demo key itself, as the demo prints it.
        demo_client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        answer = demo_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
        check("demo key: the printed snippet works", answer.model == "tiny")
        with httpx.Client() as raw:
            management = raw.post(base.removesuffix("/v1") + "/api/pull", json={"model": "x"}, headers={"Authorization": f"Bearer {all_key}"})
            check("management route: 403 for any key", management.status_code == 403, management.status_code)
    finally:
        for process in reversed(processes):
            stop(process)
        work.cleanup()
    print(f"\n{len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
