"""A cell's placeholder does not hand out its stand-in value (``h.data``, ``h.numpy()``, so
no ``h.data.max()`` number becomes a constant); its shape stays available (``h.shape``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

READS = {
    "h.data": lambda p: p.data,
    "h.data.max()": lambda p: float(p.data.max()),
    "h.numpy()": lambda p: p.numpy(),
    "h.data = ...": lambda p: setattr(p, "data", np.zeros(p.shape)),
}


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       kind=st.sampled_from(["state", "input"]), read=st.sampled_from(sorted(READS)))
def test_a_placeholders_value_is_refused_naming_it_and_the_fix(shape, kind, read):
    c = ug.Cell("c")
    p = getattr(c, kind)("v", shape)
    with pytest.raises(ug.CellError) as err:
        READS[read](p)
    msg = str(err.value)
    assert f"v{read[1:].split(' =')[0].split('.max')[0]}" in msg
    assert f"{kind} 'v' is a placeholder" in msg and "stand-in" in msg
    assert "Compute with the tensor itself" in msg and "net.last_run.value('v@0')" in msg
    # it is still a tensor to compute with, and it still prints
    assert (p * 2).shape == (1,) + shape and "name='v'" in repr(p)


def test_a_placeholders_shape_is_the_batch_of_one_then_the_declared_shape():
    c = ug.Cell("c")
    h = c.state("h", (3,))
    x = c.input("x", (2, 4))
    assert h.shape == (1, 3) and h.shape[1:] == (3,) and x.shape[1:] == (2, 4)
    with pytest.raises(ug.CellError, match=r"h\.shape is \(1, \.\.\.\).*declared shape "
                       r"h\.shape\[1:\]"):
        h.numpy()


def test_placeholder_values_of_an_unrolled_graph_are_not_refused():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), 2)
    out, _ = net(np.ones((2, 1, 2)))
    assert out.data.shape == (2, 1, 3)
    np.testing.assert_array_equal(net.last_run.value("x@0"), np.ones((1, 2)))


def test_a_cell_built_on_the_declared_sizes_renders_exports_and_runs():
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (3,))
    W = c.param("W", np.full((h.shape[-1], x.shape[-1]), 0.1))
    hn = ug.tanh(x @ W.T + h * 0.5, name="h_next")
    c.feedback(h, hn)
    c.output("y", hn)
    out, _ = ug.unroll(c, 2)(np.ones((2, 4, 2)))
    assert out.shape == (2, 4, 3)
    assert "h_next" in ug.to_dot(c)
