"""PyTorch habits that must meet the library's own errors: calling a cell like a function,
and training with an optimizer built on another model's parameters (which trained nothing,
silently, epoch after epoch)."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


@pytest.mark.parametrize("make", [lambda: ug.nn.RNNCell(2, 3, seed=0),
                                  lambda: ug.nn.LSTMCell(2, 3, seed=0),
                                  lambda: ug.nn.GRUCell(2, 3, seed=0)])
def test_calling_a_cell_says_to_unroll_it(make):
    cell = make()
    with pytest.raises(ug.CellError, match=r"ug\.unroll\(cell, steps=T\)") as err:
        cell(np.ones((1, 2)), np.zeros((1, 3)))
    assert repr(cell.name) in str(err.value)


def test_fit_refuses_an_optimizer_the_loss_does_not_reach():
    cell1, cell2 = ug.nn.RNNCell(2, 3, seed=0), ug.nn.RNNCell(2, 3, seed=1)
    net2 = ug.unroll(cell2, steps=4)
    opt = ug.optim.SGD(cell1.parameters().values(), lr=0.1)  # another model's
    xs = np.random.default_rng(0).standard_normal((4, 2, 2))
    data = [(xs, np.zeros((4, 2, 3)))]
    before = {k: p.numpy().copy() for k, p in cell2.named_parameters()}
    with pytest.raises(ug.TrainingError, match=r"no gradient to any of the 4 parameters"):
        ug.train.fit(net2, opt, data, epochs=3, progress=False)
    for k, p in cell2.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[k])
    # the same optimizer on the model it was built for trains
    hist = ug.train.fit(ug.unroll(cell1, steps=4),
                        ug.optim.SGD(cell1.parameters().values(), lr=0.1), data, epochs=3,
                        progress=False)
    assert hist.epoch_loss[-1] < hist.epoch_loss[0]


def test_fit_accepts_an_optimizer_reaching_some_of_its_parameters():
    """A loss reaching part of the optimizer's parameters (a frozen head, a parameter used
    from a later batch on) is training: only a loss reaching none is refused."""
    w = ug.tensor([0.0], requires_grad=True)
    spare = ug.tensor([0.0], requires_grad=True)
    data = [(np.array([1.0]), np.array([2.0]))]
    hist = ug.train.fit(lambda x: w * x, ug.optim.SGD([w, spare], lr=0.25), data, epochs=2,
                        progress=False)
    assert hist.epoch_loss == [4.0, 1.0]


@pytest.mark.parametrize("make_opt", [lambda ps: ug.optim.SGD(ps, lr=0.1, momentum=0.9,
                                                              weight_decay=0.01),
                                      lambda ps: ug.optim.Adam(ps, lr=0.01)])
def test_an_optimizer_keeps_a_frozen_parameter_and_leaves_it_alone(make_opt):
    """As PyTorch: ``Adam(cell.parameters())`` with a frozen parameter is accepted; the
    frozen one gets no gradient and no step (not even weight decay) until unfrozen."""
    cell = ug.nn.RNNCell(2, 3, seed=0)
    cell.weight_hh.requires_grad_(False)
    opt = make_opt(cell.parameters().values())
    net = ug.unroll(cell, steps=3)
    xs = np.random.default_rng(0).standard_normal((3, 2, 2))
    frozen, trained = cell.weight_hh.numpy().copy(), cell.weight_ih.numpy().copy()
    for _ in range(2):
        opt.zero_grad()
        out, _ = net(xs)
        (out * out).sum().backward()
        opt.step()
    np.testing.assert_array_equal(cell.weight_hh.numpy(), frozen)
    assert not np.array_equal(cell.weight_ih.numpy(), trained)
    cell.weight_hh.requires_grad_(True)
    opt.zero_grad()
    out, _ = net(xs)
    (out * out).sum().backward()
    opt.step()
    assert not np.array_equal(cell.weight_hh.numpy(), frozen)


@pytest.mark.parametrize("how", ["method", "function"])
def test_sum_and_mean_take_pytorchs_dim_and_keepdim(how):
    x = ug.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    for op in ("sum", "mean"):
        if how == "method":
            f = getattr(x, op)
        else:
            f = (lambda *a, _op=op, **k: getattr(ug, _op)(x, *a, **k))
        np.testing.assert_array_equal(f(dim=0).data, getattr(np, op)(x.data, axis=0))
        np.testing.assert_array_equal(f(dim=1, keepdim=True).data,
                                      getattr(np, op)(x.data, axis=1, keepdims=True))
        with pytest.raises(TypeError, match="not both"):
            f(axis=0, dim=0)
    x.sum(dim=0).sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_loading_a_multi_layer_state_dict_into_a_cell_says_what_to_do():
    cell = ug.nn.LSTMCell(3, 4, seed=0)
    sd = {f"{k}_l0": v for k, v in cell.state_dict().items()}
    with pytest.raises(ug.CellError, match=r"ug\.nn\.RNN/LSTM/GRU.*endswith\('_l0'\)"):
        cell.load_state_dict(sd)
    # the suggested one-layer dict loads
    cell.load_state_dict({k[:-len('_l0')]: v for k, v in sd.items() if k.endswith('_l0')})
    with pytest.raises(ug.CellError) as err:  # other unknown names get no such hint
        cell.load_state_dict({"w": 1})
    assert "_l0" not in str(err.value)
