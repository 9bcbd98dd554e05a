"""Chunks of steps whose filed gradient parts are computed into rows of one array.

A long run flushes the shared weights' gradients a chunk of steps at a time; the step that
makes the part a flush reads (an RNN's pre-activation gradient, an LSTM's gate gradients)
computes it straight into the next row of one buffer per chunk (``schedule.GradRows``), so
the flush reads the chunk's rows as one stack, without a copy. Every combination of chunk
size, truncation, lengths, dtype and ``keep`` must give what the generic node-by-node walk
gives (the reference executor), to rounding.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.schedule import BufferPool, GradRows, stack, stack_once

# the random cells may declare a state or input their graph never reads: see the same mark
# in test_differential.py
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")
run_module = importlib.import_module("unrollgraph.run")

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _step(net, cell, xs, seeds, lengths):
    """Outputs, parameter and input gradients of one call with ``loss = sum(out * seeds)``."""
    cell.zero_grad()
    xt = ug.tensor(xs, requires_grad=True)
    out, _ = net(xt, lengths=lengths)
    (out * ug.tensor(seeds)).sum().backward()
    got = {k: p.grad for k, p in cell.parameters().items()}
    got["xs"] = xt.grad
    got["out"] = out.data
    return got, net.last_run


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), data=st.data())
def test_chunked_rows_agree_with_the_reference_walk(kind, data):
    T = data.draw(st.integers(2, 13), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    chunk = data.draw(st.integers(1, T), label="chunk")
    keep = data.draw(st.sampled_from(["needed", "all"]), label="keep")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    truncate = data.draw(st.none() | st.integers(1, T), label="truncate")
    masked = data.draw(st.booleans(), label="masked")
    # outputs written into rows of (T, B, ...) arrays (the states a flush reads found by
    # identity, see Run._seed_state_rows), as a large run's are
    buffered = data.draw(st.booleans(), label="buffered")
    lengths = (np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B),
                                  label="lengths")) if masked else None)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    cell = CELLS[kind](3, 4, seed=1, dtype=dtype)
    xs = rng.uniform(-1, 1, (T, B, 3)).astype(dtype)
    seeds = rng.standard_normal((T, B, 4)).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "_chunk_steps", lambda net, batch, itemsize: chunk)
        mp.setattr(run_module, "_PLAIN_STEPS", 0)
        if buffered:
            mp.setattr(run_module, "_OUTPUT_BUFFER_BYTES", 0)
        net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep, masked=masked)
        got, run = _step(net, cell, xs, seeds, lengths)
        assert run.flush_chunk == chunk and not run.generic_backward
        with ug.detect_anomaly():  # the generic node-by-node walk
            want, ref = _step(net, cell, xs, seeds, lengths)
        assert ref.generic_backward
    rtol, atol = (1e-12, 1e-13) if dtype is np.float64 else (2e-5, 2e-6)
    for k, w in want.items():
        g = got[k]
        if w is None:
            assert g is None or not np.any(g), k
            continue
        assert g.dtype == w.dtype == dtype, k
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=k)


@settings(max_examples=15, deadline=None)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_random_cells_in_chunks_of_several_steps_agree(spec, data):
    """The random cells of test_differential, in chunks of 2 to T steps (that test takes
    chunks of one step, or none)."""
    T = data.draw(st.integers(2, 9), label="T")
    chunk = data.draw(st.integers(2, T), label="chunk")
    B = data.draw(st.integers(1, 3), label="B")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    truncate = data.draw(st.none() | st.integers(1, T), label="truncate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "_chunk_steps", lambda *a: chunk)
        diff.differential(spec, T, B, seed, truncate, None, mp)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_the_filed_parts_are_computed_into_rows(kind, monkeypatch):
    """An RNN's tanh VJP and an LSTM's tiled gate gradient take rows, and the flush reads
    the rows of a chunk as one array (a view of the buffer, not a copy)."""
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)  # (the batched path, which files)
    cell = CELLS[kind](3, 4, seed=0)
    net = ug.unroll(cell, steps=8)
    xs = np.random.default_rng(0).normal(size=(8, 2, 3))
    out, _ = net(xs)
    out.sum().backward()
    steps = [b for key, b in net._bprogs.items() if b[2] is not None][0][2]
    assert all(fn.rows for fn, _b, _s in steps)
    assert "row(d" in steps[3][0].__source__ or "rows_of(d" in steps[3][0].__source__
    seen = []
    flush = net._templates.flush

    def spy(d, *args, **kw):
        for parts in d.values():
            if parts:
                seen.append(stack([p[0] for p in reversed(parts)]))
        return flush(d, *args, **kw) if args else None

    after_steps = run_module.flush_after_steps

    def post_spy(net_, order, shared):  # (the straight-line flush: the same parts and rows)
        post = after_steps(net_, order, shared)
        if post is None:
            return None

        def spied(d, *args):
            spy(d)
            return post(d, *args)
        return spied

    monkeypatch.setattr(run_module, "flush_after_steps", post_spy)
    net._templates.flush = spy
    try:
        out, _ = net(xs)
        out.sum().backward()
    finally:
        del net._templates.flush
    assert seen and all(s.base is not None and not s.flags.writeable for s in seen)


def test_grad_rows_hand_out_rows_last_first_and_refuse_other_shapes():
    rows = GradRows(3, BufferPool())
    a = rows.take((2, 4), np.float64)
    assert rows.take((2, 5), np.float64) is None  # another shape: a new array instead
    assert rows.take((2, 4), np.float32) is None
    b = rows.take((2, 4), np.float64)
    c = rows.take((2, 4), np.float64)
    assert rows.take((2, 4), np.float64) is None  # all three handed out
    for k, r in enumerate((c, b, a)):
        r[...] = k
    s = stack([c, b, a])
    assert np.shares_memory(s, a) and s.tolist() == [[[0.0] * 4] * 2, [[1.0] * 4] * 2,
                                                     [[2.0] * 4] * 2]


def test_chunks_have_enough_rows_within_a_twelfth_of_the_steps():
    def chunk(kind, B, H, T, D):
        net = ug.unroll(CELLS[kind](D, H, seed=0), steps=T)
        return run_module._chunk_steps(net, B, 8)

    assert chunk("rnn", 32, 256, 100, 128) == 9  # at most T/12 steps (memory)
    assert chunk("rnn", 16, 128, 100, 64) == 9
    assert chunk("rnn", 16, 128, 1000, 64) == 64  # 1,024 rows: the benchmark's long size
    assert chunk("rnn", 16, 128, 10000, 64) == 256  # at most 4 MB of states (T/32 is more)
    assert chunk("lstm", 32, 256, 100, 128) == 9
    assert chunk("lstm", 32, 64, 50, 32) == 5
    assert chunk("gru", 16, 128, 100, 64) == 4  # its slices stack their own gradients


def test_seeded_stack_is_the_rows_and_misses_other_parts():
    rows = GradRows(3, BufferPool())
    handed = [rows.take((2, 4), np.float64) for _ in range(3)]  # last step first
    for k, r in enumerate(handed):
        r[...] = k
    cache: dict = {}
    rows.seed(cache)
    in_time_order = handed[::-1]
    s = stack_once(in_time_order, cache)
    assert s is not None and not s.flags.writeable
    assert np.shares_memory(s, handed[0]) and s.tolist() == stack(in_time_order).tolist()
    # a step that made a new array instead of its row: the seed does not answer for it
    other = [in_time_order[0], in_time_order[1].copy(), in_time_order[2]]
    t = stack_once(other, cache)
    assert not np.shares_memory(t, handed[0]) and t.tolist() == s.tolist()


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("chunk", [0, 3])
def test_flush_finds_rows_by_identity_with_the_same_bits(kind, chunk, monkeypatch):
    """A run whose steps computed their states and filed parts into rows: its flushes find
    those stacks by the arrays' identities (no row's address checked) and give the same
    bits as a run that finds them by their addresses."""
    schedule = importlib.import_module("unrollgraph.schedule")
    monkeypatch.setattr(run_module, "_chunk_steps", lambda *a: chunk)
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)
    monkeypatch.setattr(run_module, "_OUTPUT_BUFFER_BYTES", 0)
    T = 10
    cell = CELLS[kind](3, 4, seed=0)
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(0)
    xs, seeds = rng.normal(size=(T, 2, 3)), rng.normal(size=(T, 2, 4))
    checked = []
    by_address = schedule._rows_of_one_array

    def counting(arrays):
        checked.append(len(arrays))
        return by_address(arrays)

    monkeypatch.setattr(schedule, "_rows_of_one_array", counting)
    got, run = _step(net, cell, xs, seeds, None)
    assert run.state_rows and run.outputs is not None
    assert not [n for n in checked if n > 1]  # every stack of rows found by identity
    monkeypatch.setattr(run_module.Run, "_seed_state_rows", lambda *a: None)
    monkeypatch.setattr(GradRows, "seed", lambda *a: None)
    want, _ = _step(net, cell, xs, seeds, None)
    assert [n for n in checked if n > 1]  # (found by their addresses this time)
    for k, w in want.items():
        assert got[k].tobytes() == w.tobytes(), k
