"""A slice of a named value is drawn with the step, as the named value itself is."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 4), name=st.sampled_from(["gates", "g_1", "<b>", "a&b"]))
def test_a_slice_of_a_named_value_carries_its_step_in_the_op_level_diagram(T, name):
    """In every step's cluster, ``gates[:, 0:2]`` is drawn ``gates₂[:, 0:2]`` (the step on
    the value sliced, as ``gates₂`` itself is drawn), its name escaped as any user name."""
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (2,))
    W = c.param("W", np.ones((4, 2)))
    gates = ug.tanh(x @ W.T, name=name)
    c.feedback(h, gates[:, 0:2] * gates[:, 2:4] + h)
    c.output("y", h)
    dot = ug.to_dot(ug.unroll(c, steps=T))
    esc = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for t in range(T):
        for index in ("0:2", "2:4"):
            assert f"<b>{esc}<sub>{t}</sub>&#91;:, {index}&#93;</b>" in dot
    assert f"<b>{esc}&#91;" not in dot  # never without its step
