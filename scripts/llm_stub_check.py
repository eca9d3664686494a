#!/usr/bin/env python3
"""Check that the official `openai` and `ollama` Python clients accept what the LLM upstreams
used by the tests answer: the scripted stub (scripts/llm_upstream_stub.py) and, with
--llama-server, the real llama.cpp server built by scripts/llm-upstream.sh.

How to run (from the repository root):

    python3 -m venv target/llm-venv
    target/llm-venv/bin/pip install -r scripts/llm-requirements.txt
    target/llm-venv/bin/python scripts/llm_stub_check.py
    eval "$(bash scripts/llm-upstream.sh)"
    target/llm-venv/bin/python scripts/llm_stub_check.py --llama-server "$LLAMA_SERVER" --gguf "$TINY_GGUF"

Without options it starts the stub on a free port with an API key and drives it with `openai`
(sync and async: models, chat with and without streaming, `stream_options.include_usage`,
completions, embeddings as base64 and floats, responses, `n`, logprobs, and the exception each
error status maps to), with `ollama` (list, show, ps, chat, generate, embed, streaming or not,
sync and async, and every management route, which the stub must flag in its record), through
each fault model, and reads back the stub's record of what it was sent. The leaks the stub
makes on purpose are checked to be there, so a gateway test that finds none has scrubbed them.

With --llama-server BIN --gguf MODEL it instead starts two `llama-server` instances on free
ports (one for chat, one with --embeddings, both with an API key) and runs the checks that hold
for any OpenAI-compatible server; answers are gibberish, so only structure and token counts are
checked. It prints one line per check, then `N passed, M failed`, and exits 1 if any check
failed, 2 if a server could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import ollama
import openai

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "scripts" / "llm_upstream_stub.py"
KEY = "sk-upstream-test-key-0001"
STARTUP_TIMEOUT = 30.0
FIRST_TOKEN_DELAY = 0.5
HUGE_BYTES = 1024 * 1024
EMBED_DIMS = 16


class Report:
    """Runs named checks, prints one line for each and counts the outcomes."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, test) -> None:
        try:
            test()
        # Any exception, from an assertion or from a client, fails the check and only it.
        except Exception as error:
            self.failed += 1
            detail = str(error).replace("\n", " ")[:300]
            print(f"FAIL  {name}: {type(error).__name__}: {detail}", flush=True)
        else:
            self.passed += 1
            print(f"ok    {name}", flush=True)


def expect_raises(kind, call, status: int | None = None):
    """Asserts that call() raises `kind` (with this HTTP status, if given) and returns the error."""
    try:
        result = call()
    except kind as error:
        if status is not None:
            got = getattr(error, "status_code", None)
            assert got == status, f"status {got}, expected {status}"
        return error
    raise AssertionError(f"no {kind.__name__}, got {result!r:.200}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, key: str | None = None):
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read())


class Process:
    """A server process whose stderr goes to a temporary log, stopped with SIGTERM."""

    def __init__(self, command: list[str], log_dir: Path, name: str) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_stub(log_dir: Path) -> tuple[Process, str]:
    stub = Process([sys.executable, str(STUB), "--port", "0", "--api-key", KEY,
                    "--first-token-delay", str(FIRST_TOKEN_DELAY), "--stall-seconds", "30",
                    "--huge-bytes", str(HUGE_BYTES), "--embed-dims", str(EMBED_DIMS)], log_dir, "stub")
    line = stub.process.stdout.readline().decode().strip()
    if not line.isdigit():
        stub.stop()
        raise RuntimeError(f"the stub printed {line!r} instead of its port; its log:\n{stub.tail()}")
    return stub, f"http://127.0.0.1:{line}"


def start_llama_server(binary: str, gguf: str, log_dir: Path, alias: str, extra: list[str]) -> tuple[Process, str]:
    port = free_port()
    server = Process([binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-a", alias,
                      "-c", "2048", "-t", "1", "-np", "2", "--api-key", KEY, *extra], log_dir, alias)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {server.process.returncode}:\n{server.tail()}")
        try:
            status, _, body = get_json(base + "/health")
            if status == 200 and body.get("status") == "ok":
                return server, base
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"llama-server not healthy within {STARTUP_TIMEOUT:.0f} s:\n{server.tail()}")


