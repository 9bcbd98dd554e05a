"""A cell changed after it was unrolled: the net refuses to run, naming what was added."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import unrollgraph as ug


def _elman():
    cell = ug.Cell("elman")
    x = cell.input("x", (2,))
    h = cell.state("h", (3,))
    W = cell.param("W", np.full((2, 3), 0.1))
    U = cell.param("U", np.eye(3) * 0.5)
    h_next = ug.tanh(x @ W + h @ U, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell, x, h, h_next


XS = np.ones((3, 2, 2))


def test_issue_inputs_a_parameter_or_an_output_added_after_unroll():
    cell, x, h, h_next = _elman()
    net = ug.unroll(cell, steps=3)
    out, _ = net(XS)
    assert isinstance(out, ug.Tensor)
    cell.param("b", np.zeros(3))  # used to end in KeyError: 'b'
    with pytest.raises(ug.CellError, match="param 'b' added") as info:
        net(XS)
    assert "ug.unroll(cell, steps) again" in str(info.value)

    cell, x, h, h_next = _elman()
    net = ug.unroll(cell, steps=3)
    cell.output("z", h_next * 2.0)  # used to turn the return value into a dict, silently
    with pytest.raises(ug.CellError, match="output 'z' added"):
        net(XS)
    out, _ = ug.unroll(cell, steps=3)(XS)  # a new net of the changed cell works
    assert sorted(out) == ["y", "z"]


_CHANGES = {
    "input": lambda c, x, h, n: c.input("extra_input", (2,)),
    "state": lambda c, x, h, n: c.state("extra_state", (3,)),
    "param": lambda c, x, h, n: c.param("extra_param", np.zeros(3)),
    "output": lambda c, x, h, n: c.output("extra_output", n + 1.0),
}


@given(kinds=st.lists(st.sampled_from(sorted(_CHANGES)), min_size=1, max_size=4, unique=True),
       lengths=st.booleans(), called_first=st.booleans())
def test_any_addition_is_refused_by_every_way_of_running_the_net(kinds, lengths, called_first):
    cell, x, h, n = _elman()
    net = ug.unroll(cell, steps=3)
    if called_first:
        net(XS, lengths=[3, 2] if lengths else None)
    for kind in kinds:
        _CHANGES[kind](cell, x, h, n)
    with pytest.raises(ug.CellError) as info:
        net(XS, lengths=[3, 2] if lengths else None)
    for kind in kinds:
        assert f"{kind} 'extra_{kind}'" in str(info.value)


def test_feedback_added_after_unroll_is_refused():
    cell = ug.Cell("two")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    c = cell.state("c", (2,))
    W = cell.param("W", np.eye(2))
    cell.feedback(h, ug.tanh(x @ W + h))
    cell.output("y", c * 1.0 + h)
    with pytest.raises(ug.CellError, match="no feedback edge"):
        ug.unroll(cell, 2)  # c has no feedback yet: cannot unroll
    cell.feedback(c, c + h)
    net = ug.unroll(cell, 2)
    net(np.ones((2, 1, 2)))


def test_a_run_made_before_the_change_refuses_to_recompute_or_backpropagate():
    cell, x, h, n = _elman()
    net = ug.unroll(cell, steps=3)
    out, _ = net(XS)
    run = net.last_run
    cell.param("b", np.zeros(3))
    with pytest.raises(ug.CellError, match="param 'b' added"):
        out.sum().backward()  # used to end in KeyError
    with pytest.raises(ug.CellError, match="param 'b' added"):
        run.full()


def test_a_failed_declaration_changes_nothing_and_the_net_still_runs():
    cell, x, h, n = _elman()
    net = ug.unroll(cell, steps=3)
    with pytest.raises(ug.CellError):
        cell.param("W", np.zeros(3))  # the name is taken
    with pytest.raises(ug.ShapeError):
        cell.input("bad", (0,))
    with pytest.raises(ug.CellError):
        cell.feedback(h, n)  # h already has one
    out, _ = net(XS)
    out.sum().backward()
    assert cell.parameters()["W"].grad is not None


def test_tbptt_with_a_cache_of_nets_refuses_a_changed_cell():
    cell = ug.nn.RNNCell(1, 2, seed=0)
    cache: dict = {}
    xs, ys = np.ones((4, 1, 1)), np.zeros((4, 1, 2))
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=2, k2=2, cache=cache)
    cell.output("twice", cell.outputs["y"] * 2.0)
    with pytest.raises(ug.CellError, match="output 'twice' added"):
        ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=2, k2=2, cache=cache)
