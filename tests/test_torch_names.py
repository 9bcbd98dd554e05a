"""PyTorch's names: named_parameters() wherever parameters() exists, and the in-place methods
add_, sub_, mul_, div_, zero_ and requires_grad_ with the rules of the in-place operators.

The behaviour is tested on its own; the comparisons with torch skip when it is missing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


def _holders():
    """Every kind of object with parameters(), by a readable name."""
    rnn = ug.nn.RNNCell(2, 3, seed=0)
    custom = ug.Cell("elman")
    x = custom.input("x", (2,))
    h = custom.state("h", (3,))
    U = custom.param("U", np.zeros((3, 3)))
    W = custom.param("W", np.zeros((3, 2)))
    custom.feedback(h, ug.tanh(x @ W.T + h @ U.T, name="h_next"))
    custom.output("y", h)
    return {
        "RNNCell": rnn,
        "LSTM(num_layers=2)": ug.nn.LSTM(2, 3, num_layers=2, seed=0),
        "GRUCell": ug.nn.GRUCell(2, 3, seed=0),
        "ResidualRNNCell": ug.nn.ResidualRNNCell(2, 3, seed=0),
        "Cell": custom,
        "Unrolled": ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=3),
        "Linear": ug.train.Linear(3, 2, seed=0),
        "Linear(bias=False)": ug.train.Linear(3, 2, bias=False, seed=0),
        "SequenceModel": ug.train.SequenceModel(ug.unroll(rnn, 3), ug.train.Linear(3, 1,
                                                                                  seed=0)),
    }


@pytest.mark.parametrize("kind", list(_holders()))
def test_named_parameters_is_parameters_in_order_with_the_tensors_themselves(kind):
    holder = _holders()[kind]
    named = list(holder.named_parameters())
    params = holder.parameters()
    assert [k for k, _ in named] == list(params)
    assert all(t is params[k] for k, t in named)
    prefixed = list(holder.named_parameters(prefix="m"))
    assert [k for k, _ in prefixed] == [f"m.{k}" for k in params]
    assert all(a[1] is b[1] for a, b in zip(prefixed, named))
    with pytest.raises(ug.InvalidNameError, match="prefix"):
        holder.named_parameters(prefix=3)


def test_named_parameters_of_a_custom_cell_keep_the_order_of_declaration():
    names = [k for k, _ in _holders()["Cell"].named_parameters()]
    assert names == ["U", "W"]  # declared U first: not sorted


def test_named_parameters_feed_an_optimizer_as_a_dict():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    opt = ug.optim.SGD(dict(cell.named_parameters()), lr=0.1)
    assert opt.params == list(cell.parameters().values())


def _torch_pairs():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return [
        (ug.nn.RNNCell(2, 3), torch.nn.RNNCell(2, 3)),
        (ug.nn.LSTMCell(2, 3), torch.nn.LSTMCell(2, 3)),
        (ug.nn.GRUCell(2, 3, bias=False), torch.nn.GRUCell(2, 3, bias=False)),
        (ug.nn.RNN(2, 3, num_layers=3), torch.nn.RNN(2, 3, num_layers=3)),
        (ug.nn.LSTM(2, 3, num_layers=2), torch.nn.LSTM(2, 3, num_layers=2)),
        (ug.nn.GRU(2, 3, num_layers=2), torch.nn.GRU(2, 3, num_layers=2)),
        (ug.train.Linear(3, 2), torch.nn.Linear(3, 2)),
        (ug.train.Linear(3, 2, bias=False), torch.nn.Linear(3, 2, bias=False)),
    ]


def test_named_parameters_names_order_and_shapes_are_torchs():
    for ours, theirs in _torch_pairs():
        mine = [(k, tuple(p.shape)) for k, p in ours.named_parameters(prefix="net")]
        torch_ = [(k, tuple(p.shape)) for k, p in theirs.named_parameters(prefix="net")]
        assert mine == torch_, type(ours).__name__


# -- the in-place methods ----------------------------------------------------------------------

def _call(t, name, value, alpha):
    if name == "zero_":
        return t.zero_()
    if name in ("add_", "sub_") and alpha is not None:
        return getattr(t, name)(value, alpha=alpha)
    return getattr(t, name)(value)


def _expected(a, name, value, alpha):
    alpha = 1 if alpha is None else alpha
    return {"add_": lambda: a + alpha * value, "sub_": lambda: a - alpha * value,
            "mul_": lambda: a * value, "div_": lambda: a / value,
            "zero_": lambda: np.zeros_like(a)}[name]()


METHODS = ["add_", "sub_", "mul_", "div_", "zero_"]
finite = st.floats(-4, 4, allow_nan=False).filter(lambda v: abs(v) > 0.1)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(METHODS), values=st.lists(finite, min_size=6, max_size=6),
       other=st.lists(finite, min_size=3, max_size=3), alpha=st.none() | finite,
       as_tensor=st.booleans(), row=st.booleans())
def test_in_place_methods_change_a_parameter_under_no_grad(name, values, other, alpha,
                                                           as_tensor, row):
    a = np.array(values).reshape(2, 3)
    value = np.array(other) if row else np.array(other[0])  # broadcast: a row or a number
    w = ug.tensor(a, requires_grad=True, name="w")
    view = w.detach()  # shares w's memory: sees the change
    before = w * 2.0  # a graph computed before the change
    arg = ug.tensor(value) if as_tensor else value
    with ug.no_grad():
        out = _call(w, name, arg, alpha if name in ("add_", "sub_") else None)
    assert out is w
    expected = _expected(a, name, value, alpha if name in ("add_", "sub_") else None)
    np.testing.assert_allclose(w.data, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(view.data, w.data)
    assert w.requires_grad and w.data.dtype == np.float64
    with pytest.raises(ug.GradientError, match="w"):  # the change is recorded
        before.sum().backward()


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(METHODS), values=st.lists(finite, min_size=3, max_size=3),
       other=finite, alpha=st.none() | finite)
def test_in_place_methods_agree_with_torch(name, values, other, alpha):
    torch = pytest.importorskip("torch")
    alpha = alpha if name in ("add_", "sub_") else None
    w = ug.tensor(np.array(values), requires_grad=True)
    t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    with ug.no_grad():
        _call(w, name, other, alpha)
    with torch.no_grad():
        _call(t, name, other, alpha)
    np.testing.assert_allclose(w.data, t.detach().numpy(), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("name", METHODS)
def test_in_place_methods_refuse_a_parameter_while_gradients_are_recorded(name):
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    with pytest.raises(ug.GradientError, match=rf"w\.{name}.*ug\.no_grad\(\)"):
        _call(w, name, 1.0, None)
    np.testing.assert_array_equal(w.data, [1.0, 2.0])  # nothing changed


@pytest.mark.parametrize("name", METHODS)
def test_in_place_methods_refuse_a_computed_tensor_in_any_mode(name):
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    y = w * 2.0
    c = ug.tensor([1.0, 2.0]) * 3.0  # computed from a constant: no grad, still a node
    for t in (y, c):
        with pytest.raises(ug.GradientError, match="computed by op 'mul'"):
            _call(t, name, 1.0, None)
        with ug.no_grad(), pytest.raises(ug.GradientError, match="computed by op 'mul'"):
            _call(t, name, 1.0, None)
    np.testing.assert_array_equal(y.data, [2.0, 4.0])


@pytest.mark.parametrize("name", METHODS)
def test_in_place_methods_refuse_a_cell_placeholder(name):
    cell = ug.Cell("c")
    h = cell.state("h", (3,))
    for mode in (ug.enable_grad, ug.no_grad):
        with mode(), pytest.raises(ug.CellError, match=rf"h\.{name}.*placeholder"):
            _call(h, name, 1.0, None)


@pytest.mark.parametrize("name", METHODS)
def test_in_place_methods_change_a_constant_leaf_in_any_mode(name):
    # as in PyTorch: a tensor that does not require grad has no graph to protect
    c = ug.tensor([2.0, 4.0], name="c")
    assert _call(c, name, 2.0, None) is c
    np.testing.assert_array_equal(c.data, _expected(np.array([2.0, 4.0]), name, 2.0, None))


def test_in_place_methods_keep_shape_and_dtype_and_change_nothing_on_a_bad_value():
    w = ug.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True, name="w")
    with ug.no_grad():
        w.add_(np.arange(3))  # integers: converted to w's float32
        assert w.data.dtype == np.float32
        np.testing.assert_array_equal(w.data, [[1, 2, 3], [1, 2, 3]])
        with pytest.raises(ug.ShapeError, match=r"w\.add_.*nothing was changed"):
            w.add_(np.ones((4, 2, 3)))
        with pytest.raises(ug.ShapeError, match=r"w\.mul_"):
            w.mul_(np.ones(4))
        with pytest.raises(ug.DTypeError, match="alpha must be a real number"):
            w.add_(1.0, alpha="2")
        with pytest.raises(ug.DTypeError, match="alpha"):
            w.sub_(1.0, alpha=np.ones(3))
        with pytest.raises(ug.DTypeError):
            w.add_("one")
    np.testing.assert_array_equal(w.data, [[1, 2, 3], [1, 2, 3]])


def test_zero_clears_nan_and_infinity():
    w = ug.tensor([np.nan, np.inf, -1.0], requires_grad=True)
    with ug.no_grad():
        w.zero_()
    np.testing.assert_array_equal(w.data, [0.0, 0.0, 0.0])


def test_a_manual_sgd_step_with_the_methods_trains_the_unrolled_net():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    xs = np.random.default_rng(0).normal(size=(4, 5, 2))
    losses = []
    for _ in range(5):
        out, _ = net(xs)
        loss = ug.mean(out * out)
        losses.append(float(loss.data))
        loss.backward()
        with ug.no_grad():
            for _, p in cell.named_parameters():
                p.sub_(p.grad, alpha=0.5)
                p.grad = None
    assert losses[-1] < losses[0]


def test_requires_grad_():
    w = ug.tensor([1.0, 2.0], name="w")
    assert w.requires_grad_() is w and w.requires_grad
    assert w.requires_grad_(False) is w and not w.requires_grad
    with pytest.raises(ug.DTypeError):
        w.requires_grad_("yes")
    y = ug.tensor([1.0], requires_grad=True) * 2.0
    with pytest.raises(ug.GradientError, match="detach"):
        y.requires_grad_(False)


def test_requires_grad_agrees_with_torch():
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.0, 2.0])
    w = ug.tensor([1.0, 2.0])
    assert t.requires_grad_().requires_grad == w.requires_grad_().requires_grad
    y_t, y_w = t * 2, w * 2.0
    with pytest.raises(RuntimeError):
        y_t.requires_grad_(False)
    with pytest.raises(RuntimeError):  # GradientError is a RuntimeError, as torch's
        y_w.requires_grad_(False)


def test_an_optimizer_takes_named_parameters_and_updates_the_same_tensors():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    for p in cell.parameters().values():
        p.grad = np.ones(p.shape)
    by_dict = ug.optim.SGD(cell.parameters(), lr=0.1)
    by_pairs = ug.optim.SGD(cell.named_parameters(), lr=0.1)
    assert [id(p) for p in by_pairs.params] == [id(p) for p in by_dict.params]
    before = {k: p.data.copy() for k, p in cell.parameters().items()}
    by_pairs.step()
    for k, p in cell.parameters().items():
        np.testing.assert_array_equal(p.data, before[k] - 0.1)
    with pytest.raises(ug.TrainingError, match="named_parameters"):
        ug.optim.SGD(42, lr=0.1)


def test_a_nets_zero_grad_clears_the_shared_weights_gradients():
    net = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=3)
    out, _ = net(np.ones((3, 2, 2)))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters().values())
    net.zero_grad()
    assert all(p.grad is None for p in net.cell.parameters().values())
