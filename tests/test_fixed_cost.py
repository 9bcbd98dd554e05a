"""The helpers a short run calls a fixed number of times per step or flush, written out for
speed, against their plain forms.

``schedule._row`` (a compiled backward step's next row of a chunk's buffer) inlines
:meth:`~unrollgraph.schedule.GradRows.take`, and ``ops.unbroadcast`` returns as soon as the
leading axes are summed away: each must hand out the very row, or sum to the very bits,
that the plain form does, in every case (another shape, another dtype, a broadcast, no row
left, no row source).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from unrollgraph.ops import unbroadcast
from unrollgraph.schedule import BufferPool, Filed, GradRows, _row

DTYPES = [np.float64, np.float32]


def _plain_unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` one axis rule at a time: the leading axes numpy added,
    then every axis of length 1 in ``shape`` that ``g`` has longer."""
    extra = g.ndim - len(shape)
    if extra:
        g = np.add.reduce(g, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = np.add.reduce(g, axis=axes, keepdims=True)
    return g


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_unbroadcast_sums_to_the_plain_forms_bits(data):
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=0, max_size=3), label="shape"))
    # g: shape broadcast against some leading axes and some length-1 axes made longer
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=3), label="lead"))
    wide = tuple(n if n != 1 else data.draw(st.integers(1, 3)) for n in shape)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    g = np.random.default_rng(seed).standard_normal(lead + wide).astype(dtype)
    got = unbroadcast(g, shape)
    want = _plain_unbroadcast(g, shape)
    assert got.shape == want.shape == shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()
    if g.shape == shape:
        assert got is g  # (nothing to sum: the gradient itself, as before)
    else:
        assert not np.shares_memory(got, g)  # a sum is a new array: g is never handed on


def test_unbroadcast_of_many_leading_axes():
    g = np.arange(2.0 ** 10).reshape((2,) * 10)
    assert unbroadcast(g, (2,)).tobytes() == _plain_unbroadcast(g, (2,)).tobytes()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_row_hands_out_what_grad_rows_take_does(data):
    """The same sequence of requests to ``_row`` and to ``GradRows.take`` (behind the
    operand checks ``_row`` adds) gets rows at the same positions, or None, each time."""
    n = data.draw(st.integers(0, 4), label="n")
    fast, slow = GradRows(n, BufferPool()), GradRows(n, BufferPool())
    d = Filed()
    d.rows[7] = fast
    for _ in range(data.draw(st.integers(1, 7), label="requests")):
        shape_a = data.draw(st.sampled_from([(2, 3), (2, 4), (1, 3)]), label="a")
        shape_b = data.draw(st.sampled_from([shape_a, (2, 3), (3,)]), label="b")
        da = data.draw(st.sampled_from(DTYPES), label="dtype a")
        db = data.draw(st.sampled_from([da] + DTYPES), label="dtype b")
        a, b = np.ones(shape_a, da), np.ones(shape_b, db)
        got = _row(d, 7, a, b)
        want = (slow.take(shape_a, np.dtype(da))
                if shape_a == shape_b and np.dtype(da) is np.dtype(db) else None)
        assert (got is None) == (want is None)
        if got is not None:
            assert got.shape == want.shape and got.dtype == want.dtype
            assert got.base is fast.base
            assert (got.__array_interface__["data"][0] - fast.base.ctypes.data
                    == want.__array_interface__["data"][0] - slow.base.ctypes.data)
        assert fast.left == slow.left and len(fast.handed) == len(slow.handed)


def test_row_without_a_source_is_none():
    a = np.ones((2, 3))
    assert _row(Filed(), 7, a, a) is None  # no rows for this producer
    assert _row({}, 7, a, a) is None  # a plain dict of filed parts: no rows at all
    d = Filed()
    d.rows[7] = GradRows(2)
    assert _row(d, 7, a.tolist(), a) is None  # not an array: the step makes its own
