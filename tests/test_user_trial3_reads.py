"""A cell that computes with a parameter's value (``h @ U.data.T``) instead of the parameter:
refused when unrolled (the constant is a copy fixed at build time, and the parameter's
gradient would be lost), and a parameter nothing reads is warned of."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

# the views a user may take of a parameter's value, as (view of p.data, what the message says)
VIEWS = {
    "data": lambda a: (a, "U.data"),
    "T": lambda a: (a.T, "U.data.T"),
    "rows": lambda a: (a[1:3], "U.data[1:3]"),
    "cols": lambda a: (a[:, 1:], f"U.data[:, 1:{a.shape[1]}]"),
    "T rows": lambda a: (a.T[:2], "U.data.T[0:2]"),
    "row": lambda a: (a[2], "U.data[2]"),
    "col": lambda a: (a[:, 1], "U.data[:, 1]"),
    "reshape": lambda a: (a.reshape(-1), "a reshape of U.data"),
}


def _cell(shape, dtype, view, read):
    """h_next = 0.5 h + sum(0.1 * constant) (+ sum(U) when U is read), the constant made
    from a view of U.data."""
    c = ug.Cell("c")
    h = c.state("h", (3,))
    value = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    U = c.param("U", value)
    const, expected = VIEWS[view](U.data)
    nxt = h * 0.5 + (ug.tensor(const) * 0.1).sum()
    if read:
        nxt = nxt + U.sum()
    c.feedback(h, ug.tanh(nxt, name="h_next"))
    c.output("y", c.feedbacks["h"])
    return c, expected


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(3, 5), st.integers(3, 5)),
       dtype=st.sampled_from([np.float64, np.float32]), view=st.sampled_from(sorted(VIEWS)))
def test_a_constant_made_from_a_parameters_value_is_refused_when_the_parameter_is_unread(
        shape, dtype, view):
    cell, expected = _cell(shape, dtype, view, read=False)
    with pytest.raises(ug.CellError) as err:
        ug.unroll(cell, 2)
    msg = str(err.value)
    assert "parameter 'U' is declared but nothing" in msg
    assert f"holds exactly {expected}" in msg and "made from U.data" in msg
    assert "gradient would be lost" in msg and "Compute with the tensor U itself" in msg


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(3, 5), st.integers(3, 5)), view=st.sampled_from(sorted(VIEWS)))
def test_such_a_constant_beside_a_parameter_that_is_read_is_a_warning(shape, view):
    cell, expected = _cell(shape, np.float64, view, read=True)
    with pytest.warns(ug.CellWarning, match="holds exactly " + re.escape(expected)):
        net = ug.unroll(cell, 2)
    net(state=np.zeros((1, 3)))


def test_the_students_cell_h_at_U_data_T():
    c = ug.Cell("elman")
    x = c.input("x", (2,))
    h = c.state("h", (3,))
    W = c.param("W", np.arange(6.0).reshape(3, 2) / 10)
    U = c.param("U", np.arange(9.0).reshape(3, 3) / 7 - 0.3)
    hn = ug.tanh(x @ W.T + h @ U.data.T, name="h_next")
    c.feedback(h, hn)
    c.output("y", hn)
    with pytest.raises(ug.CellError, match=r"parameter 'U'.*constant \S+ holds exactly U\.data\.T"):
        ug.unroll(c, 3)


def test_an_unread_parameter_is_a_warning_and_an_unrelated_constant_is_not_blamed():
    c = ug.Cell("c")
    h = c.state("h", (3,))
    c.param("V", np.arange(6.0).reshape(2, 3))
    k = ug.tensor(np.array([0.1, -0.2, 0.3]))
    c.feedback(h, ug.tanh(h + k, name="h_next"))
    c.output("y", c.feedbacks["h"])
    with pytest.warns(ug.CellWarning, match=r"parameter 'V' is declared but nothing") as rec:
        ug.unroll(c, 2)
    assert not any("holds exactly" in str(w.message) for w in rec)


def test_constants_of_one_repeated_number_are_not_compared():
    c = ug.Cell("c")
    h = c.state("h", (3,))
    U = c.param("U", np.zeros((3, 3)))
    c.feedback(h, ug.tanh(h @ U.T + np.zeros((3, 3)).sum(axis=0), name="h_next"))
    c.output("y", c.feedbacks["h"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ug.unroll(c, 2)


@pytest.mark.parametrize("make", [
    lambda: ug.nn.RNNCell(2, 3, seed=0), lambda: ug.nn.LSTMCell(2, 3, seed=0),
    lambda: ug.nn.GRUCell(2, 3, bias=False, seed=0), lambda: ug.nn.LSTM(2, 3, 2, seed=0),
    lambda: ug.nn.ResidualRNNCell(2, 3, seed=0)])
def test_the_ready_cells_read_every_parameter(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ug.unroll(make(), 3)
