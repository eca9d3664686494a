#!/usr/bin/env python3
"""Generate Portcullis' fixture ONNX models from scikit-learn, deterministically.

How to run (from the repository root):

    python3 -m venv /root/.venvs/models
    /root/.venvs/models/bin/pip install -r models/requirements.txt
    /root/.venvs/models/bin/python models/make_models.py

The script needs no network access beyond the pip install: all training data is
synthetic and generated here from fixed seeds. It writes, next to this file:

    credit-risk/model.onnx      credit-risk/checks.json      (bundled demo, tract)
    fixtures/mlp/model.onnx     fixtures/mlp/checks.json     (tract)
    fixtures/gbt/model.onnx     fixtures/gbt/checks.json     (onnxruntime)

Every model has the same interface:
    input   features       float32 [batch, n_features]   (batch is symbolic)
    output  label          int64   [batch]
    output  probabilities  float32 [batch, 2]

checks.json holds known input/output pairs; the expected outputs come from
scikit-learn's predict()/predict_proba() (not from an ONNX runtime), so the file
proves that the ONNX graph agrees with scikit-learn. Before writing anything the
script runs every model with onnxruntime (and, if the optional `tract` Python
bindings are installed, the tract-targeted models with tract as well) and exits
non-zero if any label differs or any probability differs by more than the
tolerance (absolute difference, 1e-5 for all three models).

Why the MLP graphs are built by hand: skl2onnx converts MLPClassifier with an
`ai.onnx.ml` ArrayFeatureExtractor (to map argmax indices to class labels) and
StandardScaler with `ai.onnx.ml` Scaler; the pure-Rust tract runtime does not
implement the ml domain. The credit-risk and mlp graphs are therefore assembled
with onnx.helper from the fitted scikit-learn weights, using only standard
`ai.onnx` operators. The gbt model is converted by skl2onnx as is (zipmap off);
it uses TreeEnsembleClassifier and is served by onnxruntime.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

HERE = Path(__file__).resolve().parent
OPSET = 17  # standard ai.onnx opset for every model
ML_OPSET = 3  # ai.onnx.ml opset for the gbt model
IR_VERSION = 8  # readable by onnx >= 1.12 / older runtimes
TOLERANCE = 1e-5  # max abs diff allowed for probabilities (labels must match exactly)
BOUNDARY_MARGIN = 0.01  # check rows need |p(class 1) - 0.5| >= this
BATCH = "batch"  # name of the symbolic batch dimension

CREDIT_FEATURES = [
    "age",
    "income",
    "debt_ratio",
    "credit_lines",
    "late_payments_90d",
    "loan_amount",
    "employment_years",
    "utilisation",
]


# --------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------


def credit_risk_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Plausible-looking tabular credit data; label 1 = default, 0 = repay."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(21, 75, n).round()
    employment_years = np.minimum(rng.gamma(2.0, 4.0, n), age - 18).round(1)
    income = (rng.lognormal(10.6, 0.5, n) * (1 + employment_years / 40)).round(-2)
    debt_ratio = rng.beta(2, 5, n) * 1.5
    credit_lines = rng.poisson(5, n).astype(float)
    late_payments_90d = rng.poisson(0.4, n).astype(float)
    loan_amount = (rng.lognormal(9.3, 0.7, n)).round(-1)
    utilisation = rng.beta(2, 3, n)

    X = np.column_stack(
        [age, income, debt_ratio, credit_lines, late_payments_90d,
         loan_amount, employment_years, utilisation]
    )
    logit = (
        -1.2
        - 0.03 * (age - 45)
        - 0.9 * (np.log(income) - 10.8)
        + 2.2 * (debt_ratio - 0.4)
        - 0.05 * (credit_lines - 5)
        + 0.9 * late_payments_90d
        + 0.6 * (np.log(loan_amount) - 9.3)
        - 0.04 * employment_years
        + 2.0 * (utilisation - 0.4)
        + 0.8 * np.maximum(debt_ratio - 0.8, 0) * utilisation * 4  # a non-linear bit
    )
    p = 1 / (1 + np.exp(-logit))
    y = (rng.uniform(size=n) < p).astype(np.int64)
    # Round the features to float32 so that what scikit-learn sees during
    # training and checks is exactly what the ONNX model will receive.
    return X.astype(np.float32).astype(np.float64), y


def generic_data(n: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=n,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_redundant=n_features // 5,
        n_classes=2,
        flip_y=0.03,
        class_sep=1.0,
        random_state=seed,
    )
    return X.astype(np.float32).astype(np.float64), y.astype(np.int64)


# --------------------------------------------------------------------------
# ONNX construction helpers
# --------------------------------------------------------------------------


def io_values(n_features: int):
    inp = helper.make_tensor_value_info("features", TensorProto.FLOAT, [BATCH, n_features])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH, 2])
    return inp, label, probs


def const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name=name)


def mlp_to_onnx(
    mlp: MLPClassifier,
    n_features: int,
    graph_name: str,
    doc: str,
    scaler: StandardScaler | None = None,
) -> onnx.ModelProto:
    """Standard-ops graph for a fitted binary MLPClassifier (optionally preceded
    by a fitted StandardScaler). Mirrors sklearn's forward pass exactly."""
    if mlp.out_activation_ != "logistic" or list(mlp.classes_) != [0, 1]:
        raise SystemExit("mlp_to_onnx only handles binary MLPClassifier with classes [0, 1]")
    act = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid"}.get(mlp.activation)
    if act is None:
        raise SystemExit(f"unsupported activation {mlp.activation}")

    nodes, inits = [], []
    x = "features"
    if scaler is not None:
        inits += [
            const("scaler_mean", scaler.mean_.astype(np.float32)),
            const("scaler_scale", scaler.scale_.astype(np.float32)),
        ]
        nodes += [
            helper.make_node("Sub", [x, "scaler_mean"], ["centred"], name="scaler_sub"),
            helper.make_node("Div", ["centred", "scaler_scale"], ["scaled"], name="scaler_div"),
        ]
        x = "scaled"

    n_layers = len(mlp.coefs_)
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        inits += [const(f"W{i}", w.astype(np.float32)), const(f"B{i}", b.astype(np.float32))]
        nodes += [
            helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"], name=f"add{i}"),
        ]
        if i < n_layers - 1:
            nodes.append(helper.make_node(act, [f"z{i}"], [f"h{i}"], name=f"act{i}"))
            x = f"h{i}"
        else:
            x = f"z{i}"  # [batch, 1] logit of class 1

    inits.append(const("one", np.array([1.0], dtype=np.float32)))
    nodes += [
        helper.make_node("Sigmoid", [x], ["p1"], name="out_sigmoid"),
        helper.make_node("Sub", ["one", "p1"], ["p0"], name="p0_sub"),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1, name="concat"),
        # classes_ are [0, 1], so the argmax index is the label; ties pick 0,
        # matching sklearn's `p1 > 0.5` rule.
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0, name="argmax"),
    ]
    inp, label, probs = io_values(n_features)
    graph = helper.make_graph(nodes, graph_name, [inp], [label, probs], initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="portcullis-make_models",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    return model


def gbt_to_onnx(gbt: GradientBoostingClassifier, n_features: int, doc: str) -> onnx.ModelProto:
    model = convert_sklearn(
        gbt,
        name="gbt",
        initial_types=[("features", FloatTensorType([None, n_features]))],
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        options={id(gbt): {"zipmap": False}},
    )
    # Make sure the interface names are exactly ours (skl2onnx defaults happen
    # to match, but do not rely on it) and name the batch dimension.
    g = model.graph
    wanted = ["label", "probabilities"]
    for out, new in zip(list(g.output), wanted):
        if out.name != new:
            for node in g.node:
                node.output[:] = [new if o == out.name else o for o in node.output]
                node.input[:] = [new if i == out.name else i for i in node.input]
            out.name = new
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.shape.dim[0].dim_param = BATCH
    model.ir_version = IR_VERSION
    model.producer_name = "portcullis-make_models (skl2onnx)"
    model.doc_string = doc
    return model


# --------------------------------------------------------------------------
# Checks and verification
# --------------------------------------------------------------------------


def pick_rows(proba1: np.ndarray, seed: int) -> tuple[list[int], list[int]]:
    """1 row for the single case, 8 rows (4 per predicted class when possible)
    for the batch case, all away from the decision boundary."""
    rng = np.random.default_rng(seed)
    safe = np.flatnonzero(np.abs(proba1 - 0.5) >= BOUNDARY_MARGIN)
    rng.shuffle(safe)
    pos = [i for i in safe if proba1[i] > 0.5]
    neg = [i for i in safe if proba1[i] < 0.5]
    single = [int(pos[0] if pos else neg[0])]
    rest = [i for i in safe if i != single[0]]
    batch = [int(i) for i in (neg[:4] + pos[1:5])]
    batch += [int(i) for i in rest if i not in batch][: 8 - len(batch)]
    rng.shuffle(batch)
    return single, batch


def floats(a: np.ndarray) -> list[float]:
    # float32 -> Python float keeps the exact float32 value; repr round-trips.
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def make_case(X32: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> dict:
    n, f = X32.shape
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [n, f], "data": floats(X32)}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [n],
             "data": [int(v) for v in labels]},
            {"name": "probabilities", "datatype": "FP32", "shape": [n, 2], "data": floats(proba)},
        ],
    }


