"""Editing a parameter: the recorded doors (``p[i] = v``, ``p.edit()``, ``p.data = new``), and
what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


def test_data_stays_read_only_and_the_doors_are_named_in_its_docstring():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    with pytest.raises(ValueError, match="read-only"):
        cell.weight_hh.data[0, 0] = 1.0
    doc = type(cell.weight_hh).data.__doc__
    assert "t[0] = 1.0" in doc and "t.edit()" in doc and "t.data = new" in doc


@settings(max_examples=20, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       index=st.sampled_from([(0, 0), 1, (slice(None), 2), (np.array([0, 2]), 1), ...]),
       value=st.sampled_from([0.5, 2, [1.0, 2.0, 3.0], np.float32(-1.5)]),
       door=st.sampled_from(["setitem", "edit"]))
def test_an_edit_changes_what_numpy_would_and_keeps_shape_dtype_and_lock(dtype, index, value,
                                                                        door):
    p = ug.tensor(np.arange(9.0).reshape(3, 3), dtype=dtype, requires_grad=True, name="W")
    want = p.data.copy()
    try:
        want[index] = value
    except ValueError:
        with pytest.raises(ug.ShapeError, match=r"W\[.*nothing was changed"):
            p[index] = value
        np.testing.assert_array_equal(p.data, np.arange(9.0).reshape(3, 3))
        return
    if door == "setitem":
        p[index] = value
    else:
        with p.edit() as a:
            a[index] = value
    np.testing.assert_array_equal(p.data, want)
    assert p.dtype == dtype and p.shape == (3, 3) and not p.data.flags.writeable


def test_an_edit_after_the_forward_pass_is_caught_by_backward():
    cell = ug.nn.GRUCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=3)
    xs = np.ones((3, 1, 2))
    for edit in (lambda p: p.__setitem__(0, 0.0), lambda p: p.edit().__enter__()):
        out, _ = net(xs)
        edit(cell.weight_ih)
        with pytest.raises(ug.GradientError, match=r"weight_ih.*an edit in place"):
            out.sum().backward()
    out, _ = net(xs)  # computed again: fine
    out.sum().backward()
    assert cell.weight_ih.grad is not None


def test_an_optimizer_sees_an_edit_and_a_detached_copy_shares_it():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    d = w.detach()
    w[0] = 5.0
    assert d.data[0] == 5.0  # the same memory, as with an optimizer step
    w.grad = np.ones(2)
    ug.optim.SGD([w], lr=1.0).step()
    np.testing.assert_array_equal(w.data, [4.0, 1.0])


def test_what_cannot_be_edited_says_so():
    x = ug.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(ug.GraphError, match=r"computed by op 'mul'.*ug.where"):
        y[0] = 1.0
    with pytest.raises(ug.DTypeError, match=r"\[0\] = \.\.\."):
        x[0] = "one"
    with pytest.raises(ug.ShapeError, match="out of bounds"):
        x[5] = 1.0
    cell = ug.Cell("c")
    h = cell.state("h", (2,))
    with pytest.raises(ug.CellError, match="placeholder"):
        h[0] = 1.0


def test_a_user_array_given_to_an_edit_is_not_kept():
    w = ug.tensor(np.zeros((2, 2)), requires_grad=True)
    v = np.ones(2)
    w[0] = v
    v[0] = 7.0
    assert w.data[0, 0] == 1.0
