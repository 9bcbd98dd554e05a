"""Run.value / Run.grad take a member's name as the diagrams draw it (``h₁``, ``h_next₂``,
``h<sub>1</sub>``), and an unknown name gets a message in whole sentences that says where the
loss is when ``L`` or ``loss`` is asked for."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.run import _subscript

SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _run(kind, T):
    cell = {"rnn": lambda: ug.nn.RNNCell(2, 3, seed=0),
            "lstm": lambda: ug.nn.LSTMCell(2, 3, seed=0)}[kind]()
    net = ug.unroll(cell, steps=T)
    out, _ = net(np.linspace(-1, 1, T * 2 * 2).reshape(T, 2, 2))
    (out * np.arange(1.0, 4.0)).sum().backward()
    return net, net.last_run


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["rnn", "lstm"]), T=st.integers(1, 12), pick=st.integers(0, 50))
def test_a_name_with_its_step_as_a_subscript_is_the_name_at_that_step(kind, T, pick):
    net, run = _run(kind, T)
    t = pick % T
    members = list(net.cell.states) + list(net.cell.outputs) + list(net.cell.inputs)
    for k in members:
        for drawn in (k + str(t).translate(SUB), f"{k}<sub>{t}</sub>"):
            np.testing.assert_array_equal(run.value(drawn), run.value(f"{k}@{t}"))
            a, b = run.grad(drawn), run.grad(f"{k}@{t}")
            assert (a is None and b is None) or np.array_equal(a, b)
        np.testing.assert_array_equal(run.value(f"{k}ᵢₙᵢₜ" if k in net.cell.states else
                                                f"{k}@{t}"),
                                      run.value(f"{k}_init" if k in net.cell.states else
                                                f"{k}_{t}"))
    # a named node of the cell as the unrolled diagram labels it: h_next₂
    np.testing.assert_array_equal(run.value("h_next" + _subscript(t)), run.value(f"h_next@{t}"))


def test_an_outputs_subscript_name_is_the_gradient_sent_to_that_output():
    net, run = _run("rnn", 3)
    np.testing.assert_array_equal(run.grad("y₁"), run.grad("y@1"))
    np.testing.assert_array_equal(run.grad("y₁"), np.broadcast_to([1.0, 2.0, 3.0], (2, 3)))
    assert not np.array_equal(run.grad("h₁"), run.grad("y₁"))  # h: the total, as its oval


@pytest.mark.parametrize("name", ["zz", "h₉", "h_next@7", "weight", "h<sub>9</sub>"])
def test_an_unknown_name_is_a_message_in_whole_sentences(name):
    net, run = _run("rnn", 3)
    for call in (run.value, run.grad):
        with pytest.raises(ug.GraphError) as err:
            call(name)
        msg = str(err.value)
        assert re.search(r"has this name(\. |; did you mean [^?]*\? )Accepted: ", msg)
        for m in re.finditer(r"(\S) [A-Z]", msg):  # a sentence starts after its full stop
            assert m.group(1) in ".?", msg
        assert msg.endswith("steps run from 0 to 2.")
        assert "'h₁'" in msg  # the subscript form is listed as accepted


def test_a_subscript_name_of_a_missing_step_suggests_the_steps_there_are():
    _, run = _run("rnn", 3)
    with pytest.raises(ug.GraphError, match=r"did you mean 'h@0', 'h@1', 'h@2'"):
        run.value("h₉")


@pytest.mark.parametrize("name", ["L", "loss"])
def test_the_loss_by_its_diagram_name_says_where_its_value_is(name):
    _, run = _run("rnn", 3)
    with pytest.raises(ug.GraphError) as err:
        run.value(name)
    msg = str(err.value)
    assert "The loss is not a node of the unrolled graph" in msg
    assert "loss.item()" in msg
    assert "output 'y' at step t is Run.grad('y@t'), here e.g. 'y@0'" in msg
    assert "did you mean" not in msg


def test_a_cell_node_named_loss_is_found_by_its_name():
    c = ug.Cell("c")
    h = c.state("h", (2,))
    hn = ug.tanh(h + 1.0, name="h_next")
    loss = ug.mean(hn * hn, axis=-1)
    loss.name = "loss"
    c.feedback(h, hn)
    c.output("y", loss)
    net = ug.unroll(c, 2)
    net(state=np.zeros((1, 2)))
    np.testing.assert_array_equal(net.last_run.value("loss@1"), net.last_run.value("y@1"))
    np.testing.assert_array_equal(net.last_run.value("loss₁"), net.last_run.value("y@1"))
