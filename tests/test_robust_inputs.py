"""Bad and unusual inputs across the public API: each gets a named error from the library's
hierarchy, or the answer PyTorch gives, never a bare numpy or Python error or a warning."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug

torch = pytest.importorskip("torch")

LOSSES = {
    "mse_loss": (lambda x: ug.mse_loss(x, np.zeros((0, 3), x.dtype)),
                 lambda x: torch.nn.functional.mse_loss(x, torch.zeros(0, 3, dtype=x.dtype))),
    "cross_entropy": (lambda x: ug.cross_entropy(x, np.zeros(0, int)),
                      lambda x: torch.nn.functional.cross_entropy(
                          x, torch.zeros(0, dtype=torch.long))),
    "bce": (lambda x: ug.binary_cross_entropy_with_logits(x, np.zeros((0, 3), x.dtype)),
            lambda x: torch.nn.functional.binary_cross_entropy_with_logits(
                x, torch.zeros(0, 3, dtype=x.dtype))),
    "mean": (lambda x: x.mean(), lambda x: x.mean()),
    "mean0": (lambda x: ug.mean(x, axis=0), lambda x: x.mean(0)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_empty_batch_gives_torch_s_nan_without_a_warning(name, dtype):
    ours, theirs = LOSSES[name]
    x = ug.tensor(np.ones((0, 3)), requires_grad=True, dtype=dtype)
    y = ours(x)  # (RuntimeWarnings are errors in the suite)
    y.backward(gradient=np.ones(y.shape))
    tx = torch.ones(0, 3, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.ones(ty.shape, dtype=ty.dtype))
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    assert y.dtype == dtype and x.grad.shape == tuple(tx.grad.shape)


def test_a_batch_of_zero_sequences_runs_and_trains_silently():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    out, (h, c) = ug.unroll(cell, steps=3)(np.ones((3, 0, 2)))
    assert out.shape == (3, 0, 3) and h.shape == (0, 3)
    loss = ug.mse_loss(out, np.zeros(out.shape))
    loss.backward()
    assert np.isnan(loss.item())
    assert all(np.all(p.grad == 0) for p in cell.parameters().values())


def test_a_sequence_of_zero_steps_is_named_not_sent_to_an_impossible_unroll():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    with pytest.raises(ug.ShapeError, match="a sequence of 0 steps has nothing to run") as info:
        net(np.ones((0, 2, 2)))
    assert "steps=0" not in str(info.value)
    with pytest.raises(ug.TrainingError, match="xs has 0 steps"):
        ug.train.tbptt(net.cell, np.ones((0, 1, 2)), np.ones((0, 1, 3)), ug.mse_loss, 1, 1)


def test_joins_want_a_list_of_tensors():
    a = ug.tensor(np.ones((2, 3)))
    for fn in (ug.concat, ug.stack):
        with pytest.raises(ug.ShapeError, match=r"pass a list of tensors.*one Tensor of shape "
                                                r"\(2, 3\).*list\(t\)"):
            fn(a)
        with pytest.raises(ug.ShapeError, match="the list is empty"):
            fn([])
        assert fn(t for t in (a, a)).shape[0] in (2, 4)  # any iterable of tensors
    assert ug.stack(list(a)).shape == (2, 3)  # a tensor's rows, as the message says


def test_a_tensor_is_a_number_and_a_sequence_where_python_expects_one():
    t = ug.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    rows = list(t)
    assert len(rows) == 2 and rows[1].shape == (2,)
    sum(r.sum() for r in rows).backward()  # each row is a node of the graph
    np.testing.assert_array_equal(t.grad, np.ones((2, 2)))
    s = ug.tensor(2.5)
    assert float(s) == 2.5 and int(s) == 2 and f"{float(s):.1f}" == "2.5"
    with pytest.raises(TypeError, match=r"len\(\) of .*shape \(\).*item\(\)"):
        len(s)
    with pytest.raises(ug.ShapeError, match="one-element"):
        float(t)


def test_a_python_number_from_a_placeholder_is_refused_in_a_cell():
    cell = ug.Cell("c")
    h = cell.state("h", (2,))
    for make in (lambda: h.sum().item(), lambda: float(h.mean()), lambda: int(h[0, 0])):
        with pytest.raises(ug.CellError, match=r"cell placeholder.*fixed once"):
            make()


def test_labels_that_are_not_class_indices_are_named():
    logits = ug.tensor(np.zeros((2, 3)))
    with pytest.raises(ug.DTypeError, match="labels must be integer class indices.*None"):
        ug.cross_entropy(logits, None)
    with pytest.raises(ug.DTypeError, match="labels must be integer class indices"):
        ug.cross_entropy(logits, "01")


def test_clipping_huge_or_infinite_gradients_is_exact_and_silent():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    w.grad = np.array([1e200, 1e200])  # the norm exists: no overflow to inf, so no zeroing
    assert ug.clip_grad_norm([w], 1.0) == pytest.approx(np.sqrt(2) * 1e200)
    np.testing.assert_allclose(w.grad, [0.5 ** 0.5] * 2)
    w.grad = np.array([1e200, 1e200])
    assert ug.optim.normalize_grad_norm([w]) == pytest.approx(np.sqrt(2) * 1e200)
    np.testing.assert_allclose(w.grad, [0.5 ** 0.5] * 2)
    w.grad = np.array([np.inf, 1.0])  # as PyTorch: scaled by 0, the infinity becomes NaN
    tw = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    tw.grad = torch.tensor([np.inf, 1.0], dtype=torch.float64)
    assert ug.clip_grad_norm([w], 1.0) == torch.nn.utils.clip_grad_norm_([tw], 1.0).item()
    np.testing.assert_array_equal(w.grad, tw.grad.numpy())


def test_batch_first_inputs_and_torch_shaped_states_are_recognised():
    net = ug.unroll(ug.nn.GRUCell(3, 4, seed=0), steps=5)
    with pytest.raises(ug.ShapeError, match=r"got \(32, 5, 3\); it looks batch-first .*"
                                            r"np\.swapaxes\(xs, 0, 1\)"):
        net(np.ones((32, 5, 3)))
    with pytest.raises(ug.ShapeError, match=r"unroll again with ug.unroll\(cell, steps=6\)"):
        net(np.ones((6, 2, 3)))
    with pytest.raises(ug.ShapeError, match=r"got \(1, 2, 4\); a leading axis of 1.*h0\[0\]"):
        net(np.ones((5, 2, 3)), state=np.zeros((1, 2, 4)))
    # a batch-first tensor made time-first by an op (not contiguous) is fine, gradient and all
    x = ug.tensor(np.ones((2, 5, 3)), requires_grad=True)
    out, _ = net(ug.transpose(x, (1, 0, 2)))
    out.sum().backward()
    assert x.grad.shape == (2, 5, 3)


def test_a_linear_readout_refuses_integer_weights_and_wrong_widths():
    for dtype in (int, np.float16, "int32"):  # integer weights would truncate to zeros
        with pytest.raises(ug.DTypeError, match="Linear: dtype must be np.float32 or np.f"):
            ug.train.Linear(2, 2, dtype=dtype)
    head = ug.train.Linear(2, 3, seed=0)
    with pytest.raises(ug.ShapeError, match=r"Linear: the input .* \(3, 5\).* 2 in_features"):
        head(np.ones((3, 5)))
    with pytest.raises(ug.ShapeError, match="in_features"):
        head(1.0)
    assert head(np.ones((4, 2), dtype=int)).shape == (4, 3)