def checks_json(checks: dict) -> str:
    """Pretty JSON, but with each flat number array kept on one line."""
    text = json.dumps(checks, indent=2)
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    return text + "\n"


def operators(model: onnx.ModelProto) -> list[str]:
    seen = []
    for node in model.graph.node:
        op = f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        if op not in seen:
            seen.append(op)
    return seen


def compare(runtime: str, name: str, case: dict, got_label, got_proba) -> list[str]:
    exp = {o["name"]: o for o in case["outputs"]}
    errors = []
    exp_label = np.array(exp["label"]["data"], dtype=np.int64)
    exp_proba = np.array(exp["probabilities"]["data"], dtype=np.float64).reshape(exp["probabilities"]["shape"])
    got_label = np.asarray(got_label)
    got_proba = np.asarray(got_proba, dtype=np.float64)
    if got_label.dtype != np.int64 or got_label.shape != exp_label.shape:
        errors.append(f"{runtime}/{name}: label dtype/shape {got_label.dtype}{got_label.shape}")
    elif not np.array_equal(got_label, exp_label):
        errors.append(f"{runtime}/{name}: labels {got_label.tolist()} != {exp_label.tolist()}")
    if got_proba.shape != exp_proba.shape:
        errors.append(f"{runtime}/{name}: probabilities shape {got_proba.shape}")
        return errors
    diff = float(np.max(np.abs(got_proba - exp_proba)))
    print(f"    {runtime:12s} N={exp_label.shape[0]}: labels ok={np.array_equal(got_label, exp_label)}"
          f"  max|dproba|={diff:.2e}")
    if diff > TOLERANCE:
        errors.append(f"{runtime}/{name}: max abs diff {diff:.3e} > {TOLERANCE}")
    return errors


