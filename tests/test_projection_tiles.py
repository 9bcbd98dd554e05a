"""The slices of a time-batched input projection (a GRU's gates) send their gradients
straight into the projection's gradient when they tile it (``schedule._tiling_slices``):
every arrangement of slices (tiling in any order, overlapping, leaving a gap, one slice read
twice) gives what the generic reference executor gives, under every execution option."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

schedule = sys.modules["unrollgraph.schedule"]
run_module = sys.modules["unrollgraph.run"]
H, D = 3, 2


def _cell(cuts, twice):
    """A cell whose projection x @ W (width 3H) is cut at ``cuts`` (pairs start, stop, in
    units of H) into gates, each gate combined with the state (so that the steps, not the
    time-batched nodes, read it); ``twice``: the first gate is read a second time."""
    rng = np.random.default_rng(0)
    cell = ug.Cell("tiles")
    x = cell.input("x", (D,))
    h = cell.state("h", (H,))
    W = cell.param("W", rng.normal(size=(D, 3 * H)))
    proj = x @ W
    total = None
    for j, (a, b) in enumerate(cuts):
        width = (b - a) * H
        U = cell.param(f"U{j}", rng.normal(size=(H, width)) * 0.5)
        F = cell.param(f"F{j}", rng.normal(size=(width, H)) * 0.5)
        pre = proj[:, a * H:b * H] + h @ U
        term = (ug.tanh(pre) if j % 2 else ug.sigmoid(pre)) @ F
        total = term if total is None else total + term
    if twice:
        total = total + proj[:, cuts[0][0] * H:cuts[0][0] * H + H] * h
    h_next = ug.tanh(total, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def _grads(cell, T, xs, G, keep, anomaly=False, truncate=None):
    net = ug.unroll(cell, steps=T, keep=keep, truncate=truncate)
    cell.zero_grad()
    xt = ug.tensor(xs, requires_grad=True)
    with pytest.MonkeyPatch.context() as mp:
        # the time-batched path, whatever the cell and T (the plain path has no projection)
        mp.setattr(run_module, "_PLAIN_STEPS", 0)
        if anomaly:
            with ug.detect_anomaly():
                out, _ = net(xt)
                (out * ug.tensor(G)).sum().backward()
        else:
            out, _ = net(xt)
            (out * ug.tensor(G)).sum().backward()
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    grads["xs"] = xt.grad.copy()
    return out.data.copy(), grads, net


ARRANGEMENTS = [
    [(0, 1), (1, 2), (2, 3)],  # the GRU's: tiling
    [(2, 3), (0, 1), (1, 2)],  # tiling, declared in another order
    [(0, 2), (2, 3)],  # tiling with a wider piece
    [(0, 1), (2, 3)],  # a gap
    [(0, 2), (1, 2), (2, 3)],  # an overlap
    [(1, 2)],  # one piece
]


@settings(max_examples=25, deadline=None)
@given(cuts=st.sampled_from(ARRANGEMENTS), twice=st.booleans(), T=st.integers(7, 14),
       B=st.integers(1, 3), keep=st.sampled_from(["needed", "all"]),
       truncate=st.sampled_from([None, 1, 3]), seed=st.integers(0, 20))
def test_slices_of_a_projection_agree_with_the_reference(cuts, twice, T, B, keep, truncate,
                                                         seed):
    cell = _cell(cuts, twice)
    rng = np.random.default_rng(seed)
    xs, G = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, H))
    out, grads, net = _grads(cell, T, xs, G, keep, truncate=truncate)
    ref_out, ref_grads, _ = _grads(cell, T, xs, G, keep, anomaly=True, truncate=truncate)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    for k in ref_grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-12, atol=1e-13, err_msg=k)


def test_the_gru_gates_take_the_tiled_path_and_keep_their_per_step_gradients():
    cell = ug.nn.GRUCell(D, H, seed=0)
    T, B = 9, 2
    rng = np.random.default_rng(1)
    xs, G = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, H))
    seen = []
    real = schedule._tiling_slices

    def spy(*args):
        out = real(*args)
        seen.append(out)
        return out

    schedule._tiling_slices = spy
    try:
        out, grads, net = _grads(cell, T, xs, G, "all")
    finally:
        schedule._tiling_slices = real
    assert any(len(s) == 3 for s in seen)  # the three gates of the input projection
    ref_out, ref_grads, ref_net = _grads(cell, T, xs, G, "all", anomaly=True)
    for k in ref_grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-12, atol=1e-13, err_msg=k)
    # every node's per-step gradient of a run that keeps everything, the gates' included
    run, ref_run = net.last_run, ref_net.last_run
    for node, ref_node in zip(net.nodes, ref_net.nodes):
        g, want = run.grad(node), ref_run.grad(ref_node)
        if want is None:
            continue
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-13, err_msg=str(node))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float32_projection_keeps_its_type(dtype):
    cell = ug.nn.GRUCell(D, H, seed=0, dtype=dtype)
    T, B = 8, 2
    rng = np.random.default_rng(2)
    xs, G = rng.normal(size=(T, B, D)).astype(dtype), rng.normal(size=(T, B, H)).astype(dtype)
    net = ug.unroll(cell, steps=T)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "_PLAIN_STEPS", 0)  # (the time-batched path)
        out, _ = net(ug.tensor(xs))
        (out * ug.tensor(G)).sum().backward()
    assert net.last_run.plain is False
    for k, p in cell.parameters().items():
        assert p.grad.dtype == dtype, k
