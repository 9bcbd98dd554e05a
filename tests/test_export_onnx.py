"""ONNX export: the model a cell becomes computes what the unrolled net computes.

Each model (the recurrence as a ``Scan``, and unrolled over T steps) passes
``onnx.checker.check_model(full_check=True)``; its outputs and final states, run by the onnx
package's reference evaluator and by onnxruntime (when installed), equal ``net(xs, state)`` to
1e-10 relative in float64 and 1e-5 in float32, for the ready cells, stacked cells, a cell using
every op with an ONNX rule, and random cells drawn by the differential tests' generator, with
and without initial states and sequence lengths. Names (hostile ones too) survive or map back
through the model's metadata; an op without a rule raises a LoweringError naming it.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_differential import build_cell, cells

import unrollgraph as ug
from unrollgraph.ops import _REGISTRY, deflower, defop

onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

# the random cells may declare a state their graph never reads (a legitimate cell: it carries
# a value out as the final state); unroll tells a user so with a CellWarning, which these
# tests of the arithmetic do not check (tests/test_user_trial_cells.py does)
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

try:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # (its notes on initializers that are also inputs)
except ImportError:  # the reference evaluator alone
    ort = None

# random cells per run (about 3 s); set UNROLLGRAPH_ONNX_EXAMPLES (and
# UNROLLGRAPH_HYPOTHESIS_PROFILE=thorough, for fresh draws) for a longer search
EXAMPLES = int(os.environ.get("UNROLLGRAPH_ONNX_EXAMPLES", "40"))
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
# ops that can never be in a cell's body, so they have no ONNX rule (see docs/onnx.md)
NO_RULE = {"item", "unrolled"}


def run_model(model, feeds):
    """The model's outputs under each engine: {"reference": [...], "onnxruntime": [...]}."""
    # the model's sigmoid is numpy's 1 / (1 + exp(-x)), whose exp overflows to inf (and the
    # result to the right 0) below x = -709 (-88 in float32): unrollgraph's forward expects
    # that overflow and silences it, and so does this run of the same formula
    with np.errstate(over="ignore"):
        out = {"reference": ReferenceEvaluator(model).run(None, feeds)}
    if ort is not None:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        out["onnxruntime"] = sess.run(None, feeds)
    return out


def run_net(cell, xs, state=None, lengths=None):
    """``net(xs, state, lengths)`` as the model's outputs: outputs in order, then final
    states."""
    steps = next(iter(xs.values())).shape[0] if xs else 3
    outs, fins = ug.unroll(cell, steps=steps)(xs if xs else None, state=state, lengths=lengths)
    outs = list(outs.values()) if isinstance(outs, dict) else [outs]
    fins = list(fins) if isinstance(fins, tuple) else [fins]
    return [t.data for t in outs + fins]


def close(got, want, rtol, what):
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def check(cell, xs, state=None, steps_options=(None, "T"), dtype=None, lengths=None, rtol=None,
          **kw):
    """Export ``cell`` both ways and compare every engine's results with the net's (to
    ``rtol``, by default that of each output's dtype)."""
    want = run_net(cell, xs, state, lengths)
    T = next(iter(xs.values())).shape[0] if xs else 3
    feeds = dict(xs)
    if state is not None:
        feeds.update(state)
    models = {}
    for steps in steps_options:
        model = ug.export.to_onnx(cell, None, steps=T if steps == "T" else steps, dtype=dtype,
                                  lengths=lengths is not None, **kw)
        onnx.checker.check_model(model, full_check=True)
        names = json.loads(next(p.value for p in model.metadata_props
                                if p.key == "unrollgraph.names"))
        model_feeds = {names["inputs"].get(k) or names["states"][k]: v for k, v in feeds.items()}
        if lengths is not None:
            model_feeds[names["lengths"]] = np.asarray(lengths, np.int64)
        for engine, got in run_model(model, model_feeds).items():
            assert len(got) == len(want)
            for k, (g, w) in enumerate(zip(got, want)):
                g = np.asarray(g)
                if g.dtype != w.dtype:
                    # a Scan's values have the type they take once the states have widened;
                    # a run shorter than the widening has the narrower one (documented)
                    assert steps is None and T <= len(cell.states), (k, g.dtype, w.dtype)
                    assert np.can_cast(w.dtype, g.dtype)
                    w = w.astype(g.dtype)
                close(g, w, rtol or RTOL[w.dtype], f"{cell.name} steps={steps} {engine} output {k}")
        models[steps] = model
    return models


def sequences(cell, T, B, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (T, B) + t.shape[1:]).astype(dtype)
            for k, t in cell.inputs.items()}


# -------------------------------------------------------------------------------------------
# the ready cells, stacked cells


