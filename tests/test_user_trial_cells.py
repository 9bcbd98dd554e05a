"""A cell that computes with a placeholder's stand-in value (``np.asarray(h)``; ``h.data``
refuses at once) instead of the placeholder, and a cell whose declared input or state
nothing reads: refused (or warned of) when the cell is unrolled, never a net that silently
computes with the stand-in."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

# the ways a user turns a placeholder's stand-in into a constant of the cell
COPIES = {
    "ug.tensor(np.asarray(p))": lambda p: ug.tensor(np.asarray(p)),
    "np.array(p) as an operand": lambda p: np.array(p),
    "np.asarray(p) as an operand": lambda p: np.asarray(p),
    "a float32 copy": lambda p: ug.tensor(np.asarray(p).astype(np.float32)),
}


def test_the_users_cell_reading_h_data_is_refused_at_once_and_a_copy_at_unroll():
    c = ug.Cell("c")
    x = c.input("x", (3,))
    h = c.state("h", (3,))
    with pytest.raises(ug.CellError, match=r"h\.data: state 'h' is a placeholder"):
        ug.tensor(h.data)
    hn = ug.tensor(np.asarray(h)) * 2 + x
    c.feedback(h, hn)
    c.output("y", hn)
    with pytest.raises(ug.CellError) as err:
        ug.unroll(c, 3)
    msg = str(err.value)
    assert "state 'h'" in msg and "h's value is a stand-in" in msg
    assert "compute with the tensor h itself" in msg and "check shapes" in msg


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       kind=st.sampled_from(["state", "input"]), how=st.sampled_from(sorted(COPIES)),
       op=st.sampled_from(["add", "mul", "rsub"]))
def test_a_copy_of_a_stand_in_beside_an_unread_placeholder_is_a_cell_error(shape, kind, how,
                                                                           op):
    c = ug.Cell("c")
    other = c.input("u", shape) if kind == "state" else c.state("g", shape)
    p = c.state("h", shape) if kind == "state" else c.input("x", shape)
    const = COPIES[how](p)
    nxt = {"add": lambda: other + const, "mul": lambda: other * const,
           "rsub": lambda: const - other}[op]()
    if kind == "state":
        c.feedback(p, nxt)
    else:
        c.feedback(other, nxt)
    c.output("y", nxt)
    name = p.node.name
    with pytest.raises(ug.CellError, match=rf"{kind} '{name}' is declared but nothing") as err:
        ug.unroll(c, 2)
    assert f"{name}'s value is a stand-in" in str(err.value)
    assert "holds its stand-in value" in str(err.value)


def test_a_state_only_written_is_a_warning_and_the_net_still_carries_its_last_value():
    # the project's own random cells have such states: the final state is the last value
    c = ug.Cell("c")
    x = c.input("x", (2,))
    last = c.state("last", (2,))
    c.feedback(last, ug.tanh(x))
    c.output("y", x * 2)
    with pytest.warns(ug.CellWarning, match=r"state 'last' is declared but nothing"):
        net = ug.unroll(c, 3)
    xs = np.arange(12.0).reshape(3, 2, 2) / 10
    _, final = net(xs)
    np.testing.assert_allclose(final.data, np.tanh(xs[-1]))


def test_an_unread_input_is_a_warning_naming_it():
    c = ug.Cell("c")
    c.input("x", (2,))
    h = c.state("h", (2,))
    c.feedback(h, h * 0.5)
    c.output("y", h)
    with pytest.warns(ug.CellWarning,
                      match=r"input 'x' is declared but nothing .* np\.asarray\(x\)"):
        ug.unroll(c, 2)


def test_a_stand_in_copy_beside_a_read_state_is_a_warning():
    c = ug.Cell("c")
    x = c.input("x", (3,))
    h = c.state("h", (3,))
    hn = ug.tanh(h + x + ug.tensor(np.asarray(h)))
    c.feedback(h, hn)
    c.output("y", hn)
    with pytest.warns(ug.CellWarning, match=r"holds exactly the stand-in value of state 'h'"):
        ug.unroll(c, 2)


@pytest.mark.parametrize("make", [
    lambda: ug.nn.RNNCell(2, 3, seed=0), lambda: ug.nn.LSTMCell(2, 3, seed=0),
    lambda: ug.nn.GRUCell(2, 3, seed=0), lambda: ug.nn.GRUCell(2, 3, seed=0,
                                                                dtype=np.float32)])
def test_library_cells_unroll_without_a_warning(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ug.CellWarning)
        ug.unroll(make(), 3)


def test_a_constant_of_another_shape_than_the_placeholders_is_not_taken_for_a_copy():
    c = ug.Cell("c")
    x = c.input("x", (3,))
    h = c.state("h", (3,))
    hn = ug.tanh(h + x * np.full(3, 0.5))  # 0.5 everywhere, but no batch axis: meant
    c.feedback(h, hn)
    c.output("y", hn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ug.CellWarning)
        ug.unroll(c, 2)


def test_numpy_inside_a_cell_is_refused_naming_the_ug_function_and_the_stand_in():
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (3,))
    W = c.param("W", np.ones((3, 2)))
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.tanh.*ug\.tanh\(x\).*stand-in"):
        np.tanh(x @ W.T + h)
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.dot.*stand-in"):
        np.dot(x, np.ones((2, 3)))
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.allclose.*stand-in"):
        np.allclose(h, 0.5)  # a reader too: inside a cell it would read the stand-in