# --- checks that hold for any OpenAI-compatible server -----------------------------------------


def run_openai_checks(report: Report, base: str, embed_base: str, model: str, embed_model: str,
                      responses: bool) -> None:
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=30)
    embed_client = openai.OpenAI(base_url=embed_base + "/v1", api_key=KEY, max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Say hello to the gateway tests."}]

    def models():
        ids = [m.id for m in client.models.list()]
        assert model in ids, ids

    def chat():
        answer = client.chat.completions.create(model=model, messages=messages, max_tokens=4)
        choice = answer.choices[0]
        assert answer.object == "chat.completion" and choice.message.role == "assistant", answer
        assert choice.finish_reason in ("length", "stop"), choice.finish_reason
        usage = answer.usage
        assert 0 < usage.completion_tokens <= 4 and usage.prompt_tokens > 0, usage
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage

    def chat_stream_usage():
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=4, stream=True,
                                                     stream_options={"include_usage": True}))
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None, last
        assert 0 < last.usage.completion_tokens <= 4, last.usage
        assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes and finishes[-1] in ("length", "stop"), finishes
        assert any(c.choices and c.choices[0].delta.content for c in chunks), "no content delta"

    def chat_stream_no_usage():
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=3, stream=True))
        assert chunks and all(c.choices for c in chunks), "a chunk without choices (a usage chunk?)"

    def completions():
        answer = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
        assert answer.choices[0].finish_reason in ("length", "stop") and answer.usage.completion_tokens <= 3, answer
        chunks = list(client.completions.create(model=model, prompt="Once upon a time", max_tokens=3, stream=True,
                                                stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 3, chunks[-1]

    def embeddings():
        default = embed_client.embeddings.create(model=embed_model, input=["first text", "second text"])
        assert [d.index for d in default.data] == [0, 1], default.data
        dims = len(default.data[0].embedding)
        assert dims > 0 and all(isinstance(x, float) for x in default.data[0].embedding), dims
        floats = embed_client.embeddings.create(model=embed_model, input="first text", encoding_format="float")
        assert len(floats.data[0].embedding) == dims, len(floats.data[0].embedding)
        assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, default.data[0].embedding)) < 1e-4
        assert default.usage.prompt_tokens > 0, default.usage

    def async_calls():
        async def go():
            async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=30) as aclient, \
                    openai.AsyncOpenAI(base_url=embed_base + "/v1", api_key=KEY, max_retries=0, timeout=30) as aembed:
                answers = await asyncio.gather(*[
                    aclient.chat.completions.create(model=model, messages=messages, max_tokens=2) for _ in range(4)])
                assert all(a.usage.completion_tokens <= 2 for a in answers), answers
                stream = await aclient.chat.completions.create(model=model, messages=messages, max_tokens=2,
                                                               stream=True, stream_options={"include_usage": True})
                chunks = [c async for c in stream]
                assert chunks[-1].usage is not None, chunks[-1]
                vectors = await aembed.embeddings.create(model=embed_model, input="async text")
                assert vectors.data[0].embedding, vectors
        asyncio.run(go())

    def wrong_key():
        bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
        expect_raises(openai.AuthenticationError, lambda: bad.chat.completions.create(
            model=model, messages=messages, max_tokens=2), 401)

    def bad_request():
        expect_raises(openai.BadRequestError, lambda: client.chat.completions.create(
            model=model, messages=messages, max_tokens=-5), 400)

    def responses_api():
        answer = client.responses.create(model=model, input="Say hello.", max_output_tokens=4)
        assert answer.object == "response" and answer.output, answer
        assert isinstance(answer.output_text, str) and answer.usage.output_tokens <= 4, answer.usage
        events = list(client.responses.create(model=model, input="Say hello.", max_output_tokens=4, stream=True))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and "response.output_text.delta" in kinds, kinds
        assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
        assert events[-1].response.usage is not None, events[-1]

    report.check("openai: models.list names the model", models)
    report.check("openai: chat, max_tokens honoured, usage adds up", chat)
    report.check("openai: chat stream with include_usage ends in a usage chunk with no choices", chat_stream_usage)
    report.check("openai: chat stream without stream_options has no usage chunk", chat_stream_no_usage)
    report.check("openai: completions, plain and streamed with usage", completions)
    report.check("openai: embeddings, base64 (the SDK default) and float agree", embeddings)
    report.check("openai: AsyncOpenAI chat x4 concurrently, stream and embeddings", async_calls)
    report.check("openai: a wrong key raises AuthenticationError (401)", wrong_key)
    report.check("openai: max_tokens=-5 raises BadRequestError (400)", bad_request)
    if responses:
        report.check("openai: responses, plain and streamed", responses_api)


