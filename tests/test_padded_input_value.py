"""Run.value("x@t") of a masked run's padded step is the copy the run computes on (the
sequence's last real input), not the padding given; docs/cells.md's table says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import unrollgraph as ug

CELLS = Path(__file__).resolve().parents[1] / "docs" / "cells.md"


def test_a_padded_steps_input_is_the_copy_the_run_computes_on():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    xs = np.random.default_rng(0).standard_normal((4, 3, 2))
    xs[2:, 1] = 1e6  # padding of sequence 1 (length 2)
    xt = ug.tensor(xs, requires_grad=True)
    out, _ = net(xt, lengths=[4, 2, 3])
    ug.sum(out * out).backward()
    run = net.last_run
    for t in range(4):
        got = run.value(f"x@{t}")
        for b, n in enumerate([4, 2, 3]):
            want = xs[min(t, n - 1), b]
            assert np.array_equal(got[b], want)
            if t >= n:
                assert np.all(run.grad(f"x_{t}")[b] == 0) and np.all(xt.grad[t, b] == 0)


def test_the_accessor_table_says_a_padded_input_is_the_runs_copy():
    rows = [line for line in CELLS.read_text().splitlines() if line.startswith("| `x@t`")]
    assert len(rows) == 1
    row = rows[0]
    assert "lengths=" in row and "copy of the sequence's last real input" in row
    assert "not the padding given in `xs`" in row
