"""PyTorch's habits on a Tensor: t.size(), t.size(d), t.dim(), t.numel(), t.view(...),
t.permute, t.unsqueeze, t.squeeze, t.flatten, t.transpose(d0, d1), t.mT, t.t(), t.tolist()
work as in PyTorch (compared with torch, gradients checked); t.size stays numpy's element
count. The others (t.to, t.float, t.max(dim=...), t.transpose(0, 1) of a 2-D tensor ...) raise
an error naming the call and what to write instead."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import unrollgraph as ug

SHAPES = [(), (3,), (2, 3), (2, 1, 3), (1, 2, 1, 2)]


def _t(shape, name="t"):
    data = np.arange(1.0, 1.0 + np.prod(shape, dtype=int)).reshape(shape) / 7.0
    return ug.tensor(data, requires_grad=True, name=name)


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("shape", SHAPES)
def test_size_is_numpys_count_and_pytorchs_method(shape):
    t = _t(shape)
    n = int(np.prod(shape, dtype=int))
    assert t.size == n and isinstance(t.size, int) and t.size + 1 == n + 1
    assert np.zeros(t.size).shape == (n,) and len(range(t.size)) == n
    assert t.size() == shape and t.numel() == n and t.dim() == len(shape)
    for d in range(-len(shape), len(shape)):
        assert t.size(d) == shape[d] and t.size(dim=d) == shape[d]
    assert type(pickle.loads(pickle.dumps(t.size))) is int
    assert type(copy.deepcopy(t.size)) is int and copy.copy(t.size) == n
    torch = _torch()
    tt = torch.tensor(t.data)
    assert tuple(tt.size()) == t.size() and tt.numel() == t.numel() and tt.dim() == t.dim()


@pytest.mark.parametrize("shape, bad, said", [
    ((2, 3), 2, r"t\.size\(2\): t has shape \(2, 3\), 2 axes; pass a dim from -2 to 1"),
    ((2, 3), -3, r"t\.size\(-3\)"),
    ((), 0, r"t\.size\(0\): .* it has no axis to name"),
    ((2, 3), 1.0, r"t\.size\(1\.0\): dim must be an int"),
    ((2, 3), True, r"t\.size\(True\): dim must be an int"),
])
def test_size_of_an_axis_that_is_not_there_names_the_call(shape, bad, said):
    with pytest.raises(ug.ShapeError, match=said):
        _t(shape).size(bad)


def test_item_of_many_numbers_says_what_to_write():
    with pytest.raises(ug.ShapeError) as err:
        _t((2, 3)).item()
    text = str(err.value)
    assert text.startswith("t.item() needs a one-element tensor; t has shape (2, 3) (6 numbers)")
    assert "t.sum().item()" in text and "t.data" in text and "t.tolist()" in text


def _same_as_torch(ours, make_torch, t):
    """``ours`` (a ug result computed from ``t``) has torch's values, and its gradients are
    exact (gradcheck) and equal to torch's for the same weights."""
    torch = _torch()
    tt = torch.tensor(t.data, requires_grad=True)
    theirs = make_torch(tt)
    assert ours.shape == tuple(theirs.shape)
    assert np.array_equal(ours.data, theirs.detach().numpy())
    w = np.random.default_rng(0).standard_normal(ours.shape)
    (ours * w).sum().backward()
    (theirs * torch.tensor(w)).sum().backward()
    assert np.allclose(t.grad, tt.grad.numpy(), rtol=0, atol=1e-15)