# --- checks of the stub only --------------------------------------------------------------------


def records(base: str, since: int = 0) -> list[dict]:
    return get_json(f"{base}/__requests?since={since}")[2]


def last_seq(base: str) -> int:
    items = records(base)
    return items[-1]["seq"] if items else 0


def wait_outcome(base: str, since: int, route: str, timeout: float = 5.0) -> dict:
    """The first record after `since` on this route, once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in records(base, since) if r["route"] == route]
        if found and found[0]["outcome"] != "pending":
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished {route} record: {found}")
        time.sleep(0.05)


def run_stub_openai_checks(report: Report, base: str) -> None:
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": "one two three"}]

    def chat_text():
        answer = client.chat.completions.create(model="stub-chat", messages=messages, max_tokens=4)
        assert answer.choices[0].message.content == "the quick brown fox", answer
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 4), answer.usage
        full = client.chat.completions.create(model="stub-chat", messages=messages)
        assert full.choices[0].finish_reason == "stop" and full.usage.completion_tokens == 9, full

    def n_and_logprobs():
        answer = client.chat.completions.create(model="stub-chat", messages=messages, max_tokens=2, n=2,
                                                logprobs=True, top_logprobs=2)
        assert [c.index for c in answer.choices] == [0, 1], answer.choices
        entry = answer.choices[1].logprobs.content[0]
        assert entry.token == "the" and len(entry.top_logprobs) == 2, entry
        chunks = list(client.chat.completions.create(model="stub-chat", messages=messages, max_tokens=2, n=2,
                                                     logprobs=True, stream=True))
        assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}, chunks
        assert any(c.choices and c.choices[0].logprobs for c in chunks), "no logprobs in the stream"

    def embedding_dimensions():
        answer = client.embeddings.create(model="stub-embed", input="text", dimensions=8)
        assert len(answer.data[0].embedding) == 8, answer

    def unknown_model():
        error = expect_raises(openai.NotFoundError, lambda: client.chat.completions.create(
            model="no-such-model", messages=messages), 404)
        assert error.code == "model_not_found", error.body

    def leaks_present():
        raw = client.chat.completions.with_raw_response.create(model="stub-chat", messages=messages, max_tokens=1)
        for header in ("server", "x-request-id", "openai-organization", "openai-processing-ms"):
            assert raw.headers.get(header), f"no {header} header"
        assert raw.headers["server"].startswith("stub-upstream"), raw.headers["server"]
        assert raw.parse().system_fingerprint == "fp_stubleak01"
        assert raw.parse()._request_id.startswith("req_stub_")

    def error_leaks():
        error = expect_raises(openai.InternalServerError, lambda: client.chat.completions.create(
            model="fault-500", messages=messages), 500)
        text = json.dumps(error.body)
        assert base in text and "sk-upstream-LEAK-" in text and KEY in text, text

    def rate_limited():
        error = expect_raises(openai.RateLimitError, lambda: client.chat.completions.create(
            model="fault-429", messages=messages), 429)
        assert error.response.headers["retry-after"] == "1", error.response.headers

    def record():
        since = last_seq(base)
        client.chat.completions.create(model="stub-chat", messages=messages, max_tokens=1, stream=True,
                                       stream_options={"include_usage": True}).close()
        item = wait_outcome(base, since, "openai.chat")
        headers = {k.lower(): v for k, v in item["headers"]}
        assert headers["authorization"] == f"Bearer {KEY}", headers
        body = json.loads(item["body"])
        assert body["model"] == "stub-chat" and body["stream_options"] == {"include_usage": True}, body
        assert item["method"] == "POST" and item["path"] == "/v1/chat/completions" and not item["management"], item

    def stall():
        since = last_seq(base)
        quick = client.with_options(timeout=1.0)
        expect_raises(openai.APITimeoutError, lambda: quick.chat.completions.create(
            model="fault-stall", messages=messages))
        assert wait_outcome(base, since, "openai.chat")["outcome"] == "client_closed"

        def read_stream():
            for _ in quick.chat.completions.create(model="fault-stall", messages=messages, stream=True):
                pass
        expect_raises(openai.APITimeoutError, read_stream)

    def stall_stream_client_hangs_up():
        since = last_seq(base)
        stream = client.chat.completions.create(model="fault-stall", messages=messages, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant", first
        stream.close()
        assert wait_outcome(base, since, "openai.chat")["outcome"] == "client_closed"

    def slow_first_token():
        started = time.monotonic()
        client.chat.completions.create(model="fault-slow-first-token", messages=messages, max_tokens=1)
        assert time.monotonic() - started >= FIRST_TOKEN_DELAY
        started = time.monotonic()
        stream = client.chat.completions.create(model="fault-slow-first-token", messages=messages, stream=True)
        next(iter(stream))
        assert time.monotonic() - started >= FIRST_TOKEN_DELAY
        stream.close()

    def broken_sse():
        def read():
            return list(client.chat.completions.create(model="fault-broken-sse", messages=messages, stream=True))
        expect_raises(json.JSONDecodeError, read)
        expect_raises(json.JSONDecodeError, lambda: client.chat.completions.create(
            model="fault-broken-sse", messages=messages))

    def disconnect():
        def read():
            return list(client.chat.completions.create(model="fault-disconnect", messages=messages, stream=True))
        expect_raises(openai.APIConnectionError, read)

    def error_event():
        def read():
            return list(client.chat.completions.create(model="fault-error-event", messages=messages, stream=True))
        error = expect_raises(openai.APIError, read)
        assert base in str(error.body) and KEY in str(error.body), error.body
        events = list(client.responses.create(model="fault-error-event", input="hi", stream=True))
        assert events[-1].type == "error" and base in events[-1].message, events[-1]

    def huge_chunk():
        chunks = list(client.chat.completions.create(model="fault-huge-chunk", messages=messages, stream=True))
        sizes = [len(c.choices[0].delta.content or "") for c in chunks if c.choices]
        assert max(sizes) == HUGE_BYTES, sizes

    def no_usage():
        chunks = list(client.chat.completions.create(model="fault-no-usage", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
        assert all(c.usage is None and c.choices for c in chunks), chunks[-1]
        assert client.chat.completions.create(model="fault-no-usage", messages=messages).usage is None

    def responses_stall():
        quick = client.with_options(timeout=1.0)

        def read():
            for _ in quick.responses.create(model="fault-stall", input="hi", stream=True):
                pass
        expect_raises(openai.APITimeoutError, read)

    report.check("stub: answers are the deterministic words, usage counts words", chat_text)
    report.check("stub: n=2 and logprobs/top_logprobs parse, plain and streamed", n_and_logprobs)
    report.check("stub: embeddings honour dimensions", embedding_dimensions)
    report.check("stub: an unknown model raises NotFoundError (model_not_found)", unknown_model)
    report.check("stub: leaks its identity in headers and system_fingerprint", leaks_present)
    report.check("stub: fault-500 raises InternalServerError; the body names URL and keys", error_leaks)
    report.check("stub: fault-429 raises RateLimitError with retry-after", rate_limited)
    report.check("stub: records the Authorization header and body it was sent", record)
    report.check("stub: fault-stall times the SDK out, plain and streamed; client_closed recorded", stall)
    report.check("stub: fault-stall stream closed by the client is recorded client_closed",
                 stall_stream_client_hangs_up)
    report.check("stub: fault-slow-first-token delays the answer and the first chunk", slow_first_token)
    report.check("stub: fault-broken-sse makes the SDK raise, streamed and not", broken_sse)
    report.check("stub: fault-disconnect mid-stream raises a protocol error", disconnect)
    report.check("stub: fault-error-event ends a stream with an error in its shape, which the SDK raises", error_event)
    report.check("stub: fault-huge-chunk sends one delta of --huge-bytes", huge_chunk)
    report.check("stub: fault-no-usage sends no usage despite include_usage", no_usage)
    report.check("stub: responses stream stalls with fault-stall", responses_stall)


def run_stub_ollama_checks(report: Report, base: str) -> None:
    client = ollama.Client(host=base, headers={"authorization": f"Bearer {KEY}"})
    messages = [{"role": "user", "content": "one two three"}]

    def listed():
        names = [m.model for m in client.list().models]
        assert names == ["stub-chat:latest", "stub-embed:latest"], names
        assert client.list().models[0].details.family == "llama"

    def show():
        shown = client.show("stub-chat")
        assert shown.capabilities == ["completion"] and shown.modelinfo["general.architecture"] == "llama", shown
        assert "/srv/llm/models" in shown.modelfile, shown.modelfile
        assert client.ps().models[0].model == "stub-chat:latest"

    def chat():
        answer = client.chat(model="stub-chat", messages=messages, options={"num_predict": 2})
        assert answer.message.content == "the quick" and answer.done and answer.done_reason == "length", answer
        assert (answer.prompt_eval_count, answer.eval_count) == (3, 2), answer
        parts = list(client.chat(model="stub-chat:latest", messages=messages, stream=True))
        assert "".join(p.message.content for p in parts) == "the quick brown fox jumps over the lazy dog", parts
        assert parts[-1].done and parts[-1].done_reason == "stop" and not any(p.done for p in parts[:-1])

    def generate():
        answer = client.generate(model="stub-chat", prompt="one two", options={"num_predict": 3})
        assert answer.response == "the quick brown" and answer.context and answer.eval_count == 3, answer
        parts = list(client.generate(model="stub-chat", prompt="one two", stream=True))
        assert parts[-1].done and parts[-1].eval_count == 9, parts[-1]
        assert client.generate(model="stub-chat").done_reason == "load"

    def embed():
        answer = client.embed(model="stub-embed", input=["a b", "c"])
        assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) == EMBED_DIMS, answer
        assert client.embed(model="stub-embed", input="a b").embeddings == answer.embeddings[:1]

    def async_chat():
        async def go():
            aclient = ollama.AsyncClient(host=base, headers={"authorization": f"Bearer {KEY}"})
            parts = [p async for p in await aclient.chat(model="stub-chat", messages=messages, stream=True)]
            assert parts[-1].done, parts
            answer = await aclient.generate(model="stub-chat", prompt="x", options={"num_predict": 1})
            assert answer.response == "the", answer
        asyncio.run(go())

    def errors():
        error = expect_raises(ollama.ResponseError, lambda: client.chat(model="no-such", messages=messages), 404)
        assert "not found" in error.error, error.error
        error = expect_raises(ollama.ResponseError, lambda: client.chat(model="fault-500", messages=messages), 500)
        assert base in error.error and KEY in error.error, error.error
        bad = ollama.Client(host=base, headers={"authorization": "Bearer wrong"})
        expect_raises(ollama.ResponseError, bad.list, 401)

    def broken_stream():
        def read():
            return list(client.chat(model="fault-broken-sse", messages=messages, stream=True))
        expect_raises(json.JSONDecodeError, read)

        def read_error_event():
            return list(client.chat(model="fault-error-event", messages=messages, stream=True))
        error = expect_raises(ollama.ResponseError, read_error_event)
        assert base in error.error, error.error

    def management():
        since = last_seq(base)
        assert client.pull("stub-chat").status == "success"
        assert [p.status for p in client.pull("stub-chat", stream=True)][-1] == "success"
        assert client.push("stub-chat").status == "success"
        assert client.create(model="mine", from_="stub-chat").status == "success"
        assert client.copy("stub-chat", "other").status == "success"
        assert client.delete("other").status == "success"
        with tempfile.NamedTemporaryFile() as blob:
            blob.write(b"\x00\x01 not utf-8 \xff")
            blob.flush()
            digest = client.create_blob(blob.name)
        found = records(base, since)
        routes = [r["route"] for r in found]
        assert routes == ["ollama.pull", "ollama.pull", "ollama.push", "ollama.create", "ollama.copy",
                          "ollama.delete", "ollama.blobs"], routes
        assert all(r["management"] for r in found), found
        assert found[-1]["path"] == f"/api/blobs/{digest}" and found[-1]["body_base64"], found[-1]
        assert not any(r["management"] for r in records(base)[:since]), "a non-management route flagged"
        since = last_seq(base)
        expect_raises(urllib.error.HTTPError, lambda: get_json(base + "/api/pull", KEY))
        assert records(base, since)[0]["management"], "GET /api/pull not flagged"

    report.check("ollama: list", listed)
    report.check("ollama: show (capabilities, model_info, a leaky modelfile) and ps", show)
    report.check("ollama: chat, num_predict honoured, streamed and not", chat)
    report.check("ollama: generate, streamed and not, and the empty-prompt load", generate)
    report.check("ollama: embed, one input and a list", embed)
    report.check("ollama: AsyncClient chat stream and generate", async_chat)
    report.check("ollama: 404, 500 (naming URL and key) and 401 raise ResponseError", errors)
    report.check("ollama: fault-broken-sse breaks the NDJSON stream; fault-error-event raises ResponseError",
                 broken_stream)
    report.check("ollama: management routes answer and are flagged in the record", management)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", help="a llama-server binary to check instead of the stub")
    parser.add_argument("--gguf", help="the model for --llama-server")
    args = parser.parse_args()
    if bool(args.llama_server) != bool(args.gguf):
        parser.error("--llama-server and --gguf go together")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="portcullis-llm-check-") as log_dir:
        servers: list[Process] = []
        try:
            if args.llama_server:
                chat_server, base = start_llama_server(args.llama_server, args.gguf, Path(log_dir), "tiny", [])
                servers.append(chat_server)
                embed_server, embed_base = start_llama_server(args.llama_server, args.gguf, Path(log_dir),
                                                              "tiny-embed", ["--embeddings"])
                servers.append(embed_server)
                print(f"llama-server on {base} (chat) and {embed_base} (embeddings)")

                def health_public():
                    assert get_json(base + "/health")[2] == {"status": "ok"}
                    error = expect_raises(urllib.error.HTTPError, lambda: get_json(base + "/v1/models"))
                    assert error.code == 401, error.code
                report.check("llama-server: /health is public, /v1/models needs the key", health_public)
                run_openai_checks(report, base, embed_base, "tiny", "tiny-embed", responses=True)
            else:
                stub, base = start_stub(Path(log_dir))
                servers.append(stub)
                print(f"stub on {base}")
                run_openai_checks(report, base, base, "stub-chat", "stub-embed", responses=True)
                run_stub_openai_checks(report, base)
                run_stub_ollama_checks(report, base)
        except (OSError, RuntimeError) as error:
            print(f"error: could not start a server: {error}", file=sys.stderr)
            return 2
        finally:
            for server in servers:
                server.stop()
                if report.failed:
                    print(f"--- {server.log_path.name}, last lines:\n{server.tail()}", file=sys.stderr)
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
