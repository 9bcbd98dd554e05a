"""A view of a value is never overwritten by an op computing in place.

The compiled runs compute some elementwise results in the array of an operand nobody reads
afterwards (``t = x W^T; t += b``). A slice such as ``x[:, ::-1]`` is a view of its source's
memory: an input's array (a masked run's padded copy of the inputs is writeable), or a value
other nodes still read. Computing ``x[:, ::-1] + p`` into that view would change ``x`` under
every later reader (``v * x``, ``Run.value("x@t")``).

Random cells built around that pattern (a view of an input or of a time-batched value, an
elementwise op on the view, the source read again, sibling views of the same source) run
with every execution option (``keep="needed"`` and ``"all"``, the plain and the batched path,
checkpointed or not, the generic walk), with and without ``lengths=`` (short sequences, empty
ones, the full length), in float64 and float32. Each is compared with the generic reference
walk keeping everything, and with the cell's equations stepped by hand in numpy for each
sequence alone: outputs, final states, every ``Run.value`` of an input (bit for bit: it is
the input), every parameter's gradient and the inputs' and initial state's gradients. The
user's arrays are checked unchanged bit for bit.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

run_module = importlib.import_module("unrollgraph.run")

VIEWS = {"rev": (slice(None), slice(None, None, -1)), "all": (slice(None), slice(None)),
         "step": (slice(None), slice(None, None, 1))}
FIRST = ["add", "sub", "mul", "div", "tanh", "exp", "neg"]
SECOND = ["add", "sub", "mul", "rsub"]

# (keep, path, checkpoint): the compiled runs, batched (every step's input projection at
# once, as any net of 7 steps or more) and plain, checkpointed or not; the generic walk last
OPTIONS = [(keep, path, None) for keep in ("needed", "all") for path in ("batched", "plain")] \
    + [("needed", path, 2) for path in ("batched", "plain")] + [("needed", "generic", None)]
REFERENCE = ("all", "generic", None)


@st.composite
def specs(draw):
    return {
        "d": draw(st.integers(2, 4)),
        "src": draw(st.sampled_from(["x", "scaled", "matmul"])),
        "view": draw(st.sampled_from(sorted(VIEWS))),
        "first": draw(st.sampled_from(FIRST)),
        "second": draw(st.sampled_from(SECOND)),
        "sibling": draw(st.booleans()),  # a second view of the same source, read once
        "out_view": draw(st.booleans()),  # the first op's result is an output too
    }


def _equations(spec, x, h, p, q, W, xp):
    """One step of the cell on ``x`` (B, d) and ``h``; ``xp`` the array module (ug for the
    cell's placeholders, numpy for the reference). Returns (h_next, outputs)."""
    tanh = ug.tanh if xp is ug else np.tanh
    exp = ug.exp if xp is ug else np.exp
    src = {"x": lambda: x, "scaled": lambda: x * q, "matmul": lambda: x @ W}[spec["src"]]()
    v = src[VIEWS[spec["view"]]]
    first = spec["first"]
    if first == "add":
        v = v + p
    elif first == "sub":
        v = v - p
    elif first == "mul":
        v = v * p
    elif first == "div":
        v = v / (p * p + 1.0)
    elif first == "tanh":
        v = tanh(v)
    elif first == "exp":
        v = exp(v * 0.5)
    else:
        v = -v
    second = spec["second"]
    w = {"add": lambda: v + src, "sub": lambda: v - src, "mul": lambda: v * src,
         "rsub": lambda: src - v}[second]()
    if spec["sibling"]:
        w = w + tanh(src[:, ::-1] - p)
    hn = tanh(w * 0.5 + h * 0.5)
    outs = [hn] + ([v] if spec["out_view"] else [])
    return hn, outs


def _values(spec, seed, dtype):
    rng = np.random.default_rng(seed)
    d = spec["d"]
    return {"p": rng.uniform(-1, 1, d).astype(dtype), "q": rng.uniform(-1, 1, d).astype(dtype),
            "W": rng.uniform(-1, 1, (d, d)).astype(dtype)}


def build_cell(spec, values):
    c = ug.Cell("views")
    d = spec["d"]
    x = c.input("x", (d,))
    h = c.state("h", (d,))
    used = {"p": spec["first"] in ("add", "sub", "mul", "div") or spec["sibling"],
            "q": spec["src"] == "scaled", "W": spec["src"] == "matmul"}
    p, q, W = (c.param(k, values[k].copy()) if used[k] else None for k in ("p", "q", "W"))
    hn, outs = _equations(spec, x, h, p, q, W, ug)
    c.feedback(h, hn)
    for k, o in enumerate(outs):
        c.output(f"y{k}", o)
    return c


def reference_outputs(spec, values, xs, h0, lengths):
    """The cell stepped in numpy, each sequence alone at its own length: outputs (zero past
    a sequence's end) and final states (the state at its length)."""
    T, B, d = xs.shape
    outs = [np.zeros((T, B, d)) for _ in range(2 if spec["out_view"] else 1)]
    final = h0.copy()
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        h = h0[b:b + 1]
        for t in range(n):
            h, ys = _equations(spec, xs[t, b:b + 1], h, values["p"], values["q"],
                               values["W"], np)
            for k, y in enumerate(ys):
                outs[k][t, b] = y[0]
        final[b] = h[0]
    return outs, final


def run_option(cell, spec, xs, h0, seeds, lengths, option, monkeypatch):
    keep, path, ck = option
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0 if path == "batched" else 1 << 30)
    T = xs.shape[0]
    net = ug.unroll(cell, steps=T, keep=keep, checkpoint=ck)
    xs_before, h0_before = xs.copy(), h0.copy()
    for _call in range(2):  # the second call reuses the net's caches and buffer pool
        cell.zero_grad()
        xt = ug.tensor(xs, requires_grad=True)
        ht = ug.tensor(h0, requires_grad=True)
        if path == "generic":
            with ug.detect_anomaly():
                outs, fin = net({"x": xt}, state=ht, lengths=lengths)
        else:
            outs, fin = net({"x": xt}, state=ht, lengths=lengths)
        outs = list(outs.values()) if isinstance(outs, dict) else [outs]
        loss = (fin * seeds[-1]).sum()
        for o, s in zip(outs, seeds):
            loss = loss + (o * s).sum()
        loss.backward()
    assert np.array_equal(xs, xs_before) and np.array_equal(h0, h0_before), \
        f"{option}: the user's arrays changed"
    run = net.last_run
    return {
        "outs": [o.data.copy() for o in outs], "final": fin.data.copy(),
        "inputs": np.stack([run.value(f"x@{t}") for t in range(T)]),
        "grads": {k: p.grad.copy() for k, p in cell.parameters().items()
                  if p.grad is not None},
        "x.grad": xt.grad.copy(), "h0.grad": ht.grad.copy(),
    }


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@settings(max_examples=int(os.environ.get("UNROLLGRAPH_VIEW_EXAMPLES", "30")), deadline=None)
@given(spec=specs(), data=st.data())
def test_views_are_never_overwritten_in_place(spec, data, monkeypatch_module):
    T = data.draw(st.integers(1, 8), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B),
                        label="lengths")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    values = _values(spec, seed, dtype)
    xs = rng.uniform(-1, 1, (T, B, spec["d"])).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, spec["d"])).astype(dtype)
    cell = build_cell(spec, values)
    seeds = [rng.standard_normal((T,) + o.shape).astype(dtype)
             for o in cell.outputs.values()] + [rng.standard_normal(h0.shape).astype(dtype)]
    lengths = None if lengths is None else np.array(lengths)
    ref = run_option(cell, spec, xs, h0, seeds, lengths, REFERENCE, monkeypatch_module)
    # the reference walk against the equations stepped by hand for each sequence alone
    want_outs, want_final = reference_outputs(
        spec, {k: v.astype(np.float64) for k, v in values.items()}, xs.astype(np.float64),
        h0.astype(np.float64), lengths)
    rtol, atol = (1e-12, 1e-12) if dtype is np.float64 else (2e-5, 2e-5)
    for got, want in zip(ref["outs"] + [ref["final"]], want_outs + [want_final]):
        np.testing.assert_allclose(got, want, rtol=10 * rtol if dtype is np.float32 else rtol,
                                   atol=10 * atol if dtype is np.float32 else atol)
    if lengths is None:  # (a masked run's padded rows hold copies of real rows)
        assert np.array_equal(ref["inputs"], xs)
    else:
        for b, n in enumerate(lengths):
            assert np.array_equal(ref["inputs"][:n, b], xs[:n, b])
    for option in OPTIONS:
        res = run_option(cell, spec, xs, h0, seeds, lengths, option, monkeypatch_module)
        tag = f"{option} lengths={lengths} T={T} B={B} {np.dtype(dtype).name}"
        # an input's value is the input itself: the same bits whatever the path
        assert np.array_equal(res["inputs"], ref["inputs"]), f"{tag}: Run.value of x"
        for k, (a, b) in enumerate(zip(res["outs"], ref["outs"])):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{tag} y{k}")
        np.testing.assert_allclose(res["final"], ref["final"], rtol=rtol, atol=atol,
                                   err_msg=f"{tag} final state")
        assert sorted(res["grads"]) == sorted(ref["grads"]), tag
        for k, g in res["grads"].items():
            scale = max(1.0, float(np.abs(ref["grads"][k]).max()))
            np.testing.assert_allclose(g, ref["grads"][k], rtol=rtol, atol=atol * scale,
                                       err_msg=f"{tag} {k}.grad")
        for k in ("x.grad", "h0.grad"):
            scale = max(1.0, float(np.abs(ref[k]).max()))
            np.testing.assert_allclose(res[k], ref[k], rtol=rtol, atol=atol * scale,
                                       err_msg=f"{tag} {k}")


