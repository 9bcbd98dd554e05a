"""The straight-line flush (``schedule.flush_program``) against the generic loops it writes out.

When a run's steps are all flushed at once, the parts filed for the shared weights, the
time-batched nodes' backward and the shared nodes' backward run as one generated function
per net. It makes the very calls of ``StepTemplates.flush``, ``time_batched_backward`` and
the reference walk over the shared entries, so every number must be the same bits as theirs.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")
plain_test = importlib.import_module("test_plain_path")
run_module = importlib.import_module("unrollgraph.run")


def _run(args, straight, monkeypatch):
    """Every gradient and output of one run on the batched path, flushed at once, with the
    straight-line flush or (``straight`` False) the generic loops."""
    monkeypatch.setattr(run_module, "_chunk_steps", lambda *a: 0)
    if not straight:
        monkeypatch.setattr(run_module, "flush_after_steps", lambda *a: None)
    return plain_test._grads(*args, False, monkeypatch)


@settings(max_examples=25, deadline=None)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_the_straight_line_flush_gives_the_generic_loops_bits(spec, data):
    args, _ = plain_test.draw_case(spec, data)
    with pytest.MonkeyPatch.context() as monkeypatch:
        straight = _run(args, True, monkeypatch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        generic = _run(args, False, monkeypatch)
    assert straight.keys() == generic.keys()
    for what, want in generic.items():
        got = straight[what]
        if want is None or got is None:
            assert want is None and got is None, what
            continue
        assert got.dtype == want.dtype, what
        assert np.array_equal(got, want), what


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("keep", ["needed", "all"])
def test_the_library_cells_take_it_and_keep_their_bits(kind, keep, monkeypatch):
    """An Elman and an LSTM cell's backward passes take the straight-line flush (a GRU's,
    whose input projection is cut into slices, the generic loops) with gradients, per-step
    gradients and state gradients equal to the generic loops' bit for bit, run after run."""
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)  # (the batched path)
    cells = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
    rng = np.random.default_rng(1)
    T, B = 9, 2
    xs = rng.uniform(-1, 1, (T, B, 3))
    G = rng.standard_normal((T, B, 4))
    h0 = rng.uniform(-1, 1, (B, 4))

    def one(straight):
        cell = cells[kind](3, 4, seed=0)
        net = ug.unroll(cell, steps=T, keep=keep)
        got = []
        with pytest.MonkeyPatch.context() as mp:
            if not straight:
                mp.setattr(run_module, "flush_after_steps", lambda *a: None)
            for _ in range(3):  # (buffers reused from run to run)
                cell.zero_grad()
                x = ug.tensor(xs, requires_grad=True)
                h = ug.tensor(h0, requires_grad=True)
                out, _ = net(x, state={"h": h} if kind != "lstm" else None)
                (out * ug.tensor(G)).sum().backward()
                run = net.last_run
                got.append([p.grad.copy() for p in cell.parameters().values()]
                           + [x.grad, run.state_grads("h")]
                           + ([h.grad] if kind != "lstm" else []))
        return net, got

    net, straight = one(True)
    made = [fn for fn in net._flush_cache.values() if fn is not None]
    assert bool(made) == (kind != "gru")
    if made:
        assert "def post(" in made[0].__source__
    _net, generic = one(False)
    for a, b in zip(straight, generic):
        for u, v in zip(a, b):
            assert u.dtype == v.dtype and np.array_equal(u, v)
    for later in straight[1:]:
        for u, v in zip(later, straight[0]):
            assert np.array_equal(u, v)


def test_grads_handed_to_the_user_are_not_overwritten_by_a_later_run(monkeypatch):
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)
    cell = ug.nn.RNNCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=8)
    rng = np.random.default_rng(2)
    cell.zero_grad()
    out, _ = net(ug.tensor(rng.uniform(-1, 1, (8, 2, 3))))
    out.sum().backward()
    first = {k: p.grad for k, p in cell.parameters().items()}
    kept = {k: g.copy() for k, g in first.items()}
    cell.zero_grad()
    out, _ = net(ug.tensor(rng.uniform(-1, 1, (8, 2, 3))))
    (out * 3.0).sum().backward()
    for k, g in first.items():
        assert np.array_equal(g, kept[k]), k
        assert cell.parameters()[k].grad is not g