def verify(name: str, model: onnx.ModelProto, checks: dict, use_tract: bool) -> list[str]:
    onnx.checker.check_model(model, full_check=True)
    errors = []
    ops_domains = {n.domain for n in model.graph.node}
    if use_tract and ops_domains - {"", "ai.onnx"}:
        errors.append(f"{name}: non-standard domains {ops_domains} in a tract model")

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if [i.name for i in sess.get_inputs()] != ["features"]:
        errors.append(f"{name}: inputs {[i.name for i in sess.get_inputs()]}")
    if [o.name for o in sess.get_outputs()] != ["label", "probabilities"]:
        errors.append(f"{name}: outputs {[o.name for o in sess.get_outputs()]}")

    tract_model = None
    if use_tract:
        try:
            import tract  # optional: pip install tract
        except ImportError:
            print("    (tract Python bindings not installed; skipping the tract run)")
        else:
            tmp = HERE / f".{name.replace('/', '_')}.tmp.onnx"
            onnx.save(model, tmp)
            try:
                tract_model = tract.onnx().load(str(tmp)).into_model().into_runnable()
            finally:
                tmp.unlink()

    for case in checks["cases"]:
        inp = case["inputs"][0]
        X = np.array(inp["data"], dtype=np.float32).reshape(inp["shape"])
        label, proba = sess.run(["label", "probabilities"], {"features": X})
        errors += compare("onnxruntime", name, case, label, proba)
        if tract_model is not None:
            t_label, t_proba = [t.to_numpy() for t in tract_model.run([X])]
            errors += compare("tract", name, case, t_label, t_proba)
    return errors


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def build_credit_risk():
    X, y = credit_risk_data(4000, seed=1234)
    X_train, X_pool = X[:3000], X[3000:]
    pipe = Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPClassifier(hidden_layer_sizes=(16,), activation="relu", alpha=1e-3,
                              max_iter=600, random_state=7)),
    ])
    pipe.fit(X_train, y[:3000])
    print(f"  held-out accuracy {pipe.score(X_pool, y[3000:]):.3f}, default rate {y.mean():.3f}")
    doc = ("Portcullis demo credit-risk classifier (synthetic data). Input 'features' float32 "
           f"[batch, 8] = {CREDIT_FEATURES}. Outputs 'label' int64 [batch] (0 = repay, "
           "1 = default) and 'probabilities' float32 [batch, 2] = [p(repay), p(default)]. "
           "StandardScaler + MLPClassifier(16,) from scikit-learn.")
    model = mlp_to_onnx(pipe["mlp"], 8, "credit_risk", doc, scaler=pipe["scaler"])
    return pipe, model, X_pool, 8


