#!/usr/bin/env python3
"""A scripted LLM upstream for the gateway's tests: OpenAI's and Ollama's documented shapes,
identity leaks on purpose, faults on request, and a record of everything it was sent.

Python standard library only. It binds 127.0.0.1 and nothing else:

    python3 scripts/llm_upstream_stub.py [--port 0] [--api-key KEY] [--models a,b] [--no-record]

The first line on stdout is the port it listens on (useful with --port 0); then it serves until
SIGTERM or SIGINT. `--verbose` logs one line per request on stderr.

Routes
  OpenAI   GET /v1/models; POST /v1/chat/completions, /v1/completions (both with SSE streaming,
           `stream_options.include_usage`, `n`, `logprobs`/`top_logprobs`, `max_tokens` or
           `max_completion_tokens`), /v1/embeddings (`encoding_format` float or base64, which the
           openai SDK asks for by default; `dimensions`), /v1/responses (plain and streamed text).
  Ollama   GET /, /api/version, /api/tags, /api/ps; POST /api/show, /api/chat, /api/generate
           (NDJSON streaming, the default, or `"stream": false`), /api/embed, /api/embeddings.
  Ollama management (never to be forwarded by a gateway; answered and flagged `management` in
  the record): POST /api/pull, /api/push, /api/create, /api/copy; DELETE /api/delete;
  HEAD/POST /api/blobs/<digest>.
  Control (not recorded, no key needed): GET /__requests[?since=SEQ] returns the record as JSON;
  DELETE /__requests clears it.

Replies are deterministic: the answer is the words of "the quick brown fox jumps over the lazy
dog", one token per word, cut at `max_tokens` (Ollama: `options.num_predict`; then
`finish_reason`/`done_reason` is "length", else "stop"). Prompt tokens are the prompt's
whitespace-separated words. Embeddings are derived from SHA-256 of each input (16 dimensions
unless `dimensions` or --embed-dims says otherwise). Any model named in --models (default
`stub-chat,stub-embed`; Ollama also accepts the `:latest` tag) or starting with `fault-` is
served; any other answers 404 in the route's error shape.

The model `echo` answers with the last message's text (or the prompt) instead, in three-character
pieces: what a gateway sent comes back, split across stream chunks.

Faults, chosen per request by the model name in the body (so concurrent tests do not interfere,
and a gateway test maps one of its model names to, say, `fault-stall` upstream):
  fault-stall             non-streaming: nothing is sent; streaming: headers and the first chunk,
                          then nothing. Either way the connection is held --stall-seconds (300)
                          or until the client hangs up, then closed without a proper end.
  fault-slow-first-token  waits --first-token-delay (2.0 s) before the first token: before the
                          headers when not streaming, after them when streaming.
  fault-broken-sse        streaming: two good chunks, then an event whose JSON is cut off (SSE)
                          or a cut-off NDJSON line (Ollama), then a clean HTTP end with no
                          `[DONE]`/`done`; not streaming: a 200 with a truncated JSON body.
  fault-error-event       streaming: two good chunks, then an error in the stream's own shape
                          (OpenAI: `data: {"error": {...}}`; Responses: `event: error`; Ollama: an
                          `{"error": ...}` line) naming the stub's URL and keys, and a clean HTTP
                          end; not streaming: an ordinary answer.
  fault-disconnect        streaming: two good chunks, then the TCP connection is closed in the
                          middle of an HTTP chunk; not streaming: closed after the headers.
  fault-huge-chunk        one content delta (or the whole content) of --huge-bytes (8 MiB) bytes.
  fault-no-usage          no usage anywhere: no `usage` field, no usage chunk even with
                          include_usage, no Ollama token counts.
  fault-500               500 with an error body naming the stub's URL and credentials.
  fault-429               429 with `retry-after: 1` and an error body in the route's shape.

Identity leaks, on purpose, so a test can assert the gateway scrubs them: every answer carries
the headers `Server: stub-upstream/1.0 (llm-7.internal.example)`, `x-request-id`,
`openai-organization`, `openai-processing-ms`, `openai-version` and `x-ratelimit-*`; OpenAI
bodies carry `system_fingerprint`; Ollama's /api/show carries a modelfile with a local path;
every JSON error body names the stub's own URL, the fake key `LEAK_KEY` below, and, when
--api-key is set, that key too (the credential a gateway holds for its upstream); 500s also name
a local model path.

With --api-key KEY every route but the control ones needs `Authorization: Bearer KEY`; without
it the answer is 401 in OpenAI's shape (`invalid_api_key`) on /v1/* and `{"error": ...}` on
/api/*, and echoes the key it was given, as OpenAI does (masked there, in full here).

The record (GET /__requests) is a JSON list, oldest first, one object per request received:
`seq`, `time`, `method`, `path` (raw, with any query string), `headers` ([name, value] pairs in
the order received, nothing removed), `body` (text, or null with `body_base64` for bytes that
are not UTF-8), `route` (e.g. "openai.chat", "ollama.pull", null if unknown), `management`
(true for the Ollama management paths, whatever the method), `status` (the HTTP status sent, null if none) and
`outcome`: "pending" while being answered, then "completed", "client_closed" (the client hung
up before the answer ended, e.g. a gateway that cancelled its upstream request), "stalled_out",
"disconnected", "broken" or "error_event" (faults), or "stub_error" (a bug here; the traceback is on stderr).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LEAK_KEY = "sk-upstream-LEAK-4f3c2b1a0e9d8c7b6a5f4e3d"
LEAK_SERVER = "stub-upstream/1.0 (llm-7.internal.example)"
LEAK_ORG = "org-stubLEAKinternal0001"
LEAK_FINGERPRINT = "fp_stubleak01"
LEAK_MODEL_PATH = "/srv/llm/models/blobs/sha256-9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
OLLAMA_VERSION = "0.12.6"
WORDS = "the quick brown fox jumps over the lazy dog".split()
MANAGEMENT_ROUTES = {"ollama.pull", "ollama.push", "ollama.create", "ollama.copy", "ollama.delete", "ollama.blobs"}
MANAGEMENT_PATHS = ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/")
MAX_BODY = 256 * 1024 * 1024


class ClientGone(Exception):
    """The client closed the connection before the answer was finished."""


class Record:
    """Every request received, for GET /__requests."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.lock = threading.Lock()
        self.items: list[dict] = []
        self.seq = itertools.count(1)

    def add(self, item: dict) -> dict:
        with self.lock:
            item["seq"] = next(self.seq)
            if self.enabled:
                self.items.append(item)
        return item

    def update(self, item: dict, **fields) -> None:
        with self.lock:
            item.update(fields)

    def since(self, seq: int) -> bytes:
        with self.lock:
            return json.dumps([i for i in self.items if i["seq"] > seq]).encode()

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