CASES = {
    "view(-1)": (lambda t: t.view(-1), lambda t: t.view(-1), (2, 1, 3)),
    "view(3, 2)": (lambda t: t.view(3, 2), lambda t: t.view(3, 2), (2, 1, 3)),
    "view((3, -1))": (lambda t: t.view((3, -1)), lambda t: t.view((3, -1)), (2, 1, 3)),
    "permute(2, 0, 1)": (lambda t: t.permute(2, 0, 1), lambda t: t.permute(2, 0, 1),
                         (2, 1, 3)),
    "permute((1, -1, 0))": (lambda t: t.permute((1, -1, 0)), lambda t: t.permute((1, -1, 0)),
                            (2, 1, 3)),
    "unsqueeze(0)": (lambda t: t.unsqueeze(0), lambda t: t.unsqueeze(0), (2, 3)),
    "unsqueeze(2)": (lambda t: t.unsqueeze(2), lambda t: t.unsqueeze(2), (2, 3)),
    "unsqueeze(-1)": (lambda t: t.unsqueeze(-1), lambda t: t.unsqueeze(-1), (2, 3)),
    "unsqueeze(-3)": (lambda t: t.unsqueeze(-3), lambda t: t.unsqueeze(-3), (2, 3)),
    "unsqueeze of ()": (lambda t: t.unsqueeze(0), lambda t: t.unsqueeze(0), ()),
    "squeeze()": (lambda t: t.squeeze(), lambda t: t.squeeze(), (1, 2, 1, 2)),
    "squeeze(2)": (lambda t: t.squeeze(2), lambda t: t.squeeze(2), (1, 2, 1, 2)),
    "squeeze(1)": (lambda t: t.squeeze(1), lambda t: t.squeeze(1), (1, 2, 1, 2)),
    "squeeze((0, 2))": (lambda t: t.squeeze((0, 2)), lambda t: t.squeeze((0, 2)),
                        (1, 2, 1, 2)),
    "flatten()": (lambda t: t.flatten(), lambda t: t.flatten(), (2, 1, 3)),
    "flatten(1)": (lambda t: t.flatten(1), lambda t: t.flatten(1), (2, 1, 3)),
    "flatten(0, 1)": (lambda t: t.flatten(0, 1), lambda t: t.flatten(0, 1), (2, 1, 3)),
    "flatten of ()": (lambda t: t.flatten(), lambda t: t.flatten(), ()),
    "transpose(0, 2)": (lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2), (2, 1, 3)),
    "transpose(-1, 1)": (lambda t: t.transpose(-1, 1), lambda t: t.transpose(-1, 1),
                         (2, 1, 3)),
    "transpose(1, 0)": (lambda t: t.transpose(1, 0), lambda t: t.transpose(1, 0), (2, 3)),
    "transpose(0, 0)": (lambda t: t.transpose(0, 0), lambda t: t.transpose(0, 0), (3,)),
    "mT": (lambda t: t.mT, lambda t: t.mT, (2, 1, 3)),
    "t() 2-D": (lambda t: t.t(), lambda t: t.t(), (2, 3)),
    "t() 1-D": (lambda t: t.t(), lambda t: t.t(), (3,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pytorch_shape_methods_agree_with_torch_and_have_exact_gradients(case):
    ours, theirs, shape = CASES[case]
    t = _t(shape)
    assert ug.gradcheck(ours, [t.data.copy()])
    _same_as_torch(ours(t), theirs, t)


def test_numpys_transpose_still_permutes_every_axis():
    t = _t((2, 1, 3))
    assert t.transpose().shape == (3, 1, 2) and t.transpose(2, 0, 1).shape == (3, 2, 1)
    assert t.transpose((1, 2, 0)).shape == (1, 3, 2)
    assert _t((2, 3)).transpose((1, 0)).shape == (3, 2)


@pytest.mark.parametrize("axes", [(0, 1), (-2, -1), (0, -1), (-2, 1)])
def test_transpose_0_1_of_a_2d_tensor_is_refused_as_ambiguous(axes):
    with pytest.raises(ug.ShapeError, match=r"t\.transpose\(.*\) of a 2-D tensor: numpy .* "
                       r"identity .* PyTorch .* swap .* t\.T or t\.transpose\(1, 0\)"):
        _t((2, 3)).transpose(*axes)


@pytest.mark.parametrize("call, said", [
    (lambda t: t.transpose(0, 3), r"t\.transpose\(0, 3\): t has shape \(2, 1, 3\), 3 axes"),
    (lambda t: t.permute(1, 0), r"t\.permute\(1, 0\): t has 3 axes"),
    (lambda t: t.permute(0, 0, 1), r"t\.permute\(0, 0, 1\): an axis is named twice"),
    (lambda t: t.unsqueeze(4), r"t\.unsqueeze\(4\): .* pass a dim from -4 to 3"),
    (lambda t: t.squeeze(5), r"t\.squeeze\(5\)"),
    (lambda t: t.flatten(2, 0), r"t\.flatten\(2, 0\): start_dim comes after end_dim"),
    (lambda t: t.t(), r"t\.t\(\) takes a tensor of at most 2 axes; .* t\.mT"),
    (lambda t: t.view(2.0, 3), r"view of t: the size 2\.0"),
])
def test_bad_axes_name_the_call(call, said):
    with pytest.raises(ug.ShapeError, match=said):
        call(_t((2, 1, 3)))


def test_mT_of_one_axis_is_refused():
    with pytest.raises(ug.ShapeError, match=r"t\.mT needs at least 2 axes"):
        _ = _t((3,)).mT


def test_tolist_is_the_value_as_lists():
    assert _t((2, 3)).tolist() == (np.arange(1.0, 7.0).reshape(2, 3) / 7.0).tolist()
    assert ug.tensor(2.5).tolist() == 2.5


def test_max_over_a_dim_says_pytorch_returns_indices_too():
    t = _t((2, 3))
    for call in (lambda: t.max(dim=1), lambda: t.max(1, keepdim=True)):
        with pytest.raises(TypeError, match=r"t\.max\(dim=1\): PyTorch's max over a dim "
                           r"returns \(values, indices\); here t\.max\(axis=1\) .* "
                           r"np\.argmax\(t\.data, axis=1\)"):
            call()
    assert np.array_equal(t.max(axis=1).data, t.data.max(axis=1))


@pytest.mark.parametrize("name, said", [
    ("to", "no device"), ("cpu", "no device"), ("cuda", "no device"),
    ("float", "keeps its float type"), ("double", "keeps its float type"),
    ("clone", "t.detach()"), ("contiguous", "use t itself"), ("device", "no devices"),
    ("grad_fn", "t.node"), ("pow", "t ** p"), ("matmul", "t @ u"), ("add", "t + u"),
    ("softmax", "ug.softmax(t, axis=d)"), ("argmax", "np.argmax(t.data, axis=d)"),
    ("min", "-(-t).max(axis=d)"), ("masked_fill", "ug.where(mask, value, t)"),
    ("ndimension", "t.dim()"), ("nelement", "t.numel()"),
])
def test_pytorch_names_a_tensor_lacks_say_what_to_write(name, said):
    t = _t((2, 3))
    with pytest.raises(AttributeError) as err:
        getattr(t, name)
    text = str(err.value)
    assert text.startswith(f"t.{name}") and f"PyTorch's Tensor.{name} is not" in text
    assert said in text
    assert not hasattr(t, name) and getattr(t, name, None) is None


def test_a_missing_name_that_is_not_pytorchs_is_pythons_own_error():
    with pytest.raises(AttributeError, match="^'Tensor' object has no attribute 'sizes'$"):
        _ = _t((2,)).sizes


def _cell(body):
    cell = ug.Cell("c")
    x = cell.input("x", (2, 3))
    h = cell.state("h", (6,))
    W = cell.param("W", np.linspace(-0.5, 0.5, 36).reshape(6, 6))
    h_next = ug.tanh(body(x, h) + h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


BODIES = {
    "flatten(1)": lambda x, h: x.flatten(1),
    "permute then flatten(1)": lambda x, h: x.permute(0, 2, 1).flatten(1),
    "transpose(1, 2) then view(-1, 6)": lambda x, h: x.transpose(1, 2).view(-1, 6),
    "unsqueeze(1) then squeeze(1)": lambda x, h: h.unsqueeze(1).squeeze(1) * x.flatten(1),
    "unsqueeze(-1) then squeeze(-1)": lambda x, h: h.unsqueeze(-1).squeeze(-1) * x.flatten(1),
}


@pytest.mark.parametrize("body", list(BODIES))
def test_the_shape_methods_in_a_cell_follow_the_batch_size_of_the_call(body):
    cell = _cell(BODIES[body])
    xs = np.random.default_rng(1).standard_normal((3, 4, 2, 3))
    out, _ = ug.unroll(cell, steps=3)(xs)
    h = ug.tensor(np.zeros((4, 6)))
    W = cell.parameters()["W"]
    for t in range(3):  # the same equations, eagerly, at batch 4
        h = ug.tanh(BODIES[body](ug.tensor(xs[t]), h) + h @ W.T)
        assert np.allclose(out.data[t], h.data, rtol=0, atol=1e-14)


def test_in_a_cell_squeeze_without_axes_and_size_are_refused():
    cell = ug.Cell("c")
    h = cell.state("h", (1, 3))
    with pytest.raises(ug.CellError, match=r"^h\.squeeze\(\): h is a placeholder .* "
                       r"h\.squeeze\(-1\)"):
        h.squeeze()
    with pytest.raises(ug.CellError, match=r"^h\.squeeze\(0\)"):
        h.squeeze(0)
    assert h.squeeze(1).shape[1:] == (3,)
    with pytest.raises(ug.CellError, match=r"h\.shape\[d\] is PyTorch's h\.size\(d\)"):
        h.size(-1)
    with pytest.raises(ug.CellError, match=r"^h\.numel\(\)"):
        h.numel()
    assert h.dim() == 3
