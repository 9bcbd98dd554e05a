"""A net's outputs and final states are read-only: the backward pass through time reads
them (an RNN's outputs are its states), so an edit in place would change gradients unseen."""

import numpy as np
import pytest

import unrollgraph as ug

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("options", [{}, {"keep": "all"}, {"checkpoint": 2},
                                     {"truncate": 2}])
def test_a_nets_outputs_and_final_state_are_read_only(kind, options):
    cell = CELLS[kind](3, 4, seed=0)
    net = ug.unroll(cell, steps=5, **options)
    xs = np.random.default_rng(1).normal(size=(5, 2, 3))
    out, final = net(xs)
    finals = [final] if isinstance(final, ug.Tensor) else list(final.values()) if isinstance(
        final, dict) else list(final)
    for t in [out] + finals:
        with pytest.raises(ValueError, match="read-only"):
            t.data[0] = 1.0
    out, _ = net(xs, lengths=[5, 3])
    with pytest.raises(ValueError, match="read-only"):
        out.data[0] = 1.0
    with ug.no_grad():
        out, _ = net(xs)
    with pytest.raises(ValueError, match="read-only"):
        out.data[0] = 1.0


def test_the_gradients_after_a_refused_edit_are_those_of_the_run():
    cell = ug.nn.RNNCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=4)
    xs = np.random.default_rng(2).normal(size=(4, 2, 3))
    out, _ = net(xs)
    (out * out).sum().backward()
    want = cell.weight_hh.grad.copy()
    cell.zero_grad()
    out, _ = net(xs)
    with pytest.raises(ValueError):
        out.data[1] = 0.0
    (out * out).sum().backward()
    np.testing.assert_array_equal(cell.weight_hh.grad, want)
