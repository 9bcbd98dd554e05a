"""The gradient a product sends back from a sum, ``(y * w).sum()``, is ``w``'s value itself:
the eager walk hands a read-only view of it instead of a new array of the same numbers
(:func:`unrollgraph.tensor._times_one`). The results are those of the multiplication bit for
bit, nothing downstream can write into it, and it is taken only from a value nothing edits
in place later (never from a leaf that requires grad, which an optimizer steps)."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

tensor_module = sys.modules["unrollgraph.tensor"]  # (ug.tensor is the function)
CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _train_step(kind, T, B, seed, shortcut, w_grad=False, scale=1.0):
    cell = CELLS[kind](3, 4, seed=seed)
    rng = np.random.default_rng(seed)
    xs = ug.tensor(rng.normal(size=(T, B, 3)))
    w = ug.tensor(rng.normal(size=(T, B, 4)), requires_grad=w_grad)
    net = ug.unroll(cell, steps=T)
    saved = tensor_module._times_one
    if not shortcut:
        tensor_module._times_one = lambda g, other, p: None
    try:
        out, _ = net(xs)
        loss = (out * w).sum() * scale
        loss.backward()
    finally:
        tensor_module._times_one = saved
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    return out, w, grads, net


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), T=st.integers(1, 9), B=st.integers(1, 3),
       seed=st.integers(0, 50), scale=st.sampled_from([1.0, 2.5]),
       w_grad=st.booleans())
def test_the_view_gives_the_bits_of_the_multiplication(kind, T, B, seed, scale, w_grad):
    o1, w1, g1, n1 = _train_step(kind, T, B, seed, True, w_grad, scale)
    o2, w2, g2, n2 = _train_step(kind, T, B, seed, False, w_grad, scale)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    np.testing.assert_array_equal(o1.grad, o2.grad)
    if w_grad:
        np.testing.assert_array_equal(w1.grad, w2.grad)
    # the run's gradients through time read the seeds it was given: the same
    for k in n1.cell.states:
        np.testing.assert_array_equal(n1.last_run.state_grads(k), n2.last_run.state_grads(k),
                                      err_msg=k)


def test_the_view_is_read_only_and_never_of_a_leaf_that_requires_grad():
    out, w, _grads, _net = _train_step("rnn", 5, 2, 0, True)
    assert np.shares_memory(out.grad, w.data)  # handed over: no new array
    with pytest.raises(ValueError):
        out.grad[0, 0, 0] = 1.0
    # a weight an optimizer steps: its value is multiplied, never viewed
    out, w, _grads, _net = _train_step("rnn", 5, 2, 0, True, w_grad=True)
    assert not np.shares_memory(out.grad, w.data)
    before = out.grad.copy()
    ug.optim.SGD([w], lr=0.5).step()
    np.testing.assert_array_equal(out.grad, before)


def test_only_a_one_broadcast_is_taken_for_the_identity():
    y = ug.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = ug.tensor(np.full((2, 3), 3.0))
    (y * w).sum().backward()  # a broadcast one: y.grad is w's numbers
    np.testing.assert_array_equal(y.grad, w.data)
    y.grad = None
    (y * w).sum().backward(gradient=np.array(2.0))  # a broadcast two: multiplied
    np.testing.assert_array_equal(y.grad, 2.0 * w.data)
    y.grad = None
    (y * w).backward(gradient=np.ones((2, 3)))  # a full array of ones: multiplied as ever
    np.testing.assert_array_equal(y.grad, w.data)
    y.grad = None
    w32 = ug.tensor(np.full((2, 3), 3.0, dtype=np.float32))
    (y * w32).sum().backward()  # another dtype: the product's type, not w32's
    assert y.grad.dtype == np.float64
    np.testing.assert_array_equal(y.grad, w32.data.astype(np.float64))