class Stub(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", args.port), Handler)
        self.args = args
        self.record = Record(not args.no_record)
        self.models = [m for m in args.models.split(",") if m]
        self.blobs: set[str] = set()
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"
        self.request_ids = itertools.count(1)


def words_in(value) -> int:
    """Whitespace-separated words in a prompt: a string, a list of strings or content parts."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words_in(v) for v in value)
    if isinstance(value, dict):
        return sum(words_in(value.get(k)) for k in ("content", "text", "input") if k in value)
    return 0


def answer_tokens(limit) -> tuple[list[str], str]:
    """The reply's tokens, cut at limit, and the finish reason."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(WORDS):
        return [(" " if i else "") + w for i, w in enumerate(WORDS[:limit])], "length"
    return [(" " if i else "") + w for i, w in enumerate(WORDS)], "stop"


def echo_tokens(body: dict) -> list[str]:
    """The `echo` model's reply: the last message's text (or the prompt), in three-character
    pieces, so that anything a gateway put in the prompt comes back split across chunks."""
    text = ""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        text = content if isinstance(content, str) else ""
    elif isinstance(body.get("prompt"), str):
        text = body["prompt"]
    return [text[i:i + 3] for i in range(0, len(text), 3)] or [""]


def embedding(text: str, dims: int) -> list[float]:
    out: list[float] = []
    block = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        out.extend(round((b - 127.5) / 127.5, 6) for b in digest)
        block += 1
    return out[:dims]


def logprob_entry(token: str, top: int) -> dict:
    return {
        "token": token,
        "logprob": -0.25,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": alt, "logprob": -1.0 - i, "bytes": list(alt.encode())}
            for i, alt in enumerate(WORDS[:top])
        ],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Stub

    # --- plumbing ---------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return LEAK_SERVER

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.args.verbose:
            sys.stderr.write("stub: %s %s\n" % (self.address_string(), format % args))

    def do_GET(self) -> None:
        self.handle_any()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def leak_headers(self) -> list[tuple[str, str]]:
        return [
            ("x-request-id", f"req_stub_{next(self.server.request_ids):08d}"),
            ("openai-organization", LEAK_ORG),
            ("openai-processing-ms", "12"),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
        ]

    def start(self, status: int, content_type: str, length: int | None, extra=()) -> None:
        self.status = status
        self.server.record.update(self.item, status=status)
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in [*self.leak_headers(), *extra]:
            self.send_header(name, value)
        if length is None:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def send_json(self, status: int, body, extra=()) -> None:
        data = json.dumps(body).encode()
        self.start(status, "application/json", len(data), extra)
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.start(status, "text/plain; charset=utf-8", len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ClientGone() from e

    def end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ClientGone() from e

    def peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def wait(self, seconds: float) -> None:
        """Sleep, but notice a client that hangs up meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            if self.peer_closed():
                raise ClientGone()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.05, left))

    def hang_up(self, outcome: str) -> None:
        """End the connection without a proper end of the answer."""
        self.finish_as = outcome
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- dispatch ---------------------------------------------------------------------------

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/__"):
            self.control(path, url.query)
            return
        self.status = None
        self.finish_as = "completed"
        try:
            raw = self.read_body()
        except ValueError:
            self.send_error(413)
            self.close_connection = True
            return
        try:
            body_text, body_b64 = raw.decode("utf-8"), None
        except UnicodeDecodeError:
            body_text, body_b64 = None, base64.b64encode(raw).decode()
        route = self.route(path)
        self.item = self.server.record.add({
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body_text,
            "body_base64": body_b64,
            "route": route,
            "management": path.startswith(MANAGEMENT_PATHS),
            "status": None,
            "outcome": "pending",
        })
        try:
            self.serve(route, path, raw)
        except ClientGone:
            self.finish_as = "client_closed"
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.finish_as = "client_closed"
            self.close_connection = True
        except Exception:
            # A bug in the stub: say so in the record instead of leaving it pending.
            self.server.record.update(self.item, outcome="stub_error")
            raise
        self.server.record.update(self.item, outcome=self.finish_as)

    def control(self, path: str, query: str) -> None:
        self.item = {}
        if path == "/__requests" and self.command == "GET":
            try:
                since = int((parse_qs(query).get("since") or ["0"])[0])
            except ValueError:
                since = 0
            data = self.server.record.since(since)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/__requests" and self.command == "DELETE":
            self.read_body()
            self.server.record.clear()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

    ROUTES = {
        ("GET", "/v1/models"): "openai.models",
        ("POST", "/v1/chat/completions"): "openai.chat",
        ("POST", "/v1/completions"): "openai.completions",
        ("POST", "/v1/embeddings"): "openai.embeddings",
        ("POST", "/v1/responses"): "openai.responses",
        ("GET", "/"): "ollama.root",
        ("HEAD", "/"): "ollama.root",
        ("GET", "/api/version"): "ollama.version",
        ("GET", "/api/tags"): "ollama.tags",
        ("GET", "/api/ps"): "ollama.ps",
        ("POST", "/api/show"): "ollama.show",
        ("POST", "/api/chat"): "ollama.chat",
        ("POST", "/api/generate"): "ollama.generate",
        ("POST", "/api/embed"): "ollama.embed",
        ("POST", "/api/embeddings"): "ollama.embeddings",
        ("POST", "/api/pull"): "ollama.pull",
        ("POST", "/api/push"): "ollama.push",
        ("POST", "/api/create"): "ollama.create",
        ("POST", "/api/copy"): "ollama.copy",
        ("DELETE", "/api/delete"): "ollama.delete",
    }

    def route(self, path: str) -> str | None:
        if path.startswith("/api/blobs/") and self.command in ("HEAD", "POST"):
            return "ollama.blobs"
        return self.ROUTES.get((self.command, path))

    def serve(self, route: str | None, path: str, raw: bytes) -> None:
        ollama = path.startswith("/api/") or path == "/"
        if route is None:
            if ollama:
                self.send_text(404, "404 page not found")
            else:
                self.openai_error(404, f"Invalid URL ({self.command} {path})", "invalid_request_error", None)
            return
        key = self.server.args.api_key
        if key is not None:
            given = self.headers.get("authorization", "")
            if given != f"Bearer {key}":
                shown = given.removeprefix("Bearer ").strip()
                message = f"Incorrect API key provided: {shown!r}."
                if ollama:
                    self.ollama_error(401, message)
                else:
                    self.openai_error(401, message, "invalid_request_error", "invalid_api_key")
                return
        if route in ("openai.models", "ollama.root", "ollama.version", "ollama.tags", "ollama.ps") \
                or route in MANAGEMENT_ROUTES:
            body = {}
            if raw and route in MANAGEMENT_ROUTES:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
        else:
            try:
                body = json.loads(raw)
            except ValueError as e:
                self.bad_request(ollama, f"invalid JSON body: {e}")
                return
            if not isinstance(body, dict):
                self.bad_request(ollama, "the body must be a JSON object")
                return
            model = body.get("model")
            if not isinstance(model, str) or not model:
                self.bad_request(ollama, "'model' must be a non-empty string")
                return
            if not self.known(model, ollama):
                if ollama:
                    self.ollama_error(404, f"model '{model}' not found, try pulling it first ({LEAK_MODEL_PATH})")
                else:
                    self.openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                                      "invalid_request_error", "model_not_found")
                return
            if model.startswith("fault-") and self.early_fault(model, ollama, body):
                return
        getattr(self, route.replace(".", "_"))(body)

    def known(self, model: str, ollama: bool) -> bool:
        if model.startswith("fault-") or model == "echo":
            return True
        if ollama and model.endswith(":latest"):
            model = model.removesuffix(":latest")
        return model in self.server.models

    def early_fault(self, model: str, ollama: bool, body: dict) -> bool:
        """Faults that replace the whole answer; True if one was sent."""
        streaming = self.streaming(body, ollama)
        if model == "fault-500":
            message = f"upstream failure in {self.path}, model path {LEAK_MODEL_PATH}"
            if ollama:
                self.ollama_error(500, message)
            else:
                self.openai_error(500, message, "server_error", "internal_error")
            return True
        if model == "fault-429":
            extra = [("retry-after", "1"), ("x-ratelimit-reset-requests", "1s")]
            if ollama:
                self.ollama_error(429, "too many requests", extra)
            else:
                self.openai_error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", extra=extra)
            return True
        if model == "fault-stall" and not streaming:
            self.stall()
            return True
        if model == "fault-slow-first-token" and not streaming:
            self.wait(self.server.args.first_token_delay)
        if model == "fault-disconnect" and not streaming:
            self.start(200, "application/json", 1000)
            self.hang_up("disconnected")
            return True
        if model == "fault-broken-sse" and not streaming:
            data = b'{"id": "chatcmpl-stub", "object": "chat.completion", "choices": [{"index": 0, "mess'
            self.start(200, "application/json", len(data))
            self.wfile.write(data)
            self.finish_as = "broken"
            return True
        return False

    def stall(self) -> None:
        """Send nothing for --stall-seconds (ClientGone if the client gives up first), then hang up."""
        self.wait(self.server.args.stall_seconds)
        self.hang_up("stalled_out")

    @staticmethod
    def streaming(body: dict, ollama: bool) -> bool:
        stream = body.get("stream")
        return stream is not False if ollama else stream is True

    def bad_request(self, ollama: bool, message: str) -> None:
        if ollama:
            self.ollama_error(400, message)
        else:
            self.openai_error(400, message, "invalid_request_error", None)

    def leak(self) -> str:
        """What every JSON error body ends with: where the upstream is and its keys."""
        key = self.server.args.api_key
        return f" (upstream {self.server.base_url}, key {LEAK_KEY}" + (f", credential {key})" if key else ")")

    def openai_error(self, status: int, message: str, kind: str, code, extra=()) -> None:
        body = {"error": {"message": message + self.leak(), "type": kind, "param": None, "code": code}}
        self.send_json(status, body, extra)

    def ollama_error(self, status: int, message: str, extra=()) -> None:
        self.send_json(status, {"error": message + self.leak()}, extra)

    # --- OpenAI -----------------------------------------------------------------------------

    def openai_models(self, _body: dict) -> None:
        self.send_json(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": LEAK_ORG} for m in self.server.models
        ]})

    def sse_stream(self, events) -> None:
        """Send SSE events (dicts, or None for a pause point) and `[DONE]`, applying stream faults."""
        self.start(200, "text/event-stream; charset=utf-8", None, [("cache-control", "no-cache")])
        error = {"error": {"message": "upstream failure in the middle of the stream" + self.leak(),
                           "type": "server_error", "param": None, "code": "internal_error"}}
        for sent, event in enumerate(events):
            if self.stream_fault(sent, broken=b'data: {"id": "chatcmpl-stub", "choices": [{"index": 0, "delta": {"cont\n\n',
                                 cut=b'data: {"id": ', error=b"data: " + json.dumps(error).encode() + b"\n\n"):
                return
            self.chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        self.chunk(b"data: [DONE]\n\n")
        self.end_chunks()

    def stream_fault(self, sent: int, broken: bytes, cut: bytes, error: bytes) -> bool:
        """Applies the streaming faults before event number `sent` (0 is the first after the
        headers); True if the answer has ended. Also notices a client that has hung up."""
        model = self.item_model
        if model == "fault-slow-first-token" and sent == 0:
            self.wait(self.server.args.first_token_delay)
        elif model == "fault-stall" and sent == 1:
            self.stall()
            return True
        elif model == "fault-broken-sse" and sent == 2:
            self.chunk(broken)
            self.end_chunks()
            self.finish_as = "broken"
            return True
        elif model == "fault-error-event" and sent == 2:
            self.chunk(error)
            self.end_chunks()
            self.finish_as = "error_event"
            return True
        elif model == "fault-disconnect" and sent == 2:
            # An HTTP chunk announced as 1024 bytes, cut short by closing the connection.
            self.wfile.write(b"400\r\n" + cut)
            self.wfile.flush()
            self.hang_up("disconnected")
            return True
        if self.peer_closed():
            raise ClientGone()
        return False

    def completion_setup(self, body: dict, prompt_words: int):
        self.item_model = body["model"]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            self.bad_request(False, "'max_tokens' must be a non-negative integer")
            return None
        tokens, finish = answer_tokens(limit)
        if self.item_model == "echo":
            tokens, finish = echo_tokens(body), "stop"
        if self.item_model == "fault-huge-chunk":
            tokens, finish = ["x" * self.server.args.huge_bytes], "stop"
        n = body.get("n") if isinstance(body.get("n"), int) and 1 <= body.get("n") <= 16 else 1
        usage = None
        if self.item_model != "fault-no-usage":
            prompt = max(prompt_words, 1)
            usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens) * n,
                     "total_tokens": prompt + len(tokens) * n}
        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage") is True
        return tokens, finish, n, usage, include_usage and usage is not None

    def openai_chat(self, body: dict) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.bad_request(False, "'messages' must be a non-empty array")
            return
        setup = self.completion_setup(body, words_in(messages))
        if setup is None:
            return
        tokens, finish, n, usage, include_usage = setup
        want_logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
        ident = f"chatcmpl-stub{self.item['seq']:06d}"
        created = int(time.time())
        base = {"id": ident, "created": created, "model": body["model"], "system_fingerprint": LEAK_FINGERPRINT}
        if not self.streaming(body, False):
            answer = {**base, "object": "chat.completion", "choices": [{
                "index": i,
                "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                "logprobs": {"content": [logprob_entry(t, top) for t in tokens], "refusal": None} if want_logprobs else None,
                "finish_reason": finish,
            } for i in range(n)]}
            if usage is not None:
                answer["usage"] = usage
            self.send_json(200, answer)
            return

        def events():
            extra = {"usage": None} if include_usage else {}
            chunk = {**base, "object": "chat.completion.chunk", **extra}
            for i in range(n):
                yield {**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]}
            for token in tokens:
                for i in range(n):
                    yield {**chunk, "choices": [{
                        "index": i, "delta": {"content": token},
                        "logprobs": {"content": [logprob_entry(token, top)], "refusal": None} if want_logprobs else None,
                        "finish_reason": None}]}
            for i in range(n):
                yield {**chunk, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                yield {**chunk, "choices": [], "usage": usage}

        self.sse_stream(events())

    def openai_completions(self, body: dict) -> None:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            self.bad_request(False, "'prompt' must be a string or an array")
            return
        setup = self.completion_setup(body, words_in(prompt))
        if setup is None:
            return
        tokens, finish, n, usage, include_usage = setup
        ident = f"cmpl-stub{self.item['seq']:06d}"
        base = {"id": ident, "object": "text_completion", "created": int(time.time()), "model": body["model"],
                "system_fingerprint": LEAK_FINGERPRINT}
        if not self.streaming(body, False):
            answer = {**base, "choices": [{"index": i, "text": "".join(tokens), "logprobs": None,
                                           "finish_reason": finish} for i in range(n)]}
            if usage is not None:
                answer["usage"] = usage
            self.send_json(200, answer)
            return

        def events():
            extra = {"usage": None} if include_usage else {}
            for token_index, token in enumerate(tokens):
                last = token_index == len(tokens) - 1
                for i in range(n):
                    yield {**base, **extra, "choices": [{"index": i, "text": token, "logprobs": None,
                                                         "finish_reason": finish if last else None}]}
            if include_usage:
                yield {**base, "choices": [], "usage": usage}

        self.sse_stream(events())

    def openai_embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self.bad_request(False, "'input' must be a string or a non-empty array")
            return
        if all(isinstance(i, int) for i in inputs):
            inputs = [" ".join(map(str, inputs))]
        texts = [i if isinstance(i, str) else " ".join(map(str, i)) if isinstance(i, list) else str(i) for i in inputs]
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) and body["dimensions"] > 0 \
            else self.server.args.embed_dims
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding(text, dims)
            value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if base64_wanted else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        prompt = max(sum(len(t.split()) for t in texts), 1)
        answer = {"object": "list", "data": data, "model": body["model"]}
        if body["model"] != "fault-no-usage":
            answer["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        self.send_json(200, answer)

    def openai_responses(self, body: dict) -> None:
        given = body.get("input")
        if not isinstance(given, (str, list)):
            self.bad_request(False, "'input' must be a string or an array")
            return
        self.item_model = body["model"]
        tokens, finish = answer_tokens(body.get("max_output_tokens"))
        if self.item_model == "fault-huge-chunk":
            tokens, finish = ["x" * self.server.args.huge_bytes], "stop"
        prompt = max(words_in(given) + words_in(body.get("instructions")), 1)
        ident = f"resp_stub{self.item['seq']:06d}"
        message_id = f"msg_stub{self.item['seq']:06d}"
        text = "".join(tokens)

        def response(status: str, output: list, usage: bool) -> dict:
            out = {
                "id": ident, "object": "response", "created_at": int(time.time()), "status": status,
                "model": body["model"], "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "temperature": 1.0, "top_p": 1.0, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" and status != "in_progress" else None,
                "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
                "metadata": {}, "previous_response_id": None, "text": {"format": {"type": "text"}}, "truncation": "disabled",
                "usage": None,
            }
            if usage and self.item_model != "fault-no-usage":
                out["usage"] = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                                "output_tokens": len(tokens), "output_tokens_details": {"reasoning_tokens": 0},
                                "total_tokens": prompt + len(tokens)}
            return out

        final_status = "incomplete" if finish == "length" else "completed"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {"type": "message", "id": message_id, "status": final_status, "role": "assistant", "content": [part]}
        if not self.streaming(body, False):
            self.send_json(200, response(final_status, [message], True))
            return
        seq = itertools.count()

        def events():
            yield {"type": "response.created", "sequence_number": next(seq), "response": response("in_progress", [], False)}
            yield {"type": "response.in_progress", "sequence_number": next(seq), "response": response("in_progress", [], False)}
            yield {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
                   "item": {**message, "status": "in_progress", "content": []}}
            yield {"type": "response.content_part.added", "sequence_number": next(seq), "item_id": message_id,
                   "output_index": 0, "content_index": 0, "part": {**part, "text": ""}}
            for token in tokens:
                yield {"type": "response.output_text.delta", "sequence_number": next(seq), "item_id": message_id,
                       "output_index": 0, "content_index": 0, "delta": token, "logprobs": []}
            yield {"type": "response.output_text.done", "sequence_number": next(seq), "item_id": message_id,
                   "output_index": 0, "content_index": 0, "text": text, "logprobs": []}
            yield {"type": "response.content_part.done", "sequence_number": next(seq), "item_id": message_id,
                   "output_index": 0, "content_index": 0, "part": part}
            yield {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0, "item": message}
            kind = "response.incomplete" if final_status == "incomplete" else "response.completed"
            yield {"type": kind, "sequence_number": next(seq), "response": response(final_status, [message], True)}

        self.responses_stream(events())

    def responses_stream(self, events) -> None:
        """The Responses API names each SSE event and sends no `[DONE]`."""
        self.start(200, "text/event-stream; charset=utf-8", None, [("cache-control", "no-cache")])
        error = {"type": "error", "code": "server_error", "param": None, "sequence_number": 2,
                 "message": "upstream failure in the middle of the stream" + self.leak()}
        for sent, event in enumerate(events):
            if self.stream_fault(sent, broken=b'event: response.output_text.delta\ndata: {"type": "response.output_te\n\n',
                                 cut=b"event: response", error=f"event: error\ndata: {json.dumps(error)}\n\n".encode()):
                return
            self.chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.end_chunks()

    # --- Ollama -----------------------------------------------------------------------------

    @staticmethod
    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

    @staticmethod
    def details() -> dict:
        return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "126K", "quantization_level": "F32"}

    def ollama_name(self, model: str) -> str:
        return model if ":" in model else f"{model}:latest"

    def ollama_root(self, _body: dict) -> None:
        self.send_text(200, "Ollama is running")

    def ollama_version(self, _body: dict) -> None:
        self.send_json(200, {"version": OLLAMA_VERSION})

    def ollama_tags(self, _body: dict) -> None:
        self.send_json(200, {"models": [{
            "name": self.ollama_name(m), "model": self.ollama_name(m), "modified_at": "2025-10-01T12:00:00.000000000Z",
            "size": 516000, "digest": hashlib.sha256(m.encode()).hexdigest(), "details": self.details(),
        } for m in self.server.models]})

    def ollama_ps(self, _body: dict) -> None:
        self.send_json(200, {"models": [{
            "name": self.ollama_name(m), "model": self.ollama_name(m), "size": 516000,
            "digest": hashlib.sha256(m.encode()).hexdigest(), "details": self.details(),
            "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0, "context_length": 2048,
        } for m in self.server.models[:1]]})

    def ollama_show(self, body: dict) -> None:
        model = body["model"]
        embed = "embed" in model
        self.send_json(200, {
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {LEAK_MODEL_PATH}\nPARAMETER num_ctx 2048\n",
            "parameters": "num_ctx                        2048",
            "template": "{{ .Prompt }}",
            "details": self.details(),
            "model_info": {"general.architecture": "llama", "general.parameter_count": 126000,
                           "llama.context_length": 2048, "llama.embedding_length": 64},
            "capabilities": ["embedding"] if embed else ["completion"],
            "modified_at": "2025-10-01T12:00:00.000000000Z",
        })

    def ollama_counts(self, prompt: int, completion: int) -> dict:
        if self.item_model == "fault-no-usage":
            return {}
        return {"total_duration": 5_000_000, "load_duration": 1_000_000, "prompt_eval_count": max(prompt, 1),
                "prompt_eval_duration": 1_000_000, "eval_count": completion, "eval_duration": 3_000_000}

    def ollama_answer(self, body: dict, prompt_words: int, piece) -> None:
        """Shared by /api/chat and /api/generate; piece(text) is the route's content field."""
        self.item_model = body["model"]
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        tokens, finish = answer_tokens(options.get("num_predict"))
        if self.item_model == "echo":
            tokens, finish = echo_tokens(body), "stop"
        if self.item_model == "fault-huge-chunk":
            tokens, finish = ["x" * self.server.args.huge_bytes], "stop"
        base = {"model": body["model"], "created_at": self.now()}
        final = {**base, **piece(""), "done": True, "done_reason": finish,
                 **self.ollama_counts(prompt_words, len(tokens))}
        if self.route_name == "ollama.generate":
            final["context"] = list(range(1, max(prompt_words, 1) + len(tokens) + 1))
        if not self.streaming(body, True):
            self.send_json(200, {**final, **piece("".join(tokens))})
            return
        self.start(200, "application/x-ndjson", None)
        lines = [{**base, **piece(t), "done": False} for t in tokens] + [final]
        error = json.dumps({"error": "upstream failure in the middle of the stream" + self.leak()}).encode() + b"\n"
        for sent, line in enumerate(lines):
            if self.stream_fault(sent, broken=b'{"model": "fault-broken-sse", "message": {"role": "assis\n',
                                 cut=b'{"model": ', error=error):
                return
            self.chunk(json.dumps(line).encode() + b"\n")
        self.end_chunks()

    def ollama_chat(self, body: dict) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            self.bad_request(True, "messages must be an array")
            return
        self.route_name = "ollama.chat"
        self.ollama_answer(body, words_in(messages), lambda t: {"message": {"role": "assistant", "content": t}})

    def ollama_generate(self, body: dict) -> None:
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            self.bad_request(True, "prompt must be a string")
            return
        if prompt == "" and not body.get("images"):
            # Ollama answers an empty prompt by loading the model.
            self.send_json(200, {"model": body["model"], "created_at": self.now(), "response": "", "done": True,
                                 "done_reason": "load"})
            return
        self.route_name = "ollama.generate"
        self.ollama_answer(body, words_in(prompt) + words_in(body.get("system")), lambda t: {"response": t})

    def ollama_embed(self, body: dict) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            self.bad_request(True, "invalid input type")
            return
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) and body["dimensions"] > 0 \
            else self.server.args.embed_dims
        answer = {"model": body["model"], "embeddings": [embedding(t, dims) for t in inputs]}
        if body["model"] != "fault-no-usage":
            answer.update(total_duration=2_000_000, load_duration=500_000,
                          prompt_eval_count=max(sum(len(t.split()) for t in inputs), 1))
        self.send_json(200, answer)

    def ollama_embeddings(self, body: dict) -> None:
        prompt = body.get("prompt", "")
        self.send_json(200, {"embedding": embedding(prompt if isinstance(prompt, str) else "", self.server.args.embed_dims)})

    def ollama_progress(self, body: dict, statuses: list[str]) -> None:
        if not self.streaming(body, True):
            self.send_json(200, {"status": "success"})
            return
        self.start(200, "application/x-ndjson", None)
        for status in statuses + ["success"]:
            self.chunk(json.dumps({"status": status}).encode() + b"\n")
        self.end_chunks()

    def ollama_pull(self, body: dict) -> None:
        self.ollama_progress(body, ["pulling manifest", "verifying sha256 digest", "writing manifest"])

    def ollama_push(self, body: dict) -> None:
        self.ollama_progress(body, ["retrieving manifest", "pushing manifest"])

    def ollama_create(self, body: dict) -> None:
        self.ollama_progress(body, ["parsing modelfile", "writing manifest"])

    def ollama_copy(self, _body: dict) -> None:
        self.send_json(200, {})

    def ollama_delete(self, _body: dict) -> None:
        self.send_json(200, {})

    def ollama_blobs(self, _body: dict) -> None:
        digest = urlsplit(self.path).path.removeprefix("/api/blobs/")
        if self.command == "HEAD":
            self.send_json(200 if digest in self.server.blobs else 404, {})
        else:
            self.server.blobs.add(digest)
            self.send_json(201, {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--api-key", help="require `Authorization: Bearer KEY` on every route but the control ones")
    ap.add_argument("--models", default="stub-chat,stub-embed", help="comma-separated model names served")
    ap.add_argument("--embed-dims", type=int, default=16)
    ap.add_argument("--stall-seconds", type=float, default=300.0)
    ap.add_argument("--first-token-delay", type=float, default=2.0)
    ap.add_argument("--huge-bytes", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--no-record", action="store_true", help="keep no record (for benchmarks)")
    ap.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = ap.parse_args()

    server = Stub(args)
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