@pytest.mark.parametrize("make", [
    lambda dt: ug.nn.RNNCell(3, 4, seed=1, dtype=dt),
    lambda dt: ug.nn.RNNCell(3, 4, nonlinearity="relu", seed=1, dtype=dt),
    lambda dt: ug.nn.LSTMCell(3, 4, seed=2, dtype=dt),
    lambda dt: ug.nn.GRUCell(3, 4, seed=3, dtype=dt),
    lambda dt: ug.nn.LSTM(3, 4, num_layers=2, seed=4, dtype=dt),
    lambda dt: ug.nn.GRU(3, 4, num_layers=3, bias=False, seed=5, dtype=dt),
    lambda dt: ug.nn.RNN(3, 4, num_layers=2, seed=6, dtype=dt),
    lambda dt: ug.nn.ResidualRNNCell(3, 4, hh_scale=0.5, seed=7, dtype=dt),
], ids=["rnn", "rnn-relu", "lstm", "gru", "lstm-2-layers", "gru-3-layers", "rnn-2-layers",
        "residual"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ready_cells_agree_with_the_unrolled_net(make, dtype):
    cell = make(dtype)
    xs = sequences(cell, 6, 3, dtype)
    check(cell, xs)
    rng = np.random.default_rng(1)
    state = {k: rng.uniform(-1, 1, (3,) + t.shape[1:]).astype(dtype)
             for k, t in cell.states.items()}
    check(cell, xs, state, steps_options=(None,))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lengths_stop_each_sequence_where_the_net_does(dtype):
    """With lengths=True the model takes each sequence's length, as net(xs, lengths=...):
    past it the state stays and the outputs are 0; without the input, every step runs."""
    for cell in (ug.nn.LSTM(3, 4, num_layers=2, seed=0, dtype=dtype),
                 ug.nn.GRUCell(3, 4, seed=1, dtype=dtype)):
        xs = sequences(cell, 5, 4, dtype)
        check(cell, xs, lengths=[5, 0, 2, 3])
        check(cell, xs, {k: np.ones((4,) + t.shape[1:], dtype) for k, t in cell.states.items()},
              lengths=[1, 5, 4, 0])
        model = ug.export.to_onnx(cell, None, lengths=True)
        assert [i.name for i in model.graph.input][-1] == "lengths"
        assert model.graph.input[-1].type.tensor_type.elem_type == onnx.TensorProto.INT64
        for engine, got in run_model(model, xs).items():  # no lengths given: every step
            for g, w in zip(got, run_net(cell, xs)):
                close(g, w, RTOL[w.dtype], engine)


def test_one_scan_model_runs_any_number_of_steps():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    model = ug.export.to_onnx(cell, None)
    for T in (1, 2, 9):
        xs = sequences(cell, T, 2, seed=T)
        want = run_net(cell, xs)
        for engine, got in run_model(model, xs).items():
            for g, w in zip(got, want):
                close(g, w, 1e-10, f"T={T} {engine}")


def test_the_model_layout_follows_the_net(tmp_path):
    """Inputs, outputs, initializers and the Scan, as documented; the file is the model."""
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    path = tmp_path / "lstm.onnx"
    model = ug.export.to_onnx(cell, path)
    assert onnx.load(str(path)) == model
    g = model.graph
    assert [i.name for i in g.input] == ["x", "h", "c"]
    assert [o.name for o in g.output] == ["y", "h_final", "c_final"]
    assert model.opset_import[0].version == 18 and model.opset_import[0].domain == ""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for k, p in cell.parameters().items():  # the weights, exactly, under their names
        assert inits[k].dtype == p.dtype and np.array_equal(inits[k], p.data)
    assert np.array_equal(inits["h"], np.zeros((1, 3)))  # the optional initial states
    scan = [n for n in g.node if n.op_type == "Scan"]
    assert len(scan) == 1
    assert list(scan[0].output) == ["h_final", "c_final", "y"]
    body = scan[0].attribute[0].g
    assert {n.op_type for n in body.node} >= {"MatMul", "Tanh", "Slice"}
    assert g.doc_string == str(cell)  # the equations, shown by Netron
    unrolled = ug.export.to_onnx(cell, None, steps=4)
    assert "Scan" not in {n.op_type for n in unrolled.graph.node}
    assert [d.dim_value for d in unrolled.graph.input[0].type.tensor_type.shape.dim][::2] == [4, 2]
    out = {n.output[0] for n in unrolled.graph.node}
    assert {"h_next@0", "h_next@3", "c_next@3"} <= out  # named as in the unrolled diagrams


def test_declared_init_and_given_states():
    cell = ug.Cell("init")
    x = cell.input("x", (2,))
    h = cell.state("h", (3,), init=np.array([0.5, -1.0, 2.0]))
    z = cell.state("z", (1,), init=0.25)
    W = cell.param("W", np.linspace(-1, 1, 6).reshape(2, 3))
    h_next = ug.tanh(x @ W + h * z)
    cell.feedback(h, h_next)
    cell.feedback(z, z * 0.5 + ug.sum(h_next, axis=1, keepdims=True))
    cell.output("y", h_next)
    xs = sequences(cell, 4, 5)
    check(cell, xs)  # the declared inits, broadcast over the batch
    check(cell, xs, {"h": np.ones((5, 3)), "z": np.full((5, 1), -0.5)})
    # a state of batch 1 is broadcast too (as the default is)
    model = ug.export.to_onnx(cell, None)
    got = run_model(model, {**xs, "h": np.ones((1, 3))})
    want = run_net(cell, xs, {"h": np.ones((5, 3)), "z": np.full((5, 1), 0.25)})
    for engine, outs in got.items():
        for g, w in zip(outs, want):
            close(g, w, 1e-10, engine)


def test_mixed_dtypes_promote_as_numpy_does():
    """float32 inputs and states with float64 parameters: numpy computes in float64 where
    they meet, and the model casts where it does."""
    cell = ug.nn.LSTMCell(2, 3, seed=0)  # float64 weights
    xs = sequences(cell, 5, 2, np.float32)
    check(cell, xs, dtype=np.float32)
    model = ug.export.to_onnx(cell, None, dtype=np.float32)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "Cast" in {n.op_type for n in model.graph.node}  # the initial states


def widening_cells():
    one = ug.Cell("widening")
    x = one.input("x", (2,))
    h = one.state("h", (3,))
    W = one.param("W", np.linspace(-1, 1, 6).reshape(2, 3))
    one.feedback(h, ug.tanh(x @ W) + h * 0.5)
    one.output("y", ug.tanh(h))
    two = ug.Cell("widening in two steps")  # h2 widens after step 0, h1 after step 1
    x = two.input("x", (3,))
    h1, h2 = two.state("h1", (3,)), two.state("h2", (3,))
    W = two.param("W", np.linspace(-1, 1, 9).reshape(3, 3))
    two.feedback(h2, ug.tanh(h1 @ W))
    two.feedback(h1, h2 * 0.5 + ug.tanh(x))
    two.output("y", ug.sigmoid(h1) * 2.0)
    two.output("z", h2 + x)
    return one, two


@pytest.mark.parametrize("lengths", [None, [4, 1]])
def test_states_that_widen_after_the_first_steps(lengths):
    """float32 inputs and states, a float64 weight: a state is float32 at the first step(s)
    and float64 after. Both models compute each step in the types the net uses (the Scan has
    a copy of the cell for each such step): the reference evaluator, which runs numpy, gives
    the net's numbers; onnxruntime differs by its own float32 rounding."""
    for cell in widening_cells():
        xs = sequences(cell, 4, 2, np.float32)
        rng = np.random.default_rng(0)
        state = {k: rng.uniform(-1, 1, (2,) + t.shape[1:]).astype(np.float32)
                 for k, t in cell.states.items()}
        want = run_net(cell, xs, state, lengths)
        feeds = {**xs, **state}
        if lengths is not None:
            feeds["lengths"] = np.array(lengths)
        for steps in (4, None):
            model = ug.export.to_onnx(cell, None, steps=steps, dtype=np.float32,
                                      lengths=lengths is not None)
            for engine, got in run_model(model, feeds).items():
                for k, (g, w) in enumerate(zip(got, want)):
                    assert g.dtype == w.dtype
                    close(g, w, 1e-10 if engine == "reference" else 1e-6,
                          f"{cell.name} steps={steps} {engine} output {k}")


def _clock(dtype=np.float64):
    """A cell without inputs: a rotation (state h), a decaying sum of it (state c, its own
    initial value), two outputs."""
    cell = ug.Cell("clock")
    h = cell.state("h", (2,), init=np.array([1.0, 0.0]))
    c = cell.state("c", (2,))
    R = cell.param("R", np.array([[0.8, -0.6], [0.6, 0.8]], dtype))
    h_next = h @ R
    cell.feedback(h, h_next)
    cell.feedback(c, 0.5 * c + ug.tanh(h_next))
    cell.output("y", h * 2.0)
    cell.output("z", ug.sum(c, axis=1))
    return cell


def test_a_cell_without_inputs_exports_unrolled():
    cell = _clock()
    model = ug.export.to_onnx(cell, None, steps=3)
    want = run_net(cell, {})
    for engine, got in run_model(model, {}).items():
        for g, w in zip(got, want):
            close(g, w, 1e-10, engine)


@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("how", ["plain", "state", "lengths", "float32", "identifiers"])
def test_a_cell_without_inputs_exports_a_loop_of_any_length(T, how):
    """Without steps=, a cell without inputs is an ONNX Loop whose trip count is the model's
    int64 input ``steps``: it passes the full checker and onnxruntime and the reference
    evaluator give net(None, state) of T steps (float64 to 1e-10), with the cell's initial
    state (batch 1) or a given one, lengths, float32 inputs meeting float64 weights (the first
    step in other types), and C identifiers."""
    cell = _clock()
    rng = np.random.default_rng(T)
    state = ({"h": rng.normal(size=(3, 2)), "c": rng.normal(size=(3, 2))}
             if how in ("state", "lengths", "float32") else None)
    lengths = [T, 0, max(1, T - 1)] if how == "lengths" else None
    dtype = np.float32 if how == "float32" else None
    if dtype is not None:
        state = {k: v.astype(dtype) for k, v in state.items()}
    model = ug.export.to_onnx(cell, None, dtype=dtype, lengths=lengths is not None,
                              identifiers=how == "identifiers")
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert not any(n.op_type == "Scan" for n in model.graph.node)
    names = json.loads(next(p.value for p in model.metadata_props
                            if p.key == "unrollgraph.names"))
    assert names["steps"] == "steps" and model.graph.input[0].name == "steps"
    outs, fins = ug.unroll(cell, steps=T)(None, state=state, lengths=lengths)
    want = [o.data for o in outs.values()] + [f.data for f in fins]
    feeds = {"steps": np.array(T, np.int64)}
    feeds.update({names["states"][k]: v for k, v in (state or {}).items()})
    if lengths is not None:
        feeds[names["lengths"]] = np.asarray(lengths, np.int64)
    for engine, got in run_model(model, feeds).items():
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            g = np.asarray(g)
            if g.dtype != w.dtype:  # the Loop carries the widened type (as a Scan does)
                assert how == "float32" and np.can_cast(w.dtype, g.dtype), (k, g.dtype)
                w = w.astype(g.dtype)
            close(g, w, RTOL[np.dtype(np.float64)] if g.dtype == np.float64 else 1e-5,
                  f"T={T} {how} {engine} output {k}")


def test_a_member_named_steps_leaves_the_trip_count_another_name():
    cell = ug.Cell("counter")
    s = cell.state("steps", (1,))
    cell.feedback(s, s + 1.0)
    cell.output("count", s)
    model = ug.export.to_onnx(cell, None)
    names = json.loads(next(p.value for p in model.metadata_props
                            if p.key == "unrollgraph.names"))
    assert names["states"]["steps"] == "steps" and names["steps"] != "steps"
    for engine, got in run_model(model, {names["steps"]: np.array(4, np.int64)}).items():
        np.testing.assert_array_equal(got[0][:, 0, 0], [0.0, 1.0, 2.0, 3.0], err_msg=engine)
        np.testing.assert_array_equal(got[1], [[4.0]], err_msg=engine)


# -------------------------------------------------------------------------------------------
# every op with a rule


def zoo(dtype=np.float64):
    """A cell using every op that has an ONNX rule, with the attributes that change how it
    lowers (axis None, an int, a tuple or (), keepdims; every kind of index; bounds None)."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)

    cell = ug.Cell("zoo")
    x = cell.input("x", (4,))
    u = cell.input("u", (2, 3))
    h = cell.state("h", (4,))
    W, V, P, q = cell.param("W", w(4, 4)), cell.param("V", w(3, 4)), cell.param("P", w(2, 5)), \
        cell.param("q", w(4))
    # parameters alone (computed once, before the recurrence): losses, 1-d matmul, reductions
    reg = (ug.mse_loss(W, W * 0.5) + ug.cross_entropy(P, [1, 4])
           + ug.binary_cross_entropy_with_logits(P, ug.sigmoid(P)) + ug.max(P) + ug.mean(V)
           + ug.sum(q @ W))
    a = ug.tanh(x @ W + h @ W.T * 0.5 + reg * 0.1)
    parts = [
        ug.sum(u, axis=(1, 2)).reshape(-1, 1),
        ug.mean(u, axis=1) @ V,
        ug.max(u, axis=-1, keepdims=True).reshape(-1, 2) @ W[:2],
        ug.sum(u, axis=()).reshape(-1, 6)[:, 1:5],
        ug.softmax(u, axis=(1, 2)).reshape(-1, 6)[:, ::-2] @ V,
        ug.softmax(u, axis=-1)[:, 1] @ V,
        ug.log_softmax(u, axis=1)[..., 0] @ W[1:3],
        u[:, None, 1, ::-1][:, 0] @ V,
        u[:, [1, 0, 1]].sum(axis=1) @ V,
        u[:, np.array([[True, False, True], [False, True, True]])],
        x[:, -1].reshape(-1, 1) + x[:, ::-2].sum(axis=1, keepdims=True),
        x[:, 1:-1] @ W[1:3],
        u.transpose(0, 2, 1).reshape(-1, 6)[:, :4],
        ug.concat([x[:, :2], u[:, 0, 1:3]], axis=1),
        ug.stack([x, a], axis=-1).max(axis=-1) + ug.stack([a, x], axis=1)[:, 0],
        ug.clip(x, None, 0.3) + ug.clip(a, -0.2, None) + ug.clip(x, -0.1, 0.2),
        ug.where(np.array([True, False, True, False]), a, x),
        ug.where(x > 0, a, -a) + (x >= a) - (x < 0.1) * (a <= x),
        (x * x + 0.5) ** ug.sigmoid(h) + x ** 2 + ug.sqrt(x * x + 0.25) ** -1.0,
        ug.relu(x) - ug.abs(a) + ug.log(x * x + 0.5) + ug.exp(-x) / (a * a + 1.0),
        ug.maximum(x, a) - ug.minimum(x, h) + ug.transpose(W)[0],
    ]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    h_next = ug.tanh(total, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    cell.output("parts", ug.concat([p if p.shape[1:] == (4,) else p[:, :1] for p in parts],
                                   axis=1))
    return cell


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_op_with_a_rule_agrees_with_numpy(dtype):
    cell = zoo(dtype)
    check(cell, sequences(cell, 3, 2, dtype))


def test_extreme_values_keep_their_relative_accuracy():
    """Where a runtime's operator loses relative accuracy, the rule writes numpy's formula:
    sigmoid far below 0 (onnxruntime's Sigmoid), log_softmax of widely spread values (the
    reference evaluator's LogSoftmax) and log1p of a tiny value (ONNX has no Log1p), each
    compared element by element, with no absolute tolerance."""
    cell = ug.Cell("extremes")
    x = cell.input("x", (5,))
    h = cell.state("h", (5,))
    P = cell.param("P", np.array([-40.0, -50.0, -36.0]))
    bce = ug.binary_cross_entropy_with_logits(P, np.zeros(3))  # about 8e-17, all log1p
    cell.feedback(h, x * 0.5 + h * 0.0)
    cell.output("log_sigmoid", ug.log(ug.sigmoid(x)))
    cell.output("sigmoid", ug.sigmoid(x * 20.0))
    cell.output("log_softmax", ug.log_softmax(x * 30.0 + h, axis=1))
    cell.output("bce", x * 0.0 + bce)
    xs = {"x": np.array([[[-40.0, -30.0, -1e-3, 5.0, 35.0]]] * 2)}
    want = run_net(cell, xs)
    for steps in (None, 2):
        model = ug.export.to_onnx(cell, None, steps=steps)
        for engine, got in run_model(model, xs).items():
            for k, (g, w) in enumerate(zip(got, want)):
                np.testing.assert_allclose(g, w, rtol=1e-13, atol=0,
                                           err_msg=f"steps={steps} {engine} output {k}")


def test_the_tests_cover_every_op():
    """Every registered op has an ONNX rule but the two that are not cell ops, and every op
    with a rule is in a cell these tests export."""
    ops = {n.op for c in (zoo(), ug.nn.GRUCell(2, 2)) for n in c.graph().nodes if not n.is_leaf}
    with_rule = {k for k, op in ug.ops.registry().items() if "onnx" in op.lower}
    assert set(ug.ops.registry()) - with_rule == NO_RULE
    assert with_rule <= ops, with_rule - ops


# -------------------------------------------------------------------------------------------
# random cells


@settings(max_examples=EXAMPLES, deadline=None)
@given(spec=cells(), data=st.data())
def test_random_cells_agree_with_the_unrolled_net(spec, data):
    T = data.draw(st.integers(1, 4), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    # float32 inputs with float64 weights too: numpy promotes where they meet, and a state
    # may widen after its first steps
    dtype, param_dtype = data.draw(st.sampled_from(
        [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64)]),
        label="dtypes")
    given_state = data.draw(st.booleans(), label="given_state")
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B),
                        label="lengths")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    values = {k: rng.uniform(-0.6, 0.6, shp).astype(param_dtype)
              for k, shp in spec["params"].items()}
    cell = build_cell(spec, values)
    xs = {f"x{k}": rng.uniform(-1, 1, (T, B, d)).astype(dtype) for k, d in enumerate(spec["in"])}
    state = ({f"h{k}": rng.uniform(-1, 1, (B, d)).astype(dtype)
              for k, d in enumerate(spec["st"])} if given_state else None)
    check(cell, xs, state, dtype=dtype, lengths=lengths, rtol=RTOL[np.dtype(dtype)])


# -------------------------------------------------------------------------------------------
# names


C_IDENTIFIER = re.compile("[A-Za-z_][A-Za-z0-9_]*")
HOSTILE = ['x "quoted" <b>&amp;</b>', "h\nnext", "h_final", "x@t", "batch", "steps", "Scan",
           "n3", "[0]", "a/b:c#2", "π θ ∑", "🙂", " spaced ", "W'", "1.0:float64", "lengths",
           "running@t", "t"]


@pytest.mark.parametrize("identifiers", [False, True])
def test_hostile_names_survive(identifiers):
    cell = ug.Cell('cell <"&">\n')
    x = cell.input(HOSTILE[0], (2,))
    h = cell.state(HOSTILE[1], (3,))
    h2 = cell.state("h", (1,))
    W = cell.param(HOSTILE[5], np.linspace(-1, 1, 6).reshape(2, 3))
    params = [cell.param(n, np.full(3, 0.1 * k)) for k, n in enumerate(HOSTILE[6:], 1)]
    pre = x @ W + h * 0.5
    for p in params:
        pre = pre + p
    h_next = ug.tanh(pre, name=HOSTILE[3])
    cell.feedback(h, h_next)
    cell.feedback(h2, ug.sum(h_next, axis=1, keepdims=True, name="x@t"))
    cell.output(HOSTILE[2], h_next)
    cell.output("h_final_final", h2 * 1.0)
    xs = {HOSTILE[0]: sequences(cell, 3, 2)[HOSTILE[0]]}
    models = check(cell, xs, identifiers=identifiers)
    check(cell, xs, identifiers=identifiers, lengths=[3, 1])  # "lengths" is a parameter's
    model = models[None]
    names = json.loads(model.metadata_props[0].value)
    g = model.graph
    ins, outs = [i.name for i in g.input], [o.name for o in g.output]
    inits = {t.name for t in g.initializer}
    if not identifiers:  # the cell's names, exactly
        assert ins == [HOSTILE[0], HOSTILE[1], "h"]
        assert outs == [HOSTILE[2], "h_final_final", HOSTILE[1] + "_final", "h_final_final_final"]
        assert set(cell.parameters()) <= inits
        assert g.name == cell.name
    else:  # C identifiers, and the metadata maps them back
        for name in ins + outs + list(inits):
            assert C_IDENTIFIER.fullmatch(name), name
        assert len(set(ins + outs)) == len(ins + outs)
        for graph in (g, model.graph.node[-1].attribute[0].g):  # and the Scan's body
            assert C_IDENTIFIER.fullmatch(graph.name), graph.name
            for node in graph.node:
                for name in list(node.input) + list(node.output) + [node.name]:
                    assert name == "" or C_IDENTIFIER.fullmatch(name), name
    assert list(names["inputs"]) == [HOSTILE[0]] and list(names["states"]) == [HOSTILE[1], "h"]
    assert [names["inputs"][HOSTILE[0]]] + list(names["states"].values()) == ins
    assert list(names["outputs"].values()) + list(names["final_states"].values()) == outs
    assert set(names["params"].values()) <= inits


# -------------------------------------------------------------------------------------------
# ops without a rule, and rules added by the user


def test_an_op_without_a_rule_raises_a_named_error():
    name = "softsign_no_rule"
    defop(name, lambda a: a / (1 + np.abs(a)),
          [lambda g, ans, a: g / (1 + np.abs(a)) ** 2])
    try:
        cell = ug.nn.RNNCell(2, 3, seed=0)  # a ready cell and one user op on top
        cell2 = ug.Cell("user")
        x = cell2.input("x", (2,))
        h = cell2.state("h", (2,))
        h_next = ug.functional.apply(name, x + h, name="soft")
        cell2.feedback(h, h_next)
        cell2.output("y", h_next)
        for steps in (None, 3):
            with pytest.raises(ug.LoweringError) as info:
                ug.export.to_onnx(cell2, None, steps=steps)
            err = info.value
            assert err.op == name and err.target == "onnx"
            assert name in str(err) and "'soft'" in str(err) and "deflower" in str(err)
        ug.export.to_onnx(cell, None)  # cells without it still export
        # a rule added later (the documented signature) makes the cell exportable
        deflower(name, "onnx", lambda b, x: b.op("Div", x, b.op("Add", b.const(1.0),
                                                                b.op("Abs", x))))
        check(cell2, sequences(cell2, 4, 2))
    finally:
        _REGISTRY.pop(name, None)
    assert name not in ug.ops.registry()


def test_a_rule_that_fails_or_emits_invalid_onnx_is_named():
    name = "bad_rule_op"
    defop(name, lambda a: a * 2.0, [lambda g, ans, a: 2.0 * g],
          onnx=lambda b, x: b.op("NoSuchOperator", x))
    try:
        cell = ug.Cell("bad")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        cell.feedback(h, ug.functional.apply(name, x + h))
        with pytest.raises(ug.LoweringError, match="fails onnx.checker"):
            ug.export.to_onnx(cell, None)
        deflower(name, "onnx", lambda b, x: 1 / 0)
        with pytest.raises(ug.LoweringError, match="onnx rule of op 'bad_rule_op' failed"):
            ug.export.to_onnx(cell, None)
        deflower(name, "onnx", lambda b, x: None)
        with pytest.raises(ug.LoweringError, match="must return the name"):
            ug.export.to_onnx(cell, None)
    finally:
        _REGISTRY.pop(name, None)


@pytest.mark.parametrize("call, error, match", [
    (lambda c: ug.export.to_onnx("cell", None), ug.CellError, "needs a ug.Cell"),
    (lambda c: ug.export.to_onnx(c, None, steps=0), ug.CellError, "positive int"),
    (lambda c: ug.export.to_onnx(c, None, steps=True), ug.CellError, "positive int"),
    (lambda c: ug.export.to_onnx(c, None, steps=2.0), ug.CellError, "positive int"),
    (lambda c: ug.export.to_onnx(c, None, dtype=np.int32), ug.DTypeError, "float32"),
    (lambda c: ug.export.to_onnx(c, None, dtype="text"), ug.DTypeError, "float32"),
    (lambda c: ug.export.to_onnx(c, None, identifiers="yes"), ug.CellError, "True or False"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(ug.nn.RNNCell(2, 2, seed=0))


def test_an_unfinished_cell_is_refused():
    cell = ug.Cell("open")
    x = cell.input("x", (2,))
    cell.state("h", (2,))
    cell.output("y", ug.tanh(x))
    with pytest.raises(ug.CellError, match="no feedback edge"):
        ug.export.to_onnx(cell, None)


# -------------------------------------------------------------------------------------------
# what the model holds: basic indexes as slices, comparisons read by where as bools


def _all_nodes(model):
    """Every node of the model, those of the Scan's body included; and the initializers."""
    graphs, nodes, inits = [model.graph], [], {}
    while graphs:
        g = graphs.pop()
        inits.update({t.name: t for t in g.initializer})
        for node in g.node:
            nodes.append(node)
            graphs.extend(a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
    return nodes, inits


@st.composite
def basic_indexes(draw, shape=(3, 4)):
    """An index of a cell value shaped (batch,) + shape that is basic (ints, slices, None,
    one ...) and keeps the batch axis first."""
    items = [slice(None)]  # the batch axis
    for dim in shape:
        kind = draw(st.sampled_from(["int", "slice", "whole"]))
        if kind == "int":
            items.append(draw(st.integers(-dim, dim - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-dim - 1, dim + 1)
            step = draw(st.none() | st.sampled_from([1, 2, -1, -2, 3]))
            items.append(slice(draw(bound), draw(bound), step))
        else:
            items.append(slice(None))
    for _ in range(draw(st.integers(0, 2))):  # new axes, after the batch axis
        items.insert(draw(st.integers(1, len(items))), None)
    whole = 0  # a leading run of whole slices (the batch axis's included) may be a ...
    while whole < len(items) and items[whole] == slice(None):
        whole += 1
    cut = draw(st.integers(0, whole))
    if cut and draw(st.booleans()):
        items[:cut] = [Ellipsis]
    while len(items) > 1 and items[-1] == slice(None) and draw(st.booleans()):
        items.pop()  # trailing whole slices may be left out
    return tuple(items)


@settings(max_examples=25, deadline=None)
@given(index=basic_indexes())
def test_a_basic_index_lowers_to_slices_not_gathers_of_positions(index):
    """``g[..., :H]`` lowers as ``g[:, :H]`` does: any basic index (ints, slices, ``None``,
    ``...``) is a ``Slice`` and a ``Gather`` of one position per int (and an ``Unsqueeze``),
    never a ``Reshape`` and a ``Gather`` of a list of positions; the values are numpy's."""
    cell = ug.Cell("index")
    x = cell.input("x", (3, 4))
    h = cell.state("h", (3, 4))
    cell.feedback(h, ug.tanh(x + h * 0.5, name="h_next"))
    picked = (x + h)[index]
    recorded = picked.node.shape  # (the stand-in's shape as the graph records it)
    if 0 in recorded or recorded[0] != 1:
        return  # (a cell output must keep its batch axis and hold something)
    cell.output("y", picked * 1.0)
    xs = sequences(cell, 3, 2)
    models = check(cell, xs, steps_options=(None,))
    nodes, inits = _all_nodes(models[None])
    assert "Reshape" not in {n.op_type for n in nodes}, index
    for n in nodes:
        if n.op_type == "Gather" and n.input[1] in inits:
            assert list(inits[n.input[1]].dims) == [], (index, n.name)


def test_the_issues_indexes_lower_alike():
    cell = ug.Cell("gates")
    x = cell.input("x", (6,))
    h = cell.state("h", (3,))
    g = ug.tanh(x + ug.concat([h, h], axis=1))
    cell.feedback(h, g[..., :3] * 0.5 + g[:, 3:] * 0.5)
    cell.output("y", g[:, :3])
    model = check(cell, sequences(cell, 4, 2), steps_options=(None,))[None]
    types = [n.op_type for n in _all_nodes(model)[0]]
    assert types.count("Slice") == 3 and "Gather" not in types and "Reshape" not in types


def _where_cell(also_read=False, as_output=False):
    cell = ug.Cell("gated")
    x = cell.input("x", (3,))
    h = cell.state("h", (3,))
    up = h > 0.3
    nxt = ug.where(up, ug.tanh(x + h), x * 0.5) + ug.where(up, h * 0.1, 0.0)
    if also_read:
        nxt = nxt + up * 0.25
    cell.feedback(h, ug.tanh(nxt, name="h_next"))
    cell.output("y", up * 1.0 if as_output else nxt)
    if as_output:
        cell.output("up", up)
    return cell


def test_a_comparison_read_only_by_where_stays_bool():
    """``where(h > 0.3, ...)`` is ``Greater`` straight into ``Where``: no ``Cast`` to the float
    0/1 numpy computes and back to bool. A comparison read by anything else (arithmetic, an
    output) keeps its float value; both agree with the net."""
    rng = np.random.default_rng(3)
    xs = {"x": rng.uniform(-1, 1, (5, 3, 3))}
    state = {"h": rng.uniform(-1, 1, (3, 3))}
    for steps in (None, 5):
        model = check(_where_cell(), xs, state, steps_options=(steps if steps is None
                                                               else "T",))
        nodes = _all_nodes(next(iter(model.values())))[0]
        assert "Cast" not in {n.op_type for n in nodes}
        made = {o: n for n in nodes for o in n.output}
        wheres = [n for n in nodes if n.op_type == "Where"]
        assert len(wheres) == 2 * (steps or 1)
        assert all(made[n.input[0]].op_type == "Greater" for n in wheres)
    for kw in ({"also_read": True}, {"as_output": True}):
        model = check(_where_cell(**kw), xs, state)[None]
        nodes = _all_nodes(model)[0]
        casts = [n for n in nodes if n.op_type == "Cast"]
        assert casts, kw  # the float 0/1 is computed once, for its other readers
    # a comparison lowered by a rule of one's own is lowered by that rule
    gt = ug.ops.get_op("gt").lower["onnx"]
    seen = []
    deflower("gt", "onnx", lambda b, x, y: seen.append(1) or gt(b, x, y))
    try:
        check(_where_cell(), xs, state)
    finally:
        deflower("gt", "onnx", gt)
    assert seen and ug.ops.get_op("gt").lower["onnx"] is ug.ops._LIBRARY["gt"].lower["onnx"]


# -------------------------------------------------------------------------------------------
# check_lowering on onnx rules


def test_check_lowering_catches_a_wrong_onnx_rule_and_passes_a_right_one():
    name = "scaled_check_test"
    defop(name, lambda a: a * 2.0, [lambda g, ans, a: 2.0 * g],
          onnx=lambda b, x: b.op("Mul", x, b.const(3.0)))
    try:
        with pytest.raises(ug.LoweringError, match=r"onnx rule of op 'scaled_check_test' "
                           r"\(run by the reference evaluator\) disagrees with its numpy "
                           r"forward: worst at index \(1,\): the rule gives -3, the op -2") as e:
            ug.export.check_lowering(name, "onnx", np.array([0.5, -1.0, 0.25]))
        assert e.value.op == name and e.value.target == "onnx"
        deflower(name, "onnx", lambda b, x: b.op("Mul", x, b.const(2.0)))
        assert ug.export.check_lowering(name, "onnx", np.array([0.5, -1.0])) == {
            "forward": 0.0}
        deflower(name, "onnx", lambda b, x: b.op("Transpose", x, perm=[1, 0]))
        with pytest.raises(ug.LoweringError, match="shape"):
            ug.export.check_lowering(name, "onnx", np.ones((2, 3)))
        deflower(name, "onnx", lambda b, x: b.op("NoSuchOperator", x))
        with pytest.raises(ug.LoweringError, match="onnx.checker refuses"):
            ug.export.check_lowering(name, "onnx", np.ones(2))
    finally:
        ug.ops.undefop(name)