def test_a_reversed_view_of_an_input_plus_a_parameter_on_the_batched_masked_path(
        monkeypatch):
    """``x[:, ::-1] + p`` read with ``x`` again, on the batched path with ``lengths=``: the
    sum was computed into the reversed view of the run's padded input copy, so ``v * x``
    and ``Run.value("x@0")`` saw ``x + p`` reversed."""
    spec = {"d": 3, "src": "x", "view": "rev", "first": "add", "second": "mul",
            "sibling": False, "out_view": False}
    values = {"p": np.array([0.1, 0.2, 0.3]), "q": np.ones(3), "W": np.eye(3)}
    xs = np.random.default_rng(0).normal(size=(3, 2, 3))
    h0 = np.zeros((2, 3))
    lengths = np.array([2, 3])
    cell = build_cell(spec, values)
    seeds = [np.ones((3, 2, 3)), np.zeros((2, 3))]
    got = run_option(cell, spec, xs, h0, seeds, lengths, ("needed", "batched", None),
                     monkeypatch)
    want_outs, want_final = reference_outputs(spec, values, xs, h0, lengths)
    np.testing.assert_allclose(got["outs"][0], want_outs[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["final"], want_final, rtol=1e-12, atol=1e-14)
    assert np.array_equal(got["inputs"][:2, 0], xs[:2, 0])
    assert np.array_equal(got["inputs"][:, 1], xs[:, 1])


def test_a_forward_under_detect_anomaly_then_backward_outside_it(monkeypatch):
    """A forward pass that took the generic loop (under ``detect_anomaly``) made no stacked
    time-batched values; a backward pass called after the block ends takes the generic loop
    too (it raised a KeyError from the compiled one) and gives the same gradients."""
    spec = {"d": 3, "src": "matmul", "view": "rev", "first": "add", "second": "mul",
            "sibling": True, "out_view": True}
    rng = np.random.default_rng(1)
    values = _values(spec, 1, np.float64)
    xs = rng.uniform(-1, 1, (8, 2, 3))
    h0 = rng.uniform(-1, 1, (2, 3))
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)
    grads = []
    for inside in (True, False):
        cell = build_cell(spec, values)
        net = ug.unroll(cell, steps=8)
        with ug.detect_anomaly():
            outs, fin = net(xs, state=h0, lengths=[8, 5])
            loss = sum((o * o).sum() for o in outs.values()) + fin.sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        grads.append({k: p.grad for k, p in cell.parameters().items()})
    for k, g in grads[0].items():
        assert np.array_equal(grads[1][k], g), k


