#!/usr/bin/env python3
"""Check that Triton's own Python HTTP client works against a real Portcullis server.

How to run (from the repository root, with a built binary):

    python3 -m venv /root/.venvs/triton
    /root/.venvs/triton/bin/pip install -r scripts/tritonclient-requirements.txt
    /root/.venvs/triton/bin/python scripts/tritonclient_check.py [PORTCULLIS_BIN]

The binary is the first argument, else $PORTCULLIS_BIN, else target/debug/portcullis (relative
paths are taken from the repository root). The script starts `portcullis demo` in a temporary
data directory on free ports, reads the URL and the API key from its banner, and drives it with
`tritonclient.http` as a Triton user would: health and metadata with and without the key, every
known answer in models/credit-risk/checks.json through the binary tensor extension, through pure
JSON and with no outputs requested, and the refusals (404 for a model the key may not use, 401
without a key). Then it starts `portcullis demo --tls` (HTTPS with a CA the demo makes) and runs
the client over TLS trusting that CA: with the key, with the demo's client certificate as the
credential (mutual TLS), and without trusting the CA, which must fail. It prints one line per
check, then `N passed, M failed`, and exits 1 if any check failed (2 if a server could not be
started). The servers are always stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "models" / "credit-risk" / "checks.json"
MODEL = "credit-risk"
MODEL_VERSION = "1"
SHADOW = "credit-risk-shadow"
STARTUP_TIMEOUT = 60.0  # seconds for the demo to load its models and print its banner
STOP_TIMEOUT = 10.0  # seconds for the demo to exit after SIGTERM

URL_LINE = re.compile(r"serving the credit-risk model on (https?)://(127\.0\.0\.1:\d+) ")
KEY_LINE = re.compile(r"^\s*(ptcl_sk_\S+)\s*$")
BANNER_END = "Press Ctrl-C to stop."


class DemoServer:
    """A `portcullis demo` process in its own data directory, with its URL and API key."""

    def __init__(self, binary: Path, work_dir: Path, tls: bool = False):
        self.log_path = work_dir / "stderr.log"
        self._log = open(self.log_path, "wb")
        data_dir = work_dir / "data"
        self.tls_dir = data_dir / "tls"
        command = [binary, "demo", "--data-dir", data_dir, "--port", "0", "--admin-port", "0"]
        if tls:
            command.append("--tls")
        # NO_COLOR keeps ANSI colours out of the log, which is shown when a check fails.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        # A thread reads stdout to its end, so the banner can be awaited with a deadline and the
        # server never blocks on a full pipe.
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        try:
            self.scheme, self.address, self.demo_key = self._read_banner()
            self.key = self._create_raw_key(binary, data_dir)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}; its stderr ends with:\n{self.stderr_tail()}") from None

    @staticmethod
    def _create_raw_key(binary: Path, data_dir: Path) -> str:
        """A key for credit-risk that sees raw outputs, so answers compare exactly with
        scikit-learn's; the demo's own key gets the model's minimised default."""
        config = data_dir / "portcullis.toml"
        command = [binary, "keys", "create", "--config", config, "--name", "tritonclient",
                   "--models", "credit-risk", "--output", "raw", "--widen-output", "--json"]
        created = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"keys create failed: {created.stderr.strip()}")
        return json.loads(created.stdout)["key"]

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_banner(self) -> tuple[str, str, str]:
        scheme = address = key = None
        while True:
            try:
                line = self._lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                raise RuntimeError(f"no banner within {STARTUP_TIMEOUT:.0f} s") from None
            if line is None:
                status = self.process.wait()
                raise RuntimeError(f"the demo exited with status {status} before its banner ended")
            if match := URL_LINE.search(line):
                scheme, address = match.group(1), match.group(2)
            elif match := KEY_LINE.match(line):
                key = match.group(1)
            elif line.strip() == BANNER_END:
                break
        if scheme is None or address is None or key is None:
            raise RuntimeError("the banner names no URL or no API key")
        return scheme, address, key

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Report:
    """Runs named checks, prints one line for each and counts the outcomes."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, test) -> None:
        try:
            test()
        # Any exception, from an assertion or from the client, fails the check and only it.
        except Exception as error:
            self.failed += 1
            detail = str(error).replace("\n", " ")
            print(f"FAIL  {name}: {type(error).__name__}: {detail}")
        else:
            self.passed += 1
            print(f"ok    {name}")


def expect_status(status: str, call) -> None:
    """Asserts that `call` raises InferenceServerException with this HTTP status (a string)."""
    try:
        call()
    except InferenceServerException as error:
        assert error.status() == status, (
            f"status {error.status()!r} ({error.message()}), expected {status!r}"
        )
    else:
        raise AssertionError(f"the call succeeded, expected status {status}")


def features_input(tensor: dict, binary: bool) -> httpclient.InferInput:
    data = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    infer_input = httpclient.InferInput(tensor["name"], list(data.shape), tensor["datatype"])
    infer_input.set_data_from_numpy(data, binary_data=binary)
    return infer_input


def infer_case(client, headers: dict, case: dict, tolerance: float, binary: bool | None,
               request_id: str, model_version: str = "", compression: str | None = None) -> None:
    """Sends one checks.json case and compares the answer with the expected outputs.

    binary=True sends the inputs and asks for the outputs with the binary tensor extension,
    binary=False uses pure JSON both ways, and binary=None sends binary inputs and names no
    outputs (the client then asks for every output in binary with `binary_data_output`).
    """
    inputs = [features_input(tensor, binary is not False) for tensor in case["inputs"]]
    outputs = None
    if binary is not None:
        outputs = [
            httpclient.InferRequestedOutput(tensor["name"], binary_data=binary)
            for tensor in case["outputs"]
        ]
    result = client.infer(MODEL, inputs, model_version=model_version, outputs=outputs,
                          request_id=request_id, headers=headers,
                          request_compression_algorithm=compression)

    response = result.get_response()
    assert response.get("id") == request_id, f"id {response.get('id')!r}, expected {request_id!r}"
    assert response.get("model_name") == MODEL, f"model_name {response.get('model_name')!r}"
    returned = sorted(output["name"] for output in response["outputs"])
    assert returned == sorted(tensor["name"] for tensor in case["outputs"]), f"outputs {returned}"
    for expected in case["outputs"]:
        name = expected["name"]
        output = result.get_output(name)
        assert output["datatype"] == expected["datatype"], f"{name}: datatype {output['datatype']}"
        in_binary = "binary_data_size" in output.get("parameters", {})
        assert in_binary == (binary is not False), f"{name}: binary_data_size given: {in_binary}"
        actual = result.as_numpy(name)
        assert list(actual.shape) == expected["shape"], f"{name}: shape {list(actual.shape)}"
        if expected["datatype"] == "INT64":
            assert actual.dtype == np.int64, f"{name}: dtype {actual.dtype}"
            assert actual.ravel().tolist() == expected["data"], f"{name}: {actual.ravel().tolist()}"
        else:
            assert actual.dtype == np.float32, f"{name}: dtype {actual.dtype}"
            wanted = np.array(expected["data"], dtype=np.float64)
            difference = float(np.max(np.abs(actual.ravel() - wanted)))
            assert difference <= tolerance, (
                f"{name}: differs by {difference:g} (tolerance {tolerance:g})"
            )


def run_checks(client, key: str, report: Report) -> None:
    # tritonclient writes Inference-Header-Content-Length into the headers dict it is given, so
    # every call gets a fresh one: a dict reused after a binary request would carry a stale length.
    def auth() -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def server_live():
        assert client.is_server_live() is True

    def server_ready():
        assert client.is_server_ready() is True

    def server_metadata():
        metadata = client.get_server_metadata(headers=auth())
        assert metadata.get("name"), f"metadata {metadata}"
        extensions = metadata.get("extensions", [])
        assert "binary_tensor_data" in extensions, f"extensions {extensions}"

    def server_metadata_x_api_key():
        assert client.get_server_metadata(headers={"x-api-key": key}).get("name")

    def model_metadata():
        metadata = client.get_model_metadata(MODEL, headers=auth())

        def tensors(kind: str) -> list[tuple]:
            return sorted((t["name"], t["datatype"], t["shape"]) for t in metadata[kind])

        assert metadata["name"] == MODEL, f"name {metadata['name']!r}"
        assert tensors("inputs") == [("features", "FP32", [-1, 8])], f"inputs {metadata['inputs']}"
        expected_outputs = [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 2])]
        assert tensors("outputs") == expected_outputs, f"outputs {metadata['outputs']}"

    def model_ready():
        assert client.is_model_ready(MODEL, headers=auth()) is True

    report.check("server live without a key", server_live)
    report.check("server ready without a key", server_ready)
    report.check("server metadata without a key is 401",
                 lambda: expect_status("401", client.get_server_metadata))
    report.check("server metadata with the key (Authorization: Bearer)", server_metadata)
    report.check("server metadata with the key (x-api-key)", server_metadata_x_api_key)
    report.check(f"model metadata of {MODEL}", model_metadata)
    report.check(f"model {MODEL} ready", model_ready)

    checks = json.loads(CHECKS.read_text())
    tolerance = checks["tolerance"]
    modes = {"binary": True, "json": False, "no outputs requested": None}
    for mode, binary in modes.items():
        for index, case in enumerate(checks["cases"]):
            request_id = f"case-{index}-{mode.replace(' ', '-')}"
            report.check(
                f"infer {MODEL} case {index} {case['inputs'][0]['shape']} ({mode})",
                lambda case=case, binary=binary, request_id=request_id: infer_case(
                    client, auth(), case, tolerance, binary, request_id
                ),
            )

    case = checks["cases"][1]
    for compression in ("gzip", "deflate"):
        report.check(
            f"infer {MODEL} case 1 (binary, request compressed with {compression})",
            lambda compression=compression: infer_case(
                client, auth(), case, tolerance, True, f"case-1-{compression}", compression=compression
            ),
        )

    case = checks["cases"][0]
    report.check(
        f"infer {MODEL} version {MODEL_VERSION} case 0 (binary)",
        lambda: infer_case(client, auth(), case, tolerance, True, "case-0-version", MODEL_VERSION),
    )
    report.check(
        f"infer {SHADOW} with a key that may not use it is 404",
        lambda: expect_status(
            "404", lambda: client.infer(SHADOW, [features_input(case["inputs"][0], True)],
                                        headers=auth())
        ),
    )
    report.check(
        f"infer {MODEL} without a key is 401",
        lambda: expect_status(
            "401", lambda: client.infer(MODEL, [features_input(case["inputs"][0], True)])
        ),
    )


def run_tls_checks(server: DemoServer, report: Report) -> None:
    """The client over HTTPS, trusting the demo's CA: with the key, and with the demo's client
    certificate as the only credential (the demo maps it to a principal that gets labels)."""
    ca = str(server.tls_dir / "ca.pem")
    checks = json.loads(CHECKS.read_text())
    case = checks["cases"][0]

    def tls_client(**ssl_options) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(
            url=server.address, ssl=True, ssl_options={"ca_certs": ca, **ssl_options}
        )

    def with_key(binary: bool):
        client = tls_client()
        try:
            auth = {"Authorization": f"Bearer {server.key}"}
            assert client.get_model_metadata(MODEL, headers=auth)["name"] == MODEL
            infer_case(client, auth, case, checks["tolerance"], binary, f"tls-{binary}")
        finally:
            client.close()

    def without_key_is_401():
        client = tls_client()
        try:
            expect_status("401", lambda: client.get_model_metadata(MODEL))
        finally:
            client.close()

    def client_certificate():
        client = tls_client(certfile=str(server.tls_dir / "client.pem"),
                            keyfile=str(server.tls_dir / "client-key.pem"))
        try:
            result = client.infer(MODEL, [features_input(case["inputs"][0], True)])
            names = [output["name"] for output in result.get_response()["outputs"]]
            assert names == ["label"], f"outputs {names}: the certificate's policy is label"
            labels = [label.decode() for label in result.as_numpy("label").ravel()]
            assert set(labels) <= {"repay", "default"}, f"labels {labels}"
        finally:
            client.close()

    def untrusted_ca_fails():
        client = httpclient.InferenceServerClient(url=server.address, ssl=True)
        try:
            client.get_model_metadata(MODEL, headers={"Authorization": f"Bearer {server.key}"})
        except ssl.SSLError:
            return
        except InferenceServerException as error:
            raise AssertionError(f"the server answered without a trusted certificate: {error}")
        finally:
            client.close()
        raise AssertionError("the connection succeeded without trusting the demo's CA")

    report.check("TLS: metadata and infer with the key (binary)", lambda: with_key(True))
    report.check("TLS: metadata and infer with the key (json)", lambda: with_key(False))
    report.check("TLS: without a key is 401", without_key_is_401)
    report.check("TLS: the demo's client certificate is a credential (labels only)", client_certificate)
    report.check("TLS: a client that does not trust the demo's CA cannot connect", untrusted_ca_fails)


def main() -> int:
    default = os.environ.get("PORTCULLIS_BIN", "target/debug/portcullis")
    binary = ROOT / (sys.argv[1] if len(sys.argv) > 1 else default)
    report = Report()
    for tls in (False, True):
        with tempfile.TemporaryDirectory(prefix="portcullis-tritonclient-") as work_dir:
            try:
                server = DemoServer(binary, Path(work_dir), tls=tls)
            except (OSError, RuntimeError) as error:
                print(f"error: could not start {binary} demo: {error}", file=sys.stderr)
                return 2
            failed_before = report.failed
            try:
                print(f"portcullis demo on {server.scheme}://{server.address}")
                if tls:
                    run_tls_checks(server, report)
                else:
                    client = httpclient.InferenceServerClient(url=server.address)
                    try:
                        run_checks(client, server.key, report)
                    finally:
                        client.close()
            finally:
                server.stop()
                if report.failed > failed_before:
                    print(f"server stderr, last lines:\n{server.stderr_tail()}", file=sys.stderr)
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
