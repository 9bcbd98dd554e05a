"""One rule for the numbers every node prints: the values of the steps print alike (all
written out, or all as norm and shape), whatever their kind (an input printed its matrix
while the states beside it printed norms); a value computed once prints by its own size."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

_CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _labels(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.match(r'^\s*"([^"]+)" \[.*label=<(.*)>', line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(_CELLS)), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.sampled_from(["textbook", "ops", "steps"]))
def test_the_steps_print_their_numbers_alike(name, D, H, B, detail):
    net = ug.unroll(_CELLS[name](D, H, seed=0), steps=3)
    outs, _ = net(np.random.default_rng(0).standard_normal((3, B, D)))
    loss = (outs * outs).sum()
    loss.backward()
    text = ug.to_dot(net, loss=loss, detail=detail)
    labels = _labels(text)
    g = net.graph
    # (a single number is always written out)
    ids = [g.id(ns[t]) for ns in net.input_nodes.values() for t in range(3)] if B * D > 1 \
        else []
    if detail != "steps" and B * H > 1:  # (the step view prints a state in its step's box)
        ids += [g.id(ns[t]) for ns in net.state_nodes.values() for t in range(3)]
    sizes = [B * D, B * H]
    written = [("‖·‖" not in labels[i]) for i in ids if i in labels]
    assert len(set(written)) <= 1, (ids, written)
    if not written:
        return
    if detail == "textbook":  # it prints inputs, states and outputs only
        assert written[0] == (max(sizes) <= 4)
    elif detail == "ops" and max(sizes) > 4:
        assert not written[0]
    # a parameter stands alone: written out when it fits
    w = net.param_nodes["weight_hh"]
    if detail != "textbook":
        assert ("‖·‖" not in labels[g.id(w)]) == (np.prod(w.shape) <= 4)


def test_a_small_batched_input_beside_wide_states_prints_as_they_do():
    """The reported case: x of shape (T, 2, 2) (four numbers) beside states of (2, 3)."""
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    outs, _ = net(np.random.default_rng(0).standard_normal((3, 2, 2)))
    (outs * outs).sum().backward()
    for detail in ("textbook", "ops"):
        text = ug.to_dot(net, detail=detail)
        x0 = _labels(text)[net.graph.id(net.input_nodes["x"][0])]
        assert "v = ‖·‖" in x0 and "(2×2)" in x0


@pytest.mark.parametrize("detail", ["textbook", "ops"])
def test_the_gallery_nets_still_print_every_number(detail):
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=4)
    outs, _ = net(np.random.default_rng(0).standard_normal((4, 1, 2)))
    (outs * outs).sum().backward()
    assert "‖·‖" not in ug.to_dot(net, detail=detail)
