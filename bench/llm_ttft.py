#!/usr/bin/env python3
"""Time to first token of a streamed chat completion, direct and through a gateway.

    python3 bench/llm_ttft.py URL MODEL KEY N

Sends N streamed requests one after another (stdlib http.client, one keep-alive connection) and
prints the median and p99 time from sending the request to reading the first `data:` line, in
milliseconds, as `ttft_p50_ms ttft_p99_ms`.
"""

import http.client
import json
import sys
import time
from urllib.parse import urlparse


def main() -> None:
    url, model, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16, "stream": True})
    headers = {"Content-Type": "application/json"}
    if key != "-":
        headers["Authorization"] = f"Bearer {key}"
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        seen = b""
        while b"data:" not in seen:
            piece = response.read1(65536)
            if not piece:
                break
            seen += piece
        times.append((time.perf_counter() - started) * 1000)
        response.read()
    times.sort()
    print(f"{times[len(times) // 2]:.3f} {times[min(len(times) - 1, int(len(times) * 0.99))]:.3f}")


if __name__ == "__main__":
    main()
