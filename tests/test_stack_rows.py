"""``schedule.stack`` hands back a view, not a copy, only for arrays that are consecutive
rows of one array: every other list of views of one array (strided columns of the right
shape, rows out of order, repeated, reshaped, read-only or not) is stacked as ``np.stack``
stacks it."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from unrollgraph.schedule import stack


def _view(base, kind, k):
    if kind == "row":
        return base[k]
    if kind == "column":  # the shape of a row when the base is square, other strides
        return base[:, k] if base.ndim == 2 else base[:, k, :]
    if kind == "flat":  # a row-sized window of the flat memory, at an element offset
        n = base[0].size
        return base.reshape(-1)[k:k + n].reshape(base.shape[1:])
    return base[k].copy()


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 5),
    trailing=st.sampled_from([(), (3,), (2, 3)]),
    picks=st.lists(st.tuples(st.sampled_from(["row", "row", "row", "column", "flat", "copy"]),
                             st.integers(0, 4)), min_size=2, max_size=5),
    read_only=st.booleans(),
)
def test_stack_equals_np_stack_for_any_views_of_one_array(n, trailing, picks, read_only):
    square = (n, n) if trailing == () else (n, n) + trailing[1:]
    base = np.empty(square if picks[0][0] == "column" else (n,) + trailing)
    base[...] = np.arange(base.size, dtype=float).reshape(base.shape)
    if read_only:
        base.flags.writeable = False
    arrays = []
    for kind, k in picks:
        if kind == "column" and (base.ndim < 2 or base.shape[0] != base.shape[1]):
            kind = "row"
        if kind == "flat":
            k = min(k, base.size - base[0].size)
        arrays.append(_view(base, kind, min(k, len(base) - 1)))
    if len({a.shape for a in arrays}) > 1:
        return
    got = stack(arrays)
    np.testing.assert_array_equal(got, np.stack(arrays))


def test_consecutive_rows_are_a_read_only_view_and_a_column_is_not_a_row():
    base = np.arange(12.0).reshape(4, 3).copy()
    rows = stack([base[1], base[2], base[3]])
    assert rows.base is base and not rows.flags.writeable
    np.testing.assert_array_equal(rows, base[1:])
    square = np.arange(9.0).reshape(3, 3).copy()  # base[:, 0] starts where row 0 does
    mixed = [square[:, 0], square[1], square[2]]
    np.testing.assert_array_equal(stack(mixed), np.stack(mixed))
