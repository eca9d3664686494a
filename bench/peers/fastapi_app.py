"""The usual Python way to serve an ONNX model behind an API key: FastAPI + onnxruntime.

A peer for bench/compare.py, written the way a team would write it: an API-key dependency, one
onnxruntime session per worker process, the Open Inference Protocol request and response shapes
(so the load generator sends both servers the same bytes).

    BENCH_MODEL=models/credit-risk/model.onnx BENCH_KEYS_FILE=keys.txt \
        uvicorn bench.peers.fastapi_app:app --workers 2 --port 8000

Keys are read from BENCH_KEYS_FILE (one per line) and compared in constant time.
"""

from __future__ import annotations

import hmac
import os

import numpy as np
import onnxruntime as ort
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
NAMES = {np.dtype(value): key for key, value in DTYPES.items()}

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"])
with open(os.environ["BENCH_KEYS_FILE"]) as keys_file:
    KEYS = [line.strip().encode() for line in keys_file if line.strip()]

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


def api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not presented or not any(hmac.compare_digest(presented.encode(), key) for key in KEYS):
        raise HTTPException(status_code=401, detail="a valid credential is required")
    return presented


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request, _key: str = Depends(api_key)):
    body = await request.json()
    feeds = {}
    for tensor in body["inputs"]:
        dtype = DTYPES.get(tensor["datatype"])
        if dtype is None:
            raise HTTPException(status_code=400, detail=f"unsupported datatype {tensor['datatype']}")
        feeds[tensor["name"]] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        {"name": name, "datatype": NAMES.get(value.dtype, "FP32"), "shape": list(value.shape),
         "data": value.ravel().tolist()}
        for name, value in zip(names, results)
    ]
    return JSONResponse({"model_name": model, "outputs": outputs})


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}
