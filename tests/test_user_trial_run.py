"""What a new user tried on a net: the names the diagrams give in Run.value / Run.grad,
Tensor.edit() on a computed value, and an input whose feature size is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


def _two_state_cell():
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (3,))
    s = c.state("s", (3,))
    W = c.param("W", np.linspace(-1, 1, 6).reshape(3, 2))
    h_next = ug.tanh(x @ W.T + h * 0.5 + s, name="h_next")
    c.feedback(h, h_next)
    c.feedback(s, s * 0.9 + h_next)
    c.output("y", h_next * 2.0)
    c.output("z", s)
    return c


CELLS = {"rnn": lambda: ug.nn.RNNCell(2, 3, seed=0), "lstm": lambda: ug.nn.LSTMCell(2, 3, seed=0),
         "two states": _two_state_cell}


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), T=st.integers(1, 4), B=st.integers(1, 2),
       masked=st.booleans(), checkpoint=st.sampled_from([None, 2]))
def test_diagram_names_of_states_outputs_and_inputs_give_their_values_and_grads(
        kind, T, B, masked, checkpoint):
    cell = CELLS[kind]()
    net = ug.unroll(cell, steps=T, checkpoint=checkpoint)
    xs = np.linspace(-1, 1, T * B * 2).reshape(T, B, 2)
    lengths = [T] * B if masked else None
    outs, state = net(xs, lengths=lengths)
    outs = outs if isinstance(outs, dict) else {next(iter(cell.outputs)): outs}
    sum(o.sum() for o in outs.values()).backward()
    run = net.last_run
    used = run.net  # (the masked twin for lengths=)
    for t in range(T):
        for k, o in outs.items():
            for name in (f"{k}@{t}", f"{k}_{t}"):
                np.testing.assert_array_equal(run.value(name), o.data[t])
                # the loss's own gradient for outputs[t] (the output's oval): d sum / d o = 1,
                # not the node's total gradient (an RNN's y is its state h_next)
                np.testing.assert_array_equal(run.grad(name), np.ones_like(o.data[t]))
        for s, nodes in used.state_nodes.items():
            for name in (f"{s}@{t}", f"{s}_{t}"):
                np.testing.assert_array_equal(run.value(name), run.value(nodes[t]))
        np.testing.assert_array_equal(run.value(f"x_{t}"), xs[t])
    finals = state if isinstance(state, tuple) else (state,)
    for s, final in zip(cell.states, finals):
        np.testing.assert_array_equal(run.value(f"{s}@{T - 1}"), final.data)
        assert run.value(f"{s}_init").shape == (B, 3)
        np.testing.assert_array_equal(run.value(f"{s}@init"), run.value(f"{s}_init"))


@pytest.mark.dot
def test_every_name_the_textbook_view_labels_is_accepted():
    net = ug.unroll(_two_state_cell(), steps=3)
    net(np.ones((3, 1, 2)))
    dot = ug.to_dot(net, detail="textbook")
    labels = set(re.findall(r"([A-Za-z]\w*)<sub>(\w+)</sub>", dot))
    assert {("h", "1"), ("y", "2"), ("x", "0"), ("s", "init")} <= labels
    for name, sub in labels:
        if sub.isdigit() or sub == "init":
            net.last_run.value(f"{name}_{sub}")  # no GraphError


def test_graph_display_names_keep_their_meaning():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    net(np.ones((2, 1, 2)))
    run = net.last_run
    np.testing.assert_array_equal(run.value("h_next@1"), run.value(net.state_nodes["h"][1]))


def test_an_unknown_name_lists_the_accepted_forms_and_close_names():
    net = ug.unroll(_two_state_cell(), steps=2)
    net(np.ones((2, 1, 2)))
    with pytest.raises(ug.GraphError) as err:
        net.last_run.value("hh@1")
    msg = str(err.value)
    assert "'h@1'" in msg.split("Accepted")[0]  # the closest name
    assert "'name@t' or 'name_t'" in msg and "h_init" in msg and "0 to 1" in msg
    with pytest.raises(ug.GraphError, match="steps run from 0 to 1"):
        net.last_run.grad("h@2")


# -- Tensor.edit() on what is not a leaf -----------------------------------------------------
def test_edit_of_a_computed_value_is_refused_as_item_assignment_is():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    u = w * 2.0
    with pytest.raises(ug.GraphError, match="computed by op 'mul'") as by_edit:
        with u.edit() as a:
            a[0] = 1.0
    with pytest.raises(ug.GraphError, match="computed by op 'mul'") as by_item:
        u[0] = 1.0
    for err in (by_edit, by_item):  # the same message style: what, why, how instead
        assert "would not be part of the graph its gradient follows" in str(err.value)
        assert "compute the new value with ops" in str(err.value)
    np.testing.assert_array_equal(u.data, [2.0, 4.0])


def test_edit_of_a_placeholder_is_refused():
    c = ug.Cell("c")
    h = c.state("h", (2,))
    with pytest.raises(ug.CellError, match="stand-in"):
        h.edit()


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.floats(-5, 5), min_size=1, max_size=5), at=st.integers(0, 4))
def test_an_exception_inside_edit_puts_every_number_back(values, at):
    w = ug.tensor(values, requires_grad=True)
    loss = (w * w).sum()  # a graph built before: it stays differentiable
    with pytest.raises(KeyError):
        with w.edit() as a:
            a[:] = 7.0
            a[at % len(values)] = -1.0
            raise KeyError("stop")
    np.testing.assert_array_equal(w.data, values)
    assert not w.data.flags.writeable
    loss.backward()
    np.testing.assert_allclose(w.grad, 2 * np.array(values))


def test_an_edit_that_ends_well_is_kept_and_recorded():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    loss = (w * w).sum()
    with w.edit() as a:
        a[0] = 5.0
    np.testing.assert_array_equal(w.data, [5.0, 2.0])
    with pytest.raises(ug.GradientError):
        loss.backward()


# -- an input whose feature size differs --------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(want=st.integers(1, 5), got=st.integers(1, 5), T=st.integers(1, 3),
       B=st.integers(1, 3), steps_off=st.booleans())
def test_a_wrong_feature_size_is_named_with_both_sizes(want, got, T, B, steps_off):
    net = ug.unroll(ug.nn.RNNCell(want, 2, seed=0), steps=T)
    given_T = T + 1 if steps_off else T
    if got == want and not steps_off:
        return
    with pytest.raises(ug.ShapeError) as err:
        net(np.zeros((given_T, B, got)))
    msg = str(err.value)
    assert "arrange it" not in msg and "input 'x'" in msg
    if got != want:
        assert f"feature size {got} where the cell's input 'x' takes {want}" in msg
    if steps_off:
        assert f"steps={given_T}" in msg


def test_a_missing_batch_axis_is_named():
    net = ug.unroll(ug.nn.RNNCell(3, 2, seed=0), steps=4)
    with pytest.raises(ug.ShapeError, match=r"no batch axis.*xs\[:, None\]"):
        net(np.zeros((4, 3)))


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(["rnn", "lstm"]), T=st.integers(2, 4),
       checkpoint=st.sampled_from([None, 2]), seed=st.integers(0, 99))
def test_an_outputs_name_gives_the_gradient_its_diagram_oval_shows(kind, T, checkpoint, seed):
    """``grad("y_t")`` is the gradient the loss sends to outputs[t] (what the textbook view
    prints in y_t's oval), also for an RNN whose output is its state: the state's name
    ``h_t`` keeps the total gradient, which differs by what later steps send back."""
    cell = CELLS[kind]()
    net = ug.unroll(cell, steps=T, checkpoint=checkpoint)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, 2, 2))
    G = rng.normal(size=(T, 2, 3))
    out, _ = net(xs)
    (out * G).sum().backward()
    run = net.last_run
    for t in range(T):
        np.testing.assert_array_equal(run.grad(f"y_{t}"), G[t])
        np.testing.assert_array_equal(run.grad(f"y@{t}"), G[t])
    if kind == "rnn":  # y is h_next: the state's total gradient collects the later steps'
        assert not np.allclose(run.grad("h_0"), G[0])
        np.testing.assert_array_equal(run.grad(f"h_{T - 1}"), G[T - 1])
