"""Teacher-forced recomputation of checkpointed segments.

A checkpointed run's backward pass recomputes each segment before the last. Where a value
of a step depends on earlier steps only through states that are also outputs (an LSTM's and
a GRU's h: the run holds them for every step, as rows of the outputs it returned), it is
computed for the whole segment at once; the rest (an LSTM's c) step by step. These tests
check that the gradients are those of full BPTT (the reference: every step kept), to 1e-12
relative (a product of k B rows may round otherwise than k products of B rows), that
``Run.full()`` reproduces them bit for bit, and that the method is the one taken wherever it
applies (it must not fall back silently), and not taken where it does not (masked runs,
anomaly mode, the Elman RNN whose segments are put in place without a recomputation).
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph import checkpoint as ck
from unrollgraph import run as run_module

tc = importlib.import_module("test_checkpoint")
tight = tc.tight

pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

EXAMPLES = int(os.environ.get("UNROLLGRAPH_CHECKPOINT_EXAMPLES", "25"))
D, H = 3, 4


def custom_cell(seed=0):
    """A cell with a state that is its output (h, held) and one that is not (m): a, the
    sigmoid and their product depend on h alone (a segment at once), m and h step by step."""
    rng = np.random.default_rng(seed)
    cell = ug.Cell("custom")
    x = cell.input("x", (D,))
    h = cell.state("h", (H,))
    m = cell.state("m", (H,))
    W = cell.param("W", rng.uniform(-1, 1, (H, D)))
    U = cell.param("U", rng.uniform(-1, 1, (H, H)))
    V = cell.param("V", rng.uniform(-1, 1, (H, H)))
    b = cell.param("b", rng.uniform(-1, 1, (H,)))
    a = ug.functional.tanh(x @ W.T + h @ U.T + b)
    gate = ug.functional.sigmoid(h @ V.T)
    m_next = 0.5 * m + a * gate
    h_next = a * ug.functional.tanh(m_next)
    cell.feedback(h, h_next)
    cell.feedback(m, m_next)
    cell.output("y", h_next)
    return cell


CELLS = {
    "rnn": lambda: ug.nn.RNNCell(D, H, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(D, H, seed=0),
    "gru": lambda: ug.nn.GRUCell(D, H, seed=0),
    "custom": custom_cell,
}


def _step(kind, T, k, B, truncate, lengths, seed, teacher=True, rows=False):
    """One training step of a fresh cell; the parameters', inputs' and initial states'
    gradients, and the net's last run. ``rows``: the steps write the outputs into the rows
    of one array, as on long sequences (then the run holds the states entering a segment's
    steps as consecutive rows of the array: the teacher-forced product reads them so)."""
    rng = np.random.default_rng(seed)
    cell = CELLS[kind]()
    xs = ug.tensor(rng.uniform(-1, 1, (T, B, D)), requires_grad=True)
    h0 = {s: ug.tensor(rng.uniform(-1, 1, (B, H)), requires_grad=True) for s in cell.states}
    seed_out = rng.standard_normal((T, B, H))
    net = ug.unroll(cell, T, checkpoint=k, truncate=truncate)
    with pytest.MonkeyPatch.context() as mp:
        if not teacher:
            mp.setattr(ck, "_teacher_plan", lambda seg, held: None)
        if rows:
            mp.setattr(run_module, "_OUTPUT_BUFFER_BYTES", 0)
        out, fin = net(xs, state=h0, lengths=lengths)
        out = out if not isinstance(out, dict) else next(iter(out.values()))
        loss = (out * ug.tensor(seed_out)).sum()
        fins = fin.values() if isinstance(fin, dict) else fin if isinstance(
            fin, (tuple, list)) else (fin,)
        for s in fins:
            loss = loss + (s * s).sum()
        loss.backward()
    grads = {n: p.grad for n, p in cell.parameters().items()}
    grads["xs"] = xs.grad
    grads.update({f"{s}0": t.grad for s, t in h0.items()})
    return grads, net.last_run


def _recomputed(run) -> set:
    """The segments a backward pass of ``run`` recomputed: every one before the last that
    truncation leaves in the backward pass, but those put in place (the Elman RNN's) and
    those on the plain path (segments of a few steps)."""
    out = set()
    for i in range(len(run.segments) - 2, -1, -1):
        if not run._needs_backward(i):
            break
        seg = ck._segment_net(run.net, run.segments[i][2])
        if not ck._reads_kept_only(seg) and not run._paths[i][3]:
            out.add(i)
    return out


@settings(max_examples=EXAMPLES, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), data=st.data())
def test_teacher_forced_segments_give_full_bptt_s_gradients(kind, data):
    # (segments of a gated cell take the plain path up to 12 steps, and then fall back)
    k = data.draw(st.integers(7, 24), label="k")
    T = data.draw(st.integers(k + 1, 3 * k), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    masked = data.draw(st.booleans(), label="masked")
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B),
                                 label="lengths")) if masked else None
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rows = data.draw(st.booleans(), label="rows")
    want, _ = _step(kind, T, None, B, truncate, lengths, seed)  # full BPTT
    got, run = _step(kind, T, k, B, truncate, lengths, seed, rows=rows)
    for name, g in want.items():
        tight(got[name], g, f"{kind} T={T} k={k}: {name}")
    # the method is taken wherever it applies; a masked run falls back to the steps
    expect = set() if masked or kind == "rnn" else _recomputed(run)
    assert run._tf == expect, (run._tf, expect)
    # and the step-by-step recomputation gives the same gradients (to rounding)
    plain, run2 = _step(kind, T, k, B, truncate, lengths, seed, teacher=False, rows=rows)
    assert not run2._tf
    for name, g in plain.items():
        tight(got[name], g, f"{kind} T={T} k={k}: {name} against the steps")
    # Run.full() recomputes the run: what it kept and its gradients, bit for bit (it raises
    # otherwise), the teacher-forced segments' gradients from a teacher-forced recomputation
    full = run.full()
    for name, p in run.net.cell.parameters().items():
        assert np.array_equal(full.grads[run.net._param_slots[name]], p.grad), name


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru", "custom"])
def test_the_teacher_forced_path_is_taken_for_every_recomputed_segment(kind, rows, monkeypatch):
    """At a size where the run takes the batched path (as in benchmarks/checkpoint.py), every
    segment before the last is recomputed teacher-forced: the product by the recurrent
    weights and the gates for the whole segment at once; step by step only what depends on
    a state the run does not hold (the LSTM's c and what reads it; the custom cell's m)."""
    T, B = 400, 4
    calls = []
    real = ck._teacher_forced
    monkeypatch.setattr(ck, "_teacher_forced",
                        lambda c, i, run: calls.append(i) or real(c, i, run))
    grads, run = _step(kind, T, "sqrt", B, None, None, 0, rows=rows)
    n = len(run.segments)
    assert n == 20 and run._tf == set(range(n - 1)) and sorted(calls) == list(range(n - 1))
    plan = next(seg._teacher for seg in run.net._segment_nets.values()
                if seg.__dict__.get("_teacher") is not None)
    kinds = [(e[0], e[5]) for e in plan.entries]
    assert ("bat", "matmul") in kinds  # h W_hhᵀ: one product for the segment
    seq = sorted(op for what, op in kinds if what == "seq")
    assert seq == {"lstm": ["add", "mul", "tanh"], "gru": [],
                   "custom": ["add", "mul", "tanh"]}[kind]
    want, _ = _step(kind, T, None, B, None, None, 0)
    for name, g in want.items():
        tight(grads[name], g, name)


def test_teacher_forcing_falls_back_in_anomaly_mode_and_on_masked_runs():
    T, B = 300, 2
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (T, B, D))
    cell = ug.nn.LSTMCell(D, H, seed=0)
    net = ug.unroll(cell, T, checkpoint=20)
    with ug.detect_anomaly():
        out, _ = net(xs)
        out.sum().backward()
    assert not net.last_run._tf
    out, _ = net(xs, lengths=[T, T // 2])
    out.sum().backward()
    assert not net.last_run._tf
    out, _ = net(xs)
    out.sum().backward()
    assert net.last_run._tf == set(range(len(net.last_run.segments) - 1))


def test_the_recomputation_keeps_no_more_than_the_steps_would(monkeypatch):
    """The teacher-forced recomputation holds no more than the step-by-step one: the
    segment's stacked intermediates (the product h W_hhᵀ, the gates' sum) go as soon as
    their last reader has run, and a kept slice is copied out of its source. Measured as
    the peak of a backward pass (tracemalloc), LSTM and GRU, B = 8, H = 64 (at such sizes
    the arrays outweigh the Python objects: a row view per step and value)."""
    import tracemalloc

    peaks = {}
    for kind in ("lstm", "gru"):
        for teacher in (True, False):
            T, B = 256, 8
            cell = {"lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind](16, 64, seed=0)
            xs = ug.tensor(np.random.default_rng(0).uniform(-1, 1, (T, B, 16)))
            net = ug.unroll(cell, T, checkpoint="sqrt")
            with pytest.MonkeyPatch.context() as mp:
                if not teacher:
                    mp.setattr(ck, "_teacher_plan", lambda seg, held: None)
                for _ in range(2):
                    cell.zero_grad()
                    out, _ = net(xs)
                    tracemalloc.start()
                    out.sum().backward()
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                    del out
            assert bool(net.last_run._tf) == teacher
            peaks[kind, teacher] = peak
        assert peaks[kind, True] <= peaks[kind, False], (kind, peaks)


def test_a_full_segment_last():
    """The segments are aligned to the end: the last one, held from the forward pass, is
    k steps long, and the first one is the short one (it and the kept steps move)."""
    net = ug.unroll(ug.nn.LSTMCell(D, H, seed=0), 1000, checkpoint="sqrt")
    segs = ck._segments(net)
    assert [b - a for a, b, _ in segs] == [8] + [32] * 31
    assert net.kept_steps == tuple(b - 1 for _a, b, _ in segs)
