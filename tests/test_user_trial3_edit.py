"""``with p.edit() as a:`` keeps the tensor's shape and dtype (a block that changes them is
undone, all or nothing, with a ShapeError naming the tensor), and a block that rebinds ``a``
instead of writing into it is an error, never a step that silently changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

# ways a block changes the array's shape or type in place
RESHAPES = {
    "a.shape = ravel": lambda a: setattr(a, "shape", (a.size,)),
    "a.shape = transposed": lambda a: setattr(a, "shape", a.shape[::-1]),
    "a.resize larger, no refcheck": lambda a: a.resize((a.size + 3,), refcheck=False),
    "a.resize smaller, no refcheck": lambda a: a.resize((1,), refcheck=False),
    "a.resize": lambda a: a.resize((a.size + 1,)),
    "a.dtype = float32": lambda a: setattr(a, "dtype", np.float32),
    "a.dtype = int64": lambda a: setattr(a, "dtype", np.int64),
}


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(2, 3), (4,), (3, 1), (2, 2, 2)]),
       how=st.sampled_from(sorted(RESHAPES)), dtype=st.sampled_from([np.float64, np.float32]),
       first=st.booleans())
def test_a_block_that_changes_shape_or_dtype_is_undone_with_a_shape_error(shape, how, dtype,
                                                                           first):
    if how == "a.dtype = float32" and dtype == np.float32:
        how = "a.dtype = int64"
    if how == "a.shape = transposed" and shape[::-1] == shape:
        how = "a.shape = ravel"
    if how == "a.shape = ravel" and len(shape) == 1:
        how = "a.resize larger, no refcheck"
    value = np.arange(np.prod(shape), dtype=dtype).reshape(shape) / 4
    w = ug.tensor(value, requires_grad=True, name="w")
    loss = (w * w).sum()  # a graph built before: it stays differentiable
    with pytest.raises((ug.ShapeError, ValueError)) as err:
        with w.edit() as a:
            if first:
                RESHAPES[how](a)
                a[...] = 7.0
            else:
                a[...] = 7.0
                RESHAPES[how](a)
    if isinstance(err.value, ug.ShapeError):
        msg = str(err.value)
        assert "w.edit()" in msg and f"from {shape}" in msg and "nothing was changed" in msg
    assert w.shape == shape and w.dtype == dtype and w.node.shape == shape
    np.testing.assert_array_equal(w.data, value)
    assert not w.data.flags.writeable
    loss.backward()  # nothing recorded
    np.testing.assert_allclose(w.grad, 2 * value, rtol=1e-6)


def test_a_parameter_keeps_its_shape_and_its_net_still_runs():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 2)
    before = cell.weight_hh.data.copy()
    with pytest.raises(ug.ShapeError, match=r"weight_hh\.edit\(\)"):
        with cell.weight_hh.edit() as a:
            a.shape = (9,)
    np.testing.assert_array_equal(cell.weight_hh.data, before)
    out, _ = net(np.ones((2, 1, 2)))
    assert out.shape == (2, 1, 3)


def test_rebinding_the_blocks_name_is_an_error_and_changes_nothing():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    loss = (w * w).sum()
    with pytest.raises(ug.GraphError, match=r"w\.edit\(\).*a = a - g.*a -= g"):
        with w.edit() as a:
            a = a - 1.0  # noqa: F841 (the mistake under test)
    np.testing.assert_array_equal(w.data, [1.0, 2.0])
    loss.backward()  # nothing recorded
    # in place, under any name, in a function or at module level: kept
    with w.edit() as b:
        b -= 1.0
    np.testing.assert_array_equal(w.data, [0.0, 1.0])

    def step(t):
        with t.edit() as arr:
            np.clip(arr, 0.5, 2.0, out=arr)

    step(w)
    np.testing.assert_array_equal(w.data, [0.5, 1.0])
    with w.edit() as c:
        c[c > 5] = 0.0  # changes nothing, and c still holds the array: fine
    np.testing.assert_array_equal(w.data, [0.5, 1.0])