def build_mlp():
    X, y = generic_data(3000, 20, seed=2024)
    X_train, X_pool = X[:2500], X[2500:]
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), activation="relu", alpha=1e-4,
                        max_iter=400, random_state=11)
    mlp.fit(X_train, y[:2500])
    print(f"  held-out accuracy {mlp.score(X_pool, y[2500:]):.3f}")
    doc = ("Portcullis fixture: MLPClassifier(64, 64) on 20 synthetic features "
           "(make_classification). Input 'features' float32 [batch, 20]; outputs 'label' "
           "int64 [batch], 'probabilities' float32 [batch, 2].")
    return mlp, mlp_to_onnx(mlp, 20, "mlp", doc), X_pool, 20


def build_gbt():
    X, y = generic_data(3000, 10, seed=4242)
    X_train, X_pool = X[:2500], X[2500:]
    gbt = GradientBoostingClassifier(n_estimators=50, max_depth=3, learning_rate=0.1,
                                     random_state=5)
    gbt.fit(X_train, y[:2500])
    print(f"  held-out accuracy {gbt.score(X_pool, y[2500:]):.3f}")
    doc = ("Portcullis fixture: GradientBoostingClassifier(50 trees, depth 3) on 10 synthetic "
           "features (make_classification). Input 'features' float32 [batch, 10]; outputs "
           "'label' int64 [batch], 'probabilities' float32 [batch, 2]. Needs onnxruntime "
           "(ai.onnx.ml TreeEnsembleClassifier).")
    return gbt, gbt_to_onnx(gbt, 10, doc), X_pool, 10


def main() -> int:
    specs = [
        ("credit-risk", HERE / "credit-risk", build_credit_risk, True),
        ("fixtures/mlp", HERE / "fixtures" / "mlp", build_mlp, True),
        ("fixtures/gbt", HERE / "fixtures" / "gbt", build_gbt, False),
    ]
    all_errors, outputs = [], []
    for name, folder, build, tract_target in specs:
        print(f"[{name}]")
        est, model, X_pool, _ = build()
        proba1 = est.predict_proba(X_pool)[:, 1]
        single, batch = pick_rows(proba1, seed=99)
        cases = []
        for rows in (single, batch):
            Xc = X_pool[rows]  # float64 holding exact float32 values
            cases.append(make_case(Xc.astype(np.float32), est.predict(Xc), est.predict_proba(Xc)))
        checks = {"tolerance": TOLERANCE, "cases": cases}
        ops = operators(model)
        print(f"  operators: {', '.join(ops)}")
        errors = verify(name, model, checks, use_tract=tract_target)
        all_errors += errors
        outputs.append((folder, model, checks, ops))

    if all_errors:
        print("\nFAILED:", *all_errors, sep="\n  ", file=sys.stderr)
        return 1

    for folder, model, checks, ops in outputs:
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(model, folder / "model.onnx")
        (folder / "checks.json").write_text(checks_json(checks))
        size = (folder / "model.onnx").stat().st_size
        print(f"wrote {folder.relative_to(HERE.parent)}/model.onnx ({size} bytes) and checks.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
