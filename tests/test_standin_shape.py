"""The batch axis of a cell's stand-in cannot be read while the cell is built.

A placeholder (cell.input, cell.state) holds a batch of one; every value computed from it too.
Any read of that axis as a number (shape[0], unpacking, len, iteration, size, np.shape(t)[0],
the value itself) would be 1 at every batch size: each raises CellError naming the tensor, its
placeholder and the way to write the cell without the batch size. The declared shape, the
feature sizes and ndim stay readable, and tensors outside cells are untouched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


def _unpack(t):
    B, *rest = t.shape
    return B


def _loop(t):
    return [n for n in t.shape]


def _for_row(t):
    for row in t:
        return row


BATCH_READS = {
    "t.shape[0]": lambda t: t.shape[0],
    "t.shape[-ndim]": lambda t: t.shape[-t.ndim],
    "t.shape[:1]": lambda t: t.shape[:1],
    "t.shape[:]": lambda t: t.shape[:],
    "t.shape[::-1]": lambda t: t.shape[::-1],
    "B, *rest = t.shape": _unpack,
    "[n for n in t.shape]": _loop,
    "[*t.shape]": lambda t: [*t.shape],
    "(*t.shape,)": lambda t: (*t.shape,),
    "{*t.shape}": lambda t: {*t.shape},
    "f(*t.shape)": lambda t: max(*t.shape),
    "len(t)": len,
    "list(t)": list,
    "for row in t": _for_row,
    "t.size": lambda t: t.size,
    "np.size(t)": np.size,
    "np.shape(t)[0]": lambda t: np.shape(t)[0],
    "t.data.shape[0]": lambda t: t.data.shape[0],
    "t.numpy()": lambda t: t.numpy(),
}


def _body(kind, shape, depth, draw_ops):
    """A placeholder of ``shape`` and a value computed from it by ``depth`` ops (each keeps
    axis 0, the batch)."""
    cell = ug.Cell("c")
    p = getattr(cell, kind)("p", shape)
    W = cell.param("W", np.full(shape[-1:] * 2 if shape else (1, 1), 0.1))
    t = p
    for op in draw_ops[:depth]:
        if op == "scale":
            t = t * 2.0
        elif op == "tanh":
            t = ug.tanh(t)
        elif op == "matmul" and shape and t.shape[-1] == shape[-1]:
            t = t @ W.T
        elif op == "sum" and len(t.shape[1:]) >= 1:
            t = ug.sum(t, axis=-1, keepdims=True)
        elif op == "reshape":
            t = t.reshape(-1, *t.shape[1:])
        else:
            t = t + 1.0
    return p, t


shapes = st.lists(st.integers(2, 4), min_size=0, max_size=3).map(tuple)
ops = st.lists(st.sampled_from(["scale", "tanh", "matmul", "sum", "reshape", "add"]),
               min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["input", "state"]), shape=shapes, depth=st.integers(0, 3),
       draw_ops=ops, read=st.sampled_from(sorted(BATCH_READS)))
def test_every_read_of_the_batch_axis_is_a_cell_error_naming_the_fix(kind, shape, depth,
                                                                       draw_ops, read):
    p, t = _body(kind, shape, depth, draw_ops)
    with pytest.raises(ug.CellError) as err:
        BATCH_READS[read](t)
    msg = str(err.value)
    assert t.node.label() in msg and f"{kind} p" in msg or (t is p and "p" in msg)
    assert "placeholder" in msg and "stand-in" in msg
    if read not in ("t.data.shape[0]", "t.numpy()"):
        assert "batch" in msg and f"{t.node.label()}.shape[1:]" in msg


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["input", "state"]), shape=shapes, depth=st.integers(0, 3),
       draw_ops=ops)
def test_the_declared_shape_the_feature_sizes_and_ndim_stay_readable(kind, shape, depth,
                                                                     draw_ops):
    p, t = _body(kind, shape, depth, draw_ops)
    full = t._data.shape
    assert t.shape == full and t.shape[1:] == full[1:] and len(t.shape) == t.ndim
    assert np.ndim(t) == t.ndim and np.shape(t) == full
    if t.ndim >= 2:
        assert t.shape[-1] == full[-1] and t.shape[1] == full[1]
    assert repr(t.shape) == repr(full)
    # numpy takes the shape whole (a constant of the stand-in's shape broadcasts over the
    # batch): it is not a read of axis 0 by the user's code
    assert np.zeros(t.shape).shape == full and tuple(t.shape) == full
    assert t.shape + (2,) == full + (2,)


def test_a_cell_that_reads_its_batch_size_is_refused_and_the_fix_runs():
    cell = ug.Cell("c")
    x = cell.input("x", (6,))
    h = cell.state("h", (3,))
    W = cell.param("W", np.full((3, 6), 0.1))
    with pytest.raises(ug.CellError, match=r"x\.shape\[0\].*batch.*reshape with -1"):
        x.reshape(x.shape[0], 2, 3)
    with pytest.raises(ug.CellError, match=r"h\.shape unpacked"):
        B, H = h.shape
    # written without the batch size, it runs at any batch size
    pairs = x.reshape(-1, 2, 3)
    h_next = ug.tanh(ug.sum(pairs, axis=1) + h @ (W[:, :3]).T, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    for batch in (1, 5):
        out, _ = ug.unroll(cell, 2)(np.ones((2, batch, 6)))
        assert out.shape == (2, batch, 3)


def test_the_message_names_the_value_and_the_placeholder_it_comes_from():
    cell = ug.Cell("c")
    h = cell.state("h", (3,))
    g = ug.tanh(h * 2.0, name="gate")
    with pytest.raises(ug.CellError) as err:
        _ = g.shape[0]
    msg = str(err.value)
    assert msg.startswith("gate.shape[0]: gate is computed from state h, a placeholder")
    g.name = "renamed"  # the label is read when the error is made
    with pytest.raises(ug.CellError, match=r"^renamed\.size: renamed is computed from state"):
        _ = g.size
    with pytest.raises(ug.CellError, match=r"renamed\.data: renamed is computed from state "
                                           r"h.*net\.last_run\.value\('renamed@0'\)"):
        _ = g.data


def test_tensors_outside_cells_read_a_batch_of_one_as_one():
    x = ug.tensor(np.ones((1, 3)), requires_grad=True)
    y = ug.tanh(x * 2.0)
    for t in (x, y):
        assert t.shape[0] == 1 and len(t) == 1 and t.size == 3
        B, H = t.shape
        assert (B, H) == (1, 3) and type(t.shape) is tuple
        assert t.data.shape == (1, 3) and np.shape(t) == (1, 3) and np.size(t) == 3
        assert len(list(t)) == 1


def test_an_unrolled_nets_values_read_a_batch_of_one_as_one():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 2)
    out, h = net(np.ones((2, 1, 2)))
    assert out.shape == (2, 1, 3) and h.shape[0] == 1 and len(h) == 1 and h.size == 3
    assert h.data.shape == (1, 3) and net.last_run.value("h@0").shape == (1, 3)
    loss = ug.mean(out * out)
    loss.backward()
    assert cell.weight_hh.grad.shape == (3, 3)


def test_a_long_chain_of_batch_of_one_values_is_walked_once():
    # shape reads of a growing eager graph of batch-one values: each ancestor is visited once
    # (a walk per read would make this loop quadratic)
    import sys

    tensor_module = sys.modules["unrollgraph.tensor"]

    x = ug.tensor(np.ones((1, 2)), requires_grad=True)
    t = x
    visits = []
    original = tensor_module._stand_in_source

    def counting(u):
        before = len(tensor_module._FROM_STAND_IN)
        out = original(u)
        visits.append(len(tensor_module._FROM_STAND_IN) - before)
        return out

    tensor_module._stand_in_source = counting
    try:
        for _ in range(300):
            t = t * 1.0
            assert t.shape == (1, 2)
    finally:
        tensor_module._stand_in_source = original
    assert max(visits) <= 3  # the new value (and x the first time), never the whole chain
