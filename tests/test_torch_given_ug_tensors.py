"""An unrollgraph tensor handed to PyTorch: its functions, its modules and its constructors
raise ``ug.TorchFunctionError`` (a ``TypeError``) naming PyTorch's function, the unrollgraph
function to use, and how to hand PyTorch the value (``torch.tensor(t.numpy())``); PyTorch's
operators still reach the tensor's reflected operators, with exact gradients."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph import interop

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _h():
    return ug.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True, name="h")


# (the call, PyTorch's function as the message names it, what the message says to write)
FUNCTIONS = [
    (lambda h: torch.tanh(h), "torch.tanh", "ug.tanh(x)"),
    (lambda h: torch.sigmoid(h), "torch.sigmoid", "ug.sigmoid(x)"),
    (lambda h: torch.relu(h), "torch.relu", "ug.relu(x)"),
    (lambda h: torch.exp(h), "torch.exp", "ug.exp(x)"),
    (lambda h: torch.stack([h, h]), "torch.stack", "ug.stack([a, b], axis=d)"),
    (lambda h: torch.cat([torch.ones(2, 2), h]), "torch.cat", "ug.concat([a, b], axis=d)"),
    (lambda h: torch.matmul(h, h), "torch.matmul", "a @ b"),
    (lambda h: torch.sum(h, dim=0), "torch.sum", "ug.sum(x, axis=...)"),
    (lambda h: torch.where(torch.ones(2, 2) > 0, h, 0.0), "torch.where", "ug.where(c, a, b)"),
    (lambda h: torch.clamp(h, 0, 1), "torch.clamp", "ug.clip(x, lo, hi)"),
    (lambda h: torch.softmax(h, 1), "torch.softmax", "ug.softmax(x, axis=d)"),
    (lambda h: torch.zeros_like(h), "torch.zeros_like", "ug.tensor(np.zeros(x.shape))"),
    (lambda h: torch.allclose(torch.ones(2, 2, dtype=torch.float64), h), "torch.allclose",
     "np.allclose(a, b)"),
    (lambda h: torch.linalg.norm(h), "torch.linalg.norm", "ug.sqrt(ug.sum(x * x"),
    (lambda h: F.mse_loss(h, torch.zeros(2, 2)), "torch.nn.functional.mse_loss",
     "ug.mse_loss(prediction, target)"),
    (lambda h: F.cross_entropy(h, torch.tensor([0, 1])), "torch.nn.functional.cross_entropy",
     "ug.cross_entropy(logits, labels)"),
    (lambda h: F.binary_cross_entropy_with_logits(h, torch.zeros(2, 2)),
     "torch.nn.functional.binary_cross_entropy_with_logits",
     "ug.binary_cross_entropy_with_logits(logits, targets)"),
    (lambda h: F.log_softmax(h, dim=1), "torch.nn.functional.log_softmax",
     "ug.log_softmax(x, axis=d)"),
    (lambda h: torch.nn.Linear(2, 3)(h), "torch.nn.functional.linear",
     "ug.train.Linear(in_features, out_features)"),
    (lambda h: torch.nn.Tanh()(h), "torch.tanh", "ug.tanh(x)"),
    (lambda h: torch.nn.MSELoss()(h, torch.zeros(2, 2)), "torch.nn.functional.mse_loss",
     "ug.mse_loss(prediction, target)"),
    (lambda h: torch.ones(2, 2).add(h), "torch.Tensor.add", "a + b"),
    (lambda h: torch.ones(2, 2).copy_(h), "torch.Tensor.copy_", "write it from ug ops"),
    (lambda h: torch.einsum("ij->i", h), "torch.einsum", "write it from ug ops"),
]


@pytest.mark.parametrize("call, function, use", FUNCTIONS,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(FUNCTIONS)])
def test_a_torch_function_given_a_ug_tensor_names_it_and_the_fix(call, function, use):
    with pytest.raises(ug.TorchFunctionError) as err:
        call(_h())
    text = str(err.value)
    assert isinstance(err.value, TypeError) and err.value.function == function
    assert text.startswith(f"{function}(...) given h, an unrollgraph Tensor")
    assert use in text
    assert "torch.tensor(h.numpy())" in text and "no gradient flows back" in text
    assert "must be Tensor, not Tensor" not in text


def test_every_function_the_messages_name_exists():
    """Each ``ug.x`` and ``x.method`` a message says to write is a function of the package."""
    for use in list(interop.TORCH_COUNTERPARTS.values()):
        for dotted in re.findall(r"\bug\.([\w.]+)\(", use):
            obj = ug
            for part in dotted.split("."):
                obj = getattr(obj, part)
            assert callable(obj), use
        for method in re.findall(r"\bx\.(\w+)\(", use):
            assert callable(getattr(ug.Tensor, method)), use


@pytest.mark.parametrize("make", [
    _h,
    lambda: ug.tensor([1.0, 2.0], name="h"),  # a constant
    lambda: ug.tensor(3.0, name="h"),  # one number
    lambda: ug.tensor(np.ones((2, 3), np.float32), name="h"),
])
@pytest.mark.parametrize("constructor", [torch.tensor, torch.as_tensor, torch.asarray,
                                         torch.from_dlpack])
def test_a_torch_constructor_given_a_ug_tensor_says_how_to_pass_its_value(make, constructor):
    h = make()
    with pytest.raises(ug.TorchFunctionError) as err:
        constructor(h)
    text = str(err.value)
    assert "len()" not in text and "given h, an unrollgraph Tensor" in text
    assert "torch.tensor(h.numpy())" in text and "no gradient flows back" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (torch.from_numpy of a read-only array warns)
        value = eval("torch.tensor(h.numpy())")  # the fix, as the message writes it
    np.testing.assert_array_equal(value.numpy(), h.data)
    assert value.numpy().dtype == h.dtype


def test_an_unnamed_tensor_is_t_in_the_code_of_the_message():
    u = _h() * 2.0
    with pytest.raises(ug.TorchFunctionError, match=r"torch\.tensor\(t\.numpy\(\)\)"):
        torch.tanh(u)
    with pytest.raises(ug.TorchFunctionError, match=r"torch\.tensor\(t\) .*given <mul>"):
        torch.tensor(u)


def test_a_list_of_ug_numbers_given_to_torch_tensor_says_how_to_pass_their_values():
    a, b = ug.tensor(1.0, name="a"), ug.tensor(2.0, name="b")
    for data in ([a, b], [_h(), _h()]):
        with pytest.raises(TypeError) as err:
            torch.tensor(data)
        text = str(err.value)
        assert "torch.tensor([a.item(), b.item()])" in text and "ug.stack([a, b])" in text
    assert torch.tensor([a.item(), b.item()]).tolist() == [1.0, 2.0]


def test_a_torch_module_that_reads_device_names_itself_and_the_fix():
    with pytest.raises(AttributeError) as err:
        torch.nn.LSTM(2, 3)(_h())
    text = str(err.value)
    assert "PyTorch's torch.nn.modules.rnn" in text and "an unrollgraph Tensor" in text
    assert "ug.nn.LSTM" in text and ".numpy())" in text
    # a ug Tensor's own missing PyTorch names keep their own message
    with pytest.raises(AttributeError, match=r"h\.device: PyTorch's Tensor\.device is not"):
        _ = _h().device


def test_inside_a_cell_the_message_says_the_placeholder_is_a_stand_in():
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    with pytest.raises(ug.TorchFunctionError, match=r"ug\.tanh\(x\)\. Inside a cell .*"
                                                    r"stand-in") as err:
        torch.tanh(x + h)
    assert ".numpy()" not in str(err.value)
    with pytest.raises(ug.TorchFunctionError, match="stand-in") as err:
        torch.tensor(h)
    assert ".numpy()" not in str(err.value)


def test_numpy_from_dlpack_says_np_asarray():
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.asarray\(h\)"):
        np.from_dlpack(_h())


OPERATORS = [
    (lambda a, h: a + h, lambda h: np.ones((2, 2))),
    (lambda a, h: a - h, lambda h: -np.ones((2, 2))),
    (lambda a, h: a * h, lambda h: np.full((2, 2), 3.0)),
    (lambda a, h: a / h, lambda h: -3.0 / h ** 2),
    (lambda a, h: a ** h, lambda h: np.log(3.0) * 3.0 ** h),
    (lambda a, h: a @ h, lambda h: np.full((2, 2), 6.0)),
]


@pytest.mark.parametrize("op, grad", OPERATORS)
def test_torch_operators_still_reach_the_tensors_reflected_operator(op, grad):
    h = _h()
    a = torch.full((2, 2), 3.0, dtype=torch.float64)
    y = op(a, h)
    assert isinstance(y, ug.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(h.grad, grad(h.data), rtol=1e-15, atol=0)
    b = torch.full((2, 2), 3.0, dtype=torch.float64)
    assert isinstance(b < h, ug.Tensor) and (b == h) is False
    b += h  # (PyTorch's in-place operator refuses; Python computes b + h, a node)
    assert isinstance(b, ug.Tensor)