def test_net_slot_takes_the_names_run_value_takes_and_names_a_bad_one():
    """``net.slot`` answers the names :meth:`Run.value` answers (same slot), and a name no
    node has, a cell's own placeholder or a wrong type gets a GraphError naming it and the
    accepted forms (no bare KeyError)."""
    cell = ug.Cell("rnn")
    x, h = cell.input("x", (2,)), cell.state("h", (2,))
    cell.feedback(h, ug.tanh(x + h))
    cell.output("y", h * 2.0)
    net = ug.unroll(cell, steps=3)
    net(np.ones((3, 1, 2)))
    run = net.last_run
    for name in ("x@0", "x_2", "h@1", "h_init", "y@2"):
        assert run.values[net.slot(name)] is not None
        assert np.array_equal(run.value(name), run.values[net.slot(name)]), name
    assert net.slot("h@1") == net.slot(net.state_nodes["h"][1])
    with pytest.raises(ug.GraphError, match=r"net\.slot\('hh@1'\).*did you mean 'h@1'"):
        net.slot("hh@1")
    with pytest.raises(ug.GraphError, match=r"net\.slot\(x\): a node of the cell.*'x@0'"):
        net.slot(x)
    with pytest.raises(ug.GraphError, match=r"net\.slot\(\.\.\.\) takes .* got int"):
        net.slot(3)
    with pytest.raises(ug.GraphError, match=r"Run\.value\(h\): a node of the cell.*'h@0'"):
        run.value(h)
