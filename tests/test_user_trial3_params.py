"""A training step written as PyTorch users write it, on a parameter reached by attribute, by
name or from ``cell.parameters()``: in place under ``ug.no_grad()``, a clear error otherwise,
never a step that rebinds a name and leaves the parameter the net reads unchanged."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

CELLS = {
    "RNNCell": lambda: ug.nn.RNNCell(2, 3, seed=0),
    "LSTMCell": lambda: ug.nn.LSTMCell(2, 3, seed=0),
    "GRUCell": lambda: ug.nn.GRUCell(2, 3, seed=0),
    "RNN2": lambda: ug.nn.RNN(2, 3, num_layers=2, seed=0),
    "LSTM2": lambda: ug.nn.LSTM(2, 3, num_layers=2, seed=0),
    "GRU1": lambda: ug.nn.GRU(2, 3, seed=0),
    "Residual": lambda: ug.nn.ResidualRNNCell(2, 3, seed=0),
}
IN_PLACE = {"+=": (operator.iadd, np.add), "-=": (operator.isub, np.subtract),
            "*=": (operator.imul, np.multiply), "/=": (operator.itruediv, np.true_divide)}


def _loss(net, xs):
    out, _ = net(xs)
    return ug.mse_loss(out, np.zeros(out.shape))


def _xs(steps=3):
    return np.linspace(-1, 1, steps * 2 * 2).reshape(steps, 2, 2)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), pick=st.integers(0, 100),
       sym=st.sampled_from(sorted(IN_PLACE)), reach=st.sampled_from(["attr", "dict"]))
def test_an_in_place_step_on_a_parameter_changes_the_parameter_the_net_reads(kind, pick, sym,
                                                                             reach):
    cell = CELLS[kind]()
    names = sorted(cell.parameters())
    name = names[pick % len(names)]
    param = cell.parameters()[name]
    net = ug.unroll(cell, steps=3)
    loss = _loss(net, _xs())
    loss.backward(retain_graph=True)  # (kept walkable: the version check is what is tested)
    before = param.data.copy()
    step = 0.5 + np.abs(param.grad)  # no zero: /= stays finite
    kept = step.copy()
    iop, fn = IN_PLACE[sym]

    # outside no_grad: refused, nothing changed
    with pytest.raises(ug.GradientError, match=rf"{name} {'[*/+-]'}= \.\.\..*ug\.no_grad\(\)"):
        if reach == "attr":
            setattr(cell, name, iop(getattr(cell, name), step))
        else:
            p = cell.parameters()[name]
            p = iop(p, step)
    assert cell.parameters()[name] is param
    np.testing.assert_array_equal(param.data, before)

    # under no_grad: in place, the same tensor, as numpy computes it
    with ug.no_grad():
        if reach == "attr":
            setattr(cell, name, iop(getattr(cell, name), step))
        else:
            for k, p in cell.parameters().items():
                if k == name:
                    p = iop(p, step)
    assert cell.parameters()[name] is param and getattr(cell, name) is param
    np.testing.assert_array_equal(param.data, fn(before, kept).astype(before.dtype))
    np.testing.assert_array_equal(step, kept)  # the user's array is not touched
    assert not param.data.flags.writeable
    # recorded as an optimizer step: the old graph refuses, the net computes with the new value
    with pytest.raises(ug.GradientError, match=name):
        loss.backward()
    fresh = CELLS[kind]()
    fresh.load_state_dict(cell.state_dict())
    np.testing.assert_array_equal(_loss(net, _xs()).data, _loss(ug.unroll(fresh, 3), _xs()).data)


def test_the_students_sgd_loop_trains_like_the_optimizer():
    a, b = ug.nn.RNNCell(2, 3, seed=1), ug.nn.RNNCell(2, 3, seed=1)
    na, nb = ug.unroll(a, 4), ug.unroll(b, 4)
    opt = ug.optim.SGD(b.parameters(), lr=0.1)
    first = float(_loss(na, _xs(4)).data)
    for _ in range(5):
        a.zero_grad()
        _loss(na, _xs(4)).backward()
        with ug.no_grad():
            a.weight_hh -= 0.1 * a.weight_hh.grad
            a.weight_ih -= 0.1 * a.weight_ih.grad
            a.bias_hh -= 0.1 * a.bias_hh.grad
            a.bias_ih -= 0.1 * a.bias_ih.grad
        opt.zero_grad()
        _loss(nb, _xs(4)).backward()
        opt.step()
    for k in a.parameters():
        np.testing.assert_allclose(a.parameters()[k].data, b.parameters()[k].data, rtol=1e-12)
    assert float(_loss(na, _xs(4)).data) < first


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("value", ["array", "tensor", "computed", "none"])
def test_rebinding_a_parameter_attribute_is_refused_naming_it_and_the_fixes(kind, value):
    cell = CELLS[kind]()
    for name, p in cell.parameters().items():
        before = p.data.copy()
        new = {"array": np.zeros(p.shape), "tensor": ug.tensor(np.zeros(p.shape)),
               "computed": p * 2, "none": None}[value]
        with pytest.raises(ug.CellError) as err:
            setattr(cell, name, new)
        msg = str(err.value)
        assert f"cell.{name} = " in msg and f"cell.{name}.data = new" in msg
        assert f"with cell.{name}.edit() as a" in msg and "ug.optim.SGD" in msg
        assert getattr(cell, name) is p and cell.parameters()[name] is p
        np.testing.assert_array_equal(p.data, before)
        with pytest.raises(ug.CellError, match=f"del cell.{name}"):
            delattr(cell, name)
        setattr(cell, name, p)  # the parameter itself: accepted, nothing changes
        assert getattr(cell, name) is p
    cell.note = "other attributes are the user's"
    assert cell.note == "other attributes are the user's"


def test_a_subclass_attribute_holding_a_parameter_is_guarded_too():
    class Elman(ug.Cell):
        def __init__(self):
            super().__init__("elman")
            x = self.input("x", (2,))
            h = self.state("h", (3,))
            self.W = self.param("W", np.full((3, 2), 0.1))
            self.U = self.param("U", np.eye(3) * 0.5)
            hn = ug.tanh(x @ self.W.T + h @ self.U.T, name="h_next")
            self.feedback(h, hn)
            self.output("y", hn)

    cell = Elman()
    W = cell.W
    cell.W = cell.U  # another of the cell's parameters: a loop over layers may do this
    cell.W = W
    with pytest.raises(ug.CellError, match="cell.W = an array"):
        cell.W = np.zeros((3, 2))
    with pytest.raises(ug.GradientError, match="W -= "):
        cell.W -= 0.1
    with ug.no_grad():
        cell.W -= 0.1
    assert cell.W is W
    np.testing.assert_allclose(W.data, 0.0, atol=1e-15)


def test_in_place_on_values_that_are_not_trained_leaves_builds_the_graph_as_before():
    # inside a cell body, h -= u is h = h - u: a node of the graph
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (2,))
    W = c.param("W", np.eye(2))
    s = x @ W.T
    h_in = h
    h -= s
    h *= 0.5
    assert h is not h_in and h.node.op == "mul"
    c.feedback(h_in, h)
    c.output("y", h)
    out, _ = ug.unroll(c, 2)(np.ones((2, 1, 2)))
    np.testing.assert_allclose(out.data[0], (0 - 1) * 0.5 * np.ones((1, 2)))
    # a constant: out of place, the constant and the array it came from unchanged
    arr = np.array([1.0, 2.0])
    k = ug.tensor(arr)
    k0 = k
    k += 1
    assert k is not k0
    np.testing.assert_array_equal(k0.data, [1.0, 2.0])
    np.testing.assert_array_equal(arr, [1.0, 2.0])
    # under no_grad too: only leaves that require grad are changed in place
    with ug.no_grad():
        k0 -= 1
    np.testing.assert_array_equal(arr, [1.0, 2.0])


def test_an_in_place_step_of_the_wrong_shape_or_type_changes_nothing():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    with ug.no_grad():
        with pytest.raises(ug.ShapeError, match=r"w -= value.*nothing was changed"):
            w -= np.ones((3, 2))
        with pytest.raises(ug.DTypeError, match="w \\+= value"):
            w += "a"
        w @= np.eye(2) * 2  # shape kept: fine
    np.testing.assert_array_equal(w.data, [2.0, 4.0])
    w32 = ug.tensor(np.ones(2, np.float32), requires_grad=True)
    with ug.no_grad():
        w32 -= np.full(2, 0.25)  # float64 value: w32 stays float32
    assert w32.dtype == np.float32
    np.testing.assert_array_equal(w32.data, [0.75, 0.75])


def test_an_in_place_step_is_seen_by_a_detached_view_and_by_another_cell_sharing_it():
    shared = ug.tensor(np.eye(3) * 0.5, requires_grad=True, name="U")
    a, b = ug.Cell("a"), ug.Cell("b")
    for c in (a, b):
        h = c.state("h", (3,))
        hn = ug.tanh(h @ c.param("U", shared).T + 0.1)
        c.feedback(h, hn)
        c.output("y", hn)
    seen = shared.detach()
    with ug.no_grad():
        shared *= 2
    np.testing.assert_array_equal(seen.data, np.eye(3))
    assert a.parameters()["U"] is b.parameters()["U"] is shared


def test_a_state_dict_is_a_snapshot_and_says_so():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    sd = cell.state_dict()
    sd["weight_hh"] -= 1.0
    assert not np.array_equal(cell.weight_hh.data, sd["weight_hh"])
    assert "snapshot" in ug.Cell.state_dict.__doc__
    cell.load_state_dict(sd)
    np.testing.assert_array_equal(cell.weight_hh.data, sd["weight_hh"])


def test_p_data_minus_equals_raises_and_changes_nothing_and_its_documented_step_works():
    cell = ug.nn.GRUCell(2, 3, seed=0)
    p = cell.weight_hh
    before = p.data.copy()
    g = np.full(p.shape, 0.1)
    with pytest.raises(ValueError, match="read-only"):
        p.data -= g
    np.testing.assert_array_equal(p.data, before)
    assert "with ug.no_grad(): p -= lr * p.grad" in ug.Tensor.data.__doc__
    with ug.no_grad():
        p -= g
    np.testing.assert_array_equal(p.data, before - g)
    p.data = p.data - g  # the other documented spelling
    np.testing.assert_array_equal(p.data, (before - g) - g)
    assert cell.weight_hh is p
