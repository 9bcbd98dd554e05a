"""Inside a cell, axis 0 is the batch axis: an op that mixes the sequences of a batch is refused
by name when the cell is unrolled, and every op that keeps them apart computes each sequence as
if it ran alone."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

# each takes the (B, 3) input and gives a (B, 3) value, mixing the batch's sequences
MIXING = {
    "sum over axis 0": lambda x: x.sum(axis=0) + x,
    "sum over every axis": lambda x: x.sum() + x,
    "mean over axis 0": lambda x: x.mean(axis=0) + x,
    "max over axis 0": lambda x: ug.max(x, axis=0) + x,
    "softmax over axis 0": lambda x: ug.softmax(x, axis=0),
    "log_softmax over axis 0": lambda x: ug.log_softmax(x, axis=0),
    "stack on axis 0, summed": lambda x: ug.stack([x, x * 2.0], axis=0).sum(axis=0),
    "concat on axis 0, cut": lambda x: ug.concat([x * 2.0, x], axis=0)[0:1],
    "transpose twice through a reshape": lambda x: ug.reshape(x.T, (1, 3)),
    "reshape that moves the batch": lambda x: ug.reshape(ug.reshape(x, (3, 1)), (1, 3)),
}
# the same kinds of op along the other axes: each sequence on its own
APART = {
    "sum over axis 1": lambda x: x.sum(axis=1, keepdims=True) + x,
    "mean over axis -1": lambda x: x.mean(axis=-1, keepdims=True) + x,
    "max over axis 1": lambda x: ug.max(x, axis=1, keepdims=True) + x,
    "softmax over axis -1": lambda x: ug.softmax(x, axis=-1),
    "log_softmax over axis 1": lambda x: ug.log_softmax(x, axis=1),
    "stack on axis 1, summed": lambda x: ug.stack([x, x * 2.0], axis=1).sum(axis=1),
    "concat on axis 1, cut": lambda x: ug.concat([x * 2.0, x], axis=1)[:, 1:4],
    "reshape of the other axes": lambda x: ug.reshape(ug.reshape(x, (-1, 3, 1)), (-1, 3)),
}


def _cell(f):
    cell = ug.Cell("mix")
    x = cell.input("x", (3,))
    h = cell.state("h", (3,))
    w = cell.param("w", np.full((3,), 0.5))
    h_next = ug.tanh(h * w + f(x), name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


@pytest.mark.parametrize("what", sorted(MIXING))
def test_an_op_that_mixes_the_batch_is_refused_by_name(what):
    cell = _cell(MIXING[what])
    with pytest.raises(ug.UnrollGraphError, match="batch") as err:
        ug.unroll(cell, steps=2)
    assert "axis" in str(err.value)


def test_the_stack_on_axis_0_names_the_op_and_the_fix():
    with pytest.raises(ug.CellError, match=r"op stack, axis=0\) mixes the sequences") as err:
        ug.unroll(_cell(MIXING["stack on axis 0, summed"]), steps=2)
    assert "axis=1" in str(err.value)


def test_a_transposed_next_state_says_the_batch_axis_moved():
    cell = ug.Cell("t")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    with pytest.raises(ug.ShapeError, match=r"\(2, 2\) while the cell is built on a batch of one"):
        cell.feedback(h, ug.tanh(h + x.T))


@settings(max_examples=25, deadline=None)
@given(what=st.sampled_from(sorted(APART)), batch=st.integers(2, 4), steps=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_ops_along_the_other_axes_compute_each_sequence_alone(what, batch, steps, seed):
    xs = np.random.default_rng(seed).standard_normal((steps, batch, 3))
    out, h = ug.unroll(_cell(APART[what]), steps=steps)(xs)
    for b in range(batch):
        alone, hb = ug.unroll(_cell(APART[what]), steps=steps)(xs[:, b:b + 1])
        np.testing.assert_allclose(alone.data[:, 0], out.data[:, b], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hb.data[0], h.data[b], rtol=1e-12, atol=1e-14)


def test_a_reshape_with_a_fixed_batch_of_one_says_to_use_minus_one():
    with pytest.raises(ug.CellError, match=r"op reshape.*as -1"):
        ug.unroll(_cell(lambda x: ug.reshape(ug.reshape(x, (1, 3, 1)), (1, 3))), steps=2)
