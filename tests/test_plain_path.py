"""The plain path of short runs against the batched path.

A net of few steps runs each step's input projection inside the step and adds each step's
part of a shared weight's gradient into it in place (``run._plain_path``); longer nets
batch both over time. The two must give the same numbers (to rounding: the sums run in
another order), and the choice must depend on the net alone, so that a recomputation of a
run (``Run.full``, ``Run.state_grads``) reproduces its bits.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.compile import plain_templates

# the random cells may declare a state their graph never reads (a legitimate cell: it carries
# a value out as the final state); unroll tells a user so with a CellWarning, which these
# tests of the arithmetic do not check (tests/test_user_trial_cells.py does)
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")
run_module = importlib.import_module("unrollgraph.run")


def _grads(spec, values, T, xs, h0s, seeds_out, seeds_fin, keep, truncate, lengths, plain,
           monkeypatch):
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 1 << 30 if plain else 0)
    cell = diff.build_cell(spec, values)
    net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep)
    xts = {f"x{k}": ug.tensor(x, requires_grad=True) for k, x in enumerate(xs)}
    h0ts = tuple(ug.tensor(h, requires_grad=True) for h in h0s)
    outs, fins = net(xts, state=h0ts, lengths=lengths)
    diff._loss(outs, fins, spec, seeds_out, seeds_fin).backward()
    run = net.last_run
    templates = plain_templates(net) is not None
    assert run.plain == (plain and templates)  # the path asked for, where it exists
    got = {f"{k}.grad": p.grad for k, p in cell.parameters().items()}
    got.update({f"x{k}.grad": x.grad for k, x in enumerate(xts.values())})
    got.update({f"h{k} initial .grad": h.grad for k, h in enumerate(h0ts)})
    got.update({f"output {k}": o.data for k, o in enumerate(
        diff._as_list(outs, len(spec["outputs"])))})
    got.update({f"state_grads h{k}": run.state_grads(f"h{k}") for k in range(len(spec["st"]))})
    return got


def draw_case(spec, data) -> tuple:
    """A random run of a random cell (test_differential's): ``(spec, values, T, xs, h0s,
    seeds_out, seeds_fin, keep, truncate, lengths)`` and its dtype, drawn from ``data``."""
    T = data.draw(st.integers(1, 12), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    keep = data.draw(st.sampled_from(["needed", "all"]), label="keep")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    masked = data.draw(st.booleans(), label="masked")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    lengths = (np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B),
                                  label="lengths")) if masked else None)
    if masked and truncate is not None and truncate < T and not all(
            r[0] == "v" for r in spec["outputs"] + spec["feedback"]):
        truncate = None  # (see test_differential: a leaf output is never cut)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    values = {k: v.astype(dtype) for k, v in diff._param_values(spec, 1).items()}
    xs = [rng.uniform(-1, 1, (T, B, d)).astype(dtype) for d in spec["in"]]
    h0s = [rng.uniform(-1, 1, (B, d)).astype(dtype) for d in spec["st"]]
    cell = diff.build_cell(spec, values)
    widths = [cell.outputs[f"y{k}"].shape[1:] for k in range(len(spec["outputs"]))]
    seeds_out = [rng.standard_normal((T, B) + w).astype(dtype) for w in widths]
    seeds_fin = [rng.standard_normal((B, d)).astype(dtype) for d in spec["st"]]
    return (spec, values, T, xs, h0s, seeds_out, seeds_fin, keep, truncate, lengths), dtype


@settings(max_examples=25, deadline=None)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_plain_and_batched_paths_agree_on_random_cells(spec, data):
    args, dtype = draw_case(spec, data)
    with pytest.MonkeyPatch.context() as monkeypatch:
        plain = _grads(*args, True, monkeypatch)
        batched = _grads(*args, False, monkeypatch)
    # float64: the same sums in another order; float32 keeps float32 on both paths
    rtol = 1e-12 if dtype is np.float64 else 2e-5
    for what, want in batched.items():
        got = plain[what]
        if want is None or got is None:
            assert (want is None or not np.any(want)) and (got is None or not np.any(got)), what
            continue
        assert got.dtype == want.dtype, what
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_every_run_of_a_net_takes_one_path_and_recomputations_reproduce_its_bits(kind):
    # an Elman cell takes the plain path up to _PLAIN_STEPS steps, a gated cell (at small
    # sizes) up to twice as many
    cell = (ug.nn.LSTMCell if kind == "lstm" else ug.nn.RNNCell)(3, 5, seed=0)
    last = run_module._PLAIN_STEPS * (2 if kind == "lstm" else 1)
    rng = np.random.default_rng(0)
    for T, plain in ((last, True), (last + 1, False)):
        net = ug.unroll(cell, steps=T, keep="needed")
        full_net = ug.unroll(cell, steps=T, keep="all")
        for B in (1, 4):
            xs = rng.uniform(-1, 1, (T, B, 3))
            G = rng.standard_normal((T, B, 5))
            grads = []
            for n in (net, net, full_net):  # twice the lean net, then one keeping everything
                cell.zero_grad()
                out, _ = n(ug.tensor(xs))
                (out * ug.tensor(G)).sum().backward()
                run = n.last_run
                assert run.plain is plain, (T, B)
                grads.append((cell.weight_hh.grad.copy(), run.state_grads("h")))
            # every run of the net takes the same path: the same bits, lean or not
            for g in grads[1:]:
                assert np.array_equal(g[0], grads[0][0])
                assert np.array_equal(g[1], grads[0][1])
            full = net.last_run.full()  # (checks bit for bit what the lean run kept)
            assert full.plain is plain
            assert np.array_equal(full.grads[net.slot(net.param_nodes["weight_hh"])],
                                  cell.weight_hh.grad)


def test_the_choice_of_path_follows_the_cell_the_flushes_and_the_step_size():
    # what _plain_path reads: whether the cell is gated, the steps a flush covers (the chunk)
    # and a step's states in bytes
    def choose(cell_type, B, H, T, itemsize=8):
        net = ug.unroll(cell_type(4, H, seed=0), steps=T)
        chunk = run_module._chunk_steps(net, B, itemsize)
        return chunk, run_module._plain_path(net, B, chunk, itemsize)

    assert choose(ug.nn.LSTMCell, 1, 8, 12) == (0, True)  # a short net of a gated cell
    assert choose(ug.nn.LSTMCell, 1, 8, 13) == (0, False)  # one flush of 13 steps
    assert choose(ug.nn.GRUCell, 1, 8, 12) == (0, True)
    assert choose(ug.nn.RNNCell, 1, 8, run_module._PLAIN_STEPS + 1) == (0, False)
    # flushes of 5 steps (a chunked run of a modest batch): plain, if a step's states are
    # small (here 32 * 2 * 64 float64 numbers: 32 KiB)
    assert choose(ug.nn.LSTMCell, 32, 64, 50) == (5, True)
    assert choose(ug.nn.LSTMCell, 32, 64, 50, itemsize=16)[1] is False  # 64 KiB a step
    assert choose(ug.nn.LSTMCell, 32, 128, 50)[1] is False
    assert choose(ug.nn.RNNCell, 32, 128, 50) == (5, False)  # (an Elman cell: never)
    # flushes of 9 steps or more: batched
    assert choose(ug.nn.LSTMCell, 16, 64, 100) == (9, False)
    # the chosen path is the run's, and a run that takes it gets the batched run's gradients
    cell = ug.nn.LSTMCell(4, 64, seed=0)
    net = ug.unroll(cell, steps=50)
    xs = np.random.default_rng(0).uniform(-1, 1, (50, 32, 4))
    out, _ = net(ug.tensor(xs))
    out.sum().backward()
    assert net.last_run.plain is True
    got = cell.weight_hh.grad.copy()
    cell.zero_grad()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "_PLAIN_STEPS", 0)
        batched = ug.unroll(cell, steps=50)
        out, _ = batched(ug.tensor(xs))
        out.sum().backward()
    assert batched.last_run.plain is False
    np.testing.assert_allclose(got, cell.weight_hh.grad, rtol=1e-10, atol=1e-12)
