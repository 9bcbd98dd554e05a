"""Losses given operands of two float types: the result has the wider type (PyTorch's type
promotion, which torch.nn.functional's losses follow), each input's gradient its own type, and
the value is PyTorch's. cross_entropy's labels are indices: the logits' type is kept."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug

F32, F64 = np.float32, np.float64
PAIRS = [(F32, F32), (F32, F64), (F64, F32), (F64, F64)]
_TORCH = {F32: "float32", F64: "float64"}

PRED = np.array([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])
TARGET = np.array([[1.0, 0.0, 1.0], [0.25, 0.5, 0.0]])


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("dp, dt", PAIRS)
def test_two_tensor_losses_promote_and_give_each_input_its_own_gradient_type(name, dp, dt):
    p = ug.tensor(PRED, dtype=dp, requires_grad=True)
    t = ug.tensor(TARGET, dtype=dt, requires_grad=True)
    loss = getattr(ug, name)(p, t)
    want = np.result_type(dp, dt)
    assert loss.dtype == want and loss.node.dtype == want.name
    loss.backward()
    assert p.grad.dtype == dp and t.grad.dtype == dt


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("dp, dt", PAIRS)
def test_two_tensor_losses_agree_with_torch(name, dp, dt):
    torch = _torch()
    p = ug.tensor(PRED, dtype=dp, requires_grad=True)
    t = ug.tensor(TARGET, dtype=dt, requires_grad=True)
    loss = getattr(ug, name)(p, t)
    loss.backward()
    tp = torch.tensor(PRED, dtype=getattr(torch, _TORCH[dp]), requires_grad=True)
    tt = torch.tensor(TARGET, dtype=getattr(torch, _TORCH[dt]), requires_grad=True)
    tl = getattr(torch.nn.functional, name)(tp, tt)
    tl.backward()
    if name == "binary_cross_entropy_with_logits" and (dp, dt) == (F64, F32):
        # PyTorch keeps the targets' type there (the docstring says so); here it is promoted
        assert tl.dtype == torch.float32 and loss.dtype == F64
    else:
        assert str(tl.dtype) == f"torch.{loss.dtype.name}"
    tol = 1e-6 if F32 in (dp, dt) else 1e-12
    assert np.allclose(loss.item(), tl.item(), rtol=tol, atol=tol)
    assert str(tp.grad.dtype) == f"torch.{p.grad.dtype.name}"
    assert str(tt.grad.dtype) == f"torch.{t.grad.dtype.name}"
    assert np.allclose(p.grad, tp.grad.numpy(), rtol=tol, atol=tol)
    assert np.allclose(t.grad, tt.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("dp, dt", PAIRS)
def test_a_numpy_target_is_promoted_as_a_tensor_target(name, dp, dt):
    p = ug.tensor(PRED, dtype=dp, requires_grad=True)
    loss = getattr(ug, name)(p, TARGET.astype(dt))
    assert loss.dtype == np.result_type(dp, dt)
    loss.backward()
    assert p.grad.dtype == dp


@pytest.mark.parametrize("dl", [F32, F64])
@pytest.mark.parametrize("labels", [np.array([2, 0]), np.array([2.0, 0.0], F32),
                                    np.array([2.0, 0.0]), [2, 0]])
def test_cross_entropy_keeps_the_logits_type_whatever_the_labels(dl, labels):
    logits = ug.tensor(PRED, dtype=dl, requires_grad=True)
    loss = ug.cross_entropy(logits, labels)
    assert loss.dtype == dl
    loss.backward()
    assert logits.grad.dtype == dl
    torch = _torch()
    tl = torch.tensor(PRED, dtype=getattr(torch, _TORCH[dl]), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(tl, torch.tensor([2, 0]))
    ref.backward()
    assert str(ref.dtype) == f"torch.{dl.__name__}"
    tol = 1e-6 if dl is F32 else 1e-12
    assert np.allclose(loss.item(), ref.item(), rtol=tol, atol=tol)
    assert np.allclose(logits.grad, tl.grad.numpy(), rtol=tol, atol=tol)
